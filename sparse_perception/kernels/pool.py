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
Max and average pooling over tiles of output positions.

Taps outside the input are padding: ignored by max pooling (``-inf``), zeros for average
pooling, which divides by ``kh * kw`` or, in the sync-free path, by a per-position divisor
table that reproduces torch's ``count_include_pad``, ``ceil_mode`` and ``divisor_override``.
"""

from __future__ import annotations

from sparse_perception.kernels.epilogue import Epilogue, NO_EPILOGUE, sink
from sparse_perception.kernels.runtime import (check_device, check_float, KernelError, launch,
                                               tile_rows, tl, triton, work_count)
from sparse_perception.kernels.window import (channel_block, channels_last_rows, Geometry,
                                              patch_geometry, patch_tile, rows_as_nchw)
import torch
import torch.nn.functional as F


@triton.jit
def _pool_kernel(x_ptr, ld_x, div_ptr, out_ptr, ld_out, cand_ptr,
                 list_ptr, count_ptr, n_items, Hi, Wi, Ho, Wo, sy, sx, dy, dx, pt, pl, C,
                 e0_a, e0_b, e0_f0, e0_f1, e0_ld, e1_a, e1_b, e1_f0, e1_f1, e1_ld,
                 e2_a, e2_b, e2_f0, e2_f1, e2_ld, e3_a, e3_b, e3_f0, e3_f1, e3_ld,
                 E0: tl.constexpr, E0R: tl.constexpr, E0C: tl.constexpr,
                 E1: tl.constexpr, E1R: tl.constexpr, E1C: tl.constexpr,
                 E2: tl.constexpr, E2R: tl.constexpr, E2C: tl.constexpr,
                 E3: tl.constexpr, E3R: tl.constexpr, E3C: tl.constexpr,
                 KH: tl.constexpr, KW: tl.constexpr, MAX: tl.constexpr,
                 DIV_TABLE: tl.constexpr, HAS_CAND: tl.constexpr, HAS_LIST: tl.constexpr,
                 HAS_COUNT: tl.constexpr, TY: tl.constexpr, TX: tl.constexpr,
                 BLOCK_C: tl.constexpr):
    pid = tl.program_id(0)
    if pid >= work_count(count_ptr, n_items, HAS_COUNT):
        return
    b, oy, ox, valid, prow, rmask = tile_rows(list_ptr, pid, cand_ptr, Ho, Wo, HAS_LIST,
                                              HAS_CAND, TY, TX)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = c < C
    if MAX:
        acc = tl.full((TY * TX, BLOCK_C), float('-inf'), dtype=tl.float32)
    else:
        acc = tl.zeros((TY * TX, BLOCK_C), dtype=tl.float32)
    base = b * Hi * Wi
    for ky in tl.static_range(KH):
        iy = oy * sy - pt + ky * dy
        row_ok = rmask & (iy >= 0) & (iy < Hi)
        for kx in tl.static_range(KW):
            ix = ox * sx - pl + kx * dx
            ok = row_ok & (ix >= 0) & (ix < Wi)
            irow = (base + iy * Wi + ix).to(tl.int64)
            m2 = ok[:, None] & cmask[None, :]
            if MAX:
                v = tl.load(x_ptr + irow[:, None] * ld_x + c[None, :], mask=m2,
                            other=float('-inf'))
                acc = tl.maximum(acc, v.to(tl.float32))
            else:
                v = tl.load(x_ptr + irow[:, None] * ld_x + c[None, :], mask=m2, other=0.0)
                acc += v.to(tl.float32)
    if not MAX:
        if DIV_TABLE:
            d = tl.load(div_ptr + oy * Wo + ox, mask=valid, other=1.0)
            acc = acc / d[:, None]
        else:
            acc = acc / (KH * KW)
    sink(acc, prow, prow, rmask, c, cmask, out_ptr, ld_out,
         e0_a, e0_b, e0_f0, e0_f1, e0_ld, e1_a, e1_b, e1_f0, e1_f1, e1_ld,
         e2_a, e2_b, e2_f0, e2_f1, e2_ld, e3_a, e3_b, e3_f0, e3_f1, e3_ld,
         E0, E0R, E0C, E1, E1R, E1C, E2, E2R, E2C, E3, E3R, E3C)


def avg_divisors(in_hw: tuple[int, int], kernel, stride, padding, ceil_mode: bool,
                 count_include_pad: bool, divisor_override) -> torch.Tensor:
    """
    Return float32 (Ho * Wo,): what torch's avg_pool2d divides each output's tap sum by.

    Measured from torch itself on an all-ones input, so every option behaves as torch does.
    """
    ones = torch.ones(1, 1, *in_hw, dtype=torch.float64)
    kw = {'kernel_size': tuple(kernel), 'stride': tuple(stride), 'padding': tuple(padding),
          'ceil_mode': ceil_mode}
    mean = F.avg_pool2d(ones, count_include_pad=count_include_pad,
                        divisor_override=divisor_override, **kw)
    inside = F.avg_pool2d(ones, count_include_pad=True, divisor_override=1, **kw)
    divisor = torch.where(mean > 0, inside / mean.clamp(min=1e-300), torch.ones_like(mean))
    return divisor.reshape(-1).float()


def pool_args(x: torch.Tensor, out: torch.Tensor, mode: str, geometry: Geometry,
              tile: tuple[int, int], tiles: torch.Tensor, count: torch.Tensor | None,
              divisors: torch.Tensor | None = None, cand: torch.Tensor | None = None,
              epilogue: Epilogue = NO_EPILOGUE) -> tuple:
    """
    Bind max or average pooling over listed tiles: ``(kernel, grid, args, meta)``.

    ``x`` (B * Hi * Wi (+ 3), C); ``out`` (B * Ho * Wo (+ 3), C); ``divisors`` float32
    (Ho * Wo,) from :func:`avg_divisors` (None: divide by kh * kw); ``tiles`` int32 tile ids
    (``count`` int32 (1,) on the device, or None for all); ``cand`` uint8 positions to write.
    """
    check_device(x, out, divisors)
    check_float(x, out)
    if mode not in ('max', 'avg'):
        raise KernelError(f'pooling mode {mode!r}; expected max or avg')
    if mode == 'avg' and tuple(geometry.dilation) != (1, 1):
        raise KernelError(f'average pooling with dilation {tuple(geometry.dilation)}: '
                          'average pooling has no dilation (as in torch)')
    channels = x.shape[1]
    block_c = channel_block(channels)
    kh, kw = geometry.kernel
    args = (x, x.stride(0), divisors if divisors is not None else out, out, out.stride(0),
            cand if cand is not None else out, tiles, count if count is not None else tiles,
            tiles.numel(), *geometry.args(), channels)
    meta = dict(KH=kh, KW=kw, MAX=mode == 'max', DIV_TABLE=divisors is not None,
                HAS_CAND=cand is not None, HAS_LIST=True, HAS_COUNT=count is not None,
                TY=tile[0], TX=tile[1], BLOCK_C=block_c, **epilogue.kwargs(out))
    return _pool_kernel, (max(1, tiles.numel()), -(-channels // block_c)), args, meta


def pool_patches(patches: torch.Tensor, mode: str, kernel, stride, dilation) -> torch.Tensor:
    """Pooling of patches with padding 0 (see :func:`pool_patches_ref`)."""
    t, channels = patches.shape[:2]
    geometry, _ = patch_geometry(patches, kernel, stride, dilation)
    out = torch.empty(t * geometry.out_hw[0] * geometry.out_hw[1], channels,
                      dtype=patches.dtype, device=patches.device)
    if t:
        tiles = torch.arange(t, dtype=torch.int32, device=patches.device)
        kern, grid, args, meta = pool_args(channels_last_rows(patches), out, mode, geometry,
                                           patch_tile(geometry.out_hw), tiles, None)
        launch(kern, (t, grid[1]), *args, **meta)
    return rows_as_nchw(out, t, geometry.out_hw)


def pool_patches_ref(patches: torch.Tensor, mode: str, kernel, stride,
                     dilation) -> torch.Tensor:
    """
    Max or average pooling with padding 0 of a batch of patches.

    ``patches`` (t, C, ph, pw); result (t, C, T, T); average pooling divides by kh * kw
    (dilation only applies to max pooling, as in torch).
    """
    if mode == 'max':
        return F.max_pool2d(patches, kernel, stride, 0, dilation)
    return F.avg_pool2d(patches, kernel, stride, 0)
