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
Tensor ops the engine owns: functions that models (and importers) call and the engine lowers.

Each is wrapped with ``torch.fx.wrap`` so that a traced graph keeps it as one call (which
the engine lowers as a whole) instead of tracing into its reshapes and permutes, which the
engine cannot run on tiles.
"""

import torch
from torch import fx


@fx.wrap
def depth_to_space(x: torch.Tensor, block: int) -> torch.Tensor:
    """
    Move ``block x block`` groups of channels into space, in TF's DEPTH_TO_SPACE order.

    ``x`` is (N, block * block * C, H, W); the result is (N, C, H * block, W * block) with
    ``out[n, c, h * block + i, w * block + j] = x[n, (i * block + j) * C + c, h, w]`` (TF's
    depth-column-row order; ``nn.PixelShuffle`` takes the channels in the other order,
    ``c * block * block + i * block + j``).
    """
    n, channels, height, width = x.shape
    # Under symbolic tracing the sizes are proxies; checking them would end the trace.
    if isinstance(channels, int) and (not isinstance(block, int) or block < 1
                                      or channels % (block * block)):
        raise ValueError(f'depth_to_space: {channels} channels do not split into blocks of '
                         f'{block!r}x{block!r}; pass an int block whose square divides the '
                         'channels')
    depth = channels // (block * block)
    x = x.reshape(n, block, block, depth, height, width)  # (N, i, j, C, H, W)
    x = x.permute(0, 3, 4, 1, 5, 2)  # (N, C, H, i, W, j)
    return x.reshape(n, depth, height * block, width * block)


@fx.wrap
def argmax(x: torch.Tensor, dim: int, keepdim: bool = False) -> torch.Tensor:
    """
    Return the indices torch.argmax gives, computed as the indices of ``torch.max``.

    The two give the same indices, the first of equal maxima and NaN as the maximum (both
    documented; the tests compare them). On the CPU torch's argmax over a short dimension is
    the slower of the two by far: over the 21 classes of a 480x854 score map it took 64 ms
    where the channels are strided (NCHW) and 24 ms where they are contiguous, against 15 ms
    for max in either layout (one thread of a 2-core Intel Xeon).
    """
    return x.max(dim, keepdim=keepdim).indices
