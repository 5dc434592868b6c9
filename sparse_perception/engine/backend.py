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
of every layer as a few primitives. Two backends implement them: the pure-torch
:class:`ReferenceBackend` here (CPU and CUDA) and the ``kernels`` backend
(``sparse_perception.kernels.backend``: Triton kernels, the reference for what they do not
cover), which gives the same results. Dense fallbacks hand the caches' channels_last views to
stock torch ops (cuDNN and oneDNN run those well already), and the resampling layer's row
path writes whole output rows straight into its cache.

Both backends take exact-size index tensors built with ``nonzero`` (a host synchronisation
on CUDA). The sync-free path is not a backend:
:class:`~sparse_perception.engine.device.DeviceModel` runs the same lowered program on the
kernels directly, with fixed-capacity tile lists and device-side counts, and replays a frame
as a CUDA graph; it shares this module's cache layout (:func:`new_cache`) but not the
primitives.

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
``dilate(mask (H, W) bool, pads, kernel, stride, dilation, ceil_mode, out_hw) -> (Ho, Wo)``
    The receptive-field image of a change mask through a windowed op.
``active_tiles(mask (H, W) bool, tile) -> (t,) int64``
    Tiles of ``tile x tile`` output positions that hold a set mask element, row-major.

Registering a backend
---------------------
:func:`register_backend` maps a name to a factory ``factory(device) -> Backend`` that raises an
EngineError saying why when it cannot run on that device (returning None also works). When the
'kernels' backend is asked for and not registered, :func:`get_backend` imports
``sparse_perception.kernels`` and calls its ``register()`` (which compiles nothing and does
not touch CUDA; importing that package registers the backend too).
"""

from __future__ import annotations

import importlib
import logging
from typing import Any, Callable, Sequence

from sparse_perception.engine.errors import EngineError
import torch
import torch.nn.functional as F

LOG = logging.getLogger(__name__)

# Activation name (see graph.py) -> function(x, *params, inplace). In-place where torch can,
# since the running value is always a fresh tensor owned by the engine.
ACTIVATIONS: dict[str, Callable[..., torch.Tensor]] = {
    'relu': lambda x: torch.relu_(x),
    'hardtanh': lambda x, lo, hi: x.clamp_(lo, hi),
    'clamp': lambda x, lo, hi: x.clamp_(lo, hi),
    'hardswish': lambda x: F.hardswish(x, inplace=True),
    'hardsigmoid': lambda x: F.hardsigmoid(x, inplace=True),
    'sigmoid': lambda x: x.sigmoid_(),
    'silu': lambda x: F.silu(x, inplace=True),
    'tanh': lambda x: x.tanh_(),
    'leaky_relu': lambda x, slope: F.leaky_relu(x, slope, inplace=True),
    'gelu': lambda x, approximate: F.gelu(x, approximate=approximate),
    'elu': lambda x, alpha: F.elu(x, alpha, inplace=True),
    'mish': lambda x: F.mish(x),
    'softplus': lambda x, beta, threshold: F.softplus(x, beta, threshold),
    'prelu': lambda x, weight: F.prelu(x, weight) if x.dim() != 2 else _prelu_rows(x, weight),
}

_BINARY = {'add': torch.add, 'sub': torch.sub, 'mul': torch.mul, 'div': torch.div}

# Activations that can read one tensor and write another in one pass: f(src, dst, *params).
_OUT_ACTIVATIONS: dict[str, Callable[..., Any]] = {
    'relu': lambda src, dst: torch.clamp(src, min=0, out=dst),
    'hardtanh': lambda src, dst, lo, hi: torch.clamp(src, lo, hi, out=dst),
    'clamp': lambda src, dst, lo, hi: torch.clamp(src, lo, hi, out=dst),
    'sigmoid': lambda src, dst: torch.sigmoid(src, out=dst),
    'tanh': lambda src, dst: torch.tanh(src, out=dst),
}


def _prelu_rows(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    # F.prelu treats dim 1 as channels; rows (n, C) have channels in dim 1 already.
    return torch.where(x >= 0, x, x * weight.view(1, -1))


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
    """The pure-torch implementation of every primitive (CPU and CUDA)."""

    name = 'reference'

    def __init__(self, device: torch.device | str = 'cpu'):
        self.device = torch.device(device)

    # -- data movement -----------------------------------------------------------------------

    def gather(self, src: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Rows ``src[index]``: ``(R, C)`` and int64 ``(...)`` -> ``(..., C)``."""
        return src.index_select(0, index.reshape(-1)).view(*index.shape, src.shape[1])

    def store(self, dst: torch.Tensor, index: torch.Tensor | None, values: torch.Tensor,
              threshold: float, test: bool = True,
              want_old: bool = False) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Change test and scatter (see the module docstring)."""
        if index is None:
            target = dst[:dst.shape[0] - 3]
            if not test:
                old = target.clone() if want_old else None
                if values.data_ptr() != target.data_ptr():
                    target.copy_(values)
                return None, old
            changed = _changed_rows(values, target, threshold)
            sel = changed.nonzero().squeeze(1)
            if sel.numel() == target.shape[0]:
                old = target.clone() if want_old else None
                target.copy_(values)
                return None, old
            old = target.index_select(0, sel) if want_old else None
            target.index_copy_(0, sel, values.index_select(0, sel))
            return sel, old
        if not test:
            old = dst.index_select(0, index) if want_old else None
            dst.index_copy_(0, index, values)
            return None, old
        old = dst.index_select(0, index)
        changed = _changed_rows(values, old, threshold)
        sel = changed.nonzero().squeeze(1)
        if sel.numel() == index.numel():
            dst.index_copy_(0, index, values)
            return None, old if want_old else None
        picked = index.index_select(0, sel)
        dst.index_copy_(0, picked, values.index_select(0, sel))
        return picked, old.index_select(0, sel) if want_old else None

    def store_epilogue(self, dst: torch.Tensor, index: torch.Tensor | None,
                       values: torch.Tensor, steps: Sequence[Any], operands: dict,
                       threshold: float, test: bool = True, want_old: bool = False):
        """:meth:`epilogue` then :meth:`store`: one fused kernel in a GPU backend."""
        if steps:
            values = self.epilogue(values, steps, operands, index)
        return self.store(dst, index, values, threshold, test, want_old)

    # -- compute on gathered blocks -----------------------------------------------------------

    def linear(self, rows: torch.Tensor, weight_t: torch.Tensor,
               bias: torch.Tensor | None, out: torch.Tensor | None = None) -> torch.Tensor:
        """1x1 convolution on rows: ``(n, Cin) @ (Cin, Cout) + bias``."""
        if bias is None:
            return torch.mm(rows, weight_t, out=out) if out is not None else rows @ weight_t
        if out is not None:
            return torch.addmm(bias, rows, weight_t, out=out)
        return torch.addmm(bias, rows, weight_t)

    def window(self, patches: torch.Tensor, layer: Any) -> torch.Tensor:
        """Run ``layer``'s windowed op with padding 0 on a batch of tiles with halo."""
        return layer.window_op(patches)

    def resample(self, rows: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Weighted sum of taps: ``(n, K, C)``, ``(n, K)`` -> ``(n, C)``."""
        if rows.shape[1] == 1:
            return rows[:, 0] * weights
        return torch.bmm(weights.unsqueeze(1), rows).squeeze(1)

    def epilogue(self, x: torch.Tensor, steps: Sequence[Any], operands: dict,
                 index: torch.Tensor | None, out: torch.Tensor | None = None) -> torch.Tensor:
        """
        Apply pointwise ``steps`` to rows ``x`` (n, C) owned by the caller.

        ``operands`` maps a value id to its cache ``(P' + 3, C')``; it is read at ``index``
        (all rows in order when None), or broadcast when it has a single position. The
        result is written to ``out`` when given (else over ``x``) and returned.
        """
        dst = x if out is None else out
        src = x
        for step in steps:
            kind = step.kind
            if kind == 'act':
                fn = _OUT_ACTIVATIONS.get(step.op)
                if fn is not None:
                    fn(src, dst, *step.params)
                else:
                    if src is not dst:
                        dst.copy_(src)
                    result = ACTIVATIONS[step.op](dst, *step.params)
                    if result.data_ptr() != dst.data_ptr():
                        dst.copy_(result)
            elif kind == 'affine':
                scale, shift = step.const
                torch.addcmul(shift, src, scale, out=dst)
            elif kind == 'scalar':
                if step.reverse:  # const (op) x
                    if step.op == 'sub':
                        torch.mul(src, -1.0, out=dst).add_(step.const)
                    else:
                        torch.reciprocal(src, out=dst).mul_(step.const)
                else:
                    _BINARY[step.op](src, step.const, out=dst)
            else:  # binary
                if step.operand is not None:
                    other = _rows_at(operands[step.operand], index)
                else:
                    other = _rows_at(step.const, index, padded=False)
                if step.reverse:
                    _BINARY[step.op](other, src, out=dst)
                else:
                    _BINARY[step.op](src, other, out=dst)
            src = dst
        if src is not dst:
            dst.copy_(src)
        return dst

    # -- masks ---------------------------------------------------------------------------------

    def dilate(self, mask: torch.Tensor, pads: tuple[int, int, int, int],
               kernel: tuple[int, int], stride: tuple[int, int],
               dilation: tuple[int, int], ceil_mode: bool,
               out_hw: tuple[int, int]) -> torch.Tensor:
        """
        Receptive-field image of ``mask`` (H, W) through a windowed op (see module doc).

        Output (oy, ox) is set when any tap ``(oy * sh - top + i * dh, ox * sw - left +
        j * dw)`` inside the input is set; computed separably with shifted ORs.
        """
        ho, wo = out_hw
        top, _, left, _ = pads
        m = _axis_or(mask, 0, top, kernel[0], stride[0], dilation[0], ho)
        return _axis_or(m, 1, left, kernel[1], stride[1], dilation[1], wo)

    def active_tiles(self, mask: torch.Tensor, tile: int) -> torch.Tensor:
        """Row-major ids of ``tile x tile`` tiles of ``mask`` (H, W) with a set element."""
        h, w = mask.shape
        th, tw = -(-h // tile), -(-w // tile)
        if (th * tile, tw * tile) != (h, w):
            mask = F.pad(mask, (0, tw * tile - w, 0, th * tile - h))
        any_set = mask.view(th, tile, tw, tile).any(3).any(1)
        return any_set.view(-1).nonzero().squeeze(1)


_SAME_SIZE_INT = {8: torch.int64, 4: torch.int32, 2: torch.int16, 1: torch.int8}


def _changed_rows(new: torch.Tensor, old: torch.Tensor, threshold: float) -> torch.Tensor:
    """Bool (n,): rows whose max abs change exceeds ``threshold`` (any bit change at 0)."""
    if threshold > 0:
        return (new - old).abs_().amax(1) > threshold
    # Exact: compare bit patterns (a few times faster than float != and any() on CPU).
    # +0.0 and -0.0 count as a change, which is merely conservative.
    kind = _SAME_SIZE_INT[new.element_size()]
    diff = new.contiguous().view(kind) ^ old.contiguous().view(kind)
    return (diff.amax(1) != 0) | (diff.amin(1) != 0)


def _axis_or(mask: torch.Tensor, axis: int, before: int, kernel: int, stride: int,
             dilation: int, n_out: int) -> torch.Tensor:
    """OR of the ``kernel`` taps of every output along one axis of a bool mask."""
    n_in = mask.shape[axis]
    if kernel == 1 and stride == 1 and before == 0 and n_out == n_in:
        return mask
    need = (n_out - 1) * stride + (kernel - 1) * dilation + 1  # padded input length
    shape = list(mask.shape)
    shape[axis] = max(need, before + n_in)
    padded = mask.new_zeros(shape)
    padded.narrow(axis, before, n_in).copy_(mask)
    out = None
    for j in range(kernel):
        start = j * dilation
        tap = padded.narrow(axis, start, (n_out - 1) * stride + 1)
        if stride > 1:
            tap = tap[::stride] if axis == 0 else tap[:, ::stride]
        out = tap.clone() if out is None else out.logical_or_(tap)
    return out


def _rows_at(src: torch.Tensor, index: torch.Tensor | None, padded: bool = True) -> torch.Tensor:
    """Rows of an operand at ``index``: broadcast for single-position tensors."""
    positions = src.shape[0] - (3 if padded else 0)
    if positions == 1:
        return src[:1]
    if index is None:
        return src[:positions]
    return src.index_select(0, index)


# -- registry ----------------------------------------------------------------------------------

_FACTORIES: dict[str, Callable[[torch.device], Any]] = {
    'reference': lambda device: ReferenceBackend(device),
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
    CUDA where they are registered and can run, else the reference, saying so once in the
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
    if wanted not in _FACTORIES and wanted == 'kernels':
        try:
            importlib.import_module('sparse_perception.kernels').register()
        except ImportError as exc:
            reason = f'sparse_perception.kernels did not import ({exc})'
        else:
            reason = 'sparse_perception.kernels registers no engine backend'
    else:
        reason = ''
    backend = None
    if wanted in _FACTORIES and (resolved != 'auto' or device.type == 'cuda'):
        try:
            backend = _FACTORIES[wanted](device)
        except EngineError as exc:  # the factory says why it cannot run here
            backend, reason = None, str(exc)
        if backend is None and not reason:
            reason = f'the {wanted} backend cannot run on {device}'
    elif wanted in _FACTORIES:
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
