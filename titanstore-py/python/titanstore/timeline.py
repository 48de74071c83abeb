"""The fault timeline: what the harness did to a cluster, and when.

Every fault (kill, stop, start, pause, resume, cut, connect, isolate,
partition, heal, latency) and every node that died on its own becomes an
:class:`Event`. ``Event.t`` is ``time.monotonic()``, the clock
:class:`~titanstore.History` stamps operations with, so faults and
operations line up directly. Node logs are stamped in UTC wall-clock time;
each event also carries its wall-clock time, and :meth:`Timeline.format`
states the offset between the two clocks.
"""

from __future__ import annotations

import datetime
import threading
import time
from dataclasses import dataclass
from typing import List, Tuple

__all__ = ["Event", "Timeline"]


def _utc(wall: float) -> str:
    stamp = datetime.datetime.fromtimestamp(wall, tz=datetime.timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Event:
    """One harness action (``kind`` "kill", "partition", ...) or ``"died"``."""

    t: float
    wall: float
    kind: str
    nodes: Tuple[str, ...]
    detail: str

    @property
    def utc(self) -> str:
        """The wall-clock time in the format node logs use."""
        return _utc(self.wall)

    def __str__(self) -> str:
        detail = f" {self.detail}" if self.detail else ""
        return f"{self.t:.6f} ({self.utc}) {self.kind} {','.join(self.nodes)}{detail}"


class Timeline:
    """A thread-safe, append-only list of :class:`Event`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: List[Event] = []
        # Measured once: wall = monotonic + offset.
        self.offset = time.time() - time.monotonic()

    def add(self, kind: str, nodes: Tuple[str, ...], detail: str = "") -> Event:
        now = time.monotonic()
        event = Event(now, now + self.offset, kind, nodes, detail)
        with self._lock:
            self._events.append(event)
        return event

    @property
    def events(self) -> List[Event]:
        with self._lock:
            return list(self._events)

    def format(self) -> str:
        """Every event, one a line, under a header that states the clocks."""
        header = (
            "t = time.monotonic() (History's clock); UTC wall clock (node logs) = t + "
            f"{self.offset:.6f} s"
        )
        return "\n".join([header, *(str(e) for e in self.events)])
