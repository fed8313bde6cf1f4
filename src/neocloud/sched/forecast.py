"""When pending jobs are expected to start: the production scheduler run forward on a copy.

Slurm's `squeue --start` walks reservations in queue order from running jobs' estimated ends.
This forecast replays the scheduler's own decisions instead (its queue policy, placement,
backfill, quotas and preemptions) in simulated time on a copy of the live state: running jobs end
at their estimates, and no new job arrives. A job without an estimate is taken to run `default_s`.
A job already past its estimate is taken to overrun it by as much again (at least a minute):
users' estimates are often low, and one that has overrun by an hour rarely ends in the next
second.

Ends close together are taken in one pass: those within `step_s`, or within `rel_step` of the
time from now (a start ten hours away is told to the minute, not the second). A pass costs the
same for one end as for fifty, so this bounds the passes by the horizon's length, not by the
number of running jobs; starts come out at most that much late.
"""

from __future__ import annotations

import copy
import gc
import heapq
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from neocloud.model.events import Action, Launch, Preempt
from neocloud.sched.queue import JobRecord
from neocloud.sched.scheduler import Scheduler

DEFAULT_S = 3_600.0  # the run time taken for a job that gives no estimate
HORIZON_S = 30 * 86_400.0  # a job not started within this is forecast to start "not in view"
STEP_S = 1.0  # ends this close together share a pass
REL_STEP = 0.01  # ... or this close, as a share of the time from now


@dataclass(slots=True)
class Forecast:
    """Expected starts (and where) of pending jobs, and expected ends of the jobs with estimates
    that run or start, in the scheduler's clock; a pending job missing from `start` is not expected
    within the horizon."""

    start: dict[str, float] = field(default_factory=dict)
    end: dict[str, float] = field(default_factory=dict)
    where: dict[str, tuple[tuple[int, ...], tuple[tuple[int, ...], ...]]] = field(default_factory=dict)
    passes: int = 0
    why: str = ""  # why `until_started` did not start at once, as the first pass saw it

    def expected(self, job_id: str, now: float) -> tuple[float | None, float | None]:
        """A job's expected start and end as told at `now`: one already due reads as now."""
        start, end = self.start.get(job_id), self.end.get(job_id)
        return (None if start is None else max(start, now)), (None if end is None else max(end, now))


_lock = threading.Lock()
_running = 0  # forecasts running now, in any thread
_was_enabled = False  # whether the collector ran before the first of them paused it


@contextmanager
def collector_paused() -> Iterator[None]:
    """Cyclic garbage collection held off while forecasts run. A run makes hundreds of thousands
    of short-lived objects, and the collections they set off walk the whole heap: a tenth of the
    run at 100,000 GPUs. Reference counting frees them all the same; the collector resumes (if it
    ran before) once the last forecast running ends."""
    global _running, _was_enabled
    with _lock:
        if _running == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _running += 1
    try:
        yield
    finally:
        with _lock:
            _running -= 1
            if _running == 0 and _was_enabled:
                gc.enable()


def snapshot(sched: Scheduler) -> Scheduler:
    """A copy of the scheduler to run forward, leaving the live one (its generator included) as it
    was. The fleet and the jobs' requests, which no pass changes, are shared, not copied."""
    memo: dict[int, object] = {id(sched.state.fleet): sched.state.fleet}
    for rec in sched.jobs.values():
        memo[id(rec.job)] = rec.job
    with collector_paused():
        return copy.deepcopy(sched, memo)


def forecast(sched: Scheduler, now: float, *, default_s: float = DEFAULT_S, horizon_s: float = HORIZON_S,
             step_s: float = STEP_S, rel_step: float = REL_STEP, copy: bool = True,
             until_started: str | None = None) -> Forecast:
    """Run `sched` forward from `now` until its queue drains, the horizon passes or the job
    `until_started` starts: a copy of it, or (`copy=False`) the scheduler itself, for a caller that
    took the snapshot already."""
    with collector_paused():
        return _forecast(snapshot(sched) if copy else sched, now, default_s, horizon_s, step_s, rel_step,
                         until_started)


def _forecast(twin: Scheduler, now: float, default_s: float, horizon_s: float, step_s: float, rel_step: float,
              until_started: str | None) -> Forecast:
    out = Forecast()
    pending = {job_id for job_id, rec in twin.jobs.items() if rec.state == "PENDING"}
    # Held by dependencies or a throttle: released in the twin as jobs end, but told no start or end.
    gated = {job_id for job_id, rec in twin.jobs.items() if rec.state == "WAITING"}
    ends: list[tuple[float, int, str]] = []  # (end, version, job id); a preemption bumps the version
    version: dict[str, int] = {}

    def runs(rec: JobRecord, t: float) -> None:
        ran = rec.ran_s + (t - rec.started_s if rec.started_s is not None else 0.0)
        told = rec.job.estimate_s if rec.job.estimate_s is not None else default_s
        left = told - ran if told > ran else max(ran - told, 60.0)  # past its estimate: as long again
        v = version[rec.job.id] = version.get(rec.job.id, 0) + 1
        if rec.job.estimate_s is not None and rec.job.id not in gated:
            out.end[rec.job.id] = t + left
        heapq.heappush(ends, (t + left, v, rec.job.id))

    def apply(actions: list[Action], t: float) -> None:
        out.passes += 1
        for a in actions:
            if isinstance(a, Launch):
                if a.job_id in pending and a.job_id not in out.start:
                    out.start[a.job_id] = t
                    out.where[a.job_id] = (a.nodes, a.gpus)
                runs(twin.running[a.job_id], t)
            elif isinstance(a, Preempt):
                version[a.job_id] = version.get(a.job_id, 0) + 1  # its end is off until it runs again
                out.end.pop(a.job_id, None)

    for rec in list(twin.running.values()):
        runs(rec, now)
    t, until = now, now + horizon_s
    apply(twin.schedule(t), t)
    if until_started is not None and until_started not in out.start and until_started in twin.jobs:
        out.why = twin.why_waiting(until_started)
    while len(out.start) < len(pending) and until_started not in out.start:
        wake = twin.next_wakeup(t)
        while ends and version.get(ends[0][2]) != ends[0][1]:
            heapq.heappop(ends)  # preempted since: not an end
        nxt = min(ends[0][0] if ends else math.inf, wake if wake is not None and wake > t else math.inf)
        if nxt > until:
            break
        t, upto = nxt, nxt + max(step_s, rel_step * (nxt - now))
        while ends and ends[0][0] <= upto:
            end, v, job_id = heapq.heappop(ends)
            if version.get(job_id) == v and job_id in twin.running:
                t = max(t, end)
                twin.finish(job_id, t)
        apply(twin.schedule(t), t)
    return out
