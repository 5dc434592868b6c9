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
The kernels as ``torch.library`` custom ops in the ``sparse_perception`` namespace.

Every op's default implementation (every device) is the pure-torch reference beside its
kernel; the Triton kernel is registered for CUDA; each op has a fake (meta) implementation,
so the ops trace under ``torch.compile`` and ``torch.export``. ``torch.library.opcheck``
checks them in CI on the CPU (the reference).

Each op wraps its launcher, the one entry point of a kernel: the engine's backend and its
device executor call the launchers themselves, since a custom op's dispatch costs several
microseconds per call (as much as a small kernel) and a CUDA graph replays bound launches
without any dispatch; the ops are the stable, traceable face of the same kernels for other
code.

Ops (shapes for ``n`` rows, ``t`` patches):

- ``gather_rows(src (R, C), index (...)) -> (..., C)``
- ``linear_rows(rows (n, Cin), weight_t (Cin, Cout), bias (Cout,)?) -> (n, Cout)``
- ``conv_patches(patches (t, Cin, ph, pw), weight (Cout, Cin/g, kh, kw), bias?, stride,
  dilation, groups) -> (t, Cout, T, T)`` channels_last, padding 0 (depthwise or GEMM)
- ``pool_patches(patches (t, C, ph, pw), mode, kernel, stride, dilation) -> (t, C, T, T)``
- ``resample_taps(rows (n, K, C), weights (n, K)) -> (n, C)``
- ``store_rows(dst (P + 3, C)!, index (n,)?, values (n, C), operand?, epilogue, threshold,
  test) -> changed bool (n,)``: epilogue, change test and scatter; ``epilogue`` is a comma
  list such as ``'add,relu'`` or ``'hardtanh(0,6)'`` whose binary steps read ``operand``
- ``dilate_mask(mask (H, W), pads, kernel, stride, dilation, out_hw) -> (Ho, Wo)``
- ``tile_flags(mask (H, W), tile) -> (ceil(H / tile), ceil(W / tile))``
- ``list_tiles(flags) -> (list int32 (max(1, n),), count int32 (1,))``: sync-free
- ``copy_tiles(x (P_in + 3, C), out (P_out + 3, C')!, out_hw, tile, tiles (cap,), count
  (1,)?, cand (P_out,)?, table_rows (Ho,)?, table_cols (Wo,)?, in_width, col0, fill,
  operand?, epilogue, shuffle_block, shuffle_order)``: copies rows into the listed tiles of
  ``out`` at channels ``col0:`` (padding through the tables, concatenation, depth-to-space
  with a block above 0)
- ``positionwise_tiles(x (P + 3, C), out (P + 3, C or 1)!, fn, out_hw, tile, tiles (cap,),
  count (1,)?, cand (P,)?)``: softmax, log-softmax (in x's dtype) or argmax (int64) over
  channels at the listed tiles' positions
- ``resample_tiles(x (Hi * Wi + 3, C), out (Ho * Wo + 3, C)!, in_hw, out_hw, row_taps
  (Ho, kh), row_weights (Ho, kh), col_taps (Wo, kw), col_weights (Wo, kw), tile, tiles
  (cap,), count (1,)?, cand (Ho * Wo,)?, operand?, epilogue)``: separable resampling from
  tap tables (``resample.tap_tables``) at the listed tiles' positions
- ``intake(x (1, C, H, W), cache (H * W + 3, C)!, tiles bool (Ht, Wt), tile, threshold,
  dense) -> changed bool (H * W,)``: a frame's changed pixels into its cache
- ``global_pool(x (P + 3, C), positions) -> (1, C)``: the mean of the first P rows
- ``commit_tiles(dst (P + 3, C)!, staging (P (+ 3), C), cand uint8 (P,), tiles (cap,), count
  (1,)?, out_hw, tile, operand?, epilogue, threshold, test) -> changed bool (P,)``: the
  epilogue, change test and store of the staged candidates of the listed tiles
"""

from __future__ import annotations

import re
from typing import Optional

from sparse_perception.kernels import conv, conv1x1, depthwise, epilogue, gather, masks, pool
from sparse_perception.kernels import frame, positionwise, resample, window
from sparse_perception.kernels.runtime import launch
from sparse_perception.kernels.steps import Step
import torch
from torch import Tensor

_CL = torch.channels_last
_BINARY = ('add', 'sub', 'mul', 'div')
_TOKEN = re.compile(r'^\s*([a-z_0-9]+)\s*(?:\(([^)]*)\))?\s*$')
_STEP_COMMA = re.compile(r',(?![^(]*\))')  # a comma between steps, not inside name(params)


def parse_epilogue(spec: str, operand: Optional[Tensor]) -> tuple[list, dict]:
    """
    Turn an epilogue string into engine steps and operands.

    ``'relu'``, ``'relu6'``, ``'hardtanh(lo,hi)'``, ``'clamp(lo,hi)'``, ``'leaky_relu(s)'``,
    ``'elu(a)'``, ``'hardswish'``, ``'hardsigmoid'``, ``'sigmoid'``, ``'silu'``, ``'tanh'``,
    ``'gelu'``, ``'mish'``, and ``'add'``, ``'sub'``, ``'mul'``, ``'div'`` with ``operand``
    (a cache (P' + 3, C') read at the same rows, or broadcast from one position).
    """
    steps: list = []
    operands: dict = {}
    for token in [t for t in _STEP_COMMA.split(spec) if t.strip()] if spec else []:
        match = _TOKEN.match(token)
        if match is None:
            raise ValueError(f'epilogue step {token!r}: expected name or name(params)')
        name, params = match.group(1), match.group(2)
        try:
            values = tuple(float(p) for p in params.split(',')) if params else ()
        except ValueError:
            raise ValueError(f'epilogue step {token!r}: its parameters must be numbers') \
                from None
        if name in _BINARY:
            if operand is None:
                raise ValueError(f'epilogue step {name!r} needs the operand tensor')
            operands[0] = operand
            steps.append(Step('binary', name, operand=0))
        elif name == 'relu6':
            steps.append(Step('act', 'hardtanh', (0.0, 6.0)))
        elif name in ('hardtanh', 'clamp'):
            if len(values) != 2:
                raise ValueError(f'epilogue step {token!r}: expected {name}(low,high)')
            steps.append(Step('act', name, values))
        elif name in ('leaky_relu', 'elu'):
            steps.append(Step('act', name, values or ((0.01,) if name == 'leaky_relu' else
                                                      (1.0,))))
        elif name == 'gelu':
            steps.append(Step('act', 'gelu', ('none',)))
        elif name in ('relu', 'hardswish', 'hardsigmoid', 'sigmoid', 'silu', 'tanh', 'mish'):
            steps.append(Step('act', name, ()))
        else:
            raise ValueError(f'epilogue step {name!r} is not known')
    return steps, operands


def _patch_out(patches: Tensor, kernel, stride, dilation) -> tuple[int, int]:
    _, _, ph, pw = patches.shape
    return ((ph - (kernel[0] - 1) * dilation[0] - 1) // stride[0] + 1,
            (pw - (kernel[1] - 1) * dilation[1] - 1) // stride[1] + 1)


# -- gather_rows -------------------------------------------------------------------------------

@torch.library.custom_op('sparse_perception::gather_rows', mutates_args=())
def gather_rows(src: Tensor, index: Tensor) -> Tensor:
    """Rows ``src[index]`` (reference)."""
    return gather.gather_rows_ref(src, index).clone()


@gather_rows.register_kernel('cuda')
def _(src: Tensor, index: Tensor) -> Tensor:
    return gather.gather_rows(src, index)


@gather_rows.register_fake
def _(src: Tensor, index: Tensor) -> Tensor:
    return src.new_empty(*index.shape, src.shape[1])


# -- linear_rows -------------------------------------------------------------------------------

@torch.library.custom_op('sparse_perception::linear_rows', mutates_args=())
def linear_rows(rows: Tensor, weight_t: Tensor, bias: Optional[Tensor]) -> Tensor:
    """``rows @ weight_t + bias`` (reference)."""
    return conv1x1.linear_rows_ref(rows, weight_t, bias)


@linear_rows.register_kernel('cuda')
def _(rows: Tensor, weight_t: Tensor, bias: Optional[Tensor]) -> Tensor:
    return conv1x1.linear_rows(rows.contiguous(), weight_t.contiguous(), bias)


@linear_rows.register_fake
def _(rows: Tensor, weight_t: Tensor, bias: Optional[Tensor]) -> Tensor:
    return rows.new_empty(rows.shape[0], weight_t.shape[1])


# -- conv_patches ------------------------------------------------------------------------------

@torch.library.custom_op('sparse_perception::conv_patches', mutates_args=())
def conv_patches(patches: Tensor, weight: Tensor, bias: Optional[Tensor], stride: list[int],
                 dilation: list[int], groups: int) -> Tensor:
    """Convolution of patches with padding 0, channels_last out (reference)."""
    if groups == patches.shape[1] and weight.shape[1] == 1:
        y = depthwise.depthwise_patches_ref(patches, weight, bias, stride, dilation)
    else:
        y = conv.conv_patches_ref(patches, weight, bias, stride, dilation, groups)
    return y.contiguous(memory_format=_CL)


@conv_patches.register_kernel('cuda')
def _(patches: Tensor, weight: Tensor, bias: Optional[Tensor], stride: list[int],
      dilation: list[int], groups: int) -> Tensor:
    patches = patches.contiguous(memory_format=_CL)
    if groups == patches.shape[1] and weight.shape[1] == 1:
        return depthwise.depthwise_patches(patches, weight, bias, stride, dilation)
    return conv.conv_patches(patches, weight, bias, stride, dilation, groups)


@conv_patches.register_fake
def _(patches: Tensor, weight: Tensor, bias: Optional[Tensor], stride: list[int],
      dilation: list[int], groups: int) -> Tensor:
    ho, wo = _patch_out(patches, weight.shape[2:], stride, dilation)
    return torch.empty(patches.shape[0], weight.shape[0], ho, wo, dtype=patches.dtype,
                       device=patches.device, memory_format=_CL)


# -- pool_patches ------------------------------------------------------------------------------

@torch.library.custom_op('sparse_perception::pool_patches', mutates_args=())
def pool_patches(patches: Tensor, mode: str, kernel: list[int], stride: list[int],
                 dilation: list[int]) -> Tensor:
    """Max or average pooling of patches with padding 0, channels_last out (reference)."""
    return pool.pool_patches_ref(patches, mode, kernel, stride, dilation).contiguous(
        memory_format=_CL)


@pool_patches.register_kernel('cuda')
def _(patches: Tensor, mode: str, kernel: list[int], stride: list[int],
      dilation: list[int]) -> Tensor:
    return pool.pool_patches(patches.contiguous(memory_format=_CL), mode, kernel, stride,
                             dilation)


@pool_patches.register_fake
def _(patches: Tensor, mode: str, kernel: list[int], stride: list[int],
      dilation: list[int]) -> Tensor:
    ho, wo = _patch_out(patches, kernel, stride, dilation if mode == 'max' else (1, 1))
    return torch.empty(patches.shape[0], patches.shape[1], ho, wo, dtype=patches.dtype,
                       device=patches.device, memory_format=_CL)


# -- resample_taps -----------------------------------------------------------------------------

@torch.library.custom_op('sparse_perception::resample_taps', mutates_args=())
def resample_taps(rows: Tensor, weights: Tensor) -> Tensor:
    """Weighted sum of gathered taps (reference)."""
    return resample.resample_taps_ref(rows, weights).contiguous()


@resample_taps.register_kernel('cuda')
def _(rows: Tensor, weights: Tensor) -> Tensor:
    return resample.resample_taps(rows, weights)


@resample_taps.register_fake
def _(rows: Tensor, weights: Tensor) -> Tensor:
    return rows.new_empty(rows.shape[0], rows.shape[2])


# -- store_rows --------------------------------------------------------------------------------

@torch.library.custom_op('sparse_perception::store_rows', mutates_args=('dst',))
def store_rows(dst: Tensor, index: Optional[Tensor], values: Tensor, operand: Optional[Tensor],
               epilogue_spec: str, threshold: float, test: bool) -> Tensor:
    """Epilogue, change test and scatter into a cache; returns the changed rows (reference)."""
    steps, operands = parse_epilogue(epilogue_spec, operand)
    n = values.shape[0]
    changed, _ = epilogue.store_rows_ref(dst, index, values, steps, operands, threshold, test)
    flags = torch.zeros(n, dtype=torch.bool, device=values.device)
    if not test or changed is None:
        flags.fill_(True)
    elif index is None:
        flags[changed] = True
    else:  # changed holds cache rows: map them back to positions in index
        position = torch.full((dst.shape[0],), -1, dtype=torch.long, device=dst.device)
        position[index] = torch.arange(n, device=dst.device)
        flags[position[changed]] = True
    return flags


@store_rows.register_kernel('cuda')
def _(dst: Tensor, index: Optional[Tensor], values: Tensor, operand: Optional[Tensor],
      epilogue_spec: str, threshold: float, test: bool) -> Tensor:
    steps, operands = parse_epilogue(epilogue_spec, operand)
    flags, _ = epilogue.store_rows(dst, index, values.contiguous(),
                                   epilogue.encode(steps, operands), threshold, test)
    return flags.bool() if test else torch.ones(values.shape[0], dtype=torch.bool,
                                                device=values.device)


@store_rows.register_fake
def _(dst: Tensor, index: Optional[Tensor], values: Tensor, operand: Optional[Tensor],
      epilogue_spec: str, threshold: float, test: bool) -> Tensor:
    return values.new_empty(values.shape[0], dtype=torch.bool)


# -- masks -------------------------------------------------------------------------------------

@torch.library.custom_op('sparse_perception::dilate_mask', mutates_args=())
def dilate_mask(mask: Tensor, pads: list[int], kernel: list[int], stride: list[int],
                dilation: list[int], out_hw: list[int]) -> Tensor:
    """Receptive-field image of a change mask through a window (reference)."""
    return masks.dilate_mask_ref(mask, pads, kernel, stride, dilation, out_hw).contiguous()


@dilate_mask.register_kernel('cuda')
def _(mask: Tensor, pads: list[int], kernel: list[int], stride: list[int],
      dilation: list[int], out_hw: list[int]) -> Tensor:
    return masks.dilate_mask(mask, pads, kernel, stride, dilation, tuple(out_hw))


@dilate_mask.register_fake
def _(mask: Tensor, pads: list[int], kernel: list[int], stride: list[int],
      dilation: list[int], out_hw: list[int]) -> Tensor:
    return mask.new_empty(*out_hw, dtype=torch.bool)


@torch.library.custom_op('sparse_perception::tile_flags', mutates_args=())
def tile_flags(mask: Tensor, tile: int) -> Tensor:
    """Tiles of a change mask that hold a set element (reference)."""
    return masks.tile_flags_ref(mask, tile).contiguous()


@tile_flags.register_kernel('cuda')
def _(mask: Tensor, tile: int) -> Tensor:
    return masks.tile_flags(mask, tile)


@tile_flags.register_fake
def _(mask: Tensor, tile: int) -> Tensor:
    h, w = mask.shape
    return mask.new_empty(-(-h // tile), -(-w // tile), dtype=torch.bool)


@torch.library.custom_op('sparse_perception::list_tiles', mutates_args=())
def list_tiles(flags: Tensor) -> tuple[Tensor, Tensor]:
    """List set flags with a device-side count, without a host sync (reference)."""
    return masks.list_tiles_ref(flags)


@list_tiles.register_kernel('cuda')
def _(flags: Tensor) -> tuple[Tensor, Tensor]:
    return masks.list_tiles(flags)


@list_tiles.register_fake
def _(flags: Tensor) -> tuple[Tensor, Tensor]:
    n = max(1, flags.numel())
    return flags.new_empty(n, dtype=torch.int32), flags.new_empty(1, dtype=torch.int32)


# -- copy_tiles --------------------------------------------------------------------------------

def _copy_layout(table_rows: Optional[Tensor], table_cols: Optional[Tensor],
                 shuffle_block: int, shuffle_order: str) -> tuple:
    table = None if table_rows is None else (table_rows, table_cols)
    return table, (shuffle_block, shuffle_order) if shuffle_block else None


@torch.library.custom_op('sparse_perception::copy_tiles', mutates_args=('out',))
def copy_tiles(x: Tensor, out: Tensor, out_hw: list[int], tile: list[int], tiles: Tensor,
               count: Optional[Tensor], cand: Optional[Tensor], table_rows: Optional[Tensor],
               table_cols: Optional[Tensor], in_width: int, col0: int, fill: float,
               operand: Optional[Tensor], epilogue_spec: str, shuffle_block: int,
               shuffle_order: str) -> None:
    """Copy rows into the listed tiles of a cache: padding, concatenation (reference)."""
    steps, operands = parse_epilogue(epilogue_spec, operand)
    table, shuffle = _copy_layout(table_rows, table_cols, shuffle_block, shuffle_order)
    gather.copy_tiles_ref(x, out, tuple(out_hw), tuple(tile), tiles, count, cand, table,
                          in_width, col0, fill, steps, operands, shuffle)


@copy_tiles.register_kernel('cuda')
def _(x: Tensor, out: Tensor, out_hw: list[int], tile: list[int], tiles: Tensor,
      count: Optional[Tensor], cand: Optional[Tensor], table_rows: Optional[Tensor],
      table_cols: Optional[Tensor], in_width: int, col0: int, fill: float,
      operand: Optional[Tensor], epilogue_spec: str, shuffle_block: int,
      shuffle_order: str) -> None:
    steps, operands = parse_epilogue(epilogue_spec, operand)
    table, shuffle = _copy_layout(table_rows, table_cols, shuffle_block, shuffle_order)
    gather.copy_tiles(x, out, tuple(out_hw), tuple(tile), tiles, count, cand, table, in_width,
                      col0, fill, epilogue.encode(steps, operands), shuffle)


@copy_tiles.register_fake
def _(x: Tensor, out: Tensor, out_hw: list[int], tile: list[int], tiles: Tensor,
      count: Optional[Tensor], cand: Optional[Tensor], table_rows: Optional[Tensor],
      table_cols: Optional[Tensor], in_width: int, col0: int, fill: float,
      operand: Optional[Tensor], epilogue_spec: str, shuffle_block: int,
      shuffle_order: str) -> None:
    return None


# -- positionwise_tiles ------------------------------------------------------------------------

@torch.library.custom_op('sparse_perception::positionwise_tiles', mutates_args=('out',))
def positionwise_tiles(x: Tensor, out: Tensor, fn: str, out_hw: list[int], tile: list[int],
                       tiles: Tensor, count: Optional[Tensor], cand: Optional[Tensor]) -> None:
    """Softmax, log-softmax or argmax over channels at the listed tiles' positions (reference)."""
    pos = window.listed_positions(tiles, count, tuple(out_hw), tuple(tile), cand)
    out[pos] = positionwise.positionwise_ref(x.index_select(0, pos), fn).to(out.dtype)


@positionwise_tiles.register_kernel('cuda')
def _(x: Tensor, out: Tensor, fn: str, out_hw: list[int], tile: list[int], tiles: Tensor,
      count: Optional[Tensor], cand: Optional[Tensor]) -> None:
    kernel, grid, args, meta = positionwise.positionwise_args(x, out, fn, tuple(out_hw),
                                                              tuple(tile), tiles, count, cand)
    launch(kernel, grid, *args, **meta)


@positionwise_tiles.register_fake
def _(x: Tensor, out: Tensor, fn: str, out_hw: list[int], tile: list[int], tiles: Tensor,
      count: Optional[Tensor], cand: Optional[Tensor]) -> None:
    return None


# -- resample_tiles ----------------------------------------------------------------------------

@torch.library.custom_op('sparse_perception::resample_tiles', mutates_args=('out',))
def resample_tiles(x: Tensor, out: Tensor, in_hw: list[int], out_hw: list[int],
                   row_taps: Tensor, row_weights: Tensor, col_taps: Tensor, col_weights: Tensor,
                   tile: list[int], tiles: Tensor, count: Optional[Tensor],
                   cand: Optional[Tensor], operand: Optional[Tensor],
                   epilogue_spec: str) -> None:
    """Separable resampling from tap tables at the listed tiles' positions (reference)."""
    steps, operands = parse_epilogue(epilogue_spec, operand)
    pos = window.listed_positions(tiles, count, tuple(out_hw), tuple(tile), cand)
    whole = resample.resample_tiles_ref(x, tuple(in_hw), tuple(out_hw), (row_taps, row_weights),
                                        (col_taps, col_weights))
    values = whole.index_select(0, pos).to(out.dtype)
    out[pos] = epilogue.epilogue_ref(values, steps, operands, pos) if steps else values


@resample_tiles.register_kernel('cuda')
def _(x: Tensor, out: Tensor, in_hw: list[int], out_hw: list[int], row_taps: Tensor,
      row_weights: Tensor, col_taps: Tensor, col_weights: Tensor, tile: list[int],
      tiles: Tensor, count: Optional[Tensor], cand: Optional[Tensor], operand: Optional[Tensor],
      epilogue_spec: str) -> None:
    steps, operands = parse_epilogue(epilogue_spec, operand)
    kernel, grid, args, meta = resample.resample_tiles_args(
        x, out, tuple(in_hw), tuple(out_hw), (row_taps, row_weights), (col_taps, col_weights),
        tuple(tile), tiles, count, cand, epilogue.encode(steps, operands))
    launch(kernel, grid, *args, **meta)


@resample_tiles.register_fake
def _(x: Tensor, out: Tensor, in_hw: list[int], out_hw: list[int], row_taps: Tensor,
      row_weights: Tensor, col_taps: Tensor, col_weights: Tensor, tile: list[int],
      tiles: Tensor, count: Optional[Tensor], cand: Optional[Tensor], operand: Optional[Tensor],
      epilogue_spec: str) -> None:
    return None


# -- the frame: intake and global pooling ------------------------------------------------------

@torch.library.custom_op('sparse_perception::intake', mutates_args=('cache',))
def intake(x: Tensor, cache: Tensor, tiles: Tensor, tile: int, threshold: float,
           dense: bool) -> Tensor:
    """Take a frame's changed pixels into its cache; return the changed mask (reference)."""
    return frame.intake_ref(x, cache, tiles, tile, threshold, dense)


@intake.register_kernel('cuda')
def _(x: Tensor, cache: Tensor, tiles: Tensor, tile: int, threshold: float,
      dense: bool) -> Tensor:
    positions = x.shape[2] * x.shape[3]
    mask = torch.zeros(positions, dtype=torch.uint8, device=x.device)
    stats = torch.zeros(4, dtype=torch.int32, device=x.device)
    kernel, grid, args, meta = frame.intake_args(x, cache, mask, tiles.to(torch.uint8), stats,
                                                 tile, threshold, dense)
    launch(kernel, grid, *args, **meta)
    return mask.bool()


@intake.register_fake
def _(x: Tensor, cache: Tensor, tiles: Tensor, tile: int, threshold: float,
      dense: bool) -> Tensor:
    return x.new_empty(x.shape[2] * x.shape[3], dtype=torch.bool)


@torch.library.custom_op('sparse_perception::global_pool', mutates_args=())
def global_pool(x: Tensor, positions: int) -> Tensor:
    """Mean over the first ``positions`` rows of a cache, in its dtype (reference)."""
    return frame.global_pool_ref(x, positions).to(x.dtype)


@global_pool.register_kernel('cuda')
def _(x: Tensor, positions: int) -> Tensor:
    channels = x.shape[1]
    out = torch.zeros(1 + 3, channels, dtype=x.dtype, device=x.device)
    sums = torch.zeros(channels, dtype=torch.float32, device=x.device)
    mask = torch.zeros(1, dtype=torch.uint8, device=x.device)
    stats = torch.zeros(4, dtype=torch.int32, device=x.device)
    in_count = torch.ones(1, dtype=torch.int32, device=x.device)
    frame.run(frame.global_pool_args(x, positions, out, sums, mask, stats, in_count, 0.0,
                                     test=False, exact=False, gate=False))
    return out[:1].clone()


@global_pool.register_fake
def _(x: Tensor, positions: int) -> Tensor:
    return x.new_empty(1, x.shape[1])


# -- commit_tiles ------------------------------------------------------------------------------

@torch.library.custom_op('sparse_perception::commit_tiles', mutates_args=('dst',))
def commit_tiles(dst: Tensor, staging: Tensor, cand: Tensor, tiles: Tensor,
                 count: Optional[Tensor], out_hw: list[int], tile: list[int],
                 operand: Optional[Tensor], epilogue_spec: str, threshold: float,
                 test: bool) -> Tensor:
    """Epilogue, change test and store of the staged candidates of listed tiles (reference)."""
    steps, operands = parse_epilogue(epilogue_spec, operand)
    positions = out_hw[0] * out_hw[1]
    pos = window.listed_positions(tiles, count, tuple(out_hw), tuple(tile), cand)
    changed = torch.zeros(positions, dtype=torch.bool, device=dst.device)
    picked, _ = epilogue.store_rows_ref(dst, pos, staging.index_select(0, pos), steps, operands,
                                        threshold, test)
    changed[pos if picked is None else picked] = True
    return changed


@commit_tiles.register_kernel('cuda')
def _(dst: Tensor, staging: Tensor, cand: Tensor, tiles: Tensor, count: Optional[Tensor],
      out_hw: list[int], tile: list[int], operand: Optional[Tensor], epilogue_spec: str,
      threshold: float, test: bool) -> Tensor:
    steps, operands = parse_epilogue(epilogue_spec, operand)
    changed = torch.zeros(out_hw[0] * out_hw[1], dtype=torch.uint8, device=dst.device)
    stats = torch.zeros(4, dtype=torch.int32, device=dst.device)
    if count is None:
        count = torch.tensor([tiles.numel()], dtype=torch.int32, device=dst.device)
    kernel, grid, args, meta = epilogue.commit_tiles_args(
        dst, staging, cand, changed, stats, tiles, count, out_hw[0], out_hw[1], tuple(tile),
        epilogue.encode(steps, operands), threshold, test, threshold == 0)
    launch(kernel, grid, *args, **meta)
    return changed.bool()


@commit_tiles.register_fake
def _(dst: Tensor, staging: Tensor, cand: Tensor, tiles: Tensor, count: Optional[Tensor],
      out_hw: list[int], tile: list[int], operand: Optional[Tensor], epilogue_spec: str,
      threshold: float, test: bool) -> Tensor:
    return dst.new_empty(out_hw[0] * out_hw[1], dtype=torch.bool)
