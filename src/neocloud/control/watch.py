"""The backend's news, fetched on a thread of its own: which attempts ended, which nodes the engine
drained. A slow backend (squeue waiting on a dead slurmctld) never holds up a turn: the loop goes on
taking commands and scheduling meanwhile. A call that fails or has not answered for `timeout_s`
makes the service degraded; calls are retried with a growing pause, and the first that succeeds
again clears it."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import TypeVar

from neocloud.backends.base import Backend, Exit
from neocloud.control.degraded import Degraded

log = logging.getLogger("neocloud.controller")
T = TypeVar("T")
POLL_S = 0.1  # how often the backend is asked which attempts ended
SYNC_S = 2.0  # how often it is asked which nodes the engine itself has drained
TIMEOUT_S = 30.0  # a call not answered this long makes the service degraded
BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0)  # pauses between retries of a failing backend


class Watcher:
    def __init__(self, backend: Backend, degraded: Degraded, clock: Callable[[], float], *,
                 poll_s: float = POLL_S, sync_s: float = SYNC_S, timeout_s: float = TIMEOUT_S) -> None:
        self.backend, self.degraded, self.clock = backend, degraded, clock
        self.poll_s, self.sync_s, self.timeout_s = poll_s, sync_s, timeout_s
        self.exits: queue.SimpleQueue[Exit] = queue.SimpleQueue()
        self._drained: tuple[dict[str, str], float] | None = None  # the engine's latest answer, when asked
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self._calling: tuple[str, float] | None = None  # the call in flight, and since when
        self._thread = threading.Thread(target=self._run, name="neocloud-watcher", daemon=True)

    @property
    def started(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._halt.set()
        self._thread.join(timeout=10)

    def take_exits(self) -> list[Exit]:
        out = []
        while True:
            try:
                out.append(self.exits.get_nowait())
            except queue.Empty:
                return out

    def take_drained(self) -> tuple[dict[str, str], float] | None:
        """The engine's drained nodes and when it was asked, once per answer (None: nothing new)."""
        with self._lock:
            drained, self._drained = self._drained, None
        return drained

    def stalled(self) -> None:
        """Mark the backend degraded if a call has been in flight too long (asked by the loop)."""
        calling = self._calling
        if calling is not None and self.clock() - calling[1] > self.timeout_s:
            self.degraded.fail("backend", f"{self.backend.name}: {calling[0]}() has not answered for "
                                          f"{self.clock() - calling[1]:.0f} s")

    def _run(self) -> None:
        synced_at = float("-inf")
        failures = 0
        while not self._halt.is_set():
            try:
                for ended in self._call("poll", self.backend.poll):
                    self.exits.put(ended)
                if self.clock() - synced_at >= self.sync_s:
                    asked_at = self.clock()
                    drained = self._call("drained", self.backend.drained)
                    synced_at = self.clock()
                    with self._lock:
                        self._drained = (drained, asked_at)
            except Exception as e:  # noqa: BLE001 - whatever the backend raised, it is retried
                if failures == 0:
                    log.warning("the %s backend failed: %s: %s", self.backend.name, type(e).__name__, e)
                self.degraded.fail("backend", f"{self.backend.name}: {type(e).__name__}: {e}")
                self._halt.wait(BACKOFF_S[min(failures, len(BACKOFF_S) - 1)])
                failures += 1
                continue
            if failures:
                log.warning("the %s backend answers again", self.backend.name)
            failures = 0
            self.degraded.ok("backend")
            self._halt.wait(self.poll_s)

    def _call(self, what: str, call: Callable[[], T]) -> T:
        self._calling = (what, self.clock())
        try:
            return call()
        finally:
            self._calling = None
