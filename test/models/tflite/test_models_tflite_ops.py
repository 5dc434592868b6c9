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
Operator semantics of the TFLite importer against the TFLite interpreter, one small model each.

Every case writes a tiny flatbuffer (test/tflite_writer.py), runs it in ai-edge-litert and in
the imported torch module (and in its ``torch.fx.symbolic_trace``), and compares. The cases aim
at the places where TF and PyTorch differ: SAME padding at stride 2, resize flags, transposed
convolution cropping, NHWC weight layouts, fused activations, axis conventions.
"""

import numpy as np
import pytest
from sparse_perception.models.tflite.converters import supported_operators
from sparse_perception.models.tflite.importer import import_tflite
from sparse_perception.models.tflite.reader import TFLiteImportError
from sparse_perception.models.tflite.reader import UnsupportedOperatorError
from tflite_writer import build, Op, run_reference, T
import torch
from torch import fx, nn

RNG = np.random.default_rng(1234)


def _randn(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def _nchw(array):
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    return tensor.permute(0, 3, 1, 2).float() if tensor.dim() == 4 else tensor.float()


def _i32(*values):
    array = np.array(values, np.int32)
    return T(array.shape, np.int32, data=array)


def _compare(model: bytes, feeds, *, atol=1e-4, fake_quant='none'):
    """Import ``model``, run it and its fx trace against the interpreter; return the net."""
    reference = run_reference(model, feeds)
    net = import_tflite(model, fake_quant=fake_quant, name='case.tflite')
    traced = fx.symbolic_trace(net)
    with torch.no_grad():
        outputs = net(_nchw(feeds[0]))
        traced_outputs = traced(_nchw(feeds[0]))
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    traced_outputs = traced_outputs if isinstance(traced_outputs, tuple) else (traced_outputs,)
    assert len(outputs) == len(reference)
    for ours, again, ref in zip(outputs, traced_outputs, reference):
        assert tuple(ours.shape) == ref.shape
        torch.testing.assert_close(again, ours, rtol=0, atol=0)
        if np.issubdtype(ref.dtype, np.integer) and not ours.is_floating_point():
            np.testing.assert_array_equal(ours.numpy(), ref)
        else:
            np.testing.assert_allclose(ours.numpy(), ref.astype(np.float32), rtol=1e-4,
                                       atol=atol)
    return net


def _unary_model(op: Op, in_shape, out_shape, extra=()):
    """Input tensor 0, output tensor 1, constants after: op reads [0, *extra] -> [1]."""
    return [T(in_shape), T(out_shape)] + list(extra)


# ------------------------------------------------------------------------------ convolutions
CONV_CASES = [
    # (input HxW, kernel, stride, dilation, padding 0=SAME 1=VALID, fused activation)
    ((9, 10), 3, 2, 1, 0, 3),   # SAME at stride 2 on an even width: asymmetric padding
    ((8, 8), 3, 2, 1, 0, 0),
    ((7, 9), 5, 1, 2, 0, 1),    # dilation
    ((9, 9), 3, 2, 1, 1, 2),    # VALID, relu_n1_to_1
    ((6, 7), 1, 1, 1, 0, 4),    # 1x1; a fused TANH is ignored by the TFLite kernels
    ((10, 10), 4, 2, 1, 0, 0),  # even kernel
]


@pytest.mark.parametrize('size,kernel,stride,dilation,padding,act', CONV_CASES)
def test_conv2d(size, kernel, stride, dilation, padding, act):
    conv = _conv_model(size, kernel, stride, dilation, padding, act, depthwise=False)
    net = _compare(*conv)
    assert net.info.trunk_ops == ['CONV_2D']


@pytest.mark.parametrize('size,kernel,stride,dilation,padding,act', CONV_CASES)
def test_depthwise_conv2d(size, kernel, stride, dilation, padding, act):
    net = _compare(*_conv_model(size, kernel, stride, dilation, padding, act, depthwise=True))
    convs = [m for m in net.trunk.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 and convs[0].groups == 3 and convs[0].out_channels == 6


def _conv_model(size, kernel, stride, dilation, padding, act, depthwise):
    h, w = size
    cin, cout = 3, 6
    eff = (kernel - 1) * dilation + 1
    if padding == 0:
        oh, ow = -(-h // stride), -(-w // stride)
    else:
        oh, ow = (h - eff) // stride + 1, (w - eff) // stride + 1
    fields = {'Padding': padding, 'StrideW': stride, 'StrideH': stride,
              'FusedActivationFunction': act, 'DilationWFactor': dilation,
              'DilationHFactor': dilation}
    if depthwise:
        weight = T((1, kernel, kernel, cout), data=_randn(1, kernel, kernel, cout))
        op = Op('DEPTHWISE_CONV_2D', [0, 2, 3], [1], 'DepthwiseConv2DOptions',
                DepthMultiplier=cout // cin, **fields)
    else:
        weight = T((cout, kernel, kernel, cin), data=_randn(cout, kernel, kernel, cin))
        op = Op('CONV_2D', [0, 2, 3], [1], 'Conv2DOptions', **fields)
    tensors = [T((1, h, w, cin)), T((1, oh, ow, cout)), weight,
               T((cout,), data=_randn(cout))]
    return build(tensors, [op], [0], [1]), [_randn(1, h, w, cin)]


@pytest.mark.parametrize('size,kernel,stride,out_size,padding', [
    ((5, 5), 3, 2, (10, 10), 0),   # SAME, odd total crop: uneven
    ((5, 6), 4, 2, (10, 12), 0),   # SAME, even total crop
    ((4, 4), 3, 2, (9, 9), 1),     # VALID: the full output
    ((3, 4), 3, 1, (3, 4), 0),     # stride 1
])
def test_transpose_conv(size, kernel, stride, out_size, padding):
    h, w = size
    cin, cout = 4, 3
    tensors = [T((1, h, w, cin)), T((1, *out_size, cout)),
               T((4,), np.int32, data=np.array([1, *out_size, cout], np.int32)),
               T((cout, kernel, kernel, cin), data=_randn(cout, kernel, kernel, cin))]
    op = Op('TRANSPOSE_CONV', [2, 3, 0], [1], 'TransposeConvOptions',
            Padding=padding, StrideW=stride, StrideH=stride)
    net = _compare(build(tensors, [op], [0], [1]), [_randn(1, h, w, cin)])
    assert net.info.trunk_ops == ['TRANSPOSE_CONV']


# ----------------------------------------------------------------------------------- pooling
@pytest.mark.parametrize('name,size,kernel,stride,padding', [
    ('AVERAGE_POOL_2D', (7, 8), 3, 1, 0),
    ('AVERAGE_POOL_2D', (8, 8), 2, 2, 1),
    ('AVERAGE_POOL_2D', (6, 5), 3, 2, 0),  # SAME with odd total padding: refused
    ('AVERAGE_POOL_2D', (6, 6), (6, 6), 1, 1),  # global
    ('MAX_POOL_2D', (8, 9), 3, 2, 0),      # asymmetric SAME: padded with -inf
    ('MAX_POOL_2D', (7, 7), 3, 2, 0),
    ('MAX_POOL_2D', (8, 8), 2, 2, 1),
])
def test_pooling(name, size, kernel, stride, padding):
    kh, kw = kernel if isinstance(kernel, tuple) else (kernel, kernel)
    h, w = size
    if padding == 0:
        oh, ow = -(-h // stride), -(-w // stride)
    else:
        oh, ow = (h - kh) // stride + 1, (w - kw) // stride + 1
    tensors = [T((1, h, w, 5)), T((1, oh, ow, 5))]
    op = Op(name, [0], [1], 'Pool2DOptions', Padding=padding, StrideW=stride, StrideH=stride,
            FilterWidth=kw, FilterHeight=kh, FusedActivationFunction=0)
    model = build(tensors, [op], [0], [1])
    if name == 'AVERAGE_POOL_2D' and padding == 0 and (h % stride or w % stride) and any(
            _asymmetric(s, k, stride) for s, k in ((h, kh), (w, kw))):
        with pytest.raises(UnsupportedOperatorError, match='AVERAGE_POOL_2D.*asymmetric'):
            import_tflite(model, name='pool.tflite')
        return
    net = _compare(model, [_randn(1, h, w, 5)])
    assert net.info.trunk_ops == [name]


def _asymmetric(size, kernel, stride):
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total % 2 == 1


# ---------------------------------------------------------------------------------- resizing
@pytest.mark.parametrize('name,size,out,align,half', [
    ('RESIZE_BILINEAR', (4, 5), (8, 10), True, False),
    ('RESIZE_BILINEAR', (4, 5), (8, 10), False, True),
    ('RESIZE_BILINEAR', (4, 5), (8, 10), False, False),  # legacy TF sampling
    ('RESIZE_BILINEAR', (5, 7), (7, 3), False, True),    # non-integer ratios, down in width
    ('RESIZE_BILINEAR', (5, 7), (9, 11), True, False),
    ('RESIZE_BILINEAR', (5, 7), (7, 11), False, False),
    ('RESIZE_BILINEAR', (1, 1), (6, 6), True, False),    # image pooling broadcast
    ('RESIZE_BILINEAR', (6, 6), (6, 6), True, False),    # identity: elided
    ('RESIZE_NEAREST_NEIGHBOR', (4, 5), (8, 10), False, False),
    ('RESIZE_NEAREST_NEIGHBOR', (5, 7), (7, 10), False, False),
    ('RESIZE_NEAREST_NEIGHBOR', (5, 7), (7, 10), False, True),
])
def test_resize(name, size, out, align, half):
    options = 'ResizeBilinearOptions' if name == 'RESIZE_BILINEAR' else \
        'ResizeNearestNeighborOptions'
    tensors = [T((1, *size, 3)), T((1, *out, 3)), T((2,), np.int32, data=np.array(out, np.int32))]
    op = Op(name, [0, 2], [1], options, AlignCorners=align, HalfPixelCenters=half)
    net = _compare(build(tensors, [op], [0], [1]), [_randn(1, *size, 3)], atol=2e-5)
    assert net.info.trunk_ops == [name]


# ------------------------------------------------------------------------- concat, pad, mean
def test_concatenation_on_channels_is_trunk_and_on_width_is_tail():
    tensors = [T((1, 4, 5, 2)), T((1, 4, 5, 2)), T((1, 4, 5, 4)), T((1, 4, 10, 4))]
    ops = [Op('TANH', [0], [1]),  # a fused activation on CONCATENATION is ignored by TFLite
           Op('CONCATENATION', [0, 1], [2], 'ConcatenationOptions',
              Axis=3, FusedActivationFunction=1),
           Op('CONCATENATION', [2, 2], [3], 'ConcatenationOptions',
              Axis=-2, FusedActivationFunction=0)]
    net = _compare(build(tensors, ops, [0], [3]), [_randn(1, 4, 5, 2)])
    assert net.info.trunk_ops == ['CONCATENATION', 'TANH']
    assert net.info.tail_ops == ['CONCATENATION']


@pytest.mark.parametrize('name,value', [('PAD', None), ('PADV2', 0.5)])
def test_pad(name, value):
    pads = np.array([[0, 0], [1, 2], [0, 3], [0, 0]], np.int32)
    tensors = [T((1, 4, 5, 2)), T((1, 7, 8, 2)), T((4, 2), np.int32, data=pads)]
    inputs = [0, 2]
    if value is not None:
        tensors.append(T((), data=np.array(value, np.float32)))
        inputs.append(3)
    net = _compare(build(tensors, [Op(name, inputs, [1])], [0], [1]), [_randn(1, 4, 5, 2)])
    assert net.info.trunk_ops == [name]


@pytest.mark.parametrize('name,axes,keep,out_shape,where', [
    ('MEAN', [1, 2], True, (1, 1, 1, 4), 'trunk'),
    ('MEAN', [1, 2], False, (1, 4), 'tail'),
    ('SUM', [3], True, (1, 5, 6, 1), 'tail'),
    ('REDUCE_MAX', [-1], False, (1, 5, 6), 'tail'),
])
def test_reductions(name, axes, keep, out_shape, where):
    tensors = [T((1, 5, 6, 4)), T(out_shape),
               T((len(axes),), np.int32, data=np.array(axes, np.int32))]
    op = Op(name, [0, 2], [1], 'ReducerOptions', KeepDims=keep)
    net = _compare(build(tensors, [op], [0], [1]), [_randn(1, 5, 6, 4)])
    assert (net.info.trunk_ops if where == 'trunk' else net.info.tail_ops) == [name]


# ------------------------------------------------------------------------------- elementwise
@pytest.mark.parametrize('name,options,second,act', [
    ('ADD', 'AddOptions', 'tensor', 1),
    ('ADD', 'AddOptions', 'channel', 3),
    ('SUB', 'SubOptions', 'channel', 0),
    ('SUB', 'SubOptions', 'tensor', 0),
    ('MUL', 'MulOptions', 'tensor', 0),
    ('MUL', 'MulOptions', 'scalar', 0),
    ('MUL', 'MulOptions', 'broadcast', 0),  # squeeze-excitation style [1,1,1,C] * [1,H,W,C]
    ('DIV', 'DivOptions', 'channel', 0),
    ('DIV', 'DivOptions', 'tensor', 0),
    ('MAXIMUM', None, 'tensor', 0),
    ('MINIMUM', None, 'scalar', 0),
    ('SQUARED_DIFFERENCE', None, 'tensor', 0),
])
def test_binary(name, options, second, act):
    shape = (1, 4, 5, 3)
    tensors = [T(shape), T(shape)]
    ops = []
    if second == 'tensor':  # a second feature map computed from the input
        tensors.append(T(shape))
        ops.append(Op('LOGISTIC', [0], [2]))
    elif second == 'broadcast':
        tensors += [T((1, 1, 1, 3)), _i32(1, 2)]
        ops.append(Op('MEAN', [0, 3], [2], 'ReducerOptions', KeepDims=True))
    else:
        data = np.array(1.7, np.float32) if second == 'scalar' else _randn(3) + 3.0
        tensors.append(T(data.shape, data=data))
    fields = {'FusedActivationFunction': act} if options else {}
    ops.append(Op(name, [0, 2], [1], options, **fields))
    net = _compare(build(tensors, ops, [0], [1]), [_randn(*shape)])
    in_trunk = name in ('ADD', 'SUB', 'MUL') or (name == 'DIV' and second != 'tensor')
    assert (name in net.info.trunk_ops) is in_trunk


def test_constant_minus_tensor():
    tensors = [T((1, 3, 3, 2)), T((1, 3, 3, 2)), T((2,), data=np.array([0.5, -2], np.float32))]
    _compare(build(tensors, [Op('SUB', [2, 0], [1], 'SubOptions')], [0], [1]),
             [_randn(1, 3, 3, 2)])


@pytest.mark.parametrize('name,options,fields', [
    ('RELU', None, {}), ('RELU6', None, {}), ('RELU_N1_TO_1', None, {}),
    ('HARD_SWISH', None, {}), ('LOGISTIC', None, {}), ('TANH', None, {}),
    ('LEAKY_RELU', 'LeakyReluOptions', {'Alpha': 0.2}),
    ('GELU', 'GeluOptions', {'Approximate': False}),
    ('GELU', 'GeluOptions', {'Approximate': True}),
])
def test_activations(name, options, fields):
    shape = (1, 4, 5, 3)
    model = build([T(shape), T(shape)], [Op(name, [0], [1], options, **fields)], [0], [1])
    net = _compare(model, [_randn(*shape, scale=4.0)])
    assert net.info.trunk_ops == [name]


def test_prelu_per_channel():
    shape = (1, 4, 5, 3)
    tensors = [T(shape), T(shape), T((1, 1, 3), data=np.array([[[0.1, -0.5, 2.0]]], np.float32))]
    net = _compare(build(tensors, [Op('PRELU', [0, 2], [1])], [0], [1]), [_randn(*shape)])
    assert net.info.trunk_ops == ['PRELU']


@pytest.mark.parametrize('name', ['SQRT', 'RSQRT', 'EXP', 'LOG', 'ABS', 'NEG', 'SQUARE',
                                  'FLOOR', 'CEIL'])
def test_unary(name):
    shape = (1, 2, 7, 3)
    data = np.abs(_randn(*shape)) + 0.1
    if name in ('ABS', 'NEG', 'SQUARE', 'FLOOR', 'CEIL'):
        data = _randn(*shape, scale=3.0)
    net = _compare(build([T(shape), T(shape)], [Op(name, [0], [1])], [0], [1]), [data],
                   atol=1e-5)
    assert net.info.tail_ops == [name]


# ----------------------------------------------------------------- shapes, indexing (the tail)
def test_reshape_transpose_squeeze_expand_softmax():
    tensors = [
        T((1, 2, 3, 4)),                                                  # 0 input
        T((1, 6, 4)), T((3,), np.int32, data=np.array([1, 6, 4], np.int32)),  # 1, 2
        T((1, 4, 6)), T((3,), np.int32, data=np.array([0, 2, 1], np.int32)),  # 3, 4
        T((4, 6)),                                                         # 5 squeeze
        T((4, 1, 6)), T((), np.int32, data=np.array(1, np.int32)),         # 6, 7 expand dims
        T((4, 1, 6)),                                                      # 8 softmax
    ]
    ops = [Op('RESHAPE', [0, 2], [1], 'ReshapeOptions', NewShape=[1, 6, 4]),
           Op('TRANSPOSE', [1, 4], [3]),
           Op('SQUEEZE', [3], [5], 'SqueezeOptions', SqueezeDims=[0]),
           Op('EXPAND_DIMS', [5, 7], [6]),
           Op('SOFTMAX', [6], [8], 'SoftmaxOptions', Beta=0.7)]
    net = _compare(build(tensors, ops, [0], [8]), [_randn(1, 2, 3, 4)])
    assert net.info.trunk_ops == []


def test_fully_connected_after_global_pool():
    tensors = [T((1, 4, 4, 3)), T((1, 1, 1, 3)), _i32(1, 2),
               T((5, 3), data=_randn(5, 3)), T((5,), data=_randn(5)), T((1, 5))]
    ops = [Op('MEAN', [0, 2], [1], 'ReducerOptions', KeepDims=True),
           Op('FULLY_CONNECTED', [1, 3, 4], [5], 'FullyConnectedOptions',
              FusedActivationFunction=1)]
    net = _compare(build(tensors, ops, [0], [5]), [_randn(1, 4, 4, 3)])
    assert net.info.trunk_ops == ['MEAN'] and net.info.tail_ops == ['FULLY_CONNECTED']


@pytest.mark.parametrize('name', ['ARG_MAX', 'ARG_MIN'])
def test_arg_max_min(name):
    options = 'ArgMaxOptions' if name == 'ARG_MAX' else 'ArgMinOptions'
    tensors = [T((1, 5, 6, 7)), T((1, 5, 6), np.int64), _i32(3)]
    net = _compare(build(tensors, [Op(name, [0, 2], [1], options, OutputType=4)], [0], [1]),
                   [_randn(1, 5, 6, 7)])
    assert net.info.tail_ops == [name]


def test_gather_nd_gather_unpack_pack_split_slices():
    tensors = [
        T((1, 6, 5, 4)),                                           # 0 input
        T((3, 4)), _i32([0, 1, 2], [0, 5, 4], [0, 0, 0]),          # 1, 2: GATHER_ND
        T((3, 2)), _i32(3, 1),                                     # 3, 4: GATHER axis 1
        T((3,)), T((3,)),                                          # 5, 6: UNPACK
        T((2, 3)),                                                 # 7: PACK
        T((2, 1)), T((2, 2)), _i32(1, 2), T((), np.int32, data=np.array(1, np.int32)),
        # 8, 9, 10, 11: SPLIT_V
        T((1, 2)), _i32(1, 0), _i32(1, 2),                         # 12, 13, 14: SLICE
        T((2,)), _i32(0, 0), _i32(2, 3), _i32(1, 2),               # 15..18: STRIDED_SLICE
    ]
    ops = [
        Op('GATHER_ND', [0, 2], [1]),
        Op('GATHER', [1, 4], [3], 'GatherOptions', Axis=1, BatchDims=0),
        Op('UNPACK', [3], [5, 6], 'UnpackOptions', Num=2, Axis=1),
        Op('PACK', [6, 5], [7], 'PackOptions', ValuesCount=2, Axis=0),
        Op('SPLIT_V', [7, 10, 11], [8, 9], 'SplitVOptions', NumSplits=2),
        Op('SLICE', [9, 13, 14], [12]),
        Op('STRIDED_SLICE', [7, 16, 17, 18], [15], 'StridedSliceOptions',
           BeginMask=0, EndMask=2, EllipsisMask=0, NewAxisMask=0, ShrinkAxisMask=1),
    ]
    net = _compare(build(tensors, ops, [0], [12, 15, 8]), [_randn(1, 6, 5, 4)])
    assert net.info.trunk_ops == []


def test_cast_floor_div_floor_mod_integers():
    tensors = [T((1, 2, 5, 1)), T((1, 2, 5, 1), np.int32), T((1, 2, 5, 1), np.int32),
               T((1, 2, 5, 1), np.int32), T((), np.int32, data=np.array(3, np.int32)),
               T((1, 2, 5, 1))]
    ops = [Op('CAST', [0], [1], 'CastOptions', InDataType=0, OutDataType=2),
           Op('FLOOR_DIV', [1, 4], [2]),
           Op('FLOOR_MOD', [1, 4], [3]),
           Op('CAST', [3], [5], 'CastOptions', InDataType=2, OutDataType=0)]
    _compare(build(tensors, ops, [0], [2, 5]), [_randn(1, 2, 5, 1, scale=10.0)])


# ------------------------------------------------------------------------------- quantised
def _int8_conv_model(padding=0):
    scale_in, zero_in = 0.05, -3
    weights = RNG.integers(-127, 128, size=(8, 3, 3, 4)).astype(np.int8)
    w_scale = (RNG.uniform(0.002, 0.01, size=8)).astype(np.float32)
    bias = RNG.integers(-2000, 2000, size=8).astype(np.int32)
    tensors = [
        T((1, 8, 9, 4), np.int8, scale=[scale_in], zero_point=[zero_in]),
        T((1, 4, 5, 8), np.int8, scale=[0.03], zero_point=[5]),
        T((8, 3, 3, 4), np.int8, data=weights, scale=w_scale.tolist(), zero_point=[0] * 8),
        T((8,), np.int32, data=bias, scale=(w_scale * scale_in).tolist(), zero_point=[0] * 8),
    ]
    op = Op('CONV_2D', [0, 2, 3], [1], 'Conv2DOptions', Padding=padding, StrideW=2, StrideH=2,
            FusedActivationFunction=3, DilationWFactor=1, DilationHFactor=1)
    return build(tensors, [op], [0], [1]), scale_in, zero_in


@pytest.mark.parametrize('fake_quant', ['none', 'all'])
def test_int8_conv_dequantised_weights(fake_quant):
    model, scale_in, zero_in = _int8_conv_model()
    q_in = RNG.integers(-128, 128, size=(1, 8, 9, 4)).astype(np.int8)
    q_ref, = run_reference(model, [q_in])
    net = import_tflite(model, fake_quant=fake_quant)
    with torch.no_grad():
        out = net((_nchw(q_in) - zero_in) * scale_in)
    steps = np.abs(out.numpy() / 0.03 + 5 - q_ref.astype(np.float32))
    if fake_quant == 'all':  # rounded like the integer kernel: off by a step at ties at most
        assert steps.max() <= 1.0 and (steps > 0.5).mean() < 0.01
    else:  # plain float: off by the rounding (and saturation) of the stored output only
        clipped = np.clip(out.numpy() / 0.03 + 5, -128, 127)
        assert np.abs(clipped - q_ref).max() <= 0.5 + 1e-3


def test_float16_weights_are_widened():
    w16 = _randn(2, 1, 1, 3).astype(np.float16)
    tensors = [T((1, 3, 3, 3)), T((1, 3, 3, 2)), T((2, 1, 1, 3), np.float16, data=w16),
               T((2, 1, 1, 3)), T((2,), data=np.zeros(2, np.float32))]
    ops = [Op('DEQUANTIZE', [2], [3]),
           Op('CONV_2D', [0, 3, 4], [1], 'Conv2DOptions', Padding=0, StrideW=1, StrideH=1,
              FusedActivationFunction=0, DilationWFactor=1, DilationHFactor=1)]
    net = _compare(build(tensors, ops, [0], [1]), [_randn(1, 3, 3, 3)])
    assert net.info.trunk_ops == ['CONV_2D']  # the DEQUANTIZE was folded at import


# ---------------------------------------------------------------------------------- errors
def test_unsupported_operator_names_op_and_model():
    tensors = [T((1, 4, 4, 4)), T((1, 2, 2, 16))]
    model = build(tensors, [Op('SPACE_TO_DEPTH', [0], [1], 'SpaceToDepthOptions',
                               BlockSize=2)], [0], [1])
    with pytest.raises(UnsupportedOperatorError) as info:
        import_tflite(model, name='my_model.tflite')
    message = str(info.value)
    assert 'SPACE_TO_DEPTH' in message and 'my_model.tflite' in message
    assert 'CONV_2D' in message  # lists what is supported


def test_not_a_flatbuffer():
    with pytest.raises(TFLiteImportError, match='not a TFLite flatbuffer'):
        import_tflite(b'\x00' * 64, name='junk.bin')


def test_supported_operator_list_covers_the_common_vision_operators():
    needed = {'CONV_2D', 'DEPTHWISE_CONV_2D', 'TRANSPOSE_CONV', 'ADD', 'MUL', 'HARD_SWISH',
              'LOGISTIC', 'AVERAGE_POOL_2D', 'MAX_POOL_2D', 'MEAN', 'RESIZE_BILINEAR',
              'RESIZE_NEAREST_NEIGHBOR', 'CONCATENATION', 'PAD', 'RESHAPE', 'ARG_MAX',
              'GATHER_ND', 'QUANTIZE', 'DEQUANTIZE'}
    assert needed <= set(supported_operators())


def test_bad_arguments_are_named(tmp_path):
    model = build([T((1, 2, 2, 1)), T((1, 2, 2, 1))], [Op('RELU', [0], [1])], [0], [1])
    with pytest.raises(ValueError, match="fake_quant='some'"):
        import_tflite(model, fake_quant='some')
    from sparse_perception.models.tflite.importer import load_tflite
    with pytest.raises(TFLiteImportError, match='cannot read TFLite model'):
        load_tflite(tmp_path / 'missing.tflite')


def test_fake_quant_modes_place_rounding_where_asked():
    model, scale_in, zero_in = _int8_conv_model()
    counts = {}
    for mode in ('none', 'tail', 'all'):
        net = import_tflite(model, fake_quant=mode)
        counts[mode] = tuple(sum(type(m).__name__ == 'FakeQuantize' for m in part.modules())
                             for part in (net.trunk, net.tail))
    # 'tail' rounds the trunk's output where it enters the tail; 'all' after the conv itself.
    assert counts == {'none': (0, 0), 'tail': (0, 1), 'all': (1, 0)}


def test_spatial_operators_after_the_tail_starts_run_in_the_tail():
    # A reshape ends the trunk; a convolution, pooling and resize after it run in the tail
    # (converted to NCHW and back there), and still match the interpreter.
    weight = _randn(4, 3, 3, 3)
    tensors = [T((1, 4, 6, 3)), T((1, 6, 4, 3)), _i32(1, 6, 4, 3), T((1, 3, 2, 4)),
               T((4, 3, 3, 3), data=weight), T((1, 2, 1, 4)), T((1, 4, 2, 4)), _i32(4, 2),
               T((4,), data=_randn(4))]
    ops = [Op('RESHAPE', [0, 2], [1]),
           Op('CONV_2D', [1, 4, 8], [3], 'Conv2DOptions', Padding=0, StrideW=2, StrideH=2,
              FusedActivationFunction=1, DilationWFactor=1, DilationHFactor=1),
           Op('MAX_POOL_2D', [3], [5], 'Pool2DOptions', Padding=0, StrideW=2, StrideH=2,
              FilterWidth=2, FilterHeight=2, FusedActivationFunction=0),
           Op('RESIZE_BILINEAR', [5, 7], [6], 'ResizeBilinearOptions', AlignCorners=False,
              HalfPixelCenters=True)]
    net = _compare(build(tensors, ops, [0], [6]), [_randn(1, 4, 6, 3)])
    assert net.info.trunk_ops == []
    assert net.info.tail_ops == ['CONV_2D', 'MAX_POOL_2D', 'RESHAPE', 'RESIZE_BILINEAR']
