#!/usr/bin/env python3
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
How many raw images arrive from another process, per reliability and image size.

What the transport delivers, with no perception node involved: a plain rclpy publisher sends
bgr8 sensor_msgs/Image frames at a camera's pace to a plain rclpy subscriber in another
process on the same machine, and the subscriber counts what arrives. For each image size,
publisher and subscriber reliability, and number of busy processes beside them (Python loops
that never sleep, at the lowest priority), and once with the publisher's Fast DDS
shared-memory segment raised above the frame size (a profile file).

Usage (from the repository root, with the ros-test extra installed, i.e. after ./scripts/test)::

    # writes bench/results/best_effort_delivery.{json,md}
    nice -n 19 .venv/bin/python bench/best_effort_delivery.py
    .venv/bin/python bench/best_effort_delivery.py --frames 5 --output /tmp/quick
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
from pathlib import Path
import platform
import random
import subprocess
import sys
import tempfile
import time

from sparse_perception.evaluation.provenance import cpu_model
from sparse_perception.output_files import check_outputs, OutputError, report_pair, write_atomic

TOPIC = '/best_effort_delivery/image'
SIZES = ((768, 576), (256, 192))
QOS = (('best_effort', 'best_effort'), ('reliable', 'best_effort'), ('reliable', 'reliable'))
BUSY = (0, 2)
# The publisher's shared-memory segment for the last case: above a 768x576 bgr8 frame (1.3 MB).
SEGMENT_BYTES = 16 * 2**20
PROFILE = f"""<?xml version="1.0" encoding="UTF-8"?>
<profiles xmlns="http://www.eprosima.com">
  <transport_descriptors>
    <transport_descriptor>
      <transport_id>large_shm</transport_id>
      <type>SHM</type>
      <segment_size>{SEGMENT_BYTES}</segment_size>
    </transport_descriptor>
    <transport_descriptor>
      <transport_id>udp</transport_id>
      <type>UDPv4</type>
    </transport_descriptor>
  </transport_descriptors>
  <participant profile_name="large_shm" is_default_profile="true">
    <rtps>
      <userTransports>
        <transport_id>large_shm</transport_id>
        <transport_id>udp</transport_id>
      </userTransports>
      <useBuiltinTransports>false</useBuiltinTransports>
    </rtps>
  </participant>
</profiles>
"""


def _qos(reliability: str):
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    policy = (ReliabilityPolicy.RELIABLE if reliability == 'reliable'
              else ReliabilityPolicy.BEST_EFFORT)
    return QoSProfile(depth=1, reliability=policy)


def subscribe(reliability: str, seconds: float) -> None:
    """Count the frames that arrive within ``seconds``; print the count (the child process)."""
    import rclpy
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node('best_effort_delivery_subscriber')
    stamps = set()
    node.create_subscription(Image, TOPIC, lambda m: stamps.add(m.header.stamp.sec),
                             _qos(reliability))
    print('ready', flush=True)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.05)
    print(json.dumps(len(stamps)), flush=True)
    node.destroy_node()
    rclpy.shutdown()


def _busy(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen(['nice', '-n', '19', sys.executable, '-c', 'while True: pass'])
            for _ in range(count)]


def _case(size, publisher_qos, subscriber_qos, busy, frames, period, profile=None) -> int:
    """Publish ``frames`` frames from a child process to another; return how many arrived."""
    env = dict(os.environ)
    # A domain of its own: no other graph on this machine can add to or take from the count.
    env['ROS_DOMAIN_ID'] = str(random.SystemRandom().randint(150, 200))
    env['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    subscriber = subprocess.Popen(
        [sys.executable, __file__, '--subscribe', subscriber_qos,
         '--seconds', str(10.0 + frames * period)],
        env=env, stdout=subprocess.PIPE, text=True)
    loops = _busy(busy)
    try:
        assert subscriber.stdout.readline().strip() == 'ready'
        publisher_env = dict(env)
        if profile:
            publisher_env['FASTDDS_DEFAULT_PROFILES_FILE'] = profile
        subprocess.run([sys.executable, __file__, '--publish', publisher_qos, '--size',
                        f'{size[0]}x{size[1]}', '--frames', str(frames), '--period', str(period)],
                       env=publisher_env, check=True)
        return json.loads(subscriber.stdout.readline())
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()
        subscriber.kill()
        subscriber.wait()


def publish(reliability: str, size: str, frames: int, period: float) -> None:
    """Send ``frames`` frames once the subscriber is matched (the child process)."""
    import rclpy
    from sensor_msgs.msg import Image

    width, height = (int(v) for v in size.split('x'))
    rclpy.init()
    node = rclpy.create_node('best_effort_delivery_publisher')
    publisher = node.create_publisher(Image, TOPIC, _qos(reliability))
    end = time.monotonic() + 30.0
    while publisher.get_subscription_count() == 0 and time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.1)
    rclpy.spin_once(node, timeout_sec=1.0)  # let the subscriber's side finish matching too
    msg = Image(height=height, width=width, encoding='bgr8', step=3 * width,
                data=bytes(3 * width * height))
    for index in range(frames):
        msg.header.stamp.sec = index
        publisher.publish(msg)
        rclpy.spin_once(node, timeout_sec=period)
    rclpy.spin_once(node, timeout_sec=2.0)  # a reliable publisher may still be repairing
    node.destroy_node()
    rclpy.shutdown()


def _versions() -> dict:
    from importlib import metadata

    out = {'python': platform.python_version()}
    for name in ('ros-kilted-rclpy', 'ros-rmw-fastrtps-cpp', 'ros-fastdds'):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    out['rmw'] = os.environ.get('RMW_IMPLEMENTATION', 'default (rmw_fastrtps_cpp)')
    return out


def _git_commit() -> str:
    done = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True,
                          text=True, cwd=Path(__file__).parent)
    return done.stdout.strip() or 'unknown'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--frames', type=int, default=20)
    parser.add_argument('--period', type=float, default=0.5, help='seconds between frames')
    parser.add_argument('--output', type=Path,
                        default=Path(__file__).parent / 'results' / 'best_effort_delivery')
    parser.add_argument('--subscribe', help=argparse.SUPPRESS)
    parser.add_argument('--publish', help=argparse.SUPPRESS)
    parser.add_argument('--size', help=argparse.SUPPRESS)
    parser.add_argument('--seconds', type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    json_path, markdown_path = report_pair(args.output)
    if not (args.subscribe or args.publish):
        try:  # before the measuring
            check_outputs([('--output (.json)', json_path), ('--output (.md)', markdown_path)],
                          create_folders=True)
        except OutputError as exc:
            parser.error(str(exc))
    if args.subscribe:
        subscribe(args.subscribe, args.seconds)
        return 0
    if args.publish:
        publish(args.publish, args.size, args.frames, args.period)
        return 0

    rows = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as scratch:
        profile = Path(scratch) / 'large_shm.xml'
        profile.write_text(PROFILE)
        cases = [(size, qos, busy, None) for size in SIZES for qos in QOS for busy in BUSY]
        cases += [(SIZES[0], QOS[0], busy, str(profile)) for busy in BUSY]
        for size, (publisher_qos, subscriber_qos), busy, case_profile in cases:
            arrived = _case(size, publisher_qos, subscriber_qos, busy, args.frames, args.period,
                            case_profile)
            row = {'size': f'{size[0]}x{size[1]}',
                   'megabytes': round(3 * size[0] * size[1] / 1e6, 2),
                   'publisher': publisher_qos, 'subscriber': subscriber_qos, 'busy': busy,
                   'publisher_segment': f'{SEGMENT_BYTES // 2**20} MB' if case_profile
                   else 'default', 'sent': args.frames, 'arrived': arrived}
            print(row, flush=True)
            rows.append(row)
    result = {
        'measured': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
        'machine': f'{cpu_model()} ({os.cpu_count()} cores visible)',
        'load_average_before_after': [[round(v, 2) for v in load]
                                      for load in (load_before, os.getloadavg())],
        'git_commit': _git_commit(), 'period_s': args.period, 'versions': _versions(),
        'rows': rows,
    }
    write_atomic(json_path, json.dumps(result, indent=2) + '\n')
    lines = [
        '# Raw images delivered between two processes (bench/best_effort_delivery.py)', '',
        f"Measured {result['measured']} on {result['machine']} at git {result['git_commit']}, "
        f"load average before/after {result['load_average_before_after']}; "
        f'{args.frames} frames at one every {args.period} s from a plain rclpy publisher to a '
        'plain rclpy subscriber in another process (keep last 1).', '',
        '| size | publisher | subscriber | busy processes | publisher shared-memory segment '
        '| arrived |', '|---|---|---|---|---|---|']
    for row in rows:
        lines.append(f"| {row['size']} ({row['megabytes']} MB) | {row['publisher']} | "
                     f"{row['subscriber']} | {row['busy']} | {row['publisher_segment']} | "
                     f"{row['arrived']} of {row['sent']} |")
    lines += ['', 'Versions: ' + ', '.join(f'{k} {v}' for k, v in result['versions'].items()),
              '']
    write_atomic(markdown_path, '\n'.join(lines))
    return 0


if __name__ == '__main__':
    sys.exit(main())
