"""Server-sent events: each job's progress, fanned out to every listener, in the order it happened.

The worker thread ``publish``es; each ``GET /v1/videos/{id}/events`` ``subscribe``s and reads an asyncio queue.
A job's events are numbered from 1 and kept (the last ``history`` of them) so a listener that connects late, or
reconnects with ``Last-Event-ID``, first gets what it missed, then the live ones: the snapshot and the
subscription are taken under one lock, so no event is lost or repeated between them. A job's stream ends after
its terminal event (``completed``, ``failed`` or ``cancelled``).

This module must never block the worker (publishing only hands events to the event loop) and never keep a
listener's queue after it left.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

TERMINAL_EVENTS = frozenset({"completed", "failed", "cancelled"})
KEEPALIVE_S = 15.0


@dataclass(frozen=True)
class Event:
    """One event of one job: ``kind`` is the SSE event name, ``data`` its JSON payload."""

    id: int
    kind: str
    data: dict[str, Any]
    time: float

    def sse(self) -> str:
        """The event in the ``text/event-stream`` wire format."""
        return f"id: {self.id}\nevent: {self.kind}\ndata: {json.dumps(self.data, default=str)}\n\n"


@dataclass
class _Channel:
    events: deque[Event]
    next_id: int = 1
    listeners: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue[Event]]] = field(default_factory=list)


class EventHub:
    """Per-job event history and listeners; the ``jobs`` most recent jobs keep their history."""

    def __init__(self, history: int = 2000, jobs: int = 256) -> None:
        self._lock = threading.Lock()
        self._channels: OrderedDict[str, _Channel] = OrderedDict()
        self._history, self._jobs = history, jobs

    def _channel(self, job_id: str) -> _Channel:
        channel = self._channels.get(job_id)
        if channel is None:
            channel = self._channels[job_id] = _Channel(deque(maxlen=self._history))
            while len(self._channels) > self._jobs:  # forget the oldest job with nobody listening
                old = next((k for k, c in self._channels.items() if not c.listeners), None)
                if old is None:
                    break
                del self._channels[old]
        self._channels.move_to_end(job_id)
        return channel

    def publish(self, job_id: str, kind: str, data: dict[str, Any]) -> Event:
        """Record an event and hand it to every listener (any thread)."""
        with self._lock:
            channel = self._channel(job_id)
            event = Event(channel.next_id, kind, data, time.time())
            channel.next_id += 1
            channel.events.append(event)
            listeners = list(channel.listeners)
        for loop, queue in listeners:
            # The loop owns the queue: put from its own thread, or events could interleave out of order.
            try:
                loop.call_soon_threadsafe(queue.put_nowait, event)
            except RuntimeError:  # the loop closed (server shutting down): nobody to tell
                pass
        return event

    def last_kind(self, job_id: str) -> str | None:
        """The kind of ``job_id``'s latest event, None if it has none."""
        with self._lock:
            channel = self._channels.get(job_id)
            return channel.events[-1].kind if channel is not None and channel.events else None

    def forget(self, job_id: str) -> None:
        """Drop a deleted job's history (its listeners keep what they have)."""
        with self._lock:
            self._channels.pop(job_id, None)

    async def stream(self, job_id: str, after: int = 0) -> AsyncIterator[Event | None]:
        """Events of ``job_id`` after id ``after``: missed ones first, then live ones, until a terminal event.
        Yields None every ``KEEPALIVE_S`` without an event (the route sends an SSE comment)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Event] = asyncio.Queue()
        with self._lock:
            channel = self._channel(job_id)
            missed = [e for e in channel.events if e.id > after]
            channel.listeners.append((loop, queue))
        try:
            last = after
            for event in missed:
                last = event.id
                yield event
                if event.kind in TERMINAL_EVENTS:
                    return
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    yield None
                    continue
                if event.id <= last:  # published between the snapshot and the subscription: already sent
                    continue
                last = event.id
                yield event
                if event.kind in TERMINAL_EVENTS:
                    return
        finally:
            with self._lock:
                if (loop, queue) in channel.listeners:
                    channel.listeners.remove((loop, queue))
