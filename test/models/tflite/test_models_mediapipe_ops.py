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
What the MediaPipe models need from the TFLite importer, one small model each.

- Sparse (pruned) weights: tensors written in TFLite's sparse format by an encoder of our own,
  expanded by the interpreter's DENSIFY and by the importer; both must give the dense tensor.
- DEPTH_TO_SPACE against the interpreter, in the trunk and in the tail.
- MediaPipe's custom Convolution2DTransposeBias against a direct transcription of its kernel
  (the interpreter does not know it), and the rewrite to the builtin TRANSPOSE_CONV that makes
  the interpreter the reference for the whole selfie model.
- Keeping only some of a model's outputs.
"""

import itertools

import numpy as np
import pytest
from sparse_perception.models.tflite.converters import supported_operators
from sparse_perception.models.tflite.edit import builtin_transpose_conv, custom_operators
from sparse_perception.models.tflite.importer import import_tflite
from sparse_perception.models.tflite.reader import densify, TFLiteImportError
from tflite_writer import build, CustomOp, Op, run_reference, T
import torch
from torch import fx

RNG = np.random.default_rng(2026)


def _randn(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def _nchw(array):
    return torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).float()


def _run(model: bytes, x: np.ndarray):
    net = import_tflite(model, name='case.tflite')
    with torch.no_grad():
        out = net(_nchw(x))
        again = fx.symbolic_trace(net)(_nchw(x))
    outputs = out if isinstance(out, tuple) else (out,)
    retraced = again if isinstance(again, tuple) else (again,)
    for a, b in zip(outputs, retraced):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    return net, [o.numpy() for o in outputs]


# ------------------------------------------------------------------------------ sparse tensors
def encode_sparse(dense: np.ndarray, traversal_order, formats, block_map=(), block_sizes=()):
    """
    Write ``dense`` in TFLite's sparse format: (stored values, levels), levels as densify takes.

    Dimensions are traversed in ``traversal_order`` over the blocked shape (block dimension k
    splits tensor dimension ``block_map[k]`` into blocks of ``block_sizes[k]``); a 'csr' level
    keeps only the coordinates whose sub-tree holds a non-zero value.
    """
    rank = dense.ndim
    blocked = list(dense.shape)
    for dim, size in zip(block_map, block_sizes):
        blocked[dim] //= size
    expanded_shape = blocked + list(block_sizes)
    index = np.indices(expanded_shape)
    original = [index[d] for d in range(rank)]
    for k, (dim, size) in enumerate(zip(block_map, block_sizes)):
        original[dim] = original[dim] * size + index[rank + k]
    expanded = dense[tuple(original)]
    traversed = expanded.transpose(traversal_order)
    parents, levels = [()], []
    for level, fmt in enumerate(formats):
        size = traversed.shape[level]
        if fmt == 'dense':
            parents = [p + (i,) for p in parents for i in range(size)]
            levels.append(('dense', size))
            continue
        segments, indices, children = [0], [], []
        for p in parents:
            for i in range(size):
                if np.any(traversed[p + (i,)] != 0):
                    indices.append(i)
                    children.append(p + (i,))
            segments.append(len(indices))
        parents = children
        levels.append(('csr', segments, indices))
    values = np.array([traversed[p] for p in parents], dtype=dense.dtype)
    return values, levels


SPARSE_CASES = [
    # (traversal order, level formats, block map, block sizes): weights OHWI (6, 3, 3, 8)
    ((0, 1, 2, 3), ('dense', 'dense', 'dense', 'csr'), (), ()),  # the detector's layout
    ((0, 1, 2, 3), ('csr', 'dense', 'dense', 'csr'), (), ()),
    ((0, 3, 1, 2), ('dense', 'csr', 'dense', 'csr'), (), ()),  # a permuted traversal
    ((0, 1, 2, 3, 4), ('dense', 'dense', 'dense', 'csr', 'dense'), (3,), (4,)),  # 1x4 blocks
]


def _pruned_weights(dtype=np.float32):
    weights = _randn(6, 3, 3, 8)
    weights[RNG.random(weights.shape) < 0.7] = 0.0
    weights[1] = 0.0  # a whole output channel pruned away
    return weights.astype(dtype)


@pytest.mark.parametrize('order, formats, block_map, block_sizes', SPARSE_CASES)
def test_densify_agrees_with_the_interpreter(order, formats, block_map, block_sizes):
    weights = _pruned_weights()
    values, levels = encode_sparse(weights, order, formats, block_map, block_sizes)
    assert values.size < weights.size  # really stored sparse
    sparsity = {'traversal_order': order, 'block_map': block_map, 'levels': levels}
    ours = densify(values, weights.shape, list(order), list(block_map), levels)
    np.testing.assert_array_equal(ours, weights)
    # The interpreter's DENSIFY reads the same flatbuffer layout.
    tensors = [T((1, 5, 5, 8)), T((1, 5, 5, 6)), T(weights.shape, data=values, sparsity=sparsity),
               T(weights.shape), T((6,), data=_randn(6))]
    conv = Op('CONV_2D', [0, 3, 4], [1], 'Conv2DOptions', Padding=0, StrideW=1, StrideH=1,
              FusedActivationFunction=0, DilationWFactor=1, DilationHFactor=1)
    ops = [Op('DENSIFY', [2], [3]), conv]
    x = _randn(1, 5, 5, 8)
    conv_ref, dense_ref = run_reference(build(tensors, ops, [0], [1, 3]), [x], builtin_only=True)
    np.testing.assert_array_equal(dense_ref, weights)
    # The importer expands the tensor when it reads it; the convolution uses it.
    net, (out,) = _run(build(tensors, ops, [0], [1]), x)
    np.testing.assert_allclose(out, conv_ref, rtol=1e-5, atol=1e-5)
    assert net.info.tflite_op_counts['DENSIFY'] == 1 and net.info.trunk_ops == ['CONV_2D']


def test_sparse_float16_weights_through_dequantize():
    # The detector's pattern: float16 sparse constant -> DENSIFY -> DEQUANTIZE -> CONV_2D.
    weights = _pruned_weights(np.float16)
    values, levels = encode_sparse(weights, (0, 1, 2, 3), SPARSE_CASES[0][1])
    sparsity = {'traversal_order': (0, 1, 2, 3), 'levels': levels}
    tensors = [T((1, 4, 6, 8)), T((1, 4, 6, 6)),
               T(weights.shape, np.float16, data=values, sparsity=sparsity),
               T(weights.shape, np.float16), T(weights.shape), T((6,), data=_randn(6))]
    ops = [Op('DENSIFY', [2], [3]), Op('DEQUANTIZE', [3], [4]),
           Op('CONV_2D', [0, 4, 5], [1], 'Conv2DOptions', Padding=0, StrideW=1, StrideH=1,
              FusedActivationFunction=3, DilationWFactor=1, DilationHFactor=1)]
    model = build(tensors, ops, [0], [1])
    x = _randn(1, 4, 6, 8)
    (expected,) = run_reference(model, [x])
    _, (out,) = _run(model, x)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def test_densify_refuses_layouts_that_do_not_fit():
    weights = _pruned_weights()
    values, levels = encode_sparse(weights, (0, 1, 2, 3), SPARSE_CASES[0][1])
    with pytest.raises(ValueError, match='stored'):
        densify(values[:-1], weights.shape, [0, 1, 2, 3], [], levels)
    with pytest.raises(ValueError, match='traversal order'):
        densify(values, weights.shape, [0, 1, 2], [], levels)
    bad = levels[:3] + [('csr', levels[3][1], [9] * len(levels[3][2]))]
    with pytest.raises(ValueError, match='outside the shape'):
        densify(values, weights.shape, [0, 1, 2, 3], [], bad)
    # Through the importer the message names the tensor.
    sparsity = {'traversal_order': (0, 1, 2, 3), 'levels': bad}
    tensors = [T((1, 5, 5, 8)), T((1, 5, 5, 6)),
               T(weights.shape, data=values, sparsity=sparsity, name='pruned'), T(weights.shape)]
    ops = [Op('DENSIFY', [2], [3]),
           Op('CONV_2D', [0, 3, -1], [1], 'Conv2DOptions', Padding=0, StrideW=1, StrideH=1,
              FusedActivationFunction=0, DilationWFactor=1, DilationHFactor=1)]
    with pytest.raises(TFLiteImportError, match="sparse tensor 'pruned'.*outside the shape"):
        import_tflite(build(tensors, ops, [0], [1]), name='case.tflite')


# ------------------------------------------------------------------------------ DEPTH_TO_SPACE
@pytest.mark.parametrize('shape, block, in_tail', [
    ((1, 3, 4, 12), 2, False),
    ((1, 2, 2, 18), 3, False),
    ((1, 3, 4, 8), 2, True),  # after a RESHAPE: runs in the dense tail, in TF layout
])
def test_depth_to_space(shape, block, in_tail):
    n, h, w, c = shape
    out_shape = (n, h * block, w * block, c // (block * block))
    if in_tail:
        tensors = [T(shape), T(out_shape), T(shape),
                   T((4,), np.int32, data=np.array(shape, np.int32))]
        ops = [Op('RESHAPE', [0, 3], [2]),
               Op('DEPTH_TO_SPACE', [2], [1], 'DepthToSpaceOptions', BlockSize=block)]
    else:
        tensors = [T(shape), T(out_shape)]
        ops = [Op('DEPTH_TO_SPACE', [0], [1], 'DepthToSpaceOptions', BlockSize=block)]
    model = build(tensors, ops, [0], [1])
    x = _randn(*shape)
    (expected,) = run_reference(model, [x])
    net, (out,) = _run(model, x)
    np.testing.assert_array_equal(out, expected)
    assert ('DEPTH_TO_SPACE' in net.info.tail_ops) == in_tail


# ----------------------------------------------------------------- Convolution2DTransposeBias
def mediapipe_transpose_conv_bias(x, weights, bias, stride, same):
    """
    Compute MediaPipe's Convolution2DTransposeBias as its kernel does (NHWC input, OHWI weights).

    Every output starts at the bias; input pixel (y, x) adds ``weights[:, ky, kx, :] @ input``
    to output pixel ``(y * stride - pad // 2 + ky, x * stride - pad // 2 + kx)`` when that is
    inside the output, where SAME pads ``max(0, k - (in - 1) % stride - 1)``.
    """
    n, height, width, _ = x.shape
    out_ch, kh, kw, _ = weights.shape
    sh, sw = stride
    pad_h = max(0, kh - (height - 1) % sh - 1) if same else 0
    pad_w = max(0, kw - (width - 1) % sw - 1) if same else 0
    out_h, out_w = sh * (height - 1) + kh - pad_h, sw * (width - 1) + kw - pad_w
    out = np.broadcast_to(bias.astype(np.float64), (n, out_h, out_w, out_ch)).copy()
    for y, xx, ky, kx in itertools.product(range(height), range(width), range(kh), range(kw)):
        oy, ox = y * sh - pad_h // 2 + ky, xx * sw - pad_w // 2 + kx
        if 0 <= oy < out_h and 0 <= ox < out_w:
            out[:, oy, ox, :] += x[:, y, xx, :].astype(np.float64) @ \
                weights[:, ky, kx, :].astype(np.float64).T
    return out.astype(np.float32)


def _custom_model(size, kernel, stride, same, options=None, out_hw=None, cin=5, cout=3):
    h, w = size
    x = _randn(1, h, w, cin)
    weights, bias = _randn(cout, kernel, kernel, cin), _randn(cout)
    expected = mediapipe_transpose_conv_bias(x, weights, bias, (stride, stride), same)
    out_hw = out_hw or expected.shape[1:3]
    if options is None:
        options = np.array([1 if same else 2, stride, stride], '<i4').tobytes()
    tensors = [T((1, h, w, cin)), T((1, *out_hw, cout)), T(weights.shape, data=weights),
               T((cout,), data=bias)]
    model = build(tensors, [CustomOp('Convolution2DTransposeBias', [0, 2, 3], [1], options)],
                  [0], [1])
    return model, x, expected


@pytest.mark.parametrize('size, kernel, stride, same', [
    ((5, 6), 2, 2, True),   # the selfie models' upsampling: no crop
    ((5, 6), 3, 2, True),   # odd total crop, the extra pixel cut after
    ((4, 7), 4, 2, True),
    ((5, 5), 3, 1, True),
    ((4, 5), 3, 2, False),  # VALID: the full transposed convolution
    ((5, 4), 3, 3, True),
])
def test_convolution_2d_transpose_bias(size, kernel, stride, same):
    model, x, expected = _custom_model(size, kernel, stride, same)
    net, (out,) = _run(model, x)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    assert net.info.trunk_ops == ['CUSTOM(Convolution2DTransposeBias)']
    assert net.info.tflite_op_counts == {'CUSTOM(Convolution2DTransposeBias)': 1}
    # The interpreter cannot run the custom operator; rewritten as the builtin TRANSPOSE_CONV
    # with a bias input it computes the same thing.
    assert custom_operators(model) == ['Convolution2DTransposeBias']
    rewritten = builtin_transpose_conv(model)
    assert custom_operators(rewritten) == []
    (reference,) = run_reference(rewritten, [x])
    np.testing.assert_allclose(reference, expected, rtol=1e-5, atol=1e-5)


def test_convolution_2d_transpose_bias_refuses_bad_options():
    model, _, _ = _custom_model((4, 4), 2, 2, True, options=b'\x01\x00\x00\x00')
    with pytest.raises(TFLiteImportError, match='expected 12 bytes of options'):
        import_tflite(model, name='case.tflite')
    model, _, _ = _custom_model((4, 4), 2, 2, True, out_hw=(9, 9))
    with pytest.raises(TFLiteImportError, match=r'records an output of \(9, 9\).*\(8, 8\)'):
        import_tflite(model, name='case.tflite')
    bad_padding = np.array([7, 2, 2], '<i4').tobytes()
    model, _, _ = _custom_model((4, 4), 2, 2, True, options=bad_padding)
    with pytest.raises(TFLiteImportError, match='padding=7'):
        import_tflite(model, name='case.tflite')


def test_rewrite_keeps_every_other_operator_and_option():
    # A convolution with a fused activation and SAME padding at stride 2, a pooling, then the
    # custom operator: the copy must carry all options over unchanged.
    x = _randn(1, 8, 8, 3)
    conv_w, conv_b = _randn(4, 3, 3, 3), _randn(4)
    up_w, up_b = _randn(2, 2, 2, 4), _randn(2)
    tensors = [T((1, 8, 8, 3)), T((1, 4, 4, 4)), T((1, 4, 4, 4)), T((1, 8, 8, 2)),
               T(conv_w.shape, data=conv_w), T((4,), data=conv_b),
               T(up_w.shape, data=up_w), T((2,), data=up_b)]
    ops = [Op('CONV_2D', [0, 4, 5], [1], 'Conv2DOptions', Padding=0, StrideW=2, StrideH=2,
              FusedActivationFunction=3, DilationWFactor=1, DilationHFactor=1),
           Op('AVERAGE_POOL_2D', [1], [2], 'Pool2DOptions', Padding=0, StrideW=1, StrideH=1,
              FilterWidth=3, FilterHeight=3, FusedActivationFunction=0),
           CustomOp('Convolution2DTransposeBias', [2, 6, 7], [3],
                    np.array([1, 2, 2], '<i4').tobytes())]
    model = build(tensors, ops, [0], [3])
    (reference,) = run_reference(builtin_transpose_conv(model), [x])
    _, (out,) = _run(model, x)
    np.testing.assert_allclose(out, reference, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------ some outputs
def test_keeping_some_outputs_drops_what_only_the_others_need():
    x = _randn(1, 6, 6, 3)
    w1, w2 = _randn(4, 3, 3, 3), _randn(2, 1, 1, 4)
    tensors = [T((1, 6, 6, 3)), T((1, 6, 6, 4)), T((1, 6, 6, 2)), T((1, 72)),
               T(w1.shape, data=w1), T(w2.shape, data=w2),
               T((2,), np.int32, data=np.array([1, 72], np.int32))]
    conv = {'Padding': 0, 'StrideW': 1, 'StrideH': 1, 'FusedActivationFunction': 1,
            'DilationWFactor': 1, 'DilationHFactor': 1}
    ops = [Op('CONV_2D', [0, 4, -1], [1], 'Conv2DOptions', **conv),
           Op('CONV_2D', [1, 5, -1], [2], 'Conv2DOptions', **conv),
           Op('RESHAPE', [2, 6], [3])]
    model = build(tensors, ops, [0], [1, 3])
    full = import_tflite(model)
    first = import_tflite(model, outputs=[0])
    second = import_tflite(model, outputs=[1])
    with torch.no_grad():
        a, b = full(_nchw(x))
        only_a, only_b = first(_nchw(x)), second(_nchw(x))
    torch.testing.assert_close(only_a, a, rtol=0, atol=0)
    torch.testing.assert_close(only_b, b, rtol=0, atol=0)
    assert first.info.trunk_ops == ['CONV_2D'] and len(first.info.trunk_outputs) == 1
    assert [o.shape for o in second.info.outputs] == [(1, 72)]
    assert sum(isinstance(m, torch.nn.Conv2d) for m in first.trunk.modules()) == 1
    with pytest.raises(ValueError, match=r'outputs=\[2\] must name some of the model'):
        import_tflite(model, outputs=[2])


def test_the_new_operators_are_listed():
    assert {'DENSIFY', 'DEPTH_TO_SPACE', 'CUSTOM(Convolution2DTransposeBias)'} <= \
        set(supported_operators())
