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
What every kernel module shares: Triton, the interpreter switch, launching, argument checks.

Imported by the kernel modules (never by ``sparse_perception.kernels`` itself), so that
importing the package neither imports Triton nor decides between the interpreter and compiled
kernels. ``triton.jit`` makes that decision when a kernel module is imported: with
``TRITON_INTERPRET=1`` in the environment at that moment every kernel runs in Triton's CPU
interpreter (on CPU tensors; CI does this), otherwise it compiles for CUDA on first launch.

Triton is optional (the ``gpu`` extra): the pure-torch references beside the kernels are what
the engine's reference backend runs, so the kernel modules import without Triton too. Then
:data:`TRITON_MISSING` says why, :func:`can_run_on` refuses every device and :func:`launch`
raises.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import torch


class _WithoutTriton:
    """Stands in for ``triton`` and ``triton.language`` so that kernel modules still define."""

    @staticmethod
    def jit(fn: Callable) -> Callable:
        """Return ``fn`` unchanged: without Triton no kernel is ever launched."""
        return fn

    @staticmethod
    def constexpr(value: Any) -> Any:
        """Return ``value``: the kernel modules' compile-time constants, as plain values."""
        return value


try:
    import triton
    import triton.language as tl
except ImportError as exc:
    TRITON_MISSING = f'the kernels need Triton ({exc}); install the gpu extra'
    triton = tl = _WithoutTriton()
else:
    TRITON_MISSING = ''

# The mode the kernel modules were created in (they import this module first).
INTERPRETED = os.environ.get('TRITON_INTERPRET', '0') == '1'

# Callables ``recorder(kernel, grid, args, meta)`` told about every launch (tests use them to
# check that a frame's launches are the same from frame to frame, and to collect the
# specialisations to compile ahead of time for a GPU target).
RECORDERS: list[Callable[..., None]] = []


class KernelError(RuntimeError):
    """A kernel was called with tensors it cannot work on."""


def launch(kernel: Any, grid: tuple, *args: Any, **meta: Any) -> None:
    """Launch ``kernel[grid](*args, **meta)``, telling the recorders first."""
    if TRITON_MISSING:
        raise KernelError(TRITON_MISSING)
    for record in RECORDERS:
        record(kernel, grid, args, meta)
    kernel[grid](*args, **meta)


def check_device(*tensors: torch.Tensor) -> None:
    """Raise :class:`KernelError` unless the kernels can read every tensor given."""
    for t in tensors:
        if t is None:
            continue
        if t.device.type == 'cuda':
            continue
        if t.device.type == 'cpu' and INTERPRETED:
            continue
        raise KernelError(
            f'a Triton kernel got a tensor on {t.device}; compiled kernels need CUDA tensors '
            "and CPU tensors need Triton's interpreter (TRITON_INTERPRET=1 set before "
            'sparse_perception.kernels is first used). Use the reference backend on the CPU.')


def can_run_on(device: torch.device) -> tuple[bool, str]:
    """Return (True, '') if kernels can run on ``device``, else (False, the reason)."""
    device = torch.device(device)
    if TRITON_MISSING:
        return False, TRITON_MISSING
    if device.type == 'cuda':
        if INTERPRETED:
            return False, ('TRITON_INTERPRET=1 was set when the kernels were imported, so they '
                           'would run in the slow CPU interpreter')
        return True, ''
    if device.type == 'cpu' and INTERPRETED:
        return True, ''
    return False, (f"the kernels run on CUDA, and on the CPU only under Triton's interpreter "
                   f'(TRITON_INTERPRET=1 before the first import); got {device}')


def next_pow2(n: int) -> int:
    """Return the smallest power of two >= ``n`` (1 for n <= 1)."""
    return 1 if n <= 1 else 1 << (int(n) - 1).bit_length()


def block(n: int, low: int, high: int) -> int:
    """Return a power-of-two block size for an extent ``n``, clamped to [low, high]."""
    return max(low, min(high, next_pow2(n)))


def cdiv(a: int, b: int) -> int:
    """Return ceil(a / b) for positive b."""
    return -(-a // b)


def as_u8(mask: torch.Tensor) -> torch.Tensor:
    """View a bool mask as uint8 (the kernels read and write bytes)."""
    return mask.view(torch.uint8) if mask.dtype == torch.bool else mask


TL_FLOAT = (torch.float32, torch.float16, torch.bfloat16)


def check_float(*tensors: torch.Tensor) -> None:
    """Raise :class:`KernelError` unless every tensor is float32, float16 or bfloat16."""
    for t in tensors:
        if t is not None and t.dtype not in TL_FLOAT:
            raise KernelError(f'a kernel got a {t.dtype} tensor; expected float32, float16 or '
                              'bfloat16 (other dtypes run on the reference backend)')


def check_dot(dtype: torch.dtype, what: str) -> None:
    """Refuse what Triton's interpreter gets wrong: a bfloat16 matrix product."""
    # Triton 3.6's interpreter multiplies bfloat16 operands as the integers that store them
    # (errors of 1e9 and more); elementwise bfloat16 arithmetic is right there.
    if INTERPRETED and dtype == torch.bfloat16:
        raise KernelError(f"{what}: Triton's interpreter (TRITON_INTERPRET=1) computes "
                          'bfloat16 matrix products wrongly; run bfloat16 on CUDA, or on the '
                          'reference backend on the CPU')


def bias_vector(bias: torch.Tensor | None, channels: int, what: str) -> torch.Tensor | None:
    """
    Return ``bias`` as the kernels read it: (channels,) contiguous (None stays None).

    The kernels read the bias at ``b_ptr + channel``: a strided view (``b[::2]``, which a
    model may pass to ``F.conv2d``) is copied, and a bias of another length is refused rather
    than read past its end.
    """
    if bias is None:
        return None
    if bias.dim() != 1 or bias.shape[0] != channels:
        raise KernelError(f'{what}: bias {tuple(bias.shape)} must be ({channels},), one per '
                          'output channel')
    return bias.contiguous()


# -- helpers used inside kernels ----------------------------------------------------------------

@triton.jit
def work_count(count_ptr, n_items, HAS_COUNT: tl.constexpr):
    """Return the number of work items: read on the device, or the launch argument."""
    if HAS_COUNT:
        n = tl.load(count_ptr)
    else:
        n = n_items
    return n


@triton.jit
def work_item(list_ptr, pid, HAS_LIST: tl.constexpr):
    """Return work item ``pid``: an entry of a list, or ``pid`` itself."""
    if HAS_LIST:
        t = tl.load(list_ptr + pid)
    else:
        t = pid
    return t


@triton.jit
def tile_positions(t, Ho, Wo, TY: tl.constexpr, TX: tl.constexpr):
    """
    Return (image, oy, ox, valid) of the TY * TX positions of output tile ``t``.

    Tiles number row-major over a batch of ``Ho x Wo`` maps; positions are row-major in the
    tile; ``valid`` is False for positions past the map's edge.
    """
    ntx = (Wo + TX - 1) // TX
    per_image = ((Ho + TY - 1) // TY) * ntx
    b = t // per_image
    r = t % per_image
    i = tl.arange(0, TY * TX)
    oy = (r // ntx) * TY + i // TX
    ox = (r % ntx) * TX + i % TX
    valid = (oy < Ho) & (ox < Wo)
    return b, oy, ox, valid


@triton.jit
def tile_rows(list_ptr, pid, cand_ptr, Ho, Wo, HAS_LIST: tl.constexpr, HAS_CAND: tl.constexpr,
              TY: tl.constexpr, TX: tl.constexpr):
    """
    Return (image, oy, ox, valid, rows, mask) of work item ``pid``'s output tile.

    ``rows`` index the positions in a cache of ``Ho x Wo`` maps; ``mask`` keeps the valid
    positions that are candidates (``cand_ptr`` bytes), or every valid one without a list.
    """
    t = work_item(list_ptr, pid, HAS_LIST)
    b, oy, ox, valid = tile_positions(t, Ho, Wo, TY, TX)
    prow = b * Ho * Wo + oy * Wo + ox
    if HAS_CAND:
        rmask = valid & (tl.load(cand_ptr + prow, mask=valid, other=0) != 0)
    else:
        rmask = valid
    return b, oy, ox, valid, prow, rmask
