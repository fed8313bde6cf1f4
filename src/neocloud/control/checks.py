"""Active checks: `neocloud node check` on each node in burn-in, and on idle production nodes when
the schedule says one is due, run as spot jobs of neocloud's own, so that any real work preempts
them. Their verdict reaches the health policy as an `active_check` signal."""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from sqlalchemy.orm import Session

from neocloud.backends.base import Backend, Exit, Task, read_file
from neocloud.control import records
from neocloud.control.jobs import Jobs, job_of
from neocloud.control.nodes import Nodes
from neocloud.health.checks import CheckSchedule
from neocloud.health.policy import Moved
from neocloud.model.job import SYSTEM, PriorityClass
from neocloud.sched.state import FULL, Allocation
from neocloud.store.tables import JobRow

CHECK_COMMAND = f"{shlex.quote(sys.executable)} -m neocloud node check --quick --json"


class Checks:
    def __init__(self, schedule: CheckSchedule, nodes: Nodes, jobs: Jobs, backend: Backend,
                 new_id: Callable[[], int], command: str = CHECK_COMMAND) -> None:
        self.schedule, self.nodes, self.jobs, self.backend = schedule, nodes, jobs, backend
        self.new_id, self.command = new_id, command

    def start_due(self, s: Session, now: float) -> list[Task]:
        """Start the checks due now, each on its whole node."""
        policy = self.nodes.policy
        tasks = []
        for name in self.schedule.due(now, policy.stage.__getitem__, policy.idle):
            node = self.nodes.fleet.nodes[self.nodes.ids[name]]
            if node.gpus == 0 or not policy.idle(name):
                continue
            spec = {"name": f"check-{name}"[:63], "command": self.command, "gpus": node.gpus,
                    "priority": PriorityClass.SPOT.value}
            row = JobRow(id=self.new_id(), tenant=SYSTEM, name=spec["name"], spec=spec, state="RUNNING",
                         priority=spec["priority"], gpus=node.gpus, submitted_at=now, started_at=now, run_s=0.0,
                         attempts=1, reason="", cancel_requested=False, ledger={"first_start": now}, usage_class="spot",
                         placement=[{"node": name, "gpus": list(range(node.gpus))}])
            s.add(row)
            records.keep(s, row)
            job = job_of(str(row.id), SYSTEM, spec, now)
            self.jobs.sched.adopt(job, Allocation(job.id, (node.id,), (tuple(range(node.gpus)),), FULL), now)
            self.schedule.started(job.id, name)
            records.event(s, row.id, now, "started", f"active check of {name} ({policy.stage[name].value})")
            tasks.append(replace(self.jobs.task(s, row), trusted=True))
        return tasks

    def adopt(self, row: JobRow) -> None:
        """A check found running at start: it goes on where it runs."""
        self.schedule.started(str(row.id), row.placement[0]["node"] if row.placement else "")

    def ended(self, s: Session, row: JobRow, ended: Exit | None, now: float) -> Moved | None:
        """If the row was a check: its verdict, judged (None when it was stopped before giving one)."""
        verdict = ended is not None and not row.cancel_requested
        node = self.schedule.ended(str(row.id), now, verdict)
        if node is None or ended is None or not verdict:
            return None
        signal = {"kind": "active_check", "passed": ended.ok, "report": self._report(row.id)}
        return self.nodes.signal(s, node, signal, now, now)[1]

    def _report(self, job_id: int) -> dict[str, Any]:
        """The check's JSON report from its output, or the output's end if it is not one."""
        try:
            text = read_file(self.backend.log_path(job_id, 0, "stdout")).decode(errors="replace")
        except OSError:
            return {}
        try:
            report = json.loads(text)
        except ValueError:
            return {"output": text[-2000:]}
        return report if isinstance(report, dict) else {"output": text[-2000:]}
