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
Lower a traced model into the engine's :class:`~sparse_perception.engine.ir.Program`.

Lowering runs the traced graph once on an example input to learn every tensor's shape and to
evaluate the shape arithmetic that models do at run time (``x.shape[-2:]`` and the like) to
constants (tracing.py). Each node computed from the input is then converted by the entry
``canonical.py`` holds for its module type, function or method; the converters fuse what
they can into the layer before (fusion.py). An op the engine cannot run incrementally raises
:class:`UnsupportedOpError` naming it, unless it and everything after it form a dense tail
(tail.py).
"""

from __future__ import annotations

import operator
from typing import Any

from sparse_perception.engine import canonical
from sparse_perception.engine.errors import EngineError, UnsupportedOpError
from sparse_perception.engine.ir import Attrs, Kind, Layer, Program, Value
from sparse_perception.engine.tail import build_tail, check_tail
from sparse_perception.engine.tracing import dependent_nodes, Meta, node_args, Opaque, record
from sparse_perception.kernels.steps import Step
import torch
from torch import fx
import torch.nn as nn
import torch.nn.functional as F

_IN_PLACE_FUNCTIONS = (operator.iadd, operator.isub, operator.imul, operator.itruediv,
                       torch.relu_, F.relu_)
# Ops whose result may be the very tensor they read, or a view of it (in eager PyTorch): an
# in-place op on one changes the others.
_SHARING_MODULES = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout,
                    nn.Flatten)
_SHARING_METHODS = ('contiguous', 'detach', 'to', 'float', 'view', 'view_as', 'reshape',
                    'flatten', 'squeeze', 'unsqueeze', 'expand', 'expand_as', 'permute',
                    'transpose')
_SHARING_FUNCTIONS = (torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze,
                      operator.getitem, F.dropout, F.dropout1d, F.dropout2d)
# Tensor methods that hand a tensor's values to Python (a frame's values, on a traced graph).
_DATA_READS = ('item', 'tolist', 'numpy', '__bool__', '__int__', '__float__', '__index__')


def lower(gm: fx.GraphModule, example: torch.Tensor, allow_dense_tail: bool = True) -> Program:
    """Lower the traced model for inputs shaped like ``example`` (1, C, H, W)."""
    return Lowering(gm, allow_dense_tail).run(example)


class Lowering:
    """The program being built from one traced model, and what the converters share."""

    def __init__(self, gm: fx.GraphModule, allow_dense_tail: bool):
        self.gm = gm
        self.allow_dense_tail = allow_dense_tail
        self.modules = dict(gm.named_modules())
        self.values: list[Value] = []
        self.layers: list[Layer] = []
        self.value_of: dict[fx.Node, int] = {}  # node -> value id (aliases share)
        self.producer: dict[int, Layer] = {}
        self.value_uses: dict[int, int] = {}  # value id -> number of tensor consumers
        self.errors: dict[fx.Node, UnsupportedOpError] = {}  # why each tail node is there
        self.tail_nodes: list[fx.Node] = []

    # -- driver ------------------------------------------------------------------------------

    def run(self, example: torch.Tensor) -> Program:
        graph = self.gm.graph
        placeholders = [n for n in graph.nodes if n.op == 'placeholder']
        if len(placeholders) != 1:
            raise EngineError(f'the model takes {len(placeholders)} inputs '
                              f'({", ".join(n.name for n in placeholders)}); the engine runs '
                              'models with exactly one image tensor input')
        self.input_node = placeholders[0]
        self.dependent = dependent_nodes(self.gm, self.input_node)
        try:
            self.results = record(self.gm, self.dependent, example)
        except Exception as exc:  # the model itself fails on this input (channels, size)
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            raise EngineError(f'the model fails on an input of shape {tuple(example.shape)}: '
                              f'{reason}') from exc
        self.node_order = {n: i for i, n in enumerate(graph.nodes)}
        self._count_uses()

        x = self.new_value(self.input_node, 'input')
        self.add_layer(Layer('input', ('input',), Kind.INPUT, [], x, order=0))

        data: set = set()  # Python values read from the image's tensors, and their results
        for n in graph.nodes:
            if n.op in ('placeholder', 'output') or n not in self.dependent:
                continue
            result = self.results[n]
            if self._reads_data(n) or (not isinstance(result, (Meta, Opaque))
                                       and any(a in data for a in node_args(n))):
                # Its value is this frame's: kept as a constant it would be wrong on the next
                # (so is a Python value computed from it).
                data.add(n)
                self.errors[n] = self.unsupported(
                    n, 'it reads values of a tensor computed from the image into Python')
                self.tail_nodes.append(n)
                continue
            if not isinstance(result, (Meta, Opaque)):
                continue  # static (shapes and sizes): evaluated, used as constants
            self._check_mutation(n)  # never tolerated, not even in a dense tail
            if any(a in self.tail_set for a in node_args(n)):
                self.tail_nodes.append(n)
                continue
            try:
                if isinstance(result, Opaque):
                    raise self.unsupported(n, 'its result is not a single tensor')
                canonical.convert(self, n)
            except UnsupportedOpError as exc:
                self.errors[n] = exc
                self.tail_nodes.append(n)
        check_tail(self)
        self.layers.sort(key=lambda layer: layer.order)
        tail, frontier, dense = build_tail(self)
        return Program(self.values, self.layers, x, tail, frontier, dense,
                       tuple(self.describe(n) for n in self.tail_nodes),
                       any(self.mutates_input(n) for n in self.tail_nodes))

    def _reads_data(self, n: fx.Node) -> bool:
        """Whether ``n`` turns an image-dependent tensor's values into Python values."""
        return (n.op == 'call_method' and n.target in _DATA_READS
                and any(isinstance(self.results.get(a), (Meta, Opaque)) for a in node_args(n)))

    @property
    def tail_set(self) -> set:
        return set(self.tail_nodes)

    def _count_uses(self) -> None:
        # Uses per node after alias resolution, counting only the consumers that read the
        # tensor (shape reads like x.shape are static and do not need the value); one whose
        # result is several tensors (x.max(1), x.chunk(2)) or a Python value (x.item()) reads
        # it too, and a pointwise op fused into x's producer would change what it reads.
        self.node_uses: dict[fx.Node, int] = {}
        for n in self.gm.graph.nodes:
            for a in node_args(n):
                if a in self.dependent and isinstance(self.results.get(a), Meta):
                    if n.op == 'output' or isinstance(self.results.get(n), (Meta, Opaque)) \
                            or self._reads_data(n):
                        self.node_uses[a] = self.node_uses.get(a, 0) + 1

    # -- values and layers --------------------------------------------------------------------

    def new_value(self, n: fx.Node, name: str | None = None) -> int:
        """Add the value ``n`` computes; return its id."""
        meta = self.results[n]
        shape = meta.shape
        view = 'nchw'
        if len(shape) == 4 and shape[0] == 1:
            c, h, w = shape[1:]
        elif len(shape) == 2 and shape[0] == 1:
            c, h, w, view = shape[1], 1, 1, 'nc'
        elif len(shape) == 3 and shape[0] == 1:
            c, h, w, view = 1, shape[1], shape[2], 'nhw'
        else:
            raise self.unsupported(n, f'its result has shape {shape}; the engine handles '
                                      'batch 1 tensors (1, C, H, W)')
        value = Value(len(self.values), name or n.name, c, h, w, meta.dtype, view)
        self.values.append(value)
        self.value_of[n] = value.index
        self.value_uses[value.index] = self.node_uses.get(n, 0)
        return value.index

    def add_layer(self, layer: Layer) -> Layer:
        self.layers.append(layer)
        self.producer[layer.output] = layer
        return layer

    def emit(self, n: fx.Node, kind: Kind, inputs: list[int], out: int, attrs: Attrs | None,
             epilogue: list[Step] | None = None, name: str | None = None) -> Layer:
        """Add the layer of node ``n`` (named after it, run where it runs) writing ``out``."""
        name = name or self.layer_name(n)
        return self.add_layer(Layer(name, (name, n.name), kind, inputs, out, attrs,
                                    epilogue if epilogue is not None else [],
                                    order=self.node_order[n]))

    def value(self, a: Any) -> int | None:
        """Value id of a node argument that is a program tensor, else None."""
        if isinstance(a, fx.Node) and a in self.value_of:
            return self.value_of[a]
        return None

    def const(self, a: Any) -> Any:
        """Evaluate a node argument that does not depend on the input."""
        if isinstance(a, fx.Node):
            if a in self.value_of:
                raise KeyError(a)
            return self.results[a]
        if isinstance(a, (list, tuple)):
            return type(a)(self.const(b) for b in a)
        if isinstance(a, dict):
            return {k: self.const(b) for k, b in a.items()}
        return a

    def args(self, n: fx.Node, names: list[str], defaults: dict) -> dict:
        """Bind ``n.args``/``n.kwargs`` to ``names``; tensors stay nodes, others evaluated."""
        bound = dict(defaults)
        for name, a in zip(names, n.args):
            bound[name] = a
        bound.update(n.kwargs)
        out = {}
        for name, a in bound.items():
            if isinstance(a, fx.Node) and a in self.value_of:
                out[name] = a
            elif isinstance(a, (list, tuple)) and any(
                    isinstance(b, fx.Node) and b in self.value_of for b in a):
                out[name] = a
            else:
                out[name] = self.const(a)
        return out

    def alias(self, n: fx.Node, src: Any) -> None:
        """Make ``n`` another name of the value ``src``: no layer, no cache."""
        v = self.value(src)
        if v is None:
            raise self.unsupported(n, 'alias of a non-tensor')
        self.value_of[n] = v
        self.value_uses[v] += self.node_uses.get(n, 0) - 1

    def main_input(self, n: fx.Node, x: Any) -> int:
        """Value id of the tensor ``n`` computes from; refuse constants and odd layouts."""
        v = self.value(x)
        if v is None:
            raise self.unsupported(n, 'its input is not a tensor computed from the image')
        if self.values[v].view != 'nchw' and not self.is_global(v):
            raise self.unsupported(n, f'its input has layout {self.values[v].view}')
        return v

    def is_global(self, v: int) -> bool:
        value = self.values[v]
        return value.height == 1 and value.width == 1

    def check_nchw_result(self, n: fx.Node) -> None:
        shape = self.results[n].shape
        if len(shape) != 4 or shape[0] != 1:
            raise self.unsupported(n, f'its result has shape {shape}; expected (1, C, H, W)')

    def layer_name(self, n: fx.Node) -> str:
        return n.target if n.op == 'call_module' else n.name

    # -- mutation and errors ------------------------------------------------------------------

    def mutates_input(self, n: fx.Node) -> bool:
        if n.op == 'call_method':
            return n.target.endswith('_') and not n.target.endswith('__')
        if n.op == 'call_module':
            return bool(getattr(self.modules[n.target], 'inplace', False))
        if n.op == 'call_function':
            return n.kwargs.get('inplace') is True or n.target in _IN_PLACE_FUNCTIONS
        return False

    def _check_mutation(self, n: fx.Node) -> None:
        """
        Refuse an in-place op whose input is read again afterwards.

        The traced graph keeps the value from before the mutation where eager PyTorch would
        read the mutated one, so the two would disagree.
        """
        if not n.args or not isinstance(n.args[0], fx.Node) or not self.mutates_input(n):
            return
        target = n.args[0]
        # Every tensor that is the same one or a view of it: back to the first that is not
        # (nn.Identity returns its input itself), then forward through the others.
        root = target
        while self._shares_storage(root) and root.args and isinstance(root.args[0], fx.Node):
            root = root.args[0]
        group, todo = {root}, [root]
        while todo:
            for u in todo.pop().users:
                if u not in group and u is not n and self._shares_storage(u) \
                        and u.args and u.args[0] in group:
                    group.add(u)
                    todo.append(u)
        later = [u for g in group for u in g.users if u is not n and u not in group
                 and self.node_order[u] > self.node_order[n]]
        later += [g for g in group if self.node_order[g] > self.node_order[n]]
        if later:
            later.sort(key=self.node_order.get)
            raise self.unsupported(
                n, f'it changes {target.name!r} in place, which {later[0].name!r} reads '
                'afterwards (eager PyTorch and the traced graph disagree there); use the '
                'out-of-place op')

    def _shares_storage(self, n: fx.Node) -> bool:
        """Whether eager PyTorch may return the tensor ``n`` reads, or a view of it."""
        if n.op == 'call_module':
            return isinstance(self.modules[n.target], _SHARING_MODULES)
        if n.op == 'call_method':
            return n.target in _SHARING_METHODS
        if n.op == 'call_function' and n.target is operator.getitem:
            # An item of a tuple (max's values and indices, chunks) is a tensor of its own.
            return isinstance(self.results.get(n.args[0]), Meta)
        return n.op == 'call_function' and n.target in _SHARING_FUNCTIONS

    def describe(self, n: fx.Node) -> str:
        if n.op == 'call_module':
            return f'module {n.target!r} ({type(self.modules[n.target]).__name__})'
        if n.op == 'call_method':
            return f'method Tensor.{n.target}'
        name = getattr(n.target, '__name__', str(n.target))
        module = getattr(n.target, '__module__', None) or ''
        return f'function {module + "." if module else ""}{name}'

    def unsupported(self, n: fx.Node, reason: str) -> UnsupportedOpError:
        return UnsupportedOpError(self.describe(n), n.name, reason)
