"""`neocloud` placement: expected fragmentation over the shapes still to come, CPU and memory counted.

Single-node jobs are scored on every node that can take them, vectorised, with

    score = (frag_before - frag_after) + lam * (stranded_before - stranded_after) - eps * idle_after

- frag is FGD's expected fragment (see `fgd.frag`) over the request shapes the workload is
  likely to send next: learned from the original trace when `prime` is called and kept up to date
  online with every job seen (counts, top shapes covering 95%), honouring GPU-model constraints
  (a shape's fragment on a model it may not use is all of the node's idle GPU);
- stranded is the idle GPU milli that the node's CPU and memory can no longer feed, at the
  workload's average CPU and memory per GPU: a GPU left with no CPU or memory is a fragment for
  every shape, whether or not a typical shape happens to sit just at the threshold;
- the exact (float) change is used, not FGD's integer-truncated sigmoid, so nodes are rarely
  tied, and the last term prefers fuller nodes, keeping whole nodes free for big jobs; remaining
  ties go to the lowest node id (deterministic).

A shared job tries each GPU it fits on; a whole-GPU job takes the first wholly free GPUs. Gangs
of several nodes go through `TopologyPacking`, which keeps whole leaves free.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from neocloud.model.job import Job
from neocloud.sched.fgd import (
    ScoreCache,
    ScoredPlacement,
    Shape,
    TypicalPods,
    after_shared,
    after_whole,
    frag,
    shape_of,
)
from neocloud.sched.state import FULL, ClusterState


class ShapeAwarePacking(ScoredPlacement):
    """Our default single-node placement (see the module docstring)."""

    name = "neocloud"
    lam = 1.0  # weight of stranded GPU milli against fragmented GPU milli
    eps = 1e-3  # pull toward fuller nodes
    relearn = 512  # refresh the learned shapes after this many new jobs

    def __init__(self) -> None:
        self._counts: Counter[tuple[Shape, int]] = Counter()
        self._cpu_per_gpu = 0.0
        self._mem_per_gpu = 0.0
        self._seen_since = 0
        self.typical: TypicalPods | None = None
        self._arrays: tuple[np.ndarray, ...] | None = None
        self._cache = ScoreCache()

    # -- the workload still to come ---------------------------------------------------------------
    def prime(self, jobs: list[Job]) -> None:
        """Start from the trace's request shapes."""
        for j in jobs:
            self._count(j)
        self._learn()

    def _count(self, job: Job) -> None:
        self._counts[(shape_of(job), job.memory_mib)] += 1

    def _learn(self) -> None:
        jobs_shapes: Counter[Shape] = Counter()
        cpu = mem = gpu = 0.0
        for (shape, memory), n in self._counts.items():
            jobs_shapes[shape] += n
            g = shape[1] * shape[2] / FULL
            if g > 0:
                cpu += n * shape[0]
                mem += n * memory
                gpu += n * g
        self.typical = TypicalPods.from_counts(jobs_shapes)
        self._cpu_per_gpu = cpu / gpu if gpu else 0.0
        self._mem_per_gpu = mem / gpu if gpu else 0.0
        self._arrays = None
        self._cache.clear()
        self._seen_since = 0

    def _observe(self, job: Job) -> None:
        self._count(job)
        self._seen_since += 1
        if self.typical is None or self._seen_since >= self.relearn:
            self._learn()

    # -- placement ----------------------------------------------------------------------------
    def _key(self, job: Job) -> object:
        return (shape_of(job), job.memory_mib)

    def _pick(self, scores: np.ndarray, rng: np.random.Generator) -> int:
        return int(np.argmax(scores))  # first (lowest id among equals: nodes are sorted by cell)

    def _value(self, left: np.ndarray, cpu: np.ndarray, mem: np.ndarray, gtype: np.ndarray) -> np.ndarray:
        """Fragmented plus stranded idle GPU milli (lower is better), and a pull toward full nodes."""
        assert self._arrays is not None
        idle = np.maximum(left, 0).sum(axis=-1)
        fed = np.full(idle.shape, np.inf)
        if self._cpu_per_gpu > 0:
            fed = np.minimum(fed, np.maximum(cpu, 0) / self._cpu_per_gpu * FULL)
        if self._mem_per_gpu > 0:
            fed = np.minimum(fed, np.maximum(mem, 0) / self._mem_per_gpu * FULL)
        stranded = np.maximum(idle - fed, 0)
        score: np.ndarray = frag(left, cpu, gtype, self._arrays) + self.lam * stranded + self.eps * idle
        return score

    def _score(self, state: ClusterState, job: Job, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        left, cpu, mem = state.gpu_left[nodes], state.cpu_free[nodes], state.mem_free[nodes]
        gtype = state.gpu_type[nodes]
        before = self._value(left, cpu, mem, gtype)
        cpu_after, mem_after = cpu - job.cpu_milli, mem - job.memory_mib
        if job.fractional and job.gpu_milli > 0:
            after = self._value(after_shared(left, job.gpu_milli), cpu_after[:, None], mem_after[:, None], gtype[:, None])
            s = np.where(left >= job.gpu_milli, before[:, None] - after, -np.inf)
            gpu = s.argmax(axis=1)
            return s[np.arange(len(nodes)), gpu], gpu
        after_left = after_whole(left, job.whole_gpus) if job.whole_gpus else left
        after = self._value(after_left, cpu_after, mem_after, gtype)
        return before - after, np.zeros(len(nodes), dtype=np.int64)
