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
``sparse-perception bench engine``: the incremental engine against dense torch.

One run, one process, the same weights and frames:

1. real frames: the vtest clip at ``--resolution`` (576x768) through the change detector;
   per-frame time of the stock dense model (channels_last, the faster torch layout) and of
   the incremental engine at thresholds 0; the engine's outputs against the dense model on
   the same input;
2. a sweep of the global threshold scale: speed against agreement with dense;
3. a synthetic sweep of the changed fraction p (random tiles of ``--tile-size`` pixels):
   time relative to dense;
4. the extra memory of the caches (at that resolution, and at 720p for a network that takes
   any input size; a registered network of fixed input size runs at that size only).

Times are medians per frame with the warm-up dropped. ``--json`` writes the result contract
(device, model, resolution, frames, dense_ms, incremental_ms, speedup, active_fraction,
max_rel_diff, sweep) plus the details; ``--markdown`` a table.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import importlib
import json
import statistics
import sys
import time
from typing import Any, Callable

from sparse_perception.cli import path_argument
from sparse_perception.evaluation import provenance
from sparse_perception.evaluation.stats import median, percentile

SWEEP_P = (0.01, 0.02, 0.05, 0.10, 0.25, 0.50, 1.00)
SCALES = (0.0, 0.01, 0.03, 0.1, 0.3)


def register(subparsers: Any) -> None:
    """Add ``engine`` to the ``bench`` group."""
    parser = subparsers.add_parser(
        'engine', help='incremental engine vs dense torch on vtest frames',
        description='Time the incremental engine against the same model run dense with torch '
        'on the vtest clip, sweep the threshold scale and the changed fraction, and report the '
        "caches' memory.")
    parser.add_argument('--device', default='cpu', choices=('cpu', 'cuda'),
                        help='device to run on [cpu]')
    parser.add_argument('--json', type=path_argument, metavar='PATH',
                        help='write the results as JSON here')
    parser.add_argument('--markdown', type=path_argument, metavar='PATH',
                        help='write a markdown table here')
    parser.add_argument('--frames', type=int, default=40,
                        help='vtest frames timed per configuration [40]')
    parser.add_argument('--warmup', type=int, default=3, help='frames dropped first [3]')
    parser.add_argument('--sweep-frames', type=int, default=8,
                        help='frames timed per changed fraction p [8]')
    parser.add_argument('--resolution', default='576x768', metavar='HxW',
                        help='input size; vtest is 576x768 [576x768]')
    parser.add_argument('--model', default='mobilenet_v2_deeplabv3',
                        help="network: 'mobilenet_v2_deeplabv3' (deterministic weights), "
                        "'registry:NAME' (a model of sparse_perception.models, its trunk), "
                        "or 'package.module:function' returning an nn.Module "
                        '[mobilenet_v2_deeplabv3]')
    parser.add_argument('--threads', type=int, default=2,
                        help='torch CPU threads [2, the machine the targets were set for]')
    parser.add_argument('--change-threshold', type=float, default=12.0,
                        help='change detector threshold in grey levels [12]')
    # A static camera's setting, fixed here rather than taken from the package defaults (which
    # are chosen for hand-held clips too), so that the figures stay comparable across changes.
    parser.add_argument('--change-min-pixels', type=int, default=32,
                        help='changed pixels a tile needs [32]')
    parser.add_argument('--tile-size', type=int, default=16,
                        help='change detector tile size in pixels [16]')
    parser.add_argument('--scales', default=','.join(str(s) for s in SCALES),
                        help='threshold scales of the sweep, comma-separated')
    parser.add_argument('--scale-frames', type=int, default=None,
                        help='frames per threshold scale above 0 [half of --frames]')
    parser.add_argument('--quick', action='store_true',
                        help='few frames everywhere (a smoke test, not a measurement)')
    parser.set_defaults(func=run_command)


def run_command(args: argparse.Namespace) -> int:
    """Run the benchmark from parsed arguments; print the summary."""
    try:
        resolution = tuple(int(v) for v in args.resolution.lower().split('x'))
        if len(resolution) != 2 or min(resolution) < 16:
            raise ValueError
    except ValueError:
        print(f'--resolution {args.resolution!r}: expected HxW with both at least 16, '
              'e.g. 576x768', file=sys.stderr)
        return 2
    try:
        scales = tuple(float(s) for s in args.scales.split(',') if s.strip())
    except ValueError:
        print(f'--scales {args.scales!r}: expected comma-separated numbers', file=sys.stderr)
        return 2
    problem = _argument_problem(args, scales, resolution)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    if args.device == 'cuda':
        import torch
        if not torch.cuda.is_available():
            print('--device cuda: CUDA is not available here', file=sys.stderr)
            return 2
    from sparse_perception.output_files import check_outputs, FoldersMade, OutputError
    from sparse_perception.shared_data import shared_path, SharedDataMissing

    outputs = [('--json', args.json), ('--markdown', args.markdown)]
    with FoldersMade(outputs) as folders:
        try:  # before minutes of measuring
            check_outputs(outputs, _inputs(), create_folders=True)
        except OutputError as exc:
            print(f'bench engine: {exc}', file=sys.stderr)
            return 2
        try:  # the clip every measurement runs on, before any model is built
            shared_path('data/vtest/vtest.avi')
        except SharedDataMissing as exc:
            print(f'bench engine: {exc}', file=sys.stderr)
            return 1
        status = _measure(args, resolution, scales, outputs)
        folders.written = status == 0
        return status


def _measure(args: argparse.Namespace, resolution: tuple[int, int],
             scales: tuple[float, ...], outputs: list) -> int:
    """Measure, print the report and write the outputs; return the exit status."""
    from sparse_perception.output_files import write_reports

    frames = 4 if args.quick else args.frames
    result = run(device=args.device, resolution=resolution, frames=frames,
                 warmup=1 if args.quick else args.warmup,
                 sweep_frames=2 if args.quick else args.sweep_frames, model_name=args.model,
                 threads=args.threads, change_threshold=args.change_threshold,
                 change_min_pixels=args.change_min_pixels, tile_size=args.tile_size,
                 # --quick: the exact run and the first other scale
                 scales=(0.0, *[v for v in scales if v][:1]) if args.quick else scales,
                 scale_frames=2 if args.quick else args.scale_frames)
    report = markdown(result)
    print(report)  # first: a failed write below loses no result
    return write_reports(outputs, (json.dumps(result, indent=2) + '\n', report), 'bench engine')


def _inputs() -> list:
    """Return what a benchmark of the engine reads: the shared clips and models."""
    from sparse_perception.shared_data import shared_root

    return [shared_root() / 'data', shared_root() / 'models']


# The decoded frames (and their float copies) a run may hold.
FRAME_BUDGET_BYTES = 4 * 2**30


def _argument_problem(args: argparse.Namespace, scales: tuple, resolution: tuple) -> str:
    """Return what is wrong with the arguments ('' when nothing), before any work."""
    from sparse_perception import settings as st

    for flag, value, low in (('--frames', args.frames, 1), ('--warmup', args.warmup, 0),
                             ('--sweep-frames', args.sweep_frames, 1),
                             ('--scale-frames', args.scale_frames, 1),
                             ('--threads', args.threads, 1)):
        if value is not None and value < low:  # None: the default (--scale-frames)
            return f'{flag} {value}: expected at least {low}'
    if args.frames + args.warmup < 2:
        return ('--frames plus --warmup must be at least 2 (the benchmark network '
                'calibrates on two frames)')
    try:
        st.check_flags([('--tile-size', 'change.tile_size', args.tile_size),
                        ('--change-threshold', 'change.threshold', args.change_threshold),
                        ('--change-min-pixels', 'change.min_pixels', args.change_min_pixels)])
        st.min_pixels_problem('--change-min-pixels', args.change_min_pixels, args.tile_size)
    except st.SettingError as exc:
        return str(exc)
    high = st.spec('sparsity.scale').info.high
    if not scales or 0.0 not in scales or not all(0 <= v <= high for v in scales):
        return (f'--scales {args.scales!r}: expected numbers from 0 to {high:g} (the range of '
                'sparsity.scale), 0 among them (the exact run the others are compared with)')
    held = (args.frames + args.warmup) * resolution[0] * resolution[1] * 3 * 5
    if held > FRAME_BUDGET_BYTES:
        return (f'--frames {args.frames} at {resolution[0]}x{resolution[1]} would hold '
                f'{held / 2**30:.1f} GiB of frames (uint8 and float); at most '
                f'{FRAME_BUDGET_BYTES / 2**30:.0f} GiB: give fewer frames')
    return ''


# -- the measurement ----------------------------------------------------------------------------

def run(device: str = 'cpu', resolution: tuple[int, int] = (576, 768), frames: int = 40,
        warmup: int = 3, sweep_frames: int = 8, model_name: str = 'mobilenet_v2_deeplabv3',
        threads: int = 2, change_threshold: float = 12.0, change_min_pixels: int = 32,
        tile_size: int = 16, scales: tuple[float, ...] = SCALES,
        scale_frames: int | None = None) -> dict:
    """
    Run every part of the benchmark and return the result dict (see the module doc).

    Dense and incremental times are taken frame by frame in alternation (the dense model
    runs on the input the engine has seen, which also gives the reference output), so that
    both see the same machine load; ratios are medians over those pairs. ``scale_frames``
    (default: half of ``frames``) is the frame count of the threshold scales above 0.
    """
    import torch

    from sparse_perception.engine import EngineConfig, IncrementalModel

    started = time.perf_counter()
    load_before = provenance.load_average()
    if device == 'cpu':
        torch.set_num_threads(threads)
    clip = _vtest(warmup + frames, resolution)
    model, model_label, normalise, fixed_size = _model(model_name, clip, device)
    global _NORMALISE
    _NORMALISE = normalise
    inputs = [_to_input(f, device) for f in clip]
    dense_model = copy.deepcopy(model).to(memory_format=torch.channels_last)

    # 1. Real frames at thresholds 0, then the threshold sweep on (the start of) the clip.
    detector_cfg = {'threshold': change_threshold, 'tile_size': tile_size,
                    'min_pixels': change_min_pixels}
    if scale_frames is None:
        scale_frames = max(1, frames // 2)
    runs = []
    for scale in scales:
        count = warmup + (frames if scale == 0 else scale_frames)
        inc = IncrementalModel(model, EngineConfig(threshold_scale=scale))
        # At thresholds 0 the NCHW module is timed in the same alternation too, and the
        # faster layout is the baseline.
        runs.append(_incremental_run(inc, dense_model, clip[:count], inputs[:count], warmup,
                                     detector_cfg, device, model if scale == 0 else None,
                                     classes=_gives_class_scores(model_name)))
    exact = next((r for r in runs if r['scale'] == 0), None)

    # 2. The engine's own dense path (informational).
    short = inputs[:warmup + min(frames, 10)]
    engine_dense = _engine_dense_times(IncrementalModel(model, EngineConfig()), short,
                                       warmup, device)
    per_layer = _per_layer(model, clip[:warmup + 10], inputs, warmup, detector_cfg)

    # 3. Synthetic sweep of the changed fraction.
    sweep = _synthetic_sweep(model, dense_model, inputs[0], sweep_frames, device, tile_size)

    # 4. Memory of the caches.
    memory = {'%dx%d' % resolution: exact['cache_bytes'] if exact else None}
    if not fixed_size:  # a fixed-size network takes no other input
        memory['720x1280'] = _cache_bytes(model, (720, 1280), device)

    result = {
        'device': _device_name(device),
        'model': model_label,
        'resolution': list(resolution),
        'frames': frames,
        'warmup_frames': warmup,
        'dense_ms': exact['dense_ms'] if exact else None,
        'incremental_ms': exact['median_ms'] if exact else None,
        'speedup': exact['speedup'] if exact else None,
        'active_fraction': exact['active_fraction'] if exact else None,
        'max_rel_diff': exact['max_rel_diff'] if exact else None,
        'sweep': [{'p': s['p'], 'ratio': s['ratio']} for s in sweep],
        'details': {
            'dense_channels_last_ms': exact['dense_cl_ms'] if exact else None,
            'dense_nchw_ms': exact['dense_nchw_ms'] if exact else None,
            'dense_engine_ms': _median(engine_dense),
            'dense_baseline': 'the same module run by stock torch under '
                              'torch.inference_mode on the input the engine has seen, in '
                              'alternation with the incremental frames; at thresholds 0 both '
                              'channels_last and NCHW are timed and the faster median is the '
                              'baseline; the other sweeps use channels_last',
            'change_detector': detector_cfg,
            'change_detector_ms': exact['change_detector_ms'] if exact else None,
            'input_changed_fraction': exact['input_fraction'] if exact else None,
            'tiles_changed_fraction': exact['tiles_fraction'] if exact else None,
            'mac_fraction': exact['mac_fraction'] if exact else None,
            'p90_ms': exact['p90_ms'] if exact else None,
            'threshold_sweep': [{k: r[k] for k in (
                'scale', 'frames', 'dense_ms', 'median_ms', 'speedup', 'active_fraction',
                'mac_fraction', 'max_rel_diff', 'class_agreement')} for r in runs],
            'synthetic_sweep': sweep,
            'synthetic_sweep_tile_size': tile_size,
            'cache_bytes': memory,
            'per_layer_ms': per_layer,
            'max_rel_diff_meaning': 'max abs difference between the incremental output and '
                                    'the dense model run on the same input (the change '
                                    "detector's reference image), over the dense output's "
                                    'value range, worst frame',
        },
        'machine': dict(_machine(threads, device), load_average_before=load_before),
        'commit': provenance.source_commit()[0],
        'command': 'sparse-perception bench engine ' + ' '.join(sys.argv[3:])
        if sys.argv[1:3] == ['bench', 'engine'] else ' '.join(sys.argv),
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'wall_s': round(time.perf_counter() - started, 1),
    }
    return result


def _vtest(count: int, resolution: tuple[int, int]) -> list:
    import cv2

    from sparse_perception.shared_data import shared_path

    capture = cv2.VideoCapture(str(shared_path('data/vtest/vtest.avi')))
    frames = []
    while len(frames) < count:
        ok, frame = capture.read()
        if not ok:
            if not frames:
                raise RuntimeError('vtest.avi could not be decoded; it needs OpenCV >= 4.13 '
                                   '(pip install "opencv-python-headless>=4.13")')
            capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            continue
        if frame.shape[:2] != resolution:
            frame = cv2.resize(frame, resolution[::-1], interpolation=cv2.INTER_AREA)
        frames.append(frame)
    capture.release()
    return frames


# (scale, offset) mapping 0-255 RGB pixels to the model's input; set per run by _model.
_NORMALISE = (1 / 127.5, -1.0)


def _to_input(frame: Any, device: str):
    """BGR uint8 (H, W, 3) -> the model's normalised RGB (1, 3, H, W) float input."""
    import torch

    rgb = torch.from_numpy(frame[:, :, ::-1].copy()).to(device)
    scale, offset = _NORMALISE
    return rgb.permute(2, 0, 1)[None].float() * scale + offset


def _model(name: str, clip: list, device: str, flag: str = '--resolution'):
    """Return the network named on the command line: (module, label, normalise, fixed size)."""
    import torch

    normalise = (1 / 127.5, -1.0)
    size = None  # a registered model's fixed input (h, w), if any
    if name == 'mobilenet_v2_deeplabv3':
        from sparse_perception.models.benchmark_network import (
            calibrate_batchnorm, mobilenet_v2_deeplabv3)
        model = mobilenet_v2_deeplabv3(seed=0)
        calibrate_batchnorm(model, [_to_input(f, 'cpu') for f in clip[:4]])
        label = ('MobileNetV2-DeepLabV3 (output stride 16, image pooling, 21 classes, '
                 'logits upsampled to the input), deterministic random weights (seed 0), '
                 'BatchNorm calibrated on 4 vtest frames')
    elif name.startswith('registry:'):
        try:
            registry = importlib.import_module('sparse_perception.models.registry')
        except ImportError as exc:
            raise SystemExit(f'--model {name}: sparse_perception.models is not available '
                             f'here ({exc})') from None
        try:
            loaded = registry.load_model(name.split(':', 1)[1], device)
        except (KeyError, ValueError, OSError) as exc:  # unknown, unreadable, not fetched
            raise SystemExit(f'--model {name}: {exc}') from None
        size = getattr(loaded, 'input_size', None)
        if size is not None and tuple(size) != tuple(clip[0].shape[:2]):
            raise SystemExit(f'--model {name}: the model takes a fixed {size[0]}x{size[1]} '
                             f'input; pass {flag} {size[0]}x{size[1]} or pick a fully '
                             'convolutional one (e.g. an _fcn entry)')
        model = getattr(loaded.module, 'trunk', loaded.module)
        normalise = tuple(float(v) for v in loaded.normalise)
        label = f'{name} (trunk of {loaded.source.name}, trained weights)'
    elif ':' in name:
        module_name, _, attr = name.partition(':')
        try:
            factory: Callable[[], Any] = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise SystemExit(f'--model {name}: {exc}') from None
        model = factory()
        label = name
    else:
        raise SystemExit(f"--model {name!r}: expected 'mobilenet_v2_deeplabv3', "
                         "'registry:NAME' or 'package.module:function'")
    if not isinstance(model, torch.nn.Module):
        raise SystemExit(f'--model {name}: got {type(model).__name__}, not an nn.Module')
    fixed_size = size is not None
    return model.to(device).eval(), label, normalise, fixed_size


def _sync(device: str) -> None:
    if device == 'cuda':
        import torch
        torch.cuda.synchronize()


def _engine_dense_times(inc, inputs: list, warmup: int, device: str) -> list:
    times = []
    state = inc.new_state()
    for i, x in enumerate(inputs[:warmup + 10]):
        _sync(device)
        t0 = time.perf_counter()
        inc(x, None, state)
        _sync(device)
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def _gives_class_scores(name: str) -> bool:
    """
    Whether the network's first output holds class scores (its arg-max a class per pixel).

    A registered pose model's trunk gives features, whose arg-max over channels says nothing;
    a model given as 'module:function' is taken to give scores, as the benchmark network does.
    """
    if not name.startswith('registry:'):
        return True
    from sparse_perception.models.registry import REGISTRY

    entry = REGISTRY.get(name.split(':', 1)[1])
    return entry is not None and entry.kind == 'segmentation' and entry.decoder in (
        'class_map', 'class_scores')


def _incremental_run(inc, dense_model, clip, inputs, warmup, detector_cfg, device,
                     nchw_model=None, classes: bool = True) -> dict:
    """
    Run the clip incrementally; after every frame run the dense model on the same input.

    With ``nchw_model`` the stock module is also timed in NCHW, and the dense time is the
    faster layout's median. Returns times, activity, and agreement of the outputs (of the
    arg-max over channels only where they are class scores: ``classes``).
    """
    import torch

    from sparse_perception.change import ChangeDetector

    detector = ChangeDetector(**detector_cfg)
    state = inc.new_state()
    times, dense, active, macs, detect, nchw = [], [], [], [], [], []
    inputs_changed, tiles_changed, diffs, agree = [], [], [], []
    for i, (frame, x) in enumerate(zip(clip, inputs)):
        t0 = time.perf_counter()
        cm = detector.update(frame)
        detect_elapsed = (time.perf_counter() - t0) * 1e3
        _sync(device)
        t0 = time.perf_counter()
        y = inc(x, cm, state)
        _sync(device)
        elapsed = (time.perf_counter() - t0) * 1e3
        seen = _to_input(detector.reference.cpu().numpy(), device)
        seen = seen.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            _sync(device)
            t0 = time.perf_counter()
            expected = dense_model(seen)
            _sync(device)
            dense_elapsed = (time.perf_counter() - t0) * 1e3
            if nchw_model is not None:
                plain = seen.contiguous()
                _sync(device)
                t0 = time.perf_counter()
                nchw_model(plain)
                _sync(device)
                nchw_elapsed = (time.perf_counter() - t0) * 1e3
        if i < warmup:
            continue
        stats = inc.last_stats
        times.append(elapsed)
        dense.append(dense_elapsed)
        detect.append(detect_elapsed)
        if nchw_model is not None:
            nchw.append(nchw_elapsed)
        active.append(stats.active_fraction)
        macs.append(stats.mac_fraction)
        inputs_changed.append(stats.input_fraction)
        tiles_changed.append(cm.changed_fraction)
        y, expected = _first_tensor(y), _first_tensor(expected)
        span = float(expected.max() - expected.min())
        diffs.append(float((y - expected).abs().max()) / max(span, 1e-12))
        if classes and y.dim() == 4 and y.shape[1] > 1:
            agree.append(float((y.argmax(1) == expected.argmax(1)).float().mean()))
    median, dense_median = _median(times), _median(dense)
    cl_median, nchw_median = dense_median, _median(nchw) if nchw else None
    if nchw_median is not None:
        dense_median = min(dense_median, nchw_median)
    return {
        'dense_cl_ms': cl_median, 'dense_nchw_ms': nchw_median,
        'scale': inc.config.threshold_scale, 'frames': len(times),
        'median_ms': median, 'p90_ms': _percentile(times, 90), 'dense_ms': dense_median,
        'speedup': dense_median / median,
        'active_fraction': statistics.fmean(active), 'mac_fraction': statistics.fmean(macs),
        'input_fraction': statistics.fmean(inputs_changed),
        'tiles_fraction': statistics.fmean(tiles_changed),
        'max_rel_diff': max(diffs) if diffs else None,
        'class_agreement': min(agree) if agree else None,
        'cache_bytes': state.memory_bytes(),
        'change_detector_ms': _median(detect),
    }


def _per_layer(model, clip, inputs, warmup, detector_cfg) -> dict:
    """Mean per-frame time (profiled pass) by layer kind, mode and output size."""
    from sparse_perception.change import ChangeDetector
    from sparse_perception.engine import EngineConfig, IncrementalModel

    inc = IncrementalModel(model, EngineConfig(profile=True))
    detector = ChangeDetector(**detector_cfg)
    state = inc.new_state()
    totals: dict[str, float] = {}
    counted = 0
    for i, (frame, x) in enumerate(zip(clip, inputs)):
        inc(x, detector.update(frame), state)
        if i < warmup:
            continue
        counted += 1
        for layer in inc.last_stats.layers:
            key = f'{layer.kind} {layer.mode} ({layer.positions} positions)'
            totals[key] = totals.get(key, 0.0) + (layer.time_ms or 0.0)
    return {k: round(v / max(counted, 1), 3)
            for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}


def _first_tensor(y: Any):
    while isinstance(y, (tuple, list)):
        y = y[0]
    return y.float()


def _synthetic_sweep(model, dense_model, x0, frames: int, device: str, tile: int) -> list:
    """
    Per p: frames where a random share p of ``tile``-pixel tiles changes (noise added).

    Each frame is also run by the dense model (in alternation); the ratio is the median
    incremental time over the median dense time.
    """
    import torch

    from sparse_perception.engine import EngineConfig, IncrementalModel

    _, _, h, w = x0.shape
    th, tw = -(-h // tile), -(-w // tile)
    g = torch.Generator().manual_seed(0)
    out = []
    for p in SWEEP_P:
        inc = IncrementalModel(model, EngineConfig())
        state = inc.new_state()
        x = x0.clone()
        inc(x, None, state)
        times, dense, active = [], [], []
        for i in range(frames + 1):
            n = max(1, round(p * th * tw))
            chosen = torch.randperm(th * tw, generator=g)[:n]
            tiles = torch.zeros(th * tw, dtype=torch.bool)
            tiles[chosen] = True
            tiles = tiles.view(th, tw)
            mask = tiles.repeat_interleave(tile, 0).repeat_interleave(tile, 1)[:h, :w]
            noise = torch.randn(x.shape, generator=g).to(device) * 0.1
            x = torch.where(mask.to(device), x + noise, x)
            _sync(device)
            t0 = time.perf_counter()
            inc(x, tiles.to(device), state)
            _sync(device)
            elapsed = (time.perf_counter() - t0) * 1e3
            xc = x.contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                _sync(device)
                t0 = time.perf_counter()
                dense_model(xc)
                _sync(device)
            if i > 0:  # the first changed frame warms up the sparse paths
                times.append(elapsed)
                dense.append((time.perf_counter() - t0) * 1e3)
                active.append(inc.last_stats.active_fraction)
        median, dense_median = _median(times), _median(dense)
        out.append({'p': p, 'ratio': median / dense_median, 'incremental_ms': median,
                    'dense_ms': dense_median, 'active_fraction': statistics.fmean(active)})
    return out


def _cache_bytes(model, resolution: tuple[int, int], device: str) -> int:
    import torch

    from sparse_perception.engine import IncrementalModel

    inc = IncrementalModel(model)
    state = inc.new_state()
    inc(torch.zeros(1, 3, *resolution, device=device), None, state)
    return state.memory_bytes()


def _median(values: list) -> float:
    value = median(values)
    return float('nan') if value is None else value


def _percentile(values: list, q: float) -> float:
    value = percentile(values, q)
    return float('nan') if value is None else value


def _device_name(device: str) -> str:
    if device == 'cuda':
        import torch
        return torch.cuda.get_device_name()
    return provenance.cpu_model()


def _machine(threads: int, device: str) -> dict:
    import torch

    info = {**provenance.machine(), 'torch_threads': threads,
            **provenance.versions(('python', 'torch', 'numpy', 'cv2')),
            'load_average': provenance.load_average()}
    if device == 'cuda':
        info['gpu'] = torch.cuda.get_device_name()
    return info


def markdown(result: dict) -> str:
    """Render the result as a markdown report."""
    d = result['details']
    m = result['machine']
    lines = [
        f"# Incremental engine vs dense torch ({result['device']})", '',
        f"- model: {result['model']}",
        f"- input: vtest, {result['resolution'][0]}x{result['resolution'][1]}, "
        f"{result['frames']} frames timed after {result['warmup_frames']} warm-up; change "
        f"detector threshold {d['change_detector']['threshold']} grey levels, tiles "
        f"{d['change_detector']['tile_size']} px, at least "
        f"{d['change_detector'].get('min_pixels', 1)} changed pixels per tile",
        f"- machine: {m['cpu']}, {m['cores']} CPUs, torch {m['torch']} with "
        f"{m['torch_threads']} threads, Python {m['python']}; load average (1, 5, 15 min) "
        f"before {m.get('load_average_before')}, after {m.get('load_average')}",
        f"- command: `{result['command']}`, {result['date']}, {result['wall_s']} s, commit "
        f"{result.get('commit')}", '',
        '## Real frames, thresholds 0', '',
        '| | ms per frame (median) |', '|---|---|',
        '| dense, stock torch channels_last (alternating with the incremental frames) | '
        f"{d['dense_channels_last_ms']:.1f} |",
        '| dense, stock torch NCHW (alternating with the incremental frames) | '
        f"{d['dense_nchw_ms']:.1f} |",
        f"| **dense baseline** (the faster of the two) | {result['dense_ms']:.1f} |",
        f"| dense, engine's own dense path: BN folded, caches written (separate run) | "
        f"{d['dense_engine_ms']:.1f} |",
    ]
    if result['incremental_ms'] is not None:
        lines += [
            f"| incremental (p90 {d['p90_ms']:.1f}) | {result['incremental_ms']:.1f} |", '',
            f"Speedup over the baseline: **{result['speedup']:.2f}x**. Input pixels changed "
            f"per frame: {d['input_changed_fraction']:.2%} (tiles: "
            f"{d['tiles_changed_fraction']:.2%}); positions recomputed over all layers: "
            f"{result['active_fraction']:.1%}; MACs executed vs dense: "
            f"{d['mac_fraction']:.1%}. Max difference from dense on the same input: "
            f"{result['max_rel_diff']:.2g} of the output range. The change detector (not "
            f"included above) took {d['change_detector_ms']:.1f} ms per frame.",
        ]
    lines += ['', '## Threshold scale sweep (same clip)', '',
              '| scale | frames | dense ms | incremental ms | speedup | active | MACs | max rel '
              'diff | class agreement (worst frame) |', '|---|---|---|---|---|---|---|---|---|']
    for r in d['threshold_sweep']:
        agree = '' if r['class_agreement'] is None else f"{r['class_agreement']:.2%}"
        lines.append(f"| {r['scale']} | {r['frames']} | {r['dense_ms']:.1f} | "
                     f"{r['median_ms']:.1f} | {r['speedup']:.2f}x | "
                     f"{r['active_fraction']:.1%} | {r['mac_fraction']:.1%} | "
                     f"{r['max_rel_diff']:.2g} | {agree} |")
    # Results written before the sweep followed --tile-size used 16-pixel tiles.
    sweep_tile = d.get('synthetic_sweep_tile_size', 16)
    lines += ['', f'## Synthetic sweep of the changed fraction (random {sweep_tile} px tiles)',
              '', '| p | dense ms | incremental ms | incremental / dense | active |',
              '|---|---|---|---|---|']
    for s in d['synthetic_sweep']:
        lines.append(f"| {s['p']:.0%} | {s['dense_ms']:.1f} | {s['incremental_ms']:.1f} | "
                     f"{s['ratio']:.2f} | {s['active_fraction']:.1%} |")
    lines += ['', '## Extra memory of the caches', '']
    for res, size in d['cache_bytes'].items():
        if size is not None:
            lines.append(f'- {res}: {size / 2 ** 20:.0f} MiB per stream')
    return '\n'.join(lines) + '\n'
