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
The replay's figures, as small accumulators over frames (numpy only).

- agreement of the incremental pipeline with its dense reference: :class:`MaskAgreement`
  (share of equal mask pixels, mIoU over classes) and :class:`KeypointAgreement` (mean
  distance in pixels between matched people's joints);
- ground truth: :class:`BinaryIou` (a predicted class against a foreground mask, DAVIS style:
  per-frame IoU averaged over frames, an empty frame that is predicted empty scores 1) and
  :class:`Pck` (PCK against the person box, PCKh against the head segment).

Latency summaries and percentiles come from :mod:`sparse_perception.evaluation.stats`.
"""

from __future__ import annotations

import array
from dataclasses import dataclass
import math
from typing import Sequence

import numpy as np

from sparse_perception.evaluation.stats import median

# The usual thresholds: PCK@0.2 of the person box, PCKh@0.5 of the head segment.
PCK_ALPHA = 0.2
PCKH_ALPHA = 0.5

# A keypoint agreement counts joints the dense pipeline is at least this sure of as "confident".
CONFIDENT_SCORE = 0.3


class MaskAgreement:
    """Class-id masks of the incremental pipeline against the dense reference."""

    def __init__(self):
        self.confusion = np.zeros((256, 256), np.int64)  # [dense, incremental]
        self.per_frame = array.array('d')  # 8 bytes a frame: a replay may be days long

    def add(self, incremental: np.ndarray, dense: np.ndarray) -> float:
        """Count one frame; return its share of equal pixels."""
        if incremental.shape != dense.shape:
            raise ValueError(f'incremental mask {incremental.shape} and dense mask '
                             f'{dense.shape} differ in size')
        pairs = dense.astype(np.int64).ravel() * 256 + incremental.astype(np.int64).ravel()
        counts = np.bincount(pairs, minlength=256 * 256).reshape(256, 256)
        self.confusion += counts
        agreement = float(np.trace(counts) / max(1, dense.size))
        self.per_frame.append(agreement)
        return agreement

    @property
    def pixel(self) -> float | None:
        """Share of all pixels of all frames on which the two masks agree."""
        total = self.confusion.sum()
        return float(np.trace(self.confusion) / total) if total else None

    @property
    def miou(self) -> float | None:
        """Mean IoU over the classes either mask uses (the dense mask taken as truth)."""
        inter = np.diag(self.confusion).astype(np.float64)
        union = self.confusion.sum(0) + self.confusion.sum(1) - inter
        present = union > 0
        return float((inter[present] / union[present]).mean()) if present.any() else None

    def summary(self) -> dict[str, float | None]:
        """Return pixel agreement, mIoU and the worst frame's agreement."""
        return {'mask_pixel': self.pixel, 'mask_miou': self.miou,
                'mask_pixel_worst_frame': min(self.per_frame) if self.per_frame else None}


def match_people(a: np.ndarray, b: np.ndarray) -> list[tuple[int, int]]:
    """
    Pair people of two keypoint sets (P, K, 2+) greedily by mean joint distance.

    Joints that are NaN in either set are left out of a pair's distance.
    """
    if len(a) == 0 or len(b) == 0:
        return []
    diff = a[:, None, :, :2] - b[None, :, :, :2]  # (Pa, Pb, K, 2)
    dist = np.sqrt((diff ** 2).sum(-1))
    valid = ~np.isnan(dist)
    count = valid.sum(-1)
    cost = np.where(count > 0, np.where(valid, dist, 0.0).sum(-1) / np.maximum(count, 1),
                    np.inf)  # (Pa, Pb)
    pairs = []
    used_a, used_b = set(), set()
    for flat in np.argsort(cost, axis=None, kind='stable'):
        i, j = divmod(int(flat), cost.shape[1])
        if i in used_a or j in used_b or not np.isfinite(cost[i, j]):
            continue
        pairs.append((i, j))
        used_a.add(i)
        used_b.add(j)
    return pairs


class KeypointAgreement:
    """Keypoints (P, K, 3: x, y, score) of the incremental pipeline against dense."""

    def __init__(self):
        self.total = 0.0
        self.joints = 0
        self.confident_total = 0.0
        self.confident_joints = 0
        self.mismatched_frames = 0  # frames where the two found different numbers of people
        self.per_frame = array.array('d')
        # Every matched joint's distance, frame after frame, for the exact median: 4 bytes a
        # joint (132 a frame for one BlazePose person).
        self.distances = array.array('f')

    def add(self, incremental: np.ndarray, dense: np.ndarray) -> float:
        """Count one frame; return its mean joint distance in pixels (NaN if nobody matched)."""
        if len(incremental) != len(dense):
            self.mismatched_frames += 1
        pairs = match_people(dense, incremental)
        distances, confident = [], []
        for i, j in pairs:
            d = np.hypot(*(dense[i, :, :2] - incremental[j, :, :2]).T)
            distances.append(d)
            confident.append(d[dense[i, :, 2] >= CONFIDENT_SCORE])
        if not pairs:
            self.per_frame.append(math.nan)
            return math.nan
        d = np.concatenate(distances)
        c = np.concatenate(confident)
        self.distances.extend(d.astype(np.float32))
        self.total += float(d.sum())
        self.joints += d.size
        self.confident_total += float(c.sum())
        self.confident_joints += c.size
        value = float(d.mean())
        self.per_frame.append(value)
        return value

    def summary(self) -> dict[str, float | int | None]:
        """Return mean joint distance (all joints, confident ones), worst frame, mismatches."""
        finite = [v for v in self.per_frame if math.isfinite(v)]
        return {
            'keypoint_px': self.total / self.joints if self.joints else None,
            'keypoint_px_confident': (self.confident_total / self.confident_joints
                                      if self.confident_joints else None),
            'keypoint_px_worst_frame': max(finite) if finite else None,
            'people_mismatch_frames': self.mismatched_frames,
        }

    def joint_p50(self) -> float | None:
        """Median distance over every matched joint of every frame (None if none matched)."""
        if not self.distances:
            return None
        return median(np.frombuffer(self.distances, np.float32))


def binary_iou(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Return the IoU of two boolean masks; 1.0 when both are empty (nothing to find or found)."""
    union = np.count_nonzero(predicted | truth)
    if union == 0:
        return 1.0
    return np.count_nonzero(predicted & truth) / union


class BinaryIou:
    """A predicted class against foreground masks, frame by frame."""

    def __init__(self):
        self.per_frame = array.array('d')
        self.inter = [0, 0]  # background, foreground
        self.union = [0, 0]

    def add(self, predicted: np.ndarray, truth: np.ndarray) -> float:
        """Count one frame (boolean foreground masks); return its foreground IoU."""
        if predicted.shape != truth.shape:
            raise ValueError(f'predicted mask {predicted.shape} and ground truth '
                             f'{truth.shape} differ in size')
        for label, (p, t) in enumerate(((~predicted, ~truth), (predicted, truth))):
            self.inter[label] += int(np.count_nonzero(p & t))
            self.union[label] += int(np.count_nonzero(p | t))
        value = binary_iou(predicted, truth)
        self.per_frame.append(value)
        return value

    def summary(self) -> dict[str, float | int | None]:
        """Mean per-frame IoU (DAVIS J), IoU over all pixels, mIoU of fg/bg, frames scored."""
        ious = [i / u for i, u in zip(self.inter, self.union) if u]
        return {
            'iou': float(np.mean(self.per_frame)) if self.per_frame else None,
            'iou_global': self.inter[1] / self.union[1] if self.union[1] else None,
            'miou': float(np.mean(ious)) if ious else None,
            'frames_scored': len(self.per_frame),
        }


@dataclass(frozen=True)
class PersonTruth:
    """One annotated person in COCO-17 joint order."""

    keypoints: np.ndarray  # (17, 2) float64 x, y in input pixels, 0-based
    visible: np.ndarray  # (17,) bool: annotated, and scored
    box_size: float  # longer side of the person box: the PCK reference length
    head_size: float  # shoulders' midpoint (neck) to face: the PCKh reference (NaN if unknown)


class Pck:
    """
    Percentage of correct keypoints against annotated people.

    A joint is correct when the prediction lies within ``alpha`` times the person's box size
    (PCK) or ``head_alpha`` times the head segment (PCKh) of the annotation. Every annotated,
    visible joint counts; an annotated person nobody was matched to scores 0 on every joint.
    Predicted people are matched to annotated ones greedily by mean joint distance.
    """

    def __init__(self, alpha: float = PCK_ALPHA, head_alpha: float = PCKH_ALPHA):
        self.alpha = alpha
        self.head_alpha = head_alpha
        self.correct = 0
        self.joints = 0
        self.head_correct = 0
        self.head_joints = 0
        self.per_frame = array.array('d')

    def add(self, predicted: np.ndarray, truths: Sequence[PersonTruth]) -> float:
        """
        Count one frame; return its PCK (NaN when it has no visible annotated joint).

        ``predicted`` is (P, 17, 3) in COCO-17 order (x, y, score; NaN where the model has
        no such joint).
        """
        if not truths:
            self.per_frame.append(math.nan)
            return math.nan
        truth_points = np.stack([np.where(t.visible[:, None], t.keypoints, np.nan)
                                 for t in truths])
        pairs = dict(match_people(truth_points, predicted[..., :2]))
        correct = joints = 0
        for t_index, truth in enumerate(truths):
            visible = truth.visible
            if t_index in pairs:
                guess = predicted[pairs[t_index], :, :2]
                distance = np.hypot(*(guess - truth.keypoints).T)
                distance = np.where(np.isnan(distance), np.inf, distance)
            else:
                distance = np.full(len(visible), np.inf)
            hits = (distance <= self.alpha * truth.box_size) & visible
            correct += int(hits.sum())
            joints += int(visible.sum())
            if math.isfinite(truth.head_size) and truth.head_size > 0:
                head_hits = (distance <= self.head_alpha * truth.head_size) & visible
                self.head_correct += int(head_hits.sum())
                self.head_joints += int(visible.sum())
        self.correct += correct
        self.joints += joints
        value = correct / joints if joints else math.nan
        self.per_frame.append(value)
        return value

    def summary(self) -> dict[str, float | int | None]:
        """Return PCK, PCKh and how many joints and frames were scored."""
        return {
            'pck': self.correct / self.joints if self.joints else None,
            'pckh': self.head_correct / self.head_joints if self.head_joints else None,
            'joints_scored': self.joints,
            'frames_scored': sum(1 for v in self.per_frame if math.isfinite(v)),
        }
