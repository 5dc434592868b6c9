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
Rewrite a TFLite model so that a stock interpreter can run it (the parity reference).

MediaPipe's selfie segmentation models end in the custom operator
``Convolution2DTransposeBias``, which only MediaPipe's own runtime registers; ``ai-edge-litert``
refuses the model. The operator is TF's transposed convolution plus a bias input (MediaPipe
copied TF's reference kernel and added the bias), which is exactly what the builtin
TRANSPOSE_CONV does with its optional fourth input. :func:`builtin_transpose_conv` copies the
flatbuffer (buffers, tensors, operators and their options, first subgraph only) with each such
custom operator replaced by the builtin one, so that the interpreter can serve as the reference
for the whole model. The replacement itself is checked against a direct transcription of the
MediaPipe kernel in the tests.

:func:`with_outputs` makes intermediate tensors graph outputs, so that an interpreter run hands
back the feature maps the imported trunk returns (``model.runtime: litert``): a delegate such as
XNNPACK keeps only graph outputs readable after a run.
"""

from __future__ import annotations

import numpy as np

CUSTOM_TRANSPOSE_CONV = 'Convolution2DTransposeBias'
_TRANSPOSE_CONV = 67  # BuiltinOperator.TRANSPOSE_CONV
_TFLITE_PADDING_SAME = 1  # TfLitePadding in the custom options; the schema's Padding.SAME is 0
_SUBGRAPH_OUTPUTS = 8  # vtable slot of SubGraph.outputs (fields: tensors, inputs, outputs)


def custom_operators(data: bytes) -> list[str]:
    """Return the custom codes of the custom operators the first subgraph runs, sorted."""
    import tflite

    model = tflite.Model.GetRootAs(data, 0)
    graph = model.Subgraphs(0)
    names = set()
    for i in range(graph.OperatorsLength()):
        code = model.OperatorCodes(graph.Operators(i).OpcodeIndex())
        if max(code.BuiltinCode(), code.DeprecatedBuiltinCode()) == tflite.BuiltinOperator.CUSTOM:
            names.add((code.CustomCode() or b'').decode('utf-8', 'replace'))
    return sorted(names)


def builtin_transpose_conv(data: bytes) -> bytes:
    """
    Return a copy of the model with every Convolution2DTransposeBias as a builtin TRANSPOSE_CONV.

    The builtin operator takes (output_shape, weights, input, bias); a constant output_shape
    tensor is added for each replaced operator. Metadata and signature definitions are not
    copied (the interpreter does not need them). Raises ValueError for models this copier does
    not handle (several subgraphs, sparse tensors, options from the second options union).
    """
    import flatbuffers
    import tflite

    model = tflite.Model.GetRootAs(data, 0)
    if model.SubgraphsLength() != 1:
        raise ValueError(f'expected a model with one subgraph, got {model.SubgraphsLength()}')
    graph = model.Subgraphs(0)
    option_names = {value: key for key, value in vars(tflite.BuiltinOptions).items()
                    if not key.startswith('_') and isinstance(value, int)}
    builder = flatbuffers.Builder(len(data) + 1024)

    # Operator codes: the originals, plus TRANSPOSE_CONV when a custom operator is replaced.
    codes = [model.OperatorCodes(i) for i in range(model.OperatorCodesLength())]
    replaced = {i for i, code in enumerate(codes)
                if (code.CustomCode() or b'').decode('utf-8', 'replace') == CUSTOM_TRANSPOSE_CONV}
    builtin_index = len(codes)

    ops = [graph.Operators(i) for i in range(graph.OperatorsLength())]
    buffers = [_buffer_bytes(model.Buffers(i)) for i in range(model.BuffersLength())]
    tensors = [graph.Tensors(i) for i in range(graph.TensorsLength())]
    # One int32 output-shape constant per replaced operator: (tensor index, buffer index, shape).
    shape_tensors = {}
    for op_index, op in enumerate(ops):
        if op.OpcodeIndex() in replaced:
            output = tensors[int(op.OutputsAsNumpy()[0])]
            shape = np.asarray(output.ShapeAsNumpy(), np.int32)
            buffers.append(shape.tobytes())
            shape_tensors[op_index] = (len(tensors) + len(shape_tensors), len(buffers) - 1, shape)

    buffer_offsets = []
    for raw in buffers:
        vector = _aligned_bytes(builder, raw) if raw else None
        tflite.BufferStart(builder)
        if vector is not None:
            tflite.BufferAddData(builder, vector)
        buffer_offsets.append(tflite.BufferEnd(builder))

    tensor_offsets = [_copy_tensor(builder, tflite, t) for t in tensors]
    for tensor_index, buffer_index, shape in shape_tensors.values():
        name = builder.CreateString(f'transpose_conv_output_shape_{tensor_index}')
        dims = builder.CreateNumpyVector(np.asarray([len(shape)], np.int32))
        tflite.TensorStart(builder)
        tflite.TensorAddShape(builder, dims)
        tflite.TensorAddType(builder, tflite.TensorType.INT32)
        tflite.TensorAddBuffer(builder, buffer_index)
        tflite.TensorAddName(builder, name)
        tensor_offsets.append(tflite.TensorEnd(builder))

    op_offsets = []
    for op_index, op in enumerate(ops):
        if op_index in shape_tensors:
            op_offsets.append(_transpose_conv_op(builder, tflite, op, builtin_index,
                                                 shape_tensors[op_index][0]))
        else:
            op_offsets.append(_copy_operator(builder, tflite, op, option_names))

    tensors_vector = _table_vector(builder, tflite.SubGraphStartTensorsVector, tensor_offsets)
    ops_vector = _table_vector(builder, tflite.SubGraphStartOperatorsVector, op_offsets)
    inputs_vector = builder.CreateNumpyVector(graph.InputsAsNumpy().astype(np.int32))
    outputs_vector = builder.CreateNumpyVector(graph.OutputsAsNumpy().astype(np.int32))
    graph_name = builder.CreateString((graph.Name() or b'main').decode('utf-8', 'replace'))
    tflite.SubGraphStart(builder)
    tflite.SubGraphAddTensors(builder, tensors_vector)
    tflite.SubGraphAddInputs(builder, inputs_vector)
    tflite.SubGraphAddOutputs(builder, outputs_vector)
    tflite.SubGraphAddOperators(builder, ops_vector)
    tflite.SubGraphAddName(builder, graph_name)
    subgraph = tflite.SubGraphEnd(builder)

    code_offsets = [_copy_code(builder, tflite, code) for code in codes]
    if replaced:
        tflite.OperatorCodeStart(builder)
        tflite.OperatorCodeAddDeprecatedBuiltinCode(builder, _TRANSPOSE_CONV)
        tflite.OperatorCodeAddBuiltinCode(builder, _TRANSPOSE_CONV)
        tflite.OperatorCodeAddVersion(builder, 3)  # version 3: the optional bias input
        code_offsets.append(tflite.OperatorCodeEnd(builder))

    codes_vector = _table_vector(builder, tflite.ModelStartOperatorCodesVector, code_offsets)
    subgraphs_vector = _table_vector(builder, tflite.ModelStartSubgraphsVector, [subgraph])
    buffers_vector = _table_vector(builder, tflite.ModelStartBuffersVector, buffer_offsets)
    description = builder.CreateString(
        (model.Description() or b'').decode('utf-8', 'replace') +
        ' (sparse_perception: Convolution2DTransposeBias as TRANSPOSE_CONV)')
    tflite.ModelStart(builder)
    tflite.ModelAddVersion(builder, model.Version())
    tflite.ModelAddOperatorCodes(builder, codes_vector)
    tflite.ModelAddSubgraphs(builder, subgraphs_vector)
    tflite.ModelAddDescription(builder, description)
    tflite.ModelAddBuffers(builder, buffers_vector)
    root = tflite.ModelEnd(builder)
    builder.Finish(root, file_identifier=b'TFL3')
    return bytes(builder.Output())


def with_outputs(data: bytes, outputs: list[int]) -> bytes:
    """
    Return a copy of the model whose first subgraph's outputs are the tensors ``outputs``.

    Unlike :func:`builtin_transpose_conv` this copies nothing else: the new outputs vector is
    appended to the flatbuffer and the subgraph's field points at it (flatbuffer offsets point
    forward, so an appended vector is always reachable), which works for any model, sparse
    tensors included. Raises ValueError for a tensor index the subgraph does not have.
    """
    import tflite

    model = tflite.Model.GetRootAs(data, 0)
    graph = model.Subgraphs(0)
    bad = [i for i in outputs if not 0 <= int(i) < graph.TensorsLength()]
    if bad or not outputs:
        raise ValueError(f'outputs {list(outputs)} must be tensor indices of the first subgraph '
                         f'(0 to {graph.TensorsLength() - 1})')
    field = graph._tab.Offset(_SUBGRAPH_OUTPUTS)
    if not field:
        raise ValueError('the subgraph has no outputs field to redirect')
    position = graph._tab.Pos + field  # where the outputs vector's forward offset is stored
    edited = bytearray(data)
    edited += bytes(-len(edited) % 4)  # the vector's length prefix is 4-byte aligned
    start = len(edited)
    edited += np.asarray([len(outputs)], '<u4').tobytes()
    edited += np.asarray(outputs, '<i4').tobytes()
    edited[position:position + 4] = np.asarray([start - position], '<u4').tobytes()
    return bytes(edited)


def _buffer_bytes(buffer) -> bytes:
    if buffer.Offset() > 1:
        raise ValueError('buffers stored outside the flatbuffer (models over 2 GB) are not '
                         'copied')
    return buffer.DataAsNumpy().tobytes() if buffer.DataLength() else b''


def _aligned_bytes(builder, raw: bytes):
    builder.StartVector(1, len(raw), 16)  # 16-byte aligned like the TFLite converter
    builder.head = builder.head - len(raw)
    builder.Bytes[builder.head:builder.head + len(raw)] = raw
    builder.vectorNumElems = len(raw)
    return builder.EndVector()


def _table_vector(builder, start, offsets):
    start(builder, len(offsets))
    for offset in reversed(offsets):
        builder.PrependUOffsetTRelative(offset)
    return builder.EndVector()


def _copy_tensor(builder, tflite, tensor):
    if tensor.Sparsity() is not None:
        raise ValueError('sparse tensors are not copied')
    name = builder.CreateString(tensor.Name() or b'')
    shape = builder.CreateNumpyVector(
        tensor.ShapeAsNumpy().astype(np.int32) if tensor.ShapeLength() else
        np.zeros(0, np.int32))
    signature = builder.CreateNumpyVector(tensor.ShapeSignatureAsNumpy().astype(np.int32)) \
        if tensor.ShapeSignatureLength() else None
    quant = None
    q = tensor.Quantization()
    if q is not None and (q.ScaleLength() or q.MinLength() or q.MaxLength()):
        vectors = {}
        for field, dtype in (('Scale', np.float32), ('ZeroPoint', np.int64),
                             ('Min', np.float32), ('Max', np.float32)):
            if getattr(q, field + 'Length')():
                vectors[field] = builder.CreateNumpyVector(
                    getattr(q, field + 'AsNumpy')().astype(dtype))
        tflite.QuantizationParametersStart(builder)
        for field, vector in vectors.items():
            getattr(tflite, 'QuantizationParametersAdd' + field)(builder, vector)
        tflite.QuantizationParametersAddQuantizedDimension(builder, q.QuantizedDimension())
        quant = tflite.QuantizationParametersEnd(builder)
    tflite.TensorStart(builder)
    tflite.TensorAddShape(builder, shape)
    tflite.TensorAddType(builder, tensor.Type())
    tflite.TensorAddBuffer(builder, tensor.Buffer())
    tflite.TensorAddName(builder, name)
    if quant is not None:
        tflite.TensorAddQuantization(builder, quant)
    if tensor.IsVariable():
        tflite.TensorAddIsVariable(builder, True)
    if signature is not None:
        tflite.TensorAddShapeSignature(builder, signature)
    return tflite.TensorEnd(builder)


def _copy_code(builder, tflite, code):
    custom = builder.CreateString(code.CustomCode()) if code.CustomCode() else None
    tflite.OperatorCodeStart(builder)
    tflite.OperatorCodeAddDeprecatedBuiltinCode(builder, code.DeprecatedBuiltinCode())
    tflite.OperatorCodeAddBuiltinCode(builder, code.BuiltinCode())
    tflite.OperatorCodeAddVersion(builder, code.Version())
    if custom is not None:
        tflite.OperatorCodeAddCustomCode(builder, custom)
    return tflite.OperatorCodeEnd(builder)


def _copy_options(builder, tflite, op, option_names):
    """Copy an operator's builtin options table field by field, whatever its type."""
    kind = op.BuiltinOptionsType()
    if not kind:
        return 0, None
    name = option_names[kind]
    table = op.BuiltinOptions()
    reader = getattr(tflite, name)()
    reader.Init(table.Bytes, table.Pos)
    prefix = f'{name}Add'
    fields = [attr[len(prefix):] for attr in dir(tflite) if attr.startswith(prefix)]
    values = {}
    for field in fields:
        if hasattr(reader, field + 'AsNumpy'):  # a vector field: build it before the table
            if getattr(reader, field + 'Length')():
                values[field] = builder.CreateNumpyVector(getattr(reader, field + 'AsNumpy')())
        elif hasattr(reader, field):
            values[field] = getattr(reader, field)()
    getattr(tflite, f'{name}Start')(builder)
    for field, value in values.items():
        getattr(tflite, prefix + field)(builder, value)
    return kind, getattr(tflite, f'{name}End')(builder)


def _copy_operator(builder, tflite, op, option_names):
    if hasattr(op, 'BuiltinOptions2Type') and op.BuiltinOptions2Type():
        raise ValueError('operators with options from the second options union are not copied')
    inputs = builder.CreateNumpyVector(
        op.InputsAsNumpy().astype(np.int32) if op.InputsLength() else np.zeros(0, np.int32))
    outputs = builder.CreateNumpyVector(op.OutputsAsNumpy().astype(np.int32))
    custom = builder.CreateNumpyVector(op.CustomOptionsAsNumpy()) \
        if op.CustomOptionsLength() else None
    kind, options = _copy_options(builder, tflite, op, option_names)
    tflite.OperatorStart(builder)
    tflite.OperatorAddOpcodeIndex(builder, op.OpcodeIndex())
    tflite.OperatorAddInputs(builder, inputs)
    tflite.OperatorAddOutputs(builder, outputs)
    if options is not None:
        tflite.OperatorAddBuiltinOptionsType(builder, kind)
        tflite.OperatorAddBuiltinOptions(builder, options)
    if custom is not None:
        tflite.OperatorAddCustomOptions(builder, custom)
        tflite.OperatorAddCustomOptionsFormat(builder, op.CustomOptionsFormat())
    return tflite.OperatorEnd(builder)


def _transpose_conv_op(builder, tflite, op, opcode_index: int, shape_tensor: int):
    data, weights, bias = (int(i) for i in op.InputsAsNumpy())
    raw = op.CustomOptionsAsNumpy().tobytes() if op.CustomOptionsLength() else b''
    if len(raw) < 12:
        raise ValueError(f'{CUSTOM_TRANSPOSE_CONV} has {len(raw)} bytes of options; expected '
                         'at least 12 (padding, stride_w, stride_h)')
    padding, stride_w, stride_h = np.frombuffer(raw[:12], '<i4').tolist()
    inputs = builder.CreateNumpyVector(np.asarray([shape_tensor, weights, data, bias], np.int32))
    outputs = builder.CreateNumpyVector(op.OutputsAsNumpy().astype(np.int32))
    tflite.TransposeConvOptionsStart(builder)
    tflite.TransposeConvOptionsAddPadding(
        builder, tflite.Padding.SAME if padding == _TFLITE_PADDING_SAME else tflite.Padding.VALID)
    tflite.TransposeConvOptionsAddStrideW(builder, stride_w)
    tflite.TransposeConvOptionsAddStrideH(builder, stride_h)
    options = tflite.TransposeConvOptionsEnd(builder)
    tflite.OperatorStart(builder)
    tflite.OperatorAddOpcodeIndex(builder, opcode_index)
    tflite.OperatorAddInputs(builder, inputs)
    tflite.OperatorAddOutputs(builder, outputs)
    tflite.OperatorAddBuiltinOptionsType(builder, tflite.BuiltinOptions.TransposeConvOptions)
    tflite.OperatorAddBuiltinOptions(builder, options)
    return tflite.OperatorEnd(builder)
