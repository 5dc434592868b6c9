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
The package's own network architectures, written with stock torch layers, any input size.

:class:`DeepLabV3MobileNetV2` is the DeepLabV3 (MobileNetV2 backbone, output stride 16, image
pooling + 1x1 ASPP) that the Coral PASCAL VOC models were exported from, with batch norm folded
into the convolutions as in the exported files. :func:`deeplab_from_tflite` moves the weights
of an imported TFLite DeepLab into it, which makes the pretrained network fully convolutional
(the TFLite graph is fixed at 513x513).

Every architecture exposes ``trunk`` (input -> tuple of feature maps, run incrementally by the
engine) and ``tail`` (feature maps -> outputs, run densely), like an imported TFLite model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from sparse_perception.engine import ops
import torch
from torch import fx, nn
import torch.nn.functional as F

# MobileNetV2 inverted residual settings: (expansion t, channels c, repeats n, stride s).
MOBILENET_V2_BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                       (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


@dataclass(frozen=True)
class DeepLabConfig:
    """Hyper-parameters of :class:`DeepLabV3MobileNetV2` (what a checkpoint records)."""

    num_classes: int = 21
    depth_multiplier: float = 1.0  # MobileNetV2 width; channels are int(c * multiplier)
    output_stride: int = 16  # 8, 16 or 32; strides beyond it become dilations
    aspp_channels: int = 256

    def __post_init__(self):
        if self.output_stride not in (8, 16, 32):
            raise ValueError(f'output_stride must be 8, 16 or 32, got {self.output_stride!r}')
        if not self.depth_multiplier > 0:
            raise ValueError(f'depth_multiplier must be > 0, got {self.depth_multiplier!r}')
        if self.num_classes < 1:
            raise ValueError(f'num_classes must be >= 1, got {self.num_classes!r}')


def _conv(cin, cout, kernel=1, stride=1, dilation=1, groups=1, activation=nn.ReLU6):
    layers = [nn.Conv2d(cin, cout, kernel, stride, padding=(kernel - 1) // 2 * dilation,
                        dilation=dilation, groups=groups, bias=True)]
    if activation is not None:
        layers.append(activation())
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 projection, skip if shapes match."""

    def __init__(self, cin: int, cout: int, expansion: int, stride: int, dilation: int):
        super().__init__()
        hidden = cin * expansion
        self.use_skip = stride == 1 and cin == cout
        self.expand = _conv(cin, hidden) if expansion != 1 else None
        self.depthwise = _conv(hidden, hidden, 3, stride, dilation, groups=hidden)
        self.project = _conv(hidden, cout, activation=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(y))
        return x + y if self.use_skip else y


class DeepLabTrunk(nn.Module):
    """MobileNetV2 features, the DeepLabV3 head and the upsampling to the input size."""

    def __init__(self, config: DeepLabConfig):
        super().__init__()
        multiplier = config.depth_multiplier
        first = int(32 * multiplier)
        self.stem = _conv(3, first, 3, 2)
        blocks = []
        current_stride, rate, channels = 2, 1, first
        for expansion, c, repeats, stride in MOBILENET_V2_BLOCKS:
            out = int(c * multiplier)
            for i in range(repeats):
                layer_stride, layer_rate = (stride, rate) if i == 0 else (1, rate)
                if i == 0 and stride > 1 and current_stride >= config.output_stride:
                    layer_stride, rate = 1, rate * stride  # beyond the output stride: dilate
                elif i == 0:
                    current_stride *= stride
                blocks.append(InvertedResidual(channels, out, expansion, layer_stride,
                                               layer_rate))
                channels = out
        self.blocks = nn.Sequential(*blocks)
        self.aspp0 = _conv(channels, config.aspp_channels, activation=nn.ReLU)
        self.image_pooling = _conv(channels, config.aspp_channels, activation=nn.ReLU)
        self.projection = _conv(2 * config.aspp_channels, config.aspp_channels,
                                activation=nn.ReLU)
        self.logits = _conv(config.aspp_channels, config.num_classes, activation=None)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        features = self.blocks(self.stem(x))
        branch = self.aspp0(features)
        # Image pooling: a global mean, a 1x1 conv, and back to the feature map's size (from
        # 1x1 with align_corners this is a broadcast, as in the exported graph).
        pooled = self.image_pooling(torch.mean(features, dim=(2, 3), keepdim=True))
        pooled = F.interpolate(pooled, size=features.shape[-2:], mode='bilinear',
                               align_corners=True)
        # Concatenation order as in the exported graph: image pooling first.
        logits = self.logits(self.projection(torch.cat([pooled, branch], dim=1)))
        return (F.interpolate(logits, size=x.shape[-2:], mode='bilinear',
                              align_corners=True),)


class ClassArgmax(nn.Module):
    """The tail of a segmentation network: class ids from class scores, ``(N, H, W)``."""

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        return ops.argmax(scores, 1)


def with_class_argmax(trunk: nn.Module) -> fx.GraphModule:
    """
    Return ``trunk`` followed by :class:`ClassArgmax`, traced into one graph for the engine.

    The layers keep the trunk's names (``sparsity.layer_thresholds`` names them), and the
    arg-max becomes the engine's last layer, run only where the class scores changed (over a
    whole 854x480 frame it takes about 15 ms on one CPU thread).
    """
    from sparse_perception.engine.tracing import recompile, trace

    graph_module = trace(trunk)
    graph = graph_module.graph
    output = next(n for n in graph.nodes if n.op == 'output')
    (scores,) = output.args[0]
    with graph.inserting_before(output):
        ids = graph.call_function(ops.argmax, (scores, 1))
    output.args = ((ids,),)
    recompile(graph_module)
    return graph_module


class DeepLabV3MobileNetV2(nn.Module):
    """DeepLabV3 with a MobileNetV2 backbone: class ids ``(N, H, W)`` for ``(N, 3, H, W)``."""

    architecture = 'deeplabv3_mobilenetv2'

    def __init__(self, config: DeepLabConfig | None = None):
        super().__init__()
        self.config = config or DeepLabConfig()
        self.trunk = DeepLabTrunk(self.config)
        self.tail = ClassArgmax()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(*self.trunk(x))

    def config_dict(self) -> dict:
        return asdict(self.config)


# name -> (architecture class, config dataclass); what a checkpoint's 'architecture' may name.
ARCHITECTURES = {
    DeepLabV3MobileNetV2.architecture: (DeepLabV3MobileNetV2, DeepLabConfig),
}


def build_architecture(name: str, config: dict | None = None) -> nn.Module:
    """Instantiate a registered architecture from its name and config dict."""
    if name not in ARCHITECTURES:
        known = ', '.join(sorted(ARCHITECTURES))
        raise ValueError(f'unknown architecture {name!r}; known: {known}')
    cls, config_type = ARCHITECTURES[name]
    try:
        return cls(config_type(**(config or {})))
    except TypeError as exc:
        raise ValueError(f'bad config for architecture {name!r}: {exc}') from None


def deeplab_from_tflite(net: nn.Module, depth_multiplier: float | None = None,
                        num_classes: int | None = None) -> DeepLabV3MobileNetV2:
    """
    Move the weights of an imported TFLite DeepLabV3-MobileNetV2 into the own architecture.

    ``net`` is what :func:`~sparse_perception.models.tflite.importer.load_tflite` returns for a
    Coral-style DeepLab; its convolutions, in graph order, must line up one to one with the
    architecture's (checked layer by layer: a mismatch names the layer and both shapes).
    ``depth_multiplier`` and ``num_classes`` default to what the weights say.
    """
    source = [m for m in net.trunk.modules() if isinstance(m, nn.Conv2d)]
    if not source:
        raise ValueError('the imported model has no convolutions in its trunk')
    if depth_multiplier is None:
        depth_multiplier = source[0].out_channels / 32
    if num_classes is None:
        num_classes = source[-1].out_channels
    model = DeepLabV3MobileNetV2(DeepLabConfig(num_classes=num_classes,
                                               depth_multiplier=depth_multiplier))
    target = [m for m in model.trunk.modules() if isinstance(m, nn.Conv2d)]
    # The TFLite graph runs the image-pooling conv right after aspp0; so does the module list.
    if len(source) != len(target):
        raise ValueError(f'the imported model has {len(source)} convolutions, the architecture '
                         f'{len(target)}: not a DeepLabV3-MobileNetV2 of this layout')
    with torch.no_grad():
        for index, (src, dst) in enumerate(zip(source, target)):
            layout = (src.weight.shape, src.stride, src.dilation, src.groups)
            expected = (dst.weight.shape, dst.stride, dst.dilation, dst.groups)
            if layout != expected:
                raise ValueError(f'convolution {index}: the imported model has weight '
                                 f'{tuple(src.weight.shape)}, stride {src.stride}, dilation '
                                 f'{src.dilation}, groups {src.groups}; the architecture '
                                 f'expects {tuple(dst.weight.shape)}, {dst.stride}, '
                                 f'{dst.dilation}, {dst.groups}')
            dst.weight.copy_(src.weight)
            dst.bias.copy_(src.bias if src.bias is not None else torch.zeros_like(dst.bias))
    return model.eval()
