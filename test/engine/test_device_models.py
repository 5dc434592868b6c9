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
Every registered model in the sync-free device mode, through Triton's interpreter.

- Every registered model lowers for the device mode (the check behind ``models list
  --json``), and a pipeline under ``model.execution: auto``, where auto picks the device mode
  (CUDA with the kernels), builds the device engine for every network it runs: a fall-back
  to the eager executor is an error here.
- Marked ``slow`` (``-m 'not slow'`` skips them): each network at its own input size runs
  incremental frames in the device mode equal to the dense network at thresholds 0, with no
  host synchronisation and the same launches from frame to frame. These streams start from
  the eager executor's dense caches (``IncrementalModel.start_from``): interpreting a whole dense
  frame of a 256x256 network takes too long. The device mode's own dense frame runs on the
  fully convolutional DeepLab here (at a small size) and on the networks of
  test_kernels_engine.py.

The MediaPipe models come from the session's model cache (fetched from PyPI once), the Coral
models from the shared folder.
"""

import os

from device_checks import (ALLOWED, assert_dense, change_map, HostOps, patched,
                           recorded_launches, signature, TILE)
import pytest
from sparse_perception import pipeline as pipeline_module
from sparse_perception import settings as st
from sparse_perception.engine import executor as executor_module
from sparse_perception.engine import IncrementalModel
from sparse_perception.models.registry import (device_mode_reason, engine_networks,
                                               FCN_CHECK_SIZE, load_model, REGISTRY)
from support import require_shared
import torch

pytestmark = pytest.mark.skipif(
    os.environ.get('TRITON_INTERPRET') != '1',
    reason='the kernels run on CPU tensors only under the interpreter; the gpu tier runs '
           'the device mode on CUDA')

# blazepose_coco17 runs blazepose's networks (it keeps fewer joints): checked once.
NAMES = [name for name in REGISTRY if name != 'blazepose_coco17']


def models_dir(name, mediapipe_cache):
    if REGISTRY[name].location == 'shared':
        return str(require_shared('models/coral'))
    return str(mediapipe_cache)


@pytest.fixture(scope='module')
def loaded(request):
    """Load registered models once per module (by name)."""
    cache = {}

    def load(name, directory):
        if name not in cache:
            cache[name] = load_model(name, 'cpu', models_dir=directory)
        return cache[name]
    return load


@pytest.mark.parametrize('name', NAMES)
def test_every_registered_model_runs_in_the_device_mode(name, mediapipe_cache, monkeypatch,
                                                        loaded):
    directory = models_dir(name, mediapipe_cache)
    assert device_mode_reason(loaded(name, directory)) is None

    monkeypatch.setattr(executor_module, 'auto_picks_device', lambda config, device: True)
    kind = REGISTRY[name].kind
    settings = st.replace(st.PerceptionSettings(), {
        'model.segmentation': name if kind == 'segmentation' else '',
        'model.pose': name if kind == 'pose' else '', 'model.models_dir': directory,
        'model.device': 'cpu', 'model.backend': 'kernels', 'model.execution': 'auto'})
    head = pipeline_module.Pipeline(settings, heads=(kind,))._heads[kind]
    assert len(head.nets) == (2 if REGISTRY[name].detector else 1)  # + the person detector
    for net in head.nets:
        if net.input_size is None:  # fully convolutional: lowered at its first frame
            net.engine.plan_for(torch.zeros(1, 3, *FCN_CHECK_SIZE))
        # A fall-back to the eager executor is a failure here.
        assert net.engine.fallback is None, f'{net.what} fell back: {net.engine.fallback}'
        assert net.execution == 'device'


# Interpreting a registered network's frames at its full input size takes minutes each on
# 2 cores (measured under load: 234 s for MoveNet to 1475 s for the 513x513 DeepLab, about an
# hour for them all), more than a test run can spend. The test run takes the fully
# convolutional DeepLab at a small size (every layer kind of the MobileNetV2 trunk and ASPP);
# SPARSE_PERCEPTION_ALL_NETWORKS=1 runs every registered network too.
ALL_NETWORKS_ENV = 'SPARSE_PERCEPTION_ALL_NETWORKS'
_ALL = pytest.mark.skipif(
    os.environ.get(ALL_NETWORKS_ENV) != '1',
    reason=f'minutes per network under the interpreter: {ALL_NETWORKS_ENV}=1 runs it')


def networks():
    for name in NAMES:
        marks = [pytest.mark.slow] + ([] if REGISTRY[name].resize == 'none' else [_ALL])
        yield pytest.param(name, 'network', marks=marks, id=f'{name}-network')
        if REGISTRY[name].detector:
            yield pytest.param(name, 'detector', marks=[pytest.mark.slow, _ALL],
                               id=f'{name}-detector')


@pytest.mark.parametrize('name, which', list(networks()))
def test_registered_network_frames_equal_dense_without_host_sync(name, which, mediapipe_cache,
                                                                 monkeypatch, loaded):
    model = loaded(name, models_dir(name, mediapipe_cache))
    ((_, trunk, size),) = [n for n in engine_networks(model) if n[0] == which]
    fully_convolutional = which == 'network' and model.input_size is None
    if fully_convolutional:
        size = (33, 47)  # any size runs: small, so that the dense frame runs on the kernels
    g = torch.Generator().manual_seed(len(name))
    x0 = torch.rand(1, 3, *size, generator=g) * 2 - 1
    device = IncrementalModel(trunk, execution='device', graph=False)
    state = device.new_state()
    if fully_convolutional:
        assert_dense(device(x0, None, state), trunk, x0, 'dense frame')
    else:
        eager = IncrementalModel(trunk)
        eager_state = eager.new_state()
        eager(x0, None, eager_state)
        device.start_from(x0, eager_state.caches, state)
    first, second = [(0, 1)], [(size[0] // TILE - 1, size[1] // TILE // 2)]
    x1 = patched(x0, first, 0.5)
    assert_dense(device(x1, change_map(size, first), state), trunk, x1, 'frame 1')
    frames = []
    for i, (x, tiles) in enumerate([(x1, []), (patched(x1, second, -0.25), second)], 2):
        changes = change_map(size, tiles)  # made on the host by the change detector
        with recorded_launches(monkeypatch) as launches, HostOps() as host:
            got = device(x, changes, state)
        assert set(host.ops) <= ALLOWED, sorted(set(host.ops) - ALLOWED)
        frames.append(signature(launches))
        assert_dense(got, trunk, x, f'frame {i}')
        stats = device.last_stats
        assert not stats.dense
        # Global poolings (squeeze-excitation, image pooling) spread any change everywhere
        # after them, so only "something" and "nothing" are checked here.
        assert (stats.active_fraction > 0) if tiles else stats.active_fraction == 0
    assert frames[0] == frames[1]  # no change, then a change: the same launches
