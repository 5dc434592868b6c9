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
The track gate of a single-person pose network (``pose.gate track``, MoveNet).

The gate is the box around the last frame's keypoints that score at least
``pose.gate_score``, in the network input's tiles, grown by ``sparsity.gate_margin`` tiles,
with the refresh cells and the crowd fallback of the segmentation gates (maker.py:
``sparsity.gate_refresh``, ``sparsity.gate_dense_above``). A frame after one without a
confident keypoint runs ungated: there is nobody to follow, and whoever appears must be found
anywhere.
"""

from __future__ import annotations

from typing import Any

from sparse_perception.gates.maker import bound
from sparse_perception.settings import PerceptionSettings


def keypoint_tiles(keypoints: Any, min_score: float, height: int, width: int,
                   tile: int) -> Any:
    """
    Return the bool tile map of the box around the confident keypoints, None if none is.

    ``keypoints`` holds (y, x, score) rows with y and x normalised to an (height, width)
    network input (MoveNet's output, any leading shape); the map has ceil(H/t) x ceil(W/t)
    tiles of ``tile`` pixels.
    """
    import torch

    rows = torch.as_tensor(keypoints).detach().float().reshape(-1, 3).cpu()
    confident = rows[rows[:, 2] >= min_score]
    if not len(confident):
        return None
    th, tw = -(-height // tile), -(-width // tile)
    # A keypoint on the input's far edge (1.0) lies in its last tile.
    y = (confident[:, 0].clamp(0, 1) * height).clamp(max=height - 1) // tile
    x = (confident[:, 1].clamp(0, 1) * width).clamp(max=width - 1) // tile
    tiles = torch.zeros(th, tw, dtype=torch.bool)
    tiles[int(y.min()):int(y.max()) + 1, int(x.min()):int(x.max()) + 1] = True
    return tiles


class TrackGate:
    """
    Makes each frame's gate for a single-person pose network from its last keypoints.

    The pipeline's network runner calls :meth:`gate` for the engine's tile map and
    :meth:`observe` with each frame's outputs, as it does a segmentation network's GateMaker.
    """

    def __init__(self, settings: PerceptionSettings, tile: int):
        self._configure(settings, tile)
        self.reset()

    def reconfigure(self, settings: PerceptionSettings) -> None:
        """
        Take the gate settings (and the change tiles' edge) from the next frame on.

        They are all live. Another gate, or another tile, starts from nothing seen: under
        gate none the box is not followed, and it is in the old tiles.
        """
        tile = settings.change.tile_size
        fresh = settings.pose.gate != self.mode or tile != self.tile
        self._configure(settings, tile)
        if fresh:
            self.reset()

    def _configure(self, settings: PerceptionSettings, tile: int) -> None:
        self.tile = tile
        self.mode = settings.pose.gate
        self.min_score = settings.pose.gate_score
        self.margin = settings.sparsity.gate_margin
        self.refresh = settings.sparsity.gate_refresh
        self.dense_above = settings.sparsity.gate_dense_above

    def reset(self) -> None:
        """Forget what earlier frames showed (a new stream)."""
        self.previous: Any = None  # the box of the last frame's keypoints, in tiles
        self.frames = 0

    @property
    def active(self) -> bool:
        return self.mode != 'none'

    def gate(self, height: int, width: int) -> Any:
        """Return this frame's bool tile map over an (height, width) input; None: ungated."""
        shape = (-(-height // self.tile), -(-width // self.tile))
        if self.mode == 'none' or self.previous is None or tuple(self.previous.shape) != shape:
            return None
        return bound(self.previous.clone(), self.margin, self.dense_above, self.refresh,
                     self.frames)

    def observe(self, outputs: Any, height: int, width: int) -> None:
        """Remember the box of this frame's confident keypoints (for the next frame's gate)."""
        self.frames += 1
        if self.mode == 'none':
            return
        keypoints = outputs[0] if isinstance(outputs, (tuple, list)) else outputs
        self.previous = keypoint_tiles(keypoints, self.min_score, height, width, self.tile)
