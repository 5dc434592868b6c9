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
The dense tail: what follows the first op the engine cannot run incrementally.

When an unsupported op and everything after it contain no convolution (an argmax, a flatten
and linear classifier, ...), that tail is run densely on the cached tensors that feed it
(its *frontier*), every frame in which one of them changed.
"""

from __future__ import annotations

from typing import Any, TYPE_CHECKING

from sparse_perception.engine.canonical import is_convolution
from sparse_perception.engine.errors import UnsupportedOpError
from sparse_perception.engine.tracing import graph_module
import torch
from torch import fx

if TYPE_CHECKING:
    from sparse_perception.engine.lower import Lowering


def check_tail(lo: Lowering) -> None:
    """Raise the first unsupported op's error unless the tail may run densely."""
    if not lo.tail_nodes:
        return
    first = next(n for n in lo.tail_nodes if n in lo.errors)
    error = lo.errors[first]
    convs = [n for n in lo.tail_nodes if is_convolution(n, lo.modules)]
    if not lo.allow_dense_tail:
        raise error
    if convs:
        raise UnsupportedOpError(
            error.op, error.node,
            f'{error.reason}; it cannot run densely as a tail either because '
            f'{len(convs)} convolution(s) follow it (first: {lo.describe(convs[0])})')


def build_tail(lo: Lowering) -> tuple[fx.GraphModule, list[int], bool]:
    """Return the tail module, the value ids it reads (its frontier) and whether it has ops."""
    graph = fx.Graph()
    env: dict[fx.Node, Any] = {}
    frontier: list[int] = []
    placeholders: dict[int, fx.Node] = {}
    tail = lo.tail_set
    output_node = next(n for n in lo.gm.graph.nodes if n.op == 'output')

    def lookup(a: fx.Node) -> Any:
        if a in env:
            return env[a]
        if a in lo.value_of and a not in tail:
            v = lo.value_of[a]
            if v not in placeholders:
                placeholders[v] = graph.placeholder(f'v{v}_{lo.values[v].name}')
                frontier.append(v)
            return placeholders[v]
        if a.op == 'get_attr':
            env[a] = graph.node_copy(a, lookup)
            return env[a]
        value = lo.results.get(a)
        if isinstance(value, torch.Tensor):
            # A constant tensor computed from parameters: copy its computation.
            env[a] = graph.node_copy(a, lookup)
            return env[a]
        return value  # static: shapes, sizes, python numbers

    for n in lo.tail_nodes:
        env[n] = graph.node_copy(n, lookup)
    graph.output(fx.map_arg(output_node.args[0], lookup))
    return graph_module(lo.gm, graph), frontier, bool(lo.tail_nodes)
