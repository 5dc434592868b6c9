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
Every registered model in the sync-free device mode on CUDA, replayed as a CUDA graph.

Each network at its own input size (the fully convolutional DeepLab at 576x768): a dense
frame, then frames with a few changed tiles and one without change, each equal to the dense
fp32 network (thresholds 0), the incremental frames replayed from a captured CUDA graph.
Models missing here skip (`sparse-perception models fetch`, the shared folder).
"""

from device_checks import assert_dense, change_map, patched, TILE
import pytest
from sparse_perception.engine import IncrementalModel
from sparse_perception.models.registry import (engine_networks, load_model, ModelNotFound,
                                               REGISTRY)
from sparse_perception.shared_data import shared_root
from support import IN_CI
import torch

# TF32 off: the dense references are float32 (conftest's no_tf32 says why).
pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures('no_tf32')]


def networks():
    for name in REGISTRY:
        if name == 'blazepose_coco17':  # blazepose's networks
            continue
        yield pytest.param(name, 'network', id=f'{name}-network')
        if REGISTRY[name].detector:
            yield pytest.param(name, 'detector', id=f'{name}-detector')


@pytest.mark.parametrize('name, which', list(networks()))
def test_registered_network_on_cuda_graphs_equals_dense(name, which):
    try:
        directory = shared_root() / 'models' / 'coral'
        model = load_model(name, 'cuda', models_dir=directory if directory.is_dir() else None)
    except ModelNotFound as exc:  # the Coral models (shared) or an unfetched model cache
        if IN_CI:
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    ((_, trunk, size),) = [n for n in engine_networks(model) if n[0] == which]
    if which == 'network' and model.input_size is None:
        size = (576, 768)
    g = torch.Generator().manual_seed(len(name))
    x0 = (torch.rand(1, 3, *size, generator=g) * 2 - 1).cuda()
    device = IncrementalModel(trunk, execution='device')
    assert device.use_graph
    state = device.new_state()
    assert_dense(device(x0, None, state), trunk, x0, 'dense frame')
    x = x0
    for i, tiles in enumerate([[(0, 1)], [], [(size[0] // TILE - 1, 3)], [(1, 1), (2, 5)]], 1):
        x = patched(x, tiles, 0.5 - 0.25 * i)
        assert_dense(device(x, change_map(size, tiles), state), trunk, x, f'frame {i}')
        assert not device.last_stats.dense
    stream = state.executor_state
    assert stream.graphs and not stream.graph_failed  # replayed from a captured graph
