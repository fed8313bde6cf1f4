"""Failures in the twin: one large training job on a fleet whose parts fail at published rates.

At fleet scale a large job is interrupted every few hours; what it keeps depends on how fast a
fault is seen, whether a healthy node can take the failed one's place, how long a restart takes and
how often it checkpoints. The twin plays a run out event by event (failures arrive per component as
Poisson processes over the job's GPUs while it runs) and splits every lost second by cause, so that
each mechanism's worth can be measured, and the result checked against the first-order model:

    ETTR = 1 - rate * (detection + wait for nodes + restart + T/2) - C/T

with T the checkpoint interval and C the blocking cost of one save. Rates default to Llama 3's
(../shared/reference/reliability.md: 419 unexpected interruptions of 16,384 H100s in 54 days).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from neocloud.errors import NeocloudError
from neocloud.model.goodput import daly

DAY = 86400.0


@dataclass(frozen=True, slots=True)
class Cause:
    name: str
    per_1000_gpu_days: float
    takes_node: bool  # the node leaves service (hardware), or the job restarts on the same nodes
    signal: str  # what a health check sees first: xid, link, heartbeat, exit or stall


LLAMA3_CAUSES = (  # Llama 3 405B pre-training, per 1,000 GPU-days
    Cause("GPU (faulty GPU, HBM3, SRAM, GSP, SDC, thermal)", 0.303, True, "xid"),
    Cause("software bug or dependency", 0.063, False, "exit"),
    Cause("network switch or cable", 0.040, True, "link"),
    Cause("unplanned host maintenance", 0.036, True, "heartbeat"),
    Cause("host hardware (SSD, PSU, chassis, CPU, DRAM)", 0.016, True, "heartbeat"),
    Cause("NIC", 0.008, True, "link"),
    Cause("NCCL watchdog timeout", 0.008, False, "stall"),
)


@dataclass(frozen=True, slots=True)
class HealthChecks:
    """When each signal reaches the controller: the schedule of neocloud's passive checks.

    Telemetry (XID, ECC, link counters, power) is sampled every `telemetry_s`; a fault waits on
    average half a period. A node is lost after `heartbeat_misses` missed heartbeats. A stalled
    collective shows as GPUs busy without power draw for `stall_window_s`. A crashed process is seen
    at the backend's next poll.
    """

    telemetry_s: float = 15.0
    heartbeat_s: float = 10.0
    heartbeat_misses: int = 3
    stall_window_s: float = 60.0
    poll_s: float = 2.0

    def latency(self, signal: str) -> float:
        return {"xid": self.telemetry_s / 2, "link": self.telemetry_s / 2,
                "heartbeat": self.heartbeat_s * (self.heartbeat_misses + 0.5),
                "stall": self.stall_window_s + self.telemetry_s / 2, "exit": self.poll_s / 2}[signal]


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
    fabrics: int = 8
    spares_per_fabric: int = 0  # hot spares: burned-in idle nodes that take a failed node's place
    reboot_s: float = 1800.0  # without a spare, the job waits this long for the node to come back
    repair_s: float = 26 * 3600.0  # a node replaced by a spare: triage, repair and burn-in
    checkpoint_s: float = 5.0  # blocking save
    restart_s: float = 180.0  # once the nodes are ready
    interval_s: float | str = 3600.0  # checkpoint interval, or "auto" (Daly, from the failures seen)

    def __post_init__(self) -> None:
        if self.gpus <= 0 or self.gpus % self.gpus_per_node:
            raise NeocloudError(f"a scenario's GPUs ({self.gpus}) must be a positive multiple of its GPUs per node")
        if self.days <= 0 or self.checkpoint_s < 0 or self.restart_s < 0 or self.reboot_s < 0 or self.repair_s < 0:
            raise NeocloudError("a scenario's days must be above 0 and its costs and times at least 0")
        if self.interval_s != "auto" and (not isinstance(self.interval_s, int | float) or self.interval_s <= 0):
            raise NeocloudError(f"checkpoint interval must be seconds above 0 or 'auto', got {self.interval_s!r}")
        if any(c.per_1000_gpu_days < 0 for c in self.causes) or self.fabrics < 1 or self.spares_per_fabric < 0:
            raise NeocloudError("failure rates, fabrics and spares must not be negative")

    @property
    def rate(self) -> float:
        """Interruptions of the job per second of running."""
        return sum(c.per_1000_gpu_days for c in self.causes) * self.gpus / 1000 / DAY

    def detection(self, cause: Cause) -> float:
        return self.timeout_s if self.timeout_s is not None else self.checks.latency(cause.signal)

    def daly(self, rate: float) -> float:
        """Daly's first-order optimum interval, for a job interrupted `rate` times a second."""
        return daly(self.checkpoint_s, 1 / rate, self.restart_s) if rate > 0 else self.days * DAY

    def analytic(self) -> float:
        """First-order ETTR: per interruption, detection + waiting + restart + half an interval lost,
        plus the checkpoint cost over each interval. Waiting counts the reboot where no spare is held."""
        total = sum(c.per_1000_gpu_days for c in self.causes)
        if total == 0:
            return 1.0 - self.checkpoint_s / self._interval(0.0)
        loss = sum(c.per_1000_gpu_days / total * (self.detection(c) + self._wait_estimate(c)) for c in self.causes)
        interval = self._interval(self.rate)
        return 1.0 - self.rate * (loss + self.restart_s + interval / 2) - self.checkpoint_s / interval

    def _wait_estimate(self, cause: Cause) -> float:
        return self.reboot_s if cause.takes_node and self.spares_per_fabric == 0 else 0.0

    def _interval(self, rate: float) -> float:
        return self.daly(rate) if self.interval_s == "auto" else float(self.interval_s)


LOSSES = ("detection", "waiting for nodes", "restart", "recomputation", "checkpoint writes")


@dataclass(slots=True)
class Outcome:
    scenario: str
    seed: int
    wall_s: float
    productive_s: float
    interruptions: int
    lost: dict[str, float]
    by_cause: dict[str, int]
    spares_short: int  # replacements that found their fabric's spares all used
    mean_interval_s: float

    @property
    def ettr(self) -> float:
        return self.productive_s / self.wall_s


def run(s: Scenario, seed: int = 0) -> Outcome:
    """Play the scenario out once: the job runs, checkpoints, fails, waits, restarts, until `days`."""
    rng = np.random.default_rng(seed)
    end = s.days * DAY
    total = sum(c.per_1000_gpu_days for c in s.causes)
    weights = np.array([c.per_1000_gpu_days for c in s.causes]) / total if total else None
    spares = [s.spares_per_fabric] * s.fabrics
    back: list[list[float]] = [[] for _ in range(s.fabrics)]  # when each fabric's replaced nodes return
    lost = dict.fromkeys(LOSSES, 0.0)
    by_cause = {c.name: 0 for c in s.causes}
    prior_s = DAY  # Daly's rate estimate starts from the fleet's published rate, as if seen for a day
    t = productive = ran = 0.0
    failures = short = intervals = 0
    interval_sum = 0.0
    while t < end:
        rate_seen = (s.rate * prior_s + failures) / (prior_s + ran)
        interval = s._interval(rate_seen)
        intervals += 1
        interval_sum += interval
        fail_at = t + (rng.exponential(1 / s.rate) if s.rate > 0 else math.inf)
        stop = min(fail_at, end)
        periods, rest = divmod(stop - t, interval + s.checkpoint_s)
        productive += periods * interval
        lost["checkpoint writes"] += periods * s.checkpoint_s
        ran += stop - t
        if stop == end:  # the run ends: work since the last checkpoint counts (it is saved at the end)
            productive += min(rest, interval)
            lost["checkpoint writes"] += max(rest - interval, 0.0)
            break
        lost["recomputation"] += rest  # the work (and any save in progress) since the last checkpoint
        cause = s.causes[int(rng.choice(len(s.causes), p=weights))]
        by_cause[cause.name] += 1
        failures += 1
        t = fail_at
        steps = [("detection", s.detection(cause))]
        if cause.takes_node:
            wait, missed = _replace(s, back, spares, t + steps[0][1], int(rng.integers(s.fabrics)))
            short += missed
            steps.append(("waiting for nodes", wait))
        steps.append(("restart", s.restart_s))
        for what, seconds in steps:
            used = min(seconds, end - t)
            lost[what] += used
            t += used
    return Outcome(s.name, seed, end, productive, failures, lost, by_cause, short,
                   interval_sum / intervals if intervals else 0.0)


def _replace(s: Scenario, back: list[list[float]], spares: list[int], now: float, fabric: int) -> tuple[float, int]:
    """Seconds until the job has a node in place of the failed one, and whether spares ran short."""
    if s.spares_per_fabric == 0:
        return s.reboot_s, 0
    returned = [at for at in back[fabric] if at <= now]
    spares[fabric] += len(returned)
    back[fabric] = [at for at in back[fabric] if at > now]
    if spares[fabric] > 0:
        spares[fabric] -= 1
        back[fabric].append(now + s.repair_s)  # the failed node: triage, repair, burn-in, then a spare again
        return 0.0, 0
    first = min(back[fabric], default=math.inf)
    if first - now < s.reboot_s:  # the first node back from repair joins the job directly
        back[fabric].remove(first)
        back[fabric].append(now + s.repair_s)
        return first - now, 1
    return s.reboot_s, 1  # else the failed node is rebooted and put back, as on a plain cluster


def plain(**overrides) -> Scenario:
    """A plain cluster: faults found by a 10-minute collective timeout, no spares, hourly checkpoints."""
    return replace(Scenario(name="plain cluster"), **overrides)


def neocloud(**overrides) -> Scenario:
    """neocloud: health checks on their schedule, 4 hot spares per fabric, Daly's interval."""
    return replace(Scenario(name="neocloud", timeout_s=None, spares_per_fabric=4, interval_s="auto"), **overrides)


SCENARIOS = {"plain": plain, "neocloud": neocloud}
