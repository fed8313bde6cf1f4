"""What node moves imply for jobs: a job on a failed node is stopped and requeued from its last
checkpoint onto healthy nodes (or fails, once its restarts are used), the tenant is credited
what the failure cost, and the engine hears of cordons. The arithmetic and the cap are the
core's (neocloud.health.restarts); this keeps and carries them out."""

from __future__ import annotations

import contextlib
import os
from functools import partial
from pathlib import Path

from sqlalchemy.orm import Session

from neocloud.control import records
from neocloud.control.jobs import Jobs
from neocloud.health.checks import CheckSchedule
from neocloud.health.policy import Moved
from neocloud.health.restarts import interruption
from neocloud.model.lifecycle import Stage
from neocloud.store.tables import JobRow

CHECKPOINT_SCAN = 10_000  # entries of a job's checkpoint tree read to find its last write, at most


class Failures:
    def __init__(self, jobs: Jobs, checks: CheckSchedule) -> None:
        self.jobs, self.checks = jobs, checks

    def carry(self, s: Session, moved: Moved, now: float, tell_engine: bool = True) -> None:
        """Stop the jobs the moves interrupted; tell the engine of cordons it did not make itself."""
        ids = [int(j) for j in moved.interrupted]
        records.load(s, ids)
        for job_id, why in zip(ids, moved.interrupted.values()):
            row = records.row(s, job_id)
            if row is None or row.state != "RUNNING" or row.cancel_requested:  # a cancel is on its way
                continue
            if str(job_id) in self.checks.running:  # the node's own check: over, not requeued
                self.jobs.stop(row)
                self.checks.ended(str(job_id), now, verdict=False)
                self.jobs.settle(s, row, "CANCELLED", None, why, now)
            else:
                self.interrupt(s, row, why, now, moved.observed_at)
        if tell_engine:
            for m in moved.moves:
                self.jobs.after.append(partial(self.jobs.backend.set_node, m.node, m.to != Stage.PRODUCTION, m.reason))

    def interrupt(self, s: Session, row: JobRow, why: str, now: float, observed_at: float | None) -> None:
        """Stop this attempt and requeue the job onto healthy nodes, unless it has used up its restarts.
        The ledger keeps what the failure cost."""
        cost = interruption(now=now, started_at=row.started_at, checkpoint_at=self.last_checkpoint(row.id),
                            observed_at=observed_at, interruptions=row.interruptions,
                            limit=row.spec.get("max_restarts"), restart_cost=row.spec.get("restart_cost"))
        ledger = dict(row.ledger or {})
        ledger["detection_s"] = ledger.get("detection_s", 0.0) + cost.detection_s
        ledger["recomputation_s"] = ledger.get("recomputation_s", 0.0) + cost.recomputation_s
        ledger["failed_at"] = now
        row.ledger = ledger
        self.jobs.billing.credit(s, row, cost.lost_s, why, now)
        row.interruptions = cost.interruptions
        self.jobs.metrics.interruptions.inc()
        self.jobs.stop(row)
        records.event(s, row.id, now, "interrupted", why)
        if cost.gives_up:
            self.jobs.settle(s, row, "FAILED", None, f"interrupted {row.interruptions} times by node failures "
                             f"(max_restarts {cost.limit}); last: {why}", now)
            return
        self.jobs.sched.interrupt(str(row.id), now)
        self.jobs.stopping[str(row.id)] = row.attempts  # back in the queue once this attempt has stopped
        self.jobs.requeue(s, row, now, f"from its last checkpoint onto healthy nodes (restart {row.interruptions} "
                                       f"of {cost.limit})")

    def last_checkpoint(self, job_id: int) -> float | None:
        """When the job last wrote to its checkpoint directory. The tree is the tenant's: it is read
        without following links, and no deeper or wider than a checkpoint needs (CHECKPOINT_SCAN)."""
        if self.jobs.checkpoints is None:
            return None
        latest: float | None = None
        seen, todo = 0, [(self.jobs.checkpoints / str(job_id), 0)]
        while todo and seen < CHECKPOINT_SCAN:
            folder, depth = todo.pop()
            with contextlib.suppress(OSError), os.scandir(folder) as entries:
                for entry in entries:
                    seen += 1
                    if seen > CHECKPOINT_SCAN:
                        break
                    st = entry.stat(follow_symlinks=False)
                    if entry.is_dir(follow_symlinks=False):
                        if depth < 16:
                            todo.append((Path(entry.path), depth + 1))
                    elif entry.is_file(follow_symlinks=False):
                        latest = st.st_mtime if latest is None else max(latest, st.st_mtime)
        return latest
