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
PNG plots of a replay: latency over time, active fraction over time, speed vs accuracy.

Drawn with matplotlib (the ``replay`` extra; ``python3-matplotlib`` on a robot) on the
non-interactive Agg canvas, so no display is needed. Without matplotlib,
:func:`require_matplotlib` raises :class:`PlotsUnavailable` with what to install; the replay
then writes everything else and says in the report why the plots are missing.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence


class PlotsUnavailable(RuntimeError):
    """matplotlib is not installed."""


def require_matplotlib() -> Any:
    """Return matplotlib.pyplot on the Agg canvas, or raise PlotsUnavailable."""
    try:
        import matplotlib
    except ImportError:
        raise PlotsUnavailable(
            "plots need matplotlib: `pip install 'sparse_perception[replay]'` (or `apt "
            'install python3-matplotlib`)') from None
    matplotlib.use('Agg', force=True)
    import matplotlib.pyplot as pyplot
    return pyplot


def _save(figure: Any, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    figure.clear()
    require_matplotlib().close(figure)


def latency_plot(records: Sequence[Any], path: Path) -> None:
    """Per-frame latency (ms) of the incremental pipeline and its dense reference."""
    pyplot = require_matplotlib()
    figure, axes = pyplot.subplots(figsize=(8, 3.5))
    index = [r.index for r in records]
    dense = [(r.index, r.dense_ms) for r in records if r.dense_ms is not None]
    if dense:
        axes.plot(*zip(*dense), label='dense reference', color='tab:gray', linewidth=1)
    axes.plot(index, [r.incremental_ms for r in records], label='incremental',
              color='tab:blue', linewidth=1)
    axes.set_xlabel('frame')
    axes.set_ylabel('latency (ms)')
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    axes.legend(loc='upper right')
    _save(figure, path)


def activity_plot(records: Sequence[Any], path: Path) -> None:
    """Per-frame active fraction (work recomputed) and changed fraction (input tiles)."""
    pyplot = require_matplotlib()
    figure, axes = pyplot.subplots(figsize=(8, 3.5))
    index = [r.index for r in records]
    axes.plot(index, [r.active_fraction for r in records],
              label='active fraction (positions recomputed)', color='tab:orange', linewidth=1)
    # Gaps where a frame had no change map.
    changed = [math.nan if r.changed_fraction is None else r.changed_fraction for r in records]
    axes.plot(index, changed, label='changed input tiles',
              color='tab:green', linewidth=1, linestyle='--', marker='.', markersize=3)
    axes.set_xlabel('frame')
    axes.set_ylabel('fraction')
    axes.set_ylim(0, 1.02)
    axes.grid(alpha=0.3)
    axes.legend(loc='upper right')
    _save(figure, path)


def _accuracy_series(points: Sequence[dict]) -> list[tuple[str, list[float | None]]]:
    """(label, value per point) of every accuracy figure the sweep points carry."""
    series = []
    for key, label, scale in (('mask_pixel', 'mask agreement with dense (%)', 100.0),
                              ('keypoint_px', 'keypoint error vs dense (px)', 1.0)):
        values = [(p['agreement'] or {}).get(key) for p in points]
        if any(v is not None for v in values):
            series.append((label, [None if v is None else v * scale for v in values]))
    for key, label in (('iou', 'ground-truth IoU'), ('pck', 'ground-truth PCK')):
        values = [(p['ground_truth'] or {}).get(key) for p in points]
        if any(v is not None for v in values):
            series.append((label, values))
    return series


def sweep_plot(points: Sequence[dict], path: Path) -> bool:
    """Speed (x: incremental p50 latency) against each accuracy figure, one panel each."""
    series = _accuracy_series(points)
    if not series:
        return False
    pyplot = require_matplotlib()
    figure, axes_list = pyplot.subplots(1, len(series), figsize=(4.2 * len(series), 3.6),
                                        squeeze=False)
    x = [p['latency_ms']['incremental']['p50'] for p in points]
    for axes, (label, values) in zip(axes_list[0], series):
        pairs = [(xi, yi, p['scale']) for xi, yi, p in zip(x, values, points) if yi is not None]
        axes.plot([a for a, _, _ in pairs], [b for _, b, _ in pairs], marker='o')
        for xi, yi, scale in pairs:
            axes.annotate(f'{scale:g}', (xi, yi), textcoords='offset points', xytext=(4, 4),
                          fontsize=8)
        axes.set_xlabel('incremental latency p50 (ms)')
        axes.set_ylabel(label)
        axes.grid(alpha=0.3)
    figure.suptitle('speed vs accuracy over sparsity.scale (labels)', fontsize=10)
    _save(figure, path)
    return True
