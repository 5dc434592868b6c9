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

The flatbuffer is parsed with the ``tflite`` schema package (the ``tflite`` extra) and rebuilt
operator by operator as a ``torch.fx`` graph of stock layers (``nn.Conv2d`` with groups for
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
import operator
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from sparse_perception.engine.ops import depth_to_space
from sparse_perception.models.layers import FakeQuantize
import torch
from torch import fx, nn
import torch.nn.functional as F

# TFLite TensorType -> numpy dtype of the stored buffer.
_NUMPY_TYPES = {
    0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 6: np.bool_,
    7: np.int16, 9: np.int8, 10: np.float64,
}
_TYPE_NAMES = {
    0: 'float32', 1: 'float16', 2: 'int32', 3: 'uint8', 4: 'int64', 5: 'string', 6: 'bool',
    7: 'int16', 8: 'complex64', 9: 'int8', 10: 'float64',
}
_INTEGER_TYPES = {2, 4}  # int32 and int64 stay integers (indices, shapes)
_SMALL_INT_RANGES = {3: (0, 255), 9: (-128, 127), 7: (-32768, 32767)}

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

# Operators that may sit in the trunk when their data inputs are trunk feature maps.
_LOCAL_UNARY = {
    'CONV_2D', 'DEPTHWISE_CONV_2D', 'TRANSPOSE_CONV', 'AVERAGE_POOL_2D', 'MAX_POOL_2D',
    'RESIZE_BILINEAR', 'RESIZE_NEAREST_NEIGHBOR', 'PAD', 'PADV2', 'RELU', 'RELU6',
    'RELU_N1_TO_1', 'HARD_SWISH', 'LOGISTIC', 'TANH', 'LEAKY_RELU', 'PRELU', 'GELU',
    'QUANTIZE', 'DEQUANTIZE', 'DEPTH_TO_SPACE', 'CUSTOM(Convolution2DTransposeBias)',
}

# Custom operators the importer knows (by their custom code), and the method importing each.
_CUSTOM_HANDLERS = {
    # MediaPipe's transposed convolution with a bias input (selfie segmentation).
    'CUSTOM(Convolution2DTransposeBias)': '_custom_transpose_conv_bias',
}
# TfLitePadding, the enum the custom operators' options structs hold (not the schema's Padding).
_TFLITE_PADDING_SAME, _TFLITE_PADDING_VALID = 1, 2
# SparseIndexVector union members -> the schema table holding the index values.
_INDEX_VECTORS = {1: 'Int32Vector', 2: 'Uint16Vector', 3: 'Uint8Vector'}
_TRUNK_ELEMENTWISE = {'ADD', 'SUB', 'MUL', 'DIV'}

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


def densify(values: np.ndarray, shape: tuple[int, ...], traversal_order: list[int],
            block_map: list[int], levels: list[tuple]) -> np.ndarray:
    """
    Expand a tensor stored in TFLite's sparse format into a dense array of ``shape``.

    ``values`` (1-D) holds the stored values in traversal order. ``levels`` has one entry per
    traversed dimension, in traversal order (the tensor's dimensions permuted by
    ``traversal_order``, then one per block dimension): ``('dense', size)`` or
    ``('csr', segments, indices)``. A dense level enumerates ``0..size-1`` under every position
    of the level above; a CSR level lists, under position ``p`` of the level above, the
    coordinates ``indices[segments[p]:segments[p + 1]]``. Block dimension ``k`` (traversal
    entry ``len(shape) + k``) subdivides tensor dimension ``block_map[k]``. Positions not stored
    are zero. Raises ValueError when the layout does not describe ``values`` and ``shape``.
    """
    rank = len(shape)
    if sorted(traversal_order) != list(range(rank + len(block_map))) or \
            len(levels) != len(traversal_order):
        raise ValueError(f'traversal order {traversal_order} does not fit a rank-{rank} tensor '
                         f'with {len(block_map)} block dimensions and {len(levels)} levels')
    coords = np.zeros((1, 0), np.int64)  # (entries, levels so far)
    position = np.zeros(1, np.int64)  # each entry's position within its level
    for level in levels:
        if level[0] == 'dense':
            size = int(level[1])
            repeat = np.repeat(np.arange(len(position)), size)
            child = np.tile(np.arange(size, dtype=np.int64), len(position))
            position = position[repeat] * size + child
            coords = np.concatenate([coords[repeat], child[:, None]], axis=1)
            continue
        segments = np.asarray(level[1], np.int64)
        indices = np.asarray(level[2], np.int64)
        if position.size and (position.max() + 1 >= len(segments)):
            raise ValueError(f'a CSR level has {len(segments)} segment bounds, too few for '
                             f'position {int(position.max())}')
        starts, ends = segments[position], segments[position + 1]
        counts = ends - starts
        if (counts < 0).any() or (ends > len(indices)).any():
            raise ValueError('a CSR level has decreasing segment bounds or bounds past its '
                             f'{len(indices)} indices')
        repeat = np.repeat(np.arange(len(position)), counts)
        first = np.repeat(np.cumsum(counts) - counts, counts)
        position = np.arange(int(counts.sum()), dtype=np.int64) - first + starts[repeat]
        coords = np.concatenate([coords[repeat], indices[position][:, None]], axis=1)
    if len(coords) != values.size:
        raise ValueError(f'the sparse layout addresses {len(coords)} values but {values.size} '
                         'are stored')
    index = np.zeros((len(coords), rank), np.int64)
    for level, dim in enumerate(traversal_order[:rank]):
        index[:, dim] = coords[:, level]
    for level in range(rank, len(traversal_order)):
        block = traversal_order[level] - rank
        dim = block_map[block]
        size = int(levels[traversal_order.index(rank + block)][1])
        index[:, dim] = index[:, dim] * size + coords[:, level]
    if (index < 0).any() or (index >= np.asarray(shape)).any():
        raise ValueError(f'the sparse layout addresses positions outside the shape {shape}')
    dense = np.zeros(shape, dtype=values.dtype)
    dense[tuple(index.T)] = values
    return dense


class TFLiteImportError(ValueError):
    """The flatbuffer cannot be turned into a torch module."""


class UnsupportedOperatorError(TFLiteImportError):
    """The model contains an operator (or an operator variant) the importer does not handle."""


@dataclass(frozen=True)
class Quantization:
    """Affine quantisation of a tensor: ``real = (q - zero_point) * scale``."""

    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    axis: int = 0  # the dimension per-channel scales run along

    @property
    def per_tensor(self) -> bool:
        return len(self.scale) == 1


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output as the TFLite interpreter sees it (NHWC for images)."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # numpy dtype name of the flatbuffer tensor, e.g. 'uint8'
    quantization: Quantization | None = None


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
    (default: the file name). ``outputs`` keeps only these model outputs (indices into the
    model's output list, in the order given); what only the others need is left out of both
    graphs. Raises :class:`UnsupportedOperatorError` naming the operator and the model when the
    graph holds something the importer does not handle.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TFLiteImportError(f'cannot read TFLite model {str(path)!r}: {exc}') from None
    return import_tflite(data, fake_quant=fake_quant, name=name or path.name,
                         source=str(path), outputs=outputs)


FAKE_QUANT_MODES = ('none', 'tail', 'all')


def import_tflite(data: bytes, *, fake_quant: str = 'none', name: str = '<bytes>',
                  source: str | None = None, outputs: Sequence[int] | None = None) -> TFLiteNet:
    """Import a TFLite flatbuffer held in memory (see :func:`load_tflite`)."""
    if fake_quant not in FAKE_QUANT_MODES:
        raise ValueError(f'fake_quant={fake_quant!r} is not one of {", ".join(FAKE_QUANT_MODES)}')
    if len(data) < 8 or data[4:8] != b'TFL3':
        raise TFLiteImportError(
            f'{name} is not a TFLite flatbuffer (no TFL3 identifier at byte 4); expected a '
            '.tflite file')
    return _Importer(data, name, source or name, fake_quant,
                     None if outputs is None else [int(i) for i in outputs]).run()


def _tflite_schema():
    try:
        import tflite  # the schema package: an optional extra, imported when first needed
        from tflite.utils import BUILTIN_OPCODE2NAME
    except ImportError:
        raise ImportError(
            "importing TFLite models needs the 'tflite' package: "
            "pip install 'sparse_perception[tflite]' (or pip install tflite flatbuffers)"
        ) from None
    return tflite, BUILTIN_OPCODE2NAME


def _options_class_names(tflite) -> dict[int, str]:
    return {value: key for key, value in vars(tflite.BuiltinOptions).items()
            if not key.startswith('_') and isinstance(value, int)}


@dataclass
class _Tensor:
    index: int
    name: str
    shape: tuple[int, ...]
    type_code: int
    quant: Quantization | None
    data: np.ndarray | None  # constant buffer, raw (not dequantised), TF layout

    @property
    def type_name(self) -> str:
        return _TYPE_NAMES.get(self.type_code, f'type{self.type_code}')

    def torch_dtype(self) -> torch.dtype:
        if self.type_code in _INTEGER_TYPES:
            return torch.int64
        if self.type_code == 6:
            return torch.bool
        return torch.float32

    def spec(self) -> TensorSpec:
        return TensorSpec(self.name, self.shape, self.type_name, self.quant)


@dataclass
class _Value:
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


class _Sink:
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
    def __init__(self, data: bytes, name: str, source: str, fake_quant: str,
                 keep_outputs: list[int] | None = None):
        self.tflite, self.opcode_names = _tflite_schema()
        self.keep_outputs = keep_outputs
        self.data = data
        self.name = name
        self.source = source
        self.fake_quant = fake_quant
        self.model = self.tflite.Model.GetRootAs(data, 0)
        self.option_classes = _options_class_names(self.tflite)
        self.trunk = _Sink('trunk')
        self.tail = _Sink('tail')
        self.eager = _Sink('eager', eager=True)
        self.trunk_outputs: list[_Value] = []  # trunk values the tail (or the output) uses
        self.tail_inputs: dict[fx.Node, fx.Node] = {}  # trunk node -> tail placeholder
        self.tail_placeholders: list[fx.Node] = []  # parallel to trunk_outputs
        self.converted: dict[tuple[int, str, str], Any] = {}  # layout conversions, cached
        self.emitted: list[tuple[str, str, list]] = []  # (operator, sink, its result nodes)

    # ----------------------------------------------------------------------------- reading
    def _error(self, message: str) -> TFLiteImportError:
        return TFLiteImportError(f'{self.name}: {message}')

    def _read_tensors(self, subgraph) -> list[_Tensor]:
        tensors = []
        for index in range(subgraph.TensorsLength()):
            t = subgraph.Tensors(index)
            name = (t.Name() or b'').decode('utf-8', 'replace')
            shape = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
            if any(d < 0 for d in shape):
                raise self._error(f'tensor {name!r} has a dynamic shape {shape}; only '
                                  'static shapes can be imported')
            quant = None
            q = t.Quantization()
            if q is not None and q.ScaleLength() > 0:
                zero = q.ZeroPointAsNumpy() if q.ZeroPointLength() else np.zeros(
                    q.ScaleLength(), np.int64)
                quant = Quantization(tuple(float(s) for s in q.ScaleAsNumpy()),
                                     tuple(int(z) for z in zero), int(q.QuantizedDimension()))
            tensors.append(_Tensor(index, name, shape, int(t.Type()), quant,
                                   self._buffer(t, name, shape)))
        return tensors

    def _buffer(self, t, name: str, shape: tuple[int, ...]) -> np.ndarray | None:
        buffer_index = t.Buffer()
        if buffer_index <= 0 or buffer_index >= self.model.BuffersLength():
            return None
        buffer = self.model.Buffers(buffer_index)
        if buffer.DataLength() > 0:
            raw = buffer.DataAsNumpy().tobytes()
        elif buffer.Offset() > 1:  # models over 2 GB keep buffers after the flatbuffer
            raw = self.data[buffer.Offset():buffer.Offset() + buffer.Size()]
        else:
            return None
        type_code = int(t.Type())
        if type_code not in _NUMPY_TYPES:
            raise UnsupportedOperatorError(
                f'{self.name}: constant tensor {name!r} has type '
                f'{_TYPE_NAMES.get(type_code, type_code)}, which the importer does not handle')
        array = np.frombuffer(raw, dtype=_NUMPY_TYPES[type_code])
        if t.Sparsity() is not None:  # pruned weights: expand them to the dense tensor
            try:
                return densify(array, shape, *self._sparse_layout(t.Sparsity()))
            except ValueError as exc:
                raise self._error(f'sparse tensor {name!r}: {exc}') from None
        expected = int(np.prod(shape)) if shape else 1
        if array.size != expected:
            raise self._error(f'constant tensor {name!r} holds {array.size} values, expected '
                              f'{expected} for shape {shape}')
        return array.reshape(shape)

    def _sparse_layout(self, sparsity) -> tuple[list[int], list[int], list[tuple]]:
        """Read a tensor's SparsityParameters as :func:`densify` takes them."""
        order = [int(v) for v in sparsity.TraversalOrderAsNumpy()] \
            if sparsity.TraversalOrderLength() else []
        block_map = [int(v) for v in sparsity.BlockMapAsNumpy()] \
            if sparsity.BlockMapLength() else []
        levels = []
        for i in range(sparsity.DimMetadataLength()):
            meta = sparsity.DimMetadata(i)
            if meta.Format() == 0:  # DimensionType.DENSE
                levels.append(('dense', int(meta.DenseSize())))
                continue
            levels.append(('csr', self._index_vector(meta.ArraySegmentsType(),
                                                     meta.ArraySegments()),
                           self._index_vector(meta.ArrayIndicesType(), meta.ArrayIndices())))
        return order, block_map, levels

    def _index_vector(self, kind: int, table) -> np.ndarray:
        if kind not in _INDEX_VECTORS or table is None:
            raise ValueError(f'unknown sparse index vector type {kind}')
        vector = getattr(self.tflite, _INDEX_VECTORS[kind])()
        vector.Init(table.Bytes, table.Pos)
        return vector.ValuesAsNumpy() if vector.ValuesLength() else np.zeros(0, np.int64)

    def _constant(self, tensor: _Tensor) -> torch.Tensor:
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
        if tensor.type_code in _INTEGER_TYPES:
            return torch.from_numpy(array.astype(np.int64))
        if tensor.type_code == 6:
            return torch.from_numpy(array.copy())
        return torch.from_numpy(array.astype(np.float32))

    def _options(self, op):
        kind = op.BuiltinOptionsType()
        if not kind:
            return None
        table = op.BuiltinOptions()
        options = getattr(self.tflite, self.option_classes[kind])()
        options.Init(table.Bytes, table.Pos)
        return options

    # ------------------------------------------------------------------------------ driver
    def run(self) -> TFLiteNet:
        if self.model.SubgraphsLength() < 1:
            raise self._error('the flatbuffer holds no subgraph')
        subgraph = self.model.Subgraphs(0)
        self.tensors = self._read_tensors(subgraph)
        self.values: dict[int, _Value] = {}
        for t in self.tensors:
            if t.data is not None:
                self.values[t.index] = _Value(t.shape, t.torch_dtype(), const=self._constant(t),
                                              type_code=t.type_code)
        inputs = [int(i) for i in subgraph.InputsAsNumpy()]
        outputs = [int(i) for i in subgraph.OutputsAsNumpy()]
        if self.keep_outputs is not None:
            bad = [k for k in self.keep_outputs if not 0 <= k < len(outputs)]
            if bad or not self.keep_outputs:
                raise ValueError(f'{self.name}: outputs={self.keep_outputs} must name some of the '
                                 f"model's {len(outputs)} outputs by index (0 to "
                                 f'{len(outputs) - 1})')
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
            self.values[index] = _Value(t.shape, torch.float32, node=node, graph='trunk',
                                        layout='nchw', type_code=t.type_code, name=t.name,
                                        quant=t.quant)

        op_counts: collections.Counter = collections.Counter()
        for op_index in range(subgraph.OperatorsLength()):
            op = subgraph.Operators(op_index)
            code = self.model.OperatorCodes(op.OpcodeIndex())
            builtin = max(int(code.BuiltinCode()), int(code.DeprecatedBuiltinCode()))
            opname = self.opcode_names.get(builtin, f'builtin{builtin}')
            if opname == 'CUSTOM':
                custom = (code.CustomCode() or b'?').decode('utf-8', 'replace')
                opname = f'CUSTOM({custom})'
            op_counts[opname] += 1
            self._import_op(op_index, opname, op)

        missing = [self.tensors[i].name for i in outputs if i not in self.values]
        if missing:
            raise self._error(f'outputs {missing} are not produced by any operator')
        tail_outputs = [self._use(self.values[i], self.tail, 'tf') for i in outputs]
        self.tail.graph.output(tail_outputs[0] if len(tail_outputs) == 1
                               else tuple(tail_outputs))
        tail = fx.GraphModule(self.tail.root, self.tail.graph, class_name='TFLiteTail')
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

        trunk = fx.GraphModule(self.trunk.root, self.trunk.graph, class_name='TFLiteTrunk')
        for module in (trunk, tail):  # operators whose results nothing reads
            module.graph.eliminate_dead_code()
            module.delete_all_unused_submodules()
            module.graph.lint()
            module.recompile()
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
    def _use(self, value: _Value, sink: _Sink, layout: str):
        """Return ``value`` as an argument usable in ``sink`` in the given layout."""
        if value.is_const:
            tensor = value.const
            if layout == 'nchw' and tensor.dim() == 4:
                tensor = tensor.permute(0, 3, 1, 2)
            return tensor if sink.eager else self._const_arg(tensor, sink)
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

    def _const_arg(self, tensor: torch.Tensor, sink: _Sink):
        if tensor.dim() == 0:
            return tensor.item()
        return sink.constant(tensor, 'c')

    def _new_value(self, tensor: _Tensor, result, sink: _Sink, layout: str) -> _Value:
        value = _Value(tensor.shape, tensor.torch_dtype(), type_code=tensor.type_code,
                       name=tensor.name, quant=tensor.quant)
        if sink.eager:
            value.const = result
        else:
            value.node, value.graph, value.layout = result, sink.name, layout
        return value

    # ---------------------------------------------------------------------------- operators
    def _import_op(self, op_index: int, opname: str, op) -> None:
        input_ids = [int(i) for i in op.InputsAsNumpy()] if op.InputsLength() else []
        output_ids = [int(i) for i in op.OutputsAsNumpy()]
        inputs = []
        for i in input_ids:
            if i < 0:
                inputs.append(None)
            elif i in self.values:
                inputs.append(self.values[i])
            else:
                raise self._error(f'operator #{op_index} {opname} reads tensor '
                                  f'{self.tensors[i].name!r} before anything produces it')
        outputs = [self.tensors[i] for i in output_ids]
        handler = getattr(self, _CUSTOM_HANDLERS.get(opname, '_op_' + opname), None)
        if handler is None and opname in _ACTIVATIONS:
            handler = self._op_activation
        elif handler is None and opname in _UNARY_FUNCTIONS:
            handler = self._op_unary
        elif handler is None and opname in _ELEMENTWISE_FUNCTIONS:
            handler = self._op_elementwise
        elif handler is None and opname in _REDUCERS:
            handler = self._op_reduce
        if handler is None:
            raise UnsupportedOperatorError(
                f'{self.name}: TFLite operator {opname} (operator #{op_index}, output '
                f'{outputs[0].name!r}) is not supported by the importer; supported operators: '
                f'{", ".join(supported_operators())}')
        options = op.CustomOptionsAsNumpy().tobytes() if opname in _CUSTOM_HANDLERS and \
            op.CustomOptionsLength() else self._options(op)
        data = [v for v in inputs if v is not None]
        if data and all(v.is_const for v in data):
            sink = self.eager  # constant folding: evaluate now, keep the result as a constant
        elif self._in_trunk(opname, inputs, outputs, options):
            sink = self.trunk
        else:
            sink = self.tail
        self.op_index, self.opname = op_index, opname
        try:
            results = handler(sink, inputs, outputs, options)
        except UnsupportedOperatorError:
            raise
        except (ValueError, RuntimeError, TypeError, IndexError) as exc:
            raise self._error(f'operator #{op_index} {opname} (output {outputs[0].name!r}) '
                              f'could not be imported: {exc}') from exc
        layout = 'nchw' if sink is self.trunk else 'tf'
        nodes = []
        for tensor, result in zip(outputs, results):
            value = self._new_value(tensor, result, sink, layout)
            if not sink.eager and (self.fake_quant == 'all' or (
                    self.fake_quant == 'tail' and sink is self.tail)):
                value.node = self._fake_quant(sink, value, value.node, self._name('fq'))
            self.values[tensor.index] = value
            nodes += [result, value.node]
        if not sink.eager:
            self.emitted.append((opname, sink.name, nodes))

    def _fake_quant(self, sink: _Sink, value: _Value, node, name: str):
        """Round ``node`` to the quantisation grid recorded for ``value`` (if it has one)."""
        quant = value.quant
        if quant is None or value.type_code not in _SMALL_INT_RANGES or not quant.per_tensor:
            return node
        qmin, qmax = _SMALL_INT_RANGES[value.type_code]
        return sink.module(name, FakeQuantize(quant.scale[0], quant.zero_point[0], qmin, qmax),
                           node)

    def _name(self, suffix: str) -> str:
        return f'op{self.op_index:03d}_{suffix}'

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
            return data[0].type_code in _SMALL_INT_RANGES and outputs[0].type_code in (0, 1)
        if opname in _TRUNK_ELEMENTWISE:
            consts = [v for v in inputs if v is not None and v.is_const]
            if opname == 'DIV' and (len(consts) != 1 or inputs[1] is not consts[0]):
                return False
            return all(_per_channel(v.const) for v in consts)
        if opname == 'CONCATENATION':
            axis = options.Axis() % 4
            return axis == 3 and len(data) == len([v for v in inputs if v is not None])
        if opname == 'MEAN':
            axes = {int(a) % 4 for a in inputs[1].const.reshape(-1).tolist()} \
                if inputs[1] is not None and inputs[1].is_const else None
            return axes == {1, 2} and bool(options.KeepDims())
        return False

    def _fused(self, sink: _Sink, result, options):
        code = options.FusedActivationFunction() if options is not None and hasattr(
            options, 'FusedActivationFunction') else 0
        if code not in _FUSED:
            raise UnsupportedOperatorError(
                f'{self.name}: operator #{self.op_index} {self.opname} has fused activation '
                f'code {code}, which the importer does not handle')
        if _FUSED[code] is None:
            return result
        return sink.module(self._name(_FUSED_NAMES[code]), _FUSED[code](), result)

    def _spatial(self, sink: _Sink, value: _Value, emit: Callable):
        """Run an NCHW-only emitter on ``value``, converting from and to the TF layout in tail."""
        x = self._use(value, sink, 'nchw' if sink is self.trunk else 'tf')
        if sink is self.trunk:
            return emit(x)
        x = sink.method('permute', x, 0, 3, 1, 2)
        return sink.method('permute', emit(x), 0, 2, 3, 1)

    def _layout(self, sink: _Sink) -> str:
        return 'nchw' if sink is self.trunk else 'tf'

    # --- convolutions
    def _conv_padding(self, sink, x, options, in_hw, kernel_hw, dilation_hw, out_hw):
        stride_hw = (options.StrideH(), options.StrideW())
        if options.Padding() == 0:  # SAME
            pads = [_same_pads(in_hw[i], kernel_hw[i], stride_hw[i], dilation_hw[i])
                    for i in range(2)]
        else:
            pads = [(0, 0), (0, 0)]
        (top, bottom), (left, right) = pads
        if top == bottom and left == right:
            return x, (top, left)
        return sink.module(self._name('pad'), nn.ZeroPad2d((left, right, top, bottom)), x), (0, 0)

    def _op_CONV_2D(self, sink, inputs, outputs, options):
        x, weight, bias = (inputs + [None])[:3]
        if not weight.is_const:
            raise UnsupportedOperatorError(
                f'{self.name}: CONV_2D #{self.op_index} has non-constant weights')
        w = weight.const.permute(0, 3, 1, 2).contiguous()  # OHWI -> OIHW
        out_ch, in_per_group, kh, kw = w.shape
        in_ch = x.shape[3]
        if in_ch % in_per_group:
            raise self._error(f'CONV_2D #{self.op_index}: {in_ch} input channels do not split '
                              f'into groups of {in_per_group}')
        dilation = (options.DilationHFactor(), options.DilationWFactor())
        conv = nn.Conv2d(in_ch, out_ch, (kh, kw), (options.StrideH(), options.StrideW()),
                         dilation=dilation, groups=in_ch // in_per_group, bias=bias is not None)
        return [self._conv_like(sink, x, conv, w, bias, options, (kh, kw), dilation,
                                'conv', outputs[0])]

    def _op_DEPTHWISE_CONV_2D(self, sink, inputs, outputs, options):
        x, weight, bias = (inputs + [None])[:3]
        if not weight.is_const:
            raise UnsupportedOperatorError(
                f'{self.name}: DEPTHWISE_CONV_2D #{self.op_index} has non-constant weights')
        _, kh, kw, out_ch = weight.const.shape
        in_ch = x.shape[3]
        w = weight.const[0].permute(2, 0, 1).unsqueeze(1).contiguous()  # 1HWC -> C1HW
        dilation = (options.DilationHFactor(), options.DilationWFactor())
        conv = nn.Conv2d(in_ch, out_ch, (kh, kw), (options.StrideH(), options.StrideW()),
                         dilation=dilation, groups=in_ch, bias=bias is not None)
        return [self._conv_like(sink, x, conv, w, bias, options, (kh, kw), dilation,
                                'dwconv', outputs[0])]

    def _conv_like(self, sink, x, conv, w, bias, options, kernel, dilation, label, out):
        with torch.no_grad():
            conv.weight.copy_(w)
            if bias is not None:
                conv.bias.copy_(bias.const.reshape(-1).float())
        out_hw = out.shape[1:3]

        def emit(node):
            node, padding = self._conv_padding(sink, node, options, x.shape[1:3], kernel,
                                               dilation, out_hw)
            conv.padding = padding
            node = sink.module(self._name(label), conv, node)
            return self._fused(sink, node, options)
        result = self._spatial(sink, x, emit)
        expected = _conv_out(x.shape[1:3], kernel, (options.StrideH(), options.StrideW()),
                             dilation, options.Padding())
        if tuple(expected) != tuple(out_hw):
            raise self._error(f'{label} #{self.op_index}: computed output size {expected}, the '
                              f'model records {tuple(out_hw)}')
        return result

    def _op_TRANSPOSE_CONV(self, sink, inputs, outputs, options):
        shape, weight, x = inputs[:3]
        bias = inputs[3] if len(inputs) > 3 else None
        return [self._transpose_conv(sink, x, weight, bias, (options.StrideH(), options.StrideW()),
                                     options.Padding() == 0, outputs[0], options)]

    def _custom_transpose_conv_bias(self, sink, inputs, outputs, options):
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
                f'{self.name}: {self.opname} #{self.op_index} expects 3 inputs (data, weights, '
                f'bias), got {len(inputs)}')
        x, weight, bias = inputs
        if not isinstance(options, bytes) or len(options) < 12:
            raise self._error(f'{self.opname} #{self.op_index}: expected 12 bytes of options '
                              '(padding, stride_w, stride_h), got '
                              f'{0 if options is None else len(options)}')
        padding, stride_w, stride_h = np.frombuffer(options[:12], '<i4').tolist()
        if padding not in (_TFLITE_PADDING_SAME, _TFLITE_PADDING_VALID) or stride_w < 1 or \
                stride_h < 1:
            raise self._error(f'{self.opname} #{self.op_index}: options padding={padding}, '
                              f'strides=({stride_h}, {stride_w}) are not valid')
        kernel = weight.shape[1:3]
        expected = []
        for size, k, stride in zip(x.shape[1:3], kernel, (stride_h, stride_w)):
            pad = max(0, k - (size - 1) % stride - 1) if padding == _TFLITE_PADDING_SAME else 0
            expected.append(stride * (size - 1) + k - pad)
        if tuple(expected) != tuple(outputs[0].shape[1:3]):
            raise self._error(f'{self.opname} #{self.op_index}: the model records an output of '
                              f'{tuple(outputs[0].shape[1:3])}, the operator computes '
                              f'{tuple(expected)}')
        return [self._transpose_conv(sink, x, weight, bias, (stride_h, stride_w),
                                     padding == _TFLITE_PADDING_SAME, outputs[0], None)]

    def _transpose_conv(self, sink, x, weight, bias, stride, same: bool, out, options):
        """Emit a transposed convolution cropped to ``out`` (SAME crops the odd pixel after)."""
        if not weight.is_const:
            raise UnsupportedOperatorError(
                f'{self.name}: {self.opname} #{self.op_index} has non-constant weights')
        w = weight.const.permute(3, 0, 1, 2).contiguous()  # OHWI -> IOHW
        in_ch, out_ch, kh, kw = w.shape
        out_hw = out.shape[1:3]
        crops = []
        for i, k in enumerate((kh, kw)):
            full = (x.shape[1 + i] - 1) * stride[i] + k
            total = full - out_hw[i]
            if total < 0:
                raise UnsupportedOperatorError(
                    f'{self.name}: {self.opname} #{self.op_index} asks for an output larger '
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
            node = sink.module(self._name('tconv'), conv, node)
            (top, left), (bottom, right) = extra
            if top or left or bottom or right:  # uneven crop: negative padding cuts
                node = sink.fn(F.pad, node, (-left, -right, -top, -bottom))
            return self._fused(sink, node, options)
        return self._spatial(sink, x, emit)

    def _op_DEPTH_TO_SPACE(self, sink, inputs, outputs, options):
        block = int(options.BlockSize())
        if block < 1 or inputs[0].shape[3] % (block * block):
            raise self._error(f'DEPTH_TO_SPACE #{self.op_index}: {inputs[0].shape[3]} channels '
                              f'do not split into blocks of {block}x{block}')
        return [self._spatial(sink, inputs[0], lambda node: sink.fn(depth_to_space, node, block))]

    def _op_DENSIFY(self, sink, inputs, outputs, options):
        # Sparse constants are expanded when the tensors are read; DENSIFY passes them on.
        if not inputs[0].is_const:
            raise UnsupportedOperatorError(
                f'{self.name}: DENSIFY #{self.op_index} reads a non-constant tensor')
        return [inputs[0].const]

    # --- pooling
    def _op_AVERAGE_POOL_2D(self, sink, inputs, outputs, options):
        return [self._pool(sink, inputs[0], outputs[0], options, average=True)]

    def _op_MAX_POOL_2D(self, sink, inputs, outputs, options):
        return [self._pool(sink, inputs[0], outputs[0], options, average=False)]

    def _pool(self, sink, x, out, options, average: bool):
        kernel = (options.FilterHeight(), options.FilterWidth())
        stride = (options.StrideH(), options.StrideW())
        in_hw = x.shape[1:3]
        if average and tuple(out.shape[1:3]) == (1, 1) and tuple(kernel) == tuple(in_hw):
            def emit_global(node):  # a global average pool: the mean over H and W
                node = sink.fn(torch.mean, node, dim=(2, 3), keepdim=True)
                return self._fused(sink, node, options)
            return self._spatial(sink, x, emit_global)
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
                        f'{self.name}: AVERAGE_POOL_2D #{self.op_index} needs asymmetric SAME '
                        f'padding {pads}, which the importer does not handle')
                layer = nn.AvgPool2d(kernel, stride, padding=(top, left), ceil_mode=False,
                                     count_include_pad=False)
                node = sink.module(self._name('avgpool'), layer, node)
            else:
                padding = (top, left)
                if not symmetric:
                    node = sink.module(self._name('pad'), nn.ConstantPad2d(
                        (left, right, top, bottom), float('-inf')), node)
                    padding = (0, 0)
                node = sink.module(self._name('maxpool'), nn.MaxPool2d(kernel, stride, padding),
                                   node)
            return self._fused(sink, node, options)
        return self._spatial(sink, x, emit)

    def _op_MEAN(self, sink, inputs, outputs, options):
        return self._op_reduce(sink, inputs, outputs, options)

    def _op_reduce(self, sink, inputs, outputs, options):
        x, axes = inputs[:2]
        axes = tuple(sorted({int(a) % len(x.shape) for a in axes.const.reshape(-1).tolist()}))
        keep = bool(options.KeepDims()) if options is not None else False
        reducer = _REDUCERS[self.opname]
        if sink is self.trunk:  # only a mean over H and W with keep_dims gets here
            node = self._use(x, sink, 'nchw')
            return [sink.fn(torch.mean, node, dim=(2, 3), keepdim=True)]
        return [sink.fn(reducer, self._use(x, sink, 'tf'), dim=axes, keepdim=keep)]

    # --- resizing
    def _op_RESIZE_BILINEAR(self, sink, inputs, outputs, options):
        return [self._resize(sink, inputs[0], outputs[0], options, 'bilinear')]

    def _op_RESIZE_NEAREST_NEIGHBOR(self, sink, inputs, outputs, options):
        return [self._resize(sink, inputs[0], outputs[0], options, 'nearest')]

    def _resize(self, sink, x, out, options, mode: str):
        size = tuple(out.shape[1:3])
        in_hw = tuple(x.shape[1:3])
        align = bool(options.AlignCorners())
        half = bool(options.HalfPixelCenters())
        if size == in_hw:  # every TF resize mode is the identity then
            return self._use(x, sink, self._layout(sink))

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
                    f'{self.name}: RESIZE_NEAREST_NEIGHBOR #{self.op_index} uses align_corners, '
                    'which the importer does not handle')
            return sink.fn(F.interpolate, node, size=size,
                           mode='nearest-exact' if half else 'nearest')
        return self._spatial(sink, x, emit)

    # --- padding and concatenation
    def _op_PAD(self, sink, inputs, outputs, options):
        return self._pad(sink, inputs[0], inputs[1], 0.0)

    def _op_PADV2(self, sink, inputs, outputs, options):
        value = 0.0
        if len(inputs) > 2 and inputs[2] is not None:
            value = float(inputs[2].const.reshape(-1)[0])
        return self._pad(sink, inputs[0], inputs[1], value)

    def _pad(self, sink, x, paddings, value):
        pads = [tuple(int(p) for p in row) for row in paddings.const.reshape(-1, 2).tolist()]
        if sink is self.trunk:
            if pads[0] != (0, 0) or pads[3] != (0, 0):
                raise UnsupportedOperatorError(
                    f'{self.name}: PAD #{self.op_index} pads the batch or channel axis')
            (top, bottom), (left, right) = pads[1], pads[2]
            layer = nn.ZeroPad2d((left, right, top, bottom)) if value == 0 else \
                nn.ConstantPad2d((left, right, top, bottom), value)
            return [sink.module(self._name('pad'), layer, self._use(x, sink, 'nchw'))]
        flat = []
        for before, after in reversed(pads):
            flat += [before, after]
        return [sink.fn(F.pad, self._use(x, sink, 'tf'), tuple(flat), value=value)]

    def _op_CONCATENATION(self, sink, inputs, outputs, options):
        rank = len(outputs[0].shape)
        axis = options.Axis() % rank
        layout = self._layout(sink)
        if layout == 'nchw':
            axis = {0: 0, 1: 2, 2: 3, 3: 1}[axis]
        parts = [self._use(v, sink, layout) for v in inputs]
        if sink.eager:
            parts = [p if torch.is_tensor(p) else torch.tensor(p) for p in parts]
        # The TFLite kernel ignores a fused activation on CONCATENATION (measured with
        # ai-edge-litert); so does the importer.
        return [sink.fn(torch.cat, parts, dim=axis)]

    # --- elementwise
    def _op_activation(self, sink, inputs, outputs, options):
        layer = _ACTIVATIONS[self.opname](options)
        x = self._use(inputs[0], sink, self._layout(sink))
        return [sink.module(self._name(self.opname.lower()), layer, x)]

    def _op_PRELU(self, sink, inputs, outputs, options):
        x, alpha = inputs
        channels = x.shape[-1]
        if not alpha.is_const or not _per_channel(alpha.const) or (
                alpha.const.numel() not in (1, channels)):
            raise UnsupportedOperatorError(
                f'{self.name}: PRELU #{self.op_index} has a non per-channel alpha of shape '
                f'{tuple(alpha.shape)}')
        layer = nn.PReLU(alpha.const.numel())
        with torch.no_grad():
            layer.weight.copy_(alpha.const.reshape(-1))
        name = self._name('prelu')
        return [self._spatial(sink, x, lambda node: sink.module(name, layer, node))]

    def _op_QUANTIZE(self, sink, inputs, outputs, options):
        return [self._use(inputs[0], sink, self._layout(sink))]  # real values stay real

    def _op_DEQUANTIZE(self, sink, inputs, outputs, options):
        x = self._use(inputs[0], sink, self._layout(sink))
        if sink.eager and torch.is_tensor(x):
            return [x.float()]  # float16 weights widened
        return [x]

    def _elementwise_args(self, sink, inputs, scalars: bool = True):
        """Arguments of an elementwise op; constants as Python scalars where ``scalars``."""
        layout = self._layout(sink)
        args = []
        for v in inputs:
            if v.is_const and sink is self.trunk:
                c = v.const.reshape(-1)
                args.append(c.item() if c.numel() == 1 and scalars else
                            sink.constant(c.reshape(1, -1, 1, 1).float(), self._name('c')))
            elif v.is_const and not sink.eager:
                others = max(len(o.shape) for o in inputs if not o.is_const)
                args.append(v.const.reshape(-1)[0].item()
                            if scalars and v.const.numel() == 1 and v.const.dim() <= others
                            else sink.constant(v.const, self._name('c')))
            else:
                args.append(self._use(v, sink, layout))
        return args

    def _op_elementwise(self, sink, inputs, outputs, options):
        a, b = inputs[:2]
        opname = self.opname
        if opname == 'SUB' and b.is_const and not sink.eager:
            # x - c as x + (-c): the trunk then holds one elementwise kind fewer.
            opname, b = 'ADD', _Value(b.shape, b.dtype, const=-b.const, type_code=b.type_code)
        function = _ELEMENTWISE_FUNCTIONS[opname]
        a, b = self._elementwise_args(sink, [a, b], scalars=function in _SCALAR_OK)
        return [self._fused(sink, sink.fn(function, a, b), options)]

    def _op_DIV(self, sink, inputs, outputs, options):
        a, b = inputs[:2]
        if outputs[0].type_code in _INTEGER_TYPES:
            a, b = self._elementwise_args(sink, [a, b])
            return [self._fused(sink, sink.fn(torch.div, a, b, rounding_mode='trunc'), options)]
        if b.is_const and not sink.eager:  # x / c as x * (1 / c)
            b = _Value(b.shape, b.dtype, const=1.0 / b.const.float(), type_code=b.type_code)
            a, b = self._elementwise_args(sink, [a, b])
            return [self._fused(sink, sink.fn(operator.mul, a, b), options)]
        a, b = self._elementwise_args(sink, [a, b])
        return [self._fused(sink, sink.fn(operator.truediv, a, b), options)]

    def _op_FLOOR_DIV(self, sink, inputs, outputs, options):
        a, b = self._elementwise_args(sink, inputs[:2])
        return [sink.fn(torch.div, a, b, rounding_mode='floor')]

    def _op_FLOOR_MOD(self, sink, inputs, outputs, options):
        a, b = self._elementwise_args(sink, inputs[:2])
        return [sink.fn(torch.remainder, a, b)]

    def _op_unary(self, sink, inputs, outputs, options):
        x = self._use(inputs[0], sink, self._layout(sink))
        return [sink.fn(_UNARY_FUNCTIONS[self.opname], x)]

    def _op_CAST(self, sink, inputs, outputs, options):
        source, target = inputs[0].type_code, outputs[0].type_code
        if sink is self.trunk:
            return [self._use(inputs[0], sink, 'nchw')]
        x = self._use(inputs[0], sink, 'tf')
        if source in (0, 1, 10) and target in _SMALL_INT_RANGES:
            x = sink.fn(torch.trunc, x)  # float -> small integer, which stays held as a float
        return [sink.method('to', x, outputs[0].torch_dtype())]

    # --- shape and indexing operators (tail)
    def _op_RESHAPE(self, sink, inputs, outputs, options):
        x = self._use(inputs[0], sink, 'tf')
        return [sink.fn(torch.reshape, x, tuple(outputs[0].shape))]

    _op_SQUEEZE = _op_RESHAPE
    _op_EXPAND_DIMS = _op_RESHAPE

    def _op_TRANSPOSE(self, sink, inputs, outputs, options):
        x = self._use(inputs[0], sink, 'tf')
        perm = tuple(int(p) for p in inputs[1].const.reshape(-1).tolist())
        return [sink.method('permute', x, *perm)]

    def _op_SOFTMAX(self, sink, inputs, outputs, options):
        x = self._use(inputs[0], sink, 'tf')
        beta = float(options.Beta()) if options is not None else 1.0
        if beta != 1.0:
            x = sink.fn(operator.mul, x, beta)
        return [sink.fn(torch.softmax, x, dim=-1)]

    def _op_LOG_SOFTMAX(self, sink, inputs, outputs, options):
        return [sink.fn(torch.log_softmax, self._use(inputs[0], sink, 'tf'), dim=-1)]

    def _op_FULLY_CONNECTED(self, sink, inputs, outputs, options):
        x, weight, bias = (inputs + [None])[:3]
        if not weight.is_const:
            raise UnsupportedOperatorError(
                f'{self.name}: FULLY_CONNECTED #{self.op_index} has non-constant weights')
        out_features, in_features = weight.const.shape
        layer = nn.Linear(in_features, out_features, bias=bias is not None)
        with torch.no_grad():
            layer.weight.copy_(weight.const)
            if bias is not None:
                layer.bias.copy_(bias.const.reshape(-1).float())
        node = sink.fn(torch.reshape, self._use(x, sink, 'tf'), (-1, in_features))
        node = sink.module(self._name('linear'), layer, node)
        node = sink.fn(torch.reshape, node, tuple(outputs[0].shape))
        return [self._fused(sink, node, options)]

    def _op_ARG_MAX(self, sink, inputs, outputs, options):
        return [self._arg(sink, inputs, torch.argmax)]

    def _op_ARG_MIN(self, sink, inputs, outputs, options):
        return [self._arg(sink, inputs, torch.argmin)]

    def _arg(self, sink, inputs, fn):
        x = self._use(inputs[0], sink, 'tf')
        axis = int(inputs[1].const.reshape(-1)[0]) % len(inputs[0].shape)
        return sink.fn(fn, x, dim=axis)

    def _op_GATHER(self, sink, inputs, outputs, options):
        params, indices = inputs[:2]
        axis = options.Axis() % len(params.shape) if options is not None else 0
        if options is not None and options.BatchDims():
            raise UnsupportedOperatorError(
                f'{self.name}: GATHER #{self.op_index} with batch_dims is not supported')
        x = self._use(params, sink, 'tf')
        index = self._use(indices, sink, 'tf')
        key = (slice(None),) * axis + (index,)
        return [sink.fn(operator.getitem, x, key)]

    def _op_GATHER_ND(self, sink, inputs, outputs, options):
        params, indices = inputs[:2]
        x = self._use(params, sink, 'tf')
        index = self._use(indices, sink, 'tf')
        depth = indices.shape[-1]
        parts = tuple(sink.fn(operator.getitem, index, (Ellipsis, k)) for k in range(depth))
        return [sink.fn(operator.getitem, x, parts)]

    def _op_PACK(self, sink, inputs, outputs, options):
        parts = [self._use(v, sink, 'tf') for v in inputs]
        if sink.eager:
            parts = [p if torch.is_tensor(p) else torch.tensor(p) for p in parts]
        else:
            parts = [p if isinstance(p, fx.Node) else
                     sink.constant(torch.as_tensor(p), self._name('c')) for p in parts]
        return [sink.fn(torch.stack, parts, dim=options.Axis() % len(outputs[0].shape))]

    def _op_UNPACK(self, sink, inputs, outputs, options):
        x = self._use(inputs[0], sink, 'tf')
        axis = options.Axis() % len(inputs[0].shape)
        parts = sink.fn(torch.unbind, x, dim=axis)
        return [sink.fn(operator.getitem, parts, k) for k in range(len(outputs))]

    def _op_SPLIT(self, sink, inputs, outputs, options):
        axis_value, x_value = inputs[:2]
        axis = int(axis_value.const.reshape(-1)[0]) % len(x_value.shape)
        sizes = [t.shape[axis] for t in outputs]
        parts = sink.fn(torch.split, self._use(x_value, sink, 'tf'), sizes, dim=axis)
        return [sink.fn(operator.getitem, parts, k) for k in range(len(outputs))]

    def _op_SPLIT_V(self, sink, inputs, outputs, options):
        x_value, _, axis_value = inputs[:3]
        axis = int(axis_value.const.reshape(-1)[0]) % len(x_value.shape)
        sizes = [t.shape[axis] for t in outputs]
        parts = sink.fn(torch.split, self._use(x_value, sink, 'tf'), sizes, dim=axis)
        return [sink.fn(operator.getitem, parts, k) for k in range(len(outputs))]

    def _op_SLICE(self, sink, inputs, outputs, options):
        x_value, begin, size = inputs[:3]
        begin = [int(b) for b in begin.const.reshape(-1).tolist()]
        key = tuple(slice(b, b + n) for b, n in zip(begin, outputs[0].shape))
        return [sink.fn(operator.getitem, self._use(x_value, sink, 'tf'), key)]

    def _op_STRIDED_SLICE(self, sink, inputs, outputs, options):
        x_value, begin, end, strides = inputs[:4]
        if options.EllipsisMask() or options.NewAxisMask() or (
                hasattr(options, 'Offset') and options.Offset()):
            raise UnsupportedOperatorError(
                f'{self.name}: STRIDED_SLICE #{self.op_index} uses ellipsis, new-axis or offset '
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
                f'{self.name}: STRIDED_SLICE #{self.op_index} has a negative stride')
        return [sink.fn(operator.getitem, self._use(x_value, sink, 'tf'), tuple(key))]


def supported_operators() -> list[str]:
    """Return the TFLite builtin operators the importer handles, sorted."""
    names = {name[4:] for name in dir(_Importer) if name.startswith('_op_')}
    names -= {'activation', 'unary', 'elementwise', 'reduce'}
    names |= set(_ACTIVATIONS) | set(_UNARY_FUNCTIONS) | set(_ELEMENTWISE_FUNCTIONS)
    names |= set(_REDUCERS) | set(_CUSTOM_HANDLERS)
    return sorted(names)


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


def _per_channel(tensor: torch.Tensor) -> bool:
    """Whether a constant broadcasts over a 4-D NHWC map per channel (all but the last dim 1)."""
    return tensor.dim() <= 4 and all(d == 1 for d in tensor.shape[:-1])


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
