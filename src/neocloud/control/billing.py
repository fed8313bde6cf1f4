"""Contracts and metering inside the controller: the guarantees the scheduler honours, and one usage
record per attempt, written in the very transaction that ends the attempt (so once, and kept).

Run only from the controller's loop.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from neocloud.model.billing import Contract, gpu_hours
from neocloud.model.fleet import Fleet
from neocloud.model.job import PriorityClass
from neocloud.store.tables import ContractRow, CreditRow, JobRow, PriceRow, UsageRow


def contract_of(row: ContractRow) -> Contract:
    return Contract(row.contract, row.version, row.tenant, row.gpu_type, row.gpus, row.start_at, row.end_at,
                    Decimal(row.price), row.take_or_pay, row.valid_from, row.valid_to)


class Billing:
    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.node_ids = {n.name: n.id for n in fleet.nodes}
        self.contracts: list[Contract] = []  # every version
        self._guarantees: dict[str, float] | None = None

    def load(self, s: Session) -> None:
        self.contracts = [contract_of(r) for r in s.scalars(select(ContractRow).order_by(ContractRow.id))]
        self._guarantees = None

    def guarantees(self, now: float) -> dict[str, float]:
        """GPUs guaranteed to each tenant now: its reserved contracts in force."""
        out: dict[str, float] = {}
        for c in self.contracts:
            if c.in_force(now):
                out[c.tenant] = out.get(c.tenant, 0) + c.gpus
        return out

    def changed(self, now: float) -> dict[str, float] | None:
        """The guarantees, if they differ from the last ones asked for (a contract began or ended)."""
        current = self.guarantees(now)
        if current == self._guarantees:
            return None
        self._guarantees = current
        return current

    # -- contracts ----------------------------------------------------------------------------
    def add(self, s: Session, terms: dict[str, Any], now: float) -> ContractRow:
        number = (s.scalar(select(func.max(ContractRow.contract))) or 0) + 1
        row = ContractRow(contract=number, version=1, valid_from=terms["start_at"], valid_to=None,
                          note=terms.pop("note", ""), **terms)  # the first version holds for its whole term
        s.add(row)
        s.flush()
        self.contracts.append(contract_of(row))
        self._guarantees = None
        return row

    def amend(self, s: Session, number: int, changes: dict[str, Any], note: str, now: float) -> ContractRow | None:
        """A new version valid from now; the one in force is closed now and kept as it was."""
        current = s.scalars(select(ContractRow).where(ContractRow.contract == number, ContractRow.valid_to.is_(None))
                            ).one_or_none()
        if current is None:
            return None
        current.valid_to = now
        terms = {k: getattr(current, k) for k in ("tenant", "gpu_type", "gpus", "start_at", "end_at", "price",
                                                 "take_or_pay", "site", "fabric")}
        row = ContractRow(contract=number, version=current.version + 1, valid_from=now, valid_to=None, note=note,
                          **{**terms, **changes})
        s.add(row)
        s.flush()
        self.load(s)
        return row

    # -- metering -----------------------------------------------------------------------------
    def usage_class(self, job_priority: str, pool: str | None, tenant: str, serving: bool = False) -> str:
        """How an attempt is billed: within its tenant's guarantee, as spot, as a service's replica
        (`serving`), or on demand."""
        if pool == tenant:
            return "reserved"
        if job_priority == PriorityClass.SPOT.value:
            return "spot"
        return "service" if serving else "on-demand"

    def record(self, s: Session, row: JobRow, now: float) -> None:
        """The attempt that is ending, as a usage record (once: (job, attempt) is unique)."""
        if row.started_at is None or not row.placement or row.gpus <= 0:
            return
        if s.scalar(select(UsageRow.id).where(UsageRow.job_id == row.id, UsageRow.attempt == row.attempts)):
            return
        gpu, site = self.where(row.placement)
        s.add(UsageRow(job_id=row.id, attempt=row.attempts, tenant=row.tenant, usage_class=row.usage_class or "on-demand",
                       gpu_type=gpu, site=site, gpus=row.gpus, start_at=row.started_at, end_at=max(now, row.started_at)))

    def credit(self, s: Session, row: JobRow, lost_s: float, why: str, now: float) -> None:
        """A node failure cost a job running under its tenant's guarantee `lost_s` of its GPUs' time."""
        if row.usage_class != "reserved" or lost_s <= 0 or not row.placement:
            return
        s.add(CreditRow(tenant=row.tenant, job_id=row.id, attempt=row.attempts, at=now,
                        gpu_type=self.where(row.placement)[0],
                        gpu_hours=gpu_hours(row.gpus, lost_s), reason=why))

    def where(self, placement: list[dict[str, Any]] | None) -> tuple[str, str]:
        """(GPU type, site) of a job's placement, by its first node; empty for a node no longer here."""
        node_id = self.node_ids.get(placement[0]["node"]) if placement else None
        if node_id is None:
            return "", ""
        node = self.fleet.nodes[node_id]
        return (node.gpu.name if node.gpu else ""), self.fleet.fabrics[self.fleet.leaves[node.leaf].fabric].site

    @staticmethod
    def prices(s: Session) -> dict[tuple[str, str], list[tuple[float, Decimal]]]:
        out: dict[tuple[str, str], list[tuple[float, Decimal]]] = {}
        for p in s.scalars(select(PriceRow).order_by(PriceRow.since, PriceRow.id)):
            out.setdefault((p.gpu_type, p.usage_class), []).append((p.since, Decimal(p.price)))
        return out
