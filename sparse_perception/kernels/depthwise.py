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
Depthwise KxK convolution (stride 1 and 2, any dilation) over tiles of output positions.

Each program computes a tile of output positions for a block of channels: for every tap it
loads the input rows (zeros outside the map) and accumulates ``x * w`` in fp32. Output
channel ``c`` reads input channel ``c // multiplier`` (``groups == Cin``).
"""

from __future__ import annotations

from sparse_perception.kernels.epilogue import Epilogue, NO_EPILOGUE, sink
from sparse_perception.kernels.runtime import (bias_vector, check_device, check_float,
                                               KernelError, launch, tile_rows, tl, triton,
                                               work_count)
from sparse_perception.kernels.window import (channel_block, channels_last_rows, Geometry,
                                              patch_geometry, patch_tile, rows_as_nchw)
import torch
import torch.nn.functional as F


@triton.jit
def _depthwise_kernel(x_ptr, ld_x, w_ptr, b_ptr, out_ptr, ld_out, cand_ptr,
                      list_ptr, count_ptr, n_items, Hi, Wi, Ho, Wo, sy, sx, dy, dx, pt, pl,
                      C, MULT,
                      e0_a, e0_b, e0_f0, e0_f1, e0_ld, e1_a, e1_b, e1_f0, e1_f1, e1_ld,
                      e2_a, e2_b, e2_f0, e2_f1, e2_ld, e3_a, e3_b, e3_f0, e3_f1, e3_ld,
                      E0: tl.constexpr, E0R: tl.constexpr, E0C: tl.constexpr,
                      E1: tl.constexpr, E1R: tl.constexpr, E1C: tl.constexpr,
                      E2: tl.constexpr, E2R: tl.constexpr, E2C: tl.constexpr,
                      E3: tl.constexpr, E3R: tl.constexpr, E3C: tl.constexpr,
                      KH: tl.constexpr, KW: tl.constexpr, HAS_BIAS: tl.constexpr,
                      HAS_CAND: tl.constexpr, HAS_LIST: tl.constexpr, HAS_COUNT: tl.constexpr,
                      TY: tl.constexpr, TX: tl.constexpr, BLOCK_C: tl.constexpr):
    pid = tl.program_id(0)
    if pid >= work_count(count_ptr, n_items, HAS_COUNT):
        return
    b, oy, ox, valid, prow, rmask = tile_rows(list_ptr, pid, cand_ptr, Ho, Wo, HAS_LIST,
                                              HAS_CAND, TY, TX)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = c < C
    cin = c // MULT
    acc = tl.zeros((TY * TX, BLOCK_C), dtype=tl.float32)
    base = b * Hi * Wi
    for ky in tl.static_range(KH):
        iy = oy * sy - pt + ky * dy
        row_ok = rmask & (iy >= 0) & (iy < Hi)
        for kx in tl.static_range(KW):
            ix = ox * sx - pl + kx * dx
            ok = row_ok & (ix >= 0) & (ix < Wi)
            irow = (base + iy * Wi + ix).to(tl.int64)
            v = tl.load(x_ptr + irow[:, None] * ld_x + cin[None, :],
                        mask=ok[:, None] & cmask[None, :], other=0.0)
            w = tl.load(w_ptr + (ky * KW + kx) * C + c, mask=cmask, other=0.0)
            acc += v.to(tl.float32) * w.to(tl.float32)[None, :]
    if HAS_BIAS:
        acc += tl.load(b_ptr + c, mask=cmask, other=0.0).to(tl.float32)[None, :]
    sink(acc, prow, prow, rmask, c, cmask, out_ptr, ld_out,
         e0_a, e0_b, e0_f0, e0_f1, e0_ld, e1_a, e1_b, e1_f0, e1_f1, e1_ld,
         e2_a, e2_b, e2_f0, e2_f1, e2_ld, e3_a, e3_b, e3_f0, e3_f1, e3_ld,
         E0, E0R, E0C, E1, E1R, E1C, E2, E2R, E2C, E3, E3R, E3C)


def depthwise_weight(weight: torch.Tensor) -> torch.Tensor:
    """Convert a depthwise weight (Cout, 1, kh, kw) to the kernel layout (kh * kw, Cout)."""
    if weight.dim() != 4 or weight.shape[1] != 1:
        raise KernelError(f'depthwise weight {tuple(weight.shape)}: expected (Cout, 1, kh, kw)')
    cout, _, kh, kw = weight.shape
    return weight.reshape(cout, kh * kw).t().contiguous()


def depthwise_args(x: torch.Tensor, w_taps: torch.Tensor, bias: torch.Tensor | None,
                   out: torch.Tensor, geometry: Geometry, tile: tuple[int, int],
                   tiles: torch.Tensor, count: torch.Tensor | None, in_channels: int,
                   cand: torch.Tensor | None = None,
                   epilogue: Epilogue = NO_EPILOGUE) -> tuple:
    """
    Bind a depthwise convolution over listed tiles: ``(kernel, grid, args, meta)``.

    ``x`` (B * Hi * Wi (+ 3), Cin) input rows; ``w_taps`` (kh * kw, Cout) from
    :func:`depthwise_weight`; ``out`` (B * Ho * Wo (+ 3), Cout); ``tiles`` int32 tile ids
    (``count`` int32 (1,) on the device, or None for all); ``cand`` uint8 positions to write.
    """
    check_device(x, w_taps, bias, out)
    check_float(x, w_taps, bias, out)
    cout = w_taps.shape[1]
    if cout % in_channels:
        raise KernelError(f'depthwise: {cout} output channels is not a multiple of '
                          f'{in_channels} input channels')
    kh, kw = geometry.kernel
    if w_taps.shape[0] != kh * kw:
        raise KernelError(f'depthwise: weight has {w_taps.shape[0]} taps, kernel {kh}x{kw}')
    bias = bias_vector(bias, cout, 'depthwise')
    block_c = channel_block(cout)
    args = (x, x.stride(0), w_taps, bias if bias is not None else w_taps, out, out.stride(0),
            cand if cand is not None else out, tiles, count if count is not None else tiles,
            tiles.numel(), *geometry.args(), cout, cout // in_channels)
    meta = dict(KH=kh, KW=kw, HAS_BIAS=bias is not None, HAS_CAND=cand is not None,
                HAS_LIST=True, HAS_COUNT=count is not None, TY=tile[0], TX=tile[1],
                BLOCK_C=block_c, **epilogue.kwargs(out))
    return _depthwise_kernel, (max(1, tiles.numel()), -(-cout // block_c)), args, meta


def depthwise_patches(patches: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                      stride, dilation, w_taps: torch.Tensor | None = None) -> torch.Tensor:
    """Depthwise convolution of patches with padding 0 (see :func:`depthwise_patches_ref`)."""
    t, cin = patches.shape[:2]
    geometry, _ = patch_geometry(patches, weight.shape[2:], stride, dilation)
    cout = weight.shape[0]
    out = torch.empty(t * geometry.out_hw[0] * geometry.out_hw[1], cout, dtype=patches.dtype,
                      device=patches.device)
    if t:
        tiles = torch.arange(t, dtype=torch.int32, device=patches.device)
        taps = w_taps if w_taps is not None else depthwise_weight(weight)
        kernel, grid, args, meta = depthwise_args(
            channels_last_rows(patches), taps, bias, out, geometry,
            patch_tile(geometry.out_hw), tiles, None, cin)
        launch(kernel, (t, grid[1]), *args, **meta)
    return rows_as_nchw(out, t, geometry.out_hw)


def depthwise_patches_ref(patches: torch.Tensor, weight: torch.Tensor,
                          bias: torch.Tensor | None, stride, dilation) -> torch.Tensor:
    """
    Depthwise convolution with padding 0 of a batch of patches.

    ``patches`` (t, Cin, ph, pw); ``weight`` (Cout, 1, kh, kw) with Cout a multiple of Cin;
    ``bias`` (Cout,) or None; result (t, Cout, T, T) with
    ``T = (ph - (kh - 1) * dh - 1) // sh + 1``.
    """
    return F.conv2d(patches, weight, bias, stride, 0, dilation, patches.shape[1])
