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
Fixtures of the launch tier: the package installed as a user installs it, and ROS 2's launch.

The package is installed with a plain (non-editable) ``pip install .`` into a prefix of its own,
and its nodes are started by the real ``ros2 launch`` and ``ros2 run`` from ROS 2's launch
tooling (the wheels in the shared folder, which ./scripts/test installs). Without the shared
folder, or without the tooling, the tier skips with the reason; under CI=true it fails.
"""

import importlib.util
import os
from pathlib import Path
import shutil
import subprocess
import sys
import sysconfig

import pytest
from sparse_perception.shared_data import shared_path, SharedDataMissing
from support import IN_CI, REPO


def _unavailable(reason):
    if IN_CI:
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope='session')
def installed(request, tmp_path_factory):
    """
    Return the environment in which ``ros2`` finds the package as ``pip install .`` left it.

    AMENT_PREFIX_PATH names the prefix (the package index, launch/ and config/ under share/,
    the node executables under lib/sparse_perception/) before the test environment's own.
    """
    try:
        shared = shared_path('wheels/ros-launch').parents[1]
    except SharedDataMissing as exc:
        _unavailable(f"the launch tier needs ROS 2's launch tooling, which is not on PyPI and "
                     f'comes as wheels from the shared folder: {exc}')
    missing = [name for name in ('launch', 'launch_ros', 'ros2cli', 'ros2launch')
               if importlib.util.find_spec(name) is None]
    if missing:
        _unavailable(f'ROS 2 launch tooling not installed ({", ".join(missing)}): ./scripts/test '
                     'installs it from the shared folder (wheels/ros-launch)')
    mediapipe_cache = request.getfixturevalue('mediapipe_cache')  # the default models
    prefix = tmp_path_factory.mktemp('prefix')
    source = copy_source(tmp_path_factory.mktemp('source'))
    install = subprocess.run(
        # --ignore-installed: leave the test environment's own (editable) install alone.
        [sys.executable, '-m', 'pip', 'install', '-q', '--disable-pip-version-check',
         '--no-deps', '--no-build-isolation', '--ignore-installed', '--prefix', str(prefix),
         str(source)],
        capture_output=True, text=True)
    assert install.returncode == 0, install.stdout + install.stderr
    site = sysconfig.get_path('purelib', vars={'base': str(prefix), 'platbase': str(prefix)})
    env = dict(os.environ)
    env.update(
        AMENT_PREFIX_PATH=os.pathsep.join([str(prefix), sys.prefix]),
        # The installed copy, not the editable checkout of the test environment.
        PYTHONPATH=site,
        PATH=os.pathsep.join([str(prefix / 'bin'), str(Path(sys.executable).parent),
                              env.get('PATH', '')]),
        SPARSE_PERCEPTION_MODEL_CACHE=str(mediapipe_cache),
        # An install is not beside the shared folder: name it, as the README says.
        SPARSE_PERCEPTION_SHARED=str(shared),
        PYTHONUNBUFFERED='1',
    )
    return env


def copy_source(folder):
    """
    Copy the package's source, as a clone holds it, to ``folder``/sparse_perception; return it.

    Builds run on a copy: setuptools leaves build/ and egg-info folders where it builds.
    """
    source = Path(folder) / 'sparse_perception'
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        '.venv', '.git', 'build', 'install', 'log', '*.egg-info', '__pycache__', '.*_cache',
        'runs'))
    return source


@pytest.fixture(scope='session')
def colcon_workspace(tmp_path_factory):
    """
    Return a workspace in which ``colcon build`` built the package, as the README's robot does.

    colcon is the test environment's (./scripts/test installs it from PyPI); its Python is the
    one it builds with, as a robot's colcon builds with the ROS install's.
    """
    colcon = Path(sys.executable).parent / 'colcon'
    if not colcon.exists():
        _unavailable('colcon is not installed in the test environment: ./scripts/test installs '
                     'it from PyPI (colcon-common-extensions)')
    workspace = tmp_path_factory.mktemp('ros2_ws')
    copy_source(workspace / 'src')
    build = subprocess.run([str(colcon), 'build', '--packages-select', 'sparse_perception'],
                           cwd=workspace, capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout + build.stderr
    return workspace
