"""Which jobs may not be queued yet: those whose dependencies are not met, and array tasks beyond
their array's throttle (Slurm's `--dependency` and `--array=...%K`).

A job waits here, out of the queue, until every dependency is met and its array has room; then it is
released into the queue. A dependency that can never be met (afterok on a job that did not complete,
afternotok on one that did) dooms the job: it fails with the reason. An admitted task keeps its
array's slot until it ends, requeues and preemptions included, so the tasks running never exceed
the throttle.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

from neocloud.model.job import Dependency, Job

OK = "COMPLETED"
_VERB = {"afterok": "complete", "afterany": "end", "afternotok": "fail"}


@dataclass(frozen=True, slots=True)
class Released:
    """Its dependencies are met and its array has room: the job is queued."""

    job_id: str


@dataclass(frozen=True, slots=True)
class Unmet:
    """A dependency that can never be met: the job has failed."""

    job_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Waiting:
    """The job still waits, for this reason (it changed)."""

    job_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class OverLimit:
    """The job has run its time limit: stop it; it ends TIMEOUT."""

    job_id: str
    reason: str


News = Released | Unmet | Waiting | OverLimit


@dataclass(slots=True)
class _Wait:
    dep: Dependency
    left: set[str]  # targets not ended yet
    failed: tuple[str, str] | None = None  # the first target that ended other than COMPLETED, and how

    def verdict(self) -> bool | None:
        """True: met; False: can never be met; None: not yet known."""
        when = self.dep.when
        if when == "afterok" and self.failed is not None:
            return False
        if self.left:
            return None
        return when != "afternotok" or self.failed is not None

    def waiting(self) -> str:
        d = self.dep
        what = f"job {d.job}" if not d.tasks else f"array {d.job} ({len(self.left)} of {len(d.tasks)} tasks left)"
        return f"waiting for {what} to {_VERB[d.when]} ({d.when})"

    def unmet(self) -> str:
        d = self.dep
        what = f"job {d.job}" if not d.tasks else f"array {d.job}"
        if d.when == "afterok" and self.failed is not None:
            target, state = self.failed
            how = f"ended {state}" if not d.tasks else f"task job {target} ended {state}"
            return f"dependency never satisfied: {what} {how} ({d.when})"
        return f"dependency never satisfied: {what} completed ({d.when})"


class Gates:
    def __init__(self) -> None:
        self._waits: dict[str, list[_Wait]] = {}  # job -> its dependencies not yet met
        self._dependents: defaultdict[str, set[str]] = defaultdict(set)  # target -> jobs waiting on it
        self._jobs: dict[str, Job] = {}  # jobs held here (dependencies or throttle)
        self._admitted: defaultdict[str, set[str]] = defaultdict(set)  # array -> tasks queued or running
        self._throttled: defaultdict[str, list[tuple[int, str]]] = defaultdict(list)  # array -> (index, job)

    def __contains__(self, job_id: str) -> bool:
        return job_id in self._jobs

    def arrive(self, job: Job, ended: Mapping[str, str]) -> News | None:
        """A job submitted: None if it may be queued now, else what holds it (Waiting or Unmet).
        `ended` tells how targets that ended before it came ended."""
        waits = []
        for dep in job.depends_on:
            w = _Wait(dep, set())
            for t in dep.targets:
                if t in ended:
                    self._saw(w, t, ended[t])
                else:
                    w.left.add(t)
            verdict = w.verdict()
            if verdict is False:
                return Unmet(job.id, w.unmet())
            if verdict is None:
                waits.append(w)
        if waits:
            self._jobs[job.id] = job
            self._waits[job.id] = waits
            for w in waits:
                for t in w.left:
                    self._dependents[t].add(job.id)
            return Waiting(job.id, waits[0].waiting())
        return self._admit(job)

    def running(self, job: Job) -> None:
        """A job found running (adopted after a restart) holds its array's slot."""
        if job.array_job is not None:
            self._admitted[job.array_job].add(job.id)

    def held(self) -> list[Job]:
        """The jobs held here, oldest first: in no queue yet, but the tenant's all the same."""
        return sorted(self._jobs.values(), key=lambda j: _order(j.id))

    def reason(self, job_id: str) -> str:
        waits = self._waits.get(job_id)
        if waits:
            return waits[0].waiting()
        job = self._jobs.get(job_id)
        if job is not None and job.array_job is not None:
            return f"waiting for a slot: array {job.array_job} runs at most {job.throttle} tasks at once"
        return ""

    def ended(self, ended: Job, state: str) -> list[News]:
        """A job ended as `state` (or left while held): what that releases, dooms or changes."""
        news: list[News] = []
        job_id = ended.id
        self._jobs.pop(job_id, None)
        for w in self._waits.pop(job_id, []):
            for t in w.left:
                self._forget_dependent(t, job_id)
        array = ended.array_job
        if array is not None and job_id in self._admitted.get(array, ()):
            self._admitted[array].discard(job_id)
            news += self._next_task(array)
            if not self._admitted[array] and not self._throttled.get(array):
                self._admitted.pop(array, None)
                self._throttled.pop(array, None)
        for dependent in sorted(self._dependents.pop(job_id, ()), key=_order):
            waits = self._waits.get(dependent)
            if waits is None:
                continue
            for w in waits:
                if job_id in w.left:
                    w.left.discard(job_id)
                    self._saw(w, job_id, state)
            doomed = next((w for w in waits if w.verdict() is False), None)
            if doomed is not None:
                news.append(Unmet(dependent, doomed.unmet()))
                continue  # the scheduler fails it, and that end clears it from here
            waits[:] = [w for w in waits if w.verdict() is None]
            if waits:
                news.append(Waiting(dependent, waits[0].waiting()))
                continue
            del self._waits[dependent]
            held = self._jobs.pop(dependent)
            news.append(self._admit(held) or Released(dependent))
        return news

    def _saw(self, w: _Wait, target: str, state: str) -> None:
        if state != OK and w.failed is None:
            w.failed = (target, state)

    def _forget_dependent(self, target: str, job_id: str) -> None:
        waiting = self._dependents.get(target)
        if waiting is not None:
            waiting.discard(job_id)
            if not waiting:
                del self._dependents[target]

    def _admit(self, job: Job) -> News | None:
        """Queue the job if its array has room (None), else hold it for a slot (Waiting)."""
        array = job.array_job
        if array is None or job.throttle is None:
            if array is not None:
                self._admitted[array].add(job.id)
            return None
        if len(self._admitted[array]) < job.throttle:
            self._admitted[array].add(job.id)
            return None
        self._jobs[job.id] = job
        heapq.heappush(self._throttled[array], (job.array_index or 0, job.id))
        return Waiting(job.id, self.reason(job.id))

    def _next_task(self, array: str) -> list[News]:
        heap = self._throttled.get(array)
        while heap:
            _, job_id = heapq.heappop(heap)
            job = self._jobs.get(job_id)
            if job is None or job_id in self._waits:
                continue  # left, or waiting on dependencies again (not possible today)
            del self._jobs[job_id]
            self._admitted[array].add(job_id)
            return [Released(job_id)]
        return []


def _order(job_id: str) -> tuple[int, str]:
    return (int(job_id), job_id) if job_id.isdigit() else (1 << 62, job_id)
