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
The sync-free tile forms of the kernels against dense torch ops, through the interpreter.

Each compute kernel reads a cache directly, runs over a tile list whose length is a count on
the device (slots past it hold stale ids that must be ignored), applies an epilogue and
writes only the candidate positions: those must equal the dense op's result, every other row
must be untouched. Fractions 0 (empty list), partial and 1 (every tile active).
"""

import os

import kernel_cases as kc
import pytest
import torch

pytestmark = pytest.mark.skipif(
    os.environ.get('TRITON_INTERPRET') != '1',
    reason='the kernels run on CPU tensors only under the interpreter; the gpu tier runs '
           'these on CUDA')

DTYPES = [torch.float32, torch.float16]


@pytest.mark.parametrize('kind', ['conv1x1', 'depthwise', 'conv', 'pool'])
@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('fraction', [0.0, 0.2, 1.0])
def test_compute_over_tiles(kind, dtype, fraction):
    seed = {'conv1x1': 0, 'depthwise': 1, 'conv': 2, 'pool': 3}[kind] + int(fraction * 10)
    kc.check_conv_tiles('cpu', dtype, seed, kind, fraction)


@pytest.mark.parametrize('seed', range(3))
def test_more_window_shapes_over_tiles(seed):
    for kind in ('depthwise', 'conv', 'pool'):
        kc.check_conv_tiles('cpu', torch.float32, 100 + seed, kind, 0.3)


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('seed', range(3))
def test_resample_over_tiles(dtype, seed):
    kc.check_resample_tiles('cpu', dtype, seed, [0.3, 1.0, 0.0][seed])


@pytest.mark.parametrize('seed', range(3))
def test_copy_over_tiles(seed):
    kc.check_copy_tiles('cpu', torch.float16 if seed == 1 else torch.float32, seed, 0.4)


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('fraction', [0.0, 0.3, 1.0])
@pytest.mark.slow
def test_conv_transpose_over_tiles(dtype, fraction):
    for seed in range(4):
        kc.check_conv_transpose_tiles('cpu', dtype, seed + int(fraction * 10), fraction)


@pytest.mark.parametrize('order', ['torch', 'tf'])
@pytest.mark.parametrize('seed', range(3))
def test_depth_to_space_over_tiles(order, seed):
    kc.check_shuffle_tiles('cpu', torch.float16 if seed == 1 else torch.float32, seed, order,
                           [0.4, 1.0, 0.0][seed])


@pytest.mark.parametrize('fn', ['softmax', 'log_softmax', 'argmax'])
def test_positionwise_over_tiles(fn):
    kc.check_positionwise('cpu', torch.float32, 3, fn)
    kc.check_positionwise('cpu', torch.float16, 4, fn)


@pytest.mark.parametrize('seed', range(6))
def test_candidates_listing_and_counts(seed):
    kc.check_candidates('cpu', seed)


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('threshold', [0.0, 0.5])
@pytest.mark.parametrize('held', ['half', 'one', 'none'])
def test_intake(dtype, threshold, held):
    # Tiles held back by the change map: half of them, or (a moving camera: the reference
    # copies the frame whole at threshold 0) one or none.
    kc.check_intake('cpu', dtype, 7 if held == 'half' else 8, threshold, held)


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('gate_open', [True, False])
def test_global_pool(dtype, gate_open):
    kc.check_global_pool('cpu', dtype, 2, gate_open)
