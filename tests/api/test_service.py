"""The control plane over HTTP: tenants and tokens, gangs, cancel, logs, nodes, crash recovery."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from neocloud.client import ApiError
from tests.api.conftest import ADMIN, Server, wait_for


def _tenant(server: Server, name: str) -> str:
    admin = server.client()
    admin.create_tenant(name)
    return admin.create_token(name, "test")


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _pids(server: Server, job_id: int) -> list[int]:
    return [int(p.read_text().split()[0]) for p in (server.data_dir / "jobs" / str(job_id)).glob("attempt-*.pid")]


def test_tenants_see_and_touch_only_their_own_jobs(server: Server) -> None:
    a, b = server.client(_tenant(server, "team-a")), server.client(_tenant(server, "team-b"))
    job = a.submit({"name": "mine", "command": "sleep 30", "gpus": 1})
    assert job["tenant"] == "team-a" and job["state"] in ("PENDING", "RUNNING")
    for call in (lambda: b.job(job["id"]), lambda: b.cancel(job["id"]), lambda: b.events(job["id"]),
                 lambda: b.logs(job["id"])):
        with pytest.raises(ApiError) as e:
            call()
        assert e.value.status == 404
    assert [j["id"] for j in b.jobs()] == []
    assert [j["id"] for j in a.jobs()] == [job["id"]]
    assert [j["id"] for j in server.client().jobs(tenant="team-a")] == [job["id"]]
    with pytest.raises(ApiError) as e:
        b.submit({"name": "sneaky", "command": "true", "tenant": "team-a"})
    assert e.value.status == 403
    a.cancel(job["id"])


def test_no_token_is_401_and_a_tenant_token_on_admin_routes_is_403(shared_server: Server) -> None:
    server = shared_server
    token = _tenant(server, "team-a")
    assert httpx.get(f"{server.url}/v1/jobs").status_code == 401
    assert httpx.get(f"{server.url}/v1/jobs", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert httpx.get(f"{server.url}/v1/jobs", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    tenant = {"Authorization": f"Bearer {token}"}
    assert httpx.post(f"{server.url}/v1/tenants", json={"name": "x"}, headers=tenant).status_code == 403
    assert httpx.post(f"{server.url}/v1/tenants/team-a/tokens", json={}, headers=tenant).status_code == 403
    assert httpx.get(f"{server.url}/v1/audit", headers=tenant).status_code == 403
    assert httpx.post(f"{server.url}/v1/nodes/leaf-a-n0/cordon", json={}, headers=tenant).status_code == 403
    assert httpx.get(f"{server.url}/healthz").json()["status"] == "ok"


def test_tokens_are_stored_hashed(server: Server) -> None:
    token = _tenant(server, "team-a")
    db = server.data_dir / "neocloud.db"
    if db.exists():
        raw = b"".join(p.read_bytes() for p in server.data_dir.glob("neocloud.db*"))
        assert token.encode() not in raw and ADMIN.encode() not in raw


def test_a_job_runs_and_its_logs_come_back(server: Server) -> None:
    c = server.client()
    job = c.submit({"name": "hello", "command": "echo out-$NEOCLOUD_JOB_ID; echo err >&2; echo gpus=$CUDA_VISIBLE_DEVICES",
                    "gpus": 2, "env": {"GREETING": "hi"}})
    done = c.wait(job["id"])
    assert done["state"] == "COMPLETED" and done["exit_code"] == 0
    out = c.logs(job["id"])
    assert out["text"].splitlines() == [f"out-{job['id']}", "gpus=0,1"] and out["done"]
    assert c.logs(job["id"], stream="stderr")["text"] == "err\n"
    assert [e["kind"] for e in c.events(job["id"])] == ["submitted", "started", "completed"]


def test_a_failing_job_reports_its_exit_status(shared_server: Server) -> None:
    server = shared_server
    c = server.client()
    job = c.wait(c.submit({"name": "bad", "command": "exit 3"})["id"])
    assert (job["state"], job["exit_code"]) == ("FAILED", 3)


def test_a_gang_waits_until_all_its_gpus_fit_then_spans_two_nodes(server: Server) -> None:
    c = server.client()
    blocker = c.submit({"name": "blocker", "command": "sleep 60", "gpus": 8})
    wait_for(lambda: c.job(blocker["id"])["state"] == "RUNNING")
    gang = c.submit({"name": "gang", "command": "echo rank $NEOCLOUD_NODE_RANK of $NEOCLOUD_NUM_NODES",
                     "gpus": 16, "gpus_per_node": 8})
    # A pass has looked at it once the queue says why it waits; 8 GPUs free is not 16: all or nothing.
    wait_for(lambda: [(q["id"], q["reason"].split(":")[0]) for q in c.queue()] == [(gang["id"], "capacity")])
    assert c.job(gang["id"])["state"] == "PENDING"
    c.cancel(blocker["id"])
    done = c.wait(gang["id"])
    assert done["state"] == "COMPLETED"
    assert sorted(p["node"] for p in done["placement"]) == ["leaf-a-n0", "leaf-a-n1"]
    assert c.logs(gang["id"], rank=1)["text"] == "rank 1 of 2\n"
    assert c.job(blocker["id"])["state"] == "CANCELLED"


def test_cancel_stops_the_processes(server: Server) -> None:
    c = server.client()
    job = c.submit({"name": "long", "command": "sleep 300", "gpus": 1})
    wait_for(lambda: c.job(job["id"])["state"] == "RUNNING")
    pids = wait_for(lambda: _pids(server, job["id"]))
    assert all(_alive(p) for p in pids)
    c.cancel(job["id"])
    assert c.wait(job["id"])["state"] == "CANCELLED"
    wait_for(lambda: not any(_alive(p) for p in pids))
    hog = c.submit({"name": "hog", "command": "sleep 60", "gpus": 16, "gpus_per_node": 8})
    wait_for(lambda: c.job(hog["id"])["state"] == "RUNNING")
    pending = c.submit({"name": "waits", "command": "true", "gpus": 1})
    assert c.cancel(pending["id"])["state"] == "CANCELLED"  # a pending job is cancelled at once
    assert [e["kind"] for e in c.events(pending["id"])] == ["submitted", "cancelled"]
    assert c.cancel(hog["id"])["cancel_requested"]
    assert c.wait(hog["id"])["state"] == "CANCELLED"


def test_oversized_and_malformed_specs_are_refused_with_reasons(shared_server: Server) -> None:
    server = shared_server
    c = server.client()
    before = len(c.jobs(limit=1000))
    with pytest.raises(ApiError) as e:
        c.submit({"name": "huge", "command": "true", "gpus": 64})
    assert e.value.status == 422 and "fabric" in str(e.value)
    with pytest.raises(ApiError) as e:
        c.submit({"name": "typed", "command": "true", "gpu_type": "B200"})
    assert e.value.status == 422 and "B200" in str(e.value)
    r = httpx.post(f"{server.url}/v1/jobs", headers={"Authorization": f"Bearer {ADMIN}"},
                   json={"name": "bad name!", "gpus": -1, "estimated_duration": "soon", "colour": "red"})
    assert r.status_code == 422
    fields = {tuple(d["loc"][1:]) for d in r.json()["detail"]}
    assert {("name",), ("command",), ("gpus",), ("estimated_duration",), ("colour",)} <= fields
    r = httpx.post(f"{server.url}/v1/jobs", headers={"Authorization": f"Bearer {ADMIN}",
                                                      "Content-Type": "application/json"}, content=b"{not json")
    assert r.status_code == 422
    assert len(c.jobs(limit=1000)) == before


def test_cordoned_and_drained_nodes_take_no_new_work(server: Server) -> None:
    c = server.client()
    c.node_action("leaf-a-n0", "drain", "bad fan")
    job = c.wait(c.submit({"name": "one", "command": "true", "gpus": 8})["id"])
    assert job["placement"] == [{"node": "leaf-a-n1", "gpus": list(range(8))}]
    nodes = {n["name"]: n for n in c.nodes()}
    assert (nodes["leaf-a-n0"]["state"], nodes["leaf-a-n0"]["reason"]) == ("DRAINED", "bad fan")
    gang = c.submit({"name": "gang", "command": "true", "gpus": 16, "gpus_per_node": 8})
    wait_for(lambda: [q["reason"] for q in c.queue()] ==  # a pass kept it waiting
             ["capacity: needs 16 GPUs, 8 free (8 more on nodes out of service)"])
    assert c.job(gang["id"])["state"] == "PENDING"
    c.node_action("leaf-a-n0", "uncordon")
    assert c.wait(gang["id"])["state"] == "COMPLETED"
    with pytest.raises(ApiError) as e:
        c.node_action("nope", "cordon")
    assert e.value.status == 404


def test_kill_9_then_restart_loses_nothing_and_runs_nothing_twice(server: Server) -> None:
    c = server.client()
    # Each attempt says so on stderr (kept across attempts); a job run twice would say it twice.
    mark = "echo attempt $NEOCLOUD_ATTEMPT >&2"
    # The survivor runs until the test lets it end (a file in its work directory), after the restart.
    survivor = c.submit({"name": "survivor", "gpus": 8, "command":
                         f"{mark}; while [ ! -e go ]; do sleep 0.05; done; echo finished"})
    quick = c.submit({"name": "quick", "gpus": 4, "command": mark})
    waiting = c.submit({"name": "waiting", "gpus": 16, "gpus_per_node": 8, "command": mark})
    wait_for(lambda: c.job(survivor["id"])["state"] == "RUNNING" and c.job(quick["id"])["state"] == "COMPLETED")
    server.kill9()
    server.start()
    c = server.client()
    wait_for(lambda: "adopted" in [e["kind"] for e in c.events(survivor["id"])])
    (server.data_dir / "work" / str(survivor["id"]) / "go").touch()
    assert c.wait(survivor["id"])["state"] == "COMPLETED"
    assert c.logs(survivor["id"])["text"] == "finished\n"
    assert c.wait(quick["id"])["state"] == "COMPLETED"
    assert c.wait(waiting["id"])["state"] == "COMPLETED"
    for j in (survivor, quick, waiting):
        assert c.logs(j["id"], stream="stderr")["text"] == "attempt 1\n"
    assert c.logs(waiting["id"], rank=1, stream="stderr")["text"] == "attempt 1\n"
    kinds = [e["kind"] for e in c.events(survivor["id"])]
    assert kinds == ["submitted", "started", "adopted", "completed"]


def test_a_job_whose_processes_vanished_while_down_is_requeued(server: Server) -> None:
    c = server.client()
    job = c.submit({"name": "victim", "gpus": 1, "command": "sleep $((12 / NEOCLOUD_ATTEMPT / NEOCLOUD_ATTEMPT - 2))"})
    pids = wait_for(lambda: _pids(server, job["id"]))
    server.kill9()
    os.killpg(pids[0], 9)  # the machine lost it while the controller was down
    wait_for(lambda: not _alive(pids[0]))
    server.start()
    c = server.client()
    done = c.wait(job["id"])
    assert (done["state"], done["attempts"]) == ("COMPLETED", 2)
    assert "requeued" in [e["kind"] for e in c.events(job["id"])]


def test_metrics_and_audit(server: Server) -> None:
    c = server.client()
    c.create_tenant("team-a")
    c.wait(c.submit({"name": "m", "command": "true", "tenant": "team-a"})["id"])
    text = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {ADMIN}"}).text
    assert 'neocloud_jobs_finished_total{state="COMPLETED"} 1.0' in text
    assert "neocloud_queue_depth" in text and "neocloud_fleet_gpus 16.0" in text
    entries = wait_for(lambda: c.audit() if len(c.audit()) == 2 else None)
    assert [(e["actor"], e["method"], e["path"], e["status"]) for e in entries[::-1]] == [
        ("admin", "POST", "/v1/tenants", 201), ("admin", "POST", "/v1/jobs", 201)]
    httpx.post(f"{server.url}/v1/tenants", json={"name": "x"})
    latest = wait_for(lambda: c.audit()[0] if len(c.audit()) == 3 else None)
    assert (latest["actor"], latest["status"], latest["client"]) == ("anonymous", 401, "127.0.0.1")
    server.stop()
    server.start()
    assert len(server.client().audit()) == 3  # kept across restarts


def test_nul_characters_are_refused_not_stored(shared_server: Server) -> None:
    """PostgreSQL text cannot hold NUL: every field that reaches the store refuses it up front."""
    server = shared_server
    auth = {"Authorization": f"Bearer {ADMIN}"}
    assert httpx.get(f"{server.url}/v1/jobs", params={"tenant": "a\x00b"}, headers=auth).status_code == 422
    assert httpx.post(f"{server.url}/v1/nodes/leaf-a-n0/cordon", json={"reason": "a\x00b"},
                      headers=auth).status_code == 422
    assert httpx.post(f"{server.url}/v1/tenants/default/tokens", json={"label": "a\x00b"},
                      headers=auth).status_code == 422
    assert httpx.post(f"{server.url}/v1/jobs", json={"name": "n", "command": "true", "env": {"A": "\x00"}},
                      headers=auth).status_code == 422
    assert server.client().health()["status"] == "ok"
