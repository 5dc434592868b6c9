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

"""The frame loop shared by the replay, the evaluation and the CPU benchmark."""

import numpy as np
import pytest

from sparse_perception.evaluation import loop
from sparse_perception.replay.sources import Frame, SkippedFrame


class Recording:
    """A pipeline that records the order of calls into a shared log."""

    def __init__(self, name, log):
        self.name, self.log = name, log

    def reset(self):
        self.log.append((self.name, 'reset'))

    def process(self, image):
        self.log.append((self.name, int(image[0, 0, 0])))
        return (self.name, int(image[0, 0, 0]))


def frame(index, stamp):
    return Frame(index, np.full((2, 2, 3), index, np.uint8), stamp, 'camera', stamp)


def test_each_frame_goes_through_every_pipeline_in_turn():
    log = []
    pipelines = [Recording('a', log), Recording('b', log)]
    steps = list(loop.run([frame(0, 10), frame(1, 20)], pipelines))
    assert log == [('a', 0), ('b', 0), ('a', 1), ('b', 1)]
    assert [s.results for s in steps] == [[('a', 0), ('b', 0)], [('a', 1), ('b', 1)]]
    assert all(len(s.ms) == 2 and min(s.ms) >= 0.0 for s in steps)
    assert [s.reset for s in steps] == [False, False]


def test_rotation_changes_which_pipeline_goes_first_but_not_the_result_order():
    log = []
    pipelines = [Recording(name, log) for name in 'abc']
    steps = list(loop.run([frame(i, i) for i in range(4)], pipelines, rotate=True))
    firsts = [log[3 * i][0] for i in range(4)]
    assert firsts == ['a', 'b', 'c', 'a']
    assert all([r[0] for r in s.results] == ['a', 'b', 'c'] for s in steps)


def test_a_stamp_going_back_resets_every_pipeline_before_the_frame():
    log = []
    pipelines = [Recording('a', log), Recording('b', log)]
    steps = list(loop.run([frame(0, 10), frame(1, 20), frame(2, 5)], pipelines))
    assert [s.reset for s in steps] == [False, False, True]
    assert log[4:] == [('a', 'reset'), ('b', 'reset'), ('a', 2), ('b', 2)]


def test_skipped_frames_pass_through_without_touching_the_pipelines():
    log = []
    skipped = SkippedFrame(1, None, 'corrupt')
    items = list(loop.run([frame(0, 10), skipped, frame(2, 30)], [Recording('a', log)]))
    assert items[1] is skipped
    assert log == [('a', 0), ('a', 2)]


def test_warm_leaves_the_pipelines_reset():
    log = []
    loop.warm([Recording('a', log)], frame(7, 0))
    assert log == [('a', 'reset'), ('a', 7), ('a', 'reset')]


def test_no_pipeline_is_refused():
    with pytest.raises(ValueError, match='at least one pipeline'):
        list(loop.run([frame(0, 0)], []))
