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
Make the clip bundled in the package: sparse_perception/data/vtest40/.

It is the first 40 messages of the shared rosbag2 ``data/bags/vtest150_mcap`` (OpenCV's
vtest.avi as sensor_msgs/msg/CompressedImage on /camera/image_raw/compressed, 10 Hz): the
serialized messages are copied byte for byte, with their receive timestamps, topic, message
definition and type hash, into a new mcap bag (rosbag2 metadata version 8, as the source), so
the JPEG bytes and header stamps are exactly those of the source. Running it again gives
identical files (the script checks that the result reads back as the source's first 40).

Usage, from the repository root (with ../shared beside the checkout)::

    .venv/bin/python tools/make_bundled_clip.py            # writes sparse_perception/data/vtest40
    .venv/bin/python tools/make_bundled_clip.py --force    # replaces an existing one
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path
import shutil
import sys
import tempfile

from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from sparse_perception.shared_data import shared_path

REPO = Path(__file__).resolve().parents[1]

SOURCE = 'data/bags/vtest150_mcap'
TOPIC = '/camera/image_raw/compressed'
FRAMES = 40
NAME = 'vtest40'
NOTICE = 'NOTICE.md'  # kept when the bag is rewritten (written by hand, not by this script)


def copy_first_messages(source: Path, target: Path, frames: int) -> list[tuple[int, bytes]]:
    """Write the first ``frames`` messages of ``TOPIC`` in ``source`` to a new bag ``target``."""
    copied = []
    with AnyReader([source]) as reader:
        connections = [c for c in reader.connections if c.topic == TOPIC]
        if len(connections) != 1:
            raise SystemExit(f'{source} has {len(connections)} connections on {TOPIC}, not 1')
        connection, = connections
        writer = Writer(target, version=8, storage_plugin=StoragePlugin.MCAP)
        with writer:
            out = writer.add_connection(
                TOPIC, connection.msgtype, msgdef=connection.msgdef.data,
                rihs01=connection.digest)
            for _, timestamp, rawdata in reader.messages(connections=[connection]):
                writer.write(out, timestamp, rawdata)
                copied.append((timestamp, bytes(rawdata)))
                if len(copied) == frames:
                    break
    if len(copied) != frames:
        raise SystemExit(f'{source} holds only {len(copied)} messages on {TOPIC}')
    return copied


def check(target: Path, expected: list[tuple[int, bytes]]) -> None:
    """Read ``target`` back and compare every timestamp and serialized message."""
    with AnyReader([target]) as reader:
        got = [(timestamp, bytes(raw)) for _, timestamp, raw in reader.messages()]
    if got != expected:
        raise SystemExit(f'{target} does not read back as the {len(expected)} source messages')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--output', type=Path, default=REPO / 'sparse_perception' / 'data' / NAME,
                        help='bag folder to write (default: %(default)s)')
    parser.add_argument('--force', action='store_true', help='replace an existing bag')
    args = parser.parse_args(argv)

    source = shared_path(SOURCE)
    output = args.output.resolve()
    if (output / 'metadata.yaml').exists() and not args.force:
        raise SystemExit(f'{output} exists; pass --force to replace it')
    output.parent.mkdir(parents=True, exist_ok=True)
    # Write beside the target and swap it in at the end: never a half-written bag in the package.
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=f'.{NAME}-') as scratch:
        staged = Path(scratch) / NAME
        copied = copy_first_messages(source, staged, FRAMES)
        check(staged, copied)
        if (output / NOTICE).exists():
            shutil.copy2(output / NOTICE, staged / NOTICE)
        if output.exists():
            shutil.rmtree(output)
        staged.rename(output)
    for path in sorted(output.iterdir()):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        print(f'{digest}  {path.relative_to(REPO) if path.is_relative_to(REPO) else path}'
              f'  ({path.stat().st_size} bytes)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
