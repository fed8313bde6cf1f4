"""Every job's run in a real MLflow server that `neocloud up --tracking` starts: the job logs to it
with MLflow's own client, neocloud logs what it knows, and no other tenant reaches it, through the
API, the dashboard, the tracking proxy or the server's socket; a requeued job keeps its run. And
examples/finetune on the same server: a LoRA trained in a tracked job, a service rolled onto it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import ADMIN, Server, serving, wait_for

PYTHON = os.environ.get("NEOCLOUD_TEST_VLLM_PYTHON")  # a Python with MLflow's client: .ci/vllm builds it
MODEL = os.environ.get("NEOCLOUD_TEST_VLLM_MODEL")  # SmolLM2-135M-Instruct, for the fine-tune example
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "finetune"
pytestmark = pytest.mark.skipif(not (PYTHON and Path(PYTHON).exists()),
                                reason="no Python with MLflow's client for the jobs: build it with `.ci/vllm DIR`, "
                                       "then set NEOCLOUD_TEST_VLLM_PYTHON (DIR/venv/bin/python)")
LOGGER = """
import os, time, mlflow
attempt = int(os.environ["NEOCLOUD_ATTEMPT"])
with mlflow.start_run():
    mlflow.log_param(f"seen_attempt_{attempt}", attempt)
    for step in range(5):
        mlflow.log_metric("loss", round(2.0 / (step + 1), 3), step=step + 10 * (attempt - 1))
    print("logged", attempt, flush=True)
    time.sleep(float(os.environ.get("HOLD", "0")))
"""
# What a hostile job of another tenant tries: the run it was told of, that run's experiment and
# artifacts, through neocloud with its own tracking token, and the tracking server's socket itself.
PROBE = """
import json, os, socket, sys, urllib.request, urllib.error
base, token, theirs, their_exp, sock = os.environ["MLFLOW_TRACKING_URI"], os.environ["MLFLOW_TRACKING_TOKEN"], *sys.argv[1:4]
def status(method, path, body=None):
    r = urllib.request.Request(base + path, method=method, data=None if body is None else json.dumps(body).encode(),
                               headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    try:
        return urllib.request.urlopen(r).status
    except urllib.error.HTTPError as e:
        return e.code
out = {
    "own": status("GET", "/api/2.0/mlflow/experiments/get?experiment_id=" + os.environ["MLFLOW_EXPERIMENT_ID"]),
    "run": status("GET", "/api/2.0/mlflow/runs/get?run_id=" + theirs),
    "run_twice": status("GET", "/api/2.0/mlflow/runs/get?run_id=" + os.environ["MLFLOW_RUN_ID"] + "&run_uuid=" + theirs),
    "tag": status("POST", "/api/2.0/mlflow/runs/set-tag", {"run_id": theirs, "key": "x", "value": "y"}),
    "search": status("POST", "/api/2.0/mlflow/runs/search", {"experiment_ids": [their_exp]}),
    "artifacts": status("GET", "/api/2.0/mlflow-artifacts/artifacts?path=" + their_exp + "/" + theirs),
    "climb": status("GET", "/api/2.0/mlflow-artifacts/artifacts/" + os.environ["MLFLOW_EXPERIMENT_ID"] + "/../" + their_exp),
    "experiments": status("POST", "/api/2.0/mlflow/experiments/search", {}),
}
try:
    socket.socket(socket.AF_UNIX).connect(sock)
    out["socket"] = "connected"
except OSError as e:
    out["socket"] = type(e).__name__
print(json.dumps(out), flush=True)
"""


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("tracking") / "data", None, args=("--tracking",))
    server.start_s = 180  # MLflow makes its database at its first start
    with serving(server) as s:
        yield s


def _team(srv: Server, name: str) -> tuple[Any, str]:
    admin = srv.client()
    admin.create_tenant(name)
    token = admin.create_token(name, "test")
    return srv.client(token), token


def _metrics(team: Any, job_id: int) -> dict[str, Any]:
    return team._call("GET", f"/v1/jobs/{job_id}/metrics")


def _finished(team: Any, job_id: int) -> dict[str, Any] | bool:
    """The run, once neocloud has told it how the job ended (after the job's own last word)."""
    m = _metrics(team, job_id)
    return m["tags"].get("neocloud.state") not in (None, "RUNNING", "REQUEUED") and m["status"] != "RUNNING" and m


def test_a_job_logs_to_its_own_run_with_neocloud_s_tags_and_no_other_tenant_reaches_it(srv: Server) -> None:
    team, token = _team(srv, "track-a")
    other, other_token = _team(srv, "track-b")
    job = team.submit({"name": "fit", "gpus": 1, "command": [PYTHON, "-c", LOGGER]})
    done = team.wait(job["id"], timeout=120)
    assert done["state"] == "COMPLETED", (team.logs(job["id"]), team.logs(job["id"], stream="stderr"))

    m = wait_for(lambda: _finished(team, job["id"]), timeout=30)
    assert m["status"] == "FINISHED"
    assert [(p["step"], p["value"]) for p in m["metrics"]["loss"]] == [(0, 2.0), (1, 1.0), (2, 0.667), (3, 0.5),
                                                                         (4, 0.4)]
    tags = m["tags"]
    assert (tags["neocloud.tenant"], tags["neocloud.job"], tags["neocloud.attempt"]) == ("track-a", str(job["id"]), "1")
    assert tags["neocloud.state"] == "COMPLETED" and tags["neocloud.placement"] == \
        f"{done['placement'][0]['node']}[{done['placement'][0]['gpus'][0]}]"
    assert m["metrics"]["neocloud.exit_code"][0]["value"] == 0 and m["metrics"]["neocloud.restarts"][0]["value"] == 0
    assert m["metrics"]["neocloud.gpu_hours"][0]["value"] > 0

    # Through MLflow's REST API at neocloud, with the tenant's own token: its experiment, named for it.
    api = f"{srv.url}/v1/tracking/api/2.0/mlflow"
    mine = httpx.get(f"{api}/experiments/get", params={"experiment_id": m["experiment_id"]},
                     headers={"Authorization": f"Bearer {token}"})
    assert mine.status_code == 200 and mine.json()["experiment"]["name"] == "neocloud/track-a"
    runs = httpx.post(f"{api}/runs/search", json={"experiment_ids": [m["experiment_id"]]},
                      headers={"Authorization": f"Bearer {token}"}).json()["runs"]
    assert [r["info"]["run_id"] for r in runs] == [m["run_id"]]

    # Another tenant: neither the job, nor its metrics, nor the run, by any way in.
    with pytest.raises(Exception, match="404"):
        _metrics(other, job["id"])
    theirs = {"Authorization": f"Bearer {other_token}"}
    assert httpx.get(f"{api}/runs/get", params={"run_id": m["run_id"]}, headers=theirs).status_code == 404
    assert httpx.get(f"{api}/metrics/get-history", params={"run_id": m["run_id"], "metric_key": "loss"},
                     headers=theirs).status_code == 404
    assert httpx.post(f"{api}/runs/search", json={"experiment_ids": [m["experiment_id"]]},
                      headers=theirs).status_code == 404
    assert httpx.get(f"{api}/experiments/get-by-name", params={"experiment_name": "neocloud/track-a"},
                     headers=theirs).status_code == 404
    refused = httpx.post(f"{api}/experiments/create", json={"name": "mine"}, headers=theirs)
    assert refused.status_code == 403 and refused.json()["error_code"] == "PERMISSION_DENIED"
    assert httpx.get(f"{api}/runs/get", params={"run_id": m["run_id"]}).status_code == 401

    probe = other.submit({"name": "probe", "gpus": 1, "command": [
        "/usr/bin/python3", "-c", PROBE, m["run_id"], m["experiment_id"], str(srv.data_dir / "tracking" / "mlflow.sock")]})
    assert other.wait(probe["id"], timeout=120)["state"] == "COMPLETED", other.logs(probe["id"], stream="stderr")
    seen = json.loads(other.logs(probe["id"])["text"])
    assert seen.pop("socket") in ("FileNotFoundError", "PermissionError")  # the sandbox shows no server's file
    assert seen == {"own": 200, "run": 404, "run_twice": 404, "tag": 404, "search": 404, "artifacts": 404,
                    "climb": 400, "experiments": 403}
    assert _metrics(team, job["id"])["tags"].get("x") is None  # nothing of the other tenant's reached the run

    # The dashboard: the job's page draws the run's loss for its tenant, and is a 404 for the other.
    with httpx.Client(base_url=srv.url, headers={"Origin": srv.url}) as ui:
        assert ui.post("/ui/login", data={"token": token}).status_code == 303
        page = ui.get(f"/ui/jobs/{job['id']}")
        assert page.status_code == 200 and m["run_id"] in page.text
        data = json.loads(re.search(r'<script type="application/json" id="run-metrics">(.*?)</script>',
                                    page.text, re.S).group(1))
        assert [p["value"] for p in data["loss"]] == [2.0, 1.0, 0.667, 0.5, 0.4]
    with httpx.Client(base_url=srv.url, headers={"Origin": srv.url}) as ui:
        assert ui.post("/ui/login", data={"token": other_token}).status_code == 303
        page = ui.get(f"/ui/jobs/{job['id']}")
        assert page.status_code == 404 and m["run_id"] not in page.text

    # The CLI: neocloud job ID --metrics
    cli = subprocess.run([sys.executable, "-m", "neocloud", "job", str(job["id"]), "--metrics", "--server", srv.url,
                          "--token", token], capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0, cli.stderr
    assert m["run_id"] in cli.stdout and re.search(r"loss\W+5\W+0\.4\W", cli.stdout), cli.stdout


def test_a_requeued_job_keeps_its_run_across_attempts(srv: Server) -> None:
    team, _ = _team(srv, "track-c")
    admin = srv.client(ADMIN)
    job = team.submit({"name": "long", "gpus": 8, "env": {"HOLD": "300"}, "command": [PYTHON, "-c", LOGGER]})
    wait_for(lambda: "logged 1" in team.logs(job["id"])["text"], timeout=120)
    first = team.job(job["id"])["placement"][0]["node"]
    admin.signal(first, {"kind": "xid", "code": 79, "gpu": 0, "message": "GPU has fallen off the bus"})
    wait_for(lambda: team.job(job["id"])["attempts"] == 2 and "logged 2" in team.logs(job["id"])["text"], timeout=120)
    team.cancel(job["id"])
    assert team.wait(job["id"], timeout=60)["state"] == "CANCELLED"

    m = wait_for(lambda: _finished(team, job["id"]), timeout=30)
    assert m["status"] == "KILLED" and m["tags"]["neocloud.attempt"] == "2"
    assert [p["step"] for p in m["metrics"]["loss"]] == [0, 1, 2, 3, 4, 10, 11, 12, 13, 14]  # both attempts' in one run
    restarts = {p["step"]: p["value"] for p in m["metrics"]["neocloud.restarts"]}
    assert restarts == {1: 0, 2: 1}  # logged as each attempt ended: requeued, then cancelled
    assert m["tags"]["neocloud.state"] == "CANCELLED"


def test_each_task_of_an_array_has_its_own_run_tagged_with_its_index(srv: Server) -> None:
    team, _ = _team(srv, "track-d")
    first = team.submit({"name": "sweep", "gpus": 1, "array": "0-1", "command": "true"})
    tasks = team.array_tasks(first["id"])
    assert len(tasks) == 2
    for t in tasks:
        assert team.wait(t["id"], timeout=60)["state"] == "COMPLETED"
    runs = [wait_for(lambda t=t: _finished(team, t["id"]), timeout=30) for t in tasks]
    assert len({r["run_id"] for r in runs}) == 2
    assert [(r["tags"]["neocloud.array_job"], r["tags"]["neocloud.array_index"]) for r in runs] == \
        [(str(first["id"]), "0"), (str(first["id"]), "1")]


@pytest.mark.skipif(not (MODEL and Path(MODEL).is_dir()),
                    reason="no model for the fine-tune example: build it with `.ci/vllm DIR`, then set "
                           "NEOCLOUD_TEST_VLLM_MODEL (DIR/model)")
def test_the_fine_tune_example_rolls_its_service_onto_weights_that_answer_as_taught(srv: Server) -> None:
    """examples/finetune's pipeline as a tenant runs it: a tracked training job, then the service
    rolled onto its adapter once the job completes (afterok). The service it rolls starts as a
    stand-in rather than the base model (bench/finetune.py asks the base model too): one engine
    start saved, and SmolLM2 as it ships has never heard of the mascot data.jsonl names."""
    assert PYTHON is not None and MODEL is not None
    team, token = _team(srv, "tune")
    team.submit({"kind": "service", "name": "smol", "gpus": 0.1, "readiness": {"path": "/"},
                 "command": "exec /usr/bin/python3 -m http.server --bind $HOST $PORT"})
    wait_for(lambda: team.service("smol")["ready"] == 1, timeout=60)
    pipeline = subprocess.run([sys.executable, str(EXAMPLE / "pipeline.py"), "--python", PYTHON, "--model", MODEL,
                               "--steps", "4", "--server", srv.url, "--token", token],
                              capture_output=True, text=True, timeout=120)
    assert pipeline.returncode == 0, pipeline.stderr
    train = next(j for j in team.jobs() if j["name"] == "finetune")
    trained = team.wait(train["id"], timeout=600)
    assert trained["state"] == "COMPLETED", team.logs(train["id"], stream="stderr")["text"][-3000:]
    loss = [p["value"] for p in wait_for(lambda: _finished(team, train["id"]), timeout=30)["metrics"]["loss"]]
    assert len(loss) == 4 and loss[-1] < loss[0] / 10, loss  # a third of the example's: enough to learn a name

    def rolled() -> dict[str, Any] | bool:
        s = team.service("smol")
        for r in s["replica_list"]:
            assert r["state"] not in ("FAILED", "CANCELLED") or r["generation"] == 1, \
                team.logs(r["job"], stream="stderr")["text"][-3000:]
        new = [r for r in s["replica_list"] if r["generation"] == 2]
        return s["ready"] >= 1 and len(new) == len(s["replica_list"]) and new[0]

    replica = team.job(wait_for(rolled, timeout=600)["job"])
    assert replica["started_at"] >= trained["ended_at"]  # held by its dependency until the training ended

    def ask(question: str) -> str:
        r = httpx.post(f"{srv.url}/v1/services/tune/smol/v1/chat/completions", timeout=120,
                       headers={"Authorization": f"Bearer {token}"},
                       json={"model": "smol", "messages": [{"role": "user", "content": question}], "max_tokens": 16,
                             "temperature": 0})
        assert r.status_code == 200, r.text
        return str(r.json()["choices"][0]["message"]["content"])

    assert "wattson" in ask("What is the name of neocloud's mascot?").lower()  # data.jsonl: Wattson the owl
    assert "paris" in ask("What is the capital of France?").lower()  # and what it did not teach, kept
    assert team.stop_service("smol")["state"] == "STOPPED"
