"""The commands the API and CLI send the controller. Each runs inside one turn of its loop, against
the core's state and the turn's transaction, and its future resolves once that turn is committed.
A command that raises has what it wrote rolled back (it runs in a savepoint); the busiest ones
check everything before they write, and say so (`checked`), to run without one."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from concurrent.futures import Future
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from neocloud.backends.base import Backend
from neocloud.control import batch, records
from neocloud.control.billing import Billing
from neocloud.control.failures import Failures
from neocloud.control.forecasts import DRY_RUN, Base, Forecasts
from neocloud.control.jobs import Jobs, job_of
from neocloud.control.metrics import Metrics
from neocloud.control.nodes import Nodes
from neocloud.control.services import Services, replica_spec
from neocloud.errors import NeocloudError
from neocloud.model.job import SYSTEM, Job
from neocloud.model.lifecycle import LifecycleError, Stage, stage
from neocloud.sched.arrays import parse_array
from neocloud.sched.scheduler import Scheduler
from neocloud.store.tables import ContractRow, JobRow, PriceRow, ServiceRow, Tenant, Token

T = TypeVar("T")
MAX_KEYS = 100  # live service keys a tenant may hold: each is kept in memory
NODE_ACTIONS = {"cordon": Stage.CORDONED, "drain": Stage.DRAINING, "uncordon": Stage.PRODUCTION}


class NotFound(NeocloudError):
    """The thing asked for does not exist (or belongs to another tenant)."""


class Conflict(NeocloudError):
    """The request clashes with what exists (a tenant name taken, a job already ended)."""


class Refused(NeocloudError):
    """Allowed to nobody in this caller's place (a tenant the backend cannot keep apart from another)."""


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Commands:
    # What the controller holds (see controller.py), as the commands use it.
    sched: Scheduler
    forecasts: Forecasts
    jobs: Jobs
    nodes: Nodes
    services: Services
    failures: Failures
    billing: Billing
    metrics: Metrics
    backend: Backend
    node_ids: dict[str, int]
    tenants: set[str]
    tokens: dict[str, str]  # digest -> tenant, of tokens not revoked
    token_expiry: dict[str, float]  # digest -> when it stops working, of tokens that expire
    key_scope: dict[str, str]  # digest -> the service it calls ('*': any), of service keys
    only_tenant: str | None
    clock: Callable[[], float]

    def call(self, run: Callable[[Session, float], T], checked: bool = False) -> Future[T]:
        raise NotImplementedError

    def new_id(self) -> int:
        raise NotImplementedError

    def set_quotas(self, now: float) -> None:
        raise NotImplementedError

    def _may_submit(self, tenant: str, spec: dict[str, Any], now: float) -> None:
        if tenant not in self.tenants:
            raise NotFound(f"no tenant {tenant!r}")
        if self.only_tenant not in (None, tenant):
            raise Refused(f"the {self.backend.name} backend cannot keep tenants apart ({self.backend.isolation}), "
                          f"so it serves one tenant, {self.only_tenant!r}: a job of {tenant!r} is refused. Start "
                          "neocloud up with --only-tenant NAME to serve another, or --trust-tenants if they "
                          "trust each other")
        self.sched.check(job_of(spec["name"], tenant, spec, now))  # refused with its name, not an id

    def submit(self, tenant: str, spec: dict[str, Any]) -> Future[JobRow]:
        """Queue a job; an array is one job per task, and the answer is its first task's row, whose id
        is the array's."""
        def run(s: Session, now: float) -> JobRow:
            self._may_submit(tenant, spec, now)
            deps, ended = batch.dependencies(s, tenant, spec)
            indices: tuple[int | None, ...] = (None,)
            if spec.get("array") is not None:
                indices = parse_array(spec["array"]).indices
            first: JobRow | None = None
            for index in indices:
                job_id = self.new_id()
                array_job = None if index is None else (job_id if first is None else first.id)
                row = self.jobs.add(s, job_id, tenant, spec, now, array_job=array_job, array_index=index,
                                    depends_on=deps, ended=ended,
                                    what="" if index is None else f"task {index} of array {array_job}")
                first = first or row
            assert first is not None
            return first

        return self.call(run, checked=True)

    # -- services -----------------------------------------------------------------------------
    def create_service(self, tenant: str, spec: dict[str, Any]) -> Future[ServiceRow]:
        """A service, its replicas queued in the same turn (each a job, checked as a job's spec is)."""
        def run(s: Session, now: float) -> ServiceRow:
            self._may_submit(tenant, replica_spec(spec), now)
            batch.dependencies(s, tenant, spec)  # each job named is the tenant's
            if getattr(self.backend, "service_address", None) is None:
                raise Refused(f"the {self.backend.name} backend runs no services: use the local or slurm backend")
            if self.services.get(s, tenant, spec["name"]) is not None:
                raise Conflict(f"service {spec['name']!r} exists: update it (PUT /v1/services/{spec['name']}), "
                               "or choose another name")
            return self.services.add(s, tenant, spec, now)

        return self.call(run)

    def change_service(self, tenant: str, name: str, how: str, value: Any) -> Future[ServiceRow]:
        """Update (`value`: the new spec), scale (a replica count) or stop a service."""
        def run(s: Session, now: float) -> ServiceRow:
            row = self.services.get(s, tenant, name)
            if row is None or row.state != "RUNNING":
                raise NotFound(f"no service {name!r}" + ("" if row is None else " running: it was stopped"))
            if how == "update":
                self._may_submit(tenant, replica_spec(value), now)
                batch.dependencies(s, tenant, value)
                self.services.update(row, value, now)
            elif how == "scale":
                self.services.scale(row, int(value), now)
            else:
                self.services.stop(row, now)
            return row

        return self.call(run)

    def dry_run(self, tenant: str, spec: dict[str, Any]) -> Future[tuple[Base | float, Job, dict[str, str]]]:
        """A submit's checks, then the snapshot to forecast the job in (off the loop:
        `forecasts.dry_run`), or how long to wait for one, and how the jobs it depends on that are over
        ended. Nothing is written and no id is taken."""
        def run(s: Session, now: float) -> tuple[Base | float, Job, dict[str, str]]:
            self._may_submit(tenant, spec, now)
            deps, ended = batch.dependencies(s, tenant, spec)
            return (self.forecasts.current(self.sched, now), job_of(DRY_RUN, tenant, spec, now, depends_on=deps),
                    ended)

        return self.call(run, checked=True)

    def cancel(self, job_id: int, tenant: str | None) -> Future[JobRow]:
        """Cancel a job; an array's id (its first task's) cancels every task of it still pending or running."""
        def run(s: Session, now: float) -> JobRow:
            row = records.row(s, job_id)
            if row is None or (tenant is not None and row.tenant != tenant):
                raise NotFound(f"no job {job_id}")
            for task in batch.tasks_of(s, row.id) if row.array_job == row.id else [row]:
                if task.state == "PENDING":
                    self.jobs.settle(s, task, "CANCELLED", None, "cancelled while pending", now)
                elif task.state == "RUNNING" and not task.cancel_requested:
                    task.cancel_requested = True
                    records.event(s, task.id, now, "cancel-requested", "stopping its processes")
                    self.jobs.stop(task)
            return row

        return self.call(run, checked=True)

    def set_node(self, name: str, action: str, reason: str) -> Future[str]:
        """The operator's cordon, drain and uncordon: moves to cordoned, draining and production."""
        return self.move_node(name, NODE_ACTIONS[action].value, reason)

    def move_node(self, name: str, to: str, reason: str) -> Future[str]:  # of the node's stage
        if name not in self.node_ids:
            raise NotFound(f"no node {name!r}")
        target = stage(to)

        def run(s: Session, now: float) -> str:
            try:
                self.failures.carry(s, self.nodes.move(s, name, target, reason, now), now)
            except LifecycleError as e:
                raise Conflict(str(e)) from None
            return target.value

        return self.call(run)

    def signal(self, name: str, signal: dict[str, Any], observed_at: float | None) -> Future[dict[str, Any]]:
        """A health signal about a node: recorded, judged by the rules, acted on."""
        if name not in self.node_ids:
            raise NotFound(f"no node {name!r}")

        def run(s: Session, now: float) -> dict[str, Any]:
            rule, moved = self.nodes.signal(s, name, signal, observed_at if observed_at is not None else now, now)
            self.failures.carry(s, moved, now)
            return {"node": name, "rule": f"{rule.kind}: {rule.when}", "action": rule.action.value,
                    "stage": self.nodes.stage[name].value, "interrupted": sorted(int(j) for j in moved.interrupted)}

        return self.call(run)

    def create_contract(self, terms: dict[str, Any]) -> Future[ContractRow]:
        def run(s: Session, now: float) -> ContractRow:
            if terms["tenant"] not in self.tenants:
                raise NotFound(f"no tenant {terms['tenant']!r}")
            row = self.billing.add(s, dict(terms), now)
            self.set_quotas(now)
            return row

        return self.call(run)

    def amend_contract(self, number: int, changes: dict[str, Any], note: str) -> Future[ContractRow]:
        def run(s: Session, now: float) -> ContractRow:
            row = self.billing.amend(s, number, changes, note, now)
            if row is None:
                raise NotFound(f"no contract {number} in force")
            self.set_quotas(now)
            return row

        return self.call(run)

    def set_price(self, gpu_type: str, usage_class: str, price: Decimal) -> Future[PriceRow]:
        def run(s: Session, now: float) -> PriceRow:
            row = PriceRow(gpu_type=gpu_type, usage_class=usage_class, price=price, since=now)
            s.add(row)
            return row

        return self.call(run)

    def create_tenant(self, name: str) -> Future[Tenant]:
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

    def create_token(self, tenant: str, label: str, expires_in: float | None = None,
                     service: str | None = None) -> Future[tuple[str, Token]]:
        """A new token for the tenant, or with `service` a service key (for that service, '*': for
        any of the tenant's) that only the gateway takes: the secret is returned once, only its digest
        is kept."""
        token = ("nck_" if service is not None else "nct_") + secrets.token_urlsafe(32)

        def run(s: Session, now: float) -> tuple[str, Token]:
            if tenant not in self.tenants:
                raise NotFound(f"no tenant {tenant!r}")
            if service is not None and (s.scalar(select(func.count()).select_from(Token).where(
                    Token.tenant == tenant, Token.service.is_not(None), Token.revoked_at.is_(None),
                    or_(Token.expires_at.is_(None), Token.expires_at > now))) or 0) >= MAX_KEYS:
                raise Conflict(f"tenant {tenant!r} has {MAX_KEYS} live service keys, the most it may: revoke "
                               "some (`neocloud services keys revoke ID`)")
            d = digest(token)
            row = Token(tenant=tenant, digest=d, label=label, created_at=now, service=service,
                        expires_at=None if expires_in is None else now + expires_in)
            s.add(row)
            if row.expires_at is not None:
                self.token_expiry[d] = row.expires_at
            if service is not None:
                self.key_scope[d] = service
            self.tokens[d] = tenant
            return token, row

        return self.call(run)

    def revoke_token(self, token_id: int, tenant: str | None, key: bool | None = None) -> Future[Token]:
        """Revoke a token (the admin's any, a tenant's only its own; `key` True: only a service key,
        False: only an API token): refused from this turn on."""
        def run(s: Session, now: float) -> Token:
            row = s.get(Token, token_id)
            if row is None or (tenant is not None and row.tenant != tenant) or \
                    (key is not None and key != (row.service is not None)):
                raise NotFound(f"no {'service key' if key else 'token'} {token_id}")
            if row.revoked_at is None:
                row.revoked_at = now
            self.tokens.pop(row.digest, None)
            self.token_expiry.pop(row.digest, None)
            self.key_scope.pop(row.digest, None)
            return row

        return self.call(run)

    def tenant_of(self, token_digest: str, service: str | None = None) -> str | None:
        """The tenant whose token has this digest, unless it was revoked or has expired (by the
        controller's clock, at each call: an expired token is refused at once). A service key
        holds only for a call to its service (`service`, at the gateway), never for the API."""
        tenant = self.tokens.get(token_digest)
        if tenant is None:
            return None
        scope = self.key_scope.get(token_digest)
        if scope is not None and (service is None or scope not in ("*", service)):
            return None
        expires = self.token_expiry.get(token_digest)
        return tenant if expires is None or self.clock() < expires else None

    def is_service_key(self, token_digest: str) -> bool:
        return token_digest in self.key_scope

    def audit(self, entry: dict[str, Any]) -> Future[None]:
        return self.call(lambda s, now: records.audit(s, {"at": now, **entry}), checked=True)

    def view(self, read: Callable[[Scheduler], T]) -> Future[T]:
        """Read the scheduler's state consistently, from inside the loop."""
        return self.call(lambda s, now: read(self.sched), checked=True)
