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
``sparse-perception bench gpu``: incremental kernels against dense cuDNN at batch 1.

One process, the same weights (fp16 by default) and the same real frames (vtest at 576x768,
and resized to 1080x1920), through the change detector:

- ``runs``: per engine and resolution, median and p90 latency per frame (percentiles as
  :mod:`sparse_perception.evaluation.stats` defines them; CUDA events around
  each frame, warm-up dropped), speedup against dense under a CUDA graph, active fraction
  and max difference from the dense fp32 model on the same input, for

  - ``dense_eager``: the module with BatchNorm folded, fp16 channels_last, eager (cuDNN);
  - ``dense_graph``: the same replayed as a CUDA graph (the strongest dense baseline);
  - ``incremental_reference``: the eager executor on the pure-torch reference backend (a
    correctness baseline, hundreds of times slower on a GPU: timed over its first
    ``REFERENCE_FRAMES`` frames only);
  - ``incremental_kernels``: the sync-free device mode, kernels launched eagerly;
  - ``incremental_kernels_graph``: the device mode replayed as a CUDA graph;

- ``sweep``: synthetic frames where a share p of tiles (``--tile-size`` pixels) changes (1 to
  100%), at the largest resolution, time relative to ``dense_graph``;
- ``layers``: single-layer curves (1x1, depthwise 3x3, dense 3x3 at 1080p-pyramid shapes):
  the layer's own launches in the device mode (candidates and compute, captured as a CUDA
  graph and replayed) against the dense fp16 layer (cuDNN, BatchNorm folded, CUDA graph), by
  changed fraction; the fixed cost is the time at p = 0 and the break-even is where the
  curves cross.

CUDA only (exit code 2 elsewhere). ``--json`` writes the result contract
(``gpu``, ``torch``, ``triton``, ``runs``, ``layers``) plus details; ``--markdown`` a report.
The JSON is rewritten after each resolution, the sweep and each layer curve with ``complete``
false, so a run stopped at a time limit leaves what it measured; the last write says true.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import json
import statistics
import sys
import time
from typing import Any, Callable, Sequence

from sparse_perception.cli import path_argument
from sparse_perception.evaluation import provenance
from sparse_perception.evaluation.stats import percentiles


def _progress(started: float, text: str) -> None:
    """Say on stderr what has just been measured (a run takes minutes, mostly compiling)."""
    print(f'bench gpu [{time.perf_counter() - started:6.1f} s] {text}', file=sys.stderr,
          flush=True)


ENGINES = ('dense_eager', 'dense_graph', 'incremental_reference', 'incremental_kernels',
           'incremental_kernels_graph')
RESOLUTIONS = ((576, 768), (1080, 1920))
SWEEP_P = (0.01, 0.02, 0.05, 0.10, 0.25, 0.50, 1.00)
LAYER_P = (0.0, 0.01, 0.02, 0.05, 0.10, 0.25, 0.50, 1.00)
SWEEP_ENGINES = ('incremental_kernels', 'incremental_kernels_graph')
# Frames timed for the reference backend after the warm-up: it took 635 ms a frame at 576x768
# on an H200 (dense: 0.9 ms), so all 200 frames at both sizes would outlast the whole run.
REFERENCE_FRAMES = 20
# Single layers at 1080p-pyramid shapes (MobileNetV2 widths): (name, kind, (H, W) of the
# input, input channels, output channels, stride).
LAYERS = (
    ('conv1x1 s4 24->144', 'conv1x1', (270, 480), 24, 144, 1),
    ('conv1x1 s8 32->192', 'conv1x1', (135, 240), 32, 192, 1),
    ('conv1x1 s16 64->384', 'conv1x1', (68, 120), 64, 384, 1),
    ('depthwise3x3 s4 144', 'depthwise3x3', (270, 480), 144, 144, 1),
    ('depthwise3x3 s2->4 96', 'depthwise3x3', (540, 960), 96, 96, 2),
    ('depthwise3x3 s8 192', 'depthwise3x3', (135, 240), 192, 192, 1),
    ('conv3x3 s2 32->32', 'conv3x3', (540, 960), 32, 32, 1),
    ('conv3x3 s4 64->64', 'conv3x3', (270, 480), 64, 64, 1),
)


def register(subparsers: Any) -> None:
    """Add ``bench gpu``."""
    parser = subparsers.add_parser(
        'gpu', help='incremental kernels vs dense cuDNN on CUDA',
        description=__doc__.split('\n\n')[0].split(': ', 1)[1] + ' CUDA only.')
    parser.add_argument('--json', type=path_argument, metavar='PATH',
                        help='write the results as JSON here')
    parser.add_argument('--markdown', type=path_argument, metavar='PATH',
                        help='write a markdown report here')
    parser.add_argument('--frames', type=int, default=200,
                        help='frames timed per engine and resolution [200]')
    parser.add_argument('--warmup', type=int, default=5, help='frames dropped first [5]')
    parser.add_argument('--resolutions', default='576x768,1080x1920', metavar='HxW,...',
                        help='input sizes; vtest is resized [576x768,1080x1920]')
    parser.add_argument('--model', default='mobilenet_v2_deeplabv3',
                        help="network: 'mobilenet_v2_deeplabv3' (random weights, BatchNorm "
                             "calibrated on vtest), 'registry:NAME' or 'module:function'")
    parser.add_argument('--dtype', default='fp16', choices=('fp16', 'fp32'),
                        help='precision of every engine [fp16]')
    parser.add_argument('--change-threshold', type=float, default=12.0,
                        help='change detector threshold in grey levels [12]')
    parser.add_argument('--tile-size', type=int, default=16, help='change tile, px [16]')
    parser.add_argument('--sweep-frames', type=int, default=10,
                        help='frames per changed fraction in the synthetic sweep [10]')
    parser.add_argument('--layer-repeats', type=int, default=50,
                        help='graph replays per point of the single-layer curves [50]')
    parser.add_argument('--diff-every', type=int, default=4,
                        help='compare with the dense fp32 model every N-th frame (and the '
                             'last) [4]')
    parser.add_argument('--quick', action='store_true',
                        help='a smoke run: few frames, few replays (not for results)')
    parser.set_defaults(func=run_command)


def parse_resolutions(text: str) -> list[tuple[int, int]]:
    """Parse ``'576x768,1080x1920'``; raise ValueError with a message naming the bad part."""
    out = []
    for part in text.split(','):
        try:
            h, w = (int(v) for v in part.strip().lower().split('x'))
        except ValueError:
            raise ValueError(f'--resolutions: {part!r} is not HxW (e.g. 1080x1920)') from None
        if h < 32 or w < 32:
            raise ValueError(f'--resolutions: {part!r} is smaller than 32x32')
        out.append((h, w))
    return out


def run_command(args: argparse.Namespace) -> int:
    """Check the arguments and the machine, run, write the results."""
    try:
        resolutions = parse_resolutions(args.resolutions)
        for name in ('frames', 'sweep_frames', 'layer_repeats', 'diff_every'):
            if getattr(args, name) < 1:
                raise ValueError(f'--{name.replace("_", "-")} {getattr(args, name)}: '
                                 'expected at least 1')
        if args.warmup < 0:
            raise ValueError(f'--warmup {args.warmup}: expected 0 or more')
        from sparse_perception import settings as st

        try:
            st.check_flags([('--tile-size', 'change.tile_size', args.tile_size),
                            ('--change-threshold', 'change.threshold', args.change_threshold)])
            # (The change map takes the default change.min_pixels: a tile must hold them.)
            st.min_pixels_problem('--tile-size: change.min_pixels',
                                  st.ChangeSettings().min_pixels, args.tile_size)
        except st.SettingError as exc:
            raise ValueError(str(exc)) from None
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    import torch

    if not torch.cuda.is_available():
        print('sparse-perception bench gpu needs a CUDA GPU (torch.cuda.is_available() is '
              'False here); run it on a CUDA machine, or use `sparse-perception bench engine` '
              'for the CPU', file=sys.stderr)
        return 2
    try:
        import triton  # noqa: F401
    except ImportError:
        print('sparse-perception bench gpu needs Triton: pip install '
              '"sparse_perception[gpu]" (or triton)', file=sys.stderr)
        return 2
    from sparse_perception.benchmarks.engine import _inputs
    from sparse_perception.output_files import check_outputs, OutputError, write_reports

    outputs = [('--json', args.json), ('--markdown', args.markdown)]
    try:  # before minutes of measuring (the JSON is written after each resolution too)
        check_outputs(outputs, _inputs(), create_folders=True)
    except OutputError as exc:
        print(f'bench gpu: {exc}', file=sys.stderr)
        return 2

    def checkpoint(partial: dict) -> None:
        write_outputs(partial, args.json, None)
    quick = args.quick
    result = run(resolutions=resolutions, frames=4 if quick else args.frames,
                 warmup=1 if quick else args.warmup, model_name=args.model,
                 dtype_name=args.dtype, change_threshold=args.change_threshold,
                 tile_size=args.tile_size, sweep_frames=2 if quick else args.sweep_frames,
                 layer_repeats=5 if quick else args.layer_repeats,
                 diff_every=args.diff_every, quick=quick, checkpoint=checkpoint)
    report = markdown(result)
    print(report)  # first: a failed write below loses no result
    return write_reports(outputs, (json.dumps(result, indent=2) + '\n', report), 'bench gpu')


def write_outputs(result: dict, json_path: str | None, markdown_path: str | None) -> None:
    """Write the JSON and the markdown report (each whole or not at all)."""
    from sparse_perception.output_files import write_atomic

    if json_path:
        write_atomic(json_path, json.dumps(result, indent=2) + '\n')
    if markdown_path:
        write_atomic(markdown_path, markdown(result))


# -- statistics ---------------------------------------------------------------------------------

def summarize(times_ms: Sequence[float]) -> dict:
    """Median (p50) and p90 of per-frame times (None without any), as evaluation.stats."""
    p50_p90 = percentiles(times_ms, (50, 90)) or (None, None)
    return {'median_ms': p50_p90[0], 'p90_ms': p50_p90[1]}


def break_even(curve: Sequence[dict], dense_us: float) -> float | None:
    """
    Return the changed fraction where the sparse layer becomes as slow as the dense one.

    Linear interpolation between the points that bracket the crossing; 1.0 when the sparse
    layer is faster at every measured fraction, 0.0 when it is slower already at the first,
    None without points.
    """
    points = sorted((c['p'], c['us']) for c in curve if c.get('us') is not None)
    if not points:
        return None
    if points[0][1] >= dense_us:
        return 0.0
    for (p0, t0), (p1, t1) in zip(points, points[1:]):
        if t1 >= dense_us:
            return p0 + (p1 - p0) * (dense_us - t0) / (t1 - t0) if t1 != t0 else p1
    return 1.0


def time_frames(call: Callable[[int], Any], count: int, warmup: int, timer: Any,
                after: Callable[[int, Any], None] | None = None) -> list[float]:
    """
    Time ``call(i)`` for i in range(count); return the times (ms) after the warm-up.

    ``timer()`` returns an object with ``start()`` and ``stop() -> ms`` (CUDA events around
    the call on a GPU); ``after(i, output)`` runs outside the timed region.
    """
    times = []
    for i in range(count):
        t = timer()
        t.start()
        out = call(i)
        elapsed = t.stop()
        if after is not None:
            after(i, out)
        if i >= warmup:
            times.append(elapsed)
    return times


class WallTimer:
    """Host wall clock (the CPU dry run; meaningless for GPU work)."""

    def start(self) -> None:
        """Note the start time."""
        self._t0 = time.perf_counter()

    def stop(self) -> float:
        """Return the elapsed milliseconds."""
        return (time.perf_counter() - self._t0) * 1e3


class CudaTimer:
    """CUDA events around a region on the current stream; ``stop`` waits for the end."""

    def __init__(self) -> None:
        import torch

        self._start = torch.cuda.Event(enable_timing=True)
        self._end = torch.cuda.Event(enable_timing=True)

    def start(self) -> None:
        """Record the start event."""
        self._start.record()

    def stop(self) -> float:
        """Record the end event, wait for it, return the elapsed milliseconds."""
        self._end.record()
        self._end.synchronize()
        return float(self._start.elapsed_time(self._end))


class _Cuda:
    """What the benchmark needs from CUDA: events, graphs, the allocator."""

    dry = False
    timer = CudaTimer

    def __init__(self) -> None:
        import torch

        self.device = torch.device('cuda')

    def capture(self, body: Callable[[], Any]) -> Callable[[], Any]:
        """Capture ``body`` (after a warm-up on a side stream); return replay-and-output."""
        import torch

        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.inference_mode():
            for _ in range(3):
                body()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph):
            out = body()

        def replay() -> Any:
            graph.replay()
            return out
        return replay

    def empty_cache(self) -> None:
        """Return cached blocks to the driver between parts."""
        import torch

        torch.cuda.empty_cache()


class _DryRun(_Cuda):
    """
    The CPU stand-in used by tests: every code path but CUDA graphs and events.

    'Graph' engines run eagerly and times come from the wall clock; the figures mean
    nothing and are marked so.
    """

    dry = True
    timer = WallTimer

    def __init__(self) -> None:
        import torch

        self.device = torch.device('cpu')

    def capture(self, body: Callable[[], Any]) -> Callable[[], Any]:
        """Return ``body`` under inference mode (no graphs on the CPU)."""
        import torch

        def run() -> Any:
            with torch.inference_mode():
                return body()
        return run

    def empty_cache(self) -> None:
        """Do nothing."""


def run_entry(engine: str, resolution: Sequence[int], times_ms: Sequence[float],
              active_fraction: float | None, max_rel_diff: float | None) -> dict:
    """One element of ``runs`` in the result contract (its speedup: :func:`add_speedups`)."""
    s = summarize(times_ms)
    return {'engine': engine, 'resolution': [int(resolution[0]), int(resolution[1])],
            'median_ms': s['median_ms'], 'p90_ms': s['p90_ms'],
            'speedup_vs_dense_graph': None, 'active_fraction': active_fraction,
            'max_rel_diff': max_rel_diff, 'frames': len(times_ms)}


def add_speedups(entries: Sequence[dict]) -> None:
    """Set each entry's ``speedup_vs_dense_graph``: the dense_graph entry's p50 over its own."""
    dense_graph_ms = next((e['median_ms'] for e in entries if e['engine'] == 'dense_graph'),
                          None)
    for entry in entries:
        entry['speedup_vs_dense_graph'] = (dense_graph_ms / entry['median_ms']
                                           if dense_graph_ms and entry['median_ms'] else None)


# -- the measurement (CUDA) ---------------------------------------------------------------------

def run(resolutions: Sequence[tuple[int, int]] = RESOLUTIONS, frames: int = 200,
        warmup: int = 5, model_name: str = 'mobilenet_v2_deeplabv3', dtype_name: str = 'fp16',
        change_threshold: float = 12.0, tile_size: int = 16, sweep_frames: int = 10,
        layer_repeats: int = 50, diff_every: int = 4, quick: bool = False,
        device: str = 'cuda', layers: Sequence[tuple] = LAYERS,
        sweep_p: Sequence[float] = SWEEP_P, layer_p: Sequence[float] = LAYER_P,
        checkpoint: Callable[[dict], None] | None = None) -> dict:
    """
    Run the whole benchmark and return the result dict (see the module doc).

    ``device`` 'cpu' is a dry run for tests (kernels under Triton's interpreter, no graphs,
    wall-clock times): it checks the code paths, its figures mean nothing. ``checkpoint``
    gets the result so far (``complete`` False) after each resolution, the sweep and each
    layer curve, so that a run stopped at a time limit still leaves what it measured.
    """
    import torch

    from sparse_perception.benchmarks.engine import _model, _vtest

    started = time.perf_counter()
    m = _Cuda() if device == 'cuda' else _DryRun()
    dtype = torch.float16 if dtype_name == 'fp16' else torch.float32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    clip = _vtest(warmup + frames, tuple(resolutions[0]))
    model32, label, normalise, fixed = _model(model_name, clip, m.device.type,
                                              flag='--resolutions')
    if fixed and len({tuple(r) for r in resolutions}) > 1:
        raise SystemExit(f'--model {model_name}: the model takes a fixed '
                         f'{resolutions[0][0]}x{resolutions[0][1]} input; pass only that in '
                         '--resolutions, or pick a fully convolutional one')
    _progress(started, f'{label}, {dtype_name}: frames read, model ready')
    runs, details, sweep, curves = [], {}, [], []

    def result(complete: bool) -> dict:
        return _result(m, runs, curves, sweep, details, label, dtype_name, frames, warmup,
                       quick, started, complete)

    def save() -> None:
        if checkpoint is not None:
            checkpoint(result(False))

    for resolution in resolutions:
        clip = _vtest(warmup + frames, tuple(resolution))
        entries, info = _real_frames(m, model32, clip, resolution, normalise, dtype, warmup,
                                     change_threshold, tile_size, diff_every, started)
        runs += entries
        details['%dx%d' % tuple(resolution)] = info
        save()
    largest = max(resolutions, key=lambda r: r[0] * r[1])
    dense_graph_ms = next((r['median_ms'] for r in runs if r['engine'] == 'dense_graph'
                           and r['resolution'] == list(largest)), None)
    first = _to_input(_vtest(1, tuple(largest))[0], normalise, m.device, torch.float32)
    sweep += _synthetic_sweep(m, model32, largest, dtype, sweep_frames, dense_graph_ms, first,
                              tile_size, sweep_p, min(2, warmup))
    _progress(started, f'changed-fraction sweep done ({len(sweep)} points)')
    save()
    for spec in layers:
        curves.append(_layer_curve(m, spec, dtype, layer_repeats, layer_p))
        _progress(started, f"layer {spec[0]}: dense {_fmt(curves[-1]['dense_us'], '.1f')} "
                           f"us, fixed cost {_fmt(curves[-1]['fixed_cost_us'], '.1f')} us")
        save()
    return result(True)


def _result(m: Any, runs: list, curves: list, sweep: list, details: dict, label: str,
            dtype_name: str, frames: int, warmup: int, quick: bool, started: float,
            complete: bool) -> dict:
    """Return the result dict of the module doc from what was measured so far."""
    import torch
    import triton

    if m.dry:
        gpu, machine = 'none: a dry run on the CPU (figures mean nothing)', {}
    else:
        props = torch.cuda.get_device_properties(m.device)
        gpu = torch.cuda.get_device_name(m.device)
        machine = {'gpu_capability': f'{props.major}.{props.minor}',
                   'gpu_memory_gib': round(props.total_memory / 2 ** 30, 1),
                   'cuda': torch.version.cuda, 'cudnn': torch.backends.cudnn.version()}
    commit, dirty = provenance.source_commit()
    return {
        'gpu': gpu,
        'torch': torch.__version__,
        'triton': triton.__version__,
        'runs': runs,
        'layers': curves,
        'sweep': sweep,
        'model': label,
        'dtype': dtype_name,
        'frames': frames,
        'warmup_frames': warmup,
        'quick': quick or m.dry,
        'details': details,
        'machine': dict(machine, **provenance.machine(),
                        python=provenance.package_version('python')),
        'commit': commit, 'tracked_files_modified': dirty,
        'method': 'CUDA events around each frame (input copy included for graph engines), '
                  'warm-up frames dropped; max_rel_diff is the max abs difference from the '
                  'dense fp32 model on the input the engine has seen, over the dense output '
                  'range, on every diff_every-th frame and the last',
        'command': 'sparse-perception bench gpu ' + ' '.join(sys.argv[3:])
        if sys.argv[1:3] == ['bench', 'gpu'] else ' '.join(sys.argv),
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'wall_s': round(time.perf_counter() - started, 1),
        'complete': complete,
    }


def _to_input(frame: Any, normalise: tuple, device: Any, dtype: Any):
    """BGR uint8 (H, W, 3) -> normalised RGB (1, 3, H, W) on ``device``."""
    import torch

    rgb = torch.from_numpy(frame[:, :, ::-1].copy()).to(device)
    scale, offset = normalise
    x = rgb.permute(2, 0, 1)[None].float() * scale + offset
    return x.to(dtype).contiguous(memory_format=torch.channels_last)


def _rel_diff(y: Any, expected: Any) -> float:
    while isinstance(y, (tuple, list)):
        y, expected = y[0], expected[0]
    y, expected = y.float(), expected.float()
    span = float(expected.max() - expected.min())
    return float((y - expected).abs().max()) / max(span, 1e-12)


def _fold(model: Any) -> Any:
    """Return a copy with BatchNorm folded into the convolutions (as the engine folds them)."""
    import warnings

    with warnings.catch_warnings():  # the module imports deprecated torch.jit helpers
        warnings.simplefilter('ignore', DeprecationWarning)
        from torch.fx.experimental.optimization import fuse

    try:
        return fuse(copy.deepcopy(model))
    except Exception:  # untraceable: the module as it is (a slightly weaker baseline)
        return copy.deepcopy(model)


def _dense_engines(m: _Cuda, model: Any, example: Any) -> dict:
    """Dense channels_last (BatchNorm folded): an eager and a CUDA-graph callable."""
    import torch

    dense = _fold(model).to(memory_format=torch.channels_last)
    static_x = example.clone()
    graph = m.capture(lambda: dense(static_x))

    def eager(x, tiles, state):
        with torch.inference_mode():
            return dense(x)

    def replay(x, tiles, state):
        static_x.copy_(x)
        return graph()

    return {'dense_eager': (eager, None), 'dense_graph': (replay, None)}


def _incremental_engines(m: _Cuda, model: Any) -> dict:
    from sparse_perception.engine import EngineConfig, IncrementalModel

    out = {}
    for name, engine in (
            ('incremental_reference', IncrementalModel(model, EngineConfig(backend='reference'))),
            ('incremental_kernels', IncrementalModel(model, EngineConfig(), execution='device',
                                                     graph=False)),
            ('incremental_kernels_graph', IncrementalModel(model, EngineConfig(),
                                                           execution='device',
                                                           graph=not m.dry))):
        out[name] = (engine, engine.new_state())
    return out


def _real_frames(m: _Cuda, model32: Any, clip: list, resolution: Sequence[int], normalise: tuple,
                 dtype: Any, warmup: int, change_threshold: float, tile_size: int,
                 diff_every: int, started: float) -> tuple[list, dict]:
    import torch

    from sparse_perception.change import ChangeDetector

    device = m.device
    detector = ChangeDetector(threshold=change_threshold, tile_size=tile_size)
    inputs, maps, seen, fractions, detect_ms = [], [], {}, [], []
    count = len(clip)
    check = {i for i in range(warmup, count) if (i - warmup) % diff_every == 0} | {count - 1}
    for i, frame in enumerate(clip):
        t0 = time.perf_counter()
        cm = detector.update(frame)
        detect_ms.append((time.perf_counter() - t0) * 1e3)
        inputs.append(_to_input(frame, normalise, device, dtype))
        maps.append(dataclasses.replace(cm, tiles=cm.tiles.to(device)))
        fractions.append(cm.changed_fraction)
        if i in check:
            seen[i] = _to_input(detector.reference.cpu().numpy(), normalise, device,
                                torch.float32)
    model = copy.deepcopy(model32).to(dtype)
    engines = _dense_engines(m, model, inputs[0])
    engines.update(_incremental_engines(m, model))

    def reference(i: int, raw: bool):
        # Dense engines saw the frame itself, incremental ones the detector's reference.
        with torch.inference_mode():
            x = _to_input(clip[i], normalise, device, torch.float32) if raw else seen[i]
            return model32(x.contiguous())

    entries, info = [], {'change_detector_ms': summarize(detect_ms[warmup:])['median_ms'],
                         'tiles_changed_fraction': statistics.fmean(fractions[warmup:])
                         if count > warmup else None}
    for name in ENGINES:
        engine, state = engines[name]
        diffs, active = [], []
        incremental = name.startswith('incremental')

        def call(i, engine=engine, state=state, incremental=incremental):
            if incremental:
                return engine(inputs[i], maps[i], state)
            return engine(inputs[i], maps[i], None)

        def after(i, out, engine=engine, incremental=incremental, diffs=diffs, active=active):
            if i < warmup:
                return
            if incremental:
                active.append(engine.last_stats.active_fraction)
            if i in check:
                diffs.append(_rel_diff(out, reference(i, not incremental)))

        frames = min(count, warmup + REFERENCE_FRAMES) if name == 'incremental_reference' \
            else count
        times = time_frames(call, frames, warmup, m.timer, after)
        entry = run_entry(name, resolution, times,
                          statistics.fmean(active) if active else (1.0 if not incremental
                                                                   else None),
                          max(diffs) if diffs else None)
        entries.append(entry)
        _progress(started, f'{resolution[0]}x{resolution[1]} {name}: p50 '
                           f"{_fmt(entry['median_ms'], '.3f')} ms, max rel diff "
                           f"{_fmt(entry['max_rel_diff'], '.1e')}")
        if name == 'incremental_kernels_graph':
            info['graph_captured'] = (bool(state.executor_state.graphs)
                                      and not state.executor_state.graph_failed)
    add_speedups(entries)
    del engines
    m.empty_cache()
    return entries, info


def _synthetic_sweep(m: _Cuda, model32: Any, resolution: Sequence[int], dtype: Any, frames: int,
                     dense_graph_ms: float | None, first: Any, tile: int,
                     fractions: Sequence[float] = SWEEP_P, warmup: int = 2) -> list:
    """Random ``tile``-pixel tiles changing with share p; time per engine and p."""
    import torch

    device = m.device
    h, w = resolution
    th, tw = -(-h // tile), -(-w // tile)
    g = torch.Generator().manual_seed(0)
    model = copy.deepcopy(model32).to(dtype)
    x0 = first if first is not None else torch.randn(1, 3, h, w, generator=g).to(device)
    out = []
    for name in SWEEP_ENGINES:
        engine, state = _incremental_engines(m, model)[name]
        engine(x0.to(dtype), None, state)
        x = x0.to(dtype).clone()
        for p in fractions:
            batch = []
            for _ in range(frames + warmup):
                n = max(1, round(p * th * tw))
                tiles = torch.zeros(th * tw, dtype=torch.bool)
                tiles[torch.randperm(th * tw, generator=g)[:n]] = True
                tiles = tiles.view(th, tw)
                mask = tiles.repeat_interleave(tile, 0).repeat_interleave(tile, 1)[:h, :w]
                noise = (torch.randn(1, 3, h, w, generator=g) * 0.1).to(device, dtype)
                x = torch.where(mask.to(device), x + noise, x)
                batch.append((x, tiles.to(device)))
            active = []

            def call(i, batch=batch, engine=engine, state=state):
                return engine(batch[i][0], batch[i][1], state)

            def after(i, out_, engine=engine, active=active):
                if i >= warmup:
                    active.append(engine.last_stats.active_fraction)

            times = time_frames(call, len(batch), warmup, m.timer, after)
            s = summarize(times)
            out.append({'engine': name, 'resolution': [h, w], 'p': p, 'tile_size': tile, **s,
                        'ratio_vs_dense_graph': s['median_ms'] / dense_graph_ms
                        if dense_graph_ms and s['median_ms'] else None,
                        'active_fraction': statistics.fmean(active) if active else None})
        del engine, state
        m.empty_cache()
    return out


def _layer_curve(m: _Cuda, spec: tuple, dtype: Any, repeats: int,
                 fractions: Sequence[float] = LAYER_P) -> dict:
    """Time one layer's launches in the device mode by changed fraction, and dense cuDNN."""
    import torch
    from torch import nn

    from sparse_perception.engine import EngineConfig, IncrementalModel

    name, kind, (h, w), cin, cout, stride = spec
    device = m.device
    torch.manual_seed(0)
    if kind == 'conv1x1':
        conv = nn.Conv2d(cin, cout, 1, bias=False)
    elif kind == 'depthwise3x3':
        conv = nn.Conv2d(cin, cout, 3, stride, 1, groups=cin, bias=False)
    else:
        conv = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    # Seeded default weights: the launches' cost depends on the changed tiles, not on values.
    layer = nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU6()).eval()
    layer = layer.to(device, dtype)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, cin, h, w, generator=g).to(device, dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    dense = _fold(layer).to(memory_format=torch.channels_last)
    dense_us = _graph_us(m, lambda: dense(x), repeats)
    engine = IncrementalModel(layer, EngineConfig(), execution='device', graph=False)
    state = engine.new_state()
    engine(x, None, state)
    tile = 8
    th, tw = -(-h // tile), -(-w // tile)
    curve = []
    for p in fractions:
        n = round(p * th * tw)
        tiles = torch.zeros(th * tw, dtype=torch.bool)
        tiles[torch.randperm(th * tw, generator=g)[:n]] = True
        tiles = tiles.view(th, tw).to(device)
        mask = tiles.repeat_interleave(tile, 0).repeat_interleave(tile, 1)[:h, :w]
        x = torch.where(mask, x + 0.5, x)
        engine(x, tiles, state)  # sets the input's change mask, binds the launches
        stream = state.executor_state
        key = next(k for k in stream.launches if k != 'dense')
        bound = stream.launches[key][1:]  # the layer's launches (after the input intake)
        row = stream.buffers['stats'][1]
        launch = engine.executor.k.runtime.launch

        def layer_launches(bound=bound, row=row, launch=launch):
            row.zero_()  # the layer's tile counter, as the frame clears it
            for kernel, grid, args, meta in bound:
                launch(kernel, grid, *args, **meta)
        us = _graph_us(m, layer_launches, repeats)
        stats = engine.last_stats.layers[0]
        curve.append({'p': p, 'us': us, 'ratio_vs_dense': us / dense_us,
                      'active_fraction': stats.active_fraction})
    return {'layer': name, 'kind': kind, 'input_hw': [h, w], 'cin': cin, 'cout': cout,
            'stride': stride, 'dense_us': dense_us, 'fixed_cost_us': curve[0]['us'],
            'break_even_p': break_even(curve[1:], dense_us), 'curve': curve}


def _graph_us(m: _Cuda, body: Callable[[], Any], repeats: int) -> float:
    """Median microseconds of one replay of ``body`` captured as a CUDA graph."""
    replay = m.capture(body)
    times = time_frames(lambda i: replay(), repeats + 3, 3, m.timer)
    return summarize(times)['median_ms'] * 1e3


# -- the report -----------------------------------------------------------------------------------

def _fmt(value: Any, spec: str) -> str:
    return '-' if value is None else format(value, spec)


def markdown(result: dict) -> str:
    """Render the result as a markdown report."""
    m = result.get('machine', {})
    lines = [f"# Incremental kernels vs dense cuDNN ({result['gpu']})", '',
             f"- model: {result.get('model')}, {result.get('dtype')}, batch 1",
             f"- torch {result['torch']}, triton {result['triton']}, CUDA {m.get('cuda')}, "
             f"cuDNN {m.get('cudnn')}, GPU capability {m.get('gpu_capability')}; "
             f"CPU {m.get('cpu')}; commit {result.get('commit')}",
             f"- frames: {result.get('frames')} timed after {result.get('warmup_frames')} "
             f"warm-up per engine and resolution; {result.get('method', '')}",
             f"- command: `{result.get('command')}`, {result.get('date')}, "
             f"{result.get('wall_s')} s" + (' (QUICK: not for results)'
                                            if result.get('quick') else ''), '',
             '## Real frames (vtest), thresholds 0', '',
             '| resolution | engine | median ms | p90 ms | speedup vs dense graph | active | '
             'max rel diff |', '|---|---|---|---|---|---|---|']
    for r in result['runs']:
        lines.append(f"| {r['resolution'][0]}x{r['resolution'][1]} | {r['engine']} | "
                     f"{_fmt(r['median_ms'], '.3f')} | {_fmt(r['p90_ms'], '.3f')} | "
                     f"{_fmt(r['speedup_vs_dense_graph'], '.2f')} | "
                     f"{_fmt(r['active_fraction'], '.1%')} | {_fmt(r['max_rel_diff'], '.2g')} |")
    if result.get('sweep'):
        # Results written before the sweep followed --tile-size used 16-pixel tiles.
        tile = result['sweep'][0].get('tile_size', 16)
        lines += ['', f'## Synthetic sweep of the changed fraction (random {tile} px tiles)', '',
                  '| engine | resolution | p | median ms | / dense graph | active |',
                  '|---|---|---|---|---|---|']
        for s in result['sweep']:
            lines.append(f"| {s['engine']} | {s['resolution'][0]}x{s['resolution'][1]} | "
                         f"{s['p']:.0%} | {_fmt(s['median_ms'], '.3f')} | "
                         f"{_fmt(s['ratio_vs_dense_graph'], '.2f')} | "
                         f"{_fmt(s['active_fraction'], '.1%')} |")
    if result.get('layers'):
        lines += ['', '## Single layers (device mode launches vs dense cuDNN, both as CUDA '
                  'graphs)', '', '| layer | input | dense us | fixed cost us (p = 0) | '
                  'break-even p | us at p = 1, 10, 100% |', '|---|---|---|---|---|---|']
        for layer in result['layers']:
            at = {c['p']: c['us'] for c in layer['curve']}
            lines.append(f"| {layer['layer']} | {layer['input_hw'][0]}x{layer['input_hw'][1]}"
                         f" | {_fmt(layer['dense_us'], '.1f')} | "
                         f"{_fmt(layer['fixed_cost_us'], '.1f')} | "
                         f"{_fmt(layer['break_even_p'], '.0%')} | "
                         f"{_fmt(at.get(0.01), '.1f')}, {_fmt(at.get(0.1), '.1f')}, "
                         f"{_fmt(at.get(1.0), '.1f')} |")
    return '\n'.join(lines) + '\n'
