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
Trace an unmodified ``nn.Module`` with torch.fx, and run the traced graph once to record it.

The record keeps, for every node that depends on the model input, only its shape and dtype;
every other node (shape arithmetic such as ``x.shape[-2:]``, parameters, constants) keeps
its value, which lowering then uses as a constant.
"""

from __future__ import annotations

from dataclasses import dataclass
import linecache
from typing import Any
import weakref

from sparse_perception.engine.errors import EngineError
from sparse_perception.engine.ops import argmax, depth_to_space
import torch
from torch import fx
import torch.nn as nn


def trace(module: nn.Module) -> fx.GraphModule:
    """Trace ``module`` with torch.fx, with an error that says what to do when it fails."""
    _check_hooks(module)  # (a GraphModule's submodules run as calls too: hooks skipped)
    if isinstance(module, fx.GraphModule):
        return module
    if fx.Tracer().is_leaf_module(module, ''):
        module = nn.Sequential(module)  # a bare torch.nn layer: trace it as a call
    try:
        # fx.wrap only keeps calls made through the defining module (``ops.depth_to_space``);
        # autowrap also keeps a model's own ``from ... import depth_to_space`` as one call.
        tracer = fx.Tracer(autowrap_functions=(argmax, depth_to_space))
        graph = tracer.trace(module)
        return graph_module(tracer.root, graph, type(module).__name__)
    except Exception as exc:  # torch.fx raises many types for data-dependent control flow
        raise EngineError(
            f'torch.fx could not trace {type(module).__name__}: {exc}. The engine needs a '
            'traceable model: move data-dependent Python control flow out of forward(), or '
            'pass a torch.fx.GraphModule you traced yourself.') from exc


def _check_hooks(module: nn.Module) -> None:
    """Refuse forward hooks: torch.fx traces forward() alone, so the graph would skip them."""
    from torch.nn.modules import module as module_hooks

    if module_hooks._global_forward_hooks or module_hooks._global_forward_pre_hooks:
        raise EngineError('forward hooks are registered for every module '
                          '(nn.modules.module.register_module_forward_hook); torch.fx does not '
                          'trace hooks, so the engine would compute without them: remove them')
    for name, m in module.named_modules():
        if m._forward_hooks or m._forward_pre_hooks:
            raise EngineError(f'module {name or type(module).__name__!r} '
                              f'({type(m).__name__}) has forward hooks; torch.fx does not trace '
                              'hooks, so the engine would compute without them: remove them or '
                              'do their work in forward()')


def graph_module(root: Any, graph: fx.Graph, name: str = 'GraphModule') -> fx.GraphModule:
    """Return ``fx.GraphModule(root, graph, name)`` whose generated source goes with it."""
    return forget_source_when_gone(fx.GraphModule(root, graph, name))


def recompile(module: fx.GraphModule) -> None:
    """Recompile a graph module after its graph changed, dropping the source it had."""
    old = _source_key(module)
    module.recompile()
    _forget_source(old)
    forget_source_when_gone(module)


# torch.fx keeps the source of every forward() it generates, for tracebacks (in linecache and
# in its own loader), for good. The engine builds a module per plan (a plan per input size:
# a stream whose frames keep changing size builds them without end) and per model load, so
# each module takes its source along when it goes.
def _source_key(module: fx.GraphModule) -> str | None:
    code = getattr(type(module).forward, '__code__', None)
    return code.co_filename if code is not None else None


def _forget_source(key: str | None) -> None:
    if key is None or not key.startswith('<eval_with_key>'):
        return  # not a generated module's (a subclass's own forward, say)
    linecache.cache.pop(key, None)
    loader = getattr(fx.graph_module, '_loader', None)
    getattr(loader, 'eval_cache', {}).pop(key, None)


def forget_source_when_gone(module: fx.GraphModule) -> fx.GraphModule:
    """Return ``module``, whose generated source torch.fx forgets once it is collected."""
    weakref.finalize(module, _forget_source, _source_key(module))
    return module


@dataclass(frozen=True)
class Meta:
    """The recorded shape and dtype of a tensor computed from the input."""

    shape: tuple
    dtype: torch.dtype


class Opaque:
    """A computed value that holds tensors but is not one (only a dense tail can use it)."""


def node_args(n: fx.Node) -> list[fx.Node]:
    """Return the nodes ``n`` reads, in its args and kwargs."""
    found: list[fx.Node] = []
    fx.map_arg((n.args, n.kwargs), lambda a: found.append(a))
    return found


def dependent_nodes(gm: fx.GraphModule, input_node: fx.Node) -> set:
    """Return the nodes whose value depends on ``input_node``."""
    dependent = set()
    for n in gm.graph.nodes:
        if n is input_node or any(a in dependent for a in node_args(n)):
            dependent.add(n)
    return dependent


def record(gm: fx.GraphModule, dependent: set, example: torch.Tensor) -> dict[fx.Node, Any]:
    """Run ``gm`` on ``example``: :class:`Meta` or :class:`Opaque` for ``dependent`` nodes."""
    recorder = _Recorder(gm, dependent)
    with torch.no_grad():
        recorder.run(example)
    return recorder.results


class _Recorder(fx.Interpreter):
    """Run the graph once; keep constants and static values, only shapes of the rest."""

    def __init__(self, gm: fx.GraphModule, dependent: set):
        super().__init__(gm)
        self.dependent = dependent
        self.results: dict[fx.Node, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        result = super().run_node(n)
        if isinstance(result, torch.Tensor) and n in self.dependent:
            self.results[n] = Meta(tuple(result.shape), result.dtype)
        elif n in self.dependent and _holds_tensor(result):
            self.results[n] = Opaque()  # e.g. the (values, indices) of max(dim)
        else:
            self.results[n] = result
        return result


def _holds_tensor(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, (list, tuple)):
        return any(_holds_tensor(v) for v in value)
    if isinstance(value, dict):
        return any(_holds_tensor(v) for v in value.values())
    return False
