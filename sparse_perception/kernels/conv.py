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
Dense and grouped KxK convolution over tiles of output positions, as an implicit GEMM.

A program computes a tile of ``TY x TX`` output positions for a block of output channels of
one group: for every tap (ky, kx) and block of the group's input channels it loads the
input rows at that tap (zeros outside the map: the padding) and multiplies them with the
weight slice on tensor cores (fp16/bf16 in, fp32 accumulate; fp32 with IEEE products). No
patch is materialised: the gather with halo is fused into the loads.

The same kernel runs transposed convolutions (``transposed=True``): output ``o`` reads input
``i = (o + pad - k * dilation) / stride`` at tap ``k`` where that division is exact, so each
output position sums its own taps (no scatter, no atomics) and only changed tiles run.
"""

from __future__ import annotations

from sparse_perception.kernels.epilogue import Epilogue, NO_EPILOGUE, sink
from sparse_perception.kernels.runtime import (bias_vector, block, cdiv, check_device,
                                               check_dot, check_float, KernelError, launch,
                                               tile_rows, tl, triton, work_count)
from sparse_perception.kernels.window import (channels_last_rows, Geometry, patch_geometry,
                                              patch_tile, rows_as_nchw)
import torch
import torch.nn.functional as F


@triton.jit
def _conv_kernel(x_ptr, ld_x, w_ptr, b_ptr, out_ptr, ld_out, cand_ptr,
                 list_ptr, count_ptr, n_items, Hi, Wi, Ho, Wo, sy, sx, dy, dx, pt, pl,
                 Cin_g, Cout, Cout_g, n_blocks,
                 e0_a, e0_b, e0_f0, e0_f1, e0_ld, e1_a, e1_b, e1_f0, e1_f1, e1_ld,
                 e2_a, e2_b, e2_f0, e2_f1, e2_ld, e3_a, e3_b, e3_f0, e3_f1, e3_ld,
                 E0: tl.constexpr, E0R: tl.constexpr, E0C: tl.constexpr,
                 E1: tl.constexpr, E1R: tl.constexpr, E1C: tl.constexpr,
                 E2: tl.constexpr, E2R: tl.constexpr, E2C: tl.constexpr,
                 E3: tl.constexpr, E3R: tl.constexpr, E3C: tl.constexpr,
                 KH: tl.constexpr, KW: tl.constexpr, HAS_BIAS: tl.constexpr,
                 HAS_CAND: tl.constexpr, HAS_LIST: tl.constexpr, HAS_COUNT: tl.constexpr,
                 IEEE: tl.constexpr, TRANSPOSED: tl.constexpr, TY: tl.constexpr,
                 TX: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid = tl.program_id(0)
    if pid >= work_count(count_ptr, n_items, HAS_COUNT):
        return
    b, oy, ox, valid, prow, rmask = tile_rows(list_ptr, pid, cand_ptr, Ho, Wo, HAS_LIST,
                                              HAS_CAND, TY, TX)
    g = tl.program_id(1) // n_blocks
    local = (tl.program_id(1) % n_blocks) * BLOCK_N + tl.arange(0, BLOCK_N)
    nmask = local < Cout_g
    n = g * Cout_g + local
    acc = tl.zeros((TY * TX, BLOCK_N), dtype=tl.float32)
    base = b * Hi * Wi
    for ky in tl.static_range(KH):
        if TRANSPOSED:  # input row (oy + pt - ky * dy) / sy, where that is exact
            ny = oy + pt - ky * dy
            iy = tl.where(ny >= 0, ny, 0) // sy
            row_ok = rmask & (ny >= 0) & (ny % sy == 0) & (iy < Hi)
        else:
            iy = oy * sy - pt + ky * dy
            row_ok = rmask & (iy >= 0) & (iy < Hi)
        for kx in tl.static_range(KW):
            if TRANSPOSED:
                nx = ox + pl - kx * dx
                ix = tl.where(nx >= 0, nx, 0) // sx
                ok = row_ok & (nx >= 0) & (nx % sx == 0) & (ix < Wi)
            else:
                ix = ox * sx - pl + kx * dx
                ok = row_ok & (ix >= 0) & (ix < Wi)
            irow = (base + iy * Wi + ix).to(tl.int64)[:, None] * ld_x
            for k0 in range(0, Cin_g, BLOCK_K):
                kk = k0 + tl.arange(0, BLOCK_K)
                kmask = kk < Cin_g
                a = tl.load(x_ptr + irow + (g * Cin_g + kk)[None, :],
                            mask=ok[:, None] & kmask[None, :], other=0.0)
                wrow = ((ky * KW + kx) * Cin_g + kk).to(tl.int64)
                w = tl.load(w_ptr + wrow[:, None] * Cout + n[None, :],
                            mask=kmask[:, None] & nmask[None, :], other=0.0)
                if IEEE:
                    acc = tl.dot(a, w, acc, input_precision='ieee')
                else:
                    acc = tl.dot(a, w, acc)
    if HAS_BIAS:
        acc += tl.load(b_ptr + n, mask=nmask, other=0.0).to(tl.float32)[None, :]
    sink(acc, prow, prow, rmask, n, nmask, out_ptr, ld_out,
         e0_a, e0_b, e0_f0, e0_f1, e0_ld, e1_a, e1_b, e1_f0, e1_f1, e1_ld,
         e2_a, e2_b, e2_f0, e2_f1, e2_ld, e3_a, e3_b, e3_f0, e3_f1, e3_ld,
         E0, E0R, E0C, E1, E1R, E1C, E2, E2R, E2C, E3, E3R, E3C)


def conv_weight(weight: torch.Tensor) -> torch.Tensor:
    """Convert a weight (Cout, Cin / groups, kh, kw) to the kernel layout (kh, kw, Cin_g, Cout)."""
    if weight.dim() != 4:
        raise KernelError(f'convolution weight {tuple(weight.shape)}: expected 4 dimensions')
    return weight.permute(2, 3, 1, 0).contiguous()


def conv_transpose_weight(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """Convert a transposed weight (Cin, Cout / groups, kh, kw) to (kh, kw, Cin_g, Cout)."""
    if weight.dim() != 4 or weight.shape[0] % groups:
        raise KernelError(f'transposed convolution weight {tuple(weight.shape)} with {groups} '
                          'groups: expected (Cin, Cout / groups, kh, kw), Cin divisible')
    cin, cout_g, kh, kw = weight.shape
    w = weight.reshape(groups, cin // groups, cout_g, kh, kw)
    return w.permute(3, 4, 1, 0, 2).reshape(kh, kw, cin // groups, groups * cout_g).contiguous()


def transposed_taps(n_out: int, n_in: int, kernel: int, stride: int, dilation: int,
                    padding: int) -> torch.Tensor:
    """
    Input index of every (output, tap) of a transposed convolution along one axis.

    Returns int32 (n_out, kernel): ``(o + padding - k * dilation) / stride`` where that is an
    exact division inside [0, n_in), else ``n_in`` (no input): the tap tables the candidate
    kernel reads (``masks.candidates_args(tables=...)``).
    """
    o = torch.arange(n_out).view(-1, 1)
    num = o + padding - torch.arange(kernel).view(1, -1) * dilation
    i = torch.div(num, stride, rounding_mode='floor')
    ok = (num >= 0) & (num % stride == 0) & (i < n_in)
    return torch.where(ok, i, n_in).to(torch.int32).contiguous()


def conv_args(x: torch.Tensor, w_gemm: torch.Tensor, bias: torch.Tensor | None,
              out: torch.Tensor, geometry: Geometry, groups: int, tile: tuple[int, int],
              tiles: torch.Tensor, count: torch.Tensor | None,
              cand: torch.Tensor | None = None, epilogue: Epilogue = NO_EPILOGUE,
              transposed: bool = False) -> tuple:
    """
    Bind a KxK convolution over listed tiles: ``(kernel, grid, args, meta)``.

    ``x`` (B * Hi * Wi (+ 3), Cin) input rows; ``w_gemm`` (kh, kw, Cin / groups, Cout) from
    :func:`conv_weight` (or :func:`conv_transpose_weight` with ``transposed``, where the
    geometry's pads are the transposed convolution's padding); ``out`` (B * Ho * Wo (+ 3),
    Cout); ``tiles`` int32 tile ids (``count`` int32 (1,) on the device, or None for all);
    ``cand`` uint8 positions to write. Reference: :func:`conv_tiles_ref`.
    """
    check_device(x, w_gemm, bias, out)
    check_float(x, w_gemm, bias, out)
    kh, kw, cin_g, cout = w_gemm.shape
    if (kh, kw) != tuple(geometry.kernel) or cout % groups or x.shape[1] != cin_g * groups:
        raise KernelError(f'convolution: weight {tuple(w_gemm.shape)} (kh, kw, Cin_g, Cout), '
                          f'{groups} groups and input channels {x.shape[1]} do not match')
    if x.dtype != w_gemm.dtype:
        raise KernelError(f'convolution: input is {x.dtype}, weights {w_gemm.dtype}')
    check_dot(x.dtype, 'convolution')
    bias = bias_vector(bias, cout, 'convolution')
    cout_g = cout // groups
    block_n, block_k = block(cout_g, 16, 64), block(cin_g, 16, 32)
    n_blocks = cdiv(cout_g, block_n)
    args = (x, x.stride(0), w_gemm, bias if bias is not None else w_gemm, out, out.stride(0),
            cand if cand is not None else out, tiles, count if count is not None else tiles,
            tiles.numel(), *geometry.args(), cin_g, cout, cout_g, n_blocks)
    meta = dict(KH=kh, KW=kw, HAS_BIAS=bias is not None, HAS_CAND=cand is not None,
                HAS_LIST=True, HAS_COUNT=count is not None, IEEE=x.dtype == torch.float32,
                TRANSPOSED=bool(transposed), TY=tile[0], TX=tile[1], BLOCK_N=block_n,
                BLOCK_K=block_k,
                **epilogue.kwargs(out))
    return _conv_kernel, (max(1, tiles.numel()), groups * n_blocks), args, meta


def conv_patches(patches: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                 stride, dilation, groups: int,
                 w_gemm: torch.Tensor | None = None) -> torch.Tensor:
    """Convolve patches with padding 0 (see :func:`conv_patches_ref`)."""
    t = patches.shape[0]
    geometry, _ = patch_geometry(patches, weight.shape[2:], stride, dilation)
    cout = weight.shape[0]
    out = torch.empty(t * geometry.out_hw[0] * geometry.out_hw[1], cout, dtype=patches.dtype,
                      device=patches.device)
    if t:
        tiles = torch.arange(t, dtype=torch.int32, device=patches.device)
        kernel, grid, args, meta = conv_args(
            channels_last_rows(patches), w_gemm if w_gemm is not None else conv_weight(weight),
            bias, out, geometry, groups, patch_tile(geometry.out_hw), tiles, None)
        launch(kernel, (t, grid[1]), *args, **meta)
    return rows_as_nchw(out, t, geometry.out_hw)


def conv_patches_ref(patches: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                     stride, dilation, groups: int) -> torch.Tensor:
    """
    Convolve a batch of patches (KxK, any stride, dilation and groups) with padding 0.

    ``patches`` (t, Cin, ph, pw); ``weight`` (Cout, Cin / groups, kh, kw); ``bias`` (Cout,)
    or None; result (t, Cout, T, T) with ``T = (ph - (kh - 1) * dh - 1) // sh + 1``.
    """
    return F.conv2d(patches, weight, bias, stride, 0, dilation, groups)


def conv_tiles_ref(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                   geometry: Geometry, groups: int, transposed: bool = False,
                   output_padding: tuple = (0, 0)) -> torch.Tensor:
    """
    Return the whole output map that :func:`conv_args` computes tile by tile (plain torch).

    ``x`` (Hi * Wi (+ 3), Cin) rows of one image; ``weight`` in PyTorch's layout, (Cout,
    Cin / groups, kh, kw) or, ``transposed``, (Cin, Cout / groups, kh, kw); returns rows
    (Ho * Wo, Cout) in float32 (before any epilogue).
    """
    (hi, wi), (ho, wo) = geometry.in_hw, geometry.out_hw
    image = x[:hi * wi].float().t().reshape(1, -1, hi, wi)
    w = weight.float()
    b = None if bias is None else bias.float()
    if transposed:
        y = F.conv_transpose2d(image, w, b, geometry.stride, geometry.pads, output_padding,
                               groups, geometry.dilation)
    else:
        (kh, kw), (sy, sx), (dy, dx) = geometry.kernel, geometry.stride, geometry.dilation
        # Zeros on the far sides too: enough for every output position, the rest cropped.
        image = F.pad(image, (geometry.pads[1], kw * dx + wo * sx, geometry.pads[0],
                              kh * dy + ho * sy))
        y = F.conv2d(image, w, b, geometry.stride, 0, geometry.dilation, groups)
    return y[0, :, :ho, :wo].reshape(y.shape[1], -1).t()
