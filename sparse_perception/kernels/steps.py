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
The pointwise steps of an epilogue: what the engine's lowering produces and the kernels apply.

It lives with the kernels and imports nothing of the package, so that the engine imports the
kernels and never the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Step:
    """One pointwise op of an epilogue, applied to ``x`` (the running value)."""

    kind: str  # 'act' | 'affine' | 'binary' | 'scalar'
    op: str  # activation name, or 'add' | 'sub' | 'mul' | 'div'
    params: tuple = ()  # activation parameters (floats, or a tensor for prelu)
    operand: int | None = None  # binary: value id of the other tensor
    const: Any = None  # scalar: a float; affine: (scale, shift) (C,) tensors; binary const
    reverse: bool = False  # operand (op) x instead of x (op) operand
