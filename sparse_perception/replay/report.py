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
Writing a replay's results: ``report.json``, ``report.md``, ``frames.csv``, atomically.

A run writes into a staging folder inside ``--out`` and moves each output into place only
when everything is written, ``report.json`` last. A failed or interrupted run leaves the
previous outputs as they were: Ctrl-C, SIGTERM and SIGHUP are held back while the outputs move
into place and while the staging folder is removed. Only a process killed outright leaves a
``.partial-*`` folder (:func:`leftovers` finds them).
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import math
import os
from pathlib import Path
import shutil
import tempfile
from typing import Any, Iterable, Sequence

from sparse_perception.output_files import interrupts_held, missing_folders, remove_empty, \
    staging_leftovers

REPORT_JSON = 'report.json'
REPORT_MD = 'report.md'
FRAMES_CSV = 'frames.csv'
SCHEMA = 1  # report.json layout version


class Staging:
    """A staging folder in ``out``; :meth:`commit` moves its contents into ``out``."""

    def __init__(self, out: Path):
        self.out = out
        # The folders made for ``out``, deepest first: a run that ends without output leaves
        # none of them behind.
        self.made = ([] if out.exists() else [out]) + missing_folders(out)
        out.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix='.partial-', dir=out))
        self.committed = False

    def commit(self, last: str = REPORT_JSON, owned: Sequence[str] = ()) -> list[Path]:
        """
        Move every staged entry into ``out`` (replacing old ones), ``last`` at the end.

        Names in ``owned`` that this run did not stage are removed from ``out`` first: outputs
        of an earlier run that this one does not replace.
        """
        # Interrupts held: a Ctrl-C amid these renames would leave old outputs beside new ones.
        with interrupts_held():
            return self._commit(last, owned)

    def _commit(self, last: str, owned: Sequence[str]) -> list[Path]:
        entries = sorted(self.path.iterdir(), key=lambda p: (p.name == last, p.name))
        stale = self.out / last
        if stale.exists():  # an old report must not outlive the outputs it described
            stale.unlink()
        staged = {entry.name for entry in entries}
        for name in owned:
            old = self.out / name
            if name in staged or not (old.exists() or old.is_symlink()):
                continue
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old)
            else:
                old.unlink()
        moved = []
        for entry in entries:
            target = self.out / entry.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            os.replace(entry, target)
            moved.append(target)
        self.path.rmdir()
        self.committed = True
        return moved

    def abort(self) -> None:
        """Remove the staging folder and whatever it holds, and the folders made for it."""
        if not self.committed:
            shutil.rmtree(self.path, ignore_errors=True)
            remove_empty(self.made)


def leftovers(out: Path) -> list[Path]:
    """Return the staging folders in ``out`` that runs killed outright left behind."""
    return staging_leftovers(out, '.partial-*')


def json_safe(value: Any) -> Any:
    """Replace NaN and infinities (not JSON) by None, and undecodable bytes, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str):
        return text_safe(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def text_safe(text: str) -> str:
    r"""
    Return ``text`` with what UTF-8 cannot hold written as an escape (``\udcff``).

    A file name that is not UTF-8 reaches Python as lone surrogates, which no UTF-8 file can
    hold and strict JSON readers refuse.
    """
    return text.encode('utf-8', 'backslashreplace').decode('utf-8')


def write_json(report: dict, path: Path) -> None:
    """Write ``report`` as indented JSON (NaN becomes null)."""
    path.write_text(json.dumps(json_safe(report), indent=2, allow_nan=False) + '\n',
                    encoding='utf-8')


def write_frames_csv(records: Iterable[Any], path: Path) -> None:
    """One row per processed frame (``records``: dataclasses, all of one kind)."""
    rows = iter(records)
    first = next(rows, None)
    fields = [f.name for f in dataclasses.fields(first)] if first is not None else ['index']
    with open(path, 'w', newline='', encoding='utf-8', errors='backslashreplace') as stream:
        writer = csv.DictWriter(stream, fieldnames=fields)
        writer.writeheader()
        for record in itertools.chain([first] if first is not None else [], rows):
            writer.writerow({k: ('' if v is None else v)
                             for k, v in dataclasses.asdict(record).items()})


# ---------------------------------------------------------------------------------------------
# report.md
# ---------------------------------------------------------------------------------------------

def _matched(truth: dict) -> str:
    """Say how frames found their annotations (a recording's by position is worth a look)."""
    how = truth.get('matched_by')
    if how == 'position':
        return (', matched by position (frame i of the recording with annotation i: right '
                'only if both start at the same frame and every frame is annotated)')
    return f', matched by {how}' if how else ''


def _fmt(value: Any, digits: int = 2, percent: bool = False) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return '-'
    if isinstance(value, bool):
        return 'yes' if value else 'no'
    if isinstance(value, int):
        return f'{value:,}'
    if isinstance(value, float):
        return percent_text(value, digits) if percent else f'{value:.{digits}f}'
    return str(value)


def percent_text(share: float, digits: int = 2) -> str:
    """Return ``share`` in percent; never 100% short of all (99.998% to 2 digits: 99.99%)."""
    value = share * 100
    if share < 1:
        value = min(value, 100 - 10 ** -digits)
    return f'{value:.{digits}f}%'


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]
    return lines + ['']


def markdown(report: dict) -> str:
    """Render ``report`` (the report.json dictionary) as Markdown with tables and plots."""
    lines = ['# Replay report', '']
    source = report['input']
    lines += [f"Input: `{source['path']}` ({source['kind']}"
              + (f", topic `{source['topic']}`" if source['kind'].startswith('rosbag') else '')
              + f"), frames {source['frame_range']}. Heads: {', '.join(report['heads'])}. "
              f"Device: {report['environment']['device'].get('used', '?')}. "
              f"Wall time {report['wall_s']:.1f} s.", '']
    if report.get('command'):
        lines += [f"Command: `{report['command']}`", '']
    lines += ['## Summary', '']
    latency = report['latency_ms']
    rows = [('frames processed', _fmt(report['frames'])),
            ('frames skipped (corrupt)', _fmt(report['skipped_frames'])),
            *([('temporal state resets (a stamp went back: the input looped)',
                _fmt(report['state_resets']))] if report.get('state_resets') else []),
            ('speedup (dense p50 / incremental p50)',
             '-' if report['speedup'] is None else f"{report['speedup']:.2f}x"),
            ('active fraction (mean over frames)', _fmt(report['active_fraction'], 3)),
            ('MACs saved', _fmt(report['activity']['macs_saved'], 1, percent=True))]
    agreement = report['agreement']
    if agreement:
        rows += [('mask pixels agreeing with dense', _fmt(agreement['mask_pixel'], 3, True)),
                 ('keypoint error vs dense (px)', _fmt(agreement['keypoint_px']))]
    pose = report.get('pose')
    if pose:
        rows += [('frames with people (incremental)', _fmt(pose['frames_with_people'])),
                 ('people per frame, mean', _fmt(pose['people_per_frame_mean'])),
                 ('keypoint error vs dense, p50 (px)', _fmt(pose['keypoint_px_p50'])),
                 ('keypoint error vs dense, mean (px)', _fmt(pose['keypoint_px_mean'])),
                 ('frames whose person count differs from dense',
                  _fmt(pose['person_count_mismatch_frames']))]
    lines += _table(('figure', 'value'), rows)
    lines += ['## Latency (ms)', '']
    lines += _table(('pipeline', 'mean', 'p50', 'p90', 'p99', 'min', 'max'), [
        (name, *(_fmt(latency[name][k]) for k in ('mean', 'p50', 'p90', 'p99', 'min', 'max')))
        for name in ('dense', 'incremental') if latency.get(name)])
    lines += ['Latency is the pipeline-reported time per frame (`PipelineStats.ms`).', '']
    timing = report.get('timing')
    if timing:
        dense_run = (f"dense reference {timing['dense_process_s']:.1f} s, "
                     if latency.get('dense') else 'no dense reference (--no-dense), ')
        lines += [f"Run time {timing['total_s']:.1f} s: incremental pipeline "
                  f"{timing['incremental_process_s']:.1f} s, {dense_run}"
                  f"sweep {timing['sweep_s']:.1f} s, "
                  'everything else (reading, decoding, scoring, outputs, plots) '
                  f"{timing['other_s']:.1f} s.", '']
    activity = report['activity']
    lines += ['## Sparsity', '']
    rows = [('active fraction, mean', _fmt(report['active_fraction'], 3)),
            ('active fraction, mean after the first frame',
             _fmt(activity['active_fraction_after_first'], 3)),
            ('active fraction, p50', _fmt(activity['active_fraction_p50'], 3)),
            ('changed input tiles, mean', _fmt(activity['changed_fraction'], 3)),
            ('frames run dense (first, refresh, fallback, dense path)',
             _fmt(activity['dense_frames'])),
            ('MACs executed / dense', f"{_fmt(activity['macs'])} / "
                                      f"{_fmt(activity['dense_macs'])}")]
    for head, values in activity['per_head'].items():
        rows.append((f'{head}: active fraction / MACs saved',
                     f"{_fmt(values['active_fraction'], 3)} / "
                     f"{_fmt(values['macs_saved'], 1, True)}"))
    lines += _table(('figure', 'value'), rows)
    for head, layers in activity['per_layer'].items():
        lines += [f'Per-layer active fraction, {head}:', '']
        lines += _table(('layer', 'active fraction'),
                        [(layer, _fmt(v, 3)) for layer, v in layers.items()])
    if agreement:
        lines += ['## Agreement with the dense reference', '']
        lines += _table(('figure', 'value'), [
            ('mask pixels agreeing', _fmt(agreement['mask_pixel'], 3, True)),
            ('mask mIoU vs dense', _fmt(agreement['mask_miou'], 4)),
            ('worst frame, mask pixels agreeing',
             _fmt(agreement['mask_pixel_worst_frame'], 3, True)),
            ('keypoint error, all joints (px)', _fmt(agreement['keypoint_px'])),
            ('keypoint error, joints dense scores >= 0.3 (px)',
             _fmt(agreement['keypoint_px_confident'])),
            ('worst frame, keypoint error (px)', _fmt(agreement['keypoint_px_worst_frame'])),
            ('frames where the number of people differs',
             _fmt(agreement['people_mismatch_frames']))])
    truth = report.get('ground_truth')
    if truth:
        lines += ['## Ground truth', '']
        dense = truth.get('dense')
        rows = []
        for key, label in (('iou', 'IoU (mean over frames)'), ('iou_global', 'IoU (all pixels)'),
                           ('miou', 'mIoU (foreground, background)'),
                           ('pck', f"PCK@{truth.get('keypoints', {}).get('pck_alpha', '')}"),
                           ('pckh', f"PCKh@{truth.get('keypoints', {}).get('pckh_alpha', '')}")):
            if key in truth:
                rows.append((label, _fmt(truth[key], 4))
                            + ((_fmt(dense.get(key), 4),) if dense is not None else ()))
        lines += _table(('score', 'incremental') + (('dense',) if dense is not None else ()),
                        rows)
        if 'masks' in truth:
            masks = truth['masks']
            lines += [f"Masks: `{masks['path']}`, class id {masks['class_id']} as foreground, "
                      f"{masks['frames_scored']} frames scored{_matched(masks)}.", '']
        if 'keypoints' in truth:
            points = truth['keypoints']
            lines += [f"Keypoints: `{points['path']}` ({points['format']}), "
                      f"{points['frames_scored']} frames, {points['joints_scored']} joints "
                      f"scored ({', '.join(points['joints'])}){_matched(points)}.", '']
    if report['skipped']:
        lines += ['## Skipped frames', '']
        lines += _table(('frame', 'reason'), [(s['index'], s['reason'].replace('|', '/'))
                                              for s in report['skipped'][:50]])
        if report['skipped_frames'] > 50:
            lines += [f"... and {report['skipped_frames'] - 50} more (see report.json).", '']
    if report.get('sweep'):
        beside = ('beside the dense reference'
                  if any(p['latency_ms'].get('dense') for p in report['sweep'])
                  else 'without a dense reference (--no-dense)')
        lines += ['## Sweep over sparsity.scale', '',
                  f'Each point replays the input again {beside}, with the path choice off '
                  '(`sparsity.adaptive` false): every frame runs on the engine.', '']
        lines += _table(
            ('scale', 'p50 (ms)', 'speedup', 'active fraction', 'mask agreement',
             'keypoint px', 'GT IoU', 'GT PCK'),
            [(f"{p['scale']:g}", _fmt(p['latency_ms']['incremental']['p50']),
              _fmt(p['speedup']), _fmt(p['active_fraction'], 3),
              _fmt((p['agreement'] or {}).get('mask_pixel'), 3, True),
              _fmt((p['agreement'] or {}).get('keypoint_px')),
              _fmt((p['ground_truth'] or {}).get('iou'), 4),
              _fmt((p['ground_truth'] or {}).get('pck'), 4)) for p in report['sweep']])
    outputs = report['outputs']
    lines += ['## Plots and pictures', '']
    for key, title in (('latency_plot', 'Latency per frame'),
                       ('activity_plot', 'Active fraction per frame'),
                       ('sweep_plot', 'Speed vs accuracy'),
                       ('contact_sheet', 'Annotated frames (incremental; red: changed '
                                         'tiles, where a change map measured them)')):
        if outputs.get(key):
            lines += [f'![{title}]({outputs[key]})', '']
    if outputs.get('plots_missing'):
        lines += [f"Plots not drawn: {outputs['plots_missing']}", '']
    if outputs.get('video'):
        lines += [f"Annotated video: [{outputs['video']}]({outputs['video']})", '']
    if outputs.get('bag'):
        bag = outputs['bag']
        lines += [f"Output bag `{bag['path']}`:", '']
        lines += _table(('topic', 'type', 'messages'),
                        [(t, v['msgtype'], v['messages']) for t, v in bag['topics'].items()])
    lines += ['## Settings and environment', '']
    lines += _table(('setting', 'value'), [(k, f'`{v}`') for k, v in report['settings'].items()])
    env = report['environment']
    lines += _table(('component', 'version'),
                    [(k, v or 'not installed') for k, v in env['versions'].items()])
    lines += _table(('device', 'value'), [(k, v) for k, v in env['device'].items()])
    source = env.get('source') or {}
    if source.get('commit'):
        lines += [f"Source: commit `{source['commit']}`"
                  + (' with tracked files modified' if source.get('tracked_files_modified')
                     else '') + '.', '']
    return '\n'.join(lines)
