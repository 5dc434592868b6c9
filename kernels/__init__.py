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
GPU kernels (Triton), each beside its pure-torch reference.

Installed as ``sparse_perception.kernels``. Importing it registers the 'kernels' engine
backend and nothing else: Triton is imported, and the choice between compiled kernels and
Triton's CPU interpreter made, only when a backend or op is first built.

Modules (one per kernel family; each Triton kernel has a ``*_ref`` beside it):

- ``gather``: rows of a cache at an index; copies into listed tiles (padding, concatenation)
- ``epilogue``: the fused epilogue, change test and scatter (``store_epilogue``)
- ``conv1x1``: 1x1 convolution as a GEMM over active rows (tensor cores)
- ``depthwise``: depthwise KxK convolution over tiles (stride 1 and 2, dilation)
- ``conv``: dense and grouped KxK convolution over tiles (implicit GEMM)
- ``pool``: max and average pooling over tiles
- ``resample``: nearest/bilinear/bicubic/area resampling from taps
- ``masks``: receptive-field dilation, tile flags, sync-free active-tile lists
- ``frame``: the sync-free frame's input intake and global average pooling
- ``ops``: the ``torch.library`` custom ops (namespace ``sparse_perception``)
- ``backend``: the 'kernels' backend of the engine's eager executor
"""

from __future__ import annotations

from typing import Any


def _backend_factory(device: Any) -> Any:
    """
    Return a KernelsBackend for ``device``.

    Where the kernels cannot run, raise an EngineError that says why: the engine passes it
    on when 'kernels' was asked for, and logs it when it falls back under 'auto'.
    """
    import torch

    from sparse_perception.engine.errors import EngineError

    device = torch.device(device)
    try:
        from sparse_perception.kernels._runtime import can_run_on
    except ImportError as exc:  # no Triton
        raise EngineError(f'the kernels need Triton ({exc}); install the gpu extra') from None
    ok, reason = can_run_on(device)
    if not ok:
        raise EngineError(f'the kernels cannot run on {device}: {reason}')
    from sparse_perception.kernels.backend import KernelsBackend

    return KernelsBackend(device)


def register() -> None:
    """
    Register the 'kernels' backend with the engine (idempotent).

    Importing this package calls it; the engine calls it again when it finds no 'kernels'
    backend registered, so a registry that was replaced after the first import (as tests
    do) still gets the kernels.
    """
    from sparse_perception.engine.backend import register_backend

    register_backend('kernels', _backend_factory)


register()
