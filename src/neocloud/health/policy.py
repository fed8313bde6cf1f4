"""Each node's stage and hot-spare mark, and the moves a signal, an operator or the engine sets off.

A move that stops jobs (triage, repair, RMA) names the jobs it interrupts and releases a spare of
the same fabric for each node they lose (the failed one, and any of theirs already drained or
cordoned); a node back in production, or a spare lost, refills the fabric's pool;
an NVLink domain with more than `domain_limit` nodes out is cordoned whole (its jobs could not
keep their shape in it). Costs follow the nodes moved, never the fleet's size.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

from neocloud.model.fleet import Fleet
from neocloud.model.health import Action, Rule, judge
from neocloud.model.lifecycle import SEVERITY, STOPS_JOBS, Stage, check_move
from neocloud.sched.state import ClusterState

ENGINE = "engine: "  # the reason of a cordon that follows the engine's own drain
DOMAIN_LIMIT = 2  # an NVLink domain is cordoned whole when more of its nodes than this are out
ACTION_STAGE = {Action.CORDON: Stage.CORDONED, Action.DRAIN: Stage.DRAINING, Action.TRIAGE: Stage.TRIAGE}


@dataclass(frozen=True, slots=True)
class Move:
    node: str
    frm: Stage
    to: Stage
    reason: str


@dataclass(slots=True)
class Moved:
    """What one decision did to nodes: the moves, the spare marks changed, the jobs to stop."""

    moves: list[Move] = field(default_factory=list)
    spares: dict[str, bool] = field(default_factory=dict)  # node -> whether it is a hot spare now
    interrupted: dict[str, str] = field(default_factory=dict)  # job id -> why
    observed_at: float | None = None  # when the fault behind it was first seen, if a signal said

    def __bool__(self) -> bool:
        return bool(self.moves or self.spares or self.interrupted)


class HealthPolicy:
    def __init__(self, fleet: Fleet, state: ClusterState, *, spares_per_fabric: int = 0,
                 domain_limit: int = DOMAIN_LIMIT) -> None:
        self.fleet, self.state = fleet, state
        self.ids = {n.name: n.id for n in fleet.nodes}
        self.stage = {n.name: Stage.PRODUCTION for n in fleet.nodes}
        self.reason = {n.name: "" for n in fleet.nodes}
        self.spare: set[str] = set()
        self.counts: Counter[Stage] = Counter({Stage.PRODUCTION: len(fleet.nodes)})
        self.spares_per_fabric = spares_per_fabric
        self.domain_limit = domain_limit
        self._engine: set[str] = set()  # nodes cordoned because the engine drained them
        self._fabric = {n.name: fleet.leaves[n.leaf].fabric for n in fleet.nodes}
        self._by_fabric: dict[int, list[str]] = defaultdict(list)
        self._domains: dict[str, list[str]] = defaultdict(list)
        for n in fleet.nodes:
            self._by_fabric[self._fabric[n.name]].append(n.name)
            if n.nvlink_domain is not None:
                self._domains[n.nvlink_domain].append(n.name)

    # -- reading -------------------------------------------------------------------------------
    def jobs_on(self, name: str) -> list[str]:
        return sorted(self.state.on_node[self.ids[name]], key=_job_order)

    def idle(self, name: str) -> bool:
        return not self.state.on_node[self.ids[name]]

    # -- start-up ------------------------------------------------------------------------------
    def restore(self, name: str, stage: Stage, reason: str, spare: bool) -> None:
        """A node's stage and spare mark as kept (at start, before any job is adopted)."""
        if name not in self.ids:
            return
        self.counts[self.stage[name]] -= 1
        self.counts[stage] += 1
        self.stage[name], self.reason[name] = stage, reason
        if spare:
            self.spare.add(name)
        if stage == Stage.CORDONED and reason.startswith(ENGINE):
            self._engine.add(name)
        self._apply(name)

    def top_up(self) -> Moved:
        """Fill each fabric's spare pool from idle production nodes (once running jobs are adopted)."""
        moved = Moved()
        for fabric in self._by_fabric:
            self._fill(fabric, moved)
        return moved

    # -- decisions -----------------------------------------------------------------------------
    def move(self, name: str, to: Stage, reason: str, moved: Moved | None = None) -> Moved:
        """Move a node as the lifecycle allows (LifecycleError otherwise), and all that follows."""
        moved = Moved() if moved is None else moved
        frm = self.stage[name]
        check_move(name, frm, to)
        self.stage[name], self.reason[name] = to, reason
        self.counts[frm] -= 1
        self.counts[to] += 1
        (self._engine.add if to == Stage.CORDONED and reason.startswith(ENGINE) else self._engine.discard)(name)
        moved.moves.append(Move(name, frm, to, reason))
        was_spare = name in self.spare and to != Stage.PRODUCTION
        if was_spare:
            self._mark(name, False, moved)
        if to in STOPS_JOBS:
            jobs = self.jobs_on(name)
            for job in jobs:
                moved.interrupted.setdefault(job, f"node {name} went to {to.value}: {reason}")
            for _ in range(1 + self._out_under(jobs, name) if jobs else 0):
                self._release_spare(self._fabric[name], moved)
        self._apply(name)
        if to == Stage.PRODUCTION or was_spare:  # back in service, or a spare lost: the pool is refilled
            self._fill(self._fabric[name], moved)
        if frm == Stage.PRODUCTION:
            self._domain(name, moved)
        return moved

    def signal(self, name: str, signal: Mapping[str, Any], observed_at: float) -> tuple[Rule, Moved]:
        """What the first matching rule makes of a health signal: a node in burn-in passes or fails
        its check; otherwise a node only ever moves further out of service."""
        rule = judge(signal)
        moved = Moved(observed_at=observed_at)
        current = self.stage[name]
        why = f"{signal['kind']} signal: {describe(signal)}"
        if signal["kind"] == "active_check" and current == Stage.BURN_IN:
            self.move(name, Stage.PRODUCTION if signal["passed"] else Stage.TRIAGE, why, moved)
        elif rule.action != Action.WATCH and current in SEVERITY:
            to = ACTION_STAGE[rule.action]
            if SEVERITY[to] > SEVERITY[current]:
                self.move(name, to, why, moved)
        return rule, moved

    def follow_engine(self, drained: Mapping[str, str], unsure: AbstractSet[str] = frozenset()) -> Moved:
        """A node the engine drained is cordoned here; when the engine resumes it, so is it here.
        `unsure`: nodes moved here since the engine was asked (it may not have heard yet, and
        reports neocloud's own cordon or uncordon as it was): left as they are."""
        moved = Moved()
        for name, why in drained.items():
            if name not in unsure and self.stage.get(name) == Stage.PRODUCTION:
                self.move(name, Stage.CORDONED, ENGINE + why, moved)
        for name in sorted(self._engine - drained.keys() - unsure):
            self.move(name, Stage.PRODUCTION, "the engine resumed it", moved)
        return moved

    # -- inside --------------------------------------------------------------------------------
    def _apply(self, name: str) -> None:
        self.state.set_schedulable(self.ids[name], self.stage[name] == Stage.PRODUCTION and name not in self.spare)

    def _mark(self, name: str, spare: bool, moved: Moved) -> None:
        (self.spare.add if spare else self.spare.discard)(name)
        moved.spares[name] = spare
        self._apply(name)

    def _fill(self, fabric: int, moved: Moved) -> None:
        """Hold idle production nodes of this fabric back as hot spares until it has its quota."""
        if self.spares_per_fabric == 0:
            return
        held = sum(1 for n in self.spare if self._fabric[n] == fabric)
        for name in reversed(self._by_fabric[fabric]):  # the last nodes, so the first ones take the work
            if held >= self.spares_per_fabric:
                return
            if self.stage[name] == Stage.PRODUCTION and name not in self.spare and self.idle(name):
                self._mark(name, True, moved)
                held += 1

    def _release_spare(self, fabric: int, moved: Moved) -> None:
        """A node of this fabric failed under a job: a spare of the same fabric takes work now."""
        for name in sorted(self.spare):
            if self._fabric[name] == fabric:
                self._mark(name, False, moved)
                return

    def _out_under(self, jobs: list[str], name: str) -> int:
        """Other nodes of these jobs already out of production (drained, cordoned): they will not take
        the jobs back, so each needs a spare as the failed node does."""
        nodes = {n for job in jobs for n in self.state.allocations[job].nodes} - {self.ids[name]}
        return sum(1 for n in nodes if self.stage[self.fleet.nodes[n].name] != Stage.PRODUCTION)

    def _domain(self, name: str, moved: Moved) -> None:
        """Cordon an NVLink domain whole once more than `domain_limit` of its nodes are out."""
        domain = self.fleet.nodes[self.ids[name]].nvlink_domain
        if domain is None:
            return
        members = self._domains[domain]
        out = sum(1 for n in members if self.stage[n] != Stage.PRODUCTION)
        if out > self.domain_limit:
            for n in members:
                if self.stage[n] == Stage.PRODUCTION:
                    self.move(n, Stage.CORDONED, f"NVLink domain {domain}: {out} of {len(members)} nodes out", moved)


def describe(signal: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in signal.items() if k not in ("kind", "observed_at", "report"))


def _job_order(job_id: str) -> tuple[int, str]:
    return (int(job_id), "") if job_id.isdigit() else (1 << 62, job_id)
