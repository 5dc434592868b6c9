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
The pipeline of an active node and the thread that runs it on the newest frame.

Per frame: decode the message, apply the settings changed since the last frame (reloading a
model if one changed, and keeping the previous one if the new one does not load), reset the
temporal state when the stream restarts, run the pipeline and publish the result with the
input's header. A bad frame or a failing pipeline is logged once, counted, and the stream goes
on (a pipeline that fails part way through a frame resets its temporal state itself).
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any, Callable

from rclpy.lifecycle import LifecycleNode
from sparse_perception import settings as st
from sparse_perception.media.images import compressed_to_numpy, image_to_numpy
from sparse_perception.nodes.health import HealthMonitor, release_device_memory
from sparse_perception.nodes.node_config import (
    changed_models, changed_reloads, PipelineFactory, warmup_images)
from sparse_perception.nodes.outputs import Outputs
from sparse_perception.nodes.parameters import NodeParameters
from sparse_perception.nodes.stream import (
    LatestSlot, reason_key, stamp_to_ns, StreamGuard, ThrottledLogger)

# How often the thread wakes without a frame to see whether it must stop.
_POLL_SECONDS = 0.2


class FrameWorker:
    """Loads the pipeline on activate and runs it, in a thread of its own, on each frame."""

    def __init__(self, node: LifecycleNode, parameters: NodeParameters, health: HealthMonitor,
                 outputs: Outputs, log: ThrottledLogger, factory: PipelineFactory):
        """Work for ``node``; ``factory(settings, heads)`` builds the pipeline."""
        self._node = node
        self._parameters = parameters
        self._health = health
        self._outputs = outputs
        self._log = log
        self._factory = factory
        self.pipeline: Any = None
        self._in_force: st.PerceptionSettings | None = None  # what the pipeline runs with
        self._unsettled = False  # a failed change could not be undone: _in_force is in doubt
        self._warm_reloads = False  # warm a reloaded model (node.warmup_frames above 0)
        self._guard = StreamGuard()
        self.thread: threading.Thread | None = None

    def load(self, settings: st.PerceptionSettings) -> None:
        """Build the pipeline for ``settings``, loading its models; raise why it cannot."""
        self.pipeline = self._factory(settings, self._parameters.heads)
        self._in_force, self._unsettled = settings, False
        self._health.set_fault(None)  # a new pipeline: a fault of the one before is gone
        self._parameters.loaded(settings)

    def warm_up(self, lifecycle: st.LifecycleSettings, going_on: Callable[[], bool]) -> bool:
        """
        Run the warm-up frames, then forget them; return False if ``going_on()`` turned false.

        With warm-up frames, every network of a fixed input size is warmed too, the ones the
        frames do not reach included (a pose landmark network waits for somebody in view).
        Publishes the loaded model's names once warm.
        """
        for frame in warmup_images(lifecycle.warmup_frames, lifecycle.warmup_width,
                                   lifecycle.warmup_height):
            if not going_on():
                return False
            self.pipeline.process(frame)
        self._warm_reloads = lifecycle.warmup_frames > 0
        if self._warm_reloads and going_on():
            self.pipeline.warm_up()
        self.pipeline.reset()
        self._parameters.publish_model_info(self.pipeline)
        return True

    def close(self) -> None:
        """Free the pipeline, its models and their device memory."""
        pipeline, self.pipeline, self._in_force = self.pipeline, None, None
        if pipeline is not None:
            try:
                pipeline.close()
            except Exception as exc:
                self._node.get_logger().error(f'closing the pipeline failed: {exc}')
            del pipeline
            release_device_memory()

    def start(self, slot: LatestSlot) -> None:
        """Take frames from ``slot`` in a new thread until the slot is closed."""
        self._guard.forget()
        self.thread = threading.Thread(target=self._run, args=(slot,), daemon=True,
                                       name=f'{self._node.get_name()}-frames')
        self.thread.start()

    def stop(self) -> None:
        """Wait for the thread to end (the caller closed its slot)."""
        thread, self.thread = self.thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self, slot: LatestSlot) -> None:
        while not slot.closed:
            item = slot.take(_POLL_SECONDS)
            if item is None:
                continue
            try:
                self._process(*item)
            except Exception as exc:  # a bug must not stop the stream; log it, go on
                if not self._node.context.ok():
                    return  # shutting down (Ctrl-C): publishing fails, and that is no error
                self._bad_frame('internal', f'unexpected error processing a frame: {exc!r}',
                                'error')

    def decode(self, msg: Any) -> Any:
        """Return the image of an input message as (H, W, 3) uint8 RGB; raise why not."""
        cfg = self._parameters.settings.input
        max_pixels = int(cfg.max_megapixels * 1e6)
        if cfg.transport == 'raw':
            return image_to_numpy(msg, 'rgb8', max_pixels=max_pixels)
        return compressed_to_numpy(msg, 'rgb8', max_pixels=max_pixels)

    def _process(self, msg: Any, received: float) -> None:
        header = msg.header
        stamp_ns = stamp_to_ns(header.stamp)
        try:
            image = self.decode(msg)  # (H, W, 3) uint8 RGB
        except Exception as exc:  # ImageConversionError; ImportError without OpenCV
            self._bad_frame('input', f'skipped a bad input image: {exc}', 'warning')
            return
        self._apply_pending()
        reset = self._guard.observe(stamp_ns, image.shape[:2])
        if reset is not None:
            self._log.once('reset:' + '+'.join(reset.kinds), reset.reason, 'warning')
            self.pipeline.reset()
        # A subscriber to the change map sees every frame's (the pipeline may otherwise skip
        # the map while only dense passes run).
        self.pipeline.keep_change_maps = self._outputs.subscribed('change_map')
        try:
            result = self.pipeline.process(image)
        except Exception as exc:
            self._bad_frame('pipeline', f'processing a frame failed: {exc}', 'error')
            return
        self._outputs.publish_result(header, image, result, self._parameters.settings.output)
        now = time.monotonic()
        self._health.processed(now, result.stats, self._latency_ms(now, received, stamp_ns),
                               stamp_ns)

    def _latency_ms(self, now: float, received: float, stamp_ns: int) -> float | None:
        if self._node.get_parameter('use_sim_time').value:
            # /clock advances in steps (a bag's clock rate), so stamp-to-now would read the
            # step, not the node: under sim time the latency counts from the image's receipt.
            return (now - received) * 1e3
        if stamp_ns:
            return (self._node.get_clock().now().nanoseconds - stamp_ns) / 1e6
        return None

    def _apply_pending(self) -> None:
        """Give the pipeline the settings changed since the last frame (model reloads too)."""
        pending = self._parameters.take_pending()
        if pending is None or (pending == self._in_force and not self._unsettled):
            return
        from sparse_perception.pipeline import reloads_every_head  # (torch: loaded lazily)

        old = self._in_force
        reloads = changed_models(old, pending, self._parameters.heads)
        rebuilt = bool(reloads) or reloads_every_head(old, pending)
        try:
            self.pipeline.update(pending)
            if rebuilt and self._warm_reloads:  # new networks compile now, not mid-stream
                self.pipeline.warm_up()
        except Exception as exc:  # ModelLoadError, or anything a bad model throws
            self._keep_previous_model(old, pending, exc)
            return
        self._in_force = pending
        self._unsettled = False
        self._health.set_fault(None)
        if reloads:
            self._parameters.publish_model_info(self.pipeline)
            self._node.get_logger().info('loaded ' + ', '.join(
                f'model.{head} = {getattr(pending.model, head)!r}' for head in reloads))

    def _keep_previous_model(self, old: st.PerceptionSettings, rejected: st.PerceptionSettings,
                             exc: Exception) -> None:
        """
        Go back as little as makes the pipeline take the settings, keeping the other changes.

        First the settings the error names go back, then the models and gates that ran, and
        should the pipeline refuse that too, every setting goes back to what ran.
        """
        before, failed = st.flatten(old), st.flatten(rejected)
        everything = tuple(n for n in before if before[n] != failed[n])
        logger = self._node.get_logger()
        if not everything:  # the settings that ran, tried again after they could not be
            self._unsettled = True
            self._health.set_fault(f'settings could not be restored after a failed change: '
                                   f'{exc}')
            logger.error(f'could not restore the settings that ran, again: {exc}')
            return
        # Going back step by step, each step taking back more: first the settings the error
        # names (a layer threshold no network has, while a new model loads fine), then
        # what may fail to load (the models and gates: a model that failed takes its gates
        # back with it, as a gate is made for a model), then everything.
        named = tuple(n for n in everything
                      if re.search(rf'(?<![\w.]){re.escape(n)}(?!\w)', str(exc)))
        reloads = changed_reloads(old, rejected)
        if set(named) & set(reloads):
            named = tuple(dict.fromkeys(named + reloads))
        # Each step takes back what the steps before it did too (also one whose settings
        # did not hold together, and so was not tried).
        attempts, taken = [], ()
        for step in (named, reloads, everything):
            names = tuple(dict.fromkeys(taken + tuple(step)))
            if names == taken:
                continue
            taken = names
            if set(names) >= set(everything):
                attempts.append((old, everything))
                break
            try:
                settings = st.build(st.PerceptionSettings,
                                    {**failed, **{n: before[n] for n in names}})
            except st.SettingError:  # a mix that does not hold together: go further back
                continue
            attempts.append((settings, names))
        said: set[str] = set()
        for settings, names in attempts:
            new = [n for n in names if n not in said]
            head = 'could not apply the other changes either, ' if said else 'could not apply '
            said.update(names)
            logger.error(head + ', '.join(f'{n} = {failed[n]!r}' for n in new)
                         + f': {exc}; keeping the previous '
                         + ', '.join(f'{n} = {before[n]!r}' for n in new))
            try:
                self.pipeline.update(settings)
            except Exception as again:
                exc = again
                continue
            self._in_force, self._unsettled = settings, False
            self._health.set_fault(None)
            # Put those parameters back, so that `ros2 param get` tells what runs.
            self._parameters.put_back(names, before, failed)
            return
        self._unsettled = True  # the next change is tried, even one back to these settings
        self._health.set_fault(f'settings could not be restored after a failed change: {exc}')
        logger.error(f'could not restore the previous settings either: {exc}')
        self._parameters.put_back(everything, before, failed)

    def _bad_frame(self, category: str, reason: str, level: str) -> None:
        self._health.failed(time.monotonic(), reason)
        self._log.once(reason_key(category, reason), reason, level)
