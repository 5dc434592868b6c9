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
Every Triton kernel against its plain-torch reference, through Triton's CPU interpreter.

Random shapes per seed (channels not multiples of 8, odd sizes), empty inputs, all tiles
active, fp32 and fp16 with tolerances that follow the precision; see kernel_cases.py (the gpu
tier runs the same checks on CUDA). Shapes stay tiny: the interpreter runs every program in
Python.
"""

import os

import kernel_cases as kc
import pytest
import torch

pytestmark = pytest.mark.skipif(
    os.environ.get('TRITON_INTERPRET') != '1',
    reason='the kernels run on CPU tensors only under the interpreter (set by conftest where '
           'there is no CUDA); on a GPU machine test/kernels/test_kernels_cuda.py runs them')

DTYPES = [torch.float32, torch.float16]


@pytest.mark.parametrize('seed', range(3))
def test_gather(seed):
    kc.check_gather('cpu', torch.float16 if seed else torch.float32, seed)
    kc.check_gather('cpu', torch.float32, seed, empty=True)


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('seed', range(3))
def test_linear_rows(dtype, seed):
    kc.check_linear('cpu', dtype, seed)


def test_linear_rows_empty():
    kc.check_linear('cpu', torch.float32, 0, empty=True)


def test_a_strided_bias_is_read_as_it_is_and_a_wrong_one_refused():
    from sparse_perception.kernels import conv, conv1x1, depthwise
    from sparse_perception.kernels.runtime import KernelError

    g = torch.Generator().manual_seed(0)
    bias = torch.randn(8, generator=g)[::2]  # four channels, stride 2
    patches = torch.randn(2, 4, 5, 5, generator=g).contiguous(memory_format=torch.channels_last)
    rows, weight_t = torch.randn(6, 4, generator=g), torch.randn(4, 4, generator=g)
    weight, taps = torch.randn(4, 4, 3, 3, generator=g) / 6, torch.randn(4, 1, 3, 3, generator=g)
    calls = [
        (lambda b: conv1x1.linear_rows(rows, weight_t, b),
         conv1x1.linear_rows_ref(rows, weight_t, bias)),
        (lambda b: conv.conv_patches(patches, weight, b, (1, 1), (1, 1), 1),
         conv.conv_patches_ref(patches, weight, bias, (1, 1), (1, 1), 1)),
        (lambda b: depthwise.depthwise_patches(patches, taps, b, (1, 1), (1, 1)),
         depthwise.depthwise_patches_ref(patches, taps, bias, (1, 1), (1, 1)))]
    for call, expected in calls:
        torch.testing.assert_close(call(bias), expected, rtol=1e-5, atol=1e-5)
        with pytest.raises(KernelError, match=r'bias \(5,\) must be \(4,\)'):
            call(torch.zeros(5))


def test_outputs_that_cannot_hold_the_result_are_refused():
    from sparse_perception.kernels import gather, pool, positionwise
    from sparse_perception.kernels.runtime import KernelError

    tiles = torch.tensor([0], dtype=torch.int32)
    # Five channels from column 3 of six spilled into the next row.
    with pytest.raises(KernelError, match='5 channels written from column 3 do not fit the 6'):
        gather.copy_tiles(torch.zeros(15, 5), torch.zeros(15, 6), (3, 4), (4, 4), tiles, None,
                          col0=3)
    with pytest.raises(KernelError, match=r'softmax: out \(9, 2\) must have 5 channel'):
        positionwise.positionwise_args(torch.zeros(9, 5), torch.zeros(9, 2), 'softmax', (2, 3),
                                       (2, 4), tiles, None)
    patches = torch.zeros(1, 2, 7, 7).contiguous(memory_format=torch.channels_last)
    with pytest.raises(KernelError, match='average pooling has no dilation'):
        pool.pool_patches(patches, 'avg', (3, 3), (1, 1), (2, 2))
    assert pool.pool_patches(patches, 'max', (3, 3), (1, 1), (2, 2)).shape == (1, 2, 3, 3)


def test_bfloat16_matrix_products_are_refused_under_the_interpreter():
    from sparse_perception.kernels import conv, conv1x1
    from sparse_perception.kernels.runtime import KernelError

    rows, weight_t = torch.randn(6, 4).bfloat16(), torch.randn(4, 4).bfloat16()
    patches = torch.randn(2, 4, 5, 5).bfloat16().contiguous(memory_format=torch.channels_last)
    weight = torch.randn(4, 4, 3, 3).bfloat16()
    # (Computed, they were off by 1e9 and more: the interpreter multiplies the stored bits.)
    with pytest.raises(KernelError, match="1x1 convolution: Triton's interpreter .* bfloat16"):
        conv1x1.linear_rows(rows, weight_t, None)
    with pytest.raises(KernelError, match="^convolution: Triton's interpreter .* bfloat16"):
        conv.conv_patches(patches, weight, None, (1, 1), (1, 1), 1)


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('stride', [1, 2])
@pytest.mark.parametrize('seed', range(2))
def test_depthwise_patches(dtype, stride, seed):
    kc.check_depthwise('cpu', dtype, seed, stride)


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('seed', range(3))
def test_conv_patches(dtype, seed):
    kc.check_conv('cpu', dtype, seed)


@pytest.mark.parametrize('mode', ['max', 'avg'])
@pytest.mark.parametrize('dtype', DTYPES)
def test_pool_patches(mode, dtype):
    kc.check_pool('cpu', dtype, 1, mode)


def test_window_kernels_on_no_patches():
    kc.check_depthwise('cpu', torch.float32, 0, 1, empty=True)
    kc.check_conv('cpu', torch.float32, 0, empty=True)
    kc.check_pool('cpu', torch.float32, 0, 'max', empty=True)


@pytest.mark.parametrize('dtype', DTYPES)
def test_resample_taps(dtype):
    kc.check_resample_taps('cpu', dtype, 4)
    kc.check_resample_taps('cpu', dtype, 0, empty=True)


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('test, threshold', [(True, 0.0), (True, 0.3), (False, 0.0)])
@pytest.mark.parametrize('seed', range(2))
def test_store_epilogue(dtype, test, threshold, seed):
    kc.check_store('cpu', dtype, seed, test, threshold)


@pytest.mark.parametrize('threshold', [0.0, 0.3])
def test_store_all_rows_and_empty_index(threshold):
    kc.check_store('cpu', torch.float32, 5, True, threshold, indexed=False)
    kc.check_store('cpu', torch.float32, 6, True, threshold, empty=True)


@pytest.mark.parametrize('seed', range(6))
def test_dilate(seed):
    kc.check_dilate('cpu', seed)


@pytest.mark.parametrize('seed', [pytest.param(0, marks=pytest.mark.slow), 1, 2, 3, 4])
def test_tile_flags_and_device_lists(seed):
    kc.check_tile_flags_and_lists('cpu', seed)
