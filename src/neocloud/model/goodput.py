"""Goodput: the GPU-time a job turned into progress, and where the rest of its allocation went.

What the control plane sees for itself is measured: how long a node had been failing before the job
was stopped (a signal's observed time to the interruption), the work since the job's last
checkpoint that a failure threw away (from its checkpoint directory's last write), and how long it
waited for GPUs again. What only the job knows, the cost of one checkpoint save and of a restart,
it declares in its spec (`checkpoint_cost`, `restart_cost`); without them those losses count as 0.
ETTR, effective training time, is productive time over wall time since the job first started.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

LOSSES = ("detection", "restart", "recomputation", "checkpoint writes")
LLAMA3_RATE = 0.474 / 1000 / 86400  # interruptions per GPU-second, Llama 3's (../shared/reference/reliability.md)
PRIOR_GPU_S = 1000 * 86400.0  # the published rate counts as this much history before a fleet has its own
DEFAULT_CHECKPOINT_S = 60.0  # a save's cost when the job does not say


def fixed_interval(value: Any) -> float | None:
    """A spec's checkpoint interval in seconds, or None (not given, or 'auto': chosen at each start)."""
    return float(value) if isinstance(value, int | float) else None


def daly(checkpoint_s: float, mtbi_s: float, restart_s: float = 0.0) -> float:
    """Daly's first-order optimum checkpoint interval: sqrt(2 C (M + R))."""
    return math.sqrt(2 * checkpoint_s * (mtbi_s + restart_s))


def auto_interval(gpus: float, interruptions: int, gpu_s: float, checkpoint_s: float | None,
                  restart_s: float | None) -> float:
    """The interval for a job that asks for `auto`: Daly's, from the failure rate this fleet has shown
    (its interruptions over the GPU-time it has run, starting from the published rate)."""
    rate = (LLAMA3_RATE * PRIOR_GPU_S + interruptions) / (PRIOR_GPU_S + gpu_s)
    return daly(checkpoint_s or DEFAULT_CHECKPOINT_S, 1 / (rate * max(gpus, 1)), restart_s or 0.0)


@dataclass(frozen=True, slots=True)
class Goodput:
    allocated_gpu_s: float
    productive_gpu_s: float
    lost_gpu_s: dict[str, float]
    queueing_after_failure_s: float
    wall_s: float
    ettr: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"allocated_gpu_s": self.allocated_gpu_s, "productive_gpu_s": self.productive_gpu_s,
                "lost_gpu_s": self.lost_gpu_s, "queueing_after_failure_s": self.queueing_after_failure_s,
                "wall_s": self.wall_s, "ettr": self.ettr}


def goodput(gpus: float, run_s: float, attempts: int, ledger: dict[str, float], *, until: float,
            checkpoint_interval: float | None = None, checkpoint_cost: float | None = None,
            restart_cost: float | None = None) -> Goodput:
    """A job's goodput from its run time (all attempts), its ledger of measured losses and its costs."""
    lost_s = {
        "detection": ledger.get("detection_s", 0.0),
        "recomputation": ledger.get("recomputation_s", 0.0),
        "restart": min((restart_cost or 0.0) * max(attempts - 1, 0), run_s),
        "checkpoint writes": 0.0,
    }
    if checkpoint_interval and checkpoint_cost:
        lost_s["checkpoint writes"] = (run_s // (checkpoint_interval + checkpoint_cost)) * checkpoint_cost
    total = min(sum(lost_s.values()), run_s)
    first = ledger.get("first_start")
    wall = max(until - first, 0.0) if first is not None else 0.0
    productive_s = run_s - total
    return Goodput(round(gpus * run_s, 3), round(gpus * productive_s, 3),
                   {k: round(gpus * lost_s[k], 3) for k in LOSSES}, round(ledger.get("queueing_s", 0.0), 3),
                   round(wall, 3), round(productive_s / wall, 4) if wall > 0 else None)
