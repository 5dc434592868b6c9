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

"""Overlay drawing: colours land where the mask and the skeleton are, nowhere else."""

import numpy as np
import pytest

from sparse_perception.media.overlay import draw_result, palette
from sparse_perception.results import FrameResult, PipelineStats, PoseResult, SegmentationResult


def _result(mask=None, keypoints=None, tiles=None):
    segmentation = None if mask is None else SegmentationResult(mask, ('bg', 'a', 'b'))
    pose = None if keypoints is None else PoseResult(keypoints, ('p', 'q'), ((0, 1),))
    tiles = np.zeros((2, 2), bool) if tiles is None else tiles
    return FrameResult(segmentation, pose, tiles, 8, PipelineStats(0.0))


def test_palette_is_distinct_and_background_black():
    colours = palette(21)
    assert colours[0].tolist() == [0, 0, 0]
    assert len({tuple(c) for c in colours}) == 21


def test_mask_colours_only_labelled_pixels():
    image = np.full((16, 16, 3), 100, np.uint8)
    mask = np.zeros((16, 16), np.uint8)
    mask[2:5, 3:7] = 1
    mask[10, 10] = 255  # unlabelled stays untouched
    out = draw_result(image, _result(mask))
    changed = np.any(out != image, axis=2)
    np.testing.assert_array_equal(changed, mask == 1)
    assert image.min() == 100  # input untouched


def test_skeleton_drawn_between_confident_joints():
    image = np.zeros((64, 64, 3), np.uint8)
    keypoints = np.array([[[10, 10, 0.9], [50, 10, 0.9]]], np.float32)
    out = draw_result(image, _result(keypoints=keypoints))
    assert out[10, 30].any()  # on the bone
    assert not out[40, 30].any()
    keypoints[0, 1, 2] = 0.1  # weak joint: no bone
    assert not draw_result(image, _result(keypoints=keypoints))[10, 30].any()
    # The threshold is output.min_score (0.3 by default), as the node's debug image has it.
    keypoints[0, 1, 2] = 0.5
    assert draw_result(image, _result(keypoints=keypoints))[10, 30].any()
    assert not draw_result(image, _result(keypoints=keypoints), min_score=0.6)[10, 30].any()


def test_change_tint_and_mismatch():
    image = np.zeros((16, 16, 3), np.uint8)
    tiles = np.array([[True, False], [False, False]])
    out = draw_result(image, _result(tiles=tiles), show_change=True)
    assert out[:8, :8, 0].min() == 200 and out[8:, :, 0].max() == 0
    with pytest.raises(ValueError, match='does not match'):
        draw_result(image, _result(np.zeros((4, 4), np.uint8)))


def test_each_person_is_labelled_with_their_id_above_the_skeleton():
    image = np.zeros((64, 64, 3), np.uint8)
    keypoints = np.array([[[20, 40, 0.9], [44, 40, 0.9]]], np.float32)
    plain = draw_result(image, _result(keypoints=keypoints))
    pose = PoseResult(keypoints, ('p', 'q'), ((0, 1),), np.array([3]))
    labelled = draw_result(image, FrameResult(None, pose, np.zeros((2, 2), bool), 8,
                                              PipelineStats(0.0)))
    assert plain[22:36].any() and labelled[22:36].any()  # both label above the joints...
    assert (plain[22:36] != labelled[22:36]).any()  # ...with the id: '0' and '3' differ
    # The same skeleton, in the colour of the id.
    np.testing.assert_array_equal(plain[38:].any(2), labelled[38:].any(2))
    assert (plain[40, 32] != labelled[40, 32]).any()


def test_changed_tiles_are_drawn_only_where_a_change_map_measured_them():
    image = np.full((16, 16, 3), 100, np.uint8)
    tiles = np.ones((2, 2), bool)
    measured = FrameResult(None, None, tiles, 8, PipelineStats(1.0))
    without = FrameResult(None, None, tiles, 8, PipelineStats(1.0, change_measured=False))
    assert not np.array_equal(draw_result(image, measured, show_change=True), image)
    assert np.array_equal(draw_result(image, without, show_change=True), image)
