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
Parity of imported TFLite models with the TFLite interpreter on real frames.

Both sides get the very same uint8 network input (``LoadedModel.prepare``); segmentation is
compared by the fraction of equal labels, pose by the keypoint distance in network-input pixels.
The interpreter comes from ``ai-edge-litert`` (a test dependency, imported when needed). It
cannot run MediaPipe's custom Convolution2DTransposeBias; for the selfie segmentation models
the reference is the same flatbuffer with that operator rewritten as the builtin TRANSPOSE_CONV
with a bias input (:mod:`~sparse_perception.models.tflite.edit`), which computes the same thing.

``sparse-perception eval accuracy --sections parity`` measures every registered model at hand
with these functions on the shared DAVIS, JHMDB and COCO frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from sparse_perception.evaluation.stats import median, percentile


@dataclass
class Parity:
    """One model against the interpreter over some frames."""

    model: str
    fake_quant: str
    frames: list[str]
    per_frame: list[float]  # label agreement (segmentation) or median keypoint error (pose)
    summary: dict[str, float] = field(default_factory=dict)


class Reference:
    """
    The TFLite interpreter on a model file, fed with prepared uint8 inputs.

    A float-input model gets ``pixels * normalise[0] + normalise[1]`` (the model's
    ``LoadedModel.normalise``). MediaPipe's Convolution2DTransposeBias is rewritten as the
    builtin TRANSPOSE_CONV with a bias first (the interpreter has no such custom operator).
    """

    def __init__(self, path: str | Path, threads: int = 2,
                 normalise: tuple[float, float] | None = None):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise ImportError('parity checks need the TFLite interpreter: pip install '
                              'ai-edge-litert (part of the test extra)') from None
        from sparse_perception.models.tflite.edit import builtin_transpose_conv
        from sparse_perception.models.tflite.edit import CUSTOM_TRANSPOSE_CONV, custom_operators

        data = Path(path).read_bytes()
        self.rewritten = CUSTOM_TRANSPOSE_CONV in custom_operators(data)
        if self.rewritten:
            data = builtin_transpose_conv(data)
        self.interpreter = Interpreter(model_content=data, num_threads=threads)
        self.interpreter.allocate_tensors()
        detail = self.interpreter.get_input_details()[0]
        self.input, self.dtype = detail['index'], np.dtype(detail['dtype'])
        if self.dtype.kind == 'f' and normalise is None:
            raise ValueError(f'{path} takes a float input: pass normalise=(scale, offset)')
        self.normalise = normalise
        self.outputs = [d['index'] for d in self.interpreter.get_output_details()]
        self.output = self.outputs[0]

    def run(self, pixels: np.ndarray) -> list[np.ndarray]:
        """Return every output of the model for one prepared (h, w, 3) uint8 input."""
        x = pixels[None]
        if self.dtype.kind == 'f':
            scale, offset = self.normalise
            x = (x.astype(np.float32) * np.float32(scale) + np.float32(offset)).astype(self.dtype)
        self.interpreter.set_tensor(self.input, x)
        self.interpreter.invoke()
        return [self.interpreter.get_tensor(i).copy() for i in self.outputs]

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        return self.run(pixels)[0]


def read_rgb(path: str | Path) -> np.ndarray:
    """Decode an image file to (H, W, 3) uint8 RGB (needs OpenCV)."""
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f'cannot read image {path}')
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def segmentation_parity(model, frames: Iterable[str | Path]) -> Parity:
    """Label agreement of a segmentation model with the interpreter, frame by frame."""
    import torch

    reference = Reference(model.source)
    names, agreement = [], []
    for path in frames:
        pixels, _ = model.prepare(read_rgb(path))
        with torch.no_grad():
            ours = model.module(model.to_tensor(pixels)).cpu().numpy()
        agreement.append(float((ours == reference(pixels)).mean()))
        names.append(str(path))
    values = np.array(agreement)
    return Parity(model.name, model.info.fake_quant, names, agreement, {
        'pooled_agreement': float(values.mean()), 'min_agreement': float(values.min()),
        'frames_at_least_98': float((values >= 0.98).mean())})


def pose_parity(model, frames: Iterable[str | Path], confident: float = 0.3) -> Parity:
    """Keypoint distance (network-input pixels) of a single-pose model to the interpreter."""
    import torch

    reference = Reference(model.source)
    height, width = model.input_size
    names, per_frame, errors, scores = [], [], [], []
    for path in frames:
        pixels, _ = model.prepare(read_rgb(path))
        expected = reference(pixels).reshape(-1, 3)
        with torch.no_grad():
            ours = model.module(model.to_tensor(pixels)).cpu().numpy().reshape(-1, 3)
        error = np.hypot((ours[:, 0] - expected[:, 0]) * height,
                         (ours[:, 1] - expected[:, 1]) * width)
        errors.append(error)
        scores.append(expected[:, 2])
        per_frame.append(median(error))
        names.append(str(path))
    errors, scores = np.concatenate(errors), np.concatenate(scores)
    sure = errors[scores >= confident]
    return Parity(model.name, model.info.fake_quant, names, per_frame, {
        'median_px': median(errors), 'mean_px': float(errors.mean()),
        'within_2px': float((errors <= 2.0).mean()), 'max_px': float(errors.max()),
        f'p90_px_score_{confident}': percentile(sure, 90),
        f'max_px_score_{confident}': float(sure.max()) if sure.size else None})


def probability_parity(model, frames: Iterable[str | Path], threshold: float = 0.5) -> Parity:
    """
    Compare a person-probability model (selfie segmentation) with the interpreter.

    Per frame: the agreement of the thresholded masks; the summary adds the largest
    probability difference.
    """
    import torch

    reference = Reference(model.source, normalise=model.normalise)
    names, agreement, worst = [], [], 0.0
    for path in frames:
        pixels, _ = model.prepare(read_rgb(path))
        with torch.no_grad():
            ours = model.module(model.to_tensor(pixels)).cpu().numpy()
        expected = reference(pixels)
        worst = max(worst, float(np.abs(ours - expected).max()))
        agreement.append(float(((ours >= threshold) == (expected >= threshold)).mean()))
        names.append(str(path))
    values = np.array(agreement)
    return Parity(model.name, 'none', names, agreement, {
        'pooled_agreement': float(values.mean()), 'min_agreement': float(values.min()),
        'max_abs_probability': worst, 'reference_rewritten': float(reference.rewritten)})


def blazepose_parity(model, frames: Iterable[str | Path]) -> Parity:
    """
    Both BlazePose stages against the interpreter, on the crops the tracker makes in order.

    The detector gets each frame's letterboxed input (its raw outputs are compared relative to
    their largest magnitude); the landmark model the same crop as the torch model (its 33 body
    landmarks are compared in crop pixels, the model's resolution). Per frame: the median
    landmark distance.
    """
    import torch

    from sparse_perception.models.transforms import ImageTransform, resize_image

    detector = Reference(model.detector_source, normalise=(2.0 / 255.0, -1.0))
    landmarks = Reference(model.source, normalise=model.normalise)
    size = model.detector_settings.input_size
    names, per_frame, errors, presence, detector_error = [], [], [], [], 0.0
    model.reset()
    for path in frames:
        frame = read_rgb(path)
        letterbox = ImageTransform.fit(frame.shape[:2], (size, size), 'letterbox')
        pixels = resize_image(frame, letterbox)
        tensor = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() * (2.0 / 255.0) - 1.0
        with torch.no_grad():
            ours = [o.cpu().numpy() for o in model.detector(tensor.to(model.device))]
        for mine, expected in zip(ours, detector.run(pixels)):
            detector_error = max(detector_error, float(
                np.abs(mine - expected).max() / max(np.abs(expected).max(), 1e-6)))
        crop, transform = model.prepare(frame)
        with torch.no_grad():
            outputs = model.module(model.to_tensor(crop))
        expected = landmarks.run(crop)
        mine = outputs[0].cpu().numpy().reshape(-1, 5)[:33]
        theirs = expected[0].reshape(-1, 5)[:33]
        error = np.hypot(*(mine[:, :2] - theirs[:, :2]).T)
        errors.append(error)
        presence.append(abs(float(outputs[1].reshape(-1)[0]) - float(expected[1].reshape(-1)[0])))
        per_frame.append(median(error))
        names.append(str(path))
        model.decode(outputs, transform)
    errors = np.concatenate(errors)
    return Parity(model.name, 'none', names, per_frame, {
        'median_px': median(errors), 'max_px': float(errors.max()),
        'within_2px': float((errors <= 2.0).mean()), 'max_presence_difference': max(presence),
        'detector_max_relative_difference': detector_error})
