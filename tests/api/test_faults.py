"""Faults under a running server, over real components: its PostgreSQL restarted, Slurm's
controller killed for 30 s. The server keeps answering (saying what fails), recovers by itself
once the component is back, and loses and duplicates nothing."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from neocloud.client import ApiError
from tests.api.conftest import ADMIN, FLEET, Server, serving, wait_for

ROOT = Path(__file__).resolve().parents[2]
PGCTL = ROOT / ".ci" / "postgres"


def _health(srv: Server) -> dict:
    return httpx.get(f"{srv.url}/healthz", timeout=5).json()


@contextmanager
def own_postgres() -> Iterator[tuple[str, Path]]:
    """A PostgreSQL of this test's own, so that stopping it disturbs no other test."""
    if not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")) or os.geteuid() != 0:
        pytest.skip("needs Debian's PostgreSQL and root (.ci/run installs it)")
    d = Path(tempfile.mkdtemp(prefix="neocloud-pg-"))  # where the postgres user can reach it
    d.chmod(0o755)
    try:
        url = subprocess.run([str(PGCTL), "start", str(d / "pg")], capture_output=True, text=True,
                             check=True).stdout.strip()
        yield url, d / "pg"
    finally:
        if (d / "pg" / "data" / "postmaster.pid").exists():
            subprocess.run([str(PGCTL), "stop", str(d / "pg")], check=False)
        shutil.rmtree(d, ignore_errors=True)


def test_postgresql_restarted_under_the_server(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEET)
    with own_postgres() as (url, pg), \
            serving(Server(tmp_path / "data", url, backend="emulated", args=("--fleet", str(fleet)))) as srv:
        c = srv.client()
        # Long enough to run through the outage; short enough to end soon after it.
        jobs = [c.submit({"name": f"j{i}", "gpus": 4, "command": "train", "estimated_duration": 8})
                for i in range(4)]
        wait_for(lambda: all(c.job(j["id"])["state"] == "RUNNING" for j in jobs))
        subprocess.run([str(PGCTL), "stop", str(pg)], check=True)
        health = wait_for(lambda: (h := _health(srv))["status"] == "unavailable" and h)
        assert "store" in health["degraded"]
        with pytest.raises(ApiError) as refused:  # refused at once, with the reason: not a hang, not a 500
            c.submit({"name": "late", "command": "x"})
        assert refused.value.status == 503
        assert httpx.get(f"{srv.url}/v1/jobs", headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 503
        subprocess.run([str(PGCTL), "resume", str(pg)], check=True)
        wait_for(lambda: _health(srv)["status"] == "ok", timeout=60)
        after = c.submit({"name": "after", "gpus": 1, "command": "x", "estimated_duration": 0.5})
        for j in [*jobs, after]:
            done = c.wait(j["id"])
            assert (done["state"], done["attempts"]) == ("COMPLETED", 1), done
        assert len(c.jobs(limit=100)) == 5  # none lost, none made twice


def _slurmctld_pid(cluster) -> int:  # noqa: ANN001 - tests.backends.slurm_cluster.SlurmCluster
    return int((cluster.root / "run" / "slurmctld.pid").read_text().split()[0])


def test_slurmctld_killed_for_30_s(tmp_path: Path, slurm_cluster) -> None:  # noqa: ANN001
    from tests.backends.slurm_cluster import slurm_server

    with slurm_server(tmp_path, slurm_cluster) as srv:
        c = srv.client()
        # Runs through the outage (slurmd keeps it), and ends once the test lets it.
        survivor = c.submit({"name": "survivor", "gpus": 8, "command": "echo attempt $NEOCLOUD_ATTEMPT; "
                                                                        "while [ ! -e go ]; do sleep 0.1; done"})
        wait_for(lambda: "attempt" in c.logs(survivor["id"])["text"], timeout=60)  # running in Slurm
        # ... and slurmctld has saved that it runs: killed before, it would start the job again itself.
        running_since = time.time()
        state = slurm_cluster.root / "spool" / "ctld" / "job_state"
        wait_for(lambda: state.exists() and state.stat().st_mtime > running_since, timeout=60)
        os.kill(_slurmctld_pid(slurm_cluster), signal.SIGKILL)
        killed = time.monotonic()
        during = c.submit({"name": "during", "gpus": 1, "command": "echo attempt $NEOCLOUD_ATTEMPT"})
        assert during["state"] in ("PENDING", "RUNNING")  # accepted: it will wait for the engine
        health = wait_for(lambda: (h := _health(srv))["status"] == "degraded" and h, timeout=90)
        assert "backend" in health["degraded"]
        assert c.job(survivor["id"])["state"] == "RUNNING", c.events(survivor["id"])  # as the server knew it
        wait_for(lambda: time.monotonic() - killed >= 30 and _health(srv)["status"] == "degraded", timeout=60)
        subprocess.run(["slurmctld"], env=slurm_cluster.env, check=True, timeout=30)  # recovers its saved state
        wait_for(lambda: _health(srv)["status"] == "ok", timeout=90)
        (Path(srv.args[1]) / "jobs" / str(survivor["id"]) / "go").touch()  # its work directory
        for j in (survivor, during):
            done = c.wait(j["id"], timeout=120)
            assert done["state"] == "COMPLETED", c.events(j["id"])
            assert c.logs(j["id"])["text"].count("attempt") == 1  # ran once
        assert c.job(survivor["id"])["attempts"] == 1, c.events(survivor["id"])

