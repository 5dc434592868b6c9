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
Test tiers: the tier a test module declares, and the checks that keep it honest.

A module's tier is its ``pytestmark = pytest.mark.<tier>`` (or a list holding one such mark);
a module without one is pure. The tier is read from the source as well as from the collected
marks, so a tier whose dependencies are missing can be left uncollected without importing the
module. The checks make a wrong or missing declaration fail the run instead of drifting: a
test that uses a ROS or CUDA fixture, or a module that imports rclpy or ROS messages, outside
the tier that provides them, or a module that writes or reads rosbag2 files outside the tiers
that do.
"""

import ast
from pathlib import Path

TIERS = ('pure', 'bag', 'ros', 'launch', 'gpu', 'lint')

# Tiers that need a ROS 2 install (rclpy and the message packages).
ROS_TIERS = ('ros', 'launch')

# Tiers whose tests write and read real bags (the ros tier replays them through rclpy).
BAG_TIERS = ('bag', 'ros', 'launch')
# Helpers of test/replay_helpers.py that write bags.
BAG_WRITERS = ('write_bag', 'write_ros1_bag')

# Fixtures that work only in some tiers, and those tiers.
FIXTURE_TIERS = {
    'ros_context': ROS_TIERS,
    'harness': ROS_TIERS,
    'installed': ('launch',),
    'colcon_workspace': ('launch',),
    'cuda': ('gpu',),
}


def parse(path) -> ast.Module:
    return ast.parse(Path(path).read_text(encoding='utf-8'), filename=str(path))


def declared_tiers(tree: ast.Module) -> set:
    """Return the tiers that the module's ``pytestmark`` names as ``pytest.mark.<tier>``."""
    tiers = set()
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets = [node.target]
        else:
            continue
        if not any(isinstance(t, ast.Name) and t.id == 'pytestmark' for t in targets):
            continue
        for sub in ast.walk(node.value):
            if (isinstance(sub, ast.Attribute) and sub.attr in TIERS
                    and isinstance(sub.value, ast.Attribute) and sub.value.attr == 'mark'):
                tiers.add(sub.attr)
    return tiers


def _is_ros_module(name: str) -> bool:
    root = name.split('.')[0]
    return root in ('rclpy', 'rcl_interfaces') or root.endswith('_msgs')


def _called(func: ast.expr) -> str | None:
    """Return the name a call calls: ``f`` of ``f(...)`` and of ``module.f(...)``."""
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else None


def ros_imports(tree: ast.Module) -> list:
    """
    Return the ROS modules the module imports anywhere.

    ``pytest.importorskip`` and ``support.require_module`` calls included.
    """
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if _is_ros_module(alias.name)]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if _is_ros_module(node.module):
                found.append(node.module)
        elif (isinstance(node, ast.Call)
              and _called(node.func) in ('importorskip', 'require_module') and node.args
              and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str) and _is_ros_module(node.args[0].value)):
            found.append(node.args[0].value)
    return sorted(set(found))


def bag_uses(tree: ast.Module) -> list:
    """Return how the module writes or reads bags: rosbags' bag modules, helpers, make-bag runs."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names
                      if alias.name.startswith(('rosbags.rosbag1', 'rosbags.rosbag2'))]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith(('rosbags.rosbag1', 'rosbags.rosbag2')):
                found.append(node.module)
            elif node.module == 'replay_helpers':
                found += [alias.name for alias in node.names if alias.name in BAG_WRITERS]
        elif (isinstance(node, (ast.List, ast.Tuple)) and node.elts
              and isinstance(node.elts[0], ast.Constant) and node.elts[0].value == 'make-bag'):
            found.append('make-bag')  # a command line
    return sorted(set(found))


def tier_problems(tree: ast.Module, marked, fixturenames) -> list:
    """
    Return what is wrong with the tier of one test, or nothing.

    ``tree`` is its module's syntax tree, ``marked`` the tier marks the test carries and
    ``fixturenames`` the fixtures it uses, directly or through other fixtures.
    """
    marked, declared = set(marked), declared_tiers(tree)
    problems = []
    if marked != declared:
        problems.append(
            f'tier marks {sorted(marked)} differ from the tiers its pytestmark declares '
            f'{sorted(declared)}: declare the tier for the whole module, as '
            f'pytestmark = pytest.mark.<tier>')
    if len(marked) > 1:
        problems.append(f'declares the tiers {sorted(marked)}; a module belongs to one tier')
    tier = next(iter(marked)) if len(marked) == 1 else 'pure'
    for name in fixturenames:
        allowed = FIXTURE_TIERS.get(name)
        if allowed and tier not in allowed:
            problems.append(f'uses the fixture {name!r}, which only the {" or ".join(allowed)} '
                            f'tier provides, but is in the {tier} tier')
    imported = ros_imports(tree)
    if imported and tier not in ROS_TIERS:
        problems.append(f'imports {", ".join(imported)}, which only the '
                        f'{" or ".join(ROS_TIERS)} tier installs, but is in the {tier} tier')
    bags = bag_uses(tree)
    if bags and tier not in BAG_TIERS:
        problems.append(f'writes or reads bags ({", ".join(bags)}), which the bag tier does, '
                        f'but is in the {tier} tier')
    return problems
