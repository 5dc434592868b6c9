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
A test double of ``sparse_perception.pipeline.Pipeline`` for the replay tests.

It honours the pipeline contract (constructor, ``process``, ``update``, ``reset``, ``close``,
``class_names``, ``joint_names``, ``skeleton``, ``FrameResult`` out) with real, small
computation, so that replay, metrics and reports are tested quickly and with figures known in
advance (the real pipeline runs through the replay in test/bag/test_eval_replay.py):

- a change map of tiles whose largest pixel difference from a per-tile reference exceeds
  ``change.threshold + 10 * sparsity.scale`` grey levels; only those tiles of the reference
  are refreshed (so at threshold 0 the incremental result equals the dense one exactly, and
  above it the two drift apart, as the real engine does);
- a tiny fixed-weight torch conv net on the 1/8-scale reference: three class logits (argmax,
  upsampled: the segmentation mask) and 17 heatmaps (soft-argmax: COCO-17 keypoints);
- statistics: active fraction = share of changed tiles (1.0 on dense frames), MACs in
  proportion, wall time in ms.

It is not the real engine: nothing here is sparse compute. Set a model setting to
``'missing'`` to make the constructor fail like a model that cannot load.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import time

import numpy as np
from sparse_perception.models.decoders import COCO17_JOINTS as COCO17
from sparse_perception.results import (
    FrameResult, FrameStats, HeadStats, PoseResult, SegmentationResult)
import torch

SKELETON = ((5, 7), (7, 9), (6, 8), (8, 10), (5, 6), (5, 11), (6, 12), (11, 12), (11, 13),
            (13, 15), (12, 14), (14, 16))
CLASS_NAMES = ('background', 'person', 'sky')
SCALE = 8  # the net runs at 1/8 of the input resolution


class DoubleModelError(ValueError):
    """Stands in for ModelLoadError (a ValueError)."""


@dataclass(frozen=True)
class LayerHeadStats(HeadStats):
    """HeadStats with per-layer active fractions, as the real engine may report them."""

    layers: dict = field(default_factory=dict)


def _net() -> torch.nn.Module:
    generator = torch.Generator().manual_seed(7)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(8, len(CLASS_NAMES) + len(COCO17), 3, padding=1))
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    return net.eval()


class TinyConvPipeline:
    """The pipeline contract on a tiny real conv net (see the module docstring)."""

    def __init__(self, settings, heads=('segmentation', 'pose'), incremental=True):
        unknown = set(heads) - {'segmentation', 'pose'}
        if unknown or not heads:
            raise ValueError(f'unknown heads {sorted(unknown)}')
        self.heads = tuple(heads)
        self.incremental = incremental
        self.update(settings)
        self.net = _net()
        self.reference = None
        self.closed = False

    @property
    def class_names(self):
        return CLASS_NAMES if 'segmentation' in self.heads else ()

    @property
    def joint_names(self):
        return COCO17 if 'pose' in self.heads else ()

    @property
    def skeleton(self):
        return SKELETON if 'pose' in self.heads else ()

    def update(self, settings):
        for head in self.heads:
            name = getattr(settings.model, head)
            if name == 'missing':
                raise DoubleModelError(f'{head} model {name!r}: file not found')
        self.settings = settings

    def reset(self):
        self.reference = None

    def close(self):
        self.closed = True

    def _change(self, image):
        tile = self.settings.change.tile_size
        height, width = image.shape[:2]
        tiles_h, tiles_w = -(-height // tile), -(-width // tile)
        if (not self.incremental or self.reference is None
                or self.reference.shape != image.shape):
            self.reference = image.copy()
            return np.ones((tiles_h, tiles_w), bool), True
        threshold = self.settings.change.threshold + 10.0 * self.settings.sparsity.scale
        diff = np.abs(image.astype(np.int16) - self.reference.astype(np.int16)).max(-1)
        padded = np.zeros((tiles_h * tile, tiles_w * tile), np.int16)
        padded[:height, :width] = diff
        tiles = padded.reshape(tiles_h, tile, tiles_w, tile).max((1, 3)) > threshold
        pixels = np.repeat(np.repeat(tiles, tile, 0), tile, 1)[:height, :width]
        self.reference[pixels] = image[pixels]
        return tiles, False

    def process(self, image):
        started = time.perf_counter()
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f'expected (H, W, 3) uint8 RGB, got {image.dtype} {image.shape}')
        tiles, dense = self._change(image)
        height, width = image.shape[:2]
        x = torch.from_numpy(self.reference).permute(2, 0, 1)[None].float() / 255.0
        small = torch.nn.functional.adaptive_avg_pool2d(
            x, (max(1, height // SCALE), max(1, width // SCALE)))
        with torch.no_grad():
            out = self.net(small)[0]  # (3 + 17, h, w)
        fraction = 1.0 if dense else float(tiles.mean())
        dense_macs = int(small.shape[2] * small.shape[3] * (3 * 8 * 9 + 8 * 20 * 9))
        segmentation = pose = None
        head_ms = {}
        if 'segmentation' in self.heads:
            labels = out[:len(CLASS_NAMES)].argmax(0).numpy().astype(np.uint8)
            rows = np.minimum(np.arange(height) * labels.shape[0] // height, labels.shape[0] - 1)
            cols = np.minimum(np.arange(width) * labels.shape[1] // width, labels.shape[1] - 1)
            segmentation = SegmentationResult(np.ascontiguousarray(labels[rows][:, cols]),
                                              CLASS_NAMES)
            head_ms['segmentation'] = (time.perf_counter() - started) * 1e3
        if 'pose' in self.heads:
            maps = out[len(CLASS_NAMES):]  # (17, h, w)
            k, h, w = maps.shape
            weights = torch.softmax(maps.reshape(k, -1) * 4.0, dim=1).reshape(k, h, w)
            ys = (torch.arange(h, dtype=torch.float32) + 0.5) * height / h
            xs = (torch.arange(w, dtype=torch.float32) + 0.5) * width / w
            keypoints = torch.stack([(weights.sum(1) * xs).sum(1), (weights.sum(2) * ys).sum(1),
                                     torch.sigmoid(maps.reshape(k, -1).max(1).values)], 1)
            pose = PoseResult(keypoints[None].numpy().astype(np.float32), COCO17, SKELETON)
            head_ms['pose'] = (time.perf_counter() - started) * 1e3 - sum(head_ms.values())
        heads = {
            name: LayerHeadStats(fraction, int(dense_macs * fraction), dense_macs, dense, ms,
                                 layers={'conv1': fraction, 'conv2': min(1.0, fraction * 1.5)})
            for name, ms in head_ms.items()}
        stats = FrameStats(float(tiles.mean()), heads, (time.perf_counter() - started) * 1e3)
        return FrameResult(segmentation, pose, tiles, self.settings.change.tile_size, stats)
