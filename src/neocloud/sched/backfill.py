"""EASY backfill: a reservation for the blocked head job, and jobs behind it placed only where they
cannot delay it.

The reservation walks running jobs by estimated end until some fabric has room for the head's
gang; a job behind the head may then start if it ends before that time, or if it leaves the head's
GPUs on the reserved nodes alone.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from neocloud.model.job import Job
from neocloud.sched.placement import Placement
from neocloud.sched.queue import JobRecord
from neocloud.sched.state import FULL, Allocation, ClusterState

Shape = tuple[int, int | None, tuple[str, ...], int, int]  # what placement sees of a request
End = tuple[float, int, str]  # (estimated end, seq, job id) of a running job


@dataclass(slots=True)
class Reservation:
    """Where and when EASY backfill holds room for the blocked head job."""

    job_id: str
    start: float
    spare: dict[int, int]  # reserved node -> whole GPUs it has beyond the head's need at `start`
    scanned: int = 0
    # Request shapes that found no room in this pass: at all, or (for jobs that would outlast the
    # head's start) off the head's GPUs. Room only shrinks during a pass, so a later job of the
    # same shape need not ask placement again.
    no_room: set[Shape] = field(default_factory=set)
    no_room_long: set[Shape] = field(default_factory=set)
    # Jobs started behind the head in this pass: on the reservation's terms, or within their own
    # tenant's guarantee, which no reservation binds.
    backfilled: list[str] = field(default_factory=list)
    by_right: list[str] = field(default_factory=list)


def compute_reservation(state: ClusterState, ends: Iterable[End], job: Job, now: float) -> tuple[float, dict[int, int]]:
    """When and on which nodes `job` will start, if running jobs end at their estimates: the start,
    and each reserved node's whole GPUs beyond the job's need then. A running job with no estimate
    never ends, so when the walk reaches one the start is unknown (infinite) and nothing is reserved.

    The walk visits only the nodes of the jobs it passes: its cost follows how long the head must
    wait, not the fleet's size.
    """
    layout = state.layout(job)
    per_node, count = max(layout[0], 1), len(layout)
    groups = state.groups_for(job.gpu_types)
    group_of = state.group_of(job.gpu_types)
    cpu, mem = job.cpu_milli, job.memory_mib
    if cpu or mem:  # the fit index does not see CPU/memory caps
        ready = [sum(1 for c in g for n in state.candidates(int(c), per_node) if state.could_host(n, cpu, mem))
                 for g in groups]
    else:
        ready = [int(state.nodes_with(g, per_node).sum()) for g in groups]
    crossing: list[list[int]] = [[] for _ in groups]  # nodes that reach per_node free GPUs in time
    freed: dict[int, int] = {}
    sharing: dict[tuple[int, int], int] = {}  # (node, GPU) held in part -> its holders yet to end
    whole, cell_of, takes_work = state.whole_free, state.cell_of, state.takes_work
    exact = bool(cpu or mem) or state.withholding  # else any node of the job's cells that takes work
    at = now
    for end, _, job_id in ends:
        if max(ready, default=0) >= count:
            break
        if end == float("inf"):
            return float("inf"), {}
        alloc = state.allocations[job_id]
        for node, gpus in zip(alloc.nodes, alloc.gpus):
            group = group_of[cell_of[node]]
            if group < 0 or not (state.could_host(node, cpu, mem) if exact else takes_work[node]):
                continue
            got = len(gpus) if alloc.gpu_milli == FULL else _last_to_leave(state, sharing, node, gpus)
            had = freed.get(node, 0)
            before = int(whole[node]) + had
            freed[node] = had + got
            if before < per_node <= before + got:
                ready[group] += 1
                crossing[group].append(node)
        at = end
    best = next((g for g, r in enumerate(ready) if r >= count), None)
    if best is None:
        return float("inf"), {}
    now_free = ((n, k) for c in groups[best].tolist() for n, k in state.free_nodes(c, per_node)
                if not exact or state.could_host(n, cpu, mem))
    in_time = ((n, int(whole[n])) for n in crossing[best])
    return at, {n: k + freed.get(n, 0) - per_node for n, k in itertools.islice(itertools.chain(now_free, in_time), count)}


def _last_to_leave(state: ClusterState, sharing: dict[tuple[int, int], int], node: int,
                   gpus: tuple[int, ...]) -> int:
    """A job holding part of `gpus` on `node` ends: how many of them it leaves wholly free, the last
    of the jobs sharing each."""
    whole = 0
    for g in gpus:
        left = sharing.get((node, g))
        if left is None:
            left = sum(1 for j in state.on_node[node] if g in _gpus_on(state.allocations[j], node))
        sharing[(node, g)] = left - 1
        whole += left == 1
    return whole


def _gpus_on(alloc: Allocation, node: int) -> tuple[int, ...]:
    return alloc.gpus[alloc.nodes.index(node)]


class Reservations:
    """The head's reservation, kept until the head, the running set or a cordon changes: a pass
    that finds the same head blocked by the same jobs pays for the walk once."""

    def __init__(self) -> None:
        self._key: tuple[int, int, int] | None = None
        self._kept: tuple[float, dict[int, int]] = (float("inf"), {})

    def for_head(self, state: ClusterState, ends: Iterable[End], head: JobRecord, running_version: int,
                 now: float) -> Reservation:
        key = (head.seq, running_version, state.cordons)
        if self._key != key:
            self._key, self._kept = key, compute_reservation(state, ends, head.job, now)
        start, spare = self._kept
        return Reservation(head.job.id, start, dict(spare))


def place_behind(state: ClusterState, placement: Placement, rng: np.random.Generator, jobs: Mapping[str, JobRecord],
                 rec: JobRecord, head: Reservation, now: float) -> Allocation | None:
    """Place a job behind the blocked head only where it cannot delay the head's start.

    A job due to end before the head starts may go anywhere; a longer one may take only the GPUs
    the head will not need on its reserved nodes, or else stays off those nodes.
    """
    if not head.spare:
        return None  # the head's start is unknown, so nothing may pass it
    job = rec.job
    shape: Shape = (job.gpu_milli, job.gpus_per_node, job.gpu_types, job.cpu_milli, job.memory_mib)
    est = rec.remaining_estimate(now)
    short = est is not None and now + est <= head.start
    if shape in head.no_room or (not short and shape in head.no_room_long):
        return None
    alloc = placement.place(state, job, rng)
    if alloc is None:
        head.no_room.add(shape)
        return None
    if short or not _takes_reserved(state, jobs, alloc, head):
        return alloc  # ends before the head starts, or leaves the head's GPUs alone
    with state.withheld(head.spare):
        alloc = placement.place(state, job, rng)
    if alloc is None:
        head.no_room_long.add(shape)
    return alloc


def _takes_reserved(state: ClusterState, jobs: Mapping[str, JobRecord], alloc: Allocation, head: Reservation) -> bool:
    """Whether `alloc` eats into GPUs held for the head; if not, count what it uses of the spare."""
    taken = {n: _whole_gpus_taken(state, jobs, alloc, i, head.start) for i, n in enumerate(alloc.nodes)
             if n in head.spare}
    if any(k > head.spare[n] for n, k in taken.items()):
        return True
    for n, k in taken.items():
        head.spare[n] -= k
    return False


def _whole_gpus_taken(state: ClusterState, jobs: Mapping[str, JobRecord], alloc: Allocation, i: int,
                      start: float) -> int:
    """GPUs `alloc` holds on its i-th node that would otherwise be wholly free at `start`: a shared
    GPU is lost to the head even when jobs due to end by then hold the rest of it."""
    if alloc.gpu_milli == FULL:
        return len(alloc.gpus[i])
    node = alloc.nodes[i]
    left = state.gpu_left[node]
    return sum(1 for g in alloc.gpus[i] if left[g] == FULL or _freed_by(state, jobs, node, g, start))


def _freed_by(state: ClusterState, jobs: Mapping[str, JobRecord], node: int, gpu: int, start: float) -> bool:
    """Whether every job sharing GPU `gpu` of `node` is due to end by `start`."""
    for job_id in state.on_node[node]:
        if gpu in _gpus_on(state.allocations[job_id], node) and jobs[job_id].estimated_end() > start:
            return False
    return True
