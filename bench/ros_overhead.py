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
What the ROS edge costs per frame: conversion and publishing around the pipeline.

The target is below 2 ms per frame for 640x480 and 1280x720 on two CPU cores. This measures
the real node's own code on real rclpy, with the model left out (a fixed result stands in for
the pipeline, since the model's cost is not the ROS edge's):

- receive: rclpy deserializing a bgr8 sensor_msgs/Image (what the executor does on take);
- decode: the node turning it into (H, W, 3) RGB (image_to_numpy, bgr8 -> rgb8);
- publish: the node building and publishing the mask (mono8 Image) and the keypoint
  PointCloud2 (5 people x 17 joints), each to a subscriber in another node of this process
  (the publish call's cost; delivery to another process happens in DDS's own threads);
- total: the three together, timed as one, which is the figure the target is about.

For context, not part of the target: the same with a JPEG CompressedImage as input (decoding
a JPEG is inherent to the compressed transport), and the lazy debug topics (overlay,
change map, markers) while someone subscribes.

Usage (from the repository root, with the ros-test extra installed, i.e. after ./scripts/test)::

    .venv/bin/python bench/ros_overhead.py            # writes bench/results/ros_overhead.{json,md}
    .venv/bin/python bench/ros_overhead.py --frames 50 --output /tmp/quick

Timings on a shared or busy machine are noisy; the results record the load average.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
from pathlib import Path
import sys
import threading
import time

import numpy as np
from sparse_perception.evaluation import provenance
from sparse_perception.evaluation.stats import median, percentile
from sparse_perception.output_files import check_outputs, OutputError, report_pair, write_atomic

SIZES = ((640, 480), (1280, 720))
PEOPLE, JOINTS = 5, 17


def _versions() -> dict:
    found = provenance.versions(('python', 'numpy', 'cv2', 'rclpy', 'ros-kilted-rclpy',
                                 'ros-rmw-fastrtps-cpp'))
    out = {name: version for name, version in found.items() if version is not None}
    out['rmw'] = os.environ.get('RMW_IMPLEMENTATION', 'default (rmw_fastrtps_cpp)')
    return out


class FixedPipeline:
    """Stands in for the model: returns one precomputed result for every frame."""

    def __init__(self, result):
        self.result = result
        self.class_names = tuple(f'class{i}' for i in range(21))
        self.joint_names = tuple(f'joint{i}' for i in range(JOINTS))
        self.skeleton = tuple((i, i + 1) for i in range(JOINTS - 1))

    def process(self, image):
        return self.result

    def update(self, settings):
        pass

    def reset(self):
        pass

    def close(self):
        pass


def _result(width: int, height: int, rng: np.random.Generator):
    from sparse_perception.results import (
        FrameResult, HeadStats, PipelineStats, PoseResult, SegmentationResult)

    mask = rng.integers(0, 21, (height, width), dtype=np.uint8)
    keypoints = np.zeros((PEOPLE, JOINTS, 3), np.float32)
    keypoints[..., 0] = rng.uniform(0, width - 1, (PEOPLE, JOINTS))
    keypoints[..., 1] = rng.uniform(0, height - 1, (PEOPLE, JOINTS))
    keypoints[..., 2] = rng.uniform(0, 1, (PEOPLE, JOINTS))
    tiles = rng.random((-(-height // 16), -(-width // 16))) < 0.05
    head = HeadStats(0.05, 1, 20, False, 1.0)
    return FrameResult(
        SegmentationResult(mask, tuple(f'class{i}' for i in range(21))),
        PoseResult(keypoints, tuple(f'joint{i}' for i in range(JOINTS)),
                   tuple((i, i + 1) for i in range(JOINTS - 1))),
        tiles, 16, PipelineStats(0.05, {'segmentation': head, 'pose': head}, 2.0))


def _summary(samples: list[float]) -> dict:
    values = np.array(samples) * 1e3
    return {'median_ms': round(median(values), 3),
            'p90_ms': round(percentile(values, 90), 3),
            'min_ms': round(float(values.min()), 3)}


def measure(frames: int, warmup: int) -> dict:
    """Time every stage for every size; return {size: {stage: summary}}."""
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import CompressedImage, Image, PointCloud2
    from std_msgs.msg import Header
    from visualization_msgs.msg import MarkerArray

    from sparse_perception import settings
    from sparse_perception.media.images import numpy_to_compressed, numpy_to_image
    from sparse_perception.nodes.perception_node import PerceptionNode

    context = Context()
    rclpy.init(context=context)
    executor = SingleThreadedExecutor(context=context)
    rng = np.random.default_rng(0)
    results = {}
    try:
        for width, height in SIZES:
            result = _result(width, height, rng)
            node = PerceptionNode(
                pipeline_factory=lambda settings, heads: FixedPipeline(result),
                model_check=lambda head, value, settings: None,  # it loads no model
                context=context, namespace='/bench', parameter_overrides=[
                    Parameter('model.segmentation', value='fixed'),
                    Parameter('model.pose', value='fixed'),
                    Parameter('node.warmup_frames', value=0)])
            listener = rclpy.create_node('bench_listener', context=context)
            received = {'mask': 0, 'keypoints': 0}

            def count(topic):
                def callback(_):
                    received[topic] += 1
                return callback

            for topic, msg_type in (('mask', Image), ('keypoints', PointCloud2)):
                listener.create_subscription(msg_type, f'/bench/perception_node/{topic}',
                                             count(topic), 10)
            executor.add_node(listener)
            output = node.parameters.settings.output
            spinner = threading.Thread(target=executor.spin, daemon=True)
            spinner.start()
            deadline = time.monotonic() + 10
            while (node.outputs.publishers['mask'].get_subscription_count() < 1
                   or node.outputs.publishers['keypoints'].get_subscription_count() < 1):
                if time.monotonic() > deadline:
                    raise RuntimeError('the listener never matched the publishers')
                time.sleep(0.01)

            pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            header = Header(frame_id='camera')
            header.stamp.sec = 1
            raw_bytes = serialize_message(numpy_to_image(pixels, 'bgr8', header,
                                                         msg_type=Image))
            jpeg_bytes = serialize_message(numpy_to_compressed(
                pixels, 'jpeg', header, msg_type=CompressedImage, quality=90))
            stages = {name: [] for name in ('receive', 'decode', 'publish', 'total',
                                            'compressed_total', 'debug_topics')}

            for index in range(warmup + frames):
                keep = index >= warmup
                t0 = time.perf_counter()
                msg = deserialize_message(raw_bytes, Image)
                t1 = time.perf_counter()
                image = node.worker.decode(msg)
                t2 = time.perf_counter()
                node.outputs.publish_result(msg.header, image, result, output)
                t3 = time.perf_counter()
                if keep:
                    stages['receive'].append(t1 - t0)
                    stages['decode'].append(t2 - t1)
                    stages['publish'].append(t3 - t2)
                    stages['total'].append(t3 - t0)

            # Compressed input: the same node code with the compressed transport.
            node.parameters.settings = settings.replace(
                node.parameters.settings, {'input.transport': 'compressed'})
            for index in range(warmup + frames):
                t0 = time.perf_counter()
                msg = deserialize_message(jpeg_bytes, CompressedImage)
                image = node.worker.decode(msg)
                node.outputs.publish_result(msg.header, image, result, output)
                if index >= warmup:
                    stages['compressed_total'].append(time.perf_counter() - t0)

            # Debug topics while subscribed: overlay, change map and markers on top.
            for topic, msg_type in (('overlay', Image), ('change_map', Image),
                                    ('keypoint_markers', MarkerArray)):
                listener.create_subscription(msg_type, f'/bench/perception_node/{topic}',
                                             lambda _: None, 10)
            deadline = time.monotonic() + 10
            while not all(node.outputs.subscribed(t)
                          for t in ('overlay', 'change_map', 'keypoint_markers')):
                if time.monotonic() > deadline:
                    raise RuntimeError('debug topic subscribers never matched')
                time.sleep(0.01)
            image = node.worker.decode(deserialize_message(jpeg_bytes, CompressedImage))
            for index in range(warmup + frames):
                t0 = time.perf_counter()
                node.outputs.publish_result(header, image, result, output)
                if index >= warmup:
                    stages['debug_topics'].append(time.perf_counter() - t0)

            executor.shutdown(timeout_sec=0)
            spinner.join(timeout=5)
            executor = SingleThreadedExecutor(context=context)
            listener.destroy_node()
            node.destroy_node()
            results[f'{width}x{height}'] = {
                **{name: _summary(values) for name, values in stages.items()},
                'delivered': dict(received)}
    finally:
        rclpy.shutdown(context=context)
    return results


def _markdown(report: dict) -> str:
    lines = [
        '# ROS edge overhead per frame (bench/ros_overhead.py)', '',
        f"Measured {report['date']} on {report['machine']['cpu']} "
        f"({report['machine']['cores']} cores visible, load average before/after "
        f"{report['machine']['load_before']} / {report['machine']['load_after']}), "
        f"{report['frames']} frames per figure after {report['warmup']} warm-up frames, "
        f"commit {report['machine'].get('commit') or 'unknown'}.", '',
        'Target: total below 2 ms. Median (p90) in ms; the model is left out.', '',
        '| stage | ' + ' | '.join(report['results']) + ' |',
        '|---|' + '---|' * len(report['results']),
    ]
    labels = {
        'receive': 'receive: rclpy deserializes a bgr8 Image',
        'decode': 'decode: Image -> RGB array',
        'publish': 'publish: mask Image + keypoint PointCloud2',
        'total': '**total (raw input)**',
        'compressed_total': 'total with a JPEG CompressedImage input (context)',
        'debug_topics': 'debug topics while subscribed: overlay + change map + markers',
    }
    for stage, label in labels.items():
        cells = [f"{r[stage]['median_ms']:.2f} ({r[stage]['p90_ms']:.2f})"
                 for r in report['results'].values()]
        lines.append(f'| {label} | ' + ' | '.join(cells) + ' |')
    lines += ['', 'Versions: ' + ', '.join(f'{k} {v}' for k, v in report['versions'].items()),
              '', report['note'], '']
    return '\n'.join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--frames', type=int, default=300, help='timed frames per size')
    parser.add_argument('--warmup', type=int, default=30, help='untimed frames first')
    parser.add_argument('--output', type=Path,
                        default=Path(__file__).resolve().parent / 'results' / 'ros_overhead',
                        help='path without suffix for the .json and .md results')
    parser.add_argument('--note', default='',
                        help='a sentence on the conditions, stored with the results')
    args = parser.parse_args()
    if args.frames < 1 or args.warmup < 0:
        parser.error('--frames must be at least 1 and --warmup at least 0')
    json_path, markdown_path = report_pair(args.output)
    try:  # before the measuring
        check_outputs([('--output (.json)', json_path), ('--output (.md)', markdown_path)],
                      create_folders=True)
    except OutputError as exc:
        parser.error(str(exc))
    load_before = os.getloadavg()
    results = measure(args.frames, args.warmup)
    load_after = os.getloadavg()
    report = {
        'date': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
        'machine': {**provenance.machine(), 'commit': provenance.source_commit()[0],
                    'load_before': [round(v, 2) for v in load_before],
                    'load_after': [round(v, 2) for v in load_after]},
        'versions': _versions(), 'frames': args.frames, 'warmup': args.warmup,
        'note': args.note, 'results': results,
    }
    print(_markdown(report))  # first: a failed write below loses no result
    write_atomic(json_path, json.dumps(report, indent=2) + '\n')
    write_atomic(markdown_path, _markdown(report))
    return 0


if __name__ == '__main__':
    sys.exit(main())
