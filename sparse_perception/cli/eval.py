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

"""``sparse-perception eval accuracy``: accuracy under sparsity on DAVIS and JHMDB."""

from __future__ import annotations

import argparse
from pathlib import Path
import sys

from sparse_perception.cli import frame_range_argument, path_argument, running_command

ACCURACY_DESCRIPTION = """\
Measure what the sparsity settings cost in accuracy, on real footage with ground truth:
parity of the models with the TFLite interpreter; DeepLabV3-MobileNetV2 on the DAVIS
sequences parkour and breakdance (IoU of the person class, dense and incremental, and their
pixel agreement); MoveNet on the JHMDB clip (PCK@0.2 of the person box, dense and
incremental). Writes JSON with the sections parity, davis, jhmdb and settings.

The data and the Coral models are read from the shared folder: $SPARSE_PERCEPTION_SHARED, or
../shared beside the repository. Without flags the package's default sparsity settings are
evaluated; the settings flags evaluate others (same names as the node parameters).
"""

ACCURACY_EPILOG = """\
examples:
  sparse-perception eval accuracy --json accuracy.json
  sparse-perception eval accuracy --json quick.json --davis-frames 0:20 --sections davis
  sparse-perception eval accuracy --json t20.json --change.threshold 20 \
      --pose.change_threshold 20
  sparse-perception eval accuracy --json g.json --sections davis --sparsity.gate glance \
      --anchor deeplabv3_mnv2_pascal
exit status: 0 done (also when an accuracy bound is missed: see criteria in the JSON),
1 a setting or choice refused once read (out of range, unknown), missing data or a model that
cannot load (one line on stderr), 2 a flag or value the command line cannot read, 130
interrupted.
"""


SWEEP_DESCRIPTION = """\
Run the incremental pipelines over sparsity settings (points) on DAVIS, JHMDB and the
bundled vtest40 clip; record accuracy (against ground truth and against dense), active
fraction, MACs saved and latency per point, and choose the point that saves the most MACs
within the accuracy bounds. Each point is applied on top of the package defaults with
change.threshold 0, change.min_pixels 1, sparsity.scale 0 and sparsity.adaptive false (the
path choice off: its dense passes follow the machine's load, the MACs would too); a point's
change.threshold and change.min_pixels reach the pose head's own (pose.change_*) unless the
point sets those. A point sets change and sparsity settings only (change.*, sparsity.*,
pose.gate*, pose.change_*): every point runs the same models. Without --point or --axis the
built-in points run (see sparse_perception/evaluation/sweep.py).
"""

SWEEP_EPILOG = """\
examples:
  sparse-perception eval sweep --json sweep.json --markdown sweep.md
  sparse-perception eval sweep --json s.json --axis change.threshold 0 2 4 \\
      --axis sparsity.scale 0 0.01
  sparse-perception eval sweep --json s.json --point change.threshold=2 change.min_pixels=4
"""


def register(subparsers) -> None:
    """Add the ``eval`` command group and its ``accuracy`` command."""
    from sparse_perception import settings
    from sparse_perception.evaluation import accuracy

    parser = subparsers.add_parser(
        'eval', help='evaluate accuracy on real footage with ground truth',
        description='Evaluations on the shared data (DAVIS, JHMDB).')
    actions = parser.add_subparsers(dest='eval_command', metavar='EVALUATION')
    parser.set_defaults(func=lambda args: parser.print_help() or 2)

    acc = actions.add_parser(
        'accuracy', help='parity, DAVIS IoU and JHMDB PCK, dense vs incremental',
        description=ACCURACY_DESCRIPTION, epilog=ACCURACY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    acc.add_argument('--json', type=path_argument, required=True, metavar='PATH',
                     help='where to write the result')
    acc.add_argument('--sections', default=','.join(accuracy.SECTIONS),
                     help='comma-separated sections to run [%(default)s]')
    acc.add_argument('--davis-frames', type=frame_range_argument,
                     default=accuracy.DAVIS_FRAMES,
                     metavar='START:STOP[:STEP]', help='frames of each DAVIS sequence, a '
                     'Python slice [%(default)s: every other frame, to finish in 10 minutes '
                     'on 2 CPU cores]')
    acc.add_argument('--jhmdb-frames', type=frame_range_argument,
                     default=accuracy.JHMDB_FRAMES,
                     metavar='START:STOP[:STEP]', help='frames of the JHMDB clip, a Python '
                     'slice [%(default)s]')
    acc.add_argument('--sequences', default=','.join(accuracy.DAVIS_SEQUENCES),
                     help='comma-separated DAVIS sequences [%(default)s]')
    acc.add_argument('--parity-frames', type=int, nargs=2, default=(3, 8),
                     metavar=('DAVIS', 'JHMDB'),
                     help='parity frames per DAVIS sequence and of the JHMDB clip [3 8]')
    acc.add_argument('--parity-models', nargs='+', default=list(accuracy.PARITY_MODELS),
                     metavar='MODEL', help='registered models to check against the '
                     'interpreter [all with a TFLite reference; MediaPipe ones when cached]')
    acc.add_argument('--markdown', type=path_argument, metavar='PATH',
                     help='also write the result as markdown tables here')
    acc.add_argument('--anchor', action='append', default=[], metavar='MODEL',
                     help='also run MODEL (a registered name or a file) dense on the clips of '
                     'its head, in alternation with the others, and compare its score and '
                     "time with the incremental pipeline's: the dense pipeline you would run "
                     'instead, e.g. deeplabv3_mnv2_pascal on LiteRT (one per head; '
                     'repeatable)')
    acc.add_argument('--quiet', action='store_true', help='no progress lines on stderr')
    settings.add_cli_flags(acc, base=accuracy.default_settings())  # its own models
    acc.set_defaults(func=run_accuracy)

    sweep = actions.add_parser(
        'sweep', help='sweep sparsity settings: accuracy and speed per point, the choice',
        description=SWEEP_DESCRIPTION, epilog=SWEEP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sweep.add_argument('--json', type=path_argument, required=True, metavar='PATH',
                       help='where to write the result')
    sweep.add_argument('--markdown', type=path_argument, metavar='PATH',
                       help='also write the tables as markdown here')
    sweep.add_argument('--point', nargs='+', action='append', default=[],
                       metavar='NAME=VALUE', help='one point (repeatable)')
    sweep.add_argument('--axis', nargs='+', action='append', default=[],
                       metavar='NAME VALUE', help='an axis of a grid: a setting name, then '
                       'its values (repeatable; the grid is every combination)')
    sweep.add_argument('--davis-frames', type=frame_range_argument,
                       default=accuracy.DAVIS_FRAMES,
                       metavar='START:STOP[:STEP]', help='frames of each DAVIS sequence, a '
                       'Python slice [%(default)s, as eval accuracy]')
    sweep.add_argument('--jhmdb-frames', type=frame_range_argument,
                       default=accuracy.JHMDB_FRAMES,
                       metavar='START:STOP[:STEP]', help='frames of the JHMDB clip, a Python '
                       'slice [%(default)s]')
    sweep.add_argument('--no-vtest', action='store_true',
                       help='leave out the bundled vtest40 clip (static camera)')
    sweep.add_argument('--no-default-models', action='store_true',
                       help="do not run the package's default models at the chosen point")
    sweep.add_argument('--quiet', action='store_true', help='no progress lines on stderr')
    sweep.set_defaults(func=run_sweep)


def _check_outputs(args: argparse.Namespace, settings: list) -> None:
    """Refuse outputs that cannot be written, or that would write over what the run reads."""
    from sparse_perception.evaluation.accuracy import EvaluationError
    from sparse_perception.output_files import check_outputs, OutputError
    from sparse_perception.shared_data import shared_root

    read = [shared_root() / 'data', shared_root() / 'models']  # the clips, the models
    for names in settings:  # the model files and gate files of each run
        read += _files_read(names)
    try:
        check_outputs([('--json', args.json), ('--markdown', args.markdown)], read)
    except OutputError as exc:
        raise EvaluationError(str(exc)) from None


def _files_read(names: dict) -> list[Path]:
    """Return the files settings (dotted name -> value) make a run read: models, a gate."""
    from sparse_perception.models.registry import REGISTRY, resolve

    files = []
    for key in ('model.segmentation', 'model.pose', 'sparsity.gate_model'):
        name = names.get(key)
        if not isinstance(name, str) or not name:
            continue
        if name not in REGISTRY:
            files.append(Path(name).expanduser())
            continue
        try:  # a registered model's file, in the shared folder or the model cache
            files.append(resolve(REGISTRY[name], names.get('model.models_dir') or None))
        except (OSError, ValueError):  # not there: loading it says so
            pass
    return files


def _write(args: argparse.Namespace, json_text: str, markdown: str | None) -> None:
    """Write the JSON and the markdown together: a full disk leaves neither (nor a mix)."""
    from sparse_perception.evaluation.accuracy import EvaluationError
    from sparse_perception.output_files import write_together

    outputs = [(args.json, json_text)] + ([(args.markdown, markdown)] if args.markdown else [])
    for path, _ in outputs:  # checked before the run; a folder may have gone since
        if not Path(path).parent.is_dir():
            raise EvaluationError(f'{path}: the folder {Path(path).parent} does not exist')
    write_together(outputs)


def _error(message: str) -> int:
    print(f'sparse-perception eval accuracy: error: {message}', file=sys.stderr)
    return 1


def options_from_args(args: argparse.Namespace):
    """Turn the parsed flags into :class:`~.accuracy.AccuracyOptions` (may raise)."""
    from sparse_perception import settings as settings_module
    from sparse_perception.evaluation import accuracy

    settings = settings_module.from_cli(args, accuracy.default_settings())
    note = settings_module.unused_gate_file(settings)
    if note:
        print(note, file=sys.stderr)
    sections = tuple(s.strip() for s in args.sections.split(',') if s.strip())
    unknown = [s for s in sections if s not in accuracy.SECTIONS]
    if unknown or not sections:
        raise accuracy.EvaluationError(
            f'--sections {args.sections!r}: expected a comma-separated choice of '
            f'{", ".join(accuracy.SECTIONS)}')
    sequences = tuple(s.strip() for s in args.sequences.split(',') if s.strip())
    if not sequences:
        raise accuracy.EvaluationError('--sequences is empty; name DAVIS sequences, e.g. '
                                       'parkour,breakdance')
    twice = _twice(sequences)
    if twice:  # it would run twice and be recorded once
        raise accuracy.EvaluationError(f'--sequences {args.sequences!r}: {twice} is given '
                                       'twice')
    if min(args.parity_frames) < 1:
        raise accuracy.EvaluationError(
            f'--parity-frames {args.parity_frames[0]} {args.parity_frames[1]}: both must be '
            'at least 1')
    from sparse_perception.models.registry import REGISTRY

    unknown = [name for name in args.parity_models if name not in REGISTRY]
    if unknown and 'parity' in sections:  # before the other sections' minutes
        raise accuracy.EvaluationError(f'--parity-models: {", ".join(unknown)} not registered; '
                                       f'known: {", ".join(REGISTRY)}')
    return accuracy.AccuracyOptions(
        settings=settings, sections=sections,
        davis_frames=args.davis_frames,
        jhmdb_frames=args.jhmdb_frames, sequences=sequences,
        parity_davis_frames=args.parity_frames[0], parity_jhmdb_frames=args.parity_frames[1],
        parity_models=tuple(args.parity_models), anchors=tuple(args.anchor))


def run_accuracy(args: argparse.Namespace) -> int:
    """Run the evaluation, write the JSON, print a summary; return the exit status."""
    from sparse_perception import settings as settings_module
    from sparse_perception.evaluation import accuracy
    from sparse_perception.replay.errors import ReplayError

    def log(text: str) -> None:
        if not args.quiet:
            print(text, file=sys.stderr, flush=True)

    try:
        options = options_from_args(args)
        models_dir = options.settings.model.models_dir
        _check_outputs(args, [settings_module.flatten(options.settings),
                              *({'model.segmentation': m, 'model.models_dir': models_dir}
                                for m in options.anchors)])
        result = accuracy.evaluate(options, log)
        _write(args, accuracy.json_text(result),
               accuracy.markdown(result, running_command()) + '\n' if args.markdown else None)
    except (accuracy.EvaluationError, ReplayError, settings_module.SettingError) as exc:
        return _error(str(exc))
    except OSError as exc:  # a disk that filled up while writing
        return _error(f'{exc.filename or args.json}: {exc.strerror or exc}')
    except KeyboardInterrupt:
        print('\nsparse-perception eval accuracy: interrupted; nothing written',
              file=sys.stderr)
        return 130
    print(summary(result, args.json))
    return 0


def summary(result: dict, path: Path) -> str:
    """Return the lines printed when the evaluation is done."""
    from sparse_perception.evaluation import accuracy

    lines = []
    for name, entry in result.get('parity', {}).items():
        if 'skipped' in entry:
            lines.append(f'parity {name}: skipped')
        elif 'agreement' in entry:
            lines.append(f"parity {name}: {entry['agreement'] * 100:.2f}% of labels agree")
        else:
            lines.append(f"parity {name}: median keypoint error {entry['median_px']:.2f} px")
    for name, entry in result.get('davis', {}).items():
        lines.append(f"davis {name}: IoU dense {_fmt(entry['dense_iou'])}, incremental "
                     f"{_fmt(entry['incremental_iou'])}, agreement "
                     f"{entry['agreement'] * 100:.3f}%, active "
                     f"{_fmt(entry['active_fraction_after_first'], '.3f')}")
    jhmdb = result.get('jhmdb')
    for section, name, entry in accuracy.anchored(result):
        label = f'davis {name}' if section == 'davis' else section
        anchor = entry['anchor']
        metric = 'iou' if 'iou' in anchor else 'pck'
        speed = '-' if anchor['speedup'] is None else f"{anchor['speedup']:.2f}x"
        lines.append(f"{label}: anchor {anchor['model']} {accuracy.METRIC_NAMES[metric]} "
                     f'{_fmt(anchor[metric])}, incremental '
                     f"{_fmt(entry[f'incremental_{metric}'])}, speedup over it {speed}")
    if jhmdb:
        lines.append(f"jhmdb: PCK dense {_fmt(jhmdb['dense_pck'])}, incremental "
                     f"{_fmt(jhmdb['incremental_pck'])}, active "
                     f"{_fmt(jhmdb['active_fraction_after_first'], '.3f')}")
    check = result.get('criteria')
    if check:
        lines.append('accuracy bounds: ' + ('met' if check['passed'] else
                                            'MISSED: ' + '; '.join(check['failures'])))
    lines.append(f"{result['timing']['total_s']:.0f} s; written to {path}")
    return '\n'.join(lines)


def _fmt(value: float | None, spec: str = '.4f') -> str:
    return '-' if value is None else f'{value:{spec}}'


def points_from_args(args: argparse.Namespace) -> list[dict]:
    """Return the sweep's points: the --point ones, then the --axis grid (or the defaults)."""
    from sparse_perception.evaluation import accuracy, sweep

    points = []
    for point in args.point:
        assignments = [sweep.parse_assignment(text) for text in point]
        twice = _twice([name for name, _ in assignments])
        if twice:  # one value would silently replace the other
            raise accuracy.EvaluationError(f'--point {" ".join(point)}: {twice} is given twice')
        points.append(dict(assignments))
    axes = []
    for axis in args.axis:
        if len(axis) < 2:
            raise accuracy.EvaluationError(f'--axis {" ".join(axis)}: expected a setting name '
                                           'and at least one value')
        axes.append((axis[0], [sweep.parse_value(axis[0], text)[1] for text in axis[1:]]))
    twice = _twice([name for name, _ in axes])
    if twice:  # the grid would take the last axis's values for both
        raise accuracy.EvaluationError(f'--axis {twice} is given twice; give all its values '
                                       'in one --axis')
    if axes:
        points += sweep.grid(axes)
    return points or [dict(p) for p in sweep.DEFAULT_POINTS]


def _twice(items: list | tuple) -> object:
    """Return the first item given more than once (None when each is given once)."""
    return next((item for item in items if items.count(item) > 1), None)


def run_sweep(args: argparse.Namespace) -> int:
    """Run the sweep, write JSON (and markdown); return the exit status."""
    from sparse_perception import settings as settings_module
    from sparse_perception.evaluation import accuracy, sweep
    from sparse_perception.replay.errors import ReplayError

    def log(text: str) -> None:
        if not args.quiet:
            print(text, file=sys.stderr, flush=True)

    try:
        points = points_from_args(args)
        _check_outputs(args, [settings_module.flatten(accuracy.default_settings()), *points])
        document = sweep.sweep(
            points, args.davis_frames,
            args.jhmdb_frames, vtest=not args.no_vtest,
            default_models=not args.no_default_models, log=log)
        command = running_command()
        document['command'] = command
        _write(args, accuracy.json_text(document),
               sweep.markdown(document, command) + '\n' if args.markdown else None)
    except (accuracy.EvaluationError, ReplayError, settings_module.SettingError) as exc:
        print(f'sparse-perception eval sweep: error: {exc}', file=sys.stderr)
        return 1
    except OSError as exc:
        print(f'sparse-perception eval sweep: error: {exc.filename or args.json}: '
              f'{exc.strerror or exc}', file=sys.stderr)
        return 1
    chosen = document['chosen']
    print('chosen: ' + (chosen['label'] if chosen else 'no point keeps the bounds'))
    print(f'written to {args.json}' + (f' and {args.markdown}' if args.markdown else ''))
    failed = [p['label'] for p in document['points'] if 'error' in p]
    if failed:  # written all the same; a script must still tell it from a full sweep
        print(f'sparse-perception eval sweep: error: {len(failed)} of '
              f'{len(document["points"])} points failed to run: {"; ".join(failed)}',
              file=sys.stderr)
        return 1
    return 0
