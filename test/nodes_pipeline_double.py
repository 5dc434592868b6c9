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
A test double of ``sparse_perception.pipeline.Pipeline`` for the node tests.

Most node tests run on this: a real, small computation, not canned answers, that is fast,
deterministic and can be made to fail on demand, so the tests look at the ROS edge (QoS,
headers, parameters, life cycle, bad input) and not at model speed. The real pipeline runs
through the nodes in test/ros/test_nodes_real_pipeline.py.

Per frame it builds a tile change map against a per-tile reference (change.threshold, tile_size,
dilation, refresh_period), runs tiny fixed-weight torch conv nets (segmentation: class logits ->
argmax mask; pose: 17 heatmaps -> argmax keypoints of one person), recomputes the mask only in
changed tiles (keeping the cached result elsewhere), and reports FrameStats whose active fraction
is the changed share (1.0 when dense: first frame, refresh, reset, above sparsity.dense_fallback).
A frame of another size resets it.

Models: the registered names ``tiny-seg`` and ``tiny-pose``, or a JSON file
``{"head": "segmentation"|"pose", "seed": int}``; anything else raises ModelLoadError, as the
real pipeline does for a missing or unsupported model.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
import time

import numpy as np
from sparse_perception.results import (
    FrameResult, FrameStats, HeadStats, PoseResult, SegmentationResult)
from sparse_perception.settings import PerceptionSettings
import torch

CLASS_NAMES = ('background', 'dark', 'mid', 'bright')
JOINT_NAMES = ('nose', 'left_eye', 'right_eye', 'left_ear', 'right_ear', 'left_shoulder',
               'right_shoulder', 'left_elbow', 'right_elbow', 'left_wrist', 'right_wrist',
               'left_hip', 'right_hip', 'left_knee', 'right_knee', 'left_ankle', 'right_ankle')
SKELETON = ((0, 1), (0, 2), (1, 3), (2, 4), (5, 6), (5, 7), (7, 9), (6, 8), (8, 10), (5, 11),
            (6, 12), (11, 12), (11, 13), (13, 15), (12, 14), (14, 16))
REGISTERED = {'tiny-seg': ('segmentation', 0), 'tiny-pose': ('pose', 1)}
STRIDE = 8  # the nets run on the image pooled by this factor


class ModelLoadError(ValueError):
    """The double's stand-in for sparse_perception.pipeline.ModelLoadError."""


def _resolve(head: str, name: str) -> int:
    """Return the weight seed of model ``name`` for ``head`` or raise ModelLoadError."""
    if name in REGISTERED:
        model_head, seed = REGISTERED[name]
    else:
        path = Path(name).expanduser()
        if not path.is_file():
            raise ModelLoadError(f'model.{head} = {name!r}: no registered model of that name '
                                 f'and no such file (registered: {", ".join(REGISTERED)})')
        try:
            spec = json.loads(path.read_text())
            model_head, seed = spec['head'], int(spec['seed'])
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelLoadError(f'model.{head} = {name!r}: unsupported model file: {exc!r}')
    if model_head != head:
        raise ModelLoadError(f'model.{head} = {name!r} is a {model_head} model')
    return seed


def _net(outputs: int, seed: int) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, outputs, 3, padding=1))
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    return net.eval()


class TinyPipeline:
    """Contract-following pipeline double (see the module docstring)."""

    def __init__(self, settings: PerceptionSettings, heads=('segmentation', 'pose'),
                 incremental: bool = True):
        if not isinstance(settings, PerceptionSettings):
            raise TypeError(f'settings must be PerceptionSettings, got {type(settings)}')
        self.heads = tuple(heads)
        self.incremental = incremental
        self._nets: dict[str, torch.nn.Module] = {}
        self._names: dict[str, str] = {}
        self.settings = settings
        self._load(settings)
        self.closed = False
        self.frames = 0  # process() calls, warm-up included
        self.resets = 0  # reset() calls and size-change resets
        self.updates: list[PerceptionSettings] = []
        self.reset()
        self.resets = 0

    def _load(self, settings: PerceptionSettings) -> None:
        for head in self.heads:
            name = getattr(settings.model, head)
            if self._names.get(head) == name:
                continue
            seed = _resolve(head, name)  # raises before anything changes
            self._nets[head] = _net(len(CLASS_NAMES) if head == 'segmentation'
                                    else len(JOINT_NAMES), seed)
            self._names[head] = name

    @property
    def class_names(self) -> tuple[str, ...]:
        return CLASS_NAMES if 'segmentation' in self.heads else ()

    @property
    def joint_names(self) -> tuple[str, ...]:
        return JOINT_NAMES if 'pose' in self.heads else ()

    @property
    def skeleton(self) -> tuple[tuple[int, int], ...]:
        return SKELETON if 'pose' in self.heads else ()

    def update(self, settings: PerceptionSettings) -> None:
        if settings.change.tile_size != self.settings.change.tile_size:
            raise ValueError('change.tile_size is read-only')
        self._load(settings)
        self.settings = settings
        self.updates.append(settings)

    def reset(self) -> None:
        self._reference = None  # (H, W) float32 grey of the last propagated frame per tile
        self._mask = None
        self._pose = None
        self._since_dense = 0
        self.resets += 1

    def close(self) -> None:
        self._nets.clear()
        self.closed = True

    def process(self, image: np.ndarray) -> FrameResult:
        if self.closed:
            raise RuntimeError('pipeline is closed')
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f'expected (H, W, 3) uint8 RGB, got {image.dtype} {image.shape}')
        start = time.perf_counter()
        self.frames += 1
        cfg = self.settings
        height, width = image.shape[:2]
        tile = cfg.change.tile_size
        if self._reference is not None and self._reference.shape != (height, width):
            self.reset()
        grey = image.astype(np.float32).mean(axis=2)  # (H, W)
        tiles_h, tiles_w = -(-height // tile), -(-width // tile)
        refresh = cfg.change.refresh_period and self._since_dense >= cfg.change.refresh_period
        if self._reference is None or refresh or not self.incremental:
            changed = np.ones((tiles_h, tiles_w), bool)
            dense = True
        else:
            diff = np.abs(grey - self._reference)
            padded = np.zeros((tiles_h * tile, tiles_w * tile), np.float32)
            padded[:height, :width] = diff
            changed = padded.reshape(tiles_h, tile, tiles_w, tile).max(axis=(1, 3)) > (
                cfg.change.threshold)
            for _ in range(cfg.change.dilation):
                grown = changed.copy()
                grown[1:] |= changed[:-1]
                grown[:-1] |= changed[1:]
                grown[:, 1:] |= changed[:, :-1]
                grown[:, :-1] |= changed[:, 1:]
                changed = grown
            dense = changed.mean() > cfg.sparsity.dense_fallback
        changed_fraction = float(changed.mean())
        active = 1.0 if dense else changed_fraction
        pixels = np.repeat(np.repeat(changed, tile, 0), tile, 1)[:height, :width]
        if dense:
            self._reference = grey
            self._since_dense = 0
        else:
            self._reference = np.where(pixels, grey, self._reference)
            self._since_dense += 1
        tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255  # (1, 3, H, W)
        pooled = torch.nn.functional.avg_pool2d(tensor, STRIDE, ceil_mode=True)
        heads, segmentation, pose = {}, None, None
        if 'segmentation' in self.heads:
            head_start = time.perf_counter()
            if dense or active > 0:
                with torch.no_grad():
                    logits = self._nets['segmentation'](pooled)[0]  # (C, H/8, W/8)
                small = logits.argmax(0).numpy().astype(np.uint8)
                mask = np.repeat(np.repeat(small, STRIDE, 0), STRIDE, 1)[:height, :width]
                self._mask = mask if dense else np.where(pixels, mask, self._mask)
            segmentation = SegmentationResult(self._mask.copy(), CLASS_NAMES)
            heads['segmentation'] = self._stats(active, dense, pooled, head_start)
        if 'pose' in self.heads:
            head_start = time.perf_counter()
            if dense or active > 0:
                with torch.no_grad():
                    maps = self._nets['pose'](pooled)[0]  # (K, H/8, W/8)
                flat = maps.flatten(1)
                best = flat.argmax(1)
                columns = maps.shape[2]
                keypoints = np.zeros((1, len(JOINT_NAMES), 3), np.float32)
                keypoints[0, :, 0] = np.minimum((best % columns).numpy() * STRIDE + STRIDE / 2,
                                                width - 1)
                keypoints[0, :, 1] = np.minimum((best // columns).numpy() * STRIDE + STRIDE / 2,
                                                height - 1)
                keypoints[0, :, 2] = torch.sigmoid(flat.max(1).values).numpy()
                self._pose = keypoints
            pose = PoseResult(self._pose.copy(), JOINT_NAMES, SKELETON)
            heads['pose'] = self._stats(active, dense, pooled, head_start)
        stats = FrameStats(changed_fraction, heads, (time.perf_counter() - start) * 1e3)
        return FrameResult(segmentation, pose, changed, tile, stats)

    @staticmethod
    def _stats(active: float, dense: bool, pooled: torch.Tensor, start: float) -> HeadStats:
        positions = pooled.shape[2] * pooled.shape[3]
        dense_macs = positions * 9 * (3 * 8 + 8 * 17)
        return HeadStats(active, int(round(dense_macs * active)), dense_macs, dense,
                         (time.perf_counter() - start) * 1e3)


def model_problem(head: str, value: str, settings: PerceptionSettings) -> str | None:
    """
    Return why the double cannot load ``value`` (the nodes' ``model_check``), without loading.

    As the real check does for the registry: a registered name or an existing file passes; what
    a file holds is only found out when it loads.
    """
    from sparse_perception.node_config import model_problem as path_problem

    problem = path_problem(head, value)
    if problem or value in REGISTERED or Path(value).expanduser().is_file():
        return problem
    return (f'model.{head} = {value!r}: no registered model of that name and no such file '
            f'(registered: {", ".join(REGISTERED)})')


def factory(**kwargs):
    """Return a pipeline factory for the nodes that builds a TinyPipeline."""
    def make(settings, heads):
        return TinyPipeline(settings, heads, **kwargs)
    return make


def replace_model(settings: PerceptionSettings, **models: str) -> PerceptionSettings:
    """Return ``settings`` with model names replaced (helper for tests)."""
    return dataclasses.replace(settings, model=dataclasses.replace(settings.model, **models))
