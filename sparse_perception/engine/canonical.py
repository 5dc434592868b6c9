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
Op recognition: each module type, function and tensor method the engine runs, and what it is.

Tables map a traced node to a converter that emits IR (or raises
:class:`UnsupportedOpError` naming what it cannot do): :data:`MODULE_EXACT` and
:data:`MODULES` by module type, :data:`FUNCTIONS` by the called function, :data:`METHODS` by
the tensor method's name. A converter brings the op's spellings to one form (``nn.ReLU6``
and ``F.relu6`` are one hardtanh; ``nn.PixelShuffle`` and ``ops.depth_to_space`` one index
copy) as a layer or as an epilogue step fused into the layer before (fusion.py).

- Identity, dropout (eval) and ``contiguous`` are aliases.
- Depth-to-space (``nn.PixelShuffle``, ``F.pixel_shuffle``, TF-order ``ops.depth_to_space``)
  becomes a ``depth_to_space`` layer: an index copy (no weights, no MACs).
"""

from __future__ import annotations

import operator
from typing import Any, Callable, TYPE_CHECKING

from sparse_perception.engine.fusion import batch_norm, binary, extend, pointwise
from sparse_perception.engine.ir import ConvAttrs, ConvTransposeAttrs, DepthToSpaceAttrs, Kind, \
    NO_PADDING, PadAttrs, Padding, PoolAttrs, PositionwiseAttrs, ResampleAttrs, Value
from sparse_perception.engine.ops import argmax, depth_to_space
from sparse_perception.kernels.steps import Step
import torch
from torch import fx
import torch.nn as nn
import torch.nn.functional as F

if TYPE_CHECKING:
    from sparse_perception.engine.lower import Lowering

Converter = Callable[['Lowering', fx.Node], None]

# Activations: name -> (module types, functions, method names). Parameters are normalised by
# _module_activation() and _call_activation() below; the references apply them
# (kernels/epilogue.py, ACTIVATIONS).
_ACT_MODULES: dict[type, str] = {
    nn.ReLU: 'relu', nn.ReLU6: 'hardtanh', nn.Hardtanh: 'hardtanh', nn.Hardswish: 'hardswish',
    nn.Hardsigmoid: 'hardsigmoid', nn.Sigmoid: 'sigmoid', nn.SiLU: 'silu', nn.Tanh: 'tanh',
    nn.LeakyReLU: 'leaky_relu', nn.GELU: 'gelu', nn.ELU: 'elu', nn.Mish: 'mish',
    nn.Softplus: 'softplus', nn.PReLU: 'prelu',
}
_ACT_FUNCTIONS: dict[Any, str] = {
    F.relu: 'relu', torch.relu: 'relu', torch.relu_: 'relu', F.relu_: 'relu',
    F.relu6: 'relu6', F.hardtanh: 'hardtanh', F.hardswish: 'hardswish',
    F.hardsigmoid: 'hardsigmoid', torch.sigmoid: 'sigmoid', F.sigmoid: 'sigmoid',
    F.silu: 'silu', torch.tanh: 'tanh', F.tanh: 'tanh', F.leaky_relu: 'leaky_relu',
    F.gelu: 'gelu', F.elu: 'elu', F.mish: 'mish', F.softplus: 'softplus',
    torch.clamp: 'clamp', torch.clip: 'clamp',
}
_ACT_METHODS = {'relu': 'relu', 'relu_': 'relu', 'sigmoid': 'sigmoid', 'sigmoid_': 'sigmoid',
                'tanh': 'tanh', 'tanh_': 'tanh', 'clamp': 'clamp', 'clamp_': 'clamp',
                'clip': 'clamp', 'clip_': 'clamp'}
_BINARY_FUNCTIONS = {
    operator.add: 'add', operator.iadd: 'add', torch.add: 'add',
    operator.sub: 'sub', operator.isub: 'sub', torch.sub: 'sub',
    operator.mul: 'mul', operator.imul: 'mul', torch.mul: 'mul',
    operator.truediv: 'div', operator.itruediv: 'div', torch.div: 'div',
}
_BINARY_METHODS = {'add': 'add', 'add_': 'add', 'sub': 'sub', 'sub_': 'sub', 'mul': 'mul',
                   'mul_': 'mul', 'div': 'div', 'div_': 'div'}
_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
               nn.ConvTranspose3d)
_CONV_FUNCTIONS = (F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d,
                   F.conv_transpose3d)
# Depth-to-space functions -> the order in which they read the channels of a block.
_SHUFFLE_FUNCTIONS = {F.pixel_shuffle: 'torch', torch.pixel_shuffle: 'torch',
                      depth_to_space: 'tf'}
_PAD_MODES = {nn.ReflectionPad2d: 'reflect', nn.ReplicationPad2d: 'replicate',
              nn.CircularPad2d: 'circular'}


def convert(lo: Lowering, n: fx.Node) -> None:
    """Emit the IR of node ``n`` with the converter its table holds for it."""
    if n.op == 'call_module':
        mod = lo.modules[n.target]
        converter = MODULE_EXACT.get(type(mod))
        if converter is None:
            base = next((t for t in type(mod).__mro__ if t in MODULES), None)
            if base is None:
                raise lo.unsupported(n, 'this module type is not supported')
            # A subclass that computes otherwise (a QAT convolution's fake quantisation) is
            # not its base.
            if type(mod).forward is not base.forward:
                raise lo.unsupported(n, f'a subclass of {base.__name__} with its own forward()')
            converter = MODULES[base]
    elif n.op == 'call_function':
        converter = FUNCTIONS.get(n.target)
        if converter is None:
            raise lo.unsupported(n, 'this function is not supported')
    elif n.op == 'call_method':
        converter = METHODS.get(n.target)
        if converter is None:
            raise lo.unsupported(n, 'this tensor method is not supported')
    else:
        raise lo.unsupported(n, f'fx op {n.op!r} on the input is not supported')
    converter(lo, n)


def is_convolution(n: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether ``n`` is a convolution of any dimension (what a dense tail must not hold)."""
    if n.op == 'call_module':
        return isinstance(modules[n.target], _CONV_TYPES)
    return n.op == 'call_function' and n.target in _CONV_FUNCTIONS


# -- converters shared by the tables ---------------------------------------------------------

def _alias_arg(lo: Lowering, n: fx.Node) -> None:
    lo.alias(n, n.args[0])


def _same_dtype_alias(lo: Lowering, n: fx.Node) -> None:
    if lo.results[n].dtype != lo.results[n.args[0]].dtype:
        raise lo.unsupported(n, 'dtype conversion is not supported')
    lo.alias(n, n.args[0])


def _reshape_arg(lo: Lowering, n: fx.Node) -> None:
    _reshape_global(lo, n, n.args[0])


def _getitem(lo: Lowering, n: fx.Node) -> None:
    """Indexing that only adds or drops dimensions of size 1 (``v[..., None, None]``)."""
    x, index = n.args
    v = lo.value(x)
    if v is None:
        raise lo.unsupported(n, 'indexing a non-tensor')
    if not lo.is_global(v):  # (before the probe below: a frame's map has millions of values)
        raise lo.unsupported(n, 'indexing a spatial tensor')
    # An index that picks or reorders elements ([:, [1, 0]], [:, :2]) is no reshape: find out
    # on the positions of the elements themselves.
    shape = lo.results[x].shape
    probe = torch.arange(int(torch.Size(shape).numel())).reshape(shape)
    try:
        index = _static_index(lo, index)
    except KeyError:
        raise lo.unsupported(n, 'an index computed from the image') from None
    try:
        picked = probe[index]
    except (IndexError, RuntimeError, TypeError, ValueError) as exc:
        raise lo.unsupported(n, f'an index torch refuses here ({exc})') from None
    if not torch.equal(picked.reshape(-1), probe.reshape(-1)):
        raise lo.unsupported(n, 'an index that selects or reorders elements')
    _reshape_global(lo, n, x)


def _activation_call(lo: Lowering, n: fx.Node) -> None:
    pointwise(lo, n, n.args[0], Step('act', *_call_activation(lo, n)))


def _binary_call(lo: Lowering, n: fx.Node) -> None:
    op = _BINARY_FUNCTIONS[n.target] if n.op == 'call_function' else _BINARY_METHODS[n.target]
    args = lo.args(n, ['a', 'b'], {})
    if args.get('alpha', 1) != 1:
        raise lo.unsupported(n, 'add/sub with alpha != 1 is not supported')
    if args.get('rounding_mode') is not None:
        raise lo.unsupported(n, f"division with rounding_mode {args['rounding_mode']!r} is not "
                                'supported')
    binary(lo, n, op, args['a'], args['b'])


def _neg(lo: Lowering, n: fx.Node) -> None:
    pointwise(lo, n, n.args[0], Step('scalar', 'mul', const=-1.0))


def _mean_call(lo: Lowering, n: fx.Node) -> None:
    args = lo.args(n, ['input', 'dim', 'keepdim'], {'dim': None, 'keepdim': False})
    _mean(lo, n, args['input'], args['dim'], args['keepdim'])


def _argmax_call(lo: Lowering, n: fx.Node) -> None:
    args = lo.args(n, ['input', 'dim', 'keepdim'], {'dim': None, 'keepdim': False})
    _positionwise(lo, n, args['input'], 'argmax', args['dim'], args['keepdim'])


# -- module converters -----------------------------------------------------------------------

def _activation_module(lo: Lowering, n: fx.Node) -> None:
    pointwise(lo, n, n.args[0], Step('act', *_module_activation(lo.modules[n.target])))


def _conv_module(lo: Lowering, n: fx.Node) -> None:
    mod = lo.modules[n.target]
    x = lo.main_input(n, n.args[0])
    weight, bias = mod.weight.detach(), _opt(mod.bias)
    padding = _conv_padding(mod.padding, mod.kernel_size, mod.dilation)
    if mod.padding_mode != 'zeros' and any(padding):
        x = _pad_value(lo, n, x, (padding.left, padding.right, padding.top, padding.bottom),
                       {'reflect': 'reflect', 'replicate': 'replicate',
                        'circular': 'circular'}[mod.padding_mode], 0.0)
        padding = NO_PADDING
    _conv_layer(lo, n, x, weight, bias, tuple(mod.stride), padding, tuple(mod.dilation),
                mod.groups)


def _conv_transpose_module(lo: Lowering, n: fx.Node) -> None:
    mod = lo.modules[n.target]
    x = lo.main_input(n, n.args[0])
    if len(n.args) > 1 or 'output_size' in n.kwargs:
        raise lo.unsupported(n, 'ConvTranspose2d with output_size is not supported')
    if mod.padding_mode != 'zeros':
        raise lo.unsupported(n, f'padding_mode={mod.padding_mode!r}')
    _conv_transpose_layer(lo, n, x, mod.weight.detach(), _opt(mod.bias), tuple(mod.stride),
                          tuple(mod.padding), tuple(mod.output_padding), tuple(mod.dilation),
                          mod.groups)


def _only_2d(lo: Lowering, n: fx.Node) -> None:
    raise lo.unsupported(n, 'only 2-D convolutions are supported')


def _batch_norm_module(lo: Lowering, n: fx.Node) -> None:
    mod = lo.modules[n.target]
    if mod.training or mod.running_mean is None:
        raise lo.unsupported(n, 'BatchNorm2d must be in eval mode with running '
                                'statistics (call model.eval())')
    batch_norm(lo, n, n.args[0], mod.running_mean, mod.running_var, mod.weight, mod.bias,
               mod.eps)


def _pool_module(lo: Lowering, n: fx.Node) -> None:
    mod = lo.modules[n.target]
    if isinstance(mod, nn.MaxPool2d):
        if mod.return_indices:
            raise lo.unsupported(n, 'return_indices=True is not supported')
        args = {'kernel_size': mod.kernel_size, 'stride': mod.stride,
                'padding': mod.padding, 'dilation': mod.dilation, 'ceil_mode': mod.ceil_mode}
        return _pool(lo, n, n.args[0], 'max', args)
    args = {'kernel_size': mod.kernel_size, 'stride': mod.stride, 'padding': mod.padding,
            'ceil_mode': mod.ceil_mode, 'count_include_pad': mod.count_include_pad,
            'divisor_override': mod.divisor_override}
    return _pool(lo, n, n.args[0], 'avg', args)


def _adaptive_avg_module(lo: Lowering, n: fx.Node) -> None:
    _adaptive_avg(lo, n, n.args[0], lo.modules[n.target].output_size)


def _upsample_module(lo: Lowering, n: fx.Node) -> None:
    mod = lo.modules[n.target]
    _resample(lo, n, n.args[0], {
        'size': mod.size, 'scale_factor': mod.scale_factor, 'mode': mod.mode,
        'align_corners': mod.align_corners,
        'recompute_scale_factor': mod.recompute_scale_factor})


def _pad_module(lo: Lowering, n: fx.Node) -> None:
    mod = lo.modules[n.target]
    mode = _PAD_MODES.get(type(mod), 'constant')
    _pad(lo, n, n.args[0], tuple(mod.padding), mode, float(getattr(mod, 'value', 0.0)))


def _softmax_module(lo: Lowering, n: fx.Node) -> None:
    mod = lo.modules[n.target]
    fn = 'softmax' if isinstance(mod, nn.Softmax) else 'log_softmax'
    _positionwise(lo, n, n.args[0], fn, mod.dim, False)


def _linear_module(lo: Lowering, n: fx.Node) -> None:
    mod = lo.modules[n.target]
    _linear(lo, n, n.args[0], mod.weight, mod.bias)


def _pixel_shuffle_module(lo: Lowering, n: fx.Node) -> None:
    _depth_to_space(lo, n, n.args[0], lo.modules[n.target].upscale_factor, 'torch')


# -- function converters ---------------------------------------------------------------------

def _cat_call(lo: Lowering, n: fx.Node) -> None:
    args = lo.args(n, ['tensors', 'dim'], {'dim': 0})
    _cat(lo, n, args['tensors'], args['dim'])


def _max_pool_call(lo: Lowering, n: fx.Node) -> None:
    args = lo.args(n, ['input', 'kernel_size', 'stride', 'padding', 'dilation', 'ceil_mode',
                       'return_indices'],
                   {'stride': None, 'padding': 0, 'dilation': 1, 'ceil_mode': False,
                    'return_indices': False})
    if args.get('return_indices'):
        raise lo.unsupported(n, 'return_indices=True is not supported')
    _pool(lo, n, args['input'], 'max', args)


def _avg_pool_call(lo: Lowering, n: fx.Node) -> None:
    args = lo.args(n, ['input', 'kernel_size', 'stride', 'padding', 'ceil_mode',
                       'count_include_pad', 'divisor_override'],
                   {'stride': None, 'padding': 0, 'ceil_mode': False,
                    'count_include_pad': True, 'divisor_override': None})
    _pool(lo, n, args['input'], 'avg', args)


def _adaptive_avg_call(lo: Lowering, n: fx.Node) -> None:
    args = lo.args(n, ['input', 'output_size'], {})
    _adaptive_avg(lo, n, args['input'], args['output_size'])


def _interpolate_call(lo: Lowering, n: fx.Node) -> None:
    args = lo.args(n, ['input', 'size', 'scale_factor', 'mode', 'align_corners',
                       'recompute_scale_factor', 'antialias'],
                   {'size': None, 'scale_factor': None, 'mode': 'nearest',
                    'align_corners': None, 'recompute_scale_factor': None,
                    'antialias': False})
    if n.target is F.upsample_bilinear:
        args['mode'], args['align_corners'] = 'bilinear', True
    if n.target is F.upsample_nearest:
        args['mode'] = 'nearest'
    x = args.pop('input')
    _resample(lo, n, x, args)


def _pad_call(lo: Lowering, n: fx.Node) -> None:
    args = lo.args(n, ['input', 'pad', 'mode', 'value'], {'mode': 'constant', 'value': None})
    _pad(lo, n, args['input'], tuple(args['pad']), args['mode'], float(args['value'] or 0.0))


def _softmax_call(lo: Lowering, n: fx.Node) -> None:
    args = lo.args(n, ['input', 'dim'], {'dim': None})
    fn = 'softmax' if n.target in (F.softmax, torch.softmax) else 'log_softmax'
    if args.get('dtype') is not None:
        raise lo.unsupported(n, 'softmax with a dtype is not supported')
    _positionwise(lo, n, args['input'], fn, args['dim'], False)


def _conv_call(lo: Lowering, n: fx.Node) -> None:
    transposed = n.target is F.conv_transpose2d
    names = ['input', 'weight', 'bias', 'stride', 'padding']
    defaults = {'bias': None, 'stride': 1, 'padding': 0, 'groups': 1, 'dilation': 1}
    if transposed:
        names += ['output_padding', 'groups', 'dilation']
        defaults['output_padding'] = 0
    else:
        names += ['dilation', 'groups']
    args = lo.args(n, names, defaults)
    if any(isinstance(args[k], fx.Node) for k in ('weight', 'bias')):
        raise lo.unsupported(n, 'convolution weights computed from the input')
    x = lo.main_input(n, args['input'])
    weight = args['weight'].detach()
    bias = None if args['bias'] is None else args['bias'].detach()
    k = weight.shape[-2:]
    if transposed:
        _conv_transpose_layer(
            lo, n, x, weight, bias, _pair(args['stride']), _pair(args['padding']),
            _pair(args['output_padding']), _pair(args['dilation']), args['groups'])
        return
    padding = _conv_padding(args['padding'], k, _pair(args['dilation']))
    _conv_layer(lo, n, x, weight, bias, _pair(args['stride']), padding,
                _pair(args['dilation']), args['groups'])


def _shuffle_call(lo: Lowering, n: fx.Node) -> None:
    order = _SHUFFLE_FUNCTIONS[n.target]
    names = ['input', 'upscale_factor'] if order == 'torch' else ['x', 'block']
    args = lo.args(n, names, {})
    _depth_to_space(lo, n, args[names[0]], args[names[1]], order)


def _linear_call(lo: Lowering, n: fx.Node) -> None:
    args = lo.args(n, ['input', 'weight', 'bias'], {'bias': None})
    _linear(lo, n, args['input'], args['weight'], args['bias'])


def _batch_norm_call(lo: Lowering, n: fx.Node) -> None:
    args = lo.args(n, ['input', 'running_mean', 'running_var', 'weight', 'bias', 'training',
                       'momentum', 'eps'],
                   {'weight': None, 'bias': None, 'training': False, 'momentum': 0.1,
                    'eps': 1e-5})
    if args['training'] or args['running_mean'] is None:
        raise lo.unsupported(n, 'batch_norm in training mode')
    batch_norm(lo, n, args['input'], args['running_mean'], args['running_var'],
               args['weight'], args['bias'], args['eps'])


def _dropout_call(lo: Lowering, n: fx.Node) -> None:
    args = lo.args(n, ['input', 'p', 'training'], {'p': 0.5, 'training': True})
    if args['training']:
        raise lo.unsupported(n, 'dropout with training=True is random')
    lo.alias(n, args['input'])


# -- method converters -----------------------------------------------------------------------

def _softmax_method(lo: Lowering, n: fx.Node) -> None:
    args = lo.args(n, ['input', 'dim'], {'dim': None})
    _positionwise(lo, n, args['input'], n.target, args['dim'], False)


# -- the tables ------------------------------------------------------------------------------

def _table(*entries: tuple[Any, Converter]) -> dict:
    """Build a table from (keys, converter) entries; a key claimed twice must agree."""
    table: dict = {}
    for keys, converter in entries:
        for key in keys:
            if table.setdefault(key, converter) is not converter:
                raise ValueError(f'{key!r} has two converters')
    return table


# Module types matched by their exact type: a subclass of an activation may compute anything.
MODULE_EXACT: dict[type, Converter] = _table((_ACT_MODULES, _activation_module))
# Module types matched with their subclasses (the closest base in the MRO wins).
MODULES: dict[type, Converter] = _table(
    ((nn.Identity, nn.Dropout, nn.Dropout2d, nn.Dropout1d, nn.AlphaDropout), _alias_arg),
    ((nn.Conv2d,), _conv_module),
    ((nn.ConvTranspose2d,), _conv_transpose_module),
    ((nn.Conv1d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose3d), _only_2d),
    ((nn.BatchNorm2d,), _batch_norm_module),
    ((nn.MaxPool2d, nn.AvgPool2d), _pool_module),
    ((nn.AdaptiveAvgPool2d,), _adaptive_avg_module),
    ((nn.Upsample,), _upsample_module),
    ((nn.ZeroPad2d, nn.ConstantPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d,
      nn.CircularPad2d), _pad_module),
    ((nn.Softmax, nn.LogSoftmax), _softmax_module),
    ((nn.Linear,), _linear_module),
    ((nn.Flatten,), _reshape_arg),
    ((nn.PixelShuffle,), _pixel_shuffle_module),
)
FUNCTIONS: dict[Any, Converter] = _table(
    (_ACT_FUNCTIONS, _activation_call),
    (_BINARY_FUNCTIONS, _binary_call),
    ((operator.neg, torch.neg), _neg),
    ((torch.cat, torch.concat), _cat_call),
    ((F.max_pool2d, torch.max_pool2d), _max_pool_call),
    ((F.avg_pool2d,), _avg_pool_call),
    ((F.adaptive_avg_pool2d,), _adaptive_avg_call),
    ((torch.mean,), _mean_call),
    ((F.interpolate, F.upsample, F.upsample_bilinear, F.upsample_nearest), _interpolate_call),
    ((F.pad,), _pad_call),
    ((F.softmax, F.log_softmax, torch.softmax, torch.log_softmax), _softmax_call),
    ((torch.argmax, argmax), _argmax_call),
    ((F.conv2d, F.conv_transpose2d), _conv_call),
    (_SHUFFLE_FUNCTIONS, _shuffle_call),
    ((F.linear,), _linear_call),
    ((F.batch_norm,), _batch_norm_call),
    ((torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze), _reshape_arg),
    ((operator.getitem,), _getitem),
    ((F.dropout, F.dropout2d), _dropout_call),
)
METHODS: dict[str, Converter] = _table(
    (('contiguous', 'clone', 'detach'), _alias_arg),
    (('float', 'to'), _same_dtype_alias),
    (_ACT_METHODS, _activation_call),
    (_BINARY_METHODS, _binary_call),
    (('neg', 'neg_'), _neg),
    (('mean',), _mean_call),
    (('softmax', 'log_softmax'), _softmax_method),
    (('argmax',), _argmax_call),
    (('view', 'reshape', 'flatten', 'squeeze', 'unsqueeze'), _reshape_arg),
)


# -- layer builders --------------------------------------------------------------------------

def _conv_layer(lo, n, x, weight, bias, stride, padding, dilation, groups) -> None:
    lo.check_nchw_result(n)
    out = lo.new_value(n)
    kh, kw = weight.shape[-2:]
    lo.emit(n, Kind.CONV, [x], out, ConvAttrs(weight, bias, stride, padding, dilation, groups,
                                              (kh, kw)))


def _conv_transpose_layer(lo, n, x, weight, bias, stride, crop, output_padding,
                          dilation, groups) -> None:
    """Emit a transposed convolution; torch's ``padding`` of one is a crop of its output."""
    lo.check_nchw_result(n)
    out = lo.new_value(n)
    attrs = ConvTransposeAttrs(weight, bias, stride, crop, output_padding, dilation, groups,
                               tuple(weight.shape[-2:]))
    lo.emit(n, Kind.CONV_TRANSPOSE, [x], out, attrs)


def _depth_to_space(lo: Lowering, n: fx.Node, x: Any, block: Any, order: str) -> None:
    """
    Lower a depth-to-space (pixel shuffle) as an index copy: no arithmetic, no weights.

    Output (y, x) reads input position (y // block, x // block) at a channel that depends
    on its phase (y % block, x % block): ``c * block * block + phase`` in PyTorch's order,
    ``phase * depth + c`` in TF's. A BatchNorm after it becomes an epilogue step.
    """
    v = lo.main_input(n, x)
    lo.check_nchw_result(n)
    out = lo.new_value(n)
    lo.emit(n, Kind.DEPTH_TO_SPACE, [v], out, DepthToSpaceAttrs(int(block), order))


def _pool(lo: Lowering, n: fx.Node, x: Any, kind: str, args: dict) -> None:
    v = lo.main_input(n, x)
    lo.check_nchw_result(n)
    k = _pair(args['kernel_size'])
    stride = _pair(args['stride'] if args.get('stride') not in (None, []) else k)
    attrs = PoolAttrs(kind, k, stride, Padding.even(*_pair(args['padding'])),
                      _pair(args.get('dilation', 1)), bool(args['ceil_mode']),
                      bool(args.get('count_include_pad', True)), args.get('divisor_override'))
    out = lo.new_value(n)
    lo.emit(n, Kind.POOL, [v], out, attrs)


def _adaptive_avg(lo: Lowering, n: fx.Node, x: Any, size: Any) -> None:
    v = lo.main_input(n, x)
    value = lo.values[v]
    size = _pair(size)
    size = (value.height if size[0] is None else size[0],
            value.width if size[1] is None else size[1])
    if size == (1, 1):
        return _gap(lo, n, v)
    if size == (value.height, value.width):
        return lo.alias(n, x)
    if value.height % size[0] == 0 and value.width % size[1] == 0:
        k = (value.height // size[0], value.width // size[1])
        return _pool(lo, n, x, 'avg', {'kernel_size': k, 'stride': k, 'padding': 0,
                                       'ceil_mode': False, 'count_include_pad': True,
                                       'divisor_override': None})
    raise lo.unsupported(n, f'adaptive average pooling to {size} from '
                            f'{value.height}x{value.width} (only 1x1 or divisors)')


def _mean(lo: Lowering, n: fx.Node, x: Any, dim: Any, keepdim: bool) -> None:
    dims = tuple(sorted(d % 4 for d in ((dim,) if isinstance(dim, int) else dim or ())))
    if dims != (2, 3):
        raise lo.unsupported(n, f'mean over dims {dim} (only the spatial dims 2, 3)')
    _gap(lo, n, lo.main_input(n, x))


def _gap(lo: Lowering, n: fx.Node, v: int) -> None:
    out = lo.new_value(n)
    lo.emit(n, Kind.GAP, [v], out, None)


def _resample(lo: Lowering, n: fx.Node, x: Any, args: dict) -> None:
    v = lo.main_input(n, x)
    lo.check_nchw_result(n)
    value = lo.values[v]
    _, _, ho, wo = lo.results[n].shape
    if args.get('mode') not in ('nearest', 'nearest-exact', 'bilinear', 'bicubic', 'area'):
        raise lo.unsupported(n, f'resampling mode {args.get("mode")!r}')
    if args.get('antialias'):
        # The weights below are probed one axis at a time on inputs one row or column
        # across; antialiased, torch gives another result there than on a whole frame.
        raise lo.unsupported(n, 'antialiased resampling (antialias=True) is not supported')
    # The separable weight matrices come from the real F.interpolate on probes, so every
    # mode and option behaves exactly as torch does.
    try:
        ah = _axis_matrix(args, value.height, ho, axis=0)
        aw = _axis_matrix(args, value.width, wo, axis=1)
    except (RuntimeError, ValueError) as exc:
        raise lo.unsupported(n, f'could not derive resampling weights: {exc}') from None
    out = lo.new_value(n)
    lo.emit(n, Kind.RESAMPLE, [v], out, ResampleAttrs(ah, aw))


def _pad(lo: Lowering, n: fx.Node, x: Any, pad: tuple, mode: str, value: float) -> None:
    v = lo.main_input(n, x)
    lo.check_nchw_result(n)
    if len(pad) not in (2, 4):
        raise lo.unsupported(n, f'padding {pad} touches more than the spatial dims')
    _pad_value(lo, n, v, pad, mode, value, node_value=True)


def _pad_value(lo: Lowering, n: fx.Node, v: int, pad: tuple, mode: str, value: float,
               node_value: bool = False) -> int:
    pad = tuple(pad) + (0, 0) * ((4 - len(pad)) // 2)
    src = lo.values[v]
    try:
        rows = _pad_map(src.height, pad[2], pad[3], mode)
        cols = _pad_map(src.width, pad[0], pad[1], mode)
    except (RuntimeError, ValueError, NotImplementedError) as exc:
        raise lo.unsupported(n, f'padding {pad} mode {mode!r}: {exc}') from None
    if node_value:
        out = lo.new_value(n)
    else:  # a padding_mode conv: an extra value before the conv
        out = len(lo.values)
        lo.values.append(Value(out, n.name + '_pad', src.channels, len(rows), len(cols),
                               src.dtype))
        lo.value_uses[out] = 1
    lo.emit(n, Kind.PAD, [v], out, PadAttrs(rows, cols, value, mode),
            name=lo.layer_name(n) + ('' if node_value else '.pad'))
    return out


def _cat(lo: Lowering, n: fx.Node, tensors: Any, dim: int) -> None:
    lo.check_nchw_result(n)
    if dim % 4 != 1:
        raise lo.unsupported(n, f'concatenation along dim {dim} (only channels)')
    ids = []
    for t in tensors:
        v = lo.value(t)
        if v is None:
            raise lo.unsupported(n, 'concatenation with a constant tensor')
        ids.append(v)
    sizes = {(lo.values[i].height, lo.values[i].width) for i in ids}
    if len(sizes) != 1 or any(lo.values[i].view != 'nchw' for i in ids):
        raise lo.unsupported(n, f'concatenation of tensors of sizes {sorted(sizes)}')
    out = lo.new_value(n)
    lo.emit(n, Kind.CAT, ids, out, None)


def _positionwise(lo: Lowering, n: fx.Node, x: Any, fn: str, dim: Any, keepdim: bool) -> None:
    v = lo.main_input(n, x)
    if dim is None or dim % 4 != 1:
        raise lo.unsupported(n, f'{fn} over dim {dim} (only the channel dim 1)')
    out = lo.new_value(n)
    lo.emit(n, Kind.POSITIONWISE, [v], out, PositionwiseAttrs(fn, keepdim))


def _linear(lo: Lowering, n: fx.Node, x: Any, weight: Any, bias: Any) -> None:
    v = lo.value(x)
    if v is None or not lo.is_global(v) or lo.values[v].view != 'nc':
        raise lo.unsupported(n, 'Linear on anything but a pooled (1, C) vector')
    if isinstance(weight, fx.Node) or isinstance(bias, fx.Node):
        raise lo.unsupported(n, 'Linear weights computed from the input')
    out = lo.new_value(n)
    w = weight.detach()[:, :, None, None]
    lo.emit(n, Kind.CONV, [v], out,
            ConvAttrs(w, _opt(bias), (1, 1), NO_PADDING, (1, 1), 1, (1, 1)))


def _static_index(lo: Lowering, index: Any) -> Any:
    """Evaluate an index whose parts are static, slice bounds included (KeyError if not)."""
    if isinstance(index, slice):
        return slice(*(lo.const(v) for v in (index.start, index.stop, index.step)))
    if isinstance(index, (list, tuple)):
        return type(index)(_static_index(lo, part) for part in index)
    return lo.const(index)


def _reshape_global(lo: Lowering, n: fx.Node, x: Any) -> None:
    """Reshapes between (1, C) and (1, C, 1, 1) of pooled vectors are free."""
    v = lo.value(x)
    shape = lo.results[n].shape
    if v is None or not lo.is_global(v):
        raise lo.unsupported(n, 'reshaping a spatial tensor')
    c = lo.values[v].channels
    if shape == (1, c):
        view = 'nc'
    elif shape == (1, c, 1, 1):
        view = 'nchw'
    else:
        raise lo.unsupported(n, f'reshape of a (1, {c}) vector to {shape}')
    producer = lo.producer[v]
    if lo.value_uses.get(v, 0) == 1 and producer.output == v:
        extend(lo, producer, n)
        lo.values[v].view = view
        return
    # The same vector in another layout: a cheap pointwise copy.
    out = lo.new_value(n)
    lo.emit(n, Kind.POINTWISE, [v], out, None)


# -- argument normalisation ------------------------------------------------------------------

def _opt(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach()


def _pair(v: Any) -> tuple:
    if isinstance(v, (list, tuple)):
        return tuple(v) if len(v) == 2 else (v[0], v[0])
    return (v, v)


def _conv_padding(padding: Any, kernel: Any, dilation: Any) -> Padding:
    """Return the zero padding of a convolution given torch's ``padding`` argument."""
    kernel, dilation = _pair(kernel), _pair(dilation)
    if isinstance(padding, str):
        if padding == 'valid':
            return NO_PADDING
        total = [d * (k - 1) for k, d in zip(kernel, dilation)]  # 'same'
        return Padding(total[0] // 2, total[0] - total[0] // 2, total[1] // 2,
                       total[1] - total[1] // 2)
    return Padding.even(*_pair(padding))


def _module_activation(mod: nn.Module) -> tuple[str, tuple]:
    name = _ACT_MODULES[type(mod)]
    if isinstance(mod, nn.Hardtanh):  # ReLU6 is a Hardtanh
        return 'hardtanh', (float(mod.min_val), float(mod.max_val))
    if isinstance(mod, nn.LeakyReLU):
        return name, (float(mod.negative_slope),)
    if isinstance(mod, nn.GELU):
        return name, (mod.approximate,)
    if isinstance(mod, nn.ELU):
        return name, (float(mod.alpha),)
    if isinstance(mod, nn.Softplus):
        return name, (float(mod.beta), float(mod.threshold))
    if isinstance(mod, nn.PReLU):
        return name, (mod.weight.detach(),)
    return name, ()


def _call_activation(lo: Lowering, n: fx.Node) -> tuple[str, tuple]:
    name = _ACT_FUNCTIONS.get(n.target) if n.op == 'call_function' else \
        _ACT_METHODS[n.target]
    if name == 'relu6':
        return 'hardtanh', (0.0, 6.0)
    if name == 'hardtanh':
        a = lo.args(n, ['input', 'min_val', 'max_val'], {'min_val': -1.0, 'max_val': 1.0})
        return 'hardtanh', (float(a['min_val']), float(a['max_val']))
    if name == 'clamp':
        a = lo.args(n, ['input', 'min', 'max'], {'min': None, 'max': None})
        if isinstance(a['min'], torch.Tensor) or isinstance(a['max'], torch.Tensor):
            raise lo.unsupported(n, 'clamp with tensor bounds')
        return 'clamp', (a['min'], a['max'])
    if name == 'leaky_relu':
        a = lo.args(n, ['input', 'negative_slope'], {'negative_slope': 0.01})
        return 'leaky_relu', (float(a['negative_slope']),)
    if name == 'gelu':
        a = lo.args(n, ['input'], {'approximate': 'none'})
        return 'gelu', (a['approximate'],)
    if name == 'elu':
        a = lo.args(n, ['input', 'alpha'], {'alpha': 1.0})
        return 'elu', (float(a['alpha']),)
    if name == 'softplus':
        a = lo.args(n, ['input', 'beta', 'threshold'], {'beta': 1.0, 'threshold': 20.0})
        return 'softplus', (float(a['beta']), float(a['threshold']))
    return name, ()


def _axis_matrix(args: dict, n_in: int, n_out: int, axis: int) -> torch.Tensor:
    """Return the (n_out, n_in) float64 weights of F.interpolate along one axis."""
    probe = torch.eye(n_in, dtype=torch.float64)
    probe = probe.view(1, n_in, n_in, 1) if axis == 0 else probe.view(1, n_in, 1, n_in)
    kwargs = {'mode': args['mode'], 'align_corners': args.get('align_corners'),
              'antialias': bool(args.get('antialias', False))}
    if args.get('size') is not None:
        size = _pair(args['size'])
        kwargs['size'] = (size[0], 1) if axis == 0 else (1, size[1])
    else:
        sf = _pair(args['scale_factor'])
        kwargs['scale_factor'] = (float(sf[0]), 1.0) if axis == 0 else (1.0, float(sf[1]))
        kwargs['recompute_scale_factor'] = args.get('recompute_scale_factor')
    if kwargs['mode'] in ('nearest', 'nearest-exact', 'area'):
        kwargs.pop('align_corners')
    if not kwargs['antialias']:
        kwargs.pop('antialias')
    out = F.interpolate(probe, **kwargs)
    out = out[0, :, :, 0] if axis == 0 else out[0, :, 0, :]  # (n_in, n_out)
    if out.shape[1] != n_out:
        raise ValueError(f'probe gave {out.shape[1]} outputs, the model {n_out}')
    return out.t().contiguous()


def _pad_map(n_in: int, before: int, after: int, mode: str) -> torch.Tensor:
    """Return int64 (n_out,): the source index of every output index, -1 for constants."""
    probe = torch.arange(1, n_in + 1, dtype=torch.float64).view(1, 1, n_in)
    if before == 0 and after == 0:
        out = probe
    elif mode == 'constant':
        out = F.pad(probe, (before, after), mode='constant', value=0.0)
    else:
        out = F.pad(probe, (before, after), mode=mode)
    return (out.reshape(-1) - 1).round().long()
