"""What a simulation run measured, as numbers a person and a benchmark table can read."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from neocloud.model.fleet import Fleet
from neocloud.sim.runs import LOSSES, Run


@dataclass(frozen=True, slots=True)
class JobOutcome:
    job_id: str
    gpus: float
    submit_s: float
    start_s: float | None
    end_s: float | None
    gpu_s: float
    preemptions: int = 0
    spread_runs: int = 0


@dataclass(slots=True)
class Report:
    policy: str
    placement: str
    seed: int
    trace: str
    fleet: str
    backfill: bool
    estimates: str
    jobs_submitted: int
    jobs_completed: int
    jobs_rejected: int
    avg_jct_s: float
    p50_jct_s: float
    p99_jct_s: float
    avg_wait_s: float
    p99_wait_s: float
    p99_wait_large_s: float | None  # jobs above LARGE_GPUS: gangs must not starve
    makespan_s: float
    gpu_utilization: float
    preemptions: int
    spread_placements: int
    decisions: int
    events: int
    wall_s: float
    events_per_s: float
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        data = asdict(self)
        data.update(data.pop("extra"))
        return data


LARGE_GPUS = 32


def _stat(values: np.ndarray, fn: Callable[..., float], *args: float) -> float:
    return float(fn(values, *args)) if len(values) else 0.0


def summarise(
    outcomes: list[JobOutcome], *, fleet: Fleet, trace: str, policy: str, placement: str, backfill: bool,
    seed: int, estimates: str, rejected: int, events: int, wall_s: float, decisions: int,
) -> Report:
    # (submit, start, end, gpus) of each job that finished; one that ended had started.
    done = [(o.submit_s, o.start_s, o.end_s, o.gpus) for o in outcomes if o.start_s is not None and o.end_s is not None]
    jct = np.array([end - submit for submit, _, end, _ in done])
    wait = np.array([start - submit for submit, start, _, _ in done])
    large = np.array([start - submit for submit, start, _, gpus in done if gpus > LARGE_GPUS])
    first = min((o.submit_s for o in outcomes), default=0.0)
    last = max((end for _, _, end, _ in done), default=first)
    makespan = last - first
    capacity = fleet.total_gpus * makespan
    return Report(
        policy=policy, placement=placement, seed=seed, trace=trace, fleet=fleet.name, backfill=backfill,
        estimates=estimates, jobs_submitted=len(outcomes), jobs_completed=len(done), jobs_rejected=rejected,
        avg_jct_s=_stat(jct, np.mean), p50_jct_s=_stat(jct, np.percentile, 50),
        p99_jct_s=_stat(jct, np.percentile, 99), avg_wait_s=_stat(wait, np.mean),
        p99_wait_s=_stat(wait, np.percentile, 99),
        p99_wait_large_s=_stat(large, np.percentile, 99) if len(large) else None, makespan_s=makespan,
        gpu_utilization=sum(o.gpu_s for o in outcomes) / capacity if capacity else 0.0,
        preemptions=sum(o.preemptions for o in outcomes), spread_placements=sum(o.spread_runs for o in outcomes),
        decisions=decisions, events=events, wall_s=wall_s, events_per_s=events / wall_s if wall_s else 0.0,
    )


SIZE_CLASSES = ((1, "1 GPU"), (8, "2-8 GPUs"), (64, "9-64 GPUs"), (512, "65-512 GPUs"), (math.inf, "> 512 GPUs"))


def reliability(runs: Iterable[Run], until: float) -> dict[str, Any]:
    """What failures cost the jobs: goodput (productive over allocated GPU-time) and ETTR
    (productive over GPUs x wall time since first start) by job size, GPU-hours lost by cause, the
    jobs that used up their restarts. Waiting is the GPUs of a job interrupted by a failure times
    the time until it ran again: time the job lost, not GPU-time the fleet held for it."""
    keys = ("jobs", "productive", "allocated", "wall", "interruptions", "capped")
    classes: dict[str, dict[str, float]] = {}
    lost = dict.fromkeys(LOSSES, 0.0)
    capped, in_place, attempts, interval_sum = [], 0, 0, 0.0
    for run in runs:
        if run.first_start is None:
            continue
        gpus = run.trace.job.gpus
        end = run.end if run.end is not None else run.failed_at if run.failed_at is not None else until
        label = next(name for top, name in SIZE_CLASSES if gpus <= top)
        row = classes.setdefault(label, dict.fromkeys(keys, 0.0))
        row["jobs"] += 1
        row["productive"] += gpus * run.productive_s
        row["allocated"] += run.gpu_s
        row["wall"] += gpus * max(end - run.first_start, 0.0)
        row["interruptions"] += run.interruptions
        row["capped"] += run.failed_at is not None
        for what, seconds in run.lost_s.items():
            lost[what] += gpus * seconds
        if run.failed_at is not None:
            capped.append(run.trace.job.id)
        in_place += run.restarts_in_place
        attempts += run.attempts
        interval_sum += run.interval_sum_s
    total = {k: sum(row[k] for row in classes.values()) for k in keys}
    by_size = {label: {"jobs": int(c["jobs"]), "goodput": _share(c["productive"], c["allocated"]),
                       "ettr": _share(c["productive"], c["wall"]), "interruptions": int(c["interruptions"]),
                       "restart_capped": int(c["capped"])}
               for label, c in sorted(classes.items(), key=lambda kv: [n for _, n in SIZE_CLASSES].index(kv[0]))}
    return {
        "restarts_in_place": in_place, "restart_capped": len(capped), "restart_capped_jobs": capped,
        "goodput": _share(total["productive"], total["allocated"]), "ettr": _share(total["productive"], total["wall"]),
        "productive_gpu_h": total["productive"] / 3600, "allocated_gpu_h": total["allocated"] / 3600,
        "lost_gpu_h": {k: v / 3600 for k, v in lost.items()}, "mean_interval_s": interval_sum / attempts if attempts else 0.0,
        "by_size": by_size,
    }


def _share(part: float, whole: float) -> float:
    return part / whole if whole > 0 else 1.0
