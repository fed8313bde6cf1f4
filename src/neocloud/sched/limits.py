"""Time limits (Slurm's --time): when each running job must be stopped.

A job's limit counts all its attempts' run time, so a requeue or a preemption does not give it a
fresh limit (Slurm's counts each attempt alone); one already past it is stopped as soon as it
starts again. Each job is told once per attempt.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping

from neocloud.sched.queue import JobRecord


class TimeLimits:
    def __init__(self) -> None:
        self._due: list[tuple[float, float, str]] = []  # (deadline, started, job id) of running jobs with one
        self._told: set[str] = set()  # running jobs told to stop, until they stop

    def started(self, rec: JobRecord, now: float) -> None:
        limit = rec.job.time_limit_s
        if limit is not None:
            heapq.heappush(self._due, (now + max(limit - rec.ran_s, 0.0), now, rec.job.id))

    def stopped(self, job_id: str) -> None:
        self._told.discard(job_id)

    def over(self, running: Mapping[str, JobRecord], now: float) -> list[JobRecord]:
        """Running jobs that reached their limit by `now` and were not told yet."""
        out = []
        while self._due and self._due[0][0] <= now:
            _, started, job_id = heapq.heappop(self._due)
            rec = running.get(job_id)
            if rec is not None and rec.started_s == started and job_id not in self._told:
                self._told.add(job_id)
                out.append(rec)
        return out

    def next_due(self, running: Mapping[str, JobRecord]) -> float | None:
        """The next deadline of a job still on the attempt it was set for."""
        while self._due:
            _, started, job_id = self._due[0]
            rec = running.get(job_id)
            if rec is not None and rec.started_s == started:
                return self._due[0][0]
            heapq.heappop(self._due)
        return None


def limit_text(seconds: float) -> str:
    """A time limit as a user would write it: '30s', '90m', '2h'."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"
