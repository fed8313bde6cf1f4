"""Slurm's batch features as the store sees them: the jobs a dependency names (an array's id
names all its tasks) and how those that are over ended, and the core's news carried out on the rows
(jobs released, failed by a dependency that can never be met, still waiting, past their time limit).
The core decides; this only supplies the facts and writes down what it decided."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from neocloud.control import records
from neocloud.control.jobs import Jobs, row_job
from neocloud.errors import SchedulingError
from neocloud.model.job import Dependency, Job
from neocloud.sched.gates import News, OverLimit, Released, Unmet, Waiting
from neocloud.store.tables import JobRow

ACTIVE = ("PENDING", "RUNNING")


def tasks_of(s: Session, array_job: int) -> list[JobRow]:
    """An array's tasks, in index order, those added this turn included."""
    kept: dict[int, JobRow] = s.info.get(JobRow, {})
    found = {r.id: r for r in kept.values() if r.array_job == array_job}
    for r in s.scalars(select(JobRow).where(JobRow.array_job == array_job)):
        found.setdefault(r.id, r)
    return sorted(found.values(), key=lambda r: (r.array_index or 0, r.id))


def dependencies(s: Session, tenant: str, spec: dict[str, Any]) -> tuple[tuple[Dependency, ...], dict[str, str]]:
    """The spec's dependencies as the core takes them, and how the jobs they name that are over
    ended. A job that does not exist, or is another tenant's, is refused naming it (the same words
    for both: another tenant's job must look missing)."""
    deps: list[Dependency] = []
    ended: dict[str, str] = {}
    for d in spec.get("depends_on") or ():
        target = records.row(s, int(d["job"]))
        if target is None or target.tenant != tenant:
            raise SchedulingError(f"depends_on: no job {d['job']}")
        rows = tasks_of(s, target.id) if target.array_job == target.id else [target]
        for r in rows:
            if r.state not in ACTIVE:
                ended[str(r.id)] = r.state
        tasks = tuple(str(r.id) for r in rows) if target.array_job == target.id else ()
        deps.append(Dependency(str(target.id), d.get("when", "afterok"), tasks))
    return tuple(deps), ended


def stored_job(s: Session, row: JobRow) -> tuple[Job, dict[str, str]]:
    """A pending job as the core takes it back after a restart, its dependencies resolved again."""
    if not row.spec.get("depends_on"):
        return row_job(row), {}
    deps, ended = dependencies(s, row.tenant, row.spec)
    return row_job(row, deps), ended


def carry(s: Session, jobs: Jobs, news: list[News], now: float) -> None:
    """Write down what the core decided about gated and time-limited jobs, and stop those past their limit."""
    records.load(s, [int(n.job_id) for n in news])
    for n in news:
        row = records.row(s, int(n.job_id))
        if row is None:
            continue
        if isinstance(n, Waiting) and row.state == "PENDING":
            if row.reason != n.reason:
                row.reason = n.reason
        elif isinstance(n, Released) and row.state == "PENDING":
            row.reason = ""
            records.event(s, row.id, now, "released", "its dependencies are met and its array has room")
        elif isinstance(n, Unmet) and row.state == "PENDING":
            jobs.settle(s, row, "FAILED", None, n.reason, now)
        elif isinstance(n, OverLimit) and row.state == "RUNNING" and not row.timed_out:
            row.timed_out = True
            records.event(s, row.id, now, "time-limit", f"{n.reason}: stopping its processes")
            jobs.stop(row)
