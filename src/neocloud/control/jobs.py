"""A job's moves in the store, as the scheduler's actions and the backend's news make them:
launched, preempted, requeued, ended, settled. Each keeps the row, the scheduler, the meter and
the job's events in step; what reaches a process (stopping an attempt) is booked for after the
turn's commit."""

from __future__ import annotations

import heapq
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from neocloud.backends.base import Backend, Exit, Task
from neocloud.backends.code import CodeStore
from neocloud.control import records
from neocloud.control.billing import Billing
from neocloud.control.metrics import Metrics
from neocloud.errors import NeocloudError
from neocloud.health.restarts import launch_retry
from neocloud.model.events import Launch, Preempt
from neocloud.model.fleet import Fleet
from neocloud.model.goodput import Goodput, auto_interval, fixed_interval, goodput
from neocloud.model.job import Dependency, Job, PriorityClass
from neocloud.sched.arrays import parse_array
from neocloud.sched.limits import limit_text
from neocloud.sched.scheduler import Scheduler
from neocloud.store.tables import JobRow


def job_of(job_id: str, tenant: str, spec: dict[str, Any], submitted: float, *, array_job: int | None = None,
           array_index: int | None = None, depends_on: tuple[Dependency, ...] = ()) -> Job:
    """The core's view of a job spec (as the API validated and the store keeps it). Without an
    estimate, the time limit is the scheduler's estimate (as in Slurm's backfill)."""
    limit = spec.get("time_limit")
    estimate = spec.get("estimated_duration")
    return Job(
        id=job_id,
        name=spec["name"],
        gpus=float(spec.get("gpus", 1)),
        gpus_per_node=spec.get("gpus_per_node"),
        gpu_types=(spec["gpu_type"],) if spec.get("gpu_type") else (),
        cpu_milli=round(float(spec.get("cpus") or 0) * 1000),
        memory_mib=int(spec.get("memory") or 0),
        tenant=tenant,
        priority=PriorityClass(spec.get("priority", "on-demand")),
        submit_s=submitted,
        estimate_s=estimate if estimate is not None else limit,
        checkpoint_interval_s=fixed_interval(spec.get("checkpoint_interval")),
        time_limit_s=limit,
        array_job=None if array_job is None else str(array_job),
        array_index=array_index,
        throttle=parse_array(spec["array"]).throttle if spec.get("array") is not None else None,
        depends_on=depends_on,
    )


def row_job(row: JobRow, depends_on: tuple[Dependency, ...] = ()) -> Job:
    """The core's view of a stored job, with its place in its array."""
    return job_of(str(row.id), row.tenant, row.spec, row.submitted_at, array_job=row.array_job,
                  array_index=row.array_index, depends_on=depends_on)


class Jobs:
    def __init__(self, fleet: Fleet, sched: Scheduler, billing: Billing, metrics: Metrics, backend: Backend,
                 after: list[Callable[[], None]], checkpoints: Path | None, code: CodeStore | None = None) -> None:
        self.fleet, self.sched, self.billing, self.metrics, self.backend = fleet, sched, billing, metrics, backend
        self.after = after  # backend calls to make once this turn is committed
        self.checkpoints = checkpoints  # where each job's NEOCLOUD_CHECKPOINT_DIR is made
        self.code = code  # the tenants' uploaded code, which jobs name by digest
        self.stopping: dict[str, int] = {}  # job id -> attempt still stopping (preempted or interrupted)
        self._retries: list[tuple[float, str]] = []  # (when, job id) of jobs held after a failed start
        self.replica_moved: Callable[[JobRow, float], None] | None = None  # told of each service replica's moves
        self.attempt_ended: Callable[[JobRow, bool, str, float], None] | None = None  # row, job's end?, why, now

    def add(self, s: Session, job_id: int, tenant: str, spec: dict[str, Any], now: float, *,
            array_job: int | None = None, array_index: int | None = None, depends_on: tuple[Dependency, ...] = (),
            ended: dict[str, str] | None = None, service_id: int | None = None, generation: int | None = None,
            what: str = "") -> JobRow:
        """A new job, queued: its row, and the scheduler's record of it."""
        job = job_of(str(job_id), tenant, spec, now, array_job=array_job, array_index=array_index,
                     depends_on=depends_on)
        row = JobRow(id=job_id, tenant=tenant, name=spec["name"], spec=spec, state="PENDING",
                     priority=job.priority.value, gpus=job.gpus, submitted_at=now, run_s=0.0, attempts=0,
                     reason="", cancel_requested=False, ledger={}, usage_class="", array_job=array_job,
                     array_index=array_index, timed_out=False, service_id=service_id, generation=generation)
        s.add(row)
        records.keep(s, row)
        self.sched.submit(job, now, ended=ended)
        self.metrics.submitted.inc()
        records.event(s, row.id, now, "submitted", ", ".join(filter(None, (
            f"{job.gpus:g} GPU(s), {job.priority.value}", what))))
        return row

    def _moved(self, row: JobRow, now: float) -> None:
        if row.service_id is not None and self.replica_moved is not None:
            self.replica_moved(row, now)

    def stop(self, row: JobRow) -> None:
        """Stop the running attempt's processes, once this turn is committed."""
        job_id, attempt = row.id, row.attempts
        self.after.append(lambda: self.backend.stop(job_id, attempt))

    def launched(self, s: Session, action: Launch, now: float) -> Task:
        row = records.row(s, int(action.job_id))
        assert row is not None, action
        row.state, row.started_at, row.attempts = "RUNNING", now, row.attempts + 1
        row.usage_class = self.billing.usage_class(row.priority, self.sched.running[action.job_id].pool, row.tenant,
                                                   serving=row.service_id is not None)
        ledger = dict(row.ledger or {})
        ledger.setdefault("first_start", now)
        if "failed_at" in ledger:  # running again after a failure: the wait counts against goodput
            ledger["queueing_s"] = ledger.get("queueing_s", 0.0) + now - ledger.pop("failed_at")
        row.ledger = ledger
        row.placement = [{"node": self.fleet.nodes[n].name, "gpus": list(g)} for n, g in zip(action.nodes, action.gpus)]
        where = placement_text(row.placement)
        if row.service_id is not None:  # where the gateway reaches it: the node, and the port it is given
            row.address = service_address(self.backend, row.placement[0]["node"])
            where += f", listening at {row.address}"
        records.event(s, row.id, now, "started", f"attempt {row.attempts} on {where}")
        self._moved(row, now)
        return self.task(s, row)

    def task(self, s: Session, row: JobRow) -> Task:
        """What the backend runs for the row's current attempt."""
        spec = row.spec
        command = spec["command"]
        command = command if isinstance(command, str) else tuple(command)
        env = dict(spec.get("env") or {})
        interval = spec.get("checkpoint_interval")
        if interval == "auto":
            interval = auto_interval(row.gpus, *_fleet_failures(s), spec.get("checkpoint_cost"),
                                     spec.get("restart_cost"))
        if interval is not None:
            env["NEOCLOUD_CHECKPOINT_INTERVAL"] = f"{float(interval):g}"
        if row.array_job is not None:
            env["NEOCLOUD_ARRAY_JOB_ID"] = str(row.array_job)
            env["NEOCLOUD_ARRAY_INDEX"] = str(row.array_index)
        if row.address is not None:
            env["HOST"], _, env["PORT"] = row.address.rpartition(":")  # where the gateway reaches it
            env["NEOCLOUD_SERVICE"] = row.name
        job = job_of(str(row.id), row.tenant, spec, row.submitted_at)
        return Task(row.id, row.attempts, command, env,
                    tuple((p["node"], tuple(p["gpus"])) for p in row.placement or []), tenant=row.tenant,
                    checkpoint_dir=None if self.checkpoints is None else self.checkpoints / str(row.id),
                    cpu_milli=job.cpu_milli, memory_mib=job.memory_mib, estimate_s=spec.get("estimated_duration"),
                    image=spec.get("image"), code=self._code(row))

    def _code(self, row: JobRow) -> Path | None:
        """Where the archive of the job's code is kept, if it names one (checked at submit: one gone
        since fails the start, through the backend, with the reason)."""
        digest = row.spec.get("code")
        return None if digest is None or self.code is None else self.code.path(row.tenant, digest)

    def launch_failed(self, s: Session, row: JobRow, why: str, now: float) -> None:
        """The backend could not start the attempt: the job waits and tries again, or fails once it has
        had its tries (health.restarts.launch_retry)."""
        failures = int((row.ledger or {}).get("launch_failures", 0)) + 1
        row.ledger = {**(row.ledger or {}), "launch_failures": failures}
        delay = launch_retry(failures)
        self.stop(row)  # whatever of it did start
        if delay is None:
            self.settle(s, row, "FAILED", None, f"could not start ({failures} tries): {why}", now)
            return
        self.sched.interrupt(str(row.id), now)
        self.requeue(s, row, now, f"could not start: {why}; trying again in {delay:g} s")
        heapq.heappush(self._retries, (now + delay, str(row.id)))

    def retry_due(self, now: float) -> None:
        """Put back in the queue the jobs whose wait after a failed start is over."""
        while self._retries and self._retries[0][0] <= now:
            _, job_id = heapq.heappop(self._retries)
            if job_id in self.sched.jobs:
                self.sched.unhold(job_id)

    def preempted(self, s: Session, row: JobRow, action: Preempt, now: float) -> None:
        self.stop(row)
        self.requeue(s, row, now, f"preempted ({action.reason})")
        self.hold_until_stopped(row)

    def hold_until_stopped(self, row: JobRow) -> None:
        """Not started again until the attempt being stopped has ended."""
        self.stopping[str(row.id)] = row.attempts
        self.sched.hold(str(row.id))

    def requeue(self, s: Session, row: JobRow, now: float, why: str) -> None:
        self._end_attempt(s, row, now)
        row.state, row.started_at, row.placement, row.timed_out, row.address = "PENDING", None, None, False, None
        records.event(s, row.id, now, "requeued", why)
        self._moved(row, now)
        if self.attempt_ended is not None:
            self.attempt_ended(row, False, why, now)

    def ended(self, s: Session, ended: Exit, now: float) -> JobRow | None:
        """An attempt's processes ended: the row it settled, if it was the job's running attempt."""
        key = str(ended.job_id)
        if self.stopping.get(key) == ended.attempt:
            del self.stopping[key]
            self.sched.unhold(key)
            return None
        row = records.row(s, ended.job_id)
        if row is None or row.state != "RUNNING" or row.attempts != ended.attempt:
            return None
        self.settle(s, row, *outcome(row, ended), now)
        return row

    def settle(self, s: Session, row: JobRow, state: str, code: int | None, why: str, now: float) -> None:
        self._end_attempt(s, row, now)
        row.state, row.ended_at, row.exit_code, row.reason = state, now, code, why
        if str(row.id) in self.sched.jobs:
            self.sched.finish(str(row.id), now, state)
            self.sched.forget(str(row.id))
        self.stopping.pop(str(row.id), None)
        self.metrics.outcomes.labels(state=state).inc()
        records.event(s, row.id, now, state.lower(), why)
        row.address = None
        self._moved(row, now)
        if self.attempt_ended is not None:
            self.attempt_ended(row, True, why, now)

    def _end_attempt(self, s: Session, row: JobRow, now: float) -> None:
        """The running attempt ends: its usage is metered and its run time added to the job's."""
        self.billing.record(s, row, now)
        if row.started_at is not None:
            row.run_s += max(now - row.started_at, 0.0)


def outcome(row: JobRow, ended: Exit) -> tuple[str, int | None, str]:
    """(state, exit status, reason) of an attempt that ended."""
    if row.cancel_requested:
        return "CANCELLED", ended.code, "cancelled"
    if row.timed_out:
        return "TIMEOUT", ended.code, f"time limit {limit_text(float(row.spec.get('time_limit') or 0))} reached"
    if ended.ok:
        return "COMPLETED", 0, "exit 0"
    codes = ", ".join("lost" if c is None else str(c) for c in ended.codes)
    return "FAILED", ended.code, f"exit status per node: {codes}"


def placement_text(placement: list[dict[str, Any]] | None) -> str:
    """Where an attempt runs, as its events and its run's tags say it: node[GPUs], ..."""
    return ", ".join(f"{p['node']}[{','.join(map(str, p['gpus']))}]" for p in placement or [])


def goodput_of(row: JobRow, now: float) -> Goodput:
    """The job's goodput so far (its running attempt counted up to `now`)."""
    running = now - row.started_at if row.state == "RUNNING" and row.started_at is not None else 0.0
    spec = row.spec
    return goodput(row.gpus, row.run_s + running, row.attempts, row.ledger or {},
                   until=row.ended_at if row.ended_at is not None else now,
                   checkpoint_interval=fixed_interval(spec.get("checkpoint_interval")),
                   checkpoint_cost=spec.get("checkpoint_cost"), restart_cost=spec.get("restart_cost"))


def service_address(backend: Backend, node: str) -> str:
    """host:port where a replica on `node` is to listen: the backend's to say (a port free there)."""
    address = getattr(backend, "service_address", None)
    if address is None:
        raise NeocloudError(f"the {backend.name} backend runs no services")
    return str(address(node))


def _fleet_failures(s: Session) -> tuple[int, float]:
    """Interruptions by node failures so far, and the GPU-seconds jobs have run: the fleet's rate."""
    count, gpu_s = s.execute(select(func.coalesce(func.sum(JobRow.interruptions), 0),
                                    func.coalesce(func.sum(JobRow.run_s * JobRow.gpus), 0.0))).one()
    return int(count), float(gpu_s)
