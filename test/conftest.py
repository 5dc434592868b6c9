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
Test tiers and the fixtures the tiers share.

Test files live in folders that mirror the package (test/engine for sparse_perception/engine,
test/core for its top-level modules, test/launch for launch/, test/lint for the whole tree);
test/ itself holds this file and the helper modules the tests import (``from support import
...``). A test's tier is what it needs, declared once per module as ``pytestmark =
pytest.mark.<tier>``; a module without one is pure. ``-m 'not ros'`` and the like select tiers:

- pure: no ROS, no GPU (torch on the CPU, Triton through its CPU interpreter);
- bag: real rosbag2 files (mcap and sqlite3), written and read;
- ros: real rclpy (nodes in executors, DDS between processes); not collected without rclpy;
- launch: the installed package started with ROS 2's own ``ros2 launch`` and ``ros2 run``;
  not collected without rclpy;
- gpu: CUDA only, skipped where there is none;
- lint: ament's flake8 and pep257, the copyright header, the wording and the import boundaries.

A test that uses the fixtures of a tier it is not in (``harness`` and ``ros_context`` of ros
and launch, ``cuda`` of gpu, launch's own), a module that imports rclpy or ROS messages
outside ros and launch, or one that writes or reads bags outside bag, ros and launch, stops
the run before any test runs, naming the file (tiers.py).

Across the tiers, tests that take more than a few seconds on 2 CPU cores are marked ``slow``
(registered in pytest.ini): ``-m 'not slow'`` is the quick tier for the inner loop.
"""

import gc
import importlib.util
import os
from pathlib import Path
import random

import pytest

from support import fetch_mediapipe_models, IN_CI
import tiers

TEST_DIR = Path(__file__).resolve().parent
HAVE_RCLPY = importlib.util.find_spec('rclpy') is not None

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
    for tier in tiers.TIERS:
        config.addinivalue_line('markers', f'{tier}: test of the {tier} tier (see conftest)')


def pytest_sessionstart(session):
    # Under CI every tier runs: a missing rclpy there is a broken install, not a skip.
    if IN_CI and not HAVE_RCLPY:
        raise pytest.UsageError(
            'CI=true but rclpy is not importable: install the ros-test extra '
            '(the README test command does)')


def pytest_ignore_collect(collection_path, config):
    # The ros and launch tiers need the real rclpy (the ros-test extra; ./scripts/test installs
    # it). Under CI its absence already fails the session, so here it only leaves them out.
    if (not HAVE_RCLPY and collection_path.suffix == '.py'
            and collection_path.name.startswith('test_')
            and tiers.declared_tiers(tiers.parse(collection_path)) & set(tiers.ROS_TIERS)):
        return True
    return None


@pytest.hookimpl(tryfirst=True)  # before -m deselects: every collected test is checked
def pytest_collection_modifyitems(config, items):
    trees, problems = {}, {}
    for item in items:
        path = Path(str(item.fspath)).resolve()
        if path not in trees:
            trees[path] = tiers.parse(path)
        marked = {mark.name for mark in item.iter_markers() if mark.name in tiers.TIERS}
        for problem in tiers.tier_problems(trees[path], marked, getattr(item, 'fixturenames', ())):
            problems.setdefault(path, {})[problem] = None  # in order, once
        if not marked:
            item.add_marker(pytest.mark.pure)
        elif 'gpu' in marked and not _cuda_available():
            item.add_marker(pytest.mark.skip(reason='CUDA is not available'))
    if problems:
        raise pytest.UsageError('test tiers:\n' + '\n'.join(
            f'{path.relative_to(TEST_DIR.parent)}: {problem}'
            for path, found in problems.items() for problem in found))


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


@pytest.fixture
def no_tf32():
    """
    Turn TF32 off for the test, so that a float32 reference on CUDA means float32.

    cuDNN convolves float32 in TF32 by default (10-bit mantissa): dense references computed
    that way differed from float32 by 6e-4 to 3e-2 of the output scale on the registered
    networks (seen on an H200), far over the engine's float32 tolerance.
    """
    import torch
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.fixture
def cuda(device, no_tf32):
    """Run a test on CUDA only (the gpu tier), TF32 off so that float32 means float32."""
    if device != 'cuda':
        pytest.skip('the pure tier runs these checks on the CPU')
    return device


@pytest.fixture(scope='module')
def ros_context():
    """Return a private rclpy context for the module's tests (ros and launch tiers)."""
    import rclpy
    from rclpy.context import Context

    context = Context()
    rclpy.init(context=context)
    yield context
    rclpy.shutdown(context=context)
    context.destroy()
    # The DDS participant and its threads go only when the last node object referring to the
    # context is collected. Collect now: a process that forks later (flake8's worker pool in
    # the lint tier) must not inherit threads that may hold locks.
    gc.collect()


@pytest.fixture
def harness(ros_context):
    """Return a harness that drives nodes in the private context (ros and launch tiers)."""
    from ros_harness import Harness

    h = Harness(ros_context)
    yield h
    h.close()


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
