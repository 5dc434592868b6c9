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

"""Keypoint marker geometry for RViz."""

import numpy as np

from sparse_perception.nodes.markers import keypoint_markers
from sparse_perception.results import PoseResult


def test_joints_and_bones_above_the_score_only():
    keypoints = np.array([[[100, 50, 0.9], [120, 50, 0.8], [0, 0, 0.1]],
                          [[10, 10, 0.05], [20, 20, 0.1], [30, 30, 0.2]],
                          [[60, 40, 0.5], [60, 40, 0.2], [60, 40, 0.9]]], np.float32)
    pose = PoseResult(keypoints, ('a', 'b', 'c'), ((0, 1), (1, 2), (0, 2)))
    people = keypoint_markers(pose, (80, 120), min_score=0.3, scale=0.01)
    assert [p.person for p in people] == [0, 2]  # person 1 has nothing to show
    first = people[0]
    # Image centre (60, 40) is the origin; one pixel is 0.01 m.
    np.testing.assert_allclose(first.joints, [[0.4, 0.1, 0.0], [0.6, 0.1, 0.0]])
    np.testing.assert_allclose(first.bones, [[[0.4, 0.1, 0.0], [0.6, 0.1, 0.0]]])
    last = people[1]
    np.testing.assert_allclose(last.joints, [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    assert last.bones.shape == (1, 2, 3)  # only a-c: b is below the score
    assert first.colour != last.colour and all(0 <= c <= 1 for c in first.colour)


def test_no_people():
    pose = PoseResult(np.zeros((0, 17, 3), np.float32), tuple('abcdefghijklmnopq'), ())
    assert keypoint_markers(pose, (10, 10), 0.3, 0.01) == []


def test_markers_are_named_and_coloured_by_the_person_id():
    keypoints = np.array([[[100, 50, 0.9], [120, 50, 0.8]]] * 2, np.float32)
    by_position = keypoint_markers(PoseResult(keypoints, ('a', 'b'), ((0, 1),)), (80, 120),
                                   0.3, 0.01)
    tracked = keypoint_markers(PoseResult(keypoints, ('a', 'b'), ((0, 1),),
                                          np.array([4, 1])), (80, 120), 0.3, 0.01)
    assert [p.person for p in tracked] == [4, 1]
    assert tracked[1].colour == by_position[1].colour  # id 1 wherever it stands
