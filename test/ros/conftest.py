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

"""Fixtures of the ros tier: a private rclpy context and a harness to drive nodes with."""

import gc
import importlib.util

import pytest
from ros_harness import Harness

HAVE_RCLPY = importlib.util.find_spec('rclpy') is not None
if not HAVE_RCLPY:
    # The tier needs the real rclpy (the ros-test extra; ./scripts/test installs it). Under CI
    # its absence already fails the session (test/conftest.py), so here it only skips.
    collect_ignore_glob = ['test_*.py']


@pytest.fixture(scope='module')
def ros_context():
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
    h = Harness(ros_context)
    yield h
    h.close()
