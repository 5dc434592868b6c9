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
The backend interface: selection, registration, primitives.

Selection by setting and environment switch, registration of another backend, and the
primitives against brute-force references.
"""

import itertools
import logging
import os
from pathlib import Path
import subprocess
import sys
import textwrap

from engine_cases import randomize
import pytest
from sparse_perception import settings as st
from sparse_perception.engine import (available_backends, EngineConfig, EngineError,
                                      get_backend, IncrementalModel, ReferenceBackend,
                                      register_backend)
from sparse_perception.engine import backend as backend_module
from sparse_perception.engine.backend import new_cache
import torch
from torch import nn
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def registry(monkeypatch):
    """Let a test register backends without leaking them into other tests."""
    monkeypatch.setattr(backend_module, '_FACTORIES', dict(backend_module._FACTORIES))
    monkeypatch.setattr(backend_module, '_LOGGED', set())
    return backend_module._FACTORIES


def test_reference_is_always_there(monkeypatch, registry, caplog):
    monkeypatch.delenv(st.BACKEND_ENV, raising=False)
    assert isinstance(get_backend('reference', 'cpu'), ReferenceBackend)
    with caplog.at_level(logging.INFO):
        assert isinstance(get_backend('auto', 'cpu'), ReferenceBackend)  # no kernels on CPU
    assert 'using the reference backend' in caplog.text


def test_explicit_kernels_that_cannot_run_is_an_error(monkeypatch, registry):
    from sparse_perception.kernels import runtime

    monkeypatch.delenv(st.BACKEND_ENV, raising=False)
    monkeypatch.setattr(runtime, 'TRITON_MISSING', 'the kernels need Triton (absent); install '
                        'the gpu extra')  # as without Triton
    with pytest.raises(EngineError, match="backend 'kernels' was requested but is not "
                                          r'available: the kernels cannot run on cpu: the '
                                          'kernels need Triton'):
        get_backend('kernels', 'cpu')


def test_the_kernels_need_no_registration(monkeypatch, registry):
    monkeypatch.delenv(st.BACKEND_ENV, raising=False)
    assert 'kernels' in available_backends()
    assert isinstance(get_backend('auto', 'cpu'), ReferenceBackend)  # kernels are for CUDA
    assert get_backend('kernels', 'cpu').name == 'kernels'  # Triton's interpreter on the CPU
    registry.pop('kernels')  # a registry replaced wholesale
    with pytest.raises(EngineError, match='no kernels backend is registered'):
        get_backend('kernels', 'cpu')


def test_the_reference_runs_without_triton():
    # The references sit beside the Triton kernels: their modules must import without Triton,
    # and the engine must run on them and say why the kernels cannot.
    code = textwrap.dedent("""
        import sys
        sys.modules['triton'] = None
        import torch
        from torch import nn
        from sparse_perception.engine import (EngineConfig, EngineError, get_backend,
                                              IncrementalModel)
        model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Conv2d(4, 2, 1)).eval()
        inc = IncrementalModel(model, EngineConfig(backend='auto', threshold_scale=0.0))
        state = inc.new_state()
        x = torch.randn(1, 3, 16, 16)
        inc(x, None, state)
        tiles = torch.zeros(2, 2, dtype=torch.bool)
        tiles[1, 0] = True
        x[..., 8:, :8] += 1
        with torch.no_grad():
            assert torch.allclose(inc(x, tiles, state), model(x), atol=1e-6), 'not dense'
        try:
            get_backend('kernels', 'cpu')
        except EngineError as exc:
            print(exc)
        """)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            env=env, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'the kernels need Triton' in result.stdout and 'install the gpu extra' in \
        result.stdout


def test_importing_the_engine_leaves_triton_alone():
    # Triton (and the choice of its interpreter) comes with the first backend or device
    # executor built, not with the import: the reference backend's users need not pay for it.
    code = textwrap.dedent("""
        import sys
        import sparse_perception.engine
        from sparse_perception.engine import device, eager, executor, layers
        print(sorted(m for m in sys.modules if m == 'triton' or m.startswith('triton.')))
        sparse_perception.engine.get_backend('reference', 'cpu')
        print('triton' in sys.modules, 'sparse_perception.kernels.runtime' in sys.modules)
        """)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            env=env, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.split('\n')
    assert lines[0] == '[]', result.stdout
    # The test can fail: building a backend does import the kernels (and Triton, if installed).
    assert lines[1].split()[1] == 'True', result.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason='needs a machine where CUDA cannot run')
def test_auto_on_cuda_logs_why_the_kernels_cannot_run(monkeypatch, registry, caplog):
    monkeypatch.delenv(st.BACKEND_ENV, raising=False)
    with caplog.at_level(logging.INFO):
        assert isinstance(get_backend('auto', 'cuda'), ReferenceBackend)
    assert 'the kernels cannot run on cuda: ' in caplog.text  # the reason, not just "cannot"
    with pytest.raises(EngineError, match='the kernels cannot run on cuda: .+'):
        get_backend('kernels', 'cuda')


def test_environment_switch(monkeypatch, registry):
    monkeypatch.setenv(st.BACKEND_ENV, 'reference')
    assert isinstance(get_backend('auto', 'cpu'), ReferenceBackend)
    monkeypatch.setenv(st.BACKEND_ENV, 'fast')
    with pytest.raises(st.SettingError, match="'fast' is not one of auto, kernels, reference"):
        get_backend('auto', 'cpu')


class CountingBackend(ReferenceBackend):
    """A stand-in 'kernels' backend: the reference primitives, counted."""

    name = 'kernels'

    def __init__(self, device):
        super().__init__(device)
        self.calls = 0

    def store_epilogue(self, *args, **kwargs):
        self.calls += 1
        return super().store_epilogue(*args, **kwargs)


def test_a_registered_backend_is_used_and_flipping_the_switch_gives_the_same_result(
        monkeypatch, registry):
    monkeypatch.delenv(st.BACKEND_ENV, raising=False)
    register_backend('kernels', CountingBackend)
    model = randomize(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                    nn.Conv2d(8, 4, 1)), 0).eval()
    outputs = {}
    g = torch.Generator().manual_seed(0)
    frames = [torch.randn(1, 3, 16, 16, generator=g) for _ in range(3)]
    tiles = torch.zeros(2, 2, dtype=torch.bool)
    tiles[1, 0] = True
    for name in ('reference', 'kernels'):
        inc = IncrementalModel(model, EngineConfig(backend=name))
        state = inc.new_state()
        outputs[name] = [inc(f, None if i == 0 else tiles, state).clone()
                         for i, f in enumerate(frames)]
        if name == 'kernels':
            assert isinstance(inc.backend, CountingBackend) and inc.backend.calls > 0
    for a, b in zip(outputs['reference'], outputs['kernels']):
        assert torch.equal(a, b)
    monkeypatch.setenv(st.BACKEND_ENV, 'reference')  # the environment picks for 'auto'
    assert type(IncrementalModel(model, EngineConfig(backend='auto')).backend) is \
        ReferenceBackend


def brute_force_dilate(mask, pads, kernel, stride, dilation, out_hw):
    h, w = mask.shape
    out = torch.zeros(out_hw, dtype=torch.bool)
    for oy, ox in itertools.product(range(out_hw[0]), range(out_hw[1])):
        for i, j in itertools.product(range(kernel[0]), range(kernel[1])):
            y = oy * stride[0] - pads[0] + i * dilation[0]
            x = ox * stride[1] - pads[2] + j * dilation[1]
            if 0 <= y < h and 0 <= x < w and mask[y, x]:
                out[oy, ox] = True
    return out


@pytest.mark.parametrize('kernel, stride, dilation, pad', [
    ((3, 3), (1, 1), (1, 1), 1), ((5, 3), (2, 1), (1, 2), 2), ((1, 1), (2, 2), (1, 1), 0),
    ((3, 3), (2, 2), (2, 2), 0), ((7, 7), (1, 1), (1, 1), 3), ((2, 2), (2, 2), (1, 1), 0)])
def test_dilate_is_the_receptive_field_image(kernel, stride, dilation, pad):
    g = torch.Generator().manual_seed(1)
    mask = torch.rand(13, 11, generator=g) < 0.1
    pads = (pad, pad, pad, pad)
    ref = F.conv2d(torch.zeros(1, 1, 13, 11), torch.zeros(1, 1, *kernel), None, stride, pad,
                   dilation)
    out_hw = tuple(ref.shape[-2:])
    got = ReferenceBackend().dilate(mask, pads, kernel, stride, dilation, False, out_hw)
    assert torch.equal(got, brute_force_dilate(mask, pads, kernel, stride, dilation, out_hw))


def test_store_change_test_and_scatter():
    b = ReferenceBackend()
    cache = new_cache(4, 2, torch.float32, 'cpu')
    cache[:4] = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    index = torch.tensor([0, 2, 3])
    values = torch.tensor([[0.05, 0.0], [2.0, 2.5], [3.0, 3.0]])
    changed, old = b.store(cache, index, values, 0.1, True, True)
    assert changed.tolist() == [2] and old.tolist() == [[2.0, 2.0]]
    assert cache[0].tolist() == [0.0, 0.0] and cache[2].tolist() == [2.0, 2.5]  # held / taken
    changed, _ = b.store(cache, index, values, 0.0, True)
    assert changed.tolist() == [0]  # exact: any bit counts; rows 2, 3 are equal now
    changed, _ = b.store(cache, index, values + 1, 0.0, False)
    assert changed is None and cache[3].tolist() == [4.0, 4.0]  # no test: all written
    assert cache[4].tolist() == [0.0, 0.0] and cache[5].tolist() == [float('-inf')] * 2


def test_active_tiles_and_gather():
    b = ReferenceBackend()
    mask = torch.zeros(5, 7, dtype=torch.bool)
    mask[4, 6] = mask[0, 1] = True
    assert b.active_tiles(mask, 4).tolist() == [0, 3]
    src = torch.arange(12.0).view(6, 2)
    assert b.gather(src, torch.tensor([[5, 0], [1, 1]])).shape == (2, 2, 2)
