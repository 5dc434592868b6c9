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

"""The engine's configuration takes its defaults and ranges from the settings."""

import dataclasses

import pytest

from sparse_perception import settings as st
from sparse_perception.engine.config import EngineConfig, parse_layer_thresholds, \
    SETTING_OF_FIELD
from sparse_perception.engine.errors import EngineError


def test_every_mapped_setting_exists_and_every_field_is_a_field():
    fields = {f.name for f in dataclasses.fields(EngineConfig)}
    assert set(SETTING_OF_FIELD) <= fields
    for name in SETTING_OF_FIELD.values():
        st.spec(name)  # raises for a setting that is not there


def test_defaults_are_the_settings_defaults():
    config = EngineConfig()
    for name, setting_name in SETTING_OF_FIELD.items():
        default = st.spec(setting_name).default
        if name == 'layer_thresholds':
            default = parse_layer_thresholds(default)
        assert getattr(config, name) == default, name
    assert EngineConfig.from_settings(st.PerceptionSettings()) == config


def test_from_settings_reads_every_mapped_setting():
    changed = st.replace(st.PerceptionSettings(), {
        'sparsity.scale': 0.5, 'sparsity.global_scale': 0.25,
        'sparsity.layer_thresholds': ['conv1=0.2'], 'sparsity.layer_dense_fallback': 0.5,
        'sparsity.window_dense_fallback': 0.2, 'sparsity.dense_fallback': 0.9,
        'sparsity.compute_tile': 8, 'model.backend': 'reference'})
    config = EngineConfig.from_settings(changed)
    assert (config.threshold_scale, config.global_scale, config.layer_thresholds,
            config.layer_dense_fallback, config.window_dense_fallback,
            config.frame_dense_fallback, config.tile, config.backend) == (
        0.5, 0.25, {'conv1': 0.2}, 0.5, 0.2, 0.9, 8, 'reference')
    # The sparsity section alone: the backend stays at its default; overrides win.
    alone = EngineConfig.from_settings(changed.sparsity, tile=2)
    assert alone.backend == st.spec('model.backend').default and alone.tile == 2


@pytest.mark.parametrize('name', ['threshold_scale', 'tile', 'frame_dense_fallback'])
def test_ranges_are_the_settings_ranges(name):
    info = st.spec(SETTING_OF_FIELD[name]).info
    EngineConfig(**{name: info.high})
    with pytest.raises(EngineError, match=f'EngineConfig.{name}=.* is out of range; expected '
                       f'{info.low} to {info.high}'):
        EngineConfig(**{name: info.high * 2})
