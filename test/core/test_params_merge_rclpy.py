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

"""The replay's ``--params`` reading against real rclpy's reading of the same files."""

import gc

import pytest
from sparse_perception import settings as st

pytestmark = pytest.mark.ros

FILES = {
    'wildcard then node': {'/**': (2.0, 3), 'perception_node': (5.0, None)},
    'node then wildcard': {'perception_node': (5.0, None), '/**': (2.0, 3)},
    'any namespace then wildcard': {'/**/perception_node': (5.0, None), '/**': (2.0, None)},
    'absolute then any namespace': {'/perception_node': (7.0, None),
                                    '/**/perception_node': (5.0, 1)},
    'other nodes too': {'/**': (3.0, None), '/**/pose_node': (6.0, 2),
                        'perception_node': (4.0, None)},
}


def _text(sections):
    text = ''
    for key, (threshold, dilation) in sections.items():
        text += f'{key}:\n  ros__parameters:\n    change:\n      threshold: {threshold}\n'
        if dilation is not None:
            text += f'      dilation: {dilation}\n'
    return text


def _rclpy_values(path):
    import rclpy
    from rclpy.context import Context
    from rclpy.node import Node

    context = Context()
    rclpy.init(context=context, args=['--ros-args', '--params-file', str(path)])
    try:
        node = Node('perception_node', context=context,
                    automatically_declare_parameters_from_overrides=True)
        values = {name: p.value for name, p in node.get_parameters_by_prefix('change').items()}
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
        context.destroy()
        gc.collect()
    return values.get('threshold', 2.0), values.get('dilation', 0)


@pytest.mark.parametrize('name', sorted(FILES))
def test_params_files_merge_as_rclpy_merges_them(tmp_path, name):
    path = tmp_path / 'params.yaml'
    path.write_text(_text(FILES[name]))
    ours = st.from_params_yaml(path, 'perception_node')
    assert (ours.change.threshold, ours.change.dilation) == _rclpy_values(path)


def test_aliases_are_refused_like_rclpy(tmp_path):
    import rclpy
    from rclpy.context import Context

    path = tmp_path / 'params.yaml'
    path.write_text('base: &b\n  ros__parameters:\n    change:\n      threshold: 5.0\n'
                    '/**: *b\n')
    context = Context()
    with pytest.raises(Exception, match='Will not support aliasing'):
        rclpy.init(context=context, args=['--ros-args', '--params-file', str(path)])
    with pytest.raises(st.SettingError, match='aliases'):
        st.from_params_yaml(path, 'perception_node')


VALUES = ['1e1', 'y', 'n', 'Off', '1_000', '010', '08', '0x1F', '-12', '1.', '.5', '-.inf',
          '.nan', 'inf', '1e999', '1e-400', '0x1p3', '99999999999999999999', 'null', '~',
          '1:20', '2001-12-14', 'tRue', "'7'", '"yes"', 'abc', '0x8000000000000000',
          '-9223372036854775808', '0' * 30 + '17', '0x1.8p1', 'nan(1)']


def test_values_are_typed_as_rclpy_types_them(tmp_path):
    import math

    import rclpy
    from rclpy.context import Context
    from rclpy.node import Node

    path = tmp_path / 'params.yaml'
    path.write_text('perception_node:\n  ros__parameters:\n' + ''.join(
        f'    v{i}: {text}\n' for i, text in enumerate(VALUES)))
    context = Context()
    rclpy.init(context=context, args=['--ros-args', '--params-file', str(path)])
    try:
        node = Node('perception_node', context=context,
                    automatically_declare_parameters_from_overrides=True)
        theirs = [node.get_parameter(f'v{i}').value for i in range(len(VALUES))]
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
        context.destroy()
        gc.collect()
    with open(path, encoding='utf-8') as stream:
        import yaml
        document = yaml.load(stream, Loader=st._parameters_loader())
    ours = [document['perception_node']['ros__parameters'][f'v{i}'] for i in range(len(VALUES))]
    for text, mine, rcl in zip(VALUES, ours, theirs):
        same = (isinstance(rcl, float) and math.isnan(rcl) and math.isnan(mine)) or (
            mine == rcl and type(mine) is type(rcl))
        assert same, f'{text}: {mine!r} here, {rcl!r} for rclpy'
