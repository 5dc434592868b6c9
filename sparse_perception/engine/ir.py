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
The engine's program: cached values and the layers that compute them, in execution order.

A layer has a *core* (a convolution, pooling, resampling, padding, concatenation, global
pooling, or the identity) followed by an *epilogue*: a chain of pointwise
:class:`~sparse_perception.kernels.steps.Step` (folded BatchNorm is already in the weights;
activations, per-channel affine maps, scalar arithmetic, and binary ops with another cached
tensor such as a residual add). Every layer's output is one cached tensor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import enum
from typing import NamedTuple, Union

from sparse_perception.kernels.steps import Step
import torch
from torch import fx


class Kind(str, enum.Enum):
    """What a layer's core computes; compares, hashes and prints as its plain name."""

    INPUT = 'input'
    CONV = 'conv'
    CONV_TRANSPOSE = 'conv_transpose'
    POOL = 'pool'
    RESAMPLE = 'resample'
    PAD = 'pad'
    DEPTH_TO_SPACE = 'depth_to_space'
    CAT = 'cat'
    GAP = 'gap'
    POINTWISE = 'pointwise'
    POSITIONWISE = 'positionwise'

    # Statistics, thresholds keyed by kind and messages see the name, on every Python
    # version (enum.StrEnum would do this from 3.11 on).
    __str__ = str.__str__
    __format__ = str.__format__


class Padding(NamedTuple):
    """
    Rows and columns added around a window's input before it slides, as torch adds them.

    Zeros for convolutions and average pooling (whose divisor may leave them out), ``-inf``
    for max pooling. Uneven for 'same' padding of an even kernel; a torch pooling's is even.
    """

    top: int
    bottom: int
    left: int
    right: int

    @classmethod
    def even(cls, rows: int, cols: int) -> 'Padding':
        """Return torch's ``padding=(rows, cols)``: as much on both sides."""
        return cls(rows, rows, cols, cols)

    def torch_pair(self) -> tuple[int, int]:
        """Return the ``(rows, cols)`` torch's pooling takes (it must be even)."""
        if self.top != self.bottom or self.left != self.right:
            raise ValueError(f'{self} is uneven; torch takes even padding only')
        return self.top, self.left


NO_PADDING = Padding(0, 0, 0, 0)


@dataclass
class ConvAttrs:
    """A convolution's core (a Linear on a pooled vector is a 1x1 one)."""

    weight: torch.Tensor  # (Cout, Cin / groups, kh, kw), batch norm folded in
    bias: torch.Tensor | None  # (Cout,)
    stride: tuple[int, int]
    padding: Padding
    dilation: tuple[int, int]
    groups: int
    kernel: tuple[int, int]


@dataclass
class ConvTransposeAttrs:
    """A transposed convolution's core, in torch's terms."""

    weight: torch.Tensor  # (Cin, Cout / groups, kh, kw), batch norm folded in
    bias: torch.Tensor | None  # (Cout,)
    stride: tuple[int, int]
    crop: tuple[int, int]  # rows, columns cropped from each side of the full output
    output_padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    kernel: tuple[int, int]


@dataclass(frozen=True)
class PoolAttrs:
    """A max or average pooling, in torch's terms."""

    pool: str  # 'max' or 'avg'
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: Padding  # even
    dilation: tuple[int, int]
    ceil_mode: bool
    count_include_pad: bool
    divisor_override: int | None


@dataclass(frozen=True)
class ResampleAttrs:
    """Separable resampling: each output row and column a weighted sum of input ones."""

    ah: torch.Tensor  # (Ho, Hi) float64
    aw: torch.Tensor  # (Wo, Wi) float64


@dataclass(frozen=True)
class PadAttrs:
    """Padding as an index copy: where each output row and column reads from."""

    rows: torch.Tensor  # int64 (Ho,): source row of each output row, -1 for the constant
    cols: torch.Tensor  # int64 (Wo,): source column of each output column, -1 likewise
    value: float  # the constant
    mode: str  # torch's padding mode


@dataclass(frozen=True)
class DepthToSpaceAttrs:
    """Depth-to-space as an index copy (see canonical.py)."""

    block: int
    order: str  # the channel order of a block: 'torch' (pixel shuffle) or 'tf'


@dataclass(frozen=True)
class PositionwiseAttrs:
    """A function over the channels of each position."""

    fn: str  # 'softmax', 'log_softmax' or 'argmax'
    keepdim: bool  # argmax keeps the channel dim


# What a layer's core needs besides its inputs; None for input, cat, gap and pointwise.
Attrs = Union[ConvAttrs, ConvTransposeAttrs, PoolAttrs, ResampleAttrs, PadAttrs,
              DepthToSpaceAttrs, PositionwiseAttrs]


@dataclass
class Value:
    """A tensor of the program: batch 1, ``channels x height x width``, one cache each."""

    index: int
    name: str
    channels: int
    height: int
    width: int
    dtype: torch.dtype
    # How the model sees it: 'nchw' (1, C, H, W); 'nc' (1, C) for a squeezed global vector;
    # 'nhw' (1, H, W) for an argmax without keepdim.
    view: str = 'nchw'

    @property
    def positions(self) -> int:
        """Return H * W, the number of data rows of the cache."""
        return self.height * self.width


@dataclass
class Layer:
    """A core op plus its epilogue, producing one cached value."""

    name: str  # module path of the core (or fx node name)
    names: tuple[str, ...]  # every fused node (module paths and fx names), for overrides
    kind: Kind
    inputs: list[int]  # value ids read by the core
    output: int  # value id written
    attrs: Attrs | None = None
    epilogue: list[Step] = field(default_factory=list)
    # fx position of the last fused node: the layers run in this order. The padding layer of
    # a padded convolution shares its convolution's position and is added just before it;
    # the stable sort keeps it there.
    order: int = 0

    def operands(self) -> list[int]:
        """Return every value id the layer reads, core inputs and epilogue ones."""
        return self.inputs + [s.operand for s in self.epilogue if s.operand is not None]


@dataclass
class Program:
    """The lowered model for one input shape."""

    values: list[Value]
    layers: list[Layer]
    input_id: int  # value id of the model input
    tail: fx.GraphModule  # frontier tensors -> the model's output structure
    frontier: list[int]  # value ids fed to ``tail``, in its placeholder order
    tail_is_dense: bool  # True when the tail holds ops (not just the output structure)
    tail_ops: tuple[str, ...]  # names of the ops run densely in the tail
    tail_mutates: bool = False  # the tail changes a tensor in place: feed it copies


def macs_per_position(layer: Layer, values: list[Value]) -> float:
    """Multiply-accumulates per output position of a layer's core (0 for data movement)."""
    out = values[layer.output]
    if layer.kind == Kind.CONV:
        w = layer.attrs.weight
        return float(w.shape[1] * w.shape[2] * w.shape[3] * out.channels)
    if layer.kind == Kind.CONV_TRANSPOSE:  # every input position feeds cout/g*kh*kw outputs
        w = layer.attrs.weight
        src = values[layer.inputs[0]]
        total = src.positions * w.shape[0] * w.shape[1] * w.shape[2] * w.shape[3]
        return total / out.positions
    return 0.0
