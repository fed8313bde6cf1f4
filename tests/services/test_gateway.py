"""Services over a real server and real replica processes: created as a job is, reached through
the gateway (balanced, streamed, authenticated per tenant), scaled, rolled and stopped."""

from __future__ import annotations

import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from neocloud.cli.workdir import pack
from neocloud.client import ApiError, Client
from tests.api.conftest import ADMIN, Server, serving, wait_for

REPLICA = Path(__file__).with_name("replica.py")


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(Server(tmp_path_factory.mktemp("services") / "data", None)) as s:
        yield s


@pytest.fixture(scope="module")
def team(srv: Server, tmp_path_factory: pytest.TempPathFactory) -> tuple[Client, str, str]:
    """A tenant with the replica's code uploaded: its client, its token and the code's digest."""
    admin = srv.client()
    admin._call("PUT", "/v1/prices", json={"gpu_type": "H100", "usage_class": "service", "price_per_gpu_hour": "2.00"})
    admin.create_tenant("svc-team")
    token = admin.create_token("svc-team", "test")
    code = tmp_path_factory.mktemp("replica")
    shutil.copy(REPLICA, code / "replica.py")
    client = srv.client(token)
    return client, token, client.upload_code(pack(code))


def _service(name: str, code: str, **more: Any) -> dict[str, Any]:
    return {"kind": "service", "name": name, "gpus": 0.1, "command": "exec python3 replica.py", "code": code,
            "readiness": {"path": "/health"}, **more}


def _ready(c: Client, name: str, n: int, timeout: float = 60) -> dict[str, Any]:
    return wait_for(lambda: (s := c._call("GET", f"/v1/services/{name}"))["ready"] == n
                    and len(s["replica_list"]) == n and s, timeout=timeout)


def _call(srv: Server, token: str, path: str, **kw: Any) -> httpx.Response:
    return httpx.request(kw.pop("method", "GET"), f"{srv.url}/v1/services/svc-team/{path}",
                         headers={"Authorization": f"Bearer {token}"}, timeout=kw.pop("timeout", 30), **kw)


def test_a_service_answers_through_the_gateway_from_each_of_its_replicas(srv: Server, team: tuple) -> None:
    c, token, code = team
    made = c.submit(_service("echo", code, replicas=2))  # POST /v1/jobs, as a job is submitted
    assert made["name"] == "echo" and made["endpoint"] == "/v1/services/svc-team/echo/"
    replicas = {r["job"] for r in _ready(c, "echo", 2)["replica_list"]}
    answers = [_call(srv, token, "echo/some/path?x=1") for _ in range(20)]
    assert all(a.status_code == 200 for a in answers)
    seen = Counter(a.json()["replica"] for a in answers)
    assert set(seen) == replicas and min(seen.values()) >= 5  # both carry the load
    first = answers[0].json()
    assert first["path"] == "/some/path?x=1" and first["auth"] is None  # the caller's token stays at the gateway
    echoed = _call(srv, token, "echo/chat", method="POST", content=b'{"q": "hi"}')
    assert echoed.json()["echo"] == '{"q": "hi"}' and echoed.headers["x-neocloud-replica"].isdigit()


def test_a_streamed_answer_comes_event_by_event(srv: Server, team: tuple) -> None:
    c, token, code = team
    c.submit(_service("streamer", code))
    _ready(c, "streamer", 1)
    arrived = []
    with httpx.stream("GET", f"{srv.url}/v1/services/svc-team/streamer/stream",
                      headers={"Authorization": f"Bearer {token}"}, timeout=30) as r:
        assert r.headers["content-type"] == "text/event-stream"
        for line in r.iter_lines():
            if line.startswith("data: "):
                arrived.append(time.monotonic())
    assert len(arrived) == 5
    assert arrived[-1] - arrived[0] >= 0.6  # the replica sends one each 0.2 s: none was held back for the rest


def test_another_tenants_token_finds_no_service(srv: Server, team: tuple) -> None:
    c, token, code = team
    c.submit(_service("private", code))
    _ready(c, "private", 1)
    admin = srv.client()
    admin.create_tenant("svc-other")
    other = admin.create_token("svc-other", "test")
    theirs = _call(srv, other, "private/")
    missing = _call(srv, token, "no-such-service/")
    assert theirs.status_code == missing.status_code == 404
    assert httpx.get(f"{srv.url}/v1/services/svc-team/private/").status_code == 401
    assert httpx.get(f"{srv.url}/v1/services/private", headers={"Authorization": f"Bearer {other}"}).status_code == 404
    assert _call(srv, ADMIN, "private/").status_code == 200  # the operator reaches every service


@pytest.mark.parametrize("bad, says", [
    ({"array": "0-3"}, "a service runs until stopped, so it takes no a job array"),
    ({"replicas": 2, "autoscale": {"max": 3, "target": 4}}, "give replicas or autoscale, not both"),
    ({"env": {"PORT": "80"}}, "environment variable PORT may not be set"),
    ({"env": {"HOST": "0.0.0.0"}}, "environment variable HOST may not be set"),
    ({"priority": "spot"}, "a service is never spot"),
    ({"gpus": 2, "gpus_per_node": 1}, "a replica runs on one node"),
    ({"autoscale": {"min": 3, "max": 2, "target": 1}}, "min (3) is above max (2)"),
    ({"readiness": {"path": "health"}}, "a URL path beginning with '/'"),
])
def test_a_bad_service_spec_is_refused_saying_what_to_fix(srv: Server, team: tuple, bad: dict, says: str) -> None:
    c, token, code = team
    answer = httpx.post(f"{srv.url}/v1/jobs", json={**_service("bad", code), **bad},
                        headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 422 and says in answer.text, answer.text


def test_a_service_key_calls_its_service_and_nothing_else_until_revoked(srv: Server, team: tuple) -> None:
    c, token, code = team
    c.submit(_service("keyed", code))
    c.submit(_service("unkeyed", code))
    _ready(c, "keyed", 1)
    _ready(c, "unkeyed", 1)
    made = c.create_service_key("keyed", label="app")
    key, anyone = made["token"], c.create_service_key()["token"]
    assert made["service"] == "keyed" and key.startswith("nck_")
    assert _call(srv, key, "keyed/").status_code == 200
    assert _call(srv, anyone, "keyed/").status_code == _call(srv, anyone, "unkeyed/").status_code == 200
    elsewhere = _call(srv, key, "unkeyed/")
    assert elsewhere.status_code == 401 and "calls only its service" in elsewhere.json()["detail"]
    api = httpx.get(f"{srv.url}/v1/jobs", headers={"Authorization": f"Bearer {key}"})
    assert api.status_code == 401 and "calls only its service" in api.json()["detail"]  # never the rest of the API
    assert httpx.post(f"{srv.url}/v1/service-keys", headers={"Authorization": f"Bearer {anyone}"},
                      json={}).status_code == 401  # a key makes no keys
    admin = srv.client()
    admin.create_tenant("svc-keyless")
    theirs = srv.client(admin.create_token("svc-keyless", "test"))
    assert _call(srv, theirs.create_service_key()["token"], "keyed/").status_code == 404  # its own services only
    with pytest.raises(ApiError) as no:
        theirs.revoke_service_key(made["id"])
    assert no.value.status == 404  # another tenant's key is as missing as one that is not
    assert made["id"] not in {k["id"] for k in theirs.service_keys()}
    for _ in range(99):  # a tenant's live keys are bounded (each is held in memory)
        theirs.create_service_key()
    with pytest.raises(ApiError) as full:
        theirs.create_service_key()
    assert full.value.status == 409 and "revoke" in str(full.value)
    assert made["id"] not in {t["id"] for t in c.tokens()}  # keys are listed apart from API tokens
    listed = {k["id"]: k for k in c.service_keys()}
    assert listed[made["id"]]["service"] == "keyed" and listed[made["id"]]["state"] == "active"
    assert "token" not in listed[made["id"]]
    assert c.revoke_service_key(made["id"])["state"] == "revoked"
    assert _call(srv, key, "keyed/").status_code == 401
    with pytest.raises(ApiError) as bad:
        c.create_service_key("-bad name-")
    assert bad.value.status == 422


def test_a_port_another_tenant_took_keeps_the_replica_out_of_rotation(srv: Server, team: tuple,
                                                                      tmp_path: Path) -> None:
    c, token, code = team
    c.submit(_service("squatted", code, command="exec sleep 600"))  # it never listens on its port itself

    def replica() -> dict[str, Any]:
        return c._call("GET", "/v1/services/squatted")["replica_list"][0]

    port = int(wait_for(lambda: replica()["address"]).rpartition(":")[2])
    admin = srv.client()
    admin.create_tenant("svc-squatter")
    squatter = srv.client(admin.create_token("svc-squatter", "test"))
    shutil.copy(REPLICA, tmp_path / "replica.py")
    job = squatter.submit({"name": "squat", "gpus": 0.1, "code": squatter.upload_code(pack(tmp_path)),
                           "command": f"HOST=127.0.0.1 PORT={port} exec python3 replica.py"})["id"]

    def answers() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(answers, timeout=30)  # the squatter holds the port, and would answer the probe
    held = wait_for(lambda: (r := replica())["problem"] and r)
    assert "another tenant's process holds the port" in held["problem"] and not held["ready"]
    with pytest.raises(httpx.ReadTimeout):  # the request waits for a ready replica: it never reaches the squatter
        _call(srv, token, "squatted/", timeout=1.0)
    assert not replica()["ready"]
    squatter.cancel(job)


def test_scaling_up_and_down_and_stopping(srv: Server, team: tuple) -> None:
    c, token, code = team
    c.submit(_service("elastic", code, replicas=1))
    _ready(c, "elastic", 1)
    c._call("POST", "/v1/services/elastic/scale", json={"replicas": 3})
    _ready(c, "elastic", 3)
    c._call("POST", "/v1/services/elastic/scale", json={"replicas": 1})
    left = _ready(c, "elastic", 1)["replica_list"]
    assert _call(srv, token, "elastic/").json()["replica"] == left[0]["job"]
    stopped = c._call("DELETE", "/v1/services/elastic")
    assert stopped["state"] == "STOPPED"
    job = left[0]["job"]
    assert c.wait(job, timeout=60)["state"] == "CANCELLED"
    assert _call(srv, token, "elastic/").status_code == 404
    assert c._call("GET", "/v1/services/elastic")["state"] == "STOPPED"


def test_a_roll_under_steady_traffic_fails_no_request(srv: Server, team: tuple) -> None:
    c, token, code = team
    spec = _service("rolling", code, replicas=2, env={"VERSION": "1"})
    c.submit(spec)
    old = {r["job"] for r in _ready(c, "rolling", 2)["replica_list"]}
    results: list[tuple[int, str]] = []
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=30) as h:
            while not stop.is_set():
                r = h.get(f"{srv.url}/v1/services/svc-team/rolling/slow?s=0.05")
                results.append((r.status_code, r.json().get("version", "") if r.status_code == 200 else r.text))

    senders = [threading.Thread(target=traffic) for _ in range(4)]
    for t in senders:
        t.start()
    try:
        wait_for(lambda: len(results) > 20)
        rolled = c._call("PUT", "/v1/services/rolling", json={**spec, "env": {"VERSION": "2"}})
        assert rolled["generation"] == 2
        wait_for(lambda: (s := c._call("GET", "/v1/services/rolling"))["ready"] == 2
                 and {r["generation"] for r in s["replica_list"]} == {2}, timeout=90)
        mark = len(results)
        wait_for(lambda: len(results) > mark + 20)
    finally:
        stop.set()
        for t in senders:
            t.join()
    assert [r for r in results if r[0] != 200] == []
    assert results[0][1] == "1" and results[-1][1] == "2"
    for job in old:
        assert c.wait(job, timeout=60)["state"] == "CANCELLED"


def test_a_roll_waits_on_the_job_its_spec_depends_on_and_stalls_if_it_fails(srv: Server, team: tuple) -> None:
    c, token, code = team
    srv.client()._call("PUT", "/v1/prices", json={"gpu_type": "H100", "usage_class": "on-demand",
                                                 "price_per_gpu_hour": "3.00"})  # the training jobs' GPU-hours
    spec = _service("after", code, env={"VERSION": "1"})
    c.submit(spec)
    _ready(c, "after", 1)
    train = c.submit({"name": "train", "gpus": 1, "command": "sleep 2"})
    rolled = c._call("PUT", "/v1/services/after", json={**spec, "env": {"VERSION": "2"},
                                                        "depends_on": [{"job": train["id"], "when": "afterok"}]})
    assert rolled["generation"] == 2
    assert _call(srv, token, "after/").json()["version"] == "1"  # the first generation serves meanwhile
    wait_for(lambda: _call(srv, token, "after/").json()["version"] == "2", timeout=90)
    trained = c.wait(train["id"], timeout=60)
    assert trained["state"] == "COMPLETED"
    new = _ready(c, "after", 1)["replica_list"][0]
    assert new["generation"] == 2 and c.job(new["job"])["started_at"] >= trained["ended_at"]

    failing = c.submit({"name": "train-bad", "gpus": 1, "command": "exit 3"})
    c._call("PUT", "/v1/services/after", json={**spec, "env": {"VERSION": "3"},
                                               "depends_on": [{"job": failing["id"], "when": "afterok"}]})
    assert c.wait(failing["id"], timeout=60)["state"] == "FAILED"
    stalled = wait_for(lambda: [j for j in c.jobs(state="FAILED") if j["name"] == "after"], timeout=30)
    assert stalled[0]["reason"] == f"dependency never satisfied: job {failing['id']} ended FAILED (afterok)"
    answers = [_call(srv, token, "after/").json()["version"] for _ in range(20)]
    assert answers == ["2"] * 20  # the roll stalled: the second generation serves on
    assert len([j for j in c.jobs(state="FAILED") if j["name"] == "after"]) == 1  # and no replica is retried
    with pytest.raises(ApiError, match="depends_on: no job 999999"):
        c._call("PUT", "/v1/services/after", json={**spec, "depends_on": [{"job": 999999}]})


def test_a_replica_whose_node_goes_to_triage_moves_and_the_endpoint_keeps_answering(tmp_path: Path) -> None:
    with serving(Server(tmp_path / "data", None)) as own:  # its own: a node it sends to triage stays there
        c = own.client()
        code = tmp_path / "code"
        code.mkdir()
        shutil.copy(REPLICA, code / "replica.py")
        c.submit(_service("mover", c.upload_code(pack(code)), gpus=8))  # a whole node: it can move only to the other
        before = _ready(c, "mover", 1)["replica_list"][0]
        results: list[int] = []
        stop = threading.Event()

        def traffic() -> None:
            with httpx.Client(headers={"Authorization": f"Bearer {ADMIN}"}, timeout=60) as h:
                while not stop.is_set():
                    results.append(h.get(f"{own.url}/v1/services/default/mover/slow?s=0.05").status_code)

        sender = threading.Thread(target=traffic)
        sender.start()
        try:
            wait_for(lambda: len(results) > 5)
            c.signal(before["node"], {"kind": "xid", "code": 79, "message": "GPU has fallen off the bus"})
            after = wait_for(lambda: (s := c._call("GET", "/v1/services/mover"))["ready"] == 1
                             and s["replica_list"][0]["node"] not in (None, before["node"]) and s, timeout=60)
            mark = len(results)
            wait_for(lambda: len(results) > mark + 5)
        finally:
            stop.set()
            sender.join()
    assert after["replica_list"][0]["job"] == before["job"]  # the same replica, requeued elsewhere
    assert set(results) == {200}


def _load(srv: Server, token: str, path: str, senders: int, stop: threading.Event, codes: list[int]) -> list:
    def send() -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=120) as h:
            while not stop.is_set():
                codes.append(h.get(f"{srv.url}/v1/services/svc-team/{path}").status_code)

    threads = [threading.Thread(target=send) for _ in range(senders)]
    for t in threads:
        t.start()
    return threads


def test_autoscaling_goes_up_under_load_and_down_after_it(srv: Server, team: tuple) -> None:
    c, token, code = team
    c.submit(_service("scaled", code, autoscale={"min": 1, "max": 3, "target": 1, "cooldown": "3s"}))
    _ready(c, "scaled", 1)
    stop, codes = threading.Event(), []
    threads = _load(srv, token, "scaled/slow?s=0.3", 4, stop, codes)  # 4 in flight, 1 each wanted: as many as allowed
    try:
        busy = _ready(c, "scaled", 3, timeout=90)
        assert busy["replicas"] == 3
    finally:
        stop.set()
        for t in threads:
            t.join()
    calm = _ready(c, "scaled", 1, timeout=90)  # once the cooldown has seen no load
    assert calm["replicas"] == 1 and set(codes) == {200}


def test_a_service_scaled_to_zero_starts_a_replica_for_its_first_request(srv: Server, team: tuple) -> None:
    c, token, code = team
    made = c.submit(_service("sleepy", code, autoscale={"min": 0, "max": 1, "target": 1, "cooldown": "2s"}))
    assert made["replicas"] == 0 and made["replica_list"] == []
    first = _call(srv, token, "sleepy/", timeout=120)  # held until a replica is ready, then answered
    assert first.status_code == 200
    wait_for(lambda: c._call("GET", "/v1/services/sleepy")["replica_list"] == [], timeout=60)  # idle: none again
    job = first.json()["replica"]
    assert c.wait(job, timeout=60)["state"] == "CANCELLED"


def test_tokens_of_answers_plain_and_streamed_are_metered_and_invoiced(srv: Server, team: tuple) -> None:
    c, token, code = team
    admin = srv.client()
    admin._call("PUT", "/v1/prices/tokens", json={"model": "tiny-llm", "kind": "prompt",
                                                   "price_per_million_tokens": "100.00"})
    admin._call("PUT", "/v1/prices/tokens", json={"kind": "completion", "price_per_million_tokens": "1000.00"})
    c.submit(_service("llm", code, model="tiny-llm"))
    _ready(c, "llm", 1)
    ask = {"model": "tiny-llm", "messages": [{"role": "user", "content": "one two three four"}], "max_tokens": 6}
    plain = _call(srv, token, "llm/v1/chat/completions", method="POST", json=ask)
    assert plain.json()["usage"]["completion_tokens"] == 6
    with httpx.stream("POST", f"{srv.url}/v1/services/svc-team/llm/v1/chat/completions", json={**ask, "stream": True},
                      headers={"Authorization": f"Bearer {token}"}, timeout=30) as r:
        events = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]" and '"usage"' in events[-2]  # the gateway asked for it
    lines = {}

    def billed() -> bool:
        bill = c._call("GET", "/v1/invoices/svc-team", params={"start": time.time() - 7200, "end": time.time() + 60})
        lines.update({line["kind"]: line for line in bill["lines"]})
        return "completion tokens of tiny-llm" in lines and lines["completion tokens of tiny-llm"]["tokens"] == 12

    wait_for(billed)
    assert lines["prompt tokens of tiny-llm"]["tokens"] == 8 and lines["prompt tokens of tiny-llm"]["amount"] == "0.00"
    assert lines["completion tokens of tiny-llm"]["amount"] == "0.01"  # 12 tokens at $1,000 a million, to the cent
    assert lines["service usage"]["price"] == "2.0000"  # the replicas' GPU-hours, at the serving price
    metrics = httpx.get(f"{srv.url}/metrics", headers={"Authorization": f"Bearer {ADMIN}"}).text
    assert 'neocloud_service_tokens_total{kind="completion",service="llm",tenant="svc-team"} 12.0' in metrics
    assert 'neocloud_service_requests_total{code="2xx",service="llm",tenant="svc-team"} 2.0' in metrics


def test_the_dashboards_service_page_shows_replicas_rate_and_tokens_to_their_tenant_only(srv: Server,
                                                                                         team: tuple) -> None:
    c, token, code = team
    c.submit(_service("shown", code, model="tiny-llm", replicas=2))
    _ready(c, "shown", 2)
    ask = {"messages": [{"role": "user", "content": "a b c"}], "max_tokens": 4}
    for _ in range(3):
        assert _call(srv, token, "shown/v1/chat/completions", method="POST", json=ask).status_code == 200

    def page(tok: str) -> str:
        with httpx.Client(base_url=srv.url, headers={"Origin": srv.url}) as h:
            assert h.post("/ui/login", data={"token": tok, "next": "/ui/services"}).status_code == 303
            r = h.get("/ui/services")
            assert r.status_code == 200
            return r.text

    wait_for(lambda: 'id="service-svc-team-shown"' in (html := page(token))
             and '<td class="n tokens">12</td>' in html, timeout=30)  # 3 answers of 4 tokens each, flushed
    html = page(token)
    section = html[html.index('id="service-svc-team-shown"'):]
    section = section[:section.index("</section>")]
    assert '<strong class="ready">2</strong> of 2' in section and section.count('<td class="state RUNNING">') == 2
    assert 'class="n rps">0.00<' not in section  # three in the last minute
    srv.client().create_tenant("svc-viewer")
    assert "service-svc-team-shown" not in page(srv.client().create_token("svc-viewer", "test"))


def test_a_service_takes_the_room_of_spot_work_and_is_never_spot(tmp_path: Path) -> None:
    with serving(Server(tmp_path / "data", None)) as own:
        c = own.client()
        spot = [c.submit({"name": f"spot{i}", "gpus": 8, "priority": "spot", "command": "sleep 600"})["id"]
                for i in range(2)]  # the whole fleet

        def state(job: int) -> str:
            return c._call("GET", f"/v1/jobs/{job}")["state"]

        wait_for(lambda: [state(j) for j in spot] == ["RUNNING", "RUNNING"], timeout=30)
        code = tmp_path / "code"
        code.mkdir()
        shutil.copy(REPLICA, code / "replica.py")
        digest = c.upload_code(pack(code))
        c.submit(_service("urgent", digest, gpus=1))
        _ready(c, "urgent", 1)
        assert sorted(state(j) for j in spot) == ["PENDING", "RUNNING"]  # one spot job made room, then waits
        with pytest.raises(ApiError) as refused:
            c.submit(_service("cheap", digest, priority="spot"))
        assert refused.value.status == 422 and "never spot" in str(refused.value)


def test_a_restarted_server_keeps_its_services_and_their_replicas(tmp_path: Path) -> None:
    with serving(Server(tmp_path / "data", None)) as own:
        c = own.client()
        code = tmp_path / "code"
        code.mkdir()
        shutil.copy(REPLICA, code / "replica.py")
        c.submit(_service("durable", c.upload_code(pack(code)), replicas=2))
        key = c.create_service_key("durable")["token"]
        before = {r["job"] for r in _ready(c, "durable", 2)["replica_list"]}
        own.kill9()  # the replicas run on, as any job's processes do
        own.start()
        c = own.client()
        after = _ready(c, "durable", 2)
        assert {r["job"] for r in after["replica_list"]} == before  # adopted, not started anew
        answer = httpx.get(f"{own.url}/v1/services/default/durable/", headers={"Authorization": f"Bearer {ADMIN}"})
        assert answer.status_code == 200 and answer.json()["replica"] in before
        by_key = httpx.get(f"{own.url}/v1/services/default/durable/", headers={"Authorization": f"Bearer {key}"})
        assert by_key.status_code == 200  # the key, kept in the store, holds after the restart
