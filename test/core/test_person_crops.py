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

"""Several people, each in a crop with a network state of its own; ids that stay."""

import cv2
import numpy as np
import pytest

from sparse_perception import settings as st
from sparse_perception.person_crops import person_boxes, PersonSlots
from sparse_perception.pipeline import Pipeline
from support import require_shared, with_pose_change


def test_slots_are_kept_per_person_reused_and_made_on_first_need():
    made = []
    slots = PersonSlots('first', lambda: made.append(len(made)) or f'net{len(made)}')
    a, = slots.assign([5])
    assert a.net == 'first' and a.person == 5 and made == []
    a.transform = 'crop'
    a2, b = slots.assign([5, 9])
    assert a2 is a and a.transform == 'crop'  # person 5 keeps their state
    assert b.net == 'net1' and len(made) == 1
    c, = slots.assign([11])  # 5 and 9 are gone: 11 takes the first free slot, nothing new
    assert c is a and c.transform is None and len(made) == 1
    assert slots.nets == ['net1']
    slots.forget()
    assert all(s.person is None for s in slots.slots)


def test_person_boxes_are_the_tall_enough_person_regions_largest_first():
    mask = np.zeros((100, 120), np.uint8)
    mask[10:40, 5:15] = 1  # 30 tall
    mask[50:95, 60:90] = 1  # 45 tall, the largest
    mask[0:10, 100:120] = 1  # 10 tall: too small
    mask[60:99, 0:20] = 2  # another class
    assert person_boxes(mask, 1, 20) == [(60, 50, 90, 95), (5, 10, 15, 40)]
    assert person_boxes(mask, 1, 31) == [(60, 50, 90, 95)]
    assert person_boxes(mask, 3, 1) == []


def _coco(name):
    image = cv2.imread(str(require_shared(f'data/coco-stills/tests/data/coco/{name}.jpg')))
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _settings(cache, **changes):
    base = {'model.pose': 'blazepose', 'model.models_dir': str(cache), 'model.device': 'cpu',
            'change.threshold': 0.0, 'change.min_pixels': 1, 'sparsity.adaptive': False,
            'model.runtime': 'torch', 'pose.max_people': 4}
    base.update(changes)
    return st.replace(st.PerceptionSettings(), with_pose_change(base))


def _two_people():
    """Return the person of COCO 785 twice, one above the other: the detector finds both."""
    person = _coco('000000000785')
    return np.ascontiguousarray(np.concatenate([person, person], 0))


@pytest.mark.slow
def test_several_people_are_followed_with_stable_ids_and_equal_to_dense(mediapipe_cache):
    image = _two_people()
    incremental = Pipeline(_settings(mediapipe_cache), heads=('pose',))
    dense = Pipeline(_settings(mediapipe_cache), heads=('pose',), incremental=False)
    frames = [image] * 3
    moving = image.copy()
    moving[:40, :80] = 255 - moving[:40, :80]  # a change away from everybody
    frames.append(moving)
    ids = []
    for frame in frames:
        got, want = incremental.process(frame).pose, dense.process(frame).pose
        assert got.people == want.people == 2
        np.testing.assert_allclose(got.keypoints, want.keypoints, atol=0.05)
        np.testing.assert_array_equal(got.ids, want.ids)
        ids.append(got.ids.tolist())
    assert len(set(ids[0])) == len(ids[0]) and all(i == ids[-1] for i in ids[1:])
    head = incremental._heads['pose']
    assert len(head.slots.slots) == got.people  # one network state per person
    # Each followed person beyond the first has a network of its own in the statistics.
    stats = incremental.process(moving).stats.heads['pose']
    assert any(name.startswith('person1/') for name in stats.layers)


def _batch_sizes(pipeline):
    """Record the batch size of every run of the pose head's landmark trunk."""
    sizes = []
    trunk = pipeline._heads['pose'].model.dense_module.trunk
    forward = trunk.forward

    def counted(x, *args, **kwargs):  # (not a forward hook: the engine refuses those)
        sizes.append(x.shape[0])
        return forward(x, *args, **kwargs)
    trunk.forward = counted
    return sizes


@pytest.mark.slow
def test_the_people_s_dense_passes_run_as_one_batch_where_that_pays(
        mediapipe_cache, monkeypatch):
    import sparse_perception.pipeline as pipeline_module

    image = _two_people()
    adaptive = {'sparsity.adaptive': True}
    one_by_one = Pipeline(_settings(mediapipe_cache, **adaptive), heads=('pose',),
                          incremental=False)
    # As on CUDA, where batches pay (torch on the CPU does not batch).
    monkeypatch.setattr(pipeline_module, '_batches_pay', lambda parameter: True)
    incremental = Pipeline(_settings(mediapipe_cache, **adaptive), heads=('pose',))
    dense = Pipeline(_settings(mediapipe_cache, **adaptive), heads=('pose',), incremental=False)
    sizes = {name: _batch_sizes(p) for name, p in
             (('incremental', incremental), ('dense', dense), ('one_by_one', one_by_one))}
    head = incremental._heads['pose']
    for k in range(8):
        # Every pixel changes a little: each person's crop is due on every frame.
        frame = np.clip(image.astype(np.int16) + (k % 3) - 1, 0, 255).astype(np.uint8)
        if k == 2:
            for slot in head.slots.slots:  # the path choice picks the dense pass from here on
                while slot.net.choice.path != 'dense':
                    slot.net.choice.record('engine', 1e4)
        got = incremental.process(frame).pose
        want = dense.process(frame).pose
        alone = one_by_one.process(frame).pose
        assert got.people == want.people == alone.people == 2
        np.testing.assert_allclose(want.keypoints, alone.keypoints, atol=1e-3)
        np.testing.assert_allclose(got.keypoints, want.keypoints, atol=0.05)
        np.testing.assert_array_equal(got.ids, want.ids)
    assert set(sizes['one_by_one']) == {1}
    assert sizes['dense'][-1] == 2
    # Both people on the dense path: their crops ran in one batch, each network timing its
    # share of it.
    assert [slot.net.path for slot in head.slots.slots] == ['dense', 'dense']
    assert sizes['incremental'][-3:] == [2, 2, 2]
    times = [list(slot.net.choice._dense_ms) for slot in head.slots.slots]
    assert times[0][-3:] == times[1][-3:] and len(times[0]) == 3


def test_a_new_person_starts_on_the_path_the_first_person_s_network_chose(mediapipe_cache):
    incremental = Pipeline(_settings(mediapipe_cache, **{'pose.max_people': 1,
                                                         'sparsity.adaptive': True}),
                           heads=('pose',))
    head = incremental._heads['pose']
    frame = _two_people()
    assert incremental.process(frame).pose.people == 1
    first = head.slots.slots[0].net
    while first.choice.path != 'dense':
        first.choice.record('engine', 1e4)
    incremental.update(_settings(mediapipe_cache, **{'pose.max_people': 2,
                                                     'sparsity.adaptive': True}))
    frame[-40:, :80] = 0  # a change outside the first person's crop: the detector looks again
    assert incremental.process(frame).pose.people == 2
    second = head.slots.slots[1].net
    # Its first frame ran the dense pass: no engine trial, no dense sample of its own.
    assert second.path == 'dense' and second.engine.last_stats is None
    assert list(second.choice._engine_ms) == list(first.choice._engine_ms)
    assert second.choice is not first.choice
    # Its dense passes count in the statistics as the first person's do.
    frame[-40:, :80] = 255
    stats = incremental.process(frame).stats.heads['pose']
    layers = [name for name in stats.layers if name.startswith('person1/')]
    assert layers and len(layers) == len([n for n in stats.layers if '/' not in n])
    one = first._pass_stat(skipped=False)
    assert stats.dense_macs >= 2 * sum(layer.dense_macs for layer in one.layers) > 0


def test_a_dense_pass_of_several_inputs_batches_only_where_that_pays():
    import torch
    from torch import nn

    from sparse_perception.pipeline import _dense_pass

    class Trunk(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            return (self.conv(x),)

    class Tail(nn.Module):
        def forward(self, features):
            return features.mean((2, 3)), features

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.trunk, self.tail = Trunk().eval(), Tail()

    net = Net()
    calls = []
    net.trunk.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    dense = _dense_pass(net)
    assert not dense.batches  # torch on the CPU: a batch of two crops cost more than two
    xs = [torch.randn(1, 3, 8, 8) for _ in range(3)]
    with torch.no_grad():
        alone = [dense(x) for x in xs]
        assert calls == [1, 1, 1]
        one_by_one = dense.many(xs)
        assert calls == [1] * 6
        dense.batches = True
        together = dense.many(xs)
    assert calls[-1] == 3
    for want, got, batched in zip(alone, one_by_one, together):
        assert isinstance(batched, tuple) and len(batched) == 2
        for a, b, c in zip(want, got, batched):
            assert a.shape == b.shape == c.shape
            torch.testing.assert_close(a, b, rtol=0, atol=0)
            torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-6)


def test_one_person_at_a_time_is_the_default(mediapipe_cache):
    pipeline = Pipeline(_settings(mediapipe_cache, **{'pose.max_people': 1}), heads=('pose',))
    frame = _two_people()
    result = pipeline.process(frame).pose
    assert result.people == 1 and result.ids.tolist() == [0]
    assert st.PerceptionSettings().pose.max_people == 1
    # Raised live: more people are looked for on a later frame, the first keeps their id.
    pipeline.update(_settings(mediapipe_cache, **{'pose.max_people': 3}))
    frame[-40:, :80] = 0  # a change outside the first person's crop
    result = pipeline.process(frame).pose
    assert result.people == 2 and result.ids.tolist() == [0, 1]
    pipeline.update(_settings(mediapipe_cache, **{'pose.max_people': 1}))
    assert pipeline.process(frame).pose.ids.tolist() == [0]


@pytest.mark.slow
def test_detection_windows_find_the_people_the_detector_misses_in_both_pipelines(
        mediapipe_cache):
    # COCO 40083: two people; MediaPipe's detector finds one in the whole frame, the other in
    # the right-hand window.
    image = _coco('000000040083')
    windows = {'pose.detect_windows': 2}
    plain = Pipeline(_settings(mediapipe_cache), heads=('pose',))
    incremental = Pipeline(_settings(mediapipe_cache, **windows), heads=('pose',))
    dense = Pipeline(_settings(mediapipe_cache, **windows), heads=('pose',), incremental=False)
    assert st.PerceptionSettings().pose.detect_windows == 0
    assert plain.process(image).pose.people == 1
    model = incremental._heads['pose'].model
    engine_runs, window_runs = [], []
    detector_net, window_detector = model.detector.net, model.window_detector
    run = detector_net.run
    detector_net.run = lambda x, *a, **k: engine_runs.append(x.shape) or run(x, *a, **k)
    model.window_detector = lambda x: window_runs.append(x.shape) or window_detector(x)
    for _ in range(3):
        got, want = incremental.process(image).pose, dense.process(image).pose
        assert got.people == want.people == 2
        np.testing.assert_allclose(got.keypoints, want.keypoints, atol=0.05)
    # The windows ran on the dense pass: the detector's engine state saw the whole frame only.
    assert len(engine_runs) == 1 and len(window_runs) == 2
    (x_left, x_right) = sorted(float(np.median(p[:, 0])) for p in got.keypoints)
    assert x_left < 200 < x_right  # one person on each side of the image (500 px wide)
    # The windows' dense passes count in the detector's statistics.
    assert model.counters['window_runs'] == 2
    # Live: turned off, nobody more is looked for in windows. (A change where nobody is
    # followed makes the next scheduled frame detect.)
    incremental.update(_settings(mediapipe_cache, **{'pose.detect_period': 1}))
    assert model.detect_windows == 0
    moved = image.copy()
    moved[:30, 220:250] = 0
    runs = model.counters['detector_runs']
    incremental.process(moved)
    assert model.counters['detector_runs'] == runs + 1 and len(window_runs) == 2


def _vtest_frame(index):
    capture = cv2.VideoCapture(str(require_shared('data/vtest/vtest.avi')))
    try:
        capture.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, image = capture.read()
    finally:
        capture.release()
    assert ok
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


@pytest.mark.slow
def test_the_segmentation_mask_finds_pedestrians_the_detector_misses(mediapipe_cache):
    # vtest's pedestrians are 50-80 px tall: too small for the person detector, which finds
    # nobody in this frame; the segmentation head's person regions propose them.
    frame = _vtest_frame(0)
    heads = ('pose', 'segmentation')  # in either order, segmentation runs first
    on = Pipeline(_settings(mediapipe_cache, **{'model.segmentation': 'selfie_segmentation',
                                                'pose.mask_proposal_height': 32}),
                  heads=heads, incremental=False)
    off = Pipeline(_settings(mediapipe_cache, **{'model.segmentation': 'selfie_segmentation'}),
                   heads=heads, incremental=False)
    found, missed = on.process(frame), off.process(frame)
    assert missed.pose.people == 0
    assert found.pose.people >= 1
    boxes = person_boxes(found.segmentation.mask, 1, 32)
    # Each person found stands in a region of the mask.
    for person in found.pose.keypoints:
        x, y = np.median(person[:, 0]), np.median(person[:, 1])
        assert any(x0 - 10 <= x <= x1 + 10 and y0 - 10 <= y <= y1 + 10
                   for x0, y0, x1, y1 in boxes), (x, y, boxes)


def test_a_change_inside_a_followed_person_s_crop_keeps_the_detector_s_schedule(
        mediapipe_cache):
    # The detector sees the whole frame: someone a followed person hides is found once the
    # followed person moves on, though all that changed lay inside their crop. So the
    # incremental pipeline looks for another person on the frames the dense reference does.
    person = _coco('000000000785')
    image = np.ascontiguousarray(np.concatenate([person, np.full_like(person, 128)], 1))
    changes = {'pose.max_people': 2, 'pose.detect_period': 2}
    incremental = Pipeline(_settings(mediapipe_cache, **changes), heads=('pose',))
    dense = Pipeline(_settings(mediapipe_cache, **changes), heads=('pose',), incremental=False)
    first = incremental.process(image).pose
    assert first.people == dense.process(image).pose.people == 1
    x, y = np.round(first.keypoints[0, :, :2].mean(0)).astype(int)
    for step in range(6):
        frame = image.copy()
        frame[y - 20:y + 20, x - 20:x + 20] = 255 * (step % 2)  # inside the crop only
        incremental.process(frame)
        dense.process(frame)
    runs = [p._heads['pose'].model.counters['detector_runs'] for p in (incremental, dense)]
    assert runs[0] == runs[1] == 4  # the first frame, then every second one
