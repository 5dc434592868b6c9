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
``sparse-perception bench``: a group of benchmark sub-commands.

Each benchmark module listed in :data:`BENCHMARKS` provides ``register(subparsers)`` and
imports its heavy dependencies only when it runs, so ``--help`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> module providing register(subparsers).
BENCHMARKS = (
    'sparse_perception.benchmarks.cpu',
    'sparse_perception.benchmarks.engine',
    'sparse_perception.benchmarks.gpu',
)


def register(subparsers: Any) -> None:
    """Add the ``bench`` command and its sub-commands."""
    parser = subparsers.add_parser(
        'bench', help='benchmarks (results as JSON and markdown)',
        description='Benchmarks of the incremental engine; see bench/ for the committed '
        'results and the commands that made them.')
    benchmarks = parser.add_subparsers(dest='benchmark', metavar='BENCHMARK')
    for module_name in BENCHMARKS:
        importlib.import_module(module_name).register(benchmarks)
    parser.set_defaults(func=lambda args: _missing(parser))


def _missing(parser: Any) -> int:
    parser.print_help()
    return 2
