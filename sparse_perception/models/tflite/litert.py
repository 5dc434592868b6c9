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
The dense runtime ``model.runtime: litert``: a model's own .tflite file on the TFLite interpreter.

A user of the MediaPipe and Coral models on a CPU runs them with the TFLite interpreter
(``ai-edge-litert``, XNNPACK), not with torch. :func:`use_litert` swaps a loaded model's torch
networks for that interpreter, in place, behind the same interface:

- ``model.module.trunk(x)`` takes the normalised NCHW float input (``model.to_tensor``) and
  returns the imported trunk's feature maps (NCHW float32, the same tensors the torch trunk
  returns), read from the interpreter: the flatbuffer is edited so that those maps are graph
  outputs (:func:`~sparse_perception.models.tflite.edit.with_outputs`);
- ``model.module.tail(*features)`` returns the model outputs in the TFLite layout, as the torch
  tail does. Given the very feature tensors the last ``trunk`` call returned, it hands back the
  interpreter's own outputs of that run (the interpreter already computed them); given any
  other features it runs the torch tail on them;
- ``model.module(x)`` is ``tail(*trunk(x))``, and BlazePose's ``model.detector`` is swapped too.

A quantised input is fed as the interpreter's integer tensor (the normalisation undone and the
value rounded); quantised trunk maps come back dequantised. MediaPipe's custom
Convolution2DTransposeBias is rewritten as the builtin TRANSPOSE_CONV first, as for the parity
reference (:mod:`sparse_perception.models.parity`). The interpreter runs on the CPU whatever
``model.device`` is; its outputs are moved to the input's device.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

LOG = logging.getLogger(__name__)

_MISSING = ("model.runtime 'litert' needs the TFLite interpreter: pip install ai-edge-litert "
            "(the litert extra: pip install 'sparse_perception[litert]'), or set model.runtime "
            "to 'torch'")


def use_litert(model: Any, threads: int) -> None:
    """
    Run ``model``'s networks on the TFLite interpreter from now on (see the module docstring).

    ``threads`` is the interpreter's thread count (0: every core this process may use).
    Raises ValueError naming the model when it does not come from a .tflite file (a
    checkpoint, or the fully convolutional conversion of one, which runs at any frame size
    where the file has a fixed input), and ImportError when ``ai-edge-litert`` is missing.
    """
    module, detector = litert_networks(model, threads)
    model.module = module
    if detector is not None:
        model.detector = detector
    model.details = dict(getattr(model, 'details', {}) or {},
                         runtime=f'litert (ai-edge-litert, XNNPACK, {module.threads} threads)')
    LOG.info('%s runs on LiteRT (%s, %d threads)', getattr(model, 'name', '?'),
             module.source.name, module.threads)


def can_use_litert(model: Any) -> bool:
    """Whether ``model`` comes from a .tflite file the interpreter can run, and it is here."""
    try:
        _interpreter_class()
    except ImportError:
        return False
    return hasattr(getattr(model, 'info', None), 'trunk_outputs') and \
        _is_tflite(Path(getattr(model, 'source', '') or ''))


def litert_networks(model: Any, threads: int) -> tuple[LiteRTNet, LiteRTNet | None]:
    """
    Return ``model``'s network (and a two-stage model's detector, else None) on LiteRT.

    The model itself is left as it is: an incremental pipeline keeps the torch networks for
    its engine and runs these for its dense passes. Raises as :func:`use_litert` does.
    """
    name = getattr(model, 'name', type(model).__name__)
    source = Path(getattr(model, 'source', '') or '')
    info = getattr(model, 'info', None)
    if not hasattr(info, 'trunk_outputs') or not _is_tflite(source):
        if _is_tflite(source):
            why = (f'it runs the weights of {source.name} in its own fully convolutional '
                   "architecture, at the frame's size, which the file's fixed input cannot")
        else:
            why = f'it was not imported from a .tflite file (its file: {source})'
        raise ValueError(f"model {name!r} cannot run on LiteRT: {why}; model.runtime 'litert' "
                         "runs imported TFLite models only; use model.runtime 'torch'")
    if threads < 0:
        raise ValueError(f'threads must be 0 (every core) or more, got {threads}')
    _interpreter_class()  # fail early and clearly when the package is missing
    count = threads or _cores()
    module = LiteRTNet(source, info, _torch_tail(model.module), count)
    detector = getattr(model, 'detector', None)
    if detector is not None:
        detector = LiteRTNet(Path(model.detector_source), detector.info, _torch_tail(detector),
                             count)
    return module, detector


class LiteRTNet(nn.Module):
    """
    A TFLite file on the interpreter, shaped like the imported ``TFLiteNet``: ``tail(*trunk(x))``.

    ``info`` is the import's ``TFLiteInfo`` (its ``outputs`` are the model outputs the torch
    tail returns, possibly fewer than the file has; its ``trunk_outputs`` the feature maps the
    torch trunk returns); ``torch_tail`` runs features that did not come from the interpreter.
    """

    def __init__(self, path: str | os.PathLike, info: Any, torch_tail: nn.Module, threads: int):
        super().__init__()
        self.source = Path(path)
        self.info = info  # what the import recorded (describe() and a second swap read it)
        self.threads = threads
        self.runner = _Runner(self.source, info, threads)
        self.trunk = _Trunk(self.runner)
        self.tail = _Tail(self.runner, torch_tail)

    def forward(self, x: torch.Tensor):
        return self.tail(*self.trunk(x))


class _Runner:
    """The interpreter with the trunk maps as extra outputs, and the last run's results."""

    def __init__(self, path: Path, info: Any, threads: int):
        from sparse_perception.models.tflite.edit import builtin_transpose_conv
        from sparse_perception.models.tflite.edit import CUSTOM_TRANSPOSE_CONV, custom_operators

        data = path.read_bytes()
        if CUSTOM_TRANSPOSE_CONV in custom_operators(data):
            data = builtin_transpose_conv(data)
        import tflite

        graph = tflite.Model.GetRootAs(data, 0).Subgraphs(0)
        file_outputs = [int(i) for i in graph.OutputsAsNumpy()]
        # The torch tail returns info.outputs, which may be some of the file's outputs only.
        self.outputs = [_tensor_index(graph, spec, path, file_outputs) for spec in info.outputs]
        self.features = [_tensor_index(graph, spec, path) for spec in info.trunk_outputs]
        wanted = list(dict.fromkeys(file_outputs + self.outputs + self.features))
        if wanted != file_outputs:
            from sparse_perception.models.tflite.edit import with_outputs

            data = with_outputs(data, wanted)
        Interpreter = _interpreter_class()
        self.interpreter = Interpreter(model_content=data, num_threads=threads)
        self.interpreter.allocate_tensors()
        detail = self.interpreter.get_input_details()[0]
        self.input, self.input_dtype = detail['index'], np.dtype(detail['dtype'])
        self.input_quant = _quantisation(detail)
        self.details = {d['index']: d for d in self.interpreter.get_tensor_details()}
        self.single = len(self.outputs) == 1
        self.last_features: tuple[torch.Tensor, ...] | None = None
        self.last_versions: tuple[int, ...] = ()
        self.last_outputs: Any = None

    def run(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Run the (1, C, H, W) normalised input; return the trunk maps, remember the outputs."""
        if x.dim() != 4 or x.shape[0] != 1:
            raise ValueError(f'expected a (1, C, H, W) input, got {tuple(x.shape)}')
        nhwc = x.detach().permute(0, 2, 3, 1).to('cpu', torch.float32).numpy()
        self.interpreter.set_tensor(self.input, self._to_input(nhwc))
        self.interpreter.invoke()
        device = x.device
        features = tuple(
            self._read(i, torch.float32).permute(0, 3, 1, 2).contiguous().to(device)
            for i in self.features)
        outputs = [self._read(i).to(device) for i in self.outputs]
        self.last_outputs = outputs[0] if self.single else tuple(outputs)
        self.last_features = features
        self.last_versions = tuple(f._version for f in features)
        return features

    def ran(self, features: tuple[torch.Tensor, ...]) -> bool:
        """Whether ``features`` are the untouched maps of the last run."""
        last = self.last_features
        return last is not None and len(features) == len(last) and all(
            a is b for a, b in zip(features, last)) and \
            tuple(f._version for f in features) == self.last_versions

    def _to_input(self, nhwc: np.ndarray) -> np.ndarray:
        if self.input_dtype.kind == 'f':
            return np.ascontiguousarray(nhwc, dtype=self.input_dtype)
        # An integer input: LoadedModel.normalise mapped its pixels to the real values.
        scale, zero = self.input_quant or (1.0, 0)
        levels = np.rint(nhwc / np.float32(scale) + np.float32(zero))
        limits = np.iinfo(self.input_dtype)
        return np.clip(levels, limits.min, limits.max).astype(self.input_dtype)

    def _read(self, index: int, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Return a tensor of the last run: dequantised, integers as int64 (as imported)."""
        value = self.interpreter.get_tensor(index)
        quant = _quantisation(self.details[index])
        if quant is not None and value.dtype.kind in 'iu':
            scale, zero = quant
            value = (value.astype(np.float32) - np.float32(zero)) * np.float32(scale)
        elif value.dtype.kind in 'iu':
            value = value.astype(np.int64)
        tensor = torch.from_numpy(np.ascontiguousarray(value))
        return tensor if dtype is None else tensor.to(dtype)


class _Trunk(nn.Module):
    """The trunk's feature maps, read from an interpreter run."""

    def __init__(self, runner: _Runner):
        super().__init__()
        self.runner = runner

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.runner.run(x)


class _Tail(nn.Module):
    """The model outputs: the interpreter's for its own trunk maps, else the torch tail's."""

    def __init__(self, runner: _Runner, torch_tail: nn.Module):
        super().__init__()
        self.runner = runner
        self.torch_tail = torch_tail

    def forward(self, *features: torch.Tensor):
        if self.runner.ran(features):
            return self.runner.last_outputs
        return self.torch_tail(*features)


def _torch_tail(net: nn.Module) -> nn.Module:
    # A model swapped before keeps its torch tail: swapping again only renews the interpreter.
    return net.tail.torch_tail if isinstance(net, LiteRTNet) else net.tail


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise ImportError(_MISSING) from None
    return Interpreter


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _is_tflite(path: Path) -> bool:
    try:
        with open(path, 'rb') as stream:
            return stream.read(8)[4:8] == b'TFL3'
    except OSError:
        return False


def _quantisation(detail: dict) -> tuple[float, int] | None:
    """(scale, zero point) of a per-tensor quantised tensor, else None."""
    scale, zero = detail.get('quantization', (0.0, 0))
    return (float(scale), int(zero)) if scale else None


def _tensor_index(graph: Any, spec: Any, path: Path, among: list[int] | None = None) -> int:
    """Find the tensor of ``spec`` (name and shape, as the importer recorded them)."""
    candidates = among if among is not None else range(graph.TensorsLength())
    found = []
    for index in candidates:
        tensor = graph.Tensors(index)
        shape = tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
        if (tensor.Name() or b'').decode('utf-8', 'replace') == spec.name and \
                shape == tuple(spec.shape):
            found.append(index)
    if len(found) != 1:
        raise ValueError(f'{path.name}: {"no" if not found else len(found)} tensors named '
                         f'{spec.name!r} of shape {tuple(spec.shape)}; cannot map the imported '
                         'model onto the interpreter')
    return found[0]


__all__ = ['LiteRTNet', 'use_litert']
