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
The engine on the kernels, end to end, through Triton's interpreter.

- The eager executor with the 'kernels' backend equals the reference backend, and the one
  switch (environment variable, engine option) flips between them.
- The sync-free device mode equals the dense model at thresholds 0 (fp32: 1e-4 of the
  output scale; fp16: 1e-2) and the eager reference executor under thresholds.
- A device-mode frame does nothing on the host but copies, memsets and kernel launches
  (no synchronising op), and its launches are identical from frame to frame whatever
  changed: what a CUDA graph needs to replay it.
"""

import os

from device_checks import ALLOWED, HostOps, recorded_launches, signature
from engine_cases import effective_inputs, max_relative_difference, random_network, SeededChooser
import kernel_networks as kn
import pytest
from sparse_perception import settings as st
from sparse_perception.engine import backend as backend_module
from sparse_perception.engine import (EngineConfig, EngineError, IncrementalModel,
                                      ReferenceBackend, UnsupportedOpError)
from sparse_perception.engine import executor as executor_module
from sparse_perception.models.benchmark_network import mobilenet_v2_deeplabv3
import torch
from torch import nn

pytestmark = pytest.mark.skipif(
    os.environ.get('TRITON_INTERPRET') != '1',
    reason='the kernels run on CPU tensors only under the interpreter; the gpu tier runs '
           'these on CUDA')


def run(engine, sequence):
    state = engine.new_state()
    return [engine(x, tiles, state).clone() for x, tiles in sequence]


def dense_outputs(model, sequence):
    seen = [sequence[0][0]] + effective_inputs(sequence[0][0], sequence[1:])
    with torch.no_grad():
        return [model(x) for x in seen]


def worst(outputs, expected):
    return max(max_relative_difference(a, b) for a, b in zip(outputs, expected))


# -- the eager executor on the kernels backend ----------------------------------------------------

@pytest.mark.parametrize('name', ['mobile', 'branches'])
@pytest.mark.slow
def test_kernels_backend_equals_reference(name):
    model = kn.build(name)
    sequence = kn.frames(model_channels(model), 21, 26, 3)
    kernels = IncrementalModel(model, EngineConfig(backend='kernels'))
    assert kernels.backend.name == 'kernels'
    got = run(kernels, sequence)
    ref = run(IncrementalModel(model, EngineConfig(backend='reference')), sequence)
    assert worst(got, ref) <= 1e-5
    assert worst(got, dense_outputs(model, sequence)) <= 1e-4


def model_channels(model):
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d)).in_channels


class _StridedBiases(nn.Module):
    """Convolutions (KxK, depthwise, 1x1) whose biases are strided views of one parameter."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w1 = nn.Parameter(torch.randn(8, 3, 3, 3, generator=g) / 5)
        self.w2 = nn.Parameter(torch.randn(8, 1, 3, 3, generator=g) / 3)
        self.w3 = nn.Parameter(torch.randn(4, 8, 1, 1, generator=g) / 3)
        self.b = nn.Parameter(torch.randn(16, generator=g))

    def forward(self, x):
        x = torch.relu(nn.functional.conv2d(x, self.w1, self.b[::2], padding=1))
        x = torch.relu(nn.functional.conv2d(x, self.w2, self.b[1::2], padding=1, groups=8))
        return nn.functional.conv2d(x, self.w3, self.b[:8][::2])


@pytest.mark.slow
def test_biases_that_are_strided_views_are_read_as_they_are():
    model = _StridedBiases().eval()
    sequence = kn.frames(3, 11, 13, 3, seed=1)
    expected = dense_outputs(model, sequence)
    for engine in (IncrementalModel(model, EngineConfig(backend='kernels')),
                   IncrementalModel(model, execution='device', graph=False)):
        assert worst(run(engine, sequence), expected) <= 1e-4  # were off by 1 to 3


@pytest.mark.slow
def test_switch_flips_the_backend_and_results_agree(monkeypatch):
    model = kn.build('branches', seed=3)
    sequence = kn.frames(4, 13, 17, 3, seed=1)
    outputs = {}
    for name in ('kernels', 'reference'):
        monkeypatch.setenv(st.BACKEND_ENV, name)
        engine = IncrementalModel(model, EngineConfig(backend='auto'))
        assert engine.backend.name == name
        outputs[name] = run(engine, sequence)
    assert worst(outputs['kernels'], outputs['reference']) <= 1e-5
    monkeypatch.delenv(st.BACKEND_ENV)
    assert type(IncrementalModel(model, EngineConfig()).backend) is ReferenceBackend  # CPU


def test_kernels_on_the_cpu_without_the_interpreter_is_a_clear_error(monkeypatch):
    from sparse_perception.kernels import runtime

    monkeypatch.setattr(runtime, 'INTERPRETED', False)
    monkeypatch.setattr(backend_module, '_LOGGED', set())
    with pytest.raises(EngineError, match='on the CPU only under Triton.s interpreter'):
        IncrementalModel(kn.build('branches'), EngineConfig(backend='kernels'))
    with pytest.raises(EngineError, match='device mode cannot run here'):
        IncrementalModel(kn.build('branches'), execution='device')


# -- the sync-free device mode -------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize('name, size', [('mobile', (21, 26)), ('mobile_argmax', (16, 23)),
                                        ('branches', (19, 14)), ('upsampler', (10, 14))])
def test_device_mode_equals_dense_at_thresholds_zero(name, size):
    model = kn.build(name, seed=1)
    sequence = kn.frames(model_channels(model), *size, 4, seed=2)
    got = run(IncrementalModel(model, execution='device', graph=False), sequence)
    expected = dense_outputs(model, sequence)
    if name == 'mobile_argmax':  # classes may differ only where two logits (nearly) tie
        for a, b in zip(got, expected):
            assert (a != b).float().mean() <= 0.01
        return
    assert worst(got, expected) <= 1e-4


@pytest.mark.parametrize('seed', [106, 111, 133, 140, 146, 151, 156])
@pytest.mark.slow
def test_device_mode_on_random_networks(seed):
    c = SeededChooser(seed)
    h, w = c.integer(5, 17), c.integer(5, 17)
    channels = c.integer(1, 3)
    built = random_network(c, channels, h, w, c.integer(2, 4))
    assert built is not None
    model, kinds = built
    from engine_cases import change_sequence

    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(1, channels, h, w, generator=g)
    sequence = [(x0, None)] + change_sequence(c, x0, 3)
    # The drawn kinds all run there.
    got = run(IncrementalModel(model, execution='device', graph=False), sequence)
    assert worst(got, dense_outputs(model, sequence)) <= 1e-4, kinds


@pytest.mark.slow
def test_device_mode_fp16_within_the_fp16_tolerance():
    model = kn.build('mobile', seed=4).half()
    sequence = [(x.half(), t) for x, t in kn.frames(3, 17, 20, 3, seed=5)]
    got = run(IncrementalModel(model, execution='device', graph=False), sequence)
    reference = kn.build('mobile', seed=4)
    expected = dense_outputs(reference, [(x.float(), t) for x, t in sequence])
    assert worst(got, expected) <= 1e-2


@pytest.mark.slow
def test_device_mode_with_thresholds_agrees_with_the_eager_reference():
    model = kn.build('mobile', seed=6)
    # 33 x 37: windowed layers' tiles cross the maps' edges, in both executors.
    sequence = kn.frames(3, 33, 37, 3, seed=7)
    config = EngineConfig(threshold_scale=0.2)
    device = IncrementalModel(model, config, execution='device', graph=False)
    got = run(device, sequence)
    ref = run(IncrementalModel(model, config), sequence)
    assert worst(got, ref) <= 1e-4
    # Thresholds hold changes back: fewer positions propagate than at thresholds 0.
    changed = sum(s.changed for s in device.last_stats.layers)
    exact = IncrementalModel(model, execution='device', graph=False)
    run(exact, sequence)
    assert changed < sum(s.changed for s in exact.last_stats.layers)


@pytest.mark.slow
def test_device_mode_global_scale_and_live_thresholds_agree_with_the_eager_executor():
    model = kn.build('mobile', seed=6)
    sequence = kn.frames(3, 32, 32, 4, seed=7)  # 32 x 32: see the test above
    first = EngineConfig(global_scale=0.5)
    then = EngineConfig(threshold_scale=0.2, global_scale=0.5)
    engines = {'device': IncrementalModel(model, first, execution='device', graph=False),
               'eager': IncrementalModel(model, first)}
    outputs, held = {}, {}
    for name, engine in engines.items():
        state = engine.new_state()
        outputs[name] = [engine(x, tiles, state).clone() for x, tiles in sequence[:2]]
        held[name] = [s.changed for s in engine.last_stats.layers if s.kind == 'gap']
        engine.reconfigure(then, state)  # live: the caches stay, thresholds go up
        outputs[name] += [engine(x, tiles, state).clone() for x, tiles in sequence[2:]]
        assert not engine.last_stats.dense
    assert worst(outputs['device'], outputs['eager']) <= 1e-4
    assert held['device'] == held['eager'] == [0]  # the pooled mean moved too little


@pytest.mark.slow
def test_device_mode_on_mobilenet_v2_deeplabv3():
    model = mobilenet_v2_deeplabv3(width=0.25, seed=1)
    sequence = kn.frames(3, 24, 40, 2, seed=3, tile=8)[:2]
    got = run(IncrementalModel(model, execution='device', graph=False), sequence)
    assert worst(got, dense_outputs(model, sequence)) <= 1e-4


@pytest.mark.slow
def test_device_statistics_match_the_eager_executor():
    model = kn.build('branches', seed=8)
    sequence = kn.frames(4, 19, 14, 2, seed=9)[:2]
    device = IncrementalModel(model, execution='device', graph=False)
    eager = IncrementalModel(model)
    run(device, sequence)
    run(eager, sequence)
    d, e = device.last_stats, eager.last_stats
    assert not d.dense and d.input_fraction == pytest.approx(e.input_fraction)
    assert [s.name for s in d.layers] == [s.name for s in e.layers]
    for a, b in zip(d.layers, e.layers):
        assert a.positions == b.positions
        assert a.changed == a.active <= a.computed <= a.positions
        if b.kind != 'resample':  # the eager executor may count whole rows there
            assert a.active == b.active, a.name
    assert 0 < d.active_fraction < 1 and 0 < d.mac_fraction <= 1


@pytest.mark.slow
def test_device_mode_streams_refresh_and_size_changes():
    model = kn.build('branches', seed=2)
    device = IncrementalModel(model, execution='device', graph=False)
    one, two = device.new_state(), device.new_state()
    a = kn.frames(4, 13, 11, 2, seed=1)
    b = kn.frames(4, 13, 11, 2, seed=2)
    for (xa, ta), (xb, tb) in zip(a, b):
        ya = device(xa, ta, one).clone()
        yb = device(xb, tb, two).clone()
    assert worst([ya], dense_outputs(model, a)[-1:]) <= 1e-4
    assert worst([yb], dense_outputs(model, b)[-1:]) <= 1e-4
    one.request_refresh()
    x = torch.randn(1, 4, 13, 11)
    assert worst([device(x, a[1][1], one)], dense_outputs(model, [(x, None)])) <= 1e-4
    assert device.last_stats.dense
    x = torch.randn(1, 4, 9, 12)  # another size: re-initialised, dense
    assert worst([device(x, None, one)], dense_outputs(model, [(x, None)])) <= 1e-4
    assert one.memory_bytes() > 0


@pytest.mark.parametrize('kernel, stride, padding, output_padding, dilation, groups', [
    (2, 2, 0, 0, 1, 1), (3, 2, 1, 1, 1, 1), (4, 2, 1, 0, 1, 2), (3, 3, 0, 2, 2, 1)])
@pytest.mark.slow
def test_device_mode_runs_transposed_convolutions(kernel, stride, padding, output_padding,
                                                  dilation, groups):
    torch.manual_seed(kernel * 10 + stride)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
        nn.ConvTranspose2d(4, 6, kernel, stride, padding, output_padding, groups,
                           dilation=dilation),
        nn.BatchNorm2d(6), nn.ReLU6(), nn.Conv2d(6, 2, 3, padding=1)).eval()
    model[3].running_mean.uniform_(-0.5, 0.5)
    model[3].running_var.uniform_(0.5, 2.0)
    sequence = kn.frames(3, 11, 13, 5, seed=kernel + stride)
    device = IncrementalModel(model, execution='device', graph=False)
    state = device.new_state()
    got, active = [], []
    for x, tiles in sequence:
        got.append(device(x, tiles, state).clone())
        (stats,) = [s for s in device.last_stats.layers if s.kind == 'conv_transpose']
        active.append(stats.active / stats.positions)
    assert worst(got, dense_outputs(model, sequence)) <= 1e-4
    assert any(0 < a < 1 for a in active) and 0 in active  # a few tiles changed; none


def test_device_mode_names_what_it_cannot_run():
    # Five pointwise steps after a convolution: the kernels fuse at most four.
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Sigmoid(), nn.Tanh(),
                          nn.Hardswish(), nn.ReLU()).eval()
    with pytest.raises(UnsupportedOpError, match="layer '0'.*5 epilogue steps.*device mode "
                                                 'cannot run it'):
        IncrementalModel(model, execution='device', graph=False)(torch.randn(1, 2, 8, 8))
    with pytest.raises(EngineError, match='CUDA graphs need a CUDA model'):
        IncrementalModel(model, execution='device', graph=True)


def test_the_engine_chooses_the_executor_and_falls_back(monkeypatch):
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Sigmoid(), nn.Tanh(),
                          nn.Hardswish(), nn.ReLU()).eval()
    x = torch.randn(1, 2, 8, 8)
    monkeypatch.delenv(st.BACKEND_ENV, raising=False)
    with pytest.raises(EngineError, match="resolves to 'reference'"):
        IncrementalModel(model, EngineConfig(backend='reference'), execution='device')
    monkeypatch.setenv(st.BACKEND_ENV, 'reference')  # the switch, flipped for 'auto'
    with pytest.raises(EngineError, match=st.BACKEND_ENV):
        IncrementalModel(model, EngineConfig(backend='auto'), execution='device')
    monkeypatch.delenv(st.BACKEND_ENV)
    # On the CPU 'auto' never picks the device executor; pretend this is CUDA.
    monkeypatch.setattr(executor_module, 'auto_picks_device', lambda config, device: True)
    engine = IncrementalModel(model, execution='auto', graph=False)
    assert engine.execution == 'device' and engine.fallback is None
    got = engine(x)  # lowered now: the kernels cannot fuse five epilogue steps
    assert engine.execution == 'eager' and "layer '0'" in engine.fallback
    with torch.no_grad():
        assert torch.allclose(got, model(x), atol=1e-6)
    monkeypatch.setattr(executor_module, 'auto_picks_device', lambda config, device: False)
    assert IncrementalModel(model, execution='auto').execution == 'eager'


# -- no host synchronisation; the same launches every frame -------------------------------------

@pytest.fixture
def launches(monkeypatch):
    """Record every kernel launch (and run it outside any dispatch mode)."""
    with recorded_launches(monkeypatch) as record:
        yield record


@pytest.mark.slow
def test_frames_are_sync_free_and_launch_the_same_kernels(launches):
    model = kn.build('mobile', seed=3)
    device = IncrementalModel(model, EngineConfig(threshold_scale=0.1), execution='device',
                              graph=False)
    state = device.new_state()
    sequence = kn.frames(3, 17, 20, 4, seed=4)
    device(*sequence[0], state)  # dense first frame (calibrates, may synchronise)
    device(*sequence[1], state)  # first incremental frame binds its launches
    per_frame = []
    for x, tiles in sequence[2:]:
        launches.clear()
        with HostOps() as host:
            device(x, tiles, state)
        assert set(host.ops) <= ALLOWED, sorted(set(host.ops) - ALLOWED)
        per_frame.append((signature(launches), host.ops))
    # Frames 2 and 3 changed different tiles (none, then all) yet ran the same launches.
    assert per_frame[0] == per_frame[1]
    kernels = {name for name, *_ in per_frame[0][0]}
    assert {'_candidates_kernel', '_conv_kernel', '_conv1x1_kernel', '_depthwise_kernel',
            '_commit_tiles_kernel', '_intake_kernel', '_pool_sum_kernel'} <= kernels
    # And the results are the dense model's (thresholds held some changes back: loosely).
    expected = dense_outputs(model, sequence)[-1]
    assert max_relative_difference(device(*sequence[-1], state), expected) <= 0.05


# -- spatial gates in the device mode ---------------------------------------------------------

def _gate_frames():
    model = kn.build('mobile', seed=7)
    return model, kn.frames(3, 17, 20, 4, seed=8)


@pytest.mark.slow
def test_device_mode_with_a_whole_gate_is_the_ungated_device_mode():
    model, sequence = _gate_frames()
    plain, gated = (IncrementalModel(model, execution='device', graph=False)
                    for _ in range(2))
    s_plain, s_gated = plain.new_state(), gated.new_state()
    for i, (x, tiles) in enumerate(sequence):
        whole = torch.ones(3, 4, dtype=torch.bool)  # tiles of 6 over 17x20
        a = plain(x, tiles, s_plain).clone()
        b = gated(x, tiles, s_gated, gate=whole).clone()
        assert torch.equal(a, b), f'frame {i}'


@pytest.mark.slow
def test_device_mode_keeps_gated_changes_until_the_gate_returns():
    model, sequence = _gate_frames()
    device = IncrementalModel(model, execution='device', graph=False)
    state = device.new_state()
    x0 = sequence[0][0]
    first = device(x0, None, state).clone()
    x1 = x0.clone()
    x1[..., 12:, 14:] += 1.0
    tiles = torch.zeros(3, 4, dtype=torch.bool)
    tiles[2, 2:] = True  # the change: bottom right
    gate = torch.zeros(3, 4, dtype=torch.bool)
    gate[0, 0] = True  # the gate: top left
    out = device(x1, tiles, state, gate=gate).clone()
    assert torch.equal(out, first)  # nothing recomputed where the change is
    assert state.has_stale and device.last_stats.gate_fraction == pytest.approx(1 / 12)
    still = torch.zeros(3, 4, dtype=torch.bool)
    out = device(x1, still, state).clone()  # ungated: what waited is recomputed
    assert not state.has_stale
    with torch.no_grad():
        assert max_relative_difference(out, model(x1)) <= 1e-4


@pytest.mark.slow
def test_gated_frames_do_not_synchronise_with_the_host(launches):
    model, sequence = _gate_frames()
    device = IncrementalModel(model, execution='device', graph=False)
    state = device.new_state()
    gate = torch.zeros(3, 4, dtype=torch.bool)
    gate[1:, 1:3] = True
    device(*sequence[0], state)
    device(*sequence[1], state, gate=gate)  # binds the gated launches
    with HostOps() as host:
        device(*sequence[2], state, gate=gate)
    # Building the gate's masks takes a few device ops; none reads a value back to the host.
    syncing = {'aten._local_scalar_dense.default', 'aten.nonzero.default',
               'aten.is_nonzero.default', 'aten.item.default', 'aten.equal.default'}
    assert not set(host.ops) & syncing, sorted(set(host.ops) & syncing)
    assert '_candidates_kernel' in {name for name, *_ in signature(launches)}
