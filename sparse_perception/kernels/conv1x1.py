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
1x1 convolution as a GEMM over active rows (tensor cores: fp16/bf16 in, fp32 accumulate).

Two forms share one kernel:

- rows: ``(n, Cin) @ (Cin, Cout) + bias`` over gathered, contiguous rows (the engine's
  ``linear`` primitive);
- tiles: the rows of listed output tiles read straight from the input cache (no separate
  gather), then the epilogue, written into the output cache where the candidate mask is set
  (the sync-free path).

fp32 runs with IEEE products (no TF32) so that fp32 stays exact against the dense model.
"""

from __future__ import annotations

from sparse_perception.kernels.epilogue import Epilogue, NO_EPILOGUE, sink
from sparse_perception.kernels.runtime import (bias_vector, block, cdiv, check_device,
                                               check_dot, check_float, KernelError, launch,
                                               tile_rows, tl, triton, work_count)
import torch


@triton.jit
def _conv1x1_kernel(x_ptr, ld_x, w_ptr, b_ptr, out_ptr, ld_out, cand_ptr,
                    list_ptr, count_ptr, n_items, Cin, Cout, Ho, Wo,
                    e0_a, e0_b, e0_f0, e0_f1, e0_ld, e1_a, e1_b, e1_f0, e1_f1, e1_ld,
                    e2_a, e2_b, e2_f0, e2_f1, e2_ld, e3_a, e3_b, e3_f0, e3_f1, e3_ld,
                    E0: tl.constexpr, E0R: tl.constexpr, E0C: tl.constexpr,
                    E1: tl.constexpr, E1R: tl.constexpr, E1C: tl.constexpr,
                    E2: tl.constexpr, E2R: tl.constexpr, E2C: tl.constexpr,
                    E3: tl.constexpr, E3R: tl.constexpr, E3C: tl.constexpr,
                    HAS_BIAS: tl.constexpr, BY_TILE: tl.constexpr, HAS_CAND: tl.constexpr,
                    HAS_LIST: tl.constexpr, HAS_COUNT: tl.constexpr, IEEE: tl.constexpr,
                    TY: tl.constexpr, TX: tl.constexpr, BLOCK_N: tl.constexpr,
                    BLOCK_K: tl.constexpr):
    pid = tl.program_id(0)
    if BY_TILE:
        if pid >= work_count(count_ptr, n_items, HAS_COUNT):
            return
        b, oy, ox, valid, prow, rmask = tile_rows(list_ptr, pid, cand_ptr, Ho, Wo, HAS_LIST,
                                                  HAS_CAND, TY, TX)
    else:
        prow = pid * (TY * TX) + tl.arange(0, TY * TX)
        rmask = prow < n_items
    n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    nmask = n < Cout
    xrows = prow.to(tl.int64)[:, None] * ld_x
    acc = tl.zeros((TY * TX, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, Cin, BLOCK_K):
        kk = k0 + tl.arange(0, BLOCK_K)
        kmask = kk < Cin
        a = tl.load(x_ptr + xrows + kk[None, :], mask=rmask[:, None] & kmask[None, :],
                    other=0.0)
        w = tl.load(w_ptr + kk.to(tl.int64)[:, None] * Cout + n[None, :],
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


def _blocks(cin: int, cout: int) -> tuple[int, int]:
    return block(cout, 16, 64), block(cin, 16, 32)


def _check(x: torch.Tensor, weight_t: torch.Tensor, bias: torch.Tensor | None) -> None:
    check_device(x, weight_t, bias)
    check_float(x, weight_t, bias)
    if weight_t.dim() != 2 or not weight_t.is_contiguous() or x.shape[1] != weight_t.shape[0]:
        raise KernelError(f'1x1 convolution: rows {tuple(x.shape)} and weight_t '
                          f'{tuple(weight_t.shape)} must be (n, Cin) and contiguous (Cin, Cout)')
    if x.dtype != weight_t.dtype:
        raise KernelError(f'1x1 convolution: rows are {x.dtype}, weights {weight_t.dtype}')
    check_dot(x.dtype, '1x1 convolution')
    if x.stride(1) != 1:
        raise KernelError('1x1 convolution: rows must have unit channel stride')


def linear_rows(rows: torch.Tensor, weight_t: torch.Tensor, bias: torch.Tensor | None,
                out: torch.Tensor | None = None) -> torch.Tensor:
    """``rows @ weight_t + bias`` (see :func:`linear_rows_ref`); into ``out`` when given."""
    _check(rows, weight_t, bias)
    n, cin = rows.shape
    cout = weight_t.shape[1]
    bias = bias_vector(bias, cout, '1x1 convolution')
    if out is None:
        out = torch.empty(n, cout, dtype=rows.dtype, device=rows.device)
    elif out.shape != (n, cout) or out.stride(1) != 1:
        raise KernelError(f'1x1 convolution: out {tuple(out.shape)} must be ({n}, {cout})')
    if n == 0:
        return out
    block_n, block_k = _blocks(cin, cout)
    launch(_conv1x1_kernel, (cdiv(n, 64), cdiv(cout, block_n)),
           rows, rows.stride(0), weight_t, bias if bias is not None else weight_t, out,
           out.stride(0), out, out, out, n, cin, cout, 0, 0,
           HAS_BIAS=bias is not None, BY_TILE=False, HAS_CAND=False, HAS_LIST=False,
           HAS_COUNT=False, IEEE=rows.dtype == torch.float32, TY=1, TX=64,
           BLOCK_N=block_n, BLOCK_K=block_k, **NO_EPILOGUE.kwargs(out))
    return out


def linear_rows_ref(rows: torch.Tensor, weight_t: torch.Tensor, bias: torch.Tensor | None,
                    out: torch.Tensor | None = None) -> torch.Tensor:
    """
    Return ``rows @ weight_t + bias``, into ``out`` when given.

    ``rows`` (n, Cin); ``weight_t`` (Cin, Cout) (a 1x1 convolution's weight transposed);
    ``bias`` (Cout,) or None; ``out`` (n, Cout) or None; result (n, Cout).
    """
    if bias is None:
        return torch.mm(rows, weight_t, out=out) if out is not None else rows @ weight_t
    if out is not None:
        return torch.addmm(bias, rows, weight_t, out=out)
    return torch.addmm(bias, rows, weight_t)


def conv1x1_tiles_args(x: torch.Tensor, weight_t: torch.Tensor, bias: torch.Tensor | None,
                       out: torch.Tensor, out_hw: tuple[int, int], tile: tuple[int, int],
                       tiles: torch.Tensor, count: torch.Tensor | None,
                       cand: torch.Tensor | None = None,
                       epilogue: Epilogue = NO_EPILOGUE) -> tuple:
    """
    Bind a 1x1 convolution over listed output tiles: ``(kernel, grid, args, meta)``.

    ``x`` (P (+ 3), Cin) input cache; ``out`` (P (+ 3), Cout) output cache or staging rows;
    ``tiles`` int32 (capacity,) tile ids over the ``out_hw`` map; ``count`` int32 (1,) on
    the device (None: all of ``tiles``); ``cand`` uint8 (P,) positions to write.
    """
    _check(x, weight_t, bias)
    cin, cout = weight_t.shape
    bias = bias_vector(bias, cout, '1x1 convolution')
    block_n, block_k = _blocks(cin, cout)
    args = (x, x.stride(0), weight_t, bias if bias is not None else weight_t, out,
            out.stride(0), cand if cand is not None else out, tiles,
            count if count is not None else tiles, tiles.numel(), cin, cout, out_hw[0],
            out_hw[1])
    meta = dict(HAS_BIAS=bias is not None, BY_TILE=True, HAS_CAND=cand is not None,
                HAS_LIST=True, HAS_COUNT=count is not None, IEEE=x.dtype == torch.float32,
                TY=tile[0], TX=tile[1], BLOCK_N=block_n, BLOCK_K=block_k,
                **epilogue.kwargs(out))
    return _conv1x1_kernel, (max(1, tiles.numel()), cdiv(cout, block_n)), args, meta
