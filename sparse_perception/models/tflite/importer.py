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
Import a TFLite flatbuffer as an ordinary torch module: a convolutional trunk and a dense tail.

The flatbuffer is read by :mod:`.reader` and rebuilt operator by operator, by the converters
of :mod:`.converters`, as a ``torch.fx`` graph of stock layers (``nn.Conv2d`` with groups for
depthwise convolutions, ``nn.ConvTranspose2d``, activations, pooling, ``F.interpolate``,
``torch.cat``, ``+``, ``*``, padding, mean over H and W) in NCHW with float weights: uint8 and
int8 weights are dequantised, float16 weights widened.

The graph is split in two (:class:`TFLiteNet`):

- ``trunk``: every operator that acts locally on 4-D feature maps (or globally by a mean over H
  and W) and depends only on the input through such operators. The incremental engine runs it
  on changed tiles only. It takes the NCHW input and returns a tuple of NCHW feature maps.
- ``tail``: everything else (ARG_MAX, RESHAPE to vectors, GATHER_ND, ...), which the engine runs
  densely. It takes the trunk's feature maps and returns the model's outputs in the TFLite
  layout (the same shapes the TFLite interpreter returns).

TF semantics that differ from PyTorch's defaults are reproduced explicitly: SAME padding
(asymmetric at stride 2 becomes an ``nn.ZeroPad2d`` before the convolution), the
RESIZE_BILINEAR ``align_corners`` and ``half_pixel_centers`` flags, NHWC->NCHW weight layouts and
fused activations (the TFLite kernels ignore a fused TANH or SIGN_BIT, and any fused
activation on CONCATENATION; so does the importer, measured against ai-edge-litert).

Quantised models can round activations to their recorded grids
(:class:`~sparse_perception.models.layers.FakeQuantize`): ``fake_quant='all'`` after every
operator, ``'tail'`` only in the dense tail and where the trunk's outputs enter it (the trunk
stays plain float layers), ``'none'`` nowhere. Even 'all' does not reproduce the integer
kernels bit for bit: one-step rounding differences grow through the layers, so the float
model and the integer one differ by a few quantisation steps at the end.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from sparse_perception.engine.tracing import graph_module, recompile
from sparse_perception.models.layers import FakeQuantize
from sparse_perception.models.tflite.converters import CONVERTERS, per_channel
from sparse_perception.models.tflite.converters import supported_operators
from sparse_perception.models.tflite.reader import FlatModel, INTEGER_TYPES, Operator
from sparse_perception.models.tflite.reader import Quantization, SMALL_INT_RANGES, Tensor
from sparse_perception.models.tflite.reader import TensorSpec, TFLiteImportError
from sparse_perception.models.tflite.reader import UnsupportedOperatorError
import torch
from torch import fx, nn
import torch.nn.functional as F

FAKE_QUANT_MODES = ('none', 'tail', 'all')

# Operators that may sit in the trunk when their data inputs are trunk feature maps.
_LOCAL_UNARY = {
    'CONV_2D', 'DEPTHWISE_CONV_2D', 'TRANSPOSE_CONV', 'AVERAGE_POOL_2D', 'MAX_POOL_2D',
    'RESIZE_BILINEAR', 'RESIZE_NEAREST_NEIGHBOR', 'PAD', 'PADV2', 'RELU', 'RELU6',
    'RELU_N1_TO_1', 'HARD_SWISH', 'LOGISTIC', 'TANH', 'LEAKY_RELU', 'PRELU', 'GELU',
    'QUANTIZE', 'DEQUANTIZE', 'DEPTH_TO_SPACE', 'CUSTOM(Convolution2DTransposeBias)',
}
_TRUNK_ELEMENTWISE = {'ADD', 'SUB', 'MUL', 'DIV'}


@dataclass
class TFLiteInfo:
    """What was imported: the flatbuffer's interface and what its graphs contain."""

    source: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    tflite_op_counts: dict[str, int]
    trunk_outputs: list[TensorSpec] = field(default_factory=list)  # NHWC shapes
    trunk_ops: list[str] = field(default_factory=list)  # TFLite operators in the trunk
    tail_ops: list[str] = field(default_factory=list)
    fake_quant: str = 'none'
    # TFLite tensor name -> name of the trunk node holding it (NCHW), for layer-wise checks.
    trunk_tensors: dict[str, str] = field(default_factory=dict)


class TFLiteNet(nn.Module):
    """
    An imported TFLite model: ``tail(*trunk(x))``.

    ``trunk`` maps the NCHW float input (in the real units of the TFLite input tensor: a uint8
    input with scale s and zero point z is fed as ``(q - z) * s``) to a tuple of NCHW feature
    maps; ``tail`` maps those to the model's outputs in the TFLite layout (one tensor, or a
    tuple for several outputs). Both are ``torch.fx.GraphModule`` objects.
    """

    def __init__(self, trunk: fx.GraphModule, tail: fx.GraphModule, info: TFLiteInfo):
        super().__init__()
        self.trunk = trunk
        self.tail = tail
        self.info = info

    def forward(self, x: torch.Tensor):
        return self.tail(*self.trunk(x))


def load_tflite(path: str | Path, *, fake_quant: str = 'none', name: str | None = None,
                outputs: Sequence[int] | None = None) -> TFLiteNet:
    """
    Import the TFLite model at ``path`` (see the module docstring).

    ``fake_quant`` says where quantised activations are rounded to their recorded scales:
    'none' (plain float), 'tail' (the dense tail only: the trunk stays ordinary float layers,
    while decoding steps such as MoveNet's coarse distance weighting behave as in the integer
    model) or 'all'. It matters only for quantised models. ``name`` is used in error messages
    (default: the file's path). ``outputs`` keeps only these model outputs (indices into the
    model's output list, in the order given); what only the others need is left out of both
    graphs. A file without the TFLite identifier is refused before it is read whole. Raises
    :class:`UnsupportedOperatorError` naming the operator and the model when the graph holds
    something the importer does not handle.
    """
    path = Path(path)
    name = name or str(path)
    try:
        with open(path, 'rb') as stream:
            # The identifier first: a large file that is no model must not be read into memory.
            head = stream.read(8)
            if head[4:8] != b'TFL3':
                raise _not_tflite(name, len(head))
            data = head + stream.read()
    except OSError as exc:
        raise TFLiteImportError(f'cannot read TFLite model {str(path)!r}: {exc}') from None
    return import_tflite(data, fake_quant=fake_quant, name=name, source=str(path),
                         outputs=outputs)


def import_tflite(data: bytes, *, fake_quant: str = 'none', name: str = '<bytes>',
                  source: str | None = None, outputs: Sequence[int] | None = None) -> TFLiteNet:
    """Import a TFLite flatbuffer held in memory (see :func:`load_tflite`)."""
    if fake_quant not in FAKE_QUANT_MODES:
        raise ValueError(f'fake_quant={fake_quant!r} is not one of {", ".join(FAKE_QUANT_MODES)}')
    if len(data) < 8 or data[4:8] != b'TFL3':
        raise _not_tflite(name, len(data))
    return _Importer(FlatModel(data, name), source or name, fake_quant,
                     None if outputs is None else [int(i) for i in outputs]).run()


def _not_tflite(name: str, size: int) -> TFLiteImportError:
    what = 'it is empty: 0 bytes' if size == 0 else 'no TFL3 identifier at byte 4'
    return TFLiteImportError(f'{name} is not a TFLite flatbuffer ({what})')


@dataclass
class Value:
    """A tensor during import: a constant (TF layout) or a node of the trunk or tail graph."""

    shape: tuple[int, ...]  # TF shape
    dtype: torch.dtype
    const: torch.Tensor | None = None
    node: fx.Node | None = None
    graph: str | None = None  # 'trunk' or 'tail'
    layout: str = 'tf'  # 'nchw' (4-D trunk feature maps) or 'tf'
    type_code: int = 0  # the TFLite tensor type it stands for
    name: str = ''  # the TFLite tensor name
    quant: Quantization | None = None  # its recorded quantisation, if any

    @property
    def is_const(self) -> bool:
        return self.const is not None


class Sink:
    """Where emitted operations go: an fx graph, or eager evaluation (constant folding)."""

    def __init__(self, name: str, eager: bool = False):
        self.name = name
        self.eager = eager
        self.root = nn.Module()
        self.graph = fx.Graph()
        self._buffers = 0

    def fn(self, target: Callable, *args, **kwargs):
        if self.eager:
            return target(*args, **kwargs)
        return self.graph.call_function(target, args, kwargs)

    def method(self, name: str, *args, **kwargs):
        if self.eager:
            return getattr(args[0], name)(*args[1:], **kwargs)
        return self.graph.call_method(name, args, kwargs)

    def module(self, name: str, module: nn.Module, *args):
        if self.eager:
            with torch.no_grad():
                return module(*args)
        self.root.add_module(name, module)
        return self.graph.call_module(name, args)

    def constant(self, tensor: torch.Tensor, name: str):
        if self.eager:
            return tensor
        attr = f'{name}_const{self._buffers}'
        self._buffers += 1
        self.root.register_buffer(attr, tensor.contiguous())
        return self.graph.get_attr(attr)


class _Importer:
    """
    Builds the trunk and tail graphs from a :class:`FlatModel`, one operator at a time.

    It is also the context the converters run in: :meth:`use`, :meth:`layout`,
    :meth:`node_name`, :meth:`error`, ``trunk``, ``name``, ``op_index`` and ``opname``.
    """

    def __init__(self, flat: FlatModel, source: str, fake_quant: str,
                 keep_outputs: list[int] | None = None):
        self.flat = flat
        self.keep_outputs = keep_outputs
        self.name = flat.name
        self.source = source
        self.fake_quant = fake_quant
        self.trunk = Sink('trunk')
        self.tail = Sink('tail')
        self.eager = Sink('eager', eager=True)
        self.trunk_outputs: list[Value] = []  # trunk values the tail (or the output) uses
        self.tail_inputs: dict[fx.Node, fx.Node] = {}  # trunk node -> tail placeholder
        self.tail_placeholders: list[fx.Node] = []  # parallel to trunk_outputs
        self.converted: dict[tuple[int, str, str], Any] = {}  # layout conversions, cached
        self.emitted: list[tuple[str, str, list]] = []  # (operator, sink, its result nodes)

    def error(self, message: str) -> TFLiteImportError:
        return self.flat.error(message)

    # ------------------------------------------------------------------------------ driver
    def run(self) -> TFLiteNet:
        self.tensors = self.flat.tensors
        self.values: dict[int, Value] = {}
        for t in self.tensors:
            if t.data is not None:
                self.values[t.index] = Value(t.shape, t.torch_dtype(), const=_constant(t),
                                             type_code=t.type_code)
        inputs = self.flat.inputs
        outputs = self.flat.outputs
        if self.keep_outputs is not None:
            bad = [k for k in self.keep_outputs if not 0 <= k < len(outputs)]
            if bad or not self.keep_outputs:
                # The file is intact; it is not the model the caller took it for.
                raise TFLiteImportError(f'{self.name}: outputs={self.keep_outputs} must name '
                                        f"some of the model's {len(outputs)} outputs by index "
                                        f'(0 to {len(outputs) - 1})')
            outputs = [outputs[k] for k in self.keep_outputs]
        if len(inputs) != 1:
            raise UnsupportedOperatorError(
                f'{self.name}: the model has {len(inputs)} inputs; only models with one image '
                'input are supported')
        for index in inputs:
            t = self.tensors[index]
            if len(t.shape) != 4:
                raise UnsupportedOperatorError(
                    f'{self.name}: input {t.name!r} has shape {t.shape}; only 4-D image inputs '
                    '(NHWC) are supported')
            node = self.trunk.graph.placeholder('x')
            self.values[index] = Value(t.shape, torch.float32, node=node, graph='trunk',
                                       layout='nchw', type_code=t.type_code, name=t.name,
                                       quant=t.quant)

        op_counts: collections.Counter = collections.Counter()
        for op in self.flat.operators():
            op_counts[op.opname] += 1
            self._import_op(op)

        missing = [self.tensors[i].name for i in outputs if i not in self.values]
        if missing:
            raise self.error(f'outputs {missing} are not produced by any operator')
        tail_outputs = [self.use(self.values[i], self.tail, 'tf') for i in outputs]
        self.tail.graph.output(tail_outputs[0] if len(tail_outputs) == 1
                               else tuple(tail_outputs))
        tail = graph_module(self.tail.root, self.tail.graph, 'TFLiteTail')
        tail.graph.eliminate_dead_code()
        # Trunk maps that only dropped outputs (or nothing) read leave both graphs.
        kept = []
        for value, placeholder in zip(self.trunk_outputs, self.tail_placeholders):
            if placeholder.users:
                kept.append(value)
            else:
                tail.graph.erase_node(placeholder)
        self.trunk_outputs = kept
        self.trunk.graph.output(tuple(v.node for v in self.trunk_outputs))

        trunk = graph_module(self.trunk.root, self.trunk.graph, 'TFLiteTrunk')
        for module in (trunk, tail):  # operators whose results nothing reads
            module.graph.eliminate_dead_code()
            module.delete_all_unused_submodules()
            module.graph.lint()
            recompile(module)
        live = {node.name for node in trunk.graph.nodes}
        live_nodes = set(trunk.graph.nodes) | set(tail.graph.nodes)
        counts = {'trunk': collections.Counter(), 'tail': collections.Counter()}
        for opname, graph, nodes in self.emitted:  # operators still in the graphs
            if any(isinstance(n, fx.Node) and n in live_nodes for n in nodes):
                counts[graph][opname] += 1
        info = TFLiteInfo(
            source=self.source,
            inputs=[self.tensors[i].spec() for i in inputs],
            outputs=[self.tensors[i].spec() for i in outputs],
            tflite_op_counts=dict(sorted(op_counts.items())),
            trunk_outputs=[TensorSpec(v.name, v.shape, 'float32') for v in self.trunk_outputs],
            trunk_ops=sorted(counts['trunk'].elements()),
            tail_ops=sorted(counts['tail'].elements()),
            fake_quant=self.fake_quant,
            trunk_tensors={v.name: v.node.name for v in self.values.values()
                           if v.graph == 'trunk' and v.node.name in live})
        net = TFLiteNet(trunk, tail, info)
        net.eval()
        return net

    # ------------------------------------------------------------------------- value plumbing
    def use(self, value: Value, sink: Sink, layout: str):
        """Return ``value`` as an argument usable in ``sink`` in the given layout."""
        if value.is_const:
            tensor = value.const
            if layout == 'nchw' and tensor.dim() == 4:
                tensor = tensor.permute(0, 3, 1, 2)
            return tensor if sink.eager else _const_arg(tensor, sink)
        if sink is self.trunk:
            if value.graph != 'trunk':
                raise AssertionError('a trunk operator reads a tail value')  # importer bug
            node = value.node
            current = value.layout
        else:
            if value.graph == 'trunk':
                if value.node not in self.tail_inputs:
                    self.trunk_outputs.append(value)
                    node = self.tail.graph.placeholder(f'feature{len(self.trunk_outputs) - 1}')
                    self.tail_placeholders.append(node)
                    if self.fake_quant == 'tail':  # the trunk's outputs were stored quantised
                        node = self._fake_quant(self.tail, value, node,
                                                f'feature{len(self.trunk_outputs) - 1}_fq')
                    self.tail_inputs[value.node] = node
                node = self.tail_inputs[value.node]
            else:
                node = value.node
            current = value.layout
        if current == layout or len(value.shape) != 4:
            return node
        cache_key = (id(node), sink.name, layout)
        if cache_key not in self.converted:
            order = (0, 3, 1, 2) if layout == 'nchw' else (0, 2, 3, 1)
            self.converted[cache_key] = sink.method('permute', node, *order)
        return self.converted[cache_key]

    def layout(self, sink: Sink) -> str:
        """Return the layout of 4-D maps in ``sink``: NCHW in the trunk, TF's NHWC elsewhere."""
        return 'nchw' if sink is self.trunk else 'tf'

    def node_name(self, suffix: str) -> str:
        """Return a name for a module or constant the current operator adds to a graph."""
        return f'op{self.op_index:03d}_{suffix}'

    def _new_value(self, tensor: Tensor, result, sink: Sink, layout: str) -> Value:
        value = Value(tensor.shape, tensor.torch_dtype(), type_code=tensor.type_code,
                      name=tensor.name, quant=tensor.quant)
        if sink.eager:
            value.const = result
        else:
            value.node, value.graph, value.layout = result, sink.name, layout
        return value

    # ---------------------------------------------------------------------------- operators
    def _import_op(self, op: Operator) -> None:
        op_index, opname = op.index, op.opname
        inputs = []
        for i in op.inputs:
            if i < 0:
                inputs.append(None)
            elif i in self.values:
                inputs.append(self.values[i])
            else:
                raise self.error(f'operator #{op_index} {opname} reads tensor '
                                 f'{self.tensors[i].name!r} before anything produces it')
        outputs = [self.tensors[i] for i in op.outputs]
        convert = CONVERTERS.get(opname)
        if convert is None:
            raise UnsupportedOperatorError(
                f'{self.name}: TFLite operator {opname} (operator #{op_index}, output '
                f'{outputs[0].name!r}) is not supported by the importer; supported operators: '
                f'{", ".join(supported_operators())}')
        options = op.read_options()
        data = [v for v in inputs if v is not None]
        if data and all(v.is_const for v in data):
            sink = self.eager  # constant folding: evaluate now, keep the result as a constant
        elif self._in_trunk(opname, inputs, outputs, options):
            sink = self.trunk
        else:
            sink = self.tail
        self.op_index, self.opname = op_index, opname
        try:
            results = convert(self, sink, inputs, outputs, options)
        except UnsupportedOperatorError:
            raise
        except (ValueError, RuntimeError, TypeError, IndexError) as exc:
            raise self.error(f'operator #{op_index} {opname} (output {outputs[0].name!r}) '
                             f'could not be imported: {exc}') from exc
        layout = self.layout(sink)
        nodes = []
        for tensor, result in zip(outputs, results):
            value = self._new_value(tensor, result, sink, layout)
            if not sink.eager and (self.fake_quant == 'all' or (
                    self.fake_quant == 'tail' and sink is self.tail)):
                value.node = self._fake_quant(sink, value, value.node, self.node_name('fq'))
            self.values[tensor.index] = value
            nodes += [result, value.node]
        if not sink.eager:
            self.emitted.append((opname, sink.name, nodes))

    def _fake_quant(self, sink: Sink, value: Value, node, name: str):
        """Round ``node`` to the quantisation grid recorded for ``value`` (if it has one)."""
        quant = value.quant
        if quant is None or value.type_code not in SMALL_INT_RANGES or not quant.per_tensor:
            return node
        qmin, qmax = SMALL_INT_RANGES[value.type_code]
        return sink.module(name, FakeQuantize(quant.scale[0], quant.zero_point[0], qmin, qmax),
                           node)

    def _in_trunk(self, opname: str, inputs: list, outputs: list, options) -> bool:
        """Decide whether an operator runs in the incremental trunk."""
        data = [v for v in inputs if v is not None and not v.is_const]
        if not data or not all(v.graph == 'trunk' and v.layout == 'nchw' for v in data):
            return False
        if any(len(t.shape) != 4 for t in outputs) or any(
                t.torch_dtype() != torch.float32 for t in outputs):
            return False
        if opname in _LOCAL_UNARY:
            return True
        if opname == 'CAST':  # uint8/int8 pixels (held as floats) -> float32: the identity
            return data[0].type_code in SMALL_INT_RANGES and outputs[0].type_code in (0, 1)
        if opname in _TRUNK_ELEMENTWISE:
            consts = [v for v in inputs if v is not None and v.is_const]
            if opname == 'DIV' and (len(consts) != 1 or inputs[1] is not consts[0]):
                return False
            return all(per_channel(v.const) for v in consts)
        if opname == 'CONCATENATION':
            axis = options.Axis() % 4
            return axis == 3 and len(data) == len([v for v in inputs if v is not None])
        if opname == 'MEAN':
            axes = {int(a) % 4 for a in inputs[1].const.reshape(-1).tolist()} \
                if inputs[1] is not None and inputs[1].is_const else None
            return axes == {1, 2} and bool(options.KeepDims())
        return False


def _constant(tensor: Tensor) -> torch.Tensor:
    """Return a constant buffer as a tensor (TF layout): dequantised, or widened to float32."""
    array = tensor.data
    if tensor.quant is not None and tensor.type_code in (2, 3, 4, 7, 9) and \
            tensor.quant.scale[0] != 0:
        # Dequantise (per channel along quant.axis when there are several scales).
        scale = np.asarray(tensor.quant.scale, np.float64)
        zero = np.asarray(tensor.quant.zero_point, np.float64)
        if len(scale) > 1:
            shape = [1] * array.ndim
            shape[tensor.quant.axis] = len(scale)
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        real = (array.astype(np.float64) - zero) * scale
        return torch.from_numpy(real.astype(np.float32))
    if tensor.type_code in INTEGER_TYPES:
        return torch.from_numpy(array.astype(np.int64))
    if tensor.type_code == 6:
        return torch.from_numpy(array.copy())
    return torch.from_numpy(array.astype(np.float32))


def _const_arg(tensor: torch.Tensor, sink: Sink):
    if tensor.dim() == 0:
        return tensor.item()
    return sink.constant(tensor, 'c')


def graph_summary(module: nn.Module) -> dict[str, int]:
    """
    Count what an fx graph module runs: layer classes and functions, by readable name.

    Convolutions are told apart as 'Conv2d', 'Conv2d(depthwise)' and 'Conv2d(grouped)';
    functions appear by name ('add', 'mul', 'cat', 'interpolate(bilinear)', 'mean', ...).
    """
    counts: collections.Counter = collections.Counter()
    modules = dict(module.named_modules())
    for node in module.graph.nodes:
        if node.op == 'call_module':
            layer = modules[node.target]
            label = type(layer).__name__
            if isinstance(layer, nn.Conv2d) and layer.groups > 1:
                label += '(depthwise)' if layer.groups == layer.in_channels else '(grouped)'
            counts[label] += 1
        elif node.op == 'call_function':
            label = getattr(node.target, '__name__', str(node.target))
            if node.target is F.interpolate:
                label += f'({node.kwargs.get("mode", "nearest")})'
            if node.target is F.pad and node.kwargs.get('mode', 'constant') != 'constant':
                label += f'({node.kwargs["mode"]})'
            counts[label] += 1
        elif node.op == 'call_method':
            counts['.' + str(node.target)] += 1
    return dict(sorted(counts.items()))
