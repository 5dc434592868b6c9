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

"""When ``gate train`` writes a gate, and where: its paths, its folders, its targets."""

import shutil

import cv2
import numpy as np
import pytest
from sparse_perception.cli import main
from sparse_perception.gates.learned import load
from sparse_perception.gates.training import train, TrainingError, TrainingOptions
from support import grey_video


def test_people_only_in_frames_that_make_no_pair_give_no_gate(tiny_frames, tmp_path):
    single = tmp_path / 'single'  # one frame, with the runner: it starts no pair
    single.mkdir()
    shutil.copy(sorted(tiny_frames.glob('*.png'))[0], single / '0.png')
    grey = tmp_path / 'grey'
    grey.mkdir()
    for i in range(3):
        cv2.imwrite(str(grey / f'{i}.png'), np.full((128, 224, 3), 128, np.uint8))
    with pytest.raises(TrainingError, match='found people only in frames that make no '
                       'training pair .*nothing was written'):
        train([single, grey], tmp_path / 'g.pt', TrainingOptions(epochs=1))
    assert not (tmp_path / 'g.pt').exists()


def test_home_is_expanded_in_the_sources_and_out(tiny_frames, tmp_path, monkeypatch):
    home = tmp_path / 'home'
    shutil.copytree(tiny_frames, home / 'frames')
    monkeypatch.setenv('HOME', str(home))
    monkeypatch.chdir(tmp_path)
    assert main(['gate', 'train', '~/frames', '--out=~/new/g.pt', '--max-frames', '3',
                 '--epochs', '1', '--quiet']) == 0
    load(home / 'new' / 'g.pt', 16)  # its folder made when it was written
    assert not (tmp_path / '~').exists()


def test_a_training_that_fails_leaves_no_folder_for_out(tmp_path, monkeypatch):
    from sparse_perception.models import registry

    def broken(*args, **kwargs):
        raise OSError('the model file is damaged')
    monkeypatch.setattr(registry, 'load_model', broken)
    video = grey_video(tmp_path / 'in.avi')
    with pytest.raises(TrainingError, match='cannot load the segmentation model'):
        train([video], tmp_path / 'made' / 'sub' / 'g.pt', TrainingOptions())
    assert not (tmp_path / 'made').exists()
