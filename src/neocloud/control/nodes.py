"""The fleet's health inside the controller: each node's stage, hot spares, and what signals set off.

Run only from the controller's loop, inside its turn's transaction. It says which jobs a move
interrupts; the controller stops and requeues them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from neocloud.control.metrics import Metrics
from neocloud.model.fleet import Fleet
from neocloud.model.health import Action, Rule, judge
from neocloud.model.lifecycle import SEVERITY, STOPS_JOBS, Stage, check_move
from neocloud.sched.state import ClusterState
from neocloud.store.tables import HealthSignal, NodeEvent, NodeRow

ENGINE = "engine: "  # the reason of a cordon that follows the engine's own drain
DOMAIN_LIMIT = 2  # an NVLink domain is cordoned whole when more of its nodes than this are out
ACTION_STAGE = {Action.CORDON: Stage.CORDONED, Action.DRAIN: Stage.DRAINING, Action.TRIAGE: Stage.TRIAGE}


@dataclass(slots=True)
class Moved:
    """What a command did to nodes: the moves made, and the jobs to stop because a node failed."""

    moves: list[tuple[str, Stage, Stage, str]] = field(default_factory=list)
    interrupted: dict[int, str] = field(default_factory=dict)  # job id -> why
    observed_at: float | None = None  # when the fault behind it was first seen, if a signal said


class Nodes:
    def __init__(self, fleet: Fleet, state: ClusterState, metrics: Metrics, *, spares_per_fabric: int = 0,
                 domain_limit: int = DOMAIN_LIMIT) -> None:
        self.fleet, self.state, self.metrics = fleet, state, metrics
        self.ids = {n.name: n.id for n in fleet.nodes}
        self.stage = {n.name: Stage.PRODUCTION for n in fleet.nodes}
        self.reason = {n.name: "" for n in fleet.nodes}
        self.spare: set[str] = set()
        self.spares_per_fabric = spares_per_fabric
        self.domain_limit = domain_limit

    # -- reading -------------------------------------------------------------------------------
    def fabric(self, name: str) -> int:
        return self.fleet.leaves[self.fleet.nodes[self.ids[name]].leaf].fabric

    def jobs_on(self, name: str) -> list[int]:
        return sorted(int(j) for j in self.state.on_node[self.ids[name]])

    def load(self, s: Session) -> None:
        """At start: each node's stage and spare mark as kept."""
        for row in s.scalars(select(NodeRow)):
            if row.name in self.ids:
                self.stage[row.name], self.reason[row.name] = Stage(row.stage), row.reason
                if row.spare:
                    self.spare.add(row.name)
        for name in self.ids:
            self._apply(name)
        self._count()

    def top_up(self, s: Session, now: float) -> None:
        """Fill each fabric's spare pool from idle production nodes (once running jobs are adopted)."""
        for fabric in range(len(self.fleet.fabrics)):
            self._fill(s, fabric, now)
        self._count()

    # -- moves ---------------------------------------------------------------------------------
    def move(self, s: Session, name: str, to: Stage, reason: str, now: float, moved: Moved | None = None) -> Moved:
        """Move a node to another stage, as the lifecycle allows; say which jobs that interrupts."""
        moved = moved or Moved()
        frm = self.stage[name]
        check_move(name, frm, to)
        row = self._row(s, name, now)
        row.stage, row.reason, row.updated_at = to.value, reason, now
        self.stage[name], self.reason[name] = to, reason
        s.add(NodeEvent(node=name, at=now, from_stage=frm.value, to_stage=to.value, reason=reason))
        self.metrics.node_moves.labels(from_stage=frm.value, to_stage=to.value).inc()
        moved.moves.append((name, frm, to, reason))
        was_spare = name in self.spare and to != Stage.PRODUCTION
        if was_spare:
            self.spare.discard(name)
            row.spare = False
        if to in STOPS_JOBS:
            for job in self.jobs_on(name):
                moved.interrupted.setdefault(job, f"node {name} went to {to.value}: {reason}")
            if moved.interrupted:
                self._release_spare(s, self.fabric(name), now)
        self._apply(name)
        if to == Stage.PRODUCTION or was_spare:  # back in service, or a spare lost: the pool is refilled
            self._fill(s, self.fabric(name), now)
        if frm == Stage.PRODUCTION:
            self._domain(s, name, now, moved)
        self._count()
        return moved

    def signal(self, s: Session, name: str, signal: dict[str, Any], observed_at: float, now: float) -> tuple[Rule, Moved]:
        """Record a health signal and do what the first matching rule says."""
        rule = judge(signal)
        s.add(HealthSignal(node=name, at=now, observed_at=observed_at, kind=signal["kind"], payload=signal,
                           rule=f"{rule.kind}: {rule.when}", action=rule.action.value))
        self.metrics.signals.labels(kind=signal["kind"], action=rule.action.value).inc()
        moved = Moved(observed_at=observed_at)
        current = self.stage[name]
        why = f"{signal['kind']} signal: {_describe(signal)}"
        if signal["kind"] == "active_check" and current == Stage.BURN_IN:
            self.move(s, name, Stage.PRODUCTION if signal["passed"] else Stage.TRIAGE, why, now, moved)
        elif rule.action != Action.WATCH and current in SEVERITY:
            to = ACTION_STAGE[rule.action]
            if SEVERITY[to] > SEVERITY[current]:
                self.move(s, name, to, why, now, moved)
        return rule, moved

    def follow_engine(self, s: Session, drained: dict[str, str], now: float) -> Moved:
        """A node the engine drained is cordoned here; when the engine resumes it, so is it here."""
        moved = Moved()
        for name in self.ids:
            current = self.stage[name]
            if name in drained and current == Stage.PRODUCTION:
                self.move(s, name, Stage.CORDONED, ENGINE + drained[name], now, moved)
            elif name not in drained and current == Stage.CORDONED and self.reason[name].startswith(ENGINE):
                self.move(s, name, Stage.PRODUCTION, "the engine resumed it", now, moved)
        return moved

    # -- inside --------------------------------------------------------------------------------
    def _row(self, s: Session, name: str, now: float) -> NodeRow:
        s.flush()  # an earlier command of this turn may have added this node's row
        row = s.get(NodeRow, name)
        if row is None:
            row = NodeRow(name=name, stage=self.stage[name].value, spare=False, reason="", updated_at=now)
            s.add(row)
        return row

    def _apply(self, name: str) -> None:
        self.state.set_schedulable(self.ids[name], self.stage[name] == Stage.PRODUCTION and name not in self.spare)

    def _fill(self, s: Session, fabric: int, now: float) -> None:
        """Hold idle production nodes of this fabric back as hot spares until it has its quota."""
        held = sum(1 for n in self.spare if self.fabric(n) == fabric)
        for node in reversed(self.fleet.nodes):  # the last nodes, so the first ones take the work
            if held >= self.spares_per_fabric:
                return
            name = node.name
            if self.fabric(name) == fabric and self.stage[name] == Stage.PRODUCTION and name not in self.spare \
                    and not self.jobs_on(name):
                self.spare.add(name)
                self._row(s, name, now).spare = True
                self._apply(name)
                held += 1

    def _release_spare(self, s: Session, fabric: int, now: float) -> None:
        """A node of this fabric failed under a job: a spare of the same fabric takes work now."""
        for name in sorted(self.spare):
            if self.fabric(name) == fabric:
                self.spare.discard(name)
                self._row(s, name, now).spare = False
                self._apply(name)
                return

    def _domain(self, s: Session, name: str, now: float, moved: Moved) -> None:
        """Cordon an NVLink domain whole once more than `domain_limit` of its nodes are out."""
        domain = self.fleet.nodes[self.ids[name]].nvlink_domain
        if domain is None:
            return
        members = [n.name for n in self.fleet.nodes if n.nvlink_domain == domain]
        out = sum(1 for n in members if self.stage[n] != Stage.PRODUCTION)
        if out > self.domain_limit:
            for n in members:
                if self.stage[n] == Stage.PRODUCTION:
                    self.move(s, n, Stage.CORDONED, f"NVLink domain {domain}: {out} of {len(members)} nodes out",
                              now, moved)

    def _count(self) -> None:
        counts = Counter(self.stage.values())
        for st in Stage:
            self.metrics.nodes_by_stage.labels(stage=st.value).set(counts.get(st, 0))
        self.metrics.spares.set(len(self.spare))


def _describe(signal: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in signal.items() if k not in ("kind", "observed_at", "report"))
