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
Softmax, log-softmax and argmax over the channels of each position, over listed tiles.

A program takes a tile of positions and loops over the channels in blocks: a first pass
finds each position's maximum (and, for argmax, its first index, as torch returns), a second
one sums the exponentials, a third writes the result.
"""

from __future__ import annotations

from sparse_perception.kernels.runtime import (block, check_device, KernelError, tile_positions,
                                               tl, triton, work_count, work_item)
import torch

FUNCTIONS = {'softmax': 0, 'log_softmax': 1, 'argmax': 2}


@triton.jit
def _positionwise_kernel(x_ptr, ld_x, out_ptr, ld_out, cand_ptr, list_ptr, count_ptr,
                         n_items, Ho, Wo, C, FN: tl.constexpr, HAS_CAND: tl.constexpr,
                         HAS_COUNT: tl.constexpr, TY: tl.constexpr, TX: tl.constexpr,
                         BLOCK_C: tl.constexpr):
    pid = tl.program_id(0)
    if pid >= work_count(count_ptr, n_items, HAS_COUNT):
        return
    t = work_item(list_ptr, pid, True)
    b, oy, ox, valid = tile_positions(t, Ho, Wo, TY, TX)
    prow = oy * Wo + ox
    if HAS_CAND:
        rmask = valid & (tl.load(cand_ptr + prow, mask=valid, other=0) != 0)
    else:
        rmask = valid
    rows = prow.to(tl.int64)[:, None] * ld_x
    best = tl.full((TY * TX,), float('-inf'), dtype=tl.float32)
    best_i = tl.zeros((TY * TX,), dtype=tl.int32)
    nan_i = tl.full((TY * TX,), C, dtype=tl.int32)  # the first NaN channel (C: none)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        m2 = rmask[:, None] & (c < C)[None, :]
        v = tl.load(x_ptr + rows + c[None, :], mask=m2, other=float('-inf')).to(tl.float32)
        nan_i = tl.minimum(nan_i, tl.min(tl.where(v != v, c[None, :], C), 1))
        v = tl.where(v != v, float('-inf'), v)
        block_max = tl.max(v, 1)
        # First channel reaching the block's maximum (torch returns the first maximum).
        first = tl.min(tl.where(v == block_max[:, None], c[None, :], C), 1)
        better = block_max > best
        best_i = tl.where(better, first, best_i)
        best = tl.maximum(best, block_max)
    out_rows = prow.to(tl.int64)[:, None] * ld_out
    if FN == 2:
        # torch takes NaN for the maximum: the first NaN wins, as in its argmax.
        best_i = tl.where(nan_i < C, nan_i, best_i)
        tl.store(out_ptr + out_rows, best_i[:, None].to(out_ptr.dtype.element_ty),
                 mask=rmask[:, None])
    else:
        best = tl.where(rmask, best, 0.0)  # rows not written: keep their lanes finite
        total = tl.zeros((TY * TX,), dtype=tl.float32)
        for c0 in range(0, C, BLOCK_C):
            c = c0 + tl.arange(0, BLOCK_C)
            m2 = rmask[:, None] & (c < C)[None, :]
            v = tl.load(x_ptr + rows + c[None, :], mask=m2, other=0.0).to(tl.float32)
            total += tl.sum(tl.where(m2, tl.exp(v - best[:, None]), 0.0), 1)
        total = tl.where(rmask, total, 1.0)
        for c0 in range(0, C, BLOCK_C):
            c = c0 + tl.arange(0, BLOCK_C)
            m2 = rmask[:, None] & (c < C)[None, :]
            v = tl.load(x_ptr + rows + c[None, :], mask=m2, other=0.0).to(tl.float32)
            if FN == 0:
                y = tl.exp(v - best[:, None]) / total[:, None]
            else:
                y = v - best[:, None] - tl.log(total)[:, None]
            tl.store(out_ptr + out_rows + c[None, :], y.to(out_ptr.dtype.element_ty), mask=m2)


def positionwise_args(x: torch.Tensor, out: torch.Tensor, fn: str, out_hw: tuple[int, int],
                      tile: tuple[int, int], tiles: torch.Tensor, count: torch.Tensor | None,
                      cand: torch.Tensor | None = None) -> tuple:
    """
    Bind a per-position function over listed tiles: ``(kernel, grid, args, meta)``.

    ``x`` (P (+ 3), C); ``out`` (P (+ 3), C) for softmax and log-softmax, (P (+ 3), 1)
    int64 for argmax; ``tiles`` int32 tile ids (``count`` int32 (1,) on the device, or None
    for all); ``cand`` uint8 (P,) positions to write.
    """
    check_device(x, out, tiles)
    if fn not in FUNCTIONS:
        raise KernelError(f'positionwise function {fn!r}; expected one of {sorted(FUNCTIONS)}')
    channels = x.shape[1]
    wanted = 1 if fn == 'argmax' else channels
    if out.dim() != 2 or out.shape[1] != wanted:
        raise KernelError(f'positionwise {fn}: out {tuple(out.shape)} must have {wanted} '
                          f'channel(s) for an input of {channels}')
    args = (x, x.stride(0), out, out.stride(0), cand if cand is not None else out, tiles,
            count if count is not None else tiles, tiles.numel(), out_hw[0], out_hw[1],
            channels)
    meta = {'FN': FUNCTIONS[fn], 'HAS_CAND': cand is not None, 'HAS_COUNT': count is not None,
            'TY': tile[0], 'TX': tile[1], 'BLOCK_C': block(channels, 16, 64)}
    return _positionwise_kernel, (max(1, tiles.numel()),), args, meta


def positionwise_ref(x: torch.Tensor, fn: str) -> torch.Tensor:
    """
    Apply ``fn`` over the channels of rows ``x`` (n, C).

    Softmax and log-softmax give (n, C) in x's dtype (computed in fp32), argmax int64 (n, 1).
    """
    if fn == 'argmax':
        # argmax's indices through max: the same indices, faster on the CPU (engine/ops.py)
        return x.max(1, keepdim=True).indices
    y = torch.softmax(x.float(), 1) if fn == 'softmax' else torch.log_softmax(x.float(), 1)
    return y.to(x.dtype)
