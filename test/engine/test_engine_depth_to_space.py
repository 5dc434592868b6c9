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
Depth-to-space in the engine: TF's DEPTH_TO_SPACE and PyTorch's pixel shuffle.

Both are lowered as an index copy (no weights): output (y, x) reads one channel of input
position (y // block, x // block). At thresholds 0 the incremental output must equal the dense
model's after every frame of random change sequences (bit-exact for the shuffle alone); the
layer counts no multiply-accumulates, in the eager executor and in the sync-free device mode.
"""

import os

from engine_cases import (
    change_sequence, effective_inputs, max_relative_difference, randomize, SeededChooser)
import pytest
from sparse_perception.engine import (depth_to_space, EngineConfig, IncrementalModel,
                                      UnsupportedOpError)
from sparse_perception.engine.ir import DepthToSpaceAttrs
import torch
from torch import nn
import torch.nn.functional as F

TOLERANCE = 1e-4  # fp32, of the output scale, as test_engine_exact.py


class Shuffle(nn.Module):
    """A depth-to-space in one of its forms: 'module', 'function' or 'tf'."""

    def __init__(self, block, form):
        super().__init__()
        self.block, self.form = block, form
        self.module = nn.PixelShuffle(block)

    def forward(self, x):
        if self.form == 'tf':
            return depth_to_space(x, self.block)  # by its global name, as models call it
        if self.form == 'function':
            return F.pixel_shuffle(x, self.block)
        return self.module(x)


class Upsampler(nn.Module):
    """
    conv -> depth-to-space -> BatchNorm -> act, a conv beside it on the shuffled map, an add.

    The BatchNorm and the activation join the shuffle's epilogue, and the residual add reads
    the shuffled value from another layer.
    """

    def __init__(self, cin, depth, block, order):
        super().__init__()
        self.expand = nn.Conv2d(cin, depth * block * block, 3, padding=1)
        self.shuffle = Shuffle(block, order)
        self.norm = nn.BatchNorm2d(depth)
        self.refine = nn.Conv2d(depth, depth, 3, padding=1)
        self.head = nn.Conv2d(depth, 3, 1)

    def forward(self, x):
        y = self.shuffle(self.expand(x))
        y = F.relu6(self.norm(y))
        return self.head(y + F.silu(self.refine(y)))


def check_sequence(model, x0, sequence, config):
    """Run x0 (dense) then the sequence; compare with the dense model after every frame."""
    inc = IncrementalModel(model, config)
    state = inc.new_state()
    seen = [x0] + effective_inputs(x0, sequence)
    for i, ((frame, tiles), x) in enumerate(zip([(x0, None)] + sequence, seen)):
        got = inc(frame, tiles, state)
        with torch.no_grad():
            want = model(x)
        assert got.shape == want.shape, f'frame {i}'
        diff = max_relative_difference(got, want)
        assert diff <= TOLERANCE, f'frame {i}: max relative difference {diff:.3g}'
    return inc


def test_depth_to_space_is_tf_order():
    block, depth = 3, 5
    x = torch.randn(1, block * block * depth, 4, 7)
    out = depth_to_space(x, block)
    assert out.shape == (1, depth, 12, 21)
    for c, i, j in [(0, 0, 0), (4, 2, 1), (2, 1, 2)]:
        assert torch.equal(out[0, c, i::block, j::block], x[0, (i * block + j) * depth + c])
    # The same movement as PyTorch's pixel shuffle once the channels are reordered.
    torch_order = x.view(1, block * block, depth, 4, 7).transpose(1, 2).reshape(x.shape)
    assert torch.equal(out, F.pixel_shuffle(torch_order, block))
    with pytest.raises(ValueError, match='45 channels do not split into blocks of 2x2'):
        depth_to_space(x, 2)


@pytest.mark.parametrize('order', ['module', 'function', 'tf'])
@pytest.mark.parametrize('block', [2, 3])
def test_shuffle_alone_is_bit_exact(order, block):
    model = Shuffle(block, order).eval()
    x0 = torch.randn(1, 7 * block * block, 5, 7)
    c = SeededChooser(block)
    inc = IncrementalModel(model, EngineConfig(tile=2))
    state = inc.new_state()
    assert torch.equal(inc(x0, None, state), model(x0))
    sequence = change_sequence(c, x0, 4)
    for (frame, tiles), x in zip(sequence, effective_inputs(x0, sequence)):
        assert torch.equal(inc(frame, tiles, state), model(x))  # x * 1 plus zeros


@pytest.mark.parametrize('order', ['module', 'function', 'tf'])
@pytest.mark.parametrize('block, size, seed', [(2, (13, 11), 0), (3, (9, 7), 1),
                                               (2, (6, 15), 2)])
def test_networks_with_shuffles_match_dense(order, block, size, seed):
    model = randomize(Upsampler(3, 5, block, order), seed).eval()
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(1, 3, *size, generator=g)
    c = SeededChooser(seed)
    for config in (EngineConfig(tile=4), EngineConfig(tile=2, layer_dense_fallback=1.0,
                                                      window_dense_fallback=1.0)):
        check_sequence(model, x0, change_sequence(c, x0, 5), config)


def shuffle_layers(inc, x):
    program = inc.plan_for(x).program
    return [layer for layer in program.layers if layer.kind == 'depth_to_space']


@pytest.mark.parametrize('order, expected', [('module', 'torch'), ('function', 'torch'),
                                             ('tf', 'tf')])
def test_shuffle_lowers_to_an_index_copy(order, expected):
    model = randomize(Upsampler(3, 5, 2, order), 0).eval()
    x = torch.randn(1, 3, 8, 10)
    inc = IncrementalModel(model)
    (layer,) = shuffle_layers(inc, x)
    assert layer.attrs == DepthToSpaceAttrs(block=2, order=expected)  # no weights
    assert [s.op for s in layer.epilogue] == ['affine', 'hardtanh']  # BatchNorm, ReLU6
    (run,) = [r for r in inc.plan_for(x).runs if r.layer is layer]
    assert run.kind == 'depth_to_space'


def test_shuffle_counts_no_macs():
    model = randomize(Upsampler(3, 5, 3, 'tf'), 0).eval()
    inc = IncrementalModel(model)
    x = torch.randn(1, 3, 8, 10)
    state = inc.new_state()
    inc(x, None, state)
    (layer,) = shuffle_layers(inc, x)
    names = [s.name for s in inc.last_stats.layers]
    index = next(i for i, name in enumerate(names) if name in layer.names)
    stats = inc.last_stats.layers[index]
    assert stats.positions == 24 * 30 and stats.macs == stats.dense_macs == 0
    # The frame's MACs are the three convolutions' and nothing else.
    convs = 80 * (3 * 9 * 45) + 720 * (5 * 9 * 5) + 720 * (5 * 3)
    assert inc.last_stats.dense_macs == convs
    x2 = x.clone()
    x2[..., :2, :2] += 1
    tiles = torch.zeros(4, 5, dtype=torch.bool)
    tiles[0, 0] = True
    inc(x2, tiles, state)
    stats = inc.last_stats.layers[index]
    assert stats.mode == 'sparse' and stats.active > 0 and stats.macs == 0


def test_pixel_unshuffle_is_still_unsupported():
    model = nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(12, 4, 1)).eval()
    with pytest.raises(UnsupportedOpError, match=r'\(PixelUnshuffle\).*1 convolution'):
        IncrementalModel(model)(torch.randn(1, 3, 8, 8))


@pytest.mark.skipif(os.environ.get('TRITON_INTERPRET') != '1',
                    reason='the kernels run on CPU tensors only under the interpreter')
@pytest.mark.parametrize('order', ['function', 'tf'])
def test_kernels_backend_runs_the_shuffle(order):
    model = randomize(Upsampler(3, 5, 2, order), 3).eval()
    x0 = torch.randn(1, 3, 7, 9)
    sequence = change_sequence(SeededChooser(3), x0, 3)
    inc = check_sequence(model, x0, sequence, EngineConfig(backend='kernels'))
    assert inc.backend.name == 'kernels'


@pytest.mark.skipif(os.environ.get('TRITON_INTERPRET') != '1',
                    reason='the kernels run on CPU tensors only under the interpreter')
@pytest.mark.parametrize('order, block', [('module', 2), ('tf', 3)])
@pytest.mark.slow
def test_device_mode_runs_the_shuffle_as_a_copy(order, block):
    model = randomize(Upsampler(3, 5, block, order), 4).eval()
    x0 = torch.randn(1, 3, 5, 6)
    sequence = change_sequence(SeededChooser(4), x0, 3)
    device = IncrementalModel(model, EngineConfig(tile=2), execution='device', graph=False)
    state = device.new_state()
    for i, ((frame, tiles), x) in enumerate(zip([(x0, None)] + sequence,
                                                [x0] + effective_inputs(x0, sequence))):
        got = device(frame, tiles, state)
        with torch.no_grad():
            want = model(x)
        diff = max_relative_difference(got, want)
        assert diff <= TOLERANCE, f'frame {i}: max relative difference {diff:.3g}'
    shuffles = [s for s in device.last_stats.layers if s.kind == 'depth_to_space']
    assert len(shuffles) == 1 and shuffles[0].dense_macs == shuffles[0].macs == 0
    launched = {spec.kind for spec in device.plan_for(x0).runs}
    assert 'depth_to_space' in launched and 'conv_transpose' not in launched
