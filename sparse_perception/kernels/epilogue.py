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
Fused epilogue, change test and scatter: the ``store_epilogue`` primitive of the engine.

After a layer's core (convolution, pooling, resampling, ...) every output row goes through the
layer's *epilogue* (pointwise steps: activations, per-channel affine maps, scalars, residual
adds and other binary ops with a cached tensor read at the same rows) and then the *change
test*: a row whose new value differs from the cached one by more than the layer threshold
(max over channels; any bit at threshold 0) is written to the cache and reported as changed,
the others keep the cached, last propagated value.

The kernels here do all of that in one pass over the rows; other kernel modules apply the same
epilogue (:func:`apply_epilogue`) on their way out when no change test is needed.

An epilogue is encoded as up to :data:`MAX_STEPS` slots, each a compile-time op code with
run-time parameters (two floats, one or two tensors, a row stride). Steps the kernels do not
know (or too many) raise :class:`Unfusable`; the engine then runs them on the reference path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import math
from typing import Any, Callable, Sequence

from sparse_perception.kernels.runtime import (as_u8, block, cdiv, check_device, check_float,
                                               KernelError, launch, tile_rows, tl, triton,
                                               work_count)
import torch
import torch.nn.functional as F

MAX_STEPS = 4

# Op codes (compile-time constants of the kernels).
NONE = tl.constexpr(0)
RELU = tl.constexpr(1)
CLAMP = tl.constexpr(2)
HARDSWISH = tl.constexpr(3)
HARDSIGMOID = tl.constexpr(4)
SIGMOID = tl.constexpr(5)
SILU = tl.constexpr(6)
TANH = tl.constexpr(7)
LEAKY_RELU = tl.constexpr(8)
ELU = tl.constexpr(9)
GELU = tl.constexpr(10)
GELU_TANH = tl.constexpr(11)
SOFTPLUS = tl.constexpr(12)
MISH = tl.constexpr(13)
PRELU = tl.constexpr(14)
AFFINE = tl.constexpr(20)
SCALAR_ADD = tl.constexpr(30)
SCALAR_SUB = tl.constexpr(31)
SCALAR_MUL = tl.constexpr(32)
SCALAR_DIV = tl.constexpr(33)
SCALAR_RSUB = tl.constexpr(34)
SCALAR_RDIV = tl.constexpr(35)
TENSOR_ADD = tl.constexpr(40)
TENSOR_SUB = tl.constexpr(41)
TENSOR_MUL = tl.constexpr(42)
TENSOR_DIV = tl.constexpr(43)
TENSOR_RSUB = tl.constexpr(44)
TENSOR_RDIV = tl.constexpr(45)

_ACT_CODES = {'relu': 1, 'hardtanh': 2, 'clamp': 2, 'hardswish': 3, 'hardsigmoid': 4,
              'sigmoid': 5, 'silu': 6, 'tanh': 7, 'leaky_relu': 8, 'elu': 9, 'softplus': 12,
              'mish': 13, 'prelu': 14}
_BINARY_OFFSETS = {'add': 0, 'sub': 1, 'mul': 2, 'div': 3}


class Unfusable(KernelError):
    """An epilogue step the kernels cannot apply (the reference path must)."""


@dataclass
class Epilogue:
    """Up to MAX_STEPS encoded steps; see :func:`encode`."""

    codes: list = field(default_factory=lambda: [0] * MAX_STEPS)
    row_bcast: list = field(default_factory=lambda: [False] * MAX_STEPS)
    col_bcast: list = field(default_factory=lambda: [False] * MAX_STEPS)
    a: list = field(default_factory=lambda: [None] * MAX_STEPS)
    b: list = field(default_factory=lambda: [None] * MAX_STEPS)
    f0: list = field(default_factory=lambda: [0.0] * MAX_STEPS)
    f1: list = field(default_factory=lambda: [0.0] * MAX_STEPS)
    ld: list = field(default_factory=lambda: [0] * MAX_STEPS)

    @property
    def empty(self) -> bool:
        """Return True when no step is encoded."""
        return not any(self.codes)

    def tensors(self) -> list[torch.Tensor]:
        """Return the tensors the steps read."""
        return [t for t in self.a + self.b if t is not None]

    def kwargs(self, fallback: torch.Tensor) -> dict:
        """Keyword arguments of a kernel taking an epilogue (``fallback`` fills unused slots)."""
        out: dict[str, Any] = {}
        for i in range(MAX_STEPS):
            out[f'e{i}_a'] = self.a[i] if self.a[i] is not None else fallback
            out[f'e{i}_b'] = self.b[i] if self.b[i] is not None else fallback
            out[f'e{i}_f0'] = float(self.f0[i])
            out[f'e{i}_f1'] = float(self.f1[i])
            out[f'e{i}_ld'] = int(self.ld[i])
            out[f'E{i}'] = int(self.codes[i])
            out[f'E{i}R'] = bool(self.row_bcast[i])
            out[f'E{i}C'] = bool(self.col_bcast[i])
        return out


NO_EPILOGUE = Epilogue()


def encode(steps: Sequence[Any], operands: dict, padded: bool = True) -> Epilogue:
    """
    Encode engine epilogue steps (``steps.Step``, converted to the device and dtype).

    ``operands`` maps a value id to its cache ``(P' + 3, C')`` (``padded``) or to plain rows
    ``(P', C')``. A cache with one position is broadcast to every row, one with one channel
    to every channel. Raises :class:`Unfusable` for a step the kernels do not implement.
    """
    steps = list(steps)
    if len(steps) > MAX_STEPS:
        raise Unfusable(f'{len(steps)} epilogue steps; the kernels fuse at most {MAX_STEPS}')
    ep = Epilogue()
    for i, step in enumerate(steps):
        kind = step.kind
        if kind == 'act':
            _encode_act(ep, i, step.op, step.params)
        elif kind == 'affine':
            scale, shift = step.const
            ep.codes[i] = 20
            ep.a[i] = scale.reshape(-1).contiguous()
            ep.b[i] = shift.reshape(-1).contiguous()
            ep.col_bcast[i] = ep.a[i].numel() == 1
            if ep.b[i].numel() != ep.a[i].numel():
                raise Unfusable('affine step with scale and shift of different sizes')
        elif kind == 'scalar':
            offset = _BINARY_OFFSETS[step.op]
            if step.reverse:
                if step.op == 'sub':
                    offset = 4
                elif step.op == 'div':
                    offset = 5
            ep.codes[i] = 30 + offset
            ep.f0[i] = float(step.const)
        elif kind == 'binary':
            offset = _BINARY_OFFSETS[step.op]
            if step.reverse:
                if step.op == 'sub':
                    offset = 4
                elif step.op == 'div':
                    offset = 5
            if step.operand is not None:
                src = operands[step.operand]
                rows = src.shape[0] - (3 if padded else 0)
            else:
                src = step.const
                rows = src.shape[0]
            if src.dim() != 2 or src.stride(1) != 1:
                raise Unfusable('binary operand that is not (rows, channels) with unit stride')
            ep.codes[i] = 40 + offset
            ep.a[i] = src
            ep.ld[i] = src.stride(0)
            ep.row_bcast[i] = rows == 1
            ep.col_bcast[i] = src.shape[1] == 1
        else:
            raise Unfusable(f'epilogue step kind {kind!r}')
    return ep


def _encode_act(ep: Epilogue, i: int, op: str, params: tuple) -> None:
    if op == 'gelu':
        ep.codes[i] = 11 if params and params[0] == 'tanh' else 10
        return
    code = _ACT_CODES.get(op)
    if code is None:
        raise Unfusable(f'activation {op!r}')
    ep.codes[i] = code
    if op in ('hardtanh', 'clamp'):
        lo, hi = params
        ep.f0[i] = -math.inf if lo is None else float(lo)
        ep.f1[i] = math.inf if hi is None else float(hi)
    elif op in ('leaky_relu', 'elu'):
        ep.f0[i] = float(params[0])
    elif op == 'softplus':
        ep.f0[i], ep.f1[i] = float(params[0]), float(params[1])
    elif op == 'prelu':
        weight = params[0].reshape(-1).contiguous()
        ep.a[i] = weight
        ep.col_bcast[i] = weight.numel() == 1


# -- the epilogue inside kernels ------------------------------------------------------------------

@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _tanh(x):
    # tanh(x) = 2 sigmoid(2x) - 1, written to stay finite for large |x|.
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x >= 0, t, -t)


@triton.jit
def _softplus(x, beta, threshold):
    bx = x * beta
    soft = tl.log(1.0 + tl.exp(tl.minimum(bx, threshold))) / beta
    return tl.where(bx > threshold, x, soft)


@triton.jit
def _step(x, orow, cols, rmask, cmask, a_ptr, b_ptr, f0, f1, ld,
          CODE: tl.constexpr, RB: tl.constexpr, CB: tl.constexpr):
    """Apply one encoded step to ``x`` (BLOCK_R, BLOCK_C) fp32 at rows ``orow``."""
    if CODE == RELU:
        x = tl.maximum(x, 0.0)
    elif CODE == CLAMP:
        x = tl.minimum(tl.maximum(x, f0), f1)
    elif CODE == HARDSWISH:
        x = x * tl.minimum(tl.maximum(x + 3.0, 0.0), 6.0) / 6.0
    elif CODE == HARDSIGMOID:
        x = tl.minimum(tl.maximum(x + 3.0, 0.0), 6.0) / 6.0
    elif CODE == SIGMOID:
        x = _sigmoid(x)
    elif CODE == SILU:
        x = x * _sigmoid(x)
    elif CODE == TANH:
        x = _tanh(x)
    elif CODE == LEAKY_RELU:
        x = tl.where(x >= 0, x, x * f0)
    elif CODE == ELU:
        x = tl.where(x > 0, x, f0 * (tl.exp(tl.minimum(x, 0.0)) - 1.0))
    elif CODE == GELU:
        x = 0.5 * x * (1.0 + tl.math.erf(x * 0.7071067811865476))
    elif CODE == GELU_TANH:
        x = 0.5 * x * (1.0 + _tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)))
    elif CODE == SOFTPLUS:
        x = _softplus(x, f0, f1)
    elif CODE == MISH:
        x = x * _tanh(_softplus(x, 1.0, 20.0))
    elif CODE == PRELU:
        if CB:
            w = tl.load(a_ptr + cols * 0, mask=cmask, other=0.0).to(tl.float32)
        else:
            w = tl.load(a_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
        x = tl.where(x >= 0, x, x * w[None, :])
    elif CODE == AFFINE:
        if CB:
            s = tl.load(a_ptr + cols * 0, mask=cmask, other=0.0).to(tl.float32)
            t = tl.load(b_ptr + cols * 0, mask=cmask, other=0.0).to(tl.float32)
        else:
            s = tl.load(a_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
            t = tl.load(b_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
        x = x * s[None, :] + t[None, :]
    elif CODE == SCALAR_ADD:
        x = x + f0
    elif CODE == SCALAR_SUB:
        x = x - f0
    elif CODE == SCALAR_MUL:
        x = x * f0
    elif CODE == SCALAR_DIV:
        x = x / f0
    elif CODE == SCALAR_RSUB:
        x = f0 - x
    elif CODE == SCALAR_RDIV:
        x = f0 / x
    elif CODE >= TENSOR_ADD:
        if RB:
            r = orow * 0
        else:
            r = orow
        if CB:
            c = cols * 0
        else:
            c = cols
        ptrs = a_ptr + r.to(tl.int64)[:, None] * ld + c[None, :]
        other = tl.load(ptrs, mask=rmask[:, None] & cmask[None, :], other=1.0).to(tl.float32)
        if CODE == TENSOR_ADD:
            x = x + other
        elif CODE == TENSOR_SUB:
            x = x - other
        elif CODE == TENSOR_MUL:
            x = x * other
        elif CODE == TENSOR_DIV:
            x = x / other
        elif CODE == TENSOR_RSUB:
            x = other - x
        else:
            x = other / x
    return x


@triton.jit
def apply_epilogue(x, orow, cols, rmask, cmask,
                   e0_a, e0_b, e0_f0, e0_f1, e0_ld, e1_a, e1_b, e1_f0, e1_f1, e1_ld,
                   e2_a, e2_b, e2_f0, e2_f1, e2_ld, e3_a, e3_b, e3_f0, e3_f1, e3_ld,
                   E0: tl.constexpr, E0R: tl.constexpr, E0C: tl.constexpr,
                   E1: tl.constexpr, E1R: tl.constexpr, E1C: tl.constexpr,
                   E2: tl.constexpr, E2R: tl.constexpr, E2C: tl.constexpr,
                   E3: tl.constexpr, E3R: tl.constexpr, E3C: tl.constexpr):
    """Apply the encoded epilogue to ``x`` (BLOCK_R, BLOCK_C) fp32; operands at ``orow``."""
    if E0 != NONE:
        x = _step(x, orow, cols, rmask, cmask, e0_a, e0_b, e0_f0, e0_f1, e0_ld, E0, E0R, E0C)
    if E1 != NONE:
        x = _step(x, orow, cols, rmask, cmask, e1_a, e1_b, e1_f0, e1_f1, e1_ld, E1, E1R, E1C)
    if E2 != NONE:
        x = _step(x, orow, cols, rmask, cmask, e2_a, e2_b, e2_f0, e2_f1, e2_ld, E2, E2R, E2C)
    if E3 != NONE:
        x = _step(x, orow, cols, rmask, cmask, e3_a, e3_b, e3_f0, e3_f1, e3_ld, E3, E3R, E3C)
    return x


@triton.jit
def sink(acc, wrow, orow, rmask, cols, cmask, out_ptr, ld_out,
         e0_a, e0_b, e0_f0, e0_f1, e0_ld, e1_a, e1_b, e1_f0, e1_f1, e1_ld,
         e2_a, e2_b, e2_f0, e2_f1, e2_ld, e3_a, e3_b, e3_f0, e3_f1, e3_ld,
         E0: tl.constexpr, E0R: tl.constexpr, E0C: tl.constexpr,
         E1: tl.constexpr, E1R: tl.constexpr, E1C: tl.constexpr,
         E2: tl.constexpr, E2R: tl.constexpr, E2C: tl.constexpr,
         E3: tl.constexpr, E3R: tl.constexpr, E3C: tl.constexpr):
    """
    Write a computed block: the epilogue (operands at ``orow``), then rows ``wrow`` of out.

    Only rows with ``rmask`` set are written (callers fold the candidate mask into it).
    """
    acc = apply_epilogue(acc, orow, cols, rmask, cmask,
                         e0_a, e0_b, e0_f0, e0_f1, e0_ld, e1_a, e1_b, e1_f0, e1_f1, e1_ld,
                         e2_a, e2_b, e2_f0, e2_f1, e2_ld, e3_a, e3_b, e3_f0, e3_f1, e3_ld,
                         E0, E0R, E0C, E1, E1R, E1C, E2, E2R, E2C, E3, E3R, E3C)
    ptrs = out_ptr + wrow.to(tl.int64)[:, None] * ld_out + cols[None, :]
    tl.store(ptrs, acc.to(out_ptr.dtype.element_ty), mask=rmask[:, None] & cmask[None, :])


@triton.jit
def _store_block(dst_ptr, ld_dst, drow, val_ptr, ld_val, vrow, orow, rmask, C, thr,
                 old_ptr, ld_old,
                 e0_a, e0_b, e0_f0, e0_f1, e0_ld, e1_a, e1_b, e1_f0, e1_f1, e1_ld,
                 e2_a, e2_b, e2_f0, e2_f1, e2_ld, e3_a, e3_b, e3_f0, e3_f1, e3_ld,
                 E0: tl.constexpr, E0R: tl.constexpr, E0C: tl.constexpr,
                 E1: tl.constexpr, E1R: tl.constexpr, E1C: tl.constexpr,
                 E2: tl.constexpr, E2R: tl.constexpr, E2C: tl.constexpr,
                 E3: tl.constexpr, E3R: tl.constexpr, E3C: tl.constexpr,
                 TEST: tl.constexpr, EXACT: tl.constexpr, WANT_OLD: tl.constexpr,
                 BITS: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    """
    Epilogue, change test and scatter of a block of rows; return the changed rows (int1).

    Values come from rows ``vrow`` of ``val``, operands are read at ``orow``, the cache rows
    are ``drow``. With TEST, a first pass over the channels finds each row's largest change
    (EXACT: any differing bit) and a second one writes the rows that changed; the epilogue is
    recomputed rather than kept, so any channel count fits in registers.
    """
    dst_rows = drow.to(tl.int64)[:, None] * ld_dst
    val_rows = vrow.to(tl.int64)[:, None] * ld_val
    if TEST:
        worst = tl.zeros((BLOCK_R,), dtype=tl.float32)
        for c0 in range(0, C, BLOCK_C):
            cols = c0 + tl.arange(0, BLOCK_C)
            cmask = cols < C
            m2 = rmask[:, None] & cmask[None, :]
            v = tl.load(val_ptr + val_rows + cols[None, :], mask=m2, other=0.0).to(tl.float32)
            v = apply_epilogue(v, orow, cols, rmask, cmask,
                               e0_a, e0_b, e0_f0, e0_f1, e0_ld, e1_a, e1_b, e1_f0, e1_f1,
                               e1_ld, e2_a, e2_b, e2_f0, e2_f1, e2_ld, e3_a, e3_b, e3_f0,
                               e3_f1, e3_ld, E0, E0R, E0C, E1, E1R, E1C, E2, E2R, E2C,
                               E3, E3R, E3C)
            new = v.to(dst_ptr.dtype.element_ty)
            old = tl.load(dst_ptr + dst_rows + cols[None, :], mask=m2, other=0.0)
            if EXACT:
                if BITS == 32:
                    diff = new.to(tl.int32, bitcast=True) != old.to(tl.int32, bitcast=True)
                else:
                    diff = new.to(tl.int16, bitcast=True) != old.to(tl.int16, bitcast=True)
                d = tl.where(m2 & diff, 1.0, 0.0)
            else:
                d = tl.where(m2, tl.abs(new.to(tl.float32) - old.to(tl.float32)), 0.0)
            worst = tl.maximum(worst, tl.max(d, 1))
        if EXACT:
            changed = rmask & (worst > 0.0)
        else:
            changed = rmask & (worst > thr)
    else:
        changed = rmask
    for c0 in range(0, C, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        cmask = cols < C
        m2 = rmask[:, None] & cmask[None, :]
        if WANT_OLD:
            old = tl.load(dst_ptr + dst_rows + cols[None, :], mask=m2, other=0.0)
            tl.store(old_ptr + vrow.to(tl.int64)[:, None] * ld_old + cols[None, :], old,
                     mask=m2)
        v = tl.load(val_ptr + val_rows + cols[None, :], mask=m2, other=0.0).to(tl.float32)
        v = apply_epilogue(v, orow, cols, rmask, cmask,
                           e0_a, e0_b, e0_f0, e0_f1, e0_ld, e1_a, e1_b, e1_f0, e1_f1, e1_ld,
                           e2_a, e2_b, e2_f0, e2_f1, e2_ld, e3_a, e3_b, e3_f0, e3_f1, e3_ld,
                           E0, E0R, E0C, E1, E1R, E1C, E2, E2R, E2C, E3, E3R, E3C)
        tl.store(dst_ptr + dst_rows + cols[None, :], v.to(dst_ptr.dtype.element_ty),
                 mask=changed[:, None] & cmask[None, :])
    return changed


@triton.jit
def _store_rows_kernel(dst_ptr, ld_dst, val_ptr, ld_val, index_ptr, n, C, thr,
                       flags_ptr, old_ptr, ld_old,
                       e0_a, e0_b, e0_f0, e0_f1, e0_ld, e1_a, e1_b, e1_f0, e1_f1, e1_ld,
                       e2_a, e2_b, e2_f0, e2_f1, e2_ld, e3_a, e3_b, e3_f0, e3_f1, e3_ld,
                       E0: tl.constexpr, E0R: tl.constexpr, E0C: tl.constexpr,
                       E1: tl.constexpr, E1R: tl.constexpr, E1C: tl.constexpr,
                       E2: tl.constexpr, E2R: tl.constexpr, E2C: tl.constexpr,
                       E3: tl.constexpr, E3R: tl.constexpr, E3C: tl.constexpr,
                       HAS_INDEX: tl.constexpr, DST_AT_INDEX: tl.constexpr,
                       TEST: tl.constexpr, EXACT: tl.constexpr, WANT_OLD: tl.constexpr,
                       FLAGS: tl.constexpr, BITS: tl.constexpr,
                       BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    """Rows ``i < n``: value row i, operands and (DST_AT_INDEX) cache row ``index[i]``."""
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = r < n
    if HAS_INDEX:
        idx = tl.load(index_ptr + r, mask=rmask, other=0)
    else:
        idx = r
    if DST_AT_INDEX:
        drow = idx
    else:
        drow = r
    changed = _store_block(dst_ptr, ld_dst, drow, val_ptr, ld_val, r, idx, rmask, C, thr,
                           old_ptr, ld_old,
                           e0_a, e0_b, e0_f0, e0_f1, e0_ld, e1_a, e1_b, e1_f0, e1_f1, e1_ld,
                           e2_a, e2_b, e2_f0, e2_f1, e2_ld, e3_a, e3_b, e3_f0, e3_f1, e3_ld,
                           E0, E0R, E0C, E1, E1R, E1C, E2, E2R, E2C, E3, E3R, E3C,
                           TEST, EXACT, WANT_OLD, BITS, BLOCK_R, BLOCK_C)
    if FLAGS:
        tl.store(flags_ptr + r, changed.to(tl.uint8), mask=rmask)


@triton.jit
def _commit_tiles_kernel(dst_ptr, ld_dst, val_ptr, ld_val, cand_ptr, changed_ptr, stats_ptr,
                         list_ptr, count_ptr, n_items, Ho, Wo, C, thr,
                         e0_a, e0_b, e0_f0, e0_f1, e0_ld, e1_a, e1_b, e1_f0, e1_f1, e1_ld,
                         e2_a, e2_b, e2_f0, e2_f1, e2_ld, e3_a, e3_b, e3_f0, e3_f1, e3_ld,
                         E0: tl.constexpr, E0R: tl.constexpr, E0C: tl.constexpr,
                         E1: tl.constexpr, E1R: tl.constexpr, E1C: tl.constexpr,
                         E2: tl.constexpr, E2R: tl.constexpr, E2C: tl.constexpr,
                         E3: tl.constexpr, E3R: tl.constexpr, E3C: tl.constexpr,
                         HAS_LIST: tl.constexpr, HAS_COUNT: tl.constexpr,
                         TEST: tl.constexpr, EXACT: tl.constexpr, BITS: tl.constexpr,
                         TY: tl.constexpr, TX: tl.constexpr, BLOCK_C: tl.constexpr):
    """
    Commit staged values of listed output tiles (the sync-free path of a tested layer).

    Candidates of each tile (``cand`` bytes at positions) are tested and stored; the changed
    positions are marked in ``changed`` and counted in ``stats[2]``.
    """
    pid = tl.program_id(0)
    if pid >= work_count(count_ptr, n_items, HAS_COUNT):
        return
    b, oy, ox, valid, prow, cand = tile_rows(list_ptr, pid, cand_ptr, Ho, Wo, HAS_LIST, True,
                                             TY, TX)
    changed = _store_block(dst_ptr, ld_dst, prow, val_ptr, ld_val, prow, prow, cand, C, thr,
                           dst_ptr, 0,
                           e0_a, e0_b, e0_f0, e0_f1, e0_ld, e1_a, e1_b, e1_f0, e1_f1, e1_ld,
                           e2_a, e2_b, e2_f0, e2_f1, e2_ld, e3_a, e3_b, e3_f0, e3_f1, e3_ld,
                           E0, E0R, E0C, E1, E1R, E1C, E2, E2R, E2C, E3, E3R, E3C,
                           TEST, EXACT, False, BITS, TY * TX, BLOCK_C)
    tl.store(changed_ptr + prow, changed.to(tl.uint8), mask=valid)
    tl.atomic_add(stats_ptr + 2, tl.sum(changed.to(tl.int32)))


# -- launchers ------------------------------------------------------------------------------------

def store_rows(dst: torch.Tensor, index: torch.Tensor | None, values: torch.Tensor,
               epilogue: Epilogue = NO_EPILOGUE, threshold: float = 0.0, test: bool = True,
               exact: bool | None = None, want_old: bool = False, dst_at_index: bool = True,
               flags: bool = True) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """
    Run the epilogue, change test and scatter over rows (see :func:`store_rows_ref`).

    Returns (changed flags uint8 (n,) or None, old rows (n, C) before the write or None).
    """
    check_float(dst, values)
    check_device(dst, values, index)
    n, channels = values.shape
    if dst.shape[1] != channels or values.stride(1) != 1 or dst.stride(1) != 1:
        raise KernelError(f'store: values {tuple(values.shape)} and cache {tuple(dst.shape)} '
                          'must be row-major with the same channel count')
    if exact is None:
        exact = threshold == 0
    flag_out = torch.empty(n if flags else 1, dtype=torch.uint8, device=dst.device)
    old = torch.empty(n, channels, dtype=dst.dtype, device=dst.device) if want_old else None
    if n == 0:
        return (flag_out if flags else None), old
    idx = index if index is not None else flag_out
    block_c = block(channels, 16, 128)
    block_r = 32 if block_c <= 64 else 16
    launch(_store_rows_kernel, (cdiv(n, block_r),),
           dst, dst.stride(0), values, values.stride(0), idx, n, channels, float(threshold),
           flag_out, old if old is not None else dst, channels,
           HAS_INDEX=index is not None, DST_AT_INDEX=dst_at_index and index is not None,
           TEST=bool(test), EXACT=bool(exact), WANT_OLD=bool(want_old), FLAGS=bool(flags),
           BITS=dst.element_size() * 8, BLOCK_R=block_r, BLOCK_C=block_c,
           **epilogue.kwargs(dst))
    return (flag_out if flags else None), old


def commit_tiles_args(dst: torch.Tensor, staging: torch.Tensor, cand: torch.Tensor,
                      changed: torch.Tensor, stats: torch.Tensor, tiles: torch.Tensor,
                      count: torch.Tensor, height: int, width: int, tile: tuple[int, int],
                      epilogue: Epilogue, threshold: float, test: bool,
                      exact: bool) -> tuple:
    """Return ``(kernel, grid, args, meta)`` of a commit launch (bound once, run every frame)."""
    channels = dst.shape[1]
    args = (dst, dst.stride(0), staging, staging.stride(0), as_u8(cand), as_u8(changed), stats,
            tiles, count, tiles.numel(), height, width, channels, float(threshold))
    meta = dict(HAS_LIST=True, HAS_COUNT=True, TEST=bool(test), EXACT=bool(exact),
                BITS=dst.element_size() * 8, TY=tile[0], TX=tile[1],
                BLOCK_C=block(channels, 16, 64), **epilogue.kwargs(dst))
    return _commit_tiles_kernel, (max(1, tiles.numel()),), args, meta


def store_rows_ref(dst: torch.Tensor, index: torch.Tensor | None, values: torch.Tensor,
                   steps: Sequence[Any] = (), operands: dict | None = None,
                   threshold: float = 0.0, test: bool = True,
                   want_old: bool = False) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """
    Run the epilogue, change test and scatter in plain torch: the reference of store_rows.

    ``dst`` (P + 3, C) is a cache; ``index`` int64 (n,) its rows (None: all P rows in
    order); ``values`` (n, C) the layer's core output at those rows (left as it is: the
    epilogue writes a new tensor); ``steps`` the epilogue (``steps.Step``) reading
    ``operands`` {value id: cache (P' + 3, C')} at the same rows (see :func:`epilogue_ref`).

    A row whose new value differs from the cached one by more than ``threshold`` (max over
    channels; any bit at threshold 0) is written and reported as changed; the others keep the
    cached value. With ``test`` False every row is written and none is reported. Returns
    (changed cache rows int64 (m,), or None for all of them; old rows (m, C) before the write,
    only with ``want_old``).
    """
    if steps:
        values = epilogue_ref(values, steps, operands or {}, index, torch.empty_like(values))
    if index is None:
        target = dst[:dst.shape[0] - 3]
        if not test:
            old = target.clone() if want_old else None
            if values.data_ptr() != target.data_ptr():
                target.copy_(values)
            return None, old
        changed = _changed_rows(values, target, threshold)
        sel = changed.nonzero().squeeze(1)
        if sel.numel() == target.shape[0]:
            old = target.clone() if want_old else None
            target.copy_(values)
            return None, old
        old = target.index_select(0, sel) if want_old else None
        target.index_copy_(0, sel, values.index_select(0, sel))
        return sel, old
    if not test:
        old = dst.index_select(0, index) if want_old else None
        dst.index_copy_(0, index, values)
        return None, old
    old = dst.index_select(0, index)
    changed = _changed_rows(values, old, threshold)
    sel = changed.nonzero().squeeze(1)
    if sel.numel() == index.numel():
        dst.index_copy_(0, index, values)
        return None, old if want_old else None
    picked = index.index_select(0, sel)
    dst.index_copy_(0, picked, values.index_select(0, sel))
    return picked, old.index_select(0, sel) if want_old else None


# The integer dtype of each float's size: bitwise change tests view floats as these.
SAME_SIZE_INT = {8: torch.int64, 4: torch.int32, 2: torch.int16, 1: torch.int8}


def _changed_rows(new: torch.Tensor, old: torch.Tensor, threshold: float) -> torch.Tensor:
    """Bool (n,): rows whose max abs change exceeds ``threshold`` (any bit change at 0)."""
    if threshold > 0:
        return (new - old).abs_().amax(1) > threshold
    # Exact: compare bit patterns (a few times faster than float != and any() on CPU).
    # +0.0 and -0.0 count as a change, which is merely conservative.
    kind = SAME_SIZE_INT[new.element_size()]
    diff = new.contiguous().view(kind) ^ old.contiguous().view(kind)
    return (diff.amax(1) != 0) | (diff.amin(1) != 0)


# Activation name (see the engine's canonical.py) -> function(x, *params), in place where torch
# can: the running value is always a fresh tensor owned by the caller.
ACTIVATIONS: dict[str, Callable[..., torch.Tensor]] = {
    'relu': lambda x: torch.relu_(x),
    'hardtanh': lambda x, lo, hi: x.clamp_(lo, hi),
    'clamp': lambda x, lo, hi: x.clamp_(lo, hi),
    'hardswish': lambda x: F.hardswish(x, inplace=True),
    'hardsigmoid': lambda x: F.hardsigmoid(x, inplace=True),
    'sigmoid': lambda x: x.sigmoid_(),
    'silu': lambda x: F.silu(x, inplace=True),
    'tanh': lambda x: x.tanh_(),
    'leaky_relu': lambda x, slope: F.leaky_relu(x, slope, inplace=True),
    'gelu': lambda x, approximate: F.gelu(x, approximate=approximate),
    'elu': lambda x, alpha: F.elu(x, alpha, inplace=True),
    'mish': lambda x: F.mish(x),
    'softplus': lambda x, beta, threshold: F.softplus(x, beta, threshold),
    'prelu': lambda x, weight: F.prelu(x, weight) if x.dim() != 2 else _prelu_rows(x, weight),
}

_BINARY = {'add': torch.add, 'sub': torch.sub, 'mul': torch.mul, 'div': torch.div}

# Activations that can read one tensor and write another in one pass: f(src, dst, *params).
_OUT_ACTIVATIONS: dict[str, Callable[..., Any]] = {
    'relu': lambda src, dst: torch.clamp(src, min=0, out=dst),
    'hardtanh': lambda src, dst, lo, hi: torch.clamp(src, lo, hi, out=dst),
    'clamp': lambda src, dst, lo, hi: torch.clamp(src, lo, hi, out=dst),
    'sigmoid': lambda src, dst: torch.sigmoid(src, out=dst),
    'tanh': lambda src, dst: torch.tanh(src, out=dst),
}


def _prelu_rows(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    # F.prelu treats dim 1 as channels; rows (n, C) have channels in dim 1 already.
    return torch.where(x >= 0, x, x * weight.view(1, -1))


def epilogue_ref(x: torch.Tensor, steps: Sequence[Any], operands: dict,
                 index: torch.Tensor | None, out: torch.Tensor | None = None) -> torch.Tensor:
    """
    Apply pointwise ``steps`` to rows ``x`` in plain torch: the reference of the epilogue.

    ``x`` (n, C) rows; ``steps`` the epilogue (``steps.Step``); ``operands`` maps a value id
    to its cache ``(P' + 3, C')``, read at ``index`` int64 (n,) (all rows in order when None)
    or broadcast when it has a single position; ``out`` (n, C) or None. The result is written
    to ``out`` when given, else over ``x``, and returned.
    """
    dst = x if out is None else out
    src = x
    for step in steps:
        kind = step.kind
        if kind == 'act':
            fn = _OUT_ACTIVATIONS.get(step.op)
            if fn is not None:
                fn(src, dst, *step.params)
            else:
                if src is not dst:
                    dst.copy_(src)
                result = ACTIVATIONS[step.op](dst, *step.params)
                if result.data_ptr() != dst.data_ptr():
                    dst.copy_(result)
        elif kind == 'affine':
            scale, shift = step.const
            torch.addcmul(shift, src, scale, out=dst)
        elif kind == 'scalar':
            if step.reverse:  # const (op) x
                if step.op == 'sub':
                    torch.mul(src, -1.0, out=dst).add_(step.const)
                else:
                    torch.reciprocal(src, out=dst).mul_(step.const)
            else:
                _BINARY[step.op](src, step.const, out=dst)
        else:  # binary
            if step.operand is not None:
                other = _rows_at(operands[step.operand], index)
            else:
                other = _rows_at(step.const, index, padded=False)
            if step.reverse:
                _BINARY[step.op](other, src, out=dst)
            else:
                _BINARY[step.op](src, other, out=dst)
        src = dst
    if src is not dst:
        dst.copy_(src)
    return dst


def _rows_at(src: torch.Tensor, index: torch.Tensor | None, padded: bool = True) -> torch.Tensor:
    """Rows of an operand at ``index``: broadcast for single-position tensors."""
    positions = src.shape[0] - (3 if padded else 0)
    if positions == 1:
        return src[:1]
    if index is None:
        return src[:positions]
    return src.index_select(0, index)
