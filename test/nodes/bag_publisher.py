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
Replay the bundled clip onto a topic from a process of its own (the two-process test).

The bag's serialized CompressedImages are published as they are (rclpy publishes CDR bytes),
with their recorded header stamps, once a subscriber is there. Prints how many it sent.

Usage: python test/nodes/bag_publisher.py TOPIC [--rate HZ] [--subscribers N] [--timeout S]
"""

import argparse
from pathlib import Path
import sys
import time

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # test/, for clip

import clip  # noqa: E402
import rclpy  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CompressedImage  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument('topic')
    parser.add_argument('--rate', type=float, default=10.0)
    parser.add_argument('--subscribers', type=int, default=1)
    parser.add_argument('--timeout', type=float, default=30.0)
    args = parser.parse_args()
    rclpy.init()
    node = rclpy.create_node('bag_publisher')
    # Reliable, like `ros2 bag play`: it matches best-effort and reliable subscribers.
    publisher = node.create_publisher(
        CompressedImage, args.topic, QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    end = time.monotonic() + args.timeout
    while publisher.get_subscription_count() < args.subscribers:
        if time.monotonic() > end:
            print(f'no subscriber on {args.topic} after {args.timeout} s', file=sys.stderr)
            return 1
        rclpy.spin_once(node, timeout_sec=0.05)
    sent = 0
    for _, _, raw in clip.records():
        publisher.publish(raw)
        sent += 1
        time.sleep(1.0 / args.rate)
    time.sleep(0.5)  # let the last messages leave before the participant goes
    print(f'sent {sent}')
    node.destroy_node()
    rclpy.shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
