"""`neocloud` placement: the waste a node is left with, over the shapes still to come.

Single-node jobs are scored on every node that can take them, vectorised: the job goes where

    value = frag + lam * stranded + mu * waste

grows least, with a pull toward fuller nodes, and ties to the node first in the run's order.

- frag is FGD's expected fragment (see `fgd.frag`) over the request shapes the workload is
  likely to send next: learned from the original trace when `prime` is called and kept up to date
  online with every job seen (counts, top shapes covering 95%), honouring GPU-model constraints;
- stranded is the idle GPU milli that the node's CPU and memory can no longer feed, at the
  workload's average CPU and memory per GPU: a GPU left with no CPU or memory is lost to every
  shape, whether or not one typical shape happens to sit just at the threshold (without it the
  openb `default` trace loses 1.2 points: `bench/openb_inflate.py --ablation`);
- waste looks further ahead than frag's one pod: `waste_table` gives, per GPU, the milli it is
  expected to end with if each later pod that fits lands on it, so a remnant that only rare small
  pods can fill counts as lost, and one that two common pods fill exactly does not;
- the exact (float) change is used, not FGD's integer-truncated sigmoid, and the pull (the node's
  idle GPU milli before placement, times `pull`) prefers fuller nodes among near-equals: whole
  nodes stay free for big jobs and CPU-only pods go where the GPUs are used up, not where their
  CPU would strand GPUs.

A shared job tries each GPU it fits on; a whole-GPU job takes the first wholly free GPUs. Gangs
of several nodes go through `TopologyPacking`, which keeps whole leaves free.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from neocloud.model.job import Job
from neocloud.sched.fgd import (
    ScoredPlacement,
    Shape,
    TypicalPods,
    after_shared,
    after_whole,
    frag,
    shape_of,
)
from neocloud.sched.state import FULL, ClusterState


def waste_table(typical: TypicalPods) -> np.ndarray:
    """[FULL + 1]: the milli a GPU with r free is expected to end with, if each later pod that fits
    on it lands there (shapes drawn by frequency; whole-GPU shapes fit only an empty GPU)."""
    milli = np.array([s[1] for s in typical.shapes], dtype=np.int64)
    freq = typical.freq[milli > 0] if len(milli) else np.zeros(0)
    milli = milli[milli > 0]
    table = np.zeros(FULL + 1)
    for r in range(1, FULL + 1):
        fits = (milli <= r) & ((milli < FULL) | (r == FULL))
        if not fits.any():
            table[r] = r
            continue
        p = freq[fits]
        table[r] = float(p @ table[r - milli[fits]]) / float(p.sum())
    return table


def _close(a: TypicalPods, b: TypicalPods, per_gpu_a: tuple[float, float], per_gpu_b: tuple[float, float],
           tol: float = 0.02) -> bool:
    """Whether two learned workloads score nodes alike: shape frequencies within `tol` (total
    variation, a shape missing from one counting as 0 there), CPU and memory per GPU within `tol`
    relatively."""
    fa, fb = dict(zip(a.shapes, a.freq)), dict(zip(b.shapes, b.freq))
    if 0.5 * sum(abs(fa.get(k, 0.0) - fb.get(k, 0.0)) for k in fa.keys() | fb.keys()) > tol:
        return False
    return all(abs(x - y) <= tol * max(abs(x), abs(y), 1e-9) for x, y in zip(per_gpu_a, per_gpu_b))


class ShapeAwarePacking(ScoredPlacement):
    """Our default single-node placement (see the module docstring)."""

    name = "neocloud"
    lam = 1.5  # weight of stranded GPU milli against fragmented GPU milli
    mu = 0.3  # weight of the expected waste per GPU
    pull = 1e-2  # toward fuller nodes, per idle milli-GPU
    relearn = 512  # refresh the learned shapes after this many new jobs

    def __init__(self) -> None:
        super().__init__()
        self._counts: Counter[tuple[Shape, int]] = Counter()
        self._cpu_per_gpu = 0.0
        self._mem_per_gpu = 0.0
        self._seen_since = 0
        self._waste = np.zeros(FULL + 1)

    # -- the workload still to come ---------------------------------------------------------------
    def prime(self, jobs: list[Job]) -> None:
        """Start from the trace's request shapes."""
        for j in jobs:
            self._count(j)
        self._learn()

    def _count(self, job: Job) -> None:
        self._counts[(shape_of(job), job.memory_mib)] += 1

    def _learn(self) -> None:
        """Relearn the shapes, the CPU and memory per GPU; scores are kept while they barely move,
        since a change costs every node its cached scores."""
        jobs_shapes: Counter[Shape] = Counter()
        cpu = mem = gpu = 0.0
        for (shape, memory), n in self._counts.items():
            jobs_shapes[shape] += n
            g = shape[1] * shape[2] / FULL
            if g > 0:
                cpu += n * shape[0]
                mem += n * memory
                gpu += n * g
        self._seen_since = 0
        typical = TypicalPods.from_counts(jobs_shapes)
        per_gpu = (cpu / gpu if gpu else 0.0, mem / gpu if gpu else 0.0)
        if self.typical is not None and _close(self.typical, typical, (self._cpu_per_gpu, self._mem_per_gpu), per_gpu):
            return
        self.typical = typical
        self._waste = waste_table(typical)
        self._cpu_per_gpu, self._mem_per_gpu = per_gpu
        self._arrays = None
        self._cache.clear()

    def _observe(self, job: Job) -> None:
        self._count(job)
        self._seen_since += 1
        if self.typical is None or self._seen_since >= self.relearn:
            self._learn()

    # -- placement ----------------------------------------------------------------------------
    def _key(self, job: Job) -> object:
        return (shape_of(job), job.cpu_milli, job.memory_mib)  # the CPU taken, not FGD's 100m for none

    def _value(self, left: np.ndarray, cpu: np.ndarray, mem: np.ndarray, gtype: np.ndarray) -> np.ndarray:
        """Fragmented, stranded and expected-wasted idle GPU milli (lower is better)."""
        assert self._arrays is not None
        idle = np.maximum(left, 0).sum(axis=-1)
        fed = np.full(idle.shape, np.inf)
        if self._cpu_per_gpu > 0:
            fed = np.minimum(fed, np.maximum(cpu, 0) / self._cpu_per_gpu * FULL)
        if self._mem_per_gpu > 0:
            fed = np.minimum(fed, np.maximum(mem, 0) / self._mem_per_gpu * FULL)
        stranded = np.maximum(idle - fed, 0)
        waste = np.where(left >= 0, self._waste[np.clip(left, 0, FULL)], 0).sum(axis=-1)
        value: np.ndarray = frag(left, cpu, gtype, self._arrays) + self.lam * stranded + self.mu * waste
        return value

    def _score(self, state: ClusterState, job: Job, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        left, cpu, mem = state.gpu_left[nodes], state.cpu_free[nodes], state.mem_free[nodes]
        gtype = state.gpu_type[nodes]
        pull = self.pull * np.maximum(left, 0).sum(axis=1)
        cpu_after, mem_after = cpu - job.cpu_milli, mem - job.memory_mib
        # Before and after are valued in one call (column 0 before, the rest after): half the
        # vector operations, on the few stale nodes a busy fleet has, where their count is the cost.
        if job.fractional and job.gpu_milli > 0:
            g = left.shape[1]
            value = self._value(np.concatenate([left[:, None, :], after_shared(left, job.gpu_milli)], axis=1),
                                np.column_stack([cpu, np.repeat(cpu_after[:, None], g, axis=1)]),
                                np.column_stack([mem, np.repeat(mem_after[:, None], g, axis=1)]), gtype[:, None])
            s = np.where(left >= job.gpu_milli, value[:, :1] - value[:, 1:], -np.inf)
            gpu = s.argmax(axis=1)
            return s[np.arange(len(nodes)), gpu] - pull, gpu
        after_left = after_whole(left, job.whole_gpus) if job.whole_gpus else left
        value = self._value(np.stack([left, after_left], axis=1), np.column_stack([cpu, cpu_after]),
                            np.column_stack([mem, mem_after]), gtype[:, None])
        return value[:, 0] - value[:, 1] - pull, np.zeros(len(nodes), dtype=np.int64)
