"""The live forecast over a real server: expected starts that come true, dry runs that queue
nothing, and a tenant's forecast that tells only of its own jobs."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from neocloud.client import ApiError, Client
from tests.api.conftest import Server, serving, wait_for

HOLD_S = 4.0  # how long the jobs holding the fleet run, as they say


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[Server]:
    with serving(Server(tmp_path / "data", None)) as s:
        yield s


def _tenant(server: Server, name: str) -> Client:
    admin = server.client()
    admin.create_tenant(name)
    return Client(server.url, admin.create_token(name, "test"))


def _cli(server: Server, c: Client, *args: str) -> str:
    """`neocloud ARGS` as the tenant of `c`, its output as a wide terminal would show it."""
    token = c.http.headers["Authorization"].removeprefix("Bearer ")
    env = {**os.environ, "NEOCLOUD_SERVER": server.url, "NEOCLOUD_TOKEN": token, "COLUMNS": "250"}
    done = subprocess.run([sys.executable, "-m", "neocloud", *args], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _hold_the_fleet(c: Client) -> list[dict]:
    """Both nodes' GPUs held by jobs that run as long as they say."""
    held = [c.submit({"name": f"hold-{i}", "command": f"sleep {HOLD_S}", "gpus": 8, "estimated_duration": HOLD_S})
            for i in range(2)]
    return [wait_for(lambda j=j: (r := c.job(j["id"]))["state"] == "RUNNING" and r) for j in held]


def test_a_pending_job_starts_when_the_forecast_said_and_a_tenant_sees_only_its_own(srv: Server) -> None:
    a, b = _tenant(srv, "team-a"), _tenant(srv, "team-b")
    held = _hold_the_fleet(b)
    for h in held:  # a running job is expected to end by its estimate
        h = wait_for(lambda h=h: (r := b.job(h["id"]))["expected_end"] is not None and r)
        assert h["expected_end"] == pytest.approx(h["started_at"] + HOLD_S, abs=1.0)
    mine = a.submit({"name": "next", "command": "true", "gpus": 8, "estimated_duration": 2})
    theirs = b.submit({"name": "theirs-later", "command": "true", "gpus": 16, "gpus_per_node": 8})
    job = wait_for(lambda: (r := a.job(mine["id"]))["expected_start"] is not None and r)
    expected = job["expected_start"]
    assert expected == pytest.approx(min(h["started_at"] for h in held) + HOLD_S, abs=1.5)

    queue = a.queue()  # team-a's queue: its own job only, with the same forecast
    assert [q["id"] for q in queue] == [mine["id"]]
    assert queue[0]["expected_start"] == pytest.approx(expected, abs=1.5)
    assert {q["id"] for q in b.queue()} == {theirs["id"]}
    shown = _cli(srv, a, "queue")
    assert "expected start" in shown and "(in " in shown and "theirs-later" not in shown
    with pytest.raises(ApiError) as e:
        a.job(theirs["id"])
    assert e.value.status == 404

    started = wait_for(lambda: (r := a.job(mine["id"]))["started_at"] and r, timeout=30)["started_at"]
    assert abs(started - expected) <= max(5.0, 0.1 * (started - job["submitted_at"]))


def test_a_dry_run_queues_nothing_and_its_start_and_place_are_those_a_submit_then_gets(srv: Server) -> None:
    c = _tenant(srv, "team-a")
    with pytest.raises(ApiError) as e:  # refused as a submit would be
        c.submit({"name": "too-big", "command": "true", "gpus": 64}, dry_run=True)
    assert e.value.status == 422 and "'too-big' needs 8 node(s)" in str(e.value)
    with pytest.raises(ApiError) as e:
        c.submit({"name": "x", "command": "true", "gpus": 1, "tenant": "team-b"}, dry_run=True)
    assert e.value.status == 403
    held = _hold_the_fleet(c)
    spec = {"name": "what-if", "command": "true", "gpus": 4, "estimated_duration": 30}
    r = c.http.post(f"{srv.url}/v1/jobs", params={"dry_run": "true"}, json=spec)
    assert r.status_code == 200, r.text  # not 201: nothing was created
    dry = r.json()
    assert dry["name"] == "what-if" and dry["tenant"] == "team-a" and dry["gpus"] == 4
    assert dry["expected_start"] == pytest.approx(min(h["started_at"] for h in held) + HOLD_S, abs=1.5)
    assert dry["expected_end"] == pytest.approx(dry["expected_start"] + 30, abs=0.01)
    assert len(dry["placement"]) == 1 and len(dry["placement"][0]["gpus"]) == 4
    assert dry["reason"]  # why it would wait: the GPUs are held
    assert {j["name"] for j in c.jobs()} == {"hold-0", "hold-1"} and c.queue() == []  # nothing was queued

    spec_file = srv.data_dir.parent / "what-if.yaml"
    spec_file.write_text("name: what-if\ncommand: 'true'\ngpus: 4\nestimated_duration: 30\n")
    said = _cli(srv, c, "submit", "--dry-run", str(spec_file))
    assert "what-if would start" in said and dry["placement"][0]["node"] in said and "nothing was queued" in said
    assert c.queue() == []

    job = c.submit(spec)
    started = wait_for(lambda: (r := c.job(job["id"]))["started_at"] and r, timeout=30)
    assert abs(started["started_at"] - dry["expected_start"]) <= 5.0
    assert started["placement"][0]["node"] == dry["placement"][0]["node"]  # the node the holder freed first
