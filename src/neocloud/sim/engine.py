"""The twin's clock: a discrete-event loop feeding a trace to the core scheduler.

The scheduler never sees true durations; the engine knows them and turns each Launch into a
finish event, at the consolidated speed when the gang sits on as few nodes of one leaf as it
can, else at the trace's measured spread speed. A preempted job keeps its progress up to its
last checkpoint (a suspend-to-checkpoint when it names no interval) and pays a restart cost.

With a failure model, nodes fail at its rates and the production health policy, driven by
`recovery`, stops, requeues and restarts their jobs; without one the replay is exactly as before.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np
from sortedcontainers import SortedList

from neocloud.errors import SchedulingError
from neocloud.model.events import Launch, Preempt
from neocloud.model.fleet import Fleet
from neocloud.sched.scheduler import Scheduler
from neocloud.sched.state import FULL
from neocloud.sim.faults import FailureModel
from neocloud.sim.recovery import Recovery
from neocloud.sim.report import JobOutcome, Report, summarise
from neocloud.sim.runs import Run
from neocloud.sim.trace import Trace

ARRIVE, FINISH, WAKE = 0, 1, 2  # at one instant: arrivals and finishes first, node events, then one pass


NOISE_SIGMA = 1.0  # log-normal spread of noisy estimates: half are low, one in ten is 3.6x too high


def with_estimates(trace: Trace, estimates: str, seed: int = 0) -> Trace:
    """The trace with users' estimates: `trace` as given, `perfect` (the truth), `none`, or `noisy`.

    `noisy` multiplies each true duration by a seeded log-normal factor (median 1, sigma
    NOISE_SIGMA): real users' estimates are off by several times either way.
    """
    if estimates == "trace":
        return trace
    values: list[float | None]
    if estimates == "perfect":
        values = [tj.duration_s for tj in trace.jobs]
    elif estimates == "none":
        values = [None] * len(trace.jobs)
    elif estimates == "noisy":
        factors = np.random.default_rng(seed).lognormal(0.0, NOISE_SIGMA, len(trace.jobs))
        values = [tj.duration_s * float(f) for tj, f in zip(trace.jobs, factors)]
    else:
        raise SchedulingError(f"unknown estimate model {estimates!r}; choose trace, perfect, noisy or none")
    jobs = [replace(tj, job=replace(tj.job, estimate_s=v)) for tj, v in zip(trace.jobs, values)]
    return Trace(trace.name, jobs)


def with_arrival_scale(trace: Trace, scale: float) -> Trace:
    """The trace with every arrival time multiplied by `scale`: < 1 compresses it into more load."""
    if scale <= 0:
        raise SchedulingError(f"arrival scale must be above 0, got {scale:g}")
    if scale == 1:
        return trace
    jobs = [replace(tj, job=replace(tj.job, submit_s=tj.job.submit_s * scale)) for tj in trace.jobs]
    return Trace(trace.name, jobs)


def simulate(
    fleet: Fleet,
    trace: Trace,
    *,
    policy: str = "neocloud",
    placement: str = "neocloud",
    backfill: bool = True,
    seed: int = 0,
    estimates: str = "perfect",
    restart_overhead_s: float = 10.0,
    progress: Callable[[int, int], None] | None = None,
    quotas: dict[str, float] | None = None,
    borrowing: bool = True,
    observe: Callable[[Scheduler, float, list[str]], None] | None = None,
    failures: FailureModel | None = None,
    until: float | None = None,
) -> Report:
    """Replay `trace` on `fleet`. With `quotas` (GPUs guaranteed per tenant, as reserved contracts
    give them) the report says, per tenant, the GPU-hours its guarantee owed it (what it held within
    the guarantee, plus the waiting jobs that would fit in the rest) and those delivered (held);
    `borrowing=False` keeps idle guarantees idle. `observe(scheduler, now, arrived)` is called after
    each instant's pass with the jobs that arrived at it (to take forecasts as a tenant would).
    `failures`: nodes fail and are repaired through the health policy (sim/recovery.py); `until`
    ends the replay at that time, with work still running counted as saved."""
    wall = time.perf_counter()
    trace = with_estimates(trace, estimates, seed)
    sched = Scheduler(fleet, queue=policy, placement=placement, backfill=backfill, seed=seed, quotas=quotas,
                      borrowing=borrowing)
    quotas = sched.quotas
    waiting: dict[str, SortedList] = {t: SortedList() for t in quotas}  # GPUs of each waiting job, by tenant
    owed: dict[str, float] = dict.fromkeys(quotas, 0.0)
    delivered: dict[str, float] = dict.fromkeys(quotas, 0.0)
    clock = 0.0
    last_arrival = max((tj.job.submit_s for tj in trace.jobs), default=0.0)
    busy_while_arriving = 0.0  # GPU-seconds held up to the last arrival: utilisation under the open load
    runs: dict[str, Run] = {}
    heap: list[tuple[float, int, int, str, int]] = []
    seq = 0
    for tj in trace.jobs:
        heap.append((tj.job.submit_s, ARRIVE, seq, tj.job.id, 0))
        runs[tj.job.id] = Run(tj)
        seq += 1
    heapq.heapify(heap)
    rejected: list[str] = []
    events = 0
    wake_at: float | None = None
    total = len(heap)
    finished = 0
    leaf: list[int] = sched.state.leaf.tolist()  # each node's leaf, as Python ints: read per launch

    def arm(job_id: str, end: float | None) -> None:
        nonlocal seq
        run = runs[job_id]
        run.version += 1
        if end is not None:
            heapq.heappush(heap, (end, FINISH, seq, job_id, run.version))
            seq += 1

    recovery = None if failures is None else \
        Recovery(fleet, sched, runs, failures, seed=seed, restart_s=restart_overhead_s, arm=arm)
    while heap or (recovery is not None and finished + len(rejected) + len(recovery.capped) < total
                   and not recovery.settled()):
        now = heap[0][0] if heap else math.inf
        if recovery is not None:
            now = min(now, recovery.next_at())
        if now == math.inf or (until is not None and now > until):
            break
        dt = now - clock
        if clock < last_arrival:
            busy_while_arriving += sched.state.used_milli / FULL * (min(now, last_arrival) - clock)
        if quotas:  # what each guarantee owed and delivered since the last event
            for tenant, guarantee in quotas.items():
                held = min(sched.usage.get(tenant, 0.0), guarantee)
                owed[tenant] += (held + _fill(waiting[tenant], guarantee - held)) * dt
                delivered[tenant] += held * dt
        clock = now
        arrived: list[str] = []
        while heap and heap[0][0] == now:
            _, kind, _, job_id, version = heapq.heappop(heap)
            events += 1
            if kind == WAKE:
                wake_at = None
                continue
            run = runs[job_id]
            if kind == ARRIVE:
                try:
                    sched.submit(run.trace.job, now)
                    arrived.append(job_id)
                    if run.trace.job.tenant in waiting:
                        waiting[run.trace.job.tenant].add(run.trace.job.gpus)
                except SchedulingError:
                    rejected.append(job_id)
            elif kind == FINISH and version == run.version:
                if recovery is not None:
                    recovery.finished(run, now)
                run.gpu_s += run.trace.job.gpus * (now - run.started)
                run.end = now
                sched.finish(job_id, now)
                finished += 1
        if recovery is not None:
            for job_id in recovery.step(now):  # requeued after a failure: waiting again
                if runs[job_id].trace.job.tenant in waiting:
                    waiting[runs[job_id].trace.job.tenant].add(runs[job_id].trace.job.gpus)
        for action in sched.schedule(now):
            run = runs[action.job_id]
            if run.trace.job.tenant in waiting:  # a start leaves the wait, a preemption returns to it
                (waiting[run.trace.job.tenant].remove if isinstance(action, Launch)
                 else waiting[run.trace.job.tenant].add)(run.trace.job.gpus)
            if isinstance(action, Launch):
                job = run.trace.job
                consolidated = len(action.nodes) <= len(sched.state.layout(job)) and \
                    len({leaf[n] for n in action.nodes}) == 1
                run.duration = run.trace.duration_s if consolidated or run.trace.spread_duration_s is None \
                    else run.trace.spread_duration_s
                run.spread_runs += not consolidated
                if recovery is not None:
                    end = recovery.launched(run, action.nodes, now)
                    arm(action.job_id, None if end == math.inf else end)
                else:
                    overhead = restart_overhead_s if run.first_start is not None else 0.0
                    run.first_start = now if run.first_start is None else run.first_start
                    run.started, run.overhead = now, overhead
                    arm(action.job_id, now + overhead + (1.0 - run.done) * run.duration)
            elif isinstance(action, Preempt):
                run.gpu_s += run.trace.job.gpus * (now - run.started)
                if recovery is not None:
                    recovery.preempted(run, now)
                else:
                    run.done = _progress_kept(run, now)
                run.version += 1  # its finish event is void now
                run.preemptions += 1
        if observe is not None and arrived:
            observe(sched, now, arrived)
        wake = sched.next_wakeup(now)
        if wake is not None and (wake_at is None or wake < wake_at):
            wake_at = wake
            heapq.heappush(heap, (wake_at, WAKE, seq, "", 0))
            seq += 1
        if progress is not None and events % 4096 < 8:
            progress(finished + len(rejected), total)
    if recovery is not None:
        recovery.close(clock if until is None else until)
        events += recovery.fleet.events

    outcomes = [
        JobOutcome(r.trace.job.id, r.trace.job.gpus, r.trace.job.submit_s, r.first_start, r.end, r.gpu_s,
                   r.preemptions, r.spread_runs)
        for r in runs.values()
    ]
    report = summarise(
        outcomes, fleet=fleet, trace=trace.name, policy=policy, placement=placement, backfill=backfill,
        seed=seed, estimates=estimates, rejected=len(rejected), events=events,
        wall_s=time.perf_counter() - wall, decisions=sched.decisions,
    )
    if last_arrival > 0:
        report.extra["gpu_utilization_while_arriving"] = busy_while_arriving / (fleet.total_gpus * last_arrival)
    if recovery is not None:
        report.extra["failures"] = recovery.summary(clock if until is None else until)
    if quotas:
        report.extra["borrowing"] = borrowing
        report.extra["guarantees"] = {
            t: {"guaranteed_gpus": g, "owed_gpu_h": owed[t] / 3600, "delivered_gpu_h": delivered[t] / 3600,
                "delivered_share": delivered[t] / owed[t] if owed[t] else 1.0} for t, g in quotas.items()}
    return report


def _fill(sizes: SortedList, room: float) -> float:
    """GPUs of waiting jobs a guarantee owes now: smallest first, as many as fit in what it has left."""
    total = 0.0
    for g in sizes:
        if total + g > room:
            break
        total += g
    return total


def _progress_kept(run: Run, now: float) -> float:
    """Work kept across a preemption: all of it, or up to the last checkpoint if it has one."""
    ran = max(now - run.started - run.overhead, 0.0)
    done = min(run.done + ran / run.duration, 1.0) if run.duration > 0 else 1.0
    interval = run.trace.job.checkpoint_interval_s
    if interval and run.duration > 0:
        step = interval / run.duration
        done = run.done + np.floor((done - run.done) / step) * step
    return float(done)
