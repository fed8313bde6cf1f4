"""The core's control loop in real time: commands and backend events in, actions out.

One thread owns the scheduler and is the only writer to the store. Each turn it takes every
command waiting (submit, cancel, cordon, ...), the backend's news (attempts that ended, fetched
off the turn by the watcher), runs one scheduling pass, and writes all of it in one transaction;
only after that commit are callers answered and the actions carried out. So whatever the API
acknowledged is on disk, a launch is recorded before its process exists, and many submits share
one commit.

Faults: a backend that fails or hangs leaves the loop running (the service is degraded until it
answers again). A store that fails mid-turn leaves the turn uncommitted, so nothing it decided
happened: the loop answers its callers "unavailable", waits until the store answers, and rebuilds
its state from it exactly as a restart does (recovery.py). Several servers may share one
PostgreSQL database: one leads, the others stand by and take the lead, recovering the same way,
when it goes (store/leadership.py).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from neocloud.backends.base import Backend, Exit, Task
from neocloud.backends.code import CodeStore
from neocloud.control import batch, records
from neocloud.control.billing import Billing
from neocloud.control.checks import CHECK_COMMAND, Checks
from neocloud.control.commands import Commands, Conflict, NotFound, Refused, digest
from neocloud.control.degraded import Degraded
from neocloud.control.endpoints import Endpoints
from neocloud.control.failures import Failures
from neocloud.control.forecasts import Forecasts
from neocloud.control.jobs import Jobs
from neocloud.control.metering import FLUSH_S, Metering
from neocloud.control.metrics import Metrics
from neocloud.control.nodes import Nodes
from neocloud.control.probes import Prober
from neocloud.control.recovery import DEFAULT_TENANT, recover
from neocloud.control.services import Services
from neocloud.control.tracking import Ended, Launching, Tracker, ended_of, launching_of
from neocloud.control.watch import SYNC_S, Watcher
from neocloud.errors import NeocloudError
from neocloud.health.checks import CheckSchedule
from neocloud.model.events import Launch, Preempt
from neocloud.model.fleet import Fleet
from neocloud.sched.scheduler import Scheduler
from neocloud.store.leadership import Leadership, LostLeadership
from neocloud.store.tables import JobRow

log = logging.getLogger("neocloud.controller")
T = TypeVar("T")
BATCH = 512  # commands per turn at most
RETRY_STORE_S = (0.5, 1.0, 2.0, 5.0)  # pauses between attempts to reach a failed store

__all__ = ["CHECK_COMMAND", "DEFAULT_TENANT", "Conflict", "Controller", "NotFound", "Refused", "Unavailable",
           "digest"]


class Unavailable(NeocloudError):
    """The service cannot do this now (its store is failing); the same request may succeed later."""


@dataclass(slots=True)
class _Command:
    run: Callable[[Session, float], Any]
    future: Future[Any]
    checked: bool  # raises only before it writes: needs no savepoint


class Controller(Commands):
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
        code: CodeStore | None = None,
        check_every_s: float = 0.0,
        check_command: str = CHECK_COMMAND,
        only_tenant: str | None = None,
        leadership: Leadership | None = None,
        tracker: Tracker | None = None,
    ) -> None:
        self.fleet, self.sessions, self.backend = fleet, sessions, backend
        self.queue_policy, self.placement = queue_policy, placement
        self.tick_s, self.clock = tick_s, clock
        self.started_at = clock()
        self.spares_per_fabric, self.checkpoints, self.code = spares_per_fabric, checkpoints, code
        self.check_every_s, self.check_command = check_every_s, check_command
        self.only_tenant = only_tenant  # the one tenant served, where the backend cannot keep tenants apart
        self.leadership = leadership  # None: the only server on its store
        self.standby = False  # another server leads: this one answers nothing that needs the loop
        self.node_ids = {n.name: n.id for n in fleet.nodes}
        self.metrics = Metrics()
        self.degraded = Degraded(self.metrics, clock)
        self.watcher = Watcher(backend, self.degraded, clock)
        self.tracker = tracker  # each job's MLflow run, where tracking is on
        if tracker is not None:
            tracker.degraded = self.degraded
        self._inbox: queue.Queue[_Command] = queue.Queue()
        self._launch_failed: queue.SimpleQueue[tuple[int, int, str]] = queue.SimpleQueue()  # job, attempt, why
        # Backend calls (spawning and signalling processes) run in order on a thread of their own,
        # so the loop goes on deciding and committing meanwhile.
        self._carrier = ThreadPoolExecutor(max_workers=1, thread_name_prefix="neocloud-backend")
        self._synced_at = float("-inf")
        self._thread: threading.Thread | None = None
        self._halt = threading.Event()
        self.forecasts = Forecasts()
        self.prober = Prober(lambda: self.endpoints, getattr(self.backend, "listens_as", None))
        self.metering = Metering(self.metrics.registry)  # the gateway's counts, kept across a rebuild
        self._metered_at = float("-inf")
        self._reset()

    def _reset(self) -> None:
        """The core's state, empty: filled from the store by recovery."""
        self.sched = Scheduler(self.fleet, queue=self.queue_policy, placement=self.placement)
        self.schedule = CheckSchedule(self.check_every_s)
        self.nodes = Nodes(self.fleet, self.sched.state, self.metrics, spares_per_fabric=self.spares_per_fabric,
                           checks=self.schedule)
        self.billing = Billing(self.fleet)
        self._after: list[Callable[[], None]] = []  # backend calls to make once this turn is committed
        self.jobs = Jobs(self.fleet, self.sched, self.billing, self.metrics, self.backend, self._after,
                         self.checkpoints, self.code)
        self.failures = Failures(self.jobs, self.schedule)
        self._ends: list[Ended] = []  # attempts' and jobs' ends to tell the tracker, once this turn is committed
        if self.tracker is not None:
            self.jobs.attempt_ended = self._attempt_ended
        self.endpoints = Endpoints()  # what the gateway and the prober read: rebuilt with the rest
        self.services = Services(self.jobs, self.endpoints, self.new_id)
        self.checks = Checks(self.schedule, self.nodes, self.jobs, self.backend, self.new_id, self.check_command)
        self.tokens: dict[str, str] = {}
        self.token_expiry: dict[str, float] = {}
        self.key_scope: dict[str, str] = {}  # a service key's digest: the service it calls ('*': any)
        self.tenants: set[str] = set()
        self._next_id = 1  # job ids are given here, not by the database: this loop is its only writer

    # -- life cycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Recover and run, if this server leads; else stand by until it does."""
        self.standby = self.leadership is not None and not self.leadership.try_lead()
        if not self.standby:
            recover(self)
        self._thread = threading.Thread(target=self._run, name="neocloud-controller", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        if self.standby:
            self._lead()
        self.watcher.start()
        self.prober.start()
        self._loop()

    def stop(self) -> None:
        self._halt.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.watcher.started:
            self.watcher.stop()
        self.prober.stop()
        self._carrier.shutdown(wait=True)
        if self.tracker is not None:
            self.tracker.close()
        self.forecasts.stop()
        self.backend.close()
        if self.leadership is not None:
            self.leadership.release()

    def call(self, run: Callable[[Session, float], T], checked: bool = False) -> Future[T]:
        """Run `run(session, now)` in the loop's next turn. The future is resolved once that turn's
        transaction is committed (`.result()` to wait here, `asyncio.wrap_future` to await it).

        If `run` raises, what it wrote is rolled back (it runs in a savepoint) and the turn goes on;
        `checked` says it can only raise before its first write, and so runs bare: a submit's
        savepoint would cost a third of the loop's throughput."""
        fut: Future[T] = Future()
        if (why := self.degraded.of("store")) is not None:
            fut.set_exception(Unavailable(f"the store is unavailable ({why}); try again shortly"))
        elif self.standby:
            fut.set_exception(Unavailable(f"this server stands by; {self.leader()}"))
        else:
            self._inbox.put(_Command(run, fut, checked))
        return fut

    def leader(self) -> str:
        """Which server leads, in words, for a client that reached a standby."""
        try:
            found = self.leadership.leader() if self.leadership is not None else None
        except Exception:  # noqa: BLE001 - the store is down: no one can tell
            found = None
        return "no server leads yet" if found is None else f"the leader is {found[0]} at {found[1] or '?'}"

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def set_quotas(self, now: float) -> None:
        """Follow the contracts in force: a contract began, ended or changed."""
        if (guarantees := self.billing.changed(now)) is not None:
            self.sched.set_quotas(guarantees)

    # -- the loop -----------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._halt.is_set():
            commands = self._take()
            started = time.perf_counter()
            try:
                self._turn(commands)
            except Exception as e:  # the store failed, or the lead was lost: nothing of this turn happened
                if isinstance(e, LostLeadership):
                    log.warning("another server took the lead: standing by")
                    self.standby = True
                else:
                    log.exception("controller turn failed")
                    self.degraded.fail("store", f"{type(e).__name__}: {e}")
                for c in commands:
                    if not c.future.done():
                        c.future.set_exception(Unavailable(f"the turn was not committed ({type(e).__name__}: {e}); "
                                                           "try again"))
                self._after.clear()
                self._ends.clear()
                self._lead()
            self.metrics.turn_seconds.observe(time.perf_counter() - started)

    def _lead(self) -> None:
        """Take (or take back) the lead once the store answers, and rebuild the core's state from it
        as a restart does. A standby waits here, polling for the lead."""
        tries = 0
        while not self._halt.is_set():
            try:
                if self.leadership is not None and not self.leadership.try_lead():
                    self.standby = True
                    self.degraded.ok("store")  # it answered: another server leads
                    self._halt.wait(self.leadership.poll_s)
                    continue
                self._reset()
                recover(self)
            except Exception as e:  # noqa: BLE001 - the store still fails: wait and try again
                self.degraded.fail("store", f"{type(e).__name__}: {e}")
                self._halt.wait(RETRY_STORE_S[min(tries, len(RETRY_STORE_S) - 1)])
                tries += 1
                continue
            if self.degraded.of("store") is not None or self.standby:
                log.warning("leading: state rebuilt from the store")
            self.standby = False
            self.degraded.ok("store")
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
        results: list[tuple[_Command, Any, NeocloudError | None]] = []
        tasks: list[Task] = []
        launching: dict[int, Launching] = {}
        self.watcher.stalled()
        with self.sessions.begin() as s:
            if self.leadership is not None:
                self.leadership.fence(s)
            for c in commands:
                results.append(self._command(s, c, now))
            while not self._launch_failed.empty():
                job_id, attempt, why = self._launch_failed.get()
                row = records.row(s, job_id)
                if row is None or row.state != "RUNNING" or row.attempts != attempt:
                    continue
                if str(job_id) in self.schedule.running:  # a check: dropped, planned again later
                    self.checks.ended(s, row, None, now)
                    self.jobs.settle(s, row, "CANCELLED", None, f"could not start: {why}", now)
                else:
                    self.jobs.launch_failed(s, row, why, now)
            self.jobs.retry_due(now)
            self._store_runs(s)
            if (answer := self.watcher.take_drained()) is not None:
                self.failures.carry(s, self.nodes.follow_engine(s, *answer, now), now, tell_engine=False)
            if now - self._metered_at >= FLUSH_S:
                self._metered_at = now
                self.metering.flush(s)
            if now - self._synced_at >= SYNC_S:
                self._synced_at = now
                self.set_quotas(now)
                tasks.extend(self.checks.start_due(s, now))
            exits = self.watcher.take_exits()
            records.load(s, [e.job_id for e in exits])
            for ended in exits:
                self._ended(s, ended, now)
            while news := self.sched.news(now):  # gates and time limits, as the core decided
                batch.carry(s, self.jobs, news, now)
            self.services.reconcile(s, now)
            decisions = self.sched.decisions
            actions = self.sched.schedule(now)
            records.load(s, [int(a.job_id) for a in actions])
            for action in actions:
                if isinstance(action, Launch):
                    tasks.append(self.jobs.launched(s, action, now))
                    if self.tracker is not None and (row := records.row(s, tasks[-1].job_id)) is not None:
                        launching[row.id] = launching_of(row)
                elif isinstance(action, Preempt):
                    self._preempted(s, action, now)
            self.metrics.decisions.inc(self.sched.decisions - decisions)
            records.write(s)
        for c, value, error in results:
            if error is None:
                c.future.set_result(value)
            else:
                c.future.set_exception(error)
        if tasks:
            self._after.append(lambda: self._launch(tasks, launching))
        for call in self._after:  # stops come before launches: they were booked first
            self._carrier.submit(call)
        self._after.clear()
        if self._ends:
            assert self.tracker is not None
            self.tracker.ended(self._ends)
            self._ends = []
        self.forecasts.after_turn(self.sched, now)

    def _command(self, s: Session, c: _Command, now: float) -> tuple[_Command, Any, NeocloudError | None]:
        """Run one command in a savepoint: if it raises, what it wrote is undone, the turn goes on."""
        mark, booked, ends = records.mark(s), len(self._after), len(self._ends)
        try:
            if c.checked:
                return c, c.run(s, now), None
            with s.begin_nested():
                return c, c.run(s, now), None
        except NeocloudError as e:
            records.undo(s, mark)
            del self._after[booked:]
            del self._ends[ends:]
            return c, None, e

    def _launch(self, tasks: list[Task], launching: dict[int, Launching]) -> None:
        attempts = {t.job_id: t.attempt for t in tasks}
        try:
            if self.tracker is not None and launching:
                tasks = self.tracker.prepare(tasks, launching)
            failed = self.backend.launch(tasks)
        except Exception as e:  # noqa: BLE001 - whatever broke, these jobs did not start
            log.exception("launch failed")
            failed = [(t.job_id, f"{type(e).__name__}: {e}") for t in tasks]
        for job_id, why in failed:
            self._launch_failed.put((job_id, attempts[job_id], why))

    # -- tracking ---------------------------------------------------------------------------------
    def _store_runs(self, s: Session) -> None:
        """Keep each run the tracker made for a job, for the job's later attempts."""
        if self.tracker is None:
            return
        while not self.tracker.made.empty():
            job_id, run = self.tracker.made.get()
            if (row := records.row(s, job_id)) is not None:
                row.tracking_run = run

    def _attempt_ended(self, row: JobRow, final: bool, why: str, now: float) -> None:
        assert self.tracker is not None
        if row.service_id is None and (row.tracking_run is not None or self.tracker.tracks(row.id)):
            self._ends.append(ended_of(row, final, why, now))

    # -- what actions and backend news do to the store ----------------------------------------
    def _ended(self, s: Session, ended: Exit, now: float) -> None:
        if ended.lost:
            self._lost(s, ended, now)
        row = self.jobs.ended(s, ended, now)
        if row is not None and (moved := self.checks.ended(s, row, ended, now)) is not None:
            self.failures.carry(s, moved, now)

    def _lost(self, s: Session, ended: Exit, now: float) -> None:
        """An attempt the backend lost with its node or engine, though no one stopped it: requeued
        as after a node failure (as recovery requeues an attempt it finds gone); `jobs.ended` then
        sees the attempt as one being stopped."""
        key = str(ended.job_id)
        if self.jobs.stopping.get(key) == ended.attempt or key in self.schedule.running:
            return
        row = records.row(s, ended.job_id)
        if row is None or row.state != "RUNNING" or row.attempts != ended.attempt or row.cancel_requested:
            return
        self.failures.interrupt(s, row, f"its attempt was lost with the {self.backend.name} engine", now, None)

    def _preempted(self, s: Session, action: Preempt, now: float) -> None:
        row = records.row(s, int(action.job_id))
        assert row is not None, action
        if action.job_id in self.schedule.running:  # a check yields to work, and is not requeued
            self.jobs.stop(row)
            self.checks.ended(s, row, None, now)
            self.jobs.settle(s, row, "CANCELLED", None, "preempted: the node is wanted for work", now)
        else:
            self.jobs.preempted(s, row, action, now)
