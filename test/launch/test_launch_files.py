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
The launch files, read as Python syntax trees (launch and launch_ros are not installable here).

They must stay declarative: imports and one generate_launch_description that returns a
LaunchDescription of arguments and nodes, with no branches or loops. Every node they can start
is a console script of this package, every parameter they set is one the node declares (the
heads only perception_node), every launch argument used is declared with a description, and the
default params_file is the package's config/perception.yaml with a section for each node.
"""

import ast
from pathlib import Path

import pytest
from sparse_perception import settings as st
from sparse_perception.nodes import node_config
from support import REPO
import yaml

LAUNCH_FILES = sorted((REPO / 'launch').glob('*.launch.py'))
# Each launch file and the nodes its `node` argument chooses among.
EXPECTED = {'perception.launch.py': set(node_config.NODE_KINDS)}
COMMON_ARGUMENTS = {'node', 'camera_topic', 'transport', 'namespace', 'params_file',
                    'use_sim_time', 'log_level'}
ROS_PARAMETERS = {'use_sim_time'}  # declared by every rclpy node


def _console_scripts():
    tree = ast.parse((REPO / 'setup.py').read_text(encoding='utf-8'))
    for node in tree.body:
        if isinstance(node, ast.Assign) and [t.id for t in node.targets] == ['NODES']:
            return set(ast.literal_eval(node.value))
    raise AssertionError('setup.py has no NODES list')


def _calls(tree, name):
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, 'id', getattr(n.func, 'attr', None)) == name]


def _keyword(call, name):
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value
    return None


def _constant(node):
    assert isinstance(node, ast.Constant), ast.dump(node)
    return node.value


def test_every_expected_launch_file_exists():
    assert [p.name for p in LAUNCH_FILES] == sorted(EXPECTED)


@pytest.fixture(params=LAUNCH_FILES, ids=lambda p: p.name)
def launch_file(request):
    path = request.param
    return path, ast.parse(path.read_text(encoding='utf-8'), filename=str(path))


def test_launch_file_is_declarative(launch_file):
    path, tree = launch_file
    body = [n for n in tree.body if not (isinstance(n, ast.Expr)
                                         and isinstance(n.value, ast.Constant))]
    functions = [n for n in body if isinstance(n, ast.FunctionDef)]
    others = [n for n in body if not isinstance(n, (ast.Import, ast.ImportFrom,
                                                    ast.FunctionDef))]
    assert [f.name for f in functions] == ['generate_launch_description'] and not others
    statements = [n for n in functions[0].body if not (isinstance(n, ast.Expr)
                                                       and isinstance(n.value, ast.Constant))]
    assert len(statements) == 1 and isinstance(statements[0], ast.Return)
    logic = (ast.If, ast.IfExp, ast.For, ast.While, ast.ListComp, ast.DictComp, ast.Lambda,
             ast.BoolOp, ast.Compare)
    found = [type(n).__name__ for n in ast.walk(tree) if isinstance(n, logic)]
    assert not found, f'{path.name} holds logic: {found}'
    imported = {n.module.split('.')[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported <= {'launch', 'launch_ros'}


def test_arguments_are_declared_described_and_used(launch_file):
    path, tree = launch_file
    declared = {}
    for call in _calls(tree, 'DeclareLaunchArgument'):
        description = _keyword(call, 'description')
        assert description is not None, f'{path.name}: an argument has no description'
        declared[_constant(call.args[0])] = call
        assert _keyword(call, 'default_value') is not None
    used = {_constant(c.args[0]) for c in _calls(tree, 'LaunchConfiguration')}
    assert used == set(declared), f'{path.name}: used {used}, declared {set(declared)}'
    expected = COMMON_ARGUMENTS | ({'heads'} if path.name == 'perception.launch.py' else set())
    assert set(declared) == expected


def _overrides(tree):
    """Return {parameter: (launch argument, SetParameter call)} of the settings arguments set."""
    result = {}
    for call in _calls(tree, 'SetParameter'):
        value = call.args[1]
        if getattr(value.func, 'id', '') == 'ParameterValue':  # of the type given
            assert _keyword(value, 'value_type').id in ('str', 'bool')
            value = value.args[0]
        assert value.func.id == 'LaunchConfiguration'
        result[_constant(call.args[0])] = (_constant(value.args[0]), call)
    return result


def test_arguments_that_set_settings_set_them_only_when_given(launch_file):
    # Empty by default and set only when not empty: an argument left out must not override
    # what the parameters file says (nor the settings' default where it says nothing).
    path, tree = launch_file
    arguments = {_constant(c.args[0]): c for c in _calls(tree, 'DeclareLaunchArgument')}
    overrides = _overrides(tree)
    assert set(overrides) == {'input.topic', 'input.transport', 'node.heads',
                              'use_sim_time'}, path.name
    for parameter, (name, call) in overrides.items():
        assert _constant(_keyword(arguments[name], 'default_value')) == '', (path.name, name)
        condition = _keyword(call, 'condition')
        assert condition.func.id == 'IfCondition', (path.name, name)
        (test,) = condition.args
        assert test.func.id == 'NotEqualsSubstitution', (path.name, name)
        assert _constant(test.args[0].args[0]) == name and _constant(test.args[1]) == ''
        if parameter in ROS_PARAMETERS:
            continue
        spec = st.spec(parameter, st.NodeSettings)  # a setting
        choices = _keyword(arguments[name], 'choices')
        if spec.info.choices is not None and spec.kind is not tuple:
            assert choices is not None, f'{path.name}: {name} offers no choices'
            assert {_constant(e) for e in choices.elts} == set(spec.info.choices) | {''}


def test_the_parameters_file_comes_before_the_arguments_in_a_scope_of_their_own(launch_file):
    # Launch hands the node its parameters in this order, and the node takes the last. They
    # are launch-wide parameters: unscoped, they would reach every node that a launch file
    # including this one starts after it.
    path, tree = launch_file
    (group,) = _calls(tree, 'GroupAction')
    assert _constant(_keyword(group, 'scoped')) is True
    actions = [getattr(a.func, 'id', None) for a in _keyword(group, 'actions').elts]
    first = actions.index('SetParametersFromFile')
    assert all(first < i < actions.index('Node') for i, kind in enumerate(actions)
               if kind == 'SetParameter')
    (call,) = _calls(tree, 'SetParametersFromFile')
    assert _constant(call.args[0].args[0]) == 'params_file'


def _node_choices(tree):
    argument = next(c for c in _calls(tree, 'DeclareLaunchArgument')
                    if _constant(c.args[0]) == 'node')
    choices = {_constant(e) for e in _keyword(argument, 'choices').elts}
    assert _constant(_keyword(argument, 'default_value')) in choices
    return choices


def test_nodes_are_console_scripts_and_set_declared_parameters(launch_file):
    path, tree = launch_file
    scripts = _console_scripts()
    nodes = _calls(tree, 'Node')
    assert len(nodes) == 1
    node = nodes[0]
    assert _constant(_keyword(node, 'package')) == 'sparse_perception'
    choices = _node_choices(tree)
    assert choices == EXPECTED[path.name]
    assert choices <= scripts, f'{choices - scripts} are not console scripts in setup.py NODES'
    for keyword in ('executable', 'name'):  # the node's name is its executable's
        value = _keyword(node, keyword)
        assert value.func.id == 'LaunchConfiguration' and _constant(value.args[0]) == 'node'
    set_here = set(_overrides(tree))
    # (Parameters of the node itself would come after the file's and win over it.)
    assert _keyword(node, 'parameters') is None
    for executable in choices:
        kind = node_config.NODE_KINDS[executable]
        declared = {s.name for s in node_config.parameter_specs(kind)}
        # The heads choose among perception_node's; the other nodes leave it undeclared, and
        # rclpy ignores a parameter a node does not declare.
        allowed = declared | ROS_PARAMETERS | {'node.heads'}
        assert set_here <= allowed, (executable, set_here - allowed)


def test_default_params_file_is_the_packaged_config_with_this_node(launch_file):
    path, tree = launch_file
    argument = next(c for c in _calls(tree, 'DeclareLaunchArgument')
                    if _constant(c.args[0]) == 'params_file')
    join = _keyword(argument, 'default_value')
    package, *parts = join.args[0].elts
    assert _constant(package.args[0]) == 'sparse_perception'
    relative = Path(*[_constant(p) for p in parts])
    assert relative == Path('config/perception.yaml')
    document = yaml.safe_load((REPO / relative).read_text(encoding='utf-8'))
    for executable in _node_choices(tree):
        assert f'/**/{executable}' in document


def test_the_checks_see_logic_and_unknown_executables(tmp_path):
    # Guard against checks that cannot fail.
    tree = ast.parse('from launch import LaunchDescription\n'
                     'def generate_launch_description():\n'
                     '    return LaunchDescription([Node(executable="x" if a else "y")])\n')
    assert any(isinstance(n, ast.IfExp) for n in ast.walk(tree))
    assert 'x' not in _console_scripts() and 'perception_node' in _console_scripts()
