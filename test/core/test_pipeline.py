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

"""The pure pipeline on real models and real frames: exact at threshold 0, live settings."""

import dataclasses

import cv2
import numpy as np
import pytest

from sparse_perception import settings as st
from sparse_perception.change import ChangeDetector
from sparse_perception.pipeline import ModelLoadError, Pipeline
from support import require_shared, vtest_frames, with_pose_change

SEGMENTATION = 'deeplabv3_mnv2_pascal_fcn'  # trained Coral weights, runs at any frame size


@pytest.fixture(scope='module')
def frames():
    """Return eight consecutive vtest frames, shrunk to 144x192 RGB to keep the tests quick."""
    return vtest_frames(8, (144, 192), rgb=True)


def _settings(**changes):
    # adaptive off: these tests watch the engine itself (the path choice has its own tests).
    base = {'model.segmentation': SEGMENTATION, 'model.device': 'cpu',
            'model.models_dir': str(require_shared('models/coral')), 'sparsity.adaptive': False}
    base.update(changes)
    return st.replace(st.PerceptionSettings(), base)


def test_thresholds_zero_give_the_dense_result(frames):
    exact = _settings(**{'change.threshold': 0.0, 'change.min_pixels': 1, 'sparsity.scale': 0.0})
    incremental = Pipeline(exact, heads=('segmentation',))
    dense = Pipeline(exact, heads=('segmentation',), incremental=False)
    sparse_frames = 0
    for frame in frames:
        got, want = incremental.process(frame), dense.process(frame)
        np.testing.assert_array_equal(got.segmentation.mask, want.segmentation.mask)
        assert got.segmentation.class_names[15] == 'person'
        assert got.tile_size == 16 and got.change_tiles.shape == (9, 12)
        sparse_frames += not got.stats.dense
    assert sparse_frames == len(frames) - 1  # only the first frame ran dense


def test_a_fully_convolutional_model_scales_a_frame_above_its_limit_down(frames, caplog):
    # Its caches grow with its input: model.fcn_max_megapixels bounds that input. Below the
    # bound nothing changes; above it the frame is scaled down, the mask mapped back, and the
    # engine stays exact against the dense reference, which scales the same way.
    exact = {'change.threshold': 0.0, 'change.min_pixels': 1, 'sparsity.scale': 0.0,
             'model.fcn_max_megapixels': 0.01}  # 10000 pixels: 144x192 is 27648
    incremental = Pipeline(_settings(**exact), heads=('segmentation',))
    dense = Pipeline(_settings(**exact), heads=('segmentation',), incremental=False)
    model = incremental._heads['segmentation'].model
    assert model.transform((144, 192)).input_size == (86, 115)  # 9890 pixels, 3:4 kept
    assert model.transform((96, 100)).input_size == (96, 100)  # 9600: its own size
    sparse_frames = 0
    with caplog.at_level('WARNING', logger='sparse_perception.models.registry'):
        for frame in frames[:4]:
            got, want = incremental.process(frame), dense.process(frame)
            assert got.segmentation.mask.shape == (144, 192)
            np.testing.assert_array_equal(got.segmentation.mask, want.segmentation.mask)
            sparse_frames += not got.stats.dense
    assert sparse_frames == 3
    # Said once, not per frame: the user learns the network does not see the whole frame.
    said = [r.getMessage() for r in caplog.records if 'fcn_max_megapixels' in r.getMessage()]
    assert said == [f'the model {SEGMENTATION!r} runs 192x144 frames at 115x86: '
                    'model.fcn_max_megapixels is 0.01 (its memory grows with its input)']
    small = got.stats.heads['segmentation'].dense_macs
    # Live: a larger bound gives the frame its own size again (a new input size: dense).
    bound = _settings(**{**exact, 'model.fcn_max_megapixels': 1.0})
    net = incremental._heads['segmentation'].net
    choice = net.choice = object()  # (a path choice measured at the old input size)
    incremental.update(bound)
    dense.update(bound)
    assert net.choice is not choice  # renewed: the costs it measured were the old size's
    got, want = incremental.process(frames[4]), dense.process(frames[4])
    np.testing.assert_array_equal(got.segmentation.mask, want.segmentation.mask)
    assert model.transform((144, 192)).input_size == (144, 192)
    assert got.stats.heads['segmentation'].dense_macs > 2 * small


def test_a_result_owns_its_mask_when_a_still_frame_repeats_it(frames):
    pipeline = Pipeline(_settings(), heads=('segmentation',))
    first = pipeline.process(frames[0])
    kept = first.segmentation.mask.copy()
    second = pipeline.process(frames[0])  # the same picture: the last answer stands
    assert np.array_equal(second.segmentation.mask, kept)
    first.segmentation.mask[:] = 200  # a caller draws on an earlier result
    assert np.array_equal(second.segmentation.mask, kept)
    assert np.array_equal(pipeline.process(frames[0]).segmentation.mask, kept)


def test_a_frame_that_fails_part_way_leaves_the_next_frames_exact(monkeypatch):
    # The change map takes a frame in before the networks run: after a failure there (a
    # CUDA out-of-memory, say) the same picture again must not count as unchanged.
    import cv2
    from sparse_perception import pipeline as module

    folder = require_shared('data/davis/DAVIS/JPEGImages/480p/parkour')
    paths = sorted(folder.glob('*.jpg'))
    # Half size: the runner far from where he was, and the person class in both.
    before, after = (cv2.resize(cv2.imread(str(paths[i]))[:, :, ::-1], (428, 240))
                     for i in (10, 40))
    incremental = Pipeline(_settings(), heads=('segmentation',))
    dense = Pipeline(_settings(), heads=('segmentation',), incremental=False)
    incremental.process(before)
    run = module._Head.run

    def fails(self, *args, **kwargs):
        raise RuntimeError('out of memory')

    monkeypatch.setattr(module._Head, 'run', fails)
    with pytest.raises(RuntimeError, match='out of memory'):
        incremental.process(after)
    monkeypatch.setattr(module._Head, 'run', run)
    want = dense.process(after).segmentation.mask
    assert np.count_nonzero(want != dense.process(before).segmentation.mask) > 1000
    for _ in range(2):
        np.testing.assert_array_equal(incremental.process(after).segmentation.mask, want)


def test_the_frame_after_one_that_failed_part_way_counts_only_its_own_work(frames):
    # The decoder fails after the engine ran: that run is not the next frame's.
    incremental = Pipeline(_settings(), heads=('segmentation',))
    for frame in frames[:2]:
        incremental.process(frame)
    model = incremental._heads['segmentation'].model
    decode = model.decode

    def fails_once(*args, **kwargs):
        model.decode = decode
        raise RuntimeError('the decoder failed once')

    model.decode = fails_once
    with pytest.raises(RuntimeError, match='failed once'):
        incremental.process(frames[2])
    got = incremental.process(frames[3]).stats.heads['segmentation']
    fresh = Pipeline(_settings(), heads=('segmentation',)).process(frames[3])
    want = fresh.stats.heads['segmentation']
    assert (got.macs, got.dense_macs) == (want.macs, want.dense_macs) != (0, 0)


def test_stats_and_change_map(frames):
    # A static camera's change settings, so that the second frame leaves some layers alone.
    static = _settings(**{'change.threshold': 12.0, 'change.min_pixels': 32})
    pipeline = Pipeline(static, heads=('segmentation',))
    first = pipeline.process(frames[0])
    assert first.stats.dense and first.stats.changed_fraction == 1.0
    second = pipeline.process(frames[1])
    head = second.stats.heads['segmentation']
    assert not head.dense and 0 < head.active_fraction < 1
    assert 0 < head.macs < head.dense_macs and head.layers
    # The class arg-max is the engine's last layer: it runs where the class scores changed.
    logits, argmax = pipeline._heads['segmentation'].net.engine.last_stats.layers[-2:]
    assert argmax.kind == 'positionwise' and argmax.active == logits.changed > 0
    assert second.change_tiles.dtype == bool
    assert second.stats.changed_fraction == pytest.approx(second.change_tiles.mean())


def test_settings_apply_on_the_next_frame_without_reload(frames):
    pipeline = Pipeline(_settings(), heads=('segmentation',))
    for frame in frames[:3]:
        pipeline.process(frame)
    model = pipeline._heads['segmentation'].model
    pipeline.update(_settings(**{'change.threshold': 255.0}))  # nothing counts as changed
    result = pipeline.process(frames[3])
    assert pipeline._heads['segmentation'].model is model  # no reload
    assert result.stats.changed_fraction == 0.0 and not result.stats.dense
    pipeline.update(_settings(**{'change.threshold': 0.0}))
    assert pipeline.process(frames[4]).stats.changed_fraction > 0.0
    pipeline.update(_settings(**{'change.threshold': 0.0, 'change.min_pixels': 256}))
    assert pipeline.process(frames[5]).stats.changed_fraction == 0.0  # no tile wholly changed
    pipeline.update(_settings(**{'change.threshold': 0.0}))  # the same frame, at 16: some did
    assert pipeline.process(frames[5]).stats.changed_fraction > 0.0


def test_every_live_change_setting_reaches_the_change_detectors(frames):
    live = {'change.threshold': 7.0, 'change.dilation': 2, 'change.min_pixels': 20,
            'change.neighbour_pixels': 5, 'change.refresh_period': 9}
    assert set(live) | {'change.tile_size'} == {
        f'change.{f.name}' for f in dataclasses.fields(st.ChangeSettings)}  # none left out
    pipeline = Pipeline(_settings(), heads=('segmentation',))
    pipeline.process(frames[0])
    pipeline.update(_settings(**live))
    detectors = [pipeline._changes['segmentation']] + [
        net.change for head in pipeline._heads.values() for net in head.nets]
    for detector in detectors:
        for name, value in live.items():
            assert getattr(detector, name.split('.')[1]) == value, name


def test_a_still_frame_after_new_settings_shows_what_the_engine_recomputed():
    # Loose layer thresholds hold changes back; lowering them requests a dense frame. On a
    # still input that frame's outputs must be shown, not the last frame's again. (DAVIS
    # parkour, a moving camera, shrunk to 224x128.)
    folder = require_shared('data/davis/DAVIS/JPEGImages/480p/parkour')
    frames = [cv2.resize(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB), (224, 128),
                         interpolation=cv2.INTER_AREA)
              for path in sorted(folder.glob('*.jpg'))[10:16:2]]
    exact = {'change.threshold': 0.0, 'change.min_pixels': 1, 'model.pose': ''}
    loose = _settings(**exact, **{'sparsity.scale': 3.0, 'sparsity.global_scale': 3.0})
    pipeline = Pipeline(loose, heads=('segmentation',))
    dense = Pipeline(loose, heads=('segmentation',), incremental=False)
    for frame in frames:
        got = pipeline.process(frame).segmentation.mask
    want = dense.process(frames[-1]).segmentation.mask
    assert (got != want).any(), 'the test needs thresholds that hold something back'
    pipeline.update(_settings(**exact, **{'sparsity.scale': 0.0, 'sparsity.global_scale': 0.0}))
    for _ in range(2):
        np.testing.assert_array_equal(pipeline.process(frames[-1]).segmentation.mask, want)


def test_a_new_tile_size_reaches_every_change_map(frames):
    # MoveNet's input is the letterboxed frame: its map is made from the frame's (the
    # DeepLab, fed the frame itself, reads the frame's map).
    from sparse_perception.change import ResampledChange

    settings = _settings(**{'model.pose': 'movenet_lightning'})
    pipeline = Pipeline(settings)
    pipeline.process(frames[0])
    pipeline.update(st.replace(settings, {'change.tile_size': 32}))
    result = pipeline.process(frames[1])
    assert result.tile_size == 32
    movenet = pipeline._heads['pose'].nets[0].change
    assert isinstance(movenet, ResampledChange) and movenet.tile_size == 32


def test_a_pose_only_pipeline_says_it_does_not_read_the_change_threshold(caplog):
    settings = _settings(**{'model.pose': 'movenet_lightning'})
    with caplog.at_level('WARNING', logger='sparse_perception.pipeline'):
        pipeline = Pipeline(st.replace(settings, {'change.threshold': 12.0}), heads=('pose',))
    assert 'pose.change_threshold (2)' in caplog.text
    caplog.clear()
    with caplog.at_level('WARNING', logger='sparse_perception.pipeline'):
        Pipeline(settings, heads=('pose',))  # nothing set that goes unread
        pipeline.update(st.replace(settings, {'change.threshold': 12.0,
                                              'pose.change_threshold': 12.0}))
    assert 'pose.change_threshold' not in caplog.text


def test_the_pose_head_keeps_its_own_change_threshold(frames):
    # A static camera's masks take a high threshold; the pose head keeps its own (its
    # tracking feeds on its keypoints). Both heads' maps are made from the same frames.
    settings = _settings(**{'model.pose': 'movenet_lightning', 'change.threshold': 255.0,
                            'pose.change_threshold': 0.0, 'pose.change_min_pixels': 1})
    pipeline = Pipeline(settings)
    changes = pipeline._changes
    assert changes['segmentation'] is not changes['pose']
    assert (changes['segmentation'].threshold, changes['pose'].threshold) == (255.0, 0.0)
    assert changes['pose'].min_pixels == 1 and changes['segmentation'].min_pixels == 16
    pipeline.process(frames[0])
    result = pipeline.process(frames[1])
    heads = result.stats.heads
    assert result.stats.changed_fraction == 0.0  # the frame's map is the segmentation head's
    assert heads['segmentation'].macs == 0 and heads['pose'].macs > 0
    # Set equal live, the two share one map again; it starts over with a refresh (each head's
    # map must hold what that head last propagated).
    pipeline.update(st.replace(settings, {'change.threshold': 0.0, 'change.min_pixels': 1}))
    assert pipeline._changes['segmentation'] is pipeline._changes['pose']
    assert pipeline.process(frames[2]).stats.changed_fraction == 1.0
    # ... and a live change of the pose head's threshold alone parts them again; a later one
    # reaches the pose head's own map, whose reference stays.
    pipeline.update(st.replace(pipeline.settings, {'pose.change_threshold': 4.0}))
    parted = pipeline._changes['pose']
    assert parted.threshold == 4.0 and pipeline._changes['segmentation'].threshold == 0.0
    pipeline.process(frames[3])
    pipeline.update(st.replace(pipeline.settings, {'pose.change_threshold': 6.0,
                                                   'pose.change_min_pixels': 3}))
    assert pipeline._changes['pose'] is parted and parted.reference is not None
    assert (parted.threshold, parted.min_pixels) == (6.0, 3)
    assert pipeline._changes['segmentation'].min_pixels == 1
    # At the defaults both heads share one map.
    defaults = Pipeline(_settings(**{'model.pose': 'movenet_lightning'}))
    assert defaults._changes['segmentation'] is defaults._changes['pose']


@pytest.mark.slow
def test_model_change_reloads_and_a_bad_model_keeps_the_old_head(frames, tmp_path):
    pipeline = Pipeline(_settings(), heads=('segmentation',))
    pipeline.process(frames[0])
    with pytest.raises(ModelLoadError, match='no_such_model'):
        pipeline.update(_settings(**{'model.segmentation': 'no_such_model'}))
    assert pipeline.settings.model.segmentation == SEGMENTATION
    assert pipeline.process(frames[1]).segmentation is not None
    pipeline.update(_settings(**{'model.segmentation': 'deeplabv3_mnv2_dm05_pascal_fcn'}))
    assert pipeline.process(frames[2]).stats.dense  # a new model starts dense


@pytest.mark.slow
def test_size_change_and_reset_run_dense(frames):
    pipeline = Pipeline(_settings(), heads=('segmentation',))
    pipeline.process(frames[0])
    assert not pipeline.process(frames[1]).stats.dense
    smaller = np.ascontiguousarray(frames[2][:96, :128])
    result = pipeline.process(smaller)
    assert result.stats.dense and result.segmentation.mask.shape == (96, 128)
    pipeline.reset()
    assert pipeline.process(smaller).stats.dense


@pytest.mark.parametrize('bad', [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 3), np.float32),
                                 np.zeros((0, 4, 3), np.uint8), 'frame'])
def test_bad_frames_are_named(bad):
    pipeline = Pipeline(_settings(), heads=('segmentation',))
    with pytest.raises(ValueError, match='uint8 RGB'):
        pipeline.process(bad)


def test_bad_construction_is_named():
    with pytest.raises(ValueError, match='heads must be'):
        Pipeline(_settings(), heads=('depth',))
    with pytest.raises(ModelLoadError, match='model.pose is empty'):
        Pipeline(_settings(**{'model.pose': ''}), heads=('pose',))
    with pytest.raises(ModelLoadError, match='not a pose model'):
        Pipeline(_settings(**{'model.pose': SEGMENTATION}), heads=('pose',))


def _jhmdb_frames(count):
    folder = require_shared('data/jhmdb/ReadJHMDBAnnotations/data/'
                            'Goal_Keeping_Tips_catch_f_cm_np1_fr_med_2')
    return [cv2.cvtColor(cv2.imread(str(folder / f'{i:05d}.png')), cv2.COLOR_BGR2RGB)
            for i in range(1, count + 1)]


def _mediapipe_settings(cache, **changes):
    base = {'model.segmentation': 'selfie_segmentation_landscape', 'model.pose': 'blazepose',
            'model.models_dir': str(cache), 'model.device': 'cpu',
            'change.threshold': 0.0, 'sparsity.scale': 0.0, 'sparsity.adaptive': False,
            'model.runtime': 'torch'}
    base.update(changes)
    return st.replace(st.PerceptionSettings(), with_pose_change(base))


@pytest.mark.slow
def test_resized_input_is_exact_at_threshold_zero(mediapipe_cache):
    # Selfie segmentation resizes the frame, so it keeps a change map of its own input.
    settings = _mediapipe_settings(mediapipe_cache)
    incremental = Pipeline(settings, heads=('segmentation',))
    dense = Pipeline(settings, heads=('segmentation',), incremental=False)
    for frame in _jhmdb_frames(5):
        got, want = incremental.process(frame), dense.process(frame)
        np.testing.assert_array_equal(got.segmentation.mask, want.segmentation.mask)
    assert not got.stats.heads['segmentation'].dense


@pytest.mark.slow
def test_tracked_crop_is_exact_at_threshold_zero(mediapipe_cache):
    # BlazePose crops the frame around the person. A scene whose only motion is away from the
    # person keeps the crop still in both pipelines, so they must agree (tracking decisions
    # from outputs that differ by float rounding could otherwise part the two streams).
    settings = _mediapipe_settings(mediapipe_cache)
    incremental = Pipeline(settings, heads=('pose',))
    dense = Pipeline(settings, heads=('pose',), incremental=False)
    still = _jhmdb_frames(1)[0]
    for step in range(5):
        frame = still.copy()
        frame[4:20, 4 + 8 * step:20 + 8 * step] = 255  # a small square moving along the top
        got, want = incremental.process(frame), dense.process(frame)
        assert got.pose.keypoints.shape == want.pose.keypoints.shape == (1, 33, 3)
        # fp32 rounding differs between sparse and dense convolutions (about 1e-6 of the
        # outputs); the heatmap refinement turns that into hundredths of a pixel at most.
        np.testing.assert_allclose(got.pose.keypoints, want.pose.keypoints, atol=0.05)
    head = incremental._heads['pose']
    # The detector runs in the engine too, so the ROI it starts from differs from the dense
    # one by float rounding (about 1e-6 px), no more.
    roi, dense_roi = head.model.roi, dense._heads['pose'].model.roi
    np.testing.assert_allclose([*roi.center, roi.size, roi.rotation],
                               [*dense_roi.center, dense_roi.size, dense_roi.rotation],
                               rtol=0, atol=1e-4)
    assert not got.stats.heads['pose'].dense  # the still crop ran sparse
    assert incremental.joint_names[0] == 'nose' and len(incremental.skeleton) > 0


@pytest.mark.slow
def test_tracking_stays_with_dense_over_a_walk_at_exact_settings(mediapipe_cache):
    # vtest's first pedestrian is detected at frame 165 and tracked from there, the crop moving
    # as they walk. The engine rounds unlike the dense pass (the detection 7e-5 px apart);
    # with crops that followed the landmarks to a fraction of a pixel that difference grew
    # frame by frame (0.8 px on the next frame, and 500 frames on the person was lost in one
    # pipeline only). Every pixel that changed is recomputed here, so the two must agree.
    settings = _mediapipe_settings(mediapipe_cache, **{'change.min_pixels': 1,
                                                       'change.neighbour_pixels': 1})
    incremental = Pipeline(settings, heads=('pose',))
    dense = Pipeline(settings, heads=('pose',), incremental=False)
    tracked = 0
    for frame in vtest_frames(200, rgb=True):
        got, want = incremental.process(frame).pose, dense.process(frame).pose
        assert got.keypoints.shape == want.keypoints.shape
        np.testing.assert_allclose(got.keypoints[..., :2], want.keypoints[..., :2], atol=0.05)
        tracked += len(got.keypoints) > 0
    assert tracked >= 30
    assert incremental._heads['pose'].model.counters['roi_moves'] >= 3


@pytest.mark.slow
def test_warm_up_reaches_every_fixed_size_network_and_changes_nothing(mediapipe_cache):
    # Blank frames never wake BlazePose's landmark network: warm_up runs an incremental frame
    # through every network anyway (on a GPU: compiling its kernels) and leaves every state
    # and output as they were.
    settings = _mediapipe_settings(mediapipe_cache)
    warmed = Pipeline(settings, heads=('segmentation', 'pose'))
    blank = np.full((120, 160, 3), 64, np.uint8)
    warmed.process(blank)
    landmark = warmed._heads['pose'].net
    assert landmark.engine.last_stats is None and not landmark.state.caches
    warmed.warm_up()
    nets = [net for head in warmed._heads.values() for net in head.nets]
    assert len(nets) == 3
    for net in nets:  # the last engine frame of each: incremental, over a changed tile
        stats = net.engine.last_stats
        assert not stats.dense and 0 < stats.active_fraction < 1, net.what
    assert not landmark.state.caches  # its own stream never started
    # No reset: the streams go on from the blank frame, as a pipeline that never warmed up.
    cold = Pipeline(settings, heads=('segmentation', 'pose'))
    cold.process(blank)
    for frame in _jhmdb_frames(3):
        got, want = warmed.process(frame), cold.process(frame)
        np.testing.assert_array_equal(got.segmentation.mask, want.segmentation.mask)
        np.testing.assert_array_equal(got.pose.keypoints, want.pose.keypoints)


def _detector_input(frame, size):
    """Letterbox ``frame`` to the detector's input in [-1, 1], as BlazePose.detect does."""
    import torch

    from sparse_perception.models.transforms import ImageTransform, resize_image

    pixels = resize_image(frame, ImageTransform.fit(frame.shape[:2], (size, size), 'letterbox'))
    return torch.from_numpy(pixels).permute(2, 0, 1)[None].float() * (2.0 / 255.0) - 1.0


@pytest.mark.slow
def test_pose_detector_runs_in_the_engine_equal_to_dense(frames, mediapipe_cache):
    # pose_detection.tflite holds three DEPTH_TO_SPACE ops; the engine lowers them, so the
    # detector runs incrementally instead of falling back to dense.
    import torch

    # min_pixels 1: every changed pixel reaches the engine (the default 32 drops noise).
    settings = _mediapipe_settings(mediapipe_cache, **{'change.min_pixels': 1})
    head = Pipeline(settings, heads=('pose',))._heads['pose']
    dense = Pipeline(settings, heads=('pose',), incremental=False)._heads['pose']
    assert len(head.nets) == 2  # the landmark trunk and the detector
    detector = head.nets[1]
    size = head.model.detector_settings.input_size
    # Its input's change map comes from the frame's, which the pipeline hands it every frame.
    frame_changes = ChangeDetector(settings.change)
    for i, frame in enumerate(frames):
        head.model.detector.add(frame_changes.update(frame), frame.shape[:2])
        x = _detector_input(frame, size)
        with torch.no_grad():
            got, want = head.model.detector(x), dense.model.detector(x)
        for a, b in zip(got, want):  # regressors, logits
            assert a.shape == b.shape
            # fp32 rounding of sparse against dense convolutions, as everywhere in the engine
            assert float((a - b).abs().max()) <= 1e-4 * float(b.abs().max()), f'frame {i}'
        (stats,) = detector.take_stats()
        assert stats.dense == (i == 0)  # then only the changed tiles and their fields
        shuffles = [s for s in stats.layers if s.name.startswith('depth_to_space')]
        assert len(shuffles) == 3 and all(s.dense_macs == s.macs == 0 for s in shuffles)
    # vtest's people are too small for this detector; on a JHMDB frame it finds the person.
    person = _jhmdb_frames(1)[0]
    head.model.detector.add(frame_changes.update(person), person.shape[:2])
    got, want = head.model.detect(person), dense.model.detect(person)
    assert len(got) == len(want) >= 1
    for a, b in zip(got, want):
        np.testing.assert_allclose([a.score, *a.box], [b.score, *b.box], rtol=0, atol=1e-3)


@pytest.mark.slow
def test_a_small_change_reaches_the_detector_at_a_static_camera_setting(mediapipe_cache):
    # The regression behind a sparse pose that parted from dense on vtest at change.threshold
    # 12 and min_pixels 32: the detector's input is the frame shrunk 3.4 times, and a change
    # map of that input of its own dropped a walking pedestrian's change (about 40 camera
    # pixels in a tile, a tenth of that after shrinking), so the detector kept answering
    # for where people had been. The frame's map, carried onto the input, keeps it.
    settings = _mediapipe_settings(mediapipe_cache, **{
        'change.threshold': 12.0, 'change.min_pixels': 32, 'pose.detect_period': 1})
    pipeline = Pipeline(settings, heads=('pose',))
    frame = np.full((576, 768, 3), 90, np.uint8)
    pipeline.process(frame)
    moved = frame.copy()
    moved[290:300, 400:404] = 160  # 40 pixels of one frame tile, 70 grey levels brighter
    stats = pipeline.process(moved).stats
    assert stats.changed_fraction > 0
    detector = {name: value for name, value in stats.heads['pose'].layers.items()
                if name.startswith('detector/')}
    assert detector and max(detector.values()) > 0  # the detector recomputed that place


def test_pose_head_without_a_person_returns_nobody(mediapipe_cache):
    settings = st.replace(st.PerceptionSettings(), {
        'model.pose': 'blazepose', 'model.models_dir': str(mediapipe_cache),
        'model.device': 'cpu'})
    pipeline = Pipeline(settings, heads=('pose',))
    result = pipeline.process(np.full((120, 160, 3), 90, np.uint8))
    assert result.pose.people == 0 and result.pose.keypoints.shape == (0, 33, 3)
    assert result.segmentation is None


def test_an_update_that_fails_for_one_head_changes_no_other(mediapipe_cache):
    # The segmentation head takes its part first; the pose head then refuses a track gate
    # (BlazePose follows people by its own crops). Nothing may stay applied.
    settings = _mediapipe_settings(mediapipe_cache)
    pipeline = Pipeline(settings)
    pipeline.process(np.full((96, 160, 3), 90, np.uint8))
    segmentation = pipeline._heads['segmentation'].nets[0]
    config = segmentation.config
    bad = st.replace(settings, {'sparsity.scale': 2.0, 'sparsity.gate': 'previous',
                                'pose.gate': 'track'})
    with pytest.raises(ModelLoadError, match='pose.gate'):
        pipeline.update(bad)
    assert pipeline.settings == settings
    assert segmentation.config == config and segmentation.gates.mode == 'none'


def test_layer_thresholds_go_to_the_networks_that_have_those_layers(mediapipe_cache):
    # The selfie network and BlazePose's networks share layer names (op003_conv): a bare name
    # goes to each network that has the layer, a qualified one to that network alone; a name
    # one network lacks is no error while another has it.
    settings = _mediapipe_settings(mediapipe_cache, **{'sparsity.layer_thresholds': [
        'op002_conv=0.5', 'op003_conv=0.25', 'pose/detector/op003_conv=0.75']})
    pipeline = Pipeline(settings)
    segmentation = pipeline._heads['segmentation'].nets[0]
    landmarks, detector = pipeline._heads['pose'].nets
    assert (segmentation.scope, landmarks.scope, detector.scope) == (
        'segmentation/', 'pose/', 'pose/detector/')
    assert segmentation.config.layer_thresholds == {'op002_conv': 0.5}
    assert landmarks.config.layer_thresholds == {'op003_conv': 0.25}
    assert detector.config.layer_thresholds == {'op003_conv': 0.75}
    pipeline.process(np.full((96, 160, 3), 90, np.uint8))
    state = segmentation.state
    index = [g.name for g in state.plan.layers].index('op002_conv')
    assert state.thresholds[index] == 0.5  # applied, not only accepted
    pipeline.update(st.replace(settings, {'sparsity.layer_thresholds': ['pose/op003_conv=1']}))
    assert segmentation.config.layer_thresholds == {} == detector.config.layer_thresholds
    assert landmarks.config.layer_thresholds == {'op003_conv': 1.0}


@pytest.mark.parametrize('names, message', [
    (['nope=1'], "no network of this pipeline has a layer named 'nope'; pose/ input, op000_pad"),
    (['pose/op002_conv=1'], r"pose model 'blazepose' \(pose/\) has no layer 'op002_conv'"),
    (['camera/op003_conv=1'], "'camera/op003_conv' names no network of this pipeline; its "
                              'networks: pose/, pose/detector/, segmentation/'),
    # (Not taken for a detector that cannot run in the engine, which would then run dense.)
    (['pose/detector/op999_conv=1'], r"the detector of 'blazepose' \(pose/detector/\) has no "
                                     "layer 'op999_conv'")])
def test_a_layer_threshold_no_network_takes_is_refused_and_changes_nothing(
        mediapipe_cache, names, message):
    settings = _mediapipe_settings(mediapipe_cache)
    with pytest.raises(ModelLoadError, match=f'sparsity.layer_thresholds: {message}'):
        Pipeline(st.replace(settings, {'sparsity.layer_thresholds': names}))
    pipeline = Pipeline(settings)
    nets = [net for head in pipeline._heads.values() for net in head.nets]
    configs = [net.config for net in nets]
    with pytest.raises(ModelLoadError, match=f'sparsity.layer_thresholds: {message}'):
        pipeline.update(st.replace(settings, {'sparsity.layer_thresholds': names,
                                              'sparsity.scale': 0.5}))
    assert pipeline.settings == settings
    assert [net.config for net in nets] == configs


def test_a_layer_threshold_of_a_network_of_any_size_is_checked_before_the_first_frame():
    # A fully convolutional network has no plan before its first frame: its traced graph
    # names its layers.
    with pytest.raises(ModelLoadError, match="layer named 'nope'; segmentation/ input, "):
        Pipeline(_settings(**{'sparsity.layer_thresholds': ['nope=1']}),
                 heads=('segmentation',))
    pipeline = Pipeline(_settings(**{'sparsity.layer_thresholds': ['blocks.1.expand.0=0.5']}),
                        heads=('segmentation',))
    net = pipeline._heads['segmentation'].nets[0]
    assert not net.engine._plans and net.config.layer_thresholds == {'blocks.1.expand.0': 0.5}
    pipeline.process(np.full((64, 96, 3), 90, np.uint8))
    names = [g.layer.names for g in net.state.plan.layers]
    index = next(i for i, layer in enumerate(names) if 'blocks.1.expand.0' in layer)
    assert net.state.thresholds[index] == 0.5


def test_a_missing_optional_package_is_a_model_load_error_naming_it(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, 'tflite', None)  # as without the tflite extra
    with pytest.raises(ModelLoadError, match=r"segmentation model .*needs the 'tflite' package"):
        Pipeline(_settings(), heads=('segmentation',))


def test_mask_proposals_without_opencv_are_refused_when_set(mediapipe_cache, monkeypatch):
    import sys

    settings = _mediapipe_settings(mediapipe_cache)
    pipeline = Pipeline(settings)
    monkeypatch.setitem(sys.modules, 'cv2', None)  # as without the opencv extra
    proposals = st.replace(settings, {'pose.mask_proposal_height': 32})
    with pytest.raises(ModelLoadError, match='pose.mask_proposal_height needs OpenCV'):
        Pipeline(proposals)
    with pytest.raises(ModelLoadError, match='pose.mask_proposal_height needs OpenCV'):
        pipeline.update(proposals)
    assert pipeline.settings == settings
    Pipeline(proposals, heads=('pose',))  # no mask to propose from: nothing needs OpenCV


def test_the_dense_pass_feeds_an_fp16_trunk_in_fp16():
    # model.precision fp16 halves the trunk only (on CUDA); the frame arrives in fp32, and the
    # path choice's dense pass must take it as the engine does.
    import torch
    from torch import nn

    from sparse_perception.pipeline import _dense_pass

    class Trunk(nn.Module):  # a trunk returns a tuple of features
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            return (self.conv(x),)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.trunk = Trunk().half().eval()
            self.tail = nn.Identity()

    x = torch.randn(1, 3, 8, 8)
    out = _dense_pass(Net())(x)
    assert out.dtype == torch.float32 and out.shape == (1, 4, 8, 8)


def test_focus_box_is_a_square_around_the_points_inside_the_frame():
    from sparse_perception.pipeline import focus_box

    assert focus_box([(50, 50)], (480, 640)) is None  # one point: nothing to frame
    assert focus_box([(10, 10), (600, 400)], (480, 640)) is None  # most of the frame already
    x0, y0, x1, y1 = focus_box([(100, 200), (140, 280)], (480, 640))
    assert x1 - x0 == y1 - y0 == 120  # 1.5 x the larger extent (80)
    assert (x0 + x1) / 2 == 120 and (y0 + y1) / 2 == 240  # centred on the points
    # Near an edge the square moves inside the frame rather than shrink.
    assert focus_box([(2, 470), (42, 478)], (480, 640)) == (0, 420, 60, 480)


@pytest.mark.slow
def test_focus_looks_again_at_a_small_person_and_both_pipelines_agree():
    # A JHMDB frame shrunk into a corner of a large grey canvas: MoveNet, seeing the whole
    # canvas at 192x192, is unsure; the second look at a crop around its answer is surer.
    frame = _jhmdb_frames(1)[0]
    canvas = np.full((720, 960, 3), 128, np.uint8)
    small = cv2.resize(frame, (frame.shape[1] // 2, frame.shape[0] // 2))
    canvas[400:400 + small.shape[0], 600:600 + small.shape[1]] = small
    base = {'model.pose': 'movenet_lightning', 'model.device': 'cpu',
            'model.models_dir': str(require_shared('models/coral')),
            'change.threshold': 0.0, 'sparsity.scale': 0.0, 'sparsity.adaptive': False,
            'model.runtime': 'torch', 'pose.focus_score': 1.0}
    glance = Pipeline(st.replace(st.PerceptionSettings(), base), heads=('pose',))
    focus = Pipeline(st.replace(st.PerceptionSettings(), {**base, 'pose.focus': True}),
                     heads=('pose',))
    dense = Pipeline(st.replace(st.PerceptionSettings(), {**base, 'pose.focus': True}),
                     heads=('pose',), incremental=False)
    unsure = glance.process(canvas).pose.keypoints[0]
    sure = focus.process(canvas).pose.keypoints[0]
    reference = dense.process(canvas).pose.keypoints[0]
    assert sure[:, 2].mean() > unsure[:, 2].mean()
    np.testing.assert_allclose(sure, reference, atol=0.05)
    # The focused keypoints lie on the person, in frame pixels.
    confident = sure[sure[:, 2] >= 0.3]
    assert len(confident) >= 5
    assert (confident[:, 0] >= 600).all() and (confident[:, 1] >= 400).all()
    # The same frame again: the same unsure answer, so the same second look, not run again.
    net, looks = focus._heads['pose'].net, []
    dense = net.dense
    net.dense = lambda x: looks.append(x) or dense(x)
    np.testing.assert_array_equal(focus.process(canvas).pose.keypoints[0], sure)
    assert looks == []
