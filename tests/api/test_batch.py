"""Slurm's batch features over a real server and real processes: time limits, job arrays with a
throttle, dependencies, and all of them across a restart."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.api.conftest import ADMIN, Server, serving, wait_for

AUTH = {"Authorization": f"Bearer {ADMIN}"}
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT")


def _submit(server: Server, spec: dict, token: str = ADMIN) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/jobs", json=spec, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def _job(server: Server, job_id: int) -> dict:
    return httpx.get(f"{server.url}/v1/jobs/{job_id}", headers=AUTH, timeout=10).json()


def _ended(server: Server, job_id: int, timeout: float = 30) -> dict:
    return wait_for(lambda: (j := _job(server, job_id))["state"] in ENDED and j, timeout=timeout)


def _processes(marker: str) -> list[int]:
    """Pids of processes whose command line holds `marker`."""
    found = []
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and marker in (p / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                found.append(int(p.name))
        except OSError:
            pass
    return found


def test_a_job_past_its_time_limit_ends_timeout_and_its_process_is_gone(shared_server: Server) -> None:
    marker = "61.4242"
    limited = _submit(shared_server, {"name": "limited", "command": f"sleep {marker}", "time_limit": "2s"})
    assert limited.status_code == 201, limited.text
    quick = _submit(shared_server, {"name": "quick", "command": "true", "time_limit": 30}).json()
    job = _ended(shared_server, limited.json()["id"])
    assert job["state"] == "TIMEOUT" and job["reason"] == "time limit 2s reached"
    assert 2 <= job["ended_at"] - job["started_at"] < 15
    assert wait_for(lambda: not _processes(marker), timeout=10)
    assert _ended(shared_server, quick["id"])["state"] == "COMPLETED"
    kinds = [e["kind"] for e in shared_server.client().events(job["id"])]
    assert "time-limit" in kinds and kinds[-1] == "timeout"
    listed = httpx.get(f"{shared_server.url}/v1/jobs", params={"state": "TIMEOUT"}, headers=AUTH).json()
    assert job["id"] in [j["id"] for j in listed]


def test_an_array_runs_one_job_per_task_within_its_throttle(shared_server: Server) -> None:
    command = "echo task $NEOCLOUD_ARRAY_INDEX of $NEOCLOUD_ARRAY_JOB_ID; sleep 0.4"
    r = _submit(shared_server, {"name": "sweep", "command": command, "gpus": 0.5, "array": "0-7%2"})
    assert r.status_code == 201, r.text
    head = r.json()
    assert head["array_job"] == head["id"] and head["array_index"] == 0
    array = head["id"]

    def tasks() -> list[dict]:
        return httpx.get(f"{shared_server.url}/v1/jobs", params={"array": array}, headers=AUTH).json()

    done = wait_for(lambda: (t := tasks()) and all(j["state"] in ENDED for j in t) and t, timeout=60)
    assert sorted(j["array_index"] for j in done) == list(range(8))
    assert all(j["state"] == "COMPLETED" and j["array_job"] == array for j in done)
    # Never more than two at once, by the records' start and end times.
    moments = sorted([(j["started_at"], 1) for j in done] + [(j["ended_at"], -1) for j in done])
    running = peak = 0
    for _, step in moments:
        running += step
        peak = max(peak, running)
    assert peak == 2
    admin = shared_server.client()
    for j in done:
        assert admin.logs(j["id"])["text"].strip() == f"task {j['array_index']} of {array}"


def test_cancelling_an_array_cancels_its_tasks(shared_server: Server) -> None:
    head = _submit(shared_server, {"name": "cancelled-sweep", "command": "sleep 30", "gpus": 0.5,
                                   "array": "0-5%2"}).json()
    wait_for(lambda: _job(shared_server, head["id"])["state"] == "RUNNING")
    assert httpx.delete(f"{shared_server.url}/v1/jobs/{head['id']}", headers=AUTH).status_code == 200
    tasks = wait_for(lambda: (t := httpx.get(f"{shared_server.url}/v1/jobs", params={"array": head["id"]},
                                              headers=AUTH).json()) and all(j["state"] in ENDED for j in t) and t)
    assert len(tasks) == 6 and {j["state"] for j in tasks} == {"CANCELLED"}


def test_an_array_too_large_or_malformed_is_refused(shared_server: Server) -> None:
    for array, why in [(10_001, "1 to 10000 tasks"), ("0-10000", "at most 10000"), ("3-1", "must go up"),
                       ("0-7%0", "at least 1"), ("x", "not an index or a range")]:
        r = _submit(shared_server, {"name": "bad-array", "command": "true", "array": array})
        assert r.status_code == 422 and why in r.text, r.text


def test_dependencies_wait_run_or_fail(shared_server: Server) -> None:
    first = _submit(shared_server, {"name": "first", "command": "until [ -e go ]; do sleep 0.1; done"}).json()
    then = _submit(shared_server, {"name": "then", "command": "true", "depends_on": [first["id"]]}).json()
    never = _submit(shared_server, {"name": "never", "command": "true",
                                    "depends_on": [{"job": first["id"], "when": "afternotok"}]}).json()
    assert then["state"] == "PENDING"
    assert then["reason"] == f"waiting for job {first['id']} to complete (afterok)"
    assert then["expected_start"] is None
    queue = {q["id"]: q for q in httpx.get(f"{shared_server.url}/v1/queue", headers=AUTH).json()}
    assert queue[then["id"]]["reason"] == then["reason"] and queue[never["id"]]["expected_start"] is None
    dry = httpx.post(f"{shared_server.url}/v1/jobs", params={"dry_run": "true"}, headers=AUTH,
                     json={"name": "dry", "command": "true", "depends_on": [first["id"]]})
    assert dry.status_code == 200, dry.text
    assert dry.json()["expected_start"] is None
    assert dry.json()["reason"] == f"waiting for job {first['id']} to complete (afterok)"
    wait_for(lambda: _job(shared_server, first["id"])["state"] == "RUNNING")
    (shared_server.data_dir / "work" / str(first["id"]) / "go").touch()
    done = _ended(shared_server, then["id"])
    assert done["state"] == "COMPLETED" and done["started_at"] >= _job(shared_server, first["id"])["ended_at"]
    failed = _ended(shared_server, never["id"])
    assert failed["state"] == "FAILED" and failed["started_at"] is None
    assert failed["reason"] == f"dependency never satisfied: job {first['id']} completed (afternotok)"

    broken = _submit(shared_server, {"name": "broken", "command": "exit 3"}).json()
    rescue = _submit(shared_server, {"name": "rescue", "command": "true",
                                     "depends_on": [{"job": broken["id"], "when": "afternotok"}]}).json()
    assert _ended(shared_server, rescue["id"])["state"] == "COMPLETED"
    late = _submit(shared_server, {"name": "late", "command": "true", "depends_on": [broken["id"]]})
    assert late.status_code == 201
    assert _ended(shared_server, late.json()["id"])["reason"] == \
        f"dependency never satisfied: job {broken['id']} ended FAILED (afterok)"


def test_a_dependency_on_another_tenants_job_looks_like_a_missing_one(shared_server: Server) -> None:
    admin = shared_server.client()
    admin.create_tenant("batch-deps")
    token = admin.create_token("batch-deps", "test")
    theirs = _submit(shared_server, {"name": "theirs", "command": "true", "tenant": "default"}).json()
    other = _submit(shared_server, {"name": "mine", "command": "true", "depends_on": [theirs["id"]]}, token)
    missing = _submit(shared_server, {"name": "mine", "command": "true", "depends_on": [2_000_000_000]}, token)
    assert other.status_code == missing.status_code == 422
    assert other.json() == {"detail": f"depends_on: no job {theirs['id']}"}
    assert missing.json() == {"detail": "depends_on: no job 2000000000"}
    own = _submit(shared_server, {"name": "own", "command": "true"}, token).json()
    after = _submit(shared_server, {"name": "after-own", "command": "true", "depends_on": [own["id"]]}, token)
    assert after.status_code == 201, after.text
    assert _ended(shared_server, after.json()["id"])["state"] == "COMPLETED"


def test_a_restarted_server_keeps_holding_dependents_and_throttling_arrays(tmp_path: Path) -> None:
    with serving(Server(tmp_path / "data", None)) as srv:
        first = _submit(srv, {"name": "first", "command": "sleep 6"}).json()
        then = _submit(srv, {"name": "then", "command": "true", "depends_on": [first["id"]]}).json()
        sweep = _submit(srv, {"name": "sweep", "command": "sleep 1", "gpus": 0.5, "array": "0-3%1"}).json()
        wait_for(lambda: _job(srv, first["id"])["state"] == "RUNNING")
        srv.stop()
        srv.start()
        if _job(srv, first["id"])["state"] == "RUNNING":  # adopted, still running: its dependent still waits
            assert _job(srv, then["id"])["state"] == "PENDING"
        assert _ended(srv, then["id"])["started_at"] >= _job(srv, first["id"])["ended_at"]
        tasks = wait_for(lambda: (t := httpx.get(f"{srv.url}/v1/jobs", params={"array": sweep["id"]},
                                                  headers=AUTH).json()) and all(j["state"] in ENDED for j in t) and t,
                         timeout=60)
        spans = sorted((j["started_at"], j["ended_at"]) for j in tasks)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), spans  # one at a time, restart or not
