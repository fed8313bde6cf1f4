"""Preemption for better-ranked queues: under a preemptive queue policy (LAS, virtual deadlines) a
blocked job displaces running jobs the policy ranks below it, if that makes it fit.

Jobs running under another tenant's guarantee are never taken: a guarantee outranks any queue.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

from neocloud.model.events import Action, Preempt
from neocloud.sched.queue import JobRecord
from neocloud.sched.quota import ON_DEMAND
from neocloud.sched.state import Allocation

if TYPE_CHECKING:
    from neocloud.sched.scheduler import Scheduler


def preempt_for_better_queues(sched: Scheduler, now: float) -> list[Action]:
    """Up to `preempt_depth` blocked jobs, in queue order, each take the fewest worst-ranked
    running jobs that let it fit; the pass then starts them."""
    queue, state = sched.queue, sched.state
    actions: list[Action] = []
    worst_first: list[JobRecord] | None = None  # ranked once a job is found blocked
    blocked = 0
    for rec in list(itertools.islice(queue.order(sched.usage), sched.backfill_depth)):
        if sched.placement.place(state, rec.job, sched.rng) is not None:
            continue  # fits as things are; the pass will start it
        if worst_first is None:
            worst_first = sorted(sched.running.values(), key=lambda r: queue.running_key(r, now), reverse=True)
        if not worst_first or not queue.displaces(rec, worst_first[0], now):
            break  # nobody running ranks below this job, nor below any after it
        blocked += 1
        if blocked > sched.preempt_depth:
            break
        taken: list[tuple[JobRecord, Allocation]] = []
        fits = False
        kept = []  # running under another tenant's guarantee: not this job's to take
        while worst_first and queue.displaces(rec, worst_first[0], now):
            victim = worst_first.pop(0)
            if victim.pool not in (None, ON_DEMAND) and victim.pool != rec.job.tenant:
                kept.append(victim)
                continue
            taken.append((victim, state.release(victim.job.id)))
            if sched.placement.place(state, rec.job, sched.rng) is not None:
                fits = True
                break
        for _, alloc in taken:  # put them back; a real preemption stops them through the scheduler
            state.allocate(alloc)
        worst_first = kept + worst_first
        if not fits:
            worst_first = [v for v, _ in taken] + worst_first
            continue
        for victim, _ in taken:
            sched._requeue(victim, now)
            actions.append(Preempt(victim.job.id, f"{queue.name}: {rec.job.id} ranks higher"))
    return actions
