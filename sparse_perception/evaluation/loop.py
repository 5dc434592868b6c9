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
The one frame loop behind ``replay``, ``eval``, the sweeps and ``bench cpu``.

Source -> pipelines -> scorers: every decoded frame goes through each pipeline in turn and the
caller scores what came out. Running the pipelines frame by frame in alternation, instead of
one after the other over the whole clip, times them under the same load, caches and clock, so
that their ratio means something on a shared machine. ``rotate`` also changes which pipeline
goes first from frame to frame, so that none always runs in the cache another one left.

A stamp that goes back (a bag recorded in a loop, a restarted camera) starts a new sequence in
every pipeline, as the nodes do: each pipeline's temporal state is reset, so the incremental
pipeline computes the frame densely and a tracker starts over in all of them alike.
"""

from __future__ import annotations

from dataclasses import dataclass
import time
from typing import Any, Iterable, Iterator, Sequence


@dataclass
class Step:
    """One frame through every pipeline."""

    frame: Any  # the source's Frame (index, image, stamp_ns, ...)
    results: list[Any]  # Pipeline.process's result, one per pipeline, in the order given
    ms: list[float]  # wall time of each pipeline's process(), milliseconds
    reset: bool  # the stamp went back: every pipeline was reset before this frame


def run(source: Iterable[Any], pipelines: Sequence[Any], *,
        rotate: bool = False) -> Iterator[Any]:
    """
    Yield a :class:`Step` per decoded frame of ``source``; a skipped (corrupt) frame as it is.

    ``source`` yields frames (with ``image`` and ``stamp_ns``) or skipped frames (without
    ``image``). With ``rotate``, frame ``i`` starts with pipeline ``i % len(pipelines)``.
    """
    if not pipelines:
        raise ValueError('the frame loop needs at least one pipeline')
    count = len(pipelines)
    last_stamp = None
    position = 0
    for item in source:
        if not hasattr(item, 'image'):
            yield item
            continue
        reset = last_stamp is not None and item.stamp_ns < last_stamp
        if reset:
            for pipeline in pipelines:
                pipeline.reset()
        last_stamp = item.stamp_ns
        first = position % count if rotate else 0
        position += 1
        results: list[Any] = [None] * count
        ms = [0.0] * count
        for k in (*range(first, count), *range(first)):
            start = time.perf_counter()
            results[k] = pipelines[k].process(item.image)
            ms[k] = (time.perf_counter() - start) * 1e3
        yield Step(item, results, ms, reset)


def warm(pipelines: Iterable[Any], frame: Any) -> None:
    """Run one frame through each pipeline and forget it: building is not timed as a frame."""
    for pipeline in pipelines:
        pipeline.reset()
        pipeline.process(frame.image)  # one-time costs: lowering, allocation, weight packing
        pipeline.reset()
