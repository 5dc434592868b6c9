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
The README's robot install: ``colcon build``, ``. install/setup.bash``, then ``ros2 run``.

colcon (from PyPI) builds a clone of the package in a workspace (conftest); the commands then
run in a shell that sourced the workspace, as a user's terminal does, with the ``ros2`` command
of ROS 2's launch tooling.
"""

import os
from pathlib import Path
import subprocess
import sys

import pytest
from sparse_perception.shared_data import shared_path
from support import REPO

pytestmark = pytest.mark.launch

EXECUTABLES = ('perception_node', 'pose_node', 'segmentation_node', 'sparse-perception')


@pytest.fixture
def sourced(colcon_workspace, mediapipe_cache):
    """Return a function that runs a command in bash after ``. install/setup.bash``."""
    bin_folder = str(Path(sys.executable).parent)  # ros2, and the Python colcon built with
    env = {key: value for key, value in os.environ.items()
           if key not in ('PYTHONPATH', 'AMENT_PREFIX_PATH', 'COLCON_PREFIX_PATH')}
    env.update(
        PATH=os.pathsep.join([bin_folder, env.get('PATH', '')]),
        AMENT_PREFIX_PATH=sys.prefix,  # the ROS install underneath (here, the launch tooling)
        SPARSE_PERCEPTION_MODEL_CACHE=str(mediapipe_cache),
        SPARSE_PERCEPTION_SHARED=str(shared_path('wheels/ros-launch').parents[1]),
        PYTHONUNBUFFERED='1',
    )

    def run(command):
        done = subprocess.run(['bash', '-c', f'. install/setup.bash && {command}'],
                              cwd=colcon_workspace, env=env, capture_output=True, text=True,
                              timeout=180)
        assert done.returncode == 0, f'{command}:\n{done.stdout}{done.stderr}'
        return done.stdout
    return run


def test_the_readme_shows_the_commands_run_here():
    readme = (REPO / 'README.md').read_text()
    for command in ('colcon build --packages-select sparse_perception && . install/setup.bash',
                    'ros2 run sparse_perception sparse-perception models fetch'):
        assert command in readme, command


@pytest.mark.slow
def test_colcon_puts_every_executable_where_ros2_run_looks(colcon_workspace, sourced):
    lib = colcon_workspace / 'install' / 'sparse_perception' / 'lib' / 'sparse_perception'
    for name in EXECUTABLES:
        assert os.access(lib / name, os.X_OK), f'{name} is not an executable in {lib}'
    listed = sourced('ros2 pkg executables sparse_perception').split()
    assert sorted(listed) == sorted(
        ['sparse_perception'] * len(EXECUTABLES) + list(EXECUTABLES)), listed
    # The sourced workspace's copy runs, not the checkout the tests import.
    where = sourced('python -c "import sparse_perception; print(sparse_perception.__file__)"')
    assert Path(where.strip()).is_relative_to(colcon_workspace / 'install'), where
    # The launch files are where `ros2 launch` finds them.
    arguments = sourced('ros2 launch sparse_perception perception.launch.py --show-args')
    assert 'camera_topic' in arguments and 'params_file' in arguments, arguments


@pytest.mark.slow
def test_the_command_line_runs_through_ros2_run(sourced):
    # The README's command: with the models already in the cache it only checks them.
    fetched = sourced('ros2 run sparse_perception sparse-perception models fetch')
    assert 'already present' in fetched, fetched
    listed = sourced('ros2 run sparse_perception sparse-perception models list')
    assert 'missing' not in listed and 'not found' not in listed, listed
    for name in ('selfie_segmentation_landscape', 'blazepose', 'deeplabv3_mnv2_pascal',
                 'movenet_lightning'):
        assert name in listed, listed
