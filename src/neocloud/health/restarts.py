"""A job interrupted by a node's failure: what the interruption cost, and whether it runs again.

Lost time is what goodput accounting charges (and a tenant is credited): recomputation, the work
from the last checkpoint to the fault's first sign; detection, from then to the stop; the restart
the job declares. The two windows meet, never overlap: together they run from the checkpoint to
the stop. A job runs again, from its last checkpoint, until it has used its restarts.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_RESTARTS = 3  # restarts after node failures a job gets unless its spec says otherwise


@dataclass(frozen=True, slots=True)
class Interruption:
    detection_s: float
    recomputation_s: float
    restart_s: float
    interruptions: int  # this one included
    limit: int

    @property
    def lost_s(self) -> float:
        return self.detection_s + self.recomputation_s + self.restart_s

    @property
    def gives_up(self) -> bool:
        return self.interruptions > self.limit


def interruption(*, now: float, started_at: float | None, checkpoint_at: float | None, observed_at: float | None,
                 interruptions: int, limit: int | None = None, restart_cost: float | None = None) -> Interruption:
    """`interruptions`: those before this one; `observed_at`: when the fault was first seen (else now)."""
    start = now if started_at is None else started_at
    saved = max(start, checkpoint_at or 0.0)
    broken = max(now if observed_at is None else observed_at, start)  # the attempt ran on a broken node since
    return Interruption(detection_s=max(now - broken, 0.0), recomputation_s=max(broken - saved, 0.0),
                        restart_s=float(restart_cost or 0.0), interruptions=interruptions + 1,
                        limit=MAX_RESTARTS if limit is None else limit)


LAUNCH_BACKOFF_S = (2.0, 5.0, 15.0, 30.0)  # waits after the 1st, 2nd, ... failed start of a job


def launch_retry(failures: int) -> float | None:
    """After a job's `failures`-th failed start: how long it waits before the next try, or None: it
    fails. A backend that is down for a while (slurmctld restarting) costs a job a wait, not its run;
    one that keeps refusing the job says why after a minute."""
    return LAUNCH_BACKOFF_S[failures - 1] if 1 <= failures <= len(LAUNCH_BACKOFF_S) else None
