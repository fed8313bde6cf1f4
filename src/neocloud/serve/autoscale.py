"""How many replicas a service's load calls for: Kubernetes' horizontal autoscaler arithmetic,
wanted = ceil(load / target) within [min, max], on the load the gateway sees (requests in flight,
or answered per second). Up at once; down only as far as the highest number wanted over the last
`cooldown_s` (the autoscaler's scale-down stabilisation), so a lull between bursts keeps the
replicas the next burst needs, and a service with min 0 goes to zero only after that long idle."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

TOLERANCE = 0.1  # load within 10% of the target per replica now: no change (the autoscaler's own)


@dataclass(slots=True)
class Autoscaler:
    min: int
    max: int
    target: float  # per replica
    cooldown_s: float = 30.0
    _wanted: deque[tuple[float, int]] = field(default_factory=deque)  # (when, wanted then)

    def wanted(self, now: float, load: float, current: int) -> int:
        """Replicas for `load` (the service's total) with `current` running now."""
        raw = math.ceil(load / self.target - 1e-9) if load > 0 else 0
        if current and abs(load / (current * self.target) - 1) <= TOLERANCE:
            raw = current
        raw = min(max(raw, self.min), self.max)
        self._wanted.append((now, raw))
        while self._wanted and self._wanted[0][0] < now - self.cooldown_s:
            self._wanted.popleft()
        return max(w for _, w in self._wanted)
