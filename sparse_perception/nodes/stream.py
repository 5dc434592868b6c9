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
Decisions about a live image stream, made without ROS.

- :class:`LatestSlot`: a one-place mailbox between the subscription and the processing thread,
  so that a node always processes the newest frame and never builds a queue;
- :class:`StreamGuard`: when the temporal state must be reset (the frame size changed, or the
  image stamps jumped back, as when a bag loops);
- :class:`LogThrottle` and :class:`ThrottledLogger`: log each kind of problem once, then
  summarise repeats;
- :class:`SilenceWatch` and :func:`diagnose_silence`: a topic has publishers but no image
  arrives, and the likely reason (a QoS or message type mismatch);
- :func:`choose_reliability`: the subscription's QoS reliability for the publishers there are.
"""

from __future__ import annotations

from dataclasses import dataclass
import re
import threading
import time
from typing import Any, Callable, Sequence


def stamp_to_ns(stamp: Any) -> int:
    """Return a ``builtin_interfaces/Time`` (rclpy or rosbags) in integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


class LatestSlot:
    """
    A mailbox that holds at most one item: putting replaces what is still waiting.

    The subscription callback puts every message; the processing thread takes the newest. A
    replaced message is a dropped frame (:attr:`replaced` counts them).
    """

    def __init__(self):
        self._condition = threading.Condition()
        self._item: Any = None
        self._closed = False
        self.replaced = 0

    def put(self, item: Any) -> bool:
        """Offer ``item`` (never None); return True if it replaced one not yet taken."""
        if item is None:
            raise ValueError('LatestSlot cannot hold None')
        with self._condition:
            replaced = self._item is not None
            self._item = item
            self.replaced += replaced
            self._condition.notify()
        return replaced

    def take(self, timeout: float | None = None) -> Any:
        """Wait up to ``timeout`` seconds for an item; return it, or None (timeout, closed)."""
        with self._condition:
            if self._item is None and not self._closed:
                self._condition.wait(timeout)
            item, self._item = self._item, None
            return None if self._closed else item

    def close(self) -> bool:
        """
        Wake every waiting :meth:`take` and make it return None from now on.

        Return True if an item not yet taken was discarded (a dropped frame, to be counted).
        """
        with self._condition:
            discarded = self._item is not None
            self._closed = True
            self._item = None
            self._condition.notify_all()
        return discarded

    @property
    def closed(self) -> bool:
        return self._closed


@dataclass(frozen=True)
class StreamReset:
    """Why the temporal state must be forgotten before this frame."""

    kinds: tuple[str, ...]  # 'size' and/or 'clock'
    reason: str


class StreamGuard:
    """
    Watches frame sizes and image stamps and says when to reset the temporal state.

    A frame of another size than the previous one invalidates every cached activation; a stamp
    earlier than the previous one means the source restarted or a bag looped, so the previous
    frame is no reference for this one. Unstamped frames (stamp 0) are never called a jump.
    """

    def __init__(self):
        self._shape: tuple[int, int] | None = None
        self._stamp_ns = 0

    def forget(self) -> None:
        """Start afresh (the pipeline was rebuilt or reset)."""
        self._shape = None
        self._stamp_ns = 0

    def observe(self, stamp_ns: int, shape: tuple[int, int]) -> StreamReset | None:
        """Record a frame's stamp and (height, width); return a reset to do first, if any."""
        kinds, reasons = [], []
        if self._shape is not None and tuple(shape) != self._shape:
            kinds.append('size')
            reasons.append(f'frame size changed from {self._shape[1]}x{self._shape[0]} to '
                           f'{shape[1]}x{shape[0]} (width x height)')
        if stamp_ns and self._stamp_ns and stamp_ns < self._stamp_ns:
            kinds.append('clock')
            reasons.append(f'image stamp jumped back {(self._stamp_ns - stamp_ns) / 1e9:.3f} s '
                           '(a bag loop or a restarted camera clock)')
        self._shape = tuple(shape)
        if stamp_ns:
            self._stamp_ns = stamp_ns
        if not kinds:
            return None
        return StreamReset(tuple(kinds), '; '.join(reasons) +
                           ': temporal state reset, this frame runs dense')


def reason_key(category: str, reason: str) -> str:
    """
    Return a throttling key for a problem: its category and text with the values blanked.

    Numbers vary from frame to frame of one problem: a key per value would log every frame.
    So, for bad input images, do hex bytes and runs of them (what a corrupt message holds) and
    quoted values (an encoding or format string, one word): a publisher sends what it likes.
    Elsewhere quoted text is the message of an error, and two errors must stay two problems.
    """
    text = reason
    if category == 'input':
        text = re.sub(r"(?<!\w)'[^'\s]*'", "'_'", re.sub(r'(?<!\w)"[^"\s]*"', '"_"', text))
        # (One byte too: "expected a marker at byte 612, found a0".)
        text = re.sub(r'\b[0-9a-fA-F]{2}(?: [0-9a-fA-F]{2})*\b', '#', text)
    return category + ':' + re.sub(r'\d+(\.\d+)?', '#', text)


class LogThrottle:
    """
    Say when to log a recurring problem, so that each is logged once and not on every frame.

    The first occurrence of a key is logged at once; repeats stay quiet, and at most every
    ``interval`` seconds one is logged with the number kept quiet in between. At most
    ``max_keys`` problems are remembered apart (a node runs for days): those not seen for an
    interval, with no repeat left to count, are forgotten first; past that, new problems share
    one more key, so that a flood of distinct ones is logged at most once an interval too.
    """

    OVERFLOW = '\0many problems'

    def __init__(self, interval: float = 60.0, max_keys: int = 256):
        self.interval = interval
        self.max_keys = max_keys
        self._last: dict[str, float] = {}
        self._quiet: dict[str, int] = {}

    def key_for(self, key: str, now: float) -> str:
        """Return the key a problem is counted under: its own, or :attr:`OVERFLOW`."""
        if key not in self._last and len(self._last) >= self.max_keys:
            self._forget(now)
            if len(self._last) >= self.max_keys:
                return self.OVERFLOW
        return key

    def check(self, key: str, now: float) -> int | None:
        """Return None to stay quiet, else how many repeats went unlogged before this one."""
        key = self.key_for(key, now)
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._quiet[key] = self._quiet.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._quiet.pop(key, 0)

    def _forget(self, now: float) -> None:
        """Drop the problems last logged an interval ago whose repeats were all counted."""
        for key in [key for key, last in self._last.items()
                    if now - last >= self.interval and key not in self._quiet]:
            del self._last[key]


class ThrottledLogger:
    """
    A logger that reports each recurring problem once, then a count at most every minute.

    ``logger`` is anything with ``error``, ``warning`` and ``info`` methods (a node's logger).
    """

    def __init__(self, logger: Any, throttle: LogThrottle | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self._logger = logger
        self._throttle = throttle or LogThrottle()
        self._clock = clock

    def once(self, key: str, text: str, level: str) -> None:
        """Log ``text`` at ``level`` (error, warning, info) unless ``key`` was logged lately."""
        now = self._clock()
        shared = self._throttle.key_for(key, now) == LogThrottle.OVERFLOW
        repeats = self._throttle.check(key, now)
        if repeats is None:
            return
        if repeats:
            text += (f' (and {repeats} more ' + ('of other kinds' if shared else 'like it')
                     + ' since the last report)')
        # One call site per severity: rclpy refuses a call site whose severity changes.
        if level == 'error':
            self._logger.error(text)
        elif level == 'warning':
            self._logger.warning(text)
        else:
            self._logger.info(text)


@dataclass(frozen=True)
class PublisherInfo:
    """What the ROS graph says about one publisher of the input topic."""

    node: str  # fully qualified node name
    topic_type: str  # e.g. 'sensor_msgs/msg/CompressedImage'
    reliability: str  # 'reliable', 'best_effort' or another policy name
    durability: str  # 'volatile', 'transient_local', ...


class SilenceWatch:
    """
    Says when to warn that a topic has publishers but no message arrives: once per silence.

    A silence starts when publishers appear (or the watch starts) and ends with a message or
    when the publishers go away; the warning comes ``timeout`` seconds into it.
    """

    def __init__(self, timeout: float, now: float):
        self.timeout = timeout
        self._since: float | None = None
        self._start = now
        self._warned = False
        self.ever_received = False

    def message(self, now: float) -> None:
        """Record a message: the silence (if any) is over."""
        self._since = now
        self._warned = False
        self.ever_received = True

    def silent_for(self, now: float) -> float:
        """Return how long the current silence has lasted (0 when there is none)."""
        return 0.0 if self._since is None else now - self._since

    def poll(self, now: float, publishers: int) -> bool:
        """Return True exactly when a warning is due now."""
        if publishers == 0:
            self._since = None
            self._warned = False
            return False
        if self._since is None:
            self._since = max(now, self._start)
        if self._warned or now - self._since < self.timeout:
            return False
        self._warned = True
        return True


def choose_reliability(setting: str, publishers: Sequence[str]) -> str:
    """
    Return the reliability to subscribe with: ``setting``, or for 'auto' the publishers' own.

    'auto' subscribes reliable when every publisher offers reliable, as image_proc does: large
    raw images sent reliably but received best effort lose whole frames to one lost fragment.
    With a best-effort publisher among them, or none yet, it subscribes best effort, which
    matches every publisher (the node looks again when publishers come and go).
    """
    if setting != 'auto':
        return setting
    if publishers and all(p == 'reliable' for p in publishers):
        return 'reliable'
    return 'best_effort'


def diagnose_silence(topic: str, expected_type: str, reliability: str,
                     publishers: Sequence[PublisherInfo], waited: float,
                     ever_received: bool) -> str:
    """Return a warning that names the likely reason why no message arrives on ``topic``."""
    causes = []
    wrong_type = [p for p in publishers if p.topic_type != expected_type]
    if wrong_type:
        other = ', '.join(sorted({p.topic_type for p in wrong_type}))
        causes.append(
            f'message type mismatch: {len(wrong_type)} publisher(s) send {other} but this node '
            f'expects {expected_type}; set input.transport (raw: Image on the topic, '
            "compressed: CompressedImage on '<topic>/compressed') or remap the topic")
    if reliability == 'reliable':
        best_effort = [p.node for p in publishers if p.reliability == 'best_effort']
        if best_effort:
            causes.append(
                'QoS mismatch: this node subscribes RELIABLE but '
                f'{", ".join(best_effort)} publish(es) BEST_EFFORT, which never matches; set '
                'input.reliability to best_effort')
    seen = ', '.join(sorted({f'{p.reliability}/{p.durability}' for p in publishers}))
    if not causes:
        if ever_received:
            causes.append('the publisher(s) stopped sending (stalled camera driver or paused '
                          'bag?)')
        else:
            causes.append(
                f'likely a QoS mismatch (publishers offer {seen}; this node asks for '
                f'{reliability}); check `ros2 topic info --verbose {topic}`')
        if reliability == 'best_effort':
            causes.append(_too_large_for_best_effort(expected_type))
    return (f'{len(publishers)} publisher(s) on {topic} but no image arrived for '
            f'{waited:.1f} s: ' + '; '.join(causes))


def _too_large_for_best_effort(expected_type: str) -> str:
    # Best effort re-sends nothing: one lost fragment loses the whole image. Between processes
    # on one host, Fast DDS (ROS 2's default middleware) sends through the publisher's
    # shared-memory segment, 512 KB by default; the fragments of a larger image overwrite one
    # another unless the subscriber's process copies each out in time, so most such images
    # are lost, and on a busy CPU nearly all.
    remedy = 'have every publisher of the topic send reliably (this node then subscribes reliable)'
    if expected_type == 'sensor_msgs/msg/Image':
        remedy += ', or use input.transport: compressed'
    return ('or images too large to arrive whole under best effort (one lost fragment loses '
            "the image; Fast DDS's default shared-memory segment is 512 KB, less than a "
            f'640x480 rgb8 image): {remedy}')


def incompatible_qos_message(topic: str, policy: str, reliability: str) -> str:
    """Return the warning for a publisher that DDS found incompatible with our subscription."""
    hint = ('set input.reliability to best_effort' if policy.upper() == 'RELIABILITY'
            else 'make the publisher and input.* QoS parameters agree')
    return (f'a publisher on {topic} offers QoS incompatible with this subscription '
            f'({policy} policy; this node asks for {reliability}): no image from it will '
            f'arrive; {hint}')
