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

"""Helpers shared by the test tiers (importable as ``support``: pytest.ini adds test/)."""

import importlib
import os
from pathlib import Path
from typing import Any

import pytest

from sparse_perception.shared_data import shared_path, SharedDataMissing

REPO = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get('CI', '').strip().lower() in ('1', 'true', 'yes')


def require_shared(relative: str) -> Path:
    """Path of shared data for a test: skip without it, but fail under CI (it must be there)."""
    try:
        return shared_path(relative)
    except SharedDataMissing as exc:
        if IN_CI:
            pytest.fail(str(exc))
        pytest.skip(str(exc))


def require_module(name: str, reason: str | None = None) -> Any:
    """
    Import a module a test needs: skip without it, but fail under CI.

    The test command installs every package the tests import (the test extras), so under CI
    a missing one is a broken set-up, not a reason to skip. Works at module level too.
    """
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        message = f'{name} cannot be imported' + (f' ({reason})' if reason else '') + f': {exc}'
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message, allow_module_level=True)


def fetch_mediapipe_models(cache: Path) -> Path:
    """
    Fill ``cache`` as `sparse-perception models fetch` does (a real pip download from PyPI).

    Returns the cache folder (the files are in its ``mediapipe/``). Skips when PyPI cannot be
    reached, but fails under CI, where the download must work.
    """
    from sparse_perception.models.fetch import fetch_mediapipe, FetchError

    try:
        fetch_mediapipe(Path(cache) / 'mediapipe', log=lambda _: None)
    except FetchError as exc:
        message = f'the MediaPipe models could not be fetched from PyPI: {exc}'
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return Path(cache)


class HypothesisChooser:
    """Let hypothesis make a test generator's choices (so that failures shrink)."""

    def __init__(self, data):
        self.data = data

    def pick(self, options):
        from hypothesis import strategies as st

        return self.data.draw(st.sampled_from(list(options)))

    def integer(self, low, high):
        from hypothesis import strategies as st

        return self.data.draw(st.integers(low, high))


def vtest_frames(count: int, size: tuple[int, int] | None = None, rgb: bool = False) -> list:
    """
    Return the first ``count`` frames of the shared vtest.avi (uint8, BGR unless ``rgb``).

    ``size`` (height, width) shrinks each frame (area interpolation). Skips without the shared
    folder (fails under CI), and fails when the clip ends early or does not decode.
    """
    import cv2

    capture = cv2.VideoCapture(str(require_shared('data/vtest/vtest.avi')))
    frames = []
    try:
        while len(frames) < count:
            ok, frame = capture.read()
            assert ok, 'vtest.avi ended early or could not be decoded (needs OpenCV >= 4.13)'
            if size is not None:
                frame = cv2.resize(frame, size[::-1], interpolation=cv2.INTER_AREA)
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) if rgb else frame)
    finally:
        capture.release()
    return frames


def grey_video(path: Path, frames: int = 3, size: tuple[int, int] = (48, 64)) -> Path:
    """Write ``frames`` flat grey frames of ``size`` (height, width) as an MJPG video."""
    import cv2
    import numpy as np

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'MJPG'), 10, size[::-1])
    for _ in range(frames):
        writer.write(np.full((*size, 3), 90, np.uint8))
    writer.release()
    return path


def with_pose_change(changes: dict) -> dict:
    """
    Return settings ``changes`` with their change threshold also given to the pose head.

    The pose head reads ``pose.change_threshold`` and ``pose.change_min_pixels`` rather than
    ``change.*``; they take the ``change.*`` values unless set already. Tests that run a pose
    head at thresholds 0 (exact) or at a chosen threshold use it.
    """
    out = dict(changes)
    for name in ('threshold', 'min_pixels'):
        if f'change.{name}' in out:
            out.setdefault(f'pose.change_{name}', out[f'change.{name}'])
    return out
