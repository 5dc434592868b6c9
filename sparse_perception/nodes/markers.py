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
Geometry of the RViz keypoint markers: where joints and bones go, without ROS types.

Keypoints are image pixels; RViz needs points in a frame. The markers lie in the image's own
``frame_id`` on the plane z = 0 with the image centre at the origin, x to the right and y down
(the optical frame convention), one pixel ``scale`` metres wide: a picture of the skeleton the
size of a poster in front of the camera's origin, not a 3-D pose.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sparse_perception.media.overlay import palette
from sparse_perception.results import PoseResult

_COLOURS = palette(32)


@dataclass(frozen=True)
class PersonMarkers:
    """The markers of one person."""

    person: int
    joints: np.ndarray  # (J, 3) float64 x, y, z in metres of the joints shown
    bones: np.ndarray  # (B, 2, 3) float64 segment end points of the bones shown
    colour: tuple[float, float, float]  # RGB 0-1 of the bones


def keypoint_markers(pose: PoseResult, image_size: tuple[int, int], min_score: float,
                     scale: float) -> list[PersonMarkers]:
    """
    Place every joint scoring at least ``min_score`` and every bone between two such joints.

    ``image_size`` is (height, width) of the input image. People without a joint to show are
    left out.
    """
    height, width = image_size
    keypoints = np.asarray(pose.keypoints, dtype=np.float64)  # (P, K, 3) x, y, score
    people = []
    # A person's id names their markers and picks their colour: both stay while they are
    # followed (a marker id must fit an int32).
    for person, joints in zip((int(i) % 2 ** 30 for i in pose.person_ids), keypoints):
        shown = joints[:, 2] >= min_score
        if not shown.any():
            continue
        xyz = np.zeros((len(joints), 3))
        xyz[:, 0] = (joints[:, 0] - width / 2) * scale
        xyz[:, 1] = (joints[:, 1] - height / 2) * scale
        bones = [(xyz[a], xyz[b]) for a, b in pose.skeleton if shown[a] and shown[b]]
        colour = tuple(float(c) / 255 for c in _COLOURS[(person % 20) + 1])
        people.append(PersonMarkers(person, xyz[shown],
                                    np.array(bones).reshape(-1, 2, 3), colour))
    return people
