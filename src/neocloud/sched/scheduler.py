"""One scheduling pass: queue order, placement, EASY backfill, preemption. Events in, actions out.

Guaranteed quotas (from reserved contracts), Kueue-style: each tenant's guarantee is its own, the
capacity no one is guaranteed is the on-demand pool, and a job that fits in neither borrows idle
guaranteed capacity. Borrowers (and spot jobs) are taken back by preemption, spot first, as soon
as a job within its quota needs the room, and take nothing while such a job is waiting. Where the
room is there in count but scattered over nodes, other jobs are moved to empty whole nodes, and
on-demand jobs that cannot move at once wait in a guaranteed job's place (checkpointed, like any
preempted job): a guarantee is kept every minute, the on-demand pool loses shape, never GPUs.

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
        self._quotas_set = 0  # bumped by set_quotas
        self._why: dict[str, tuple[str, str]] = {}  # job -> (its state, why it waits), while nothing changes
        self._why_at = (-1, -1)  # (state.changes, _quotas_set) the kept reasons hold for
        self.borrowing = borrowing  # whether idle guaranteed capacity may be lent
        self.pool_use: dict[str, float] = defaultdict(float)  # GPUs running under each quota
        self.set_quotas(quotas or {})

    def set_quotas(self, guarantees: dict[str, float]) -> None:
        """Guaranteed GPUs per tenant; the rest of the fleet is the on-demand pool. Running jobs keep
        the quota they started under."""
        self.quotas = {t: g for t, g in guarantees.items() if g > 0}
        self.on_demand_gpus = max(self.state.total_gpus - sum(self.quotas.values()), 0)
        self._quotas_set += 1
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

    def guarantees(self) -> dict[str, dict[str, float]]:
        """Each tenant's guarantee now: GPUs guaranteed, held within it, held beyond it (borrowed or in
        the on-demand pool), and asked for by its waiting jobs that would run within it."""
        waiting: dict[str, float] = defaultdict(float)
        for rec in self.queue.order(self.usage):  # in queue order, as many as its guarantee has room for
            t = rec.job.tenant
            if rec.job.priority is not PriorityClass.SPOT and \
                    self.pool_use[t] + waiting[t] + rec.job.gpus <= self.quotas.get(t, 0):
                waiting[t] += rec.job.gpus
        return {t: {"guaranteed": g, "within": self.pool_use[t], "beyond": self.usage[t] - self.pool_use[t],
                    "waiting": waiting[t]} for t, g in sorted(self.quotas.items())}

    def why_waiting(self, job_id: str) -> str:
        """Why a pending job is not running, in a user's words: held, quota, capacity, topology, shape,
        or a reservation (it fits, but backfill keeps those GPUs for an earlier job). Kept until the
        cluster or the quotas change, so a page that asks every few seconds costs no placement."""
        rec = self.jobs[job_id]
        if self._why_at != (self.state.changes, self._quotas_set):
            self._why, self._why_at = {}, (self.state.changes, self._quotas_set)
        kept = self._why.get(job_id)
        if kept is not None and kept[0] == rec.state:
            return kept[1]
        why = self._why_now(rec)
        self._why[job_id] = (rec.state, why)
        return why

    def _why_now(self, rec: JobRecord) -> str:
        job = rec.job
        if rec.state == "HELD":
            return "held: its previous attempt is still stopping"
        borrows = bool(self.quotas) and self._pool(job) is None
        if borrows and not self.borrowing:
            return "quota: beyond its tenant's guarantee and the on-demand pool, and nothing is lent"
        rng = np.random.default_rng(0)  # a view: leave the scheduler's own draws alone
        if self.placement.place(self.state, job, rng) is not None:
            if borrows:
                return "quota: it would borrow, and jobs within their guarantees come first"
            return "reservation: room is held for jobs ahead of it; it starts when they do, or at the next pass"
        free = self.state.total_gpus - self.state.used_milli / FULL
        if job.gpus > free:
            return f"capacity: needs {job.gpus:g} GPUs, {free:g} free"
        layout = self.state.layout(job)
        if int((self.state.whole_free >= max(layout)).sum()) >= len(layout):
            return f"topology: {len(layout)} nodes with {max(layout)} free GPUs exist, but not in one fabric"
        return f"shape: {free:g} GPUs free, but not {len(layout)} node(s) with {max(layout)} free together"

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
            if rec.pool != ON_DEMAND:
                self._promote(rec.pool)
            rec.pool = None

    def _promote(self, tenant: str) -> None:
        """Room freed in a tenant's guarantee takes in its jobs running outside it (the longest
        running first): they are within its guarantee now, no longer borrowers to take back."""
        for rec in sorted((r for r in self.running.values() if r.job.tenant == tenant and r.pool in (None, ON_DEMAND)
                           and r.job.priority is not PriorityClass.SPOT), key=lambda r: r.started_s or 0.0):
            if self.pool_use[tenant] + rec.job.gpus <= self.quotas.get(tenant, 0):
                if rec.pool is not None:
                    self.pool_use[rec.pool] -= rec.job.gpus
                rec.pool = tenant
                self.pool_use[tenant] += rec.job.gpus

    def _reservation(self, head: JobRecord, now: float) -> Reservation:
        """EASY backfill: when and on which nodes the blocked head job will start.

        Walks running jobs by estimated end, counting the GPUs each frees, until some fabric
        has enough nodes for the head's gang. A running job with no estimate never ends, so then
        the head's start is unknown and nothing may pass it. Kept until the running set changes, or
        a node is cordoned or uncordoned.
        """
        key = (head.seq, self._running_version, self.state.cordons)
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
        """Jobs within their quota that find no room take it back from borrowers (spot first, then the
        most recently started). Where the room they need is scattered over nodes, other jobs are moved
        to empty them, and a job within its tenant's guarantee may leave on-demand jobs to wait."""
        borrowers = sorted((r for r in self.running.values() if r.pool is None),
                           key=lambda r: (r.job.priority.rank, r.started_s or 0.0), reverse=True)
        movable = [r for r in self.running.values() if r.pool is not None]
        actions: list[Action] = []
        tried = 0
        for rec in self._within_quota_first(self.queue.order(self.usage)):
            pool = self._pool(rec.job)
            if tried >= self.backfill_depth or pool is None or not (borrowers or movable):
                break
            if self.placement.place(self.state, rec.job, self.rng) is not None:
                continue
            tried += 1
            victims = self._victims(rec, borrowers, [r for r in movable if pool != ON_DEMAND or r.pool == ON_DEMAND])
            moved = []
            for victim, stays in victims:
                borrowed = victim.pool is None
                (borrowers if borrowed else movable).remove(victim)
                self._stop(victim, now)
                victim.preemptions += 1
                victim.state = "PENDING"
                self.queue.add(victim)
                if stays and not borrowed:
                    moved.append(victim)
                why = "needs whole nodes: moving it" if victim in moved else "takes back its guarantee"
                actions.append(Preempt(victim.job.id, f"quota: {rec.job.tenant} {why}"))
            for job in [rec, *moved] if victims else []:  # it starts now, then those it moved, before anyone else
                alloc = self.placement.place(self.state, job.job, self.rng)
                if alloc is not None:
                    self.queue.remove(job)
                    self._start(job, alloc, now)
                    actions.append(Launch(job.job.id, alloc.nodes, alloc.gpus))
                    self._dirty = True
        return actions

    def _victims(self, rec: JobRecord, borrowers: list[JobRecord],
                 movable: list[JobRecord]) -> list[tuple[JobRecord, bool]]:
        """The fewest running jobs whose going lets `rec` start, each with whether it fits again at once:
        borrowers in their order, then jobs to move from the nodes nearest to whole; each is kept if
        `rec` fits without it. Jobs under a guarantee must fit again. Jobs of tenants without one may be
        left to wait (unless they would then wait within a guarantee of their own) only for a job within
        its guarantee whose GPUs are there in count, free or lent (more borrowers go to make it so): the
        pool loses no GPUs, only their shape. Empty if nothing does it; the state is left as found."""
        def fits() -> bool:
            return self.placement.place(self.state, rec.job, self.rng) is not None

        released: list[tuple[JobRecord, Allocation]] = []
        for victim in borrowers:
            if fits():
                break
            released.append((victim, self.state.release(victim.job.id)))
        if not fits():
            for victim in self._nearest_to_whole(movable):
                released.append((victim, self.state.release(victim.job.id)))
                if fits():
                    break
        if not fits():
            for _, alloc in released:
                self.state.allocate(alloc)
            return []
        needed = []
        for victim, alloc in reversed(released):  # keep back whatever `rec` can do without
            self.state.allocate(alloc)
            if not fits():
                self.state.release(victim.job.id)
                needed.append((victim, alloc))
        stranded = self._stranded(rec, [v for v, _ in needed if v.pool is not None])
        for _, alloc in needed:
            self.state.allocate(alloc)
        needed = [v for v, _ in needed]
        if stranded:  # on-demand jobs left to wait: only for a guarantee, and only for room there in count
            if self._pool(rec.job) != rec.job.tenant or \
                    any(v.pool != ON_DEMAND or self._pool(v.job) == v.job.tenant for v in stranded):
                return []
            room = self.state.total_gpus - self.state.used_milli / FULL + sum(v.job.gpus for v in needed if v.pool is None)
            for victim in borrowers:  # more borrowers give back what the waiting jobs lose
                if room >= rec.job.gpus:
                    break
                if victim not in needed:
                    needed.append(victim)
                    room += victim.job.gpus
            if room < rec.job.gpus:
                return []
        return [(v, v not in stranded) for v in needed]

    def _nearest_to_whole(self, movable: list[JobRecord]) -> list[JobRecord]:
        """Jobs to move by the node they would help empty: nodes that only movable jobs (and free GPUs)
        occupy first, then those with the fewest guaranteed, then on-demand GPUs to move; on a node,
        on-demand jobs before guaranteed ones, smallest first."""
        held = self.state.gpu_cap - self.state.whole_free  # GPUs busy per node
        on = defaultdict(lambda: [0, 0])  # node -> [guaranteed GPUs, on-demand GPUs] of movable jobs
        for r in movable:
            alloc = self.state.allocations[r.job.id]
            for node, gpus in zip(alloc.nodes, alloc.gpus):
                on[node][r.pool == ON_DEMAND] += len(gpus)

        def key(r: JobRecord) -> tuple:
            cost = min((held[n] > sum(on[n]), *on[n]) for n in self.state.allocations[r.job.id].nodes)
            return cost, r.pool != ON_DEMAND, r.job.gpus, -(r.started_s or 0.0)
        return sorted(movable, key=key)

    def _stranded(self, rec: JobRecord, moved: list[JobRecord]) -> list[JobRecord]:
        """Of the moved jobs, those that would not fit again at once beside `rec` (placed smallest
        first; the state is left as found)."""
        trial = [self.placement.place(self.state, rec.job, self.rng)]
        self.state.allocate(trial[0])
        stranded = []
        for victim in sorted(moved, key=lambda r: r.job.gpus):
            alloc = self.placement.place(self.state, victim.job, self.rng)
            if alloc is None:
                stranded.append(victim)
            else:
                self.state.allocate(alloc)
                trial.append(alloc)
        for alloc in trial:
            self.state.release(alloc.job_id)
        return stranded

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
