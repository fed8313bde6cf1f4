"""The fragmentation experiment of the openb paper: fill the fleet, never drain it.

Protocol (as in the paper's simulator, so our figures compare with its published ones): the
trace's pods are shuffled by the seed, then topped up with pods drawn with replacement (or
thinned at random) until their GPU demand is `inflate` times the fleet's GPU capacity. Pods
arrive one by one and never leave; a pod that does not fit is dropped. After each arrival we
record arrived demand and allocated GPUs, both as a share of capacity; `allocation_at[p]` is the
mean allocated share over the arrivals whose demand rounds to p percent.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from neocloud.model.fleet import Fleet
from neocloud.model.job import Job
from neocloud.sched.placement import Placement
from neocloud.sched.state import FULL, ClusterState


@dataclass(slots=True)
class InflateResult:
    placement: str
    seed: int
    inflate: float
    pods_arrived: int
    pods_placed: int
    allocation_at: dict[str, float]  # arrived demand % -> allocated share of GPU capacity %
    wall_s: float

    @property
    def final(self) -> float:
        return self.allocation_at[str(round(self.inflate * 100))]


def inflated_workload(pods: list[Job], capacity_milli: int, inflate: float, rng: np.random.Generator) -> list[Job]:
    """The trace's pods shuffled, then topped up or thinned to `inflate` x GPU capacity."""
    order = sorted(pods, key=lambda p: p.id)
    workload = [order[i] for i in rng.permutation(len(order))]
    target = inflate * capacity_milli
    demand = sum(p.gpu_milli for p in workload)
    if demand < target:
        copies = 0
        while True:
            pod = order[int(rng.integers(len(order)))]
            if demand + pod.gpu_milli > target:
                break
            copies += 1
            workload.append(replace(pod, id=f"{pod.id}~{copies}"))
            demand += pod.gpu_milli
    else:
        while demand > target:
            demand -= workload.pop(int(rng.integers(len(workload)))).gpu_milli
    return workload


def run_inflate(
    fleet: Fleet,
    pods: list[Job],
    policy: Placement,
    *,
    inflate: float = 1.3,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> InflateResult:
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    state = ClusterState(fleet)
    capacity = state.total_gpus * FULL
    workload = inflated_workload(pods, capacity, inflate, rng)
    prime = getattr(policy, "prime", None)
    if callable(prime):
        prime(list(pods))  # policies that learn the workload's shapes see the original trace
    buckets: dict[int, list[float]] = defaultdict(list)
    arrived = placed = 0
    for i, pod in enumerate(workload):
        arrived += pod.gpu_milli
        alloc = policy.place(state, pod, rng)
        if alloc is not None:
            state.allocate(alloc)
            placed += 1
        buckets[round(arrived / capacity * 100)].append(state.used_milli / capacity * 100)
        if progress and i % 256 == 0:
            progress(i, len(workload))
    allocation_at = {}
    for pct in range(1, round(inflate * 100) + 1):
        window = buckets.get(pct) or buckets.get(pct - 1, []) + buckets.get(pct + 1, [])
        allocation_at[str(pct)] = round(float(np.mean(window)), 2) if window else float("nan")
    return InflateResult(policy.name, seed, inflate, len(workload), placed, allocation_at,
                         time.perf_counter() - start)
