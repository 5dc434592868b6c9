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
BlazePose's geometry and tracking, without the MediaPipe files.

The ROI maps and the crop are checked against exact expectations; the detector decoding and
weighted NMS on hand-made outputs; the tracking state machine with stand-in networks that find
a bright rectangle (the "person") in their input, so that where the person is, and whether
the ROI must follow, is known exactly.
"""

from dataclasses import replace
import math
from pathlib import Path

import numpy as np
import pytest
from sparse_perception.models import blazepose as bp
from sparse_perception.models.decoders import COCO17_JOINTS, COCO17_SKELETON
import torch

SIZE = 256


# ------------------------------------------------------------------------------------- ROI maps
@pytest.mark.parametrize('degrees', [0.0, 90.0, -37.0, 180.0, 123.4])
def test_roi_maps_points_both_ways(degrees):
    roi = bp.Roi((210.3, 95.7), 143.0, math.radians(degrees))
    rng = np.random.default_rng(1)
    uv = rng.uniform(-0.2, 1.2, (50, 2))
    np.testing.assert_allclose(roi.from_frame(roi.to_frame(uv)), uv, atol=1e-12)
    transform = bp.RoiTransform((240, 320), (SIZE, SIZE), roi, 'landmarks')
    xy = rng.uniform(0, 300, (50, 2))
    np.testing.assert_allclose(transform.to_image(transform.to_input(xy)), xy, atol=1e-9)
    # The crop's centre is the ROI's centre; its corners lie on the square of side ``size``.
    np.testing.assert_allclose(transform.to_image(np.array([SIZE / 2, SIZE / 2])), roi.center)
    corners = roi.corners()
    sides = np.hypot(*(np.roll(corners, -1, axis=0) - corners).T)
    np.testing.assert_allclose(sides, roi.size)


def test_roi_rotation_turns_the_crop_up_towards_the_scale_point():
    centre = np.array([100.0, 100.0])
    for scale_point, degrees in [((100, 60), 0), ((140, 100), 90), ((100, 140), 180),
                                 ((60, 100), -90), ((130, 70), 45)]:
        roi = bp.Roi.from_points(centre, scale_point, scale=1.25)
        turn = (math.degrees(roi.rotation) - degrees + 180.0) % 360.0 - 180.0
        assert turn == pytest.approx(0.0, abs=1e-9)
        distance = math.dist(centre, scale_point)
        assert roi.size == pytest.approx(2 * distance * 1.25)
        # The crop's top-middle lies on the ray from the centre through the scale point.
        top = roi.to_frame(np.array([0.5, 0.0]))
        direction = (np.array(scale_point) - centre) / distance
        np.testing.assert_allclose((top - centre) / np.linalg.norm(top - centre), direction,
                                   atol=1e-12)


def test_crop_samples_the_rotated_square():
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    # Axis-aligned, one frame pixel per crop pixel: the crop is the frame's own pixels.
    roi = bp.Roi((40.0, 30.0), 20.0, 0.0)
    np.testing.assert_array_equal(bp.crop(image, roi, (20, 20)), image[20:40, 30:50])
    # A quarter turn clockwise: crop pixel (v, u) is frame pixel (row u, column 19 - v).
    turned = bp.crop(image, bp.Roi((40.0, 30.0), 20.0, math.pi / 2), (20, 20))
    np.testing.assert_array_equal(turned, image[20:40, 30:50].transpose(1, 0, 2)[::-1])
    # Half outside the frame: replicated edge pixels, or zeros.
    edge = bp.Roi((0.0, 30.0), 20.0, 0.0)
    replicated = bp.crop(image, edge, (20, 20))
    np.testing.assert_array_equal(replicated[:, :10], np.repeat(image[20:40, :1], 10, axis=1))
    zero = bp.crop(image, edge, (20, 20), border='zero')
    assert (zero[:, :10] == 0).all()
    np.testing.assert_array_equal(zero[:, 10:], image[20:40, :10])
    with pytest.raises(ValueError, match="border='wrap'"):
        bp.crop(image, edge, (20, 20), border='wrap')


def _bilinear(image, xy, border):
    """Sample ``image`` at continuous frame points ``xy`` (..., 2), pixel centres at i + 0.5."""
    height, width = image.shape[:2]
    x, y = xy[..., 0] - 0.5, xy[..., 1] - 0.5
    if border == 'replicate':
        x, y = np.clip(x, 0, width - 1), np.clip(y, 0, height - 1)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    out = np.zeros(xy.shape[:-1] + (3,))
    for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
        xi, yi = x0 + dx, y0 + dy
        weight = (1 - np.abs(x - xi)) * (1 - np.abs(y - yi))
        inside = (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height)
        value = image[np.clip(yi, 0, height - 1), np.clip(xi, 0, width - 1)]
        out += np.where(inside[..., None], value * weight[..., None], 0.0)
    return out


@pytest.mark.parametrize('border', ['replicate', 'zero'])
def test_crop_matches_bilinear_sampling_anywhere(border):
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    # Inside, across the edges, partly or wholly outside; from under a pixel to many frames
    # wide; square, oblong and single-row crops.
    for k in range(40):
        roi = bp.Roi((rng.uniform(-40, 160), rng.uniform(-40, 130)),
                     float(np.exp(rng.uniform(np.log(0.5), np.log(2400)))),
                     rng.uniform(-math.pi, math.pi))
        height, width = ((24, 32), (32, 32), (1, 17))[k % 3]
        cropped = bp.crop(image, roi, (height, width), border=border).astype(float)
        u = (np.arange(width) + 0.5) / width
        v = (np.arange(height) + 0.5) / height
        expected = _bilinear(image, roi.to_frame(np.stack(np.meshgrid(u, v), -1)), border)
        assert np.abs(cropped - expected).max() <= 0.5 + 1e-3  # uint8 rounding only


# ------------------------------------------------------------------------------ the detector
def test_ssd_anchor_centres_follow_the_output_order():
    anchors = bp.ssd_anchor_centres()
    assert anchors.shape == (2254, 2)
    np.testing.assert_allclose(anchors[:2], [[0.5 / 28, 0.5 / 28]] * 2)  # two per cell
    np.testing.assert_allclose(anchors[2], [1.5 / 28, 0.5 / 28])  # then along the row
    np.testing.assert_allclose(anchors[1568:1570], [[0.5 / 14, 0.5 / 14]] * 2)
    last = anchors[-294:].reshape(7, 7, 6, 2)  # strides 32, 32, 32 share one 7x7 grid
    assert (last == last[:, :, :1]).all()
    np.testing.assert_allclose(last[6, 6, 0], [6.5 / 7, 6.5 / 7])


def test_decode_detections_and_weighted_nms():
    anchors = bp.ssd_anchor_centres()
    raw = np.zeros((len(anchors), 12))
    logits = np.full(len(anchors), -200.0)  # clipped to -100: score 0
    # Two overlapping detections of one person and a separate one.
    for index, centre, logit in [(100, (50.0, 60.0), 3.0), (101, (54.0, 60.0), 1.0),
                                 (2000, (170.0, 150.0), 2.0)]:
        anchor = anchors[index] * 224
        raw[index, 0:2] = np.array(centre) - anchor
        raw[index, 2:4] = 40.0
        raw[index, 4:12] = np.tile(np.array(centre) - anchor, 4) + np.arange(8)
        logits[index] = logit
    found = bp.decode_detections(raw, logits, anchors)
    assert len(found) == 2
    (score_a, box_a, points_a), (score_b, box_b, points_b) = found
    s3, s1 = 1 / (1 + math.exp(-3)), 1 / (1 + math.exp(-1))
    assert score_a == pytest.approx(s3) and score_b == pytest.approx(1 / (1 + math.exp(-2)))
    merged_x = (50.0 * s3 + 54.0 * s1) / (s3 + s1)  # score-weighted mean centre
    np.testing.assert_allclose(box_a, [merged_x - 20, 40.0, merged_x + 20, 80.0])
    np.testing.assert_allclose(points_a[0], [merged_x, 61.0])
    np.testing.assert_allclose(box_b, [150.0, 130.0, 190.0, 170.0])
    stricter = bp.DetectorSettings(min_score=0.9)
    assert [round(d[0], 6) for d in bp.decode_detections(raw, logits, anchors, stricter)] == \
        [round(s3, 6)]
    with pytest.raises(ValueError, match='regressors'):
        bp.decode_detections(raw[:10], logits, anchors)


def test_refine_from_heatmap():
    heatmap = np.full((64, 64, 3), -20.0)
    heatmap[10, 20, 0] = heatmap[10, 22, 0] = 5.0  # two equal peaks: the mean is between
    xy = np.array([[21.2 / 64, 10.3 / 64], [0.5, 0.5], [1.3, 0.2]])
    heatmap[:, :, 2] = 5.0
    refined = bp.refine_from_heatmap(xy, heatmap)
    np.testing.assert_allclose(refined[0], [21 / 64, 10 / 64], atol=1e-6)
    np.testing.assert_array_equal(refined[1], xy[1])  # nothing confident: unchanged
    np.testing.assert_array_equal(refined[2], xy[2])  # outside the crop: unchanged
    with pytest.raises(ValueError, match='2 landmarks but 3 heatmaps'):
        bp.refine_from_heatmap(xy[:2], heatmap)
    # A window clipped at the heatmap's corner; a float32 heatmap (as the models give) refines
    # as its float64 copy does.
    corner = np.full((64, 64, 1), -20.0)
    corner[0, 62:, 0], corner[1, 63, 0] = 4.0, 2.0
    at_corner = np.array([[63.5 / 64, 0.2 / 64]])
    want = bp.refine_from_heatmap(at_corner, corner)
    assert 62 / 64 < want[0, 0] < 63 / 64 and 0 < want[0, 1] < 1 / 64
    got = bp.refine_from_heatmap(at_corner, corner.astype(np.float32))
    np.testing.assert_array_equal(got, bp.refine_from_heatmap(
        at_corner, corner.astype(np.float32).astype(np.float64)))


def test_coco17_view_picks_the_same_joints():
    assert [bp.BLAZEPOSE33_JOINTS[i] for i in bp.COCO17_FROM_BLAZEPOSE33] == list(COCO17_JOINTS)
    person = [bp.Keypoint(float(i), 0.0, 1.0) for i in range(33)]
    assert [k.x for k in bp.coco17_view(person)] == list(bp.COCO17_FROM_BLAZEPOSE33)
    with pytest.raises(ValueError, match='expected 33'):
        bp.coco17_view(person[:17])


@pytest.mark.parametrize('change, keeps', [
    ({}, True),
    ({'center': (104.0, 100.0)}, True),   # 0.04 of the side
    ({'center': (106.5, 100.0)}, False),  # 0.065
    ({'size': 110.0}, True),
    ({'size': 120.0}, False),
    ({'rotation': math.radians(8)}, True),
    ({'rotation': math.radians(12)}, False),
    ({'rotation': math.radians(355)}, True),  # the same as -5 degrees
])
def test_keeps_roi_within_the_tolerances(change, keeps):
    roi = bp.Roi((100.0, 100.0), 100.0, 0.0)
    suggested = bp.Roi(change.get('center', roi.center), change.get('size', roi.size),
                       change.get('rotation', roi.rotation))
    uv = np.full((33, 2), 0.5)
    presence = np.ones(33)
    assert bp.keeps_roi(roi, suggested, uv, presence) is keeps


def test_keeps_roi_only_while_present_landmarks_stay_inside():
    roi = bp.Roi((100.0, 100.0), 100.0, 0.0)
    uv = np.full((33, 2), 0.5)
    presence = np.ones(33)
    uv[15] = (0.99, 0.5)  # a wrist at the crop's edge
    assert not bp.keeps_roi(roi, roi, uv, presence)
    presence[15] = 0.1  # ... that the model says is not there
    assert bp.keeps_roi(roi, roi, uv, presence)


def test_roi_snaps_to_its_grid():
    roi = bp.Roi((100.3, 49.6), 75.4, math.radians(10.4))
    snapped = roi.snapped(1.0, math.radians(1.0))
    assert snapped.center == (100.0, 50.0) and snapped.size == 75.0
    assert snapped.rotation == pytest.approx(math.radians(10.0), abs=1e-12)
    assert roi.snapped(0.0, 0.0) == roi  # 0: as it is
    assert roi.snapped(2.0, 0.0) == bp.Roi((100.0, 50.0), 76.0, roi.rotation)
    assert bp.Roi((5.0, 5.0), 0.2, 0.0).snapped(1.0, 0.0).size == 1.0  # never nothing
    # Rotations stay in [-pi, pi): 179.8 degrees snaps to 180, which is -180.
    turned = bp.Roi((0.0, 0.0), 10.0, math.radians(179.8)).snapped(1.0, math.radians(1.0))
    assert turned.rotation == pytest.approx(-math.pi, abs=1e-12)


# -------------------------------------------------------------------------------- tracking
class RectangleDetector(torch.nn.Module):
    """Stand-in detector: the bright rectangle is the person (hips at its centre)."""

    def forward(self, x):  # (1, 3, 224, 224) in [-1, 1]
        mask = x[0].mean(0) > 0.0
        regressors = torch.zeros(1, 2254, 12)
        logits = torch.full((1, 2254, 1), -100.0)
        if mask.any():
            ys, xs = torch.nonzero(mask, as_tuple=True)
            centre = torch.stack([xs.float().mean(), ys.float().mean()]) + 0.5
            half_height = (ys.max() - ys.min() + 1).float() / 2
            anchor = torch.tensor([4.0, 4.0])  # anchor 0's centre in input pixels
            regressors[0, 0, 0:2] = centre - anchor
            regressors[0, 0, 2:4] = half_height
            regressors[0, 0, 4:6] = centre - anchor
            regressors[0, 0, 6:8] = centre - anchor - torch.stack([torch.tensor(0.0),
                                                                  half_height])
            logits[0, 0, 0] = 10.0
        return regressors, logits


class RectangleLandmarks(torch.nn.Module):
    """
    Stand-in landmark model: present while the rectangle fills part of the crop.

    Body landmarks sit on the rectangle's outline, the ROI centre (33) at its centre and the
    scale point (34) half its height above, as the real model places them on a body.
    """

    def forward(self, x):  # (1, 3, 256, 256) in [0, 1]
        mask = x[0].mean(0) > 0.5
        landmarks = torch.zeros(39, 5)
        landmarks[:, 3:5] = 10.0  # visible and present
        heatmaps = torch.full((1, 64, 64, 39), -20.0)
        if mask.sum() < 50:
            return landmarks.reshape(1, 195), torch.zeros(1, 1), heatmaps
        ys, xs = torch.nonzero(mask, as_tuple=True)
        x0, x1 = xs.min().float(), xs.max().float() + 1
        y0, y1 = ys.min().float(), ys.max().float() + 1
        outline = torch.stack([torch.linspace(x0, x1, 33), torch.linspace(y0, y1, 33)], -1)
        landmarks[:33, :2] = outline
        centre = torch.stack([(x0 + x1) / 2, (y0 + y1) / 2])
        landmarks[33, :2] = centre
        landmarks[34, :2] = centre - torch.stack([torch.tensor(0.0), (y1 - y0) / 2])
        return landmarks.reshape(1, 195), torch.ones(1, 1), heatmaps


def _tracker(joints=bp.BLAZEPOSE33_JOINTS):
    return bp.BlazePose(
        name='rectangle', kind='pose', module=RectangleLandmarks(), source=Path('lm.tflite'),
        decoder='blazepose', input_size=(SIZE, SIZE), resize='roi', normalise=(1 / 255, 0.0),
        joints=joints, detector=RectangleDetector(), detector_source=Path('det.tflite'))


def _scene(left, top, width=30, height=60, size=(240, 320)):
    frame = np.full((*size, 3), 20, np.uint8)
    frame[top:top + height, left:left + width] = 230
    return frame


def test_roi_stays_still_while_the_person_stays_inside():
    model = _tracker()
    first = _scene(140, 90)
    crop, transform = model.prepare(first)
    assert transform.source == 'detection' and model.counters['detector_runs'] == 1
    # Hips at the rectangle's centre (155, 120), the side 1.25 of its height, upright.
    np.testing.assert_allclose(transform.roi.center, (155.0, 120.0), atol=0.6)
    assert transform.roi.size == pytest.approx(75.0, abs=2.0)
    assert transform.roi.rotation == pytest.approx(0.0, abs=0.02)
    with torch.no_grad():
        person = model.decode(model.module(model.to_tensor(crop)), transform)[0]
    roi = model.roi
    # Decoded landmarks land on the rectangle in frame pixels.
    assert (person[0].x, person[0].y) == pytest.approx((140.0, 90.0), abs=1.5)
    assert person[32].x == pytest.approx(170.0, abs=1.5)
    crops = [crop]
    for left in (140, 140, 141, 142):  # still, then a drift of two pixels
        person = model(_scene(left, 90))
        crops.append(model.prepare(_scene(left, 90))[0])
        model.decode(model.module(model.to_tensor(crops[-1])), model.transform(first.shape[:2]))
        assert person and model.roi == roi
    assert model.counters == {'frames': 9, 'detector_runs': 1, 'window_runs': 0,
                              'detections': 1, 'proposals': 0, 'rejected_proposals': 0,
                              'roi_moves': 0, 'losses': 0, 'merges': 0}
    assert np.array_equal(crops[0], crops[1]) and np.array_equal(crops[1], crops[2])


def test_roi_moves_when_the_person_leaves_it_and_detection_returns_when_they_vanish():
    model = _tracker()
    model(_scene(140, 90))
    still = model.roi
    person = model(_scene(165, 90))  # a third of the ROI to the right
    assert person, 'the frame is still decoded in the old ROI'
    assert model.counters['roi_moves'] == 1 and model.roi != still
    np.testing.assert_allclose(model.roi.center, (180.0, 120.0), atol=1.5)
    assert model.transform((240, 320)).source == 'landmarks'
    moved = model.roi
    model(_scene(165, 90))
    assert model.roi == moved  # settled again
    # The person vanishes: presence drops, the ROI is dropped, the detector runs next frame.
    assert model(_scene(0, 0, width=0, height=0)) == []
    assert model.roi is None and model.counters['losses'] == 1
    runs = model.counters['detector_runs']
    nobody, transform = model.prepare(_scene(0, 0, width=0, height=0))
    assert model.counters['detector_runs'] == runs + 1 and transform.source == 'frame'
    assert transform.roi == bp.Roi.whole_frame((240, 320))
    with torch.no_grad():
        assert model.decode(model.module(model.to_tensor(nobody)), transform) == []
    assert model(_scene(60, 100)) and model.roi_source == 'detection'


def test_decoding_an_older_frame_does_not_steer_the_tracking():
    model = _tracker()
    crop, old = model.prepare(_scene(140, 90))
    with torch.no_grad():
        outputs = model.module(model.to_tensor(crop))
    model.decode(outputs, old)
    model(_scene(180, 90))  # moves the ROI
    moved = model.roi
    assert moved != old.roi
    model.decode(outputs, old)  # a late decode of the first frame
    assert model.roi == moved


class Nudged(torch.nn.Module):
    """Another runtime's rounding: the wrapped network's first output moved by ``eps``."""

    def __init__(self, net, eps):
        super().__init__()
        self.net, self.eps = net, eps

    def forward(self, x):
        first, *rest = self.net(x)
        return (first + self.eps, *rest)


@pytest.mark.parametrize('grid', [1.0, 0.0])
def test_a_rounding_difference_does_not_part_two_trackers(grid):
    # A sparse and a dense pipeline (or two runtimes) compute one network with different
    # rounding, about 1e-4 px in the outputs. The next frame's crop comes from this frame's
    # outputs, so two trackers without the grid crop a little apart, see other pixels, and
    # drift further apart frame by frame; snapped to whole pixels, they crop alike.
    tracking = replace(bp.TrackingSettings(), roi_grid=grid,
                       roi_angle_step=math.radians(grid))
    first, second = _tracker(), _tracker()
    second.detector = Nudged(second.detector, 1e-4)
    second.module = Nudged(second.module, 1e-4)
    for model in (first, second):
        model.tracking = tracking
    for left in (140, 150, 162, 175, 190):  # the person walks out of the crop: it moves
        got = [model(_scene(left, 90))[0] for model in (first, second)]
        if grid:
            assert first.roi == second.roi
            assert [k.x for k in got[0]] == pytest.approx([k.x for k in got[1]], abs=1e-3)
        else:
            assert first.roi != second.roi
    assert first.counters['roi_moves'] >= 2 and second.counters == first.counters


def test_views_reset_and_frame_size():
    model = _tracker(COCO17_JOINTS)
    assert model.view == 'coco17'
    (person,) = model(_scene(140, 90))
    assert len(person) == 17
    crop, transform = model.prepare(_scene(140, 90))
    with torch.no_grad():
        outputs = model.module(model.to_tensor(crop))
    assert len(model.decode(outputs, transform, view='blazepose33')[0]) == 33
    assert model.decode(outputs, transform, min_score=1.01) == []
    with pytest.raises(ValueError, match="view='hands'"):
        model.decode(outputs, transform, view='hands')
    with pytest.raises(ValueError, match='RoiTransform'):
        model.decode(outputs, None)
    runs = model.counters['detector_runs']
    model.reset()
    model.prepare(_scene(140, 90))
    assert model.counters['detector_runs'] == runs + 1
    model.prepare(_scene(140, 90, size=(200, 300)))  # another camera size: detect again
    assert model.counters['detector_runs'] == runs + 2
    assert len(COCO17_SKELETON) == 19 and len(bp.BLAZEPOSE33_SKELETON) == 35


# ---------------------------------------------------------------------------- several people
class RectanglesDetector(torch.nn.Module):
    """Stand-in detector for several people: each bright rectangle is one, the tallest first."""

    def forward(self, x):  # (1, 3, 224, 224) in [-1, 1]
        import cv2

        mask = (x[0].mean(0) > 0.0).numpy().astype(np.uint8)
        count, labels = cv2.connectedComponents(mask)
        regressors = torch.zeros(1, 2254, 12)
        logits = torch.full((1, 2254, 1), -100.0)
        blobs = []
        for label in range(1, count):
            ys, xs = np.nonzero(labels == label)
            blobs.append((ys.max() - ys.min() + 1, xs.mean() + 0.5, ys.mean() + 0.5))
        anchors = bp.ssd_anchor_centres() * 224
        for rank, (height, cx, cy) in enumerate(sorted(blobs, reverse=True)):
            anchor = torch.tensor(anchors[rank * 20], dtype=torch.float32)  # far apart: no NMS
            centre = torch.tensor([cx, cy], dtype=torch.float32)
            half = float(height) / 2
            regressors[0, rank * 20, 0:2] = centre - anchor
            regressors[0, rank * 20, 2:4] = float(height) / 4
            regressors[0, rank * 20, 4:6] = centre - anchor
            regressors[0, rank * 20, 6:8] = centre - anchor - torch.tensor([0.0, half])
            logits[0, rank * 20, 0] = 10.0 - rank
        return regressors, logits


def _people_tracker(max_people):
    model = _tracker()
    model.detector = RectanglesDetector()
    model.max_people = max_people
    return model


def _people(*rectangles, size=(240, 320)):
    frame = np.full((*size, 3), 20, np.uint8)
    for left, top, height in rectangles:
        frame[top:top + height, left:left + height // 2] = 230
    return frame


def _decode_all(model, frame, detect=True):
    people = {}
    for transform in model.locate_people(frame, detect=detect):
        with torch.no_grad():
            outputs = model.module(model.to_tensor(model.crop_input(frame, transform)))
        for person in model.decode(outputs, transform):
            people[transform.person] = (person[0].x, person[0].y)
    return people


def test_several_people_each_get_a_crop_and_an_id_that_stays():
    model = _people_tracker(max_people=3)
    frame = _people((30, 60, 60), (200, 80, 50))
    assert model.counters['detector_runs'] == 0
    people = _decode_all(model, frame)
    assert sorted(people) == [0, 1] and model.counters['detections'] == 2
    assert people[0] == pytest.approx((30.0, 60.0), abs=1.5)  # the taller one first
    assert people[1] == pytest.approx((200.0, 80.0), abs=1.5)
    # One walks out of their crop: the crop follows, the id stays; nobody new is spawned.
    frame = _people((60, 60, 60), (200, 80, 50))
    people = _decode_all(model, frame, detect=False)
    assert people[0] == pytest.approx((60.0, 60.0), abs=1.5) and sorted(people) == [0, 1]
    assert model.counters['roi_moves'] >= 1
    # A detection of someone already followed spawns nobody; a third person gets id 2.
    frame = _people((60, 60, 60), (200, 80, 50), (130, 170, 40))
    _decode_all(model, frame, detect=False)  # the crops settle on the moved person
    people = _decode_all(model, frame)
    assert sorted(people) == [0, 1, 2] and people[2] == pytest.approx((130.0, 170.0), abs=1.5)
    # Person 1 leaves: lost, and the ids of the others stay.
    frame = _people((60, 60, 60), (130, 170, 40))
    assert sorted(_decode_all(model, frame, detect=False)) == [0, 2]
    assert [t.person for t in model.tracks] == [0, 2] and model.counters['losses'] == 1
    assert model.roi == model.tracks[0].roi  # the single-person view: the oldest person


def test_one_person_at_a_time_follows_the_best_detection_only():
    model = _people_tracker(max_people=1)
    people = _decode_all(model, _people((30, 60, 60), (200, 80, 50)))
    assert list(people) == [0] and people[0] == pytest.approx((30.0, 60.0), abs=1.5)
    _decode_all(model, _people((30, 60, 60), (200, 80, 50)))
    assert model.counters['detector_runs'] == 1  # nobody more is looked for


def test_same_person_compares_centres_and_sides():
    roi = bp.Roi((100.0, 100.0), 100.0, 0.0)
    assert bp.same_person(roi, bp.Roi((110.0, 100.0), 110.0, 0.3))
    assert not bp.same_person(roi, bp.Roi((120.0, 100.0), 100.0, 0.0))  # 0.2 of the side
    assert not bp.same_person(roi, bp.Roi((100.0, 100.0), 150.0, 0.0))  # another size


class NobodyDetector(torch.nn.Module):
    """Stand-in detector that never finds anybody (people too small for it)."""

    def forward(self, x):
        return torch.zeros(1, 2254, 12), torch.full((1, 2254, 1), -20.0)


def test_proposals_start_people_the_detector_missed_where_nobody_is_followed():
    model = _people_tracker(max_people=3)
    model.detector = NobodyDetector()
    frame = _people((30, 60, 60), (200, 80, 50))
    boxes = [(30, 60, 60, 120), (200, 80, 225, 130)]
    # Tried whether the detector runs or not (the caller decides when to propose).
    crops = model.locate_people(frame, detect=False, proposals=boxes)
    assert model.counters['detector_runs'] == 0
    assert [c.source for c in crops] == ['proposal', 'proposal']
    assert crops[0].roi == bp.Roi.around_box(boxes[0], model.tracking.roi_scale).snapped(
        model.tracking.roi_grid, model.tracking.roi_angle_step)
    assert model.counters['detections'] == 0 and model.counters['proposals'] == 2
    # A region inside someone's crop proposes nobody new, nor does the same region again.
    assert len(model.locate_people(frame, proposals=[(40, 80, 50, 100), *boxes])) == 2
    # The landmark network confirms them: followed and decoded with their ids.
    people = _decode_all(model, frame, detect=False)
    assert sorted(people) == [0, 1]
    assert people[0] == pytest.approx((30.0, 60.0), abs=1.5)


def test_a_proposal_the_landmarks_do_not_confirm_is_dropped_without_counting_a_loss():
    model = _people_tracker(max_people=2)
    model.detector = NobodyDetector()
    frame = _people((30, 60, 60))
    crops = model.locate_people(frame, proposals=[(200, 100, 230, 160)])  # empty ground
    assert [c.source for c in crops] == ['proposal']
    with torch.no_grad():
        outputs = model.module(model.to_tensor(model.crop_input(frame, crops[0])))
    assert model.decode(outputs, crops[0]) == []
    assert model.tracks == [] and model.counters['rejected_proposals'] == 1
    assert model.counters['losses'] == 0


def test_proposals_respect_the_number_of_people_followed():
    model = _people_tracker(max_people=1)
    model.detector = NobodyDetector()
    frame = _people((30, 60, 60), (200, 80, 50))
    crops = model.locate_people(frame, proposals=[(30, 60, 60, 120), (200, 80, 225, 130)])
    assert len(crops) == 1 and model.counters['proposals'] == 1


class TallestDetector(RectanglesDetector):
    """Stand-in detector that finds the most prominent person only, as MediaPipe's tends to."""

    def forward(self, x):
        regressors, logits = super().forward(x)
        logits[0, 20:, 0] = -100.0  # the tallest is at anchor 0, the next ones further on
        return regressors, logits


def test_detection_windows_overlap_along_the_longer_side():
    assert bp.detection_windows((240, 320), 2) == [(0, 0, 192, 240), (128, 0, 320, 240)]
    assert bp.detection_windows((320, 240), 2) == [(0, 0, 240, 192), (0, 128, 240, 320)]
    assert bp.detection_windows((100, 100), 3) == [(0, 0, 40, 100), (30, 0, 70, 100),
                                                   (60, 0, 100, 100)]
    assert bp.detection_windows((240, 320), 1) == bp.detection_windows((240, 320), 0) == []
    # A frame shorter than the count: each window once.
    assert bp.detection_windows((1, 3), 8) == [(0, 0, 1, 1), (1, 0, 2, 1), (2, 0, 3, 1)]
    detection = bp.Detection(0.9, (1.0, 2.0, 3.0, 4.0), np.zeros((4, 2)))
    moved = detection.shifted(10, 20)
    assert moved.box == (11.0, 22.0, 13.0, 24.0) and moved.score == 0.9
    np.testing.assert_array_equal(moved.keypoints, np.tile([10.0, 20.0], (4, 1)))


def test_detection_windows_find_people_the_whole_frame_s_detection_misses():
    frame = _people((30, 60, 60), (200, 80, 50))
    model = _people_tracker(max_people=3)
    model.detector = TallestDetector()
    assert sorted(_decode_all(model, frame)) == [0]  # the whole frame: the tallest only
    model = _people_tracker(max_people=3)
    model.detector = TallestDetector()
    runs = []
    model.window_detector = lambda x: runs.append(x.shape) or model.detector(x)
    model.detect_windows = 2
    people = _decode_all(model, frame)
    assert sorted(people) == [0, 1]
    assert people[0] == pytest.approx((30.0, 60.0), abs=1.5)  # the window's points, moved
    assert people[1] == pytest.approx((200.0, 80.0), abs=1.5)  # back into the frame
    # The whole frame on the model's own detector, each window on the window detector; the
    # first window found the person followed already.
    assert len(runs) == 2 and model.counters['detector_runs'] == 3
    assert model.counters['detections'] == 2
    # With every place taken after the whole frame, no window runs.
    model = _people_tracker(max_people=1)
    model.detector = TallestDetector()
    model.detect_windows = 2
    _decode_all(model, frame)
    assert model.counters['detector_runs'] == 1
