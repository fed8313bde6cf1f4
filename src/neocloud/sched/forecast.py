"""When pending jobs are expected to start: the production scheduler run forward on a copy.

Slurm's `squeue --start` walks reservations in queue order from running jobs' estimated ends.
This forecast replays the scheduler's own decisions instead (its queue policy, placement,
backfill, quotas and preemptions) in simulated time on a copy of the live state: running jobs end
at their estimates, and no new job arrives. A job without an estimate is taken to run `default_s`
in all (at least a minute more, if it has run longer already).
"""

from __future__ import annotations

import copy
import heapq
import math
from dataclasses import dataclass, field

from neocloud.model.events import Action, Launch, Preempt
from neocloud.sched.queue import JobRecord
from neocloud.sched.scheduler import Scheduler

DEFAULT_S = 3_600.0  # the run time taken for a job that gives no estimate
HORIZON_S = 30 * 86_400.0  # a job not started within this is forecast to start "not in view"


@dataclass(slots=True)
class Forecast:
    """Expected starts of pending jobs and expected ends of every job that starts or runs, in the
    scheduler's clock; a pending job missing from `start` is not expected within the horizon."""

    start: dict[str, float] = field(default_factory=dict)
    end: dict[str, float] = field(default_factory=dict)


def forecast(sched: Scheduler, now: float, *, default_s: float = DEFAULT_S,
             horizon_s: float = HORIZON_S) -> Forecast:
    """Run a copy of `sched` forward from `now` until its queue drains or the horizon passes."""
    twin = copy.deepcopy(sched)  # the live scheduler, its generator included, is left as it was
    out = Forecast()
    pending = {job_id for job_id, rec in twin.jobs.items() if rec.state == "PENDING"}
    ends: list[tuple[float, int, str]] = []  # (end, version, job id); a preemption bumps the version
    version: dict[str, int] = {}

    def runs(rec: JobRecord, t: float) -> None:
        left = rec.remaining_estimate(t)
        if left is None:
            ran = rec.ran_s + (t - rec.started_s if rec.started_s is not None else 0.0)
            left = max(default_s - ran, 60.0)
        v = version[rec.job.id] = version.get(rec.job.id, 0) + 1
        out.end[rec.job.id] = t + left
        heapq.heappush(ends, (t + left, v, rec.job.id))

    def apply(actions: list[Action], t: float) -> None:
        for a in actions:
            if isinstance(a, Launch):
                if a.job_id in pending:
                    out.start.setdefault(a.job_id, t)
                runs(twin.running[a.job_id], t)
            elif isinstance(a, Preempt):
                version[a.job_id] = version.get(a.job_id, 0) + 1  # its end is off until it runs again
                out.end.pop(a.job_id, None)

    for rec in list(twin.running.values()):
        runs(rec, now)
    t, until = now, now + horizon_s
    apply(twin.schedule(t), t)
    while len(out.start) < len(pending):
        wake = twin.next_wakeup(t)
        while ends and version.get(ends[0][2]) != ends[0][1]:
            heapq.heappop(ends)  # preempted since: not an end
        nxt = min(ends[0][0] if ends else math.inf, wake if wake is not None and wake > t else math.inf)
        if nxt > until:
            break
        t = nxt
        while ends and ends[0][0] <= t:
            _, v, job_id = heapq.heappop(ends)
            if version.get(job_id) == v and job_id in twin.running:
                twin.finish(job_id, t)
        apply(twin.schedule(t), t)
    return out
