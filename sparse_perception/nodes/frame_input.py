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
The camera subscription: which topic, with which QoS, and the mailbox it fills.

The subscription callback only drops each message into a one-place mailbox
(:class:`~sparse_perception.nodes.stream.LatestSlot`); the frame worker always takes the
newest, so a slow model drops frames (counted in /diagnostics) instead of building a queue of
stale ones. Once a second a watch looks at the topic's publishers: under ``input.reliability:
auto`` it resubscribes when their reliability changes, and when they deliver nothing for
``input.no_message_warning`` seconds it logs the likely reason.
"""

from __future__ import annotations

import time
from typing import Any

from rclpy.clock import Clock
from rclpy.lifecycle import LifecycleNode
from sensor_msgs.msg import CompressedImage, Image
from sparse_perception.nodes.health import HealthMonitor
from sparse_perception.nodes.parameters import NodeParameters
from sparse_perception.nodes.ros_interop import input_qos, publisher_info
from sparse_perception.nodes.stream import (
    choose_reliability, diagnose_silence, incompatible_qos_message, LatestSlot, SilenceWatch,
    ThrottledLogger)

try:  # Iron and later
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import SubscriptionEventCallbacks

# Seconds between checks that the input topic's publishers actually deliver.
WATCH_PERIOD = 1.0


class FrameInput:
    """The image subscription of a node, its QoS choice and the newest-frame mailbox."""

    def __init__(self, node: LifecycleNode, parameters: NodeParameters, health: HealthMonitor,
                 log: ThrottledLogger, clock: Clock):
        """Subscribe for ``node`` once started; ``clock`` runs the watch (steady time)."""
        self._node = node
        self._parameters = parameters
        self._health = health
        self._log = log
        self._clock = clock
        self.subscription: Any = None
        self.reliability: str | None = None  # of the live subscription
        self.slot = LatestSlot()
        self._silence = SilenceWatch(parameters.settings.input.no_message_warning,
                                     time.monotonic())
        self._watch: Any = None

    @property
    def _settings(self) -> Any:
        return self._parameters.settings.input

    def topic(self) -> str:
        """Return the topic to subscribe to, as image_transport would resolve it."""
        cfg = self._settings
        if cfg.transport == 'raw':
            return cfg.topic
        compressed = cfg.topic.rstrip('/') + '/compressed'
        # As image_transport does: remapping the base topic (image:=/camera/image_raw) moves
        # its compressed topic with it, unless the compressed topic is remapped itself.
        resolve = getattr(self._node, 'resolve_topic_name', None)
        if resolve is None:  # an rclpy without it cannot tell; take the name as it is
            return compressed
        if resolve(compressed) != resolve(compressed, only_expand=True):
            return compressed
        return resolve(cfg.topic).rstrip('/') + '/compressed'

    def message_type(self) -> type:
        """Return the message class the input topic carries."""
        return Image if self._settings.transport == 'raw' else CompressedImage

    def start(self, now: float) -> LatestSlot:
        """Subscribe and start the watch; return the mailbox the frames arrive in."""
        self.slot = LatestSlot()
        self._silence = SilenceWatch(self._settings.no_message_warning, now)
        self._subscribe(self._wanted_reliability(self.topic()))
        self._watch = self._node.create_timer(WATCH_PERIOD, self._on_watch_timer,
                                              clock=self._clock)
        return self.slot

    def stop(self) -> None:
        """Unsubscribe and close the mailbox (a frame left in it counts as dropped)."""
        if self._watch is not None:
            self._node.destroy_timer(self._watch)
            self._watch = None
        if self.subscription is not None:
            self._node.destroy_subscription(self.subscription)
            self.subscription = None
        if self.slot.close():  # a frame received but never processed: count it
            self._health.dropped(time.monotonic())

    def publisher_count(self) -> int | None:
        """Return how many publishers the subscribed topic has (None when not subscribed)."""
        if self.subscription is None:
            return None
        return self._node.count_publishers(self.subscription.topic_name)

    def _wanted_reliability(self, topic: str) -> str:
        return choose_reliability(self._settings.reliability, [
            publisher_info(e).reliability
            for e in self._node.get_publishers_info_by_topic(topic)])

    def _subscribe(self, reliability: str) -> None:
        if self.subscription is not None:
            self._node.destroy_subscription(self.subscription)
        self.reliability = reliability
        self.subscription = self._node.create_subscription(
            self.message_type(), self.topic(), self._on_image,
            input_qos(reliability, self._settings.depth),
            event_callbacks=SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible))

    def _on_image(self, msg: Any) -> None:
        now = time.monotonic()
        self._health.received(now)
        self._silence.message(now)
        if self.slot.put((msg, now)):
            self._health.dropped(now)

    def _on_incompatible(self, event: Any) -> None:
        policy = getattr(event.last_policy_kind, 'name', str(event.last_policy_kind))
        self._log.once('qos:' + policy, incompatible_qos_message(
            self.topic(), policy, self.reliability or self._settings.reliability), 'warning')

    def _on_watch_timer(self) -> None:
        if self.subscription is None:
            return
        now = time.monotonic()
        topic = self.subscription.topic_name
        publishers = [publisher_info(e) for e in self._node.get_publishers_info_by_topic(topic)]
        wanted = choose_reliability(self._settings.reliability,
                                    [p.reliability for p in publishers])
        if wanted != self.reliability:
            offered = ', '.join(sorted({p.reliability for p in publishers}))
            now_offered = (f'the publishers of {topic} now offer {offered}' if publishers
                           else f'{topic} has no publisher')
            self._node.get_logger().info(
                f'input.reliability auto: {now_offered}: subscribing {wanted}')
            self._subscribe(wanted)
        self._silence.timeout = self._settings.no_message_warning
        if self._silence.poll(now, len(publishers)):
            self._node.get_logger().warning(diagnose_silence(
                topic, _type_name(self.message_type()), self.reliability, publishers,
                self._silence.silent_for(now), self._silence.ever_received))


def _type_name(msg_type: type) -> str:
    module = msg_type.__module__.split('.')[0]  # sensor_msgs.msg._image -> sensor_msgs
    return f'{module}/msg/{msg_type.__name__}'
