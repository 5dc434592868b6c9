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
``sparse-perception replay``: evaluate the pipeline frame by frame on a recording.

Heavy modules (torch, OpenCV, rosbags, matplotlib) are imported only when the command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
import sqlite3
import sys

from sparse_perception.cli import (frame_range_argument, path_argument, rate_argument,
                                   running_command)

DESCRIPTION = """\
Replay a recording through the incremental pipeline and its dense reference, frame by frame
(every frame is processed, unlike `ros2 bag play`), and write into --out:
report.json, report.md with plots, frames.csv, a contact sheet of annotated frames, and an
output bag with the input images and the mask and keypoints topics.

INPUT is a rosbag2 folder (mcap or sqlite3), a ROS 1 .bag, a video file or a folder of images;
without INPUT the bundled vtest40 clip (40 frames of OpenCV's vtest, 768x576, 10 Hz) is used.
"""

EPILOG = """\
examples:
  sparse-perception replay --out runs/demo
  sparse-perception replay my_bag/ --topic /camera/image_raw --frames 0:300 --out runs/mine
  sparse-perception replay davis_bag/ --heads segmentation --gt DAVIS/Annotations/480p/parkour \\
      --gt-class person --out runs/parkour
  sparse-perception replay jhmdb_bag/ --heads pose --gt joint_positions.mat --out runs/jhmdb
  sparse-perception replay --sweep 0,0.5,1,2 --out runs/sweep
exit status: 0 done, 1 bad input or a model that cannot load (one line on stderr), 2 usage.
"""


def register(subparsers) -> None:
    """Add the ``replay`` sub-command."""
    from sparse_perception import settings
    from sparse_perception.replay import metrics

    parser = subparsers.add_parser(
        'replay', help='evaluate on a bag, video or image folder (the main job)',
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('input', nargs='?', type=path_argument,
                        help='rosbag2 folder, ROS 1 .bag, video or image folder '
                        '(default: the bundled vtest40 clip)')
    parser.add_argument('--out', type=path_argument, required=True,
                        help='folder for the report and outputs (created if absent)')
    group = parser.add_argument_group('input')
    group.add_argument('--topic', help="a bag's image topic (default: its only one)")
    group.add_argument('--frames', type=frame_range_argument, default=':',
                       metavar='START:STOP[:STEP]',
                       help='frame range as a Python slice of frame indices [all]')
    group.add_argument('--rate', type=rate_argument, metavar='HZ',
                       help='frame rate giving videos and image folders their stamps '
                       "(default: a video's own rate; required for image folders)")
    group = parser.add_argument_group('what runs')
    group.add_argument('--heads', type=_heads, metavar='HEADS',
                       help='heads to run, as node.heads names them: segmentation, pose or '
                       "segmentation,pose ('seg' and 'both' also work) [the --params file's "
                       'node.heads, else segmentation,pose]')
    group.add_argument('--no-dense', action='store_true',
                       help='skip the dense reference (no agreement, no speedup)')
    group.add_argument('--sweep', nargs='?', const=','.join(f'{s:g}' for s in _default_sweep()),
                       metavar='SCALES',
                       help='also re-run over these sparsity.scale values (comma-separated; '
                       'default %(const)s) for the speed vs accuracy curve of the engine: '
                       'each run with the path choice off, beside the dense reference '
                       'unless --no-dense')
    group.add_argument('--params', type=path_argument, metavar='FILE',
                       help='node parameters YAML to read the settings from (flags override)')
    group.add_argument('--params-node', metavar='NAME',
                       help='which node of the parameters file (default: its only one)')
    group = parser.add_argument_group('ground truth')
    group.add_argument('--gt', type=path_argument, action='append', default=[], metavar='PATH',
                       help='a folder of PNG masks (DAVIS layout), COCO-17 keypoint .json or '
                       'JHMDB joint_positions.mat; repeat for masks and keypoints (matched to '
                       "an image folder's frames by file name; to a recording's masks named by "
                       'frame number by that number, anything else by position)')
    group.add_argument('--gt-class', default='person', metavar='NAME|ID',
                       help="segmentation class scored as the masks' foreground [person]")
    group.add_argument('--pck-alpha', type=float, default=metrics.PCK_ALPHA,
                       help=f'PCK threshold, times the person box size [{metrics.PCK_ALPHA}]')
    group.add_argument('--pckh-alpha', type=float, default=metrics.PCKH_ALPHA,
                       help=f'PCKh threshold, times the head segment [{metrics.PCKH_ALPHA}]')
    group = parser.add_argument_group('outputs')
    group.add_argument('--no-bag', action='store_true', help='write no output bag')
    group.add_argument('--bag-storage', choices=('mcap', 'sqlite3'), default='mcap',
                       help='storage of the output bag [mcap]')
    group.add_argument('--bag-namespace', default='/sparse_perception', type=_bag_namespace,
                       help='namespace of the mask and keypoints topics [%(default)s]')
    group.add_argument('--contact-sheet', type=int, default=12, metavar='N',
                       help='annotated frames on the contact sheet, 0 for none [12]')
    group.add_argument('--video', action='store_true',
                       help='also write annotated.mp4 with every annotated frame')
    group.add_argument('--quiet', action='store_true',
                       help='no progress line (it is shown only on a terminal anyway)')
    settings.add_cli_flags(parser)
    parser.set_defaults(func=run)


def _heads(text: str) -> tuple[str, ...]:
    from sparse_perception import settings as settings_module
    try:
        return settings_module.parse_heads(text)
    except settings_module.SettingError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _bag_namespace(text: str) -> str:
    from sparse_perception.replay.errors import ReplayError
    from sparse_perception.replay.outbag import check_namespace
    try:
        check_namespace(text, what='a namespace')
    except ReplayError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _default_sweep() -> tuple[float, ...]:
    return (0.0, 0.5, 1.0, 2.0, 4.0)


def _error(message: str) -> int:
    print(f'sparse-perception replay: error: {message}', file=sys.stderr)
    return 1


def _scales(text: str) -> tuple[float, ...]:
    from sparse_perception.replay.errors import ReplayError
    try:
        scales = tuple(float(part) for part in text.split(',') if part.strip())
    except ValueError:
        raise ReplayError(f'--sweep {text!r} is not a comma-separated list of numbers') from None
    from sparse_perception.settings import spec

    info = spec('sparsity.scale').info  # the range of the setting each point sets
    if not scales or any(not info.low <= s <= info.high for s in scales):
        raise ReplayError(f'--sweep {text!r}: expected sparsity scales from {info.low:g} to '
                          f'{info.high:g}')
    return scales


def run(args: argparse.Namespace) -> int:
    """Run the replay; print a short summary; return the exit status."""
    from sparse_perception import settings as settings_module
    from sparse_perception.replay.errors import ReplayError

    try:
        job = _job(args, settings_module)
        from sparse_perception.replay.job import run_job
        report = run_job(job)
    except (ReplayError, settings_module.SettingError) as exc:
        return _error(str(exc))
    except (OSError, sqlite3.Error) as exc:  # a full disk, a folder made unwritable midway
        # A failed write() names no file, nor does sqlite3 storage (the output bag's): then
        # the output folder is where it happened.
        filename = getattr(exc, 'filename', None)
        where = f'{filename}: ' if filename else f'cannot write into {args.out}: '
        return _error(f'{where}{getattr(exc, "strerror", None) or exc}; no report written')
    except KeyboardInterrupt:
        print('\nsparse-perception replay: interrupted; no report written', file=sys.stderr)
        return 130
    print(summary(report, args.out))
    return 0


def _file_heads(heads, path) -> tuple[str, ...]:
    from sparse_perception import settings as settings_module
    from sparse_perception.replay.errors import ReplayError

    if not heads:  # as a node refuses it
        raise ReplayError(f'--params {path}: node.heads is empty: list at least one of '
                          f'{", ".join(settings_module.HEADS)}')
    try:
        return settings_module.parse_heads(','.join(heads))
    except settings_module.SettingError as exc:
        raise ReplayError(f'--params {path}: node.heads: {exc}') from None


def _node_heads(node: str | None, for_node: dict, path) -> tuple[str, ...] | None:
    """Return the heads of the node a parameters file is read for (None: the default)."""
    from sparse_perception.nodes.node_config import NODE_KINDS

    kind = NODE_KINDS.get((node or '').rsplit('/', 1)[-1])
    if kind is not None and not kind.heads_parameter:  # its one head, whatever the file says
        return kind.heads
    return _file_heads(for_node['node.heads'], path) if 'node.heads' in for_node else None


def _job(args, settings_module):
    from sparse_perception.replay.errors import ReplayError
    from sparse_perception.replay.job import ReplayJob
    from sparse_perception.shared_data import bundled_clip

    from_file, heads = None, args.heads
    if args.params is None and args.params_node is not None:
        raise ReplayError(f'--params-node {args.params_node} needs --params: the node section '
                          'of which parameters file?')
    if args.params is not None:
        if not args.params.is_file():
            raise ReplayError(f'--params {args.params}: '
                              + ('a folder, not a parameters file' if args.params.is_dir()
                                 else 'no such file'))
        # Read as the node would: its own parameters are checked too, and its heads kept.
        for_node = settings_module.params_yaml_changes(args.params, args.params_node,
                                                       settings_module.NodeSettings)
        known = {s.name for s in settings_module.specs(settings_module.PerceptionSettings)}
        from_file = {name: value for name, value in for_node.items() if name in known}
        # The node's own sections must hold together too, as the node builds them (the rest
        # is checked with the flags below, which may complete it).
        node_only = {name: value for name, value in for_node.items() if name not in known}
        node_type = settings_module.NodeSettings
        try:
            settings_module.build(node_type, {**settings_module.flatten(node_type()),
                                              **node_only})
        except settings_module.SettingError as exc:
            raise settings_module.SettingError(f'{args.params}: {exc}') from None
        if heads is None:
            heads = _node_heads(args.params_node, for_node, args.params)
    try:
        settings = settings_module.from_cli(args, changes=from_file)
    except settings_module.SettingError as exc:
        if from_file is None:
            raise
        # Settings that do not go together may come from both: say where they came from.
        raise settings_module.SettingError(
            f'{exc} (the settings of --params {args.params} with the flags on the command '
            'line; a flag may give what the file leaves out)') from None
    note = settings_module.unused_gate_file(settings)
    if note:
        print(note, file=sys.stderr)
    for name, value in (('--pck-alpha', args.pck_alpha), ('--pckh-alpha', args.pckh_alpha)):
        if not 0 < value <= 10:
            raise ReplayError(f'{name} {value} is out of range; expected 0 < value <= 10')
    if args.contact_sheet < 0:
        raise ReplayError(f'--contact-sheet {args.contact_sheet} must be 0 or more')
    return ReplayJob(
        source=args.input if args.input is not None else bundled_clip(),
        out=args.out, settings=settings, heads=heads or settings_module.HEADS, topic=args.topic,
        rate=args.rate, frames=args.frames, dense=not args.no_dense,
        ground_truth=tuple(args.gt), gt_class=args.gt_class, pck_alpha=args.pck_alpha,
        pckh_alpha=args.pckh_alpha, sweep=_scales(args.sweep) if args.sweep is not None else (),
        bag=not args.no_bag, bag_storage=args.bag_storage, bag_namespace=args.bag_namespace,
        contact_sheet=args.contact_sheet, video=args.video,
        progress=not args.quiet and sys.stderr.isatty(),
        reads=(args.params,) if args.params is not None else (), command=running_command())


def summary(report: dict, out: Path) -> str:
    """Return the few lines printed when a replay is done."""
    from sparse_perception.replay.report import percent_text

    source = report['input']
    where = f" [{source['topic']}]" if source['kind'].startswith('rosbag') else ''
    lines = [f"replayed {report['frames']} frames ({report['skipped_frames']} skipped as "
             f"corrupt) of {source['path']}{where} in {report['wall_s']:.1f} s"]
    latency = report['latency_ms']
    incremental = latency['incremental']
    if latency.get('dense') and report['speedup'] is not None:
        lines.append(f"latency p50: dense {latency['dense']['p50']:.1f} ms, incremental "
                     f"{incremental['p50']:.1f} ms -> speedup {report['speedup']:.2f}x")
    else:
        lines.append(f"latency p50: incremental {incremental['p50']:.1f} ms (no dense run)")
    saved = report['activity']['macs_saved']
    lines.append(f"active fraction {report['active_fraction']:.3f}"
                 + (f' (MACs saved {saved * 100:.1f}%)' if saved is not None else ''))
    agreement = report['agreement']
    if agreement:
        parts = []
        if agreement['mask_pixel'] is not None:
            parts.append(f"mask {percent_text(agreement['mask_pixel'])} of pixels")
        if agreement['keypoint_px'] is not None:
            parts.append(f"keypoints {agreement['keypoint_px']:.2f} px")
        if parts:
            lines.append('agreement with dense: ' + ', '.join(parts))
    truth = report.get('ground_truth') or {}
    dense = truth.get('dense') or {}
    parts = []
    for key, label in (('iou', 'IoU'), ('pck', 'PCK')):
        if truth.get(key) is not None:
            parts.append(f'{label} incremental {truth[key]:.4f}' + (
                f' (dense {dense[key]:.4f})' if dense.get(key) is not None else ''))
    if parts:
        lines.append('ground truth: ' + ', '.join(parts))
    lines.append(f'report: {out / "report.md"} (and report.json)')
    return '\n'.join(lines)
