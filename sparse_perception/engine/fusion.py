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
Fusion: pointwise work joins the layer that produced its input.

- BatchNorm2d right after a convolution (and only used there) folds into its weights.
- A pointwise op (activation, affine map, scalar arithmetic, a binary op with another cached
  tensor such as a residual add) whose main operand is used only by it joins the producer's
  epilogue; the fused layer then runs where its last op ran, so every operand is ready.
- Otherwise the op becomes a pointwise layer of its own.
"""

from __future__ import annotations

from typing import Any, TYPE_CHECKING

from sparse_perception.engine.ir import Kind, Layer
from sparse_perception.kernels.steps import Step
import torch
from torch import fx

if TYPE_CHECKING:
    from sparse_perception.engine.lower import Lowering

# Layers whose output cannot take an epilogue: the input is the frame itself, and a global
# pool or a position-wise op (softmax, argmax) computes its output in one piece.
_NO_EPILOGUE = (Kind.INPUT, Kind.GAP, Kind.POSITIONWISE)


def fusable(lo: Lowering, v: int) -> bool:
    """Whether a pointwise step on value ``v`` can join the epilogue of its producer."""
    producer = lo.producer.get(v)
    return (producer is not None and producer.kind not in _NO_EPILOGUE
            and lo.value_uses.get(v, 0) == 1 and producer.output == v)


def extend(lo: Lowering, layer: Layer, n: fx.Node) -> None:
    """Make ``n`` the last node of ``layer``: its value is the layer's output now."""
    del lo.producer[layer.output]
    old = lo.values[layer.output]
    meta = lo.results[n]
    old.name = n.name
    old.dtype = meta.dtype
    lo.value_of[n] = layer.output
    lo.value_uses[layer.output] = lo.node_uses.get(n, 0)
    lo.producer[layer.output] = layer
    layer.names = layer.names + (lo.layer_name(n), n.name)
    layer.order = lo.node_order[n]


def pointwise(lo: Lowering, n: fx.Node, x: Any, step: Step) -> None:
    """Apply ``step`` to ``x``: in its producer's epilogue, or as a pointwise layer."""
    v = lo.main_input(n, x)
    if lo.values[v].view == 'nchw':
        lo.check_nchw_result(n)
    dtype, result = lo.values[v].dtype, lo.results[n].dtype
    if not dtype.is_floating_point:
        raise lo.unsupported(n, f'arithmetic on a {dtype} tensor (the classes of an arg-max) '
                                'is not supported')
    if result != dtype:
        raise lo.unsupported(n, f'its result is {result} where its input is {dtype} (type '
                                'promotion, e.g. by a float64 constant)')
    if step.operand is not None:
        check_operand(lo, n, v, step.operand)
    if fusable(lo, v):
        producer = lo.producer[v]
        producer.epilogue.append(step)
        extend(lo, producer, n)
        return
    out = lo.new_value(n)
    lo.emit(n, Kind.POINTWISE, [v], out, None, [step])


def batch_norm(lo: Lowering, n: fx.Node, x: Any, mean: torch.Tensor, var: torch.Tensor,
               weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float) -> None:
    """Fold an eval-mode batch norm into the convolution before it, else an affine step."""
    inv = torch.rsqrt(var.detach().double() + eps)
    scale = inv * (weight.detach().double() if weight is not None else 1.0)
    shift = (bias.detach().double() if bias is not None else 0.0) - mean.double() * scale
    v = lo.value(x)
    producer = lo.producer.get(v) if v is not None else None
    if (producer is not None and producer.kind in (Kind.CONV, Kind.CONV_TRANSPOSE)
            and not producer.epilogue and lo.value_uses.get(v, 0) == 1):
        fold_affine(producer, scale, shift)
        extend(lo, producer, n)
        return
    pointwise(lo, n, x, Step('affine', 'affine', const=(scale, shift)))


def fold_affine(layer: Layer, scale: torch.Tensor, shift: torch.Tensor) -> None:
    """Fold ``y * scale + shift`` (per output channel) into a convolution's weights."""
    a = layer.attrs
    w = a.weight
    dtype = w.dtype
    if layer.kind == Kind.CONV:
        w2 = w.double() * scale.view(-1, 1, 1, 1)
    else:  # transposed: weight (Cin, Cout/groups, kh, kw)
        g = a.groups
        cin, cout_g = w.shape[:2]
        w2 = (w.double().view(g, cin // g, cout_g, *w.shape[2:])
              * scale.view(g, 1, cout_g, 1, 1)).view_as(w)
    b = a.bias
    b2 = (b.double() * scale if b is not None else 0.0) + shift
    a.weight = w2.to(dtype)
    a.bias = torch.as_tensor(b2, dtype=torch.float64).to(dtype).expand(
        scale.shape).contiguous()


def binary(lo: Lowering, n: fx.Node, op: str, a: Any, b: Any) -> None:
    """Lower ``a op b`` as a step on one operand: a cached tensor, a constant or a scalar."""
    va, vb = lo.value(a), lo.value(b)
    if va is None and vb is None:
        raise lo.unsupported(n, 'binary op without an image tensor')
    lo.check_nchw_result(n)
    if va is not None and vb is not None:
        # The main operand has the result's size; among those, fuse into one whose
        # producer can take an epilogue (the fused layer runs at this node, so the other
        # operand is ready by then).
        size = lo.results[n].shape[1:]
        candidates = []
        for i, v in enumerate((va, vb)):
            value = lo.values[v]
            if (value.channels, value.height, value.width) == tuple(size):
                candidates.append((fusable(lo, v), lo.producer[v].order, i))
        if not candidates:
            raise lo.unsupported(n, 'both operands broadcast to a larger result')
        candidates.sort(reverse=True)
        main_is_b = candidates[0][2] == 1
        main, main_v, other_v = (b, vb, va) if main_is_b else (a, va, vb)
        check_operand(lo, n, main_v, other_v)
        step = Step('binary', op, operand=other_v, reverse=main_is_b)
        return pointwise(lo, n, main, step)
    main, const, reverse = (a, b, False) if va is not None else (b, a, True)
    if isinstance(const, (int, float)):
        if op in ('sub', 'div') and reverse:
            return pointwise(lo, n, main, Step('scalar', op, const=float(const), reverse=True))
        return pointwise(lo, n, main, Step('scalar', op, const=float(const)))
    if not isinstance(const, torch.Tensor):
        raise lo.unsupported(n, f'operand of type {type(const).__name__}')
    v = lo.value(main)
    value = lo.values[v]
    const = const.detach()
    try:
        full = torch.broadcast_to(const, (1, value.channels, value.height, value.width))
    except RuntimeError:
        raise lo.unsupported(n, f'constant of shape {tuple(const.shape)} does not '
                                'broadcast to the tensor') from None
    # Whether it varies over the positions: broadcasting aligns the last dimensions, so a 1-D
    # constant runs along the width (not the channels).
    spatial = const.dim() >= 1 and (const.shape[-1] > 1
                                    or (const.dim() >= 2 and const.shape[-2] > 1))
    rows = full[0].permute(1, 2, 0).reshape(-1, value.channels) if spatial else \
        full[0, :, 0, 0].reshape(1, -1)
    step = Step('binary', op, const=rows.contiguous(), reverse=reverse)
    return pointwise(lo, n, main, step)


def check_operand(lo: Lowering, n: fx.Node, main: int, other: int) -> None:
    """Refuse a second operand that does not match ``main`` or broadcast from 1x1."""
    a, b = lo.values[main], lo.values[other]
    if (b.height, b.width) not in ((a.height, a.width), (1, 1)) or b.view != 'nchw':
        raise lo.unsupported(n, f'operand shapes {a.height}x{a.width} and '
                                f'{b.height}x{b.width} do not match (only equal sizes '
                                'or 1x1 broadcasting are supported)')
    if b.channels not in (a.channels, 1):
        raise lo.unsupported(n, 'operands broadcast along channels')
