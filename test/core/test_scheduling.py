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

"""The measured choice between the engine and a dense pass, alone and in the pipeline."""

import numpy as np
import pytest

from sparse_perception import settings as st
from sparse_perception.pipeline import Pipeline
from sparse_perception.scheduling import (ChangeMapSchedule, finished_clock, measurable,
                                          PathChoice, warmup_frames)
from support import require_module, require_shared, vtest_frames


def _engine_frames(choice, ms, count):
    """Record ``count`` sparse engine frames of ``ms`` each, asking for the path first."""
    for _ in range(count):
        assert choice.pick() == 'engine'
        choice.record('engine', ms)


def test_the_engine_stays_while_it_is_faster():
    choice = PathChoice(samples=3)
    choice.record('dense', 10.0)
    _engine_frames(choice, 4.0, 50)
    assert choice.estimates() == {'engine': 4.0, 'dense': 10.0}


def test_a_slower_engine_hands_over_and_is_tried_again_less_and_less_often():
    choice = PathChoice(samples=3, first_probe=4, max_probe=16)
    choice.record('dense', 10.0)
    _engine_frames(choice, 12.0, 3)
    probes = []
    for _ in range(4):  # lose, be tried again after 4, 8, 16, 16 dense frames
        dense = 0
        while choice.pick() == 'dense':
            choice.record('dense', 10.0)
            dense += 1
        probes.append(dense)
        _engine_frames(choice, 12.0, 3)
    assert probes == [4, 8, 16, 16]
    # The scene calms down: the engine wins its next trial and keeps the frames.
    while choice.pick() == 'dense':
        choice.record('dense', 10.0)
    _engine_frames(choice, 3.0, 20)


def test_an_engine_far_slower_waits_longer_before_it_is_tried_again():
    choice = PathChoice(samples=1, first_probe=4, max_probe=100)
    choice.record('dense', 10.0)
    waits = []
    for _ in range(3):
        _engine_frames(choice, 60.0, 1)  # six times slower than the dense pass
        dense = 0
        while choice.pick() == 'dense':
            choice.record('dense', 10.0)
            dense += 1
        waits.append(dense)
    assert waits == [24, 100, 100]  # 4 x 6, then x 6 up to the cap


def test_maps_are_skipped_ever_longer_while_the_scene_changes_and_taken_when_needed():
    schedule = ChangeMapSchedule(first=2, longest=8)
    taken = []
    for _ in range(30):
        skipped = schedule.skip(needed=False)
        taken.append(not skipped)
        if not skipped:
            schedule.made(refresh=False, changed_fraction=0.3)
    # A map, 2 skipped, a map, 4 skipped, a map, 8, 8, ...
    assert [i for i, t in enumerate(taken) if t] == [0, 3, 8, 17, 26]
    assert not schedule.skip(needed=True)  # a network may run the engine: a map at once
    assert not schedule.skip(needed=False)  # and the skipping starts over
    schedule.made(refresh=True, changed_fraction=1.0)  # a refresh says nothing
    assert not schedule.skip(needed=False)
    schedule.made(refresh=False, changed_fraction=0.3)
    assert schedule.skip(needed=False) and schedule.skip(needed=False)
    assert not schedule.skip(needed=False)
    schedule.made(refresh=False, changed_fraction=0.0)  # still: maps on every frame
    assert not schedule.skip(needed=False)
    with pytest.raises(ValueError, match='ChangeMapSchedule needs'):
        ChangeMapSchedule(first=4, longest=2)


def test_wants_engine_foretells_pick():
    choice = PathChoice(samples=1, first_probe=2, max_probe=8)
    choice.record('dense', 10.0)
    for _ in range(40):
        wants = choice.wants_engine()
        path = choice.pick()
        assert wants == (path == 'engine')
        choice.record(path, 30.0 if path == 'engine' else 10.0)


def test_a_trial_far_behind_ends_at_its_first_sample_and_a_close_one_takes_them_all():
    choice = PathChoice(samples=3, first_probe=4, max_probe=64, give_up=2.0)
    choice.record('dense', 10.0)
    trials = []
    for engine_ms in (30.0, 30.0, 19.0):  # the first trial too
        while choice.pick() == 'dense':
            choice.record('dense', 10.0)
        samples = 0
        while choice.pick() == 'engine':
            choice.record('engine', engine_ms)
            samples += 1
        trials.append(samples)
    # Three times slower: one sample; 1.9 times: all three (a single slow frame may be noise).
    assert trials == [1, 1, 3]
    # A late slow sample does not end a trial; an outlier of a first sample counts as 2x.
    choice = PathChoice(samples=3, first_probe=4, max_probe=512, give_up=2.0)
    choice.record('dense', 10.0)
    _engine_frames(choice, 15.0, 3)  # lost by 1.5x: tried again after 6 dense frames
    waits = []
    for first in (1000.0, 15.0):
        dense = 0
        while choice.pick() == 'dense':
            choice.record('dense', 10.0)
            dense += 1
        waits.append(dense)
        choice.record('engine', first)
        if first < 20.0:
            choice.record('engine', 500.0)  # the second sample, far behind: no give-up
            assert choice.pick() == 'engine'
            choice.record('engine', 11.0)
    assert waits == [6, 12]  # 4 x 1.5, then x 2 (not x 100: the outlier counts as 2x)


def _dense_until_trial(choice, scene, limit=10000):
    """Run dense frames at ``scene`` until the engine is tried; return how many ran."""
    dense = 0
    while choice.pick(scene) == 'dense':
        choice.record('dense', 10.0)
        dense += 1
        assert dense < limit, 'the engine was never tried again'
    return dense


def test_a_trial_waits_while_the_scene_changes_as_much_as_when_the_engine_lost():
    choice = PathChoice(samples=3, first_probe=4, max_probe=64)
    choice.record('dense', 10.0)
    for scene in (0.05,) * 20 + (0.3,) * 2:  # the engine wins while little changes, then
        assert choice.pick(scene) == 'engine'  # loses by 2x where 30% of the frame changed
        choice.record('engine', 4.0 if scene < 0.1 else 20.0)
    assert choice.pick(0.3) == 'dense'
    # Calmer than 30% / 2: tried when due (the shares of the winning frames are forgotten).
    assert _dense_until_trial(choice, 0.1) == 8
    for _ in range(3):
        assert choice.pick(0.3) == 'engine'
        choice.record('engine', 20.0)
    # While 15% or more changes (the engine's cost halved at best) a due trial waits, each
    # wait as long again as the last (16, then 32), until 64 dense frames passed since the
    # loss: then it runs whatever the scene.
    assert _dense_until_trial(choice, 0.16) == 64
    # A due trial is judged by the latest measured share: it needs no change map of its own.
    choice = PathChoice(samples=1, first_probe=4, max_probe=64)
    choice.record('dense', 10.0)
    assert choice.pick(0.3) == 'engine'
    choice.record('engine', 15.0)  # lost by 1.5x: due after 6 dense frames
    for _ in range(6):
        assert not choice.wants_engine() and choice.pick(None) == 'dense'
        choice.record('dense', 10.0)
    assert not choice.wants_engine() and choice.pick(None) == 'dense'  # due, but 30% busy
    choice.record('dense', 10.0)
    assert choice.pick(0.1) == 'dense'  # calm now, and due again after 12
    choice.record('dense', 10.0)
    waited = 2
    while not choice.wants_engine():
        assert choice.pick(None) == 'dense'
        choice.record('dense', 10.0)
        waited += 1
    assert waited == 12 and choice.pick(None) == 'engine'
    # Samples without a share (a caller that measures none) keep the plain schedule.
    plain = PathChoice(samples=1, first_probe=4, max_probe=64)
    plain.record('dense', 10.0)
    assert plain.pick() == 'engine'
    plain.record('engine', 15.0)
    assert _dense_until_trial(plain, 0.9) == 6


def test_the_engines_first_frames_after_warmup_are_the_samples():
    import torch

    # Two frames that compiled kernels (seconds each), then the engine at its real speed: it
    # keeps the frames. Without the warm-up the two would have sent it away.
    choice = PathChoice(samples=3, warmup=2)
    choice.record('dense', 4.0)
    _engine_frames(choice, 20000.0, 2)
    _engine_frames(choice, 3.0, 10)
    assert choice.estimates()['engine'] == 3.0
    cold = PathChoice(samples=3)
    cold.record('dense', 4.0)
    _engine_frames(cold, 20000.0, 1)
    assert cold.pick() == 'dense'
    # Only CUDA frames carry such costs (the CPU's first frame, a dense one, is no sample).
    assert warmup_frames(torch.device('cuda')) == 2 and warmup_frames(torch.device('cpu')) == 0


def test_no_decision_before_both_paths_were_timed():
    choice = PathChoice(samples=2)
    _engine_frames(choice, 100.0, 5)  # the dense pass was never timed
    assert choice.needs_dense_sample
    choice.record('dense', 1.0)
    choice.record('engine', 100.0)
    assert choice.pick() == 'dense'


@pytest.mark.parametrize('args', [(0, 1, 1), (1, 0, 1), (1, 8, 4), (1, 1, 1, -1),
                                  (1, 1, 1, 0, 1.0)])
def test_bad_arguments_are_named(args):
    with pytest.raises(ValueError, match='PathChoice needs'):
        PathChoice(*args)
    with pytest.raises(ValueError, match="path 'gpu'"):
        PathChoice().record('gpu', 1.0)


@pytest.mark.parametrize('execution, device, measured', [
    ('eager', 'cpu', True), ('device', 'cpu', False), ('eager', 'cuda', True),
    ('device', 'cuda', True)])
def test_paths_are_timed_where_the_host_clock_can_tell(execution, device, measured):
    import torch

    # The device executor on the CPU is Triton's interpreter: its time means nothing.
    assert measurable(execution, torch.device(device)) is measured


def test_the_clock_waits_for_cuda_work_and_for_nothing_else(monkeypatch):
    import torch

    waited = []
    monkeypatch.setattr(torch.cuda, 'synchronize', lambda device=None: waited.append(device))
    before = finished_clock(torch.device('cpu'))
    assert waited == []
    cuda = torch.device('cuda', 1)
    after = finished_clock(cuda)
    assert waited == [cuda] and after >= before


@pytest.fixture(scope='module')
def frames():
    """Eleven vtest frames at 144x192, the 4th and 8th repeated (frames where nothing moved)."""
    out = vtest_frames(11, (144, 192), rgb=True)
    return out[:4] + [out[3]] + out[4:8] + [out[7]] + out[8:]


def _coral_settings(**changes):
    base = {'model.segmentation': 'deeplabv3_mnv2_dm05_pascal_fcn', 'model.device': 'cpu',
            'model.models_dir': str(require_shared('models/coral')), 'change.threshold': 0.0,
            'change.min_pixels': 1}
    base.update(changes)
    return st.replace(st.PerceptionSettings(), base)


class _SlowEngine:
    """Makes every engine frame look 1.5 times the dense pass to the path choice."""

    def __init__(self, choice):
        self.choice = choice
        self.record = choice.record

    def __call__(self, path, ms):
        # Slower, but not so much that a trial gives up at its first sample.
        self.record(path, 1.5 * self.choice.estimates()['dense'] if path == 'engine' else ms)


def _beside_dense(clip, keep_change_maps=False, decodes=None, reset_at=None, settings=None):
    """
    Run ``clip`` through the incremental pipeline, its engine slower than dense, and dense.

    Every mask must equal dense's. Returns per frame (the incremental result, the dense
    result, the path the network took). ``decodes``, a list, gets the number of masks decoded
    by each frame. Both pipelines are reset before frame ``reset_at``. ``settings``: the
    fully convolutional Coral DeepLab's by default.
    """
    settings = settings if settings is not None else _coral_settings()
    dense = Pipeline(settings, heads=('segmentation',), incremental=False)
    incremental = Pipeline(settings, heads=('segmentation',))
    incremental.keep_change_maps = keep_change_maps
    net = incremental._heads['segmentation'].net
    model = incremental._heads['segmentation'].model
    decode, decoded = model.decode, [0]

    def counted(*args, **kwargs):
        decoded[0] += 1
        return decode(*args, **kwargs)

    model.decode = counted
    out = []
    for index, frame in enumerate(clip):
        decoded[0] = 0
        if index == reset_at:
            incremental.reset()
            dense.reset()
        got, want = incremental.process(frame), dense.process(frame)
        if decodes is not None:
            decodes.append(decoded[0])
        if index == 0:  # after the first frame's reset, which renews a size-bound choice
            net.choice.record = _SlowEngine(net.choice)
        np.testing.assert_array_equal(got.segmentation.mask, want.segmentation.mask)
        out.append((got, want, net.path))
    return out


def test_either_path_gives_the_dense_result_at_thresholds_zero(frames):
    decodes = []
    runs = _beside_dense(frames, decodes=decodes)
    paths = [path for _, _, path in runs]
    macs = [got.stats.heads['segmentation'].macs for got, _, _ in runs]
    masks = [got.segmentation.mask for got, _, _ in runs]
    measured = [got.stats.change_measured for got, _, _ in runs]
    # A still frame is not even decoded again: the last result stands (a copy: each result
    # owns its mask).
    assert decodes[3:6] == [1, 0, 1] and np.array_equal(masks[4], masks[3])
    assert not np.shares_memory(masks[4], masks[3])
    # The first frame times both; three sparse engine frames lose to the dense pass (frame 4
    # changed nothing: the engine answers it, not a sample), which then runs every frame.
    assert paths[:5] == ['engine'] * 5 and set(paths[5:]) == {'dense'}
    assert macs[4] == 0 and min(macs[5:]) == max(macs[5:]) > 0
    # The first frame's two dense timing passes (a warm one, a timed one) count as computed.
    assert macs[0] == 3 * macs[5]
    # Frame 5 changed and only the dense pass reads maps now: the next four frames go
    # without one (frame 9, the same picture as frame 8, runs dense as a dense pipeline
    # would), then a map is made again (a refresh, which measures nothing, then a map that
    # changed: eight skipped).
    assert measured == [True] * 6 + [False] * 5 + [True, False]


def test_a_picture_that_holds_still_is_noticed_while_the_dense_pass_runs(frames):
    clip = frames[:9] + [frames[10]] * 40  # the scene changes, then holds still
    runs = _beside_dense(clip)
    macs = [got.stats.heads['segmentation'].macs for got, _, _ in runs]
    measured = [got.stats.change_measured for got, _, _ in runs]
    assert runs[-1][2] == 'dense' and not all(measured[:9])  # maps were skipped
    # From frame 10 on the picture is one: within 32 skipped maps, a refresh and one map
    # it is seen to hold still, and from then on the network is not run at all.
    still = [i for i in range(10, len(clip)) if macs[i] == 0]
    assert still and still[0] <= 10 + 32 + 2 and still == list(range(still[0], len(clip)))
    assert all(measured[still[0]:])


def test_a_still_picture_after_a_reset_on_the_dense_path_is_not_decoded_again(
        frames, mediapipe_cache):
    # A reset empties the engine's caches but keeps the path choice of a network with a
    # fixed input size: the dense pass's last mask stands for a still picture as it is,
    # however much the engine would recompute.
    settings = _coral_settings(**{
        'model.segmentation': 'selfie_segmentation_landscape', 'model.runtime': 'torch',
        'model.models_dir': str(mediapipe_cache)})
    clip = frames[:9] + [frames[10]] * 40
    decodes = []
    runs = _beside_dense(clip, decodes=decodes, reset_at=9, settings=settings)
    macs = [got.stats.heads['segmentation'].macs for got, _, _ in runs]
    still = [i for i in range(10, len(clip)) if macs[i] == 0]
    assert runs[8][2] == runs[-1][2] == 'dense' and still
    assert decodes[still[0]:] == [0] * (len(clip) - still[0])


def test_adaptive_false_always_runs_the_engine(frames):
    pipeline = Pipeline(_coral_settings(**{'sparsity.adaptive': False}),
                        heads=('segmentation',))
    net = pipeline._heads['segmentation'].net
    assert net.choice is None
    for frame in frames[:5]:
        pipeline.process(frame)
        assert net.path == 'engine'
    # Live: turning it on starts measuring, keeping the caches of the running engine, and
    # times the dense pass at once (else no decision could ever be made).
    pipeline.update(_coral_settings(**{'sparsity.adaptive': True}))
    assert net.choice is not None and not pipeline.process(frames[5]).stats.dense
    assert net.choice.estimates()['dense'] is not None


def test_live_settings_of_the_schedule_and_threads_take_effect(frames):
    import torch

    from sparse_perception import pipeline as pipeline_module

    pipeline = Pipeline(_coral_settings(), heads=('segmentation',))
    pipeline.process(frames[0])
    head = pipeline._heads['segmentation']
    pipeline.update(_coral_settings(**{'pose.detect_period': 7}))
    assert head.detect_period == 7 and pipeline._heads['segmentation'] is head  # no reload
    pipeline.update(_coral_settings(**{'pose.detect_period': 7, 'model.threads': 2}))
    assert torch.get_num_threads() == 2
    pipeline.update(_coral_settings(**{'pose.detect_period': 7, 'model.threads': 0}))
    assert torch.get_num_threads() == pipeline_module._TORCH_DEFAULT_THREADS[0]
    pipeline.update(_coral_settings())  # back to one thread
    assert torch.get_num_threads() == 1


def test_auto_runtime_falls_back_to_torch_where_litert_fails(mediapipe_cache, monkeypatch,
                                                             caplog):
    require_module('ai_edge_litert')
    from sparse_perception.models.tflite import litert
    from sparse_perception.pipeline import ModelLoadError

    def broken(model, threads):
        raise RuntimeError('Encountered unresolved custom op')
    monkeypatch.setattr(litert, 'litert_networks', broken)
    settings = st.replace(st.PerceptionSettings(), {
        'model.segmentation': 'selfie_segmentation_landscape', 'model.device': 'cpu',
        'model.models_dir': str(mediapipe_cache)})
    with caplog.at_level('WARNING'):
        head = Pipeline(settings, heads=('segmentation',))._heads['segmentation']
    assert head.model.dense_module is head.model.module  # torch
    assert 'runs its dense passes on torch' in caplog.text and 'unresolved' in caplog.text
    with pytest.raises(ModelLoadError, match='on LiteRT: Encountered unresolved custom op'):
        Pipeline(st.replace(settings, {'model.runtime': 'litert'}), heads=('segmentation',))


@pytest.mark.parametrize('adaptive', [True, False])
@pytest.mark.slow
def test_the_detector_runs_on_every_nth_personless_frame_and_never_on_a_still_one(
        frames, mediapipe_cache, adaptive):
    # The dense reference keeps the schedule (it once detected on every frame, so a person
    # it found at once the incremental pipeline found up to detect_period - 1 frames later,
    # and the two differed in person count by the schedule, not by sparsity).
    base = {'model.pose': 'blazepose', 'model.models_dir': str(mediapipe_cache),
            'model.device': 'cpu', 'pose.detect_period': 3, 'sparsity.adaptive': adaptive}
    settings = st.replace(st.PerceptionSettings(), base)
    incremental = Pipeline(settings, heads=('pose',))
    dense = Pipeline(settings, heads=('pose',), incremental=False)
    still = frames[:4] + [frames[3]] * 3 + frames[5:9]  # frames 3 to 6 are one picture
    ran, dense_ran, stats = [], [], []
    for frame in still:  # vtest's pedestrians are too small for the detector: nobody
        before = incremental._heads['pose'].model.counters['detector_runs']
        dense_before = dense._heads['pose'].model.counters['detector_runs']
        result = incremental.process(frame)
        assert result.pose.people == dense.process(frame).pose.people == 0
        ran.append(incremental._heads['pose'].model.counters['detector_runs'] > before)
        dense_ran.append(dense._heads['pose'].model.counters['detector_runs'] > dense_before)
        stats.append(result.stats.heads['pose'])
    # Only a frame on which the dense reference detects and this pipeline did not saved the
    # detector's dense cost (frame 6); between the period's frames neither detects, and
    # nothing is counted as saved.
    assert all(s.macs == 0 for s, r in zip(stats, ran) if not r)
    assert [i for i, (s, r) in enumerate(zip(stats, ran)) if not r and s.dense_macs > 0] == [6]
    # Frames 0, 3, 6 and 9 by the period, in both; but nothing moved between frames 3 and 6,
    # so the incremental pipeline skips frame 6, whose picture the detector saw at frame 3.
    assert [i for i, r in enumerate(dense_ran) if r] == [0, 3, 6, 9]
    assert [i for i, r in enumerate(ran) if r] == [0, 3, 9]


@pytest.mark.slow
def test_auto_runtime_takes_litert_for_tflite_models_on_the_cpu(frames, mediapipe_cache):
    require_module('ai_edge_litert')
    from sparse_perception.models.tflite.litert import LiteRTNet

    settings = st.replace(st.PerceptionSettings(), {
        'model.segmentation': 'selfie_segmentation_landscape', 'model.pose': 'blazepose',
        'model.models_dir': str(mediapipe_cache), 'model.device': 'cpu'})
    incremental = Pipeline(settings)
    dense = Pipeline(settings, incremental=False)
    for pipeline in (incremental, dense):
        for head in pipeline._heads.values():
            assert isinstance(head.model.dense_module, LiteRTNet)
    seg, pose = incremental._heads['segmentation'], incremental._heads['pose']
    assert not isinstance(seg.model.module, LiteRTNet)  # the engine runs torch
    assert isinstance(pose.nets[1].dense.module, LiteRTNet)  # the detector's dense passes
    for frame in frames[:6]:
        got, want = incremental.process(frame), dense.process(frame)
        agree = (got.segmentation.mask == want.segmentation.mask).mean()
        assert agree >= 0.995 and got.pose.people == want.pose.people
    # Fully convolutional conversions have no fixed-size file to run: torch.
    coral = Pipeline(_coral_settings(), heads=('segmentation',))
    assert coral._heads['segmentation'].model.dense_module is \
        coral._heads['segmentation'].model.module


def test_a_picture_back_after_frames_without_a_map_is_not_taken_for_still(frames):
    # Frames 0-5 as before (frame 5 has a map that changed), four frames of another picture
    # without maps, then frame 5's picture again: equal to the maps' reference, but the last
    # outputs came from the other picture (_beside_dense checks every mask against dense).
    clip = frames[:6] + [frames[12]] * 4 + [frames[5]]
    runs = _beside_dense(clip)
    measured = [got.stats.change_measured for got, _, _ in runs]
    masks = [want.segmentation.mask for _, want, _ in runs]
    assert measured[6:10] == [False] * 4
    assert not np.array_equal(masks[9], masks[10])  # else the check above could not tell


def test_a_watched_change_map_is_made_on_every_frame(frames):
    runs = _beside_dense(frames, keep_change_maps=True)
    assert all(got.stats.change_measured for got, _, _ in runs)
    assert runs[-1][2] == 'dense'


def test_the_engine_is_not_tried_again_while_the_scene_stays_as_busy():
    # vtest at thresholds 0: its noise changes most tiles of every frame. The engine, made
    # 1.5 times slower than dense, loses its first samples; on such a scene it would lose
    # every trial, so none comes within max_probe dense frames (without the scene's share,
    # the first came 24 dense frames after the loss and took four frames).
    runs = _beside_dense(vtest_frames(60, (144, 192), rgb=True))
    paths = [path for _, _, path in runs]
    assert paths[:4] == ['engine'] * 4 and set(paths[4:]) == {'dense'}
    shares = [got.stats.changed_fraction for got, _, _ in runs if got.stats.change_measured]
    assert min(shares[1:]) >= 1 / 1.5  # never calm enough for the engine to win
    # The waiting trial (due 24 frames after the loss) costs no change map: maps are still
    # skipped 4, 8, 16 frames at a time, each time after a refresh that measures nothing.
    measured = [i for i, (got, _, _) in enumerate(runs) if got.stats.change_measured]
    assert measured == [0, 1, 2, 3, 4, 10, 20, 38]


def test_a_copy_starts_where_the_choice_stands_with_a_warm_up_of_its_own():
    choice = PathChoice(warmup=2)
    choice.record('dense', 10.0)
    for ms in (1.0, 1.0, 30.0, 30.0, 30.0):  # two warm-up frames, then the engine loses
        choice.record('engine', ms)
    assert choice.pick() == 'dense'
    twin = choice.copy(warmup=2)
    assert twin.pick() == 'dense' and twin._dense_ms == choice._dense_ms
    # Its own: samples added to one do not reach the other; its cold engine frames are not
    # samples.
    twin.record('dense', 12.0)
    assert list(choice._dense_ms) == [10.0] and twin._warmup == 2
