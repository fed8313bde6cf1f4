"""One scheduling pass: queue order, placement, EASY backfill, preemption. Events in, actions out.

Guaranteed quotas (from reserved contracts), Kueue-style: each tenant's guarantee is its own, the
capacity no one is guaranteed is the on-demand pool, and a job that fits in neither borrows idle
guaranteed capacity. Borrowers (and spot jobs) are taken back by preemption, spot first, as soon
as a job within its quota needs the room (and on-demand jobs are moved where its free share is
scattered over nodes), and take nothing while such a job is waiting.

The scheduler owns the allocation state and applies its own decisions to it, so what it returns
is already true in its world; the caller (the twin's clock or the real-time controller) carries
the actions out and reports back with events.
"""

from __future__ import annotations

import heapq
import itertools
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from sortedcontainers import SortedList

from neocloud.errors import SchedulingError
from neocloud.model.events import Action, Launch, Preempt
from neocloud.model.fleet import Fleet
from neocloud.model.job import Job, PriorityClass
from neocloud.sched.placement import Placement
from neocloud.sched.placements import placement as placement_named
from neocloud.sched.queue import JobRecord, QueuePolicy, queue_policy
from neocloud.sched.state import FULL, Allocation, ClusterState


@dataclass(slots=True)
class Reservation:
    """Where and when EASY backfill holds room for the blocked head job."""

    start: float
    spare: dict[int, int]  # reserved node -> whole GPUs it has beyond the head's need at `start`
    scanned: int = 0
    # Request shapes that found no room in this pass: at all, or (for jobs that would outlast the
    # head's start) off the head's GPUs. Room only shrinks during a pass, so a later job of the
    # same shape need not ask placement again.
    no_room: set[tuple] = field(default_factory=set)
    no_room_long: set[tuple] = field(default_factory=set)


ON_DEMAND = ""  # the on-demand pool's name among tenants' quotas


class Scheduler:
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
        self.placement = placement_named(placement) if isinstance(placement, str) else placement
        self.backfill = backfill
        self.backfill_depth = backfill_depth
        self.preempt_depth = preempt_depth  # blocked jobs a pass tries to make room for
        self.rng = np.random.default_rng(seed)
        self.jobs: dict[str, JobRecord] = {}
        self.running: dict[str, JobRecord] = {}
        self.usage: dict[str, float] = defaultdict(float)  # GPUs held per tenant
        self._ends: SortedList = SortedList()  # (estimated end, seq, job id) of running jobs
        self._wakeups: list[tuple[float, str]] = []
        self._seq = 0
        self._dirty = True
        self._rerank = False  # set when queue ranks may have changed: an arrival or a demotion
        self.decisions = 0
        self._seen_version = self.state.version
        self._running_version = 0  # bumped whenever a job starts or stops
        self._reserved: tuple[tuple[int, int], tuple[float, dict[int, int]]] | None = None
        self._unsatisfiable: dict[tuple, str | None] = {}  # request shape -> why no placement ever fits
        self.quotas: dict[str, float] = {}
        self.borrowing = borrowing  # whether idle guaranteed capacity may be lent
        self.pool_use: dict[str, float] = defaultdict(float)  # GPUs running under each quota
        self.set_quotas(quotas or {})

    def set_quotas(self, guarantees: dict[str, float]) -> None:
        """Guaranteed GPUs per tenant; the rest of the fleet is the on-demand pool. Running jobs keep
        the quota they started under."""
        self.quotas = {t: g for t, g in guarantees.items() if g > 0}
        self.on_demand_gpus = max(self.state.total_gpus - sum(self.quotas.values()), 0)
        self._dirty = True

    def _pool(self, job: Job) -> str | None:
        """The quota a job would run under now, or None: it would borrow (spot always does)."""
        if job.priority is PriorityClass.SPOT:
            return None
        if self.pool_use[job.tenant] + job.gpus <= self.quotas.get(job.tenant, 0):
            return job.tenant
        if self.pool_use[ON_DEMAND] + job.gpus <= self.on_demand_gpus:
            return ON_DEMAND
        return None

    # -- events ---------------------------------------------------------------------------------
    def submit(self, job: Job, now: float, ran_s: float = 0.0) -> None:
        """Queue a job; `ran_s` is what earlier attempts ran (a job requeued after a restart)."""
        rec = self._record(job, ran_s)
        self.queue.add(rec)
        self._dirty = self._rerank = True

    def check(self, job: Job) -> None:
        """Raise SchedulingError, with the reason, if no placement could ever hold the job."""
        self._check_satisfiable(job)

    def adopt(self, job: Job, alloc: Allocation, started_s: float, ran_s: float = 0.0) -> None:
        """Take over a job found running (after a controller restart) where it runs."""
        rec = self._record(job, ran_s)
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

    def _record(self, job: Job, ran_s: float) -> JobRecord:
        if job.id in self.jobs:
            raise SchedulingError(f"job {job.id!r} was already submitted")
        self._check_satisfiable(job)
        rec = JobRecord(job, self._seq, ran_s=ran_s, attained_gpu_s=ran_s * job.gpus)
        self._seq += 1
        self.jobs[job.id] = rec
        return rec

    def finish(self, job_id: str, now: float, state: str = "COMPLETED") -> None:
        """The job ended (or was cancelled). A job that already ended keeps its first outcome."""
        rec = self.jobs.get(job_id)
        if rec is None:
            raise SchedulingError(f"no job {job_id!r}")
        if rec.state not in ("PENDING", "RUNNING", "HELD"):
            return
        if rec.state == "RUNNING":
            self._stop(rec, now)
        elif rec.state == "PENDING":
            self.queue.remove(rec)
        rec.state = state
        self._dirty = True

    def forget(self, job_id: str) -> None:
        """Drop an ended job's record (a long-lived controller keeps only active jobs)."""
        rec = self.jobs.get(job_id)
        if rec is not None and rec.state not in ("PENDING", "RUNNING", "HELD"):
            del self.jobs[job_id]

    def cancel(self, job_id: str, now: float) -> None:
        self.finish(job_id, now, "CANCELLED")

    # -- the pass -------------------------------------------------------------------------------
    def schedule(self, now: float) -> list[Action]:
        """Launch what can run now, in queue order, backfilling behind a reserved head job."""
        actions: list[Action] = []
        self._demote_due(now)
        if self.quotas and len(self.queue):
            actions += self._reclaim(now)
        if self.queue.preemptive and self._rerank and len(self.queue):
            actions += self._preempt_for_better_queues(now)
        self._rerank = False
        if not self._dirty and not actions and self._seen_version == self.state.version:
            return actions
        self._dirty = False
        self._seen_version = self.state.version
        launched: list[JobRecord] = []
        head: Reservation | None = None  # the blocked head job's reservation, once there is one
        capacity = self.state.total_gpus * FULL
        order = self.queue.order(self.usage)
        owner_waiting = False  # a job within its quota found no room: borrowers take nothing this pass
        for rec in self._within_quota_first(order) if self.quotas else order:
            if self.state.used_milli >= capacity and rec.job.gpus > 0:
                break
            if (owner_waiting or not self.borrowing) and self.quotas and self._pool(rec.job) is None:
                continue
            if head is None:
                alloc = self.placement.place(self.state, rec.job, self.rng)
            else:
                head.scanned += 1
                if head.scanned > self.backfill_depth:
                    break
                if rec.job.gpu_milli > capacity - self.state.used_milli:
                    continue  # cannot fit anywhere now; not worth a placement
                if self.quotas and self._pool(rec.job) == rec.job.tenant:
                    alloc = self.placement.place(self.state, rec.job, self.rng)  # its guarantee: no one else's
                else:
                    alloc = self._backfill(rec, head, now)
            self.decisions += 1
            if alloc is None:
                owner_waiting = owner_waiting or (bool(self.quotas) and self._pool(rec.job) is not None)
                if head is None:
                    if not self.backfill:
                        break
                    head = self._reservation(rec, now)
                continue
            self._start(rec, alloc, now)
            launched.append(rec)
            actions.append(Launch(rec.job.id, alloc.nodes, alloc.gpus))
        for rec in launched:
            self.queue.remove(rec)
        return actions

    def next_wakeup(self, now: float) -> float | None:
        """The earliest time after `now` the scheduler wants a Tick (a job changing LAS queue)."""
        self._demote_due(now)
        return self._wakeups[0][0] if self._wakeups else None

    def _demote_due(self, now: float) -> None:
        """Drop wake-ups of jobs no longer running; for those due, rerank and book the next one."""
        while self._wakeups:
            t, job_id = self._wakeups[0]
            rec = self.jobs.get(job_id)  # None once an ended job is forgotten
            running = rec is not None and rec.state == "RUNNING"
            if running and t > now:
                return
            heapq.heappop(self._wakeups)
            if running:
                self._rerank = True
                wake = self.queue.next_review(rec, now)
                if wake is not None:
                    heapq.heappush(self._wakeups, (max(wake, now + 1e-9), job_id))

    # -- internals ------------------------------------------------------------------------------
    def _check_satisfiable(self, job: Job) -> None:
        """Refuse at submit what no placement could ever give, even on an empty fleet.

        The answer depends only on the request's shape and the fleet's capacities, so it is
        kept per shape: a stream of like jobs pays for it once.
        """
        shape = (job.gpus, job.gpus_per_node, job.gpu_types, job.cpu_milli, job.memory_mib)
        why = self._unsatisfiable.get(shape, False)
        if why is False:
            why = self._unsatisfiable[shape] = self._why_unsatisfiable(job)
        if why is not None:
            raise SchedulingError(f"job {job.id!r} {why}")

    def _why_unsatisfiable(self, job: Job) -> str | None:
        state = self.state
        cells = state.cells_for(job.gpu_types)
        if len(cells) == 0:
            wanted = f"GPU type {'|'.join(job.gpu_types)}" if job.gpu_types else "GPUs"
            return f"asks for {wanted}, which this fleet does not have; it has {', '.join(state.type_names) or 'no GPUs'}"
        width = state.widest(job.gpu_types)
        if job.gpus_per_node and job.gpus_per_node > width:
            return f"asks for {job.gpus_per_node} GPUs per node but its nodes have at most {width}"
        layout = state.layout(job)
        best = 0
        for group in state.groups_for(job.gpu_types):
            nodes = np.concatenate([state.cell_nodes[c] for c in group])
            ok = (state.gpu_cap[nodes] >= max(layout[0], 1)) & (state.cpu_cap[nodes] >= job.cpu_milli) \
                & (state.mem_cap[nodes] >= job.memory_mib)
            best = max(best, int(ok.sum()))
        if best < len(layout):
            need = f"{len(layout)} node(s) of {layout[0]} GPUs" if layout[0] else "one node"
            extra = f" with {job.cpu_milli}m CPU and {job.memory_mib} MiB" if job.cpu_milli or job.memory_mib else ""
            return (f"needs {need}{extra} in one fabric, but the most this fleet has is {best}; "
                    "ask for fewer GPUs or less CPU and memory")
        return None

    def _start(self, rec: JobRecord, alloc: Allocation, now: float) -> None:
        self.state.allocate(alloc)
        self._running_version += 1
        rec.state = "RUNNING"
        rec.started_s = now
        if rec.first_start_s is None:
            rec.first_start_s = now
        self.running[rec.job.id] = rec
        self.usage[rec.job.tenant] += rec.job.gpus
        rec.pool = self._pool(rec.job) if self.quotas else ON_DEMAND
        if rec.pool is not None:
            self.pool_use[rec.pool] += rec.job.gpus
        est = rec.remaining_estimate(now)
        self._ends.add((now + est if est is not None else float("inf"), rec.seq, rec.job.id))
        wake = self.queue.next_review(rec, now)
        if wake is not None:
            heapq.heappush(self._wakeups, (wake, rec.job.id))

    def _stop(self, rec: JobRecord, now: float) -> None:
        est = rec.remaining_estimate(rec.started_s)
        self._ends.remove((rec.started_s + est if est is not None else float("inf"), rec.seq, rec.job.id))
        self.state.release(rec.job.id)
        self._running_version += 1
        rec.attained_gpu_s = rec.attained(now)
        rec.ran_s += now - rec.started_s
        rec.started_s = None
        del self.running[rec.job.id]
        self.usage[rec.job.tenant] -= rec.job.gpus
        if rec.pool is not None:
            self.pool_use[rec.pool] -= rec.job.gpus
            rec.pool = None

    def _reservation(self, head: JobRecord, now: float) -> Reservation:
        """EASY backfill: when and on which nodes the blocked head job will start.

        Walks running jobs by estimated end, counting the GPUs each frees, until some fabric
        has enough nodes for the head's gang. A running job with no estimate never ends, so then
        the head's start is unknown and nothing may pass it. Kept until the running set changes.
        """
        key = (head.seq, self._running_version)
        if self._reserved is None or self._reserved[0] != key:
            self._reserved = (key, self._compute_reservation(head, now))
        start, spare = self._reserved[1]
        return Reservation(start, dict(spare))

    def _compute_reservation(self, head: JobRecord, now: float) -> tuple[float, dict[int, int]]:
        state = self.state
        layout = state.layout(head.job)
        per_node, count = max(layout[0], 1), len(layout)
        groups = state.groups_for(head.job.gpu_types)
        group_of = {int(c): gi for gi, g in enumerate(groups) for c in g}
        eligible = state.schedulable & (state.cpu_cap >= head.job.cpu_milli) & (state.mem_cap >= head.job.memory_mib)
        exact = bool(head.job.cpu_milli or head.job.memory_mib)  # the fit index does not see CPU/memory caps
        if exact:
            ready = [sum(1 for c in g for n in state.candidates(int(c), per_node) if eligible[n]) for g in groups]
        else:
            ready = [int(state.nodes_with(g, per_node).sum()) for g in groups]
        crossing: list[list[int]] = [[] for _ in groups]  # nodes that reach per_node free GPUs in time
        freed: dict[int, int] = {}
        at = now
        for end, _, job_id in self._ends:
            if max(ready, default=0) >= count:
                break
            if end == float("inf"):
                return float("inf"), {}
            alloc = state.allocations[job_id]
            whole = alloc.gpu_milli == FULL
            for node, gpus in zip(alloc.nodes, alloc.gpus):
                group = group_of.get(state.cell_of[node])
                if group is None or not eligible[node] or not whole:
                    continue
                before = int(state.whole_free[node]) + freed.get(node, 0)
                freed[node] = freed.get(node, 0) + len(gpus)
                if before < per_node <= before + len(gpus):
                    ready[group] += 1
                    crossing[group].append(node)
            at = end
        best = next((g for g, r in enumerate(ready) if r >= count), None)
        if best is None:
            return float("inf"), {}
        now_free = (n for c in groups[best] for n in state.candidates(int(c), per_node) if eligible[n])
        nodes = list(itertools.islice(itertools.chain(now_free, crossing[best]), count))
        return at, {n: int(state.whole_free[n]) + freed.get(n, 0) - per_node for n in nodes}

    def _backfill(self, rec: JobRecord, head: Reservation, now: float):
        """Place a job behind the blocked head only where it cannot delay the head's start.

        A job due to end before the head starts may go anywhere; a longer one may take only the
        GPUs the head will not need on its reserved nodes, or else stays off those nodes.
        """
        if not head.spare:
            return None  # the head's start is unknown, so nothing may pass it
        job = rec.job
        shape = (job.gpu_milli, job.gpus_per_node, job.gpu_types, job.cpu_milli, job.memory_mib)
        est = rec.remaining_estimate(now)
        short = est is not None and now + est <= head.start
        if shape in head.no_room or (not short and shape in head.no_room_long):
            return None
        alloc = self.placement.place(self.state, job, self.rng)
        if alloc is None:
            head.no_room.add(shape)
            return None
        if short or not self._takes_reserved(alloc, head):
            return alloc  # ends before the head starts, or leaves the head's GPUs alone
        with self.state.withheld(head.spare):
            alloc = self.placement.place(self.state, job, self.rng)
        if alloc is None:
            head.no_room_long.add(shape)
        return alloc

    def _takes_reserved(self, alloc: Allocation, head: Reservation) -> bool:
        """Whether `alloc` eats into GPUs held for the head; if not, count what it uses of the spare."""
        taken = {n: self._whole_gpus_taken(alloc, i) for i, n in enumerate(alloc.nodes) if n in head.spare}
        if any(k > head.spare[n] for n, k in taken.items()):
            return True
        for n, k in taken.items():
            head.spare[n] -= k
        return False

    def _whole_gpus_taken(self, alloc: Allocation, i: int) -> int:
        if alloc.gpu_milli == FULL:
            return len(alloc.gpus[i])
        left = self.state.gpu_left[alloc.nodes[i]]
        return sum(1 for g in alloc.gpus[i] if left[g] == FULL)

    def _within_quota_first(self, order):  # noqa: ANN001, ANN202 - iterators of JobRecords
        """In queue order: jobs within their tenant's guarantee, then those within the on-demand pool,
        then those that would borrow."""
        guaranteed, pool, borrowing = [], [], []
        for rec in order:
            where = self._pool(rec.job)
            (borrowing if where is None else pool if where == ON_DEMAND else guaranteed).append(rec)
        return guaranteed + pool + borrowing

    def _reclaim(self, now: float) -> list[Action]:
        """Jobs within their quota that find no room take it back: from borrowers (spot first, then
        the most recently started), and, where the free GPUs are scattered, by moving jobs of the
        on-demand pool (smallest first) when each of them fits again elsewhere at once."""
        borrowers = sorted((r for r in self.running.values() if r.pool is None),
                           key=lambda r: (r.job.priority.rank, r.started_s or 0.0), reverse=True)
        movable = sorted((r for r in self.running.values() if r.pool == ON_DEMAND),
                         key=lambda r: (r.job.gpus, -(r.started_s or 0.0)))
        actions: list[Action] = []
        tried = 0
        for rec in self.queue.order(self.usage):
            if tried >= self.backfill_depth or not (borrowers or movable):
                break
            if self._pool(rec.job) is None or self.placement.place(self.state, rec.job, self.rng) is not None:
                continue
            tried += 1
            taken = []
            while borrowers and self.placement.place(self.state, rec.job, self.rng) is None:
                victim = borrowers.pop(0)
                taken.append((victim, self.state.release(victim.job.id)))
            moved = []
            for victim in list(movable):
                if self.placement.place(self.state, rec.job, self.rng) is not None:
                    break
                movable.remove(victim)
                moved.append((victim, self.state.release(victim.job.id)))
            fits = self.placement.place(self.state, rec.job, self.rng) is not None and self._refit(rec, moved)
            for _, alloc in taken + moved:  # put them back; a real preemption goes through _stop
                self.state.allocate(alloc)
            if not fits:
                borrowers = [v for v, _ in taken] + borrowers
                movable = [v for v, _ in moved] + movable
                continue
            for victim, _ in taken + moved:
                self._stop(victim, now)
                victim.preemptions += 1
                victim.state = "PENDING"
                self.queue.add(victim)
                why = "takes back its guarantee" if victim.pool is None else "needs whole nodes: moving it"
                actions.append(Preempt(victim.job.id, f"quota: {rec.job.tenant} {why}"))
            self._dirty = True
        return actions

    def _refit(self, rec: JobRecord, moved: list[tuple[JobRecord, Allocation]]) -> bool:
        """Whether, with `rec` placed, every moved job fits again somewhere (the state is left as found)."""
        if not moved:
            return True
        trial = [self.placement.place(self.state, rec.job, self.rng)]
        self.state.allocate(trial[0])
        ok = True
        for victim, _ in moved:
            alloc = self.placement.place(self.state, victim.job, self.rng)
            if alloc is None:
                ok = False
                break
            self.state.allocate(alloc)
            trial.append(alloc)
        for alloc in trial:
            self.state.release(alloc.job_id)
        return ok

    def _preempt_for_better_queues(self, now: float) -> list[Action]:
        """A blocked job displaces running jobs the queue policy ranks below it, if that makes it fit."""
        queue = self.queue
        actions: list[Action] = []
        worst_first: list[JobRecord] | None = None  # ranked once a job is found blocked
        blocked = 0
        for rec in list(itertools.islice(queue.order(self.usage), self.backfill_depth)):
            if self.placement.place(self.state, rec.job, self.rng) is not None:
                continue  # fits as things are; the pass will start it
            if worst_first is None:
                worst_first = sorted(self.running.values(), key=lambda r: queue.running_key(r, now), reverse=True)
            if not worst_first or not queue.displaces(rec, worst_first[0], now):
                break  # nobody running ranks below this job, nor below any after it
            blocked += 1
            if blocked > self.preempt_depth:
                break
            taken = []
            fits = False
            kept = []  # running under another tenant's guarantee: not this job's to take
            while worst_first and queue.displaces(rec, worst_first[0], now):
                victim = worst_first.pop(0)
                if victim.pool not in (None, ON_DEMAND) and victim.pool != rec.job.tenant:
                    kept.append(victim)
                    continue
                taken.append((victim, self.state.release(victim.job.id)))
                if self.placement.place(self.state, rec.job, self.rng) is not None:
                    fits = True
                    break
            for _, alloc in taken:  # put them back; a real preemption goes through _stop
                self.state.allocate(alloc)
            worst_first = kept + worst_first
            if not fits:
                worst_first = [v for v, _ in taken] + worst_first
                continue
            for victim, _ in taken:
                self._stop(victim, now)
                victim.preemptions += 1
                victim.state = "PENDING"
                self.queue.add(victim)
                actions.append(Preempt(victim.job.id, f"{queue.name}: {rec.job.id} ranks higher"))
            self._dirty = True
        return actions
