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

"""The learned gate's training on a bag beside other sources."""

import cv2
import numpy as np
import pytest
from sparse_perception.gates.training import train, TrainingError, TrainingOptions

pytestmark = pytest.mark.bag


def test_topic_picks_a_bags_camera_beside_folders(tiny_frames, tmp_path):
    from replay_helpers import IMAGE, TYPESTORE, header, write_bag
    from sparse_perception.media.images import numpy_to_image

    def message(i, pixels):
        return numpy_to_image(np.ascontiguousarray(pixels), 'rgb8', header(TYPESTORE, i),
                              msg_type=TYPESTORE.types[IMAGE])

    runner = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)
              for p in sorted(tiny_frames.glob('*.png'))[:3]]
    grey = np.full_like(runner[0], 128)
    write_bag(tmp_path / 'bag', {
        '/front/image': (IMAGE, [message(i, p) for i, p in enumerate(runner)]),
        '/back/image': (IMAGE, [message(i, grey) for i in range(3)])})
    with pytest.raises(TrainingError, match='--topic'):  # two cameras: which one?
        train([tmp_path / 'bag', tiny_frames], tmp_path / 'g.pt', TrainingOptions(epochs=1))
    report = train([tmp_path / 'bag', tiny_frames], tmp_path / 'g.pt',
                   TrainingOptions(epochs=1, topic='/front/image'))
    assert report.frames == 8  # the bag's 3 and the folder's 5
