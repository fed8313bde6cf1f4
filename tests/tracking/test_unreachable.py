"""A tracking server that does not answer never holds a job back: the job runs untracked and the
service says it is degraded; bad tracking options are refused at start saying what to fix."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from neocloud.client import ApiError
from tests.api.conftest import ADMIN, Server, serving, wait_for


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again once this returns: nothing listens there


def test_jobs_run_untracked_while_the_tracking_server_is_down(tmp_path: Path) -> None:
    with serving(Server(tmp_path / "data", None, args=("--tracking-uri", f"http://127.0.0.1:{_closed_port()}"))) as srv:
        c = srv.client()
        job = c.submit({"name": "untracked", "gpus": 1, "command": "echo ran; env | grep -c ^MLFLOW_ || true"})
        assert c.wait(job["id"], timeout=60)["state"] == "COMPLETED"
        assert c.logs(job["id"])["text"] == "ran\n0\n"  # no tracking variables: there was no run to give it
        health = wait_for(lambda: (h := c.health())["status"] == "degraded" and h)
        assert "did not answer" in health["degraded"]["tracking"]["reason"]
        with pytest.raises(ApiError) as e:  # what is wrong, not a 500
            c.metrics(job["id"])
        assert e.value.status == 404 and "no run yet" in str(e.value)
        c.create_tenant("down")
        for token in (ADMIN, c.create_token("down")):  # through the proxy: unavailable, for now
            r = httpx.get(f"{srv.url}/v1/tracking/api/2.0/mlflow/runs/get", params={"run_id": "r"},
                          headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 503 and r.json()["error_code"] == "TEMPORARILY_UNAVAILABLE", r.text


def test_bad_tracking_options_are_refused_at_start(tmp_path: Path) -> None:
    for args, says in ((["--tracking-uri", "localhost:5000"], "must be the http:// or https:// URL"),
                       (["--tracking", "--tracking-uri", "http://x"], "give one of them")):
        res = subprocess.run([sys.executable, "-m", "neocloud", "up", "--data-dir", str(tmp_path / "d"), *args],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode != 0 and says in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_only_an_artifact_may_be_larger_than_the_api_s_limit(tmp_path: Path) -> None:
    with serving(Server(tmp_path / "data", None, args=("--tracking-uri", f"http://127.0.0.1:{_closed_port()}"))) as srv:
        big = b'{"run_id": "r", "metrics": [' + b" " * (3 << 20) + b"]}"  # over the 2 MiB a request may send
        r = httpx.post(f"{srv.url}/v1/tracking/api/2.0/mlflow/runs/log-batch", content=big,
                       headers={"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"})
        assert r.status_code == 413 and "at most" in r.json()["message"]
