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

"""Ground-truth readers: DAVIS-style mask folders, COCO-17 keypoint JSON, JHMDB .mat."""

import json
import sys

import cv2
import numpy as np
import pytest
from scipy.io import savemat

from sparse_perception.models.decoders import COCO17_JOINTS
from sparse_perception.replay.errors import ReplayError
from sparse_perception.replay.groundtruth import (
    JHMDB_JOINTS, JHMDB_SHARED, KeypointTruth, load_truth, MaskTruth)
from support import require_shared


def _coco(tmp_path, document):
    path = tmp_path / 'keypoints.json'
    path.write_text(json.dumps(document))
    return path


def _keypoints(points):
    """COCO flat list for {joint name: (x, y, v)}."""
    flat = []
    for name in COCO17_JOINTS:
        flat += list(points.get(name, (0, 0, 0)))
    return flat


def test_coco_json(tmp_path):
    document = {
        'images': [{'id': 7, 'file_name': 'frame10.jpg'}, {'id': 3, 'file_name': 'frame2.jpg'}],
        'categories': [{'id': 1, 'name': 'person', 'keypoints': list(COCO17_JOINTS)}],
        'annotations': [
            {'id': 1, 'image_id': 3, 'bbox': [0, 0, 40, 80], 'keypoints': _keypoints({
                'nose': (20, 10, 2), 'left_shoulder': (30, 30, 2), 'right_shoulder': (10, 30, 1),
                'left_knee': (5, 5, 0)})},
            {'id': 2, 'image_id': 3, 'iscrowd': 1, 'keypoints': _keypoints({'nose': (1, 1, 2)})},
            {'id': 3, 'image_id': 7,
             'keypoints': _keypoints({'left_hip': (10, 20, 2), 'right_hip': (40, 60, 2)})},
        ]}
    truth = load_truth(_coco(tmp_path, document))
    assert isinstance(truth, KeypointTruth) and truth.format == 'coco'
    # Images in natural file order: frame2 first, then frame10.
    first, = truth.for_frame(0)
    assert truth.for_frame(5, 'frame2.png') == truth.for_frame(0)  # by name where one is given
    assert first.box_size == 80  # longer side of the bbox
    np.testing.assert_array_equal(first.keypoints[COCO17_JOINTS.index('nose')], [20, 10])
    assert first.visible.sum() == 3  # v = 0 is not annotated
    assert first.head_size == pytest.approx(20.0)  # nose (20, 10) to shoulders' middle (20, 30)
    second, = truth.for_frame(1)
    assert second.box_size == 40  # no bbox: the visible joints' box, 30 x 40
    assert np.isnan(second.head_size)
    assert truth.for_frame(2) is None and truth.for_frame(0, 'other.jpg') is None


def test_coco_json_with_other_joint_order(tmp_path):
    names = ['right_ankle', 'nose']
    document = {'images': [{'id': 1, 'file_name': 'a.jpg'}],
                'categories': [{'keypoints': names}],
                'annotations': [{'image_id': 1, 'keypoints': [5, 6, 2, 7, 8, 2]}]}
    person, = load_truth(_coco(tmp_path, document)).for_frame(0)
    np.testing.assert_array_equal(person.keypoints[COCO17_JOINTS.index('right_ankle')], [5, 6])
    np.testing.assert_array_equal(person.keypoints[COCO17_JOINTS.index('nose')], [7, 8])


@pytest.mark.parametrize('document, message', [
    ('not json', 'not COCO keypoint JSON'),
    ({'images': []}, 'not COCO keypoint JSON'),
    ({'images': [{'id': 1, 'file_name': 'a'}], 'categories': [{'keypoints': ['nose', 'tail']}],
      'annotations': []}, r"\['tail'\] are not COCO-17 joints"),
    ({'images': [{'id': 1, 'file_name': 'a'}], 'annotations': [
        {'id': 4, 'image_id': 1, 'keypoints': [1, 2, 2]}]}, 'annotation 4 has 3 keypoint values'),
])
def test_bad_coco_json(tmp_path, document, message):
    path = tmp_path / 'bad.json'
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    with pytest.raises(ReplayError, match=message):
        load_truth(path)


def _jhmdb(tmp_path, positions):
    path = tmp_path / 'joint_positions.mat'
    savemat(path, {'pos_img': positions, 'pos_world': positions * 0.01})
    return path


def test_jhmdb_mat(tmp_path):
    frames = 3
    positions = np.zeros((2, 15, frames))
    for joint in range(15):
        positions[0, joint] = 11 + joint * 2 + np.arange(frames)  # x, 1-based
        positions[1, joint] = 101 + joint * 3  # y, 1-based
    truth = load_truth(_jhmdb(tmp_path, positions))
    assert truth.format == 'jhmdb' and len(truth.frames) == frames
    assert truth.scored_joints == JHMDB_SHARED and len(JHMDB_SHARED) == 12
    person, = truth.for_frame(2)
    assert person.visible.sum() == 12
    hidden = [COCO17_JOINTS.index(n) for n in ('nose', 'left_eye', 'right_ear')]
    assert not person.visible[hidden].any()
    # JHMDB joint j lands on its COCO-17 name, 1-based -> 0-based.
    for name in JHMDB_SHARED:
        j = JHMDB_JOINTS.index(name)
        np.testing.assert_array_equal(person.keypoints[COCO17_JOINTS.index(name)],
                                      [10 + j * 2 + 2, 100 + j * 3])
    assert person.box_size == pytest.approx(14 * 3)  # y spans 42 px, x spans 28
    neck, face = JHMDB_JOINTS.index('neck'), JHMDB_JOINTS.index('face')
    assert person.head_size == pytest.approx(np.hypot((face - neck) * 2, (face - neck) * 3))
    assert truth.for_frame(3) is None


def test_jhmdb_wrong_shape(tmp_path):
    with pytest.raises(ReplayError, match=r'pos_img has shape \(2, 14, 3\)'):
        load_truth(_jhmdb(tmp_path, np.zeros((2, 14, 3))))
    path = tmp_path / 'other.mat'
    savemat(path, {'something': np.zeros(3)})
    with pytest.raises(ReplayError, match='not a JHMDB joint_positions.mat'):
        load_truth(path)


def test_jhmdb_without_scipy_says_what_to_install(tmp_path, monkeypatch):
    path = _jhmdb(tmp_path, np.zeros((2, 15, 1)))
    monkeypatch.setitem(sys.modules, 'scipy.io', None)
    with pytest.raises(ReplayError, match=r'needs scipy.*sparse_perception\[replay\]'):
        load_truth(path)


def test_shared_jhmdb_clip():
    truth = load_truth(require_shared(
        'data/jhmdb/ReadJHMDBAnnotations/data/joint_positions.mat'))
    assert len(truth.frames) == 40
    for frame in truth.frames:
        person, = frame
        points = person.keypoints[person.visible]
        assert len(points) == 12
        # Inside the 320x240 frames, and a plausible person and head size.
        assert (points >= -1).all() and (points[:, 0] < 321).all() and (points[:, 1] < 241).all()
        assert 40 < person.box_size < 240 and 3 < person.head_size < 60


def test_mask_folder(tmp_path):
    for index in (0, 1, 10, 2):
        mask = np.zeros((6, 8), np.uint8)
        mask[:index % 6 + 1, :2] = 255
        cv2.imwrite(str(tmp_path / f'{index:d}.png'), mask)
    colour = np.zeros((6, 8, 3), np.uint8)
    colour[0, 0] = (0, 0, 128)  # a palette-coloured object: non-zero is foreground
    cv2.imwrite(str(tmp_path / '11.png'), colour)
    (tmp_path / 'notes.txt').write_text('ignored')
    truth = load_truth(tmp_path)
    assert isinstance(truth, MaskTruth) and [p.name for p in truth.files] == [
        '0.png', '1.png', '2.png', '10.png', '11.png']
    assert truth.numbered  # a recording's frame i takes mask i: DAVIS names them so
    assert truth.for_frame(10).sum() == (10 % 6 + 1) * 2 and truth.matched_by == 'frame number'
    assert truth.for_frame(0, '2.jpg').sum() == 3 * 2  # by name where the frame has one
    assert truth.matched_by == 'file name'
    assert truth.for_frame(11).sum() == 1
    assert truth.for_frame(3) is None and truth.for_frame(0, '7.jpg') is None
    cv2.imwrite(str(tmp_path / '02.png'), np.zeros((6, 8), np.uint8))
    with pytest.raises(ReplayError, match='02.png and 2.png both name frame 2; keep one'):
        load_truth(tmp_path)
    (tmp_path / '02.png').unlink()
    cv2.imwrite(str(tmp_path / 'x.png'), np.zeros((6, 8), np.uint8))
    truth = load_truth(tmp_path)  # not every mask is numbered: by position (natural order)
    assert not truth.numbered and truth.for_frame(3).sum() == (10 % 6 + 1) * 2
    assert truth.matched_by == 'position' and truth.describe()['matched_by'] == 'position'


def test_mask_folder_errors(tmp_path):
    with pytest.raises(ReplayError, match='holds no PNG masks'):
        load_truth(tmp_path)
    (tmp_path / '0.png').write_bytes(b'\x89PNG\r\n\x1a\n broken')
    with pytest.raises(ReplayError, match=r'0.png cannot be read: .*PNG .*truncated'):
        load_truth(tmp_path).for_frame(0)


def test_mask_files_get_the_frame_checks(tmp_path):
    import struct
    import zlib

    def chunk(kind, payload):
        return (struct.pack('>I', len(payload)) + kind + payload
                + struct.pack('>I', zlib.crc32(kind + payload)))
    # A 40000x40000 mask in a few hundred bytes: refused from its header, nothing allocated.
    header = struct.pack('>IIBBBBB', 40000, 40000, 8, 0, 0, 0, 0)
    huge = (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header)
            + chunk(b'IDAT', zlib.compress(bytes(40001 * 2))) + chunk(b'IEND', b''))
    (tmp_path / '0.png').write_bytes(huge)
    (tmp_path / '1.png').write_bytes(bytes(range(256)) * 4)  # random bytes named .png
    truth = load_truth(tmp_path)
    with pytest.raises(ReplayError, match=r'0.png cannot be read: .*40000x40000 .*refused'):
        truth.for_frame(0)
    with pytest.raises(ReplayError, match=r'1.png cannot be read: .*not JPEG/PNG'):
        truth.for_frame(1)


@pytest.mark.parametrize('document, message', [
    ([1, 2, 3], 'the document is a list, not an object'),
    ({'images': {'id': 1}, 'annotations': []}, 'images and annotations must be lists'),
    ({'images': [{'file_name': 'a'}], 'annotations': []}, "missing key 'id'"),
    ({'images': [{'id': 1}], 'annotations': [5]}, 'expected shape'),
    ({'images': [{'id': [1]}], 'annotations': []}, 'unhashable'),
    ({'images': [{'id': 1}], 'annotations': [{'image_id': 1, 'keypoints': ['a'] * 51}]},
     'expected shape'),
    ({'images': [{'id': 1}], 'annotations': [
        {'image_id': 1, 'keypoints': [1, 2, 2] * 17, 'bbox': [0, 0, 'w', 'h']}]},
     'expected shape'),
    ({'images': [{'id': 1}], 'categories': 7, 'annotations': []}, 'expected shape'),
])
def test_coco_json_of_the_wrong_shape_is_one_error(tmp_path, document, message):
    path = tmp_path / 'bad.json'
    path.write_text(json.dumps(document))
    with pytest.raises(ReplayError, match=message):
        load_truth(path)


@pytest.mark.parametrize('suffix', ['.json', '.mat'])
def test_ground_truth_of_random_bytes_is_one_error(tmp_path, suffix):
    path = tmp_path / f'truth{suffix}'
    path.write_bytes(bytes(np.random.default_rng(3).integers(0, 256, 4096, np.uint8)))
    with pytest.raises(ReplayError, match='is not'):
        load_truth(path)


def test_shared_davis_masks():
    truth = load_truth(require_shared('data/davis/DAVIS/Annotations/480p/parkour'))
    assert len(truth.files) == 100
    mask = truth.for_frame(50)
    assert mask.shape == (480, 854) and 0.01 < mask.mean() < 0.5


def test_unknown_ground_truth(tmp_path):
    with pytest.raises(ReplayError, match='no such file or folder'):
        load_truth(tmp_path / 'nope')
    other = tmp_path / 'truth.csv'
    other.write_text('x')
    with pytest.raises(ReplayError, match=r"unknown kind '.csv'; expected a folder of PNG"):
        load_truth(other)
