"""Several servers on one PostgreSQL database: one leads, the others stand by; kill -9 of the
leader under load, and a standby leads within 15 s with every acknowledged job, none run twice."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx

from neocloud.client import Client
from neocloud.errors import NeocloudError
from tests.api.conftest import ADMIN, FLEET, Server, postgres_database, wait_for

TAKEOVER_S = 15.0


def _status(srv: Server) -> str:
    try:
        return httpx.get(f"{srv.url}/healthz", timeout=2).json()["status"]
    except httpx.TransportError:
        return "down"


def test_a_standby_takes_over_from_a_killed_leader_under_load(tmp_path: Path) -> None:
    database = postgres_database()
    fleet, jobs = tmp_path / "fleet.yaml", tmp_path / "jobs"
    fleet.write_text(FLEET)
    args = ("--fleet", str(fleet), "--jobs-dir", str(jobs))
    leader = Server(tmp_path / "a", database, backend="emulated", args=args)
    standby = Server(tmp_path / "b", database, backend="emulated", args=args)
    leader.start()
    standby.start(ready=("standby",))
    try:
        health = httpx.get(f"{standby.url}/healthz").json()
        assert health["status"] == "standby" and leader.url in health["leader"]
        # Work goes to the leader; a standby refuses it, saying where the leader is.
        refused = httpx.post(f"{standby.url}/v1/jobs", json={"name": "x", "command": "x"},
                             headers={"Authorization": f"Bearer {ADMIN}"})
        assert refused.status_code == 503 and leader.url in refused.json()["detail"]

        both = Client(f"{leader.url},{standby.url}", ADMIN)  # follows whichever leads
        acknowledged: list[int] = []
        stop = threading.Event()

        def submit() -> None:
            while not stop.is_set():
                try:
                    acknowledged.append(both.submit({"name": "load", "gpus": 1, "command": "x",
                                                     "estimated_duration": 2})["id"])
                except NeocloudError:
                    pass  # not acknowledged: during the takeover, neither server took it

        load = threading.Thread(target=submit)
        load.start()
        wait_for(lambda: len(acknowledged) >= 20)
        leader.kill9()
        killed = time.monotonic()
        wait_for(lambda: _status(standby) == "ok", timeout=TAKEOVER_S + 10, poll=0.05)
        took = time.monotonic() - killed
        count = len(acknowledged)
        wait_for(lambda: len(acknowledged) >= count + 20)  # the load goes on against the new leader
        stop.set()
        load.join()
        print(f"took the lead {took:.1f} s after the kill; {len(acknowledged)} jobs acknowledged")
        assert took < TAKEOVER_S, f"the standby took {took:.1f} s to lead"

        c = standby.client()
        for job_id in acknowledged:
            done = c.wait(job_id, timeout=120)
            assert (done["state"], done["attempts"]) == ("COMPLETED", 1), done
        known = {j["id"] for j in c.jobs(limit=1000)}
        assert set(acknowledged) <= known  # every acknowledged job is there
    finally:
        standby.stop()
        leader.stop()
