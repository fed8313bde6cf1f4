"""What a request costs: the SQL statements it runs do not grow with the tenants, jobs and usage
the store holds, and no route does database work or waits on the controller on the event loop.

The service runs in this process (`open_service` and `create_app` behind Starlette's TestClient),
so a listener on its own engine sees every statement and the thread it runs on: the service's own
threads (the controller's turns, the backend watcher) are left out of a request's count, and a
statement on the thread that runs the event loop is a route stalling every other request.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import os
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event

from neocloud.api.schemas import JobSpec
from neocloud.api.server import Service, create_app, open_service
from neocloud.control.controller import digest
from neocloud.model.catalog import gpu_type
from neocloud.store.tables import (
    ContractRow,
    CreditRow,
    HealthSignal,
    JobEvent,
    JobRow,
    NodeEvent,
    NodeRow,
    PriceRow,
    Tenant,
    Token,
    UsageRow,
)
from tests.api.conftest import ADMIN, FLEET, postgres_database

H100 = gpu_type("H100").name
NODES = ("leaf-a-n0", "leaf-a-n1")
SMALL, LARGE = (3, 10), (30, 100)  # (tenants, finished jobs per tenant): N and 10N of each
TRANSACTION = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")


def tenant_token(i: int) -> str:
    return f"nct_cost-{i}"


def this_month() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m")


@dataclass
class Counter:
    """Statements and transactions of requests (not of the service's own threads), and those run
    on a thread that is running an event loop."""

    statements: list[str] = field(default_factory=list)
    transactions: int = 0
    on_loop: list[str] = field(default_factory=list)
    waits_on_loop: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def before_execute(self, conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if threading.current_thread().name.startswith("neocloud-"):
            return
        with self.lock:
            if _loop_running():
                self.on_loop.append(statement)
            if not statement.lstrip().upper().startswith(TRANSACTION):
                self.statements.append(statement)

    def begin(self, conn: Any) -> None:
        if not threading.current_thread().name.startswith("neocloud-"):
            with self.lock:
                self.transactions += 1

    def reset(self) -> None:
        with self.lock:
            self.statements.clear()
            self.transactions = 0


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


@dataclass(frozen=True)
class Cost:
    statements: int
    transactions: int
    ms: float


class App:
    """The service in this process, seeded, its engine's statements counted."""

    def __init__(self, service: Service, client: TestClient, counter: Counter) -> None:
        self.service, self.client, self.counter = service, client, counter

    def call(self, method: str, path: str, token: str = ADMIN, status: int = 200, **kw: Any) -> Any:
        headers = kw.pop("headers", {})
        if not path.startswith("/ui/"):
            headers["Authorization"] = f"Bearer {token}"
        elif method != "GET":
            headers["Origin"] = "http://testserver"
        r = self.client.request(method, path, headers=headers, follow_redirects=False, **kw)
        assert r.status_code == status, (method, path, r.status_code, r.text[:500])
        return r

    def get(self, path: str, token: str = ADMIN, **kw: Any) -> Any:
        return self.call("GET", path, token, **kw).json()

    def cost(self, path: str, token: str = ADMIN, repeat: int = 3) -> Cost:
        """A GET's statements and transactions (the fewest of `repeat`) and its median latency."""
        statements, transactions, times = [], [], []
        for _ in range(repeat):
            self.counter.reset()
            t = time.perf_counter()
            self.call("GET", path, token)
            times.append((time.perf_counter() - t) * 1000)
            statements.append(len(self.counter.statements))
            transactions.append(self.counter.transactions)
        return Cost(min(statements), min(transactions), statistics.median(times))

    def login(self, token: str = ADMIN) -> str:
        """A dashboard session for `token` (the client keeps its cookie); its CSRF token."""
        self.call("POST", "/ui/login", data={"token": token, "next": "/ui/fleet"}, status=303)
        page = self.call("GET", "/ui/jobs").text
        return page.split('name="csrf" value="', 1)[1].split('"', 1)[0]


def seed(service: Service, tenants: int, jobs_per_tenant: int, now: float) -> None:
    """A store as a busy cloud leaves it: tenants with tokens and contracts, finished jobs with
    their events, usage and credits, waiting jobs, prices, node history; both nodes cordoned so
    nothing runs."""
    spec = JobSpec(name="done", command="true", gpus=1, restart_cost=5, checkpoint_interval=60,
                   checkpoint_cost=2).model_dump(mode="json", exclude={"tenant"})
    waiting = JobSpec(name="waits", command="true", gpus=8).model_dump(mode="json", exclude={"tenant"})
    job_id, later = 0, []  # rows that refer to jobs, added once the jobs are
    with service.sessions.begin() as s:
        for node in NODES:
            s.add(NodeRow(name=node, stage="cordoned", spare=False, reason="cost test: run nothing", updated_at=now))
            for k in range(jobs_per_tenant):
                s.add(NodeEvent(node=node, at=now - k, from_stage="production", to_stage="cordoned", reason="test"))
                s.add(HealthSignal(node=node, at=now - k, observed_at=now - k, kind="ecc", payload={"kind": "ecc"},
                                   rule="ecc: test", action="none"))
        for cls, price in (("on-demand", "3.00"), ("spot", "1.00")):
            s.add(PriceRow(gpu_type=H100, usage_class=cls, price=Decimal(price), since=now - 86400 * 60))
        for t in range(tenants):
            name = f"t{t:04d}"
            s.add(Tenant(name=name, created_at=now - 86400))
            s.add(Token(tenant=name, digest=digest(tenant_token(t)), label="cost", created_at=now - 86400))
            s.add(ContractRow(contract=t + 1, version=1, tenant=name, gpu_type=H100, gpus=1, start_at=now - 86400 * 30,
                              end_at=now + 86400 * 365, price=Decimal("2.50"), take_or_pay=t % 2 == 0,
                              valid_from=now - 86400 * 30, valid_to=None, note=""))
            for k in range(jobs_per_tenant):
                job_id += 1
                start = now - 900 - k
                s.add(JobRow(id=job_id, tenant=name, name="done", spec=spec, state="COMPLETED", priority="on-demand",
                             gpus=1.0, submitted_at=start - 30, started_at=start, ended_at=now - 60, run_s=840.0 + k,
                             attempts=2, exit_code=0, reason="", cancel_requested=False, interruptions=1,
                             ledger={"first_start": start, "detection_s": 1.5, "recomputation_s": 3.0,
                                     "queueing_s": 4.0}, usage_class="on-demand"))
                later.append(JobEvent(job_id=job_id, at=start, kind="started", message="on leaf-a-n0"))
                later.append(UsageRow(job_id=job_id, attempt=1, tenant=name, usage_class=("reserved", "on-demand",
                                                                                          "spot")[k % 3],
                                      gpu_type=H100, site="here", gpus=1.0, start_at=start, end_at=now - 60))
                if k % 5 == 0:
                    later.append(CreditRow(tenant=name, job_id=job_id, attempt=1, at=now - 120, gpu_type=H100,
                                           gpu_hours=Decimal("0.01"), reason="node failure"))
            for _ in range(2):
                job_id += 1
                s.add(JobRow(id=job_id, tenant=name, name="waits", spec=waiting, state="PENDING", priority="on-demand",
                             gpus=8.0, submitted_at=now - 10, run_s=0.0, attempts=0, reason="", cancel_requested=False,
                             ledger={}, usage_class=""))
        s.flush()
        s.add_all(later)


@contextmanager
def in_process(tmp: Path, tenants: int, jobs_per_tenant: int, database: str | None = None) -> Iterator[App]:
    """A seeded service in this process, its controller running, its statements counted."""
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "fleet.yaml").write_text(FLEET)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NEOCLOUD_ADMIN_TOKEN", ADMIN)
        mp.delenv("NEOCLOUD_DATABASE_URL", raising=False)
        umask = os.umask(0o022)  # open_service sets the server's own (077): not this test process's to keep
        try:
            service = open_service(tmp / "data", database=database, fleet_path=tmp / "fleet.yaml", sandbox=False,
                                   trust_tenants=True)
        finally:
            os.umask(umask)
    seed(service, tenants, jobs_per_tenant, time.time())
    counter = Counter()
    engine: Engine = service.sessions.kw["bind"]
    event.listen(engine, "before_cursor_execute", counter.before_execute)
    event.listen(engine, "begin", counter.begin)
    real_result = concurrent.futures.Future.result

    def result(future: concurrent.futures.Future, timeout: float | None = None) -> Any:
        if not future.done() and _loop_running():  # a wait that would stall the event loop
            counter.waits_on_loop.append(repr(future))
        return real_result(future, timeout)

    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(concurrent.futures.Future, "result", result)
            with TestClient(create_app(service)) as client:
                yield App(service, client, counter)
    finally:
        event.remove(engine, "before_cursor_execute", counter.before_execute)
        event.remove(engine, "begin", counter.begin)
        service.lock.close()
        engine.dispose()


API_READS = [
    "/v1/jobs", "/v1/jobs?limit=1000", "/v1/jobs/1", "/v1/jobs/1/events", "/v1/jobs/1/goodput", "/v1/goodput",
    "/v1/queue", "/v1/nodes", "/v1/nodes/leaf-a-n0", "/v1/contracts", "/v1/contracts?history=true", "/v1/prices",
    "/v1/usage?month={month}", "/v1/credits?month={month}", "/v1/invoices/t0000?month={month}",
    "/v1/revenue?month={month}", "/v1/backlog", "/v1/tenants", "/v1/tenants/t0000/tokens", "/v1/tokens",
    "/v1/audit", "/v1/health/rules", "/healthz", "/v1/services", "/v1/service-keys",
]
TENANT_READS = ["/v1/jobs", "/v1/services", "/v1/service-keys", "/v1/queue", "/v1/goodput", "/v1/contracts", "/v1/usage?month={month}",
                "/v1/invoices/t0000?month={month}", "/v1/tokens", "/v1/nodes"]
# Statements (not counting BEGIN and COMMIT) a request may run, whatever the store holds.
BUDGET = {"/v1/invoices/t0000?month={month}": 6, "/v1/revenue?month={month}": 6, "/v1/tenants": 3,
          "/v1/usage?month={month}": 2, "/v1/nodes/leaf-a-n0": 2, "/v1/jobs/1/events": 2}


def costs(app: App, paths: list[str], token: str = ADMIN) -> dict[str, Cost]:
    return {p: app.cost(p.format(month=this_month()), token) for p in paths}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest) -> str:
    """The kind of database the module's services keep their state in."""
    return request.param


def database_for(store: str) -> str | None:
    """A database of its own for one service (skipped without a test PostgreSQL): None for SQLite
    in its data directory."""
    return postgres_database() if store == "postgresql" else None


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory, store: str) -> Iterator[App]:
    with in_process(tmp_path_factory.mktemp("small"), *SMALL, database_for(store)) as app:
        yield app


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory, store: str) -> Iterator[App]:
    with in_process(tmp_path_factory.mktemp("large"), *LARGE, database_for(store)) as app:
        yield app


def test_no_request_costs_more_statements_for_a_bigger_store(small: App, large: App) -> None:
    at_n, at_10n = costs(small, API_READS), costs(large, API_READS)
    for path in API_READS:
        assert at_10n[path].statements == at_n[path].statements, (path, at_n[path], at_10n[path])
        assert at_10n[path].statements <= BUDGET.get(path, 1), (path, at_10n[path])
    mine_n = costs(small, TENANT_READS, tenant_token(0))
    mine_10n = costs(large, TENANT_READS, tenant_token(0))
    for path in TENANT_READS:
        assert mine_10n[path].statements == mine_n[path].statements <= BUDGET.get(path, 1), path


def test_no_route_reads_the_store_or_waits_on_the_event_loop(small: App) -> None:
    """Every kind of route, reads and writes, the API's and the dashboard's: not one statement runs
    on the event loop's thread, and no controller future is waited for there."""
    app = small
    app.counter.on_loop.clear()
    app.counter.waits_on_loop.clear()
    month = this_month()
    for path in API_READS:
        app.get(path.format(month=month))
    for path in TENANT_READS:
        app.get(path.format(month=month), tenant_token(0))
    spec = {"name": "w", "command": "true", "gpus": 1, "tenant": "t0001"}
    job = app.call("POST", "/v1/jobs", json=spec, status=201).json()
    app.call("DELETE", f"/v1/jobs/{job['id']}")
    app.call("DELETE", f"/v1/jobs/{job['id'] - 1}", tenant_token(0), status=404)  # another tenant's job
    app.call("POST", "/v1/tenants", json={"name": "fresh"}, status=201)
    token = app.call("POST", "/v1/tenants/fresh/tokens", json={}, status=201).json()
    app.call("DELETE", f"/v1/tokens/{token['id']}")
    now = time.time()
    contract = app.call("POST", "/v1/contracts", json={"tenant": "fresh", "gpu_type": "H100", "gpus": 1,
                                                       "start": now, "end": now + 86400,
                                                       "price_per_gpu_hour": "2.00"}, status=201).json()
    app.call("POST", f"/v1/contracts/{contract['contract']}/amend", json={"gpus": 2})
    app.call("PUT", "/v1/prices", json={"gpu_type": "H100", "usage_class": "spot", "price_per_gpu_hour": "1.10"},
             status=201)
    app.call("POST", "/v1/nodes/leaf-a-n1/signals", json={"kind": "ecc", "correctable": 1}, status=201)
    csrf = app.login()
    for page in ("/ui/fleet", "/ui/nodes/leaf-a-n0", "/ui/jobs", "/ui/jobs?fragment=1", "/ui/jobs/1",
                 "/ui/jobs/1/live", "/ui/performance", "/ui/business"):
        app.call("GET", page)
    form = {"spec": "name: ui\ncommand: 'true'\ngpus: 1\ntenant: t0001\n", "csrf": csrf}
    created = app.call("POST", "/ui/jobs", data=form, status=303)
    app.call("POST", created.headers["location"] + "/cancel", data={"csrf": csrf}, status=303)
    app.call("POST", "/ui/jobs", data={"spec": "name: bad\ngpus: 0.5\n", "csrf": csrf}, status=422)
    assert app.counter.on_loop == []
    assert app.counter.waits_on_loop == []


def test_a_queue_page_asks_only_for_the_jobs_it_shows(small: App) -> None:
    """One controller turn per page, and a reason for waiting worked out only for the jobs shown."""
    controller = small.service.controller
    asked: list[str] = []
    views = 0
    real_view = controller.view

    def view(read: Any) -> Any:
        nonlocal views
        views += 1
        return real_view(read)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(controller, "view", view)
        real_why = controller.sched.why_waiting
        mp.setattr(controller.sched, "why_waiting", lambda job_id: asked.append(job_id) or real_why(job_id))
        queue = small.get("/v1/queue?limit=2&offset=1")
        assert (views, len(asked), [q["position"] for q in queue]) == (1, 2, [2, 3])
        mine = small.get("/v1/queue", tenant_token(1))
        assert {q["tenant"] for q in mine} == {"t0001"} and len(mine) == 2
        assert [q["position"] for q in mine] == sorted(q["position"] for q in mine)
        small.login(tenant_token(1))
        asked.clear()
        views = 0
        page = small.call("GET", "/ui/jobs?fragment=1").text
        assert (views, len(asked)) == (1, 2) and "Queue (2)" in page


def test_lists_come_a_page_at_a_time(small: App) -> None:
    month = this_month()
    first = small.get(f"/v1/usage?month={month}&limit=7")
    assert len(first) == 7
    seen, after = [], (0, 0)
    while page := small.get(f"/v1/usage?month={month}&limit=7&after_job={after[0]}&after_attempt={after[1]}"):
        seen += [(u["job_id"], u["attempt"]) for u in page]
        after = seen[-1]
    assert seen == sorted(set(seen)) and len(seen) == SMALL[0] * SMALL[1]
    tenants = small.get("/v1/tenants?limit=2")
    rest = small.get(f"/v1/tenants?after={tenants[-1]['name']}")
    names = [t["name"] for t in tenants + rest]
    assert names == sorted(names) and {"t0000", "t0001", "t0002"} <= set(names)
    assert all(t["tokens"] == 1 and t["jobs_active"] == 2 for t in tenants + rest if t["name"].startswith("t0"))
    contracts = small.get("/v1/contracts?history=true&limit=2")
    assert [c["contract"] for c in contracts] == [1, 2]
    assert [c["contract"] for c in small.get("/v1/contracts?limit=2&after=2")][:1] == [3]
    events = small.get("/v1/jobs/1/events?limit=1")
    assert len(events) == 1 and small.get(f"/v1/jobs/1/events?after={events[0]['id']}") == []
    credits = small.get(f"/v1/credits?month={month}&limit=1")
    assert small.get(f"/v1/credits?month={month}&after={credits[0]['id']}")[0]["id"] > credits[0]["id"]
    assert len(small.get("/v1/nodes?limit=1&offset=1")) == 1
    assert small.get("/v1/nodes?offset=2") == []
