"""Preemption for better-ranked queues: under a preemptive queue policy (LAS, virtual deadlines) a
blocked job displaces running jobs the policy ranks below it, if that makes it fit.

Jobs running under another tenant's guarantee are never taken: a guarantee outranks any queue.

The walk over would-be victims counts what their going would free (`Room`) and asks placement
only once the count says the blocked job might fit: a gang blocked behind hundreds of small jobs
costs a few dictionary updates per victim, not a release and a placement each.
"""

from __future__ import annotations

import itertools
from collections import deque
from typing import TYPE_CHECKING

from neocloud.model.events import Action, Preempt
from neocloud.model.job import Job
from neocloud.sched.queue import JobRecord
from neocloud.sched.quota import ON_DEMAND
from neocloud.sched.state import FULL, Allocation, ClusterState

if TYPE_CHECKING:
    from neocloud.sched.scheduler import Scheduler


def preempt_for_better_queues(sched: Scheduler, now: float) -> list[Action]:
    """Up to `preempt_depth` blocked jobs, in queue order, each take the fewest worst-ranked
    running jobs that let it fit, and of those only the ones on the nodes it lands on; the pass
    then starts them."""
    queue, state = sched.queue, sched.state
    actions: list[Action] = []
    worst_first: deque[JobRecord] | None = None  # ranked once a job is found blocked
    blocked = 0
    for rec in list(itertools.islice(queue.order(sched.usage), sched.backfill_depth)):
        if sched.placement.place(state, rec.job, sched.rng) is not None:
            continue  # fits as things are; the pass will start it (placement keeps the answer)
        if worst_first is None:
            worst_first = deque(sched.worst_ranked(now))
        if not worst_first or not queue.displaces(rec, worst_first[0], now):
            break  # nobody running ranks below this job, nor below any after it
        blocked += 1
        if blocked > sched.preempt_depth:
            break
        taken: list[tuple[JobRecord, Allocation]] = []
        room = Room(state, rec.job)
        released = False  # whether `taken` are out of the state, for placement to see
        fits: Allocation | None = None
        kept = []  # running under another tenant's guarantee: not this job's to take
        while worst_first and queue.displaces(rec, worst_first[0], now):
            victim = worst_first.popleft()
            if victim.pool not in (None, ON_DEMAND) and victim.pool != rec.job.tenant:
                kept.append(victim)
                continue
            alloc = state.allocations[victim.job.id]
            taken.append((victim, alloc))
            if not released and not room.release(alloc):
                continue  # it cannot fit yet: no placement would find room
            for v, _ in taken[len(taken) - 1 if released else 0:]:
                state.release(v.job.id)
            released = True
            fits = sched.placement.place(state, rec.job, sched.rng)  # kept for the pass
            if fits is not None:
                break
        worst_first.extendleft(reversed(kept))
        if fits is not None:
            # Only the victims on the nodes the job lands on are needed: the rest run on.
            lands = set(fits.nodes)
            spared = [(v, a) for v, a in taken if lands.isdisjoint(a.nodes)]
            taken = [(v, a) for v, a in taken if not lands.isdisjoint(a.nodes)]
            for _, alloc in spared:
                state.allocate(alloc)
            worst_first.extendleft(reversed([v for v, _ in spared]))
        if fits is None:
            if released:  # put them back as they were
                for _, alloc in taken:
                    state.allocate(alloc)
            worst_first.extendleft(reversed([v for v, _ in taken]))
            continue
        for victim, _ in taken:  # already out of the state: the scheduler stops them
            sched._requeue(victim, now, released=True)
            actions.append(Preempt(victim.job.id, f"{queue.name}: {rec.job.id} ranks higher"))
    return actions


class Room:
    """What a blocked job would find if some running jobs were gone, counted beside the state.

    Released one by one, jobs are counted until `release` first says the job might fit: no
    placement that honours the filter (GPU type, whole or shared GPUs, CPU and memory, cordons, a
    gang's nodes in one fabric) can find room before then, since the job found none at the start
    and only the nodes the released jobs touch have changed. A gang's count ignores CPU and memory
    (as the fit index does), which errs only toward asking placement sooner.
    """

    def __init__(self, state: ClusterState, job: Job) -> None:
        self.state, self.job = state, job
        layout = state.layout(job)
        self.per_node, self.count = layout[0], len(layout)
        groups = state.groups_for(job.gpu_types)
        self.group_of = state.group_of(job.gpu_types)
        # Per group, nodes with room for one of the gang's nodes (a gang only).
        self.ready = [int(state.nodes_with(g, self.per_node).sum()) for g in groups] if self.count > 1 else []
        self.left: dict[int, list[int]] = {}  # touched node -> free milli per GPU without the released jobs
        self.cpu: dict[int, int] = {}
        self.mem: dict[int, int] = {}

    def release(self, alloc: Allocation) -> bool:
        """Count `alloc` as gone; whether that may have made room for the job."""
        state, might = self.state, False
        for node, gpus in zip(alloc.nodes, alloc.gpus):
            group = self.group_of[state.cell_of[node]]
            if group < 0 or not state.schedulable[node]:
                continue  # never this job's node
            left = self.left.get(node)
            if left is None:
                left = self.left[node] = state.gpu_left[node].tolist()
                self.cpu[node], self.mem[node] = int(state.cpu_free[node]), int(state.mem_free[node])
            before = left.count(FULL)
            for g in gpus:
                left[g] += alloc.gpu_milli
            self.cpu[node] += alloc.cpu_milli
            self.mem[node] += alloc.memory_mib
            if self.count > 1:
                if before < self.per_node <= left.count(FULL):
                    self.ready[group] += 1
                    might = might or self.ready[group] >= self.count
            else:
                might = might or self._fits(node, left)
        return might

    def _fits(self, node: int, left: list[int]) -> bool:
        """Whether a single-node job passes the filter on `node` as counted."""
        job = self.job
        if self.cpu[node] < job.cpu_milli or self.mem[node] < job.memory_mib:
            return False
        if job.fractional and job.gpu_milli > 0:
            return max(left) >= job.gpu_milli
        return left.count(FULL) >= job.whole_gpus
