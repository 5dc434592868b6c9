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

"""``sparse-perception make-bag``: a video or image folder -> a rosbag2 for the replay."""

from __future__ import annotations

import argparse
import sqlite3
import sys

from sparse_perception.cli import frame_range_argument, path_argument, rate_argument

EPILOG = """\
examples:
  sparse-perception make-bag vtest.avi vtest_bag
  sparse-perception make-bag DAVIS/JPEGImages/480p/parkour parkour_bag --rate 24
  sparse-perception make-bag frames/ frames_bag --rate 30 --format raw --storage sqlite3
exit status: 0 done, 1 bad input (one line on stderr), 2 usage.
"""


def register(subparsers) -> None:
    """Add the ``make-bag`` sub-command."""
    parser = subparsers.add_parser(
        'make-bag', help='turn a video or image folder into a rosbag2 for the replay',
        description='Write the frames of a video file or a folder of images into a new '
        'rosbag2 (mcap or sqlite3) as sensor_msgs/Image or CompressedImage, stamped at a '
        'fixed rate.', epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('input', type=path_argument, help='video file or folder of images')
    parser.add_argument('output', type=path_argument, help='the rosbag2 folder to create')
    parser.add_argument('--rate', type=rate_argument, metavar='HZ',
                        help="frames per second (default: a video's own rate; required for "
                        'image folders)')
    parser.add_argument('--storage', choices=('mcap', 'sqlite3'), default='mcap',
                        help='rosbag2 storage [mcap]')
    parser.add_argument('--format', dest='fmt', choices=('jpeg', 'png', 'raw'), default='jpeg',
                        help='CompressedImage as JPEG or PNG, or raw Image [jpeg]')
    parser.add_argument('--encoding', choices=('rgb8', 'bgr8', 'mono8'),
                        help='encoding of raw Images (--format raw only) [rgb8]')
    parser.add_argument('--quality', type=int,
                        help='JPEG quality 1-100 or PNG compression 0-9 (jpeg and png only) '
                        '[OpenCV default]; JPEG and PNG files already in --format are stored '
                        'byte for byte unless this is given')
    parser.add_argument('--topic', help='topic name [/camera/image_raw, or '
                        '/camera/image_raw/compressed for JPEG and PNG]')
    parser.add_argument('--frame-id', default='camera', help='header frame_id [camera]')
    parser.add_argument('--start-time', type=float, default=0.0, metavar='SECONDS',
                        help='stamp of the first frame, seconds since the epoch [0]')
    parser.add_argument('--frames', type=frame_range_argument, default=':',
                        metavar='START:STOP[:STEP]',
                        help='frame range as a Python slice [all]')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace OUTPUT if it is an earlier bag (or a file)')
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the bag; print what was written; return the exit status."""
    from sparse_perception.media.images import ImageConversionError
    from sparse_perception.replay.errors import ReplayError
    from sparse_perception.replay.makebag import leftovers, make_bag
    from sparse_perception.replay.sources import MAX_STAMP_NS

    try:
        low, high = (1, 100) if args.fmt == 'jpeg' else (0, 9)
        if args.quality is not None and args.fmt != 'raw' and not low <= args.quality <= high:
            raise ReplayError(f'--quality {args.quality} is out of range for {args.fmt}; '
                              f'expected {low} to {high}')
        if not 0 <= args.start_time <= MAX_STAMP_NS / 1e9:  # also NaN and infinities
            raise ReplayError(
                f'--start-time {args.start_time:g} is out of range; expected 0 to '
                f'{MAX_STAMP_NS // 1_000_000_000} seconds since the epoch (a ROS stamp holds '
                'whole seconds in an int32, until 2038)')
        result = make_bag(
            args.input, args.output, rate=args.rate, storage=args.storage, fmt=args.fmt,
            topic=args.topic, frame_id=args.frame_id, quality=args.quality,
            encoding=args.encoding, start_ns=round(args.start_time * 1e9),
            frames=args.frames, overwrite=args.overwrite)
    except (ReplayError, ImageConversionError) as exc:
        print(f'sparse-perception make-bag: error: {exc}', file=sys.stderr)
        return 1
    except (OSError, sqlite3.Error) as exc:  # an unwritable or full disk, ...
        # (sqlite3 storage reports a full disk as its own error, without a file name.)
        filename = getattr(exc, 'filename', None)
        where = f'{filename}: ' if filename else f'cannot write {args.output}: '
        print(f'sparse-perception make-bag: error: {where}{getattr(exc, "strerror", None) or exc}'
              '; nothing was written', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print('\nsparse-perception make-bag: interrupted; nothing was written', file=sys.stderr)
        return 130
    print(f'wrote {result.frames} frames ({len(result.skipped)} skipped as corrupt) to '
          f'{result.path} on {result.topic} ({result.msgtype}) at {result.rate_hz:g} Hz')
    for skipped in result.skipped[:10]:
        print(f'  skipped frame {skipped.index}: {skipped.reason}')
    for leftover in leftovers(args.output):
        print(f'note: {leftover} is the staging folder of a run that was killed; it holds no '
              'finished bag: remove it')
    return 0
