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
The sparsity sweep behind the package's default settings (``sparse-perception eval sweep``).

Each *point* is a set of settings (``change.threshold``, ``change.min_pixels``,
``sparsity.scale``, or any other change or sparsity setting by its public name: those of the
sections ``change`` and ``sparsity``, and ``pose.gate*`` and ``pose.change_*``; the models and
the dense reference are the same at every point) applied on top of the *base*:
the package defaults with every swept knob at its exact value (threshold 0, one pixel, scale
0), so that a point means the same whatever the defaults are when the sweep runs. A point's
change threshold and min_pixels apply to the pose head too (its own ``pose.change_*``) unless
the point sets those. For each point the incremental pipelines run on

- the DAVIS sequences (DeepLabV3-MobileNetV2; IoU of the person class and agreement with
  dense) and the JHMDB clip (MoveNet; PCK@0.2), as in ``eval accuracy``;
- the bundled vtest40 clip (static camera, no ground truth; agreement with dense only),
  where temporal sparsity has something to skip, for the speed a point buys.

The dense pipeline runs again, in alternation with every point's incremental run, so that
each point's speedup is measured side by side under the same load and caches. A point
*passes* when it keeps the accuracy bounds on every DAVIS sequence and on JHMDB (IoU / PCK
drop <= 0.5 points, mask agreement >= 99.5%); among the passing points the one that saves the
most multiply-accumulates (mean over the clips, vtest40 included; ties: the lower active
fraction) is *chosen*. MACs, not wall time, decide, because they do not depend on the
machine's load (so the path choice, whose dense passes follow the timings, is off in the
base); the measured speed, of the engine on every frame, is recorded beside them. Finally
the package's own default models (MediaPipe) are run at the exact base and at the chosen
point, to show what the chosen settings do to them.
"""

from __future__ import annotations

import itertools
import time
from typing import Any, Callable, Mapping, Sequence

from sparse_perception import settings as settings_module
from sparse_perception.evaluation import accuracy
from sparse_perception.evaluation.stats import mean_or_none
from sparse_perception.replay.sources import FrameRange

SCHEMA = 'sparse_perception.eval.sweep/1'
# Every point starts from these (on top of the package defaults), then sets its own values.
# The path choice is off: which frames it runs dense follows the timings, and so the machine's
# load, and the MACs that decide would follow them too (a point may turn it on).
BASE = {'change.threshold': 0.0, 'change.min_pixels': 1, 'sparsity.scale': 0.0,
        'sparsity.adaptive': False}
# The default points: the input change threshold alone, with noise suppression (min_pixels,
# which also turns on the neighbour rule for the edges of moving objects), and the engine's
# per-layer and global-pooling thresholds alone and with a small input threshold.
DEFAULT_POINTS: tuple[dict[str, Any], ...] = (
    {},
    *({'change.threshold': t} for t in (1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0)),
    {'change.threshold': 2.0, 'change.min_pixels': 4},
    {'change.threshold': 2.0, 'change.min_pixels': 16},
    {'change.threshold': 4.0, 'change.min_pixels': 16},
    *({'change.threshold': t, 'change.min_pixels': 32} for t in (4.0, 8.0, 12.0)),
    {'change.threshold': 4.0, 'sparsity.global_scale': 0.05},
    *({'sparsity.scale': s} for s in (0.01, 0.02, 0.05)),
    {'change.threshold': 2.0, 'sparsity.scale': 0.01},
)


def parse_assignment(text: str) -> tuple[str, Any]:
    """Parse ``NAME=VALUE`` into the setting's name and typed value (validated)."""
    name, sep, value = text.partition('=')
    if not sep or not name.strip():
        raise accuracy.EvaluationError(f'{text!r} is not NAME=VALUE (e.g. change.threshold=4)')
    return parse_value(name.strip(), value.strip())


def script_setup(parser: Any, changes: Mapping[str, Any], assignments: Sequence[str],
                 out: Any) -> tuple[Any, Any, dict[str, Any]]:
    """
    Return the settings, the markdown path and the changes made, of a script under ``bench/``.

    The settings are the package defaults with ``changes``, then the ``--set`` NAME=VALUE
    ``assignments`` (typed as a ``--point``'s): the changes returned are both, for the results
    to record. The markdown goes beside ``out`` (a JSON path, or None). Both outputs are
    checked, before any measuring, to be writable and apart from the shared data. A bad value
    or output ends the script through ``parser.error``.
    """
    from sparse_perception.output_files import check_outputs, OutputError
    from sparse_perception.shared_data import shared_root

    changes = dict(changes)
    try:
        changes.update(parse_assignment(item) for item in assignments)
        settings = settings_module.replace(settings_module.PerceptionSettings(), changes)
    except (ValueError, settings_module.SettingError) as exc:
        parser.error(f'--set: {exc}')
    markdown_path = out.with_suffix('.md') if out else None
    try:
        check_outputs([('--out', out), ('markdown', markdown_path)],
                      [shared_root() / 'data', shared_root() / 'models'])
    except OutputError as exc:
        parser.error(str(exc))
    return settings, markdown_path, changes


def finish_script(name: str, argv: Sequence[str], fields: Mapping[str, Any], out: Any,
                  markdown_path: Any, render: Callable[[dict], str]) -> dict[str, Any]:
    """
    Return a ``bench/`` script's result: ``fields``, its command, the time and the provenance.

    With ``out`` (see :func:`script_setup`) it is written there as JSON, with ``render``'s
    markdown beside it, both or neither.
    """
    import json

    from sparse_perception.evaluation.provenance import environment
    from sparse_perception.output_files import write_together

    result = {**fields, 'command': f'bench/{name}.py ' + ' '.join(argv),
              'when': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
              **environment('cpu')}
    if out:
        write_together([(out, json.dumps(accuracy.json_safe(result), indent=2) + '\n'),
                        (markdown_path, render(result))])
    return result


def parse_value(name: str, text: str) -> tuple[str, Any]:
    """Convert ``text`` to the type of setting ``name``; raise naming both when it is bad."""
    spec = settings_module.spec(name)  # SettingError lists the known names
    try:
        if spec.kind is bool:
            value: Any = settings_module.BOOL_WORDS[text.lower()]
        elif spec.kind is tuple:
            value = tuple(part for part in text.split(';') if part)
        else:
            value = spec.kind(text)
    except (KeyError, ValueError):
        raise accuracy.EvaluationError(
            f'{name}={text!r}: expected {spec.kind.__name__} (default {spec.default!r})'
        ) from None
    return name, settings_module.validate(spec, value)


def grid(axes: Sequence[tuple[str, Sequence[Any]]]) -> list[dict[str, Any]]:
    """Return every combination of the axes' values as points."""
    names = [name for name, _ in axes]
    return [dict(zip(names, values)) for values in itertools.product(*(v for _, v in axes))]


# The pose head has a change threshold of its own; a point's change settings reach it too
# unless the point names the pose head's.
_POSE_CHANGE = {'change.threshold': 'pose.change_threshold',
                'change.min_pixels': 'pose.change_min_pixels'}


def point_settings(point: Mapping[str, Any], models: Mapping[str, Any] | None = None) -> Any:
    """Return the settings of a point: package defaults, then :data:`BASE`, the point."""
    changes = dict(BASE)
    changes.update(point)
    for name, pose_name in _POSE_CHANGE.items():
        if pose_name not in point:
            changes[pose_name] = changes[name]
    if models:
        changes.update(models)
    return settings_module.replace(accuracy.default_settings(), changes)


def label(point: Mapping[str, Any]) -> str:
    """Return a short name of a point: its settings that differ from the base."""
    parts = [f'{name.split(".")[-1]}={value:g}' if isinstance(value, float)
             else f'{name.split(".")[-1]}={value}' for name, value in point.items()
             if BASE.get(name, object()) != value]
    return ', '.join(parts) or 'exact (threshold 0, scale 0)'


def _macs_saved(results: Mapping[str, dict]) -> float | None:
    return mean_or_none([r['macs_saved'] for r in results.values()])


def _active(results: Mapping[str, dict]) -> float | None:
    return mean_or_none([r['active_fraction_after_first'] for r in results.values()])


def run_point(evaluator: accuracy.Evaluator, clips: Sequence[accuracy.ClipData],
              settings: Any) -> dict[str, dict]:
    """Run every clip at ``settings``; return the scores by clip (``davis/NAME``, ...)."""
    # New incremental pipelines, as a run of the point alone would have: a pipeline's reset
    # keeps what its path choice measured, so a point run on the pipelines of the points
    # before it could start on the path they chose. (The dense ones are kept: a point
    # changes nothing they read.)
    evaluator.discard_incremental()
    evaluator.update(settings)
    return {clip_key(data): evaluator.clip(data) for data in clips}


def clip_key(data: accuracy.ClipData) -> str:
    """Name a clip in the results: 'davis/parkour', 'jhmdb' or the clip's own name."""
    if data.truth is None:
        return data.clip.name
    return f'davis/{data.clip.name}' if data.clip.head == 'segmentation' else 'jhmdb'


def check(results: Mapping[str, dict]) -> dict[str, Any]:
    """Check the accuracy bounds on the clips with ground truth (vtest40 has none)."""
    davis = {k.split('/', 1)[1]: v for k, v in results.items() if k.startswith('davis/')}
    return accuracy.criteria(davis, results.get('jhmdb'))


def choose(points: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Return the passing point that saves the most MACs (None when no point passes)."""
    passing = [p for p in points if p['criteria']['passed']]
    if not passing:
        return None
    return max(passing, key=lambda p: (p['macs_saved_mean'], -p['active_fraction_mean']))


def sweep(points: Sequence[Mapping[str, Any]],
          davis_frames: FrameRange = FrameRange.parse(accuracy.DAVIS_FRAMES),
          jhmdb_frames: FrameRange = FrameRange.parse(accuracy.JHMDB_FRAMES), vtest: bool = True,
          default_models: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every point (see the module docstring); return the result document."""
    from sparse_perception.evaluation.provenance import environment, load_average
    from sparse_perception.gates.learned import GateFileError, load

    started = time.perf_counter()
    load_before = load_average()
    if not points:
        raise accuracy.EvaluationError('the sweep has no points')
    for point in points:  # a point whose settings or gate file are bad fails before any runs
        other = next((name for name in point
                      if not name.startswith(accuracy.SPARSITY_SECTIONS)), None)
        if other is not None:
            raise accuracy.EvaluationError(
                f'point {label(point)}: {other}={point[other]}: a sweep point may set only '
                'change and sparsity settings (change.*, sparsity.*, pose.gate*, '
                'pose.change_*); the models and the dense reference are the same at every '
                'point (evaluate other models with eval accuracy)')
        settings = point_settings(point)
        if settings.sparsity.gate == 'learned':
            try:
                load(settings.sparsity.gate_model, settings.change.tile_size,
                     settings.model.segmentation)
            except GateFileError as exc:
                raise accuracy.EvaluationError(f'point {label(point)}: {exc}') from None
    loaded = accuracy.load_clips(('davis', 'jhmdb'), davis_frames, jhmdb_frames)
    clips = loaded['davis'] + loaded['jhmdb']
    if vtest:
        clip = accuracy.vtest_clip()
        clips.append(accuracy.ClipData(clip, accuracy.read_frames(clip), None))
    evaluator = accuracy.Evaluator(point_settings(points[0]), log=lambda _: None)
    results = []
    try:
        for number, point in enumerate(points, 1):
            begin = time.perf_counter()
            settings = point_settings(point)
            entry = {'point': dict(point), 'label': label(point),
                     'settings': accuracy.sparsity_values(settings)}
            gate = accuracy.describe_gate(settings)  # (a learned gate: its file's SHA-256)
            if gate is not None:
                entry['gate_file'] = gate
            try:
                scores = run_point(evaluator, clips, settings)
            except (RuntimeError, IndexError, ValueError) as exc:
                # A point the engine cannot run is a result too (and never chosen); the
                # pipelines that failed are replaced for the next point.
                evaluator.discard_incremental()
                entry.update(error=f'{type(exc).__name__}: {exc}', criteria={
                    'passed': False, 'failures': [f'the run failed: {exc}']},
                    wall_s=time.perf_counter() - begin)
                results.append(entry)
                log(f'[{number}/{len(points)}] {entry["label"]}: FAILED to run: '
                    f'{entry["error"]}')
                continue
            entry.update(clips=scores, criteria=check(scores),
                         macs_saved_mean=_macs_saved(scores),
                         active_fraction_mean=_active(scores),
                         wall_s=time.perf_counter() - begin)
            results.append(entry)
            log(f'[{number}/{len(points)}] {entry["label"]}: '
                f'{"passes" if entry["criteria"]["passed"] else "fails"}, MACs saved '
                f'{entry["macs_saved_mean"] * 100:.1f}%, ' + '; '.join(
                    f'{k} {_short(v)}' for k, v in scores.items())
                + f' ({entry["wall_s"]:.0f} s)')
    finally:
        evaluator.close()
    chosen = choose(results)
    document: dict[str, Any] = {
        'schema': SCHEMA,
        'base': {**BASE, 'note': 'package defaults, then these, then the point'},
        # Every point runs the same models (a point may not set one).
        'models': {head: getattr(point_settings({}).model, head)
                   for head in ('segmentation', 'pose')},
        'conditions': {
            'davis': {'sequences': list(accuracy.DAVIS_SEQUENCES),
                      'frames': str(davis_frames)},
            'jhmdb': {'clip': accuracy.JHMDB_CLIP, 'frames': str(jhmdb_frames)},
            'vtest40': 'all 40 frames' if vtest else 'not run',
            'timing': 'wall time of Pipeline.process per frame, p50 over the frames after '
                      'the first; dense and incremental in alternation at every point',
            'bounds': {'max_drop_points': accuracy.MAX_DROP_POINTS,
                       'min_agreement': accuracy.MIN_AGREEMENT},
            'choice': 'the passing point with the most MACs saved (mean over the clips)'},
        'points': results,
        'chosen': None if chosen is None else {
            'label': chosen['label'], 'point': chosen['point'],
            'settings': chosen['settings']},
    }
    if default_models and chosen is not None:
        document['default_models'] = _default_models(chosen['point'], clips, log)
    document['environment'] = environment('auto')
    document['environment']['loadavg_before'] = load_before
    document['environment']['loadavg_after'] = load_average()
    document['wall_s'] = time.perf_counter() - started
    return document


def _default_models(point: Mapping[str, Any], clips: Sequence[accuracy.ClipData],
                    log: Callable[[str], None]) -> dict[str, Any]:
    """Run the package's default models (MediaPipe) at the exact base and at ``point``."""
    from sparse_perception.models.registry import ModelNotFound
    from sparse_perception.settings import PerceptionSettings

    defaults = PerceptionSettings().model
    models = {'model.segmentation': defaults.segmentation, 'model.pose': defaults.pose}
    out: dict[str, Any] = {'models': {'segmentation': defaults.segmentation,
                                      'pose': defaults.pose}}
    if point.get('sparsity.gate') == 'learned':  # a gate file holds to its model
        out['skipped'] = ("the chosen point's learned gate was trained for another "
                          'segmentation model')
        log(f'default models: skipped ({out["skipped"]})')
        return out
    evaluator = accuracy.Evaluator(point_settings({}, models), log=lambda _: None)
    try:
        for name, settings in (('exact', point_settings({}, models)),
                               ('chosen', point_settings(point, models))):
            out[name] = run_point(evaluator, clips, settings)
            log(f'default models, {name}: ' + '; '.join(
                f'{k} {_short(v)}' for k, v in out[name].items()))
    except (accuracy.EvaluationError, ModelNotFound) as exc:
        out['skipped'] = str(exc)
        log(f'default models: skipped ({exc})')
    finally:
        evaluator.close()
    return out


def _short(result: Mapping[str, Any]) -> str:
    parts = []
    if result.get('iou_drop_points') is not None:
        parts.append(f'IoU drop {result["iou_drop_points"]:+.2f}')
    if result.get('pck_drop_points') is not None:
        parts.append(f'PCK drop {result["pck_drop_points"]:+.2f}')
    if 'agreement' in result:
        parts.append(f'agree {result["agreement"] * 100:.2f}%')
    elif result.get('agreement_keypoint_px') is not None:
        parts.append(f'{result["agreement_keypoint_px"]:.2f} px')
    parts.append(f'active {accuracy.figure(result["active_fraction_after_first"], ".2f")}')
    return ' '.join(parts)


def markdown(document: Mapping[str, Any], command: str = '') -> str:
    """Render the sweep as markdown: conditions, an accuracy table and a speed table."""
    env = document['environment']
    versions = env['versions']
    device = env['device']
    points = document['points']
    ran = [p for p in points if 'clips' in p]
    clips = list(ran[0]['clips']) if ran else []
    lines = [
        '# Sparsity sweep: accuracy and speed of the incremental pipeline',
        '',
        f'- models: {document["models"]["segmentation"]} (DAVIS, vtest40), '
        f'{document["models"]["pose"]} (JHMDB)',
        f'- frames: DAVIS {", ".join(document["conditions"]["davis"]["sequences"])} '
        f'[{document["conditions"]["davis"]["frames"]}], JHMDB '
        f'[{document["conditions"]["jhmdb"]["frames"]}], vtest40: '
        f'{document["conditions"]["vtest40"]}',
        '- base of every point: package defaults with '
        + ', '.join(f'{k} = {v}' for k, v in document['base'].items() if k != 'note'),
        f'- accuracy bounds: IoU / PCK drop <= {accuracy.MAX_DROP_POINTS} points, mask '
        f'agreement >= {accuracy.MIN_AGREEMENT * 100:g}% on every DAVIS sequence and JHMDB',
        f'- choice: {document["conditions"]["choice"]}',
        f'- machine: {device.get("cpu")}, {device.get("cores")} cores, torch '
        f'{versions.get("torch")} with {device.get("torch_threads")} threads, Python '
        f'{versions.get("python")}, numpy {versions.get("numpy")}, OpenCV '
        f'{versions.get("opencv")}, C allocator {device.get("allocator", "not recorded")}; '
        f'load average (1, 5, 15 min) before {env.get("loadavg_before")}, after '
        f'{env.get("loadavg_after")}',
        f'- {document["conditions"]["timing"]}',
    ]
    if command:
        lines.append(f'- command: `{command}`, {document["wall_s"]:.0f} s')
    lines += accuracy.source_lines(env)
    chosen = document.get('chosen')
    lines += ['', '**Chosen: ' + (chosen['label'] if chosen else 'none passes') + '**', '',
              '## Accuracy', '',
              '| point | ' + ' | '.join(clips) + ' | passes |',
              '|---|' + '---|' * (len(clips) + 1)]
    for p in points:
        if 'error' in p:
            lines.append(f'| {p["label"]} | ' + ' | '.join(['failed'] * len(clips))
                         + f' | no: {p["error"]} |')
            continue
        cells = [_accuracy_cell(p['clips'][c]) for c in clips]
        mark = '**yes**' if chosen and p['label'] == chosen['label'] else (
            'yes' if p['criteria']['passed'] else 'no')
        lines.append(f'| {p["label"]} | ' + ' | '.join(cells) + f' | {mark} |')
    lines += ['', 'Cells: ground-truth drop in points (dense minus incremental; IoU for DAVIS, '
              'PCK@0.2 for JHMDB) / agreement with dense (mask pixels, or mean keypoint '
              'distance in pixels).', '',
              '## Speed', '',
              '| point | MACs saved (mean) | ' + ' | '.join(
                  f'{c} active / MACs saved / ms (speedup)' for c in clips) + ' |',
              '|---|---|' + '---|' * len(clips)]
    for p in ran:
        cells = [_speed_cell(p['clips'][c]) for c in clips]
        lines.append(f'| {p["label"]} | {p["macs_saved_mean"] * 100:.1f}% | '
                     + ' | '.join(cells) + ' |')
    dense = ', '.join(f'{c} {_p50(ran[0]["clips"][c], "dense"):.0f} ms'
                      for c in clips) if ran else ''
    lines += ['', f"Dense p50 per frame (the first point's run): {dense}. Speedup: dense p50 "
              'over incremental p50 of the same run. Active: share of positions recomputed '
              '(frames after the first); ms: incremental p50.', '']
    lines += _default_models_md(document.get('default_models'))
    reference = [(c, r) for c, r in (ran[0]['clips'].items() if ran else ())
                 if r.get('dense_iou') is not None or r.get('dense_pck') is not None]
    if reference:
        lines += ['## Dense reference scores', '']
        for c, r in reference:
            value = (f'IoU {r["dense_iou"]:.4f}' if r.get('dense_iou') is not None
                     else f'PCK@0.2 {r["dense_pck"]:.4f}')
            lines.append(f'- {c}: {value} over {r["frames_scored"]} frames')
        lines.append('')
    return '\n'.join(lines)


def _p50(result: Mapping[str, Any], kind: str) -> float:
    latency = result['latency_ms'][kind]
    return latency['p50'] if latency else float('nan')


def _accuracy_cell(result: Mapping[str, Any]) -> str:
    drop = result.get('iou_drop_points')
    if drop is None:
        drop = result.get('pck_drop_points')
    head = '-' if drop is None else f'{drop:+.2f}'
    if 'agreement' in result:
        return f'{head} / {result["agreement"] * 100:.2f}%'
    return f'{head} / {result["agreement_keypoint_px"]:.2f} px'


def _speed_cell(result: Mapping[str, Any]) -> str:
    speedup = result.get('speedup')
    saved = result['macs_saved']
    return (f'{accuracy.figure(result["active_fraction_after_first"], ".2f")} / '
            f'{"-" if saved is None else format(saved * 100, ".0f") + "%"} '
            f'/ {_p50(result, "incremental"):.0f} '
            f'({"-" if speedup is None else f"{speedup:.2f}x"})')


def _default_models_md(section: Mapping[str, Any] | None) -> list[str]:
    if not section:
        return []
    models = section['models']
    lines = ["## The package's default models at the chosen point", '',
             f'{models["segmentation"]} on DAVIS and vtest40, {models["pose"]} on JHMDB '
             '(dense vs incremental, same cells as above).', '']
    if 'skipped' in section:
        return lines + [f'Skipped: {section["skipped"]}', '']
    clips = list(section['exact'])
    lines += ['| settings | ' + ' | '.join(clips) + ' |', '|---|' + '---|' * len(clips)]
    for name in ('exact', 'chosen'):
        cells = [f'{_accuracy_cell(section[name][c])}, active '
                 f'{accuracy.figure(section[name][c]["active_fraction_after_first"], ".2f")}'
                 for c in clips]
        lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
    return lines + ['']
