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

"""Frame <-> network transforms and the decoders: round trips, label facts, a COCO still."""

import json

import cv2
from hypothesis import given, settings
from hypothesis import strategies as st
import numpy as np
import pytest
from sparse_perception.models import decoders
from sparse_perception.models.registry import load_model
from sparse_perception.models.transforms import ImageTransform, resize_image
from support import require_shared
import torch

SIZES = st.tuples(st.integers(1, 900), st.integers(1, 900))


@settings(max_examples=60, deadline=None)
@given(image=SIZES, net=SIZES, mode=st.sampled_from(['resize', 'letterbox']),
       points=st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=1, max_size=5))
def test_transform_round_trip(image, net, mode, points):
    transform = ImageTransform.fit(image, net, mode)
    xy = np.array(points) * (image[1], image[0])
    back = transform.to_image(transform.to_input(xy))
    np.testing.assert_allclose(back, xy, rtol=1e-9, atol=1e-6)
    top, left, bottom, right = transform.content_box
    assert 0 <= top < bottom <= net[0] and 0 <= left < right <= net[1]
    # The frame's corners land on the content box's corners.
    corners = transform.to_input(np.array([[0.0, 0.0], [image[1], image[0]]]))
    np.testing.assert_allclose(corners, [[left, top], [right, bottom]], atol=1e-6)
    if mode == 'letterbox':  # centred, aspect ratio kept to within a pixel
        assert abs(top - (net[0] - bottom)) <= 1 and abs(left - (net[1] - right)) <= 1
        assert abs(transform.scale[0] - transform.scale[1]) <= 1.0 / min(image) + 1e-9


def test_letterbox_pads_and_keeps_content():
    frame = np.zeros((100, 200, 3), np.uint8)
    frame[:, :100] = (255, 0, 0)
    transform = ImageTransform.fit(frame.shape[:2], (64, 64), 'letterbox')
    assert transform.content_size == (32, 64) and transform.offset == (16, 0)
    pixels = resize_image(frame, transform, pad_value=7)
    assert pixels.shape == (64, 64, 3) and pixels.dtype == np.uint8
    assert (pixels[:16] == 7).all() and (pixels[48:] == 7).all()
    assert (pixels[16:48, :30] == (255, 0, 0)).all() and (pixels[16:48, 34:] == 0).all()


def test_bad_frames_are_named():
    transform = ImageTransform.fit((10, 10), (8, 8))
    with pytest.raises(ValueError, match='uint8 RGB frame.*float32'):
        resize_image(np.zeros((10, 10, 3), np.float32), transform)
    with pytest.raises(ValueError, match='made for 10x10'):
        resize_image(np.zeros((12, 10, 3), np.uint8), transform)
    with pytest.raises(ValueError, match='resize mode'):
        ImageTransform.fit((10, 10), (8, 8), 'crop')


@pytest.mark.parametrize('mode', ['resize', 'letterbox'])
def test_class_mask_round_trip(mode):
    # A frame-sized mask, sampled into the network input through the transform, comes back.
    image_h, image_w = 120, 200
    truth = np.zeros((image_h, image_w), np.uint8)
    truth[20:100, 40:90] = 15
    truth[60:110, 120:190] = 7
    transform = ImageTransform.fit((image_h, image_w), (96, 96), mode)
    net_y, net_x = np.mgrid[0:96, 0:96] + 0.5
    xy = transform.to_image(np.stack([net_x, net_y], -1))
    inside = (xy[..., 0] >= 0) & (xy[..., 0] < image_w) & (xy[..., 1] >= 0) & \
        (xy[..., 1] < image_h)
    labels = np.zeros((96, 96), np.int64)
    ix = np.clip(xy[..., 0].astype(int), 0, image_w - 1)
    iy = np.clip(xy[..., 1].astype(int), 0, image_h - 1)
    labels[inside] = truth[iy[inside], ix[inside]]
    mask = decoders.class_mask(torch.from_numpy(labels)[None], transform, num_classes=21)
    assert mask.shape == truth.shape and mask.dtype == np.uint8
    # Exact away from region borders (one network pixel is up to ~2 frame pixels here).
    border = cv2.dilate((cv2.Canny(truth, 0, 1) > 0).astype(np.uint8), np.ones((7, 7)))
    assert (mask[border == 0] == truth[border == 0]).all()
    assert (mask == truth).mean() > 0.97
    # Scores decode the same way, and low confidence becomes unlabelled.
    scores = torch.nn.functional.one_hot(torch.from_numpy(labels), 21).permute(2, 0, 1).float()
    from_scores = decoders.class_mask(scores * 10, transform)
    assert (from_scores[border == 0] == truth[border == 0]).all()
    unsure = decoders.class_mask(scores * 0.01, transform, min_score=0.5)
    assert (unsure == decoders.UNLABELLED).all()


def test_class_ids_out_of_range_become_unlabelled():
    transform = ImageTransform.fit((4, 4), (4, 4))
    labels = torch.tensor([[0, 1, 30, -1]] * 4)
    mask = decoders.class_mask(labels, transform, num_classes=21)
    assert mask[0].tolist() == [0, 1, 255, 255]
    assert decoders.class_mask(labels, transform)[0].tolist() == [0, 1, 30, 255]
    with pytest.raises(ValueError, match='above 255'):
        decoders.class_mask(labels * 10, transform)
    with pytest.raises(ValueError, match='network input was 4x4'):
        decoders.class_mask(torch.zeros(5, 4, dtype=torch.int64), transform)
    scores = torch.zeros(256, 4, 4)
    scores[255] = 1.0  # class 255 would read as unlabelled, class 256 as 0
    with pytest.raises(ValueError, match='scores of 256 classes do not fit a uint8 mask'):
        decoders.class_mask(scores, transform)
    assert (decoders.class_mask(scores[:255], transform) == 0).all()


def test_probability_mask():
    transform = ImageTransform.fit((20, 40), (10, 10), 'letterbox')
    prob = torch.zeros(1, 1, 10, 10)
    prob[..., 5:, :] = 0.9  # the lower half of the content (rows 3..7) is rows 5..7
    mask = decoders.probability_mask(prob, transform, threshold=0.5, class_id=15)
    assert mask.shape == (20, 40) and set(np.unique(mask)) == {0, 15}
    assert (mask[:8] == 0).all() and (mask[-4:] == 15).all()
    with pytest.raises(ValueError, match='threshold'):
        decoders.probability_mask(prob, transform, threshold=2.0)


@pytest.mark.parametrize('mode', ['resize', 'letterbox'])
def test_single_pose_round_trip(mode):
    transform = ImageTransform.fit((480, 640), (192, 192), mode)
    truth = np.array([[100.5, 50.25], [600.0, 470.0], [320.0, 240.0]])  # (x, y) in the frame
    net_xy = transform.to_input(truth)
    raw = np.zeros((1, 1, 3, 3), np.float32)
    raw[0, 0, :, 0] = net_xy[:, 1] / 192  # MoveNet rows are (y, x, score), normalised
    raw[0, 0, :, 1] = net_xy[:, 0] / 192
    raw[0, 0, :, 2] = [0.9, 0.8, 0.1]
    (person,) = decoders.single_pose(torch.from_numpy(raw), transform)
    np.testing.assert_allclose([[k.x, k.y] for k in person], truth, atol=1e-3)
    assert [round(k.score, 3) for k in person] == [0.9, 0.8, 0.1]
    assert decoders.single_pose(raw, transform, min_score=0.9) == []


def test_label_and_joint_facts():
    assert len(decoders.PASCAL_VOC_LABELS) == 21
    assert decoders.PASCAL_VOC_LABELS[decoders.PASCAL_VOC_PERSON] == 'person'
    assert len(decoders.COCO17_JOINTS) == 17 and len(decoders.COCO17_SKELETON) == 19
    assert all(0 <= a < 17 and 0 <= b < 17 for a, b in decoders.COCO17_SKELETON)


def test_labels_match_the_shared_labels_file():
    lines = require_shared('models/coral/pascal_voc_segmentation_labels.txt').read_text()
    names = [line.strip() for line in lines.splitlines() if line.strip()][:21]
    assert tuple(names) == decoders.PASCAL_VOC_LABELS


def test_movenet_on_a_coco_still_lands_near_the_annotation():
    annotations = json.loads(require_shared('data/coco-stills/tests/data/coco/test_coco.json')
                             .read_text())
    assert annotations['categories'][0]['keypoints'] == list(decoders.COCO17_JOINTS)
    (person_785,) = [a for a in annotations['annotations'] if a['image_id'] == 785]
    image = cv2.imread(str(require_shared('data/coco-stills/tests/data/coco/000000000785.jpg')))
    model = load_model('movenet_lightning', models_dir=require_shared('models/coral'))
    (person,) = model(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    truth = np.array(person_785['keypoints'], np.float64).reshape(17, 3)
    visible = truth[:, 2] > 0
    error = np.hypot(*(np.array([[k.x, k.y] for k in person]) - truth[:, :2]).T)
    size = max(person_785['bbox'][2:])
    # Measured: every annotated joint within 0.055 of the person's size (19 px of 347).
    assert visible.sum() == 17 and (error[visible] < 0.1 * size).all(), np.round(error, 1)
