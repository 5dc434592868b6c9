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
Linear resampling (nearest, bilinear, bicubic, area) as weighted sums of taps.

Two forms: the engine's ``resample`` primitive on already gathered taps ``(n, K, C)`` with
weights ``(n, K)``; and the sync-free form over listed output tiles, where each output
position reads its taps straight from the input cache through separable tap tables
(``(Ho, kh)`` rows and ``(Wo, kw)`` columns with their weights, as torch's interpolate
defines them; entries past the input are empty taps).
"""

from __future__ import annotations

from sparse_perception.kernels.epilogue import Epilogue, NO_EPILOGUE, sink
from sparse_perception.kernels.runtime import (block, cdiv, check_device, check_float, KernelError,
                                               launch, tile_positions, tl, triton, work_count,
                                               work_item)
import torch


@triton.jit
def _taps_kernel(rows_ptr, w_ptr, out_ptr, n, K, C,
                 BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    rmask = r < n
    m2 = rmask[:, None] & (c < C)[None, :]
    r64 = r.to(tl.int64)
    acc = tl.zeros((BLOCK_R, BLOCK_C), dtype=tl.float32)
    for k in range(0, K):
        w = tl.load(w_ptr + r64 * K + k, mask=rmask, other=0.0).to(tl.float32)
        v = tl.load(rows_ptr + (r64 * K + k)[:, None] * C + c[None, :], mask=m2, other=0.0)
        acc += w[:, None] * v.to(tl.float32)
    tl.store(out_ptr + r64[:, None] * C + c[None, :], acc.to(out_ptr.dtype.element_ty),
             mask=m2)


def resample_taps(rows: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted sum of gathered taps (see :func:`resample_taps_ref`)."""
    check_device(rows, weights)
    check_float(rows, weights)
    if rows.dim() != 3 or weights.shape != rows.shape[:2]:
        raise KernelError(f'resample: taps {tuple(rows.shape)} and weights '
                          f'{tuple(weights.shape)} must be (n, K, C) and (n, K)')
    rows, weights = rows.contiguous(), weights.contiguous()
    n, k, channels = rows.shape
    out = torch.empty(n, channels, dtype=rows.dtype, device=rows.device)
    if n and channels:
        block_c = block(channels, 16, 64)
        launch(_taps_kernel, (cdiv(n, 32), cdiv(channels, block_c)), rows, weights, out, n, k,
               channels, BLOCK_R=32, BLOCK_C=block_c)
    return out


def resample_taps_ref(rows: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """
    Return ``sum_k weights[:, k] * rows[:, k]``.

    ``rows`` (n, K, C) gathered taps; ``weights`` (n, K); result (n, C).
    """
    if rows.shape[1] == 1:
        return rows[:, 0] * weights
    return torch.bmm(weights.unsqueeze(1), rows).squeeze(1)


@triton.jit
def _resample_tiles_kernel(x_ptr, ld_x, th_ptr, wh_ptr, tw_ptr, ww_ptr, out_ptr, ld_out,
                           cand_ptr, list_ptr, count_ptr, n_items, Hi, Wi, Ho, Wo, C,
                           e0_a, e0_b, e0_f0, e0_f1, e0_ld, e1_a, e1_b, e1_f0, e1_f1, e1_ld,
                           e2_a, e2_b, e2_f0, e2_f1, e2_ld, e3_a, e3_b, e3_f0, e3_f1, e3_ld,
                           E0: tl.constexpr, E0R: tl.constexpr, E0C: tl.constexpr,
                           E1: tl.constexpr, E1R: tl.constexpr, E1C: tl.constexpr,
                           E2: tl.constexpr, E2R: tl.constexpr, E2C: tl.constexpr,
                           E3: tl.constexpr, E3R: tl.constexpr, E3C: tl.constexpr,
                           KH: tl.constexpr, KW: tl.constexpr, HAS_CAND: tl.constexpr,
                           HAS_LIST: tl.constexpr, HAS_COUNT: tl.constexpr,
                           TY: tl.constexpr, TX: tl.constexpr, BLOCK_C: tl.constexpr):
    pid = tl.program_id(0)
    if pid >= work_count(count_ptr, n_items, HAS_COUNT):
        return
    t = work_item(list_ptr, pid, HAS_LIST)
    b, oy, ox, valid = tile_positions(t, Ho, Wo, TY, TX)
    prow = oy * Wo + ox
    if HAS_CAND:
        rmask = valid & (tl.load(cand_ptr + prow, mask=valid, other=0) != 0)
    else:
        rmask = valid
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = c < C
    acc = tl.zeros((TY * TX, BLOCK_C), dtype=tl.float32)
    for i in tl.static_range(KH):
        r = tl.load(th_ptr + oy * KH + i, mask=rmask, other=Hi)
        wr = tl.load(wh_ptr + oy * KH + i, mask=rmask, other=0.0)
        for j in tl.static_range(KW):
            q = tl.load(tw_ptr + ox * KW + j, mask=rmask, other=Wi)
            wq = tl.load(ww_ptr + ox * KW + j, mask=rmask, other=0.0)
            ok = rmask & (r < Hi) & (q < Wi)
            irow = (r * Wi + q).to(tl.int64)
            v = tl.load(x_ptr + irow[:, None] * ld_x + c[None, :],
                        mask=ok[:, None] & cmask[None, :], other=0.0)
            acc += (wr * wq)[:, None] * v.to(tl.float32)
    sink(acc, prow, prow, rmask, c, cmask, out_ptr, ld_out,
         e0_a, e0_b, e0_f0, e0_f1, e0_ld, e1_a, e1_b, e1_f0, e1_f1, e1_ld,
         e2_a, e2_b, e2_f0, e2_f1, e2_ld, e3_a, e3_b, e3_f0, e3_f1, e3_ld,
         E0, E0R, E0C, E1, E1R, E1C, E2, E2R, E2C, E3, E3R, E3C)


def tap_tables(matrix: torch.Tensor, n_in: int) -> tuple[torch.Tensor, torch.Tensor]:
    """
    Split a (n_out, n_in) resampling matrix into taps: int32 (n_out, k), float32 (n_out, k).

    ``k`` is the largest number of nonzero weights in a row; shorter rows are padded with
    tap ``n_in`` (empty) and weight 0.
    """
    nonzero = matrix != 0
    k = max(1, int(nonzero.sum(1).max()))
    order = torch.argsort((~nonzero).to(torch.int8), dim=1, stable=True)[:, :k]
    weights = torch.gather(matrix, 1, order)
    valid = torch.gather(nonzero, 1, order)
    taps = torch.where(valid, order, n_in).to(torch.int32).contiguous()
    return taps, torch.where(valid, weights, 0.0).float().contiguous()


def resample_tiles_args(x: torch.Tensor, out: torch.Tensor, in_hw: tuple[int, int],
                        out_hw: tuple[int, int], rows: tuple, cols: tuple,
                        tile: tuple[int, int], tiles: torch.Tensor,
                        count: torch.Tensor | None, cand: torch.Tensor | None = None,
                        epilogue: Epilogue = NO_EPILOGUE) -> tuple:
    """
    Bind resampling over listed output tiles: ``(kernel, grid, args, meta)``.

    ``x`` (Hi * Wi (+ 3), C); ``out`` (Ho * Wo (+ 3), C); ``rows`` and ``cols`` the
    (taps, weights) of :func:`tap_tables` for the height and the width; ``tiles`` int32 tile
    ids (``count`` int32 (1,) on the device, or None for all); ``cand`` uint8 positions.
    """
    check_device(x, out, tiles, *rows, *cols)
    check_float(x, out)
    channels = x.shape[1]
    block_c = block(channels, 16, 32)
    args = (x, x.stride(0), rows[0], rows[1], cols[0], cols[1], out, out.stride(0),
            cand if cand is not None else out, tiles, count if count is not None else tiles,
            tiles.numel(), in_hw[0], in_hw[1], out_hw[0], out_hw[1], channels)
    meta = dict(KH=rows[0].shape[1], KW=cols[0].shape[1], HAS_CAND=cand is not None,
                HAS_LIST=True, HAS_COUNT=count is not None, TY=tile[0], TX=tile[1],
                BLOCK_C=block_c, **epilogue.kwargs(out))
    return _resample_tiles_kernel, (max(1, tiles.numel()), cdiv(channels, block_c)), args, meta


def resample_tiles_ref(x: torch.Tensor, in_hw: tuple[int, int], out_hw: tuple[int, int],
                       rows: tuple, cols: tuple) -> torch.Tensor:
    """
    Resample a whole map with the tap tables (the reference of the tile form).

    ``x`` (Hi * Wi (+ 3), C) rows; ``rows`` = (int (Ho, kh), float (Ho, kh)), ``cols`` =
    (int (Wo, kw), float (Wo, kw)); result (Ho * Wo, C) float32.
    """
    hi, wi = in_hw
    ho, wo = out_hw
    ah = torch.zeros(ho, hi + 1, dtype=torch.float64, device=x.device)
    ah.scatter_add_(1, rows[0].long(), rows[1].double())
    aw = torch.zeros(wo, wi + 1, dtype=torch.float64, device=x.device)
    aw.scatter_add_(1, cols[0].long(), cols[1].double())
    grid = x[:hi * wi].double().view(hi, wi, -1)
    y = torch.einsum('oh,hwc->owc', ah[:, :hi], grid)
    y = torch.einsum('pw,owc->opc', aw[:, :wi], y)
    return y.reshape(ho * wo, -1).float()
