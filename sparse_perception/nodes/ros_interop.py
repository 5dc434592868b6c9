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
Translations between the pure core and ROS types, shared by the nodes.

Setting specs -> parameter descriptors and values, QoS names -> QoS profiles, health reports ->
DiagnosticArray, marker geometry -> MarkerArray, graph endpoint info -> PublisherInfo. No
decisions are made here; they live in the pure modules.
"""

from __future__ import annotations

from typing import Any, Sequence

from builtin_interfaces.msg import Duration
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sparse_perception.nodes.health import HealthReport
from sparse_perception.nodes.markers import PersonMarkers
from sparse_perception.nodes.node_config import RELOADS
from sparse_perception.nodes.stream import PublisherInfo
from sparse_perception.settings import SettingSpec
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

PARAMETER_TYPES = {
    bool: Parameter.Type.BOOL,
    int: Parameter.Type.INTEGER,
    float: Parameter.Type.DOUBLE,
    str: Parameter.Type.STRING,
    tuple: Parameter.Type.STRING_ARRAY,
}


def parameter_type(spec: SettingSpec) -> Parameter.Type:
    """Return the ROS parameter type of a setting."""
    return PARAMETER_TYPES[spec.kind]


def descriptor(spec: SettingSpec) -> ParameterDescriptor:
    """Return the parameter descriptor of a setting: description, type, range, read-only."""
    info = spec.info
    result = ParameterDescriptor(
        name=spec.name, type=parameter_type(spec).value, description=info.description,
        read_only=info.read_only)
    constraints = (['one of: ' + ', '.join(info.choices)] if info.choices else []) + (
        [RELOADS] if info.reload and not info.read_only else [])
    if constraints:  # (`ros2 param describe` shows them as Constraints)
        result.additional_constraints = '; '.join(constraints)
    if spec.kind is float and info.low is not None and info.high is not None:
        result.floating_point_range = [FloatingPointRange(
            from_value=float(info.low), to_value=float(info.high), step=0.0)]
    elif spec.kind is int and info.low is not None and info.high is not None:
        result.integer_range = [IntegerRange(
            from_value=int(info.low), to_value=int(info.high), step=1)]
    return result


def to_parameter_value(spec: SettingSpec, value: Any) -> Any:
    """Return a setting value as rclpy wants it (lists for string arrays)."""
    return list(value) if spec.kind is tuple else value


def from_parameter_value(spec: SettingSpec, value: Any) -> Any:
    """Return a parameter value as the settings hold it (tuples for string arrays)."""
    return tuple(value) if spec.kind is tuple and value is not None else value


_RELIABILITY = {'best_effort': ReliabilityPolicy.BEST_EFFORT,
                'reliable': ReliabilityPolicy.RELIABLE}


def input_qos(reliability: str, depth: int) -> QoSProfile:
    """Return the image subscription's QoS: keep last ``depth``, volatile."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=_RELIABILITY[reliability],
                      durability=DurabilityPolicy.VOLATILE)


# Outputs kept for a reliable subscriber that has not acknowledged them yet. With 1, each new
# mask replaced one still in flight, and a reliable subscriber lost some; a few frames cover the
# round trip without holding a stale backlog (keep-last never blocks the publisher).
OUTPUT_DEPTH = 5


def output_qos() -> QoSProfile:
    """
    Return the output publishers' QoS: reliable, keep last OUTPUT_DEPTH, volatile.

    A reliable publisher matches reliable and best-effort subscribers alike (RViz, Foxglove,
    `ros2 topic echo`).
    """
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=OUTPUT_DEPTH,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


def _policy_name(policy: Any) -> str:
    name = getattr(policy, 'name', str(policy))
    return name.lower()


def publisher_info(endpoint: Any) -> PublisherInfo:
    """Convert an rclpy TopicEndpointInfo of a publisher."""
    node = endpoint.node_namespace.rstrip('/') + '/' + endpoint.node_name
    qos = endpoint.qos_profile
    return PublisherInfo(node, endpoint.topic_type, _policy_name(qos.reliability),
                         _policy_name(qos.durability))


def diagnostic_array(report: HealthReport, name: str, hardware_id: str,
                     stamp: Any) -> DiagnosticArray:
    """Return a one-status DiagnosticArray for ``report``."""
    status = DiagnosticStatus(
        level=bytes([int(report.level)]), name=name, message=report.message,
        hardware_id=hardware_id,
        values=[KeyValue(key=key, value=value) for key, value in report.values])
    array = DiagnosticArray(status=[status])
    array.header.stamp = stamp
    return array


def marker_array(people: Sequence[PersonMarkers], header: Any, namespace: str) -> MarkerArray:
    """
    Return RViz markers for ``people``: joints as spheres and bones as lines, per person.

    The first marker deletes every earlier one of this namespace, so that people who left the
    image vanish.
    """
    markers = [Marker(header=header, ns=namespace, action=Marker.DELETEALL)]
    for person in people:
        colour = ColorRGBA(r=person.colour[0], g=person.colour[1], b=person.colour[2], a=1.0)
        joints = Marker(header=header, ns=namespace, id=2 * person.person,
                        type=Marker.SPHERE_LIST, action=Marker.ADD,
                        lifetime=Duration(sec=1), color=ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0))
        joints.pose.orientation.w = 1.0
        joints.scale.x = joints.scale.y = joints.scale.z = 0.02
        joints.points = [Point(x=float(x), y=float(y), z=float(z)) for x, y, z in person.joints]
        bones = Marker(header=header, ns=namespace, id=2 * person.person + 1,
                       type=Marker.LINE_LIST, action=Marker.ADD, lifetime=Duration(sec=1),
                       color=colour)
        bones.pose.orientation.w = 1.0
        bones.scale.x = 0.01
        bones.points = [Point(x=float(x), y=float(y), z=float(z))
                        for segment in person.bones for x, y, z in segment]
        markers += [joints, bones]
    return MarkerArray(markers=markers)
