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
One landmark network state per followed person, for a pose model that follows several.

The incremental engine runs one image at a time and caches what it computed for that image.
A tracking pose model (BlazePose) follows each person in a still crop of their own, so each
person gets a *slot*: a network state (engine caches, change map, path choice) that sees only
that person's crop, and the last crop and result decoded there. A slot outlives its person:
when someone is lost, the next new person takes the slot over (the new crop is a refresh).
Slots are made when first needed, so following one person costs what it always did.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


@dataclass
class Slot:
    """A network state and what it last saw."""

    net: Any  # the incremental network of this slot (None in a dense pipeline)
    person: int | None = None  # the id of the person it follows now
    transform: Any = None  # the crop it last ran on
    decoded: Any = None  # what that crop decoded to
    x: Any = None  # the network input made from that crop


class PersonSlots:
    """Give each followed person a slot of their own, made on first need (see module doc)."""

    def __init__(self, first: Any, make: Callable[[], Any]):
        self.slots = [Slot(first)]
        self._make = make  # a new network state, for a slot beyond the first

    def assign(self, people: list[int]) -> list[Slot]:
        """
        Return the slot of each of ``people`` (ids, in order), freeing those of the others.

        A person keeps their slot while followed; a new one takes the first free slot.
        """
        wanted = set(people)
        for slot in self.slots:
            if slot.person is not None and slot.person not in wanted:
                slot.person, slot.transform, slot.decoded, slot.x = None, None, None, None
        owned = {slot.person: slot for slot in self.slots if slot.person is not None}
        out = []
        for person in people:
            slot = owned.get(person)
            if slot is None:
                slot = next((s for s in self.slots if s.person is None), None)
                if slot is None:
                    slot = Slot(self._make())
                    self.slots.append(slot)
                slot.person = person
                owned[person] = slot
            out.append(slot)
        return out

    def forget(self) -> None:
        """Free every slot (the stream starts over); the network states are kept for reuse."""
        for slot in self.slots:
            slot.person, slot.transform, slot.decoded, slot.x = None, None, None, None

    @property
    def nets(self) -> list[Any]:
        """Return the network states beyond the first, in the order they were made."""
        return [slot.net for slot in self.slots[1:]]


def person_boxes(mask: np.ndarray, person: int, min_height: int) -> list[tuple[int, ...]]:
    """
    Return the boxes ``(x0, y0, x1, y1)`` of the person regions of a class-id mask, largest first.

    ``mask`` is (H, W) class ids; a region is an 8-connected set of ``person`` pixels at least
    ``min_height`` pixels tall (shorter ones are too small for the landmark network's crop to
    say anything, and noise).
    """
    import cv2

    count, _, stats, _ = cv2.connectedComponentsWithStats(
        np.ascontiguousarray(mask == person, dtype=np.uint8), connectivity=8)
    regions = [stats[k] for k in range(1, count) if stats[k][cv2.CC_STAT_HEIGHT] >= min_height]
    regions.sort(key=lambda s: -int(s[cv2.CC_STAT_AREA]))
    return [(int(x), int(y), int(x + w), int(y + h)) for x, y, w, h, _ in regions]
