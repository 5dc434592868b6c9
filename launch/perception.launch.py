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

Declarative only (the tests read this file without launch installed): arguments, one node.
Parameters come from params_file first (its section for the chosen node); the launch arguments
below override it.

    ros2 launch sparse_perception perception.launch.py camera_topic:=/camera/image_raw
    ros2 launch sparse_perception perception.launch.py heads:='[segmentation]' namespace:=front
    ros2 launch sparse_perception perception.launch.py node:=pose_node
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    """Return the launch description: the arguments and the node."""
    return LaunchDescription([
        DeclareLaunchArgument(
            'node', default_value='perception_node',
            choices=['perception_node', 'segmentation_node', 'pose_node'],
            description='Node to run, also its name: perception_node (segmentation and pose on '
                        'one decoded frame), segmentation_node or pose_node'),
        DeclareLaunchArgument(
            'camera_topic', default_value='image',
            description='Camera base topic (sensor_msgs/Image); the compressed transport '
                        "reads '<camera_topic>/compressed'"),
        DeclareLaunchArgument(
            'transport', default_value='raw', choices=['raw', 'compressed'],
            description='raw: sensor_msgs/Image; compressed: sensor_msgs/CompressedImage'),
        DeclareLaunchArgument(
            'namespace', default_value='',
            description='Namespace of the node and its topics (empty: none)'),
        DeclareLaunchArgument(
            'heads', default_value='[segmentation, pose]',
            description='Heads perception_node runs on the one decoded frame: a list of '
                        'segmentation, pose (the other nodes run their one head)'),
        DeclareLaunchArgument(
            'params_file',
            default_value=PathJoinSubstitution(
                [FindPackageShare('sparse_perception'), 'config', 'perception.yaml']),
            description='ROS parameters file (node_name: ros__parameters:) for the node'),
        DeclareLaunchArgument(
            'use_sim_time', default_value='false', choices=['true', 'false'],
            description='Use the /clock topic (bag replay) instead of the system clock'),
        DeclareLaunchArgument(
            'log_level', default_value='info',
            choices=['debug', 'info', 'warn', 'error', 'fatal'],
            description='Logging level of the node'),
        Node(
            package='sparse_perception',
            executable=LaunchConfiguration('node'),
            name=LaunchConfiguration('node'),
            namespace=LaunchConfiguration('namespace'),
            parameters=[
                LaunchConfiguration('params_file'),
                {
                    'use_sim_time': LaunchConfiguration('use_sim_time'),
                    'input.topic': LaunchConfiguration('camera_topic'),
                    'input.transport': LaunchConfiguration('transport'),
                    'node.heads': LaunchConfiguration('heads'),
                },
            ],
            arguments=['--ros-args', '--log-level', LaunchConfiguration('log_level')],
            output='screen',
            emulate_tty=True,
        ),
    ])
