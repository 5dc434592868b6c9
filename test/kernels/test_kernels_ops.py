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
The ``torch.library`` ops of kernels/ops.py: ``torch.library.opcheck`` on every op.

On the CPU each op runs its pure-torch reference; opcheck checks the schema (including the
mutation that ``store_rows`` declares), the fake (meta) implementation against real outputs,
and that the ops trace under AOT dispatch. The CUDA registrations are checked against these
references in test/kernels/test_kernels_cuda.py.
"""

import pytest
from support import require_module
import torch

ops = require_module('sparse_perception.kernels.ops', reason='the ops need Triton')
CL = torch.channels_last


def _cases():
    g = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=g)

    patches = randn(3, 6, 7, 7).contiguous(memory_format=CL)
    cache = randn(20 + 3, 5)  # 20 positions and the engine's 3 spare rows
    index = torch.tensor([0, 3, 4, 9, 17])
    mask = torch.rand(9, 11, generator=g) < 0.2
    # case -> (op name, arguments)
    return {
        'gather': ('gather_rows', (cache, index)),
        'linear': ('linear_rows', (randn(5, 6), randn(6, 4), randn(4))),
        'conv grouped': ('conv_patches', (patches, randn(4, 3, 3, 3), randn(4), [2, 2], [1, 1],
                                          2)),
        'conv depthwise': ('conv_patches', (patches, randn(6, 1, 3, 3), None, [1, 1], [2, 2],
                                            6)),
        'max pool': ('pool_patches', (patches, 'max', [3, 3], [2, 2], [1, 1])),
        'avg pool': ('pool_patches', (patches, 'avg', [2, 2], [2, 2], [1, 1])),
        'resample': ('resample_taps', (randn(5, 4, 6), torch.rand(5, 4, generator=g))),
        'store tested': ('store_rows', (cache.clone(), index, randn(5, 5), cache.clone(),
                                        'add,relu6', 0.1, True)),
        'store all rows': ('store_rows', (cache.clone(), None, randn(20, 5), None, 'hardswish',
                                          0.0, False)),
        'dilate': ('dilate_mask', (mask, [1, 1, 1, 1], [3, 3], [1, 1], [1, 1], [9, 11])),
        'tile flags': ('tile_flags', (mask, 4)),
        'list tiles': ('list_tiles', (mask,)),
        # A 4 x 5 map padded by one on every side (-1: the fill) into channels 2: of a cache.
        'copy tiles padded': ('copy_tiles', (
            randn(20 + 3, 3), randn(42 + 3, 5), [6, 7], [4, 4],
            torch.tensor([3, 0, 1, 2], dtype=torch.int32), torch.tensor([2], dtype=torch.int32),
            (torch.rand(42, generator=g) < 0.5).to(torch.uint8),
            torch.tensor([-1, 0, 1, 2, 3, -1], dtype=torch.int32),
            torch.tensor([-1, 0, 1, 2, 3, 4, -1], dtype=torch.int32), 5, 2, -1.5, None,
            'relu', 0, '')),
        # Depth-to-space by 2 of a 2 x 3 map of 8 channels, then a residual add.
        'copy tiles shuffled': ('copy_tiles', (
            randn(6 + 3, 8), randn(24 + 3, 2), [4, 6], [4, 4],
            torch.tensor([0, 1], dtype=torch.int32), None, None,
            torch.arange(4, dtype=torch.int32) // 2, torch.arange(6, dtype=torch.int32) // 2,
            3, 0, 0.0, randn(24 + 3, 2), 'add', 2, 'torch')),
        'softmax tiles': ('positionwise_tiles', (
            cache, torch.zeros(20 + 3, 5), 'softmax', [4, 5], [2, 4],
            torch.tensor([1, 2, 0, 3], dtype=torch.int32), torch.tensor([3], dtype=torch.int32),
            (torch.rand(20, generator=g) < 0.7).to(torch.uint8))),
        'argmax tiles': ('positionwise_tiles', (
            cache, torch.zeros(20 + 3, 1, dtype=torch.int64), 'argmax', [4, 5], [2, 4],
            torch.tensor([0, 1, 2, 3], dtype=torch.int32), None, None)),
        # A 4 x 5 map resized to 6 x 7 (two taps per axis, a zero-weight tap on the edges).
        'resample tiles': ('resample_tiles', (
            cache, torch.zeros(42 + 3, 5), [4, 5], [6, 7],
            torch.tensor([[0, 1], [0, 1], [1, 2], [1, 2], [2, 3], [3, 4]], dtype=torch.int32),
            torch.rand(6, 2, generator=g),
            torch.tensor([[0, 5], [0, 1], [1, 2], [2, 3], [3, 4], [4, 5], [4, 5]],
                         dtype=torch.int32), torch.rand(7, 2, generator=g), [4, 4],
            torch.tensor([2, 0, 3, 1], dtype=torch.int32), torch.tensor([3], dtype=torch.int32),
            (torch.rand(42, generator=g) < 0.8).to(torch.uint8), randn(42 + 3, 5),
            'add,relu')),
        # A 4 x 5 frame of 3 channels against a cache of it, tiles of 2 pixels.
        'intake': ('intake', (randn(1, 3, 4, 5), randn(20 + 3, 3),
                              torch.rand(2, 3, generator=g) < 0.5, 2, 0.5, False)),
        'intake dense': ('intake', (randn(1, 3, 4, 5), randn(20 + 3, 3),
                                    torch.zeros(2, 3, dtype=torch.bool), 2, 0.0, True)),
        'global pool': ('global_pool', (cache, 20)),
        'commit tiles': ('commit_tiles', (
            cache.clone(), randn(20 + 3, 5), (torch.rand(20, generator=g) < 0.7).to(torch.uint8),
            torch.tensor([2, 0, 3, 1], dtype=torch.int32), torch.tensor([3], dtype=torch.int32),
            [4, 5], [2, 4], cache.clone(), 'add,relu6', 0.2, True)),
        'commit tiles untested': ('commit_tiles', (
            cache.clone(), randn(20 + 3, 5), torch.ones(20, dtype=torch.uint8),
            torch.tensor([0, 1, 2, 3], dtype=torch.int32), None, [4, 5], [2, 4], None, '', 0.0,
            False)),
    }


@pytest.mark.parametrize('case', sorted(_cases()))
def test_opcheck(case):
    name, args = _cases()[case]
    torch.library.opcheck(getattr(torch.ops.sparse_perception, name), args)


def test_store_rows_reports_what_moved_past_the_threshold():
    dst = torch.zeros(4 + 3, 2)
    values = torch.tensor([[0.05, 0.0], [1.0, 0.0], [0.0, -2.0]])
    changed = torch.ops.sparse_perception.store_rows(dst, torch.tensor([0, 1, 3]), values, None,
                                                     'relu', 0.1, True)
    assert changed.tolist() == [False, True, False]  # relu(-2) = 0: nothing moved at row 3
    assert dst[1, 0] == 1.0


def test_epilogue_steps_with_two_parameters_are_parsed():
    steps, _ = ops.parse_epilogue('relu, hardtanh(0, 6),clamp(-1,1)', None)
    assert [(step.op, step.params) for step in steps] == [
        ('relu', ()), ('hardtanh', (0.0, 6.0)), ('clamp', (-1.0, 1.0))]
    with pytest.raises(ValueError, match=r"'clamp\(a,1\)': its parameters must be numbers"):
        ops.parse_epilogue('clamp(a,1)', None)
    with pytest.raises(ValueError, match=r'expected hardtanh\(low,high\)'):
        ops.parse_epilogue('hardtanh(1)', None)


def test_an_unknown_epilogue_step_is_named():
    with pytest.raises(ValueError, match="epilogue step 'swish' is not known"):
        ops.parse_epilogue('relu,swish', None)
    with pytest.raises(ValueError, match="'add' needs the operand tensor"):
        ops.parse_epilogue('add', None)
