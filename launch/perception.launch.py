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
Launch one perception node on one camera: perception_node, segmentation_node or pose_node.

Declarative only (the tests read this file without launch installed): arguments, then the
parameters and one node in a scope of their own. Parameters come from params_file (its
section for the chosen node); camera_topic, transport, heads and use_sim_time override it
where given, and leave what the file says (or the node's default) where not.

    ros2 launch sparse_perception perception.launch.py camera_topic:=/camera/image_raw
    ros2 launch sparse_perception perception.launch.py heads:='[segmentation]' namespace:=front
    ros2 launch sparse_perception perception.launch.py node:=pose_node params_file:=my.yaml
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, GroupAction
from launch.conditions import IfCondition
from launch.substitutions import (LaunchConfiguration, NotEqualsSubstitution,
                                  PathJoinSubstitution)
from launch_ros.actions import Node, SetParameter, SetParametersFromFile
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    """Return the launch description: the arguments, the parameters and the node."""
    return LaunchDescription([
        DeclareLaunchArgument(
            'node', default_value='perception_node',
            choices=['perception_node', 'segmentation_node', 'pose_node'],
            description='Node to run, also its name: perception_node (segmentation and pose on '
                        'one decoded frame), segmentation_node or pose_node'),
        DeclareLaunchArgument(
            'camera_topic', default_value='',
            description='Camera base topic (sensor_msgs/Image); the compressed transport '
                        "reads '<camera_topic>/compressed' (empty: params_file's input.topic, "
                        "else 'image')"),
        DeclareLaunchArgument(
            'transport', default_value='', choices=['', 'raw', 'compressed'],
            description='raw: sensor_msgs/Image; compressed: sensor_msgs/CompressedImage '
                        "(empty: params_file's input.transport, else raw)"),
        DeclareLaunchArgument(
            'namespace', default_value='',
            description='Namespace of the node and its topics (empty: none)'),
        DeclareLaunchArgument(
            'heads', default_value='',
            description='Heads perception_node runs on the one decoded frame: a list of '
                        'segmentation, pose (the other nodes run their one head; empty: '
                        "params_file's node.heads, else [segmentation, pose])"),
        DeclareLaunchArgument(
            'params_file',
            default_value=PathJoinSubstitution(
                [FindPackageShare('sparse_perception'), 'config', 'perception.yaml']),
            description='ROS parameters file (node_name: ros__parameters:) for the node'),
        DeclareLaunchArgument(
            'use_sim_time', default_value='', choices=['', 'true', 'false'],
            description='Use the /clock topic (bag replay) instead of the system clock (empty: '
                        "params_file's use_sim_time, else false)"),
        DeclareLaunchArgument(
            'log_level', default_value='info',
            choices=['debug', 'info', 'warn', 'error', 'fatal'],
            description='Logging level of the node'),
        # The file first, then the arguments given: the node reads them in this order, the
        # later winning. An argument left empty sets nothing, so the file's value stands.
        # Scoped: these are launch-wide parameters, which would otherwise reach every node a
        # launch file including this one starts after it.
        GroupAction(scoped=True, actions=[
            SetParametersFromFile(LaunchConfiguration('params_file')),
            SetParameter('input.topic', LaunchConfiguration('camera_topic'),
                         condition=IfCondition(NotEqualsSubstitution(
                             LaunchConfiguration('camera_topic'), ''))),
            SetParameter('input.transport', LaunchConfiguration('transport'),
                         condition=IfCondition(NotEqualsSubstitution(
                             LaunchConfiguration('transport'), ''))),
            # As written on the command line ('[pose]'): launch would make the list a tuple.
            SetParameter('node.heads',
                         ParameterValue(LaunchConfiguration('heads'), value_type=str),
                         condition=IfCondition(NotEqualsSubstitution(
                             LaunchConfiguration('heads'), ''))),
            SetParameter('use_sim_time',
                         ParameterValue(LaunchConfiguration('use_sim_time'), value_type=bool),
                         condition=IfCondition(NotEqualsSubstitution(
                             LaunchConfiguration('use_sim_time'), ''))),
            Node(
                package='sparse_perception',
                executable=LaunchConfiguration('node'),
                name=LaunchConfiguration('node'),
                namespace=LaunchConfiguration('namespace'),
                arguments=['--ros-args', '--log-level', LaunchConfiguration('log_level')],
                output='screen',
                emulate_tty=True,
            ),
        ]),
    ])
