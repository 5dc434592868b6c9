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

"""What the pipeline double does beyond the contract (test_pipeline_contract.py checks that)."""

import json

import numpy as np
from pipeline_double import model_problem, ModelLoadError, PipelineDouble, replace_model
import pytest
from sparse_perception import settings as st

SETTINGS = replace_model(st.PerceptionSettings(), segmentation='tiny-seg', pose='tiny-pose')


def _frames(count=3, shape=(48, 64)):
    """Return a random frame, then frames that each invert another 16 x 16 tile."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    frames = [base]
    for i in range(1, count):
        frame = base.copy()
        frame[:16, 16 * i:16 * i + 16] = 255 - frame[:16, 16 * i:16 * i + 16]
        frames.append(frame)
    return frames


def test_active_fraction_is_the_share_of_recomputed_tiles():
    pipeline = PipelineDouble(SETTINGS)
    first, second, _ = (pipeline.process(f) for f in _frames())
    assert first.stats.dense and first.stats.active_fraction == 1.0
    head = second.stats.heads['pose']
    assert not head.dense and head.active_fraction == pytest.approx(1 / 12)
    assert head.macs == round(head.dense_macs / 12)
    # conv2 reaches one tile further: the changed tile and its 5 neighbours of 12.
    assert head.layers == {'conv1': pytest.approx(1 / 12), 'conv2': pytest.approx(6 / 12)}


def test_change_settings_and_dense_fallback_decide_what_runs():
    frames = _frames()
    quiet = PipelineDouble(st.replace(SETTINGS, {'change.threshold': 255.0}))
    assert [quiet.process(f).stats.active_fraction for f in frames] == [1.0, 0.0, 0.0]
    refresh = PipelineDouble(st.replace(SETTINGS, {'change.refresh_period': 2}))
    assert [refresh.process(f).stats.dense for f in frames] == [True, False, True]
    fallback = PipelineDouble(st.replace(SETTINGS, {'sparsity.dense_fallback': 0.05}))
    assert [fallback.process(f).stats.dense for f in frames] == [True, True, True]


def test_sparsity_scale_stands_for_the_engine_thresholds():
    frames = _frames()
    dense = PipelineDouble(SETTINGS, incremental=False)
    exact = PipelineDouble(SETTINGS)
    for frame in frames:
        want, got = dense.process(frame), exact.process(frame)
        np.testing.assert_array_equal(got.segmentation.mask, want.segmentation.mask)
        np.testing.assert_array_equal(got.pose.keypoints, want.pose.keypoints)
    # Above 255 / 10 no motion is large enough: the change map marks a tile, nothing runs.
    held = PipelineDouble(st.replace(SETTINGS, {'sparsity.scale': 26.0}))
    first = held.process(frames[0])
    second = held.process(frames[1])
    assert second.change_tiles.sum() == 1 and second.stats.active_fraction == 0.0
    np.testing.assert_array_equal(second.pose.keypoints, first.pose.keypoints)


def test_models_load_and_fail_like_the_real_ones(tmp_path):
    with pytest.raises(ModelLoadError, match='model.pose'):
        PipelineDouble(replace_model(SETTINGS, pose='nope'))
    with pytest.raises(ModelLoadError, match='segmentation model'):
        PipelineDouble(replace_model(SETTINGS, pose='tiny-seg'))
    PipelineDouble(st.PerceptionSettings())  # the registry's names load too
    path = tmp_path / 'pose.json'
    path.write_text(json.dumps({'head': 'pose', 'seed': 5}))
    pipeline = PipelineDouble(SETTINGS, heads=('pose',))
    before = pipeline.process(_frames(1)[0]).pose.keypoints
    pipeline.update(replace_model(SETTINGS, pose=str(path)))
    pipeline.reset()
    after = pipeline.process(_frames(1)[0]).pose.keypoints
    assert not np.array_equal(before, after)
    bad = tmp_path / 'bad.json'
    bad.write_text('not json')
    with pytest.raises(ModelLoadError, match='unsupported'):
        pipeline.update(replace_model(SETTINGS, pose=str(bad)))
    assert pipeline.settings.model.pose == str(path)  # a failed update changes nothing


def test_model_problem_matches_what_loads(tmp_path):
    assert model_problem('pose', 'tiny-pose', SETTINGS) is None
    assert model_problem('pose', 'blazepose', SETTINGS) is None
    assert 'tiny-seg' in model_problem('segmentation', 'nope', SETTINGS)
    assert 'does not exist' in model_problem('pose', str(tmp_path / 'x.json'), SETTINGS)
