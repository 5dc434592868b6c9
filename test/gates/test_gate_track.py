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

"""The pose track gate's tiles from synthetic keypoints (no model)."""

from sparse_perception import settings as st
from sparse_perception.gates.track import keypoint_tiles, TrackGate
import torch


def _keypoints(*rows):
    """Return (y, x, score) rows, normalised to the input, as MoveNet's (1, 1, K, 3) output."""
    return torch.tensor(rows, dtype=torch.float32).reshape(1, 1, len(rows), 3)


def _gate(**changes):
    values = {'pose.gate': 'track', 'sparsity.gate_margin': 0, 'sparsity.gate_refresh': 0,
              'sparsity.gate_dense_above': 1.0, **changes}
    return TrackGate(st.replace(st.PerceptionSettings(), values), 16)


def test_the_box_spans_the_confident_keypoints_only():
    # A 64x64 input in tiles of 16: 4x4 tiles. Two confident joints at pixels (y 20, x 40)
    # and (y 36, x 8); a third far away scores below the threshold.
    points = _keypoints((20 / 64, 40 / 64, 0.9), (36 / 64, 8 / 64, 0.5), (0.99, 0.99, 0.1))
    tiles = keypoint_tiles(points, 0.3, 64, 64, 16)
    want = torch.zeros(4, 4, dtype=torch.bool)
    want[1:3, 0:3] = True  # rows 20 // 16 .. 36 // 16, columns 8 // 16 .. 40 // 16
    assert torch.equal(tiles, want)


def test_no_confident_keypoint_is_no_box_and_an_edge_keypoint_is_in_the_last_tile():
    assert keypoint_tiles(_keypoints((0.5, 0.5, 0.2)), 0.3, 64, 64, 16) is None
    tiles = keypoint_tiles(_keypoints((1.0, 1.0, 0.9)), 0.3, 72, 64, 16)
    assert tiles.shape == (5, 4) and tiles.nonzero().tolist() == [[4, 3]]


def test_the_gate_follows_the_last_frame_grown_by_the_margin():
    gate = _gate(**{'sparsity.gate_margin': 1})
    assert gate.gate(64, 64) is None  # nobody seen yet: ungated
    gate.observe(_keypoints((0.1, 0.1, 0.9)), 64, 64)  # tile (0, 0)
    tiles = gate.gate(64, 64)
    assert tiles.nonzero().tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    gate.observe(_keypoints((0.1, 0.1, 0.1)), 64, 64)  # nobody confident: ungated again
    assert gate.gate(64, 64) is None


def test_the_refresh_cell_and_the_crowd_fallback_are_those_of_the_segmentation_gates():
    gate = _gate(**{'sparsity.gate_refresh': 4})
    # Frame 1 of 4 cells of 2x2 tiles: the top right cell joins the box's tile.
    gate.observe(_keypoints((0.1, 0.1, 0.9)), 64, 64)
    assert gate.gate(64, 64).nonzero().tolist() == [[0, 0], [0, 2], [0, 3], [1, 2], [1, 3]]
    for margin, dense_above, gated in ((1, 0.25, True), (1, 0.2, False), (2, 0.5, False)):
        gate.reconfigure(st.replace(st.PerceptionSettings(), {
            'pose.gate': 'track', 'sparsity.gate_margin': margin, 'sparsity.gate_refresh': 0,
            'sparsity.gate_dense_above': dense_above}))
        # Grown by 1: 4 of 16 tiles; by 2: 9 of 16. Above dense_above, the frame runs ungated.
        assert (gate.gate(64, 64) is not None) == gated, (margin, dense_above)


def test_gate_none_makes_no_gate_and_remembers_nothing():
    gate = _gate(**{'pose.gate': 'none'})
    gate.observe(_keypoints((0.1, 0.1, 0.9)), 64, 64)
    assert not gate.active and gate.previous is None and gate.gate(64, 64) is None


def test_another_gate_or_tile_starts_from_nothing_seen():
    gate = _gate()
    gate.observe(_keypoints((0.1, 0.1, 0.9)), 64, 64)
    assert gate.gate(64, 64) is not None
    # Under gate none the box is not followed: back on track, it starts ungated.
    gate.reconfigure(st.replace(st.PerceptionSettings(), {'pose.gate': 'none'}))
    gate.observe(_keypoints((0.9, 0.9, 0.9)), 64, 64)
    gate.reconfigure(st.replace(st.PerceptionSettings(), {'pose.gate': 'track'}))
    assert gate.gate(64, 64) is None
    gate.observe(_keypoints((0.1, 0.1, 0.9)), 64, 64)
    tiles = {'pose.gate': 'track', 'change.tile_size': 8}
    gate.reconfigure(st.replace(st.PerceptionSettings(), tiles))  # the box is in 16s
    assert gate.tile == 8 and gate.gate(64, 64) is None
    gate.observe(_keypoints((0.1, 0.1, 0.9)), 64, 64)
    assert gate.gate(64, 64).shape == (8, 8)
