"""What a dashboard page costs: a fixed, small number of statements however many tenants, jobs and
attempts the store holds (the business page once ran five per tenant), and a performance chart
summed by the database that draws what the attempts held."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from sqlalchemy import delete

from neocloud.api.auth import Principal
from neocloud.store.database import connect, sessions
from neocloud.store.tables import JobRow, UsageRow
from neocloud.web.dashboard import BUCKETS, _allocated, _spread
from tests.api.conftest import ADMIN, database
from tests.api.test_cost import LARGE, App, large, small, store, tenant_token

__all__ = ["database", "large", "small", "store"]  # fixtures, shared with the API's tests
PAGES = {"/ui/fleet": 0, "/ui/nodes/leaf-a-n0": 2, "/ui/jobs": 2, "/ui/jobs?fragment=1": 2, "/ui/jobs/1": 2,
         "/ui/jobs/1/live": 2, "/ui/performance": 2, "/ui/business": 6, "/ui/services": 3}  # page -> statements
TENANT_PAGES = ["/ui/jobs", "/ui/jobs/1", "/ui/performance", "/ui/business", "/ui/fleet", "/ui/services"]


def test_no_page_costs_more_statements_for_a_bigger_store(small: App, large: App) -> None:
    for token, pages in ((ADMIN, list(PAGES)), (tenant_token(0), TENANT_PAGES)):
        at = {}
        for app in (small, large):
            app.login(token)
            at[app] = {page: app.cost(page) for page in pages}
        for page in pages:
            assert at[large][page].statements == at[small][page].statements <= PAGES[page], \
                (token, page, at[small][page], at[large][page])


def test_a_tenants_business_page_shows_its_own_invoice_only(large: App) -> None:
    large.login(tenant_token(3))
    page = large.call("GET", "/ui/business").text
    assert "t0003" in page and "t0004" not in page and "Backlog" not in page
    large.login()
    every = large.call("GET", "/ui/business").text
    assert all(f"t{t:04d}" in every for t in range(LARGE[0])) and "Backlog by customer" in every


def _held(spans: list[tuple[float, float, float]], t0: float, now: float) -> list[float]:
    """Average GPUs held per bucket, span by span (the way the page once drew it)."""
    step = (now - t0) / BUCKETS
    out = [0.0] * BUCKETS
    for gpus, a, b in spans:
        for i in range(BUCKETS):
            lo = t0 + i * step
            out[i] += gpus * max(min(b, lo + step) - max(a, lo), 0.0) / step
    return out


def test_the_chart_sums_in_the_database_what_each_attempt_held(tmp_path: Path, database: str | None) -> None:
    engine = connect(database or f"sqlite:///{tmp_path / 'chart.db'}")
    rng, now = random.Random(3), time.time()
    t0 = now - 6 * 3600
    usage, running = [], []
    for i in range(1, 300):
        a = now - rng.uniform(-600, 8 * 3600)  # some start before the window, a few after it
        b = a + rng.choice([1.0, 30.0, 700.0, 4 * 3600.0])
        usage.append(UsageRow(job_id=i, attempt=1, tenant=rng.choice("xy"), usage_class="on-demand", gpu_type="H100",
                              site="here", gpus=rng.choice([1.0, 8.0]), start_at=a, end_at=b))
    for i in range(300, 320):
        running.append(JobRow(id=i, tenant=rng.choice("xy"), name="r", spec={"command": "true"}, state="RUNNING",
                              priority="on-demand", gpus=4.0, submitted_at=t0,
                              started_at=now - rng.uniform(1, 9 * 3600), run_s=0.0, attempts=1, reason="",
                              cancel_requested=False, ledger={}, usage_class=""))
    with sessions(engine).begin() as s:
        s.execute(delete(UsageRow))
        s.execute(delete(JobRow))
        s.add_all(usage + running)
    step = (now - t0) / BUCKETS
    for who in (Principal(None), Principal("x")):
        with sessions(engine)() as s:
            drawn = _spread(s.execute(_allocated(who, t0, now, step)).all(), step)
        spans = [(u.gpus, u.start_at, min(u.end_at, now)) for u in usage if who.admin or u.tenant == who.tenant]
        spans += [(j.gpus, j.started_at, now) for j in running if who.admin or j.tenant == who.tenant]
        assert drawn == pytest.approx(_held(spans, t0, now), abs=1e-6)
    engine.dispose()
