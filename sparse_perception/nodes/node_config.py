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
What each ROS node declares and needs, decided without ROS.

The three nodes (``perception_node``, ``segmentation_node``, ``pose_node``) differ only in the
heads they run. This module says which settings each declares as parameters, renders
``config/perception.yaml`` from :mod:`sparse_perception.settings` (so the YAML, the parameter
descriptors and the command-line flags cannot drift apart), checks a node's model settings
before it is configured, and builds the pipeline through one factory function.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
import textwrap
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import numpy as np

from sparse_perception import settings as st
from sparse_perception.settings import HEADS


@dataclass(frozen=True)
class NodeKind:
    """One of the package's nodes."""

    name: str  # default node name, also its console script (`ros2 run sparse_perception ...`)
    heads: tuple[str, ...]  # heads it can run
    heads_parameter: bool  # whether node.heads chooses among them (perception_node only)


PERCEPTION = NodeKind('perception_node', HEADS, True)
SEGMENTATION = NodeKind('segmentation_node', ('segmentation',), False)
POSE = NodeKind('pose_node', ('pose',), False)
NODE_KINDS = {kind.name: kind for kind in (PERCEPTION, SEGMENTATION, POSE)}

# Read-only parameters a node publishes about the model it loaded (not settings: the model
# decides them), by head. skeleton is flattened joint index pairs: [a0, b0, a1, b1, ...].
MODEL_INFO_PARAMETERS = {
    'segmentation': (('class_names', 'Class names of the segmentation model; the mask holds '
                      'indices into this list (255 = unlabelled)'),),
    'pose': (('joint_names', 'Joint names of the pose model; the keypoint cloud field joint '
              'indexes this list'),
             ('skeleton', 'Bones of the pose model as flattened joint index pairs '
              '[a0, b0, a1, b1, ...]')),
}

# Settings that only matter for one head (left out of nodes that lack it): a parameter
# that a node declares but never reads would take a set and do nothing. (The gates' margin,
# refresh and crowd bound serve the pose head's track gate too.)
_HEAD_SETTINGS = {
    'segmentation': ('model.segmentation', 'sparsity.gate', 'sparsity.glance_scale',
                     'sparsity.glance_period', 'sparsity.gate_model', 'sparsity.gate_threshold',
                     'sparsity.glance_exit'),
    'pose': ('model.pose', 'output.min_score', 'output.marker_scale',
             *(s.name for s in st.specs(st.PoseSettings, 'pose.'))),
}

# Suffixes that make a model setting a file path rather than a registered model name.
MODEL_FILE_SUFFIXES = ('.tflite', '.pt', '.pth', '.onnx', '.ckpt', '.safetensors', '.json')


def parameter_specs(kind: NodeKind) -> tuple[st.SettingSpec, ...]:
    """Return the settings ``kind`` declares as ROS parameters, in declaration order."""
    skipped = set() if kind.heads_parameter else {'node.heads'}
    for head in HEADS:
        if head not in kind.heads:
            skipped.update(_HEAD_SETTINGS[head])
    return tuple(s for s in st.specs(st.NodeSettings) if s.name not in skipped)


def settings_from_parameters(kind: NodeKind, values: Mapping[str, Any]) -> st.NodeSettings:
    """
    Validate parameter values (``{'section.field': value}``) into :class:`NodeSettings`.

    Settings the node does not declare keep their defaults. Raises :class:`SettingError`
    naming the first bad value.
    """
    declared = {s.name for s in parameter_specs(kind)}
    unknown = sorted(set(values) - declared)
    if unknown:
        raise st.SettingError(f'{kind.name} has no parameters {unknown}')
    return st.replace(st.NodeSettings(), values)


def heads_of(kind: NodeKind, settings: st.NodeSettings) -> tuple[str, ...]:
    """Return the heads a node runs, in canonical order."""
    if not kind.heads_parameter:
        return kind.heads
    return tuple(head for head in HEADS if head in settings.node.heads)


def pipeline_settings(settings: st.NodeSettings) -> st.PerceptionSettings:
    """Return the part of a node's settings the pipeline takes."""
    return st.build(st.PerceptionSettings, st.flatten(settings))


def _looks_like_path(value: str) -> bool:
    return ('/' in value or '\\' in value or value.startswith('~')
            or Path(value).suffix.lower() in MODEL_FILE_SUFFIXES)


def model_problem(head: str, value: str) -> str | None:
    """
    Return why ``model.<head> = value`` cannot load, if that is clear without loading it.

    Empty is refused (a head that runs needs a model); a value that looks like a path (a
    separator, ``~``, or a model file suffix) must name an existing file. Registered names are
    left to the model registry.
    """
    name = f'model.{head}'
    if not value:
        return (f'{name} is empty but the {head} head is requested: set {name} to a registered '
                'model name or a model file path')
    if _looks_like_path(value):
        path = Path(value).expanduser()
        if not path.is_file():
            return (f'{name} = {value!r}: model file {str(path)!r} does not exist or is not a '
                    'file; fix the path or use a registered model name')
    return None


# check_model(head, value, settings) -> why the model cannot load, or None
ModelCheck = Callable[[str, str, st.PerceptionSettings], Optional[str]]


def registered_model_problem(head: str, value: str,
                             settings: st.PerceptionSettings) -> str | None:
    """
    Return why ``model.<head> = value`` cannot load, from what is knowable without loading.

    Beyond :func:`model_problem`: a name must be registered and its file found (in
    ``model.models_dir``, the model cache or the shared folder). A file that exists but does
    not load is only found out when it is loaded.
    """
    problem = model_problem(head, value)
    if problem or _looks_like_path(value):
        return problem
    from sparse_perception.models.registry import ModelNotFound, REGISTRY, resolve

    entry = REGISTRY.get(value)
    if entry is None:
        return (f'model.{head} = {value!r} is neither a registered model '
                f'({", ".join(sorted(REGISTRY))}) nor a model file path; use one of those '
                'names or the path of a .tflite or checkpoint file')
    if entry.kind != head:
        others = sorted(name for name, e in REGISTRY.items() if e.kind == head)
        return (f'model.{head} = {value!r} is a {entry.kind} model, not a {head} model; the '
                f'registered {head} models: {", ".join(others)}')
    try:
        resolve(entry, settings.model.models_dir or None)
    except ModelNotFound as exc:
        return f'model.{head} = {value!r}: {exc}'
    return None


def device_problem(device: str) -> str | None:
    """Return why ``model.device = device`` cannot run here (None: it can)."""
    if device != 'cuda':
        return None
    import torch  # only when CUDA is asked for: torch loads with the model anyway

    if torch.cuda.is_available():
        return None
    why = 'this torch is built without CUDA' if torch.version.cuda is None else 'no GPU is visible'
    return (f"model.device = 'cuda' but CUDA is not available here ({why}, torch "
            f"{torch.__version__}); use 'auto' (CUDA when there is one, else the CPU) or 'cpu'")


_TYPE_WORDS = {bool: 'a boolean', int: 'an integer', float: 'a double', str: 'a string',
               tuple: 'a string array'}


def wrong_type_problem(spec: st.SettingSpec, value: Any) -> str:
    """
    Return why a parameter value of another type than the setting's is refused.

    Names the parameter and the type it takes, as the settings say it (``sparsity.scale must
    be a number, got 'hello'``), instead of the middleware's bare type codes.
    """
    try:
        st.validate(spec, value)
    except st.SettingError as exc:
        problem = str(exc)
    else:  # taken by the settings, but a parameter of another type (an empty integer array)
        problem = f'{spec.name} cannot take {value!r}'
    return f'{problem}: the parameter takes {_TYPE_WORDS[spec.kind]}'


def change_problem(old: st.PerceptionSettings, new: st.PerceptionSettings,
                   heads: Sequence[str], check_model: ModelCheck) -> str | None:
    """
    Return why a running node must refuse the change from ``old`` to ``new`` (None: accept).

    Decided when the parameter is set, so that a bad value is refused with its reason instead
    of being accepted and undone at the next frame.
    """
    for head in changed_models(old, new, heads):
        problem = check_model(head, getattr(new.model, head), new)
        if problem:
            return problem
    problem = st.execution_problem(new.model.backend, new.model.execution)
    if problem:
        return problem
    if new.model.device != old.model.device:
        problem = device_problem(new.model.device)
        if problem:
            return problem
    before, after = st.flatten(old), st.flatten(new)
    if any(before[name] != after[name] for name in _GATE_INPUTS):  # (a gate file is read)
        return gate_problem(new, heads)
    return None


# The gate settings: set again, even to the same value, they are checked again (a gate file
# trained again in place).
GATE_PARAMETERS = frozenset({'sparsity.gate', 'sparsity.gate_model', 'pose.gate'})
# What decides whether the gates can run (gate_problem).
_GATE_INPUTS = ('sparsity.gate', 'sparsity.gate_model', 'change.tile_size', 'pose.gate',
                'model.segmentation', 'model.pose')


def gate_problem(settings: st.PerceptionSettings, heads: Sequence[str]) -> str | None:
    """
    Return why a gate cannot run with the node's models (None: as far as can be told, it can).

    The glance runs the network at a smaller size, which only a fully convolutional model can;
    the learned gate needs its file, made for this segmentation model and tile size; the pose
    track gate follows a single-person network. Registered models say so without loading (a
    model file is found out when it loads).
    """
    from sparse_perception.models.registry import REGISTRY

    sparsity = settings.sparsity
    if 'segmentation' in heads and sparsity.gate == 'glance':
        name = settings.model.segmentation
        entry = REGISTRY.get(name)
        if entry is not None and entry.resize != 'none':
            fcn = sorted(n for n, e in REGISTRY.items() if e.kind == 'segmentation'
                         and e.resize == 'none')
            return (f"sparsity.gate 'glance' runs the segmentation network at a smaller size; "
                    f'{name!r} has a fixed input size: use a fully convolutional model '
                    f"({', '.join(fcn)}) or sparsity.gate 'previous' or 'none'")
    if 'segmentation' in heads and sparsity.gate == 'learned':
        from sparse_perception.gates.learned import GateFileError, load

        try:  # a file of about 30 KB, read again when the pipeline takes it
            load(sparsity.gate_model, settings.change.tile_size, settings.model.segmentation)
        except GateFileError as exc:
            return f'sparsity.gate_model: {exc}'
    if 'pose' in heads and settings.pose.gate != 'none':
        entry = REGISTRY.get(settings.model.pose)
        if entry is not None and entry.decoder != 'single_pose':
            single = sorted(n for n, e in REGISTRY.items() if e.decoder == 'single_pose')
            return (f'pose.gate {settings.pose.gate!r} follows the keypoints of a single-person '
                    f'pose network ({", ".join(single)}); {settings.model.pose!r} tracks people '
                    "in crops of their own: use pose.gate 'none'")
    return None


# Settings whose change can fail when the pipeline takes it (a model that does not load, a
# gate the model refuses or a gate file that went bad): what goes back when it fails.
_MAY_FAIL = ('sparsity.gate', 'sparsity.gate_model', 'pose.gate')


def changed_reloads(old: st.PerceptionSettings, new: st.PerceptionSettings) -> tuple[str, ...]:
    """
    Return the names of the settings changed from ``old`` to ``new`` that may fail to apply.

    When a model fails to load, what made it load goes back, with the gates (a model may
    refuse one, and a gate file may have gone bad since it was set); every other change stands.
    """
    reloads = {s.name for s in st.specs(st.PerceptionSettings) if s.info.reload}
    reloads.update(_MAY_FAIL)
    before, after = st.flatten(old), st.flatten(new)
    return tuple(n for n in before if n in reloads and before[n] != after[n])


def startup_problems(kind: NodeKind, settings: st.NodeSettings,
                     check_model: ModelCheck | None = None) -> list[str]:
    """
    Return every reason the node cannot be configured with ``settings`` (empty: it can).

    ``check_model`` (the node's, e.g. :func:`registered_model_problem`) says why a model
    cannot load as far as that is known without loading it; without it only
    :func:`model_problem`'s checks apply.
    """
    heads = heads_of(kind, settings)
    if not heads:
        return [f'node.heads is empty: list at least one of {", ".join(kind.heads)}']
    problems = [check_model(head, getattr(settings.model, head), settings) if check_model
                else model_problem(head, getattr(settings.model, head)) for head in heads]
    problems.append(st.execution_problem(settings.model.backend, settings.model.execution))
    problems.append(gate_problem(settings, heads))
    return [p for p in problems if p]


def changed_models(old: st.PerceptionSettings, new: st.PerceptionSettings,
                   heads: Iterable[str]) -> tuple[str, ...]:
    """Return the heads whose model changes from ``old`` to ``new``."""
    return tuple(h for h in heads if getattr(old.model, h) != getattr(new.model, h))


PipelineFactory = Callable[[st.PerceptionSettings, Sequence[str]], Any]


def make_pipeline(settings: st.PerceptionSettings, heads: Sequence[str],
                  incremental: bool = True) -> Any:
    """
    Build the perception pipeline for ``heads``: the one place nodes construct it.

    Raises whatever the pipeline raises for a model that cannot load (ModelLoadError, a
    ValueError naming the model and the reason).
    """
    from sparse_perception.pipeline import Pipeline  # torch and the models load here, lazily

    return Pipeline(settings, heads=tuple(heads), incremental=incremental)


def warmup_images(count: int, width: int, height: int) -> list[np.ndarray]:
    """
    Return ``count`` (H, W, 3) uint8 RGB frames that exercise the dense and the sparse path.

    The first frame is dense; in each later one a bright square moves, so that some tiles
    change and the incremental kernels run on a non-empty set of active tiles.
    """
    frames = []
    side = max(1, min(width, height) // 4)
    for index in range(count):
        frame = np.full((height, width, 3), 64, np.uint8)
        x = (index * side // 2) % max(1, width - side + 1)
        frame[:side, x:x + side] = 255
        frames.append(frame)
    return frames


# ---------------------------------------------------------------------------------------------
# config/perception.yaml
# ---------------------------------------------------------------------------------------------

CONFIG_HEADER = """\
# Parameters of the sparse_perception nodes, with their defaults.
#
# Generated from sparse_perception/settings.py by tools/make_config.py; do not edit by hand
# (test/nodes/test_node_config.py fails when this file and the settings disagree). Copy it to
# change values and pass the copy as params_file to the launch file.
#
# Keys are '/**/<node name>' so that the sections apply in any namespace. Parameters marked
# read-only are fixed once the node is constructed; the others can be changed while it runs
# (`ros2 param set`) and take effect on the next frame. A list whose default is empty is shown
# commented out: ROS parameter files cannot hold an empty list.
"""


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(value)
        # YAML 1.1 (PyYAML) reads '1e-06' as a string; '1.0e-06' is a float everywhere.
        if 'e' in text and '.' not in text.split('e')[0]:
            mantissa, exponent = text.split('e')
            text = f'{mantissa}.0e{exponent}'
        return text
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, (tuple, list)):
        return '[' + ', '.join(_yaml_scalar(v) for v in value) + ']'
    raise TypeError(f'cannot write {value!r} to the config YAML')


# What a parameters file, `ros2 param describe` and the command line's help say of a setting
# whose change loads the models again (and warms them up): a pause of seconds on a CPU.
RELOADS = 'a change reloads the model'


def _describe(spec: st.SettingSpec) -> str:
    info = spec.info
    parts = [info.description]
    if info.low is not None or info.high is not None:
        parts.append(f'range {_yaml_scalar(spec.kind(info.low))} to '
                     f'{_yaml_scalar(spec.kind(info.high))}')
    if info.choices:
        parts.append('one of ' + ', '.join(info.choices))
    if info.read_only:
        parts.append('read-only')
    elif info.reload:
        parts.append(RELOADS)
    return '; '.join(parts)


def render_config(kinds: Iterable[NodeKind] = NODE_KINDS.values()) -> str:
    """Return the text of ``config/perception.yaml``: every node's parameters and defaults."""
    lines = [CONFIG_HEADER.rstrip('\n')]
    for kind in kinds:
        lines += ['', f'/**/{kind.name}:', '  ros__parameters:']
        section = None
        for spec in parameter_specs(kind):
            head, field_name = spec.name.split('.')
            if head != section:
                lines.append(f'    {head}:')
                section = head
            lines += textwrap.wrap(_describe(spec), 99, initial_indent='      # ',
                                   subsequent_indent='      #   ')
            entry = f'{field_name}: {_yaml_scalar(spec.default)}'
            empty_list = spec.kind is tuple and not spec.default
            lines.append('      ' + ('# ' if empty_list else '') + entry)
    return '\n'.join(lines) + '\n'
