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
The 'kernels' engine backend: the primitives of ``engine/backend.py`` as Triton kernels.

It plugs into the engine's eager executor (``IncrementalModel``), which still decides per
layer on the host (exact-size index tensors, ``nonzero``); the sync-free execution that a
CUDA graph can capture is ``sparse_perception.engine.device``, built on the same kernels.

Every primitive gives the reference backend's results (up to the rounding of fp32
accumulation). What the kernels do not cover runs on the reference path, said once in the
log: transposed convolutions, integer tensors (argmax outputs), and epilogues with steps the
kernels do not know or more than ``epilogue.MAX_STEPS`` of them.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence
import weakref

from sparse_perception.engine.backend import ReferenceBackend
from sparse_perception.kernels import conv, conv1x1, depthwise, epilogue, gather, masks, pool
from sparse_perception.kernels import resample
from sparse_perception.kernels._runtime import TL_FLOAT
import torch

LOG = logging.getLogger(__name__)


class KernelsBackend(ReferenceBackend):
    """Triton kernels for every primitive, the reference for what they do not cover."""

    name = 'kernels'

    def __init__(self, device: torch.device | str = 'cuda'):
        super().__init__(device)
        # Weights of windowed layers in the kernels' layouts, converted once per layer.
        self._weights: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._said: set = set()

    def _fallback(self, what: str) -> None:
        if what not in self._said:
            self._said.add(what)
            LOG.info('kernels backend: %s runs on the reference path', what)

    # -- data movement -----------------------------------------------------------------------

    def gather(self, src: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Rows ``src[index]``: ``(R, C)`` and int64 ``(...)`` -> ``(..., C)``."""
        if src.dtype not in TL_FLOAT:
            return super().gather(src, index)
        return gather.gather_rows(src, index)

    def store(self, dst: torch.Tensor, index: torch.Tensor | None, values: torch.Tensor,
              threshold: float, test: bool = True, want_old: bool = False):
        """Change test and scatter (see the engine's backend module)."""
        if dst.dtype not in TL_FLOAT or values.dtype != dst.dtype:
            return super().store(dst, index, values, threshold, test, want_old)
        return self.store_epilogue(dst, index, values, (), {}, threshold, test, want_old)

    def store_epilogue(self, dst: torch.Tensor, index: torch.Tensor | None,
                       values: torch.Tensor, steps: Sequence[Any], operands: dict,
                       threshold: float, test: bool = True, want_old: bool = False):
        """Epilogue, change test and scatter in one kernel."""
        if dst.dtype not in TL_FLOAT or values.dtype != dst.dtype:
            return self._reference_store(dst, index, values, steps, operands, threshold, test,
                                         want_old)
        try:
            ep = epilogue.encode(steps, operands)
        except epilogue.Unfusable as exc:
            self._fallback(str(exc))
            return self._reference_store(dst, index, values, steps, operands, threshold, test,
                                         want_old)
        values = values if values.stride(1) == 1 else values.contiguous()
        flags, old = epilogue.store_rows(dst, index, values, ep, threshold, test,
                                         threshold == 0, want_old, flags=test)
        if not test:
            return None, old
        sel = flags.nonzero().squeeze(1)
        if sel.numel() == values.shape[0]:
            return None, old
        picked = sel if index is None else index.index_select(0, sel)
        return picked, old.index_select(0, sel) if want_old else None

    def _reference_store(self, dst, index, values, steps, operands, threshold, test, want_old):
        if steps:
            values = ReferenceBackend.epilogue(self, values, steps, operands, index)
        return ReferenceBackend.store(self, dst, index, values, threshold, test, want_old)

    # -- compute on gathered blocks -----------------------------------------------------------

    def linear(self, rows: torch.Tensor, weight_t: torch.Tensor,
               bias: torch.Tensor | None, out: torch.Tensor | None = None) -> torch.Tensor:
        """1x1 convolution on rows: ``(n, Cin) @ (Cin, Cout) + bias``."""
        if rows.dtype not in TL_FLOAT or rows.dtype != weight_t.dtype or \
                not weight_t.is_contiguous():
            return super().linear(rows, weight_t, bias, out)
        rows = rows if rows.stride(1) == 1 else rows.contiguous()
        return conv1x1.linear_rows(rows, weight_t, bias, out)

    def window(self, patches: torch.Tensor, layer: Any) -> torch.Tensor:
        """Run ``layer``'s windowed op with padding 0 on a batch of tiles with halo."""
        if getattr(layer, 'transposed', False):
            self._fallback('transposed convolution')
            return super().window(patches, layer)
        if patches.dtype not in TL_FLOAT:
            return super().window(patches, layer)
        pool_mode = getattr(layer, 'pool', None)
        if pool_mode is not None:
            return pool.pool_patches(patches, pool_mode, layer.kernel, layer.stride,
                                     layer.dilation)
        weight = layer.weight
        if weight.dtype != patches.dtype:
            return super().window(patches, layer)
        cin = patches.shape[1]
        if layer.groups == cin and weight.shape[1] == 1:
            taps = self._prepared(layer, 'depthwise', lambda: depthwise.depthwise_weight(weight))
            return depthwise.depthwise_patches(patches, weight, layer.bias, layer.stride,
                                               layer.dilation, taps)
        gemm = self._prepared(layer, 'conv', lambda: conv.conv_weight(weight))
        return conv.conv_patches(patches, weight, layer.bias, layer.stride, layer.dilation,
                                 layer.groups, gemm)

    def _prepared(self, layer: Any, kind: str, make: Any) -> torch.Tensor:
        try:
            entry = self._weights.get(layer)
        except TypeError:  # not weak-referenceable: convert every time
            return make()
        if entry is None or entry[0] != kind or entry[1] is not layer.weight:
            entry = (kind, layer.weight, make())
            self._weights[layer] = entry
        return entry[2]

    def resample(self, rows: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Weighted sum of taps: ``(n, K, C)``, ``(n, K)`` -> ``(n, C)``."""
        if rows.dtype not in TL_FLOAT or weights.dtype != rows.dtype:
            return super().resample(rows, weights)
        return resample.resample_taps(rows, weights)

    def epilogue(self, x: torch.Tensor, steps: Sequence[Any], operands: dict,
                 index: torch.Tensor | None, out: torch.Tensor | None = None) -> torch.Tensor:
        """Apply pointwise ``steps`` to rows ``x`` (n, C) (see the reference)."""
        dst = x if out is None else out
        if not steps:
            if dst is not x:
                dst.copy_(x)
            return dst
        if x.dtype not in TL_FLOAT or dst.dtype != x.dtype or x.stride(1) != 1 or \
                dst.stride(1) != 1:
            return super().epilogue(x, steps, operands, index, out)
        try:
            ep = epilogue.encode(steps, operands)
        except epilogue.Unfusable as exc:
            self._fallback(str(exc))
            return super().epilogue(x, steps, operands, index, out)
        epilogue.store_rows(dst, index, x, ep, test=False, dst_at_index=False, flags=False)
        return dst

    # -- masks ---------------------------------------------------------------------------------

    def dilate(self, mask: torch.Tensor, pads: tuple[int, int, int, int],
               kernel: tuple[int, int], stride: tuple[int, int],
               dilation: tuple[int, int], ceil_mode: bool,
               out_hw: tuple[int, int]) -> torch.Tensor:
        """Receptive-field image of ``mask`` (H, W) through a windowed op."""
        return masks.dilate_mask(mask, pads, kernel, stride, dilation, out_hw)

    def active_tiles(self, mask: torch.Tensor, tile: int) -> torch.Tensor:
        """Row-major ids of ``tile x tile`` tiles of ``mask`` (H, W) with a set element."""
        return masks.tile_flags(mask, tile).view(-1).nonzero().squeeze(1)
