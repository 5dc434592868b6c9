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
The two frame-level kernels of the sync-free path: input intake and global average pooling.

``intake`` takes a new frame into the input cache: pixels inside the changed tiles of the
change map are compared with the cached, last propagated value (bitwise at threshold 0) and
written and marked where they changed. ``global_pool`` keeps a global average pooling's
output: when its input changed anywhere (a count on the device) the sum over all positions
is recomputed in fp32 (split over programs with atomic adds), and a single program divides,
tests and stores the pooled row.
"""

from __future__ import annotations

from sparse_perception.kernels.epilogue import SAME_SIZE_INT
from sparse_perception.kernels.runtime import (as_u8, block, cdiv, check_device, check_float,
                                               launch, tl, triton)
import torch


@triton.jit
def _intake_kernel(x_ptr, sc, sy, sx, cache_ptr, ld_cache, mask_ptr, tiles_ptr, stats_ptr,
                   H, W, C, T, Wt, thr, EXACT: tl.constexpr, DENSE: tl.constexpr,
                   BITS: tl.constexpr, BLOCK: tl.constexpr, BLOCK_C: tl.constexpr):
    pix = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    valid = pix < H * W
    y = pix // W
    x = pix % W
    if DENSE:
        sel = valid
    else:
        flag = tl.load(tiles_ptr + (y // T) * Wt + x // T, mask=valid, other=0)
        sel = valid & (flag != 0)
    if tl.sum(sel.to(tl.int32)) == 0:
        return
    src = (y * sy + x * sx).to(tl.int64)
    rows = pix.to(tl.int64) * ld_cache
    if DENSE:
        changed = sel
    else:
        worst = tl.zeros((BLOCK,), dtype=tl.float32)
        for c0 in range(0, C, BLOCK_C):
            c = c0 + tl.arange(0, BLOCK_C)
            m2 = sel[:, None] & (c < C)[None, :]
            new = tl.load(x_ptr + src[:, None] + c[None, :] * sc, mask=m2, other=0.0)
            new = new.to(cache_ptr.dtype.element_ty)
            old = tl.load(cache_ptr + rows[:, None] + c[None, :], mask=m2, other=0.0)
            if EXACT:
                if BITS == 32:
                    d = new.to(tl.int32, bitcast=True) != old.to(tl.int32, bitcast=True)
                else:
                    d = new.to(tl.int16, bitcast=True) != old.to(tl.int16, bitcast=True)
                diff = tl.where(m2 & d, 1.0, 0.0)
            else:
                diff = tl.where(m2, tl.abs(new.to(tl.float32) - old.to(tl.float32)), 0.0)
            worst = tl.maximum(worst, tl.max(diff, 1))
        if EXACT:
            changed = sel & (worst > 0.0)
        else:
            changed = sel & (worst > thr)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        m2 = changed[:, None] & (c < C)[None, :]
        new = tl.load(x_ptr + src[:, None] + c[None, :] * sc, mask=m2, other=0.0)
        tl.store(cache_ptr + rows[:, None] + c[None, :], new.to(cache_ptr.dtype.element_ty),
                 mask=m2)
    tl.store(mask_ptr + pix, changed.to(tl.uint8), mask=valid)
    n = tl.sum(changed.to(tl.int32))
    tl.atomic_add(stats_ptr + 2, n)
    tl.atomic_add(stats_ptr + 1, n)


def intake_args(x: torch.Tensor, cache: torch.Tensor, mask: torch.Tensor,
                tiles: torch.Tensor, stats: torch.Tensor, tile: int, threshold: float,
                dense: bool, exact: bool | None = None) -> tuple:
    """
    Bind the intake of a frame: ``(kernel, grid, args, meta)``.

    ``x`` (1, C, H, W) in any memory layout (its strides are bound: keep the same tensor);
    ``cache`` (H * W + 3, C); ``mask`` uint8 (H * W,) marks changed pixels (cleared by the
    frame); ``tiles`` uint8 (Ht, Wt) the change map with tiles of ``tile`` pixels;
    ``stats`` int32 (4,) counts the changed pixels in [1] and [2].
    """
    check_device(x, cache, mask, tiles, stats)
    check_float(x, cache)
    _, channels, h, w = x.shape
    if exact is None:
        exact = threshold == 0
    args = (x, x.stride(1), x.stride(2), x.stride(3), cache, cache.stride(0), as_u8(mask),
            as_u8(tiles), stats, h, w, channels, tile, tiles.shape[1], float(threshold))
    meta = {'EXACT': exact, 'DENSE': dense, 'BITS': cache.element_size() * 8, 'BLOCK': 128,
            'BLOCK_C': block(channels, 4, 16)}
    return _intake_kernel, (cdiv(h * w, 128),), args, meta


def intake_ref(x: torch.Tensor, cache: torch.Tensor, tiles: torch.Tensor, tile: int,
               threshold: float, dense: bool) -> torch.Tensor:
    """
    Take a frame into ``cache`` in place (the intake's reference); return the changed mask.

    ``x`` (1, C, H, W); ``cache`` (H * W + 3, C); ``tiles`` bool (Ht, Wt); the result is
    bool (H * W,). At threshold 0 a pixel changed when any bit of it did, as in the kernel.
    """
    _, channels, h, w = x.shape
    new = x.to(cache.dtype)
    target = cache[:h * w].view(1, h, w, channels).permute(0, 3, 1, 2)  # the rows, NCHW
    if dense:
        target.copy_(new)
        return torch.ones(h * w, dtype=torch.bool, device=x.device)
    if threshold == 0:
        kind = SAME_SIZE_INT[cache.element_size()]
        differs = new.view(kind) != target.view(kind)
    else:
        differs = (new.float() - target.float()).abs() > threshold
    # Channel by channel: any(1) over the three strided channels of an 854x480 frame took
    # 2.2 ms, these ORs 1.1 (hand-run).
    moved = differs[0, 0]
    for c in range(1, channels):
        moved |= differs[0, c]
    held = ~tiles.bool()  # tiles the change map held back: their pixels stay as cached
    held_tiles = int(held.count_nonzero())
    some_held = held_tiles > 0
    if some_held:
        held_pixels = held.repeat_interleave(tile, 0).repeat_interleave(tile, 1)[:h, :w]
        changed = moved & ~held_pixels
    else:
        changed = moved
    if threshold == 0 and 4 * held_tiles <= held.numel():
        # A pixel that did not move holds the same bits, so the frame is copied whole and
        # the few held-back pixels put back: no frame-sized temporary (at 854x480 the copy
        # took 0.6 ms, the one pass below 3 ms; hand-run).
        if some_held:
            rows = held_pixels.reshape(-1).nonzero().squeeze(1)
            cached = cache.index_select(0, rows)
        target.copy_(new)
        if some_held:
            cache.index_copy_(0, rows, cached)
        return changed.reshape(-1)
    # One pass over the whole frame: at 854x480 with most pixels changed that took 5.3
    # against 7.3 ms for gathering and scattering the changed rows.
    target.copy_(torch.where(changed, new, target))
    return changed.reshape(-1)


@triton.jit
def _pool_sum_kernel(x_ptr, ld_x, sums_ptr, count_ptr, P, C, CHUNK,
                     GATE: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    if GATE:
        if tl.load(count_ptr) == 0:
            return
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = c < C
    start = tl.program_id(0) * CHUNK
    acc = tl.zeros((BLOCK_C,), dtype=tl.float32)
    for p0 in range(start, start + CHUNK, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        m2 = (p < P)[:, None] & cmask[None, :]
        v = tl.load(x_ptr + p.to(tl.int64)[:, None] * ld_x + c[None, :], mask=m2, other=0.0)
        acc += tl.sum(v.to(tl.float32), 0)
    tl.atomic_add(sums_ptr + c, acc, mask=cmask)


@triton.jit
def _pool_commit_kernel(sums_ptr, out_ptr, mask_ptr, stats_ptr, count_ptr, P, C, thr,
                        GATE: tl.constexpr, TEST: tl.constexpr, EXACT: tl.constexpr,
                        BITS: tl.constexpr, BLOCK_C: tl.constexpr):
    if GATE:
        if tl.load(count_ptr) == 0:
            return
    worst = tl.max(tl.zeros((BLOCK_C,), dtype=tl.float32), 0)
    if TEST:
        for c0 in range(0, C, BLOCK_C):
            c = c0 + tl.arange(0, BLOCK_C)
            cmask = c < C
            new = (tl.load(sums_ptr + c, mask=cmask, other=0.0) / P).to(
                out_ptr.dtype.element_ty)
            old = tl.load(out_ptr + c, mask=cmask, other=0.0)
            if EXACT:
                if BITS == 32:
                    d = new.to(tl.int32, bitcast=True) != old.to(tl.int32, bitcast=True)
                else:
                    d = new.to(tl.int16, bitcast=True) != old.to(tl.int16, bitcast=True)
                diff = tl.where(cmask & d, 1.0, 0.0)
            else:
                diff = tl.where(cmask, tl.abs(new.to(tl.float32) - old.to(tl.float32)), 0.0)
            worst = tl.maximum(worst, tl.max(diff, 0))
        if EXACT:
            changed = worst > 0.0
        else:
            changed = worst > thr
    else:
        changed = P > 0
    if changed:
        for c0 in range(0, C, BLOCK_C):
            c = c0 + tl.arange(0, BLOCK_C)
            cmask = c < C
            new = tl.load(sums_ptr + c, mask=cmask, other=0.0) / P
            tl.store(out_ptr + c, new.to(out_ptr.dtype.element_ty), mask=cmask)
        tl.store(mask_ptr, 1)
        tl.atomic_add(stats_ptr + 1, 1)
        tl.atomic_add(stats_ptr + 2, 1)


def global_pool_args(x: torch.Tensor, positions: int, out: torch.Tensor, sums: torch.Tensor,
                     mask: torch.Tensor, stats: torch.Tensor, in_count: torch.Tensor,
                     threshold: float, test: bool, exact: bool,
                     gate: bool = True) -> list[tuple]:
    """
    Bind global average pooling: two ``(kernel, grid, args, meta)`` launches.

    ``x`` (P (+ 3), C) input cache with ``positions`` = P; ``out`` (1 (+ 3), C) output cache;
    ``sums`` float32 (C,) cleared by the frame; ``mask`` uint8 (1,) the output's changed
    flag (cleared by the frame); ``stats`` int32 (4,); ``in_count`` int32 (1,): the input's
    changed positions this frame (0: nothing to do when ``gate``).
    """
    check_device(x, out, sums, mask, stats, in_count)
    check_float(x, out)
    channels = x.shape[1]
    block_c = block(channels, 16, 64)
    chunk = 256
    first = (_pool_sum_kernel, (cdiv(positions, chunk), cdiv(channels, block_c)),
             (x, x.stride(0), sums, in_count, positions, channels, chunk),
             {'GATE': gate, 'BLOCK_P': 32, 'BLOCK_C': block_c})
    second = (_pool_commit_kernel, (1,),
              (sums, out, as_u8(mask), stats, in_count, positions, channels, float(threshold)),
              {'GATE': gate, 'TEST': test, 'EXACT': exact, 'BITS': out.element_size() * 8,
               'BLOCK_C': block_c})
    return [first, second]


def run(bound: list[tuple]) -> None:
    """Launch bound ``(kernel, grid, args, meta)`` tuples in order."""
    for kernel, grid, args, meta in bound:
        launch(kernel, grid, *args, **meta)


def global_pool_ref(x: torch.Tensor, positions: int) -> torch.Tensor:
    """Return the mean over the ``positions`` rows of ``x`` (P (+ 3), C): float32 (1, C)."""
    return x[:positions].float().mean(0, keepdim=True)
