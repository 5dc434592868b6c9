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
The engine's test cases: random networks, random change sequences, the dense-equivalence check.

The networks cover every supported layer type.

The generators take a *chooser* (anything with ``pick(options)`` and ``integer(low, high)``)
so that hypothesis can drive them (and shrink failures) as easily as a seeded
``random.Random`` (:class:`SeededChooser`).
"""

from __future__ import annotations

import random
from typing import Any, Callable, Sequence

from sparse_perception.change import ChangeMap
from sparse_perception.engine.ops import depth_to_space
import torch
from torch import nn
import torch.nn.functional as F

ACTIVATION_MODULES: tuple[Callable[[], nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.SiLU, nn.Tanh,
    lambda: nn.LeakyReLU(0.1), nn.GELU, nn.ELU, lambda: nn.Hardtanh(-0.5, 2.0),
)
ACTIVATION_FUNCTIONS: tuple[Callable[[torch.Tensor], torch.Tensor], ...] = (
    F.relu, torch.relu, F.relu6, F.hardswish, F.hardsigmoid, torch.sigmoid, F.silu, torch.tanh,
    lambda x: F.leaky_relu(x, 0.2), lambda x: x.clamp(-1.0, 1.5), lambda x: x.relu(),
)


class SeededChooser:
    """A chooser backed by ``random.Random(seed)``."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)

    def pick(self, options: Sequence[Any]) -> Any:
        """Return one of ``options``."""
        return options[self.rng.randrange(len(options))]

    def integer(self, low: int, high: int) -> int:
        """Return an integer in [low, high]."""
        return self.rng.randint(low, high)


class Chain(nn.Module):
    """Blocks applied in order; each block maps one tensor to one tensor."""

    def __init__(self, blocks: Sequence[nn.Module], tail: str = 'none'):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.tail = tail

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply every block, then the optional tail."""
        for block in self.blocks:
            x = block(x)
        if self.tail == 'softmax':
            return F.softmax(x, dim=1)
        if self.tail == 'argmax':
            return x.argmax(1)
        if self.tail == 'log_softmax':
            return x.log_softmax(1)
        return x


class Residual(nn.Module):
    """``post(x + body(x))`` with a shape-preserving body."""

    def __init__(self, body: nn.Module, post: Callable | None = None):
        super().__init__()
        self.body = body
        self.post = post

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the residual block."""
        y = x + self.body(x)
        return self.post(y) if self.post is not None else y


class SqueezeExcite(nn.Module):
    """Squeeze-excitation with a selectable pooling and gating form."""

    def __init__(self, channels: int, hidden: int, style: str):
        super().__init__()
        self.style = style
        if style == 'linear':
            self.fc1, self.fc2 = nn.Linear(channels, hidden), nn.Linear(hidden, channels)
        else:
            self.fc1 = nn.Conv2d(channels, hidden, 1)
            self.fc2 = nn.Conv2d(hidden, channels, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scale every channel of ``x`` by a gate computed from its global average."""
        if self.style == 'linear':
            s = x.mean((2, 3))
            s = torch.sigmoid(self.fc2(F.relu(self.fc1(s))))
            return x * s.view(1, -1, 1, 1)
        s = self.pool(x) if self.style == 'module' else F.adaptive_avg_pool2d(x, 1)
        s = F.hardsigmoid(self.fc2(F.relu(self.fc1(s))))
        return s * x if self.style == 'functional' else x * s


class ImagePoolCat(nn.Module):
    """DeepLab-style: cat([conv(x), upsample(conv(mean(x)))]) then a 1x1 projection."""

    def __init__(self, channels: int, branch: int, out: int):
        super().__init__()
        self.local = nn.Conv2d(channels, branch, 1)
        self.pooled = nn.Conv2d(channels, branch, 1)
        self.project = nn.Conv2d(2 * branch, out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        p = F.relu(self.pooled(x.mean((2, 3), keepdim=True)))
        p = F.interpolate(p, size=x.shape[-2:], mode='bilinear', align_corners=False)
        return self.project(torch.cat([F.relu(self.local(x)), p], 1))


class TwoBranchCat(nn.Module):
    """``cat([a(x), b(x)], 1)``."""

    def __init__(self, a: nn.Module, b: nn.Module):
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply both branches and concatenate along channels."""
        return torch.cat([self.a(x), self.b(x)], dim=1)


class Lambda(nn.Module):
    """Wrap a function of one tensor (functional ops in a traced graph)."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the function."""
        return self.fn(x)


class Interpolate(nn.Module):
    """F.interpolate with fixed arguments (functional form in the traced graph)."""

    def __init__(self, **kwargs: Any):
        super().__init__()
        self.kwargs = kwargs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Resample."""
        return F.interpolate(x, **self.kwargs)


class Pad(nn.Module):
    """F.pad with fixed arguments."""

    def __init__(self, pad: tuple, mode: str, value: float = 0.0):
        super().__init__()
        self.pad, self.mode, self.value = pad, mode, value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pad."""
        if self.mode == 'constant':
            return F.pad(x, self.pad, mode='constant', value=self.value)
        return F.pad(x, self.pad, mode=self.mode)


BLOCK_KINDS = ('conv', 'conv', 'conv', 'depthwise', 'conv_bn_act', 'conv_transpose', 'maxpool',
               'avgpool', 'resample', 'pad', 'residual', 'se', 'image_pool', 'cat', 'act',
               'affine', 'batchnorm')
# Kinds added later are drawn only where asked for (``kinds=ALL_BLOCK_KINDS``): seeded tests
# keep drawing the networks their seeds were chosen for (the device mode runs no pixel
# shuffle, being a transposed convolution).
ALL_BLOCK_KINDS = BLOCK_KINDS + ('pixel_shuffle',)


def random_block(c: Any, channels: int,
                 kinds: Sequence[str] = BLOCK_KINDS) -> tuple[nn.Module, str]:
    """Draw one block of ``kinds`` for an input with ``channels`` channels: (block, kind)."""
    kind = c.pick(kinds)
    k = c.pick((1, 3, 5, 7))
    s = c.pick((1, 1, 2))
    d = c.pick((1, 1, 2))
    cout = c.integer(2, 8)
    if kind == 'conv':
        groups = c.pick((1, 1, 2)) if channels % 2 == 0 and cout % 2 == 0 else 1
        padding: Any = c.pick((0, (k - 1) * d // 2, 1, 'same' if s == 1 else 0))
        mode = c.pick(('zeros', 'zeros', 'reflect', 'replicate', 'circular'))
        if mode != 'zeros' and padding == 'same':
            padding = (k - 1) * d // 2
        return nn.Conv2d(channels, cout, k, s, padding, d, groups, bias=c.pick((True, False)),
                         padding_mode=mode), kind
    if kind == 'depthwise':
        conv = nn.Conv2d(channels, channels, c.pick((3, 5)), s, c.pick((1, 2)), d, channels)
        return conv, kind
    if kind == 'conv_bn_act':
        return nn.Sequential(nn.Conv2d(channels, cout, k, 1, (k - 1) // 2, bias=False),
                             nn.BatchNorm2d(cout), c.pick(ACTIVATION_MODULES)()), kind
    if kind == 'conv_transpose':
        k = c.pick((1, 2, 3, 4))
        s = c.pick((1, 2))
        p = c.integer(0, (k - 1) // 2)
        op = c.integer(0, max(0, min(s, d) - 1))
        groups = c.pick((1, 2)) if channels % 2 == 0 and cout % 2 == 0 else 1
        return nn.ConvTranspose2d(channels, cout, k, s, p, op, groups, c.pick((True, False)),
                                  d), kind
    if kind == 'maxpool':
        k = c.pick((2, 3))
        return nn.MaxPool2d(k, c.pick((1, 2, None)), c.integer(0, k // 2), c.pick((1, 1, 2)),
                            ceil_mode=c.pick((False, True))), kind
    if kind == 'avgpool':
        k = c.pick((2, 3))
        return nn.AvgPool2d(k, c.pick((1, 2, None)), c.integer(0, k // 2),
                            ceil_mode=c.pick((False, True)),
                            count_include_pad=c.pick((True, False)),
                            divisor_override=c.pick((None, None, 5))), kind
    if kind == 'resample':
        mode = c.pick(('nearest', 'bilinear', 'bicubic', 'nearest-exact', 'area'))
        corners = c.pick((None, True, False)) if mode in ('bilinear', 'bicubic') else None
        if c.pick((True, False)):
            sf = c.pick((2.0, 0.5, 1.5, 3.0))
            return Interpolate(scale_factor=sf, mode=mode, align_corners=corners), kind
        size = (c.integer(3, 24), c.integer(3, 24))
        if c.pick((True, False)):
            return nn.Upsample(size=size, mode=mode, align_corners=corners), kind
        return Interpolate(size=size, mode=mode, align_corners=corners), kind
    if kind == 'pad':
        pad = (c.integer(0, 2), c.integer(0, 2), c.integer(0, 2), c.integer(0, 2))
        mode = c.pick(('constant', 'reflect', 'replicate', 'circular', 'zero_module',
                       'const_module'))
        if mode == 'zero_module':
            return nn.ZeroPad2d(pad), kind
        if mode == 'const_module':
            return nn.ConstantPad2d(pad, 0.5), kind
        return Pad(pad, mode, c.pick((0.0, -1.0))), kind
    if kind == 'residual':
        body = nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1), nn.BatchNorm2d(channels))
        return Residual(body, c.pick((None, F.relu, torch.sigmoid))), kind
    if kind == 'se':
        return SqueezeExcite(channels, max(2, channels // 2),
                             c.pick(('module', 'functional', 'linear', 'mean'))), kind
    if kind == 'image_pool':
        return ImagePoolCat(channels, c.integer(2, 4), cout), kind
    if kind == 'cat':
        a = nn.Conv2d(channels, c.integer(1, 4), 3, 1, 1)
        b = nn.Sequential(nn.Conv2d(channels, c.integer(1, 4), 1), c.pick(ACTIVATION_MODULES)())
        return TwoBranchCat(a, b), kind
    if kind == 'act':
        if c.pick((True, False)):
            return c.pick(ACTIVATION_MODULES)(), kind
        return Lambda(c.pick(ACTIVATION_FUNCTIONS)), kind
    if kind == 'pixel_shuffle':
        # A convolution makes the block * block * C channels a depth-to-space needs; the
        # shuffle comes in PyTorch's channel order (module or function) or TF's.
        block = c.pick((2, 3))
        conv = nn.Conv2d(channels, c.integer(1, 3) * block * block, c.pick((1, 3)),
                         padding='same')
        form = c.pick(('module', 'function', 'tf'))
        if form == 'module':
            return nn.Sequential(conv, nn.PixelShuffle(block)), kind
        if form == 'function':
            return nn.Sequential(conv, Lambda(lambda x: F.pixel_shuffle(x, block))), kind
        # Called by its global name: that is what torch.fx's autowrap keeps as one call.
        return nn.Sequential(conv, Lambda(lambda x: depth_to_space(x, block))), kind
    if kind == 'affine':
        op = c.pick(('mul', 'add', 'sub', 'rsub', 'div', 'neg'))
        fn = {'mul': lambda x: x * 0.5, 'add': lambda x: x + 1.0, 'sub': lambda x: x - 0.25,
              'rsub': lambda x: 1.0 - x, 'div': lambda x: x / 2.0, 'neg': lambda x: -x}[op]
        return Lambda(fn), kind
    bn = nn.BatchNorm2d(channels)
    return bn, kind


def random_network(c: Any, in_channels: int, height: int, width: int, blocks: int,
                   block_kinds: Sequence[str] = BLOCK_KINDS
                   ) -> tuple[nn.Module, list[str]] | None:
    """
    Draw a network of ``blocks`` blocks of ``block_kinds`` plus an optional softmax/argmax tail.

    Every intermediate tensor has at least 2x2 positions. Returns (model in eval mode, kinds),
    or None when the drawn shapes do not work out.
    """
    layers, kinds = [], []
    x = torch.zeros(1, in_channels, height, width)
    for _ in range(blocks):
        block, kind = random_block(c, x.shape[1], block_kinds)
        randomize(block, c.integer(0, 10 ** 6))
        block.eval()
        try:
            with torch.no_grad():
                y = block(x)
        except (RuntimeError, ValueError):
            return None
        if y.dim() != 4 or y.shape[-1] < 2 or y.shape[-2] < 2 or y.shape[-1] * y.shape[-2] > 4096:
            return None
        layers.append(block)
        kinds.append(kind)
        x = y
    tail = c.pick(('none', 'none', 'none', 'softmax', 'argmax', 'log_softmax'))
    kinds.append('tail:' + tail)
    return Chain(layers, tail).eval(), kinds


def randomize(module: nn.Module, seed: int) -> nn.Module:
    """Give every parameter and BatchNorm statistic deterministic random values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.5 if p.dim() > 1 else 0.2))
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return module


def change_sequence(c: Any, x0: torch.Tensor, frames: int) -> list[tuple[torch.Tensor, Any]]:
    """
    Draw ``frames`` (frame, tiles) pairs after ``x0``.

    Random tile sizes and patterns, including frames without change, with every tile changed,
    and with None (dense).

    A frame's pixels outside its tiles are also perturbed: the engine must ignore them.
    """
    _, ch, h, w = x0.shape
    out = []
    prev = x0
    for _ in range(frames):
        tile = c.pick((1, 2, 3, 4, 5, 8, 16))
        th, tw = -(-h // tile), -(-w // tile)
        pattern = c.pick(('random', 'random', 'block', 'none', 'all', 'dense'))
        g = torch.Generator().manual_seed(c.integer(0, 10 ** 6))
        if pattern == 'random':
            tiles = torch.rand(th, tw, generator=g) < c.pick((0.05, 0.2, 0.5))
        elif pattern == 'block':
            tiles = torch.zeros(th, tw, dtype=torch.bool)
            y0, x0_ = c.integer(0, th - 1), c.integer(0, tw - 1)
            tiles[y0:y0 + c.integer(1, 3), x0_:x0_ + c.integer(1, 3)] = True
        elif pattern == 'none':
            tiles = torch.zeros(th, tw, dtype=torch.bool)
        else:
            tiles = torch.ones(th, tw, dtype=torch.bool)
        frame = prev + torch.randn(prev.shape, generator=g) * c.pick((0.01, 0.3, 1.0))
        if pattern == 'dense':
            out.append((frame, None))
        elif c.pick((True, False)):  # a ChangeMap carries its tile size
            out.append((frame, ChangeMap(tiles, False, float(tiles.float().mean()), 0.0, tile,
                                         0)))
        else:  # a plain map is read with the smallest tile size that fits
            out.append((frame, tiles))
        prev = effective_inputs(prev, out[-1:])[0]
    return out


def effective_inputs(x0: torch.Tensor, sequence: list) -> list[torch.Tensor]:
    """Return the input the engine sees after each frame (new pixels inside the tiles)."""
    prev = x0
    out = []
    _, _, h, w = x0.shape
    for frame, tiles in sequence:
        if tiles is None:
            prev = frame
        else:
            if isinstance(tiles, ChangeMap):
                tile, tiles = tiles.tile_size, tiles.tiles
            else:
                tile = max(-(-h // tiles.shape[0]), -(-w // tiles.shape[1]))
            mask = tiles.repeat_interleave(tile, 0).repeat_interleave(tile, 1)[:h, :w]
            prev = torch.where(mask.to(frame.device), frame, prev)
        out.append(prev)
    return out


def max_relative_difference(a: Any, b: Any) -> float:
    """Max abs difference of (nested) outputs over the dense output's scale."""
    if isinstance(a, (tuple, list)):
        return max(max_relative_difference(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return max(max_relative_difference(a[k], b[k]) for k in a)
    a, b = a.float(), b.float()
    scale = float(b.abs().max()) if b.numel() else 0.0
    diff = float((a - b).abs().max()) if b.numel() else 0.0
    return diff / max(scale, 1e-6)
