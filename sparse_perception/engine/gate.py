# Copyright 2026 The sparse_perception authors
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

"""
:class:`Gate`: where a frame may recompute, at every layer's resolution.

A temporal change map says what changed; on a moving camera that is everything. A gate says
where the result matters (around the people, say), and the engine then recomputes, at each
layer, only ``(changed or stale) and gated`` positions. Positions that changed outside the
gate keep their cached values and are remembered as *stale* per layer, so nothing is lost: a
stale position is recomputed in the first frame whose gate covers it again.

A gate is a bool tile map over the network input (like a change map). A layer of another
resolution sees, at each of its positions, whether any gated tile overlaps the input pixels
that position stands for (the position's span scaled by input size / layer size). That
keeps the mapping exact for strides and upsampling alike; the gate's margin (grown by its
maker) covers the receptive field beyond that span.
"""

from __future__ import annotations

import torch


class Gate:
    """A bool (Ht, Wt) tile map over an (height, width) input, resampled per layer size."""

    def __init__(self, tiles: torch.Tensor, tile: int, height: int, width: int):
        th, tw = tiles.shape
        sums = torch.zeros(th + 1, tw + 1, dtype=torch.int32, device=tiles.device)
        sums[1:, 1:] = tiles.to(torch.int32).cumsum(0).cumsum(1)
        self.sums = sums  # 2-D prefix sums: any gated tile in a box is one lookup
        self.tile = tile
        self.height = height
        self.width = width
        self._tiles = tiles
        self._fraction: float | None = None
        self._maps: dict[tuple[int, int], torch.Tensor] = {}

    @property
    def fraction(self) -> float:
        """Share of the input's tiles inside the gate (read lazily: a host sync on a GPU)."""
        if self._fraction is None:
            tiles = self._tiles
            self._fraction = float(tiles.float().mean()) if tiles.numel() else 0.0
        return self._fraction

    def at(self, height: int, width: int) -> torch.Tensor:
        """Return the bool (height, width) gate of a layer of that size (computed once)."""
        key = (height, width)
        mask = self._maps.get(key)
        if mask is None:
            device = self.sums.device
            y0, y1 = _span(height, self.height, self.tile, device)
            x0, x1 = _span(width, self.width, self.tile, device)
            s = self.sums
            y0, y1 = y0.unsqueeze(1), y1.unsqueeze(1)
            x0, x1 = x0.unsqueeze(0), x1.unsqueeze(0)
            mask = (s[y1, x1] - s[y0, x1] - s[y1, x0] + s[y0, x0]) > 0
            self._maps[key] = mask
        return mask


def _span(n: int, size: int, tile: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Tile ranges [lo, hi) that each of ``n`` positions over ``size`` input pixels covers."""
    i = torch.arange(n, device=device)
    first = (i * size) // n  # the first input pixel position i stands for
    last = ((i + 1) * size + n - 1) // n - 1  # and the last one
    return first // tile, last // tile + 1
