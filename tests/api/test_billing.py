"""Contracts, quotas, metering and invoices over the running server."""

from __future__ import annotations

import csv
import datetime as dt
import io
import time
from decimal import ROUND_HALF_UP, Decimal

from tests.api.conftest import ADMIN, Server, wait_for
from tests.cli.test_cli import neocloud

HOUR = 3600


def _contract(c, tenant: str, gpus: int, **extra) -> dict:  # noqa: ANN001
    now = time.time()
    return c.http.post("/v1/contracts", json={"tenant": tenant, "gpu_type": "H100", "gpus": gpus, "start": now - HOUR,
                                              "end": now + 365 * 86400, "price_per_gpu_hour": "2.50", **extra}).json()


def _state(c, job_id: int) -> str:  # noqa: ANN001
    return c.job(job_id)["state"]


def test_an_owner_takes_its_reserved_gpus_back_from_borrowers_in_one_pass(server: Server) -> None:
    c = server.client()
    for t in ("owner", "lab"):
        c.create_tenant(t)
    _contract(c, "owner", 16)  # the whole fleet is guaranteed to `owner`: anyone else only borrows it
    borrowed = [c.submit({"name": f"b{i}", "gpus": 8, "tenant": "lab", "command": "sleep 300"}) for i in range(2)]
    for j in borrowed:
        wait_for(lambda j=j: _state(c, j["id"]) == "RUNNING")
    mine = c.submit({"name": "mine", "gpus": 16, "gpus_per_node": 8, "tenant": "owner", "command": "sleep 300"})
    wait_for(lambda: _state(c, mine["id"]) == "RUNNING")
    started = next(e for e in c.events(mine["id"]) if e["kind"] == "started")["at"]
    for j in borrowed:
        requeued = next(e for e in c.events(j["id"]) if e["kind"] == "requeued")
        assert "quota: owner takes back its guarantee" in requeued["message"]
        assert requeued["at"] == started  # the same scheduling pass
        assert _state(c, j["id"]) == "PENDING"  # and they stay out while the owner holds its guarantee
    c.cancel(mine["id"])
    for j in borrowed:
        wait_for(lambda j=j: _state(c, j["id"]) == "RUNNING", timeout=30)  # idle again: lent again
        c.cancel(j["id"])


def test_spot_is_taken_back_first(server: Server) -> None:
    c = server.client()
    for t in ("owner", "lab", "cheap"):
        c.create_tenant(t)
    _contract(c, "owner", 8)
    od = c.submit({"name": "od", "gpus": 8, "tenant": "lab", "command": "sleep 300"})
    spot = c.submit({"name": "spot", "gpus": 8, "tenant": "cheap", "priority": "spot", "command": "sleep 300"})
    for j in (od, spot):
        wait_for(lambda j=j: _state(c, j["id"]) == "RUNNING")
    mine = c.submit({"name": "mine", "gpus": 8, "tenant": "owner", "command": "sleep 300"})
    wait_for(lambda: _state(c, mine["id"]) == "RUNNING")
    assert _state(c, spot["id"]) == "PENDING" and _state(c, od["id"]) == "RUNNING"
    for j in (od, spot, mine):
        c.cancel(j["id"])


def _money(x: Decimal) -> Decimal:
    return x.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def test_an_invoice_matches_a_hand_computation_and_survives_a_restart(server: Server) -> None:
    c = server.client()
    c.create_tenant("acme")
    for cls, price in (("on-demand", "3600"), ("spot", "1800")):  # $1 and $0.50 a GPU-second: cents show
        c.http.put("/v1/prices", json={"gpu_type": "H100", "usage_class": cls, "price_per_gpu_hour": price})
    now = dt.datetime.now(dt.UTC)
    first = dt.datetime(now.year, now.month, 1, tzinfo=dt.UTC)
    nxt = dt.datetime(now.year + (now.month == 12), now.month % 12 + 1, 1, tzinfo=dt.UTC)
    period = first.strftime("%Y-%m")
    c.http.post("/v1/contracts", json={"tenant": "acme", "gpu_type": "H100", "gpus": 8, "start": first.isoformat(),
                                       "end": nxt.isoformat(), "price_per_gpu_hour": "2.50"})
    within = c.submit({"name": "within", "gpus": 8, "tenant": "acme", "command": "sleep 3"})
    wait_for(lambda: _state(c, within["id"]) == "RUNNING")
    beyond = c.submit({"name": "beyond", "gpus": 8, "tenant": "acme", "command": "sleep 1"})
    c.wait(beyond["id"], timeout=30)
    c.wait(within["id"], timeout=30)
    spot = c.submit({"name": "spot", "gpus": 4, "tenant": "acme", "priority": "spot", "command": "sleep 1"})
    c.wait(spot["id"], timeout=30)

    usage = c.http.get("/v1/usage", params={"month": period, "tenant": "acme"}).json()
    by_class = {u["usage_class"]: u for u in usage}
    assert set(by_class) == {"reserved", "on-demand", "spot"} and len(usage) == 3

    def gpu_hours(u: dict) -> Decimal:
        return Decimal(str(u["gpus"])) * Decimal(round((u["end"] - u["start"]) * 1000)) / 1000 / HOUR

    commitment = _money(Decimal(8) * Decimal(int((nxt - first).total_seconds())) / HOUR * Decimal("2.50"))
    on_demand = _money(gpu_hours(by_class["on-demand"]) * 3600)
    spot_amount = _money(gpu_hours(by_class["spot"]) * 1800)
    bill = c.http.get("/v1/invoices/acme", params={"month": period}).json()
    amounts = {line["kind"]: Decimal(line["amount"]) for line in bill["lines"]}
    assert amounts == {"reserved commitment": commitment, "reserved usage (covered by the commitment)": Decimal(0),
                       "on-demand usage": on_demand, "spot usage": spot_amount}
    assert Decimal(bill["total"]) == commitment + on_demand + spot_amount
    assert on_demand > Decimal("8.00") and spot_amount > Decimal("2.00")  # real seconds, real cents

    revenue = c.http.get("/v1/revenue", params={"month": period}).json()
    assert Decimal(revenue["tenants"]["acme"]) == Decimal(bill["total"]) == Decimal(revenue["total"])

    server.kill9()
    server.start()
    again = server.client().http.get("/v1/invoices/acme", params={"month": period}).json()
    assert again == bill
    rows = list(csv.reader(io.StringIO(server.client().http.get("/v1/invoices/acme", params={
        "month": period, "format": "csv"}).text)))
    assert rows[0][0] == "kind" and rows[-1] == ["total", "", "", "", "", bill["total"]]
    page = server.client().http.get("/v1/invoices/acme", params={"month": period, "format": "html"}).text
    assert "<h1>Invoice: acme</h1>" in page and bill["total"] in page
    common = ("--server", server.url, "--token", ADMIN)
    table = neocloud("invoice", "acme", "--month", period, *common)
    assert table.returncode == 0 and f"${float(bill['total']):,.2f}" in table.stdout, table.stderr
    assert neocloud("invoice", "acme", "--month", period, "--format", "csv", *common).stdout.splitlines()[-1] == \
        f"total,,,,,{bill['total']}"
    assert f"${float(bill['total']):,.2f}" in neocloud("revenue", "--month", period, *common).stdout
    bad = neocloud("invoice", "acme", "--month", "2026-13", *common)
    assert bad.returncode == 2 and "is not a month" in bad.stderr


def test_contracts_keep_their_history_and_bad_terms_are_refused(server: Server) -> None:
    c = server.client()
    for t in ("big", "small"):
        c.create_tenant(t)
    small = _contract(c, "small", 2)
    assert small["warning"] is not None  # the only contract: 100% of the backlog
    big = _contract(c, "big", 14)
    assert "big now holds" in big["warning"] and "30% concentration limit" in big["warning"]
    amended = c.http.post(f"/v1/contracts/{small['contract']}/amend", json={"gpus": 4, "note": "expansion"}).json()
    assert (amended["version"], amended["gpus"]) == (2, 4)
    ended = c.http.post(f"/v1/contracts/{small['contract']}/terminate", json={}).json()
    assert ended["version"] == 3 and ended["end"] <= time.time() + 1 and ended["note"] == "terminated early"
    history = c.http.get("/v1/contracts", params={"history": "true"}).json()
    versions = [(h["version"], h["gpus"], h["valid_to"] is None) for h in history if h["contract"] == small["contract"]]
    assert versions == [(1, 2, False), (2, 4, False), (3, 4, True)]
    assert [h["contract"] for h in c.http.get("/v1/contracts").json()] == [small["contract"], big["contract"]]
    for body, status, words in (
        ({"tenant": "big", "gpu_type": "H100", "gpus": 1, "start": "2027-01-01", "end": "2026-01-01",
          "price_per_gpu_hour": 1}, 422, "end after it starts"),
        ({"tenant": "big", "gpu_type": "X9", "gpus": 1, "start": 0, "end": 10, "price_per_gpu_hour": 1}, 422,
         "unknown GPU type"),
        ({"tenant": "big", "gpu_type": "H100", "gpus": 1, "start": "soon", "end": 10, "price_per_gpu_hour": 1}, 422,
         "is not a time"),
        ({"tenant": "big", "gpu_type": "H100", "gpus": 1, "start": 0, "end": 10, "price_per_gpu_hour": -1}, 422,
         "price_per_gpu_hour"),
        ({"tenant": "ghost", "gpu_type": "H100", "gpus": 1, "start": 0, "end": 10, "price_per_gpu_hour": 1}, 404,
         "no tenant"),
    ):
        r = c.http.post("/v1/contracts", json=body)
        assert r.status_code == status and words in r.text, r.text
    tenant = server.client(c.create_token("small"))
    refused = tenant.http.post("/v1/contracts", json={"tenant": "small", "gpu_type": "H100", "gpus": 1, "start": 0,
                                                      "end": 9, "price_per_gpu_hour": 1})
    assert refused.status_code == 403
    assert [h["tenant"] for h in tenant.http.get("/v1/contracts").json()] == ["small"]
    assert tenant.http.get("/v1/invoices/big", params={"month": "2026-11"}).status_code == 404
    assert c.http.get("/v1/invoices/big", params={"month": "11/2026"}).status_code == 400


def test_a_failure_under_a_guaranteed_job_is_credited_back_at_the_contract_price(server: Server) -> None:
    c = server.client()
    c.create_tenant("acme")
    now = dt.datetime.now(dt.UTC)
    period = now.strftime("%Y-%m")
    c.http.post("/v1/contracts", json={"tenant": "acme", "gpu_type": "H100", "gpus": 8, "start": time.time() - HOUR,
                                       "end": time.time() + 30 * 86400, "price_per_gpu_hour": "7200"})  # $2/GPU-s
    job = c.submit({"name": "train", "gpus": 8, "tenant": "acme", "restart_cost": "30s", "command": "sleep 300"})
    wait_for(lambda: _state(c, job["id"]) == "RUNNING")
    node = c.job(job["id"])["placement"][0]["node"]
    c.signal(node, {"kind": "xid", "code": 79, "observed_at": time.time() - 5})
    (credit,) = c.http.get("/v1/credits", params={"month": period}).json()
    assert credit["tenant"] == "acme" and "code=79" in credit["reason"]
    hours = Decimal(str(credit["gpu_hours"]))
    assert hours >= Decimal(8 * 30) / HOUR  # the declared restart at least, on all eight GPUs
    bill = c.http.get("/v1/invoices/acme", params={"month": period}).json()
    line = next(x for x in bill["lines"] if x["kind"].startswith("SLA credit"))
    assert Decimal(line["amount"]) == -_money(hours * 7200)
    c.cancel(job["id"])
