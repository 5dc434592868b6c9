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
Test tiers and the fixtures every tier shares.

Tiers are folders, and each test is marked with its folder's name, so ``-m 'not ros'`` and the
like select tiers:

- pure: no ROS, no GPU (torch on the CPU, Triton through its CPU interpreter);
- bag: real rosbag2 files (mcap and sqlite3), written and read;
- ros: real rclpy (nodes in executors, DDS between processes);
- launch: the installed package started with ROS 2's own ``ros2 launch`` and ``ros2 run``;
- gpu: CUDA only, skipped where there is none;
- lint: ament's flake8 and pep257, the copyright header, and the import boundaries.

Across the tiers, tests that take more than a few seconds on 2 CPU cores are marked ``slow``
(registered in pytest.ini): ``-m 'not slow'`` is the quick tier for the inner loop.
"""

import importlib.util
import os
from pathlib import Path
import random

import pytest

from support import fetch_mediapipe_models, IN_CI

TEST_DIR = Path(__file__).resolve().parent
TIERS = ('pure', 'bag', 'ros', 'launch', 'gpu', 'lint')

# ROS traffic of one test run must not meet another's (parallel runs on one machine, or a
# robot's live graph): a private domain, discovery on this host only. Set before any test
# module imports rclpy; child processes inherit it.
os.environ.setdefault('ROS_DOMAIN_ID', str(random.SystemRandom().randint(1, 100)))
os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')


def _interpret_kernels_without_cuda() -> None:
    """
    Run the Triton kernels in Triton's CPU interpreter where there is no GPU.

    ``triton.jit`` picks the interpreter or compiled kernels when a kernel module is
    imported, so this must happen before any test imports sparse_perception.kernels.
    On a CUDA machine the kernels compile (the gpu tier runs them) and the pure tier's
    interpreter tests skip.
    """
    if 'TRITON_INTERPRET' in os.environ:
        return
    import torch
    if not torch.cuda.is_available():
        os.environ['TRITON_INTERPRET'] = '1'


_interpret_kernels_without_cuda()


def pytest_configure(config):
    for tier in TIERS:
        config.addinivalue_line('markers', f'{tier}: test of the {tier} tier (see conftest)')


def pytest_sessionstart(session):
    # Under CI every tier runs: a missing rclpy there is a broken install, not a skip.
    if IN_CI and importlib.util.find_spec('rclpy') is None:
        raise pytest.UsageError(
            'CI=true but rclpy is not importable: install the ros-test extra '
            '(the README test command does)')


def pytest_collection_modifyitems(config, items):
    for item in items:
        parts = Path(str(item.fspath)).resolve().relative_to(TEST_DIR).parts
        if len(parts) > 1 and parts[0] in TIERS:
            item.add_marker(getattr(pytest.mark, parts[0]))


def _cuda_available() -> bool:
    import torch
    return torch.cuda.is_available()


@pytest.fixture(params=['cpu', 'cuda'])
def device(request):
    """Run a test on every device there is; CUDA skips without a GPU."""
    if request.param == 'cuda' and not _cuda_available():
        pytest.skip('CUDA is not available')
    return request.param


@pytest.fixture(params=['float32', 'float16'])
def dtype(request):
    """Both precisions; tolerances follow the precision."""
    import torch
    return getattr(torch, request.param)


@pytest.fixture(scope='session')
def mediapipe_cache(tmp_path_factory):
    """
    Return a model cache holding the MediaPipe models, fetched once per test session.

    The fetch is the real one (`pip download mediapipe` from PyPI, then extraction); without
    PyPI the tests that need it skip, except under CI.
    """
    return fetch_mediapipe_models(tmp_path_factory.mktemp('model-cache'))


@pytest.fixture
def replay_double(monkeypatch):
    """
    Make replays run in this process build the pipeline double (test/pipeline_double.py).

    ``sparse-perception replay`` builds the package's Pipeline; commands called through
    ``cli.main`` in a test get the double instead, which computes every figure quickly.
    """
    from pipeline_double import PipelineDouble

    from sparse_perception.replay import job

    monkeypatch.setattr(job, 'default_pipeline', lambda: PipelineDouble)
    return PipelineDouble
