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
Small networks and frame sequences for the kernels' end-to-end tests (pure and gpu tiers).

Between them the networks cover every layer kind the device mode runs: 1x1, depthwise and
grouped KxK convolutions (stride 1 and 2, dilation), folded BatchNorm, activations, residual
adds, squeeze-excitation (global pooling, broadcast multiply), max and average pooling
(ceil mode, count_include_pad), padding (reflect, constant), concatenation, nearest and
bilinear resampling, depth-to-space in both channel orders, transposed convolution, and
softmax / argmax tails.
"""

from __future__ import annotations

from engine_cases import randomize
from sparse_perception.change import ChangeMap
from sparse_perception.engine.ops import depth_to_space
import torch
from torch import nn
import torch.nn.functional as F


class MobileBlock(nn.Module):
    """Stem, inverted residual, squeeze-excitation, pooling, upsampling, softmax."""

    def __init__(self, tail: str = 'softmax'):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 12, 3, 2, 1, bias=False), nn.BatchNorm2d(12),
                                  nn.ReLU6())
        self.expand = nn.Sequential(nn.Conv2d(12, 36, 1, bias=False), nn.BatchNorm2d(36),
                                    nn.Hardswish())
        self.depthwise = nn.Sequential(nn.Conv2d(36, 36, 3, 1, 2, 2, groups=36, bias=False),
                                       nn.BatchNorm2d(36), nn.ReLU())
        self.project = nn.Sequential(nn.Conv2d(36, 12, 1, bias=False), nn.BatchNorm2d(12))
        self.fc1, self.fc2 = nn.Conv2d(12, 5, 1), nn.Conv2d(5, 12, 1)
        self.head = nn.Conv2d(12, 7, 3, padding=1)
        self.tail = tail

    def forward(self, x):
        """Apply the network."""
        y = self.stem(x)
        y = y + self.project(self.depthwise(self.expand(y)))
        gate = F.hardsigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(y, 1)))))
        y = F.max_pool2d(y * gate, 2, ceil_mode=True)
        y = F.interpolate(self.head(y), size=x.shape[-2:], mode='bilinear',
                          align_corners=False)
        if self.tail == 'softmax':
            return y.softmax(1)
        return y.argmax(1) if self.tail == 'argmax' else y


class Branches(nn.Module):
    """Reflect padding, grouped and strided convolutions, average pooling, cat, nearest."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(4, 6, 3, padding=1, padding_mode='reflect')
        self.b = nn.Conv2d(4, 6, (3, 1), stride=2, padding=(1, 0), groups=2)
        self.c = nn.Conv2d(12, 5, 1)
        self.pool = nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False)

    def forward(self, x):
        """Apply the network."""
        a = torch.sigmoid(self.a(x))
        b = F.interpolate(F.leaky_relu(self.b(x), 0.1), size=a.shape[-2:], mode='nearest')
        y = self.c(F.pad(torch.cat([a, b], 1), (1, 0, 0, 2), value=-0.5))
        return self.pool(y) * 2.0 - 1.0


class Upsampler(nn.Module):
    """Depth-to-space in both channel orders and a transposed convolution, with epilogues."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, 2, 1)
        self.expand = nn.Conv2d(16, 32, 1)
        self.side = nn.Conv2d(16, 32, 3, padding=1)
        self.norm = nn.BatchNorm2d(8)
        self.up = nn.ConvTranspose2d(8, 6, 3, 2, 1, output_padding=1)
        self.up_norm = nn.BatchNorm2d(6)
        self.head = nn.Conv2d(6, 4, 3, padding=1)

    def forward(self, x):
        """Apply the network."""
        y = F.relu(self.stem(x))  # (16, H / 2, W / 2)
        z = F.hardswish(self.norm(F.pixel_shuffle(self.expand(y), 2)))  # (8, H, W)
        z = z + depth_to_space(self.side(y), 2)  # TF's channel order
        return self.head(F.relu6(self.up_norm(self.up(z))))  # (4, 2H, 2W)


def build(name: str, seed: int = 0) -> nn.Module:
    """Return a named test network with deterministic random weights, in eval mode."""
    model = {'mobile': MobileBlock, 'mobile_argmax': lambda: MobileBlock('argmax'),
             'mobile_logits': lambda: MobileBlock('none'), 'branches': Branches,
             'upsampler': Upsampler}[name]()
    return randomize(model, seed).eval()


def frames(channels: int, height: int, width: int, count: int, seed: int = 0,
           tile: int = 4) -> list:
    """
    Return ``[(frame, tiles)]``: a dense first frame, then frames changing a few tiles.

    Includes a frame without change and one with every tile changed; pixels outside the
    tiles also move (the engine must ignore them). Tiles come as ChangeMaps.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, channels, height, width, generator=g)
    th, tw = -(-height // tile), -(-width // tile)
    out = [(x, None)]
    for i in range(count):
        x = x + torch.randn(x.shape, generator=g) * 0.3
        if i == 1:
            tiles = torch.zeros(th, tw, dtype=torch.bool)
        elif i == count - 1:
            tiles = torch.ones(th, tw, dtype=torch.bool)
        else:
            tiles = torch.rand(th, tw, generator=g) < 0.15
        out.append((x, ChangeMap(tiles, False, float(tiles.float().mean()), 0.0, tile, 0)))
    return out


def tiny_segmenter() -> nn.Module:
    """Return a small logits network (``module:function`` for the GPU bench dry run)."""
    return build('mobile_logits', seed=3)
