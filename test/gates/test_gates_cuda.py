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

"""The glance gate on CUDA: its tile map lives where the network's outputs do."""

import pytest
from sparse_perception import settings as st
from sparse_perception.gates.maker import GateMaker
import torch

pytestmark = pytest.mark.gpu

PERSON = 15  # the Pascal VOC label


def test_the_glance_gate_of_cuda_outputs_is_a_cuda_tile_map(cuda):
    def glance_pass(small):
        ids = torch.zeros(1, *small.shape[-2:], dtype=torch.int64, device=cuda)
        ids[0, :small.shape[-2] // 4] = PERSON  # somebody in the top quarter
        return ids

    values = {'sparsity.gate': 'glance', 'sparsity.gate_margin': 0,
              'sparsity.gate_refresh': 0, 'sparsity.glance_period': 1}
    sparsity = st.replace(st.PerceptionSettings(), values).sparsity
    maker = GateMaker(sparsity, 16, 'class_map', PERSON, glance_pass)
    x = torch.zeros(1, 3, 128, 128, device=cuda)
    people = torch.zeros(1, 128, 128, dtype=torch.int64, device=cuda)
    people[0, 112:] = PERSON
    maker.observe(people, 128, 128)  # last frame: somebody in the bottom tile row
    assert maker.glance(x) is None
    gate = maker.gate(128, 128)
    assert gate.device.type == 'cuda'
    assert gate[:2].all() and gate[7].all() and not gate[2:7].any()


def test_the_learned_gate_runs_on_the_inputs_device(cuda, tmp_path):
    from sparse_perception.gates.learned import CELLS, LearnedGate, network, save, VERSION

    torch.manual_seed(0)
    state = network().state_dict()
    state['tiles.4.bias'].fill_(50.0)  # the last layer's: probability 1 everywhere
    path = save(state, {'version': VERSION, 'tile': 16, 'cells': CELLS}, tmp_path / 'g.pt')
    gate = LearnedGate(path, 16)
    tiles = gate.tiles(torch.rand(1, 3, 96, 160, device=cuda), None, 0.5)
    assert tiles.device.type == 'cuda' and tuple(tiles.shape) == (6, 10) and tiles.all()
    assert next(gate.net.parameters()).device.type == 'cuda'
    # The next frame's motion is taken against the last one, on the same device.
    assert gate.tiles(torch.rand(1, 3, 96, 160, device=cuda), tiles, 0.5).all()
