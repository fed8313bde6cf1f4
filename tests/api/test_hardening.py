"""Hostile clients: bad input, oversized bodies, token lifetimes, guessing, who may read metrics,
and security headers (generated invalid requests are test_schema.py's). Nothing a client sends
may cause a 500 or leave a row behind, and the API keeps answering everyone else afterwards."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from neocloud.api.auth import FailureLimit
from tests.api.conftest import ADMIN, Server, serving, wait_for

AUTH = {"Authorization": f"Bearer {ADMIN}"}
JSON = {**AUTH, "Content-Type": "application/json"}
MiB = 1024 * 1024

# A job spec that is fine but for one field (as raw JSON: Python's json lets NaN, Infinity and lone
# surrogates through), and the field the 422 must name.
BAD_SPECS = [
    ('{"name": "a", "command": "echo \\ud800"}', "command"),
    ('{"name": "a", "command": ["sh", "-c", "echo \\udfff"]}', "command"),
    ('{"name": "\\ud83d", "command": "true"}', "name"),
    ('{"name": "a", "command": "true", "env": {"GREETING": "hi \\ud800"}}', "env"),
    ('{"name": "a", "command": "true", "tenant": "\\udc00"}', "tenant"),
    ('{"name": "a", "command": "true", "gpus": NaN}', "gpus"),
    ('{"name": "a", "command": "true", "gpus": Infinity}', "gpus"),
    ('{"name": "a", "command": "true", "gpus": -Infinity}', "gpus"),
    ('{"name": "a", "command": "true", "gpus": 1e999}', "gpus"),
    ('{"name": "a", "command": "true", "gpus_per_node": 1e999}', "gpus_per_node"),
    ('{"name": "a", "command": "true", "max_restarts": -1e999}', "max_restarts"),
    ('{"name": "a", "command": "true", "estimated_duration": NaN}', "estimated_duration"),
    ('{"name": "a", "command": "true", "checkpoint_interval": Infinity}', "checkpoint_interval"),
    ('{"name": "a", "command": "true", "checkpoint_cost": 1e999}', "checkpoint_cost"),
    ('{"name": "a", "command": "true", "restart_cost": NaN}', "restart_cost"),
    ('{"name": "a", "command": "true", "cpus": NaN}', "cpus"),
    ('{"name": "a", "command": "true", "memory": Infinity}', "memory"),
] + [(json.dumps({"name": "a", "command": "true", "env": {var: "1"}}), "env")
     for var in ("NEOCLOUD_JOB_ID", "NEOCLOUD_ANYTHING", "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES",
                 "MASTER_ADDR", "MASTER_PORT", "LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT")]

# Other request bodies, each bad in one field.
BAD_BODIES = [
    ("/v1/tenants", '{"name": "team-\\ud800"}', "name"),
    ("/v1/tenants/default/tokens", '{"label": "\\ud800"}', "label"),
    ("/v1/tenants/default/tokens", '{"expires_in": NaN}', "expires_in"),
    ("/v1/tenants/default/tokens", '{"expires_in": "soon"}', "expires_in"),
    ("/v1/nodes/leaf-a-n0/cordon", '{"reason": "fan \\udfff"}', "reason"),
    ("/v1/nodes/leaf-a-n0/move", '{"to": "triage", "reason": "\\ud800"}', "reason"),
    ("/v1/nodes/leaf-a-n0/signals", '{"kind": "thermal", "temperature_c": NaN}', "temperature_c"),
    ("/v1/nodes/leaf-a-n0/signals", '{"kind": "xid", "code": 79, "observed_at": Infinity}', "observed_at"),
    ("/v1/nodes/leaf-a-n0/signals", '{"kind": "active_check", "passed": true, "report": {"gpu": NaN}}', "report"),
    ("/v1/nodes/leaf-a-n0/signals", '{"kind": "link_flap", "link": "mlx5_\\ud800", "flaps": 1}', "link"),
    ("/v1/contracts", '{"tenant": "default", "gpu_type": "H100", "gpus": 8, "start": 0, "end": Infinity, '
                      '"price_per_gpu_hour": 2}', "end"),
    ("/v1/contracts", '{"tenant": "default", "gpu_type": "H100", "gpus": 8, "start": 0, "end": 100, '
                      '"price_per_gpu_hour": NaN}', "price_per_gpu_hour"),
    ("/v1/contracts", '{"tenant": "default", "gpu_type": "H100", "gpus": 8, "start": 0, "end": 100, '
                      '"price_per_gpu_hour": 2, "note": "\\ud800"}', "note"),
    ("PUT /v1/prices", '{"gpu_type": "H100", "usage_class": "spot", "price_per_gpu_hour": Infinity}',
     "price_per_gpu_hour"),
    ("/v1/capacity/plan", '{"name": "\\ud800"}', "pipeline"),
    ("/v1/capacity/plan", '{"name": "p", "target_mw": NaN}', "pipeline"),
]


def _named(r: httpx.Response, field: str) -> bool:
    """A 422 whose detail names the field (by its location, or in its message)."""
    if r.status_code != 422:
        return False
    return any(field in map(str, d["loc"]) or field in d["msg"] for d in r.json()["detail"])


def _rows(server: Server) -> tuple[int, ...]:
    """Jobs, tenants, tokens, contracts and prices the store holds, through the admin API."""
    c = server.client()
    return (len(c.jobs(limit=1000)), len(c.tenants()), len(c.tokens()),
            len(c._call("GET", "/v1/contracts", params={"history": True})), len(c._call("GET", "/v1/prices")))


def test_bad_input_is_a_422_naming_the_field_and_nothing_is_stored(shared_server: Server) -> None:
    server = shared_server
    before = _rows(server)
    for body, field in BAD_SPECS:
        r = httpx.post(f"{server.url}/v1/jobs", content=body.encode(), headers=JSON)
        assert _named(r, field), (body, r.status_code, r.text[:500])
        assert httpx.get(f"{server.url}/v1/jobs", headers=AUTH).status_code == 200
    for route, body, field in BAD_BODIES:
        method, _, path = route.rpartition(" ")
        r = httpx.request(method or "POST", f"{server.url}{path}", content=body.encode(), headers=JSON)
        assert _named(r, field), (path, body, r.status_code, r.text[:500])
    assert _rows(server) == before
    for path in ("/v1/jobs", "/v1/tenants", "/v1/audit", "/v1/contracts", "/v1/nodes", "/v1/tenants/default/tokens"):
        assert httpx.get(f"{server.url}{path}", headers=AUTH).status_code == 200, path
    assert server.client().health()["status"] == "ok"


def test_reserved_environment_variables_are_refused_saying_why(shared_server: Server) -> None:
    server = shared_server
    r = httpx.post(f"{server.url}/v1/jobs", json={"name": "a", "command": "true", "env": {"LD_PRELOAD": "/x.so"}},
                   headers=AUTH)
    assert r.status_code == 422 and "LD_PRELOAD" in r.text and "sandbox" in r.text
    r = httpx.post(f"{server.url}/v1/jobs", json={"name": "a", "command": "true", "env": {"NEOCLOUD_NODE": "x"}},
                   headers=AUTH)
    assert r.status_code == 422 and "NEOCLOUD_NODE" in r.text and "neocloud's own" in r.text
    ok = server.client().submit({"name": "a", "command": "echo $GREETING", "env": {"GREETING": "héllo ✓"}})
    assert server.client().wait(ok["id"])["state"] == "COMPLETED"
    assert server.client().logs(ok["id"])["text"] == "héllo ✓\n"


def test_query_and_path_numbers_out_of_range_are_4xx(shared_server: Server) -> None:
    server = shared_server
    c = server.client()
    job = c.wait(c.submit({"name": "short", "command": "echo hi"})["id"])
    cases = {f"/v1/jobs/{job['id']}/logs?offset={2**62}": (200,), f"/v1/jobs/{job['id']}/logs?offset={2**63}": (422,),
             f"/v1/jobs/{job['id']}/logs?offset=-1": (422,), f"/v1/jobs/{job['id']}/logs?rank=99999999999": (422,),
             f"/v1/jobs/{2**31}": (422,), f"/v1/jobs/{2**31 - 1}": (404,), f"/v1/jobs/{10**30}": (422,),
             f"/v1/jobs?before={2**40}": (422,), f"/v1/jobs?limit={2**70}": (422,), "/v1/audit?before=1e999": (422,),
             f"/v1/jobs/{job['id']}/goodput": (200,), "/v1/usage?start=nan": (422,), "/v1/usage?end=inf": (422,),
             "/v1/prices": (200,)}
    for path, allowed in cases.items():
        r = httpx.get(f"{server.url}{path}", headers=AUTH)
        assert r.status_code in allowed, (path, r.status_code, r.text[:300])
    far = httpx.get(f"{server.url}/v1/jobs/{job['id']}/logs?offset={2**62}", headers=AUTH).json()
    assert far["text"] == "" and far["next_offset"] == 2**62
    for method, path in (("DELETE", f"/v1/jobs/{2**31}"), ("DELETE", f"/v1/tokens/{2**31}"),
                         ("POST", f"/v1/contracts/{2**31}/amend"), ("POST", f"/v1/contracts/{10**20}/terminate")):
        assert httpx.request(method, f"{server.url}{path}", headers=AUTH, json={}).status_code == 422, path


def test_a_422_quotes_only_an_excerpt_of_a_long_field(shared_server: Server) -> None:
    server = shared_server
    before = _rows(server)
    long = "x" * 500_000
    r = httpx.post(f"{server.url}/v1/jobs", json={"name": long, "command": "true"}, headers=AUTH)
    assert _named(r, "name") and len(r.content) < 2_000
    (error,) = r.json()["detail"]
    assert error["input"].startswith("xxx") and len(error["input"]) < 300 and len(error["msg"]) < 500
    r = httpx.post(f"{server.url}/v1/jobs", json={"name": "a", "command": "echo " + long}, headers=AUTH)
    assert _named(r, "command") and len(r.content) < 2_000
    r = httpx.post(f"{server.url}/v1/jobs", json={"name": "a", "command": "true", "colour": [long] * 3},
                   headers=AUTH)
    assert _named(r, "colour") and len(r.content) < 2_000
    assert _rows(server) == before


def _raw(server: Server, head: bytes, body: bytes, timeout: float = 10.0) -> tuple[int, bytes, float]:
    """Send a request head and part of a body, then read the answer without sending the rest:
    (status, answer, seconds it took)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as s:
        s.sendall(head + body)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer) < answer.index(b"\r\n\r\n") + 4 + _length(answer):
            chunk = s.recv(65536)
            if not chunk:
                break
            answer += chunk
    return int(answer.split(b" ", 2)[1]), answer, time.monotonic() - started


def _length(answer: bytes) -> int:
    m = re.search(rb"(?i)content-length: *(\d+)", answer)
    return int(m.group(1)) if m else 0


def _head(server: Server, extra: str, token: str | None) -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (f"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nContent-Type: application/json\r\n"
            f"{auth}{extra}\r\n").encode()


@pytest.mark.parametrize("token", [None, ADMIN], ids=["anonymous", "admin"])
def test_an_oversized_body_is_refused_before_it_is_read(shared_server: Server, token: str | None) -> None:
    server = shared_server
    before = _rows(server)
    # Content-Length says 100 MiB; only 1 KiB is sent, and the answer comes anyway.
    status, answer, took = _raw(server, _head(server, f"Content-Length: {100 * MiB}\r\n", token), b"{" + b" " * 1023)
    assert status == 413 and took < 5
    detail = json.loads(answer.split(b"\r\n\r\n", 1)[1])["detail"]
    assert "2 MiB" in detail and "--max-body-bytes" in detail
    # Chunked, with no length: refused once past the limit, before the body's end was sent.
    chunks = b"".join(b"%x\r\n%s\r\n" % (64 * 1024, b" " * 64 * 1024) for _ in range(2 * 16 + 1))
    status, _, took = _raw(server, _head(server, "Transfer-Encoding: chunked\r\n", token), chunks)
    assert status == 413 and took < 5
    # Just under the limit is read and judged on its merits.
    r = httpx.post(f"{server.url}/v1/jobs", json={"name": "a", "command": "true", "env": {"X": "y" * MiB}},
                   headers=JSON)
    assert r.status_code == 422 and _named(r, "env")
    assert _rows(server) == before
    assert httpx.get(f"{server.url}/v1/jobs", headers=AUTH).status_code == 200


def test_the_body_limit_is_set_by_max_body_bytes(tmp_path: Path) -> None:
    with serving(Server(tmp_path / "small", None, args=("--max-body-bytes", "4096"))) as small:
        big = {"name": "a", "command": "echo " + "x" * 5000}
        r = httpx.post(f"{small.url}/v1/jobs", json=big, headers=AUTH)
        assert r.status_code == 413 and "4096 bytes" in r.json()["detail"]
        r = httpx.post(f"{small.url}/v1/jobs", json={"name": "a", "command": "true"}, headers=AUTH)
        assert r.status_code == 201
        entries = wait_for(lambda: [e for e in small.client().audit() if e["status"] == 413])
        assert entries[0]["path"] == "/v1/jobs"


def _token(server: Server, tenant: str, **kw: object) -> dict:
    r = httpx.post(f"{server.url}/v1/tenants/{tenant}/tokens", json=kw, headers=AUTH)
    assert r.status_code == 201, r.text
    return r.json()


def _status(server: Server, token: str, path: str = "/v1/jobs") -> int:
    return httpx.get(f"{server.url}{path}", headers={"Authorization": f"Bearer {token}"}).status_code


def test_tokens_are_listed_revoked_at_once_and_expire(server: Server) -> None:
    admin = server.client()
    admin.create_tenant("team-a")
    admin.create_tenant("team-b")
    lasting = _token(server, "team-a", label="ci")
    brief = _token(server, "team-a", label="brief", expires_in=2)
    other = _token(server, "team-b")
    assert lasting["expires_at"] is None and brief["expires_at"] - time.time() < 3
    assert _status(server, brief["token"]) == 200
    wait_for(lambda: _status(server, brief["token"]) == 401, timeout=10)

    listed = httpx.get(f"{server.url}/v1/tenants/team-a/tokens", headers=AUTH)
    assert lasting["token"] not in listed.text and brief["token"] not in listed.text
    assert [(t["id"], t["label"], t["state"]) for t in listed.json()] == [
        (lasting["id"], "ci", "active"), (brief["id"], "brief", "expired")]
    assert "token" not in listed.json()[0]
    assert [t["tenant"] for t in admin.tokens()] == ["team-a", "team-a", "team-b"]
    assert {t["name"]: t["tokens"] for t in admin.tenants()} == {"default": 0, "team-a": 1, "team-b": 1}

    a = server.client(lasting["token"])
    assert [t["id"] for t in a.tokens()] == [lasting["id"], brief["id"]]  # its own only
    assert httpx.delete(f"{server.url}/v1/tokens/{other['id']}", headers={"Authorization": f"Bearer {lasting['token']}"}
                        ).status_code == 404  # another tenant's is not there
    assert _status(server, lasting["token"], "/v1/tenants/team-a/tokens") == 403
    assert _status(server, other["token"]) == 200
    assert admin.revoke_token(other["id"])["state"] == "revoked"
    assert _status(server, other["token"]) == 401  # at once
    assert a.revoke_token(lasting["id"])["revoked_at"] is not None
    assert _status(server, lasting["token"]) == 401
    assert admin.revoke_token(lasting["id"])["state"] == "revoked"  # again: no change, no error
    assert httpx.get(f"{server.url}/v1/tenants/nope/tokens", headers=AUTH).status_code == 404
    assert httpx.delete(f"{server.url}/v1/tokens/999", headers=AUTH).status_code == 404

    server.stop()
    server.start()
    assert _status(server, lasting["token"]) == 401 and _status(server, brief["token"]) == 401
    fresh = _token(server, "team-b", expires_in="30d")
    assert _status(server, fresh["token"]) == 200 and 29 * 86400 < fresh["expires_at"] - time.time() <= 30 * 86400
    assert [t["state"] for t in server.client().tokens("team-b")] == ["revoked", "active"]


def test_tokens_from_the_command_line(shared_server: Server) -> None:
    server = shared_server

    def neocloud(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "neocloud", *args, "--server", server.url, "--token", ADMIN],
                              capture_output=True, text=True, timeout=60)

    assert neocloud("tenants", "create", "team-a").returncode == 0
    made = neocloud("tenants", "token", "team-a", "--label", "laptop", "--expires-in", "30d")
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert secret.startswith("nct_") and "expires" in made.stderr
    assert _status(server, secret) == 200
    listed = neocloud("tenants", "tokens", "team-a")
    assert listed.returncode == 0 and "laptop" in listed.stdout and "active" in listed.stdout
    assert secret not in listed.stdout
    token_id = server.client().tokens("team-a")[0]["id"]
    revoked = neocloud("tenants", "revoke", str(token_id))
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    assert _status(server, secret) == 401


def test_guessing_tokens_is_limited_per_address_and_audited(server: Server) -> None:
    elsewhere = httpx.Client(base_url=server.url, headers=AUTH, transport=httpx.HTTPTransport(local_address="127.0.0.2"))
    with httpx.Client(base_url=server.url) as guesser:
        answers = [guesser.get("/v1/jobs", headers={"Authorization": f"Bearer nct_guess{i}"}) for i in range(200)]
        assert [r.status_code for r in answers[:10]] == [401] * 10
        assert {r.status_code for r in answers[10:]} == {429}
        assert 1 <= int(answers[-1].headers["Retry-After"]) <= 60
        # A good token gets through: clients sharing the address (every job on a host shares its
        # loopback) cannot lock the admin out.
        assert guesser.get("/v1/jobs", headers=AUTH).status_code == 200
        assert guesser.post("/v1/tenants", json={"name": "x"}, headers={"Authorization": "Bearer nope"}
                            ).status_code == 429
        assert guesser.get("/healthz").status_code == 200
    assert elsewhere.get("/v1/jobs").status_code == 200
    # All of loopback counts as one address: moving to 127.0.0.2 does not start a fresh count.
    assert elsewhere.get("/v1/jobs", headers={"Authorization": "Bearer nct_guess-again"}).status_code == 429

    def anonymous() -> list[dict] | None:
        entries = [e for e in elsewhere.get("/v1/audit", params={"limit": 1000}).json() if e["actor"] == "anonymous"]
        return entries if len(entries) >= 12 else None

    entries = wait_for(anonymous)
    statuses = sorted(e["status"] for e in entries)
    assert statuses == [401] * 10 + [429] * 2  # each failure, the first refused GET, the refused POST
    assert {(e["path"], e["client"]) for e in entries} == {("/v1/jobs", "127.0.0.1"), ("/v1/tenants", "127.0.0.1")}
    elsewhere.close()


def test_the_failure_limit_slides_and_stays_small() -> None:
    now = [0.0]
    limit = FailureLimit(limit=3, window_s=60, max_clients=100, clock=lambda: now[0])
    for t in (0, 10, 20):
        now[0] = t
        assert limit.retry_after("a") == 0
        limit.fail("a")
    assert limit.retry_after("a") == 40  # until the first failure is a minute old
    now[0] = 60.5
    assert limit.retry_after("a") == 0  # one has slid out
    limit.fail("a")
    assert limit.retry_after("a") == pytest.approx(9.5)
    for i in range(1000):
        limit.fail(f"10.0.{i // 256}.{i % 256}")
    assert len(limit._failures) == 100 and "a" not in limit._failures  # the least recent forgotten


def test_metrics_need_the_admin_token_and_pass_promtool(server: Server) -> None:
    c = server.client()
    c.create_tenant("team-a")
    tenant = c.create_token("team-a")
    for spec in ({"name": "ok", "command": "true"}, {"name": "bad", "command": "exit 1", "tenant": "team-a"}):
        c.wait(c.submit(spec)["id"])
    c.node_action("leaf-a-n0", "cordon", "metrics test")
    assert httpx.get(f"{server.url}/metrics").status_code == 401
    assert _status(server, tenant, "/metrics") == 403
    r = httpx.get(f"{server.url}/metrics", headers=AUTH)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert "neocloud_fleet_gpus 16.0" in r.text and "neocloud_gpus_total" not in r.text
    assert 'neocloud_jobs_finished_total{state="FAILED"} 1.0' in r.text
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian's prometheus package)")
    check = subprocess.run([promtool, "check", "metrics"], input=r.content, capture_output=True, timeout=60)
    assert check.returncode == 0, (check.stdout + check.stderr).decode()


def test_every_answer_carries_security_headers(shared_server: Server) -> None:
    server = shared_server
    answers = [httpx.get(f"{server.url}/healthz"), httpx.get(f"{server.url}/v1/jobs"),
               httpx.get(f"{server.url}/v1/nope", headers=AUTH), httpx.get(f"{server.url}/ui/login"),
               httpx.post(f"{server.url}/v1/jobs", content=b"{", headers=JSON),
               httpx.post(f"{server.url}/v1/jobs", content=b"x" * (3 * MiB), headers=JSON)]
    assert [r.status_code for r in answers] == [200, 401, 404, 200, 422, 413]
    nonces = set()
    for r in answers:
        csp = r.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
        assert re.search(r"script-src 'self' 'nonce-[\w-]+'(;|$)", csp), csp
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] in ("no-referrer", "same-origin")  # the dashboard's own is kept
        nonces.add(re.search(r"'nonce-([\w-]+)'", csp).group(1))
    assert len(nonces) == len(answers)  # one per answer
    docs = httpx.get(f"{server.url}/docs")
    nonce = re.search(r"'nonce-([\w-]+)'", docs.headers["content-security-policy"]).group(1)
    inline = re.findall(r"<script([^>]*)>(?!</script>)", docs.text)
    assert inline and all(f'nonce="{nonce}"' in attrs or "src=" in attrs for attrs in inline)
