"""The Ray head crashed and restarted under a running `neocloud up --backend ray`, over a real Ray
cluster: the server keeps answering (degraded while the head is away), reconnects by itself once
it is back, and loses and duplicates nothing. A restarted head is a new cluster: the Ray jobs of
the old one are gone with their drivers, so a job that ran there is requeued, as after a node
failure, and runs again once, never beside its lost attempt."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from tests.api.conftest import Server, serving, wait_for
from tests.backends.ray_cluster import RayCluster, available

pytestmark = pytest.mark.skipif(available() is not None, reason=str(available()))
T = TypeVar("T")


def _health(srv: Server) -> dict:
    return httpx.get(f"{srv.url}/healthz", timeout=5).json()


def _quick(call: Callable[[], T]) -> T:
    """The call's answer, which must come at once: the API does not wait on the backend."""
    started = time.monotonic()
    answer = call()
    assert time.monotonic() - started < 2, "the API hung on the backend"
    return answer


def test_the_ray_head_restarted_under_the_server(tmp_path: Path) -> None:
    (tmp_path / "ray").mkdir()
    cluster = RayCluster(tmp_path / "ray")
    work = tmp_path / "work"  # the ranks run on this host: they see the test's files
    work.mkdir()
    go = work / "go"
    try:
        cluster.start()
        with serving(Server(tmp_path / "data", None, backend="ray", env={"RAY_ADDRESS": cluster.address})) as srv:
            c = srv.client()
            # A gang on both nodes. Each rank holds its lock for as long as it runs: a rank that
            # finds its lock taken (a lost attempt still running) fails, and with it the job.
            survivor = c.submit({"name": "survivor", "gpus": 2, "gpus_per_node": 1, "command":
                                 f"exec 9>{work}/rank-$NEOCLOUD_NODE_RANK.lock; flock -n 9 || exit 9; "
                                 f"echo attempt $NEOCLOUD_ATTEMPT; while [ ! -e {go} ]; do sleep 0.1; done"})

            def ranks_say(text: str) -> bool:
                return all(c.logs(survivor["id"], rank=r)["text"] == text for r in (0, 1))

            wait_for(lambda: ranks_say("attempt 1\n"), timeout=60)  # both ranks run in Ray

            cluster.crash_head()
            health = wait_for(lambda: (h := _health(srv))["status"] == "degraded" and h, timeout=30)
            assert "ray" in health["degraded"]["backend"]["reason"]
            during = _quick(lambda: c.submit({"name": "during", "gpus": 1, "command": "echo ran"}))
            assert during["state"] in ("PENDING", "RUNNING")  # accepted: it waits for Ray
            assert _quick(lambda: c.job(survivor["id"]))["state"] == "RUNNING"  # as far as anyone can tell
            assert len(_quick(c.jobs)) == 2

            cluster.restart_head()  # a new cluster: the worker node rejoins it
            wait_for(lambda: _health(srv)["status"] == "ok", timeout=30)
            wait_for(lambda: c.job(survivor["id"])["state"] in ("COMPLETED", "FAILED", "CANCELLED")
                     or ranks_say("attempt 1\nattempt 2\n"), timeout=60)
            assert c.job(survivor["id"])["state"] == "RUNNING", c.events(survivor["id"])  # requeued, running again
            go.touch()
            done = c.wait(survivor["id"], timeout=60)
            assert (done["state"], done["attempts"], done["exit_code"]) == ("COMPLETED", 2, 0), c.events(survivor["id"])
            kinds = [e["kind"] for e in c.events(survivor["id"])]
            assert kinds == ["submitted", "started", "interrupted", "requeued", "started", "completed"], kinds
            assert "lost" in c.events(survivor["id"])[2]["message"]

            done = c.wait(during["id"], timeout=60)
            assert done["state"] == "COMPLETED", c.events(during["id"])
            assert c.logs(during["id"])["text"] == "ran\n"  # once: the starts Ray refused ran nothing
            assert sorted(j["id"] for j in c.jobs()) == [survivor["id"], during["id"]]  # none lost, none doubled
            assert _health(srv)["status"] == "ok"
    finally:
        cluster.stop()
