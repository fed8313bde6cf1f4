"""What a simulation run measured, as numbers a person and a benchmark table can read."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from neocloud.model.fleet import Fleet


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
