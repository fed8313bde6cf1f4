"""Services in real time: each one's replicas are jobs the scheduler places as any other (at the
tenant's priority, requeued elsewhere when their node fails), started and drained as the core's
rollout plan says (serve/rollout.py), and published to the gateway through `Endpoints`.

A replica leaves in two steps: out of the gateway's rotation first, then, once the requests it
carries are answered (or after DRAIN_S), stopped. One that fails is replaced after a pause that
doubles with each failure in a row (CrashLoopBackOff's), so a broken spec does not spin.

A spec may wait on jobs (`depends_on`, as a job's): its generation's replicas are held by the
core's gates until those jobs end as it says (a model served once the job training it completes),
the earlier generation serving meanwhile. One that can never be met stalls the roll there, the
earlier replicas serving on, until the service is updated again."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from neocloud.control import batch, records
from neocloud.control.endpoints import Endpoints
from neocloud.control.jobs import Jobs
from neocloud.serve.autoscale import Autoscaler
from neocloud.serve.rollout import Replica, plan
from neocloud.store.tables import JobRow, ServiceRow

AUTOSCALE_S = 1.0  # between two looks at the autoscaled services' load
DRAIN_S = 30.0  # longest a drained replica is left to finish its requests
BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)  # before replacing a replica that failed, by failures in a row
SERVICE_ONLY = ("kind", "replicas", "autoscale", "readiness", "model")  # not a replica's job spec


def replica_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """A replica's job spec: the service's, less what only the service reads."""
    return {k: v for k, v in spec.items() if k not in SERVICE_ONLY}


def wanted_of(spec: dict[str, Any]) -> int:
    """Replicas a service starts with: its fixed number, or its autoscaler's least."""
    scale = spec.get("autoscale")
    return int(scale["min"]) if scale else int(spec.get("replicas", 1))


@dataclass(slots=True)
class _Service:
    row_id: int
    tenant: str
    name: str
    generation: int
    wanted: int
    running: bool
    replicas: dict[int, int] = field(default_factory=dict)  # job id -> generation, of replicas not ended
    draining: dict[int, float] = field(default_factory=dict)  # job id -> when its drain began
    failures: int = 0  # replicas that failed in a row
    not_before: float = 0.0  # no replacement before this, after a failure
    autoscaler: Autoscaler | None = None
    per_second: bool = False  # its load is requests answered per second, not requests in flight
    served: tuple[float, int] = (0.0, 0)  # (when, requests answered by then), for that rate
    stalled: int = 0  # a generation whose dependencies can never be met: no replica of it is started


class Services:
    def __init__(self, jobs: Jobs, endpoints: Endpoints, new_id: Callable[[], int]) -> None:
        self.jobs, self.endpoints, self.new_id = jobs, endpoints, new_id
        self._services: dict[int, _Service] = {}
        self._of_job: dict[int, int] = {}  # replica's job id -> service id
        self._due: set[int] = set()  # services to plan again this turn
        self._later: set[int] = set()  # and at the next: waiting on time (a drain, a backoff)
        self._next_autoscale = 0.0
        jobs.replica_moved = self.moved

    # -- what the commands change -------------------------------------------------------------
    def add(self, s: Session, tenant: str, spec: dict[str, Any], now: float) -> ServiceRow:
        row = ServiceRow(tenant=tenant, name=spec["name"], spec=spec, generation=1, replicas=wanted_of(spec),
                         state="RUNNING", created_at=now, updated_at=now)
        s.add(row)
        s.flush()  # its id, which its replicas name
        self._follow(row)
        return row

    def update(self, row: ServiceRow, spec: dict[str, Any], now: float) -> None:
        """A new spec: a new generation, to which the replicas roll."""
        row.spec, row.generation, row.updated_at = spec, row.generation + 1, now
        if not spec.get("autoscale"):  # the spec's number again (an autoscaler keeps its own)
            row.replicas = wanted_of(spec)
        svc = self._services[row.id]
        svc.generation, svc.wanted, svc.failures, svc.not_before = row.generation, row.replicas, 0, 0.0
        self._scaling(svc, spec)
        self._publish(row)
        self._due.add(row.id)

    def scale(self, row: ServiceRow, replicas: int, now: float) -> None:
        row.replicas, row.updated_at = replicas, now
        self._services[row.id].wanted = replicas
        self._due.add(row.id)

    def stop(self, row: ServiceRow, now: float) -> None:
        row.state, row.replicas, row.updated_at = "STOPPED", 0, now
        svc = self._services[row.id]
        svc.wanted, svc.running = 0, False
        self._due.add(row.id)

    def get(self, s: Session, tenant: str, name: str) -> ServiceRow | None:
        return s.scalars(select(ServiceRow).where(ServiceRow.tenant == tenant, ServiceRow.name == name)).first()

    # -- a restart ----------------------------------------------------------------------------
    def load(self, s: Session) -> None:
        """Follow every service not stopped, with its replicas not ended, as the store has them."""
        for row in s.scalars(select(ServiceRow).where(ServiceRow.state == "RUNNING")):
            self._follow(row)
        for job in s.scalars(select(JobRow).where(JobRow.service_id.is_not(None),
                                                  JobRow.state.in_(("PENDING", "RUNNING")))):
            if job.service_id in self._services:
                self._add_replica(job)
        self._due.update(self._services)

    def _follow(self, row: ServiceRow) -> None:
        svc = self._services[row.id] = _Service(row.id, row.tenant, row.name, row.generation, row.replicas,
                                                row.state == "RUNNING")
        self._scaling(svc, row.spec)
        self._publish(row)
        self._due.add(row.id)

    def _scaling(self, svc: _Service, spec: dict[str, Any]) -> None:
        scale = spec.get("autoscale")
        svc.autoscaler = None if scale is None else Autoscaler(scale["min"], scale["max"], scale["target"],
                                                               scale.get("cooldown", 30.0))
        svc.per_second = bool(scale and scale.get("metric") == "rps")

    def _publish(self, row: ServiceRow) -> None:
        readiness = (row.spec.get("readiness") or {}).get("path", "/")
        scale = row.spec.get("autoscale")
        self.endpoints.set_service(row.id, row.tenant, row.name, readiness, bool(scale and scale["min"] == 0),
                                   row.spec.get("model") or row.name)

    def _add_replica(self, job: JobRow) -> None:
        assert job.service_id is not None and job.generation is not None
        self._services[job.service_id].replicas[job.id] = job.generation
        self._of_job[job.id] = job.service_id
        self.endpoints.set_replica(job.service_id, job.id, job.generation,
                                   job.address if job.state == "RUNNING" else None)

    # -- what the jobs' moves tell --------------------------------------------------------------
    def moved(self, row: JobRow, now: float) -> None:
        """A replica's job started, was requeued or ended (`Jobs` calls this for every replica)."""
        service_id = self._of_job.get(row.id)
        if service_id is None:
            return
        svc = self._services[service_id]
        if row.state in ("PENDING", "RUNNING"):
            self.endpoints.set_replica(service_id, row.id, svc.replicas[row.id],
                                       row.address if row.state == "RUNNING" else None)
        else:
            del self._of_job[row.id]
            svc.replicas.pop(row.id, None)
            drained = svc.draining.pop(row.id, None) is not None
            self.endpoints.drop_replica(service_id, row.id)
            if row.state == "FAILED" and not row.attempts and row.spec.get("depends_on"):
                svc.stalled = row.generation or 0  # its gate said: never
            elif row.state == "FAILED" and not drained:
                svc.failures += 1
                svc.not_before = now + BACKOFF_S[min(svc.failures, len(BACKOFF_S)) - 1]
        self._due.add(service_id)

    # -- each turn ----------------------------------------------------------------------------
    def reconcile(self, s: Session, now: float) -> None:
        """Plan again the services something changed for: start, drain and stop replicas; each
        AUTOSCALE_S, scale the autoscaled to their load."""
        due = self._due | self._later | self.endpoints.take_changed()
        self._due, self._later = set(), set()
        if now >= self._next_autoscale:
            self._next_autoscale = now + AUTOSCALE_S
            for svc in self._services.values():
                if svc.autoscaler is not None and svc.running and self._autoscale(s, svc, now):
                    due.add(svc.row_id)
        for service_id in due:
            if (found := self._services.get(service_id)) is not None:
                self._reconcile(s, found, now)

    def _autoscale(self, s: Session, svc: _Service, now: float) -> bool:
        """Set the replicas the load calls for; say whether that changed them."""
        assert svc.autoscaler is not None
        in_flight, waiting, served = self.endpoints.load(svc.row_id)
        if svc.per_second:
            since, before = svc.served
            svc.served = (now, served)
            load = max((served - before) / (now - since) if now > since else 0.0, float(waiting > 0))
        else:
            load = in_flight + waiting
        ready = sum(e.ready and e.generation == svc.generation for e in self.endpoints.replicas(svc.row_id))
        wanted = svc.autoscaler.wanted(now, load, ready)
        if wanted == svc.wanted:
            return False
        svc.wanted = wanted
        row = s.get(ServiceRow, svc.row_id)
        if row is not None:
            row.replicas = wanted
        return True

    def _reconcile(self, s: Session, svc: _Service, now: float) -> None:
        if self.endpoints.take_woken(svc.row_id) and svc.running and svc.autoscaler is not None:
            self._autoscale(s, svc, now)  # a request waits at the gateway of a service scaled to zero
        seen = {e.job_id: e for e in self.endpoints.replicas(svc.row_id)}
        if any(e.ready for e in seen.values()):
            svc.failures = 0
        staying = [Replica(job_id, gen, seen[job_id].ready if job_id in seen else False)
                   for job_id, gen in svc.replicas.items() if job_id not in svc.draining]
        todo = plan(svc.wanted, svc.generation, staying)
        for job_id in todo.drain:
            self._drain(s, svc, job_id, now)
        self._finish_drains(s, svc, seen, now)
        if svc.stalled == svc.generation:
            pass
        elif todo.start and now < svc.not_before:
            self._due_later(svc)
        else:
            for _ in range(todo.start):
                self._start(s, svc, now)
        if not svc.running and not svc.replicas:
            self.endpoints.drop_service(svc.row_id)
            del self._services[svc.row_id]

    def _start(self, s: Session, svc: _Service, now: float) -> None:
        row = s.get(ServiceRow, svc.row_id)
        assert row is not None
        deps, ended = batch.dependencies(s, svc.tenant, row.spec)
        job = self.jobs.add(s, self.new_id(), svc.tenant, replica_spec(row.spec), now, service_id=svc.row_id,
                            generation=svc.generation, depends_on=deps, ended=ended,
                            what=f"replica of service {svc.name}, generation {svc.generation}")
        self._add_replica(job)

    def _drain(self, s: Session, svc: _Service, job_id: int, now: float) -> None:
        job = records.row(s, job_id)
        if job is None:
            return
        if job.state == "PENDING":  # never served: no request to wait for
            self.jobs.settle(s, job, "CANCELLED", None, "not needed by its service", now)
            return
        svc.draining[job_id] = now
        self.endpoints.drain(svc.row_id, job_id)
        records.event(s, job_id, now, "draining", "out of the gateway's rotation; stopped once its requests end")

    def _finish_drains(self, s: Session, svc: _Service, seen: dict[int, Any], now: float) -> None:
        for job_id, since in list(svc.draining.items()):
            ep = seen.get(job_id)
            if ep is not None and ep.in_flight and now - since < DRAIN_S:
                self._due_later(svc)
                continue
            job = records.row(s, job_id)
            if job is not None and job.state == "RUNNING" and not job.cancel_requested:
                job.cancel_requested = True
                records.event(s, job_id, now, "cancel-requested", "drained")
                self.jobs.stop(job)

    def _due_later(self, svc: _Service) -> None:
        self._later.add(svc.row_id)
