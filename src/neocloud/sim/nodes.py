"""The fleet's side of failures in the twin: faults reach the production health policy as the
signals a node would report, and failed nodes go through triage, repair and burn-in.

What a signal does (to the node, to the jobs on it, to the hot spares, to its NVLink domain) is
decided by neocloud.health.policy.HealthPolicy under neocloud.model.health's rules, and when a node
in burn-in is checked by neocloud.health.checks.CheckSchedule: the objects the controller runs. The
twin plays only what production leaves to the world: the node's reports (which signal, how soon), the
operator (a triaged node goes to repair, or straight to burn-in when no fault is found; a lost
host, for which there is no signal rule, is moved to triage as `neocloud node move` would), and
the burn-in check itself, which a repaired node passes.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from neocloud.health.checks import CheckSchedule
from neocloud.health.policy import HealthPolicy, Moved
from neocloud.model.fleet import Fleet
from neocloud.model.health import FLAP_LIMIT, STALL_S
from neocloud.model.lifecycle import MOVES, Stage
from neocloud.sched.state import ClusterState
from neocloud.sim.faults import Cause, FailureModel, FaultProcess

XID = {"kind": "xid", "code": 79}  # a GPU fallen off the bus (or any failed-hardware XID): triage
LINK = {"kind": "link_flap", "flaps": FLAP_LIMIT}  # a link down, in its counters: drain
STALL = {"kind": "stall", "for_s": STALL_S}  # GPUs busy without power: a hung job, triage
PASSED = {"kind": "active_check", "passed": True, "report": {}}
IN_SERVICE = frozenset({Stage.PRODUCTION, Stage.CORDONED, Stage.DRAINING})  # where a node can fail
SIGNAL, OPERATOR, CHECKED, CRASH = range(4)


@dataclass(slots=True)
class Effects:
    """What an instant's node events did to jobs."""

    broken: dict[str, float] = field(default_factory=dict)  # job id -> when a fault stopped its progress
    interrupted: dict[str, str] = field(default_factory=dict)  # job id -> why the policy stopped it
    crashed: list[tuple[str, float]] = field(default_factory=list)  # (job id, when it broke): seen crashed now


class FleetHealth:
    def __init__(self, fleet: Fleet, state: ClusterState, model: FailureModel, rng: np.random.Generator,
                 broken_job: Callable[[str], bool]) -> None:
        self.model, self.broken_job = model, broken_job
        self.policy = HealthPolicy(fleet, state, spares_per_fabric=model.spares_per_fabric)
        self.checks = CheckSchedule(0.0)  # burn-in only: no active checks of idle production nodes
        self.faults = FaultProcess(fleet, model.causes, rng, model.script)
        self.broken: dict[str, Cause] = {}  # nodes with a fault that lasts until they are repaired
        self.node_s: dict[str, float] = defaultdict(float)  # node-seconds by stage, and as hot spares
        self.by_cause: Counter[str] = Counter()  # faults that struck
        self.events = 0
        self._domains: dict[str, list[str]] = defaultdict(list)
        self._domain = {n.name: n.nvlink_domain for n in fleet.nodes}
        for n in fleet.nodes:
            if n.nvlink_domain is not None:
                self._domains[n.nvlink_domain].append(n.name)
        self._heap: list[tuple[float, int, int, str, Any]] = []
        self._seq = 0
        self._clock = 0.0
        self._fx = Effects()
        self._keep(self.policy.top_up(), 0.0)

    def next_at(self) -> float:
        return min(self.faults.next_at, self._heap[0][0] if self._heap else math.inf)

    def settled(self) -> bool:
        """No node out of production, broken, or with a signal or a move under way."""
        return not self._heap and not self.broken and self.policy.counts[Stage.PRODUCTION] == len(self.policy.stage)

    def step(self, now: float) -> Effects:
        """Everything due by `now`: faults, signals, the operator's moves, burn-in checks ending."""
        self.account(now)
        self._fx = fx = Effects()
        while self.next_at() <= now:
            self.events += 1
            if self.faults.next_at <= (self._heap[0][0] if self._heap else math.inf):
                self._fault(*self.faults.take())
                continue
            _, _, kind, node, what = heapq.heappop(self._heap)
            if kind == SIGNAL:
                self._signal(node, what[0], what[1], now)
            elif kind == OPERATOR:
                self._operate(node, what[0], what[1], now)
            elif kind == CHECKED:
                self.checks.ended(what, now, verdict=True)
                self._keep(self.policy.signal(node, PASSED, now)[1], now)
            else:
                fx.crashed.append(what)
        return fx

    def placed(self, nodes: Iterable[str], now: float) -> bool:
        """A job started on these nodes: whether one is broken (so is the job, from now)."""
        hit = [n for n in nodes if n in self.broken]
        for node in hit:
            if self.broken[node].signal == "link":  # the dead link hangs its collectives
                self._push(now + self._latency("stall"), SIGNAL, node, (STALL, now))
        return bool(hit)

    def tend(self, nodes: Iterable[str], now: float) -> None:
        """The operator takes a broken node to triage once no work is left on it."""
        for node in nodes:
            if node in self.broken and self.policy.stage[node] in (Stage.CORDONED, Stage.DRAINING) \
                    and self.policy.idle(node):
                self._keep(self.policy.move(node, Stage.TRIAGE, f"{self.broken[node].name}: out of work"), now)

    def account(self, now: float) -> None:
        dt = now - self._clock
        if dt > 0:
            for stage, count in self.policy.counts.items():
                self.node_s[stage.value] += count * dt
            self.node_s["hot spare"] += len(self.policy.spare) * dt
            self._clock = now

    # -- inside --------------------------------------------------------------------------------
    def _latency(self, signal: str) -> float:
        return self.model.timeout_s if self.model.timeout_s is not None else self.model.checks.latency(signal)

    def _push(self, at: float, kind: int, node: str, what: Any) -> None:
        heapq.heappush(self._heap, (at, self._seq, kind, node, what))
        self._seq += 1

    def _fault(self, at: float, node: str, cause: Cause) -> None:
        if self.policy.stage[node] not in IN_SERVICE or node in self.broken:
            return  # out of service or broken already: nothing more to break
        jobs = self.policy.jobs_on(node)
        if not cause.takes_node and not jobs:
            return  # software and hung collectives break running work only
        self.by_cause[cause.name] += 1
        for job in jobs:
            self._fx.broken.setdefault(job, at)
        if cause.takes_node:
            self.broken[node] = cause
        if cause.signal == "xid":
            self._push(at + self._latency("xid"), SIGNAL, node, (XID, at))
        elif cause.signal == "link":
            self._push(at + self._latency("link"), SIGNAL, node, (LINK, at))
            if jobs:
                self._push(at + self._latency("stall"), SIGNAL, node, (STALL, at))
        elif cause.signal == "stall":
            self._push(at + self._latency("stall"), SIGNAL, node, (STALL, at))
        elif cause.signal == "heartbeat":
            self._push(at + self._latency("heartbeat"), OPERATOR, node, (Stage.TRIAGE, f"{cause.name}: host lost"))
        else:  # exit: the job's processes crash; its launcher restarts them in place
            for job in jobs:
                self._push(at + self._latency("exit"), CRASH, node, (job, at))

    def _signal(self, node: str, signal: dict[str, Any], observed_at: float, now: float) -> None:
        """What the node reports, observed when the fault struck, judged by the policy."""
        if signal is STALL and not any(self.broken_job(j) for j in self.policy.jobs_on(node)):
            self.tend((node,), now)  # the hung job is gone (stopped for another fault): nothing stalls
            return
        self._keep(self.policy.signal(node, signal, observed_at)[1], now)
        self.tend((node,), now)

    def _operate(self, node: str, to: Stage, why: str, now: float) -> None:
        if to in MOVES[self.policy.stage[node]] and (to != Stage.TRIAGE or self.policy.stage[node] in IN_SERVICE):
            self._keep(self.policy.move(node, to, why), now)

    def _keep(self, moved: Moved, now: float) -> None:
        """What the policy decided, carried on: jobs to stop, checks to plan, the operator's next step."""
        for job, why in moved.interrupted.items():
            self._fx.interrupted.setdefault(job, why)
        for m in moved.moves:
            self.checks.moved(m.node, m.to, now)
            if m.to == Stage.TRIAGE:
                cause = self.broken.get(m.node)
                to, why = (Stage.REPAIR, f"{cause.name}: repair") if cause else (Stage.BURN_IN, "no fault found")
                self._push(now + self.model.repairs.triage_s, OPERATOR, m.node, (to, why))
            elif m.to == Stage.REPAIR:
                self._push(now + self.model.repairs.repair_s, OPERATOR, m.node, (Stage.BURN_IN, "repaired"))
            elif m.to == Stage.BURN_IN:
                self.broken.pop(m.node, None)
            elif m.to == Stage.PRODUCTION:
                self._uncordon_domain(m.node, now)
        for node in self.checks.due(now, self.policy.stage.__getitem__, self.policy.idle):
            self.checks.started(f"check-{node}", node)
            self._push(now + self.model.repairs.burn_in_s, CHECKED, node, f"check-{node}")

    def _uncordon_domain(self, node: str, now: float) -> None:
        """The operator uncordons an NVLink domain cordoned whole once few enough of its nodes are out."""
        domain = self._domain[node]
        if domain is None:
            return
        members = self._domains[domain]
        held = [n for n in members if self.policy.stage[n] == Stage.CORDONED
                and self.policy.reason[n].startswith("NVLink domain")]
        out = sum(1 for n in members if self.policy.stage[n] != Stage.PRODUCTION) - len(held)
        if held and out <= self.policy.domain_limit:
            for n in held:
                self._keep(self.policy.move(n, Stage.PRODUCTION, f"NVLink domain {domain}: {out} nodes out"), now)
