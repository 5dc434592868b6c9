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
The incremental engine, op by op and contract by contract.

Every supported layer type with its edge cases, errors that name unsupported ops, tile maps,
streams, thresholds and statistics.
"""

import gc
import weakref

from engine_cases import ImagePoolCat, Interpolate, Pad, randomize, SqueezeExcite
import numpy as np
import pytest
from sparse_perception.change import ChangeDetector
from sparse_perception.engine import (EngineConfig, EngineError, IncrementalModel, ops,
                                      parse_layer_thresholds, UnsupportedOpError)
from sparse_perception.engine.executor import MAX_PLANS
import torch
from torch import nn
import torch.nn.functional as F

TOLERANCE = 1e-4


@torch.no_grad()
def run_and_compare(model, shape=(1, 3, 21, 26), frames=4, tile=4, seed=0, config=None):
    """Dense first frame, then frames that change one random tile block; compare each."""
    randomize(model, seed).eval()
    g = torch.Generator().manual_seed(seed)
    inc = IncrementalModel(model, config or EngineConfig(tile=4))
    state = inc.new_state()
    x = torch.randn(shape, generator=g)
    assert_close(inc(x, None, state), model(x))
    _, _, h, w = shape
    th, tw = -(-h // tile), -(-w // tile)
    for _ in range(frames):
        tiles = torch.zeros(th, tw, dtype=torch.bool)
        y0 = int(torch.randint(0, th, (1,), generator=g))
        x0 = int(torch.randint(0, tw, (1,), generator=g))
        tiles[y0:y0 + 2, x0:x0 + 1] = True
        mask = tiles.repeat_interleave(tile, 0).repeat_interleave(tile, 1)[:h, :w]
        x = torch.where(mask, x + torch.randn(shape, generator=g), x)
        assert_close(inc(x, tiles, state), model(x))
    return inc


def assert_close(got, expected):
    if isinstance(expected, (tuple, list)):
        for a, b in zip(got, expected):
            assert_close(a, b)
        return
    assert got.shape == expected.shape
    got, expected = got.detach(), expected.detach()  # (a model run outside no_grad)
    if not expected.dtype.is_floating_point:
        assert torch.equal(got, expected)
        return
    scale = max(float(expected.abs().max()), 1e-6)
    assert float((got - expected).abs().max()) <= TOLERANCE * scale


@pytest.mark.filterwarnings('ignore:Using padding=.same. with even kernel')
@pytest.mark.parametrize('kernel, stride, dilation, groups, padding', [
    (1, 1, 1, 1, 0), (1, 2, 1, 1, 0), (3, 1, 1, 1, 1), (3, 2, 1, 1, 1), (5, 1, 2, 1, 4),
    (7, 2, 1, 1, 3), (3, 1, 1, 3, 1), (3, 2, 2, 3, 2), (5, 1, 1, 1, 'same'), (4, 1, 1, 1, 'same'),
    (3, 1, 1, 1, 0), (2, 2, 1, 1, 0)])
def test_conv2d(kernel, stride, dilation, groups, padding):
    model = nn.Sequential(nn.Conv2d(3, 6, kernel, stride, padding, dilation, groups))
    run_and_compare(model)


@pytest.mark.filterwarnings('ignore:Using padding=.same. with even kernel')
@pytest.mark.parametrize('channels, kernel, stride, dilation, padding', [
    (3, 3, 2, 1, 1), (3, 3, 1, 2, 2), (1, 4, 1, 1, 'same'), (2, 2, 2, 1, 0), (1, 5, 1, 1, 2),
    (3, 3, 1, 1, 0)])
def test_a_convolution_reading_few_values_computes_exactly_its_changed_positions(
        channels, kernel, stride, dilation, padding):
    # At most POINT_TAPS values per output (a stem on the frame): each changed output's taps
    # are gathered, so no tile rounds the work up.
    model = nn.Sequential(nn.Conv2d(channels, 6, kernel, stride, padding, dilation), nn.ReLU6())
    inc = run_and_compare(model, shape=(1, channels, 20, 26))
    stats = inc.last_stats.layers[0]
    assert stats.mode == 'sparse' and stats.computed == stats.active < stats.positions


@pytest.mark.parametrize('mode', ['reflect', 'replicate', 'circular'])
def test_conv2d_padding_modes(mode):
    run_and_compare(nn.Sequential(nn.Conv2d(3, 4, 3, 1, 1, padding_mode=mode), nn.ReLU()))


@pytest.mark.parametrize('kernel, stride, padding, output_padding, dilation, groups', [
    (2, 2, 0, 0, 1, 1), (3, 2, 1, 1, 1, 1), (4, 2, 1, 0, 1, 3), (3, 1, 1, 0, 2, 1),
    (1, 2, 0, 1, 1, 1), (5, 3, 2, 2, 1, 1),
    # Strides unequal across axes: tiles are a multiple of both (their least common multiple)
    ((4, 3), (4, 3), 0, 0, 1, 1), ((3, 2), (3, 2), 1, 0, 1, 1)])
def test_conv_transpose2d(kernel, stride, padding, output_padding, dilation, groups):
    model = nn.Sequential(nn.ConvTranspose2d(3, 6, kernel, stride, padding, output_padding,
                                             groups, True, dilation))
    run_and_compare(model)


def test_batchnorm_folds_and_standalone_batchnorm():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4),
                          nn.ReLU6(), nn.BatchNorm2d(4))
    inc = run_and_compare(model)
    kinds = [layer.kind for layer in inc.last_stats.layers]
    assert kinds == ['conv']  # conv + bn + relu6 + bn: one fused layer


@pytest.mark.parametrize('act', [
    nn.ReLU(), nn.ReLU6(), nn.Hardswish(), nn.Hardsigmoid(), nn.Sigmoid(), nn.SiLU(), nn.Tanh(),
    nn.LeakyReLU(0.1), nn.GELU(), nn.ELU(), nn.Mish(), nn.Softplus(), nn.PReLU(4),
    nn.Hardtanh(-2, 3)])
def test_activations(act):
    run_and_compare(nn.Sequential(nn.Conv2d(3, 4, 1), act))


@pytest.mark.parametrize('fn', [
    F.relu, torch.relu, F.relu6, F.hardswish, F.hardsigmoid, torch.sigmoid, F.silu, torch.tanh,
    lambda x: F.leaky_relu(x, 0.3), lambda x: F.hardtanh(x, -1.0, 0.5),
    lambda x: x.clamp(min=-0.5), lambda x: torch.clamp(x, -1, 1), lambda x: x.sigmoid(),
    lambda x: F.gelu(x, approximate='tanh'), lambda x: F.elu(x, 0.5)])
def test_functional_activations(fn):
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            return fn(self.conv(x))
    run_and_compare(M())


def test_elementwise_arithmetic_and_constants():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 4, 3, padding=1)
            self.b = nn.Conv2d(3, 4, 1)
            self.scale = nn.Parameter(torch.randn(1, 4, 1, 1))

        def forward(self, x):
            a, b = self.a(x), self.b(x)
            y = a * b + (a - b) / 2.0
            y = 1.0 - y * self.scale
            y = -y + torch.add(a, 0.5)
            z = torch.mul(y, torch.sigmoid(b))
            z = z / (torch.sigmoid(a) + 1.0)
            z += a
            return z
    run_and_compare(M())


def test_resnet_downsample_block_and_input_normalisation():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer('mean', torch.tensor([0.4, 0.5, 0.6]).view(1, 3, 1, 1))
            self.register_buffer('std', torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1))
            self.a = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8),
                                   nn.ReLU(), nn.Conv2d(8, 8, 3, 1, 1, bias=False),
                                   nn.BatchNorm2d(8))
            self.b = nn.Sequential(nn.Conv2d(3, 8, 1, 2, bias=False), nn.BatchNorm2d(8))

        def forward(self, x):
            x = (x - self.mean) / self.std
            return F.relu(self.a(x) + self.b(x))
    inc = run_and_compare(Block())
    assert len(inc.last_stats.layers) == 4  # normalise, conv+bn+relu, 1x1 s2, conv+bn+add+relu


@pytest.mark.parametrize('pool', [
    nn.MaxPool2d(2), nn.MaxPool2d(3, 2, 1), nn.MaxPool2d(3, 2, 1, ceil_mode=True),
    nn.MaxPool2d(3, 1, 1, dilation=2), nn.AvgPool2d(2), nn.AvgPool2d(3, 2, 1),
    nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False),
    nn.AvgPool2d(3, 2, 1, divisor_override=4), nn.AvgPool2d(2, ceil_mode=True),
    nn.AdaptiveAvgPool2d((7, 13))])
def test_pooling(pool):
    run_and_compare(nn.Sequential(nn.Conv2d(3, 4, 1), pool), shape=(1, 3, 21, 26))


def test_functional_pooling():
    class M(nn.Module):
        def forward(self, x):
            return F.avg_pool2d(F.max_pool2d(x, 3, 2, 1), 2, ceil_mode=True)
    run_and_compare(M(), shape=(1, 2, 19, 23))


@pytest.mark.parametrize('kwargs', [
    {'scale_factor': 2, 'mode': 'nearest'}, {'scale_factor': 2, 'mode': 'bilinear'},
    {'scale_factor': 2, 'mode': 'bilinear', 'align_corners': True},
    {'size': (9, 31), 'mode': 'bicubic'}, {'scale_factor': 0.5, 'mode': 'bilinear'},
    {'size': (8, 8), 'mode': 'area'}, {'scale_factor': 1.7, 'mode': 'nearest-exact'},
    {'size': (40, 7), 'mode': 'nearest'},
    {'scale_factor': 3, 'mode': 'bilinear', 'align_corners': False,
     'recompute_scale_factor': True}])
def test_resampling(kwargs):
    run_and_compare(nn.Sequential(nn.Conv2d(3, 2, 1), Interpolate(**kwargs)))


@pytest.mark.parametrize('mode, corners', [('bilinear', False), ('bilinear', True),
                                           ('nearest', None), ('bicubic', False)])
def test_large_upsampling_factor_uses_bands(mode, corners):
    # x8 from a 12x10 map: the dense path splits the row product into bands of input rows.
    model = nn.Sequential(nn.Conv2d(3, 4, 3, 4, 1),
                          Interpolate(scale_factor=8, mode=mode, align_corners=corners))
    shape = (1, 3, 48, 40)
    inc = run_and_compare(model, shape=shape, config=EngineConfig(layer_dense_fallback=0))
    from sparse_perception.engine.layers import Resample
    run = next(r for r in inc.plan_for(torch.zeros(shape)).runs if isinstance(r, Resample))
    assert run.bands is not None


@pytest.mark.parametrize('after', ['nothing', 'conv', 'cumsum_tail'])
def test_sparse_resampling_by_rows_and_bands(after):
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.down = nn.Conv2d(3, 4, 3, 4, 1)
            self.conv = nn.Conv2d(4, 2, 3, padding=1)

        def forward(self, x):
            y = F.interpolate(self.down(x), scale_factor=8, mode='bilinear')
            if after == 'conv':
                return self.conv(y)
            if after == 'cumsum_tail':
                return torch.cumsum(y, 1)  # not incremental: a dense tail reads the upsample
            return y
    inc = run_and_compare(M(), shape=(1, 3, 64, 80), frames=5, tile=8)
    modes = [s.mode for s in inc.last_stats.layers if s.kind == 'resample']
    assert modes == ['sparse']


def test_upsample_modules():
    run_and_compare(nn.Sequential(nn.Upsample(scale_factor=2, mode='bilinear'),
                                  nn.UpsamplingNearest2d(scale_factor=2),
                                  nn.UpsamplingBilinear2d(size=(30, 40))))


@pytest.mark.parametrize('pad', [
    nn.ZeroPad2d((1, 2, 0, 3)), nn.ConstantPad2d(2, -0.5), nn.ReflectionPad2d((2, 1, 1, 2)),
    nn.ReplicationPad2d(1), Pad((1, 1, 2, 0), 'circular'), Pad((-1, 2, 1, -2), 'constant', 1.0),
    Pad((3, 0), 'constant')])
def test_padding(pad):
    run_and_compare(nn.Sequential(pad, nn.Conv2d(3, 2, 3)))


@pytest.mark.parametrize('style', ['module', 'functional', 'linear', 'mean'])
def test_squeeze_excitation(style):
    run_and_compare(nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), SqueezeExcite(6, 3, style),
                                  nn.Conv2d(6, 4, 1)))


def test_image_pooling_and_concatenation():
    run_and_compare(nn.Sequential(nn.Conv2d(3, 6, 3, 2, 1), ImagePoolCat(6, 3, 5),
                                  nn.Upsample(scale_factor=2, mode='bilinear')))


@pytest.mark.parametrize('tail', ['softmax', 'log_softmax', 'argmax', 'argmax_keepdim',
                                  'ops_argmax', 'ops_argmax_keepdim'])
def test_positionwise_tails(tail):
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 5, 3, padding=1)

        def forward(self, x):
            y = self.conv(x)
            if tail == 'softmax':
                return torch.softmax(y, dim=1)
            if tail == 'log_softmax':
                return nn.functional.log_softmax(y, 1)
            if tail.startswith('ops_'):
                return ops.argmax(y, 1, keepdim=tail.endswith('keepdim'))
            return y.argmax(1, keepdim=tail == 'argmax_keepdim')
    inc = run_and_compare(M())
    assert inc.last_stats.layers[-1].kind == 'positionwise'


@pytest.mark.parametrize('layout', ['nchw', 'channels_last'])
@pytest.mark.parametrize('dim,keepdim', [(1, False), (1, True), (-1, False), (0, True)])
def test_ops_argmax_is_torch_argmax(layout, dim, keepdim):
    g = torch.Generator().manual_seed(0)
    # Few distinct values: most positions hold ties, where the first index must win.
    x = torch.randint(0, 3, (2, 21, 17, 30), generator=g).float()
    x[0, 4, 3, 5] = float('nan')  # NaN counts as the maximum in both
    x[1, :, 0, 0] = float('nan')
    if layout == 'channels_last':
        x = x.contiguous(memory_format=torch.channels_last)
    assert torch.equal(ops.argmax(x, dim, keepdim), x.argmax(dim, keepdim=keepdim))
    half = torch.randn(1, 21, 9, 11, generator=g).half()
    assert torch.equal(ops.argmax(half, 1), half.argmax(1))


def test_a_final_class_argmax_sees_every_score_recomputed_under_thresholds():
    # Scores read only by the final arg-max are not held back by a threshold: the classes are
    # those of the recomputed scores, as when the arg-max ran densely after the engine.
    scores = randomize(nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(),
                                     nn.Conv2d(6, 4, 3, padding=1),
                                     nn.Upsample(scale_factor=2, mode='bilinear')), 3).eval()

    class Classes(nn.Module):
        def __init__(self):
            super().__init__()
            self.scores = scores

        def forward(self, x):
            return ops.argmax(self.scores(x), 1)
    config = EngineConfig(tile=4, threshold_scale=0.3)
    fused, plain = IncrementalModel(Classes().eval(), config), IncrementalModel(scores, config)
    s_fused, s_plain = fused.new_state(), plain.new_state()
    g = torch.Generator().manual_seed(4)
    x = torch.randn(1, 3, 16, 20, generator=g)
    assert torch.equal(fused(x, None, s_fused), plain(x, None, s_plain).argmax(1))
    held = 0
    for _ in range(6):
        tiles = torch.rand(4, 5, generator=g) < 0.4
        step = tiles.repeat_interleave(4, 0).repeat_interleave(4, 1)
        x = x + 0.3 * step * torch.randn(x.shape, generator=g)
        got = fused(x, tiles, s_fused)
        want = plain(x, tiles, s_plain).argmax(1)
        assert torch.equal(got, want)
        first = fused.last_stats.layers[0]
        held += first.active - first.changed
    assert held > 0, 'the thresholds held nothing back: the test needs them to'


@torch.no_grad()
@pytest.mark.parametrize('where', ['left', 'middle', 'right', 'two places', 'everywhere'])
def test_a_large_upsampling_recomputes_between_the_changed_columns(where):
    # A large upsampling runs in bands of output rows, and there only between the first and
    # the last changed column: the rest of those rows keep their cached scores, which are
    # the scores of this frame too.
    class Upsampled(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 5, 3, padding=1)
            self.head = nn.Conv2d(5, 2, 1)

        def forward(self, x):
            return self.head(F.interpolate(self.conv(x), scale_factor=8, mode='bilinear'))
    model = randomize(Upsampled(), 5).eval()
    inc = IncrementalModel(model, EngineConfig(tile=4))
    state = inc.new_state()
    g = torch.Generator().manual_seed(6)
    x = torch.randn(1, 3, 12, 24, generator=g)
    inc(x, None, state)
    columns = {'left': [0], 'middle': [2], 'right': [5], 'two places': [1, 4],
               'everywhere': range(6)}[where]
    for row in range(3):
        tiles = torch.zeros(3, 6, dtype=torch.bool)
        tiles[row, list(columns)] = True
        step = tiles.repeat_interleave(4, 0).repeat_interleave(4, 1)
        x = x + step * torch.randn(x.shape, generator=g)
        torch.testing.assert_close(inc(x, tiles, state), model(x), rtol=1e-5, atol=1e-5)
        layer = next(s for s in inc.last_stats.layers if s.kind == 'resample')
        assert layer.mode == 'sparse'
        # Input columns whose scores moved: the tiles', and the reach of the convolution and
        # of the bilinear taps.
        spanned = min(24, (max(columns) - min(columns) + 1) * 4 + 3)
        assert 0 < layer.computed <= layer.positions * spanned / 24


class _UpsampledClasses(nn.Module):
    """Class scores at 1/8 of the output, upsampled and reduced to the class map."""

    def __init__(self, mode='bilinear', tie=False):
        super().__init__()
        self.mode = mode
        self.conv = nn.Conv2d(3, 4, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1],
                                                 [-1, -1, -1]]).view(4, 3, 1, 1))
            self.conv.bias.zero_()
            if tie:  # classes 1 and 3 score the same everywhere
                self.conv.weight[3] = self.conv.weight[1]

    def forward(self, x):
        scores = F.interpolate(self.conv(x), scale_factor=8, mode=self.mode)
        return ops.argmax(scores, 1)


def _smooth_frame(g: torch.Generator) -> torch.Tensor:
    """Return a frame whose class map has large regions, as a segmentation network's has."""
    coarse = torch.randn(1, 3, 3, 4, generator=g) * 4
    return F.interpolate(coarse, size=(12, 16), mode='bilinear')


@torch.no_grad()
@pytest.mark.parametrize('case', ['regions', 'tied classes', 'not a number', 'everywhere'])
def test_a_class_argmax_scores_only_positions_near_a_class_boundary(case):
    # The arg-max of upsampled scores is the class every tap ranks first where the taps
    # agree by a margin: only the other positions get their scores computed, and the class
    # map is still the one torch computes (ties to the first class, NaN as the maximum).
    model = _UpsampledClasses(tie=case == 'tied classes').eval()
    inc = IncrementalModel(model, EngineConfig(tile=4))
    state = inc.new_state()
    g = torch.Generator().manual_seed(8)
    x = _smooth_frame(g)
    assert torch.equal(inc(x, None, state), model(x))
    # The upsampled scores are never stored: their cache is a placeholder of pad rows.
    (scores,) = state.plan.unkept
    assert state.caches[scores].shape == (3, 4)
    scored = active = 0
    for frame in range(4):
        tiles = torch.zeros(3, 4, dtype=torch.bool)
        tiles[frame % 3, frame % 4] = True
        if case == 'everywhere':
            tiles[:] = True
        step = tiles.repeat_interleave(4, 0).repeat_interleave(4, 1)
        x = x + step * _smooth_frame(g)
        if case == 'not a number' and frame == 2:
            x[0, 1, 5, 6] = float('nan')
        assert torch.equal(inc(x, tiles, state), model(x))
        upsampling, classes = inc.last_stats.layers[-2:]
        assert (upsampling.kind, classes.kind) == ('resample', 'positionwise')
        assert upsampling.computed == upsampling.macs == 0  # the arg-max computed its part
        scored += classes.computed
        active += classes.active
        assert classes.macs == pytest.approx(
            classes.computed * (upsampling.dense_macs + classes.dense_macs) / classes.positions)
    assert active > 0
    if case in ('regions', 'everywhere'):
        assert scored < active / 2, (scored, active)


@torch.no_grad()
def test_a_class_argmax_after_bicubic_upsampling_reads_every_score():
    # Bicubic weights go below zero: a class every tap ranks first may lose the weighted
    # sum, so the upsampling computes its scores and the arg-max reads them all.
    model = _UpsampledClasses('bicubic').eval()
    inc = IncrementalModel(model, EngineConfig(tile=4))
    state = inc.new_state()
    g = torch.Generator().manual_seed(9)
    x = _smooth_frame(g)
    assert torch.equal(inc(x, None, state), model(x))
    tiles = torch.zeros(3, 4, dtype=torch.bool)
    tiles[1, 2] = True
    x = x + tiles.repeat_interleave(4, 0).repeat_interleave(4, 1) * _smooth_frame(g)
    assert torch.equal(inc(x, tiles, state), model(x))
    upsampling, classes = inc.last_stats.layers[-2:]
    assert upsampling.computed > 0
    assert classes.computed == classes.active
    assert not state.plan.unkept


@torch.no_grad()
def test_a_stream_starts_from_caches_without_the_scores_the_argmax_computes():
    model = _UpsampledClasses().eval()
    g = torch.Generator().manual_seed(10)
    x = _smooth_frame(g)
    source = IncrementalModel(model, EngineConfig(tile=4))
    source_state = source.new_state()
    source(x, None, source_state)
    target = IncrementalModel(model, EngineConfig(tile=4))
    state = target.new_state()
    target.start_from(x, source_state.caches, state)
    tiles = torch.zeros(3, 4, dtype=torch.bool)
    tiles[2, 1] = True
    x = x + tiles.repeat_interleave(4, 0).repeat_interleave(4, 1) * _smooth_frame(g)
    assert torch.equal(target(x, tiles, state), model(x))
    # A kept value's cache of the wrong size is refused, naming what to pass.
    wrong = [c[:-1] if i not in state.plan.unkept else c
             for i, c in enumerate(source_state.caches)]
    with pytest.raises(EngineError, match='pass the caches of an engine after a dense frame'):
        target.start_from(x, wrong, target.new_state())


def test_dense_tail_runs_after_the_last_layer():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 5, 3, padding=1)
            self.fc = nn.Linear(5, 3)

        def forward(self, x):
            y = self.conv(x)
            pooled = torch.flatten(F.adaptive_avg_pool2d(y, 1), 1)
            top = y.max(dim=1).values  # not incremental: runs densely as a tail
            return self.fc(pooled), top.sum(), y
    run_and_compare(M())


def test_in_place_ops_in_a_dense_tail_leave_the_caches_alone():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            y = self.conv(x)
            return torch.cumsum(y, 1).clamp_(min=0), y
    run_and_compare(M())


def test_unsupported_op_is_named():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = nn.GroupNorm(2, 4)
            self.conv = nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            return self.conv(self.norm(x))
    inc = IncrementalModel(M().eval())
    with pytest.raises(UnsupportedOpError, match=r"module 'norm' \(GroupNorm\).*1 convolution"):
        inc(torch.randn(1, 4, 8, 8))


def test_in_place_ops_on_tensors_read_again_are_refused():
    class Aliasing(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            y = self.conv(x)
            z = y.relu_()  # eager: y is now relu'd too
            return y + z
    with pytest.raises(UnsupportedOpError, match="changes 'conv' in place"):
        IncrementalModel(Aliasing().eval())(torch.randn(1, 3, 8, 8))
    # The usual in-place activations in a chain are fine.
    run_and_compare(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(4, 2, 1), nn.Hardswish(inplace=True)))


def test_in_place_ops_through_an_alias_are_refused():
    class ThroughAlias(nn.Module):
        def __init__(self, alias):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.alias = alias
            self.act = nn.ReLU(inplace=True)

        def forward(self, x):
            y = self.conv(x)
            return self.act(self.alias(y)) + y  # eager: 2 * relu(y), as alias(y) is y

    for alias in (nn.Identity(), nn.Dropout(0.1)):
        with pytest.raises(UnsupportedOpError, match="changes 'alias' in place, which 'add'"):
            IncrementalModel(ThroughAlias(alias).eval())(torch.randn(1, 3, 8, 8))


class _Head(nn.Module):
    """A convolution, then ``fn`` of its output (what the cases below vary)."""

    def __init__(self, fn, channels=4):
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 3, padding=1)
        self.fn = fn

    def forward(self, x):
        return self.fn(self, self.conv(x))


@pytest.mark.parametrize('fn', [
    # The tuple a max(dim) or chunk gives reads the convolution's output; fusing the ReLU
    # into the convolution made them read relu(y) (off by 0.1 and 1.0).
    lambda m, y: (torch.relu(y), y.max(1)[0]),
    lambda m, y: (torch.relu(y), y.chunk(2, 1)[1]),
    # A 1-D constant runs along the width; it was taken per channel (off by 0.2).
    lambda m, y: y + torch.linspace(-1, 1, 26),
    # Division with rounding (ignored: off by 0.03), antialiased resampling (off by 1.2).
    lambda m, y: torch.div(y, 0.3, rounding_mode='floor'),
    lambda m, y: F.interpolate(y, scale_factor=0.5, mode='bilinear', antialias=True),
    # An index that reorders channels is no reshape (off by 1.1).
    lambda m, y: y * y.mean((2, 3), keepdim=True)[:, [1, 0, 3, 2]],
    # A float64 constant makes the result float64 (failed inside index_copy_), and an
    # arg-max's classes plus one failed in the epilogue: both run in the dense tail now.
    lambda m, y: y * torch.ones(1, 4, 1, 1, dtype=torch.float64),
    lambda m, y: y.argmax(1, keepdim=True) + 1,
], ids=['max', 'chunk', 'width constant', 'floor division', 'antialias', 'reordering index',
        'float64 constant', 'argmax plus one'])
def test_ops_run_in_the_engine_or_in_the_dense_tail_are_exact(fn):
    run_and_compare(_Head(fn))


def test_an_index_whose_bounds_come_from_a_shape_runs_in_the_engine():
    class Sliced(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.fc = nn.Conv2d(4, 2, 1)

        def forward(self, x):
            v = F.adaptive_avg_pool2d(self.conv(x), 1)
            return self.fc(v[:, :v.shape[1]])  # refused as an index from the image before

    run_and_compare(Sliced())


def test_values_read_into_python_are_not_kept_as_constants():
    class Normalised(nn.Module):
        def __init__(self, then_conv):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.conv2 = nn.Conv2d(4, 2, 1) if then_conv else None

        def forward(self, x):
            y = self.conv(x)
            y = y / (y.abs().amax().item() + 1e-6)  # this frame's maximum, every frame
            return y if self.conv2 is None else self.conv2(y)

    run_and_compare(Normalised(False))  # the division runs densely (was off by 0.03)
    with pytest.raises(UnsupportedOpError, match=r"module 'conv2' \(Conv2d\)"):
        IncrementalModel(Normalised(True).eval())(torch.randn(1, 3, 8, 8))

    class ReadAndActivated(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.fc = nn.Conv2d(4, 1, 1)

        def forward(self, x):
            g = self.fc(F.adaptive_avg_pool2d(self.conv(x), 1))
            return torch.relu(g), g.item()  # the ReLU fused into fc made item() read relu(g)

    model = randomize(ReadAndActivated(), 0).eval()
    with torch.no_grad():
        model.fc.bias.fill_(-5.0)
    x = torch.randn(1, 3, 8, 8)
    read = model(x)[1]
    assert read < 0 and IncrementalModel(model)(x)[1] == pytest.approx(read, abs=1e-5)


def test_forward_hooks_and_subclasses_with_their_own_forward_are_refused():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 2, 1)).eval()
    handle = model[0].register_forward_hook(lambda module, args, out: torch.relu(out))
    with pytest.raises(EngineError, match=r"module '0' \(Conv2d\) has forward hooks"):
        IncrementalModel(model)
    with pytest.raises(EngineError, match=r"module '0' \(Conv2d\) has forward hooks"):
        IncrementalModel(torch.fx.symbolic_trace(model))  # a traced model's calls skip them too
    handle.remove()
    IncrementalModel(model)

    # A QAT convolution (a leaf for torch.fx, as torch's own modules are) computes with
    # fake-quantised weights; it ran as a float convolution (off by 0.006).
    from torch.ao.nn import qat
    from torch.ao.quantization import get_default_qat_qconfig

    fake = qat.Conv2d(3, 4, 3, padding=1, qconfig=get_default_qat_qconfig('fbgemm'))
    inc = IncrementalModel(nn.Sequential(fake, nn.Conv2d(4, 2, 1)).eval())
    with pytest.raises(UnsupportedOpError, match='a subclass of Conv2d with its own forward'):
        inc(torch.randn(1, 3, 8, 8))


def test_unsupported_tail_raises_when_tails_are_disallowed():
    class M(nn.Module):
        def forward(self, x):
            return torch.cumsum(x, 1)
    inc = IncrementalModel(M().eval(), EngineConfig(allow_dense_tail=False))
    with pytest.raises(UnsupportedOpError, match='cumsum'):
        inc(torch.randn(1, 4, 8, 8))


def test_inputs_the_model_cannot_take_are_named(caplog):
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1)).eval()
    inc = IncrementalModel(model)
    with pytest.raises(EngineError, match=r'x has shape \(1, 3, 0, 10\): no pixels'):
        inc(torch.zeros(1, 3, 0, 10))
    # torch's own message, without the graph it ran (a node dump before).
    with pytest.raises(EngineError, match=r'the model fails on an input of shape \(1, 4, 8, 8\)'
                                          r': .*to have 3 channels, but got 4'):
        inc(torch.zeros(1, 4, 8, 8))
    # A bare 7x7 map over 100x100 may be of 15- or 16-pixel tiles: the engine takes 15 and
    # says so (a 16-pixel detector's change at row 95 was missed without a word).
    state = inc.new_state()
    inc(torch.zeros(1, 3, 100, 100), None, state)
    with caplog.at_level('WARNING'):
        inc(torch.zeros(1, 3, 100, 100), torch.ones(7, 7, dtype=torch.bool), state)
    assert any('a 7x7 tile map over a 100x100 frame fits tiles of 15 to 16 pixels' in
               r.getMessage() for r in caplog.records)


def test_training_mode_and_untraceable_models_are_refused():
    with pytest.raises(EngineError, match='training mode'):
        IncrementalModel(nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)))

    class Branchy(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x
    with pytest.raises(EngineError, match='could not trace Branchy'):
        IncrementalModel(Branchy().eval())


@pytest.mark.parametrize('x, message', [
    (np.zeros((1, 3, 8, 8)), 'torch tensor'), (torch.zeros(2, 3, 8, 8), 'batch 1'),
    (torch.zeros(3, 8, 8), r'expected \(1, C, H, W\)'),
    (torch.zeros(1, 3, 8, 8, dtype=torch.int64), 'float tensor')])
def test_bad_inputs_are_named(x, message):
    inc = IncrementalModel(nn.Conv2d(3, 3, 1).eval())
    with pytest.raises(EngineError, match=message):
        inc(x)


@torch.no_grad()
def test_a_module_without_tensors_runs_where_its_first_input_is():
    # Pools and activations only: no parameter or buffer says where the model lives, so the
    # first input does (its device and float dtype); a later input elsewhere is refused.
    model = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.ReLU(), nn.AvgPool2d(2)).eval()
    inc = IncrementalModel(model)
    state = inc.new_state()
    x = torch.randn(1, 3, 9, 10, dtype=torch.float64)
    got = inc(x, None, state)
    assert got.dtype == torch.float64 and torch.equal(got, model(x))
    x2 = x.clone()
    x2[..., :4, :4] += 1
    tiles = torch.zeros(3, 3, dtype=torch.bool)
    tiles[0, 0] = True
    assert torch.equal(inc(x2, tiles, state), model(x2))
    with pytest.raises(EngineError, match='on meta but the model is on cpu'):
        inc(torch.zeros(1, 3, 9, 10, device='meta'), None, state)
    # With a buffer the module has a place of its own: the input is converted to its dtype.
    bn = nn.Sequential(nn.BatchNorm2d(3)).eval()
    assert IncrementalModel(bn)(x).dtype == torch.float32


@torch.no_grad()
def test_tile_maps_in_every_form():
    model = randomize(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()), 1).eval()
    inc = IncrementalModel(model)
    state = inc.new_state()
    x = torch.randn(1, 3, 20, 30)
    inc(x, None, state)
    x2 = x.clone()
    x2[:, :, 5, 7] += 1
    x2[:, :, 19, 29] += 1  # outside the changed tiles: must be ignored
    tiles = torch.zeros(2, 3, dtype=torch.bool)
    tiles[0, 0] = True  # tile size 10 for 20x30
    for form in (tiles, tiles.numpy()):
        state = inc.new_state()
        inc(x, None, state)
        mask = torch.zeros(20, 30, dtype=torch.bool)
        mask[:10, :10] = True
        assert_close(inc(x2, form, state), model(torch.where(mask, x2, x)))
    # A ChangeMap fixes the tile size (8 here, not the smallest fitting 10).
    det = ChangeDetector(threshold=0.0, tile_size=8)
    det.update(x[0].permute(1, 2, 0).numpy())
    cm = det.update(x2[0].permute(1, 2, 0).numpy())
    state = inc.new_state()
    inc(x, None, state)
    seen = torch.from_numpy(det.reference.numpy()).permute(2, 0, 1)[None]
    assert_close(inc(x2, cm, state), model(seen))
    pixels = torch.zeros(20, 30, dtype=torch.bool)  # a per-pixel mask is a tile size of 1
    pixels[5, 7] = True
    state = inc.new_state()
    inc(x, None, state)
    assert_close(inc(x2, pixels, state), model(torch.where(pixels, x2, x)))


@pytest.mark.parametrize('tiles, message', [
    (torch.zeros(4, 4, dtype=torch.bool), '4x4 tile map does not match a 20x30'),
    (torch.zeros(2, 3), 'dtype'), ('tiles', 'bool'), (torch.zeros(3, dtype=torch.bool), 'bool')])
def test_bad_tile_maps_are_named(tiles, message):
    inc = IncrementalModel(nn.Conv2d(3, 3, 1).eval())
    x = torch.randn(1, 3, 20, 30)
    inc(x)
    with pytest.raises(EngineError, match=message):
        inc(x, tiles)


@torch.no_grad()
def test_streams_are_independent_and_sizes_reinitialise():
    model = randomize(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                                    nn.Conv2d(4, 2, 3, 2)), 3).eval()
    inc = IncrementalModel(model)
    a, b = inc.new_state(), inc.new_state()
    xa, xb = torch.randn(1, 3, 16, 16), torch.randn(1, 3, 16, 16)
    inc(xa, None, a)
    inc(xb, None, b)
    tiles = torch.ones(2, 2, dtype=torch.bool)
    tiles[0, 0] = False
    xa2 = xa + 1
    ya = inc(xa2, tiles, a).clone()
    yb = inc(xb, torch.zeros(2, 2, dtype=torch.bool), b)
    mask = tiles.repeat_interleave(8, 0).repeat_interleave(8, 1)
    assert_close(ya, model(torch.where(mask, xa2, xa)))
    assert_close(yb, model(xb))
    xc = torch.randn(1, 3, 24, 20)  # a new size: the state re-initialises and runs dense
    assert_close(inc(xc, torch.zeros(3, 3, dtype=torch.bool), a), model(xc))
    assert inc.last_stats.dense


@torch.no_grad()
def test_a_stream_of_ever_new_sizes_keeps_few_plans_and_stays_exact():
    # Each input size lowers its own plan (index tables, converted weights): a camera whose
    # frame size keeps changing must not make the engine hold one per size it ever saw.
    model = randomize(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                                    nn.Conv2d(4, 2, 3, 2)), 5).eval()
    inc = IncrementalModel(model)
    plans = []
    sizes = [(16 + 8 * i, 24) for i in range(3 * MAX_PLANS)]
    for height, width in sizes + sizes[:2]:  # the first sizes come back after being dropped
        x = torch.randn(1, 3, height, width)
        assert_close(inc(x), model(x))
        tiles = torch.zeros(-(-height // 8), 3, dtype=torch.bool)
        tiles[0, 1] = True
        x2 = x.clone()
        x2[..., :8, 8:16] += 1
        assert_close(inc(x2, tiles), model(x2))
        plans.append(weakref.ref(inc.plan_for(x)))
    gc.collect()
    assert sum(ref() is not None for ref in plans) <= MAX_PLANS


@torch.no_grad()
def test_dropped_plans_take_torch_fx_s_generated_source_along():
    # torch.fx keeps each generated forward's source for good unless its module says so: a
    # plan per input size (its dense tail's module) would grow it on every rebuild.
    import linecache

    model = randomize(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                                    nn.Conv2d(4, 2, 3, 2)), 5).eval()
    inc = IncrementalModel(model)
    sizes = [(16 + 8 * i, 24) for i in range(MAX_PLANS + 2)]  # each comes back after dropped
    counts = []
    for _ in range(3):
        for height, width in sizes:
            inc(torch.randn(1, 3, height, width))
        gc.collect()
        counts.append(len(linecache.cache))
    assert counts[0] == counts[1] == counts[2]


@torch.no_grad()
def test_a_frame_that_fails_part_way_leaves_the_next_frame_exact():
    model = randomize(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                                    nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                                    nn.Conv2d(4, 2, 3, padding=1)), 7).eval()
    inc = IncrementalModel(model, EngineConfig(tile=4))
    state = inc.new_state()
    x = torch.randn(1, 3, 16, 16)
    inc(x, None, state)
    tiles = torch.zeros(4, 4, dtype=torch.bool)
    tiles[1:3, 1:3] = True
    x2 = x.clone()
    x2[..., 4:12, 4:12] += 1
    run = state.plan.runs[-1]

    def out_of_memory(*args, **kwargs):
        raise RuntimeError('out of memory')

    run.step = out_of_memory  # the last layer fails: those before it took the frame
    with pytest.raises(RuntimeError, match='out of memory'):
        inc(x2, tiles, state)
    del run.step
    # The camera kept still since: the change map sees nothing new, yet the answer is x2's.
    assert_close(inc(x2, torch.zeros(4, 4, dtype=torch.bool), state), model(x2))


def test_output_is_a_view_of_the_cache_until_the_next_frame():
    model = randomize(nn.Sequential(nn.Conv2d(3, 2, 1)), 0).eval()
    inc = IncrementalModel(model)
    x = torch.randn(1, 3, 8, 8)
    y = inc(x)
    kept = y.clone()
    inc(x + 1)
    assert not torch.equal(y, kept)  # documented: overwritten by the next frame


def test_refresh_requests_run_dense():
    model = randomize(nn.Sequential(nn.Conv2d(3, 2, 3)), 0).eval()
    inc = IncrementalModel(model)
    state = inc.new_state()
    x = torch.randn(1, 3, 8, 8)
    inc(x, None, state)
    inc(x, torch.zeros(1, 1, dtype=torch.bool), state)
    assert not inc.last_stats.dense
    state.request_refresh()
    inc(x, torch.zeros(1, 1, dtype=torch.bool), state)
    assert inc.last_stats.dense
    det = ChangeDetector(tile_size=8)
    det.update(x[0, 0].numpy())
    det.request_refresh()
    cm = det.update(x[0, 0].numpy())
    inc(x, cm, state)
    assert inc.last_stats.dense


def test_thresholds_hold_small_changes_and_never_lose_drift():
    conv, reader = nn.Conv2d(1, 1, 1, bias=False), nn.Conv2d(1, 1, 1, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        reader.weight.fill_(1.0)
    model = nn.Sequential(conv, nn.ReLU(), reader).eval()
    inc = IncrementalModel(model, EngineConfig(layer_thresholds={'0': 0.25}))
    state = inc.new_state()
    x = torch.ones(1, 1, 4, 4)
    inc(x, None, state)
    tiles = torch.ones(1, 1, dtype=torch.bool)
    outputs = []
    for step in range(1, 7):  # +0.1 per frame at one pixel
        x = x.clone()
        x[0, 0, 1, 2] = 1 + 0.1 * step
        outputs.append(round(float(inc(x, tiles, state)[0, 0, 1, 2]), 4))
    # Held until the change against the last propagated value exceeds 0.25, then taken.
    assert outputs == [1.0, 1.0, 1.3, 1.3, 1.3, 1.6]
    assert inc.last_stats.layers[0].changed == 1


def test_outputs_are_never_held_back_by_thresholds():
    conv = nn.Conv2d(1, 1, 1, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    inc = IncrementalModel(nn.Sequential(conv).eval(), EngineConfig(threshold_scale=10.0))
    state = inc.new_state()
    x = torch.ones(1, 1, 4, 4)
    inc(x, None, state)
    x2 = x.clone()
    x2[0, 0, 0, 0] = 1.01
    assert float(inc(x2, torch.ones(1, 1, dtype=torch.bool), state)[0, 0, 0, 0]) == \
        pytest.approx(1.01)


@torch.no_grad()
def test_threshold_scale_bounds_the_error_and_zero_is_exact():
    model = randomize(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                    nn.Conv2d(8, 4, 3, padding=1)), 5).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 16, 16, generator=g)
    errors = {}
    for scale in (0.0, 0.05, 0.5):
        inc = IncrementalModel(model, EngineConfig(threshold_scale=scale))
        state = inc.new_state()
        xs = x
        inc(xs, None, state)
        for _ in range(5):
            xs = xs + 0.02 * torch.randn(xs.shape, generator=g)
            y = inc(xs, torch.ones(4, 4, dtype=torch.bool), state)
        ref = model(xs)
        errors[scale] = float((y - ref).abs().max() / ref.abs().max())
    assert errors[0.0] <= TOLERANCE
    assert errors[0.05] < errors[0.5]
    assert errors[0.5] > TOLERANCE  # the knob does something


@torch.no_grad()
def test_global_scale_keeps_a_small_change_from_waking_everything_after_a_pooling():
    model = randomize(nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), SqueezeExcite(6, 3, 'module'),
                                    nn.Conv2d(6, 4, 1)), 3).eval()
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(1, 3, 32, 32, generator=g)
    x1 = x0.clone()
    x1[..., 8:12, 8:12] += 0.05 * torch.randn(1, 3, 4, 4, generator=g)
    tiles = torch.zeros(8, 8, dtype=torch.bool)
    tiles[2, 2] = True
    active, errors = {}, {}
    for scale in (0.0, 0.5):
        inc = IncrementalModel(model, EngineConfig(global_scale=scale))
        state = inc.new_state()
        inc(x0, None, state)
        y = inc(x1, tiles, state)
        active[scale] = inc.last_stats.layers[-1].active_fraction
        ref = model(x1)
        errors[scale] = float((y - ref).abs().max() / ref.abs().max())
    assert errors[0.0] <= TOLERANCE and active[0.0] == 1.0  # exact: the gate woke the map
    assert active[0.5] < 0.1  # the gate held: only the changed region is recomputed
    assert errors[0.5] < 0.01  # held back by a small, bounded amount


def test_global_scale_applies_to_global_poolings_only():
    model = randomize(nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), SqueezeExcite(6, 3, 'mean'),
                                    nn.Conv2d(6, 4, 1)), 3).eval()
    inc = IncrementalModel(model, EngineConfig(threshold_scale=0.01, global_scale=0.2))
    state = inc.new_state()
    inc(torch.randn(1, 3, 16, 16), None, state)
    kinds = [r.kind for r in state.plan.runs]
    for kind, threshold, rms in zip(kinds, state.thresholds, state.rms):
        expected = (0.2 if kind == 'gap' else 0.01) * rms
        assert threshold == pytest.approx(expected), kind
    assert 'gap' in kinds
    inc.reconfigure(EngineConfig(threshold_scale=0.5, global_scale=0.2), state)
    gap = kinds.index('gap')
    assert state.thresholds[gap] == pytest.approx(0.5 * state.rms[gap])  # the larger scale


def test_unknown_layer_threshold_names_are_listed():
    # Before the first frame (no plan yet) against the traced graph, after it the plan's.
    module = nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU()).eval()
    with pytest.raises(EngineError, match="unknown layers \\['nope'\\]; the model's layers "
                                          'are named after its modules: 0, 1$'):
        IncrementalModel(module, EngineConfig(layer_thresholds={'nope': 0.1}))
    inc = IncrementalModel(module, EngineConfig(layer_thresholds={'1': 0.1}))
    assert inc.threshold_names()[:3] == ('input', '0', '1')
    inc(torch.randn(1, 3, 8, 8))
    assert inc.threshold_names()[:2] == ('input', '0')  # the ReLU fused into the convolution
    assert '1' in inc.threshold_names()
    with pytest.raises(EngineError, match="unknown layers \\['nope'\\]; layer names are: 0"):
        inc.reconfigure(EngineConfig(layer_thresholds={'nope': 0.1}))


class _Pooled(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)

    def forward(self, x):
        return self.conv(x).reshape(1, 2, -1).mean(-1)


def test_a_graph_name_that_lowering_folds_is_said_not_fatal(caplog):
    # Before the first frame the traced graph's operations stand for the layers; its output
    # is none. One that lowering folds into another layer is said at the first frame.
    module = _Pooled().eval()
    with pytest.raises(EngineError, match=r"unknown layers \['output'\]"):
        IncrementalModel(module, EngineConfig(layer_thresholds={'output': 0.1}))
    inc = IncrementalModel(module, EngineConfig(layer_thresholds={'reshape': 0.1}))
    with caplog.at_level('WARNING'):
        inc(torch.randn(1, 3, 8, 8))  # (the reshape and the mean run in the dense tail)
    assert [g.layer.names for g in inc.plan_for(torch.randn(1, 3, 8, 8)).layers] == [
        ('conv', 'conv')]
    assert any("layer thresholds for ['reshape'] have no effect" in r.getMessage()
               for r in caplog.records), caplog.records


def test_config_from_settings_and_bad_values():
    from sparse_perception import settings as st
    s = st.replace(st.PerceptionSettings(), {
        'sparsity.scale': 0.5, 'sparsity.layer_thresholds': ['conv1=0.2'],
        'model.backend': 'reference'})
    cfg = EngineConfig.from_settings(s)
    assert cfg.threshold_scale == 0.5 and cfg.layer_thresholds == {'conv1': 0.2}
    assert cfg.backend == 'reference' and cfg.global_scale == 0.0
    cfg = EngineConfig.from_settings(st.replace(s, {'sparsity.global_scale': 0.1}))
    assert cfg.global_scale == 0.1
    with pytest.raises(EngineError, match='global_scale=-1'):
        EngineConfig(global_scale=-1)
    # The settings refuse a malformed override at once; the engine, given one directly, too.
    with pytest.raises(st.SettingError, match="'conv1' must look like 'layer=value'"):
        st.replace(st.PerceptionSettings(), {'sparsity.layer_thresholds': ['conv1']})
    with pytest.raises(EngineError, match="'conv1=-1' must look like 'layer=value'"):
        parse_layer_thresholds(['conv1=-1'])
    with pytest.raises(EngineError, match="'conv1=inf' must look like 'layer=value' with a "
                                          'finite number'):
        parse_layer_thresholds(['conv1=inf'])  # it would hold back every change there
    with pytest.raises(EngineError, match="'conv1' is given twice"):
        parse_layer_thresholds(['conv1=0.1', 'conv1=5'])
    with pytest.raises(EngineError, match='tile=0'):
        EngineConfig(tile=0)


def test_stats_count_work_and_skip_unchanged_layers():
    model = randomize(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                    nn.Conv2d(8, 8, 1)), 0).eval()
    inc = IncrementalModel(model, EngineConfig(profile=True))
    state = inc.new_state()
    x = torch.randn(1, 3, 32, 32)
    inc(x, None, state)
    full = inc.last_stats
    assert full.dense and full.mac_fraction == pytest.approx(1.0)
    assert full.dense_macs == 32 * 32 * (3 * 9 * 8 + 8 * 8)
    x2 = x.clone()
    x2[:, :, 3, 3] += 1
    tiles = torch.zeros(4, 4, dtype=torch.bool)
    tiles[0, 0] = True
    inc(x2, tiles, state)
    s = inc.last_stats
    assert not s.dense and s.input_fraction == pytest.approx(1 / 1024)
    assert [layer.active for layer in s.layers] == [9, 9]
    assert 0 < s.mac_fraction < 0.1 and s.time_ms is not None
    assert all(layer.time_ms is not None for layer in s.layers)
    inc(x2, tiles, state)  # nothing changed inside the tiles this time
    assert [layer.mode for layer in inc.last_stats.layers] == ['skip', 'skip']
    assert inc.last_stats.macs == 0


def test_memory_is_proportional_to_activations():
    model = randomize(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                    nn.Conv2d(8, 4, 3, 2, 1)), 0).eval()
    inc = IncrementalModel(model)
    state = inc.new_state()
    x = torch.randn(1, 3, 32, 32)
    inc(x, None, state)
    expected = 4 * ((32 * 32 + 3) * (3 + 8) + (16 * 16 + 3) * 4)
    assert state.memory_bytes() == expected
    for _ in range(3):
        inc(x + 1, torch.ones(2, 2, dtype=torch.bool), state)
    assert state.memory_bytes() == expected  # not growing with the frame count


@torch.no_grad()
def test_reconfigure_keeps_caches_and_applies_thresholds_next_frame():
    conv, reader = nn.Conv2d(1, 1, 1, bias=False), nn.Conv2d(1, 1, 1, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        reader.weight.fill_(1.0)
    model = nn.Sequential(conv, nn.ReLU(), reader).eval()
    inc = IncrementalModel(model, EngineConfig())
    state = inc.new_state()
    x = torch.ones(1, 1, 4, 4)
    inc(x, None, state)
    tiles = torch.ones(1, 1, dtype=torch.bool)
    x = x.clone()
    x[0, 0, 0, 0] = 1.1
    assert float(inc(x, tiles, state)[0, 0, 0, 0]) == pytest.approx(1.1)  # exact at 0
    inc.reconfigure(EngineConfig(layer_thresholds={'0': 0.25}), state)
    x = x.clone()
    x[0, 0, 0, 0] = 1.2  # 0.1 from the propagated 1.1: now held back
    assert float(inc(x, tiles, state)[0, 0, 0, 0]) == pytest.approx(1.1)
    assert not inc.last_stats.dense and inc.last_stats.layers[0].changed == 0
    inc.reconfigure(EngineConfig(threshold_scale=0.0), state)  # tighter: one dense frame
    assert float(inc(x, tiles, state)[0, 0, 0, 0]) == pytest.approx(1.2)
    assert inc.last_stats.dense
    with pytest.raises(EngineError, match='unknown layers'):
        inc.reconfigure(EngineConfig(layer_thresholds={'nope': 1.0}), state)
    with pytest.raises(EngineError, match='unknown layers'):  # with a plan change, too
        inc.reconfigure(EngineConfig(tile=EngineConfig().tile + 2,
                                     layer_thresholds={'nope': 1.0}), state)
    inc.reconfigure(EngineConfig(tile=EngineConfig().tile + 2), state)  # structural: dense next
    assert state.refresh_requested  # which the state tells before the frame, as above
    inc(x, tiles, state)
    assert inc.last_stats.dense


class _PlusMean(nn.Module):
    """Add each channel's mean over the frame: the pooled value shows in every output."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``x`` plus its global average."""
        return x + x.mean((2, 3), keepdim=True)


@torch.no_grad()
@pytest.mark.parametrize('threshold', [0.0, 0.5])
@pytest.mark.parametrize('pooled', ['features', 'input'])
@pytest.mark.parametrize('held_tiles', [0, 1, 5, 10])
@pytest.mark.parametrize('moved', ['every pixel', 'some pixels', 'none'])
def test_a_frame_with_many_tiles_changed_keeps_what_the_map_and_threshold_held(moved,
                                                                               held_tiles,
                                                                               threshold,
                                                                               pooled):
    # Many tiles set (a moving camera) is stored in one pass over the frame: the tiles the
    # map left out keep their pixels, the input threshold holds small changes as tile by tile
    # does, and a global pooling after it (of the features or of the input itself) updates
    # its running sum. 0, 1 and 5 of 12 tiles held take that path; 10 held (under a quarter
    # set) goes tile by tile, to the same answer.
    layers = [nn.Conv2d(3, 6, 3, padding=1), SqueezeExcite(6, 3, 'module'), nn.Conv2d(6, 4, 1)]
    if pooled == 'input':
        layers.insert(0, _PlusMean())
    model = randomize(nn.Sequential(*layers), 0).eval()
    inc = IncrementalModel(model, EngineConfig(tile=4, layer_thresholds={'input': threshold}))
    state = inc.new_state()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 3, 10, 14, generator=g)
    inc(x, None, state)
    tiles = torch.ones(3, 4, dtype=torch.bool)
    tiles.view(-1)[torch.randperm(12, generator=g)[:held_tiles]] = False
    in_map = tiles.repeat_interleave(4, 0).repeat_interleave(4, 1)[:10, :14]
    for _ in range(3):
        big = {'every pixel': torch.ones(1, 1, 10, 14, dtype=torch.bool),
               'some pixels': torch.rand(1, 1, 10, 14, generator=g) < 0.15,
               'none': torch.zeros(1, 1, 10, 14, dtype=torch.bool)}[moved]
        step = torch.where(big, torch.full_like(x, 2.0), torch.full_like(x, 0.1))
        taken = (big if threshold else torch.ones_like(big)) & in_map  # 0: any change
        held = torch.where(taken, x + step, x)  # what the engine's input holds after the frame
        got = inc(x + step, tiles, state)
        assert_close(got, model(held))
        assert inc.last_stats.input_fraction == pytest.approx(float(taken.float().mean()))
        x = held


def test_a_frame_over_the_dense_fallback_reads_the_whole_input():
    # A moving camera: every pixel moved, but the change map held back the tiles whose change
    # stayed under its threshold. Past the fallback the frame is dense, and dense means the
    # dense result of this frame, not of the input cache with those tiles left stale.
    model = randomize(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                    nn.Conv2d(8, 4, 3, padding=1)), 0).eval()
    inc = IncrementalModel(model, EngineConfig(tile=4, frame_dense_fallback=0.5))
    state = inc.new_state()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 3, 16, 16, generator=g)
    inc(x, None, state)
    x = x + torch.randn(1, 3, 16, 16, generator=g)
    tiles = torch.ones(4, 4, dtype=torch.bool)
    tiles[0, :] = False  # 75% of the tiles: over the fallback
    assert_close(inc(x, tiles, state), model(x))
    assert inc.last_stats.dense
