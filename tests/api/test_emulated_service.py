"""`neocloud up --backend emulated`: a real server whose jobs last their estimated_duration, across kill -9."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from neocloud.client import Client
from tests.api.conftest import FLEET as BASE_FLEET
from tests.api.conftest import Server, serving, wait_for

FLEET = BASE_FLEET.replace("count: 2", "count: 4")  # four 8-GPU nodes


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "data", None, backend="emulated")
    srv.fleet = tmp_path / "fleet.yaml"
    srv.fleet.write_text(FLEET)
    with serving(srv) as s:
        yield s


def _kinds(c: Client, job_id: int) -> list[str]:
    return [e["kind"] for e in c.events(job_id)]


def _launched(c: Client, job_id: int) -> bool:
    """The backend has the attempt (its log says it started), not only the store."""
    return "emulated: attempt 1 started" in c.logs(job_id)["text"]


def test_jobs_last_their_estimated_duration_and_exit_0(server: Server) -> None:
    c = server.client()
    assert c.health()["backend"] == "emulated"
    assert {n["name"] for n in c.nodes()} == {f"leaf-a-n{i}" for i in range(4)}
    c.create_tenant("team-b")  # nothing runs, so tenants are apart: a second one is served
    jobs = [c.submit({"name": "one", "command": "python train.py", "gpus": 8, "estimated_duration": "1s"}),
            c.submit({"name": "gang", "command": ["torchrun", "x.py"], "gpus": 16, "gpus_per_node": 8,
                      "estimated_duration": 2, "tenant": "team-b"})]
    long = c.submit({"name": "long", "command": "sleep 1000", "gpus": 8, "estimated_duration": "1h"})
    for job in jobs:
        done = c.wait(job["id"], timeout=30)
        assert (done["state"], done["exit_code"], done["attempts"]) == ("COMPLETED", 0, 1)
        assert done["ended_at"] - done["started_at"] >= job["spec"]["estimated_duration"]
    gang = jobs[1]["id"]
    assert c.logs(gang, rank=1)["text"].splitlines()[-1] == "emulated: attempt 1 ended after 2 s: exit 0"
    assert c.logs(gang, stream="stderr")["text"] == ""
    wait_for(lambda: c.job(long["id"])["state"] == "RUNNING" and _launched(c, long["id"]))
    c.cancel(long["id"])
    done = c.wait(long["id"], timeout=30)
    assert (done["state"], done["exit_code"]) == ("CANCELLED", 143)
    assert "exit 143 (stopped)" in c.logs(long["id"])["text"]


def test_jobs_survive_kill_9_and_none_runs_twice(server: Server) -> None:
    c = server.client()
    short = [c.submit({"name": f"short-{i}", "command": "true", "gpus": 8, "estimated_duration": 4})
             for i in range(2)]
    long = [c.submit({"name": f"long-{i}", "command": "true", "gpus": 8, "estimated_duration": 15})
            for i in range(2)]
    jobs = short + long
    wait_for(lambda: all(c.job(j["id"])["state"] == "RUNNING" and _launched(c, j["id"]) for j in jobs))
    short_end = max(c.job(j["id"])["started_at"] for j in short) + 4
    server.kill9()
    killed_at = time.time()
    assert killed_at < short_end  # so the short ones end while the server is down
    wait_for(lambda: time.time() > short_end + 0.5)
    server.start()
    c = server.client()
    assert sorted(j["id"] for j in c.jobs()) == sorted(j["id"] for j in jobs)
    for j in jobs:
        done = c.wait(j["id"], timeout=40)
        assert (done["state"], done["exit_code"], done["attempts"]) == ("COMPLETED", 0, 1)
        kinds = _kinds(c, j["id"])
        assert kinds.count("started") == 1 and kinds.count("completed") == 1 and "requeued" not in kinds
    for j in long:  # still within its duration at the restart: adopted, and ends on its first clock
        done = c.job(j["id"])
        assert _kinds(c, j["id"]) == ["submitted", "started", "adopted", "completed"]
        assert 15 <= done["ended_at"] - done["started_at"] < 18
    for j in short:  # ended while the server was down: settled at the restart, not adopted
        assert _kinds(c, j["id"]) == ["submitted", "started", "completed"]
        assert c.job(j["id"])["ended_at"] > short_end
