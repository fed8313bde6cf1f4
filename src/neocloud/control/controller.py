"""The core's control loop in real time: commands and backend events in, actions out.

One thread owns the scheduler and is the only writer to the store. Each turn it takes every
command waiting (submit, cancel, cordon, ...), the backend's news (attempts that ended), runs one
scheduling pass, and writes all of it in one transaction; only after that commit are callers
answered and the actions carried out. So whatever the API acknowledged is on disk, a launch is
recorded before its process exists, and many submits share one commit.

Restart: pending jobs go back in the queue; each running job is asked of the backend: still
running (adopted where it runs), ended meanwhile (settled), or lost (requeued, from its last
checkpoint if it writes them). Processes of jobs that are no longer running are killed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import queue
import secrets
import shlex
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session, sessionmaker

from neocloud.backends.base import Backend, Exit, Task, read_file
from neocloud.control.billing import Billing
from neocloud.control.metrics import Metrics
from neocloud.control.nodes import Moved, Nodes
from neocloud.errors import NeocloudError, SchedulingError
from neocloud.model.events import Launch, Preempt
from neocloud.model.fleet import Fleet
from neocloud.model.goodput import auto_interval, fixed_interval
from neocloud.model.job import SYSTEM, Job, PriorityClass
from neocloud.model.lifecycle import LifecycleError, Stage, stage
from neocloud.sched.scheduler import Scheduler
from neocloud.sched.state import FULL, Allocation
from neocloud.store.tables import AuditRow, ContractRow, JobEvent, JobRow, PriceRow, Tenant, Token

log = logging.getLogger("neocloud.controller")
T = TypeVar("T")
ACTIVE = ("PENDING", "RUNNING")
BATCH = 512  # commands per turn at most
POLL_S = 0.1  # how often a busy loop asks the backend for news and refreshes the metrics
SYNC_S = 2.0  # how often it asks which nodes the engine itself has drained
MAX_RESTARTS = 3  # restarts after node failures a job gets unless its spec says otherwise
CHECKPOINT_SCAN = 10_000  # entries of a job's checkpoint tree read to find its last write, at most
NODE_ACTIONS = {"cordon": Stage.CORDONED, "drain": Stage.DRAINING, "uncordon": Stage.PRODUCTION}
DEFAULT_TENANT = "default"  # made at first start, so one can submit before making tenants
CHECK_COMMAND = f"{shlex.quote(sys.executable)} -m neocloud node check --quick --json"


class NotFound(NeocloudError):
    """The thing asked for does not exist (or belongs to another tenant)."""


class Conflict(NeocloudError):
    """The request clashes with what exists (a tenant name taken, a job already ended)."""


class Refused(NeocloudError):
    """Allowed to nobody in this caller's place (a tenant the backend cannot keep apart from another)."""


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(slots=True)
class _Command:
    run: Callable[[Session, float], Any]
    future: Future


class Controller:
    def __init__(
        self,
        fleet: Fleet,
        sessions: sessionmaker[Session],
        backend: Backend,
        *,
        queue_policy: str = "neocloud",
        placement: str = "neocloud",
        tick_s: float = 0.25,
        clock: Callable[[], float] = time.time,
        spares_per_fabric: int = 0,
        checkpoints: Path | None = None,
        check_every_s: float = 0.0,
        check_command: str = CHECK_COMMAND,
        only_tenant: str | None = None,
    ) -> None:
        self.fleet = fleet
        self.sessions = sessions
        self.backend = backend
        self.sched = Scheduler(fleet, queue=queue_policy, placement=placement)
        self.tick_s = tick_s
        self.clock = clock
        self.started_at = clock()
        self.metrics = Metrics()
        self.node_ids = {n.name: n.id for n in fleet.nodes}
        self.nodes = Nodes(fleet, self.sched.state, self.metrics, spares_per_fabric=spares_per_fabric)
        self.billing = Billing(fleet)
        self.checkpoints = checkpoints  # where each job's NEOCLOUD_CHECKPOINT_DIR is made
        self.check_every_s, self.check_command = check_every_s, check_command
        self.only_tenant = only_tenant  # the one tenant served, where the backend cannot keep tenants apart
        self._checks: dict[str, str] = {}  # job id of a running active check -> its node
        self._checked_at: dict[str, float] = {}  # node -> when its last active check started
        self.tokens: dict[str, str] = {}  # digest -> tenant, of tokens not revoked
        self.token_expiry: dict[str, float] = {}  # digest -> when it stops working, of tokens that expire
        self.tenants: set[str] = set()
        self._next_id = 1  # job ids are given here, not by the database: this loop is its only writer
        self._inbox: queue.Queue[_Command] = queue.Queue()
        self._stopping: dict[str, int] = {}  # job id -> attempt still stopping (preempted or cancelled)
        self._launch_failed: queue.SimpleQueue[tuple[int, str]] = queue.SimpleQueue()
        self._after: list[Callable[[], None]] = []  # backend calls to make once this turn is committed
        # Backend calls (spawning and signalling processes) run in order on a thread of their own,
        # so the loop goes on deciding and committing meanwhile.
        self._carrier = ThreadPoolExecutor(max_workers=1, thread_name_prefix="neocloud-backend")
        self._polled_at = self._observed_at = self._synced_at = float("-inf")
        self._thread: threading.Thread | None = None
        self._halt = threading.Event()
        self.failed: str | None = None  # why the loop stopped, if it did

    # -- life cycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._recover()
        self._thread = threading.Thread(target=self._loop, name="neocloud-controller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._halt.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._carrier.shutdown(wait=True)
        self.backend.close()

    def call(self, run: Callable[[Session, float], T]) -> Future:
        """Run `run(session, now)` in the loop's next turn. The future is resolved once that turn's
        transaction is committed (`.result()` to wait here, `asyncio.wrap_future` to await it)."""
        fut: Future = Future()
        if self.failed:
            fut.set_exception(NeocloudError(f"the controller has stopped: {self.failed}"))
            return fut
        self._inbox.put(_Command(run, fut))
        return fut

    # -- the loop -----------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._halt.is_set():
            commands = self._take()
            try:
                self._turn(commands)
            except Exception as e:  # the store failed: stop rather than diverge from it
                log.exception("controller turn failed")
                self.failed = f"{type(e).__name__}: {e}"
                while True:
                    for c in commands:
                        if not c.future.done():
                            c.future.set_exception(NeocloudError(f"the controller has stopped: {self.failed}"))
                    commands = self._take()
                    if not commands:
                        return

    def _take(self) -> list[_Command]:
        try:
            commands = [self._inbox.get(timeout=self.tick_s)]
        except queue.Empty:
            return []
        while len(commands) < BATCH:
            try:
                commands.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        return commands

    def _turn(self, commands: list[_Command]) -> None:
        now = self.clock()
        results: list[tuple[_Command, Any, BaseException | None]] = []
        tasks: list[Task] = []
        with self.sessions.begin() as s:
            for c in commands:
                try:
                    results.append((c, c.run(s, now), None))
                except NeocloudError as e:
                    results.append((c, None, e))
            while not self._launch_failed.empty():
                job_id, why = self._launch_failed.get()
                row = _row(s, job_id)
                if row is not None and row.state == "RUNNING":
                    self._settle(s, row, "FAILED", None, f"could not start: {why}", now)
            if now - self._synced_at >= SYNC_S:
                self._synced_at = now
                self._sync_nodes(s, now)
                if (guarantees := self.billing.changed(now)) is not None:  # a contract began or ended
                    self.sched.set_quotas(guarantees)
                tasks.extend(self._start_checks(s, now))
            if now - self._polled_at >= POLL_S:  # under load turns come fast; the backend is asked less
                self._polled_at = now
                exits = self.backend.poll()
                _load(s, [e.job_id for e in exits])
                for ended in exits:
                    self._ended(s, ended, now)
            decisions = self.sched.decisions
            actions = self.sched.schedule(now)
            _load(s, [int(a.job_id) for a in actions])
            for action in actions:
                if isinstance(action, Launch):
                    tasks.append(self._launched(s, action, now))
                elif isinstance(action, Preempt):
                    job_id, attempt = self._preempted(s, action, now)
                    self._after.append(lambda j=job_id, a=attempt: self.backend.stop(j, a))
            self.metrics.decisions.inc(self.sched.decisions - decisions)
            _write_records(s)
        for c, value, error in results:
            if error is None:
                c.future.set_result(value)
            else:
                c.future.set_exception(error)
        if tasks:
            self._after.append(lambda: self._launch(tasks))
        for call in self._after:  # stops come before launches: they were booked first
            self._carrier.submit(call)
        self._after = []
        if now - self._observed_at >= POLL_S:
            self._observed_at = now
            self.metrics.observe(self.sched)

    def _launch(self, tasks: list[Task]) -> None:
        try:
            failed = self.backend.launch(tasks)
        except Exception as e:  # noqa: BLE001 - whatever broke, these jobs did not start
            log.exception("launch failed")
            failed = [(t.job_id, f"{type(e).__name__}: {e}") for t in tasks]
        for job_id, why in failed:
            self._launch_failed.put((job_id, why))

    # -- what actions and backend news do to the store ----------------------------------------
    def _sync_nodes(self, s: Session, now: float) -> None:
        """Follow the engine: a node it drained is cordoned here; when it resumes, so does the node."""
        self._carry(s, self.nodes.follow_engine(s, self.backend.drained(), now), now, tell_engine=False)

    def _carry(self, s: Session, moved: Moved, now: float, tell_engine: bool = True) -> None:
        """Carry out what node moves imply: jobs on a failed node stop, the engine hears of cordons."""
        _load(s, list(moved.interrupted))
        for job_id, why in moved.interrupted.items():
            row = _row(s, job_id)
            if row is None or row.state != "RUNNING" or row.cancel_requested:  # a cancel is on its way
                continue
            if self._checks.pop(str(job_id), None) is not None:  # the node's own check: over, not requeued
                self._after.append(lambda j=row.id, a=row.attempts: self.backend.stop(j, a))
                self._settle(s, row, "CANCELLED", None, why, now)
            else:
                self._interrupt(s, row, why, now, moved.observed_at)
        if tell_engine:
            for name, _, to, reason in moved.moves:
                self._after.append(lambda n=name, t=to, r=reason: self.backend.set_node(n, t != Stage.PRODUCTION, r))

    def _interrupt(self, s: Session, row: JobRow, why: str, now: float, observed_at: float | None) -> None:
        """A node under the job failed: stop this attempt and requeue it from its last checkpoint onto
        healthy nodes, unless it has used up its restarts. The ledger keeps what the failure cost."""
        saved = max(row.started_at or now, self._last_checkpoint(row.id) or 0.0)
        ledger = dict(row.ledger or {})
        broken = max(observed_at or now, row.started_at or now)  # the attempt ran on a broken node since
        detection, recomputation = max(now - broken, 0.0), max(now - saved, 0.0)
        ledger["detection_s"] = ledger.get("detection_s", 0.0) + detection
        ledger["recomputation_s"] = ledger.get("recomputation_s", 0.0) + recomputation
        restart = float(row.spec.get("restart_cost") or 0.0)
        self.billing.credit(s, row, detection + recomputation + restart, why, now)
        ledger["failed_at"] = now
        row.ledger = ledger
        row.interruptions += 1
        self.metrics.interruptions.inc()
        limit = row.spec.get("max_restarts", MAX_RESTARTS)
        attempt = row.attempts
        self._after.append(lambda: self.backend.stop(row.id, attempt))
        _event(s, row.id, now, "interrupted", why)
        if row.interruptions > limit:
            self._settle(s, row, "FAILED", None, f"interrupted {row.interruptions} times by node failures "
                         f"(max_restarts {limit}); last: {why}", now)
            return
        self.sched.interrupt(str(row.id), now)
        self._stopping[str(row.id)] = attempt  # back in the queue once this attempt has stopped
        self._requeue(s, row, now, f"from its last checkpoint onto healthy nodes (restart {row.interruptions} "
                                   f"of {limit})")

    # -- active checks -------------------------------------------------------------------------
    def _start_checks(self, s: Session, now: float) -> list[Task]:
        """Run `neocloud node check` on each node in burn-in, and on idle production nodes due one
        (every `check_every_s`); as spot jobs, so that any real work preempts them."""
        busy = set(self._checks.values())
        tasks = []
        for node in self.fleet.nodes:
            name, stage_now = node.name, self.nodes.stage[node.name]
            due = self.check_every_s > 0 and now - self._checked_at.get(name, float("-inf")) >= self.check_every_s
            idle = stage_now == Stage.PRODUCTION and not self.nodes.jobs_on(name)
            if name in busy or node.gpus == 0 or not (stage_now == Stage.BURN_IN or (due and idle)):
                continue
            spec = {"name": f"check-{name}"[:63], "command": self.check_command, "gpus": node.gpus,
                    "priority": PriorityClass.SPOT.value}
            row = JobRow(id=self._next_id, tenant=SYSTEM, name=spec["name"], spec=spec, state="RUNNING",
                         priority=spec["priority"], gpus=node.gpus, submitted_at=now, started_at=now, run_s=0.0,
                         attempts=1, reason="", cancel_requested=False, ledger={"first_start": now}, usage_class="spot",
                         placement=[{"node": name, "gpus": list(range(node.gpus))}])
            self._next_id += 1
            s.add(row)
            s.info.setdefault(JobRow, {})[row.id] = row
            job = self._job(str(row.id), SYSTEM, spec, now)
            self.sched.adopt(job, Allocation(job.id, (node.id,), (tuple(range(node.gpus)),), FULL), now)
            self._checks[job.id] = name
            self._checked_at[name] = now
            _event(s, row.id, now, "started", f"active check of {name} ({stage_now.value})")
            tasks.append(replace(self._task(row), trusted=True))
        return tasks

    def _check_report(self, job_id: int) -> dict[str, Any]:
        """The check's JSON report from its output, or the output's end if it is not one."""
        try:
            text = read_file(self.backend.log_path(job_id, 0, "stdout")).decode(errors="replace")
        except OSError:
            return {}
        try:
            return json.loads(text)
        except ValueError:
            return {"output": text[-2000:]}

    def _fleet_failures(self) -> tuple[int, float]:
        """Interruptions by node failures so far, and the GPU-seconds jobs have run: the fleet's rate."""
        with self.sessions() as s:
            count, gpu_s = s.execute(select(func.coalesce(func.sum(JobRow.interruptions), 0),
                                            func.coalesce(func.sum(JobRow.run_s * JobRow.gpus), 0.0))).one()
        return int(count), float(gpu_s)

    def _last_checkpoint(self, job_id: int) -> float | None:
        """When the job last wrote to its checkpoint directory. The tree is the tenant's: it is read
        without following links, and no deeper or wider than a checkpoint needs (CHECKPOINT_SCAN)."""
        if self.checkpoints is None:
            return None
        latest, seen, todo = None, 0, [(self.checkpoints / str(job_id), 0)]
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

    def _launched(self, s: Session, action: Launch, now: float) -> Task:
        row = _row(s, int(action.job_id))
        row.state, row.started_at, row.attempts = "RUNNING", now, row.attempts + 1
        row.usage_class = self.billing.usage_class(row.priority, self.sched.running[action.job_id].pool, row.tenant)
        ledger = dict(row.ledger or {})
        ledger.setdefault("first_start", now)
        if "failed_at" in ledger:  # running again after a failure: the wait counts against goodput
            ledger["queueing_s"] = ledger.get("queueing_s", 0.0) + now - ledger.pop("failed_at")
        row.ledger = ledger
        row.placement = [{"node": self.fleet.nodes[n].name, "gpus": list(g)} for n, g in zip(action.nodes, action.gpus)]
        where = ", ".join(f"{p['node']}[{','.join(map(str, p['gpus']))}]" for p in row.placement)
        _event(s, row.id, now, "started", f"attempt {row.attempts} on {where}")
        return self._task(row)

    def _task(self, row: JobRow) -> Task:
        spec = row.spec
        command = spec["command"]
        command = command if isinstance(command, str) else tuple(command)
        env = dict(spec.get("env") or {})
        interval = spec.get("checkpoint_interval")
        if interval == "auto":
            interval = auto_interval(row.gpus, *self._fleet_failures(), spec.get("checkpoint_cost"),
                                     spec.get("restart_cost"))
        if interval is not None:
            env["NEOCLOUD_CHECKPOINT_INTERVAL"] = f"{float(interval):g}"
        job = self._job(str(row.id), row.tenant, spec, row.submitted_at)
        return Task(row.id, row.attempts, command, env,
                    tuple((p["node"], tuple(p["gpus"])) for p in row.placement or []), tenant=row.tenant,
                    checkpoint_dir=None if self.checkpoints is None else self.checkpoints / str(row.id),
                    cpu_milli=job.cpu_milli, memory_mib=job.memory_mib)

    def _preempted(self, s: Session, action: Preempt, now: float) -> tuple[int, int]:
        row = _row(s, int(action.job_id))
        if self._checks.pop(action.job_id, None) is not None:  # a check yields to work, and is not requeued
            self._settle(s, row, "CANCELLED", None, "preempted: the node is wanted for work", now)
            return row.id, row.attempts
        self._requeue(s, row, now, f"preempted ({action.reason})")
        self._stopping[action.job_id] = row.attempts
        self.sched.hold(action.job_id)  # not again until this attempt has stopped
        return row.id, row.attempts

    def _requeue(self, s: Session, row: JobRow, now: float, why: str) -> None:
        self._end_attempt(s, row, now)
        row.state, row.started_at, row.placement = "PENDING", None, None
        _event(s, row.id, now, "requeued", why)

    def _ended(self, s: Session, ended: Exit, now: float) -> None:
        key = str(ended.job_id)
        if self._stopping.get(key) == ended.attempt:
            del self._stopping[key]
            self.sched.unhold(key)
            return
        row = _row(s, ended.job_id)
        if row is None or row.state != "RUNNING" or row.attempts != ended.attempt:
            return
        self._settle(s, row, *_outcome(row, ended), now)
        node = self._checks.pop(key, None)
        if node is not None and not row.cancel_requested:
            verdict = {"kind": "active_check", "passed": ended.ok, "report": self._check_report(row.id)}
            self._carry(s, self.nodes.signal(s, node, verdict, now, now)[1], now)

    def _end_attempt(self, s: Session, row: JobRow, now: float) -> None:
        """The running attempt ends: its usage is metered and its run time added to the job's."""
        self.billing.record(s, row, now)
        _stop_clock(row, now)

    def _settle(self, s: Session, row: JobRow, state: str, code: int | None, why: str, now: float) -> None:
        self._end_attempt(s, row, now)
        row.state, row.ended_at, row.exit_code, row.reason = state, now, code, why
        if str(row.id) in self.sched.jobs:
            self.sched.finish(str(row.id), now, state)
            self.sched.forget(str(row.id))
        self._stopping.pop(str(row.id), None)
        self.metrics.outcomes.labels(state=state).inc()
        _event(s, row.id, now, state.lower(), why)

    # -- commands (run inside the loop) -------------------------------------------------------
    def submit(self, tenant: str, spec: dict[str, Any]) -> Future:  # of the JobRow
        def run(s: Session, now: float) -> JobRow:
            if tenant not in self.tenants:
                raise NotFound(f"no tenant {tenant!r}")
            if self.only_tenant not in (None, tenant):
                raise Refused(f"the {self.backend.name} backend cannot keep tenants apart ({self.backend.isolation}), "
                              f"so it serves one tenant, {self.only_tenant!r}: a job of {tenant!r} is refused. Start "
                              "neocloud up with --only-tenant NAME to serve another, or --trust-tenants if they "
                              "trust each other")
            self.sched.check(self._job(spec["name"], tenant, spec, now))  # refused with its name, not an id
            job = self._job(str(self._next_id), tenant, spec, now)
            row = JobRow(id=self._next_id, tenant=tenant, name=spec["name"], spec=spec, state="PENDING",
                         priority=job.priority.value, gpus=job.gpus, submitted_at=now, run_s=0.0, attempts=0,
                         reason="", cancel_requested=False, ledger={}, usage_class="")
            self._next_id += 1
            s.add(row)
            s.info.setdefault(JobRow, {})[row.id] = row  # pending till the commit's flush: `_row` finds it
            self.sched.submit(job, now)
            _event(s, row.id, now, "submitted", f"{job.gpus:g} GPU(s), {job.priority.value}")
            self.metrics.submitted.inc()
            return row

        return self.call(run)

    def cancel(self, job_id: int, tenant: str | None) -> Future:  # of the JobRow
        def run(s: Session, now: float) -> JobRow:
            row = _row(s, job_id)
            if row is None or (tenant is not None and row.tenant != tenant):
                raise NotFound(f"no job {job_id}")
            if row.state == "PENDING":
                self._settle(s, row, "CANCELLED", None, "cancelled while pending", now)
            elif row.state == "RUNNING" and not row.cancel_requested:
                row.cancel_requested = True
                _event(s, row.id, now, "cancel-requested", "stopping its processes")
                self._after.append(lambda: self.backend.stop(row.id, row.attempts))
            return row

        return self.call(run)

    def set_node(self, name: str, action: str, reason: str) -> Future:
        """The operator's cordon, drain and uncordon: moves to cordoned, draining and production."""
        return self.move_node(name, NODE_ACTIONS[action].value, reason)

    def move_node(self, name: str, to: str, reason: str) -> Future:  # of the node's stage
        if name not in self.node_ids:
            raise NotFound(f"no node {name!r}")
        target = stage(to)

        def run(s: Session, now: float) -> str:
            try:
                self._carry(s, self.nodes.move(s, name, target, reason, now), now)
            except LifecycleError as e:
                raise Conflict(str(e)) from None
            return target.value

        return self.call(run)

    def signal(self, name: str, signal: dict[str, Any], observed_at: float | None) -> Future:  # of a dict
        """A health signal about a node: recorded, judged by the rules, acted on."""
        if name not in self.node_ids:
            raise NotFound(f"no node {name!r}")

        def run(s: Session, now: float) -> dict[str, Any]:
            rule, moved = self.nodes.signal(s, name, signal, observed_at if observed_at is not None else now, now)
            self._carry(s, moved, now)
            return {"node": name, "rule": f"{rule.kind}: {rule.when}", "action": rule.action.value,
                    "stage": self.nodes.stage[name].value, "interrupted": sorted(moved.interrupted)}

        return self.call(run)

    def create_contract(self, terms: dict[str, Any]) -> Future:  # of the ContractRow
        def run(s: Session, now: float) -> ContractRow:
            if terms["tenant"] not in self.tenants:
                raise NotFound(f"no tenant {terms['tenant']!r}")
            row = self.billing.add(s, dict(terms), now)
            if (guarantees := self.billing.changed(now)) is not None:
                self.sched.set_quotas(guarantees)
            return row

        return self.call(run)

    def amend_contract(self, number: int, changes: dict[str, Any], note: str) -> Future:  # of the ContractRow
        def run(s: Session, now: float) -> ContractRow:
            row = self.billing.amend(s, number, changes, note, now)
            if row is None:
                raise NotFound(f"no contract {number} in force")
            if (guarantees := self.billing.changed(now)) is not None:
                self.sched.set_quotas(guarantees)
            return row

        return self.call(run)

    def set_price(self, gpu_type: str, usage_class: str, price: Decimal) -> Future:  # of the PriceRow
        def run(s: Session, now: float) -> PriceRow:
            row = PriceRow(gpu_type=gpu_type, usage_class=usage_class, price=price, since=now)
            s.add(row)
            return row

        return self.call(run)

    def create_tenant(self, name: str) -> Future:  # of the Tenant
        def run(s: Session, now: float) -> Tenant:
            if name in self.tenants:
                raise Conflict(f"tenant {name!r} exists")
            if name.lower() == SYSTEM:
                raise Conflict(f"{name!r} is the name of neocloud's own jobs: choose another")
            row = Tenant(name=name, created_at=now)
            s.add(row)
            self.tenants.add(name)
            return row

        return self.call(run)

    def create_token(self, tenant: str, label: str, expires_in: float | None = None) -> Future:  # of (token, row)
        """A new token for the tenant: the secret is returned once, only its digest is kept."""
        token = "nct_" + secrets.token_urlsafe(32)

        def run(s: Session, now: float) -> tuple[str, Token]:
            if tenant not in self.tenants:
                raise NotFound(f"no tenant {tenant!r}")
            d = digest(token)
            row = Token(tenant=tenant, digest=d, label=label, created_at=now,
                        expires_at=None if expires_in is None else now + expires_in)
            s.add(row)
            if row.expires_at is not None:
                self.token_expiry[d] = row.expires_at
            self.tokens[d] = tenant
            return token, row

        return self.call(run)

    def revoke_token(self, token_id: int, tenant: str | None) -> Future:  # of the Token row
        """Revoke a token (the admin's any, a tenant's only its own): refused from this turn on."""
        def run(s: Session, now: float) -> Token:
            row = s.get(Token, token_id)
            if row is None or (tenant is not None and row.tenant != tenant):
                raise NotFound(f"no token {token_id}")
            if row.revoked_at is None:
                row.revoked_at = now
            self.tokens.pop(row.digest, None)
            self.token_expiry.pop(row.digest, None)
            return row

        return self.call(run)

    def tenant_of(self, token_digest: str) -> str | None:
        """The tenant whose token has this digest, unless it was revoked or has expired (by the
        controller's clock, at each call: an expired token is refused at once)."""
        tenant = self.tokens.get(token_digest)
        if tenant is None:
            return None
        expires = self.token_expiry.get(token_digest)
        return tenant if expires is None or self.clock() < expires else None

    def audit(self, entry: dict[str, Any]) -> Future:
        return self.call(lambda s, now: s.info.setdefault(AuditRow, []).append({"at": now, **entry}))

    def view(self, read: Callable[[Scheduler], T]) -> Future:
        """Read the scheduler's state consistently, from inside the loop."""
        return self.call(lambda s, now: read(self.sched))

    # -- start-up ------------------------------------------------------------------------------
    def _recover(self) -> None:
        now = self.clock()
        with self.sessions.begin() as s:
            self.tenants = set(s.scalars(select(Tenant.name)))
            if not self.tenants:
                s.add(Tenant(name=DEFAULT_TENANT, created_at=now))
                self.tenants.add(DEFAULT_TENANT)
            live = list(s.scalars(select(Token).where(Token.revoked_at.is_(None))))
            self.tokens = {t.digest: t.tenant for t in live}
            self.token_expiry = {t.digest: t.expires_at for t in live if t.expires_at is not None}
            self._next_id = (s.scalar(select(func.max(JobRow.id))) or 0) + 1
            self.nodes.load(s)
            self.billing.load(s)
            self.sched.set_quotas(self.billing.changed(now) or {})
            self._checked_at = {n.name: now for n in self.fleet.nodes}  # the first idle checks are due later
            keep: set[tuple[int, int]] = set()
            for row in s.scalars(select(JobRow).where(JobRow.state.in_(ACTIVE)).order_by(JobRow.id)):
                if row.tenant == SYSTEM:  # an active check: it goes on where it runs, or is dropped
                    if row.state == "RUNNING" and self.backend.recover(row.id, row.attempts, 1) == "running" \
                            and (alloc := self._allocation(row)) is not None:
                        self.sched.adopt(self._job(str(row.id), SYSTEM, row.spec, row.submitted_at), alloc,
                                         row.started_at or now)
                        self._checks[str(row.id)] = row.placement[0]["node"]
                        keep.add((row.id, row.attempts))
                    else:
                        row.state, row.ended_at, row.reason = "CANCELLED", now, "dropped at a controller restart"
                    continue
                try:
                    if row.state == "RUNNING":
                        if self._readopt(s, row, now):
                            keep.add((row.id, row.attempts))
                    else:
                        self.sched.submit(self._job(str(row.id), row.tenant, row.spec, row.submitted_at), now,
                                          ran_s=row.run_s)
                except SchedulingError as e:
                    self._settle_unknown(s, row, now, str(e))
            self.nodes.top_up(s, now)
            _write_records(s)
            for job_id, attempt in self.backend.reap_orphans(keep):
                log.warning("killed leftover processes of job %s attempt %s", job_id, attempt)

    def _readopt(self, s: Session, row: JobRow, now: float) -> bool:
        """Whether the running job was adopted; otherwise it was settled or requeued."""
        found = self.backend.recover(row.id, row.attempts, len(row.placement or []))
        job = self._job(str(row.id), row.tenant, row.spec, row.submitted_at)
        if isinstance(found, Exit):
            self._settle(s, row, *_outcome(row, found), now)
            return False
        if found == "running":
            alloc = self._allocation(row)
            if alloc is not None:
                self.sched.adopt(job, alloc, row.started_at or now, ran_s=row.run_s)
                _event(s, row.id, now, "adopted", "found running after a controller restart")
                return True
            self.backend.stop(row.id, row.attempts)  # its nodes left the fleet: start it afresh
            self._stopping[job.id] = row.attempts
        self._requeue(s, row, now, "its processes were gone after a controller restart" if found is None
                      else "its nodes are no longer in the fleet")
        self.sched.submit(job, now, ran_s=row.run_s)
        if job.id in self._stopping:
            self.sched.hold(job.id)
        return False

    def _settle_unknown(self, s: Session, row: JobRow, now: float, why: str) -> None:
        row.state, row.ended_at, row.reason = "FAILED", now, f"no longer fits this fleet: {why}"
        _event(s, row.id, now, "failed", row.reason)

    def _allocation(self, row: JobRow) -> Allocation | None:
        try:
            nodes = tuple(self.node_ids[p["node"]] for p in row.placement or [])
        except KeyError:
            return None
        gpus = tuple(tuple(p["gpus"]) for p in row.placement or [])
        job = self._job(str(row.id), row.tenant, row.spec, row.submitted_at)
        milli = job.gpu_milli if job.fractional else FULL
        return Allocation(str(row.id), nodes, gpus, milli) if nodes else None

    @staticmethod
    def _job(job_id: str, tenant: str, spec: dict[str, Any], submitted: float) -> Job:
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
            estimate_s=spec.get("estimated_duration"),
            checkpoint_interval_s=fixed_interval(spec.get("checkpoint_interval")),
        )


def _stop_clock(row: JobRow, now: float) -> None:
    """Add the attempt that is ending to the wall time the job has run."""
    if row.started_at is not None:
        row.run_s += max(now - row.started_at, 0.0)


def _outcome(row: JobRow, ended: Exit) -> tuple[str, int | None, str]:
    """(state, exit status, reason) of an attempt that ended."""
    if row.cancel_requested:
        return "CANCELLED", ended.code, "cancelled"
    if ended.ok:
        return "COMPLETED", 0, "exit 0"
    codes = ", ".join("lost" if c is None else str(c) for c in ended.codes)
    return "FAILED", ended.code, f"exit status per node: {codes}"


def _row(s: Session, job_id: int) -> JobRow | None:
    """A job's row: one this turn added or loaded (kept in `s.info`), else from the store."""
    return s.info.get(JobRow, {}).get(job_id) or s.get(JobRow, job_id)


def _load(s: Session, job_ids: list[int]) -> None:
    """Bring these jobs into the turn in one query. They are kept in `s.info`: the session's own
    identity map holds unmodified rows only weakly, so it may have dropped them by `_row`."""
    kept = s.info.setdefault(JobRow, {})
    missing = [i for i in job_ids if i not in kept]
    if missing:
        kept.update((r.id, r) for r in s.scalars(select(JobRow).where(JobRow.id.in_(missing))))


def _event(s: Session, job_id: int, at: float, kind: str, message: str) -> None:
    s.info.setdefault(JobEvent, []).append({"job_id": job_id, "at": at, "kind": kind, "message": message})


def _write_records(s: Session) -> None:
    """Insert the turn's job events and audit entries in one statement each (after the jobs)."""
    s.flush()
    for table in (JobEvent, AuditRow):
        if rows := s.info.pop(table, None):
            s.execute(insert(table), rows)
