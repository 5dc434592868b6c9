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

"""The node tests' pipeline double keeps the pipeline contract, so those tests mean something."""

import json

from nodes_pipeline_double import ModelLoadError, replace_model, TinyPipeline
import numpy as np
import pytest
from sparse_perception import settings as st

SETTINGS = replace_model(st.PerceptionSettings(), segmentation='tiny-seg', pose='tiny-pose')


def _frames(count=3, shape=(48, 64)):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    frames = [base]
    for i in range(1, count):
        frame = base.copy()
        frame[:16, 16 * i:16 * i + 16] = 255 - frame[:16, 16 * i:16 * i + 16]
        frames.append(frame)
    return frames


def test_results_follow_the_contract():
    pipeline = TinyPipeline(SETTINGS)
    first, second, _ = (pipeline.process(f) for f in _frames())
    assert first.stats.dense and first.stats.active_fraction == 1.0
    assert first.segmentation.mask.shape == (48, 64) and first.segmentation.mask.dtype == np.uint8
    assert first.pose.keypoints.shape == (1, 17, 3)
    assert first.change_tiles.shape == (3, 4) and first.tile_size == 16
    assert not second.stats.dense
    assert second.stats.heads['pose'].active_fraction == pytest.approx(1 / 12)
    assert pipeline.class_names[0] == 'background' and len(pipeline.joint_names) == 17


def test_threshold_and_refresh_change_the_active_fraction():
    frames = _frames()
    quiet = TinyPipeline(st.replace(SETTINGS, {'change.threshold': 255.0}))
    assert [quiet.process(f).stats.active_fraction for f in frames] == [1.0, 0.0, 0.0]
    refresh = TinyPipeline(st.replace(SETTINGS, {'change.refresh_period': 1}))
    assert [refresh.process(f).stats.dense for f in frames] == [True, False, True]


def test_unchanged_tiles_keep_the_cached_mask():
    frames = _frames()
    pipeline = TinyPipeline(st.replace(SETTINGS, {'change.threshold': 255.0}))
    first = pipeline.process(frames[0]).segmentation.mask
    np.testing.assert_array_equal(pipeline.process(frames[1]).segmentation.mask, first)
    dense = TinyPipeline(SETTINGS, incremental=False)
    assert all(dense.process(f).stats.dense for f in frames)


def test_size_change_and_reset_run_dense():
    pipeline = TinyPipeline(SETTINGS)
    pipeline.process(_frames(1)[0])
    assert pipeline.process(_frames(1, (32, 32))[0]).stats.dense
    pipeline.reset()
    assert pipeline.process(_frames(1, (32, 32))[0]).stats.dense
    assert pipeline.resets == 2


def test_models_load_and_fail_like_the_real_ones(tmp_path):
    with pytest.raises(ModelLoadError, match='model.pose'):
        TinyPipeline(replace_model(SETTINGS, pose='nope'))
    with pytest.raises(ModelLoadError, match='segmentation model'):
        TinyPipeline(replace_model(SETTINGS, pose='tiny-seg'))
    path = tmp_path / 'pose.json'
    path.write_text(json.dumps({'head': 'pose', 'seed': 5}))
    pipeline = TinyPipeline(SETTINGS, heads=('pose',))
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
    pipeline.close()
    with pytest.raises(RuntimeError, match='closed'):
        pipeline.process(_frames(1)[0])
