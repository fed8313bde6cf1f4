"""Start-up, and rebuilding after the store failed: the core's state from the store.

Pending jobs go back in the queue; each running job is asked of the backend: still running (adopted
where it runs), ended meanwhile (settled), or lost (requeued, from its last checkpoint if it writes
them). Active checks go on where they run, or are dropped. Processes of jobs that are no longer
running are killed.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from neocloud.backends.base import Exit
from neocloud.control import batch, records
from neocloud.control.jobs import job_of, outcome, row_job
from neocloud.errors import SchedulingError
from neocloud.model.job import SYSTEM
from neocloud.sched.state import FULL, Allocation
from neocloud.store.tables import JobRow, Tenant, Token

if TYPE_CHECKING:
    from neocloud.control.controller import Controller

log = logging.getLogger("neocloud.controller")
ACTIVE = ("PENDING", "RUNNING")
DEFAULT_TENANT = "default"  # made at first start, so one can submit before making tenants


def recover(c: Controller) -> None:
    c.backend.take_over()
    now = c.clock()
    with c.sessions.begin() as s:
        c.tenants = set(s.scalars(select(Tenant.name)))
        if not c.tenants:
            s.add(Tenant(name=DEFAULT_TENANT, created_at=now))
            c.tenants.add(DEFAULT_TENANT)
        live = list(s.scalars(select(Token).where(Token.revoked_at.is_(None))))
        c.tokens = {t.digest: t.tenant for t in live}
        c.token_expiry = {t.digest: t.expires_at for t in live if t.expires_at is not None}
        c.key_scope = {t.digest: t.service for t in live if t.service is not None}
        c._next_id = (s.scalar(select(func.max(JobRow.id))) or 0) + 1
        c.nodes.load(s, now)
        c.billing.load(s)
        c.sched.set_quotas(c.billing.changed(now) or {})
        c.services.load(s)  # before the jobs: a replica settled or requeued below tells its service
        keep: set[tuple[int, int]] = set()
        # Running jobs first: they hold their arrays' slots before pending tasks ask for one.
        active = list(s.scalars(select(JobRow).where(JobRow.state.in_(ACTIVE)).order_by(JobRow.id)))
        for row in sorted(active, key=lambda r: (r.state != "RUNNING", r.id)):
            if row.state not in ACTIVE:  # settled meanwhile: failed by a dependency, say
                continue
            if row.tenant == SYSTEM:
                if _readopt_check(c, row, now):
                    keep.add((row.id, row.attempts))
                continue
            try:
                if row.state == "RUNNING":
                    if _readopt(c, s, row, now):
                        keep.add((row.id, row.attempts))
                else:
                    job, ended = batch.stored_job(s, row)
                    c.sched.submit(job, now, ran_s=row.run_s, ended=ended)
            except SchedulingError as e:
                row.state, row.ended_at, row.reason = "FAILED", now, f"no longer fits this fleet: {e}"
                records.event(s, row.id, now, "failed", row.reason)
        c.failures.carry(s, c.nodes.top_up(s, now), now, tell_engine=False)
        records.write(s)
    for job_id, attempt in c.backend.reap_orphans(keep):
        log.warning("killed leftover processes of job %s attempt %s", job_id, attempt)


def _readopt_check(c: Controller, row: JobRow, now: float) -> bool:
    """An active check goes on where it runs, or is dropped."""
    alloc = _allocation(c, row)
    if row.state == "RUNNING" and alloc is not None and c.backend.recover(row.id, row.attempts, 1) == "running":
        c.sched.adopt(job_of(str(row.id), SYSTEM, row.spec, row.submitted_at), alloc, row.started_at or now)
        c.checks.adopt(row)
        return True
    row.state, row.ended_at, row.reason = "CANCELLED", now, "dropped at a controller restart"
    return False


def _readopt(c: Controller, s: Session, row: JobRow, now: float) -> bool:
    """Whether the running job was adopted; otherwise it was settled or requeued."""
    found = c.backend.recover(row.id, row.attempts, len(row.placement or []))
    job = row_job(row)
    if isinstance(found, Exit):
        c.jobs.settle(s, row, *outcome(row, found), now)
        return False
    if found == "running":
        alloc = _allocation(c, row)
        if alloc is not None:
            c.sched.adopt(job, alloc, row.started_at or now, ran_s=row.run_s)
            records.event(s, row.id, now, "adopted", "found running after a controller restart")
            return True
        c.backend.stop(row.id, row.attempts)  # its nodes left the fleet: start it afresh
    c.jobs.requeue(s, row, now, "its processes were gone after a controller restart" if found is None
                   else "its nodes are no longer in the fleet")
    c.sched.submit(job, now, ran_s=row.run_s)
    if found == "running":
        c.jobs.hold_until_stopped(row)
    return False


def _allocation(c: Controller, row: JobRow) -> Allocation | None:
    try:
        nodes = tuple(c.node_ids[p["node"]] for p in row.placement or [])
    except KeyError:
        return None
    gpus = tuple(tuple(p["gpus"]) for p in row.placement or [])
    job = job_of(str(row.id), row.tenant, row.spec, row.submitted_at)
    milli = job.gpu_milli if job.fractional else FULL
    return Allocation(str(row.id), nodes, gpus, milli) if nodes else None
