"""Taking capacity back from borrowers for jobs within their quota.

Borrowers (and spot jobs) go first, spot before the rest, the most recently started first. Where
the room is there in count but scattered over nodes, other jobs are moved to empty whole nodes,
and on-demand jobs that cannot move at once wait in a guaranteed job's place (checkpointed, like
any preempted job): a guarantee is kept every minute, the on-demand pool loses shape, never GPUs.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

from neocloud.model.events import Action, Launch, Preempt
from neocloud.sched.queue import JobRecord
from neocloud.sched.quota import ON_DEMAND
from neocloud.sched.state import FULL, Allocation

if TYPE_CHECKING:
    from neocloud.sched.scheduler import Scheduler


def reclaim(sched: Scheduler, now: float) -> list[Action]:
    """Jobs within their quota that find no room take it back from borrowers (spot first, then the
    most recently started). Where the room they need is scattered over nodes, other jobs are moved
    to empty them, and a job within its tenant's guarantee may leave on-demand jobs to wait."""
    quotas = sched.quota
    borrowers = sorted((r for r in sched.running.values() if r.pool is None),
                       key=lambda r: (r.job.priority.rank, r.started_s or 0.0), reverse=True)
    movable = [r for r in sched.running.values() if r.pool is not None]
    actions: list[Action] = []
    tried = 0
    for rec in quotas.within_first(sched.queue.order(sched.usage)):
        pool = quotas.pool(rec.job)
        if tried >= sched.backfill_depth or pool is None or not (borrowers or movable):
            break
        if sched.placement.place(sched.state, rec.job, sched.rng) is not None:
            continue
        tried += 1
        victims = _victims(sched, rec, borrowers, [r for r in movable if pool != ON_DEMAND or r.pool == ON_DEMAND])
        moved = []
        for victim, stays in victims:
            borrowed = victim.pool is None
            (borrowers if borrowed else movable).remove(victim)
            sched._requeue(victim, now)
            if stays and not borrowed:
                moved.append(victim)
            why = "needs whole nodes: moving it" if victim in moved else "takes back its guarantee"
            actions.append(Preempt(victim.job.id, f"quota: {rec.job.tenant} {why}"))
        for job in [rec, *moved] if victims else []:  # it starts now, then those it moved, before anyone else
            alloc = sched.placement.place(sched.state, job.job, sched.rng)
            if alloc is not None:
                sched.queue.remove(job)
                sched._start(job, alloc, now)
                actions.append(Launch(job.job.id, alloc.nodes, alloc.gpus))
    return actions


def _victims(sched: Scheduler, rec: JobRecord, borrowers: list[JobRecord],
             movable: list[JobRecord]) -> list[tuple[JobRecord, bool]]:
    """The fewest running jobs whose going lets `rec` start, each with whether it fits again at once:
    borrowers in their order, then jobs to move from the nodes nearest to whole; each is kept if
    `rec` fits without it. Jobs under a guarantee must fit again. Jobs of tenants without one may be
    left to wait (unless they would then wait within a guarantee of their own) only for a job within
    its guarantee whose GPUs are there in count, free or lent (more borrowers go to make it so): the
    pool loses no GPUs, only their shape. Empty if nothing does it; the state is left as found."""
    state, quotas = sched.state, sched.quota

    def fits() -> bool:
        return sched.placement.place(state, rec.job, sched.rng) is not None

    released: list[tuple[JobRecord, Allocation]] = []
    for victim in borrowers:
        if fits():
            break
        released.append((victim, state.release(victim.job.id)))
    if not fits():
        for victim in _nearest_to_whole(sched, movable):
            released.append((victim, state.release(victim.job.id)))
            if fits():
                break
    if not fits():
        for _, alloc in released:
            state.allocate(alloc)
        return []
    needed: list[tuple[JobRecord, Allocation]] = []
    for victim, alloc in reversed(released):  # keep back whatever `rec` can do without
        state.allocate(alloc)
        if not fits():
            state.release(victim.job.id)
            needed.append((victim, alloc))
    stranded = _stranded(sched, rec, [v for v, _ in needed if v.pool is not None])
    for _, alloc in needed:
        state.allocate(alloc)
    chosen = [v for v, _ in needed]
    if stranded:  # on-demand jobs left to wait: only for a guarantee, and only for room there in count
        if quotas.pool(rec.job) != rec.job.tenant or \
                any(v.pool != ON_DEMAND or quotas.pool(v.job) == v.job.tenant for v in stranded):
            return []
        room = state.total_gpus - state.used_milli / FULL + sum(v.job.gpus for v in chosen if v.pool is None)
        for victim in borrowers:  # more borrowers give back what the waiting jobs lose
            if room >= rec.job.gpus:
                break
            if victim not in chosen:
                chosen.append(victim)
                room += victim.job.gpus
        if room < rec.job.gpus:
            return []
    return [(v, v not in stranded) for v in chosen]


def _nearest_to_whole(sched: Scheduler, movable: list[JobRecord]) -> list[JobRecord]:
    """Jobs to move by the node they would help empty: nodes that only movable jobs (and free GPUs)
    occupy first, then those with the fewest guaranteed, then on-demand GPUs to move; on a node,
    on-demand jobs before guaranteed ones, smallest first."""
    state = sched.state
    held = state.gpu_cap - state.whole_free  # GPUs busy per node
    on: defaultdict[int, list[int]] = defaultdict(lambda: [0, 0])  # node -> [guaranteed, on-demand] GPUs to move
    for r in movable:
        alloc = state.allocations[r.job.id]
        for node, gpus in zip(alloc.nodes, alloc.gpus):
            on[node][r.pool == ON_DEMAND] += len(gpus)

    def key(r: JobRecord) -> tuple[tuple[bool | int, ...], bool, float, float]:
        cost = min((bool(held[n] > sum(on[n])), *on[n]) for n in state.allocations[r.job.id].nodes)
        return cost, r.pool != ON_DEMAND, r.job.gpus, -(r.started_s or 0.0)
    return sorted(movable, key=key)


def _stranded(sched: Scheduler, rec: JobRecord, moved: list[JobRecord]) -> list[JobRecord]:
    """Of the moved jobs, those that would not fit again at once beside `rec` (placed smallest
    first; the state is left as found)."""
    state = sched.state
    first = sched.placement.place(state, rec.job, sched.rng)
    assert first is not None, "called only once `rec` fits"
    state.allocate(first)
    trial = [first]
    stranded = []
    for victim in sorted(moved, key=lambda r: r.job.gpus):
        alloc = sched.placement.place(state, victim.job, sched.rng)
        if alloc is None:
            stranded.append(victim)
        else:
            state.allocate(alloc)
            trial.append(alloc)
    for alloc in trial:
        state.release(alloc.job_id)
    return stranded
