"""The health policy's decisions, kept: each move a row and an event, each signal on record, the
node metrics moved with them. Run only from the controller's loop, inside its turn's transaction;
what to decide is the policy's (neocloud.health.policy), what to do about interrupted jobs the
controller's."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from neocloud.control.metrics import Metrics
from neocloud.health.checks import CheckSchedule
from neocloud.health.policy import HealthPolicy, Moved
from neocloud.model.fleet import Fleet
from neocloud.model.health import Rule
from neocloud.model.lifecycle import Stage
from neocloud.sched.state import ClusterState
from neocloud.store.tables import HealthSignal, NodeEvent, NodeRow


class Nodes:
    def __init__(self, fleet: Fleet, state: ClusterState, metrics: Metrics, *, spares_per_fabric: int = 0,
                 checks: CheckSchedule | None = None) -> None:
        self.policy = HealthPolicy(fleet, state, spares_per_fabric=spares_per_fabric)
        self.checks = checks or CheckSchedule(0.0)  # told of every move: a stage decides when a check is due
        self.fleet, self.state, self.metrics = fleet, state, metrics
        self.ids = self.policy.ids
        self.stage, self.reason, self.spare = self.policy.stage, self.policy.reason, self.policy.spare
        self.moved_at: dict[str, float] = {}  # node -> when it last moved here, since the engine was asked

    def load(self, s: Session, now: float) -> None:
        """At start: each node's stage and spare mark as kept; checks are planned from them."""
        for row in s.scalars(select(NodeRow)):
            self.policy.restore(row.name, Stage(row.stage), row.reason, row.spare)
        for name, stage in self.stage.items():
            self.checks.start(name, stage, now)
        self._count(list(Stage))

    def top_up(self, s: Session, now: float) -> Moved:
        return self.keep(s, self.policy.top_up(), now)

    def move(self, s: Session, name: str, to: Stage, reason: str, now: float) -> Moved:
        return self.keep(s, self.policy.move(name, to, reason), now)

    def signal(self, s: Session, name: str, signal: dict[str, Any], observed_at: float,
               now: float) -> tuple[Rule, Moved]:
        """Record a health signal, and keep what the policy made of it."""
        rule, moved = self.policy.signal(name, signal, observed_at)
        s.add(HealthSignal(node=name, at=now, observed_at=observed_at, kind=signal["kind"], payload=signal,
                           rule=f"{rule.kind}: {rule.when}", action=rule.action.value))
        self.metrics.signals.labels(kind=signal["kind"], action=rule.action.value).inc()
        return rule, self.keep(s, moved, now)

    def follow_engine(self, s: Session, drained: dict[str, str], asked_at: float, now: float) -> Moved:
        """Follow the engine's answer, asked at `asked_at`, except for nodes moved here since."""
        self.moved_at = {n: at for n, at in self.moved_at.items() if at >= asked_at}  # later answers are later
        return self.keep(s, self.policy.follow_engine(drained, self.moved_at.keys()), now)

    def keep(self, s: Session, moved: Moved, now: float) -> Moved:
        """Write the moves and spare marks decided (and count them)."""
        if not moved:
            return moved
        s.flush()  # an earlier command of this turn may have added a row of these nodes
        names = {m.node for m in moved.moves} | moved.spares.keys()
        rows = {r.name: r for r in s.scalars(select(NodeRow).where(NodeRow.name.in_(names)))}
        for name in names - rows.keys():
            rows[name] = NodeRow(name=name, stage=Stage.PRODUCTION.value, spare=False, reason="", updated_at=now)
            s.add(rows[name])
        for m in moved.moves:
            row = rows[m.node]
            row.stage, row.reason, row.updated_at = m.to.value, m.reason, now
            s.add(NodeEvent(node=m.node, at=now, from_stage=m.frm.value, to_stage=m.to.value, reason=m.reason))
            self.moved_at[m.node] = now
            self.metrics.node_moves.labels(from_stage=m.frm.value, to_stage=m.to.value).inc()
            self.checks.moved(m.node, m.to, now)
        for name, spare in moved.spares.items():
            rows[name].spare = spare
        self._count({st for m in moved.moves for st in (m.frm, m.to)})
        return moved

    def _count(self, stages: Iterable[Stage]) -> None:
        for st in stages:
            self.metrics.nodes_by_stage.labels(stage=st.value).set(self.policy.counts.get(st, 0))
        self.metrics.spares.set(len(self.spare))
