"""What keeps the service from doing its whole job right now, part by part (the backend, the store),
and since when. /healthz says so; a gauge shows it and a counter counts each episode, so an
operator's alert fires on a backend that keeps failing, not on one that blipped once."""

from __future__ import annotations

import threading
from collections.abc import Callable

from neocloud.control.metrics import Metrics


class Degraded:
    def __init__(self, metrics: Metrics, clock: Callable[[], float]) -> None:
        self.metrics, self.clock = metrics, clock
        self._why: dict[str, tuple[str, float]] = {}  # part -> (what is wrong, since when)
        self._lock = threading.Lock()

    def fail(self, part: str, why: str) -> None:
        with self._lock:
            first = part not in self._why
            self._why[part] = (why, self._why[part][1] if not first else self.clock())
        self.metrics.errors.labels(part=part).inc()
        if first:
            self.metrics.degraded_episodes.labels(part=part).inc()
            self.metrics.degraded.labels(part=part).set(1)

    def ok(self, part: str) -> None:
        if part in self._why:
            with self._lock:
                self._why.pop(part, None)
            self.metrics.degraded.labels(part=part).set(0)

    def of(self, part: str) -> str | None:
        entry = self._why.get(part)
        return None if entry is None else entry[0]

    def reasons(self) -> dict[str, dict[str, object]]:
        """Each degraded part: what is wrong and for how long (seconds)."""
        now = self.clock()
        with self._lock:
            return {p: {"reason": why, "for_s": round(now - since, 1)} for p, (why, since) in sorted(self._why.items())}
