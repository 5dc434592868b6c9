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
Where the evaluation data and third-party models live (never inside this repository).

DAVIS, JHMDB, the COCO stills and the Coral models may not be redistributed with the package,
so tests, benchmarks and ``sparse-perception eval`` read them from a folder beside the
checkout: ``../shared`` from the repository root, or wherever ``SPARSE_PERCEPTION_SHARED``
points.

The one clip that ships inside the package (an excerpt of OpenCV's vtest, see
``data/vtest40/NOTICE.md``) is found with :func:`bundled_clip`, installed or not.
"""

from __future__ import annotations

import os
from pathlib import Path

SHARED_ENV = 'SPARSE_PERCEPTION_SHARED'
REPO_ROOT = Path(__file__).resolve().parent.parent  # meaningful in a source checkout only
BUNDLED_DIR = Path(__file__).resolve().parent / 'data'


class SharedDataMissing(FileNotFoundError):
    """A file from the shared data folder is not there."""


def shared_root() -> Path:
    """Return the shared data folder (it may not exist on a user's machine)."""
    configured = os.environ.get(SHARED_ENV)
    if configured:
        return Path(configured).expanduser().resolve()
    return (REPO_ROOT.parent / 'shared').resolve()


def shared_path(relative: str) -> Path:
    """Path of ``relative`` inside the shared folder; raises if it is not there."""
    path = shared_root() / relative
    if not path.exists():
        raise SharedDataMissing(
            f'{relative} not found under {shared_root()}; set {SHARED_ENV} to the folder '
            'that holds data/ and models/ (see README, "Evaluation")')
    return path


BUNDLED_CLIP = 'vtest40'


def bundled_clip(name: str = BUNDLED_CLIP) -> Path:
    """
    Return the folder of a rosbag2 clip shipped inside the package (default: vtest40).

    vtest40 is the first 40 frames of OpenCV's vtest.avi (768x576, 10 Hz) as
    sensor_msgs/msg/CompressedImage (JPEG) on ``/camera/image_raw/compressed`` in an mcap bag;
    open the folder with ``rosbags.highlevel.AnyReader``.
    """
    path = BUNDLED_DIR / name
    if not (path / 'metadata.yaml').is_file():
        available = sorted(p.parent.name for p in BUNDLED_DIR.glob('*/metadata.yaml'))
        raise FileNotFoundError(
            f'no bundled clip {name!r} in {BUNDLED_DIR} (available: {available or "none"}); '
            'the installed package is incomplete: reinstall it')
    return path
