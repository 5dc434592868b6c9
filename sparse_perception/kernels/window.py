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
Geometry shared by the windowed kernels (depthwise, dense KxK convolution, pooling).

A windowed op reads, for output position (oy, ox) of image b, the taps
``(oy * sy - top + ky * dy, ox * sx - left + kx * dx)`` of image b of its input; taps
outside the input are padding. The kernels run over *tiles* of ``TY x TX`` output positions:

- patches: a batch of gathered tiles with their halo, each its own image with padding 0 and
  one output tile (the engine's ``window`` primitive: ``(t, C, ph, pw)`` -> ``(t, C', T, T)``);
- cache: listed tiles of the single output map, reading the NHWC input cache directly
  (the sync-free path).
"""

from __future__ import annotations

from dataclasses import dataclass

from sparse_perception.kernels.runtime import block, KernelError, next_pow2
import torch


@dataclass(frozen=True)
class Geometry:
    """Where a windowed op reads: sizes, kernel, stride, dilation, padding (top, left)."""

    in_hw: tuple[int, int]
    out_hw: tuple[int, int]
    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    pads: tuple[int, int] = (0, 0)  # top, left

    def args(self) -> tuple:
        """Return the kernels' run-time geometry arguments."""
        return (self.in_hw[0], self.in_hw[1], self.out_hw[0], self.out_hw[1],
                self.stride[0], self.stride[1], self.dilation[0], self.dilation[1],
                self.pads[0], self.pads[1])


def patch_geometry(patches: torch.Tensor, kernel, stride, dilation) -> tuple[Geometry, int]:
    """
    Geometry of a batch of patches ``(t, C, ph, pw)`` with padding 0, and the tile edge T.

    Raises :class:`KernelError` unless the patches yield square T x T outputs.
    """
    _, _, ph, pw = patches.shape
    ho = (ph - (kernel[0] - 1) * dilation[0] - 1) // stride[0] + 1
    wo = (pw - (kernel[1] - 1) * dilation[1] - 1) // stride[1] + 1
    if ho < 1 or wo < 1:
        raise KernelError(f'patches {ph}x{pw} are smaller than the window of kernel {kernel} '
                          f'dilation {dilation}')
    return Geometry((ph, pw), (ho, wo), tuple(kernel), tuple(stride), tuple(dilation)), \
        max(ho, wo)


def patch_tile(out_hw: tuple[int, int]) -> tuple[int, int]:
    """Kernel tile covering one patch's output: powers of two, at least 16 positions."""
    ty, tx = next_pow2(out_hw[0]), next_pow2(out_hw[1])
    while ty * tx < 16:
        ty *= 2
    return ty, tx


def channels_last_rows(patches: torch.Tensor) -> torch.Tensor:
    """View ``(t, C, ph, pw)`` channels_last patches as rows ``(t * ph * pw, C)``."""
    t, c, ph, pw = patches.shape
    rows = patches.permute(0, 2, 3, 1)
    if not rows.is_contiguous():
        rows = rows.contiguous()
    return rows.reshape(t * ph * pw, c)


def rows_as_nchw(rows: torch.Tensor, t: int, out_hw: tuple[int, int]) -> torch.Tensor:
    """View rows ``(t * Ho * Wo, C)`` as a channels_last ``(t, C, Ho, Wo)`` tensor."""
    return rows.view(t, out_hw[0], out_hw[1], rows.shape[1]).permute(0, 3, 1, 2)


def channel_block(channels: int) -> int:
    """Channel block of the per-channel (depthwise, pooling) kernels."""
    return block(channels, 16, 32)


def listed_positions(tiles: torch.Tensor, count: torch.Tensor | None, out_hw: tuple[int, int],
                     tile: tuple[int, int], cand: torch.Tensor | None = None) -> torch.Tensor:
    """
    Return the positions a launch over listed tiles writes, as the references compute them.

    ``tiles`` int32 (capacity,) ids of ``tile[0] x tile[1]`` tiles of an ``out_hw`` map
    (row-major), the first ``count[0]`` used (all without ``count``); ``cand`` uint8 (P,)
    keeps the positions it marks. Returns int64 (n,) positions ``y * W + x``, sorted, unique.
    """
    ho, wo = out_hw
    n = int(count[0]) if count is not None else tiles.numel()
    ids = tiles[:n].long()
    ntx = -(-wo // tile[1])
    ty, tx = ids // ntx, ids % ntx
    device = tiles.device
    oy = ty[:, None] * tile[0] + torch.arange(tile[0], device=device).repeat_interleave(tile[1])
    ox = tx[:, None] * tile[1] + torch.arange(tile[1], device=device).repeat(tile[0])
    inside = (oy < ho) & (ox < wo)
    pos = (oy * wo + ox)[inside].unique()
    if cand is not None:
        pos = pos[cand.index_select(0, pos) != 0]
    return pos
