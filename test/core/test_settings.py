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

"""Typed settings: validation, YAML and command-line round trips."""

import argparse

import pytest

from sparse_perception import settings as st


def test_every_setting_is_described_and_its_default_valid():
    names = []
    for s in st.specs():
        names.append(s.name)
        assert s.info.description, f'{s.name} has no description'
        assert st.validate(s, s.default) == s.default
    assert len(names) == len(set(names))
    assert 'change.threshold' in names and 'sparsity.scale' in names


@pytest.mark.parametrize('name, value, message', [
    ('change.threshold', -1.0, 'out of range'),
    ('change.threshold', float('nan'), 'NaN'),
    ('change.tile_size', 2.5, 'integer'),
    ('change.tile_size', True, 'integer'),
    ('model.device', 'tpu', 'not one of'),
    ('sparsity.layer_thresholds', 'conv1=0.1', 'list of strings'),
    ('pose.gate', 'glance', 'not one of'),
    ('pose.gate_score', 1.5, 'out of range'),
    ('no.such', 1, 'unknown setting'),
])
def test_bad_values_are_named(name, value, message):
    with pytest.raises(st.SettingError, match=message) as info:
        st.replace(st.PerceptionSettings(), {name: value})
    assert name in str(info.value)


@pytest.mark.parametrize('section, values, message', [
    (st.PoseSettings, {'detect_period': 0}, 'pose.detect_period = 0 is out of range'),
    (st.PoseSettings, {'max_people': 2.0}, 'pose.max_people must be an integer'),
    (st.SparsitySettings, {'gate': 'glanse'}, "sparsity.gate = 'glanse' is not one of"),
    (st.ChangeSettings, {'threshold': float('nan')}, 'change.threshold must be a number'),
    (st.ModelSettings, {'threads': -1}, 'model.threads = -1 is out of range'),
    (st.InputSettings, {'depth': 0}, 'input.depth = 0 is out of range'),
    (st.LifecycleSettings, {'heads': ('pose', 'face')}, 'node.heads'),
    (st.DiagnosticsSettings, {'period': True}, 'diagnostics.period must be a number'),
    (st.DiagnosticsSettings, {'latency_warn_ms': 5000.0},
     'diagnostics.latency_warn_ms = 5000.0 is above diagnostics.latency_error_ms = 1000.0')])
def test_a_section_built_directly_is_held_to_the_same_rules(section, values, message):
    # From Python a section may be built without replace(): a bad value must not wait for
    # the first frame (detect_period 0 failed there with a bare ZeroDivisionError).
    with pytest.raises(st.SettingError, match=message):
        section(**values)
    pose = st.PoseSettings(focus_score=1, max_people=2)
    assert pose.focus_score == 1.0 and isinstance(pose.focus_score, float)
    assert st.SparsitySettings(layer_thresholds=['a=1']).layer_thresholds == ('a=1',)


@pytest.mark.parametrize('changes, name', [
    ({'change.min_pixels': 257}, 'change.min_pixels = 257 is more than the 256 pixels'),
    ({'pose.change_min_pixels': 257}, 'pose.change_min_pixels = 257 is more than the 256'),
    ({'change.tile_size': 3}, 'change.min_pixels = 16 is more than the 9 pixels of a '
                              'change.tile_size 3 tile: no tile could ever count as changed')])
def test_min_pixels_a_tile_cannot_hold_are_refused(changes, name):
    with pytest.raises(st.SettingError, match=name):
        st.replace(st.PerceptionSettings(), changes)
    st.replace(st.PerceptionSettings(), {'change.min_pixels': 256, 'change.tile_size': 16})


def test_replace_validates_all_before_applying():
    base = st.PerceptionSettings()
    original = base.change.threshold
    with pytest.raises(st.SettingError):
        st.replace(base, {'change.threshold': 3.0, 'model.device': 'tpu'})
    changed = st.replace(base, {'change.threshold': 3, 'sparsity.layer_thresholds': ['a=1']})
    assert changed.change.threshold == 3.0 and isinstance(changed.change.threshold, float)
    assert changed.sparsity.layer_thresholds == ('a=1',)
    assert base.change.threshold == original  # frozen original untouched


def test_nest_unnest_round_trip():
    flat = st.flatten(st.PerceptionSettings())
    assert st.unnest(st.nest(flat)) == {k: list(v) if isinstance(v, tuple) else v
                                        for k, v in flat.items()}


def test_params_yaml(tmp_path):
    path = tmp_path / 'p.yaml'
    path.write_text('perception_node:\n  ros__parameters:\n    change:\n      threshold: 4.0\n'
                    '    input:\n      topic: /cam\n    use_sim_time: true\n')
    loaded = st.from_params_yaml(path)
    assert loaded.change.threshold == 4.0
    with pytest.raises(st.SettingError, match='no parameters for node'):
        st.from_params_yaml(path, 'pose_node')
    path.write_text('perception_node:\n  ros__parameters:\n    change:\n      threshold: -4\n')
    with pytest.raises(st.SettingError, match='out of range'):
        st.from_params_yaml(path)
    path.write_text('a: [1, 2\n')
    with pytest.raises(st.SettingError, match='not valid YAML'):
        st.from_params_yaml(path)


def test_a_parameters_file_may_leave_what_goes_with_it_to_the_command_line(tmp_path):
    import argparse

    path = tmp_path / 'p.yaml'
    path.write_text('perception_node:\n  ros__parameters:\n    sparsity:\n'
                    '      gate: learned\n')
    with pytest.raises(st.SettingError, match=f"{path}: sparsity.gate 'learned' needs"):
        st.from_params_yaml(path)  # on its own the file is incomplete
    assert st.params_yaml_changes(path) == {'sparsity.gate': 'learned'}
    parser = argparse.ArgumentParser()
    st.add_cli_flags(parser)
    args = parser.parse_args(['--sparsity.gate_model', 'gate.pt'])
    got = st.from_cli(args, changes=st.params_yaml_changes(path))
    assert (got.sparsity.gate, got.sparsity.gate_model) == ('learned', 'gate.pt')
    with pytest.raises(st.SettingError, match="'learned' needs"):  # nor do flags alone
        st.from_cli(parser.parse_args(['--sparsity.gate', 'learned']))
    args = parser.parse_args(['--sparsity.gate', 'none'])  # a flag overrides the file
    assert st.from_cli(args, changes=st.params_yaml_changes(path)).sparsity.gate == 'none'


def _sections(*pairs):
    """Render ``(key, threshold, dilation or None)`` sections of a parameters file."""
    text = ''
    for key, threshold, dilation in pairs:
        text += f'{key}:\n  ros__parameters:\n    change:\n      threshold: {threshold}\n'
        if dilation is not None:
            text += f'      dilation: {dilation}\n'
    return text


# What real rclpy (kilted 9.1.2, `--params-file`) gives a node named perception_node for the
# same files: every matching section applies in file order, parameter by parameter.
@pytest.mark.parametrize('sections, threshold, dilation', [
    ((('/**', 2.0, 3), ('perception_node', 5.0, None)), 5.0, 3),
    ((('perception_node', 5.0, None), ('/**', 2.0, 3)), 2.0, 3),
    ((('/**/perception_node', 5.0, None), ('/**', 2.0, None)), 2.0, 0),
    ((('/perception_node', 7.0, None), ('/**/perception_node', 5.0, None)), 5.0, 0),
    ((('/**/perception_node', 5.0, None), ('/perception_node', 7.0, None)), 7.0, 0),
    ((('/**', 2.0, None), ('/*/perception_node', 9.0, None), ('/**/pose_node', 6.0, 1)),
     2.0, 0),
])
def test_params_yaml_merges_sections_as_rclpy_does(tmp_path, sections, threshold, dilation):
    path = tmp_path / 'p.yaml'
    path.write_text(_sections(*sections))
    loaded = st.from_params_yaml(path, 'perception_node')
    assert (loaded.change.threshold, loaded.change.dilation) == (threshold, dilation)


@pytest.mark.parametrize('text, pattern', [
    ('perception_node: fast\n', r"section 'perception_node' must be a mapping with a "
     'ros__parameters mapping'),
    ('perception_node:\n  ros__parameters: 3\n', r'ros__parameters mapping, got'),
    # Keys are names, as to rcl: never numbers.
    ('perception_node:\n  ros__parameters:\n    change:\n      1: 2.0\n',
     r"unknown parameter 'change.1'"),
    ('perception_node:\n  ros__parameters:\n    5: 2.0\n', r"unknown parameter '5'"),
    ('perception_node:\n  ros__parameters:\n    change:\n      threshhold: 5.0\n',
     r"unknown parameter 'change.threshhold'; did you mean 'change.threshold'\?"),
    ('1: {}\n', r"no parameters for node 'perception_node'; found \['1'\]"),
    ('- a\n- b\n', r'expected a mapping of node names'),
    # Bad values name the file; none escapes as another exception.
    ('perception_node:\n  ros__parameters:\n    change:\n      threshold: ' + '9' * 400 + '\n',
     r"p.yaml: change.threshold must be a number, got '9{79}\.\.\. \(402 characters\)"),
    ('perception_node:\n  ros__parameters:\n    change:\n      threshold: 300.0\n',
     r'p.yaml: change.threshold = 300.0 is out of range'),
    ('perception_node:\n  ros__parameters:\n    sparsity:\n      layer_thresholds: 5\n',
     r'sparsity.layer_thresholds must be a list of strings, got 5'),
    # Past a double's range, or no number to rcl either: strings, which a number refuses.
    ('perception_node:\n  ros__parameters:\n    change:\n      threshold: 2001-13-01\n',
     r"change.threshold must be a number, got '2001-13-01'"),
    ('perception_node:\n  ros__parameters:\n    change:\n      threshold: ' + '1' * 5000
     + '\n', r"change.threshold must be a number, got '1{79}\.\.\. \(5002 characters\)"),
    # rcl refuses aliases ('Will not support aliasing'); they also make exponential expansions.
    ('base: &b\n  ros__parameters:\n    change:\n      threshold: 5.0\nperception_node: *b\n',
     r'not valid YAML: aliases \(\*name\) are not supported in ROS 2 parameter files'),
])
def test_bad_params_files_are_one_clear_error(tmp_path, text, pattern):
    path = tmp_path / 'p.yaml'
    path.write_text(text)
    with pytest.raises(st.SettingError, match=pattern) as caught:
        st.from_params_yaml(path, 'perception_node')
    assert '\n' not in str(caught.value) and str(path) in str(caught.value)


def test_an_alias_bomb_is_refused_at_once(tmp_path):
    # Ten levels of ten aliases: 10**10 parameters if expanded.
    lines = ['l0: &l0 {a: 1.0}']
    for level in range(1, 11):
        refs = ', '.join(f'k{i}: *l{level - 1}' for i in range(10))
        lines.append(f'l{level}: &l{level} {{{refs}}}')
    lines.append('perception_node:\n  ros__parameters:\n    change: *l10')
    path = tmp_path / 'p.yaml'
    path.write_text('\n'.join(lines) + '\n')
    with pytest.raises(st.SettingError, match='aliases'):
        st.from_params_yaml(path, 'perception_node')


def test_params_file_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / 'p.yaml'
    path.write_bytes(b'perception_node:\n  ros__parameters: {a: "\xff\xfe"}\n')
    with pytest.raises(st.SettingError, match='not UTF-8 text'):
        st.from_params_yaml(path, 'perception_node')


def test_cli_flags():
    parser = argparse.ArgumentParser()
    st.add_cli_flags(parser)
    args = parser.parse_args(['--change.threshold', '5', '--model.device', 'cpu'])
    got = st.from_cli(args)
    assert got.change.threshold == 5.0 and got.model.device == 'cpu'
    assert got.sparsity == st.SparsitySettings()
    with pytest.raises(SystemExit):
        parser.parse_args(['--model.device', 'tpu'])
    gated = st.from_cli(parser.parse_args(['--pose.gate', 'track']))
    assert gated.pose.gate == 'track' and st.PerceptionSettings().pose.gate == 'none'


def test_a_bad_boolean_flag_says_what_it_takes(capsys):
    parser = argparse.ArgumentParser()
    st.add_cli_flags(parser)
    assert st.from_cli(parser.parse_args(['--sparsity.adaptive', 'off'])).sparsity.adaptive \
        is False
    with pytest.raises(SystemExit):
        parser.parse_args(['--sparsity.adaptive', 'maybe'])
    assert ('argument --sparsity.adaptive: expected true or false (or yes/no, on/off, 1/0), '
            "got 'maybe'") in capsys.readouterr().err


def test_backend_switch(monkeypatch):
    monkeypatch.delenv(st.BACKEND_ENV, raising=False)
    assert st.resolve_backend('auto') == 'auto'
    assert st.resolve_backend('reference') == 'reference'
    monkeypatch.setenv(st.BACKEND_ENV, 'reference')
    assert st.resolve_backend('auto') == 'reference'
    assert st.resolve_backend('kernels') == 'kernels'  # an explicit choice wins
    monkeypatch.setenv(st.BACKEND_ENV, 'fast')
    with pytest.raises(st.SettingError, match=st.BACKEND_ENV):
        st.resolve_backend('auto')


def test_device_execution_with_the_reference_backend_is_refused(monkeypatch):
    monkeypatch.delenv(st.BACKEND_ENV, raising=False)
    with pytest.raises(st.SettingError, match="execution 'device'.*model.backend 'reference'"):
        st.replace(st.PerceptionSettings(), {'model.backend': 'reference',
                                             'model.execution': 'device'})
    # Under 'auto' the environment decides, read when asked (not when settings are made).
    device = st.replace(st.PerceptionSettings(), {'model.execution': 'device'})
    assert st.execution_problem(device.model.backend, device.model.execution) is None
    monkeypatch.setenv(st.BACKEND_ENV, 'reference')
    assert st.BACKEND_ENV in st.execution_problem('auto', 'device')
    assert st.execution_problem('kernels', 'device') is None  # an explicit choice wins
    assert st.execution_problem('auto', 'auto') is None
    assert st.execution_problem('reference', 'eager') is None


@pytest.mark.parametrize('text, heads', [
    ('segmentation', ('segmentation',)), ('pose', ('pose',)),
    ('pose,segmentation', ('segmentation', 'pose')), ('segmentation, pose', st.HEADS),
    ('seg', ('segmentation',)), ('both', st.HEADS), ('seg,both', st.HEADS),
])
def test_parse_heads_takes_the_parameter_names_and_the_short_forms(text, heads):
    assert st.parse_heads(text) == heads


@pytest.mark.parametrize('text', ['', 'face', 'segmentation,', 'segmentation;pose'])
def test_parse_heads_names_a_bad_head(text):
    with pytest.raises(st.SettingError, match='is not a head; expected a comma-separated list'):
        st.parse_heads(text)


def test_one_vocabulary_of_heads():
    from sparse_perception.nodes import node_config
    from sparse_perception.models import registry

    assert st.spec('node.heads', st.NodeSettings).default == st.HEADS
    assert st.spec('node.heads', st.NodeSettings).info.choices == st.HEADS
    assert registry.KINDS == node_config.PERCEPTION.heads == st.HEADS
    # Every head has its model setting (model.<head>).
    assert all(st.spec(f'model.{head}') for head in st.HEADS)


@pytest.mark.parametrize('argv, heads', [
    ([], None),  # (the --params file's node.heads, else both: see test_replay_cli)
    (['--heads', 'seg'], ('segmentation',)),
    (['--heads', 'both'], ('segmentation', 'pose')), (['--heads', 'pose'], ('pose',)),
    (['--heads', 'segmentation,pose'], ('segmentation', 'pose')),
])
def test_replay_heads_flag_speaks_the_parameter_names(argv, heads):
    from sparse_perception.cli import build_parser

    args = build_parser().parse_args(['replay', '--out', 'unused'] + argv)
    assert args.heads == heads


def test_replay_heads_flag_refuses_an_unknown_head(capsys):
    from sparse_perception.cli import build_parser

    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(['replay', '--out', 'unused', '--heads', 'face'])
    assert exited.value.code == 2
    assert "'face' is not a head" in capsys.readouterr().err
