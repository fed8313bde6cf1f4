"""Guaranteed quotas, Kueue-style: each tenant's guarantee is its own, the capacity no one is
guaranteed is the on-demand pool, and a job that fits in neither borrows idle guaranteed capacity.

Quotas count GPUs, never places: where a job runs is placement's business. A running job keeps
the quota it started under until room in its own guarantee takes it in.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from neocloud.model.job import Job, PriorityClass
from neocloud.sched.queue import JobRecord

ON_DEMAND = ""  # the on-demand pool's name among tenants' quotas


class Quotas:
    """Tenants' guarantees, the on-demand pool, and the GPUs running under each."""

    def __init__(self, total_gpus: int, *, borrowing: bool = True) -> None:
        self.total_gpus = total_gpus
        self.borrowing = borrowing  # whether idle guaranteed capacity may be lent
        self.guaranteed: dict[str, float] = {}
        self.on_demand_gpus: float = total_gpus
        self.use: defaultdict[str, float] = defaultdict(float)  # GPUs running under each quota
        self.version = 0  # bumped by every `set`, so kept answers know to go stale

    def set(self, guarantees: dict[str, float]) -> None:
        """Guaranteed GPUs per tenant; the rest of the fleet is the on-demand pool."""
        self.guaranteed = {t: g for t, g in guarantees.items() if g > 0}
        self.on_demand_gpus = max(self.total_gpus - sum(self.guaranteed.values()), 0)
        self.version += 1

    def pool(self, job: Job) -> str | None:
        """The quota a job would run under now, or None: it would borrow (spot always does)."""
        if job.priority is PriorityClass.SPOT:
            return None
        if self.use[job.tenant] + job.gpus <= self.guaranteed.get(job.tenant, 0):
            return job.tenant
        if self.use[ON_DEMAND] + job.gpus <= self.on_demand_gpus:
            return ON_DEMAND
        return None

    def within_first(self, order: Iterable[JobRecord]) -> list[JobRecord]:
        """In queue order: jobs within their tenant's guarantee, then those within the on-demand
        pool, then those that would borrow."""
        guaranteed: list[JobRecord] = []
        pool: list[JobRecord] = []
        borrowing: list[JobRecord] = []
        for rec in order:
            where = self.pool(rec.job)
            (borrowing if where is None else pool if where == ON_DEMAND else guaranteed).append(rec)
        return guaranteed + pool + borrowing

    def take(self, rec: JobRecord) -> None:
        """A job starts: it runs under the quota it fits now (the on-demand pool if none is set)."""
        rec.pool = self.pool(rec.job) if self.guaranteed else ON_DEMAND
        if rec.pool is not None:
            self.use[rec.pool] += rec.job.gpus

    def give_back(self, rec: JobRecord, running: Iterable[JobRecord]) -> None:
        """A job stops: its quota has the room back, and a guarantee takes in its tenant's jobs."""
        if rec.pool is not None:
            self.use[rec.pool] -= rec.job.gpus
            if rec.pool != ON_DEMAND:
                self._promote(rec.pool, running)
            rec.pool = None

    def _promote(self, tenant: str, running: Iterable[JobRecord]) -> None:
        """Room freed in a tenant's guarantee takes in its jobs running outside it (the longest
        running first): they are within its guarantee now, no longer borrowers to take back."""
        outside = (r for r in running if r.job.tenant == tenant and r.pool in (None, ON_DEMAND)
                   and r.job.priority is not PriorityClass.SPOT)
        for rec in sorted(outside, key=lambda r: r.started_s or 0.0):
            if self.use[tenant] + rec.job.gpus <= self.guaranteed.get(tenant, 0):
                if rec.pool is not None:
                    self.use[rec.pool] -= rec.job.gpus
                rec.pool = tenant
                self.use[tenant] += rec.job.gpus

    def report(self, order: Iterable[JobRecord], usage: defaultdict[str, float]) -> dict[str, dict[str, float]]:
        """Each tenant's guarantee now: GPUs guaranteed, held within it, held beyond it (borrowed or
        in the on-demand pool), and asked for by its waiting jobs that would run within it."""
        waiting: dict[str, float] = defaultdict(float)
        for rec in order:  # in queue order, as many as its guarantee has room for
            t = rec.job.tenant
            if rec.job.priority is not PriorityClass.SPOT and \
                    self.use[t] + waiting[t] + rec.job.gpus <= self.guaranteed.get(t, 0):
                waiting[t] += rec.job.gpus
        return {t: {"guaranteed": g, "within": self.use[t], "beyond": usage[t] - self.use[t],
                    "waiting": waiting[t]} for t, g in sorted(self.guaranteed.items())}
