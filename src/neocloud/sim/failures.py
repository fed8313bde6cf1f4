"""One large training job on a fleet whose parts fail at published rates, played out by the twin's
own engine: faults through the production health policy, restarts through the scheduler.

At fleet scale a large job is interrupted every few hours; what it keeps depends on how fast a
fault is seen, whether a healthy node can take the failed one's place, how long a restart takes
and how often it checkpoints. A `Scenario` describes one setting; `run` builds its fleet (the job's
nodes in one fabric, a gang never spans two, plus its hot spares), replays the one job for `days`
with sim/engine.py and sim/recovery.py, and splits every lost second by cause. The result is
checked against the first-order model:

    ETTR = 1 - rate * (detection + wait for nodes + restart + T/2) - C/T

with T the checkpoint interval and C the blocking cost of one save. Rates default to Llama 3's
(../shared/reference/reliability.md: 419 unexpected interruptions of 16,384 H100s in 54 days).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from neocloud.errors import NeocloudError
from neocloud.model.catalog import gpu_type
from neocloud.model.fleet import Fabric, Fleet, Leaf, Node, Site
from neocloud.model.goodput import daly
from neocloud.model.job import Job
from neocloud.sim.engine import simulate
from neocloud.sim.faults import (
    DAY,
    LLAMA3_CAUSES,
    Cause,
    FailureModel,
    HealthChecks,
    Repairs,
)
from neocloud.sim.trace import Trace, TraceJob

RESTARTS = 1_000_000  # a pre-training run is restarted as often as it takes
PLAIN_REPAIRS = Repairs(triage_s=1800.0, repair_s=0.0, burn_in_s=0.0)  # rebooted and put back in 30 minutes

__all__ = ["DAY", "LLAMA3_CAUSES", "Cause", "HealthChecks", "Repairs", "Scenario", "Outcome", "run"]


@dataclass(frozen=True, slots=True)
class Scenario:
    """One job, the fleet around it and how faults are handled; every assumption is a field."""

    name: str = "llama3"
    gpus: int = 16_384
    gpus_per_node: int = 8
    days: float = 54.0
    causes: tuple[Cause, ...] = LLAMA3_CAUSES
    timeout_s: float | None = 600.0  # faults found by a collective timeout; None: by health checks
    checks: HealthChecks = field(default_factory=HealthChecks)
    spares: int = 0  # hot spares: idle burned-in nodes of the job's fabric the policy holds back
    repairs: Repairs = PLAIN_REPAIRS  # a failed node's way back: triage, repair, burn-in
    checkpoint_s: float = 5.0  # blocking save
    restart_s: float = 180.0  # once the nodes are ready
    interval_s: float | str = 3600.0  # checkpoint interval, or "auto" (Daly, from the failures seen)
    nodes_per_leaf: int = 32

    def __post_init__(self) -> None:
        if self.gpus <= 0 or self.gpus_per_node <= 0 or self.gpus % self.gpus_per_node:
            raise NeocloudError(f"a scenario's GPUs ({self.gpus}) must be a positive multiple of its GPUs per node")
        if self.days <= 0 or self.checkpoint_s < 0 or self.restart_s < 0 or \
                min(self.repairs.triage_s, self.repairs.repair_s, self.repairs.burn_in_s) < 0:
            raise NeocloudError("a scenario's days must be above 0 and its costs and times at least 0")
        if self.interval_s != "auto" and (not isinstance(self.interval_s, int | float) or self.interval_s <= 0):
            raise NeocloudError(f"checkpoint interval must be seconds above 0 or 'auto', got {self.interval_s!r}")
        if any(c.per_1000_gpu_days < 0 for c in self.causes) or self.spares < 0 or self.nodes_per_leaf < 1:
            raise NeocloudError("failure rates and spares must not be negative")

    @property
    def nodes(self) -> int:
        return self.gpus // self.gpus_per_node

    @property
    def model(self) -> FailureModel:
        return FailureModel(self.causes, self.name, self.checks, self.timeout_s, self.repairs, self.spares,
                            self.checkpoint_s)

    @property
    def rate(self) -> float:
        """Faults of the job per second of running."""
        return sum(c.per_1000_gpu_days for c in self.causes) * self.gpus / 1000 / DAY

    def daly(self, rate: float) -> float:
        """Daly's first-order optimum interval, for a job interrupted `rate` times a second."""
        return daly(self.checkpoint_s, 1 / rate, self.restart_s) if rate > 0 else self.days * DAY

    def analytic(self) -> float:
        """First-order ETTR: per fault, detection + waiting + restart + half an interval lost, plus
        the checkpoint cost over each interval. The job waits for its failed node to come back where
        no spare is held; the interval `auto` is Daly's at the rate production counts (node failures:
        a crashed process restarted in place is not one)."""
        total = sum(c.per_1000_gpu_days for c in self.causes)
        if total == 0:
            return 1.0 - self.checkpoint_s / self._interval()
        model = self.model
        back = self.repairs.triage_s + self.repairs.burn_in_s
        wait = {c.name: 0.0 if c.signal == "exit" or self.spares else back + self.repairs.repair_s * c.takes_node
                for c in self.causes}
        loss = sum(c.per_1000_gpu_days / total * (model.detection(c) + wait[c.name]) for c in self.causes)
        interval = self._interval()
        return 1.0 - self.rate * (loss + self.restart_s + interval / 2) - self.checkpoint_s / interval

    def _interval(self) -> float:
        if self.interval_s != "auto":
            return float(self.interval_s)
        counted = sum(c.per_1000_gpu_days for c in self.causes if c.signal != "exit") * self.gpus / 1000 / DAY
        return self.daly(counted)


LOSSES = ("detection", "waiting", "restart", "recomputation", "checkpoint writes")


@dataclass(slots=True)
class Outcome:
    scenario: str
    seed: int
    wall_s: float
    productive_s: float
    interruptions: int  # the job stopped by the policy and requeued
    restarts_in_place: int  # crashed processes restarted by the job's launcher
    lost: dict[str, float]  # seconds of the job's wall time, by cause
    by_cause: dict[str, int]  # faults that struck, anywhere in the fleet
    mean_interval_s: float
    node_h: dict[str, float]  # node-hours by lifecycle stage, and as hot spares
    events: int
    engine_wall_s: float

    @property
    def ettr(self) -> float:
        return self.productive_s / self.wall_s

    @property
    def faults(self) -> int:
        return self.interruptions + self.restarts_in_place


def fleet_for(s: Scenario) -> Fleet:
    """The job's nodes and its spares, in leaves of `nodes_per_leaf`, in one fabric."""
    h100 = gpu_type("H100")
    count = s.nodes + s.spares
    leaves = [Leaf(f"l{i}", 0) for i in range(math.ceil(count / s.nodes_per_leaf))]
    nodes = [Node(i, f"n{i}", h100, s.gpus_per_node, i // s.nodes_per_leaf) for i in range(count)]
    return Fleet(s.name, [Site("s0")], [Fabric("f0", "s0")], leaves, nodes)


def run(s: Scenario, seed: int = 0) -> Outcome:
    """Play the scenario out once on the twin's engine: the job runs, checkpoints, fails, waits and
    restarts until `days` have passed."""
    end = s.days * DAY
    interval = None if s.interval_s == "auto" else float(s.interval_s)
    job = Job(s.name, float(s.gpus), gpus_per_node=s.gpus_per_node, estimate_s=end, checkpoint_interval_s=interval)
    trace = Trace(s.name, [TraceJob(job, duration_s=2 * end, checkpoint_s=s.checkpoint_s, restart_s=s.restart_s,
                                    max_restarts=RESTARTS)])
    report = simulate(fleet_for(s), trace, policy="fifo", placement="topo", backfill=False, seed=seed,
                      estimates="perfect", restart_overhead_s=s.restart_s, failures=s.model, until=end)
    f = report.extra["failures"]  # the fleet's figures: here, the one job's
    return Outcome(s.name, seed, end, f["productive_gpu_h"] * 3600 / s.gpus, f["interruptions"],
                   f["restarts_in_place"], {k: f["lost_gpu_h"][k] * 3600 / s.gpus for k in LOSSES},
                   f["faults_by_cause"], f["mean_interval_s"], f["node_h"], report.events, report.wall_s)


def plain(**overrides: object) -> Scenario:
    """A plain cluster: faults found by a 10-minute collective timeout, no spares (a failed node is
    rebooted and put back in 30 minutes), hourly checkpoints."""
    return replace(Scenario(name="plain cluster"), **overrides)  # type: ignore[arg-type]


def neocloud(**overrides: object) -> Scenario:
    """neocloud: health checks on their schedule, 32 hot spares (1.6% of the job's nodes), failed
    nodes through triage, repair and a 24-hour burn-in, Daly's interval."""
    base = Scenario(name="neocloud", timeout_s=None, spares=32, repairs=Repairs(), interval_s="auto")
    return replace(base, **overrides)  # type: ignore[arg-type]


# Towards ByteRobust's 97%: what a job's checkpoints could cost (assumptions, stated in the benchmark).
ASYNC_SAVE_S = 0.5  # an asynchronous save blocks only to snapshot the shard to host memory
PEER_RESTART_S = 90.0  # restored from a peer's memory, not storage: half the restart assumed spent reading it


def asynchronous(**overrides: object) -> Scenario:
    """neocloud, checkpoints written in the background: a save blocks for its snapshot only."""
    return neocloud(**{"name": "async checkpoints", "checkpoint_s": ASYNC_SAVE_S, **overrides})


def peers(**overrides: object) -> Scenario:
    """Asynchronous checkpoints kept in host memory and copied to a peer node (Gemini, ByteRobust):
    a restart restores from memory instead of storage."""
    return asynchronous(**{"name": "in-memory checkpoints on peers", "restart_s": PEER_RESTART_S, **overrides})


SCENARIOS = {"plain": plain, "neocloud": neocloud, "async": asynchronous, "peers": peers}
