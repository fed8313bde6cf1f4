"""One scheduling pass: queue order, placement, EASY backfill, preemption. Events in, actions out.

The scheduler owns the allocation state and applies its own decisions to it, so what it returns
is already true in its world; the caller (the twin's clock or the real-time controller) carries
the actions out and reports back with events.
"""

from __future__ import annotations

import heapq
from collections import defaultdict

import numpy as np
from sortedcontainers import SortedList

from neocloud.errors import SchedulingError
from neocloud.model.events import Action, Launch, Preempt
from neocloud.model.fleet import Fleet
from neocloud.model.job import Job
from neocloud.sched.placement import Placement, placement as placement_named
from neocloud.sched.queue import JobRecord, LeastAttainedService, QueuePolicy, queue_policy
from neocloud.sched.state import ClusterState


class Scheduler:
    def __init__(
        self,
        fleet: Fleet,
        *,
        queue: QueuePolicy | str = "fifo",
        placement: Placement | str = "topo",
        backfill: bool = True,
        backfill_depth: int = 100,
        seed: int = 0,
    ) -> None:
        self.state = ClusterState(fleet)
        self.queue = queue_policy(queue) if isinstance(queue, str) else queue
        self.placement = placement_named(placement) if isinstance(placement, str) else placement
        self.backfill = backfill
        self.backfill_depth = backfill_depth
        self.rng = np.random.default_rng(seed)
        self.jobs: dict[str, JobRecord] = {}
        self.running: dict[str, JobRecord] = {}
        self.usage: dict[str, float] = defaultdict(float)  # GPUs held per tenant
        self._ends: SortedList = SortedList()  # (estimated end, seq, job id) of running jobs
        self._wakeups: list[tuple[float, str]] = []
        self._seq = 0
        self._dirty = True
        self.decisions = 0
        self._largest = {t: 0 for t in self.state.type_names}
        for node in fleet.nodes:
            if node.gpu is not None:
                self._largest[node.gpu.name] = self._largest[node.gpu.name] + node.gpus

    # -- events ---------------------------------------------------------------------------------
    def submit(self, job: Job, now: float) -> None:
        if job.id in self.jobs:
            raise SchedulingError(f"job {job.id!r} was already submitted")
        self._check_satisfiable(job)
        rec = JobRecord(job, self._seq)
        self._seq += 1
        self.jobs[job.id] = rec
        self.queue.add(rec)
        self._dirty = True

    def finish(self, job_id: str, now: float, state: str = "COMPLETED") -> None:
        rec = self.jobs[job_id]
        if rec.state == "RUNNING":
            self._stop(rec, now)
        elif rec.state == "PENDING":
            self.queue.remove(rec)
        rec.state = state
        self._dirty = True

    def cancel(self, job_id: str, now: float) -> None:
        self.finish(job_id, now, "CANCELLED")

    # -- the pass -------------------------------------------------------------------------------
    def schedule(self, now: float) -> list[Action]:
        """Launch what can run now, in queue order, backfilling behind a reserved head job."""
        actions: list[Action] = []
        if self.queue.preemptive and len(self.queue):
            actions += self._preempt_for_better_queues(now)
        if not self._dirty and not actions:
            return actions
        self._dirty = False
        launched: list[JobRecord] = []
        shadow: float | None = None  # when the blocked head job is due to start
        spare = 0.0  # GPUs free at the shadow time beyond what the head needs
        scanned = 0
        for rec in self.queue.order(self.usage):
            if self.state.used_milli >= self.state.total_gpus * 1000 and rec.job.gpus > 0:
                break
            if shadow is not None:
                scanned += 1
                if scanned > self.backfill_depth:
                    break
                est = rec.remaining_estimate(now)
                if not ((est is not None and now + est <= shadow) or rec.job.gpus <= spare):
                    continue
            alloc = self.placement.place(self.state, rec.job, self.rng)
            self.decisions += 1
            if alloc is None:
                if shadow is None:
                    if not self.backfill:
                        break
                    shadow, spare = self._reservation(rec, now)
                continue
            if shadow is not None and not (est is not None and now + est <= shadow):
                spare -= rec.job.gpus
            self._start(rec, alloc, now)
            launched.append(rec)
            actions.append(Launch(rec.job.id, alloc.nodes, alloc.gpus))
        for rec in launched:
            self.queue.remove(rec)
        return actions

    def next_wakeup(self, now: float) -> float | None:
        """The earliest time after `now` the scheduler wants a Tick (a job changing LAS queue)."""
        while self._wakeups:
            t, job_id = self._wakeups[0]
            rec = self.jobs[job_id]
            if rec.state == "RUNNING" and t > now:
                return t
            heapq.heappop(self._wakeups)
            if rec.state == "RUNNING" and isinstance(self.queue, LeastAttainedService):
                wake = self.queue.next_demotion(rec, now)
                if wake is not None and wake > now:
                    heapq.heappush(self._wakeups, (wake, job_id))
        return None

    # -- internals ------------------------------------------------------------------------------
    def _check_satisfiable(self, job: Job) -> None:
        pool = [self._largest[t] for t in job.gpu_types if t in self._largest] if job.gpu_types \
            else list(self._largest.values())
        if job.gpu_types and not pool:
            raise SchedulingError(
                f"job {job.id!r} asks for GPU type {'|'.join(job.gpu_types)}, which this fleet does not have; "
                f"it has {', '.join(self.state.type_names) or 'no GPUs'}")
        if job.gpus > max(pool, default=0):
            raise SchedulingError(
                f"job {job.id!r} asks for {job.gpus:g} GPUs but the largest pool of one type holds "
                f"{max(pool, default=0)}; ask for fewer GPUs")
        if job.gpus_per_node and job.gpus_per_node > self.state.max_gpus:
            raise SchedulingError(
                f"job {job.id!r} asks for {job.gpus_per_node} GPUs per node but no node has more "
                f"than {self.state.max_gpus}")

    def _start(self, rec: JobRecord, alloc, now: float) -> None:
        self.state.allocate(alloc)
        rec.state = "RUNNING"
        rec.started_s = now
        if rec.first_start_s is None:
            rec.first_start_s = now
        self.running[rec.job.id] = rec
        self.usage[rec.job.tenant] += rec.job.gpus
        est = rec.remaining_estimate(now)
        self._ends.add((now + est if est is not None else float("inf"), rec.seq, rec.job.id))
        if isinstance(self.queue, LeastAttainedService):
            wake = self.queue.next_demotion(rec, now)
            if wake is not None:
                heapq.heappush(self._wakeups, (wake, rec.job.id))

    def _stop(self, rec: JobRecord, now: float) -> None:
        est = rec.remaining_estimate(rec.started_s)
        self._ends.remove((rec.started_s + est if est is not None else float("inf"), rec.seq, rec.job.id))
        self.state.release(rec.job.id)
        rec.attained_gpu_s = rec.attained(now)
        rec.ran_s += now - rec.started_s
        rec.started_s = None
        del self.running[rec.job.id]
        self.usage[rec.job.tenant] -= rec.job.gpus

    def _reservation(self, head: JobRecord, now: float) -> tuple[float, float]:
        """EASY backfill's shadow time for the head job, and the GPUs spare at that time.

        Counted in GPUs as running jobs' estimates end; a job with no estimate never ends, so
        with no estimates at all only jobs that fit in the spare GPUs are backfilled.
        """
        free = self.state.total_gpus - self.state.used_milli / 1000
        for end, _, job_id in self._ends:
            if free >= head.job.gpus:
                break
            if end == float("inf"):
                return float("inf"), 0.0
            free += self.running[job_id].job.gpus
            now = end
        return now, free - head.job.gpus

    def _preempt_for_better_queues(self, now: float) -> list[Action]:
        """LAS: a blocked job displaces running jobs from worse queues when that makes it fit."""
        assert isinstance(self.queue, LeastAttainedService)
        las = self.queue
        actions: list[Action] = []
        worst_first = sorted(self.running.values(), key=lambda r: las.running_key(r, now), reverse=True)
        for rec in list(self.queue.order(self.usage)):
            if not worst_first or las.running_key(worst_first[0], now)[:2] <= rec.key[:2]:
                break  # nobody running sits in a worse queue than this job or any after it
            if self.placement.place(self.state, rec.job, self.rng) is not None:
                continue
            taken = []
            fits = False
            while worst_first and las.running_key(worst_first[0], now)[:2] > rec.key[:2]:
                victim = worst_first.pop(0)
                taken.append((victim, self.state.release(victim.job.id)))
                if self.placement.place(self.state, rec.job, self.rng) is not None:
                    fits = True
                    break
            for _, alloc in taken:  # put them back; a real preemption goes through _stop
                self.state.allocate(alloc)
            if not fits:
                worst_first = [v for v, _ in taken] + worst_first
                continue
            for victim, _ in taken:
                self._stop(victim, now)
                victim.preemptions += 1
                victim.state = "PENDING"
                self.queue.add(victim)
                actions.append(Preempt(victim.job.id, f"las: {rec.job.id} has attained less service"))
            self._dirty = True
        return actions
