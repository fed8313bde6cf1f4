"""What fails in the twin, how soon it is seen, and when: a fleet's faults at published rates.

Each node fails as a Poisson process at its causes' rates times its GPUs (rates are per 1,000
GPU-days, as ../shared/reference/reliability.md gives them). The fleet's process is the
superposition of its nodes': one exponential draw gives the next fault, and its node is picked in
proportion to GPUs by a binary search over the cumulative counts, so the cost follows the faults,
never the fleet's size. A fault drawn for a node that cannot take one (out of service, already
broken, or idle for a cause that only breaks running work) is dropped: a thinned Poisson process
is still one, at the rates of the nodes that can fail.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from neocloud.errors import ConfigError
from neocloud.model.fleet import Fleet
from neocloud.model.goodput import DEFAULT_CHECKPOINT_S
from neocloud.model.health import STALL_S

DAY = 86400.0
# What a health check sees first: a driver XID, a link's counters, missed heartbeats of a lost
# host, GPUs busy without power (a hung collective), or a crashed process.
SIGNALS = ("xid", "link", "heartbeat", "stall", "exit")


@dataclass(frozen=True, slots=True)
class Cause:
    name: str
    per_1000_gpu_days: float
    takes_node: bool  # the node is broken until repaired; else only the work running on it fails
    signal: str  # one of SIGNALS


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
    average half a period. A host is lost after `heartbeat_misses` missed heartbeats. A hung
    collective shows as GPUs busy without power for the stall rule's STALL_S, at the next sample.
    A crashed process is seen at the backend's next poll.
    """

    telemetry_s: float = 15.0
    heartbeat_s: float = 10.0
    heartbeat_misses: int = 3
    poll_s: float = 2.0

    def latency(self, signal: str) -> float:
        return {"xid": self.telemetry_s / 2, "link": self.telemetry_s / 2,
                "heartbeat": self.heartbeat_s * (self.heartbeat_misses + 0.5),
                "stall": STALL_S + self.telemetry_s / 2, "exit": self.poll_s / 2}[signal]


# A node's way back (../shared/reference/reliability.md, CoreWeave's lifecycle): "Zap" (firmware,
# 1-2 h) then "Test" (24 h burn-in), "at least about 26 h" in all. Triage is not published: assumed.
TRIAGE_S = 1800.0  # looking at a node and deciding: repair, or no fault found (assumed)
REPAIR_S = 2 * 3600.0  # Zap's upper end; a part swapped from stock is assumed to fit in it
BURN_IN_S = 24 * 3600.0  # Test: the burn-in check before production


@dataclass(frozen=True, slots=True)
class Repairs:
    """How long each step out of service takes, as the operator moves a node along."""

    triage_s: float = TRIAGE_S
    repair_s: float = REPAIR_S
    burn_in_s: float = BURN_IN_S


@dataclass(frozen=True, slots=True)
class FailureModel:
    """The faults, how they are seen and repaired, and what trace jobs declare when they say nothing."""

    causes: tuple[Cause, ...] = LLAMA3_CAUSES
    name: str = "llama3"
    checks: HealthChecks = field(default_factory=HealthChecks)
    timeout_s: float | None = None  # every fault found by a collective timeout instead of health checks
    repairs: Repairs = field(default_factory=Repairs)
    spares_per_fabric: int = 0
    checkpoint_s: float = DEFAULT_CHECKPOINT_S  # a trace job's blocking save, unless it declares one
    script: tuple[tuple[float, str, Cause], ...] = ()  # (when, node, cause): these faults, not drawn ones

    def detection(self, cause: Cause) -> float:
        """From the fault to the signal that stops its work: a dead link is seen by the job's stall."""
        if self.timeout_s is not None:
            return self.timeout_s
        return self.checks.latency("stall" if cause.signal == "link" else cause.signal)

    @property
    def per_1000_gpu_days(self) -> float:
        return sum(c.per_1000_gpu_days for c in self.causes)


def causes_named(spec: str) -> tuple[Cause, ...]:
    """`llama3`, `none`, or a YAML or JSON file: a list of causes (or a mapping with `causes:`)."""
    if spec == "llama3":
        return LLAMA3_CAUSES
    if spec == "none":
        return ()
    path = Path(spec)
    if not path.is_file():
        raise ConfigError(spec, "", "no such file; --failures takes llama3, none, or a YAML/JSON file of causes")
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as e:
        raise ConfigError(spec, "", f"cannot be read as {'JSON' if path.suffix == '.json' else 'YAML'}: "
                                    f"{str(e).splitlines()[0]}") from None
    return parse_causes(data, spec)


FIELDS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "name": (str, "a string"), "per_1000_gpu_days": ((int, float), "a number"),
    "takes_node": (bool, "true or false"), "signal": (str, "a string"),
}


def parse_causes(data: Any, source: str) -> tuple[Cause, ...]:
    if isinstance(data, dict) and set(data) == {"causes"}:
        data = data["causes"]
    if not isinstance(data, list):
        raise ConfigError(source, "", "expected a list of causes, each with name, per_1000_gpu_days, takes_node "
                                      "and signal (or a mapping with one key, causes)")
    out, names = [], set()
    for i, item in enumerate(data):
        where = f"causes[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(source, where, f"a cause is a mapping with keys {', '.join(FIELDS)}")
        missing, unknown = [k for k in FIELDS if k not in item], [k for k in item if k not in FIELDS]
        if missing or unknown:
            raise ConfigError(source, where, (f"missing {', '.join(missing)}" if missing else
                                              f"unknown key(s) {', '.join(map(str, unknown))}")
                              + f"; a cause has exactly {', '.join(FIELDS)}")
        for key, (kind, words) in FIELDS.items():
            value = item[key]
            if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
                raise ConfigError(source, f"{where}.{key}", f"must be {words}, got {value!r}")
        rate, name, signal = float(item["per_1000_gpu_days"]), item["name"].strip(), item["signal"]
        if not name or name in names:
            raise ConfigError(source, f"{where}.name", f"must be a name not used by another cause, got {name!r}")
        if not math.isfinite(rate) or rate < 0:
            raise ConfigError(source, f"{where}.per_1000_gpu_days", f"must be a rate of at least 0, got {rate:g}")
        if signal not in SIGNALS:
            raise ConfigError(source, f"{where}.signal", f"must be one of {', '.join(SIGNALS)}, got {signal!r}")
        if signal == "exit" and item["takes_node"]:
            raise ConfigError(source, where, "a crashed process (signal exit) sends no node signal, so it cannot "
                                             "take the node out; use xid, link or heartbeat, or takes_node: false")
        names.add(name)
        out.append(Cause(name, rate, item["takes_node"], signal))
    return tuple(out)


class FaultProcess:
    """The fleet's next fault: when, on which node, of which cause (seeded, drawn one at a time);
    or, given a script, the faults it names (a what-if: this node fails then)."""

    def __init__(self, fleet: Fleet, causes: tuple[Cause, ...], rng: np.random.Generator,
                 script: tuple[tuple[float, str, Cause], ...] = ()) -> None:
        self.causes, self.rng = causes, rng
        self._script = sorted(script, key=lambda f: f[0], reverse=True)
        self.names = [n.name for n in fleet.nodes]
        self._gpus = np.cumsum([n.gpus for n in fleet.nodes], dtype=float)
        rates = np.array([c.per_1000_gpu_days for c in causes], dtype=float)
        self._weights = np.cumsum(rates) / rates.sum() if rates.sum() > 0 else rates
        per_gpu_s = float(rates.sum()) / 1000 / DAY
        total = float(self._gpus[-1]) if len(self._gpus) else 0.0
        self._mean_gap = 1 / (per_gpu_s * total) if per_gpu_s * total > 0 else math.inf
        self.next_at = self._gap(0.0)

    def take(self) -> tuple[float, str, Cause]:
        """The fault due at `next_at`, and the one after it drawn."""
        if self._script:
            fault = self._script.pop()
            self.next_at = self._script[-1][0] if self._script else math.inf
            return fault
        at = self.next_at
        node = int(np.searchsorted(self._gpus, self.rng.random() * self._gpus[-1], side="right"))
        cause = self.causes[int(np.searchsorted(self._weights, self.rng.random(), side="right"))]
        self.next_at = self._gap(at)
        return at, self.names[min(node, len(self.names) - 1)], cause

    def _gap(self, now: float) -> float:
        if self._script:
            return self._script[-1][0]
        return now + float(self.rng.exponential(self._mean_gap)) if math.isfinite(self._mean_gap) else math.inf
