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

"""The harness the ros and launch tiers drive nodes with: one executor and a test node."""

import itertools
import os
import time

_namespaces = itertools.count()
# Namespaces unique to this test run too: two runs that drew the same ROS_DOMAIN_ID on one
# machine must not see each other's topics.
UNIQUE = f't{os.getpid()}'


class Harness:
    """
    One executor spinning the nodes under test and a test node that talks to them.

    Everything runs in the test's thread except the nodes' own processing threads; waiting is
    always for a condition, with a generous timeout, never a fixed sleep standing in for one.
    """

    def __init__(self, context):
        from rcl_interfaces.msg import Log
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node

        self.context = context
        self.executor = SingleThreadedExecutor(context=context)
        self.node = Node(f'harness_{next(_namespaces)}', context=context)
        self.executor.add_node(self.node)
        self.nodes = []
        self.logs = []
        self.node.create_subscription(Log, '/rosout', self.logs.append, 1000)

    def add(self, node):
        self.executor.add_node(node)
        self.nodes.append(node)
        return node

    def make(self, kind, params=None, factory=None, **kwargs):
        """Construct a node of ``kind`` in a fresh namespace, ``params`` overriding defaults."""
        import pipeline_double
        from rclpy.parameter import Parameter
        from sparse_perception.nodes.perception_node import PerceptionNode

        overrides = [Parameter(name, value=value) for name, value in (params or {}).items()]
        kwargs.setdefault('model_check', pipeline_double.model_problem)
        node = PerceptionNode(kind, pipeline_factory=factory or pipeline_double.factory(),
                              context=self.context, namespace=f'/{UNIQUE}_{next(_namespaces)}',
                              parameter_overrides=overrides, **kwargs)
        return self.add(node)

    def spin_until(self, condition, timeout=10.0):
        """Spin until ``condition()`` holds; return its last value."""
        end = time.monotonic() + timeout
        while not condition() and time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.02)
        return condition()

    def spin_for(self, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.02)

    def collect(self, msg_type, topic, qos=None):
        """Subscribe to ``topic`` and return the list its messages are appended to."""
        from rclpy.qos import QoSProfile

        received = []
        self.node.create_subscription(msg_type, topic, received.append,
                                      qos or QoSProfile(depth=100))
        return received

    def log_lines(self, node, level=None):
        """Return the texts ``node`` logged to /rosout (at ``level`` if given)."""
        name = node.get_fully_qualified_name().lstrip('/').replace('/', '.')
        return [m.msg for m in self.logs
                if m.name == name and (level is None or m.level == level)]

    def close(self):
        for node in self.nodes:
            self.executor.remove_node(node)
            node.destroy_node()
        self.nodes.clear()
        self.executor.remove_node(self.node)
        self.node.destroy_node()
        self.executor.shutdown()
