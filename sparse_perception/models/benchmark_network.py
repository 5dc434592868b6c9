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
The engine's benchmark network: a DeepLabV3-MobileNetV2 with deterministic random weights.

:func:`mobilenet_v2_deeplabv3` is a MobileNetV2 backbone (output stride 16: the last two
stages dilated instead of strided) with the DeepLabV3 head of the Coral/TF-slim model: a 1x1
ASPP branch, an image-pooling branch, a 1x1 projection, the classifier and a bilinear upsample
to the input size. Its weights are random but deterministic (a seed); call
:func:`calibrate_batchnorm` on a few real frames so that activations have realistic
statistics, since a random network's outputs mean nothing but its activations should still
look like a trained network's (zero mean, unit variance before each activation).

It shares its stage table with :mod:`sparse_perception.models.architectures` but is not that
architecture: it keeps its BatchNorms unfolded (to calibrate them, and so that the engine's
BatchNorm folding runs), and it is the network the committed engine benchmarks were measured
on (bench/results/engine_cpu.md), so its layout stays as it is.
"""

from __future__ import annotations

from typing import Iterable

from sparse_perception.models.architectures import MOBILENET_V2_BLOCKS
import torch
from torch import nn
import torch.nn.functional as F


class ConvBNAct(nn.Sequential):
    """Convolution, BatchNorm and optional ReLU6 (the MobileNetV2 building block)."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1,
                 dilation: int = 1, groups: int = 1, act: bool = True):
        layers = [nn.Conv2d(cin, cout, kernel, stride, dilation * (kernel - 1) // 2, dilation,
                            groups, bias=False), nn.BatchNorm2d(cout)]
        if act:
            layers.append(nn.ReLU6(inplace=True))
        super().__init__(*layers)


class InvertedResidualBN(nn.Module):
    """MobileNetV2 block: 1x1 expand, depthwise 3x3, 1x1 project, residual when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int, dilation: int = 1):
        super().__init__()
        hidden = cin * expansion
        self.use_residual = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(ConvBNAct(cin, hidden, 1))
        layers += [ConvBNAct(hidden, hidden, 3, stride, dilation, hidden),
                   ConvBNAct(hidden, cout, 1, act=False)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        if self.use_residual:
            return x + self.conv(x)
        return self.conv(x)


class DeepLabV3MobileNetV2BN(nn.Module):
    """MobileNetV2 (output stride 16) with the DeepLabV3 image-pooling head, BatchNorm kept."""

    def __init__(self, num_classes: int = 21, width: float = 1.0, output_stride: int = 16,
                 head_channels: int = 256, argmax: bool = False):
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise ValueError(f'output_stride={output_stride}; expected 8, 16 or 32')

        def ch(c: int) -> int:
            return max(8, int(c * width + 4) // 8 * 8)

        layers: list[nn.Module] = [ConvBNAct(3, ch(32), 3, 2)]
        cin, stride, dilation = ch(32), 2, 1
        for t, c, n, s in MOBILENET_V2_BLOCKS:
            block_stride = s
            block_dilation = dilation
            if stride * s > output_stride:  # keep the resolution, dilate instead
                dilation *= s
                block_stride = 1
            else:
                stride *= s
            for i in range(n):
                layers.append(InvertedResidualBN(cin, ch(c), block_stride if i == 0 else 1, t,
                                                 block_dilation if i == 0 else dilation))
                cin = ch(c)
        self.features = nn.Sequential(*layers)
        self.aspp = ConvBNAct(cin, head_channels, 1)
        self.image_pool = nn.AdaptiveAvgPool2d(1)
        self.image_conv = ConvBNAct(cin, head_channels, 1)
        self.project = ConvBNAct(2 * head_channels, head_channels, 1)
        self.classifier = nn.Conv2d(head_channels, num_classes, 1)
        self.argmax = argmax

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return (1, classes, H, W) logits, or the (1, H, W) class map with argmax=True."""
        f = self.features(x)
        pooled = self.image_conv(self.image_pool(f))
        pooled = F.interpolate(pooled, size=f.shape[-2:], mode='bilinear', align_corners=False)
        y = self.classifier(self.project(torch.cat([self.aspp(f), pooled], 1)))
        y = F.interpolate(y, size=x.shape[-2:], mode='bilinear', align_corners=False)
        return y.argmax(1) if self.argmax else y


def mobilenet_v2_deeplabv3(num_classes: int = 21, width: float = 1.0, output_stride: int = 16,
                           seed: int = 0, argmax: bool = False) -> DeepLabV3MobileNetV2BN:
    """Build the benchmark segmentation network with deterministic weights, in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    model = DeepLabV3MobileNetV2BN(num_classes, width, output_stride, argmax=argmax)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            fan_in = module.in_channels // module.groups * module.kernel_size[0] * \
                module.kernel_size[1]
            with torch.no_grad():
                module.weight.normal_(0.0, (2.0 / fan_in) ** 0.5, generator=generator)
                if module.bias is not None:
                    module.bias.uniform_(-0.1, 0.1, generator=generator)
        elif isinstance(module, nn.BatchNorm2d):
            with torch.no_grad():
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.uniform_(-0.2, 0.2, generator=generator)
    return model.eval()


def calibrate_batchnorm(model: nn.Module, frames: Iterable[torch.Tensor]) -> nn.Module:
    """
    Set every BatchNorm's running statistics to those of ``frames``.

    The frames are one batch, so at least two ``(1, C, H, W)`` frames of one size.

    Deterministic for the same inputs. Returns the model in eval mode.
    """
    batch = torch.cat(list(frames))
    if batch.shape[0] < 2:
        raise ValueError('calibrate_batchnorm needs at least two frames')
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    single: list[nn.Module] = []  # BatchNorms that see one position per frame

    def spot(module: nn.Module, args: tuple) -> None:
        if args[0].dim() == 4 and args[0].shape[-1] * args[0].shape[-2] == 1:
            single.append(module)

    hooks = [m.register_forward_pre_hook(spot) for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the batch
    model.train()
    try:
        with torch.no_grad():
            model(batch)
    finally:
        for h in hooks:
            h.remove()
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    # After global pooling a BatchNorm sees one value per channel and frame: a variance over
    # a handful of frames is meaningless and can amplify rounding noise hundreds of times
    # (a trained network estimates it over a whole data set). Keep unit statistics there.
    for m in single:
        m.reset_running_stats()
    return model.eval()
