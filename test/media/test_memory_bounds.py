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
Memory bombs cost next to nothing: measured peak memory of each, in a child process.

Each input is a few hundred bytes to a few hundred kilobytes that OpenCV, unchecked, turns
into gigabytes (measured through bare ``cv2.imdecode`` on these very files: 4 GiB for the PNG
chunk length of 0xFFFFFFF0, 2 GiB for one flipped byte of a 31 KB PNG, 2.2 GiB for the JPEG
claiming 20000x20000, 190 MiB for the 100-megapixel PNG). The child process measures how far
its peak resident memory rises while the package handles the input (OpenCV's allocations
included, which tracemalloc would not see), and may map at most HEADROOM more than it had: a
bomb getting through shows up as a peak over the bound, or, where it asks for more than the
headroom, as a failed allocation instead of the package's refusal (and the test machine is
spared the gigabytes).
"""

from limits import MIB, probe_memory
import pytest

# What handling a refused input may add to the peak resident memory. A 64-megapixel frame,
# the largest the default limit lets through, takes 192 MiB as RGB: far above this.
BOUND = 32 * MIB
HEADROOM = 256 * MIB

IMAGES = """
import numpy as np
import hostile_files as h
from sparse_perception.media.images import compressed_to_numpy, ImageConversionError
import cv2  # loaded before the measured part: its code is not what is measured

class Message:
    format = ''
    def __init__(self, data):
        self.data = np.frombuffer(data, np.uint8)

def decode(data):
    try:
        return compressed_to_numpy(Message(data), 'rgb8').shape
    except ImageConversionError as exc:
        return 'refused: ' + str(exc)

noise = h.png(np.random.default_rng(0).integers(0, 256, (100, 100, 3), np.uint8))
idat_length = noise.index(b'IDAT') - 4
flipped = bytearray(noise)
flipped[idat_length] ^= 0x80  # one flipped bit: the chunk claims 2 GiB more
CASES = {
    'png chunk length 0xFFFFFFF0': h.png_with_idat_length(h.png(h.picture(12, 16)), 0xFFFFFFF0),
    'png of 31 KB with one flipped byte': bytes(flipped),
    'png claiming 32768x32768': h.png_claiming(32768, 32768),
    'png of 10000x10000 that decodes': h.png_bomb(10000, 10000),
    'jpeg claiming 20000x20000': h.jpeg_claiming(20000, 20000),
}
"""


@pytest.mark.parametrize('case, refusal', [
    ('png chunk length 0xFFFFFFF0', "chunk 'IDAT' at byte 33 claims 4294967280 bytes"),
    ('png of 31 KB with one flipped byte', r"chunk 'IDAT' at byte 33 claims 214\d+ bytes"),
    ('png claiming 32768x32768', 'is 32768x32768 .* refused before decoding'),
    ('png of 10000x10000 that decodes', 'is 10000x10000 .* refused before decoding'),
    ('jpeg claiming 20000x20000', 'is 20000x20000 .* refused before decoding'),
])
def test_hostile_images_are_refused_within_the_memory_bound(case, refusal):
    import re
    outcome = probe_memory(IMAGES, f'decode(CASES[{case!r}])', headroom=HEADROOM)
    assert outcome['added_bytes'] < BOUND, f'{outcome["added_bytes"] / MIB:.0f} MiB: {outcome}'
    assert 'error' not in outcome, outcome
    assert re.search(refusal, outcome['result']), outcome


def test_a_bomb_within_the_size_limit_is_bounded_by_the_limit():
    # The same kind of file, 16 megapixels (under the 64-megapixel default): decoded, and its
    # cost is the decoded frame's (grey, then RGB), not more.
    outcome = probe_memory(IMAGES + 'small = h.png_bomb(4000, 4000)\n', 'decode(small)',
                           headroom=HEADROOM)
    assert outcome.get('result') == '(4000, 4000, 3)', outcome
    assert outcome['added_bytes'] < 4 * 4000 * 4000 + BOUND, outcome


CONTACT_SHEET = """
import numpy as np
import cv2
from sparse_perception.replay import pictures
from sparse_perception.replay.sources import Frame

pictures._annotate = lambda frame, result: frame.image  # the pipeline's drawing is not tested

class Result:
    class stats:
        active_fraction = 0.5

def sheet(path, shape):
    sheet = pictures.ContactSheet(path, tiles=12, columns=4, width=320)
    for index in range(12):
        sheet.write(Frame(index, np.full(shape, 128, np.uint8), index, 'camera', index), Result)
    sheet.close()
    return cv2.imread(path).shape
"""


@pytest.mark.parametrize('shape', [(3000, 2, 3), (2, 3000, 3)])
def test_contact_sheet_of_extreme_frames_stays_small(tmp_path, shape):
    # Unchecked, a 3000x2 frame scaled to the 320-pixel column width makes 480000-pixel-tall
    # thumbnails: a sheet of gigabytes.
    path = str(tmp_path / 'sheet.png')
    outcome = probe_memory(CONTACT_SHEET, f'sheet({path!r}, {shape!r})', headroom=HEADROOM)
    assert outcome['added_bytes'] < BOUND, f'{outcome["added_bytes"] / MIB:.0f} MiB: {outcome}'
    assert 'error' not in outcome, outcome
    height, width, _ = eval(outcome['result'])
    assert width == 4 * 320 and height <= 3 * (2 * 320 + 22)


CHECKPOINT = """
import torch
from sparse_perception.models.architectures import DeepLabConfig, DeepLabV3MobileNetV2
from sparse_perception.models.checkpoints import (
    CheckpointError, load_checkpoint, save_checkpoint)

torch.manual_seed(0)
net = DeepLabV3MobileNetV2(DeepLabConfig(num_classes=3, depth_multiplier=0.25, aspp_channels=16))
path = save_checkpoint(net, PATH)
payload = torch.load(path, weights_only=True)
payload['config']['aspp_channels'] = 10 ** 6  # six bytes of the file
torch.save(payload, path)

def load():
    try:
        load_checkpoint(path)
    except CheckpointError as exc:
        return 'refused: ' + str(exc)
"""


@pytest.mark.slow
def test_checkpoint_config_claiming_a_huge_network_allocates_nothing(tmp_path):
    # Unchecked, the edited config builds 10**6-channel layers: 620 MB before the weights
    # are found not to fit.
    setup = CHECKPOINT.replace('PATH', repr(str(tmp_path / 'tiny.pt')))
    outcome = probe_memory(setup, 'load()', headroom=HEADROOM)
    assert outcome['added_bytes'] < BOUND, f'{outcome["added_bytes"] / MIB:.0f} MiB: {outcome}'
    assert 'expects (1000000, 80, 1, 1)' in outcome['result'], outcome
