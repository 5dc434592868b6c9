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

"""Report writing: staging and atomic commit, JSON, Markdown, plots, pictures, progress."""

import io
import json
import math
import sys

import cv2
import numpy as np
from pipeline_double import PipelineDouble
import pytest
from sparse_perception.replay import plots
from sparse_perception.replay.job import ReplayJob, run_job
from sparse_perception.replay.pictures import ContactSheet
from sparse_perception.replay.report import markdown, Staging, write_json
from sparse_perception.replay.runner import FrameRecord, Progress
from sparse_perception.replay.sources import Frame
from sparse_perception.settings import PerceptionSettings


def test_staging_commits_everything_report_last(tmp_path):
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'report.json').write_text('old')
    (out / 'output_bag').mkdir()
    (out / 'output_bag' / 'old.mcap').write_text('old')
    (out / 'mine.txt').write_text('a file of the user: left alone')
    staging = Staging(out)
    assert staging.path.parent == out and staging.path.name.startswith('.partial-')
    for name in ('report.json', 'report.md', 'latency.png'):
        (staging.path / name).write_text('new ' + name)
    (staging.path / 'output_bag').mkdir()
    (staging.path / 'output_bag' / 'new.mcap').write_text('new')
    moved = staging.commit()
    assert moved[-1].name == 'report.json'  # the report arrives last
    assert (out / 'report.json').read_text() == 'new report.json'
    assert [p.name for p in (out / 'output_bag').iterdir()] == ['new.mcap']
    assert (out / 'mine.txt').exists() and not staging.path.exists()
    staging.abort()  # after a commit: nothing to do
    assert (out / 'report.json').exists()


def test_staging_abort_keeps_the_previous_report(tmp_path):
    (tmp_path / 'report.json').write_text('previous')
    staging = Staging(tmp_path)
    (staging.path / 'report.md').write_text('half written')
    staging.abort()
    assert (tmp_path / 'report.json').read_text() == 'previous'
    assert [p.name for p in tmp_path.iterdir()] == ['report.json']


def test_a_run_that_ends_without_output_leaves_no_folder_it_made(tmp_path):
    (tmp_path / 'kept').mkdir()
    for out in (tmp_path / 'new' / 'run', tmp_path / 'kept' / 'run'):
        staging = Staging(out)
        (staging.path / 'report.md').write_text('half')
        staging.abort()  # a failure or a Ctrl-C before the commit
        assert sorted(p.name for p in tmp_path.iterdir()) == ['kept']  # it was there before
        assert list((tmp_path / 'kept').iterdir()) == []
    staging = Staging(tmp_path / 'new' / 'run')  # a committed run keeps them, of course
    (staging.path / 'report.json').write_text('{}')
    staging.commit()
    assert (tmp_path / 'new' / 'run' / 'report.json').is_file()


def test_json_has_no_nan(tmp_path):
    path = tmp_path / 'r.json'
    write_json({'a': math.nan, 'b': [1.0, math.inf, {'c': -math.inf}], 'd': 'x'}, path)
    assert json.loads(path.read_text()) == {'a': None, 'b': [1.0, None, {'c': None}], 'd': 'x'}


def _report(**changes):
    latency = {'mean': 2.0, 'p50': 2.0, 'p90': 3.0, 'p99': 4.0, 'min': 1.0, 'max': 4.0}
    report = {
        'input': {'path': '/data/bag', 'kind': 'rosbag2', 'topic': '/cam', 'frame_range': '0:'},
        'heads': ['segmentation'], 'frames': 3, 'skipped_frames': 1,
        'skipped': [{'index': 1, 'stamp_ns': None, 'reason': 'bad | data'}],
        'latency_ms': {'dense': None, 'incremental': latency}, 'speedup': None,
        'active_fraction': 0.25,
        'activity': {'active_fraction_after_first': 0.1, 'active_fraction_p50': 0.1,
                     'changed_fraction': 0.2, 'dense_frames': 1, 'macs': 10, 'dense_macs': 40,
                     'macs_saved': 0.75, 'per_head': {}, 'per_layer': {}},
        'agreement': None, 'ground_truth': None, 'sweep': [],
        'settings': {'change.threshold': 12.0}, 'wall_s': 1.5,
        'environment': {'versions': {'numpy': '2', 'scipy': None},
                        'device': {'used': 'cpu', 'cores': 2}},
        'outputs': {'plots_missing': 'plots need matplotlib'}}
    report.update(changes)
    return report


def test_markdown_without_dense_or_ground_truth():
    text = markdown(_report())
    assert '| incremental | 2.00 | 2.00 | 3.00 | 4.00 | 1.00 | 4.00 |' in text
    assert '| dense |' not in text and '## Agreement' not in text and '## Ground truth' not in text
    assert '| speedup (dense p50 / incremental p50) | - |' in text
    assert '| 1 | bad / data |' in text  # a table cell cannot hold a bar
    assert 'Plots not drawn: plots need matplotlib' in text
    assert '| scipy | not installed |' in text


def test_markdown_without_dense_claims_no_dense_run():
    truth = {'iou': 0.8, 'masks': {'path': 'm', 'class_id': 1, 'frames_scored': 3,
                                   'matched_by': 'position'}}
    timing = {'total_s': 2.0, 'incremental_process_s': 1.0, 'dense_process_s': 0.0,
              'sweep_s': 0.0, 'other_s': 1.0}
    text = markdown(_report(ground_truth=truth, timing=timing))
    assert 'no dense reference (--no-dense)' in text and 'dense reference 0.0 s' not in text
    assert '| score | incremental |\n' in text and '| IoU (mean over frames) | 0.8000 |\n' in text
    assert '3 frames scored, matched by position (frame i of the recording' in text
    assert 'state resets' not in text
    assert '| temporal state resets (a stamp went back: the input looped) | 2 |' in markdown(
        _report(state_resets=2))


def test_markdown_with_ground_truth_and_sweep():
    truth = {'iou': 0.8, 'iou_global': 0.79, 'miou': 0.85, 'dense': {'iou': 0.81},
             'masks': {'path': 'm', 'class_id': 15, 'frames_scored': 3}}
    point = {'scale': 0.5, 'latency_ms': {'incremental': {'p50': 1.5}}, 'speedup': 2.0,
             'active_fraction': 0.2, 'agreement': {'mask_pixel': 0.995, 'keypoint_px': None},
             'ground_truth': {'iou': 0.79}}
    text = markdown(_report(ground_truth=truth, sweep=[point]))
    assert '| IoU (mean over frames) | 0.8000 | 0.8100 |' in text
    assert 'class id 15 as foreground, 3 frames scored' in text
    assert '| 0.5 | 1.50 | 2.00 | 0.200 | 99.500% | - | 0.7900 | - |' in text


def _records(n=12):
    return [FrameRecord(i, i * 100, 5.0 + i % 3, 9.0, 1.0 if i == 0 else 0.1 + 0.01 * i,
                        0.1, i == 0) for i in range(n)]


def test_plots_are_drawn(tmp_path):
    plots.latency_plot(_records(), tmp_path / 'latency.png')
    plots.activity_plot(_records(), tmp_path / 'activity.png')
    points = [{'scale': s, 'latency_ms': {'incremental': {'p50': 5 - s}},
               'agreement': {'mask_pixel': 1 - s / 100, 'keypoint_px': s},
               'ground_truth': {'iou': 0.8 - s / 50, 'pck': None}} for s in (0, 1, 2)]
    assert plots.sweep_plot(points, tmp_path / 'sweep.png')
    for name in ('latency', 'activity', 'sweep'):
        picture = cv2.imread(str(tmp_path / f'{name}.png'))
        assert picture is not None and picture.std() > 10
    # Three accuracy figures -> three panels side by side: wider than tall.
    sweep = cv2.imread(str(tmp_path / 'sweep.png'))
    assert sweep.shape[1] > 2.5 * sweep.shape[0]
    empty = [{'scale': 0, 'latency_ms': {'incremental': {'p50': 1}}, 'agreement': None,
              'ground_truth': None}]
    assert not plots.sweep_plot(empty, tmp_path / 'none.png')
    assert not (tmp_path / 'none.png').exists()


def test_without_matplotlib_the_report_says_why(tmp_path, monkeypatch):
    folder = tmp_path / 'frames'
    folder.mkdir()
    for index in range(3):
        picture = np.full((32, 48, 3), 40 * index, np.uint8)
        cv2.imwrite(str(folder / f'{index}.png'), picture)
    monkeypatch.setitem(sys.modules, 'matplotlib', None)
    with pytest.raises(plots.PlotsUnavailable, match=r'sparse_perception\[replay\]'):
        plots.require_matplotlib()
    notes = []
    report = run_job(ReplayJob(source=folder, out=tmp_path / 'out',
                               settings=PerceptionSettings(), rate=5.0, bag=False,
                               pipeline=PipelineDouble, log=notes.append))
    assert report['frames'] == 3
    assert 'matplotlib' in report['outputs']['plots_missing'] and 'matplotlib' in notes[0]
    assert 'latency_plot' not in report['outputs']
    assert (tmp_path / 'out' / 'report.json').exists()
    assert 'Plots not drawn' in (tmp_path / 'out' / 'report.md').read_text()


def test_progress_line():
    stream = io.StringIO()
    progress = Progress(10, enabled=True, stream=stream)
    progress.update(3, 1, 0.5, force=True)
    progress.finish()
    text = stream.getvalue()
    assert text.startswith('\rframe 4/10 ') and 'frames/s' in text
    assert 'active 0.500' in text and 'skipped 1' in text and text.endswith('\n')
    quiet = io.StringIO()
    progress = Progress(10, enabled=False, stream=quiet)
    progress.update(3, 0, 0.5, force=True)
    progress.finish()
    assert quiet.getvalue() == ''


def test_contact_sheet_keeps_even_frames(tmp_path):
    pipeline = PipelineDouble(PerceptionSettings())
    sheet = ContactSheet(tmp_path / 'sheet.png', tiles=4, columns=2, width=40)
    image = np.zeros((30, 40, 3), np.uint8)
    for index in range(37):
        image[:, index % 40] = 255
        sheet.write(Frame(index, image.copy(), index, 'camera', index),
                    pipeline.process(image.copy()))
    kept = [index for index, _, _ in sheet.kept]
    assert len(kept) <= 8 and kept[0] == 0
    assert len(set(np.diff(kept))) == 1  # evenly spaced
    sheet.close()
    picture = cv2.imread(str(tmp_path / 'sheet.png'))
    assert picture.shape == (2 * (30 + 22), 2 * 40, 3)  # 4 tiles in 2 rows, caption strips
    # With the length known up front, only about the frames shown are drawn.
    hinted = ContactSheet(tmp_path / 'hinted.png', tiles=4, expected=37)
    for index in range(37):
        hinted.write(Frame(index, image.copy(), index, 'camera', index),
                     pipeline.process(image.copy()))
    assert [index for index, _, _ in hinted.kept] == [0, 9, 18, 27, 36]


def test_contact_sheet_of_a_tall_narrow_frame_stays_small(tmp_path, monkeypatch):
    from sparse_perception.replay import pictures
    monkeypatch.setattr(pictures, '_annotate', lambda frame, result: frame.image)

    class Result:
        class stats:  # noqa: N801 (stands in for the pipeline's stats object)
            active_fraction = 0.5

    sheet = ContactSheet(tmp_path / 'sheet.png', tiles=2, columns=2, width=40)
    sheet.write(Frame(0, np.full((3000, 2, 3), 128, np.uint8), 0, 'camera', 0), Result)
    sheet.write(Frame(1, np.full((2, 3000, 3), 128, np.uint8), 1, 'camera', 1), Result)
    sheet.close()
    picture = cv2.imread(str(tmp_path / 'sheet.png'))
    assert picture.shape == (2 * 40 + 22, 2 * 40, 3)  # the tall frame fits 40 x 80


def test_the_environment_names_the_commit_that_ran():
    import subprocess
    from pathlib import Path

    from sparse_perception.evaluation.provenance import environment

    repo = Path(__file__).resolve().parents[2]
    if not (repo / '.git').exists():
        pytest.skip('not a git checkout: the version names what ran')
    head = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=repo, capture_output=True,
                          text=True, check=True).stdout.strip()
    source = environment('cpu')['source']
    assert source['commit'] == head and isinstance(source['tracked_files_modified'], bool)


def test_markdown_pose_section_holds_every_pose_figure():
    pose = {'frames_with_people': 7, 'people_per_frame_mean': 1.25, 'keypoint_px_p50': 0.5,
            'keypoint_px_mean': 4.75, 'person_count_mismatch_frames': 2}
    text = markdown(_report(pose=pose))
    for row in ('| frames with people (incremental) | 7 |', '| people per frame, mean | 1.25 |',
                '| keypoint error vs dense, p50 (px) | 0.50 |',
                '| keypoint error vs dense, mean (px) | 4.75 |',
                '| frames whose person count differs from dense | 2 |'):
        assert row in text, row


def test_a_share_short_of_all_never_reads_as_100_percent():
    from sparse_perception.replay.report import percent_text

    assert percent_text(0.99998) == '99.99%' and percent_text(0.99998, 3) == '99.998%'
    assert percent_text(1.0) == '100.00%' and percent_text(0.5) == '50.00%'
