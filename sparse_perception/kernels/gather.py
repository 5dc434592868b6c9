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
Data movement: gather rows of a cache, and copy rows into listed output tiles.

``gather_rows`` is the engine's ``gather`` primitive: rows of an NHWC cache at an index
(active positions, tiles with their halo, resampling taps). ``copy_tiles`` is the sync-free
form used by padding, concatenation, depth-to-space and standalone pointwise layers: output
positions of listed tiles read one source row each (through optional separable row and column
tables; for depth-to-space, at channels that depend on the position's phase in its block),
then the epilogue, written only where the candidate mask is set.
"""

from __future__ import annotations

from sparse_perception.kernels.epilogue import Epilogue, epilogue_ref, NO_EPILOGUE, sink
from sparse_perception.kernels.runtime import (block, cdiv, check_device, check_float, KernelError,
                                               launch, tile_positions, tl, triton, work_count,
                                               work_item)
from sparse_perception.kernels.window import listed_positions
import torch


@triton.jit
def _gather_rows_kernel(src_ptr, ld_src, index_ptr, out_ptr, n, C,
                        BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    rmask = r < n
    m2 = rmask[:, None] & (cols < C)[None, :]
    idx = tl.load(index_ptr + r, mask=rmask, other=0).to(tl.int64)
    v = tl.load(src_ptr + idx[:, None] * ld_src + cols[None, :], mask=m2)
    tl.store(out_ptr + r.to(tl.int64)[:, None] * C + cols[None, :], v, mask=m2)


def gather_rows(src: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """
    Rows ``src[index]`` (see :func:`gather_rows_ref`).

    The indices are not checked against the rows (that would wait for the GPU): the engine's
    come from its own position lists.
    """
    check_device(src, index)
    if src.dim() != 2 or src.stride(1) != 1:
        raise KernelError(f'gather: src must be (rows, channels) row-major, got '
                          f'{tuple(src.shape)} with strides {src.stride()}')
    flat = index.reshape(-1)
    n, channels = flat.numel(), src.shape[1]
    out = torch.empty(n, channels, dtype=src.dtype, device=src.device)
    if n and channels:
        block_c = block(channels, 16, 128)
        launch(_gather_rows_kernel, (cdiv(n, 64), cdiv(channels, block_c)),
               src, src.stride(0), flat, out, n, channels, BLOCK_R=64, BLOCK_C=block_c)
    return out.view(*index.shape, channels)


def gather_rows_ref(src: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """
    Return ``src[index]``.

    ``src`` (R, C) rows of a cache (any dtype); ``index`` int64 of any shape ``(...)`` with
    values in [0, R); the result is ``(..., C)``.
    """
    return src.index_select(0, index.reshape(-1)).view(*index.shape, src.shape[1])


@triton.jit
def _copy_tiles_kernel(x_ptr, ld_x, rows_ptr, cols_ptr, out_ptr, ld_out, cand_ptr,
                       list_ptr, count_ptr, n_items, Wi, Ho, Wo, C, col0, fill,
                       block_size, channel_stride, phase_stride,
                       e0_a, e0_b, e0_f0, e0_f1, e0_ld, e1_a, e1_b, e1_f0, e1_f1, e1_ld,
                       e2_a, e2_b, e2_f0, e2_f1, e2_ld, e3_a, e3_b, e3_f0, e3_f1, e3_ld,
                       E0: tl.constexpr, E0R: tl.constexpr, E0C: tl.constexpr,
                       E1: tl.constexpr, E1R: tl.constexpr, E1C: tl.constexpr,
                       E2: tl.constexpr, E2R: tl.constexpr, E2C: tl.constexpr,
                       E3: tl.constexpr, E3R: tl.constexpr, E3C: tl.constexpr,
                       HAS_TABLE: tl.constexpr, HAS_CAND: tl.constexpr,
                       HAS_LIST: tl.constexpr, HAS_COUNT: tl.constexpr,
                       SHUFFLE: tl.constexpr, TY: tl.constexpr, TX: tl.constexpr,
                       BLOCK_C: tl.constexpr):
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
    if HAS_TABLE:
        r = tl.load(rows_ptr + oy, mask=valid, other=-1)
        c = tl.load(cols_ptr + ox, mask=valid, other=-1)
        inside = (r >= 0) & (c >= 0)
        srow = r * Wi + c
    else:
        inside = valid
        srow = prow
    ch = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = ch < C
    m2 = (rmask & inside)[:, None] & cmask[None, :]
    if SHUFFLE:  # depth-to-space: the source channel depends on the phase in the block
        phase = (oy % block_size) * block_size + ox % block_size
        src_ch = ch[None, :] * channel_stride + (phase * phase_stride)[:, None]
    else:
        src_ch = ch[None, :]
    v = tl.load(x_ptr + srow.to(tl.int64)[:, None] * ld_x + src_ch, mask=m2, other=0.0)
    v = tl.where(inside[:, None], v.to(tl.float32), fill)
    sink(v, prow, prow, rmask, col0 + ch, cmask, out_ptr, ld_out,
         e0_a, e0_b, e0_f0, e0_f1, e0_ld, e1_a, e1_b, e1_f0, e1_f1, e1_ld,
         e2_a, e2_b, e2_f0, e2_f1, e2_ld, e3_a, e3_b, e3_f0, e3_f1, e3_ld,
         E0, E0R, E0C, E1, E1R, E1C, E2, E2R, E2C, E3, E3R, E3C)


def copy_tiles_args(x: torch.Tensor, out: torch.Tensor, out_hw: tuple[int, int],
                    tile: tuple[int, int], tiles: torch.Tensor, count: torch.Tensor | None,
                    cand: torch.Tensor | None = None, table: tuple | None = None,
                    in_width: int = 0, col0: int = 0, fill: float = 0.0,
                    epilogue: Epilogue = NO_EPILOGUE, shuffle: tuple | None = None) -> tuple:
    """
    Bind a copy over listed output tiles: ``(kernel, grid, args, meta)``.

    ``x`` (P_in (+ 3), C) source rows; ``out`` (P_out (+ 3), C_out) rows written at channels
    ``col0:col0 + C``; ``table`` (rows (Ho,), cols (Wo,)) int32 source coordinates, -1 for
    ``fill`` (padding), or None for the same position; ``cand`` uint8 (P_out,) limits the
    written positions; ``count`` int32 (1,) on the device, or None for all of ``tiles``.
    ``shuffle`` = (block, order) makes it a depth-to-space: ``x`` has ``block**2 * C``
    channels and output (y, x) reads channel ``c * block**2 + phase`` (order 'torch') or
    ``phase * C + c`` ('tf') with ``phase = (y % block) * block + x % block``.
    """
    check_device(x, out, tiles)
    channels = x.shape[1]
    strides = (1, 1, 0)
    if shuffle is not None:
        strides = shuffle_strides(channels, *shuffle)
        channels //= strides[0] ** 2
    if col0 < 0 or col0 + channels > out.shape[1]:
        raise KernelError(f'copy: {channels} channels written from column {col0} do not fit '
                          f'the {out.shape[1]} channels of out')
    block_c = block(channels, 16, 64)
    rows, cols = table if table is not None else (tiles, tiles)
    args = (x, x.stride(0), rows, cols, out, out.stride(0),
            cand if cand is not None else out, tiles,
            count if count is not None else tiles, tiles.numel(), in_width, out_hw[0],
            out_hw[1], channels, col0, float(fill), *strides)
    meta = dict(HAS_TABLE=table is not None, HAS_CAND=cand is not None, HAS_LIST=True,
                HAS_COUNT=count is not None, SHUFFLE=shuffle is not None, TY=tile[0],
                TX=tile[1], BLOCK_C=block_c, **epilogue.kwargs(out))
    return _copy_tiles_kernel, (max(1, tiles.numel()), cdiv(channels, block_c)), args, meta


def shuffle_strides(channels: int, block_size: int, order: str) -> tuple[int, int, int]:
    """Return (block, channel stride, phase stride) of a depth-to-space of ``channels``."""
    bb = block_size * block_size
    if block_size < 1 or channels % bb or order not in ('torch', 'tf'):
        raise KernelError(f'depth-to-space: {channels} channels, block {block_size}, order '
                          f'{order!r}: expected a block whose square divides the channels and '
                          "order 'torch' or 'tf'")
    return (block_size, bb, 1) if order == 'torch' else (block_size, 1, channels // bb)


def copy_tiles(*args, **kwargs) -> None:
    """Launch :func:`copy_tiles_args` once (tests and one-off use)."""
    kernel, grid, a, meta = copy_tiles_args(*args, **kwargs)
    check_float(a[0], a[4])
    launch(kernel, grid, *a, **meta)


def copy_tiles_ref(x: torch.Tensor, out: torch.Tensor, out_hw: tuple[int, int],
                   tile: tuple[int, int], tiles: torch.Tensor, count: torch.Tensor | None,
                   cand: torch.Tensor | None = None, table: tuple | None = None,
                   in_width: int = 0, col0: int = 0, fill: float = 0.0,
                   steps: tuple = (), operands: dict | None = None,
                   shuffle: tuple | None = None) -> None:
    """
    Copy rows into listed tiles of ``out`` in place: the reference of :func:`copy_tiles`.

    ``x`` (P_in (+ 3), C); ``out`` (P_out (+ 3), C_out) with ``P_out = Ho * Wo``; ``tiles``
    int32 (capacity,) ids of ``tile[0] x tile[1]`` output tiles (row-major), the first
    ``count[0]`` used; ``cand`` uint8 (P_out,); ``table`` int32 (Ho,), (Wo,); ``steps`` and
    ``operands`` the epilogue (operands read at the output positions); ``shuffle`` (block,
    order) a depth-to-space: ``x`` has block**2 * C channels, C of them read per position.
    """
    ho, wo = out_hw
    pos = listed_positions(tiles, count, out_hw, tile, cand)
    if table is not None:
        r = table[0].long().index_select(0, pos // wo)
        c = table[1].long().index_select(0, pos % wo)
        inside = (r >= 0) & (c >= 0)
        src = torch.where(inside, r * in_width + c, 0)
        v = x.index_select(0, src).float()
        v = torch.where(inside[:, None], v, torch.tensor(float(fill)))
    else:
        v = x.index_select(0, pos).float()
    if shuffle is not None:
        b, cs, ps = shuffle_strides(x.shape[1], *shuffle)
        channels = x.shape[1] // (b * b)
        phase = (pos // wo % b) * b + pos % wo % b  # (n,)
        src_ch = torch.arange(channels, device=x.device)[None, :] * cs + phase[:, None] * ps
        v = torch.gather(v, 1, src_ch)
    if steps:
        v = epilogue_ref(v.to(out.dtype), steps, operands or {}, pos)
    out[pos, col0:col0 + v.shape[1]] = v.to(out.dtype)
