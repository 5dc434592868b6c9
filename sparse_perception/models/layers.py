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
The few layers the importers need beyond ``torch.nn``.

Everything else an imported model contains is a stock ``torch.nn`` layer or a plain torch
function, so that the incremental engine sees ordinary building blocks.
"""

from __future__ import annotations

import torch
from torch import nn


def fake_quantize(x: torch.Tensor, scale: float, zero_point: int, qmin: int,
                  qmax: int) -> torch.Tensor:
    """
    Round ``x`` to the grid of an affine-quantised tensor and return it in real units.

    ``x`` has any shape; the result has the same shape and dtype. This is what an integer
    runtime does to every activation it stores: ``q = clamp(round(x / scale) + zero_point,
    qmin, qmax)`` and the real value is ``(q - zero_point) * scale``.
    """
    # Ties round up (towards +inf), as the integer kernels of the TFLite runtime do: with
    # round-half-even, MoveNet's input normalisation (where every value is a tie) differs
    # from the runtime's on 2% of pixels; with round-half-up it matches exactly.
    r = torch.floor(x / scale + 0.5)
    q = torch.clamp(r + zero_point, qmin, qmax)
    return (q - zero_point) * scale


class FakeQuantize(nn.Module):
    """
    Elementwise rounding of activations to a recorded quantisation grid (per tensor).

    Inserted by the TFLite importer after each quantised tensor when activation quantisation
    is simulated; it acts position by position like an activation function.
    """

    def __init__(self, scale: float, zero_point: int, qmin: int, qmax: int):
        super().__init__()
        if not scale > 0:
            raise ValueError(f'FakeQuantize scale must be > 0, got {scale!r}')
        self.scale = float(scale)
        self.zero_point = int(zero_point)
        self.qmin = int(qmin)
        self.qmax = int(qmax)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fake_quantize(x, self.scale, self.zero_point, self.qmin, self.qmax)

    def extra_repr(self) -> str:
        return (f'scale={self.scale:.6g}, zero_point={self.zero_point}, '
                f'range=[{self.qmin}, {self.qmax}]')
