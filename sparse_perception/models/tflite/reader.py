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
Read a TFLite flatbuffer into a plain description: tensors, constant buffers and operators.

:class:`FlatModel` reads the first subgraph with the ``tflite`` schema package (the ``tflite``
extra): every tensor with its static shape, type, quantisation and, for constants, its raw
buffer in the TF layout (sparse buffers expanded by :func:`densify`); the input and output
tensor indices; and, one at a time, the operators with their names (``CUSTOM(<code>)`` for
custom operators) and tensor indices. Nothing here builds torch modules or dequantises.
"""

from __future__ import annotations

from dataclasses import dataclass
import math
from typing import Any, Callable, Iterator

import numpy as np
import torch

# TFLite TensorType -> numpy dtype of the stored buffer.
_NUMPY_TYPES = {
    0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 6: np.bool_,
    7: np.int16, 9: np.int8, 10: np.float64,
}
_TYPE_NAMES = {
    0: 'float32', 1: 'float16', 2: 'int32', 3: 'uint8', 4: 'int64', 5: 'string', 6: 'bool',
    7: 'int16', 8: 'complex64', 9: 'int8', 10: 'float64',
}
INTEGER_TYPES = {2, 4}  # int32 and int64 stay integers (indices, shapes)
SMALL_INT_RANGES = {3: (0, 255), 9: (-128, 127), 7: (-32768, 32767)}
# SparseIndexVector union members -> the schema table holding the index values.
_INDEX_VECTORS = {1: 'Int32Vector', 2: 'Uint16Vector', 3: 'Uint8Vector'}
# A sparse tensor's dense size is bounded by what it stores: pruning keeps a few percent of
# the weights at the least (TFLite's sparse kernels pay off from about 50%, pruning tools
# stop around 90-95%), so 64 dense elements per stored value leaves a wide margin, and the
# floor (4 MB of float32) covers small tensors. A shape far beyond that is not a model's:
# a few hundred bytes could otherwise make densify allocate gigabytes.
SPARSE_EXPANSION_LIMIT = 64
SPARSE_DENSE_FLOOR = 1 << 20


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
class Tensor:
    """A tensor of the subgraph; ``data`` is set for constants."""

    index: int
    name: str
    shape: tuple[int, ...]
    type_code: int  # TFLite TensorType
    quant: Quantization | None
    data: np.ndarray | None  # constant buffer, raw (not dequantised), TF layout

    @property
    def type_name(self) -> str:
        return _TYPE_NAMES.get(self.type_code, f'type{self.type_code}')

    def torch_dtype(self) -> torch.dtype:
        """Return the dtype the imported graph holds it in: float but for indices and masks."""
        if self.type_code in INTEGER_TYPES:
            return torch.int64
        if self.type_code == 6:
            return torch.bool
        return torch.float32

    def spec(self) -> TensorSpec:
        return TensorSpec(self.name, self.shape, self.type_name, self.quant)


@dataclass(frozen=True)
class Operator:
    """One operator of the subgraph, in execution order."""

    index: int
    opname: str  # builtin operator name, or CUSTOM(<custom code>)
    inputs: tuple[int, ...]  # tensor indices; negative for an omitted optional input
    outputs: tuple[int, ...]
    # Returns the builtin options table (None without options), or for a custom operator with
    # custom options their raw bytes. Read on demand: an operator the importer rejects may
    # carry options this schema version cannot decode, and the error must name the operator.
    read_options: Callable[[], Any]


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
    total = math.prod(shape)
    for level in levels:
        if level[0] == 'dense':
            size = int(level[1])
            # A level can never address more entries than the tensor has: checked before the
            # arrays for them are made.
            if size < 0 or len(position) * size > total:
                raise ValueError(f'a dense level of size {size} addresses more than the {total} '
                                 f'positions of the shape {shape}')
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
        if int(counts.sum()) > total:
            raise ValueError(f'a CSR level addresses {int(counts.sum())} entries, more than the '
                             f'{total} positions of the shape {shape}')
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


class FlatModel:
    """
    The first subgraph of a TFLite flatbuffer: ``tensors``, ``inputs``, ``outputs``, operators.

    ``name`` prefixes error messages. Raises :class:`TFLiteImportError` for a flatbuffer
    without a subgraph, a tensor with a dynamic shape or a constant whose buffer does not fit
    its shape, :class:`UnsupportedOperatorError` for a constant of a type not handled, and
    ImportError when the ``tflite`` schema package is missing.
    """

    def __init__(self, data: bytes, name: str):
        self.tflite, self._opcode_names = _tflite_schema()
        self.data = data
        self.name = name
        self.model = self.tflite.Model.GetRootAs(data, 0)
        self._option_classes = {
            value: key for key, value in vars(self.tflite.BuiltinOptions).items()
            if not key.startswith('_') and isinstance(value, int)}
        if self.model.SubgraphsLength() < 1:
            raise self.error('the flatbuffer holds no subgraph')
        self.subgraph = self.model.Subgraphs(0)
        self.tensors = self._read_tensors()
        self.inputs = [int(i) for i in self.subgraph.InputsAsNumpy()]
        self.outputs = [int(i) for i in self.subgraph.OutputsAsNumpy()]

    def error(self, message: str) -> TFLiteImportError:
        return TFLiteImportError(f'{self.name}: {message}')

    def operators(self) -> Iterator[Operator]:
        """Yield the operators in execution order, each read when it is reached."""
        for op_index in range(self.subgraph.OperatorsLength()):
            op = self.subgraph.Operators(op_index)
            code = self.model.OperatorCodes(op.OpcodeIndex())
            builtin = max(int(code.BuiltinCode()), int(code.DeprecatedBuiltinCode()))
            opname = self._opcode_names.get(builtin, f'builtin{builtin}')
            custom = opname == 'CUSTOM'
            if custom:
                custom_code = (code.CustomCode() or b'?').decode('utf-8', 'replace')
                opname = f'CUSTOM({custom_code})'
            yield Operator(
                op_index, opname,
                tuple(int(i) for i in op.InputsAsNumpy()) if op.InputsLength() else (),
                tuple(int(i) for i in op.OutputsAsNumpy()),
                lambda op=op, custom=custom: self._options(op, custom))

    def _options(self, op, custom: bool):
        if custom and op.CustomOptionsLength():
            return op.CustomOptionsAsNumpy().tobytes()
        kind = op.BuiltinOptionsType()
        if not kind:
            return None
        table = op.BuiltinOptions()
        options = getattr(self.tflite, self._option_classes[kind])()
        options.Init(table.Bytes, table.Pos)
        return options

    def _read_tensors(self) -> list[Tensor]:
        tensors = []
        for index in range(self.subgraph.TensorsLength()):
            t = self.subgraph.Tensors(index)
            name = (t.Name() or b'').decode('utf-8', 'replace')
            shape = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
            if any(d < 0 for d in shape):
                raise self.error(f'tensor {name!r} has a dynamic shape {shape}; only '
                                 'static shapes can be imported')
            quant = None
            q = t.Quantization()
            if q is not None and q.ScaleLength() > 0:
                zero = q.ZeroPointAsNumpy() if q.ZeroPointLength() else np.zeros(
                    q.ScaleLength(), np.int64)
                quant = Quantization(tuple(float(s) for s in q.ScaleAsNumpy()),
                                     tuple(int(z) for z in zero), int(q.QuantizedDimension()))
            tensors.append(Tensor(index, name, shape, int(t.Type()), quant,
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
            dense_size = math.prod(shape)
            limit = max(SPARSE_DENSE_FLOOR, SPARSE_EXPANSION_LIMIT * array.size)
            if dense_size > limit:
                raise self.error(
                    f'sparse tensor {name!r} of shape {shape} would expand {array.size} stored '
                    f'values to {dense_size} elements, beyond the limit of {limit} for a pruned '
                    f'tensor ({SPARSE_EXPANSION_LIMIT} per stored value, at least '
                    f'{SPARSE_DENSE_FLOOR}); the file is damaged or not a model')
            try:
                return densify(array, shape, *self._sparse_layout(t.Sparsity()))
            except ValueError as exc:
                raise self.error(f'sparse tensor {name!r}: {exc}') from None
        expected = int(np.prod(shape)) if shape else 1
        if array.size != expected:
            raise self.error(f'constant tensor {name!r} holds {array.size} values, expected '
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
