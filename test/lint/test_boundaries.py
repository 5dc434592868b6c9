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
Only the ROS edge in sparse_perception/nodes/ may import rclpy or ROS message packages.

The core stays usable without ROS (bag replay, benchmarks, tests), and the ROS edge stays thin:
the decisions the nodes take live in pure modules beside them (health, stream, markers,
node_config), which import no ROS either, so that they are tested without it.
"""

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.lint

REPO = Path(__file__).resolve().parents[2]
ROS_MODULES = ('rclpy', 'sensor_msgs', 'std_msgs', 'geometry_msgs', 'visualization_msgs',
               'diagnostic_msgs', 'lifecycle_msgs', 'builtin_interfaces', 'rcl_interfaces',
               'launch', 'launch_ros', 'cv_bridge')
# The modules that wire the node to rclpy; every other module of the package is pure.
ROS_EDGE = {'diagnostics.py', 'frame_input.py', 'frame_worker.py', 'outputs.py',
            'parameters.py', 'perception_node.py', 'pose_node.py', 'ros_interop.py',
            'segmentation_node.py'}


def _imported_roots(path: Path):
    tree = ast.parse(path.read_text(encoding='utf-8'), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split('.')[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module.split('.')[0]


def test_only_nodes_import_ros():
    offenders = []
    for folder in ('sparse_perception',):
        for path in sorted((REPO / folder).rglob('*.py')):
            relative = path.relative_to(REPO)
            if relative.parts[:2] == ('sparse_perception', 'nodes') and path.name in ROS_EDGE:
                continue
            offenders += [f'{relative}:{line} imports {root}'
                          for line, root in _imported_roots(path) if root in ROS_MODULES]
    assert not offenders, 'ROS imports outside the ROS edge:\n' + '\n'.join(offenders)


def test_the_ros_edge_names_only_modules_there_are():
    # A module renamed or removed must leave the list, or the list lets its successor through.
    there = {p.name for p in (REPO / 'sparse_perception' / 'nodes').glob('*.py')}
    assert ROS_EDGE <= there, ROS_EDGE - there


def test_check_sees_an_offender(tmp_path):
    # Guard against a check that cannot fail: it must see a plain and a from-import.
    sample = tmp_path / 'sample.py'
    sample.write_text('import rclpy.node\nfrom sensor_msgs.msg import Image\n')
    assert [root for _, root in _imported_roots(sample)] == ['rclpy', 'sensor_msgs']


def _imported_modules(path: Path, package: str):
    """Yield (line, module) of every import in ``path``, nested ones too, made absolute."""
    tree = ast.parse(path.read_text(encoding='utf-8'), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:  # relative to the file's package
                parts = package.split('.')
                base = '.'.join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                yield node.lineno, f'{base}.{alias.name}' if base else alias.name


def _engine_imports(path: Path, package: str) -> list:
    return [(line, module) for line, module in _imported_modules(path, package)
            if module == 'sparse_perception.engine'
            or module.startswith('sparse_perception.engine.')]


def test_kernels_do_not_import_the_engine():
    # The engine imports the kernels, never the other way round: the kernels and their
    # references can then be read, tested and changed without the engine.
    offenders = []
    for path in sorted((REPO / 'sparse_perception' / 'kernels').rglob('*.py')):
        package = '.'.join(path.relative_to(REPO).parent.parts)
        offenders += [f'{path.relative_to(REPO)}:{line} imports {module}'
                      for line, module in _engine_imports(path, package)]
    assert not offenders, 'engine imports in sparse_perception/kernels/:\n' + '\n'.join(
        offenders)


def test_kernel_check_sees_an_offender(tmp_path):
    # Guard against a check that cannot fail: absolute, nested and relative imports count.
    sample = tmp_path / 'sample.py'
    sample.write_text('from sparse_perception.engine.ir import Layer\n'
                      'def f():\n'
                      '    import sparse_perception.engine\n'
                      'from ..engine import backend\n'
                      'from . import runtime\n')
    assert sorted(_imported_modules(sample, 'sparse_perception.kernels')) == [
        (1, 'sparse_perception.engine.ir.Layer'), (3, 'sparse_perception.engine'),
        (4, 'sparse_perception.engine.backend'), (5, 'sparse_perception.kernels.runtime')]
    assert [line for line, _ in sorted(_engine_imports(sample, 'sparse_perception.kernels'))] \
        == [1, 3, 4]
