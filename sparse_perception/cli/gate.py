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

"""``sparse-perception gate train``: distil the learned gate from a segmentation model."""

from __future__ import annotations

import argparse
import sys

from sparse_perception.cli import path_argument

TRAIN_DESCRIPTION = """\
Run the segmentation model dense on every frame of the sources (rosbag2 folders, videos,
image folders) and train the learned gate (sparsity.gate learned) to predict its person tiles
in each frame and the one before, from the scaled frame, its motion and the last person
tiles. Runs on the CPU; the same sources, flags and seed give the same weights. The file holds
weights and metadata only; use it with --sparsity.gate learned --sparsity.gate_model PATH and
the segmentation model it was trained on (--model; model.segmentation where it runs).
"""

TRAIN_EPILOG = """\
examples:
  sparse-perception gate train vtest.avi --out gate.pt
  sparse-perception gate train bag1 bag2 frames/ --out gate.pt --epochs 20 --seed 1
exit status: 0 written, 1 bad input (one line on stderr), 2 usage.
The default model is the fully convolutional DeepLab, the one a moving camera gains from
gating (its Coral weights are read from the shared folder).
"""


# Below this share of its training frames' person tiles a gate is said to be weak.
WEAK_RECALL = 0.9


def _seed(text: str) -> int:
    """Take a seed torch's generator takes, each seed its own stream (an argparse ``type``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected an integer, got {text!r}') from None
    if not 0 <= value < 2 ** 64:
        raise argparse.ArgumentTypeError(f'{value} is out of range; expected 0 to 2**64 - 1')
    return value


def register(subparsers) -> None:
    """Add the ``gate`` command group and its ``train`` command."""
    from sparse_perception.gates.training import TrainingOptions

    defaults = TrainingOptions()
    parser = subparsers.add_parser(
        'gate', help='train the learned spatial gate', description='The learned gate '
        '(sparsity.gate learned) of the segmentation network.')
    actions = parser.add_subparsers(dest='gate_command', metavar='ACTION')
    parser.set_defaults(func=lambda args: parser.print_help() or 2)
    train = actions.add_parser(
        'train', help='distil a gate from the segmentation model on unlabelled video',
        description=TRAIN_DESCRIPTION, epilog=TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument('sources', nargs='+', type=path_argument, metavar='SOURCE',
                       help='rosbag2 folder, video file or folder of images')
    train.add_argument('--topic', help="a bag's image topic [its only one]")
    train.add_argument('--out', type=path_argument, required=True, metavar='PATH',
                       help='the gate file to write (replaced atomically)')
    train.add_argument('--model', default=defaults.model_name,
                       help='segmentation model to distil from [%(default)s]')
    train.add_argument('--models-dir', type=path_argument, metavar='DIR',
                       help='folder searched first for model files [the shared folder, the '
                       'models fetch cache]')
    train.add_argument('--tile-size', type=int, default=defaults.tile, metavar='PIXELS',
                       help='change.tile_size the gate is for [%(default)s]')
    train.add_argument('--fcn-max-megapixels', type=float, default=defaults.fcn_max_megapixels,
                       metavar='MP', help='model.fcn_max_megapixels the gate is for: a larger '
                       'frame is scaled down to it, as the pipeline does [%(default)s]')
    train.add_argument('--epochs', type=int, default=defaults.epochs,
                       help='passes over the frames [%(default)s]')
    train.add_argument('--max-frames', type=int, default=defaults.max_frames, metavar='N',
                       help='frames read from the sources in all [%(default)s]')
    train.add_argument('--margin', type=int, default=defaults.margin, metavar='TILES',
                       help='grow the targets by this many tiles (sparsity.gate_margin is '
                       'added at run time) [%(default)s]')
    train.add_argument('--shift', type=int, default=defaults.shift, metavar='CELLS',
                       help='also train each frame against its last one shifted by up to '
                       'this many quarter tiles, as from a moving camera (0 = off) '
                       '[%(default)s]')
    train.add_argument('--recall-weight', type=float, default=defaults.recall_weight, metavar='W',
                       help='weight of person tiles in the loss against the rest '
                       '[%(default)s]')
    train.add_argument('--seed', type=_seed, default=defaults.seed,
                       help='random seed, 0 to 2**64 - 1 [%(default)s]')
    train.add_argument('--quiet', action='store_true', help='no progress lines on stderr')
    train.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    """Train and write the gate; print what it learned; return the exit status."""
    from sparse_perception.gates.training import train, TrainingError, TrainingOptions
    from sparse_perception.replay.errors import ReplayError

    progress = None if args.quiet else (lambda line: print(line, file=sys.stderr))
    options = TrainingOptions(
        model_name=args.model, tile=args.tile_size, epochs=args.epochs,
        max_frames=args.max_frames, seed=args.seed, margin=args.margin, shift=args.shift,
        recall_weight=args.recall_weight, topic=args.topic,
        fcn_max_megapixels=args.fcn_max_megapixels)
    try:
        report = train(args.sources, args.out, options, models_dir=args.models_dir,
                       progress=progress)
    except (TrainingError, ReplayError) as exc:
        print(f'sparse-perception gate train: error: {exc}', file=sys.stderr)
        return 1
    except OSError as exc:
        print(f'sparse-perception gate train: error: cannot write {args.out}: '
              f'{exc.strerror or exc}', file=sys.stderr)
        return 1
    from sparse_perception.replay.report import percent_text

    print(f'wrote {args.out}: {report.frames} frames, {report.samples} training pairs; on '
          f'them the gate holds {percent_text(report.recall, 1)} of the target tiles letting '
          f'in {percent_text(report.gated, 1)} of all tiles (targets: '
          f'{percent_text(report.tiles_positive, 1)})')
    if report.recall < WEAK_RECALL:  # said even with --quiet: the gate would shut people out
        print(f'note: the gate misses {percent_text(1 - report.recall, 1)} of the target tiles '
              '(people in a frame and the frame before) of its own training frames; a frame '
              'recomputes what it misses only when a refresh cell passes: train longer '
              f'(--epochs, {args.epochs} now) or weigh the person tiles more (--recall-weight, '
              f'{args.recall_weight:g} now)')
    left = ([f'stopped reading {report.partly}'] if report.partly else []) + (
        [f'did not read {", ".join(report.unread)}'] if report.unread else [])
    if left:  # said even with --quiet: the gate learned from less than was given
        print(f'--max-frames {args.max_frames} ' + '; '.join(left))
    return 0
