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
What a sync-free frame may do on the host, and a recorder of its kernel launches.

A device-mode frame does nothing on the host but copies, memsets and kernel launches (no
synchronising op such as ``nonzero``, ``item`` or a sized allocation from device data), and
its launches are identical from frame to frame whatever changed: what a CUDA graph needs.
"""

import contextlib

from engine_cases import max_relative_difference
from sparse_perception.change import ChangeMap
import torch
from torch.utils._python_dispatch import _disable_current_modes, TorchDispatchMode

TOLERANCE = 1e-4  # fp32, of the output scale, as everywhere in the engine
TILE = 16  # change-map tile of the registered-model checks, pixels

# What a frame may do on the host besides launching kernels: copy the frame and the tile map
# in, clear the masks and counters, copy the counters out, and take views.
ALLOWED = {'aten._to_copy.default', 'aten.copy_.default', 'aten.zero_.default',
           'aten.clone.default', 'aten.permute.default', 'aten.slice.Tensor',
           'aten.view.default', 'aten.select.int', 'aten.alias.default',
           'aten.detach.default', 'aten.as_strided.default', 'aten.empty_like.default',
           'aten.empty.memory_format'}


class HostOps(TorchDispatchMode):
    """Record the aten ops run on the host (kernel launches excluded)."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def recorded_launches(monkeypatch):
    """Record every kernel launch (and run it outside any dispatch mode) in a list."""
    from sparse_perception.kernels import runtime

    record = []
    launch = runtime.launch

    def recording(kernel, grid, *args, **meta):
        record.append((kernel, grid, args, meta))
        with _disable_current_modes():
            launch(kernel, grid, *args, **meta)
    with monkeypatch.context() as patch:
        patch.setattr(runtime, 'launch', recording)
        yield record


def signature(record):
    """Return a launch list with tensors replaced by (address, shape, dtype)."""
    def key(a):
        if isinstance(a, torch.Tensor):
            return ('tensor', a.data_ptr(), tuple(a.shape), a.dtype)
        return a
    return [(kernel.fn.__name__ if hasattr(kernel, 'fn') else str(kernel), grid,
             tuple(key(a) for a in args), tuple(sorted((k, key(v)) for k, v in meta.items())))
            for kernel, grid, args, meta in record]


def patched(x, tiles, value):
    """Return ``x`` with the listed (row, column) change tiles set to ``value``."""
    x = x.clone()
    for ty, tx in tiles:
        x[..., ty * TILE:(ty + 1) * TILE, tx * TILE:(tx + 1) * TILE] = value
    return x


def change_map(size, tiles):
    grid = torch.zeros(-(-size[0] // TILE), -(-size[1] // TILE), dtype=torch.bool)
    for ty, tx in tiles:
        grid[ty, tx] = True
    return ChangeMap(grid, False, float(grid.float().mean()), 0.0, TILE, 0)


def assert_dense(got, trunk, x, what):
    with torch.no_grad():
        want = trunk(x)
    got, want = (got, want) if isinstance(want, tuple) else ((got,), (want,))
    assert len(got) == len(want), what
    for a, b in zip(got, want):
        assert a.shape == b.shape, what
        diff = max_relative_difference(a, b)
        assert diff <= TOLERANCE, f'{what}: max relative difference {diff:.3g}'
