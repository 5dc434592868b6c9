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
The statistics every figure of the package is reported with (numpy only, importable anywhere).

One definition of a percentile serves the replay's reports, the evaluations, the benchmarks and
the nodes' diagnostics, so that two figures called "p90" are always the same statistic.

The definition is linear interpolation between the closest ranks (Hyndman and Fan's type 7,
numpy's and pandas' default, a spreadsheet's PERCENTILE.INC): for ``n`` sorted values ``x``,
the q-th percentile sits at the 0-based position ``h = (n - 1) q / 100`` and is
``x[floor(h)] + (h - floor(h)) (x[floor(h) + 1] - x[floor(h)])``. It is chosen over nearest
rank because its p50 is the median as every tool computes it (``statistics.median``,
``np.median``, the scheduler's running median), because anyone recomputing a figure from the
per-frame times of a result gets the same number with their default, and because it moves
continuously with the data instead of jumping from one sample to the next.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np


def percentiles(values: Iterable[float], qs: Sequence[float]) -> list[float] | None:
    """
    Return the percentiles ``qs`` (each 0 to 100) of ``values``; None when there are no values.

    Linear interpolation between the closest ranks (see the module's docstring). A value that
    is NaN, or a q outside 0 to 100, raises ValueError naming it.
    """
    data = np.asarray(list(values), dtype=np.float64).reshape(-1)
    bad = [q for q in qs if not 0 <= q <= 100]
    if bad:
        raise ValueError(f'percentile {bad[0]!r} is outside 0 to 100')
    if data.size == 0:
        return None
    if np.isnan(data).any():
        first = int(np.isnan(data).argmax())
        raise ValueError(f'percentile of values holding NaN (the first at index {first})')
    return [float(v) for v in np.percentile(data, list(qs), method='linear')]


def percentile(values: Iterable[float], q: float) -> float | None:
    """Return percentile ``q`` (0 to 100) of ``values``; None when there are none."""
    result = percentiles(values, (q,))
    return None if result is None else result[0]


def median(values: Iterable[float]) -> float | None:
    """Return the 50th percentile of ``values`` (the usual median); None when there are none."""
    return percentile(values, 50)


def summarize(values: Iterable[float]) -> dict[str, float] | None:
    """Return mean, p50, p90, p99, min and max of ``values`` (None when there are none)."""
    data = np.asarray(list(values), dtype=np.float64).reshape(-1)
    p50_p90_p99 = percentiles(data, (50, 90, 99))
    if p50_p90_p99 is None:
        return None
    p50, p90, p99 = p50_p90_p99
    return {'mean': float(data.mean()), 'p50': p50, 'p90': p90, 'p99': p99,
            'min': float(data.min()), 'max': float(data.max())}


def mean_or_none(values: Iterable[float | None]) -> float | None:
    """Mean of the finite values, None when there are none."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else None
