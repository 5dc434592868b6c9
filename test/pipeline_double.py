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
The one test double of ``sparse_perception.pipeline.Pipeline``.

The replay, node and command tests run on it: a real, small computation, fast and
deterministic, so that those tests look at what they test (reports, the ROS edge, parameters,
life cycle, bad input) and every figure can be worked out by running the double directly.
test/core/test_pipeline_contract.py checks it against the real Pipeline (constructor, public
methods and attributes, result types); the real pipeline itself runs through the replay in
test/replay/test_eval_replay.py and through the nodes in test/nodes/test_nodes_real_pipeline.py.

Only the networks are stand-ins. Per frame:

- the change map is the real one (:class:`sparse_perception.change.ChangeDetector` on the
  first head's change settings, ``settings.change_for``), reset on a new frame size, as in
  the pipeline; both heads share it (the pipeline gives the pose head a map of its own when
  its threshold differs);
- the networks see an *engine input*: the frame where tiles were recomputed, what they saw
  before elsewhere. A frame is dense (every tile recomputed) when the change map is a refresh
  or its changed share exceeds ``sparsity.dense_fallback``; otherwise the changed tiles are
  recomputed, except, standing in for the engine's output thresholds, those whose pixels
  moved by at most ``10 * sparsity.scale`` grey levels. So at thresholds 0 the incremental
  result is the dense one exactly, and above them the two drift apart, as with the engine;
- the networks are tiny fixed-weight torch conv nets on the engine input pooled 8 times:
  segmentation takes the argmax of 3 class logits, pose the soft-argmax of 17 heat maps (one
  person, COCO-17 joints);
- statistics: a head's active fraction is the share of recomputed tiles (1.0 when dense),
  its MACs are in proportion; per layer, ``conv1`` recomputes those tiles and ``conv2`` those
  within one tile of them (its receptive field).

Models: ``tiny-seg`` and ``tiny-pose``, the names of the real registry (of the right kind),
or a JSON file ``{"head": "segmentation"|"pose", "seed": int}``; anything else raises the
real :class:`~sparse_perception.pipeline.ModelLoadError` naming the model, as the pipeline
does for a model that cannot load. :func:`model_problem` is the matching check for the nodes.

Instrumentation the tests read, beyond the contract (:data:`OBSERVED`): ``frames`` (process
calls, warm-up included), ``resets`` (reset calls), ``warm_ups`` (warm_up calls),
``updates`` (settings given to update) and ``closed``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
import time
import zlib

import numpy as np
from sparse_perception.change import ChangeDetector
from sparse_perception.models.decoders import COCO17_JOINTS, COCO17_SKELETON
from sparse_perception.pipeline import ModelLoadError
from sparse_perception.results import (
    FrameResult, HeadStats, PipelineStats, PoseResult, SegmentationResult)
from sparse_perception.settings import HEADS, PerceptionSettings
import torch

CLASS_NAMES = ('background', 'person', 'sky')
JOINT_NAMES = COCO17_JOINTS
SKELETON = COCO17_SKELETON
TINY_MODELS = {'tiny-seg': ('segmentation', 0), 'tiny-pose': ('pose', 1)}
STRIDE = 8  # the nets run on the engine input pooled by this factor
HIDDEN = 8  # channels between the two convolutions
# What tests read beyond the contract.
OBSERVED = ('frames', 'resets', 'warm_ups', 'updates', 'closed')

__all__ = ['CLASS_NAMES', 'factory', 'JOINT_NAMES', 'model_problem', 'ModelLoadError',
           'OBSERVED', 'PipelineDouble', 'replace_model', 'SKELETON']


def _registered() -> dict[str, tuple[str, int]]:
    """Return every model name the double loads: its own, and the real registry's."""
    from sparse_perception.models.registry import REGISTRY

    names = {name: (entry.kind, zlib.crc32(name.encode()) % 2 ** 31)
             for name, entry in REGISTRY.items()}
    names.update(TINY_MODELS)
    return names


def _resolve(head: str, name: str) -> int:
    """Return the weight seed of model ``name`` for ``head``, or raise ModelLoadError."""
    registered = _registered()
    if name in registered:
        model_head, seed = registered[name]
    else:
        path = Path(name).expanduser()
        if not path.is_file():
            raise ModelLoadError(f'model.{head} = {name!r}: no registered model of that name '
                                 f'and no such file (registered: {", ".join(TINY_MODELS)}, '
                                 'and the real registry)')
        try:
            spec = json.loads(path.read_text())
            model_head, seed = spec['head'], int(spec['seed'])
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelLoadError(f'model.{head} = {name!r}: unsupported model file: '
                                 f'{exc!r}') from None
    if model_head != head:
        raise ModelLoadError(f'model.{head} = {name!r} is a {model_head} model')
    return seed


def _net(outputs: int, seed: int) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, HIDDEN, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(HIDDEN, outputs, 3, padding=1))
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    return net.eval()


class PipelineDouble:
    """Camera frames in, masks and keypoints out, on tiny nets (see the module docstring)."""

    def __init__(self, settings: PerceptionSettings | None = None, *,
                 heads=HEADS, incremental: bool = True):
        settings = settings if settings is not None else PerceptionSettings()
        unknown = [h for h in heads if h not in HEADS]
        if unknown or not heads or len(set(heads)) != len(heads):
            raise ValueError(f'heads must be distinct names from {HEADS}, got {tuple(heads)}')
        self.incremental = incremental
        self._head_names = tuple(heads)
        self._models = {head: getattr(settings.model, head) for head in heads}
        self._nets = {head: self._load(head, name) for head, name in self._models.items()}
        self._settings = settings
        self._change = ChangeDetector(settings.change_for(self._first_head()))
        self.keep_change_maps = False  # the double makes every frame's map anyway
        self._shape: tuple[int, ...] | None = None
        self._input: np.ndarray | None = None  # (H, W, 3) uint8: what the networks saw
        self.frames = 0
        self.resets = 0
        self.warm_ups = 0
        self.updates: list[PerceptionSettings] = []
        self.closed = False

    def _first_head(self) -> str:
        """Return the head whose change map the frame result shows (segmentation first)."""
        return next(head for head in HEADS if head in self._head_names)

    @staticmethod
    def _load(head: str, name: str) -> torch.nn.Module:
        outputs = len(CLASS_NAMES) if head == 'segmentation' else len(JOINT_NAMES)
        return _net(outputs, _resolve(head, name))

    # -- the contract -----------------------------------------------------------------------

    @property
    def settings(self) -> PerceptionSettings:
        return self._settings

    @property
    def class_names(self) -> tuple[str, ...]:
        return CLASS_NAMES if 'segmentation' in self._nets else ()

    @property
    def joint_names(self) -> tuple[str, ...]:
        return JOINT_NAMES if 'pose' in self._nets else ()

    @property
    def skeleton(self) -> tuple[tuple[int, int], ...]:
        return SKELETON if 'pose' in self._nets else ()

    def process(self, image: np.ndarray) -> FrameResult:
        """Run every head on one frame, ``(H, W, 3)`` uint8 RGB."""
        self._check_open()
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 \
                or image.dtype != np.uint8 or 0 in image.shape:
            raise ValueError(
                'a frame must be a non-empty (H, W, 3) uint8 RGB array, got '
                f'{getattr(image, "dtype", type(image).__name__)} of shape '
                f'{getattr(image, "shape", None)}')
        start = time.perf_counter()
        self.frames += 1
        if image.shape != self._shape:
            self._forget()
            self._shape = image.shape
        cfg = self._settings
        tile = self._change.tile_size
        height, width = image.shape[:2]
        tiles_h, tiles_w = -(-height // tile), -(-width // tile)
        if self.incremental:
            change = self._change.update(image)
            changed, refresh = change.tiles.numpy(), change.refresh
        else:
            changed, refresh = np.ones((tiles_h, tiles_w), bool), True
        changed_fraction = float(changed.mean())
        dense = refresh or self._input is None or changed_fraction > cfg.sparsity.dense_fallback
        if dense:
            active = np.ones_like(changed)
            self._input = image.copy()
        else:
            active = changed & (self._tile_motion(image, tile) > 10.0 * cfg.sparsity.scale)
            pixels = np.repeat(np.repeat(active, tile, 0), tile, 1)[:height, :width]
            self._input[pixels] = image[pixels]
        x = torch.from_numpy(self._input).permute(2, 0, 1)[None].float() / 255  # (1, 3, H, W)
        pooled = torch.nn.functional.avg_pool2d(x, STRIDE, ceil_mode=True)  # (1, 3, h, w)
        segmentation = pose = None
        heads: dict[str, HeadStats] = {}
        for head, net in self._nets.items():
            head_start = time.perf_counter()
            with torch.no_grad():
                out = net(pooled)[0]  # (C, h, w)
            if head == 'segmentation':
                segmentation = SegmentationResult(_upsample(out.argmax(0), height, width),
                                                  CLASS_NAMES)
            else:
                pose = PoseResult(_soft_argmax(out, height, width), JOINT_NAMES, SKELETON)
            heads[head] = _stats(active, dense, pooled, out.shape[0], head_start)
        stats = PipelineStats(changed_fraction, heads, (time.perf_counter() - start) * 1e3)
        return FrameResult(segmentation, pose, changed, tile, stats)

    def update(self, settings: PerceptionSettings) -> None:
        """Apply new settings from the next frame on (a model that fails to load: no change)."""
        self._check_open()
        nets = dict(self._nets)
        for head in self._head_names:
            name = getattr(settings.model, head)
            if name != self._models[head]:
                nets[head] = self._load(head, name)  # raises before anything changes
        self._nets = nets
        self._models = {head: getattr(settings.model, head) for head in self._head_names}
        change = settings.change_for(self._first_head())
        if settings.change.tile_size != self._settings.change.tile_size:
            self._change = ChangeDetector(change)
            self._forget()
        else:
            for f in dataclasses.fields(change):  # as the pipeline: the reference stays
                if f.name != 'tile_size':
                    setattr(self._change, f.name, getattr(change, f.name))
        self._settings = settings
        self.updates.append(settings)

    def reset(self) -> None:
        """Forget the temporal state: the next frame runs dense."""
        self.resets += 1
        self._forget()

    def warm_up(self) -> None:
        """Pay the networks' one-time costs: the tiny nets have none; counted only."""
        self._check_open()
        self.warm_ups += 1

    def close(self) -> None:
        """Release the networks."""
        self._nets = {}
        self.closed = True

    # -- helpers ------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError('the pipeline is closed (its networks were released): make a '
                               'new one')

    def _forget(self) -> None:
        self._change.reset()
        self._input = None

    def _tile_motion(self, image: np.ndarray, tile: int) -> np.ndarray:
        """Return per tile the largest difference of any channel from the engine input."""
        height, width = image.shape[:2]
        tiles_h, tiles_w = -(-height // tile), -(-width // tile)
        diff = np.abs(image.astype(np.int16) - self._input.astype(np.int16)).max(-1)
        padded = np.zeros((tiles_h * tile, tiles_w * tile), np.int16)
        padded[:height, :width] = diff
        return padded.reshape(tiles_h, tile, tiles_w, tile).max((1, 3))


def _upsample(labels: torch.Tensor, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour class ids ``(h, w)`` -> ``(height, width)`` uint8."""
    small = labels.numpy().astype(np.uint8)
    rows = np.minimum(np.arange(height) * small.shape[0] // height, small.shape[0] - 1)
    cols = np.minimum(np.arange(width) * small.shape[1] // width, small.shape[1] - 1)
    return np.ascontiguousarray(small[rows][:, cols])


def _soft_argmax(maps: torch.Tensor, height: int, width: int) -> np.ndarray:
    """Heat maps ``(K, h, w)`` -> one person's keypoints ``(1, K, 3)``: x, y, score."""
    k, h, w = maps.shape
    weights = torch.softmax(maps.reshape(k, -1) * 4.0, dim=1).reshape(k, h, w)
    ys = (torch.arange(h, dtype=torch.float32) + 0.5) * height / h
    xs = (torch.arange(w, dtype=torch.float32) + 0.5) * width / w
    keypoints = torch.stack([(weights.sum(1) * xs).sum(1), (weights.sum(2) * ys).sum(1),
                             torch.sigmoid(maps.reshape(k, -1).max(1).values)], 1)
    return keypoints[None].numpy().astype(np.float32)


def _stats(active: np.ndarray, dense: bool, pooled: torch.Tensor, outputs: int,
           start: float) -> HeadStats:
    fraction = 1.0 if dense else float(active.mean())
    grown = torch.nn.functional.max_pool2d(
        torch.from_numpy(active)[None, None].float(), 3, 1, 1)[0, 0] > 0
    reach = 1.0 if dense else float(grown.float().mean())
    positions = pooled.shape[2] * pooled.shape[3]
    dense_macs = positions * 9 * (3 * HIDDEN + HIDDEN * outputs)
    return HeadStats(fraction, int(round(dense_macs * fraction)), dense_macs, dense,
                     (time.perf_counter() - start) * 1e3,
                     layers={'conv1': fraction, 'conv2': reach})


def model_problem(head: str, value: str, settings: PerceptionSettings) -> str | None:
    """
    Return why the double cannot load ``value`` (the nodes' ``model_check``), without loading.

    As the real check does: a registered name or an existing file passes; what a file holds is
    only found out when it loads.
    """
    from sparse_perception.nodes.node_config import model_problem as path_problem

    problem = path_problem(head, value)
    if problem or value in _registered() or Path(value).expanduser().is_file():
        return problem
    return (f'model.{head} = {value!r}: no registered model of that name and no such file '
            f'(registered: {", ".join(TINY_MODELS)}, and the real registry)')


def factory(**kwargs):
    """Return a pipeline factory for the nodes: ``make(settings, heads)`` builds a double."""
    def make(settings, heads):
        return PipelineDouble(settings, heads=tuple(heads), **kwargs)
    return make


def replace_model(settings: PerceptionSettings, **models: str) -> PerceptionSettings:
    """Return ``settings`` with model names replaced."""
    return dataclasses.replace(settings, model=dataclasses.replace(settings.model, **models))
