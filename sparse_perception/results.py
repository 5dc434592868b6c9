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
What the perception pipeline returns for one frame: plain numpy, no ROS, no torch.

The ROS nodes turn these into messages, the replay into reports and output bags, and the
benchmarks into figures; they all read the same fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class SegmentationResult:
    """A class-id mask at the input image's resolution."""

    mask: np.ndarray  # (H, W) uint8 class ids; 255 = unlabelled
    class_names: tuple[str, ...]  # class_names[i] names class id i


@dataclass(frozen=True)
class PoseResult:
    """Keypoints of every detected person, in input image pixels."""

    keypoints: np.ndarray  # (P, K, 3) float32: x, y (input pixels, x right, y down), score 0-1
    joint_names: tuple[str, ...]  # K names, e.g. COCO-17 order
    skeleton: tuple[tuple[int, int], ...]  # joint index pairs to draw as bones
    # (P,) int: each person's id, the same while the person is followed from frame to frame
    # (a tracking model); None: people are numbered by their position in ``keypoints``.
    ids: np.ndarray | None = None

    @property
    def people(self) -> int:
        return int(self.keypoints.shape[0])

    @property
    def person_ids(self) -> np.ndarray:
        """(P,) int64: the people's ids, or their positions when the model gives none."""
        if self.ids is None:
            return np.arange(self.people, dtype=np.int64)
        return np.asarray(self.ids, dtype=np.int64)


@dataclass(frozen=True)
class HeadStats:
    """How one network ran on one frame."""

    active_fraction: float  # share of the dense work's positions recomputed (1.0 when dense)
    macs: int  # multiply-accumulates executed
    dense_macs: int  # what a dense pass costs
    dense: bool  # ran dense: first frame, refresh, reset, fallback, or the dense path
    ms: float  # wall time of this head (preprocess, network, decode)
    layers: dict[str, float] = field(default_factory=dict)  # active fraction by layer name


@dataclass(frozen=True)
class PipelineStats:
    """How the whole frame ran."""

    # Share of input tiles the change map marked changed (the segmentation head's map when
    # both heads run and the pose head's change threshold differs).
    changed_fraction: float
    heads: dict[str, HeadStats] = field(default_factory=dict)  # by head name
    ms: float = 0.0  # wall time of the whole frame
    # False: the frame's change map measured nothing (none was made: every network would run
    # its dense pass and the scene kept changing; or it is the refresh after such frames, or
    # the dense pipeline's); changed_fraction is then 1.0, every tile treated as changed
    change_measured: bool = True

    @property
    def active_fraction(self) -> float:
        """Return the heads' active fractions averaged with their dense cost as weight."""
        heads = list(self.heads.values())
        weight = sum(h.dense_macs for h in heads)
        if not weight:
            return sum(h.active_fraction for h in heads) / len(heads) if heads else 0.0
        return sum(h.active_fraction * h.dense_macs for h in heads) / weight

    @property
    def mac_fraction(self) -> float:
        """Return multiply-accumulates executed over those of a dense pass, all heads."""
        dense = sum(h.dense_macs for h in self.heads.values())
        return sum(h.macs for h in self.heads.values()) / dense if dense else 1.0

    @property
    def dense(self) -> bool:
        return any(h.dense for h in self.heads.values())


@dataclass(frozen=True)
class FrameResult:
    """Everything the pipeline produced for one frame."""

    segmentation: SegmentationResult | None
    pose: PoseResult | None
    # (Ht, Wt) bool: tiles treated as changed (the map of changed_fraction; every tile on a
    # frame whose stats say change_measured False)
    change_tiles: np.ndarray
    tile_size: int  # edge of a change tile in input pixels
    stats: PipelineStats
