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
The node's settings as ROS parameters: declared, checked when set, handed to the frames.

Every setting the node kind takes is declared from :mod:`sparse_perception.settings` with its
description, type, range and read-only flag. A value set later (``ros2 param set``, a
parameters file, the node itself) is checked for its type first, so that a refusal names the
parameter and the type it takes, then for range, model and device; accepted settings wait as
pending until the frame worker applies them at its next frame. The read-only ``class_names``,
``joint_names`` and ``skeleton`` describe the model that loaded.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.node import Node
from rclpy.parameter import Parameter
from sparse_perception import settings as st
from sparse_perception.nodes.node_config import (
    change_problem, GATE_PARAMETERS, gate_problem, heads_of, MODEL_INFO_PARAMETERS, ModelCheck,
    NODE_KINDS, NodeKind, parameter_specs, pipeline_settings, settings_from_parameters,
    wrong_type_problem)
from sparse_perception.nodes.ros_interop import (
    descriptor, from_parameter_value, parameter_type, to_parameter_value)


# Array types a command line's `[]` may arrive as.
_ARRAYS = (Parameter.Type.BOOL_ARRAY, Parameter.Type.INTEGER_ARRAY, Parameter.Type.DOUBLE_ARRAY,
           Parameter.Type.BYTE_ARRAY, Parameter.Type.STRING_ARRAY)


class NodeParameters:
    """The settings of one node as its ROS parameters, and the changes not yet applied."""

    def __init__(self, node: Node, kind: NodeKind, model_check: ModelCheck):
        """Hold the parameters of ``node`` (declared by :meth:`declare`)."""
        self._node = node
        self._kind = kind
        self.check_model = model_check  # why a model cannot load, as far as known unloaded
        self._specs = {spec.name: spec for spec in parameter_specs(kind)}
        self._lock = threading.Lock()  # guards settings and _pending between threads
        self._restoring: int | None = None  # the thread putting back what runs (put_back)
        self.settings: st.NodeSettings | None = None  # the values the parameters hold now
        self.heads: tuple[str, ...] = ()
        self._pending: st.PerceptionSettings | None = None  # applied at the next frame

    def declare(self) -> st.NodeSettings:
        """
        Declare every setting and the model's read-only parameters; return the settings.

        Raises :class:`~sparse_perception.settings.SettingError` for a bad value (from a
        parameters file or the command line), naming it.
        """
        self.settings = settings_from_parameters(self._kind, self._declare_settings())
        self.heads = heads_of(self._kind, self.settings)
        self._declare_model_info()
        self._warn_undeclared()
        return self.settings

    def _overrides(self) -> dict | None:
        """
        Return the values given for the node's parameters before it declares them, or None.

        rclpy's Node keeps them in a private dict; another rclpy may not (then None).
        """
        overrides = getattr(self._node, '_parameter_overrides', None)
        return overrides if isinstance(overrides, dict) else None

    def _warn_undeclared(self) -> None:
        """
        Warn of values given for parameters this node does not have (a misspelt name).

        rclpy keeps them unread. Not an error: a parameters file's ``/**`` section may hold
        other nodes' parameters too.
        """
        import difflib

        overrides = self._overrides()
        if overrides is None:
            return
        declared = {name for name in overrides if self._node.has_parameter(name)}
        for name in sorted(set(overrides) - declared):
            if name.startswith('qos_overrides.'):  # read by rclpy when a topic is made
                continue
            nearest = difflib.get_close_matches(name, sorted(self._specs), n=1, cutoff=0.75)
            guess = f': did you mean {nearest[0]!r}?' if nearest else ''
            self._node.get_logger().warning(
                f'parameter {name!r} (from a parameters file or the command line) is not one '
                f"of this node's; ignored{guess}")

    def _declare_settings(self) -> dict[str, Any]:
        self._take_integers_as_doubles()
        values = {}
        for spec in self._specs.values():
            kind = parameter_type(spec)
            try:
                if spec.kind is tuple and not spec.default:
                    # rclpy cannot infer a type from an empty list: declare it typed, unset.
                    declared = self._node.declare_parameter(spec.name, kind, descriptor(spec))
                else:
                    declared = self._node.declare_parameter(
                        spec.name, to_parameter_value(spec, spec.default), descriptor(spec))
            except InvalidParameterValueException as exc:  # out of range: say so, as st does
                given = (self._overrides() or {}).get(spec.name)
                try:
                    st.validate(spec, given.value if isinstance(given, Parameter) else None)
                except st.SettingError as problem:
                    reason = str(problem)
                else:  # (a refusal the settings would not make: rclpy's words)
                    reason = f'{spec.name}: {exc}'
                raise st.SettingError(f'parameter {reason}; fix the parameters file or command '
                                      'line') from None
            except InvalidParameterTypeException as exc:
                # (Integers are taken as doubles where rclpy lets them be: see below.)
                hint = (' (a float needs a decimal point: 12.0, not 12)'
                        if spec.kind is float and self._overrides() is None else '')
                raise st.SettingError(
                    f'parameter {spec.name} must be {kind.name.lower()}: {exc}; fix the '
                    f'parameters file or command line{hint}') from None
            value = declared.value
            if value is None:  # an empty-list default, or `[]` in a parameters file
                value = [] if spec.kind is tuple else spec.default
                if not spec.info.read_only:
                    self._node.set_parameters([Parameter(spec.name, kind, value)])
            values[spec.name] = from_parameter_value(spec, value)
        return values

    def _take_integers_as_doubles(self) -> None:
        """
        Take ``threshold: 12`` in a parameters file (or ``-p``) as 12.0, as a live set does.

        rclpy refuses an integer for a double parameter when it is declared, so the node would
        not start where the replay and a live ``ros2 param set`` take the number. The values
        given wait in the node's overrides until declared; without them (another rclpy) the
        refusal stands, with its hint.
        """
        overrides = self._overrides()
        if overrides is None:
            return
        for spec in self._specs.values():
            given = overrides.get(spec.name)
            if (spec.kind is float and isinstance(given, Parameter)
                    and given.type_ == Parameter.Type.INTEGER):
                overrides[spec.name] = Parameter(spec.name, Parameter.Type.DOUBLE,
                                                 float(given.value))

    def _declare_model_info(self) -> None:
        empty = []
        for head in self.heads:
            for name, description in MODEL_INFO_PARAMETERS[head]:
                kind = (Parameter.Type.INTEGER_ARRAY if name == 'skeleton'
                        else Parameter.Type.STRING_ARRAY)
                self._node.declare_parameter(name, kind, ParameterDescriptor(
                    description=description + ' (set by the node when the model loads)',
                    read_only=True))
                empty.append(Parameter(name, kind, []))
        # Empty, not unset, until a model loads: rclpy's get_parameters service answers
        # nothing at all for a request that names an unset parameter, so `ros2 param dump`
        # of a node that has not loaded its model would show no parameter.
        self._set_model_info(empty)

    def check_types(self, parameters: list[Parameter]) -> tuple[list[Parameter], str | None]:
        """
        Return ``parameters`` with integers for doubles taken as doubles, or why one is refused.

        rclpy checks types before any node callback and refuses a wrong one with its bare type
        codes ("Wrong parameter type, expected '3' got '4'"); checked here first, the reason
        names the parameter and the type it takes.
        """
        checked = []
        for parameter in parameters:
            spec = self._specs.get(parameter.name)
            if spec is None and not self._node.has_parameter(parameter.name):
                # rclpy's own refusal names no parameter ("undeclared parameter(s): []").
                return [], self._undeclared_problem(parameter.name)
            if (spec is None or parameter.type_ == Parameter.Type.NOT_SET
                    or self._node.describe_parameter(parameter.name).read_only):
                checked.append(parameter)  # rclpy's own checks say what is wrong
                continue
            wanted = parameter_type(spec)
            if wanted == Parameter.Type.DOUBLE and parameter.type_ == Parameter.Type.INTEGER:
                # `ros2 param set /node change.threshold 20` sends an integer; take it as 20.0.
                parameter = Parameter(parameter.name, wanted, float(parameter.value))
            elif (wanted == Parameter.Type.STRING_ARRAY and parameter.type_ in _ARRAYS
                  and len(parameter.value) == 0):
                # `ros2 param set /node sparsity.layer_thresholds []` sends an empty array of
                # bools (the command line cannot say of what): the empty list, the default.
                parameter = Parameter(parameter.name, wanted, [])
            elif parameter.type_ != wanted:
                return [], wrong_type_problem(spec, parameter.value)
            checked.append(parameter)
        return checked, None

    def _undeclared_problem(self, name: str) -> str:
        """Say that this node has no parameter ``name``, and which node kinds do."""
        import difflib

        owners = [kind.name for kind in NODE_KINDS.values()
                  if any(spec.name == name for spec in parameter_specs(kind))]
        if owners:
            return (f'{self._node.get_name()} has no parameter {name}: only '
                    f'{" and ".join(owners)} {"runs" if len(owners) == 1 else "run"} what it '
                    'sets')
        nearest = difflib.get_close_matches(name, sorted(self._specs), n=1, cutoff=0.75)
        guess = f'; did you mean {nearest[0]!r}?' if nearest else ''
        return f'{self._node.get_name()} has no parameter {name!r}{guess}'

    def accept(self, parameters: list[Parameter],
               on_change: Callable[[st.NodeSettings], None]) -> SetParametersResult:
        """
        Check new values against the settings (the on-set callback); keep them if they hold.

        ``on_change(settings)`` is called with the new settings, under the same lock, before
        the frames see them.
        """
        changes = {p.name: from_parameter_value(self._specs[p.name], p.value)
                   for p in parameters if p.name in self._specs}
        if not changes:
            return SetParametersResult(successful=True)
        with self._lock:
            try:
                new = st.replace(self.settings, changes)
            except st.SettingError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
            # What runs, put back by the frame thread, is taken as it is: its checks read files
            # (a gate file) that may have gone bad since they were loaded.
            if self._restoring != threading.get_ident():
                problem = change_problem(self.settings, new, self.heads, self.check_model)
                if not problem and GATE_PARAMETERS.intersection(changes):
                    # Set again, even to the same file: say what is wrong with it now.
                    problem = gate_problem(new, self.heads)
                if problem:
                    return SetParametersResult(successful=False, reason=problem)
            self.settings = new
            on_change(new)
            self._pending = pipeline_settings(new)
        return SetParametersResult(successful=True)

    def take_pending(self) -> st.PerceptionSettings | None:
        """Return the pipeline settings changed since the last call, if any."""
        with self._lock:
            pending, self._pending = self._pending, None
        return pending

    def loaded(self, settings: st.PerceptionSettings) -> None:
        """Note that the pipeline was built with ``settings``: they are pending no more."""
        with self._lock:
            if self._pending == settings:
                self._pending = None

    def put_back(self, names: list[str], before: dict[str, Any], failed: dict[str, Any]) -> None:
        """
        Set ``names`` back to their values ``before``, unless set again since.

        After a model change that could not load, ``ros2 param get`` must tell what runs; a
        parameter set meanwhile to another value than the ``failed`` one is left as it is.
        """
        with self._lock:
            current = st.flatten(self.settings)
        values = [Parameter(name, parameter_type(self._specs[name]),
                            to_parameter_value(self._specs[name], before[name]))
                  for name in names if name in self._specs and current[name] == failed[name]]
        if not values:
            return
        # Together: one at a time, each would be checked against the other's failed value (a
        # model and the gate file made for it) and refused.
        self._restoring = threading.get_ident()
        try:
            result = self._node.set_parameters_atomically(values)
        finally:
            self._restoring = None
        if not result.successful:
            self._node.get_logger().error(
                'could not put back ' + ', '.join(v.name for v in values) + ' to the settings '
                f'that run: {result.reason}; those parameters do not tell what runs')

    def publish_model_info(self, pipeline: Any) -> None:
        """Write the loaded model's class and joint names and skeleton into their parameters."""
        values = []
        if 'segmentation' in self.heads:
            values.append(Parameter('class_names', Parameter.Type.STRING_ARRAY,
                                    list(pipeline.class_names)))
        if 'pose' in self.heads:
            values.append(Parameter('joint_names', Parameter.Type.STRING_ARRAY,
                                    list(pipeline.joint_names)))
            values.append(Parameter('skeleton', Parameter.Type.INTEGER_ARRAY,
                                    [int(j) for bone in pipeline.skeleton for j in bone]))
        self._set_model_info(values)

    def _set_model_info(self, values: list[Parameter]) -> None:
        """Set the read-only model parameters ``values``; warn (only) when that fails."""
        try:
            result = _set_own_read_only(self._node, values)
        except (AttributeError, TypeError) as exc:
            self._node.get_logger().warning(
                f'this rclpy cannot update the read-only model parameters ({exc!r}); '
                f'{", ".join(p.name for p in values)} may be stale')
            return
        if not result.successful:
            self._node.get_logger().warning(
                f'could not publish the model names: {result.reason}')


def _set_own_read_only(node: Node, values: list[Parameter]) -> SetParametersResult:
    """
    Set read-only parameters of ``node`` from the node itself, publishing the parameter event.

    rclpy has no public way for a node to change its own read-only parameter (set_parameters,
    set_descriptor and undeclare_parameter all refuse one). Its internal setter that applies
    descriptors, as declare_parameter does, skips the read-only check; Jazzy and Kilted call it
    _set_parameters_atomically_common (tested here), Humble's _set_parameters_atomically is
    believed to take the same arguments (not tested here). This is the one place the node
    uses rclpy's private API; a changed signature raises AttributeError or TypeError, which
    the caller reports.
    """
    descriptors = {p.name: node.describe_parameter(p.name) for p in values}
    setter = getattr(node, '_set_parameters_atomically_common', None)
    return (setter or node._set_parameters_atomically)(values, descriptors)
