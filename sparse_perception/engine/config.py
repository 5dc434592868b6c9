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

"""Configuration of the incremental engine (fed from the ``sparsity`` settings section)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from sparse_perception import settings as st
from sparse_perception.engine.errors import EngineError
from sparse_perception.engine.ir import Kind

# The setting each field is read from; the field's default and range are that setting's
# (settings are the only place defaults are written). The other fields are not settings.
SETTING_OF_FIELD = {
    'threshold_scale': 'sparsity.scale',
    'global_scale': 'sparsity.global_scale',
    'layer_thresholds': 'sparsity.layer_thresholds',
    'layer_dense_fallback': 'sparsity.layer_dense_fallback',
    'window_dense_fallback': 'sparsity.window_dense_fallback',
    'frame_dense_fallback': 'sparsity.dense_fallback',
    'tile': 'sparsity.compute_tile',
    'backend': 'model.backend',
}


def _default(name: str) -> Any:
    """Return the default of the setting behind field ``name``."""
    return st.spec(SETTING_OF_FIELD[name]).default


@dataclass(frozen=True)
class EngineConfig:
    """How the incremental engine trades exactness for speed, and how it runs."""

    # Multiplies every layer's default output threshold; 0 makes the engine exact against
    # dense. A layer's default threshold is this scale times the RMS of its output on the
    # stream's first (dense) frame, so one scale means the same relative change everywhere.
    threshold_scale: float = _default('threshold_scale')
    # The same for global average pooling outputs (squeeze-excitation, image pooling), whose
    # every change wakes the whole map they multiply or are broadcast to: their threshold is
    # max(threshold_scale, global_scale) times their RMS on the first frame. A pooled mean
    # moves little when a small region changes, so a small global_scale keeps one moving
    # object from waking whole layers while threshold_scale 0 keeps everything else exact.
    # 0 (with threshold_scale 0) is exact.
    global_scale: float = _default('global_scale')
    # Absolute per-layer thresholds that replace the scaled default, by layer name (a module
    # path such as 'features.3.conv.1.0' or an fx node name; 'input' is the image itself).
    # (The setting holds them as 'layer=value' strings; none by default.)
    layer_thresholds: Mapping[str, float] = field(
        default_factory=lambda: parse_layer_thresholds(_default('layer_thresholds')))
    # A layer whose share of positions to recompute exceeds this runs dense on its cached
    # input (cheaper than gathering almost everything). Layers that compute exactly the
    # changed positions (1x1 convolutions, resampling, concatenation, pointwise ops) gather
    # cheaply relative to their arithmetic, so the default is high; measured break-even on
    # MobileNetV2 layers (CPU, one thread): about 0.95.
    layer_dense_fallback: float = _default('layer_dense_fallback')
    # The same for windowed layers (KxK convolutions, pooling), as a share of positions in the
    # tiles that hold changes: gathering tiles with their halo costs about twice the dense
    # op per position (measured break-even about 0.4).
    window_dense_fallback: float = _default('window_dense_fallback')
    # A frame whose changed share of input pixels exceeds this runs dense (every layer).
    frame_dense_fallback: float = _default('frame_dense_fallback')
    # Edge, in output positions, of the tiles that windowed layers (KxK convolutions,
    # pooling) compute on; maps with fewer than 64 such tiles use half of it (at least 2).
    # 4 and 8 measured within noise of each other on MobileNetV2 at thresholds 0; 4 was
    # about 8% faster with thresholds (CPU, one thread).
    tile: int = _default('tile')
    # At threshold 0, also drop recomputed positions whose value is bit-identical to the
    # cached one (costs a compare per layer; rarely finds any except behind saturating
    # activations). Thresholds > 0 always test.
    exact_change_test: bool = False
    # Compute backend: 'auto', 'reference' or 'kernels' (see settings.resolve_backend).
    backend: str = _default('backend')
    # Measure each layer's wall time (synchronising CUDA per layer; for profiling only).
    profile: bool = False
    # Let an unsupported op at the end of the model run densely as a tail (argmax, a
    # classifier) instead of raising; convolutions never run in a tail.
    allow_dense_tail: bool = True

    def __post_init__(self):
        # The ranges and choices are those of the settings behind the fields.
        for name in ('threshold_scale', 'global_scale', 'layer_dense_fallback',
                     'window_dense_fallback', 'frame_dense_fallback', 'tile'):
            info, value = st.spec(SETTING_OF_FIELD[name]).info, getattr(self, name)
            if not (info.low <= value <= info.high):
                raise EngineError(f'EngineConfig.{name}={value!r} is out of range; expected '
                                  f'{info.low} to {info.high}')
        for name, value in dict(self.layer_thresholds).items():
            if not (isinstance(value, (int, float)) and value >= 0 and value == value):
                raise EngineError(f'layer threshold {name}={value!r} must be a number >= 0')
        choices = st.spec(SETTING_OF_FIELD['backend']).info.choices
        if self.backend not in choices:
            raise EngineError(f'EngineConfig.backend={self.backend!r} is not one of '
                              f'{", ".join(choices)}')
        object.__setattr__(self, 'layer_thresholds', dict(self.layer_thresholds))

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> 'EngineConfig':
        """
        Build from a :class:`~sparse_perception.settings.PerceptionSettings`.

        Reads the settings of :data:`SETTING_OF_FIELD` (``sparsity.*`` and ``model.backend``);
        ``settings`` may also be the ``sparsity`` section alone (then the backend is the
        default). Keyword arguments override.
        """
        sections = {'sparsity': getattr(settings, 'sparsity', settings),
                    'model': getattr(settings, 'model', None)}
        kwargs: dict[str, Any] = {}
        for name, setting_name in SETTING_OF_FIELD.items():
            section, key = setting_name.split('.')
            if sections[section] is not None:
                kwargs[name] = getattr(sections[section], key)
        kwargs['layer_thresholds'] = parse_layer_thresholds(kwargs['layer_thresholds'])
        kwargs.update(overrides)
        return cls(**kwargs)


def parse_layer_thresholds(items: Any) -> dict[str, float]:
    """Parse ``('layer=value', ...)`` (the ROS-parameter form) into a dict."""
    try:
        return st.parse_layer_thresholds(items)
    except st.SettingError as exc:
        raise EngineError(str(exc)) from None


def layer_threshold(config: EngineConfig, names: Any, kind: Kind, rms: float | None) -> float:
    """
    Return a layer's output threshold: its override, else its scale times ``rms``.

    ``names`` are the layer's names (any may carry an override); ``rms`` the RMS of its output
    on the stream's first frame, or None where no threshold applies (non-float outputs).
    Global average pools take the larger of the two scales (see ``global_scale``).
    """
    overrides = config.layer_thresholds
    override = next((overrides[n] for n in names if n in overrides), None)
    if override is not None:
        return float(override)
    scale = config.threshold_scale
    if kind == Kind.GAP:
        scale = max(scale, config.global_scale)
    return scale * rms if scale > 0 and rms is not None else 0.0
