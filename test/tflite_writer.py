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
Write small TFLite flatbuffers for tests, with the builders of the ``tflite`` schema package.

A test describes a graph (tensors, operators) in a few lines; the TFLite interpreter
(``ai-edge-litert``) then gives the reference answer for each operator the importer handles,
without TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import flatbuffers
import numpy as np
import tflite
from tflite.utils import BUILTIN_OPCODE2NAME

OPCODES = {name: code for code, name in BUILTIN_OPCODE2NAME.items()}
TYPES = {np.float32: 0, np.float16: 1, np.int32: 2, np.uint8: 3, np.int64: 4, np.bool_: 6,
         np.int16: 7, np.int8: 9}


@dataclass
class T:
    """A tensor: shape, numpy dtype, optional constant data and quantisation."""

    shape: tuple[int, ...]
    dtype: Any = np.float32
    data: np.ndarray | None = None
    scale: list[float] | None = None
    zero_point: list[int] | None = None
    axis: int = 0
    name: str = ''
    # Sparse storage (``data`` then holds the stored values only): traversal_order, block_map
    # and levels, each ('dense', size) or ('csr', segments, indices), as densify() takes them.
    sparsity: dict | None = None


@dataclass
class Operator:
    """An operator: builtin name, tensor indices in and out, options table and fields."""

    name: str
    inputs: list[int]
    outputs: list[int]
    options: str | None = None  # e.g. 'Conv2DOptions'
    fields: dict[str, Any] = field(default_factory=dict)
    custom_code: str = ''  # for name 'CUSTOM'
    custom_options: bytes = b''

    @property
    def code_key(self) -> str:
        return f'CUSTOM({self.custom_code})' if self.name == 'CUSTOM' else self.name


def Op(name: str, inputs: list[int], outputs: list[int], options: str | None = None,  # noqa: N802
       **fields: Any) -> Operator:
    """Describe an operator; ``fields`` are the options table's fields by schema name."""
    return Operator(name, inputs, outputs, options, fields)


def CustomOp(code: str, inputs: list[int], outputs: list[int],  # noqa: N802
             options: bytes = b'') -> Operator:
    """Describe a custom operator by its custom code, with raw custom options."""
    return Operator('CUSTOM', inputs, outputs, custom_code=code, custom_options=options)


_INDEX_TABLES = {np.int32: ('Int32Vector', 1), np.uint16: ('Uint16Vector', 2),
                 np.uint8: ('Uint8Vector', 3)}


def _index_vector(builder, values):
    values = np.asarray(values)
    dtype = np.uint8 if values.size == 0 or values.max() < 256 else (
        np.uint16 if values.max() < 65536 else np.int32)
    table, kind = _INDEX_TABLES[dtype]
    vector = _vector(builder, values, dtype)
    getattr(tflite, f'{table}Start')(builder)
    getattr(tflite, f'{table}AddValues')(builder, vector)
    return getattr(tflite, f'{table}End')(builder), kind


def _sparsity(builder, sparsity: dict):
    metas = []
    for level in sparsity['levels']:
        if level[0] == 'dense':
            tflite.DimensionMetadataStart(builder)
            tflite.DimensionMetadataAddFormat(builder, 0)
            tflite.DimensionMetadataAddDenseSize(builder, int(level[1]))
        else:
            segments, segments_kind = _index_vector(builder, level[1])
            indices, indices_kind = _index_vector(builder, level[2])
            tflite.DimensionMetadataStart(builder)
            tflite.DimensionMetadataAddFormat(builder, 1)
            tflite.DimensionMetadataAddArraySegmentsType(builder, segments_kind)
            tflite.DimensionMetadataAddArraySegments(builder, segments)
            tflite.DimensionMetadataAddArrayIndicesType(builder, indices_kind)
            tflite.DimensionMetadataAddArrayIndices(builder, indices)
        metas.append(tflite.DimensionMetadataEnd(builder))
    order = _vector(builder, sparsity['traversal_order'], np.int32)
    block_map = _vector(builder, sparsity.get('block_map', []), np.int32)
    dims = _table_vector(builder, tflite.SparsityParametersStartDimMetadataVector, metas)
    tflite.SparsityParametersStart(builder)
    tflite.SparsityParametersAddTraversalOrder(builder, order)
    tflite.SparsityParametersAddBlockMap(builder, block_map)
    tflite.SparsityParametersAddDimMetadata(builder, dims)
    return tflite.SparsityParametersEnd(builder)


def _vector(builder, values, dtype):
    return builder.CreateNumpyVector(np.asarray(values, dtype=dtype))


def _bytes(builder, data: bytes):
    builder.StartVector(1, len(data), 16)  # 16-byte aligned like the TFLite converter
    builder.head = builder.head - len(data)
    builder.Bytes[builder.head:builder.head + len(data)] = data
    builder.vectorNumElems = len(data)
    return builder.EndVector()


def _table_vector(builder, start, offsets):
    start(builder, len(offsets))
    for offset in reversed(offsets):
        builder.PrependUOffsetTRelative(offset)
    return builder.EndVector()


def _options(builder, name: str, fields: dict[str, Any]):
    vectors = {}
    for key, value in fields.items():
        if isinstance(value, (list, tuple)):
            vectors[key] = _vector(builder, value, np.int32)
    getattr(tflite, f'{name}Start')(builder)
    for key, value in fields.items():
        getattr(tflite, f'{name}Add{key}')(builder, vectors.get(key, value))
    return getattr(tflite, f'{name}End')(builder)


def build(tensors: list[T], ops: list[Operator], inputs: list[int], outputs: list[int]) -> bytes:
    """Serialise a one-subgraph model; returns the flatbuffer bytes."""
    b = flatbuffers.Builder(1024)
    opcode_names = sorted({op.code_key for op in ops})
    opcode_index = {name: i for i, name in enumerate(opcode_names)}

    buffers = [None]  # buffer 0 is the empty sentinel
    tensor_buffer = []
    for t in tensors:
        if t.data is None:
            tensor_buffer.append(0)
        else:
            buffers.append(np.ascontiguousarray(np.asarray(t.data, dtype=t.dtype)).tobytes())
            tensor_buffer.append(len(buffers) - 1)
    buffer_offsets = []
    for data in buffers:
        data_offset = _bytes(b, data) if data else None
        tflite.BufferStart(b)
        if data_offset is not None:
            tflite.BufferAddData(b, data_offset)
        buffer_offsets.append(tflite.BufferEnd(b))

    tensor_offsets = []
    for index, t in enumerate(tensors):
        name = b.CreateString(t.name or f't{index}')
        shape = _vector(b, t.shape, np.int32)
        quant = None
        if t.scale is not None:
            scale = _vector(b, t.scale, np.float32)
            zero = _vector(b, t.zero_point or [0] * len(t.scale), np.int64)
            tflite.QuantizationParametersStart(b)
            tflite.QuantizationParametersAddScale(b, scale)
            tflite.QuantizationParametersAddZeroPoint(b, zero)
            tflite.QuantizationParametersAddQuantizedDimension(b, t.axis)
            quant = tflite.QuantizationParametersEnd(b)
        sparsity = _sparsity(b, t.sparsity) if t.sparsity else None
        tflite.TensorStart(b)
        tflite.TensorAddShape(b, shape)
        tflite.TensorAddType(b, TYPES[np.dtype(t.dtype).type])
        tflite.TensorAddBuffer(b, tensor_buffer[index])
        tflite.TensorAddName(b, name)
        if quant is not None:
            tflite.TensorAddQuantization(b, quant)
        if sparsity is not None:
            tflite.TensorAddSparsity(b, sparsity)
        tensor_offsets.append(tflite.TensorEnd(b))

    op_offsets = []
    for op in ops:
        op_inputs = _vector(b, op.inputs, np.int32)
        op_outputs = _vector(b, op.outputs, np.int32)
        options = _options(b, op.options, op.fields) if op.options else None
        custom = _vector(b, np.frombuffer(op.custom_options, np.uint8), np.uint8) \
            if op.custom_options else None
        tflite.OperatorStart(b)
        tflite.OperatorAddOpcodeIndex(b, opcode_index[op.code_key])
        tflite.OperatorAddInputs(b, op_inputs)
        tflite.OperatorAddOutputs(b, op_outputs)
        if options is not None:
            tflite.OperatorAddBuiltinOptionsType(b, getattr(tflite.BuiltinOptions, op.options))
            tflite.OperatorAddBuiltinOptions(b, options)
        if custom is not None:
            tflite.OperatorAddCustomOptions(b, custom)
        op_offsets.append(tflite.OperatorEnd(b))

    tensors_vector = _table_vector(b, tflite.SubGraphStartTensorsVector, tensor_offsets)
    ops_vector = _table_vector(b, tflite.SubGraphStartOperatorsVector, op_offsets)
    inputs_vector = _vector(b, inputs, np.int32)
    outputs_vector = _vector(b, outputs, np.int32)
    tflite.SubGraphStart(b)
    tflite.SubGraphAddTensors(b, tensors_vector)
    tflite.SubGraphAddInputs(b, inputs_vector)
    tflite.SubGraphAddOutputs(b, outputs_vector)
    tflite.SubGraphAddOperators(b, ops_vector)
    subgraph = tflite.SubGraphEnd(b)

    code_offsets = []
    for name in opcode_names:
        custom = name.startswith('CUSTOM(')
        code = OPCODES['CUSTOM' if custom else name]
        custom_code = b.CreateString(name[len('CUSTOM('):-1]) if custom else None
        tflite.OperatorCodeStart(b)
        tflite.OperatorCodeAddDeprecatedBuiltinCode(b, min(code, 127))
        tflite.OperatorCodeAddBuiltinCode(b, code)
        tflite.OperatorCodeAddVersion(b, 1)
        if custom_code is not None:
            tflite.OperatorCodeAddCustomCode(b, custom_code)
        code_offsets.append(tflite.OperatorCodeEnd(b))

    codes_vector = _table_vector(b, tflite.ModelStartOperatorCodesVector, code_offsets)
    subgraphs_vector = _table_vector(b, tflite.ModelStartSubgraphsVector, [subgraph])
    buffers_vector = _table_vector(b, tflite.ModelStartBuffersVector, buffer_offsets)
    description = b.CreateString('sparse_perception test model')
    tflite.ModelStart(b)
    tflite.ModelAddVersion(b, 3)
    tflite.ModelAddOperatorCodes(b, codes_vector)
    tflite.ModelAddSubgraphs(b, subgraphs_vector)
    tflite.ModelAddDescription(b, description)
    tflite.ModelAddBuffers(b, buffers_vector)
    model = tflite.ModelEnd(b)
    b.Finish(model, file_identifier=b'TFL3')
    return bytes(b.Output())


def conv_segmentation(channels: int = 1) -> bytes:
    """Return a tiny float model: one 3x3 conv from a 16x20 RGB input to ``channels`` maps."""
    rng = np.random.default_rng(0)
    tensors = [T((1, 16, 20, 3)), T((1, 16, 20, channels)),
               T((channels, 3, 3, 3), data=rng.standard_normal((channels, 3, 3, 3))
                 .astype(np.float32))]
    return build(tensors, [Op('CONV_2D', [0, 2, -1], [1], 'Conv2DOptions', Padding=0,
                              StrideW=1, StrideH=1, FusedActivationFunction=0,
                              DilationWFactor=1, DilationHFactor=1)], [0], [1])


def run_reference(model: bytes, inputs: list[np.ndarray], *,
                  builtin_only: bool = False) -> list[np.ndarray]:
    """
    Run a flatbuffer in the TFLite interpreter (ai-edge-litert) and return its outputs.

    ``builtin_only`` leaves out the default XNNPACK delegate, which consumes sparse weights
    itself and so never fills a DENSIFY output the model also returns.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES if builtin_only else \
        OpResolverType.AUTO
    interpreter = Interpreter(model_content=model, num_threads=1,
                              experimental_op_resolver_type=resolver)
    interpreter.allocate_tensors()
    for detail, value in zip(interpreter.get_input_details(), inputs):
        interpreter.set_tensor(detail['index'], value)
    interpreter.invoke()
    return [interpreter.get_tensor(d['index']).copy()
            for d in interpreter.get_output_details()]
