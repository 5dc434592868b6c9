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
One converter per TFLite operator, and :data:`CONVERTERS`, the table from operator to converter.

A converter is called as ``convert(ctx, sink, inputs, outputs, options)`` and returns one
result per output tensor: an fx node of ``sink`` (the trunk or the tail graph), or a tensor
when ``sink`` evaluates eagerly (an operator on constants only, folded at import). ``inputs``
are the importer's values (``None`` for an omitted optional input), ``outputs`` the reader's
output tensors, ``options`` the operator's builtin options table (or a custom operator's raw
option bytes). ``ctx`` is the running importer; a converter uses its ``use`` (a value as an
argument of ``sink`` in a layout), ``layout``, ``node_name``, ``error``, ``trunk``, ``name``
(the model's), ``op_index`` and ``opname``.

Where TF's semantics differ from PyTorch's defaults, the converter reproduces TF's: SAME
padding, the resize flags, NHWC weight layouts, fused activations.
"""

from __future__ import annotations

import dataclasses
import operator
from typing import Callable

import numpy as np
from sparse_perception.engine.ops import argmax, depth_to_space
from sparse_perception.models.tflite.reader import INTEGER_TYPES, SMALL_INT_RANGES
from sparse_perception.models.tflite.reader import UnsupportedOperatorError
import torch
from torch import fx, nn
import torch.nn.functional as F

# Fused activation function codes -> the module that applies them. The TFLite kernels clamp to
# an activation range and so ignore TANH (4) and SIGN_BIT (5) when fused; so does the importer.
_FUSED = {
    0: None,
    1: lambda: nn.ReLU(),
    2: lambda: nn.Hardtanh(-1.0, 1.0),
    3: lambda: nn.ReLU6(),
    4: None,
    5: None,
}
_FUSED_NAMES = {1: 'relu', 2: 'relu_n1_to_1', 3: 'relu6'}

# TfLitePadding, the enum the custom operators' options structs hold (not the schema's Padding).
_TFLITE_PADDING_SAME, _TFLITE_PADDING_VALID = 1, 2

_ACTIVATIONS = {
    'RELU': lambda opts: nn.ReLU(),
    'RELU6': lambda opts: nn.ReLU6(),
    'RELU_N1_TO_1': lambda opts: nn.Hardtanh(-1.0, 1.0),
    'HARD_SWISH': lambda opts: nn.Hardswish(),
    'LOGISTIC': lambda opts: nn.Sigmoid(),
    'TANH': lambda opts: nn.Tanh(),
    'LEAKY_RELU': lambda opts: nn.LeakyReLU(float(opts.Alpha())),
    'GELU': lambda opts: nn.GELU(approximate='tanh' if opts and opts.Approximate() else 'none'),
}


def squared_difference(a, b):
    """Return ``(a - b) ** 2`` elementwise, with broadcasting (TFLite SQUARED_DIFFERENCE)."""
    difference = a - b
    return difference * difference


_ELEMENTWISE_FUNCTIONS: dict[str, Callable] = {
    'ADD': operator.add,
    'SUB': operator.sub,
    'MUL': operator.mul,
    'MAXIMUM': torch.maximum,
    'MINIMUM': torch.minimum,
    'SQUARED_DIFFERENCE': squared_difference,
    'POW': torch.pow,
}
_SCALAR_OK = {operator.add, operator.sub, operator.mul, squared_difference, torch.pow}

_UNARY_FUNCTIONS: dict[str, Callable] = {
    'SQRT': torch.sqrt, 'RSQRT': torch.rsqrt, 'EXP': torch.exp, 'LOG': torch.log,
    'ABS': torch.abs, 'NEG': torch.neg, 'SQUARE': torch.square, 'FLOOR': torch.floor,
    'CEIL': torch.ceil, 'SIN': torch.sin, 'COS': torch.cos,
}

_REDUCERS = {'MEAN': torch.mean, 'SUM': torch.sum, 'REDUCE_MAX': torch.amax,
             'REDUCE_MIN': torch.amin}


def per_channel(tensor: torch.Tensor) -> bool:
    """Whether a constant broadcasts over a 4-D NHWC map per channel (all but the last dim 1)."""
    return tensor.dim() <= 4 and all(d == 1 for d in tensor.shape[:-1])


# ----------------------------------------------------------------------------- shared steps
def _fused(ctx, sink, result, options):
    code = options.FusedActivationFunction() if options is not None and hasattr(
        options, 'FusedActivationFunction') else 0
    if code not in _FUSED:
        raise UnsupportedOperatorError(
            f'{ctx.name}: operator #{ctx.op_index} {ctx.opname} has fused activation '
            f'code {code}, which the importer does not handle')
    if _FUSED[code] is None:
        return result
    return sink.module(ctx.node_name(_FUSED_NAMES[code]), _FUSED[code](), result)


def _spatial(ctx, sink, value, emit: Callable):
    """Run an NCHW-only emitter on ``value``, converting from and to the TF layout in tail."""
    x = ctx.use(value, sink, 'nchw' if sink is ctx.trunk else 'tf')
    if sink is ctx.trunk:
        return emit(x)
    x = sink.method('permute', x, 0, 3, 1, 2)
    return sink.method('permute', emit(x), 0, 2, 3, 1)


def _same_pads(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TF SAME padding (before, after) along one axis; the extra pixel goes after."""
    effective = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def _conv_out(in_hw, kernel, stride, dilation, padding_code) -> tuple[int, int]:
    out = []
    for size, k, s, d in zip(in_hw, kernel, stride, dilation):
        if padding_code == 0:
            out.append(-(-size // s))
        else:
            out.append((size - (k - 1) * d - 1) // s + 1)
    return tuple(out)


# ----------------------------------------------------------------------------- convolutions
def _conv_padding(ctx, sink, x, options, in_hw, kernel_hw, dilation_hw):
    stride_hw = (options.StrideH(), options.StrideW())
    if options.Padding() == 0:  # SAME
        pads = [_same_pads(in_hw[i], kernel_hw[i], stride_hw[i], dilation_hw[i])
                for i in range(2)]
    else:
        pads = [(0, 0), (0, 0)]
    (top, bottom), (left, right) = pads
    if top == bottom and left == right:
        return x, (top, left)
    return sink.module(ctx.node_name('pad'), nn.ZeroPad2d((left, right, top, bottom)), x), (0, 0)


def conv_2d(ctx, sink, inputs, outputs, options):
    x, weight, bias = (inputs + [None])[:3]
    if not weight.is_const:
        raise UnsupportedOperatorError(
            f'{ctx.name}: CONV_2D #{ctx.op_index} has non-constant weights')
    w = weight.const.permute(0, 3, 1, 2).contiguous()  # OHWI -> OIHW
    out_ch, in_per_group, kh, kw = w.shape
    in_ch = x.shape[3]
    if in_ch % in_per_group:
        raise ctx.error(f'CONV_2D #{ctx.op_index}: {in_ch} input channels do not split '
                        f'into groups of {in_per_group}')
    dilation = (options.DilationHFactor(), options.DilationWFactor())
    conv = nn.Conv2d(in_ch, out_ch, (kh, kw), (options.StrideH(), options.StrideW()),
                     dilation=dilation, groups=in_ch // in_per_group, bias=bias is not None)
    return [_conv_like(ctx, sink, x, conv, w, bias, options, (kh, kw), dilation, 'conv',
                       outputs[0])]


def depthwise_conv_2d(ctx, sink, inputs, outputs, options):
    x, weight, bias = (inputs + [None])[:3]
    if not weight.is_const:
        raise UnsupportedOperatorError(
            f'{ctx.name}: DEPTHWISE_CONV_2D #{ctx.op_index} has non-constant weights')
    _, kh, kw, out_ch = weight.const.shape
    in_ch = x.shape[3]
    w = weight.const[0].permute(2, 0, 1).unsqueeze(1).contiguous()  # 1HWC -> C1HW
    dilation = (options.DilationHFactor(), options.DilationWFactor())
    conv = nn.Conv2d(in_ch, out_ch, (kh, kw), (options.StrideH(), options.StrideW()),
                     dilation=dilation, groups=in_ch, bias=bias is not None)
    return [_conv_like(ctx, sink, x, conv, w, bias, options, (kh, kw), dilation, 'dwconv',
                       outputs[0])]


def _conv_like(ctx, sink, x, conv, w, bias, options, kernel, dilation, label, out):
    with torch.no_grad():
        conv.weight.copy_(w)
        if bias is not None:
            conv.bias.copy_(bias.const.reshape(-1).float())
    out_hw = out.shape[1:3]

    def emit(node):
        node, padding = _conv_padding(ctx, sink, node, options, x.shape[1:3], kernel, dilation)
        conv.padding = padding
        node = sink.module(ctx.node_name(label), conv, node)
        return _fused(ctx, sink, node, options)
    result = _spatial(ctx, sink, x, emit)
    expected = _conv_out(x.shape[1:3], kernel, (options.StrideH(), options.StrideW()),
                         dilation, options.Padding())
    if tuple(expected) != tuple(out_hw):
        raise ctx.error(f'{label} #{ctx.op_index}: computed output size {expected}, the '
                        f'model records {tuple(out_hw)}')
    return result


def transpose_conv(ctx, sink, inputs, outputs, options):
    shape, weight, x = inputs[:3]
    bias = inputs[3] if len(inputs) > 3 else None
    return [_transpose_conv(ctx, sink, x, weight, bias, (options.StrideH(), options.StrideW()),
                            options.Padding() == 0, outputs[0], options)]


def transpose_conv_bias(ctx, sink, inputs, outputs, options):
    """
    Import MediaPipe's Convolution2DTransposeBias: TRANSPOSE_CONV with a bias input.

    Inputs are (data, weights OHWI, bias); the options are a TfLiteTransposeConvParams
    struct (int32 padding as TfLitePadding, stride_w, stride_h). The output is
    ``stride * (in - 1) + kernel - pad`` per axis, where SAME pads
    ``pad = max(0, kernel - (in - 1) % stride - 1)`` and crops ``pad // 2`` before (the
    MediaPipe kernel's arithmetic); VALID crops nothing.
    """
    if len(inputs) != 3 or any(v is None for v in inputs):
        raise UnsupportedOperatorError(
            f'{ctx.name}: {ctx.opname} #{ctx.op_index} expects 3 inputs (data, weights, '
            f'bias), got {len(inputs)}')
    x, weight, bias = inputs
    if not isinstance(options, bytes) or len(options) < 12:
        raise ctx.error(f'{ctx.opname} #{ctx.op_index}: expected 12 bytes of options '
                        '(padding, stride_w, stride_h), got '
                        f'{0 if options is None else len(options)}')
    padding, stride_w, stride_h = np.frombuffer(options[:12], '<i4').tolist()
    if padding not in (_TFLITE_PADDING_SAME, _TFLITE_PADDING_VALID) or stride_w < 1 or \
            stride_h < 1:
        raise ctx.error(f'{ctx.opname} #{ctx.op_index}: options padding={padding}, '
                        f'strides=({stride_h}, {stride_w}) are not valid')
    kernel = weight.shape[1:3]
    expected = []
    for size, k, stride in zip(x.shape[1:3], kernel, (stride_h, stride_w)):
        pad = max(0, k - (size - 1) % stride - 1) if padding == _TFLITE_PADDING_SAME else 0
        expected.append(stride * (size - 1) + k - pad)
    if tuple(expected) != tuple(outputs[0].shape[1:3]):
        raise ctx.error(f'{ctx.opname} #{ctx.op_index}: the model records an output of '
                        f'{tuple(outputs[0].shape[1:3])}, the operator computes '
                        f'{tuple(expected)}')
    return [_transpose_conv(ctx, sink, x, weight, bias, (stride_h, stride_w),
                            padding == _TFLITE_PADDING_SAME, outputs[0], None)]


def _transpose_conv(ctx, sink, x, weight, bias, stride, same: bool, out, options):
    """Emit a transposed convolution cropped to ``out`` (SAME crops the odd pixel after)."""
    if not weight.is_const:
        raise UnsupportedOperatorError(
            f'{ctx.name}: {ctx.opname} #{ctx.op_index} has non-constant weights')
    w = weight.const.permute(3, 0, 1, 2).contiguous()  # OHWI -> IOHW
    in_ch, out_ch, kh, kw = w.shape
    out_hw = out.shape[1:3]
    crops = []
    for i, k in enumerate((kh, kw)):
        full = (x.shape[1 + i] - 1) * stride[i] + k
        total = full - out_hw[i]
        if total < 0:
            raise UnsupportedOperatorError(
                f'{ctx.name}: {ctx.opname} #{ctx.op_index} asks for an output larger '
                'than the full transposed convolution')
        before = total // 2 if same else 0
        crops.append((before, total - before))
    conv = nn.ConvTranspose2d(in_ch, out_ch, (kh, kw), stride,
                              padding=(min(crops[0]), min(crops[1])), bias=bias is not None)
    with torch.no_grad():
        conv.weight.copy_(w)
        if bias is not None:
            conv.bias.copy_(bias.const.reshape(-1).float())
    extra = [c[0] - min(c) for c in crops], [c[1] - min(c) for c in crops]

    def emit(node):
        node = sink.module(ctx.node_name('tconv'), conv, node)
        (top, left), (bottom, right) = extra
        if top or left or bottom or right:  # uneven crop: negative padding cuts
            node = sink.fn(F.pad, node, (-left, -right, -top, -bottom))
        return _fused(ctx, sink, node, options)
    return _spatial(ctx, sink, x, emit)


def depth_to_space_op(ctx, sink, inputs, outputs, options):
    block = int(options.BlockSize())
    if block < 1 or inputs[0].shape[3] % (block * block):
        raise ctx.error(f'DEPTH_TO_SPACE #{ctx.op_index}: {inputs[0].shape[3]} channels '
                        f'do not split into blocks of {block}x{block}')
    return [_spatial(ctx, sink, inputs[0], lambda node: sink.fn(depth_to_space, node, block))]


def densify_op(ctx, sink, inputs, outputs, options):
    # Sparse constants are expanded when the tensors are read; DENSIFY passes them on.
    if not inputs[0].is_const:
        raise UnsupportedOperatorError(
            f'{ctx.name}: DENSIFY #{ctx.op_index} reads a non-constant tensor')
    return [inputs[0].const]


# ---------------------------------------------------------------------------------- pooling
def average_pool_2d(ctx, sink, inputs, outputs, options):
    return [_pool(ctx, sink, inputs[0], outputs[0], options, average=True)]


def max_pool_2d(ctx, sink, inputs, outputs, options):
    return [_pool(ctx, sink, inputs[0], outputs[0], options, average=False)]


def _pool(ctx, sink, x, out, options, average: bool):
    kernel = (options.FilterHeight(), options.FilterWidth())
    stride = (options.StrideH(), options.StrideW())
    in_hw = x.shape[1:3]
    if average and tuple(out.shape[1:3]) == (1, 1) and tuple(kernel) == tuple(in_hw):
        def emit_global(node):  # a global average pool: the mean over H and W
            node = sink.fn(torch.mean, node, dim=(2, 3), keepdim=True)
            return _fused(ctx, sink, node, options)
        return _spatial(ctx, sink, x, emit_global)
    if options.Padding() == 0:
        pads = [_same_pads(in_hw[i], kernel[i], stride[i], 1) for i in range(2)]
    else:
        pads = [(0, 0), (0, 0)]
    (top, bottom), (left, right) = pads
    symmetric = top == bottom and left == right and top <= kernel[0] // 2 \
        and left <= kernel[1] // 2

    def emit(node):
        if average:
            if not symmetric:
                raise UnsupportedOperatorError(
                    f'{ctx.name}: AVERAGE_POOL_2D #{ctx.op_index} needs asymmetric SAME '
                    f'padding {pads}, which the importer does not handle')
            layer = nn.AvgPool2d(kernel, stride, padding=(top, left), ceil_mode=False,
                                 count_include_pad=False)
            node = sink.module(ctx.node_name('avgpool'), layer, node)
        else:
            padding = (top, left)
            if not symmetric:
                node = sink.module(ctx.node_name('pad'), nn.ConstantPad2d(
                    (left, right, top, bottom), float('-inf')), node)
                padding = (0, 0)
            node = sink.module(ctx.node_name('maxpool'), nn.MaxPool2d(kernel, stride, padding),
                               node)
        return _fused(ctx, sink, node, options)
    return _spatial(ctx, sink, x, emit)


def reduce(ctx, sink, inputs, outputs, options):
    x, axes = inputs[:2]
    axes = tuple(sorted({int(a) % len(x.shape) for a in axes.const.reshape(-1).tolist()}))
    keep = bool(options.KeepDims()) if options is not None else False
    reducer = _REDUCERS[ctx.opname]
    if sink is ctx.trunk:  # only a mean over H and W with keep_dims gets here
        node = ctx.use(x, sink, 'nchw')
        return [sink.fn(torch.mean, node, dim=(2, 3), keepdim=True)]
    return [sink.fn(reducer, ctx.use(x, sink, 'tf'), dim=axes, keepdim=keep)]


# --------------------------------------------------------------------------------- resizing
def resize_bilinear(ctx, sink, inputs, outputs, options):
    return [_resize(ctx, sink, inputs[0], outputs[0], options, 'bilinear')]


def resize_nearest_neighbor(ctx, sink, inputs, outputs, options):
    return [_resize(ctx, sink, inputs[0], outputs[0], options, 'nearest')]


def _resize(ctx, sink, x, out, options, mode: str):
    size = tuple(out.shape[1:3])
    in_hw = tuple(x.shape[1:3])
    align = bool(options.AlignCorners())
    half = bool(options.HalfPixelCenters())
    if size == in_hw:  # every TF resize mode is the identity then
        return ctx.use(x, sink, ctx.layout(sink))

    def emit(node):
        if mode == 'bilinear':
            if align:
                return sink.fn(F.interpolate, node, size=size, mode='bilinear',
                               align_corners=True)
            if half:
                return sink.fn(F.interpolate, node, size=size, mode='bilinear',
                               align_corners=False)
            # Legacy TF sampling (src = dst * in / out, no half-pixel offset): replicate
            # the last row and column and sample them with align_corners, then cut.
            node = sink.fn(F.pad, node, (0, 1, 0, 1), mode='replicate')
            node = sink.fn(F.interpolate, node, size=(size[0] + 1, size[1] + 1),
                           mode='bilinear', align_corners=True)
            return sink.fn(F.pad, node, (0, -1, 0, -1))
        if align:
            raise UnsupportedOperatorError(
                f'{ctx.name}: RESIZE_NEAREST_NEIGHBOR #{ctx.op_index} uses align_corners, '
                'which the importer does not handle')
        return sink.fn(F.interpolate, node, size=size,
                       mode='nearest-exact' if half else 'nearest')
    return _spatial(ctx, sink, x, emit)


# ------------------------------------------------------------------ padding and concatenation
def pad(ctx, sink, inputs, outputs, options):
    return _pad(ctx, sink, inputs[0], inputs[1], 0.0)


def padv2(ctx, sink, inputs, outputs, options):
    value = 0.0
    if len(inputs) > 2 and inputs[2] is not None:
        value = float(inputs[2].const.reshape(-1)[0])
    return _pad(ctx, sink, inputs[0], inputs[1], value)


def _pad(ctx, sink, x, paddings, value):
    pads = [tuple(int(p) for p in row) for row in paddings.const.reshape(-1, 2).tolist()]
    if sink is ctx.trunk:
        if pads[0] != (0, 0) or pads[3] != (0, 0):
            raise UnsupportedOperatorError(
                f'{ctx.name}: PAD #{ctx.op_index} pads the batch or channel axis')
        (top, bottom), (left, right) = pads[1], pads[2]
        layer = nn.ZeroPad2d((left, right, top, bottom)) if value == 0 else \
            nn.ConstantPad2d((left, right, top, bottom), value)
        return [sink.module(ctx.node_name('pad'), layer, ctx.use(x, sink, 'nchw'))]
    flat = []
    for before, after in reversed(pads):
        flat += [before, after]
    return [sink.fn(F.pad, ctx.use(x, sink, 'tf'), tuple(flat), value=value)]


def concatenation(ctx, sink, inputs, outputs, options):
    rank = len(outputs[0].shape)
    axis = options.Axis() % rank
    layout = ctx.layout(sink)
    if layout == 'nchw':
        axis = {0: 0, 1: 2, 2: 3, 3: 1}[axis]
    parts = [ctx.use(v, sink, layout) for v in inputs]
    if sink.eager:
        parts = [p if torch.is_tensor(p) else torch.tensor(p) for p in parts]
    # The TFLite kernel ignores a fused activation on CONCATENATION (measured with
    # ai-edge-litert); so does the importer.
    return [sink.fn(torch.cat, parts, dim=axis)]


# ------------------------------------------------------------------------------ elementwise
def activation(ctx, sink, inputs, outputs, options):
    layer = _ACTIVATIONS[ctx.opname](options)
    x = ctx.use(inputs[0], sink, ctx.layout(sink))
    return [sink.module(ctx.node_name(ctx.opname.lower()), layer, x)]


def prelu(ctx, sink, inputs, outputs, options):
    x, alpha = inputs
    channels = x.shape[-1]
    if not alpha.is_const or not per_channel(alpha.const) or (
            alpha.const.numel() not in (1, channels)):
        raise UnsupportedOperatorError(
            f'{ctx.name}: PRELU #{ctx.op_index} has a non per-channel alpha of shape '
            f'{tuple(alpha.shape)}')
    layer = nn.PReLU(alpha.const.numel())
    with torch.no_grad():
        layer.weight.copy_(alpha.const.reshape(-1))
    name = ctx.node_name('prelu')
    return [_spatial(ctx, sink, x, lambda node: sink.module(name, layer, node))]


def quantize(ctx, sink, inputs, outputs, options):
    return [ctx.use(inputs[0], sink, ctx.layout(sink))]  # real values stay real


def dequantize(ctx, sink, inputs, outputs, options):
    x = ctx.use(inputs[0], sink, ctx.layout(sink))
    if sink.eager and torch.is_tensor(x):
        return [x.float()]  # float16 weights widened
    return [x]


def _elementwise_args(ctx, sink, inputs, scalars: bool = True):
    """Arguments of an elementwise op; constants as Python scalars where ``scalars``."""
    layout = ctx.layout(sink)
    args = []
    for v in inputs:
        if v.is_const and sink is ctx.trunk:
            c = v.const.reshape(-1)
            args.append(c.item() if c.numel() == 1 and scalars else
                        sink.constant(c.reshape(1, -1, 1, 1).float(), ctx.node_name('c')))
        elif v.is_const and not sink.eager:
            others = max(len(o.shape) for o in inputs if not o.is_const)
            args.append(v.const.reshape(-1)[0].item()
                        if scalars and v.const.numel() == 1 and v.const.dim() <= others
                        else sink.constant(v.const, ctx.node_name('c')))
        else:
            args.append(ctx.use(v, sink, layout))
    return args


def elementwise(ctx, sink, inputs, outputs, options):
    a, b = inputs[:2]
    opname = ctx.opname
    if opname == 'SUB' and b.is_const and not sink.eager:
        # x - c as x + (-c): the trunk then holds one elementwise kind fewer.
        opname, b = 'ADD', dataclasses.replace(b, const=-b.const)
    function = _ELEMENTWISE_FUNCTIONS[opname]
    a, b = _elementwise_args(ctx, sink, [a, b], scalars=function in _SCALAR_OK)
    return [_fused(ctx, sink, sink.fn(function, a, b), options)]


def div(ctx, sink, inputs, outputs, options):
    a, b = inputs[:2]
    if outputs[0].type_code in INTEGER_TYPES:
        a, b = _elementwise_args(ctx, sink, [a, b])
        return [_fused(ctx, sink, sink.fn(torch.div, a, b, rounding_mode='trunc'), options)]
    if b.is_const and not sink.eager:  # x / c as x * (1 / c)
        b = dataclasses.replace(b, const=1.0 / b.const.float())
        a, b = _elementwise_args(ctx, sink, [a, b])
        return [_fused(ctx, sink, sink.fn(operator.mul, a, b), options)]
    a, b = _elementwise_args(ctx, sink, [a, b])
    return [_fused(ctx, sink, sink.fn(operator.truediv, a, b), options)]


def floor_div(ctx, sink, inputs, outputs, options):
    a, b = _elementwise_args(ctx, sink, inputs[:2])
    return [sink.fn(torch.div, a, b, rounding_mode='floor')]


def floor_mod(ctx, sink, inputs, outputs, options):
    a, b = _elementwise_args(ctx, sink, inputs[:2])
    return [sink.fn(torch.remainder, a, b)]


def unary(ctx, sink, inputs, outputs, options):
    x = ctx.use(inputs[0], sink, ctx.layout(sink))
    return [sink.fn(_UNARY_FUNCTIONS[ctx.opname], x)]


def cast(ctx, sink, inputs, outputs, options):
    source, target = inputs[0].type_code, outputs[0].type_code
    if sink is ctx.trunk:
        return [ctx.use(inputs[0], sink, 'nchw')]
    x = ctx.use(inputs[0], sink, 'tf')
    if source in (0, 1, 10) and target in SMALL_INT_RANGES:
        x = sink.fn(torch.trunc, x)  # float -> small integer, which stays held as a float
    return [sink.method('to', x, outputs[0].torch_dtype())]


# ------------------------------------------------------------- shape and indexing (the tail)
def reshape(ctx, sink, inputs, outputs, options):
    x = ctx.use(inputs[0], sink, 'tf')
    return [sink.fn(torch.reshape, x, tuple(outputs[0].shape))]


def transpose(ctx, sink, inputs, outputs, options):
    x = ctx.use(inputs[0], sink, 'tf')
    perm = tuple(int(p) for p in inputs[1].const.reshape(-1).tolist())
    return [sink.method('permute', x, *perm)]


def softmax(ctx, sink, inputs, outputs, options):
    x = ctx.use(inputs[0], sink, 'tf')
    beta = float(options.Beta()) if options is not None else 1.0
    if beta != 1.0:
        x = sink.fn(operator.mul, x, beta)
    return [sink.fn(torch.softmax, x, dim=-1)]


def log_softmax(ctx, sink, inputs, outputs, options):
    return [sink.fn(torch.log_softmax, ctx.use(inputs[0], sink, 'tf'), dim=-1)]


def fully_connected(ctx, sink, inputs, outputs, options):
    x, weight, bias = (inputs + [None])[:3]
    if not weight.is_const:
        raise UnsupportedOperatorError(
            f'{ctx.name}: FULLY_CONNECTED #{ctx.op_index} has non-constant weights')
    out_features, in_features = weight.const.shape
    layer = nn.Linear(in_features, out_features, bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(weight.const)
        if bias is not None:
            layer.bias.copy_(bias.const.reshape(-1).float())
    node = sink.fn(torch.reshape, ctx.use(x, sink, 'tf'), (-1, in_features))
    node = sink.module(ctx.node_name('linear'), layer, node)
    node = sink.fn(torch.reshape, node, tuple(outputs[0].shape))
    return [_fused(ctx, sink, node, options)]


def arg_max(ctx, sink, inputs, outputs, options):
    return [_arg(ctx, sink, inputs, argmax)]


def arg_min(ctx, sink, inputs, outputs, options):
    return [_arg(ctx, sink, inputs, torch.argmin)]


def _arg(ctx, sink, inputs, fn):
    x = ctx.use(inputs[0], sink, 'tf')
    axis = int(inputs[1].const.reshape(-1)[0]) % len(inputs[0].shape)
    return sink.fn(fn, x, dim=axis)


def gather(ctx, sink, inputs, outputs, options):
    params, indices = inputs[:2]
    axis = options.Axis() % len(params.shape) if options is not None else 0
    if options is not None and options.BatchDims():
        raise UnsupportedOperatorError(
            f'{ctx.name}: GATHER #{ctx.op_index} with batch_dims is not supported')
    x = ctx.use(params, sink, 'tf')
    index = ctx.use(indices, sink, 'tf')
    key = (slice(None),) * axis + (index,)
    return [sink.fn(operator.getitem, x, key)]


def gather_nd(ctx, sink, inputs, outputs, options):
    params, indices = inputs[:2]
    x = ctx.use(params, sink, 'tf')
    index = ctx.use(indices, sink, 'tf')
    depth = indices.shape[-1]
    parts = tuple(sink.fn(operator.getitem, index, (Ellipsis, k)) for k in range(depth))
    return [sink.fn(operator.getitem, x, parts)]


def pack(ctx, sink, inputs, outputs, options):
    parts = [ctx.use(v, sink, 'tf') for v in inputs]
    if sink.eager:
        parts = [p if torch.is_tensor(p) else torch.tensor(p) for p in parts]
    else:
        parts = [p if isinstance(p, fx.Node) else
                 sink.constant(torch.as_tensor(p), ctx.node_name('c')) for p in parts]
    return [sink.fn(torch.stack, parts, dim=options.Axis() % len(outputs[0].shape))]


def unpack(ctx, sink, inputs, outputs, options):
    x = ctx.use(inputs[0], sink, 'tf')
    axis = options.Axis() % len(inputs[0].shape)
    parts = sink.fn(torch.unbind, x, dim=axis)
    return [sink.fn(operator.getitem, parts, k) for k in range(len(outputs))]


def split(ctx, sink, inputs, outputs, options):
    axis_value, x_value = inputs[:2]
    axis = int(axis_value.const.reshape(-1)[0]) % len(x_value.shape)
    sizes = [t.shape[axis] for t in outputs]
    parts = sink.fn(torch.split, ctx.use(x_value, sink, 'tf'), sizes, dim=axis)
    return [sink.fn(operator.getitem, parts, k) for k in range(len(outputs))]


def split_v(ctx, sink, inputs, outputs, options):
    x_value, _, axis_value = inputs[:3]
    axis = int(axis_value.const.reshape(-1)[0]) % len(x_value.shape)
    sizes = [t.shape[axis] for t in outputs]
    parts = sink.fn(torch.split, ctx.use(x_value, sink, 'tf'), sizes, dim=axis)
    return [sink.fn(operator.getitem, parts, k) for k in range(len(outputs))]


def slice_op(ctx, sink, inputs, outputs, options):
    x_value, begin, size = inputs[:3]
    begin = [int(b) for b in begin.const.reshape(-1).tolist()]
    key = tuple(slice(b, b + n) for b, n in zip(begin, outputs[0].shape))
    return [sink.fn(operator.getitem, ctx.use(x_value, sink, 'tf'), key)]


def strided_slice(ctx, sink, inputs, outputs, options):
    x_value, begin, end, strides = inputs[:4]
    if options.EllipsisMask() or options.NewAxisMask() or (
            hasattr(options, 'Offset') and options.Offset()):
        raise UnsupportedOperatorError(
            f'{ctx.name}: STRIDED_SLICE #{ctx.op_index} uses ellipsis, new-axis or offset '
            'masks, which the importer does not handle')
    begin = begin.const.reshape(-1).tolist()
    end = end.const.reshape(-1).tolist()
    strides = strides.const.reshape(-1).tolist()
    key = []
    for axis, (b, e, s) in enumerate(zip(begin, end, strides)):
        bit = 1 << axis
        if options.ShrinkAxisMask() & bit:
            key.append(int(b))
            continue
        key.append(slice(None if options.BeginMask() & bit else int(b),
                         None if options.EndMask() & bit else int(e), int(s)))
    if any(isinstance(k, slice) and (k.step or 1) < 0 for k in key):
        raise UnsupportedOperatorError(
            f'{ctx.name}: STRIDED_SLICE #{ctx.op_index} has a negative stride')
    return [sink.fn(operator.getitem, ctx.use(x_value, sink, 'tf'), tuple(key))]


# TFLite operator name -> converter. Custom operators are keyed CUSTOM(<custom code>).
CONVERTERS: dict[str, Callable] = {
    **{name: activation for name in _ACTIVATIONS},
    **{name: unary for name in _UNARY_FUNCTIONS},
    **{name: elementwise for name in _ELEMENTWISE_FUNCTIONS},
    **{name: reduce for name in _REDUCERS},
    'CONV_2D': conv_2d,
    'DEPTHWISE_CONV_2D': depthwise_conv_2d,
    'TRANSPOSE_CONV': transpose_conv,
    # MediaPipe's transposed convolution with a bias input (selfie segmentation).
    'CUSTOM(Convolution2DTransposeBias)': transpose_conv_bias,
    'DEPTH_TO_SPACE': depth_to_space_op,
    'DENSIFY': densify_op,
    'AVERAGE_POOL_2D': average_pool_2d,
    'MAX_POOL_2D': max_pool_2d,
    'RESIZE_BILINEAR': resize_bilinear,
    'RESIZE_NEAREST_NEIGHBOR': resize_nearest_neighbor,
    'PAD': pad,
    'PADV2': padv2,
    'CONCATENATION': concatenation,
    'PRELU': prelu,
    'QUANTIZE': quantize,
    'DEQUANTIZE': dequantize,
    'DIV': div,
    'FLOOR_DIV': floor_div,
    'FLOOR_MOD': floor_mod,
    'CAST': cast,
    'RESHAPE': reshape,
    'SQUEEZE': reshape,
    'EXPAND_DIMS': reshape,
    'TRANSPOSE': transpose,
    'SOFTMAX': softmax,
    'LOG_SOFTMAX': log_softmax,
    'FULLY_CONNECTED': fully_connected,
    'ARG_MAX': arg_max,
    'ARG_MIN': arg_min,
    'GATHER': gather,
    'GATHER_ND': gather_nd,
    'PACK': pack,
    'UNPACK': unpack,
    'SPLIT': split,
    'SPLIT_V': split_v,
    'SLICE': slice_op,
    'STRIDED_SLICE': strided_slice,
}


def supported_operators() -> list[str]:
    """Return the TFLite builtin operators the importer handles, sorted."""
    return sorted(CONVERTERS)
