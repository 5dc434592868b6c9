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
Typed settings: the one place where every tunable and its default is written down.

Node parameters, ``config/*.yaml`` and command-line flags are all generated from, or checked
against, these dataclasses, so the three cannot drift apart. Settings are grouped in sections
(``change``, ``sparsity``, ``model``, ...); a setting's public name is ``section.field``, which
is also its ROS parameter name and its command-line flag (``--section.field``).

Each field is declared with :func:`setting`, which records a description, an optional range
or set of choices, and whether it is read-only at run time. :func:`validate` checks a value
against that record and raises :class:`SettingError` naming the setting, the bad value and what
was expected.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
import functools
import math
import os
import sys
import typing
from typing import Any, Iterator, Mapping, Sequence

# Environment variable that selects the compute backend wherever the settings leave it at
# 'auto': one switch between kernels and reference, settable by environment and by parameter.
BACKEND_ENV = 'SPARSE_PERCEPTION_BACKEND'

# The heads a pipeline can run, in canonical order: the names of node.heads, of the model
# settings (model.segmentation, model.pose), of the registry's model kinds and of --heads.
HEADS = ('segmentation', 'pose')
# Command-line spellings of a head selection besides the heads' own names.
HEAD_ALIASES = {'seg': ('segmentation',), 'both': HEADS}


class SettingError(ValueError):
    """A setting has a value of the wrong type or outside its range."""


@dataclass(frozen=True)
class SettingInfo:
    """What a setting means and which values it accepts."""

    description: str
    low: float | None = None  # inclusive lower bound for numbers
    high: float | None = None  # inclusive upper bound for numbers
    choices: tuple[str, ...] | None = None  # the only accepted strings
    read_only: bool = False  # fixed once a node is configured
    reload: bool = False  # changing it reloads the model (not applied on the next frame only)


def setting(default: Any, description: str, *, low: float | None = None,
            high: float | None = None, choices: tuple[str, ...] | None = None,
            read_only: bool = False, reload: bool = False) -> Any:
    """Declare a dataclass field that is a user-facing setting."""
    info = SettingInfo(description, low, high, choices, read_only, reload)
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: tuple(default), metadata={'setting': info})
    return field(default=default, metadata={'setting': info})


@dataclass(frozen=True)
class ChangeSettings:
    """Temporal change map: which tiles of the camera image changed since last propagated."""

    # Per-pixel difference, in grey levels of an 8-bit image (0-255), below which a pixel
    # counts as unchanged. Float images are compared in the same units times 1/255.
    # The default (with min_pixels 16) is the point of bench/results/accuracy_defaults.md: of
    # the sweep's settings that keep DeepLab's person masks within 99.5% of dense on DAVIS's
    # hand-held clips, one with a margin (99.78% on breakdance; 3 grey levels give 99.51%, at
    # the bound; accuracy_sweep.md). A static camera can take far more: 12
    # grey levels and 32 pixels recompute 46% of the positions on vtest at 99.87% agreement.
    # These are the segmentation head's: the pose head has its own (pose.change_threshold).
    threshold: float = setting(
        2.0, 'Per-pixel change (0-255 grey levels) below which a pixel is unchanged, for the '
        'segmentation head (the pose head reads pose.change_threshold)', low=0.0, high=255.0)
    # Tile edge in input pixels; the change map and the engine work at this granularity.
    tile_size: int = setting(
        16, 'Edge of a change tile in input pixels', low=1, high=256, read_only=True)
    # Grow the changed region by this many tiles (catches motion at tile borders).
    dilation: int = setting(0, 'Grow changed regions by this many tiles', low=0, high=16)
    # A tile changes only when at least this many of its pixels changed (noise suppression:
    # isolated flickering pixels are ignored; 1 = any pixel, exact against dense).
    min_pixels: int = setting(
        16, 'Changed pixels a tile needs before it counts as changed (noise suppression), for '
        'the segmentation head (the pose head reads pose.change_min_pixels)', low=1, high=65536)
    # A tile next to a changed one (8-neighbourhood) needs only this many changed pixels: the
    # edges of a moving object go along with it. At or above min_pixels: no such rule.
    neighbour_pixels: int = setting(
        1, 'Changed pixels a tile next to a changed tile needs (edges of moving objects)',
        low=1, high=65536)
    # Run a full dense frame every N change maps (0 = never); bounds drift under thresholds
    # > 0. Frames without a map (every network on its dense pass) do not count: they drift not.
    refresh_period: int = setting(
        0, 'Full dense refresh every N change maps (0 = never)', low=0, high=1_000_000)

    def __post_init__(self) -> None:
        check_section(self, 'change')
        min_pixels_problem('change.min_pixels', self.min_pixels, self.tile_size)


def parse_layer_thresholds(items: Any) -> dict[str, float]:
    """Parse ``sparsity.layer_thresholds`` (``('layer=value', ...)``) into a dict."""
    out: dict[str, float] = {}
    for item in items or ():
        name, sep, value = str(item).partition('=')
        try:
            number = float(value)
        except ValueError:
            number = float('nan')
        if not sep or not name.strip() or not 0 <= number < math.inf:
            raise SettingError(f'sparsity.layer_thresholds: {item!r} must look like '
                               "'layer=value' with a finite number >= 0, e.g. "
                               'features.3.conv.1.0=0.05')
        if name.strip() in out:  # which one should win?
            raise SettingError(f'sparsity.layer_thresholds: {name.strip()!r} is given twice')
        out[name.strip()] = number
    return out


@dataclass(frozen=True)
class SparsitySettings:
    """The engine's sparsity knob: per-layer output thresholds in the DeltaCNN manner."""

    # Multiplies every layer's output threshold; 0 makes the engine exact against dense. A
    # layer's threshold is this scale times the RMS of its output on the stream's first frame.
    scale: float = setting(
        0.0, 'Global scale of the per-layer output thresholds (0 = exact)', low=0.0, high=100.0)
    # Global average pooling outputs (squeeze-excitation, image pooling) use the larger of
    # this and `scale`: one moving object barely moves a pooled mean, yet every change of it
    # wakes the whole map it multiplies or is broadcast to. 0 (with scale 0) is exact.
    global_scale: float = setting(
        0.0, 'Threshold scale of global pooling outputs (SE, image pooling; 0 = exact)',
        low=0.0, high=100.0)
    # Overrides as 'layer_name=threshold' strings (ROS parameters cannot be maps). Imported
    # models reuse layer names (op003_conv), hence the optional network prefix, as a replay
    # report's per-layer table names them (pipeline.own_thresholds).
    layer_thresholds: tuple[str, ...] = setting(
        (), "Per-layer output thresholds as 'layer=value' (override the scaled default; every "
            "network with that layer), or 'segmentation/layer=value', 'pose/layer=value', "
            "'pose/detector/layer=value' (that network only)")
    # Above this active fraction a frame runs dense, which is then cheaper than sparse.
    dense_fallback: float = setting(
        1.0, 'Run the frame dense when more than this fraction is active', low=0.0, high=1.0)
    # Per layer: above this share of positions to recompute, a layer runs dense on its cached
    # input. For layers computed at exactly the changed positions (1x1 convolutions, ...).
    layer_dense_fallback: float = setting(
        0.8, 'Run a 1x1/pointwise layer dense above this share of changed positions',
        low=0.0, high=1.0)
    # The same for KxK convolutions and pooling, as a share of positions in changed tiles.
    window_dense_fallback: float = setting(
        0.35, 'Run a KxK/pooling layer dense above this share of positions in changed tiles',
        low=0.0, high=1.0)
    # Measure the engine against a plain dense pass of the same network and run whichever is
    # faster now (see sparse_perception/scheduling.py): the engine's bookkeeping can cost
    # more than it skips (a small network, a moving camera). Either path computes the same
    # network, but which one ran a frame depends on measured time, so with thresholds above 0
    # (or a dense runtime other than torch, or TF32 on CUDA) two runs may differ slightly;
    # false always runs the engine (reproducible evaluations).
    adaptive: bool = setting(
        True, 'Run a dense pass instead of the engine while that is measured faster')
    # Spatial gates (sparse_perception/gates/maker.py) for the segmentation network: on a moving
    # camera every tile changes, and a gate limits recomputation to where the people are
    # ('previous': last frame's person tiles; 'glance': also this frame's, from the network
    # run at glance_scale, fully convolutional models only). Positions outside the gate keep
    # their cached values and are recomputed once a gate covers them: none is exact.
    gate: str = setting(
        'none', 'Where the segmentation network recomputes: none (every change), previous '
        "(last frame's people), glance (a low-resolution pass first), learned (a tiny "
        'network trained by `sparse-perception gate train`: sparsity.gate_model)',
        choices=('none', 'previous', 'glance', 'learned'))
    # The gate's margin around the people, in change tiles (change.tile_size pixels): it
    # covers motion since the last frame and the receptive field across the gate's edge.
    gate_margin: int = setting(
        2, 'Grow the gate by this many change tiles around the people', low=0, high=64)
    # A gate over most of the frame (a crowd) saves little and leaves the rest stale, where
    # it waits for the refresh cells: above this share of the input's tiles the frame runs ungated,
    # recomputing every change and every stale position, and the glance is skipped when
    # the last frame's people, grown, cover that much already. On DAVIS breakdance (a crowd;
    # gates_sweep.md, refresh 32) 1 (never) lost 0.86 IoU points at 99.20% agreement and ran
    # at 1.21x of dense; 0.5 lost none at 99.97% and ran at 1.35x. Parkour (one person) kept
    # its accuracy with either: its gates stay under half the frame.
    gate_dense_above: float = setting(
        0.5, "Run a frame ungated when its gate covers more than this share of the input's "
        'tiles', low=0.0, high=1.0)
    glance_scale: float = setting(
        0.25, "Scale of the glance's input (sparsity.gate glance)", low=0.05, high=1.0)
    # While someone is followed, the frames between two glances gate on the last frame's
    # people alone: a sixteenth of a frame's work saved on each at scale 1/4, and someone
    # who appears away from everyone seen is found by the next glance, a frame or so later.
    # Someone who moved farther than gate_margin in a frame may leave such a gate, so the
    # next frame glances (gates/maker.py: GateMaker._outran; a frame between two glances may
    # hide such a move behind its own gate). Frames the network does not compute (nothing
    # changed, or the path choice ran dense) do not count. While nobody is followed the
    # glance runs on every frame: it is what finds people, and what answers alone
    # (glance_exit). On parkour 1 / 2 / 3 / 4 lost -0.12 / -0.14 / -0.12 / -0.18 IoU points at
    # every other DAVIS frame (bench/results/gates_glance_period_sweep.md) and 0.25 / 0.46 /
    # 0.87 / 0.75 at every fourth (..._every4th.md, a slower camera or faster people): 2 is
    # the largest that keeps the bound of 0.5 at both.
    glance_period: int = setting(
        2, 'While people are followed, glance on every Nth frame, and on a frame after '
        'someone moved farther than sparsity.gate_margin; the frames between gate on the '
        "last frame's people (sparsity.gate glance)", low=1, high=10000)
    # N about square cells of tiles split the frame, and the next one in reading order joins
    # every gate, so a layer recomputes each position once in N frames (from its inputs as
    # they are then: the output may take longer, see the README; and someone the gate missed
    # is looked at again within them, though a cell computed amid stale features may miss
    # them still). Each cell costs 1/N of a frame (gates/maker.py: refresh_cell).
    # For the same bound the glance answers at most N - 1 frames in a row alone (glance_exit).
    # On every fourth DAVIS frame, glancing at each (bench/results/gates_sweep.md, from before
    # glance_period), 8 / 16 / 32 ran parkour at 34% / 29% / 26% of dense MACs, losing 0.15 /
    # 0.25 / 0.28 IoU points, and kept 99.90% / 99.66% / 99.78% of the static vtest40 clip's
    # mask: 16 keeps a margin on both bounds with the tighter bound on staleness (32 kept them
    # too).
    gate_refresh: int = setting(
        16, 'Under a gate, every layer recomputes each position at least every N frames (0 = '
        'never)',
        low=0, high=10000)
    # The learned gate (sparse_perception/gates/learned.py): the file that
    # `sparse-perception gate train` wrote, and the probability from which a tile is gated.
    gate_model: str = setting(
        '', 'Gate file of sparsity.gate learned (from `sparse-perception gate train`)')
    gate_threshold: float = setting(
        0.5, "Gate the tiles where the learned gate's person probability is at least this",
        low=0.0, high=1.0)
    glance_exit: bool = setting(
        True, 'When the glance and the last frame show nobody, publish the glance and skip '
        'the full pass (at most sparsity.gate_refresh - 1 frames in a row; no bound at 0)')
    # Edge of the tiles (in output positions) that KxK layers compute on.
    compute_tile: int = setting(
        4, 'Edge of the tiles KxK layers compute on, in output positions', low=1, high=256,
        reload=True)

    def __post_init__(self) -> None:
        check_section(self, 'sparsity')
        parse_layer_thresholds(self.layer_thresholds)  # (the layers are a model's to know)
        if self.gate == 'learned' and not self.gate_model:
            raise SettingError("sparsity.gate 'learned' needs sparsity.gate_model: the file "
                               'that `sparse-perception gate train` wrote')


@dataclass(frozen=True)
class ModelSettings:
    """Which networks run, where, and how."""

    # The defaults are the MediaPipe models that `sparse-perception models fetch` puts in the
    # model cache (the Coral ones need the shared folder). The landscape selfie model: on
    # every other DAVIS frame (854x480) its dense person mask scored IoU 0.646 on parkour and
    # 0.176 on breakdance, the square one 0.637 and 0.122 (bench/results/gates_none_selfie.md,
    # selfie_square_davis.md), on 44% fewer network pixels.
    segmentation: str = setting(
        'selfie_segmentation_landscape',
        'Segmentation model: a registered name or a file path (empty only where the '
        'segmentation head does not run)', reload=True)
    pose: str = setting(
        'blazepose', 'Pose model: a registered name or a file path (empty only where the pose '
        'head does not run)', reload=True)
    # Searched first for the files of registered models (then the shared folder or the
    # `sparse-perception models fetch` cache).
    models_dir: str = setting(
        '', 'Folder searched first for the files of registered models (empty = defaults)',
        reload=True)
    device: str = setting(
        'auto', 'Compute device', choices=('auto', 'cpu', 'cuda'), reload=True)
    precision: str = setting(
        'fp32', 'Arithmetic precision on CUDA (CPU always runs fp32)',
        choices=('fp32', 'fp16'), reload=True)
    backend: str = setting(
        'auto', 'Sparse backend: GPU kernels, or the pure-torch reference '
        f'(auto = kernels on CUDA when Triton is present; env {BACKEND_ENV} overrides auto)',
        choices=('auto', 'kernels', 'reference'), reload=True)
    # Which executor runs the engine's frames. 'device' runs on the Triton kernels without
    # host synchronisation in a frame, replayed as a CUDA graph on CUDA (the fast path; on
    # the CPU it runs only under Triton's interpreter, for tests), so it needs the kernels
    # backend ('reference' is refused). 'eager' decides per layer on the host (on either
    # backend). 'auto' takes 'device' where the backend resolves to the kernels and the
    # device is CUDA, else 'eager'; a model the device executor cannot run then falls back to
    # 'eager' with a warning. It builds a different engine, so a change reloads the model.
    execution: str = setting(
        'auto', 'Incremental executor: device (sync-free, CUDA graphs) or eager '
        '(auto = device on CUDA with the kernels backend, else eager)',
        choices=('auto', 'eager', 'device'), reload=True)
    # What runs a dense pass (the dense reference pipeline, and the incremental pipeline's
    # dense passes: first frames, and frames where a dense pass is faster than the engine):
    # the model's torch modules, or the TFLite interpreter (ai-edge-litert, XNNPACK) on the
    # model's own .tflite file, which is what a MediaPipe user runs on a CPU and about twice
    # as fast as torch there on these models (bench/results/cpu.md). 'auto' takes litert for a
    # TFLite model on the CPU when ai-edge-litert is installed, else torch. The engine always
    # runs the torch networks.
    runtime: str = setting(
        'auto', 'Dense runtime: torch, or litert (the TFLite interpreter; TFLite models only); '
        'auto = litert for TFLite models on the CPU where it is installed',
        choices=('auto', 'torch', 'litert'), reload=True)
    # CPU threads of torch (and of LiteRT). One thread is the default: on a robot the CPU is
    # shared with other nodes, and a thread pool that waits for a busy core stalls the whole
    # frame. At 1 thread the main job's p50 doubled under two busy processes on two cores
    # (bench/results/cpu.md). 0 is torch's own default (all cores).
    threads: int = setting(
        1, 'CPU threads for the networks (0 = torch default: all cores)', low=0, high=256,
        reload=True)
    # A fully convolutional model (a name ending in _fcn) runs at the frame's own size, and
    # its engine caches grow with it (DeepLab's: 639 MiB per stream at 720x1280,
    # bench/results/engine_cpu.md), without bound but this. Larger frames are scaled down to
    # this many megapixels, keeping their aspect ratio, and the outputs mapped back to the
    # frame, as for a fixed-size model; 2.1 keeps 1920x1080 at its own size.
    fcn_max_megapixels: float = setting(
        2.1, 'Largest input of a fully convolutional model in megapixels; a larger frame is '
        'scaled down to it', low=0.01, high=64.0)

    def __post_init__(self) -> None:
        check_section(self, 'model')
        # Only the explicit choice: a settings object does not depend on the environment (the
        # environment's backend is checked where a node takes parameters and an engine is built).
        if self.backend != 'auto':
            problem = execution_problem(self.backend, self.execution)
            if problem:
                raise SettingError(problem)


@dataclass(frozen=True)
class PoseSettings:
    """How the pose head looks for people, how many it follows and where it recomputes."""

    # While nobody is tracked, the incremental pipeline runs the person detector on every
    # N-th frame only (1 = every frame, as MediaPipe does); a person who walks in is then
    # found up to N - 1 frames later. A frame whose detector input did not change at all
    # skips the detector whatever N says (its result cannot differ). The dense reference
    # pipeline detects on the same schedule, so that it differs from the incremental one by
    # sparsity alone.
    detect_period: int = setting(
        4, 'While nobody is tracked, run the person detector every N frames (1 = every frame)',
        low=1, high=1000)
    # How many people a tracking pose model follows at once, each in a still crop with an
    # engine state of its own (the landmark network runs once per person: a person costs
    # what one person costs). While fewer are followed, the detector looks for more on every
    # detect_period-th frame, if anything changed since it last ran (inside the followed
    # people's crops too: someone a followed person hid is found once they move on).
    # 1 follows the best detection only, as MediaPipe's pose graph does.
    max_people: int = setting(
        1, 'How many people a tracking pose model (BlazePose) follows at once', low=1, high=64)
    # The person detector (MediaPipe's) finds the most prominent person or two of a frame
    # and misses the others: on the COCO stills it found one person per image. With room for
    # more, it looks again in this many overlapping windows along the frame's longer side,
    # each showing its people larger (by up to the frame's long side over its short side:
    # 1.33x at 4:3), as the dense reference does. Each window is one more detector pass on
    # the frames that detect. On the COCO stills 3 windows took PCK@0.2 over all people
    # from 0.25 to 0.72 with 4 people followed; on vtest's first 400 frames they found people
    # in 399 frames instead of 153, each followed person costing a landmark pass
    # (bench/results/pose_people.md).
    detect_windows: int = setting(
        0, 'With room for more people, also run the person detector on this many overlapping '
        "windows along the frame's longer side (0 or 1 = the whole frame only)", low=0,
        high=8)
    # The person detector finds people near the camera (it looks for a face and upper body);
    # pedestrians a few dozen pixels tall it misses. When the segmentation head runs too, each
    # of its person regions at least this many pixels tall that lies in nobody's crop
    # proposes a person on every frame with room (as in the dense reference, so both follow
    # the same people), largest first, and the landmark network's presence score keeps or
    # drops them. Off by default: each person so found costs a landmark pass on most frames
    # (a walking person changes most of a crop cut around them), and on the bundled clip's
    # video that turns the pose head from nearly idle into the largest cost (MACs saved 41% ->
    # 2%, bench/results/pose_mask_proposals.md). 32 finds its 50-80 px pedestrians.
    # The pose head's own change threshold and min_pixels (the other change settings are
    # shared): a tracking model places each crop from the last keypoints and picks among
    # similar people, so stale pixels that a mask shrugs off part its tracking from dense. On
    # vtest, with the engine on every frame, 12 grey levels and 32 pixels gave 43 of 2385
    # frames another person count than dense and 5.75 px median keypoint error, 2 and 16 none
    # and 0.000 px, while the pose head recomputed 0.44 and 0.54 of its positions
    # (bench/results/pose_tracking_vtest.md): pose saves little by a high threshold and
    # loses much. So a static camera's masks can take a high change.threshold while pose
    # keeps its own; where both heads' values agree they share one change map.
    change_threshold: float = setting(
        2.0, 'Per-pixel change (0-255 grey levels) below which a pixel is unchanged for the '
        "pose head (change.threshold is the segmentation head's)", low=0.0, high=255.0)
    change_min_pixels: int = setting(
        16, 'Changed pixels a tile needs before it counts as changed for the pose head '
        "(change.min_pixels is the segmentation head's)", low=1, high=65536)
    mask_proposal_height: int = setting(
        0, 'Segmentation person regions at least this many pixels tall propose people to '
        'the pose head (0 = off: the detector alone)', low=0, high=100000)
    # Spatial gate of a single-person pose network (sparse_perception/gates/track.py):
    # 'track' recomputes only inside the box of the last frame's confident keypoints, grown
    # by sparsity.gate_margin, with the segmentation gates' refresh cells and crowd fallback
    # (sparsity.gate_refresh, sparsity.gate_dense_above). After a frame without a confident
    # keypoint the next runs ungated. Positions outside the gate keep their cached values
    # and are recomputed once a gate covers them: none is exact.
    gate: str = setting(
        'none', 'Where a single-person pose network recomputes: none (wherever the input '
        "changed), track (around the last frame's keypoints)", choices=('none', 'track'))
    # Keypoints scoring at least this make the track gate's box (MoveNet's scores are
    # per-joint confidences in [0, 1]; 0.3 is what the overlay draws by default).
    gate_score: float = setting(
        0.3, "Keypoints scoring at least this make pose.gate track's box", low=0.0, high=1.0)
    # Glance and focus for a single-person pose network (MoveNet sees the whole frame at
    # 192x192, so a person far away gets few pixels): when a frame's mean keypoint score is
    # below focus_score, the network runs once more, dense, on a square crop around the
    # surer half of its keypoints (1.5 times their extent), and the more confident of the two
    # answers stands. Tracking models (BlazePose) crop already and ignore it.
    focus: bool = setting(
        False, 'Run a single-person pose network again on a crop around an unsure answer')
    focus_score: float = setting(
        0.5, 'Mean keypoint score under which pose.focus looks again', low=0.0, high=1.0)

    def __post_init__(self) -> None:
        check_section(self, 'pose')


@dataclass(frozen=True)
class PerceptionSettings:
    """Everything the perception pipeline needs, section by section."""

    change: ChangeSettings = field(default_factory=ChangeSettings)
    sparsity: SparsitySettings = field(default_factory=SparsitySettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    pose: PoseSettings = field(default_factory=PoseSettings)

    def __post_init__(self) -> None:
        min_pixels_problem('pose.change_min_pixels', self.pose.change_min_pixels,
                           self.change.tile_size)

    def change_for(self, head: str) -> ChangeSettings:
        """Return the change settings of one head: the pose head has its own threshold."""
        if head == 'pose':
            return dataclasses.replace(self.change, threshold=self.pose.change_threshold,
                                       min_pixels=self.pose.change_min_pixels)
        return self.change


# ---------------------------------------------------------------------------------------------
# What only the ROS nodes have (sparse_perception/nodes/): not part of the pipeline's settings,
# but declared, written to config/perception.yaml and documented from here all the same.
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class InputSettings:
    """Camera input of a node: topic, transport and subscription QoS."""

    # Relative, so that a namespace and remapping apply; image_transport's convention for the
    # compressed transport: the same base topic with '/compressed' appended.
    topic: str = setting(
        'image', "Camera base topic; the compressed transport subscribes to '<topic>/compressed'",
        read_only=True)
    transport: str = setting(
        'raw', 'raw: sensor_msgs/Image on the topic; compressed: sensor_msgs/CompressedImage',
        choices=('raw', 'compressed'), read_only=True)
    # auto: the publishers' own reliability (reliable when all offer it, else best effort),
    # looked at again as they come and go. A fixed best effort matches every publisher but
    # loses large raw images from a reliable one (one lost fragment loses the frame).
    reliability: str = setting(
        'auto', 'QoS reliability of the image subscription (auto: reliable when every '
        'publisher offers it, else best effort)',
        choices=('auto', 'best_effort', 'reliable'), read_only=True)
    # Keep-last depth; 1 means only the newest frame is ever waiting (no stale queue).
    depth: int = setting(
        1, 'QoS history depth (keep last) of the image subscription', low=1, high=100,
        read_only=True)
    no_message_warning: float = setting(
        5.0, 'Warn (naming the likely QoS or type mismatch) when the topic has publishers but '
        'no image arrived for this many seconds', low=0.5, high=3600.0)
    # Width x height of a frame above which it is refused: a compressed one from its JPEG or
    # PNG header, before decoding (a few hundred corrupt or hostile bytes can otherwise claim
    # gigabytes), a raw one from its message's size fields, before conversion (its pixels have
    # arrived, but the conversion and the networks' caches would grow with them). 64
    # megapixels holds two 8K frames (7680x4320 is 33 megapixels).
    max_megapixels: float = setting(
        64.0, 'Largest input image, in megapixels (width x height / 1e6); a larger compressed '
        'frame is refused from its header before decoding, a larger raw one before conversion',
        low=0.01, high=1024.0, read_only=True)

    def __post_init__(self) -> None:
        check_section(self, 'input')


@dataclass(frozen=True)
class OutputSettings:
    """How the nodes draw keypoints on the overlay and the RViz markers."""

    min_score: float = setting(
        0.3, 'Keypoints scoring below this are left out of the overlay and markers (the '
        'keypoint cloud carries every joint with its score)', low=0.0, high=1.0)
    # Markers live in the image's frame on the plane z = 0, image centre at the origin.
    marker_scale: float = setting(
        0.002, 'Size of one image pixel in the keypoint markers, in metres', low=1e-6, high=1.0)

    def __post_init__(self) -> None:
        check_section(self, 'output')


@dataclass(frozen=True)
class LifecycleSettings:
    """Life cycle of a node: start-up, heads, and warming the model at activation."""

    autostart: bool = setting(
        True, 'Configure and activate at start-up (false: wait for a lifecycle manager)',
        read_only=True)
    # Only perception_node declares it; segmentation_node and pose_node run their one head.
    heads: tuple[str, ...] = setting(
        HEADS, 'Heads perception_node runs on one decoded frame', choices=HEADS, read_only=True)
    warmup_frames: int = setting(
        2, 'Synthetic frames run at activation to load and warm the kernels (0 = none)',
        low=0, high=100)
    warmup_width: int = setting(640, 'Width of the warm-up frames in pixels', low=1, high=8192)
    warmup_height: int = setting(480, 'Height of the warm-up frames in pixels', low=1, high=8192)

    def __post_init__(self) -> None:
        check_section(self, 'node')


@dataclass(frozen=True)
class DiagnosticsSettings:
    """What the nodes report on /diagnostics, and when a level turns WARN or ERROR."""

    period: float = setting(1.0, 'Seconds between /diagnostics reports', low=0.05, high=60.0)
    window: float = setting(
        10.0, 'Seconds of history behind rates and latency percentiles', low=1.0, high=600.0)
    latency_warn_ms: float = setting(
        200.0, 'WARN when the p95 latency (image stamp to publish) exceeds this', low=0.0,
        high=1e6)
    latency_error_ms: float = setting(
        1000.0, 'ERROR when the p95 latency exceeds this', low=0.0, high=1e6)
    stale_after: float = setting(
        3.0, 'WARN when active and no frame was processed for this many seconds (ERROR after '
        'three times as long)', low=0.1, high=3600.0)

    def __post_init__(self) -> None:
        check_section(self, 'diagnostics')
        if self.latency_warn_ms > self.latency_error_ms:  # else ERROR would come before WARN
            raise SettingError(
                f'diagnostics.latency_warn_ms = {self.latency_warn_ms!r} is above '
                f'diagnostics.latency_error_ms = {self.latency_error_ms!r}: a latency turns '
                'WARN before ERROR (set both together, or the ERROR bound first)')


@dataclass(frozen=True)
class NodeSettings(PerceptionSettings):
    """A node's parameters: the pipeline's settings plus the sections only nodes have."""

    # The ROS parameter names read best as input.*; the field never shadows anything in use.
    input: InputSettings = field(default_factory=InputSettings)  # noqa: A003
    output: OutputSettings = field(default_factory=OutputSettings)
    node: LifecycleSettings = field(default_factory=LifecycleSettings)
    diagnostics: DiagnosticsSettings = field(default_factory=DiagnosticsSettings)


@dataclass(frozen=True)
class SettingSpec:
    """One setting seen from outside: its public name, Python type, default and info."""

    name: str  # 'section.field'
    kind: type  # bool, int, float, str or tuple (of str)
    default: Any
    info: SettingInfo


def _field_type(owner: type, f: dataclasses.Field) -> type:
    hint = typing.get_type_hints(owner)[f.name]
    origin = typing.get_origin(hint)
    return tuple if origin is tuple else hint


def specs(settings_type: type = PerceptionSettings, prefix: str = '') -> Iterator[SettingSpec]:
    """Yield every setting of a (nested) settings dataclass in declaration order."""
    for f in dataclasses.fields(settings_type):
        name = prefix + f.name
        kind = _field_type(settings_type, f)
        if dataclasses.is_dataclass(kind):
            yield from specs(kind, name + '.')
            continue
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        yield SettingSpec(name, kind, default, f.metadata['setting'])


def spec(name: str, settings_type: type = PerceptionSettings) -> SettingSpec:
    """Look up one setting by its public name."""
    for s in specs(settings_type):
        if s.name == name:
            return s
    known = ', '.join(s.name for s in specs(settings_type))
    raise SettingError(f'unknown setting {name!r}; known settings: {known}')


def _shown(value: Any, limit: int = 80) -> str:
    """Return ``repr(value)``, cut to ``limit`` characters (a value may be a whole file line)."""
    text = repr(value)
    return text if len(text) <= limit else f'{text[:limit]}... ({len(text)} characters)'


def validate(s: SettingSpec, value: Any) -> Any:
    """Return ``value`` converted to the setting's type, or raise :class:`SettingError`."""
    info = s.info
    if s.kind is bool:
        if not isinstance(value, bool):
            raise SettingError(f'{s.name} must be true or false, got {_shown(value)}')
        return value
    if s.kind in (int, float):
        # bool is an int in Python; a YAML 'true' for a number is a mistake, not 1.
        ok = isinstance(value, int) if s.kind is int else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok:
            raise SettingError(
                f'{s.name} must be {"an integer" if s.kind is int else "a number"}, '
                f'got {_shown(value)}')
        try:
            value = s.kind(value)
        except OverflowError:  # an integer of hundreds of digits for a float setting
            raise SettingError(f'{s.name} = an integer of {value.bit_length()} bits is out of '
                               f'range; expected {info.low} to {info.high}') from None
        if value != value:  # NaN slips through every range comparison
            raise SettingError(f'{s.name} must be a number, got NaN')
        if (info.low is not None and value < info.low) or (
                info.high is not None and value > info.high):
            raise SettingError(
                f'{s.name} = {value!r} is out of range; expected {info.low} to {info.high}')
        return value
    if s.kind is str:
        if not isinstance(value, str):
            raise SettingError(f'{s.name} must be a string, got {_shown(value)}')
        if info.choices is not None and value not in info.choices:
            raise SettingError(
                f'{s.name} = {value!r} is not one of {", ".join(info.choices)}')
        return value
    if s.kind is tuple:
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise SettingError(f'{s.name} must be a list of strings, got {_shown(value)}')
        if info.choices is not None:
            unknown = [v for v in value if v not in info.choices]
            if unknown:
                raise SettingError(f'{s.name} = {list(value)!r}: {", ".join(unknown)} is not '
                                   f'one of {", ".join(info.choices)}')
        return tuple(value)
    raise SettingError(f'{s.name} has unsupported type {s.kind!r}')  # a bug in this module


def check_section(section: Any, name: str) -> None:
    """
    Raise :class:`SettingError` unless every field of a settings section is valid.

    Each section calls it when built, so that one built directly (``PoseSettings(...)`` from
    Python) is held to the ranges and types that :func:`replace`, parameters and flags are;
    a value of another accepted form (an int for a float, a list for a tuple) is stored as
    the setting's type.
    """
    for f, s in _section_specs(type(section), name):
        value = getattr(section, f)
        checked = validate(s, value)
        if type(checked) is not type(value):
            object.__setattr__(section, f, checked)  # (frozen: still being built)


@functools.lru_cache(maxsize=None)
def _section_specs(section_type: type, name: str) -> tuple[tuple[str, SettingSpec], ...]:
    """Return (field, spec) of a section's settings (type hints are slow to read per call)."""
    return tuple((f.name, SettingSpec(f'{name}.{f.name}', _field_type(section_type, f), None,
                                      f.metadata['setting']))
                 for f in dataclasses.fields(section_type))


def check_flags(flags: Sequence[tuple[str, str, Any]]) -> None:
    """
    Check command-line values that stand for settings: (flag, setting name, value) each.

    Raises :class:`SettingError` naming the flag and the setting's range or choices.
    """
    for flag, name, value in flags:
        try:
            validate(spec(name), value)
        except SettingError as exc:
            raise SettingError(f'{flag}: {exc}') from None


def flatten(settings: Any, prefix: str = '') -> dict[str, Any]:
    """Turn a settings dataclass into ``{'section.field': value}``."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if dataclasses.is_dataclass(value):
            out.update(flatten(value, prefix + f.name + '.'))
        else:
            out[prefix + f.name] = value
    return out


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{'a.b': 1}`` -> ``{'a': {'b': 1}}`` (the layout of a ROS parameters YAML)."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        *path, last = key.split('.')
        node = out
        for part in path:
            node = node.setdefault(part, {})
        node[last] = list(value) if isinstance(value, tuple) else value
    return out


def unnest(tree: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
    """Inverse of :func:`nest`."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(unnest(value, prefix + key + '.'))
        else:
            out[prefix + key] = value
    return out


def replace(settings: Any, changes: Mapping[str, Any], settings_type: type | None = None) -> Any:
    """
    Return a copy of ``settings`` with dotted-name ``changes`` validated and applied.

    Unknown names and bad values raise :class:`SettingError`; nothing is applied then.
    """
    settings_type = settings_type or type(settings)
    flat = flatten(settings)
    for name, value in changes.items():
        flat[name] = validate(spec(name, settings_type), value)
    return build(settings_type, flat)


def build(settings_type: type, flat: Mapping[str, Any], prefix: str = '') -> Any:
    """Construct a settings dataclass from a complete flat mapping (values already valid)."""
    kwargs = {}
    for f in dataclasses.fields(settings_type):
        kind = _field_type(settings_type, f)
        name = prefix + f.name
        if dataclasses.is_dataclass(kind):
            kwargs[f.name] = build(kind, flat, name + '.')
        elif name in flat:
            kwargs[f.name] = flat[name]
    return settings_type(**kwargs)


def parse_heads(text: str) -> tuple[str, ...]:
    """
    Parse a command line's head selection into heads in canonical order.

    ``text`` is a comma-separated list of head names (those of ``node.heads``:
    'segmentation', 'pose') or of the short forms 'seg' and 'both'; for example
    'segmentation,pose', 'pose' or 'both'. Anything else raises :class:`SettingError`.
    """
    words = [word.strip() for word in str(text).split(',')]
    chosen: set[str] = set()
    for word in words:
        heads = (word,) if word in HEADS else HEAD_ALIASES.get(word)
        if heads is None:
            raise SettingError(
                f'heads {text!r}: {word!r} is not a head; expected a comma-separated list of '
                f'{", ".join(HEADS)} (or {", ".join(HEAD_ALIASES)})')
        chosen.update(heads)
    return tuple(head for head in HEADS if head in chosen)


def unused_gate_file(settings: PerceptionSettings) -> str | None:
    """Return a note when sparsity.gate_model is set but no gate reads it (None: it is read)."""
    sparsity = settings.sparsity
    if sparsity.gate_model and sparsity.gate != 'learned':
        return (f'note: sparsity.gate_model {sparsity.gate_model} is not read: only '
                f'sparsity.gate learned uses it, and sparsity.gate is {sparsity.gate!r}')
    return None


def min_pixels_problem(name: str, min_pixels: int, tile_size: int) -> None:
    """Raise SettingError when a tile cannot hold ``min_pixels`` changed pixels."""
    if min_pixels > tile_size * tile_size:
        raise SettingError(
            f'{name} = {min_pixels} is more than the {tile_size * tile_size} pixels of a '
            f'change.tile_size {tile_size} tile: no tile could ever count as changed')


def execution_problem(backend: str, execution: str) -> str | None:
    """
    Return why ``model.execution`` cannot run with ``model.backend`` (None: it can).

    The device executor runs on the kernels only. ``backend`` 'auto' is resolved with
    :data:`BACKEND_ENV`, as the engine resolves it when it is built.
    """
    if execution != 'device':
        return None
    try:
        resolved = resolve_backend(backend)
    except SettingError as exc:
        return str(exc)
    if resolved != 'reference':
        return None
    why = ("model.backend 'reference'" if backend == 'reference'
           else f"model.backend 'auto' under ${BACKEND_ENV}=reference")
    return (f"model.execution 'device' runs on the Triton kernels, but the backend resolves "
            f"to 'reference' ({why}): set model.backend to 'kernels' (or 'auto' without "
            f"${BACKEND_ENV}=reference), or model.execution to 'eager' or 'auto'")


def resolve_backend(backend: str) -> str:
    """
    Turn the ``model.backend`` setting into 'kernels' or 'reference'.

    'auto' defers to the environment variable named by :data:`BACKEND_ENV` when it is set;
    left at 'auto', the caller picks kernels where they can run.
    """
    if backend != 'auto':
        return backend
    env = os.environ.get(BACKEND_ENV, 'auto').strip().lower()
    if env not in ('auto', 'kernels', 'reference'):
        raise SettingError(
            f'{BACKEND_ENV}={env!r} is not one of auto, kernels, reference')
    return env


def from_params_yaml(path: str | os.PathLike, node_name: str | None = None,
                     settings_type: type = PerceptionSettings) -> Any:
    """Read settings from a ROS parameters file (see :func:`params_yaml_changes`)."""
    changes = params_yaml_changes(path, node_name, settings_type)
    try:
        return build(settings_type, {**flatten(settings_type()), **changes})
    except SettingError as exc:  # settings that do not go together: say which file holds them
        raise SettingError(f'{path}: {exc}') from None


def params_yaml_changes(path: str | os.PathLike, node_name: str | None = None,
                        settings_type: type = PerceptionSettings) -> dict[str, Any]:
    """
    Return the settings a ROS parameters file sets (``node_name: ros__parameters: ...``).

    The result maps dotted names to validated values; settings that must go together are
    checked when they are built, so that a command line may complete the file (a file that
    sets the learned gate, a flag that names its weights).

    Sections are merged as rclpy merges them for a node of that name: every section whose key
    matches the node (``/**``, ``/**/node_name``, ``node_name``, ``/node_name``, ``*`` for one
    namespace level) applies, in file order, a later section overriding an earlier one
    parameter by parameter. With ``node_name`` None, the file must hold exactly one section.
    Parameters of the nodes that are not settings of ``settings_type`` (``input.*``,
    ``diagnostics.*``, ``use_sim_time``, ...) are accepted and left to the node; any other key
    is an error naming it and the nearest known parameter.
    """
    import yaml  # only needed here; keeps `import sparse_perception.settings` light

    try:
        with open(path, encoding='utf-8') as stream:
            document = yaml.load(stream, Loader=_parameters_loader()) or {}
    except UnicodeDecodeError as exc:
        raise SettingError(f'{path}: not UTF-8 text ({exc.reason} at byte {exc.start})') \
            from None
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: a date or integer out of range
        raise SettingError(f'{path}: not valid YAML: {" ".join(str(exc).split())[:300]}') \
            from None
    except OSError as exc:
        raise SettingError(f'{path}: cannot read the parameters file: {exc.strerror}') from None
    if not isinstance(document, Mapping):
        raise SettingError(f'{path}: expected a mapping of node names, got {document!r}'[:300])
    bad_keys = [k for k in document if not isinstance(k, str)]
    if bad_keys:
        raise SettingError(f'{path}: node name {bad_keys[0]!r} is not a string')
    if node_name is None:
        if len(document) != 1:
            raise SettingError(
                f'{path}: holds parameters for {sorted(document)}; say which node to read')
        node_name = next(iter(document))
    target = '/' + str(node_name).lstrip('/')
    sections = [key for key in document if _node_key_matches(key, target)]
    if not sections:
        raise SettingError(f'{path}: no parameters for node {node_name!r}; '
                           f'found {sorted(document)}')
    merged: dict[str, Any] = {}
    for key in sections:  # file order: later sections override earlier ones
        section = document[key]
        params = section.get('ros__parameters') if isinstance(section, Mapping) else None
        if not isinstance(params, Mapping):
            raise SettingError(
                f'{path}: section {key!r} must be a mapping with a ros__parameters mapping, '
                f'got {section!r}'[:300])
        merged.update(_unnest_parameters(params, path, key))
    known = {s.name for s in specs(settings_type)}
    _check_parameter_names(merged, path, known | {s.name for s in specs(NodeSettings)})
    changes = {k: v for k, v in merged.items() if k in known}
    try:
        return {name: validate(spec(name, settings_type), value)
                for name, value in changes.items()}
    except SettingError as exc:  # a bad value: say which file holds it
        raise SettingError(f'{path}: {exc}') from None


def _parameters_loader() -> type:
    """
    Return a safe YAML loader that reads a parameters file as ROS 2 (rcl) does.

    Aliases (``*name``) are refused, as rcl refuses them, and values are typed by rcl's rules
    (:func:`rcl_scalar`), not YAML 1.1's: ``1e1`` is a number and ``y`` true to a node, ``1_000``
    and ``null`` strings; a quoted value is always a string. Keys stay strings.
    """
    import yaml

    def typed(node: Any) -> None:
        if isinstance(node, yaml.ScalarNode) and node.style is None \
                and node.tag == 'tag:yaml.org,2002:str':
            node.tag = _RCL_VALUE_TAG

    class Loader(yaml.SafeLoader):
        # Every scalar is composed as a string; values are typed when constructed.
        yaml_implicit_resolvers: dict = {}

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                raise yaml.composer.ComposerError(
                    None, None, 'aliases (*name) are not supported in ROS 2 parameter files',
                    self.peek_event().start_mark)
            return super().compose_node(parent, index)

        def construct_mapping(self, node, deep=False):
            for _, value in node.value:
                typed(value)
            return super().construct_mapping(node, deep)

        def construct_sequence(self, node, deep=False):
            for item in node.value:
                typed(item)
            return super().construct_sequence(node, deep)

    Loader.add_constructor(_RCL_VALUE_TAG,
                           lambda loader, node: rcl_scalar(loader.construct_scalar(node)))
    return Loader


_RCL_VALUE_TAG = '!rcl_value'
_RCL_TRUE = frozenset('Y y yes Yes YES true True TRUE on On ON'.split())
_RCL_FALSE = frozenset('N n no No NO false False FALSE off Off OFF'.split())
_YAML_SPECIAL = {f'{sign}.{word}': value for word in ('inf', 'Inf', 'INF')
                 for sign, value in (('', math.inf), ('+', math.inf), ('-', -math.inf))}
_YAML_SPECIAL.update({'.nan': math.nan, '.NaN': math.nan, '.NAN': math.nan})
# C's strtol with base 0 and strtod, each required to read the whole text: leading
# whitespace, a sign; integers 0x hexadecimal, 0 octal or decimal; doubles with a decimal or
# 0x hexadecimal mantissa and an exponent, or inf, infinity, nan (any case).
_C_INTEGER = r'\s*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)'
_C_DECIMAL = r'\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?'
_C_HEXADECIMAL = r'\s*([+-]?)0[xX]([0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)([pP][+-]?[0-9]+)?'
_C_SPECIAL = r'\s*[+-]?(?:inf|infinity|nan(?:\([0-9a-zA-Z_]*\))?)'


def rcl_scalar(text: str) -> Any:
    """
    Type an unquoted parameter value as rcl's parser does: bool, int64, double, else string.

    An integer past int64 goes on to be a double, and a double past a double's range (C's
    ERANGE) a string, as in rcl. An empty value is None, which no setting takes (rcl refuses
    it: 'no value').
    """
    import re

    if text == '':
        return None
    if text in _RCL_TRUE or text in _RCL_FALSE:
        return text in _RCL_TRUE
    integer = re.fullmatch(_C_INTEGER, text)
    if integer:
        sign, body = integer.groups()
        base, digits = (16, body[2:]) if body[:2] in ('0x', '0X') else (
            8 if body[0] == '0' else 10, body)
        digits = digits.lstrip('0') or '0'
        if len(digits) <= 22:  # (more: past int64 in any base, and slow to convert)
            value = int(digits, base) * (-1 if sign == '-' else 1)
            if -2 ** 63 <= value < 2 ** 63:
                return value
    if text in _YAML_SPECIAL:
        return _YAML_SPECIAL[text]
    hexadecimal = re.fullmatch(_C_HEXADECIMAL, text)
    decimal = re.fullmatch(_C_DECIMAL, text)
    if hexadecimal:
        sign, mantissa, exponent = hexadecimal.groups()
        value = float.fromhex(f'{sign}0x{mantissa}{exponent or "p0"}')
        significant = mantissa.strip('0.')
    elif decimal:
        value = float(text)
        significant = decimal.group(1).strip('0.')
    elif re.fullmatch(_C_SPECIAL, text, re.IGNORECASE):
        return float(text.split('(')[0])
    else:
        return text
    if math.isinf(value) or (value == 0 and significant) or 0 < abs(value) < sys.float_info.min:
        return text  # past a double's range: strtod's ERANGE
    return value


# Parameters every rclpy node has; a parameters file may set them.
_ROS_PARAMETERS = ('use_sim_time', 'start_type_description_service')


def _node_key_matches(key: str, target: str) -> bool:
    """Whether a parameters-file section ``key`` applies to the node named ``target``."""
    import re
    parts = ('/' + key.lstrip('/')).split('/')[1:]
    pattern = ''.join('(?:/[^/]+)*' if part == '**' else '/[^/]+' if part == '*'
                      else '/' + re.escape(part) for part in parts)
    return re.fullmatch(pattern, target) is not None


def _unnest_parameters(params: Mapping, path: Any, section: str,
                       prefix: str = '') -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        if not isinstance(key, str):
            raise SettingError(
                f'{path}: section {section!r} has the key {key!r} under {prefix or "the top"!r}'
                '; parameter names are strings (quote it, or fix the indentation)')
        if isinstance(value, Mapping):
            out.update(_unnest_parameters(value, path, section, prefix + key + '.'))
        else:
            out[prefix + key] = value
    return out


def _check_parameter_names(params: Mapping[str, Any], path: Any, known: set[str]) -> None:
    import difflib
    for name in params:
        if name in known or name in _ROS_PARAMETERS or name.startswith('qos_overrides.'):
            continue
        nearest = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.0)
        raise SettingError(
            f'{path}: unknown parameter {name!r}'
            + (f'; did you mean {nearest[0]!r}?' if nearest else '')
            + ' (the parameters are listed in config/perception.yaml)')


def add_cli_flags(parser: Any, settings_type: type = PerceptionSettings,
                  base: Any = None) -> None:
    """
    Add one ``--section.field`` flag per setting to an argparse parser.

    ``base``: the settings the command starts from, whose values the help shows as defaults
    (the settings' own defaults when None).
    """
    shown = flatten(base) if base is not None else {}
    group = parser.add_argument_group(
        'settings (same names as the node parameters; default in brackets)')
    for s in specs(settings_type):
        default = shown.get(s.name, s.default)
        kwargs: dict[str, Any] = {'dest': 'setting:' + s.name, 'default': None,
                                  'metavar': s.name.rsplit('.', 1)[1].upper(),
                                  'help': f'{s.info.description} [{default!r}]'}
        if s.kind is bool:
            kwargs['type'] = _parse_bool
            kwargs['metavar'] = 'true|false'
        elif s.kind is tuple:
            kwargs['nargs'] = '*'
        elif s.info.choices:
            kwargs['choices'] = s.info.choices
            kwargs['metavar'] = '{' + ','.join(s.info.choices) + '}'
        else:
            kwargs['type'] = s.kind
        group.add_argument('--' + s.name, **kwargs)


def from_cli(args: Any, base: Any = None, settings_type: type = PerceptionSettings,
             changes: Mapping[str, Any] | None = None) -> Any:
    """
    Apply the flags added by :func:`add_cli_flags` on top of ``base`` (or the defaults).

    ``changes`` (a parameters file's, :func:`params_yaml_changes`) apply first, the flags over
    them; settings that must go together are checked on the result.
    """
    flags = {key.split(':', 1)[1]: value for key, value in vars(args).items()
             if key.startswith('setting:') and value is not None}
    return replace(base if base is not None else settings_type(), {**(changes or {}), **flags},
                   settings_type)


# The words a command line may give a boolean setting (any case).
BOOL_WORDS = {'1': True, 'true': True, 'yes': True, 'on': True,
              '0': False, 'false': False, 'no': False, 'off': False}


def _parse_bool(text: str) -> bool:
    value = BOOL_WORDS.get(text.strip().lower())
    if value is None:
        import argparse  # an argparse type: its own error, which argparse prints as it is

        raise argparse.ArgumentTypeError(
            f'expected true or false (or yes/no, on/off, 1/0), got {text!r}')
    return value
