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
Change masks on the device: receptive-field dilation, tile flags and active-tile lists.

``candidates_args`` binds the per-layer mask kernel of the sync-free path: for every output
tile (a fixed grid over the whole map) it computes which positions must be recomputed (the
receptive-field image of the input's changed positions, united with changed epilogue
operands), writes that *candidate* mask, and appends tiles holding a candidate to a
fixed-capacity list whose length is counted on the device (an atomic counter), so that no
host synchronisation is needed. The compute kernels then run one program per list slot and
slots past the count exit at once.

The engine's eager primitives ``dilate`` and ``active_tiles`` use the same kernels without
the list.
"""

from __future__ import annotations

from sparse_perception.kernels.runtime import (as_u8, cdiv, check_device, KernelError, launch,
                                               next_pow2, tile_positions, tl, triton)
import torch
import torch.nn.functional as F

# Geometry of the core input (compile-time): none, a window (convolution, pooling), tap
# tables (resampling, padding), or the same position (1x1 convolution, pointwise, cat).
GEOM_NONE = tl.constexpr(0)
GEOM_WINDOW = tl.constexpr(1)
GEOM_TABLE = tl.constexpr(2)
GEOM_SAME = tl.constexpr(3)
# An operand mask: none, same size as the output, or one position broadcast everywhere.
OP_NONE = tl.constexpr(0)
OP_SAME = tl.constexpr(1)
OP_BROADCAST = tl.constexpr(2)


@triton.jit
def _candidates_kernel(in_ptr, in_count_ptr, op0_ptr, op0_count_ptr, op1_ptr, op1_count_ptr,
                       th_ptr, tw_ptr, cand_ptr, list_ptr, count_ptr, stats_ptr,
                       where_ptr, stale_ptr,
                       Hi, Wi, Ho, Wo, sy, sx, dy, dx, pt, pl,
                       GEOM: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
                       OP0: tl.constexpr, OP1: tl.constexpr, GATE: tl.constexpr,
                       ACCUM: tl.constexpr, DENSE: tl.constexpr, LIST: tl.constexpr,
                       COUNT_CHANGED: tl.constexpr, SPATIAL: tl.constexpr,
                       TY: tl.constexpr, TX: tl.constexpr):
    pid = tl.program_id(0)
    if GATE:
        # Nothing changed upstream: the candidate mask stays as the frame cleared it.
        total = 0
        if GEOM != GEOM_NONE:
            total += tl.load(in_count_ptr)
        if OP0 != OP_NONE:
            total += tl.load(op0_count_ptr)
        if OP1 != OP_NONE:
            total += tl.load(op1_count_ptr)
        if total == 0:
            return
    b, oy, ox, valid = tile_positions(pid, Ho, Wo, TY, TX)
    prow = oy * Wo + ox
    if DENSE:
        cand = valid
    else:
        cand = oy < 0  # all False
        if GEOM == GEOM_WINDOW:
            for ky in tl.static_range(KH):
                iy = oy * sy - pt + ky * dy
                row_ok = valid & (iy >= 0) & (iy < Hi)
                for kx in tl.static_range(KW):
                    ix = ox * sx - pl + kx * dx
                    ok = row_ok & (ix >= 0) & (ix < Wi)
                    cand = cand | (tl.load(in_ptr + iy * Wi + ix, mask=ok, other=0) != 0)
        elif GEOM == GEOM_TABLE:
            for i in tl.static_range(KH):
                r = tl.load(th_ptr + oy * KH + i, mask=valid, other=Hi)
                for j in tl.static_range(KW):
                    q = tl.load(tw_ptr + ox * KW + j, mask=valid, other=Wi)
                    ok = valid & (r >= 0) & (r < Hi) & (q >= 0) & (q < Wi)
                    cand = cand | (tl.load(in_ptr + r * Wi + q, mask=ok, other=0) != 0)
        elif GEOM == GEOM_SAME:
            cand = cand | (tl.load(in_ptr + prow, mask=valid, other=0) != 0)
        if OP0 == OP_SAME:
            cand = cand | (tl.load(op0_ptr + prow, mask=valid, other=0) != 0)
        elif OP0 == OP_BROADCAST:
            cand = cand | (valid & (tl.load(op0_ptr) != 0))
        if OP1 == OP_SAME:
            cand = cand | (tl.load(op1_ptr + prow, mask=valid, other=0) != 0)
        elif OP1 == OP_BROADCAST:
            cand = cand | (valid & (tl.load(op1_ptr) != 0))
        if ACCUM:
            cand = cand | (tl.load(cand_ptr + prow, mask=valid, other=0) != 0)
        cand = cand & valid
        if SPATIAL:
            # A spatial gate: recompute (candidates or stale) inside it; the rest waits as
            # stale until a frame's gate covers it (engine/gate.py).
            want = cand | (tl.load(stale_ptr + prow, mask=valid, other=0) != 0)
            inside = tl.load(where_ptr + prow, mask=valid, other=0) != 0
            cand = want & inside
            tl.store(stale_ptr + prow, (want & (inside == 0)).to(tl.uint8), mask=valid)
    tl.store(cand_ptr + prow, cand.to(tl.uint8), mask=valid)
    if LIST:
        n = tl.sum(cand.to(tl.int32))
        if n > 0:
            slot = tl.atomic_add(count_ptr, 1)
            tl.store(list_ptr + slot, pid)
            tl.atomic_add(stats_ptr + 1, n)
            tl.atomic_add(stats_ptr + 3, tl.sum(valid.to(tl.int32)))
            if COUNT_CHANGED:
                tl.atomic_add(stats_ptr + 2, n)


def tile_grid(out_hw: tuple[int, int], tile: tuple[int, int]) -> int:
    """Return the number of ``tile`` tiles covering an ``out_hw`` map."""
    return cdiv(out_hw[0], tile[0]) * cdiv(out_hw[1], tile[1])


def candidates_args(cand: torch.Tensor, out_hw: tuple[int, int], tile: tuple[int, int],
                    source: torch.Tensor | None = None, source_count: torch.Tensor | None = None,
                    in_hw: tuple[int, int] = (1, 1), window: tuple | None = None,
                    tables: tuple | None = None, operands: tuple = (),
                    tiles: torch.Tensor | None = None, count: torch.Tensor | None = None,
                    stats: torch.Tensor | None = None, accumulate: bool = False,
                    dense: bool = False, count_changed: bool = False,
                    gate: bool = True, spatial: tuple | None = None) -> tuple:
    """
    Bind the candidate-mask kernel of one layer: ``(kernel, grid, args, meta)``.

    ``cand`` uint8 (Ho * Wo,) is written (the frame clears it first when ``gate``: programs
    exit at once when nothing upstream changed, read from the int32 counts). ``source`` uint8
    (Hi * Wi,) is the core input's changed mask, read through ``window`` = (kernel, stride,
    dilation, (top, left)) or ``tables`` = (rows int32 (Ho, kh), cols int32 (Wo, kw)), or at
    the same position when both are None. ``operands`` holds up to two (mask, count)
    pairs; a mask with one element is broadcast. With ``tiles`` (int32, one slot per tile),
    ``count`` (int32 (1,)) and ``stats`` (int32 (4,): tiles, candidates, changed, computed
    positions), tiles with a candidate are listed and counted.

    ``spatial`` = (gate, stale), both uint8 (Ho * Wo,): a spatial gate of this layer's size
    and the layer's stale mask (kept from frame to frame). The candidates become (candidates
    or stale) and gated, and stale becomes (candidates or stale) outside the gate. Programs
    then never exit early: stale positions may wait inside the gate without any change. Of
    several accumulating launches, only the last (the one that lists tiles) takes it.
    """
    tensors = [cand, source, tiles, count, stats] + [m for m, _ in operands]
    if spatial is not None:
        if dense:
            raise KernelError('a spatial gate applies to incremental frames only')
        tensors += list(spatial)
    check_device(*[t for t in tensors if t is not None])
    if len(operands) > 2:
        raise KernelError(f'{len(operands)} operand masks; the kernel takes two per launch')
    dummy = cand
    if source is None:
        geom, kh, kw = 0, 1, 1
    elif window is not None:
        geom, (kh, kw) = 1, window[0]
    elif tables is not None:
        geom, kh, kw = 2, tables[0].shape[1], tables[1].shape[1]
    else:
        geom, kh, kw = 3, 1, 1
    stride, dilation, pads = (window[1], window[2], window[3]) if window is not None else \
        ((1, 1), (1, 1), (0, 0))
    ops = list(operands) + [(None, None)] * (2 - len(operands))
    op_kinds = [0 if m is None else (2 if m.numel() == 1 else 1) for m, _ in ops]
    listing = tiles is not None
    args = (as_u8(source) if source is not None else dummy,
            source_count if source_count is not None else dummy,
            as_u8(ops[0][0]) if ops[0][0] is not None else dummy,
            ops[0][1] if ops[0][1] is not None else dummy,
            as_u8(ops[1][0]) if ops[1][0] is not None else dummy,
            ops[1][1] if ops[1][1] is not None else dummy,
            tables[0] if tables is not None else dummy,
            tables[1] if tables is not None else dummy,
            as_u8(cand), tiles if listing else dummy, count if listing else dummy,
            stats if listing else dummy,
            as_u8(spatial[0]) if spatial is not None else dummy,
            as_u8(spatial[1]) if spatial is not None else dummy,
            in_hw[0], in_hw[1], out_hw[0], out_hw[1], stride[0], stride[1], dilation[0],
            dilation[1], pads[0], pads[1])
    counts = ([source_count] if source is not None else []) + [c for m, c in ops if m is not None]
    gate = (gate and not dense and spatial is None and bool(counts)
            and all(c is not None for c in counts))
    meta = {'GEOM': geom, 'KH': kh, 'KW': kw, 'OP0': op_kinds[0], 'OP1': op_kinds[1],
            'GATE': gate, 'ACCUM': accumulate, 'DENSE': dense, 'LIST': listing,
            'COUNT_CHANGED': count_changed, 'SPATIAL': spatial is not None,
            'TY': tile[0], 'TX': tile[1]}
    return _candidates_kernel, (tile_grid(out_hw, tile),), args, meta


def dilate_mask(mask: torch.Tensor, pads: tuple, kernel, stride, dilation,
                out_hw: tuple[int, int]) -> torch.Tensor:
    """Receptive-field image of ``mask`` through a window (see :func:`dilate_mask_ref`)."""
    check_device(mask)
    h, w = mask.shape
    out = torch.empty(out_hw, dtype=torch.bool, device=mask.device)
    if out.numel() == 0:
        return out
    tile = (8, 8)
    kern, grid, args, meta = candidates_args(
        out.view(-1), out_hw, tile, source=mask.contiguous().view(-1), in_hw=(h, w),
        window=(tuple(kernel), tuple(stride), tuple(dilation), (pads[0], pads[2])),
        gate=False)
    launch(kern, grid, *args, **meta)
    return out


def dilate_mask_ref(mask: torch.Tensor, pads: tuple, kernel, stride, dilation,
                    out_hw: tuple[int, int]) -> torch.Tensor:
    """
    Return the receptive-field image of ``mask`` through a window.

    Output (oy, ox) is set when a tap ``(oy * sh - top + i * dh, ox * sw - left + j * dw)``
    inside the input is set; computed separably with shifted ORs. ``mask`` bool (H, W);
    ``pads`` (top, bottom, left, right); ``kernel``, ``stride``, ``dilation`` (y, x); result
    bool ``out_hw`` (Ho, Wo).
    """
    ho, wo = out_hw
    top, _, left, _ = pads
    m = _axis_or(mask, 0, top, kernel[0], stride[0], dilation[0], ho)
    return _axis_or(m, 1, left, kernel[1], stride[1], dilation[1], wo)


def _axis_or(mask: torch.Tensor, axis: int, before: int, kernel: int, stride: int,
             dilation: int, n_out: int) -> torch.Tensor:
    """OR of the ``kernel`` taps of every output along one axis of a bool mask."""
    n_in = mask.shape[axis]
    if kernel == 1 and stride == 1 and before == 0 and n_out == n_in:
        return mask
    need = (n_out - 1) * stride + (kernel - 1) * dilation + 1  # padded input length
    shape = list(mask.shape)
    shape[axis] = max(need, before + n_in)
    padded = mask.new_zeros(shape)
    padded.narrow(axis, before, n_in).copy_(mask)
    out = None
    for j in range(kernel):
        start = j * dilation
        tap = padded.narrow(axis, start, (n_out - 1) * stride + 1)
        if stride > 1:
            tap = tap[::stride] if axis == 0 else tap[:, ::stride]
        out = tap.clone() if out is None else out.logical_or_(tap)
    return out


@triton.jit
def _tile_flags_kernel(mask_ptr, flags_ptr, H, W, T, ntx, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    ty = pid // ntx
    tx = pid % ntx
    hit = tl.zeros((BLOCK,), dtype=tl.int32)
    for start in range(0, T * T, BLOCK):
        i = start + tl.arange(0, BLOCK)
        y = ty * T + i // T
        x = tx * T + i % T
        ok = (i < T * T) & (y < H) & (x < W)
        m = tl.load(mask_ptr + y * W + x, mask=ok, other=0)
        hit += (m != 0).to(tl.int32)
    tl.store(flags_ptr + pid, (tl.sum(hit) > 0).to(tl.uint8))


def tile_flags(mask: torch.Tensor, tile: int) -> torch.Tensor:
    """Flag the ``tile x tile`` tiles holding a set element (see :func:`tile_flags_ref`)."""
    check_device(mask)
    h, w = mask.shape
    nty, ntx = cdiv(h, tile), cdiv(w, tile)
    flags = torch.empty(nty, ntx, dtype=torch.bool, device=mask.device)
    if flags.numel():
        launch(_tile_flags_kernel, (nty * ntx,), as_u8(mask.contiguous()), as_u8(flags), h, w,
               tile, ntx, BLOCK=min(1024, max(16, next_pow2(tile * tile))))
    return flags


def tile_flags_ref(mask: torch.Tensor, tile: int) -> torch.Tensor:
    """
    Return the tiles of ``mask`` that hold a set element.

    ``mask`` bool (H, W); result bool (ceil(H / tile), ceil(W / tile)).
    """
    h, w = mask.shape
    th, tw = cdiv(h, tile), cdiv(w, tile)
    if (th * tile, tw * tile) != (h, w):
        mask = F.pad(mask, (0, tw * tile - w, 0, th * tile - h))
    return mask.view(th, tile, tw, tile).any(3).any(1)


@triton.jit
def _list_kernel(flags_ptr, n, list_ptr, count_ptr, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = i < n
    set_ = (tl.load(flags_ptr + i, mask=ok, other=0) != 0) & ok
    # One atomic per block reserves the block's slots; the set flags fill them in order.
    total = tl.sum(set_.to(tl.int32))
    if total > 0:
        base = tl.atomic_add(count_ptr, total)
        offset = tl.cumsum(set_.to(tl.int32), 0) - 1
        tl.store(list_ptr + base + offset, i, mask=set_)


def list_tiles(flags: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """
    List the set flags without a host synchronisation (see :func:`list_tiles_ref`).

    Returns (list int32 (capacity,), count int32 (1,)) on the device: the first ``count``
    entries are the set flags' flat indices in an unspecified order, the rest are -1.
    """
    check_device(flags)
    flat = as_u8(flags.contiguous()).view(-1)
    n = flat.numel()
    out = torch.full((max(1, n),), -1, dtype=torch.int32, device=flags.device)
    count = torch.zeros(1, dtype=torch.int32, device=flags.device)
    if n:
        launch(_list_kernel, (cdiv(n, 256),), flat, n, out, count, BLOCK=256)
    return out, count


def list_tiles_ref(flags: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """
    List the set flags' flat indices in increasing order (the reference of list_tiles).

    ``flags`` bool (any shape, n elements); returns (int32 (max(1, n),) with -1 after the
    listed entries, int32 (1,) count).
    """
    idx = flags.reshape(-1).nonzero().squeeze(1).to(torch.int32)
    out = torch.full((max(1, flags.numel()),), -1, dtype=torch.int32, device=flags.device)
    out[:idx.numel()] = idx
    return out, torch.tensor([idx.numel()], dtype=torch.int32, device=flags.device)
