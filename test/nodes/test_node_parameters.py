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
