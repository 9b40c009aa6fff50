"""One thread per client that hands every job's events to its ``AsyncResult``.

The native client follows all of a client's jobs on its own runtime and queues their events;
this thread takes them out (``next_event``, without the GIL while it waits) and passes each to
the result it belongs to. Results are filled in even when nobody waits on them, as a
``concurrent.futures.Future`` must be (``as_completed``, ``await``, callbacks), and a thousand
``apply_async`` calls need no thousand threads.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

__all__ = ["Pump"]

#: How long the thread waits for an event before it looks whether the client closed.
_POLL = 0.5


class Follower(Protocol):
    def _on_event(self, event: tuple) -> bool:
        """Takes one event; True after the job's last one."""


class Pump:
    def __init__(self, native: Any) -> None:
        self._native = native
        # Reentrant: a done-callback of one result may submit the next job.
        self._lock = threading.RLock()
        self._followers: dict[int, Follower] = {}
        # Events of jobs whose result is not registered yet: the thread may see a job's
        # first events before `submit` has returned to the code that made its result.
        self._early: dict[int, list[tuple]] = {}
        self._closed = False
        self._thread: threading.Thread | None = None

    def follow(self, job: int, follower: Follower) -> None:
        """Passes ``job``'s events (those already in, then the rest) to ``follower``."""
        with self._lock:
            for event in self._early.pop(job, ()):
                if follower._on_event(event):
                    return
            self._followers[job] = follower
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="bramble-pump", daemon=True)
                self._thread.start()

    def close(self, why: str) -> None:
        """Ends every followed job's result with ``ConnectionError(why)``."""
        with self._lock:
            self._closed = True
            followers = list(self._followers.values())
            self._followers.clear()
        for f in followers:
            f._on_event(("error", why, True))

    def _run(self) -> None:
        while not self._closed:
            got = self._native.next_event(_POLL)
            if got is None:
                continue
            job, event = got
            with self._lock:
                follower = self._followers.get(job)
                if follower is None:
                    if not self._closed:
                        self._early.setdefault(job, []).append(event)
                    continue
                if follower._on_event(event):
                    del self._followers[job]
