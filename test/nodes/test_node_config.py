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

"""What each node declares, config/perception.yaml, model checks and the pipeline factory."""

import sys
import types

import numpy as np
import pytest
from sparse_perception import settings as st
from sparse_perception.nodes import node_config as nc
from support import REPO
import yaml

CONFIG = REPO / 'config' / 'perception.yaml'


def _names(kind):
    return [s.name for s in nc.parameter_specs(kind)]


def test_each_node_declares_the_settings_of_its_heads():
    perception, segmentation, pose = (_names(k) for k in (nc.PERCEPTION, nc.SEGMENTATION,
                                                          nc.POSE))
    assert perception == [s.name for s in st.specs(st.NodeSettings)]
    assert 'node.heads' not in segmentation and 'node.heads' not in pose
    assert 'model.pose' not in segmentation and 'output.min_score' not in segmentation
    assert 'model.segmentation' not in pose and 'output.min_score' in pose
    common = {'change.threshold', 'input.transport', 'diagnostics.period', 'node.autostart'}
    assert common <= set(segmentation) and common <= set(pose)
    assert set(nc.NODE_KINDS) == {'perception_node', 'segmentation_node', 'pose_node'}


def test_node_settings_defaults_are_valid():
    for spec in st.specs(st.NodeSettings):
        assert spec.info.description, spec.name
        assert st.validate(spec, spec.default) == spec.default


def test_settings_from_parameters_validates():
    got = nc.settings_from_parameters(nc.POSE, {'change.threshold': 3, 'model.pose': 'p'})
    assert got.change.threshold == 3.0 and got.model.pose == 'p'
    with pytest.raises(st.SettingError, match='no parameters'):
        nc.settings_from_parameters(nc.POSE, {'model.segmentation': 'x'})
    with pytest.raises(st.SettingError, match='input.transport'):
        nc.settings_from_parameters(nc.POSE, {'input.transport': 'theora'})
    with pytest.raises(st.SettingError, match='depth'):
        nc.settings_from_parameters(nc.PERCEPTION, {'node.heads': ['segmentation', 'depth']})


def test_heads_and_pipeline_settings():
    narrowed = st.replace(st.NodeSettings(), {'node.heads': ['pose', 'segmentation', 'pose']})
    assert nc.heads_of(nc.PERCEPTION, narrowed) == ('segmentation', 'pose')
    only_pose = st.replace(st.NodeSettings(), {'node.heads': ['pose']})
    assert nc.heads_of(nc.PERCEPTION, only_pose) == ('pose',)
    assert nc.heads_of(nc.SEGMENTATION, only_pose) == ('segmentation',)
    node = st.replace(st.NodeSettings(), {'change.threshold': 7.0, 'input.depth': 3})
    pipeline = nc.pipeline_settings(node)
    assert type(pipeline) is st.PerceptionSettings and pipeline.change.threshold == 7.0
    assert nc.changed_models(pipeline, nc.pipeline_settings(
        st.replace(node, {'model.pose': 'b'})), nc.HEADS) == ('pose',)


def test_model_problems(tmp_path):
    model = tmp_path / 'net.tflite'
    model.write_bytes(b'x')
    assert 'model.pose is empty' in nc.model_problem('pose', '')
    assert nc.model_problem('pose', 'movenet_lightning') is None  # left to the registry
    assert nc.model_problem('pose', str(model)) is None
    missing = nc.model_problem('segmentation', str(tmp_path / 'gone.tflite'))
    assert 'gone.tflite' in missing and 'does not exist' in missing
    assert 'does not exist' in nc.model_problem('pose', 'deeplab.tflite')  # relative, absent
    assert 'does not exist' in nc.model_problem('pose', str(tmp_path))  # a folder


def test_startup_problems():
    settings = st.replace(st.NodeSettings(), {'model.segmentation': 'a', 'model.pose': ''})
    assert nc.startup_problems(nc.SEGMENTATION, settings) == []
    assert nc.startup_problems(nc.POSE, settings) == [nc.model_problem('pose', '')]
    assert len(nc.startup_problems(nc.PERCEPTION, settings)) == 1
    no_heads = st.replace(settings, {'node.heads': []})
    assert 'node.heads is empty' in nc.startup_problems(nc.PERCEPTION, no_heads)[0]


def test_config_file_is_generated_from_the_settings():
    assert CONFIG.read_text(encoding='utf-8') == nc.render_config(), (
        'config/perception.yaml is out of date: run tools/make_config.py')


def test_config_yaml_holds_every_parameter_with_its_default_and_type():
    document = yaml.safe_load(CONFIG.read_text(encoding='utf-8'))
    assert set(document) == {f'/**/{name}' for name in nc.NODE_KINDS}
    for name, kind in nc.NODE_KINDS.items():
        flat = st.unnest(document[f'/**/{name}']['ros__parameters'])
        specs = {s.name: s for s in nc.parameter_specs(kind)}
        written = {n for n, s in specs.items() if not (s.kind is tuple and not s.default)}
        assert set(flat) == written, name
        for key, value in flat.items():
            spec = specs[key]
            expected = list(spec.default) if spec.kind is tuple else spec.default
            assert value == expected and type(value) is type(expected), key
        # The settings read the same defaults back from the file.
        assert st.from_params_yaml(CONFIG, name, st.NodeSettings) == st.NodeSettings()


def test_empty_list_defaults_are_commented_out_not_left_out():
    text = CONFIG.read_text(encoding='utf-8')
    assert '      # layer_thresholds: []' in text


def test_yaml_scalars_read_back_as_written():
    for value in (0.002, 1e-06, 12.0, 1e6, 3, True, "it's", ('a', 'b')):
        text = nc._yaml_scalar(value)
        back = yaml.safe_load(f'v: {text}')['v']
        assert back == (list(value) if isinstance(value, tuple) else value), text


def test_params_yaml_matches_any_namespace_section(tmp_path):
    path = tmp_path / 'p.yaml'
    path.write_text('/**/pose_node:\n  ros__parameters:\n    change:\n      threshold: 4.0\n')
    assert st.from_params_yaml(path, 'pose_node').change.threshold == 4.0


def test_warmup_images_change_between_frames():
    frames = nc.warmup_images(3, 64, 48)
    assert [f.shape for f in frames] == [(48, 64, 3)] * 3 and frames[0].dtype == np.uint8
    assert (frames[0] != frames[1]).any() and (frames[1] != frames[2]).any()
    assert nc.warmup_images(0, 64, 48) == []
    assert nc.warmup_images(2, 1, 1)[1].shape == (1, 1, 3)


def test_make_pipeline_builds_the_real_class(monkeypatch):
    calls = []

    class Pipeline:
        def __init__(self, settings, heads, incremental):
            calls.append((settings, heads, incremental))

    module = types.ModuleType('sparse_perception.pipeline')
    module.Pipeline = Pipeline
    monkeypatch.setitem(sys.modules, 'sparse_perception.pipeline', module)
    settings = st.PerceptionSettings()
    assert isinstance(nc.make_pipeline(settings, ['pose']), Pipeline)
    assert calls == [(settings, ('pose',), True)]


def test_a_failed_model_load_reverts_only_the_settings_that_reload_it():
    old = st.PerceptionSettings()
    new = st.replace(old, {'model.pose': 'broken.tflite', 'sparsity.scale': 0.25,
                           'change.threshold': 7.0})
    assert nc.changed_reloads(old, new) == ('model.pose',)  # not the other two


def test_a_change_is_refused_for_an_unloadable_model_or_device():
    old = st.NodeSettings()
    never = nc.change_problem(old, st.replace(old, {'change.threshold': 9.0}), nc.HEADS,
                              lambda head, value, settings: 'never called')
    assert never is None  # no model changed: the check is not asked
    refused = nc.change_problem(old, st.replace(old, {'model.pose': 'nope'}), nc.HEADS,
                                lambda head, value, settings: f'{head} {value} is bad')
    assert refused == 'pose nope is bad'
    assert nc.device_problem('cpu') is None and nc.device_problem('auto') is None


def test_device_execution_under_a_reference_environment_is_refused(monkeypatch):
    monkeypatch.setenv(st.BACKEND_ENV, 'reference')
    old = st.NodeSettings()
    device = st.replace(old, {'model.execution': 'device'})
    problem = nc.change_problem(old, device, nc.HEADS, lambda *args: None)
    assert "model.execution 'device'" in problem and st.BACKEND_ENV in problem
    assert problem in nc.startup_problems(nc.PERCEPTION, device)
    monkeypatch.delenv(st.BACKEND_ENV)
    assert nc.change_problem(old, device, nc.HEADS, lambda *args: None) is None


def test_a_glance_gate_is_refused_for_a_fixed_size_segmentation_model():
    old = st.NodeSettings()  # the default segmentation model has a fixed input size
    glance = st.replace(old, {'sparsity.gate': 'glance'})
    problem = nc.change_problem(old, glance, nc.HEADS, lambda *args: None)
    assert "sparsity.gate 'glance'" in problem and 'selfie_segmentation_landscape' in problem
    assert 'deeplabv3_mnv2_pascal_fcn' in problem  # names what would work
    assert nc.change_problem(old, glance, ('pose',), lambda *args: None) is None
    fcn = st.replace(glance, {'model.segmentation': 'deeplabv3_mnv2_pascal_fcn'})
    assert nc.gate_problem(fcn, nc.HEADS) is None
    assert nc.gate_problem(st.replace(old, {'sparsity.gate': 'previous'}), nc.HEADS) is None
    assert any('glance' in p for p in nc.startup_problems(nc.PERCEPTION, glance))


def test_a_failed_load_also_takes_back_a_gate_change():
    old = st.PerceptionSettings()
    new = st.replace(old, {'sparsity.gate': 'glance', 'sparsity.scale': 0.25})
    assert nc.changed_reloads(old, new) == ('sparsity.gate',)


def test_a_gate_that_cannot_run_is_refused_when_set(tmp_path):
    from sparse_perception.gates.learned import CELLS, network, save, VERSION

    old = st.replace(st.NodeSettings(), {'model.segmentation': 'deeplabv3_mnv2_pascal_fcn'})
    gate = tmp_path / 'gate.pt'
    meta = {'version': VERSION, 'tile': 16, 'cells': CELLS}
    save(network().state_dict(), dict(meta, model='deeplabv3_mnv2_pascal_fcn'), gate)
    other = tmp_path / 'other.pt'
    save(network().state_dict(), dict(meta, model='selfie_segmentation_landscape'), other)

    def learned(path):
        return st.replace(old, {'sparsity.gate': 'learned', 'sparsity.gate_model': str(path)})

    def problem(new, heads=nc.HEADS):
        return nc.change_problem(old, new, heads, lambda *args: None)

    assert problem(learned(gate)) is None
    assert 'does not exist' in problem(learned(tmp_path / 'none.pt'))
    moved = st.replace(learned(tmp_path / 'none.pt'), {'model.device': 'cpu'})
    assert 'does not exist' in problem(moved)  # a device change in the same call checked it
    assert "trained for the segmentation model 'selfie" in problem(learned(other))
    assert problem(learned(other), ('pose',)) is None  # no segmentation head: no gate
    # A file gone bad since is named when a gate setting changes, not at every other change.
    running = learned(gate)
    gate.write_bytes(b'')
    assert nc.change_problem(running, st.replace(running, {'change.threshold': 9.0}),
                             nc.HEADS, lambda *args: None) is None
    assert 'is empty' in problem(running)  # setting the gate reads it
    track = st.replace(old, {'pose.gate': 'track'})
    assert "pose.gate 'track' follows" in problem(track)  # BlazePose, the default
    assert 'movenet_lightning' in problem(track)
    assert problem(st.replace(track, {'model.pose': 'movenet_lightning'})) is None
    assert problem(track, ('segmentation',)) is None


def test_a_failed_change_takes_back_the_gate_file_and_the_pose_gate_with_the_model():
    old = st.PerceptionSettings()
    new = st.replace(old, {'sparsity.gate': 'learned', 'sparsity.gate_model': 'g.pt',
                           'pose.gate': 'track', 'change.threshold': 7.0})
    assert set(nc.changed_reloads(old, new)) == {'sparsity.gate', 'sparsity.gate_model',
                                                 'pose.gate'}


def test_a_value_of_the_wrong_type_is_refused_naming_the_parameter_and_its_type():
    def problem(name, value):
        return nc.wrong_type_problem(st.spec(name, st.NodeSettings), value)

    assert problem('sparsity.scale', 'hello') == (
        "sparsity.scale must be a number, got 'hello': the parameter takes a double")
    assert problem('change.min_pixels', 3.0) == (
        'change.min_pixels must be an integer, got 3.0: the parameter takes an integer')
    assert 'node.heads' in problem('node.heads', 'pose')
    assert problem('node.heads', 'pose').endswith('takes a string array')
    assert problem('model.device', True).endswith('takes a string')
    # An empty array of another element type passes the settings' check, not the parameter's.
    assert problem('node.heads', []) == (
        'node.heads cannot take []: the parameter takes a string array')
