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


"""The tier checks of test/conftest.py (tiers.py) find what they are there to find."""

import ast

import pytest
import tiers

pytestmark = pytest.mark.lint


def _tree(source):
    return ast.parse(source)


@pytest.mark.parametrize('source, expected', [
    ('x = 1\n', set()),
    ('import pytest\npytestmark = pytest.mark.ros\n', {'ros'}),
    ('import pytest\npytestmark = [pytest.mark.bag, pytest.mark.usefixtures("f")]\n', {'bag'}),
    ('import pytest\npytestmark = pytest.mark.slow\n', set()),
    ('import pytest\n\n\ndef f():\n    pytestmark = pytest.mark.gpu\n', set()),
])
def test_declared_tiers(source, expected):
    assert tiers.declared_tiers(_tree(source)) == expected


def test_ros_imports_are_found_wherever_they_are():
    source = ('import rclpy.node\nfrom sensor_msgs.msg import Image\n'
              'def f():\n    from rcl_interfaces.msg import Log\n'
              'm = pytest.importorskip("lifecycle_msgs.msg")\n'
              'd = require_module("diagnostic_msgs.msg")\n'
              'from rosbags.typesys import Stores\nfrom . import rclpy_like\n'
              'text = "import std_msgs"\n')
    assert tiers.ros_imports(_tree(source)) == [
        'diagnostic_msgs.msg', 'lifecycle_msgs.msg', 'rcl_interfaces.msg', 'rclpy.node',
        'sensor_msgs.msg']


def test_bag_uses_are_found():
    source = ('from rosbags.rosbag2 import Writer\nfrom replay_helpers import frame_picture, '
              'write_bag\nfrom rosbags.typesys import Stores\nargs = ["make-bag", "--out"]\n')
    assert set(tiers.bag_uses(_tree(source))) == {'rosbags.rosbag2', 'write_bag', 'make-bag'}
    assert tiers.bag_uses(_tree('from replay_helpers import TYPESTORE\nx = "make-bag"\n')) == []


def test_a_declared_tier_with_its_fixtures_and_imports_passes():
    ros = _tree('import pytest\nimport rclpy\npytestmark = pytest.mark.ros\n')
    assert tiers.tier_problems(ros, {'ros'}, ['harness', 'ros_context', 'tmp_path']) == []
    launch = _tree('import pytest\nimport rclpy\npytestmark = pytest.mark.launch\n')
    assert tiers.tier_problems(launch, {'launch'}, ['installed', 'harness']) == []
    gpu = _tree('import pytest\npytestmark = pytest.mark.gpu\n')
    assert tiers.tier_problems(gpu, {'gpu'}, ['cuda', 'device']) == []
    assert tiers.tier_problems(_tree('x = 1\n'), set(), ['device', 'tmp_path']) == []
    replay = _tree('import pytest\nimport rclpy\nfrom replay_helpers import write_bag\n'
                   'pytestmark = pytest.mark.ros\n')
    assert tiers.tier_problems(replay, {'ros'}, []) == []


@pytest.mark.parametrize('source, marked, fixtures, expected', [
    ('x = 1\n', set(), ['harness'], "'harness', which only the ros or launch tier"),
    ('x = 1\n', set(), ['cuda'], "'cuda', which only the gpu tier"),
    ('import pytest\npytestmark = pytest.mark.ros\n', {'ros'}, ['installed'],
     "'installed', which only the launch tier"),
    ('import pytest\npytestmark = pytest.mark.bag\n', {'bag'}, ['ros_context'],
     'but is in the bag tier'),
    ('import rclpy\n', set(), [], 'imports rclpy, which only the ros or launch tier'),
    ('import pytest\npytestmark = pytest.mark.gpu\nfrom std_msgs.msg import Header\n', {'gpu'},
     [], 'imports std_msgs.msg'),
    ('from replay_helpers import write_bag\n', set(), [], 'writes or reads bags (write_bag)'),
    ('import pytest\npytestmark = pytest.mark.gpu\nx = ["make-bag"]\n', {'gpu'}, [],
     'but is in the gpu tier'),
    ('x = 1\n', {'ros'}, [], 'differ from the tiers its pytestmark declares'),
    ('import pytest\npytestmark = [pytest.mark.ros, pytest.mark.bag]\n', {'ros', 'bag'}, [],
     'a module belongs to one tier'),
])
def test_a_missing_or_wrong_tier_is_a_problem(source, marked, fixtures, expected):
    problems = tiers.tier_problems(_tree(source), marked, fixtures)
    assert any(expected in problem for problem in problems), problems
