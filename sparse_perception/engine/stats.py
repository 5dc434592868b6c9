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

"""Per-frame statistics of the incremental engine (cheap enough to leave on)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LayerStats:
    """What one layer did in one frame."""

    name: str
    kind: str  # the core: a Kind or ConvForm member ('glance', 'gate': a gate's own pass;
    # 'samples': the path choice's timing passes)
    positions: int  # output positions of the layer (H * W)
    mode: str = 'skip'  # 'skip' (nothing changed), 'sparse', 'dense' (fallback), 'full' frame
    active: int = 0  # positions whose inputs changed (the receptive-field image)
    computed: int = 0  # positions computed (active rounded up to tiles, or all when dense)
    changed: int = 0  # positions propagated (changed by more than the threshold)
    macs: float = 0.0  # multiply-accumulates executed
    dense_macs: float = 0.0  # multiply-accumulates of a dense pass
    time_ms: float | None = None  # wall time, with EngineConfig.profile

    @property
    def active_fraction(self) -> float:
        """Share of positions whose inputs changed."""
        return self.active / self.positions if self.positions else 0.0


@dataclass
class FrameStats:
    """Statistics of one frame: per layer and overall."""

    dense: bool = False  # the whole frame ran dense (first frame, refresh, size change)
    input_fraction: float = 0.0  # share of input pixels that changed
    gate_fraction: float = 1.0  # share of input tiles a gate let layers recompute in
    layers: list[LayerStats] = field(default_factory=list)
    time_ms: float | None = None  # wall time of the frame, with EngineConfig.profile

    @property
    def active_fraction(self) -> float:
        """Share of all layers' output positions whose inputs changed."""
        total = sum(s.positions for s in self.layers)
        return sum(s.active for s in self.layers) / total if total else 0.0

    @property
    def computed_fraction(self) -> float:
        """Share of all layers' output positions computed."""
        total = sum(s.positions for s in self.layers)
        return sum(s.computed for s in self.layers) / total if total else 0.0

    @property
    def macs(self) -> float:
        """Multiply-accumulates executed in this frame."""
        return sum(s.macs for s in self.layers)

    @property
    def dense_macs(self) -> float:
        """Multiply-accumulates of a dense pass."""
        return sum(s.dense_macs for s in self.layers)

    @property
    def mac_fraction(self) -> float:
        """Return executed over dense multiply-accumulates."""
        dense = self.dense_macs
        return self.macs / dense if dense else 0.0

    @property
    def dense_fallbacks(self) -> int:
        """Return how many layers ran dense because too much of them changed."""
        return sum(1 for s in self.layers if s.mode == 'dense')

    def summary(self) -> dict:
        """Return the headline numbers as a plain dict (for logs and JSON)."""
        return {'dense': self.dense, 'input_fraction': self.input_fraction,
                'gate_fraction': self.gate_fraction,
                'active_fraction': self.active_fraction, 'mac_fraction': self.mac_fraction,
                'macs': self.macs, 'dense_macs': self.dense_macs,
                'dense_fallbacks': self.dense_fallbacks, 'time_ms': self.time_ms}
