"""The scheduler benchmark: placement decisions per second on a large, realistically full fleet.

    neocloud bench scheduler --nodes 12500 --gpus-per-node 8 --pending 10000

1. *Fleet.* `nodes` nodes of `gpus_per_node` H100s, in leaves of 32 nodes and fabrics of 64
   leaves (2,048 nodes, a two-tier fat tree of 64-port switches); the last fabric and leaf take
   the remainder. Built with `fleet_from_dict` from the compact fleet form.
2. *Fill.* Jobs of the `mixed` GPU mix of `neocloud.sim.synth` (Philly and Kalos sizes, gangs up
   to 1,024 GPUs, capped at a fabric) are submitted one by one to a `Scheduler` and placed by its
   own pass until `overfill` of the GPUs are allocated; then random running jobs end until
   `fill` is left. The churn leaves the holes a real fleet has, not a freshly packed one.
3. *Measure.* `pending` jobs of the `llm` GPU mix capped at 512 GPUs (1, 2, 4, ..., 512) are
   submitted at once, and the clock advances job end by job end (run times are Kalos' log-normal,
   estimates perfect): at each step the earliest-ending jobs finish until the allocated share is
   back at `fill`, then one scheduling pass runs. Until every pending job has started.

A *decision* is one attempt to place one pending job, as the pass makes it (`Scheduler.decisions`
counts the same): the placement call, or the backfill check and its placement calls, plus the
commit of the allocation when it succeeds and the head job's EASY reservation when it fails.
Each is timed with `time.perf_counter`; so is each whole pass. `decisions_per_s` is decisions
over the wall time of all passes, so it carries the pass's own overhead too.
"""

from __future__ import annotations

import heapq
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np

from neocloud.errors import NeocloudError
from neocloud.fleet.loader import fleet_from_dict
from neocloud.model.events import Launch
from neocloud.model.fleet import Fleet
from neocloud.model.job import Job
from neocloud.sched.scheduler import Scheduler
from neocloud.sched.state import Allocation, ClusterState
from neocloud.sim.synth import LLM_GPU_PROBS, PHILLY_GPU_PROBS, _llm_runtimes

NODES_PER_LEAF = 32
LEAVES_PER_FABRIC = 64
MAX_PENDING_GANG = 512

Progress = Callable[[str, int, int], None]  # (phase, done, total)


def bench_fleet(nodes: int, gpus_per_node: int = 8, *, gpu: str = "H100",
                nodes_per_leaf: int = NODES_PER_LEAF, leaves_per_fabric: int = LEAVES_PER_FABRIC) -> Fleet:
    """`nodes` nodes in leaves of `nodes_per_leaf`, fabrics of `leaves_per_fabric` leaves."""
    if nodes < 1 or gpus_per_node < 1:
        raise NeocloudError(f"the benchmark fleet needs nodes >= 1 and gpus_per_node >= 1, "
                            f"got {nodes} and {gpus_per_node}")
    shape = {"gpu": gpu, "gpus": gpus_per_node}
    fabrics: list[dict[str, Any]] = []
    full_leaves, rest = divmod(nodes, nodes_per_leaf)
    for f, start in enumerate(range(0, full_leaves, leaves_per_fabric)):
        count = min(leaves_per_fabric, full_leaves - start)
        fabrics.append({"name": f"ib{f}", "leaves": {"count": count, "nodes_per_leaf": nodes_per_leaf, **shape}})
    if rest:
        group = {"count": rest, **shape}
        if fabrics and fabrics[-1]["leaves"]["count"] < leaves_per_fabric:
            # The last fabric has room: write its leaves out so the short leaf can join them.
            last = fabrics[-1]
            name, count = last["name"], last["leaves"]["count"]
            last["leaves"] = [{"name": f"{name}-l{i}", "nodes": [{"count": nodes_per_leaf, **shape}]}
                              for i in range(count)] + [{"name": f"{name}-l{count}", "nodes": [group]}]
        else:
            fabrics.append({"name": f"ib{len(fabrics)}", "leaves": [{"name": f"ib{len(fabrics)}-l0",
                                                                      "nodes": [group]}]})
    spec = {"name": f"bench-{nodes}x{gpus_per_node}",
            "sites": [{"name": "bench", "kind": "owned", "it_mw": nodes * gpus_per_node * 1.4e-3,
                       "pue": 1.25, "fabrics": fabrics}]}
    return fleet_from_dict(spec, "<bench>")


def _mix(probs: dict[int, float], cap: int) -> tuple[np.ndarray, np.ndarray]:
    """Sizes and probabilities of a GPU mix, dropping sizes above `cap` and renormalising."""
    sizes = np.array([g for g in probs if g <= cap], dtype=np.int64)
    p = np.array([probs[int(g)] for g in sizes], dtype=float)
    return sizes, p / p.sum()


def _mixed_probs() -> dict[int, float]:
    """synth's "mixed" profile: half Philly, half Kalos ("llm") jobs."""
    out: dict[int, float] = defaultdict(float)
    for probs in (PHILLY_GPU_PROBS, LLM_GPU_PROBS):
        for g, p in probs.items():
            out[g] += p / 2
    return dict(out)


def _job(job_id: str, gpus: int, gpus_per_node: int, estimate: float, tenant: str) -> Job:
    return Job(id=job_id, gpus=gpus, gpus_per_node=gpus_per_node if gpus > gpus_per_node else None,
               tenant=tenant, estimate_s=estimate, name="bench")


def _size_bucket(gpus: float) -> int:
    """The power of two at or above a job's GPU count: the row of the per-size table."""
    return 1 << max(int(np.ceil(np.log2(max(gpus, 1)))), 0)


class _Timer:
    """Times each decision of a scheduler's pass by wrapping the calls the pass makes.

    The pass calls `placement.place` for jobs up to the blocked head and `_backfill` behind it;
    a successful decision then commits through `_start`, a failed head books `_reservation`.
    Those two are added to the decision they follow. Placement calls made inside `_backfill`
    or LAS preemption are part of that call, not decisions of their own.
    """

    def __init__(self, sched: Scheduler) -> None:
        self.ms: list[float] = []
        self.gpus: list[float] = []
        self.depth = 0
        self.inner = sched.placement
        self.name = self.inner.name
        self._wrap(sched, "_backfill", self._decision)
        self._wrap(sched, "_start", self._extend)
        self._wrap(sched, "_reservation", self._extend)
        self._wrap(sched, "_preempt_for_better_queues", self._nested)
        sched.placement = self

    def detach(self, sched: Scheduler) -> None:
        """Give the scheduler back its own methods and placement (and break the cycle)."""
        for attr in ("_backfill", "_start", "_reservation", "_preempt_for_better_queues"):
            delattr(sched, attr)
        sched.placement = self.inner

    def place(self, state: ClusterState, job: Job, rng: np.random.Generator) -> Allocation | None:
        if self.depth:
            return self.inner.place(state, job, rng)
        t = time.perf_counter()
        alloc = self.inner.place(state, job, rng)
        self.ms.append((time.perf_counter() - t) * 1e3)
        self.gpus.append(job.gpus)
        return alloc

    def _wrap(self, sched: Scheduler, attr: str, how: Callable) -> None:
        inner = getattr(sched, attr)
        setattr(sched, attr, lambda *a, **kw: how(inner, a, kw))

    def _decision(self, inner: Callable, a: tuple, kw: dict) -> Any:
        self.depth += 1
        t = time.perf_counter()
        try:
            return inner(*a, **kw)
        finally:
            self.depth -= 1
            self.ms.append((time.perf_counter() - t) * 1e3)
            self.gpus.append(a[0].job.gpus)

    def _extend(self, inner: Callable, a: tuple, kw: dict) -> Any:
        t = time.perf_counter()
        try:
            return inner(*a, **kw)
        finally:
            if self.ms and not self.depth:
                self.ms[-1] += (time.perf_counter() - t) * 1e3

    def _nested(self, inner: Callable, a: tuple, kw: dict) -> Any:
        self.depth += 1
        try:
            return inner(*a, **kw)
        finally:
            self.depth -= 1


def _pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else 0.0


def run_scheduler_bench(
    nodes: int,
    gpus_per_node: int = 8,
    pending: int = 10_000,
    *,
    seed: int = 0,
    placement: str = "neocloud",
    policy: str = "neocloud",
    backfill: bool = True,
    fill: float = 0.85,
    overfill: float = 0.95,
    step: float | None = None,
    max_passes: int = 1_000_000,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Fill a fleet, queue `pending` gangs of 1-512 GPUs, and time every placement decision."""
    if not 0 < fill <= overfill < 1:
        raise NeocloudError(f"need 0 < fill <= overfill < 1, got fill={fill} and overfill={overfill}")
    if pending < 1:
        raise NeocloudError(f"--pending must be at least 1, got {pending}")
    wall = time.perf_counter()
    fleet = bench_fleet(nodes, gpus_per_node)
    sched = Scheduler(fleet, queue=policy, placement=placement, backfill=backfill, seed=seed)
    state = sched.state
    rng = np.random.default_rng(seed)
    fabric_gpus = LEAVES_PER_FABRIC * NODES_PER_LEAF * gpus_per_node
    largest = min(fabric_gpus, state.total_gpus)

    # -- fill: one job at a time through the scheduler's own pass, then churn -----------------
    sizes, probs = _mix(_mixed_probs(), largest)
    ends: list[tuple[float, int, str]] = []  # (estimated end, seq, job id) of running jobs
    running: set[str] = set()
    now = 0.0
    seq = 0
    fill_submitted = refused = 0
    done_share = 0
    t_fill = time.perf_counter()
    batch = 256
    while state.allocated_share < overfill and refused < 64:
        gpus = rng.choice(sizes, size=batch, p=probs).tolist()
        runs = _llm_runtimes(rng, batch).tolist()
        tenants = rng.integers(0, 8, size=batch).tolist()
        for g, d, t in zip(gpus, runs, tenants):
            if state.allocated_share >= overfill or refused >= 64:
                break
            job = _job(f"fill-{fill_submitted}", int(g), gpus_per_node, d, f"t{t}")
            fill_submitted += 1
            sched.submit(job, now)
            if sched.schedule(now):
                refused = 0
                seq += 1
                heapq.heappush(ends, (now + d, seq, job.id))
                running.add(job.id)
            else:
                sched.cancel(job.id, now)
                refused += 1  # in a row: the fleet is as full as this mix gets it
        if progress is not None:
            share = int(state.allocated_share * 1000)
            if share > done_share:
                done_share = share
                progress("fill", share, int(overfill * 1000))
    order = rng.permutation(sorted(running))
    for job_id in map(str, order):
        if state.allocated_share <= fill:
            break
        if state.allocated_share - sched.jobs[job_id].job.gpus / state.total_gpus < fill - 0.01:
            continue  # ending this one would overshoot: a smaller one will do
        sched.finish(job_id, now)
        running.discard(job_id)
    fill_s = time.perf_counter() - t_fill
    fill_share = state.allocated_share
    fill_jobs = len(running)
    if progress is not None:
        progress("fill", int(overfill * 1000), int(overfill * 1000))

    # -- measure: M pending gangs, the clock moving end by end --------------------------------
    psizes, pprobs = _mix(LLM_GPU_PROBS, min(MAX_PENDING_GANG, largest))
    pgpus = rng.choice(psizes, size=pending, p=pprobs).tolist()
    pruns = _llm_runtimes(rng, pending).tolist()
    ptenants = rng.integers(0, 8, size=pending).tolist()
    estimate = {}
    for i, (g, d, t) in enumerate(zip(pgpus, pruns, ptenants)):
        job = _job(f"job-{i}", int(g), gpus_per_node, d, f"t{t}")
        sched.submit(job, now)
        estimate[job.id] = d
    timer = _Timer(sched)
    decisions0 = sched.decisions
    pass_ms: list[float] = []
    shares: list[float] = []
    shares_after: list[float] = []
    started = 0
    while started < pending and len(pass_ms) < max_passes:
        # Time moves to the next end; jobs end until the fleet is back at the fill share (or,
        # with `step`, until that share of the GPUs has been freed: a fleet kept saturated).
        first = True
        floor = fill if step is None else state.allocated_share - step
        while ends and (first or state.allocated_share > floor):
            end, _, job_id = heapq.heappop(ends)
            if job_id not in running:
                continue
            now = max(now, end)
            sched.finish(job_id, now)
            running.discard(job_id)
            first = False
        shares.append(state.allocated_share)
        t = time.perf_counter()
        actions = sched.schedule(now)
        pass_ms.append((time.perf_counter() - t) * 1e3)
        shares_after.append(state.allocated_share)
        for action in actions:
            if isinstance(action, Launch):
                seq += 1
                heapq.heappush(ends, (now + estimate.get(action.job_id, 0.0), seq, action.job_id))
                running.add(action.job_id)
                started += action.job_id in estimate
        if progress is not None:
            progress("measure", started, pending)
        if not ends and not actions:
            break  # nothing left to end and nothing placed: the rest can never start

    timer.detach(sched)
    decisions = sched.decisions - decisions0
    ms = np.array(timer.ms)
    passes = np.array(pass_ms)
    pass_s = float(passes.sum()) / 1e3
    by_size: dict[int, list[float]] = defaultdict(list)
    for g, m in zip(timer.gpus, timer.ms):
        by_size[_size_bucket(g)].append(m)
    per_size = {
        str(k): {"decisions": len(v), "p50_ms": _pct(np.array(v), 50), "p99_ms": _pct(np.array(v), 99),
                 "max_ms": float(max(v))}
        for k, v in sorted(by_size.items())
    }
    return {
        "nodes": nodes,
        "gpus_per_node": gpus_per_node,
        "gpus": state.total_gpus,
        "leaves": len(fleet.leaves),
        "fabrics": len(fleet.fabrics),
        "pending": pending,
        "placement": placement,
        "policy": policy,
        "backfill": backfill,
        "seed": seed,
        "fill_target": fill,
        "fill_share": fill_share,
        "fill_jobs": fill_jobs,
        "fill_s": fill_s,
        "mean_share_during": float(np.mean(shares)) if shares else fill_share,
        "step": step,
        "mean_share_after_pass": float(np.mean(shares_after)) if shares_after else fill_share,
        "decisions": decisions,
        "failed_decisions": decisions - started,
        "timed_decisions": len(ms),
        "started": started,
        "passes": len(pass_ms),
        "measure_s": pass_s,
        "decisions_per_s": decisions / pass_s if pass_s > 0 else 0.0,
        "placement_decisions_per_s": len(ms) / (float(ms.sum()) / 1e3) if ms.sum() > 0 else 0.0,
        "p50_decision_ms": _pct(ms, 50),
        "p99_decision_ms": _pct(ms, 99),
        "max_decision_ms": float(ms.max()) if len(ms) else 0.0,
        "p50_pass_ms": _pct(passes, 50),
        "p99_pass_ms": _pct(passes, 99),
        "per_gang_size": per_size,
        "wall_s": time.perf_counter() - wall,
    }
