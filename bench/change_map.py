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
What a camera frame's change map costs on the CPU, with OpenCV and without it.

    .venv/bin/python bench/change_map.py [--frames 200] [--size WxH] [--out PATH.md]

Reads the first ``--frames`` frames of the shared vtest clip (768x576 RGB; ``--size``
resizes them, bilinear, to stand for a camera of that size) and times, per
frame, ``ChangeDetector.update`` at the package defaults and at the static-camera setting
(12 grey levels, 32 pixels), each two ways, alternating frame by frame on the same frames:
with OpenCV (what the package uses when OpenCV is installed: SIMD passes for the per-pixel
test, one masked copy into the reference) and with numpy alone (its fall-back). The two must
give the same tiles and the same reference on every frame. Prints medians; with ``--out``
writes a markdown file with the machine, versions and commit.
"""

import argparse
from pathlib import Path
import sys
import time

import cv2
import numpy as np
from sparse_perception import change
from sparse_perception.evaluation.provenance import environment
from sparse_perception.evaluation.stats import median
from sparse_perception.output_files import check_outputs, OutputError, write_atomic
from sparse_perception.shared_data import shared_path
import torch


def timed_update(detector: change.ChangeDetector, frame: np.ndarray, opencv: bool):
    """Return (the map, the milliseconds ``detector.update`` took) with or without OpenCV."""
    change._CV2[:] = [cv2 if opencv else None]
    start = time.perf_counter()
    made = detector.update(frame)
    ms = (time.perf_counter() - start) * 1e3
    change._CV2[:] = [cv2]
    return made, ms


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--frames', type=int, default=200)
    parser.add_argument('--size', help='resize the frames to WxH first, e.g. 1920x1080')
    parser.add_argument('--out', type=Path)
    args = parser.parse_args(argv)
    try:  # before the measuring
        check_outputs([('--out', args.out)], [shared_path('data')])
    except OutputError as exc:
        parser.error(str(exc))
    size = None
    if args.size:
        try:
            size = tuple(int(v) for v in args.size.lower().split('x'))
        except ValueError:
            size = ()
        if len(size) != 2 or min(size) < 16:
            parser.error(f'--size {args.size!r}: expected WxH with both at least 16')
    capture = cv2.VideoCapture(str(shared_path('data/vtest/vtest.avi')))
    frames = []
    while len(frames) < args.frames:
        ok, frame = capture.read()
        if not ok:
            raise SystemExit(f'vtest.avi ended after {len(frames)} frames')
        if size is not None:
            frame = cv2.resize(frame, size, interpolation=cv2.INTER_LINEAR)
        frames.append(np.ascontiguousarray(frame[..., ::-1]))
    capture.release()
    change._cv2()  # fills the module's OpenCV slot
    rows = []
    for name, kwargs in (('package defaults', {}),
                         ('12 grey levels, 32 pixels', {'threshold': 12.0, 'min_pixels': 32})):
        with_cv, without = change.ChangeDetector(**kwargs), change.ChangeDetector(**kwargs)
        times = {True: [], False: []}
        fractions = []
        for index, frame in enumerate(frames):
            order = (True, False) if index % 2 == 0 else (False, True)
            made = {}
            for opencv in order:
                detector = with_cv if opencv else without
                made[opencv], ms = timed_update(detector, frame, opencv)
                if index:
                    times[opencv].append(ms)
            if not torch.equal(made[True].tiles, made[False].tiles) or not torch.equal(
                    with_cv.reference, without.reference):
                raise SystemExit(f'frame {index}: the two paths differ')
            if index:
                fractions.append(made[True].changed_fraction)
        rows.append((name, median(times[True]), median(times[False]), float(np.mean(fractions))))
    for name, opencv_ms, numpy_ms, fraction in rows:
        print(f'{name}: OpenCV {opencv_ms:.3f} ms, numpy {numpy_ms:.3f} ms, '
              f'tiles changed {fraction:.1%}')
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
            f'- command: `python bench/change_map.py --frames {args.frames}'
            + (f' --size {args.size}' if args.size else '') + f' --out {args.out}`',
            f'- frames: the first {args.frames} of vtest.avi, {width}x{height} RGB'
            + (' (resized, bilinear)' if size is not None else '') + ', each '
            'timed after the first; the two paths alternate frame by frame and gave the same '
            'tiles and reference on every frame', '',
            '| setting | tiles changed (mean) | p50 ms, with OpenCV (used) | p50 ms, numpy alone '
            '| numpy / OpenCV |', '|---|---|---|---|---|',
            *(f'| {name} | {fraction:.1%} | {opencv_ms:.3f} | {numpy_ms:.3f} | '
              f'{numpy_ms / opencv_ms:.2f} |' for name, opencv_ms, numpy_ms, fraction in rows),
            '']
        write_atomic(args.out, '\n'.join(lines))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
