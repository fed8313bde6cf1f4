"""The Ray backend against a real Ray cluster on this host (a head and a worker, 8 fake GPUs each)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from neocloud.client import ApiError
from tests.api.conftest import Server, serving, wait_for
from tests.backends.ray_cluster import GPUS, RayCluster, available

pytestmark = pytest.mark.skipif(available() is not None, reason=str(available()))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    c = RayCluster(tmp_path_factory.mktemp("ray"))
    try:
        c.start()
        yield c
    finally:
        c.stop()


@pytest.fixture
def server(tmp_path: Path, cluster: RayCluster) -> Iterator[Server]:
    srv = Server(tmp_path / "data", None, backend="ray", env={"RAY_ADDRESS": cluster.address})
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def _ray_ids(cluster: RayCluster) -> dict[str, str]:
    """Ray node id by the name neocloud gives the node (the host, plus the id where hosts repeat)."""
    nodes = cluster.alive_nodes()
    return {f"{n['node_name']}-{n['node_id'][:8]}": n["node_id"] for n in nodes}


def _placement_group(cluster: RayCluster, name: str) -> dict | None:
    from ray.util.state import list_placement_groups

    groups = list_placement_groups(address=cluster.address, detail=True, filters=[("name", "=", name)])
    live = [g for g in groups if g.state == "CREATED"]
    return live[0].__dict__ if live else None


def _ray_name(server: Server, job_id: int) -> str:
    return f"neocloud-{(server.data_dir / 'jobs' / 'ray-instance').read_text()}-{job_id}-1"


def _running(marker: str) -> bool:
    return subprocess.run(["pgrep", "-f", marker], capture_output=True).returncode == 0


def test_the_cluster_is_the_fleet(server: Server, cluster: RayCluster) -> None:
    nodes = server.client().nodes()
    assert {n["name"]: n["gpus"] for n in nodes} == {name: GPUS for name in _ray_ids(cluster)}


def test_a_gang_runs_in_a_placement_group_on_the_nodes_chosen(server: Server, cluster: RayCluster) -> None:
    c = server.client()
    job = c.submit({"name": "gang", "gpus": 4, "gpus_per_node": 2, "env": {"STEP": "warmup"},
                    "command": "echo rank $NEOCLOUD_NODE_RANK of $NEOCLOUD_NUM_NODES sees $CUDA_VISIBLE_DEVICES $STEP;"
                               " echo $MASTER_ADDR:$MASTER_PORT >&2; sleep 4"})
    wait_for(lambda: c.job(job["id"])["state"] == "RUNNING")
    group = wait_for(lambda: _placement_group(cluster, _ray_name(server, job["id"])), timeout=30)
    ids = _ray_ids(cluster)
    chosen = [ids[p["node"]] for p in c.job(job["id"])["placement"]]
    assert [b["node_id"] for b in group["bundles"]] == chosen and len(set(chosen)) == 2
    assert all(b["unit_resources"]["GPU"] == 2 for b in group["bundles"])
    done = c.wait(job["id"], timeout=60)
    assert (done["state"], done["exit_code"]) == ("COMPLETED", 0)
    for rank in (0, 1):
        line = c.logs(job["id"], rank=rank)["text"]
        assert line.startswith(f"rank {rank} of 2 sees ") and line.endswith(" warmup\n")
        assert len(line.split(" sees ")[1].split()[0].split(",")) == 2  # two GPUs of its own
        master = c.logs(job["id"], rank=rank, stream="stderr")["text"]
        assert master == f"{cluster.alive_nodes()[0]['node_ip']}:{20_000 + job['id']}\n"  # one rendezvous for all


def test_cancel_stops_the_ray_job_and_its_processes(server: Server, cluster: RayCluster) -> None:
    c = server.client()
    marker = f"ray-cancel-{time.time_ns()}"
    job = c.submit({"name": "long", "gpus": 8, "command": f"sleep 300 # {marker}"})
    wait_for(lambda: _running(marker), timeout=30)
    c.cancel(job["id"])
    assert c.wait(job["id"], timeout=60)["state"] == "CANCELLED"
    wait_for(lambda: not _running(marker), timeout=30)
    from ray.job_submission import JobSubmissionClient

    assert JobSubmissionClient(cluster.address).get_job_status(_ray_name(server, job["id"])).value == "STOPPED"


def test_a_failing_rank_fails_the_gang_with_its_status(server: Server) -> None:
    c = server.client()
    job = c.submit({"name": "bad", "gpus": 2, "gpus_per_node": 1,
                    "command": "if [ $NEOCLOUD_NODE_RANK = 1 ]; then exit 7; fi; sleep 300"})
    done = c.wait(job["id"], timeout=60)
    assert (done["state"], done["exit_code"]) == ("FAILED", 7)


def test_a_restart_mid_job_loses_nothing(server: Server) -> None:
    c = server.client()
    job = c.submit({"name": "survivor", "gpus": 1, "command": "sleep 5; echo finished"})
    wait_for(lambda: c.job(job["id"])["state"] == "RUNNING")
    time.sleep(1)
    server.kill9()
    server.start()
    c = server.client()
    done = c.wait(job["id"], timeout=60)
    assert done["state"] == "COMPLETED" and done["attempts"] == 1
    assert c.logs(job["id"])["text"] == "finished\n"
    assert [e["kind"] for e in c.events(job["id"])] == ["submitted", "started", "adopted", "completed"]


def test_one_ray_cluster_is_one_trust_domain(tmp_path: Path, cluster: RayCluster) -> None:
    """Ray runs every task as one user: the backend serves one tenant unless told they trust each other."""
    for args, admitted in (((), False), (("--only-tenant", "lab"), False), (("--trust-tenants",), True)):
        srv = Server(tmp_path / f"data{len(args)}{admitted}", None, backend="ray",
                     env={"RAY_ADDRESS": cluster.address}, args=args)
        with serving(srv):
            c = srv.client()
            for name in ("lab", "other"):
                c.create_tenant(name)
            served = "lab" if args else "default"
            assert c.submit({"name": "mine", "tenant": served, "gpus": 1, "command": "true"})["tenant"] == served
            if admitted:
                assert c.submit({"name": "theirs", "tenant": "other", "gpus": 1, "command": "true"})["tenant"] == "other"
                continue
            with pytest.raises(ApiError) as e:
                c.submit({"name": "theirs", "tenant": "other", "gpus": 1, "command": "true"})
            assert e.value.status == 403 and "runs every task of every job as one Unix user" in str(e.value)
            assert f"serves one tenant, {served!r}" in str(e.value) and "--trust-tenants" in str(e.value)
            assert [j["tenant"] for j in c.jobs()] == [served]
