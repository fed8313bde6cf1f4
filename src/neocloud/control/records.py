"""The rows one turn touches: jobs loaded once and kept for the turn, events and audit entries
written together at its end."""

from __future__ import annotations

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from neocloud.store.tables import AuditRow, JobEvent, JobRow


def row(s: Session, job_id: int) -> JobRow | None:
    """A job's row: one this turn added or loaded (kept in `s.info`), else from the store."""
    kept: dict[int, JobRow] = s.info.setdefault(JobRow, {})
    return kept.get(job_id) or s.get(JobRow, job_id)


def keep(s: Session, job: JobRow) -> None:
    """Keep a row added this turn findable by `row` before the commit's flush."""
    s.info.setdefault(JobRow, {})[job.id] = job


def load(s: Session, job_ids: list[int]) -> None:
    """Bring these jobs into the turn in one query. They are kept in `s.info`: the session's own
    identity map holds unmodified rows only weakly, so it may have dropped them by `row`."""
    kept = s.info.setdefault(JobRow, {})
    missing = [i for i in job_ids if i not in kept]
    if missing:
        kept.update((r.id, r) for r in s.scalars(select(JobRow).where(JobRow.id.in_(missing))))


def event(s: Session, job_id: int, at: float, kind: str, message: str) -> None:
    s.info.setdefault(JobEvent, []).append({"job_id": job_id, "at": at, "kind": kind, "message": message})


def audit(s: Session, entry: dict[str, object]) -> None:
    s.info.setdefault(AuditRow, []).append(entry)


def write(s: Session) -> None:
    """Insert the turn's job events and audit entries in one statement each (after the jobs)."""
    s.flush()
    for table in (JobEvent, AuditRow):
        if rows := s.info.pop(table, None):
            s.execute(insert(table), rows)


def mark(s: Session) -> tuple[int, int, int]:
    """Where the turn's buffers stand, so that a command that fails can be undone (`undo`)."""
    return (len(s.info.get(JobEvent, ())), len(s.info.get(AuditRow, ())), len(s.info.get(JobRow, ())))


def undo(s: Session, at: tuple[int, int, int]) -> None:
    """Drop what was buffered since `mark` (the savepoint took back what was written)."""
    for table, n in zip((JobEvent, AuditRow), at):
        del s.info.get(table, [])[n:]
    kept: dict[int, JobRow] = s.info.get(JobRow, {})
    for job_id in list(kept)[at[2]:]:
        del kept[job_id]
