"""FGD: Fragmentation Gradient Descent (Weng et al., ATC'23 "Beware of Fragmentation"), as published.

A faithful baseline for the openb experiment, after the paper's simulator
(`pkg/simulator/plugin/fgd_score.go`, `pkg/utils/frag.go`).

*Typical pods* are the workload's request shapes, key = (CPU milli, GPU milli per GPU, GPU count,
GPU models allowed), a zero CPU request counted as 100m as Kubernetes scores it, taken from the
original trace (`prime`) by frequency until they cover 95% of the pods (equal counts: the larger
request first, the paper's order), their frequencies renormalised to sum to 1. (The paper keys the
models by the spelling of `gpu_spec`, so "V100M16|V100M32" and "V100M16|V100M32|V100M32" are two
shapes there and one here; the published figures are matched within 0.1 points all the same.)

The *fragment* of a node for a shape t is the idle GPU capacity t could not use there: all of the
node's idle GPU milli if t asks no GPU, may not run on the node's GPU model, finds fewer than
t.num GPUs with t.milli free, or lacks CPU; else only the idle milli of the GPUs with less than
t.milli free. A node's fragmentation is the expected fragment over the typical shapes, frag(node)
= sum_t freq_t * F(node, t); memory is ignored.

A pod goes to the node whose fragmentation grows least: score = int(sigmoid((before - after) /
1000) * 100). The integer scores tie often, and ties go to the node first in one random order
drawn for the whole run (`RunOrder`), as in the paper's simulator; a fresh random pick at every
decision, as stock Kubernetes makes, costs about 5 points on the shared-GPU traces. A shared pod
tries each GPU it fits on and keeps the best (first on ties); a whole-GPU pod takes the first
wholly free GPUs. Gangs of several nodes go through `TopologyPacking` (openb has none).

Scoring is vectorised over nodes, GPUs and shapes, and cached per (node, shape): a node is scored
again only after its free capacity changed (`ScoreCache`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from neocloud.errors import SchedulingError
from neocloud.model.job import Job
from neocloud.sched.placement import RunOrder, TopologyPacking, feasible_nodes
from neocloud.sched.state import FULL, Allocation, ClusterState

Shape = tuple[int, int, int, tuple[str, ...]]  # (cpu milli, GPU milli per GPU, GPU count, GPU models)


NONZERO_CPU = 100  # milli-CPU that Kubernetes scores a zero CPU request as


def shape_of(job: Job) -> Shape:
    """A job's request shape, as FGD keys its typical pods (a zero CPU request scored as 100m)."""
    cpu = job.cpu_milli or NONZERO_CPU
    if job.gpu_milli == 0:
        return (cpu, 0, 0, job.gpu_types)
    if job.fractional:
        return (cpu, job.gpu_milli, 1, job.gpu_types)
    return (cpu, FULL, job.whole_gpus, job.gpu_types)


@dataclass(frozen=True, slots=True)
class TypicalPods:
    """Request shapes and their frequencies (summing to 1)."""

    shapes: tuple[Shape, ...]
    freq: np.ndarray

    @classmethod
    def from_jobs(cls, jobs: Iterable[Job], coverage: float = 0.95) -> TypicalPods:
        return cls.from_counts(Counter(shape_of(j) for j in jobs), coverage)

    @classmethod
    def from_counts(cls, counts: Counter[Shape], coverage: float = 0.95) -> TypicalPods:
        """The most frequent shapes until they cover `coverage` of the jobs, renormalised."""
        total = sum(counts.values())
        shapes: list[Shape] = []
        weights: list[int] = []
        covered = 0
        # Most frequent first, equal counts the larger request first: the paper's order, which
        # decides the shapes kept at the cut.
        for shape, n in sorted(counts.items(), key=lambda kv: (kv[1], kv[0][:3], "|".join(kv[0][3])), reverse=True):
            if total and covered >= coverage * total:
                break
            shapes.append(shape)
            weights.append(n)
            covered += n
        w = np.array(weights, dtype=np.float64)
        return cls(tuple(shapes), w / w.sum() if len(w) else w)

    def arrays(self, state: ClusterState) -> tuple[np.ndarray, ...]:
        """(cpu, milli, num, type_ok[T, types], freq) as arrays against `state`'s GPU models."""
        cpu = np.array([s[0] for s in self.shapes], dtype=np.int64)
        milli = np.array([s[1] for s in self.shapes], dtype=np.int64)
        num = np.array([s[2] for s in self.shapes], dtype=np.int64)
        ok = np.ones((len(self.shapes), max(len(state.type_names), 1)), dtype=bool)
        for i, s in enumerate(self.shapes):
            if s[3]:
                ok[i] = [t in s[3] for t in state.type_names] or [False]
        return cpu, milli, num, ok, self.freq


def frag(left: np.ndarray, cpu: np.ndarray, gtype: np.ndarray, typical: tuple[np.ndarray, ...]) -> np.ndarray:
    """FGD's expected fragment (milli-GPU) of nodes in the given states.

    `left` is [..., G] free milli per GPU (-1 for GPUs a node lacks), `cpu` and `gtype` are [...].
    """
    t_cpu, t_milli, t_num, t_ok, freq = typical
    free = np.maximum(left, 0)
    idle = free.sum(axis=-1)
    fits = left[..., None, :] >= t_milli[:, None]  # [..., T, G]
    usable = (fits * free[..., None, :]).sum(axis=-1)  # [..., T]: idle milli on GPUs t can use
    ok = (fits.sum(axis=-1) >= t_num) & (cpu[..., None] >= t_cpu) & (t_milli > 0)
    ok &= t_ok.T[np.maximum(gtype, 0)] & (gtype >= 0)[..., None]
    # A sum along each row, not a matrix product: a node's value must not depend on which other
    # nodes are scored with it, or ties would follow the cache's history.
    lost: np.ndarray = idle * freq.sum() - (ok * usable * freq).sum(axis=-1)
    return lost


def after_shared(left: np.ndarray, milli: int) -> np.ndarray:
    """[k, G, G]: each node's GPUs after `milli` goes onto GPU i (row i); invalid where it does not fit."""
    g = left.shape[1]
    out = np.repeat(left[:, None, :], g, axis=1)
    idx = np.arange(g)
    out[:, idx, idx] -= milli
    return out


def after_whole(left: np.ndarray, count: int) -> np.ndarray:
    """[k, G]: each node's GPUs after `count` whole GPUs are taken, the first wholly free ones."""
    full = left == FULL
    take = full & (np.cumsum(full, axis=1) <= count)
    return np.where(take, 0, left)


FEW = 8  # at most this many stale nodes are looked up by their condition first


class ScoreCache:
    """Scores per (node, request key), recomputed only for nodes whose free capacity changed.

    A cached score is valid while the node's stamp (`ClusterState.stamp`, moved by every
    allocation and release on it) is the one it was computed at. A score is a function of the
    node's condition (free GPUs, CPU and memory, GPU model), so a few stale nodes (a busy fleet,
    where each placement moves one) are looked up by condition first: a fleet has few conditions,
    and a lookup costs a dictionary's, where scoring costs dozens of vector operations.
    """

    MEMO = 1 << 14  # conditions remembered per key before starting afresh

    def __init__(self) -> None:
        self.state: ClusterState | None = None
        self.stamp = np.zeros(0, dtype=np.int64)
        self.tables: dict[object, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self.memos: dict[object, dict[tuple[bytes, int, int, int], tuple[float, int]]] = {}

    def __getstate__(self) -> dict[str, object]:
        """A copy (a forecast's snapshot) learns the conditions again rather than copy them."""
        return {**vars(self), "memos": {}}

    def clear(self) -> None:
        self.state = None
        self.tables, self.memos = {}, {}

    def sync(self, state: ClusterState) -> None:
        if state is not self.state:
            self.state = state
            self.stamp = state.stamp
            self.tables, self.memos = {}, {}

    def lookup(
        self,
        key: object,
        nodes: np.ndarray,
        compute: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    ) -> tuple[np.ndarray, np.ndarray]:
        """(score, GPU) for `nodes`; `compute(stale nodes)` fills in what is not cached."""
        table = self.tables.get(key)
        if table is None:
            n = len(self.stamp)
            table = (np.zeros(n), np.zeros(n, dtype=np.int64), np.full(n, -1, dtype=np.int64))
            self.tables[key] = table
        score, gpu, at = table
        stamp = self.stamp[nodes]
        stale_mask = at[nodes] != stamp
        if stale_mask.any():
            stale = nodes[stale_mask]
            if len(stale) <= FEW:
                self._by_condition(key, stale.tolist(), score, gpu, compute)
            else:
                score[stale], gpu[stale] = compute(stale)
            at[stale] = stamp[stale_mask]
        return score[nodes], gpu[nodes]

    def _by_condition(self, key: object, stale: list[int], score: np.ndarray, gpu: np.ndarray,
                      compute: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]) -> None:
        state = self.state
        assert state is not None
        memo = self.memos.setdefault(key, {})
        conditions = [(state.gpu_left[n].tobytes(), int(state.cpu_free[n]), int(state.mem_free[n]),
                       int(state.gpu_type[n])) for n in stale]
        missing = [i for i, c in enumerate(conditions) if c not in memo]
        if missing:
            if len(memo) + len(missing) > self.MEMO:
                memo.clear()
            s, g = compute(np.array([stale[i] for i in missing], dtype=np.int64))
            for i, si, gi in zip(missing, s.tolist(), g.tolist()):
                memo[conditions[i]] = (si, gi)
        for n, c in zip(stale, conditions):
            score[n], gpu[n] = memo[c]


def sigmoid_score(delta: np.ndarray) -> np.ndarray:
    """FGD's integer score of a fragmentation change: int(sigmoid(delta / 1000) * 100)."""
    return (100.0 / (1.0 + np.exp(-delta / 1000.0))).astype(np.int64)


class RecentIds:
    """The ids of jobs seen lately, so that a job placed again (a preemption's probe, a retry)
    is learned from once; bounded, as a long-lived server sees jobs without end."""

    def __init__(self, size: int = 1 << 16) -> None:
        self.size = size
        self._ids: dict[str, None] = {}

    def first(self, job_id: str) -> bool:
        """Whether `job_id` is new here (and remember it)."""
        if job_id in self._ids:
            return False
        self._ids[job_id] = None
        if len(self._ids) > self.size:
            del self._ids[next(iter(self._ids))]
        return True


class ScoredPlacement:
    """A single-node job scored on every node that can take it, scores cached per node and shape.

    Subclasses keep `typical` (the shapes to come) and say how to learn (`_observe`), key and
    score; ties go by the run's order.
    """

    name: str

    def __init__(self) -> None:
        self.typical: TypicalPods | None = None
        self._arrays: tuple[np.ndarray, ...] | None = None  # the typical shapes against the fleet's GPU models
        self._cache = ScoreCache()
        self._ties = RunOrder()
        self._gangs = TopologyPacking()
        self._recent = RecentIds()

    def place(self, state: ClusterState, job: Job, rng: np.random.Generator) -> Allocation | None:
        if len(state.layout(job)) > 1:
            return self._gangs.place(state, job, rng)
        if self._recent.first(job.id):
            self._observe(job)
        # Only the nodes that can take the job are scored and ranked: on a busy fleet a handful,
        # where every question over all of a type's nodes would cost the fleet's size.
        nodes = feasible_nodes(state, job)
        if not len(nodes):
            return None
        self._cache.sync(state)
        if self._arrays is None or self._arrays[3].shape[1] != max(len(state.type_names), 1):
            self._arrays = self._typical().arrays(state)
        scores, gpus = self._cache.lookup(self._key(job), nodes, lambda stale: self._score(state, job, stale))
        best = self._pick(state, nodes, scores, rng)
        return allocation(state, job, int(nodes[best]), int(gpus[best]))

    def _typical(self) -> TypicalPods:
        """The typical pods to score against; `_observe` has learned some before any placement."""
        if self.typical is None:
            raise SchedulingError(f"{self.name}: no request shapes learned to score nodes against")
        return self.typical

    def _observe(self, job: Job) -> None:
        raise NotImplementedError

    def _key(self, job: Job) -> object:
        raise NotImplementedError

    def _score(self, state: ClusterState, job: Job, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _pick(self, state: ClusterState, nodes: np.ndarray, scores: np.ndarray, rng: np.random.Generator) -> int:
        return self._ties.pick(state, nodes, scores, rng)


class FragmentationGradientDescent(ScoredPlacement):
    """FGD as published: the node whose expected fragmentation grows least, integer sigmoid scores."""

    name = "fgd"

    def __init__(self) -> None:
        super().__init__()
        self._seen: Counter[Shape] = Counter()
        self._primed = False

    def prime(self, jobs: list[Job]) -> None:
        """Learn the typical pods from the trace's original pods."""
        self.typical = TypicalPods.from_jobs(jobs)
        self._primed = True
        self._reset()

    def _reset(self) -> None:
        self._arrays = None
        self._cache.clear()

    def _observe(self, job: Job) -> None:
        """Unprimed, the typical pods are those seen so far (relearned as their number doubles)."""
        if self._primed:
            return
        self._seen[shape_of(job)] += 1
        n = self._seen.total()
        if self.typical is None or n & (n - 1) == 0:
            self.typical = TypicalPods.from_counts(self._seen)
            self._reset()

    def _key(self, job: Job) -> object:
        return shape_of(job)

    def _score(self, state: ClusterState, job: Job, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        assert self._arrays is not None
        left, cpu, gtype = state.gpu_left[nodes], state.cpu_free[nodes], state.gpu_type[nodes]
        before = frag(left, cpu, gtype, self._arrays)
        cpu_after = cpu - (job.cpu_milli or NONZERO_CPU)
        if job.fractional and job.gpu_milli > 0:
            after = frag(after_shared(left, job.gpu_milli), cpu_after[:, None], gtype[:, None], self._arrays)
            s = np.where(left >= job.gpu_milli, sigmoid_score(before[:, None] - after), -np.inf)
            gpu = s.argmax(axis=1)  # first GPU with the highest score
            return s[np.arange(len(nodes)), gpu], gpu
        after_left = after_whole(left, job.whole_gpus) if job.whole_gpus else left
        after = frag(after_left, cpu_after, gtype, self._arrays)
        return sigmoid_score(before - after).astype(np.float64), np.zeros(len(nodes), dtype=np.int64)


def allocation(state: ClusterState, job: Job, node: int, gpu: int) -> Allocation:
    """A single-node allocation: the given GPU for a shared pod, else the first wholly free GPUs."""
    if job.fractional:
        gpus: tuple[int, ...] = (gpu,) if job.gpu_milli > 0 else ()
        milli = job.gpu_milli
    else:
        gpus = tuple(int(g) for g in np.flatnonzero(state.gpu_left[node] == FULL)[: job.whole_gpus])
        milli = FULL
    return Allocation(job.id, (node,), (gpus,), milli, job.cpu_milli, job.memory_mib)
