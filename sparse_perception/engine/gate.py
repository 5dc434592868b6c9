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
gate are remembered as *stale* per layer, so nothing is lost: a stale position is recomputed
in the first frame whose gate covers it again.

Outside the gate the device executor keeps the cached values. The eager executor may write
some of them too, where it computes more rows than the gated ones because that is faster: a
layer's dense fall-back, the corners of its tiles, an upsampling's whole rows or bands. Those
rows are computed from the layer's cached inputs, so they may differ frame by frame from the
device executor's, and they are not handed on as changed; both executors agree again once
the gate has covered every stale position (a full gate, or the next ungated frame).

A gate is a bool tile map over the network input (like a change map). A layer of another
resolution sees, at each of its positions, whether any gated tile overlaps the input pixels
that position stands for (the position's span scaled by input size / layer size). That
keeps the mapping exact for strides and upsampling alike; the gate's margin (grown by its
maker) covers the receptive field beyond that span.
"""

from __future__ import annotations

import functools

import torch


class Gate:
    """A bool (Ht, Wt) tile map over an (height, width) input, resampled per layer size."""

    def __init__(self, tiles: torch.Tensor, tile: int, height: int, width: int):
        self.tile = tile
        self.height = height
        self.width = width
        self._tiles = tiles
        self._fraction: float | None = None
        self._maps: dict[tuple[int, int], torch.Tensor] = {}
        self._rows: dict[int, torch.Tensor] = {}

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
            # Separable: first each layer row's tile columns, then each column of those. A
            # layer finer than the tiles reads one tile per position (an index), a coarser one
            # any of a range (prefix sums); the ranges depend on the sizes only (cached).
            rows = self._rows.get(height)
            if rows is None:
                rows = self._rows[height] = any_in_spans(
                    self._tiles, _spans(height, self.height, self.tile, self._tiles.device))
            mask = any_in_spans(rows.t(), _spans(width, self.width, self.tile,
                                                 rows.device)).t().contiguous()
            self._maps[key] = mask
        return mask


def any_in_spans(tiles: torch.Tensor, spans: tuple[torch.Tensor, ...] | torch.Tensor
                 ) -> torch.Tensor:
    """
    Rows of bool ``tiles`` (T, C) OR-ed over each span: (n, C) for n spans of rows.

    ``spans`` is one row index per span, or the spans' [lo, hi) bounds.
    """
    if isinstance(spans, torch.Tensor):  # every span is one tile row
        return tiles.index_select(0, spans)
    lo, hi = spans
    sums = torch.zeros(tiles.shape[0] + 1, tiles.shape[1], dtype=torch.int32,
                       device=tiles.device)
    torch.cumsum(tiles, 0, dtype=torch.int32, out=sums[1:])
    return (sums.index_select(0, hi) - sums.index_select(0, lo)) > 0


@functools.lru_cache(maxsize=64)
def _spans(n: int, size: int, tile: int,
           device: torch.device) -> tuple[torch.Tensor, ...] | torch.Tensor:
    """
    Return the tile rows each of ``n`` positions over ``size`` input pixels covers.

    One index per position where each covers a single tile, else the ranges [lo, hi). Made
    on the CPU (deciding which needs the values) and kept: the sizes repeat every frame.
    """
    lo, hi = _span(n, size, tile)
    if bool((hi - lo == 1).all()):
        return lo.to(device)
    return lo.to(device), hi.to(device)


def _span(n: int, size: int, tile: int) -> tuple[torch.Tensor, ...]:
    """Tile ranges [lo, hi) that each of ``n`` positions over ``size`` input pixels covers."""
    i = torch.arange(n)
    first = (i * size) // n  # the first input pixel position i stands for
    last = ((i + 1) * size + n - 1) // n - 1  # and the last one
    return first // tile, last // tile + 1
