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
DAVIS and JHMDB through make-bag and replay --gt score as eval accuracy does.

The frames go into rosbag2 files with ``sparse-perception make-bag`` (JPEG and PNG files byte
for byte), the bags are replayed with their ground truth, and the report's ground-truth scores
(incremental and dense) must equal those of the accuracy evaluation on the same frames with
the same settings: same models, same decoded pixels, same metric code, same frame-to-annotation
matching. A few frames keep it quick; the full sequences are compared by
``bench/replay_groundtruth.py``.
"""

import json

import pytest
from sparse_perception import cli
from sparse_perception.evaluation import accuracy
from sparse_perception.replay.sources import FrameRange
from support import require_shared

pytestmark = pytest.mark.bag

# Not the package defaults: a threshold that leaves tiles out, so that the incremental scores
# differ from the dense ones and the comparison covers the sparse path too.
SETTINGS = {'change.threshold': 8.0, 'sparsity.scale': 0.0}


def _flags():
    return [f'--{name}={value}' for name, value in SETTINGS.items()]


def _evaluate(clip, frames):
    evaluator = accuracy.Evaluator(accuracy.default_settings(**SETTINGS), log=lambda _: None)
    try:
        return evaluator.clip(accuracy.ClipData(clip, accuracy.read_frames(clip, frames),
                                                accuracy.load_truth(clip)))
    finally:
        evaluator.close()


def _replay(tmp_path, bag, head, model, truth, frames=':'):
    out = tmp_path / 'run'
    assert cli.main(['replay', str(bag), '--out', str(out), '--quiet', '--heads', head,
                     f'--model.{head}', model,
                     '--gt', str(truth), '--frames', frames, '--no-bag', '--contact-sheet',
                     '0', *_flags()]) == 0
    return json.loads((out / 'report.json').read_text())


@pytest.mark.slow
def test_davis_bag_replay_scores_as_the_evaluation(tmp_path):
    require_shared('models/coral')
    clip = accuracy.davis_clip('parkour')
    bag = tmp_path / 'parkour_bag'
    assert cli.main(['make-bag', str(clip.frames_dir), str(bag), '--rate', '24',
                     '--frames', '0:4']) == 0
    report = _replay(tmp_path, bag, 'segmentation', accuracy.SEGMENTATION_MODEL, clip.truth)
    expected = _evaluate(clip, FrameRange(0, 4))
    truth = report['ground_truth']
    assert truth['masks']['frames_scored'] == expected['frames_scored'] == 4
    assert truth['masks']['class_id'] == expected['class_id'] == 15
    assert truth['iou'] == expected['incremental_iou']
    assert truth['dense']['iou'] == expected['dense_iou']
    assert report['agreement']['mask_pixel'] == expected['agreement']
    assert expected['incremental_iou'] != expected['dense_iou']  # the sparse path was scored


@pytest.mark.slow
def test_jhmdb_bag_replay_scores_as_the_evaluation(tmp_path):
    require_shared('models/coral')
    clip = accuracy.jhmdb_clip()
    bag = tmp_path / 'jhmdb_bag'
    assert cli.main(['make-bag', str(clip.frames_dir), str(bag), '--rate', '30',
                     '--format', 'png']) == 0
    # Every 13th frame of the 40: the annotations are matched by position in the bag.
    report = _replay(tmp_path, bag, 'pose', accuracy.POSE_MODEL, clip.truth, '::13')
    expected = _evaluate(clip, FrameRange(0, None, 13))
    truth = report['ground_truth']
    assert expected['frame_indices'] == [0, 39] and expected['frames'] == 4
    assert truth['keypoints']['frames_scored'] == expected['frames_scored'] == 4
    assert truth['keypoints']['joints_scored'] == expected['joints_scored'] == 4 * 12
    assert truth['keypoints']['pck_alpha'] == accuracy.PCK_ALPHA
    assert truth['pck'] == expected['incremental_pck']
    assert truth['dense']['pck'] == expected['dense_pck']
    assert truth['pckh'] == expected['incremental_pckh']
    assert report['agreement']['keypoint_px'] == expected['agreement_keypoint_px']
