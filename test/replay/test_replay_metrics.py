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

"""Replay metrics against values worked out by hand, and the pure helpers around them."""

import math
from types import SimpleNamespace

import numpy as np
import pytest

from sparse_perception.models.decoders import COCO17_JOINTS
from sparse_perception.replay.errors import ReplayError
from sparse_perception.replay.metrics import (
    binary_iou, BinaryIou, KeypointAgreement, MaskAgreement, match_people, Pck, PersonTruth)
from sparse_perception.replay.runner import class_id, coco_view
from sparse_perception.replay.sources import FrameRange, natural_key
from support import require_module


def test_mask_agreement_by_hand():
    dense = np.array([[0, 0, 1, 1], [2, 2, 2, 255]], np.uint8)
    incremental = np.array([[0, 1, 1, 1], [2, 2, 0, 255]], np.uint8)
    agreement = MaskAgreement()
    assert agreement.add(incremental, dense) == pytest.approx(6 / 8)
    assert agreement.add(dense, dense) == 1.0
    assert agreement.pixel == pytest.approx(14 / 16)
    # Per class over both frames, IoU = intersection / union of pixel counts:
    # 0: frame 1 dense (0,0),(0,1); incr (0,0),(1,2) -> 1 of 3; frame 2 2 of 2. Total 3 / 5.
    # 1: frame 1 dense (0,2),(0,3); incr (0,1),(0,2),(0,3) -> 2/3; frame 2: 2/2. Total 4 / 5.
    # 2: frame 1 dense (1,0),(1,1),(1,2); incr (1,0),(1,1) -> 2/3; frame 2 3/3. Total 5 / 6.
    # 255: 1/1 and 1/1 -> 2 / 2.
    expected = np.mean([3 / 5, 4 / 5, 5 / 6, 1.0])
    assert agreement.miou == pytest.approx(expected)
    assert agreement.summary()['mask_pixel_worst_frame'] == pytest.approx(0.75)
    with pytest.raises(ValueError, match='differ in size'):
        agreement.add(dense[:1], dense)


def test_match_people_pairs_nearest_first():
    a = np.array([[[0, 0], [1, 1]], [[100, 100], [101, 101]]], np.float64)
    b = a[::-1] + 0.5  # same people, other order
    assert sorted(match_people(a, b)) == [(0, 1), (1, 0)]
    assert match_people(a, b[:0]) == []
    c = a.copy()
    c[0, 0] = np.nan  # a NaN joint is left out of the distance
    assert sorted(match_people(c, b)) == [(0, 1), (1, 0)]


def test_keypoint_agreement_by_hand():
    dense = np.array([[[10, 10, 0.9], [20, 20, 0.1]]], np.float32)
    moved = dense.copy()
    moved[0, 0, :2] += (3, 4)  # 5 px away, a confident joint
    moved[0, 1, :2] += (6, 8)  # 10 px away, an unsure one
    agreement = KeypointAgreement()
    assert agreement.add(moved, dense) == pytest.approx(7.5)
    assert agreement.add(dense, dense) == 0.0
    summary = agreement.summary()
    assert summary['keypoint_px'] == pytest.approx(15 / 4)
    assert summary['keypoint_px_confident'] == pytest.approx(5 / 2)
    assert summary['keypoint_px_worst_frame'] == pytest.approx(7.5)
    assert summary['people_mismatch_frames'] == 0
    assert math.isnan(agreement.add(dense[:0], dense))
    assert agreement.summary()['people_mismatch_frames'] == 1


def test_binary_iou_davis_conventions():
    truth = np.zeros((4, 4), bool)
    truth[:2, :2] = True  # 4 pixels
    predicted = np.zeros((4, 4), bool)
    predicted[:2, :3] = True  # 6 pixels, 4 shared
    assert binary_iou(predicted, truth) == pytest.approx(4 / 6)
    empty = np.zeros((4, 4), bool)
    assert binary_iou(empty, empty) == 1.0  # nothing to find, nothing found
    iou = BinaryIou()
    iou.add(predicted, truth)
    iou.add(empty, empty)
    s = iou.summary()
    assert s['iou'] == pytest.approx((4 / 6 + 1) / 2)  # mean over frames (DAVIS J)
    assert s['iou_global'] == pytest.approx(4 / 6)  # all pixels together
    # background: frame 1 inter 10 union 12, frame 2 inter 16 union 16 -> 26 / 28.
    assert s['miou'] == pytest.approx((4 / 6 + 26 / 28) / 2)
    assert s['frames_scored'] == 2


def _person(points, box=100.0, head=10.0):
    keypoints = np.full((17, 2), np.nan)
    visible = np.zeros(17, bool)
    for joint, xy in points.items():
        keypoints[joint] = xy
        visible[joint] = True
    return PersonTruth(keypoints, visible, box, head)


def test_pck_and_pckh_by_hand():
    truth = _person({5: (50, 50), 6: (70, 50), 11: (50, 100), 12: (70, 100)})
    predicted = np.full((1, 17, 3), np.nan)
    predicted[0, 5] = (50, 50, 1)  # exact
    predicted[0, 6] = (70, 62, 1)  # 12 px: within 0.2 * 100, outside 0.5 * 10
    predicted[0, 11] = (50, 125, 1)  # 25 px: outside both
    predicted[0, 12] = (72, 100, 1)  # 2 px: within both
    pck = Pck(alpha=0.2, head_alpha=0.5)
    assert pck.add(predicted, [truth]) == pytest.approx(3 / 4)
    assert pck.summary()['pckh'] == pytest.approx(2 / 4)
    # Nobody predicted: every annotated joint is wrong.
    assert pck.add(predicted[:0], [truth]) == 0.0
    # A frame without annotations is not scored.
    assert math.isnan(pck.add(predicted, []))
    summary = pck.summary()
    assert summary['pck'] == pytest.approx(3 / 8)
    assert summary['joints_scored'] == 8 and summary['frames_scored'] == 2


def test_pck_matches_people_and_ignores_invisible_joints():
    near = _person({0: (10, 10), 1: (12, 10)})
    far = _person({0: (200, 200), 1: (202, 200)})
    predicted = np.full((2, 17, 3), np.nan)
    predicted[0, :2, :2] = [(200, 201), (202, 201)]
    predicted[1, :2, :2] = [(10, 11), (12, 11)]
    predicted[1, 2, :2] = (500, 500)  # a joint with no annotation: not scored
    pck = Pck()
    assert pck.add(predicted, [near, far]) == 1.0
    assert pck.summary()['joints_scored'] == 4


def test_coco_view_reorders_by_name():
    names = ('right_ankle', 'nose', 'elbow_of_a_robot')
    keypoints = np.arange(9, dtype=np.float32).reshape(1, 3, 3)
    view = coco_view(keypoints, names)
    assert view.shape == (1, 17, 3)
    np.testing.assert_array_equal(view[0, COCO17_JOINTS.index('right_ankle')], [0, 1, 2])
    np.testing.assert_array_equal(view[0, COCO17_JOINTS.index('nose')], [3, 4, 5])
    assert np.isnan(view[0, COCO17_JOINTS.index('left_eye')]).all()


def test_class_id():
    names = ('background', 'aeroplane', 'Person')
    assert class_id(names, 'person') == 2
    assert class_id(names, '1') == 1
    with pytest.raises(ReplayError, match="class 'dog' is not one of.*background, aeroplane"):
        class_id(names, 'dog')
    with pytest.raises(ReplayError, match='class id 3 is out of range'):
        class_id(names, '3')


@pytest.mark.parametrize('text, start, stop, step', [
    (':', 0, None, 1), ('10:', 10, None, 1), (':50', 0, 50, 1), ('5:20:3', 5, 20, 3),
    ('7', 7, 8, 1), ('::2', 0, None, 2)])
def test_frame_range_parse(text, start, stop, step):
    frames = FrameRange.parse(text)
    assert (frames.start, frames.stop, frames.step) == (start, stop, step)


@pytest.mark.parametrize('text', ['a:b', '5:5', '10:2', '0:10:0', '-1:', '1:2:3:4', ''])
def test_frame_range_rejects(text):
    with pytest.raises(ReplayError, match='frame range'):
        FrameRange.parse(text)


def test_frame_range_selection():
    frames = FrameRange.parse('2:9:3')
    assert [i for i in range(20) if frames.wants(i)] == [2, 5, 8]
    assert frames.count(20) == 3 and frames.count(6) == 2 and frames.count(None) is None
    assert frames.past(9) and not frames.past(8)


def test_natural_order():
    names = ['frame10.png', 'frame2.png', 'Frame1.png', '00003.jpg']
    assert sorted(names, key=natural_key) == ['00003.jpg', 'Frame1.png', 'frame2.png',
                                              'frame10.png']


def test_the_pose_section_counts_people_and_their_error_against_dense():
    from sparse_perception.replay.runner import DenseOutputs, Scorer
    from sparse_perception.replay.sources import Frame
    from sparse_perception.results import FrameResult, HeadStats, PipelineStats, PoseResult

    joints = ('a', 'b')

    def people(*offsets):  # (P, 2, 3): two joints per person, shifted by each offset
        return np.array([[[10.0 + o, 10.0, 0.9], [20.0 + o, 20.0, 0.9]] for o in offsets],
                        np.float32).reshape(len(offsets), 2, 3)

    scorer = Scorer(joint_names=joints)
    # Incremental vs dense: a person 1 px off; nobody in both; one missed; two vs two.
    for index, (got, want) in enumerate([(people(1.0), people(0.0)), (people(), people()),
                                         (people(), people(0.0)),
                                         (people(0.0, 100.0), people(3.0, 100.0))]):
        result = FrameResult(None, PoseResult(got, joints, ()), np.zeros((1, 1), bool), 16,
                             PipelineStats(0.5, {'pose': HeadStats(0.5, 1, 2, False, 1.0)}, 1.0))
        frame = Frame(index, np.zeros((4, 4, 3), np.uint8), index, 'camera', index)
        scorer.add(frame, result, DenseOutputs(None, want, 2.0))
    pose = scorer.pose()
    assert pose['frames_with_people'] == 2 and pose['people_per_frame_mean'] == 0.75
    assert pose['person_count_mismatch_frames'] == 1
    # Matched joints: 1, 1 (frame 0), 0, 0 (frame 3, the right person), 3, 3 (frame 3).
    assert pose['keypoint_px_p50'] == pytest.approx(1.0)
    assert pose['keypoint_px_mean'] == pytest.approx(8.0 / 6.0)


def test_frames_without_a_change_map_do_not_count_in_the_changed_fraction(tmp_path):
    from sparse_perception.replay.plots import activity_plot
    from sparse_perception.replay.report import write_frames_csv
    from sparse_perception.replay.runner import Scorer
    from sparse_perception.replay.sources import Frame
    from sparse_perception.results import FrameResult, HeadStats, PipelineStats

    scorer = Scorer()
    for index, (fraction, measured) in enumerate([(0.2, True), (1.0, False), (0.4, True)]):
        stats = PipelineStats(fraction, {'pose': HeadStats(0.5, 1, 2, False, 1.0)}, 1.0,
                              measured)
        result = FrameResult(None, None, np.ones((1, 1), bool), 16, stats)
        scorer.add(Frame(index, np.zeros((4, 4, 3), np.uint8), index, 'camera', index), result,
                   None)
    assert [r.changed_fraction for r in scorer.records] == [0.2, None, 0.4]
    assert scorer.activity()['changed_fraction'] == pytest.approx(0.3)
    write_frames_csv(scorer.records, tmp_path / 'frames.csv')
    rows = (tmp_path / 'frames.csv').read_text().splitlines()
    column = rows[0].split(',').index('changed_fraction')
    assert [row.split(',')[column] for row in rows[1:]] == ['0.2', '', '0.4']
    require_module('matplotlib')
    activity_plot(scorer.records, tmp_path / 'activity.png')  # a gap, not a failure
    assert (tmp_path / 'activity.png').stat().st_size > 0


def test_a_long_run_holds_a_few_hundred_bytes_a_frame():
    # A replay of hours of recording scores every frame: the scorer keeps running sums, and
    # per frame only what frames.csv, the plots and exact percentiles need, as numbers: the
    # record (about 100 bytes), each head's time and, for the exact median keypoint distance,
    # 4 bytes per matched joint (one BlazePose person here: 33 joints).
    import tracemalloc

    from sparse_perception.replay.runner import DenseOutputs, Scorer
    from sparse_perception.replay.sources import Frame
    from sparse_perception.results import FrameResult, HeadStats, PipelineStats, PoseResult

    joints = tuple(f'joint{i}' for i in range(33))
    person = np.array([[[10.0 + i, 20.0, 0.9] for i in range(33)]], np.float32)
    mask = np.zeros((4, 4), np.uint8)
    layers = {f'layer{i}': 0.5 for i in range(80)}  # a network's worth of layer names
    image = np.zeros((4, 4, 3), np.uint8)

    def frame(index):
        stats = PipelineStats(0.5, {head: HeadStats(0.5 + index % 7 / 100, 1, 2, False, 1.0,
                                                    dict(layers))
                                    for head in ('segmentation', 'pose')}, 1.0)
        pose = PoseResult(person + index % 3, joints, ())
        result = FrameResult(SimpleNamespace(mask=mask), pose, np.ones((1, 1), bool), 16, stats)
        return Frame(index, image, index, 'camera', index), result

    scorer = Scorer(joint_names=joints)
    dense = DenseOutputs(mask, person, 2.0)
    for index in range(200):  # past the first frames' one-off allocations
        scorer.add(*frame(index), dense)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for index in range(200, 2200):
            scorer.add(*frame(index), dense)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown / 2000 < 400, f'{grown / 2000:.0f} bytes a frame'
    assert scorer.activity()['per_layer']['pose']['layer3'] == pytest.approx(0.5)
    assert scorer.pose()['people_per_frame_mean'] == 1.0
    assert len(list(scorer.records)) == 2200
