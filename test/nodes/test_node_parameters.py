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
config/perception.yaml against the parameters the real nodes declare (rclpy reads the file).

Every parameter in the file is declared by its node with the same type, range and read-only
flag as the settings give, and the node takes the file's value; every setting the node
declares is in the file.
"""

import pytest
from rcl_interfaces.msg import ParameterType
from rclpy.parameter import Parameter
from sparse_perception import settings as st
from sparse_perception.nodes import node_config
from sparse_perception.nodes.perception_node import PerceptionNode
from support import REPO
import yaml

pytestmark = pytest.mark.ros

CONFIG = REPO / 'config' / 'perception.yaml'
YAML_TYPES = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
              float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING,
              list: ParameterType.PARAMETER_STRING_ARRAY}


@pytest.mark.parametrize('kind', node_config.NODE_KINDS.values(), ids=lambda k: k.name)
def test_yaml_parameters_are_declared_with_matching_type_and_range(ros_context, kind):
    section = yaml.safe_load(CONFIG.read_text())[f'/**/{kind.name}']['ros__parameters']
    in_file = st.unnest(section)
    node = PerceptionNode(kind, context=ros_context,
                          cli_args=['--ros-args', '--params-file', str(CONFIG)],
                          parameter_overrides=[Parameter('node.autostart', value=False)])
    try:
        specs = {s.name: s for s in node_config.parameter_specs(kind)}
        for name, value in in_file.items():
            assert node.has_parameter(name), f'{kind.name} does not declare {name}'
            descriptor = node.describe_parameter(name)
            assert descriptor.type == YAML_TYPES[type(value)], name
            spec = specs[name]
            assert descriptor.read_only == spec.info.read_only, name
            assert descriptor.description == spec.info.description, name
            # `ros2 param describe` tells which settings load the models again.
            reloads = 'a change reloads the model' in descriptor.additional_constraints
            assert reloads == (spec.info.reload and not spec.info.read_only), name
            if spec.kind is float and spec.info.low is not None:
                bounds, = descriptor.floating_point_range
                assert (bounds.from_value, bounds.to_value) == (spec.info.low, spec.info.high)
            elif spec.kind is int and spec.info.low is not None:
                bounds, = descriptor.integer_range
                assert (bounds.from_value, bounds.to_value) == (spec.info.low, spec.info.high)
            else:
                assert not descriptor.floating_point_range and not descriptor.integer_range
            if name != 'node.autostart':
                assert node.get_parameter(name).value == value, name
        declared = {n for n in node.get_parameters_by_prefix('')
                    if n in specs or '.' in n and n.split('.')[0] in
                    {'change', 'sparsity', 'model', 'input', 'output', 'node', 'diagnostics'}}
        empty_lists = {n for n, s in specs.items() if s.kind is tuple and not s.default}
        assert declared == set(in_file) | empty_lists
        for head in node_config.heads_of(kind, st.NodeSettings()):
            for info_name, _ in node_config.MODEL_INFO_PARAMETERS[head]:
                assert node.describe_parameter(info_name).read_only
                # Empty until a model loads, not unset: rclpy's get_parameters service (and
                # so `ros2 param dump`) answers nothing for a request naming an unset one.
                assert node.get_parameter(info_name).value == [], info_name
    finally:
        node.destroy_node()


def _other_value(spec):
    """Return a valid value other than a number or flag setting's default (None: none)."""
    info, default = spec.info, spec.default
    if spec.kind is bool:
        return not default
    if spec.kind is int and info.low is not None:
        return default + 1 if info.high is None or default + 1 <= info.high else default - 1
    if spec.kind is float and info.low is not None:
        high = info.high if info.high is not None else default + 2.0
        return (default + high) / 2 if high > default else (default + info.low) / 2
    return None


@pytest.mark.parametrize('kind', node_config.NODE_KINDS.values(), ids=lambda k: k.name)
def test_the_node_takes_the_values_of_a_parameters_file(ros_context, kind, tmp_path):
    # config/perception.yaml holds the defaults, which a node would have without the file
    # too: a copy with every number and flag changed shows that the file's values are taken.
    document = yaml.safe_load(CONFIG.read_text())
    section = document[f'/**/{kind.name}']['ros__parameters']
    specs = {s.name: s for s in node_config.parameter_specs(kind)}
    changed = {name: _other_value(specs[name]) for name in st.unnest(section)
               if name != 'node.autostart' and _other_value(specs[name]) is not None}
    assert len(changed) > len(specs) // 2, sorted(changed)  # most are numbers or flags
    for name, value in changed.items():
        place = section
        *parents, leaf = name.split('.')
        for parent in parents:
            place = place[parent]
        place[leaf] = value
    other = tmp_path / 'other.yaml'
    other.write_text(yaml.safe_dump(document))
    node = PerceptionNode(kind, context=ros_context,
                          cli_args=['--ros-args', '--params-file', str(other)],
                          parameter_overrides=[Parameter('node.autostart', value=False)])
    try:
        for name, value in changed.items():
            assert node.get_parameter(name).value == pytest.approx(value), name
    finally:
        node.destroy_node()


def test_a_bad_value_in_a_parameters_file_is_named(ros_context, tmp_path):
    bad = tmp_path / 'bad.yaml'
    bad.write_text('/**/pose_node:\n  ros__parameters:\n    change:\n      threshold: lots\n')
    with pytest.raises(st.SettingError, match='parameter change.threshold must be double'):
        PerceptionNode(node_config.POSE, context=ros_context,
                       cli_args=['--ros-args', '--params-file', str(bad)])
    bad.write_text("/**/pose_node:\n  ros__parameters:\n    model:\n      device: 'tpu'\n")
    with pytest.raises(st.SettingError, match="model.device = 'tpu'"):
        PerceptionNode(node_config.POSE, context=ros_context,
                       cli_args=['--ros-args', '--params-file', str(bad)])
    # Out of range is not a wrong type: the words of the settings, as the replay's --params.
    for text, said in (('change:\n      threshold: 300.0',
                        'parameter change.threshold = 300.0 is out of range; expected 0.0 to '
                        '255.0; fix'),
                       ('model:\n      threads: 999',
                        'parameter model.threads = 999 is out of range; expected 0 to 256; fix')):
        bad.write_text(f'/**/pose_node:\n  ros__parameters:\n    {text}\n')
        with pytest.raises(st.SettingError) as refused:
            PerceptionNode(node_config.POSE, context=ros_context,
                           cli_args=['--ros-args', '--params-file', str(bad)])
        assert str(refused.value).startswith(said), refused.value
