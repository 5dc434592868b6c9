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

"""Fixtures of the gate tests."""

import cv2
import pytest
from support import require_shared


@pytest.fixture(scope='module')
def tiny_frames(tmp_path_factory):
    """Five frames of DAVIS parkour at 128x224, as an image folder (the model sees the runner)."""
    source = require_shared('data/davis/DAVIS/JPEGImages/480p/parkour')
    require_shared('models/coral')
    folder = tmp_path_factory.mktemp('frames')
    for i, path in enumerate(sorted(source.glob('*.jpg'))[10:15]):
        cv2.imwrite(str(folder / f'{i}.png'), cv2.resize(cv2.imread(str(path)), (224, 128)))
    return folder
