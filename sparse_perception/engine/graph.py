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
Lower an unmodified ``nn.Module`` (traced with torch.fx) into the engine's layer program.

The program is a list of :class:`Layer` in execution order. A layer has a *core* (a
convolution, pooling, resampling, padding, concatenation, global pooling, or the identity)
followed by an *epilogue*: a chain of pointwise :class:`Step` (folded BatchNorm is already in
the weights; activations, per-channel affine maps, scalar arithmetic, and binary ops with
another cached tensor such as a residual add). Every layer's output is one cached tensor.

Lowering runs the traced graph once on an example input to learn every tensor's shape and to
evaluate the shape arithmetic that models do at run time (``x.shape[-2:]`` and the like) to
constants. Fusion rules:

- BatchNorm2d right after a convolution (and only used there) folds into its weights.
- A pointwise op whose main operand is used only by it joins the producer's epilogue; the
  fused layer then runs where its last op ran, so every operand is ready.
- Identity, dropout (eval) and ``contiguous`` are aliases.
- Depth-to-space (``nn.PixelShuffle``, ``F.pixel_shuffle``, TF-order ``ops.depth_to_space``)
  becomes a ``depth_to_space`` layer: an index copy (no weights, no MACs).

An op the engine cannot run incrementally raises :class:`UnsupportedOpError` naming it,
unless it and everything after it form a *dense tail* without convolutions (an argmax, a
flatten and linear classifier, ...): that tail is then run densely on the cached tensors that
feed it, every frame in which one of them changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import operator
from typing import Any

from sparse_perception.engine.errors import EngineError, UnsupportedOpError
from sparse_perception.engine.ops import depth_to_space
from sparse_perception.kernels.steps import Step
import torch
from torch import fx
import torch.nn as nn
import torch.nn.functional as F

# Activations: name -> (module types, functions, method names). Parameters are normalised by
# _activation() below; the references apply them (kernels/epilogue.py, ACTIVATIONS).
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
_ALIAS_MODULES = (nn.Identity, nn.Dropout, nn.Dropout2d, nn.Dropout1d, nn.AlphaDropout)
_ALIAS_METHODS = {'contiguous', 'clone', 'detach', 'float'}
_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
               nn.ConvTranspose3d)
_CONV_FUNCTIONS = (F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d,
                   F.conv_transpose3d)
# Depth-to-space functions -> the order in which they read the channels of a block.
_SHUFFLE_FUNCTIONS = {F.pixel_shuffle: 'torch', torch.pixel_shuffle: 'torch',
                      depth_to_space: 'tf'}


@dataclass
class Value:
    """A tensor of the program: batch 1, ``channels x height x width``, one cache each."""

    index: int
    name: str
    channels: int
    height: int
    width: int
    dtype: torch.dtype
    # How the model sees it: 'nchw' (1, C, H, W); 'nc' (1, C) for a squeezed global vector;
    # 'nhw' (1, H, W) for an argmax without keepdim.
    view: str = 'nchw'

    @property
    def positions(self) -> int:
        """Return H * W, the number of data rows of the cache."""
        return self.height * self.width


@dataclass
class Layer:
    """A core op plus its epilogue, producing one cached value."""

    name: str  # module path of the core (or fx node name)
    names: tuple[str, ...]  # every fused node (module paths and fx names), for overrides
    kind: str  # 'input' 'conv' 'conv_transpose' 'pool' 'resample' 'pad' 'depth_to_space'
    #            'cat' 'gap' 'pointwise' 'positionwise'
    inputs: list[int]  # value ids read by the core
    output: int  # value id written
    attrs: dict = field(default_factory=dict)
    epilogue: list[Step] = field(default_factory=list)
    order: int = 0  # fx position of the last fused node (execution order)

    def operands(self) -> list[int]:
        """Return every value id the layer reads, core inputs and epilogue ones."""
        return self.inputs + [s.operand for s in self.epilogue if s.operand is not None]


@dataclass
class Program:
    """The lowered model for one input shape."""

    values: list[Value]
    layers: list[Layer]
    input_id: int  # value id of the model input
    tail: fx.GraphModule  # frontier tensors -> the model's output structure
    frontier: list[int]  # value ids fed to ``tail``, in its placeholder order
    tail_is_dense: bool  # True when the tail holds ops (not just the output structure)
    tail_ops: tuple[str, ...]  # names of the ops run densely in the tail
    tail_mutates: bool = False  # the tail changes a tensor in place: feed it copies


class _Recorder(fx.Interpreter):
    """Run the graph once; keep constants and static values, only shapes of the rest."""

    def __init__(self, gm: fx.GraphModule, dependent: set):
        super().__init__(gm)
        self.dependent = dependent
        self.results: dict[fx.Node, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        result = super().run_node(n)
        if isinstance(result, torch.Tensor) and n in self.dependent:
            self.results[n] = _Meta(tuple(result.shape), result.dtype)
        elif n in self.dependent and _holds_tensor(result):
            self.results[n] = _Opaque()  # e.g. the (values, indices) of max(dim)
        else:
            self.results[n] = result
        return result


@dataclass(frozen=True)
class _Meta:
    shape: tuple
    dtype: torch.dtype


class _Opaque:
    """A computed value that holds tensors but is not one (only a dense tail can use it)."""


def _holds_tensor(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, (list, tuple)):
        return any(_holds_tensor(v) for v in value)
    if isinstance(value, dict):
        return any(_holds_tensor(v) for v in value.values())
    return False


def trace(module: nn.Module) -> fx.GraphModule:
    """Trace ``module`` with torch.fx, with an error that says what to do when it fails."""
    if isinstance(module, fx.GraphModule):
        return module
    if fx.Tracer().is_leaf_module(module, ''):
        module = nn.Sequential(module)  # a bare torch.nn layer: trace it as a call
    try:
        # fx.wrap only keeps calls made through the defining module (``ops.depth_to_space``);
        # autowrap also keeps a model's own ``from ... import depth_to_space`` as one call.
        tracer = fx.Tracer(autowrap_functions=(depth_to_space,))
        graph = tracer.trace(module)
        return fx.GraphModule(tracer.root, graph, type(module).__name__)
    except Exception as exc:  # torch.fx raises many types for data-dependent control flow
        raise EngineError(
            f'torch.fx could not trace {type(module).__name__}: {exc}. The engine needs a '
            'traceable model: move data-dependent Python control flow out of forward(), or '
            'pass a torch.fx.GraphModule you traced yourself.') from exc


def lower(gm: fx.GraphModule, example: torch.Tensor, allow_dense_tail: bool = True) -> Program:
    """Lower the traced model for inputs shaped like ``example`` (1, C, H, W)."""
    return _Lowering(gm, allow_dense_tail).run(example)


class _Lowering:
    def __init__(self, gm: fx.GraphModule, allow_dense_tail: bool):
        self.gm = gm
        self.allow_dense_tail = allow_dense_tail
        self.modules = dict(gm.named_modules())
        self.values: list[Value] = []
        self.layers: list[Layer] = []
        self.value_of: dict[fx.Node, int] = {}  # node -> value id (aliases share)
        self.producer: dict[int, Layer] = {}
        self.value_uses: dict[int, int] = {}  # value id -> number of tensor consumers

    # -- driver ------------------------------------------------------------------------------

    def run(self, example: torch.Tensor) -> Program:
        graph = self.gm.graph
        placeholders = [n for n in graph.nodes if n.op == 'placeholder']
        if len(placeholders) != 1:
            raise EngineError(f'the model takes {len(placeholders)} inputs '
                              f'({", ".join(n.name for n in placeholders)}); the engine runs '
                              'models with exactly one image tensor input')
        self.input_node = placeholders[0]
        self.dependent = self._dependent_nodes()
        recorder = _Recorder(self.gm, self.dependent)
        with torch.no_grad():
            recorder.run(example)
        self.results = recorder.results
        self.node_order = {n: i for i, n in enumerate(graph.nodes)}
        self._count_uses()

        x = self._new_value(self.input_node, 'input')
        self.input_value = x
        input_layer = Layer('input', ('input',), 'input', [], x, order=0)
        self._add_layer(input_layer)

        self.unsupported: dict[fx.Node, UnsupportedOpError] = {}
        self.tail_nodes: list[fx.Node] = []
        for n in graph.nodes:
            if n.op in ('placeholder', 'output') or n not in self.dependent:
                continue
            result = self.results[n]
            if not isinstance(result, (_Meta, _Opaque)):
                continue  # static (shapes and sizes): evaluated, used as constants
            self._check_mutation(n)  # never tolerated, not even in a dense tail
            if any(a in self.tail_set for a in _node_args(n)):
                self.tail_nodes.append(n)
                continue
            try:
                if isinstance(result, _Opaque):
                    raise self._unsupported(n, 'its result is not a single tensor')
                self._lower_node(n)
            except UnsupportedOpError as exc:
                self.unsupported[n] = exc
                self.tail_nodes.append(n)
        self._check_tail()
        self.layers.sort(key=lambda layer: layer.order)
        tail, frontier, dense = self._build_tail()
        return Program(self.values, self.layers, x, tail, frontier, dense,
                       tuple(self._describe(n) for n in self.tail_nodes),
                       any(self._mutates_input(n) for n in self.tail_nodes))

    @property
    def tail_set(self) -> set:
        return set(self.tail_nodes)

    def _dependent_nodes(self) -> set:
        dependent = set()
        for n in self.gm.graph.nodes:
            if n is self.input_node or any(a in dependent for a in _node_args(n)):
                dependent.add(n)
        return dependent

    def _count_uses(self) -> None:
        # Uses per node after alias resolution, counting only tensor consumers (shape reads
        # like x.shape are static and do not need the value).
        self.node_uses: dict[fx.Node, int] = {}
        for n in self.gm.graph.nodes:
            for a in _node_args(n):
                if a in self.dependent and isinstance(self.results.get(a), _Meta):
                    if n.op == 'output' or isinstance(self.results.get(n), _Meta):
                        self.node_uses[a] = self.node_uses.get(a, 0) + 1

    # -- values and layers --------------------------------------------------------------------

    def _new_value(self, n: fx.Node, name: str | None = None) -> int:
        meta = self.results[n]
        shape = meta.shape
        view = 'nchw'
        if len(shape) == 4 and shape[0] == 1:
            c, h, w = shape[1:]
        elif len(shape) == 2 and shape[0] == 1:
            c, h, w, view = shape[1], 1, 1, 'nc'
        elif len(shape) == 3 and shape[0] == 1:
            c, h, w, view = 1, shape[1], shape[2], 'nhw'
        else:
            raise self._unsupported(n, f'its result has shape {shape}; the engine handles '
                                       'batch 1 tensors (1, C, H, W)')
        value = Value(len(self.values), name or n.name, c, h, w, meta.dtype, view)
        self.values.append(value)
        self.value_of[n] = value.index
        self.value_uses[value.index] = self.node_uses.get(n, 0)
        return value.index

    def _add_layer(self, layer: Layer) -> Layer:
        self.layers.append(layer)
        self.producer[layer.output] = layer
        return layer

    def _value(self, a: Any) -> int | None:
        """Value id of a node argument that is a program tensor, else None."""
        if isinstance(a, fx.Node) and a in self.value_of:
            return self.value_of[a]
        return None

    def _const(self, a: Any) -> Any:
        """Evaluate a node argument that does not depend on the input."""
        if isinstance(a, fx.Node):
            if a in self.value_of:
                raise KeyError(a)
            return self.results[a]
        if isinstance(a, (list, tuple)):
            return type(a)(self._const(b) for b in a)
        if isinstance(a, dict):
            return {k: self._const(b) for k, b in a.items()}
        return a

    def _args(self, n: fx.Node, names: list[str], defaults: dict) -> dict:
        """Bind ``n.args``/``n.kwargs`` to ``names``; tensors stay nodes, others evaluated."""
        bound = dict(defaults)
        for name, a in zip(names, n.args):
            bound[name] = a
        bound.update(n.kwargs)
        out = {}
        for name, a in bound.items():
            if isinstance(a, fx.Node) and a in self.value_of:
                out[name] = a
            elif isinstance(a, (list, tuple)) and any(
                    isinstance(b, fx.Node) and b in self.value_of for b in a):
                out[name] = a
            else:
                out[name] = self._const(a)
        return out

    def _mutates_input(self, n: fx.Node) -> bool:
        if n.op == 'call_method':
            return n.target.endswith('_') and not n.target.endswith('__')
        if n.op == 'call_module':
            return bool(getattr(self.modules[n.target], 'inplace', False))
        if n.op == 'call_function':
            return (n.kwargs.get('inplace') is True
                    or n.target in (operator.iadd, operator.isub, operator.imul,
                                    operator.itruediv, torch.relu_, F.relu_))
        return False

    def _check_mutation(self, n: fx.Node) -> None:
        """
        Refuse an in-place op whose input is read again afterwards.

        The traced graph keeps the value from before the mutation where eager PyTorch would
        read the mutated one, so the two would disagree.
        """
        if not n.args or not isinstance(n.args[0], fx.Node) or not self._mutates_input(n):
            return
        target = n.args[0]
        later = [u for u in target.users if u is not n
                 and self.node_order[u] > self.node_order[n]]
        if later:
            raise self._unsupported(
                n, f'it changes {target.name!r} in place, which {later[0].name!r} reads '
                'afterwards (eager PyTorch and the traced graph disagree there); use the '
                'out-of-place op')

    def _describe(self, n: fx.Node) -> str:
        if n.op == 'call_module':
            return f'module {n.target!r} ({type(self.modules[n.target]).__name__})'
        if n.op == 'call_method':
            return f'method Tensor.{n.target}'
        name = getattr(n.target, '__name__', str(n.target))
        module = getattr(n.target, '__module__', None) or ''
        return f'function {module + "." if module else ""}{name}'

    def _unsupported(self, n: fx.Node, reason: str) -> UnsupportedOpError:
        return UnsupportedOpError(self._describe(n), n.name, reason)

    # -- lowering one node -------------------------------------------------------------------

    def _lower_node(self, n: fx.Node) -> None:
        if n.op == 'call_module':
            mod = self.modules[n.target]
            if isinstance(mod, _ALIAS_MODULES):
                return self._alias(n, n.args[0])
            if isinstance(mod, nn.Conv2d):
                return self._conv_module(n, mod)
            if isinstance(mod, nn.ConvTranspose2d):
                return self._conv_transpose_module(n, mod)
            if isinstance(mod, nn.BatchNorm2d):
                return self._batch_norm_module(n, mod)
            if type(mod) in _ACT_MODULES:
                return self._pointwise(n, n.args[0], Step('act', *_module_activation(mod)))
            if isinstance(mod, (nn.MaxPool2d, nn.AvgPool2d)):
                return self._pool_module(n, mod)
            if isinstance(mod, nn.AdaptiveAvgPool2d):
                return self._adaptive_avg(n, n.args[0], mod.output_size)
            if isinstance(mod, nn.Upsample):
                return self._resample(n, n.args[0], {
                    'size': mod.size, 'scale_factor': mod.scale_factor, 'mode': mod.mode,
                    'align_corners': mod.align_corners,
                    'recompute_scale_factor': mod.recompute_scale_factor})
            if isinstance(mod, (nn.ZeroPad2d, nn.ConstantPad2d, nn.ReflectionPad2d,
                                nn.ReplicationPad2d, nn.CircularPad2d)):
                mode = {nn.ReflectionPad2d: 'reflect', nn.ReplicationPad2d: 'replicate',
                        nn.CircularPad2d: 'circular'}.get(type(mod), 'constant')
                return self._pad(n, n.args[0], tuple(mod.padding), mode,
                                 float(getattr(mod, 'value', 0.0)))
            if isinstance(mod, (nn.Softmax, nn.LogSoftmax)):
                fn = 'softmax' if isinstance(mod, nn.Softmax) else 'log_softmax'
                return self._positionwise(n, n.args[0], fn, mod.dim, False)
            if isinstance(mod, nn.Linear):
                return self._linear(n, n.args[0], mod.weight, mod.bias)
            if isinstance(mod, nn.Flatten):
                return self._reshape_global(n, n.args[0])
            if isinstance(mod, nn.PixelShuffle):
                return self._depth_to_space(n, n.args[0], mod.upscale_factor, 'torch')
            if isinstance(mod, _CONV_TYPES):
                raise self._unsupported(n, 'only 2-D convolutions are supported')
            raise self._unsupported(n, 'this module type is not supported')
        if n.op == 'call_function':
            return self._lower_function(n)
        if n.op == 'call_method':
            return self._lower_method(n)
        raise self._unsupported(n, f'fx op {n.op!r} on the input is not supported')

    def _lower_function(self, n: fx.Node) -> None:
        target = n.target
        if target in _ACT_FUNCTIONS:
            return self._pointwise(n, n.args[0], Step('act', *self._function_activation(n)))
        if target in _BINARY_FUNCTIONS:
            args = self._args(n, ['a', 'b'], {})
            if args.get('alpha', 1) != 1:
                raise self._unsupported(n, 'add/sub with alpha != 1 is not supported')
            return self._binary(n, _BINARY_FUNCTIONS[target], args['a'], args['b'])
        if target is operator.neg or target is torch.neg:
            return self._pointwise(n, n.args[0], Step('scalar', 'mul', const=-1.0))
        if target in (torch.cat, torch.concat):
            args = self._args(n, ['tensors', 'dim'], {'dim': 0})
            return self._cat(n, args['tensors'], args['dim'])
        if target in (F.max_pool2d, F.avg_pool2d, torch.max_pool2d):
            names = ['input', 'kernel_size', 'stride', 'padding']
            if target in (F.max_pool2d, torch.max_pool2d):
                names += ['dilation', 'ceil_mode', 'return_indices']
                defaults = {'stride': None, 'padding': 0, 'dilation': 1, 'ceil_mode': False,
                            'return_indices': False}
                kind = 'max'
            else:
                names += ['ceil_mode', 'count_include_pad', 'divisor_override']
                defaults = {'stride': None, 'padding': 0, 'ceil_mode': False,
                            'count_include_pad': True, 'divisor_override': None}
                kind = 'avg'
            args = self._args(n, names, defaults)
            if args.get('return_indices'):
                raise self._unsupported(n, 'return_indices=True is not supported')
            return self._pool(n, args['input'], kind, args)
        if target is F.adaptive_avg_pool2d:
            args = self._args(n, ['input', 'output_size'], {})
            return self._adaptive_avg(n, args['input'], args['output_size'])
        if target is torch.mean:
            args = self._args(n, ['input', 'dim', 'keepdim'], {'dim': None, 'keepdim': False})
            return self._mean(n, args['input'], args['dim'], args['keepdim'])
        if target in (F.interpolate, F.upsample, F.upsample_bilinear, F.upsample_nearest):
            args = self._args(n, ['input', 'size', 'scale_factor', 'mode', 'align_corners',
                                  'recompute_scale_factor', 'antialias'],
                              {'size': None, 'scale_factor': None, 'mode': 'nearest',
                               'align_corners': None, 'recompute_scale_factor': None,
                               'antialias': False})
            if target is F.upsample_bilinear:
                args['mode'], args['align_corners'] = 'bilinear', True
            if target is F.upsample_nearest:
                args['mode'] = 'nearest'
            x = args.pop('input')
            return self._resample(n, x, args)
        if target is F.pad:
            args = self._args(n, ['input', 'pad', 'mode', 'value'],
                              {'mode': 'constant', 'value': None})
            return self._pad(n, args['input'], tuple(args['pad']), args['mode'],
                             float(args['value'] or 0.0))
        if target in (F.softmax, F.log_softmax, torch.softmax, torch.log_softmax):
            args = self._args(n, ['input', 'dim'], {'dim': None})
            fn = 'softmax' if target in (F.softmax, torch.softmax) else 'log_softmax'
            if args.get('dtype') is not None:
                raise self._unsupported(n, 'softmax with a dtype is not supported')
            return self._positionwise(n, args['input'], fn, args['dim'], False)
        if target is torch.argmax:
            args = self._args(n, ['input', 'dim', 'keepdim'], {'dim': None, 'keepdim': False})
            return self._positionwise(n, args['input'], 'argmax', args['dim'], args['keepdim'])
        if target in (F.conv2d, F.conv_transpose2d):
            return self._conv_function(n)
        if target in _SHUFFLE_FUNCTIONS:
            order = _SHUFFLE_FUNCTIONS[target]
            names = ['input', 'upscale_factor'] if order == 'torch' else ['x', 'block']
            args = self._args(n, names, {})
            return self._depth_to_space(n, args[names[0]], args[names[1]], order)
        if target is F.linear:
            args = self._args(n, ['input', 'weight', 'bias'], {'bias': None})
            return self._linear(n, args['input'], args['weight'], args['bias'])
        if target is F.batch_norm:
            return self._batch_norm_function(n)
        if target in (torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze,
                      operator.getitem):
            return self._reshape_global(n, n.args[0])
        if target is F.dropout or target is F.dropout2d:
            args = self._args(n, ['input', 'p', 'training'], {'p': 0.5, 'training': True})
            if args['training']:
                raise self._unsupported(n, 'dropout with training=True is random')
            return self._alias(n, args['input'])
        raise self._unsupported(n, 'this function is not supported')

    def _lower_method(self, n: fx.Node) -> None:
        name = n.target
        if name in _ALIAS_METHODS:
            if name == 'float' and self.results[n].dtype != self.results[n.args[0]].dtype:
                raise self._unsupported(n, 'dtype conversion is not supported')
            return self._alias(n, n.args[0])
        if name == 'to':
            if self.results[n].dtype != self.results[n.args[0]].dtype:
                raise self._unsupported(n, 'dtype conversion is not supported')
            return self._alias(n, n.args[0])
        if name in _ACT_METHODS:
            return self._pointwise(n, n.args[0], Step('act', *self._function_activation(n)))
        if name in _BINARY_METHODS:
            args = self._args(n, ['a', 'b'], {})
            if args.get('alpha', 1) != 1:
                raise self._unsupported(n, 'add/sub with alpha != 1 is not supported')
            return self._binary(n, _BINARY_METHODS[name], args['a'], args['b'])
        if name in ('neg', 'neg_'):
            return self._pointwise(n, n.args[0], Step('scalar', 'mul', const=-1.0))
        if name == 'mean':
            args = self._args(n, ['input', 'dim', 'keepdim'], {'dim': None, 'keepdim': False})
            return self._mean(n, args['input'], args['dim'], args['keepdim'])
        if name in ('softmax', 'log_softmax'):
            args = self._args(n, ['input', 'dim'], {'dim': None})
            return self._positionwise(n, args['input'], name, args['dim'], False)
        if name == 'argmax':
            args = self._args(n, ['input', 'dim', 'keepdim'], {'dim': None, 'keepdim': False})
            return self._positionwise(n, args['input'], 'argmax', args['dim'], args['keepdim'])
        if name in ('view', 'reshape', 'flatten', 'squeeze', 'unsqueeze'):
            return self._reshape_global(n, n.args[0])
        raise self._unsupported(n, 'this tensor method is not supported')

    # -- op builders --------------------------------------------------------------------------

    def _alias(self, n: fx.Node, src: Any) -> None:
        v = self._value(src)
        if v is None:
            raise self._unsupported(n, 'alias of a non-tensor')
        self.value_of[n] = v
        self.value_uses[v] += self.node_uses.get(n, 0) - 1

    def _main_input(self, n: fx.Node, x: Any) -> int:
        v = self._value(x)
        if v is None:
            raise self._unsupported(n, 'its input is not a tensor computed from the image')
        if self.values[v].view != 'nchw' and not self._is_global(v):
            raise self._unsupported(n, f'its input has layout {self.values[v].view}')
        return v

    def _is_global(self, v: int) -> bool:
        value = self.values[v]
        return value.height == 1 and value.width == 1

    def _check_nchw_result(self, n: fx.Node) -> None:
        shape = self.results[n].shape
        if len(shape) != 4 or shape[0] != 1:
            raise self._unsupported(n, f'its result has shape {shape}; expected (1, C, H, W)')

    def _conv_module(self, n: fx.Node, mod: nn.Conv2d) -> None:
        x = self._main_input(n, n.args[0])
        weight, bias = mod.weight.detach(), _opt(mod.bias)
        pads = _conv_pads(mod.padding, mod.kernel_size, mod.dilation)
        if mod.padding_mode != 'zeros' and any(pads):
            x = self._pad_value(n, x, (pads[2], pads[3], pads[0], pads[1]),
                                {'reflect': 'reflect', 'replicate': 'replicate',
                                 'circular': 'circular'}[mod.padding_mode], 0.0)
            pads = (0, 0, 0, 0)
        self._conv_layer(n, x, weight, bias, tuple(mod.stride), pads, tuple(mod.dilation),
                         mod.groups)

    def _conv_function(self, n: fx.Node) -> None:
        transposed = n.target is F.conv_transpose2d
        names = ['input', 'weight', 'bias', 'stride', 'padding']
        defaults = {'bias': None, 'stride': 1, 'padding': 0, 'groups': 1, 'dilation': 1}
        if transposed:
            names += ['output_padding', 'groups', 'dilation']
            defaults['output_padding'] = 0
        else:
            names += ['dilation', 'groups']
        args = self._args(n, names, defaults)
        if any(isinstance(args[k], fx.Node) for k in ('weight', 'bias')):
            raise self._unsupported(n, 'convolution weights computed from the input')
        x = self._main_input(n, args['input'])
        weight = args['weight'].detach()
        bias = None if args['bias'] is None else args['bias'].detach()
        k = weight.shape[-2:]
        if transposed:
            return self._conv_transpose_layer(
                n, x, weight, bias, _pair(args['stride']), _pair(args['padding']),
                _pair(args['output_padding']), _pair(args['dilation']), args['groups'])
        pads = _conv_pads(args['padding'], k, _pair(args['dilation']))
        self._conv_layer(n, x, weight, bias, _pair(args['stride']), pads,
                         _pair(args['dilation']), args['groups'])

    def _conv_layer(self, n, x, weight, bias, stride, pads, dilation, groups) -> None:
        self._check_nchw_result(n)
        out = self._new_value(n)
        kh, kw = weight.shape[-2:]
        attrs = {'weight': weight, 'bias': bias, 'stride': stride, 'pads': pads,
                 'dilation': dilation, 'groups': groups, 'kernel': (kh, kw)}
        self._add_layer(Layer(self._layer_name(n), (self._layer_name(n), n.name), 'conv', [x],
                              out, attrs, order=self.node_order[n]))

    def _conv_transpose_module(self, n: fx.Node, mod: nn.ConvTranspose2d) -> None:
        x = self._main_input(n, n.args[0])
        if len(n.args) > 1 or 'output_size' in n.kwargs:
            raise self._unsupported(n, 'ConvTranspose2d with output_size is not supported')
        if mod.padding_mode != 'zeros':
            raise self._unsupported(n, f'padding_mode={mod.padding_mode!r}')
        self._conv_transpose_layer(n, x, mod.weight.detach(), _opt(mod.bias), tuple(mod.stride),
                                   tuple(mod.padding), tuple(mod.output_padding),
                                   tuple(mod.dilation), mod.groups)

    def _conv_transpose_layer(self, n, x, weight, bias, stride, padding, output_padding,
                              dilation, groups) -> Layer:
        self._check_nchw_result(n)
        out = self._new_value(n)
        attrs = {'weight': weight, 'bias': bias, 'stride': stride, 'padding': padding,
                 'output_padding': output_padding, 'dilation': dilation, 'groups': groups,
                 'kernel': tuple(weight.shape[-2:])}
        return self._add_layer(Layer(self._layer_name(n), (self._layer_name(n), n.name),
                                     'conv_transpose', [x], out, attrs,
                                     order=self.node_order[n]))

    def _depth_to_space(self, n: fx.Node, x: Any, block: Any, order: str) -> None:
        """
        Lower a depth-to-space (pixel shuffle) as an index copy: no arithmetic, no weights.

        Output (y, x) reads input position (y // block, x // block) at a channel that depends
        on its phase (y % block, x % block): ``c * block * block + phase`` in PyTorch's order,
        ``phase * depth + c`` in TF's. A BatchNorm after it becomes an epilogue step.
        """
        v = self._main_input(n, x)
        self._check_nchw_result(n)
        out = self._new_value(n)
        attrs = {'block': int(block), 'order': order}
        self._add_layer(Layer(self._layer_name(n), (self._layer_name(n), n.name),
                              'depth_to_space', [v], out, attrs, order=self.node_order[n]))

    def _batch_norm_module(self, n: fx.Node, mod: nn.BatchNorm2d) -> None:
        if mod.training or mod.running_mean is None:
            raise self._unsupported(n, 'BatchNorm2d must be in eval mode with running '
                                       'statistics (call model.eval())')
        self._batch_norm(n, n.args[0], mod.running_mean, mod.running_var, mod.weight,
                         mod.bias, mod.eps)

    def _batch_norm_function(self, n: fx.Node) -> None:
        args = self._args(n, ['input', 'running_mean', 'running_var', 'weight', 'bias',
                              'training', 'momentum', 'eps'],
                          {'weight': None, 'bias': None, 'training': False, 'momentum': 0.1,
                           'eps': 1e-5})
        if args['training'] or args['running_mean'] is None:
            raise self._unsupported(n, 'batch_norm in training mode')
        self._batch_norm(n, args['input'], args['running_mean'], args['running_var'],
                         args['weight'], args['bias'], args['eps'])

    def _batch_norm(self, n, x, mean, var, weight, bias, eps) -> None:
        inv = torch.rsqrt(var.detach().double() + eps)
        scale = inv * (weight.detach().double() if weight is not None else 1.0)
        shift = (bias.detach().double() if bias is not None else 0.0) - mean.double() * scale
        v = self._value(x)
        producer = self.producer.get(v) if v is not None else None
        if (producer is not None and producer.kind in ('conv', 'conv_transpose')
                and not producer.epilogue and self.value_uses.get(v, 0) == 1):
            _fold_affine(producer, scale, shift)
            self._extend(producer, n)
            return
        self._pointwise(n, x, Step('affine', 'affine', const=(scale, shift)))

    def _function_activation(self, n: fx.Node) -> tuple[str, tuple]:
        name = _ACT_FUNCTIONS.get(n.target) if n.op == 'call_function' else \
            _ACT_METHODS[n.target]
        if name == 'relu6':
            return 'hardtanh', (0.0, 6.0)
        if name == 'hardtanh':
            a = self._args(n, ['input', 'min_val', 'max_val'],
                           {'min_val': -1.0, 'max_val': 1.0})
            return 'hardtanh', (float(a['min_val']), float(a['max_val']))
        if name == 'clamp':
            a = self._args(n, ['input', 'min', 'max'], {'min': None, 'max': None})
            if isinstance(a['min'], torch.Tensor) or isinstance(a['max'], torch.Tensor):
                raise self._unsupported(n, 'clamp with tensor bounds')
            return 'clamp', (a['min'], a['max'])
        if name == 'leaky_relu':
            a = self._args(n, ['input', 'negative_slope'], {'negative_slope': 0.01})
            return 'leaky_relu', (float(a['negative_slope']),)
        if name == 'gelu':
            a = self._args(n, ['input'], {'approximate': 'none'})
            return 'gelu', (a['approximate'],)
        if name == 'elu':
            a = self._args(n, ['input', 'alpha'], {'alpha': 1.0})
            return 'elu', (float(a['alpha']),)
        if name == 'softplus':
            a = self._args(n, ['input', 'beta', 'threshold'], {'beta': 1.0, 'threshold': 20.0})
            return 'softplus', (float(a['beta']), float(a['threshold']))
        return name, ()

    def _binary(self, n: fx.Node, op: str, a: Any, b: Any) -> None:
        va, vb = self._value(a), self._value(b)
        if va is None and vb is None:
            raise self._unsupported(n, 'binary op without an image tensor')
        self._check_nchw_result(n)
        if va is not None and vb is not None:
            # The main operand has the result's size; among those, fuse into one whose
            # producer can take an epilogue (the fused layer runs at this node, so the other
            # operand is ready by then).
            size = self.results[n].shape[1:]
            candidates = []
            for i, v in enumerate((va, vb)):
                value = self.values[v]
                if (value.channels, value.height, value.width) == tuple(size):
                    candidates.append((self._fusable(v), self.producer[v].order, i))
            if not candidates:
                raise self._unsupported(n, 'both operands broadcast to a larger result')
            candidates.sort(reverse=True)
            main_is_b = candidates[0][2] == 1
            main, main_v, other_v = (b, vb, va) if main_is_b else (a, va, vb)
            self._check_operand(n, main_v, other_v)
            step = Step('binary', op, operand=other_v, reverse=main_is_b)
            return self._pointwise(n, main, step)
        main, const, reverse = (a, b, False) if va is not None else (b, a, True)
        if isinstance(const, (int, float)):
            if op in ('sub', 'div') and reverse:
                return self._pointwise(n, main, Step('scalar', op, const=float(const),
                                                     reverse=True))
            return self._pointwise(n, main, Step('scalar', op, const=float(const)))
        if not isinstance(const, torch.Tensor):
            raise self._unsupported(n, f'operand of type {type(const).__name__}')
        v = self._value(main)
        value = self.values[v]
        const = const.detach()
        try:
            full = torch.broadcast_to(const, (1, value.channels, value.height, value.width))
        except RuntimeError:
            raise self._unsupported(n, f'constant of shape {tuple(const.shape)} does not '
                                       'broadcast to the tensor') from None
        spatial = const.dim() >= 2 and const.shape[-1] * const.shape[-2] > 1
        rows = full[0].permute(1, 2, 0).reshape(-1, value.channels) if spatial else \
            full[0, :, 0, 0].reshape(1, -1)
        step = Step('binary', op, const=rows.contiguous(), reverse=reverse)
        return self._pointwise(n, main, step)

    def _check_operand(self, n: fx.Node, main: int, other: int) -> None:
        a, b = self.values[main], self.values[other]
        if (b.height, b.width) not in ((a.height, a.width), (1, 1)) or b.view != 'nchw':
            raise self._unsupported(n, f'operand shapes {a.height}x{a.width} and '
                                       f'{b.height}x{b.width} do not match (only equal sizes '
                                       'or 1x1 broadcasting are supported)')
        if b.channels not in (a.channels, 1):
            raise self._unsupported(n, 'operands broadcast along channels')

    def _fusable(self, v: int) -> bool:
        producer = self.producer.get(v)
        return (producer is not None and producer.kind not in ('input', 'gap', 'positionwise')
                and self.value_uses.get(v, 0) == 1 and producer.output == v)

    def _pointwise(self, n: fx.Node, x: Any, step: Step) -> None:
        v = self._main_input(n, x)
        if self.values[v].view == 'nchw':
            self._check_nchw_result(n)
        if step.operand is not None:
            self._check_operand(n, v, step.operand)
        if self._fusable(v):
            producer = self.producer[v]
            producer.epilogue.append(step)
            self._extend(producer, n)
            return
        out = self._new_value(n)
        self._add_layer(Layer(self._layer_name(n), (self._layer_name(n), n.name), 'pointwise',
                              [v], out, {}, [step], order=self.node_order[n]))

    def _extend(self, layer: Layer, n: fx.Node) -> None:
        """Make ``n`` the last node of ``layer``: its value is the layer's output now."""
        del self.producer[layer.output]
        old = self.values[layer.output]
        meta = self.results[n]
        old.name = n.name
        old.dtype = meta.dtype
        self.value_of[n] = layer.output
        self.value_uses[layer.output] = self.node_uses.get(n, 0)
        self.producer[layer.output] = layer
        layer.names = layer.names + (self._layer_name(n), n.name)
        layer.order = self.node_order[n]

    def _layer_name(self, n: fx.Node) -> str:
        return n.target if n.op == 'call_module' else n.name

    def _pool_module(self, n: fx.Node, mod: nn.Module) -> None:
        if isinstance(mod, nn.MaxPool2d):
            if mod.return_indices:
                raise self._unsupported(n, 'return_indices=True is not supported')
            args = {'kernel_size': mod.kernel_size, 'stride': mod.stride,
                    'padding': mod.padding, 'dilation': mod.dilation, 'ceil_mode': mod.ceil_mode}
            return self._pool(n, n.args[0], 'max', args)
        args = {'kernel_size': mod.kernel_size, 'stride': mod.stride, 'padding': mod.padding,
                'ceil_mode': mod.ceil_mode, 'count_include_pad': mod.count_include_pad,
                'divisor_override': mod.divisor_override}
        return self._pool(n, n.args[0], 'avg', args)

    def _pool(self, n: fx.Node, x: Any, kind: str, args: dict) -> None:
        v = self._main_input(n, x)
        self._check_nchw_result(n)
        k = _pair(args['kernel_size'])
        stride = _pair(args['stride'] if args.get('stride') not in (None, []) else k)
        attrs = {'pool': kind, 'kernel': k, 'stride': stride,
                 'padding': _pair(args['padding']), 'dilation': _pair(args.get('dilation', 1)),
                 'ceil_mode': bool(args['ceil_mode']),
                 'count_include_pad': bool(args.get('count_include_pad', True)),
                 'divisor_override': args.get('divisor_override')}
        out = self._new_value(n)
        self._add_layer(Layer(self._layer_name(n), (self._layer_name(n), n.name), 'pool', [v],
                              out, attrs, order=self.node_order[n]))

    def _adaptive_avg(self, n: fx.Node, x: Any, size: Any) -> None:
        v = self._main_input(n, x)
        value = self.values[v]
        size = _pair(size)
        size = (value.height if size[0] is None else size[0],
                value.width if size[1] is None else size[1])
        if size == (1, 1):
            return self._gap(n, v)
        if size == (value.height, value.width):
            return self._alias(n, x)
        if value.height % size[0] == 0 and value.width % size[1] == 0:
            k = (value.height // size[0], value.width // size[1])
            return self._pool(n, x, 'avg', {'kernel_size': k, 'stride': k, 'padding': 0,
                                            'ceil_mode': False, 'count_include_pad': True,
                                            'divisor_override': None})
        raise self._unsupported(n, f'adaptive average pooling to {size} from '
                                   f'{value.height}x{value.width} (only 1x1 or divisors)')

    def _mean(self, n: fx.Node, x: Any, dim: Any, keepdim: bool) -> None:
        dims = tuple(sorted(d % 4 for d in ((dim,) if isinstance(dim, int) else dim or ())))
        if dims != (2, 3):
            raise self._unsupported(n, f'mean over dims {dim} (only the spatial dims 2, 3)')
        self._gap(n, self._main_input(n, x))

    def _gap(self, n: fx.Node, v: int) -> None:
        out = self._new_value(n)
        self._add_layer(Layer(self._layer_name(n), (self._layer_name(n), n.name), 'gap', [v],
                              out, {}, order=self.node_order[n]))

    def _resample(self, n: fx.Node, x: Any, args: dict) -> None:
        v = self._main_input(n, x)
        self._check_nchw_result(n)
        value = self.values[v]
        _, _, ho, wo = self.results[n].shape
        if args.get('mode') not in ('nearest', 'nearest-exact', 'bilinear', 'bicubic', 'area'):
            raise self._unsupported(n, f'resampling mode {args.get("mode")!r}')
        # The separable weight matrices come from the real F.interpolate on probes, so every
        # mode and option behaves exactly as torch does.
        try:
            ah = _axis_matrix(args, value.height, ho, axis=0)
            aw = _axis_matrix(args, value.width, wo, axis=1)
        except (RuntimeError, ValueError) as exc:
            raise self._unsupported(n, f'could not derive resampling weights: {exc}') from None
        out = self._new_value(n)
        self._add_layer(Layer(self._layer_name(n), (self._layer_name(n), n.name), 'resample',
                              [v], out, {'ah': ah, 'aw': aw}, order=self.node_order[n]))

    def _pad(self, n: fx.Node, x: Any, pad: tuple, mode: str, value: float) -> None:
        v = self._main_input(n, x)
        self._check_nchw_result(n)
        if len(pad) not in (2, 4):
            raise self._unsupported(n, f'padding {pad} touches more than the spatial dims')
        out = self._pad_value(n, v, pad, mode, value, node_value=True)
        del out

    def _pad_value(self, n: fx.Node, v: int, pad: tuple, mode: str, value: float,
                   node_value: bool = False) -> int:
        pad = tuple(pad) + (0, 0) * ((4 - len(pad)) // 2)
        src = self.values[v]
        try:
            rows = _pad_map(src.height, pad[2], pad[3], mode)
            cols = _pad_map(src.width, pad[0], pad[1], mode)
        except (RuntimeError, ValueError, NotImplementedError) as exc:
            raise self._unsupported(n, f'padding {pad} mode {mode!r}: {exc}') from None
        if node_value:
            out = self._new_value(n)
        else:  # a padding_mode conv: an extra value before the conv
            out = len(self.values)
            self.values.append(Value(out, n.name + '_pad', src.channels, len(rows), len(cols),
                                     src.dtype))
            self.value_uses[out] = 1
        name = self._layer_name(n) + ('' if node_value else '.pad')
        self._add_layer(Layer(name, (name, n.name), 'pad', [v], out,
                              {'rows': rows, 'cols': cols, 'value': value, 'mode': mode},
                              order=self.node_order[n] - (0 if node_value else 0.5)))
        return out

    def _cat(self, n: fx.Node, tensors: Any, dim: int) -> None:
        self._check_nchw_result(n)
        if dim % 4 != 1:
            raise self._unsupported(n, f'concatenation along dim {dim} (only channels)')
        ids = []
        for t in tensors:
            v = self._value(t)
            if v is None:
                raise self._unsupported(n, 'concatenation with a constant tensor')
            ids.append(v)
        sizes = {(self.values[i].height, self.values[i].width) for i in ids}
        if len(sizes) != 1 or any(self.values[i].view != 'nchw' for i in ids):
            raise self._unsupported(n, f'concatenation of tensors of sizes {sorted(sizes)}')
        out = self._new_value(n)
        self._add_layer(Layer(self._layer_name(n), (self._layer_name(n), n.name), 'cat', ids,
                              out, {}, order=self.node_order[n]))

    def _positionwise(self, n: fx.Node, x: Any, fn: str, dim: Any, keepdim: bool) -> None:
        v = self._main_input(n, x)
        if dim is None or dim % 4 != 1:
            raise self._unsupported(n, f'{fn} over dim {dim} (only the channel dim 1)')
        out = self._new_value(n)
        self._add_layer(Layer(self._layer_name(n), (self._layer_name(n), n.name),
                              'positionwise', [v], out, {'fn': fn, 'keepdim': keepdim},
                              order=self.node_order[n]))

    def _linear(self, n: fx.Node, x: Any, weight: Any, bias: Any) -> None:
        v = self._value(x)
        if v is None or not self._is_global(v) or self.values[v].view != 'nc':
            raise self._unsupported(n, 'Linear on anything but a pooled (1, C) vector')
        if isinstance(weight, fx.Node) or isinstance(bias, fx.Node):
            raise self._unsupported(n, 'Linear weights computed from the input')
        out = self._new_value(n)
        w = weight.detach()[:, :, None, None]
        attrs = {'weight': w, 'bias': _opt(bias), 'stride': (1, 1), 'pads': (0, 0, 0, 0),
                 'dilation': (1, 1), 'groups': 1, 'kernel': (1, 1)}
        self._add_layer(Layer(self._layer_name(n), (self._layer_name(n), n.name), 'conv', [v],
                              out, attrs, order=self.node_order[n]))

    def _reshape_global(self, n: fx.Node, x: Any) -> None:
        """Reshapes between (1, C) and (1, C, 1, 1) of pooled vectors are free."""
        v = self._value(x)
        shape = self.results[n].shape
        if v is None or not self._is_global(v):
            raise self._unsupported(n, 'reshaping a spatial tensor')
        c = self.values[v].channels
        if shape == (1, c):
            view = 'nc'
        elif shape == (1, c, 1, 1):
            view = 'nchw'
        else:
            raise self._unsupported(n, f'reshape of a (1, {c}) vector to {shape}')
        producer = self.producer[v]
        if self.value_uses.get(v, 0) == 1 and producer.output == v:
            self._extend(producer, n)
            self.values[v].view = view
            return
        # The same vector in another layout: a cheap pointwise copy.
        out = self._new_value(n)
        self._add_layer(Layer(self._layer_name(n), (self._layer_name(n), n.name), 'pointwise',
                              [v], out, {}, [], order=self.node_order[n]))

    # -- the dense tail ------------------------------------------------------------------------

    def _check_tail(self) -> None:
        if not self.tail_nodes:
            return
        first = next(n for n in self.tail_nodes if n in self.unsupported)
        error = self.unsupported[first]
        convs = [n for n in self.tail_nodes if self._is_conv(n)]
        if not self.allow_dense_tail:
            raise error
        if convs:
            raise UnsupportedOpError(
                error.op, error.node,
                f'{error.reason}; it cannot run densely as a tail either because '
                f'{len(convs)} convolution(s) follow it (first: {self._describe(convs[0])})')

    def _is_conv(self, n: fx.Node) -> bool:
        if n.op == 'call_module':
            return isinstance(self.modules[n.target], _CONV_TYPES)
        return n.op == 'call_function' and n.target in _CONV_FUNCTIONS

    def _build_tail(self) -> tuple[fx.GraphModule, list[int], bool]:
        graph = fx.Graph()
        env: dict[fx.Node, Any] = {}
        frontier: list[int] = []
        placeholders: dict[int, fx.Node] = {}
        tail = self.tail_set
        output_node = next(n for n in self.gm.graph.nodes if n.op == 'output')

        def lookup(a: fx.Node) -> Any:
            if a in env:
                return env[a]
            if a in self.value_of and a not in tail:
                v = self.value_of[a]
                if v not in placeholders:
                    placeholders[v] = graph.placeholder(f'v{v}_{self.values[v].name}')
                    frontier.append(v)
                return placeholders[v]
            if a.op == 'get_attr':
                env[a] = graph.node_copy(a, lookup)
                return env[a]
            value = self.results.get(a)
            if isinstance(value, torch.Tensor):
                # A constant tensor computed from parameters: copy its computation.
                env[a] = graph.node_copy(a, lookup)
                return env[a]
            return value  # static: shapes, sizes, python numbers

        for n in self.tail_nodes:
            env[n] = graph.node_copy(n, lookup)
        graph.output(fx.map_arg(output_node.args[0], lookup))
        return fx.GraphModule(self.gm, graph), frontier, bool(self.tail_nodes)


# -- helpers ----------------------------------------------------------------------------------

def _node_args(n: fx.Node) -> list[fx.Node]:
    found: list[fx.Node] = []
    fx.map_arg((n.args, n.kwargs), lambda a: found.append(a))
    return found


def _opt(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach()


def _pair(v: Any) -> tuple:
    if isinstance(v, (list, tuple)):
        return tuple(v) if len(v) == 2 else (v[0], v[0])
    return (v, v)


def _conv_pads(padding: Any, kernel: Any, dilation: Any) -> tuple[int, int, int, int]:
    """Return (top, bottom, left, right) zero padding of a convolution."""
    kernel, dilation = _pair(kernel), _pair(dilation)
    if isinstance(padding, str):
        if padding == 'valid':
            return (0, 0, 0, 0)
        total = [d * (k - 1) for k, d in zip(kernel, dilation)]  # 'same'
        return (total[0] // 2, total[0] - total[0] // 2, total[1] // 2,
                total[1] - total[1] // 2)
    ph, pw = _pair(padding)
    return (ph, ph, pw, pw)


def _fold_affine(layer: Layer, scale: torch.Tensor, shift: torch.Tensor) -> None:
    """Fold ``y * scale + shift`` (per output channel) into a convolution's weights."""
    w = layer.attrs['weight']
    dtype = w.dtype
    if layer.kind == 'conv':
        w2 = w.double() * scale.view(-1, 1, 1, 1)
    else:  # transposed: weight (Cin, Cout/groups, kh, kw)
        g = layer.attrs['groups']
        cin, cout_g = w.shape[:2]
        w2 = (w.double().view(g, cin // g, cout_g, *w.shape[2:])
              * scale.view(g, 1, cout_g, 1, 1)).view_as(w)
    b = layer.attrs['bias']
    b2 = (b.double() * scale if b is not None else 0.0) + shift
    layer.attrs['weight'] = w2.to(dtype)
    layer.attrs['bias'] = torch.as_tensor(b2, dtype=torch.float64).to(dtype).expand(
        scale.shape).contiguous()


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


def macs_per_position(layer: Layer, values: list[Value]) -> float:
    """Multiply-accumulates per output position of a layer's core (0 for data movement)."""
    out = values[layer.output]
    w = layer.attrs.get('weight')
    if layer.kind == 'conv':
        return float(w.shape[1] * w.shape[2] * w.shape[3] * out.channels)
    if layer.kind == 'conv_transpose':  # every input position feeds cout/g * kh * kw outputs
        src = values[layer.inputs[0]]
        total = src.positions * w.shape[0] * w.shape[1] * w.shape[2] * w.shape[3]
        return total / out.positions
    return 0.0
