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

"""The one percentile definition, worked out by hand, and the summaries built on it."""

import math
import statistics as stdlib_statistics

import numpy as np
import pytest

from sparse_perception.evaluation.stats import (
    mean_or_none, median, percentile, percentiles, summarize)


def test_percentile_interpolates_between_ranks():
    # Sorted 1, 2, 3, 10: p90 sits at position 0.9 * 3 = 2.7, between 3 and 10 (nearest rank
    # would say 10); p50 at 1.5, between 2 and 3.
    values = [3.0, 1.0, 2.0, 10.0]
    assert percentile(values, 90) == pytest.approx(3.0 + 0.7 * 7.0)
    assert percentile(values, 50) == 2.5
    assert percentile(values, 0) == 1.0 and percentile(values, 100) == 10.0
    assert percentiles(values, (50, 90)) == [2.5, pytest.approx(7.9)]


def test_median_is_the_usual_median():
    for values in ([5.0], [1.0, 4.0], [7.0, 1.0, 3.0, 2.0, 9.0], list(range(10))):
        assert median(values) == stdlib_statistics.median(values) == np.median(values)


def test_no_values_gives_none():
    assert percentile([], 50) is None and median([]) is None and summarize([]) is None
    assert percentile(np.array([]), 95) is None


def test_bad_input_is_named():
    with pytest.raises(ValueError, match='101'):
        percentile([1.0, 2.0], 101)
    with pytest.raises(ValueError, match='NaN'):
        percentile([1.0, math.nan], 50)


def test_summarize_percentiles():
    values = list(range(1, 101))  # 1..100 ms
    s = summarize(values)
    assert s['mean'] == 50.5 and s['min'] == 1 and s['max'] == 100
    # p50 of 1..100 is 50.5, p90 is 90.1, p99 is 99.01 (interpolated between ranks).
    assert s['p50'] == pytest.approx(50.5)
    assert s['p90'] == pytest.approx(90.1)
    assert s['p99'] == pytest.approx(99.01)


def test_mean_or_none_skips_missing_values():
    assert mean_or_none([1.0, None, math.nan, 3.0]) == 2.0
    assert mean_or_none([None, math.inf]) is None
