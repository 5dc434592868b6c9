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
What a camera frame's change map costs on the CPU, and its per-pixel channel maximum.

    .venv/bin/python bench/change_map.py [--frames 200] [--out PATH.md]

Reads the first ``--frames`` frames of the shared vtest clip (768x576 RGB) and times, per
frame, ``ChangeDetector.update`` at the package defaults, and the largest channel of the
absolute difference of two consecutive frames two ways, alternating: numpy's maximum over
the strided channels (what the change map uses) and OpenCV's split into planes followed by
their maximum. Prints medians; with ``--out`` writes a markdown file with the machine,
versions and commit.
"""

import argparse
from pathlib import Path
import sys
import time

import cv2
import numpy as np
from sparse_perception.change import _channel_peak, ChangeDetector
from sparse_perception.evaluation.provenance import environment
from sparse_perception.evaluation.stats import median
from sparse_perception.shared_data import shared_path


def opencv_peak(diff: np.ndarray) -> np.ndarray:
    """Return the largest channel of ``diff`` by OpenCV's split and maximum."""
    planes = cv2.split(diff)
    peak = planes[0]
    for plane in planes[1:]:
        peak = cv2.max(peak, plane)
    return peak


def timed(function, *args) -> float:
    """Return the milliseconds one call took."""
    start = time.perf_counter()
    function(*args)
    return (time.perf_counter() - start) * 1e3


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--frames', type=int, default=200)
    parser.add_argument('--out', type=Path)
    args = parser.parse_args(argv)
    capture = cv2.VideoCapture(str(shared_path('data/vtest/vtest.avi')))
    frames = []
    while len(frames) < args.frames:
        ok, frame = capture.read()
        if not ok:
            raise SystemExit(f'vtest.avi ended after {len(frames)} frames')
        frames.append(np.ascontiguousarray(frame[..., ::-1]))
    capture.release()
    detector = ChangeDetector()
    detector.update(frames[0])
    update_ms = [timed(detector.update, frame) for frame in frames[1:]]
    numpy_ms, opencv_ms = [], []
    for before, after in zip(frames, frames[1:]):
        diff = cv2.absdiff(before, after)
        if not np.array_equal(_channel_peak(diff), opencv_peak(diff)):
            raise SystemExit('the two channel maxima differ')
        numpy_ms.append(timed(_channel_peak, diff))
        opencv_ms.append(timed(opencv_peak, diff))
    rows = [('ChangeDetector.update (package defaults)', median(update_ms)),
            ('channel maximum, numpy (used)', median(numpy_ms)),
            ('channel maximum, OpenCV split + max', median(opencv_ms))]
    for name, ms in rows:
        print(f'{name}: {ms:.3f} ms')
    if args.out:
        env = environment('cpu')
        device, versions, source = env['device'], env['versions'], env['source']
        height, width = frames[0].shape[:2]
        lines = [
            "# A camera frame's change map on the CPU (bench/change_map.py)", '',
            f'- machine: {device.get("cpu")}, {device.get("cores")} cores, Python '
            f'{versions.get("python")}, numpy {versions.get("numpy")}, OpenCV '
            f'{versions.get("opencv")} ({cv2.getNumThreads()} threads)',
            f'- source: commit {(source.get("commit") or "unknown")[:12]}'
            + (' with modified files' if source.get('tracked_files_modified') else ''),
            f'- command: `python bench/change_map.py --frames {args.frames} --out {args.out}`',
            f'- frames: the first {args.frames} of vtest.avi, {width}x{height} RGB; the two '
            'channel maxima alternate on the same differences', '',
            '| what | p50 ms per frame |', '|---|---|',
            *(f'| {name} | {ms:.3f} |' for name, ms in rows), '']
        args.out.write_text('\n'.join(lines))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
