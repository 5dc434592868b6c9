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
The per-layer primitives of incremental execution, behind one small backend interface.

The eager executor (:class:`~sparse_perception.engine.IncrementalModel`) runs the sparse path
of every layer as a few primitives. Two backends implement them, both here:
:class:`ReferenceBackend` (CPU and CUDA) runs the pure-torch references that sit beside each
Triton kernel in ``sparse_perception.kernels`` (``*_ref``), and :class:`KernelsBackend` runs
the kernels' launchers (and the reference for what they do not cover), with the same results.
Dense fallbacks hand the caches' channels_last views to stock torch ops (cuDNN and oneDNN run
those well already), and the resampling layer's row path writes whole output rows straight
into its cache.

Both backends take exact-size index tensors built with ``nonzero`` (a host synchronisation
on CUDA). The sync-free path is not a backend:
the device executor (:class:`~sparse_perception.engine.device.DeviceExecutor`, behind the
same :class:`~sparse_perception.engine.IncrementalModel`) runs the lowered program on the
same kernels, bound once to fixed-capacity tile lists and device-side counts, and replays a
frame as a CUDA graph; it shares this module's cache layout (:func:`new_cache`) but not the
primitives.

One entry point per kernel: its launcher, written as a binder (``*_args``: the kernel, grid,
arguments and meta-parameters of one launch) and ``runtime.launch``. The device executor binds
its persistent buffers once and replays the bound launches, because a captured CUDA graph
needs fixed pointers and no per-frame Python work; :class:`KernelsBackend` calls the
launchers that bind and launch at once; the ``torch.library`` ops
(``sparse_perception.kernels.ops``) run the same launchers on CUDA and the ``*_ref`` on every
other device. Nothing else calls a ``@triton.jit`` kernel.

Data layout
-----------
A *cache* is the cached activation of one tensor of the network, stored NHWC as rows:
``(P + 3, C)`` where ``P = H * W`` (row ``y * W + x`` is position ``(y, x)``). The three extra
rows serve index tables:

- row ``P`` (:func:`zero_row`) holds zeros (zero padding, empty resampling taps);
- row ``P + 1`` (:func:`low_row`) holds ``-inf`` (max-pooling padding);
- row ``P + 2`` (:func:`dump_row`) takes writes of tile positions outside the map.

A cache's first ``P`` rows viewed as ``(1, C, H, W)`` are a channels_last tensor, which is
what the dense paths hand to stock torch ops. *Index* tensors are int64; masks are bool.

Primitives (shapes for batch 1; ``n`` active positions, ``t`` active tiles)
----------------------------------------------------------------------------
``gather(src (R, C), index (...)) -> (..., C)``
    Rows of a cache: active positions ``(n,)``, tiles with halo ``(t, ph * pw)``, or
    resampling taps ``(n, K)``.
``linear(rows (n, Cin), weight_t (Cin, Cout), bias (Cout,) | None) -> (n, Cout)``
    A 1x1 convolution on gathered rows (a GEMM).
``window(patches (t, C, ph, pw) channels_last, layer) -> (t, Cout, T, T)``
    Any windowed op (convolution with stride, dilation and groups, transposed convolution,
    max or average pooling) on a batch of gathered tiles with their halo, with padding 0
    (the halo already holds the padding rows).
``resample(rows (n, K, C), weights (n, K)) -> (n, C)``
    Weighted sum of taps: bilinear, nearest, bicubic, area resampling.
``epilogue(x (n, C), steps, operands, index (n,) | None, out=None) -> (n, C')``
    Pointwise ops after the core: activations, affine maps, scalars, and binary ops with
    another cache read at the same rows (residual adds) or broadcast (1x1 tensors). ``x`` is
    owned by the engine and may be overwritten; with ``out`` (the first ``P`` rows of the
    layer's cache, for dense layers) the result lands there without an extra copy.
``store(dst (P + 3, C), index (n,) | None, values (n, C), threshold, test, want_old)``
    The change test and scatter: a row whose new value differs from the cached one by more
    than ``threshold`` (max over channels; any bit at threshold 0) is written and reported
    as changed; the others keep the cached, last propagated value. ``index`` None means all
    ``P`` rows in order. With ``test`` False every row is written (the caller reports the
    change set). Returns ``(changed_index (m,) | None, old_rows | None)``: None for the index
    means "all of ``index``"; old rows (the values before the write, of the changed rows)
    only with ``want_old``. ``store_epilogue`` fuses ``epilogue`` and ``store``; a kernel
    should implement that one.
``intake(x (1, C, H, W), cache (H * W + 3, C), tiles (Ht, Wt) bool, tile, threshold)``
    The input's change test and store for a frame most of whose tiles changed: a pixel inside
    a set tile whose value differs from the cached one by more than ``threshold`` (any bit at
    0) is written. Returns the changed pixels, bool ``(H * W,)``.
``dilate(mask (H, W) bool, pads, kernel, stride, dilation, ceil_mode, out_hw) -> (Ho, Wo)``
    The receptive-field image of a change mask through a windowed op.
``active_tiles(mask (H, W) bool, tile) -> (t,) int64``
    Tiles of ``tile x tile`` output positions that hold a set mask element, row-major.

Registering a backend
---------------------
:func:`register_backend` maps a name to a factory ``factory(device) -> Backend`` that raises an
EngineError saying why when it cannot run on that device (returning None also works). The
'kernels' backend is registered here (one registered under that name replaces it; 'reference'
is always :class:`ReferenceBackend`); building it compiles nothing and does not touch CUDA.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any, Callable, Sequence
import weakref

from sparse_perception.engine.errors import EngineError
import torch

LOG = logging.getLogger(__name__)


def kernel_modules() -> SimpleNamespace:
    """
    Return the kernel modules (``k.conv``, ``k.runtime``...), importing them on first use.

    Importing one imports Triton and fixes the choice of its CPU interpreter (see
    ``kernels/runtime.py``): that happens when a backend or the device executor is first
    built, not when the engine is imported.
    """
    from sparse_perception.kernels import (conv, conv1x1, depthwise, epilogue, frame, gather,
                                           masks, pool, positionwise, resample, runtime, window)

    return SimpleNamespace(conv=conv, conv1x1=conv1x1, depthwise=depthwise, epilogue=epilogue,
                           frame=frame, gather=gather, masks=masks, pool=pool,
                           positionwise=positionwise, resample=resample, runtime=runtime,
                           window=window)


def zero_row(positions: int) -> int:
    """Index of the zero pad row of a cache with ``positions`` rows of data."""
    return positions


def low_row(positions: int) -> int:
    """Index of the ``-inf`` pad row of a cache with ``positions`` rows of data."""
    return positions + 1


def dump_row(positions: int) -> int:
    """Index of the row of a cache that absorbs writes meant for nowhere."""
    return positions + 2


def new_cache(positions: int, channels: int, dtype: torch.dtype,
              device: torch.device) -> torch.Tensor:
    """Allocate a cache ``(positions + 3, channels)`` with its pad rows set."""
    cache = torch.zeros(positions + 3, channels, dtype=dtype, device=device)
    if dtype.is_floating_point:
        cache[positions + 1].fill_(float('-inf'))
    else:
        cache[positions + 1].fill_(torch.iinfo(dtype).min)
    return cache


def as_nchw(cache: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """View a cache's data rows as a channels_last ``(1, C, H, W)`` tensor (no copy)."""
    return cache[:height * width].view(1, height, width, -1).permute(0, 3, 1, 2)


class ReferenceBackend:
    """The pure-torch implementation of every primitive (CPU and CUDA): the kernels' ``*_ref``."""

    name = 'reference'

    def __init__(self, device: torch.device | str = 'cpu'):
        self.device = torch.device(device)
        self.k = kernel_modules()  # the references live beside the kernels

    # -- data movement -----------------------------------------------------------------------

    def gather(self, src: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Rows ``src[index]``: ``(R, C)`` and int64 ``(...)`` -> ``(..., C)``."""
        return self.k.gather.gather_rows_ref(src, index)

    def store(self, dst: torch.Tensor, index: torch.Tensor | None, values: torch.Tensor,
              threshold: float, test: bool = True,
              want_old: bool = False) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Change test and scatter (see the module docstring)."""
        return self.k.epilogue.store_rows_ref(dst, index, values, (), None, threshold, test,
                                              want_old)

    def store_epilogue(self, dst: torch.Tensor, index: torch.Tensor | None,
                       values: torch.Tensor, steps: Sequence[Any], operands: dict,
                       threshold: float, test: bool = True, want_old: bool = False):
        """:meth:`epilogue` then :meth:`store`: one fused kernel in a GPU backend."""
        if steps:
            # The engine owns ``values``: the epilogue may overwrite them instead of allocating.
            values = self.epilogue(values, steps, operands, index)
        return self.store(dst, index, values, threshold, test, want_old)

    def intake(self, x: torch.Tensor, cache: torch.Tensor, tiles: torch.Tensor, tile: int,
               threshold: float) -> torch.Tensor:
        """Take a frame's changed pixels inside ``tiles`` into the input cache (see above)."""
        return self.k.frame.intake_ref(x, cache, tiles, tile, threshold, False)

    # -- compute on gathered blocks -----------------------------------------------------------

    def linear(self, rows: torch.Tensor, weight_t: torch.Tensor,
               bias: torch.Tensor | None, out: torch.Tensor | None = None) -> torch.Tensor:
        """1x1 convolution on rows: ``(n, Cin) @ (Cin, Cout) + bias``."""
        return self.k.conv1x1.linear_rows_ref(rows, weight_t, bias, out)

    def window(self, patches: torch.Tensor, layer: Any) -> torch.Tensor:
        """Run ``layer``'s windowed op with padding 0 on a batch of tiles with halo."""
        if getattr(layer, 'transposed', False):
            return layer.transposed_patches(patches)  # no kernel: torch, cropped to the tile
        k = self.k
        if layer.pool is not None:
            return k.pool.pool_patches_ref(patches, layer.pool, layer.kernel, layer.stride,
                                           layer.dilation)
        weight = layer.weight
        if layer.groups == patches.shape[1] and weight.shape[1] == 1:
            return k.depthwise.depthwise_patches_ref(patches, weight, layer.bias, layer.stride,
                                                     layer.dilation)
        return k.conv.conv_patches_ref(patches, weight, layer.bias, layer.stride,
                                       layer.dilation, layer.groups)

    def resample(self, rows: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Weighted sum of taps: ``(n, K, C)``, ``(n, K)`` -> ``(n, C)``."""
        return self.k.resample.resample_taps_ref(rows, weights)

    def epilogue(self, x: torch.Tensor, steps: Sequence[Any], operands: dict,
                 index: torch.Tensor | None, out: torch.Tensor | None = None) -> torch.Tensor:
        """
        Apply pointwise ``steps`` to rows ``x`` (n, C) owned by the caller.

        ``operands`` maps a value id to its cache ``(P' + 3, C')``; it is read at ``index``
        (all rows in order when None), or broadcast when it has a single position. The
        result is written to ``out`` when given (else over ``x``) and returned.
        """
        return self.k.epilogue.epilogue_ref(x, steps, operands, index, out)

    # -- masks ---------------------------------------------------------------------------------

    def dilate(self, mask: torch.Tensor, pads: tuple[int, int, int, int],
               kernel: tuple[int, int], stride: tuple[int, int],
               dilation: tuple[int, int], ceil_mode: bool,
               out_hw: tuple[int, int]) -> torch.Tensor:
        """Receptive-field image of ``mask`` (H, W) through a windowed op (see module doc)."""
        return self.k.masks.dilate_mask_ref(mask, pads, kernel, stride, dilation, out_hw)

    def active_tiles(self, mask: torch.Tensor, tile: int) -> torch.Tensor:
        """Row-major ids of ``tile x tile`` tiles of ``mask`` (H, W) with a set element."""
        return self.k.masks.tile_flags_ref(mask, tile).view(-1).nonzero().squeeze(1)


class KernelsBackend(ReferenceBackend):
    """
    Triton kernels for every primitive, the reference for what they do not cover.

    It plugs into the eager executor, which still decides per layer on the host (exact-size
    index tensors, ``nonzero``). Every primitive gives the reference backend's results (up to
    the rounding of fp32 accumulation). What the kernels do not cover runs on the reference
    path, said once in the log: transposed convolutions, integer tensors (argmax outputs), and
    epilogues with steps the kernels do not know or more than ``epilogue.MAX_STEPS`` of them.
    """

    name = 'kernels'

    def __init__(self, device: torch.device | str = 'cuda'):
        super().__init__(device)
        self.floats = self.k.runtime.TL_FLOAT  # the dtypes the kernels take
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
        if src.dtype not in self.floats:
            return super().gather(src, index)
        return self.k.gather.gather_rows(src, index)

    def store(self, dst: torch.Tensor, index: torch.Tensor | None, values: torch.Tensor,
              threshold: float, test: bool = True, want_old: bool = False):
        """Change test and scatter (see the module docstring)."""
        if dst.dtype not in self.floats or values.dtype != dst.dtype:
            return super().store(dst, index, values, threshold, test, want_old)
        return self.store_epilogue(dst, index, values, (), {}, threshold, test, want_old)

    def intake(self, x: torch.Tensor, cache: torch.Tensor, tiles: torch.Tensor, tile: int,
               threshold: float) -> torch.Tensor:
        """Take a frame's changed pixels inside ``tiles`` into the input cache (see above)."""
        if cache.dtype not in self.floats or x.dtype not in self.floats:
            return super().intake(x, cache, tiles, tile, threshold)
        mask = torch.zeros(x.shape[2] * x.shape[3], dtype=torch.uint8, device=x.device)
        stats = torch.zeros(4, dtype=torch.int32, device=x.device)
        kernel, grid, args, meta = self.k.frame.intake_args(
            x, cache, mask, tiles.to(torch.uint8), stats, tile, threshold, False)
        self.k.runtime.launch(kernel, grid, *args, **meta)
        return mask.bool()

    def store_epilogue(self, dst: torch.Tensor, index: torch.Tensor | None,
                       values: torch.Tensor, steps: Sequence[Any], operands: dict,
                       threshold: float, test: bool = True, want_old: bool = False):
        """Epilogue, change test and scatter in one kernel."""
        if dst.dtype not in self.floats or values.dtype != dst.dtype:
            return ReferenceBackend.store_epilogue(self, dst, index, values, steps, operands,
                                                   threshold, test, want_old)
        try:
            ep = self.k.epilogue.encode(steps, operands)
        except self.k.epilogue.Unfusable as exc:
            self._fallback(str(exc))
            return ReferenceBackend.store_epilogue(self, dst, index, values, steps, operands,
                                                   threshold, test, want_old)
        values = values if values.stride(1) == 1 else values.contiguous()
        flags, old = self.k.epilogue.store_rows(dst, index, values, ep, threshold, test,
                                                threshold == 0, want_old, flags=test)
        if not test:
            return None, old
        sel = flags.nonzero().squeeze(1)
        if sel.numel() == values.shape[0]:
            return None, old
        picked = sel if index is None else index.index_select(0, sel)
        return picked, old.index_select(0, sel) if want_old else None

    # -- compute on gathered blocks -----------------------------------------------------------

    def linear(self, rows: torch.Tensor, weight_t: torch.Tensor,
               bias: torch.Tensor | None, out: torch.Tensor | None = None) -> torch.Tensor:
        """1x1 convolution on rows: ``(n, Cin) @ (Cin, Cout) + bias``."""
        if rows.dtype not in self.floats or rows.dtype != weight_t.dtype or \
                not weight_t.is_contiguous():
            return super().linear(rows, weight_t, bias, out)
        rows = rows if rows.stride(1) == 1 else rows.contiguous()
        return self.k.conv1x1.linear_rows(rows, weight_t, bias, out)

    def window(self, patches: torch.Tensor, layer: Any) -> torch.Tensor:
        """Run ``layer``'s windowed op with padding 0 on a batch of tiles with halo."""
        if getattr(layer, 'transposed', False):
            self._fallback('transposed convolution')
            return super().window(patches, layer)
        if patches.dtype not in self.floats:
            return super().window(patches, layer)
        pool_mode = getattr(layer, 'pool', None)
        if pool_mode is not None:
            return self.k.pool.pool_patches(patches, pool_mode, layer.kernel, layer.stride,
                                            layer.dilation)
        weight = layer.weight
        if weight.dtype != patches.dtype:
            return super().window(patches, layer)
        cin = patches.shape[1]
        k = self.k
        if layer.groups == cin and weight.shape[1] == 1:
            taps = self._prepared(layer, 'depthwise', lambda: k.depthwise.depthwise_weight(weight))
            return k.depthwise.depthwise_patches(patches, weight, layer.bias, layer.stride,
                                                 layer.dilation, taps)
        gemm = self._prepared(layer, 'conv', lambda: k.conv.conv_weight(weight))
        return k.conv.conv_patches(patches, weight, layer.bias, layer.stride, layer.dilation,
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
        if rows.dtype not in self.floats or weights.dtype != rows.dtype:
            return super().resample(rows, weights)
        return self.k.resample.resample_taps(rows, weights)

    def epilogue(self, x: torch.Tensor, steps: Sequence[Any], operands: dict,
                 index: torch.Tensor | None, out: torch.Tensor | None = None) -> torch.Tensor:
        """Apply pointwise ``steps`` to rows ``x`` (n, C) (see the reference)."""
        dst = x if out is None else out
        if not steps:
            if dst is not x:
                dst.copy_(x)
            return dst
        if x.dtype not in self.floats or dst.dtype != x.dtype or x.stride(1) != 1 or \
                dst.stride(1) != 1:
            return super().epilogue(x, steps, operands, index, out)
        try:
            ep = self.k.epilogue.encode(steps, operands)
        except self.k.epilogue.Unfusable as exc:
            self._fallback(str(exc))
            return super().epilogue(x, steps, operands, index, out)
        self.k.epilogue.store_rows(dst, index, x, ep, test=False, dst_at_index=False,
                                   flags=False)
        return dst

    # -- masks ---------------------------------------------------------------------------------

    def dilate(self, mask: torch.Tensor, pads: tuple[int, int, int, int],
               kernel: tuple[int, int], stride: tuple[int, int],
               dilation: tuple[int, int], ceil_mode: bool,
               out_hw: tuple[int, int]) -> torch.Tensor:
        """Receptive-field image of ``mask`` (H, W) through a windowed op."""
        return self.k.masks.dilate_mask(mask, pads, kernel, stride, dilation, out_hw)

    def active_tiles(self, mask: torch.Tensor, tile: int) -> torch.Tensor:
        """Row-major ids of ``tile x tile`` tiles of ``mask`` (H, W) with a set element."""
        return self.k.masks.tile_flags(mask, tile).view(-1).nonzero().squeeze(1)


def _kernels_backend(device: torch.device) -> KernelsBackend:
    """
    Return a KernelsBackend for ``device``.

    Where the kernels cannot run, raise an EngineError that says why: :func:`get_backend`
    passes it on when 'kernels' was asked for, and logs it when it falls back under 'auto'.
    """
    ok, reason = kernel_modules().runtime.can_run_on(device)
    if not ok:
        raise EngineError(f'the kernels cannot run on {device}: {reason}')
    return KernelsBackend(device)


# -- registry ----------------------------------------------------------------------------------

_FACTORIES: dict[str, Callable[[torch.device], Any]] = {
    'reference': lambda device: ReferenceBackend(device),
    'kernels': _kernels_backend,
}
_LOGGED: set = set()


def register_backend(name: str, factory: Callable[[torch.device], Any]) -> None:
    """Register ``factory(device) -> backend`` (raising EngineError with why not) as ``name``."""
    _FACTORIES[name] = factory


def available_backends() -> list[str]:
    """Return the names registered so far."""
    return sorted(_FACTORIES)


def get_backend(name: str, device: torch.device | str) -> Any:
    """
    Return the backend for ``name`` ('auto', 'reference', 'kernels') on ``device``.

    'auto' (after the environment switch in settings.resolve_backend) picks the kernels on
    CUDA where they can run, else the reference, saying so once in the
    log. Asking for 'kernels' explicitly where they cannot run is an error.
    """
    from sparse_perception.settings import resolve_backend

    device = torch.device(device)
    resolved = resolve_backend(name)
    if resolved == 'reference':
        return ReferenceBackend(device)
    if resolved not in ('auto', 'kernels') and resolved not in _FACTORIES:
        raise EngineError(f'unknown backend {name!r}; expected one of auto, '
                          f'{", ".join(available_backends())}')
    wanted = 'kernels' if resolved == 'auto' else resolved
    backend, reason = None, ''
    factory = _FACTORIES.get(wanted)
    if factory is None:
        reason = f'no {wanted} backend is registered'
    elif resolved != 'auto' or device.type == 'cuda':
        try:
            backend = factory(device)
        except EngineError as exc:  # the factory says why it cannot run here
            reason = str(exc)
        if backend is None and not reason:
            reason = f'the {wanted} backend cannot run on {device}'
    else:
        reason = f'the {wanted} backend is for CUDA, not {device}'
    if backend is not None:
        return backend
    if resolved != 'auto':
        raise EngineError(f'backend {wanted!r} was requested but is not available: {reason}; '
                          "use backend 'reference' or 'auto'")
    key = (wanted, str(device))
    if key not in _LOGGED:
        _LOGGED.add(key)
        LOG.info('incremental engine: using the reference backend on %s (%s)', device, reason)
    return ReferenceBackend(device)
