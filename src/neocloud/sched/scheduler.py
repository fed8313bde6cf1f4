"""The Scheduler: events in, actions out, and the pass that turns a queue into launches.

A pass takes guaranteed capacity back from borrowers (`reclaim`), lets better-ranked jobs displace
worse ones under a preemptive queue policy (`preemption`), then offers pending jobs to placement in
queue order (within-quota first, `quota`), backfilling behind the blocked head job (`backfill`).

The scheduler owns the allocation state and applies its own decisions to it, so what it returns
is already true in its world; the caller (the twin's clock or the real-time controller) carries
the actions out and reports back with events.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Iterable, Mapping

import numpy as np
from sortedcontainers import SortedList

from neocloud.errors import SchedulingError
from neocloud.model.events import Action, Launch
from neocloud.model.fleet import Fleet
from neocloud.model.job import Job
from neocloud.sched.backfill import Reservation, Reservations, place_behind
from neocloud.sched.gates import Gates, News, OverLimit, Released, Unmet
from neocloud.sched.kept import KeptPlacement
from neocloud.sched.limits import TimeLimits, limit_text
from neocloud.sched.placement import Placement
from neocloud.sched.placements import placement as placement_named
from neocloud.sched.preemption import preempt_for_better_queues
from neocloud.sched.queue import JobRecord, Key, QueuePolicy, queue_policy
from neocloud.sched.quota import Quotas
from neocloud.sched.reclaim import reclaim
from neocloud.sched.state import FULL, Allocation, ClusterState
from neocloud.sched.why import Reasons, why_unsatisfiable

Request = tuple[float, int | None, tuple[str, ...], int, int]  # all that decides whether a job could ever fit
ACTIVE = ("PENDING", "RUNNING", "HELD", "WAITING")  # WAITING: held by its dependencies or its array's throttle


class Scheduler:
    """The core's scheduler: it owns the allocation state, so what it returns is already true in it."""

    def __init__(
        self,
        fleet: Fleet,
        *,
        queue: QueuePolicy | str = "neocloud",
        placement: Placement | str = "neocloud",
        backfill: bool = True,
        backfill_depth: int = 100,
        preempt_depth: int = 8,
        seed: int = 0,
        quotas: dict[str, float] | None = None,
        borrowing: bool = True,
    ) -> None:
        self.state = ClusterState(fleet)
        self.queue = queue_policy(queue) if isinstance(queue, str) else queue
        policy = placement_named(placement) if isinstance(placement, str) else placement
        self.placement: Placement = KeptPlacement(policy, self.state)
        self.backfill = backfill
        self.backfill_depth = backfill_depth
        self.preempt_depth = preempt_depth  # blocked jobs a pass tries to make room for
        self.rng = np.random.default_rng(seed)
        self.jobs: dict[str, JobRecord] = {}
        self.running: dict[str, JobRecord] = {}
        self.usage: defaultdict[str, float] = defaultdict(float)  # GPUs held per tenant
        self.quota = Quotas(self.state.total_gpus, borrowing=borrowing)
        self._reserved: Reservation | None = None  # the blocked head's, as the last pass left it
        self._unreserved: tuple[JobRecord, float, int] | None = None  # a blocked head whose reservation waits
        self.decisions = 0
        self._ends = SortedList()  # (estimated end, seq, job id) of running jobs
        # Running jobs by rank, for preemption: those whose rank stays put (by running key), and the rest.
        self._steady = SortedList()  # (running key, job id)
        self._steady_rank: dict[str, tuple[Key, str]] = {}
        self._moving: dict[str, JobRecord] = {}
        self._wakeups: list[tuple[float, str]] = []
        self._seq = 0
        self._dirty = True
        self._rerank = False  # set when queue ranks may have changed: an arrival or a demotion
        self._seen_version = self.state.version
        self._running_version = 0  # bumped whenever a job starts or stops
        self._reservations = Reservations()
        self._unsatisfiable: dict[Request, str | None] = {}  # request -> why no placement ever fits
        self._reasons = Reasons()
        self.gates = Gates()
        self._news: list[News] = []  # what gates and time limits decided, for the caller to carry out
        self.limits = TimeLimits()
        self.set_quotas(quotas or {})

    # -- quotas ---------------------------------------------------------------------------------
    def set_quotas(self, guarantees: dict[str, float]) -> None:
        """Guaranteed GPUs per tenant; the rest of the fleet is the on-demand pool. Running jobs keep
        the quota they started under."""
        self.quota.set(guarantees)
        self._dirty = True

    @property
    def quotas(self) -> dict[str, float]:
        """Guaranteed GPUs per tenant (those with a guarantee)."""
        return self.quota.guaranteed

    @property
    def on_demand_gpus(self) -> float:
        return self.quota.on_demand_gpus

    @property
    def pool_use(self) -> defaultdict[str, float]:
        """GPUs running under each quota: a tenant's guarantee, or the on-demand pool (`ON_DEMAND`)."""
        return self.quota.use

    @property
    def borrowing(self) -> bool:
        """Whether idle guaranteed capacity may be lent."""
        return self.quota.borrowing

    @borrowing.setter
    def borrowing(self, lend: bool) -> None:
        self.quota.borrowing = lend

    def guarantees(self) -> dict[str, dict[str, float]]:
        """Each tenant's guarantee now: GPUs guaranteed, held within it, held beyond it (borrowed or in
        the on-demand pool), and asked for by its waiting jobs that would run within it."""
        return self.quota.report(self.queue.order(self.usage), self.usage)

    # -- events ---------------------------------------------------------------------------------
    def submit(self, job: Job, now: float, ran_s: float = 0.0, ended: Mapping[str, str] | None = None) -> None:
        """Queue a job; `ran_s` is what earlier attempts ran (a job requeued after a restart). A job
        with dependencies not yet met, or an array task beyond its throttle, waits out of the queue
        (WAITING); one whose dependency can never be met fails at once. `ended` says how the jobs
        it depends on that are over ended (COMPLETED, FAILED, ...)."""
        rec = self._record(job, ran_s)
        held = self.gates.arrive(job, ended or {})
        if held is None:
            self.queue.add(rec)
            self._dirty = self._rerank = True
            return
        rec.state = "FAILED" if isinstance(held, Unmet) else "WAITING"
        self._news.append(held)

    def check(self, job: Job) -> None:
        """Raise SchedulingError, with the reason, if no placement could ever hold the job."""
        self._check_satisfiable(job)

    def adopt(self, job: Job, alloc: Allocation, started_s: float, ran_s: float = 0.0) -> None:
        """Take over a job found running (after a controller restart) where it runs."""
        rec = self._record(job, ran_s)
        self.gates.running(job)
        self._start(rec, alloc, started_s)
        self._dirty = True

    def hold(self, job_id: str) -> None:
        """Keep a pending job out of passes (its previous attempt is still stopping)."""
        rec = self.jobs[job_id]
        if rec.state == "PENDING":
            self.queue.remove(rec)
            rec.state = "HELD"

    def interrupt(self, job_id: str, now: float) -> None:
        """A running job stopped from outside (its node failed): it keeps its service so far and
        waits, held, until its processes have stopped; `unhold` puts it back in the queue."""
        rec = self.jobs[job_id]
        if rec.state == "RUNNING":
            self._stop(rec, now)
            rec.state = "HELD"
            self._dirty = True

    def unhold(self, job_id: str) -> None:
        rec = self.jobs[job_id]
        if rec.state == "HELD":
            rec.state = "PENDING"
            self.queue.add(rec)
            self._dirty = self._rerank = True

    def finish(self, job_id: str, now: float, state: str = "COMPLETED") -> None:
        """The job ended (or was cancelled). A job that already ended keeps its first outcome."""
        rec = self.jobs.get(job_id)
        if rec is None:
            raise SchedulingError(f"no job {job_id!r}")
        if rec.state not in ACTIVE:
            return
        if rec.state == "RUNNING":
            self._stop(rec, now)
        elif rec.state == "PENDING":
            self.queue.remove(rec)
        rec.state = state
        self._dirty = True
        self._gate_ended(rec.job, state)

    def _gate_ended(self, job: Job, state: str) -> None:
        """Carry out what a job's end does to the jobs gated on it: released into the queue, failed
        (and so on down a chain of dependencies), or told a new reason."""
        work = [(job, state)]
        while work:
            ended, how = work.pop()
            for news in self.gates.ended(ended, how):
                rec = self.jobs.get(news.job_id)
                if rec is None or rec.state != "WAITING":
                    continue
                if isinstance(news, Released):
                    rec.state = "PENDING"
                    self.queue.add(rec)
                    self._dirty = self._rerank = True
                elif isinstance(news, Unmet):
                    rec.state = "FAILED"
                    work.append((rec.job, "FAILED"))
                self._news.append(news)

    def forget(self, job_id: str) -> None:
        """Drop an ended job's record (a long-lived controller keeps only active jobs)."""
        rec = self.jobs.get(job_id)
        if rec is not None and rec.state not in ACTIVE:
            del self.jobs[job_id]

    def cancel(self, job_id: str, now: float) -> None:
        self.finish(job_id, now, "CANCELLED")

    def news(self, now: float) -> list[News]:
        """What the caller must carry out, once: jobs released, failed or still waiting on their
        dependencies or throttle, and running jobs past their time limit (to stop; they end TIMEOUT)."""
        for rec in self.limits.over(self.running, now):
            self._news.append(OverLimit(rec.job.id, f"time limit {limit_text(rec.job.time_limit_s or 0)} reached"))
        news, self._news = self._news, []
        return news

    # -- the pass -------------------------------------------------------------------------------
    def schedule(self, now: float) -> list[Action]:
        """Launch what can run now, in queue order, backfilling behind a reserved head job."""
        actions: list[Action] = []
        quota = self.quota
        self._demote_due(now)
        if quota.guaranteed and len(self.queue):
            actions += reclaim(self, now)
        if self.queue.preemptive and self._rerank and len(self.queue):
            actions += self._preempt_for_better_queues(now)
        self._rerank = False
        if not self._dirty and not actions and self._seen_version == self.state.version:
            return actions
        self._dirty = False
        self._seen_version = self.state.version
        state = self.state
        launched: list[JobRecord] = []
        blocked: JobRecord | None = None  # the head job, once one is found blocked
        head: Reservation | None = None  # its reservation, worked out when a job behind it first needs it
        scanned = 0  # jobs looked at behind the head
        capacity = state.total_gpus * FULL
        guaranteed = bool(quota.guaranteed)
        order = self.queue.order(self.usage)
        owner_waiting = False  # a job within its quota found no room: borrowers take nothing this pass
        for rec in quota.within_first(order) if guaranteed else order:
            if state.used_milli >= capacity and rec.job.gpus > 0:
                break
            if (owner_waiting or not quota.borrowing) and guaranteed and quota.pool(rec.job) is None:
                continue
            by_right = False  # behind the head, within its own guarantee: not bound by the reservation
            if blocked is None:
                alloc = self.placement.place(state, rec.job, self.rng)
            else:
                scanned += 1
                if scanned > self.backfill_depth:
                    break
                if rec.job.gpu_milli > capacity - state.used_milli:
                    continue  # cannot fit anywhere now; not worth a placement
                head = head or self._reservation(blocked, now)
                by_right = guaranteed and quota.pool(rec.job) == rec.job.tenant  # its guarantee: no one else's
                alloc = self.placement.place(state, rec.job, self.rng) if by_right else self._backfill(rec, head, now)
            self.decisions += 1
            if alloc is None:
                owner_waiting = owner_waiting or (guaranteed and quota.pool(rec.job) is not None)
                if blocked is None:
                    if not self.backfill:
                        break
                    blocked = rec
                continue
            self._start(rec, alloc, now)
            if head is not None:
                (head.by_right if by_right else head.backfilled).append(rec.job.id)
            launched.append(rec)
            actions.append(Launch(rec.job.id, alloc.nodes, alloc.gpus))
        for rec in launched:
            self.queue.remove(rec)
        if head is not None:
            head.scanned = scanned
        self._reserved = head
        self._unreserved = (blocked, now, scanned) if blocked is not None and head is None else None
        return actions

    @property
    def changes(self) -> tuple[int, int, int]:
        """Moves whenever what the pass decides from may have: allocations and cordons, submissions,
        the queue's length (a cancel, a hold). A forecast taken at one mark holds while it stands."""
        return (self.state.changes, self._seq, len(self.queue))

    @property
    def reservation(self) -> Reservation | None:
        """The blocked head's reservation, as the last pass left it. A pass that had no job behind
        the head to place did not need one: it is worked out when first asked for, from the jobs
        running then (the same as the pass's, unless jobs started or stopped since)."""
        if self._unreserved is not None:
            rec, now, scanned = self._unreserved
            self._unreserved = None
            self._reserved = self._reservation(rec, now)
            self._reserved.scanned = scanned
        return self._reserved

    # The pass's steps, as methods so that a benchmark can time each where the pass calls it.
    def _reservation(self, head: JobRecord, now: float) -> Reservation:
        """EASY backfill: when and on which nodes the blocked head job will start."""
        return self._reservations.for_head(self.state, self._ends, head, self._running_version, now)

    def _backfill(self, rec: JobRecord, head: Reservation, now: float) -> Allocation | None:
        """A place for a job behind the blocked head where it cannot delay the head's start."""
        return place_behind(self.state, self.placement, self.rng, self.jobs, rec, head, now)

    def _preempt_for_better_queues(self, now: float) -> list[Action]:
        return preempt_for_better_queues(self, now)

    def worst_ranked(self, now: float) -> list[JobRecord]:
        """Running jobs, worst-ranked first, as the queue policy ranks them now (preemptive policies).

        A job whose rank never moves while it runs (the policy books no review for it) was ranked
        when it started; only the others are ranked again here.
        """
        ranked: Iterable[tuple[Key, str]] = reversed(self._steady)
        if self._moving:
            moving = sorted(((self.queue.running_key(r, now), r.job.id) for r in self._moving.values()), reverse=True)
            ranked = heapq.merge(ranked, moving, reverse=True)
        return [self.running[job_id] for _, job_id in ranked]

    def next_wakeup(self, now: float) -> float | None:
        """The earliest time after `now` the scheduler wants a Tick (a job changing LAS queue)."""
        self._demote_due(now)
        wake = self._wakeups[0][0] if self._wakeups else None
        due = self.limits.next_due(self.running)
        due = due if due is not None and due > now else None  # one due already is for `news` now
        return due if wake is None else wake if due is None else min(wake, due)

    def why_waiting(self, job_id: str) -> str:
        """Why a pending job is not running, in a user's words: held, quota, capacity, topology, shape,
        or a reservation (it fits, but backfill keeps those GPUs for an earlier job); a job held by its
        dependencies or its array's throttle says which."""
        rec = self.jobs[job_id]
        if rec.state == "WAITING":
            return self.gates.reason(job_id)
        return self._reasons.why(self, rec)

    def _demote_due(self, now: float) -> None:
        """Drop wake-ups of jobs no longer running; for those due, rerank and book the next one."""
        while self._wakeups:
            t, job_id = self._wakeups[0]
            rec = self.jobs.get(job_id)  # None once an ended job is forgotten
            if rec is not None and rec.state == "RUNNING":
                if t > now:
                    return
                heapq.heappop(self._wakeups)
                self._rerank = True
                wake = self.queue.next_review(rec, now)
                if wake is not None:
                    heapq.heappush(self._wakeups, (max(wake, now + 1e-9), job_id))
            else:
                heapq.heappop(self._wakeups)

    # -- the running set ------------------------------------------------------------------------
    def _record(self, job: Job, ran_s: float) -> JobRecord:
        if job.id in self.jobs:
            raise SchedulingError(f"job {job.id!r} was already submitted")
        self._check_satisfiable(job)
        rec = JobRecord(job, self._seq, ran_s=ran_s, attained_gpu_s=ran_s * job.gpus)
        self._seq += 1
        self.jobs[job.id] = rec
        return rec

    def _check_satisfiable(self, job: Job) -> None:
        """Refuse at submit what no placement could ever give, even on an empty fleet. The answer
        depends only on the request's shape and the fleet, so a stream of like jobs pays for it once."""
        request: Request = (job.gpus, job.gpus_per_node, job.gpu_types, job.cpu_milli, job.memory_mib)
        if request in self._unsatisfiable:
            why = self._unsatisfiable[request]
        else:
            why = self._unsatisfiable[request] = why_unsatisfiable(self.state, job)
        if why is not None:
            raise SchedulingError(f"job {job.id!r} {why}")

    def _start(self, rec: JobRecord, alloc: Allocation, now: float) -> None:
        self.state.allocate(alloc)
        self._running_version += 1
        rec.state = "RUNNING"
        rec.started_s = now
        if rec.first_start_s is None:
            rec.first_start_s = now
        self.running[rec.job.id] = rec
        self.usage[rec.job.tenant] += rec.job.gpus
        self.quota.take(rec)
        self._ends.add((rec.estimated_end(), rec.seq, rec.job.id))
        self.limits.started(rec, now)
        wake = self.queue.next_review(rec, now)
        if wake is not None:
            heapq.heappush(self._wakeups, (wake, rec.job.id))
        if self.queue.preemptive:
            if wake is None:  # its rank never moves while it runs: ranked once, here
                ranked = self._steady_rank[rec.job.id] = (self.queue.running_key(rec, now), rec.job.id)
                self._steady.add(ranked)
            else:
                self._moving[rec.job.id] = rec

    def _stop(self, rec: JobRecord, now: float, released: bool = False) -> None:
        """The job stops running; `released` when its allocation is already out of the state."""
        started = rec.started_s
        if started is None:
            raise SchedulingError(f"job {rec.job.id!r} is not running")
        self._ends.remove((rec.estimated_end(), rec.seq, rec.job.id))
        if not released:
            self.state.release(rec.job.id)
        self._running_version += 1
        rec.attained_gpu_s = rec.attained(now)
        rec.ran_s += now - started
        rec.started_s = None
        del self.running[rec.job.id]
        ranked = self._steady_rank.pop(rec.job.id, None)
        if ranked is not None:
            self._steady.remove(ranked)
        self._moving.pop(rec.job.id, None)
        self.limits.stopped(rec.job.id)
        self.usage[rec.job.tenant] -= rec.job.gpus
        self.quota.give_back(rec, self.running.values())

    def _requeue(self, rec: JobRecord, now: float, released: bool = False) -> None:
        """Preempt a running job: it stops, keeping its service so far, and waits in the queue again."""
        self._stop(rec, now, released)
        rec.preempted(now)
        rec.state = "PENDING"
        self.queue.add(rec)

