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

"""Stream decisions (sparse_perception.nodes.stream): newest frame, resets, throttling, silence."""

import threading
from types import SimpleNamespace

import pytest

from sparse_perception.nodes.stream import (
    choose_reliability, diagnose_silence, incompatible_qos_message, LatestSlot, LogThrottle,
    PublisherInfo, reason_key, SilenceWatch, stamp_to_ns, StreamGuard, ThrottledLogger)


def test_stamp_to_ns():
    assert stamp_to_ns(SimpleNamespace(sec=3, nanosec=42)) == 3_000_000_042


def test_slot_keeps_only_the_newest_and_counts_the_replaced():
    slot = LatestSlot()
    assert slot.put('a') is False
    assert slot.put('b') is True
    assert slot.put('c') is True
    assert slot.take(0) == 'c'
    assert slot.take(0) is None
    assert slot.replaced == 2
    with pytest.raises(ValueError):
        slot.put(None)


def test_slot_wakes_a_waiting_taker_and_close_releases_it():
    slot = LatestSlot()
    taken = []
    taker = threading.Thread(target=lambda: taken.append(slot.take(10)))
    taker.start()
    slot.put('frame')
    taker.join(5)
    assert taken == ['frame']
    waiting = threading.Thread(target=lambda: taken.append(slot.take(10)))
    waiting.start()
    assert not slot.close()  # nothing was waiting to be taken
    waiting.join(5)
    assert not waiting.is_alive() and taken == ['frame', None]
    slot.put('late')
    assert slot.take(0) is None and slot.closed


def test_closing_the_slot_says_whether_it_discarded_a_frame():
    slot = LatestSlot()
    slot.put('frame')
    assert slot.close()
    assert slot.take(0) is None


def test_guard_resets_on_size_change():
    guard = StreamGuard()
    assert guard.observe(1, (480, 640)) is None
    assert guard.observe(2, (480, 640)) is None
    reset = guard.observe(3, (240, 320))
    assert reset.kinds == ('size',)
    assert '640x480 to 320x240' in reset.reason and 'reset' in reset.reason
    assert guard.observe(4, (240, 320)) is None


def test_guard_resets_when_stamps_jump_back_but_not_for_unstamped_frames():
    guard = StreamGuard()
    guard.observe(10_000_000_000, (4, 4))
    guard.observe(11_000_000_000, (4, 4))
    reset = guard.observe(9_500_000_000, (4, 4))
    assert reset.kinds == ('clock',) and 'jumped back 1.500 s' in reset.reason
    assert guard.observe(9_600_000_000, (4, 4)) is None  # forward again from the new origin
    assert guard.observe(0, (4, 4)) is None  # unstamped
    assert guard.observe(9_700_000_000, (4, 4)) is None
    both = guard.observe(1, (8, 8))
    assert both.kinds == ('size', 'clock')
    guard.forget()
    assert guard.observe(0, (2, 2)) is None


def test_reason_key_ignores_numbers():
    a = reason_key('input', 'Image data is truncated: 100 bytes, but step * height = 3 * 40')
    b = reason_key('input', 'Image data is truncated: 7 bytes, but step * height = 1.5 * 2')
    assert a == b
    assert a != reason_key('pipeline', 'Image data is truncated: 100 bytes')
    assert a != reason_key('input', 'unknown image encoding')


def test_reason_key_ignores_the_bytes_and_quoted_values_of_bad_messages():
    # A camera sending garbage gives every frame other bytes: one problem, one key.
    a = reason_key('input', 'CompressedImage data is corrupt or not JPEG/PNG: it starts with '
                            'ff e3 0a 9b 77 f1 bd 00 (JPEG starts ff d8 ff, PNG 89 50 4e 47)')
    b = reason_key('input', 'CompressedImage data is corrupt or not JPEG/PNG: it starts with '
                            '1c 2b ee e9 (JPEG starts ff d8 ff, PNG 89 50 4e 47)')
    assert a == b
    # One byte too: a corrupt JPEG's segments name the byte found where a marker should be.
    said = 'CompressedImage JPEG is corrupt: expected a marker at byte 612, found {}'
    assert len({reason_key('input', said.format(f'{v:02x}')) for v in range(256)}) == 1
    assert (reason_key('input', "unknown image encoding 'rgb17'; supported: rgb8")
            == reason_key('input', "unknown image encoding 'bayer_xx'; supported: rgb8"))
    assert a != reason_key('input', "unknown image encoding 'rgb17'; supported: rgb8")
    assert "can't" in reason_key('input', "can't decode 'x'")  # an apostrophe is no quote
    # Elsewhere the quotes hold an error's message: two errors stay two problems.
    assert (reason_key('internal', "error: RuntimeError('CUDA out of memory')")
            != reason_key('internal', "error: RuntimeError('mat1 and mat2 shapes differ')"))


def test_throttle_logs_first_then_summarises():
    throttle = LogThrottle(interval=10.0)
    assert throttle.check('a', 0.0) == 0
    assert throttle.check('a', 1.0) is None
    assert throttle.check('a', 2.0) is None
    assert throttle.check('b', 2.0) == 0  # another problem is logged at once
    assert throttle.check('a', 10.5) == 2
    assert throttle.check('a', 11.0) is None


def test_throttle_remembers_a_bounded_number_of_problems():
    throttle = LogThrottle(interval=10.0, max_keys=3)
    assert [throttle.check(key, 0.0) for key in 'abc'] == [0, 0, 0]
    assert throttle.check('a', 1.0) is None  # a repeat of a known problem waits
    # Past the bound, new problems share one key: the first is said, the flood is counted.
    assert throttle.check('d', 2.0) == 0
    assert [throttle.check(key, 3.0) for key in 'efg'] == [None, None, None]
    assert len(throttle._last) <= 4
    # An interval later the problems whose repeats were all told are forgotten ('a' still
    # owes its repeat, the shared key three): a new one has a key of its own again.
    assert throttle.check('h', 12.5) == 0
    assert throttle.check('a', 12.6) == 1
    assert throttle.check('j', 12.7) == 3  # full again: the shared key tells of e, f, g
    assert len(throttle._last) <= 4


def test_throttled_logger_says_each_problem_once_at_its_level_then_counts_repeats():
    said = []
    logger = SimpleNamespace(**{level: (lambda text, level=level: said.append((level, text)))
                                for level in ('error', 'warning', 'info')})
    now = [0.0]
    log = ThrottledLogger(logger, LogThrottle(interval=10.0), clock=lambda: now[0])
    log.once('bad', 'a bad frame', 'warning')
    log.once('bad', 'a bad frame', 'warning')
    log.once('broken', 'the model failed', 'error')
    log.once('note', 'a note', 'info')
    now[0] = 11.0
    log.once('bad', 'a bad frame', 'warning')
    assert said == [('warning', 'a bad frame'), ('error', 'the model failed'), ('info', 'a note'),
                    ('warning', 'a bad frame (and 1 more like it since the last report)')]


def test_throttled_logger_past_its_bound_counts_problems_of_other_kinds_together():
    said = []
    logger = SimpleNamespace(warning=said.append)
    now = [0.0]
    log = ThrottledLogger(logger, LogThrottle(interval=10.0, max_keys=2), clock=lambda: now[0])
    for key in 'abcd':
        log.once(key, f'problem {key}', 'warning')
    now[0] = 11.0  # a and b are forgotten, the shared key still owes d
    log.once('e', 'problem e', 'warning')
    log.once('f', 'problem f', 'warning')
    assert said == ['problem a', 'problem b', 'problem c', 'problem e',
                    'problem f (and 1 more of other kinds since the last report)']


def test_silence_watch_warns_once_per_silence():
    watch = SilenceWatch(timeout=5.0, now=0.0)
    assert not watch.poll(1.0, publishers=0)
    assert not watch.poll(2.0, publishers=1)  # publishers appear: silence starts at 2
    assert not watch.poll(6.5, publishers=1)
    assert watch.silent_for(6.5) == pytest.approx(4.5)
    assert watch.poll(7.0, publishers=1)
    assert not watch.poll(30.0, publishers=1)  # once
    watch.message(31.0)
    assert watch.ever_received
    assert not watch.poll(35.0, publishers=1)
    assert watch.poll(36.5, publishers=1)  # stalled after messages: a new silence
    assert not watch.poll(37.0, publishers=0)
    assert watch.silent_for(37.0) == 0.0


def _publisher(topic_type='sensor_msgs/msg/Image', reliability='best_effort'):
    return PublisherInfo('/camera/driver', topic_type, reliability, 'volatile')


def test_diagnosis_names_a_reliability_mismatch():
    text = diagnose_silence('/image', 'sensor_msgs/msg/Image', 'reliable', [_publisher()], 5.2,
                            False)
    assert '1 publisher(s) on /image' in text and '5.2 s' in text
    assert 'QoS mismatch' in text and '/camera/driver' in text
    assert 'input.reliability to best_effort' in text


def test_diagnosis_names_a_type_mismatch():
    text = diagnose_silence('/image', 'sensor_msgs/msg/Image', 'best_effort',
                            [_publisher('sensor_msgs/msg/CompressedImage', 'reliable')], 5.0,
                            False)
    assert 'message type mismatch' in text and 'CompressedImage' in text
    assert 'input.transport' in text and 'QoS mismatch' not in text


def test_diagnosis_without_an_obvious_cause():
    never = diagnose_silence('/image', 'sensor_msgs/msg/Image', 'best_effort',
                             [_publisher(reliability='reliable')], 5.0, False)
    assert 'likely a QoS mismatch' in never and 'reliable/volatile' in never
    assert 'ros2 topic info --verbose /image' in never
    stalled = diagnose_silence('/image', 'sensor_msgs/msg/Image', 'best_effort',
                               [_publisher()], 5.0, True)
    assert 'stopped sending' in stalled


def test_diagnosis_under_best_effort_names_images_too_large_to_arrive_whole():
    # Best effort loses a whole raw image with any fragment: the diagnosis says so, and how
    # to avoid it, whether or not an image ever arrived.
    for ever_received in (False, True):
        raw = diagnose_silence('/image', 'sensor_msgs/msg/Image', 'best_effort',
                               [_publisher(), _publisher(reliability='reliable')], 5.0,
                               ever_received)
        assert 'too large to arrive whole under best effort' in raw, raw
        assert 'send reliably' in raw and 'input.transport: compressed' in raw, raw
    compressed = diagnose_silence('/image/compressed', 'sensor_msgs/msg/CompressedImage',
                                  'best_effort', [_publisher('sensor_msgs/msg/CompressedImage')],
                                  5.0, True)
    assert 'send reliably' in compressed and 'input.transport' not in compressed
    reliable = diagnose_silence('/image', 'sensor_msgs/msg/Image', 'reliable',
                                [_publisher(reliability='reliable')], 5.0, True)
    assert 'best effort' not in reliable


def test_incompatible_qos_message():
    text = incompatible_qos_message('/image', 'RELIABILITY', 'reliable')
    assert 'RELIABILITY' in text and 'input.reliability to best_effort' in text
    assert 'agree' in incompatible_qos_message('/image', 'DURABILITY', 'best_effort')


@pytest.mark.parametrize('setting, publishers, expected', [
    ('auto', [], 'best_effort'),
    ('auto', ['reliable'], 'reliable'),
    ('auto', ['reliable', 'reliable'], 'reliable'),
    ('auto', ['reliable', 'best_effort'], 'best_effort'),
    ('best_effort', ['reliable'], 'best_effort'),
    ('reliable', ['best_effort'], 'reliable'),
])
def test_reliability_follows_the_publishers_under_auto(setting, publishers, expected):
    assert choose_reliability(setting, publishers) == expected
