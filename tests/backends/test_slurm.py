"""The Slurm backend against a real Slurm cluster on this host (four slurmd, two leaf switches)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.conftest import Server, wait_for
from tests.backends.slurm_cluster import SlurmCluster, available, slurm_server

pytestmark = pytest.mark.skipif(available() is not None, reason=str(available()))
LEAF = {"gpu1": "leaf1", "gpu2": "leaf1", "gpu3": "leaf2", "gpu4": "leaf2"}


@pytest.fixture
def server(tmp_path: Path, slurm_cluster: SlurmCluster) -> Iterator[Server]:
    with slurm_server(tmp_path, slurm_cluster) as srv:
        yield srv


def _slurm_nodes(slurm_cluster: SlurmCluster, job_id: int) -> list[str]:
    hosts = slurm_cluster.out("squeue", "-h", "-n", f"neocloud-{job_id}-1", "-o", "%N").strip()
    return slurm_cluster.out("scontrol", "show", "hostnames", hosts).split() if hosts else []


def test_the_cluster_is_the_fleet(server: Server) -> None:
    nodes = {n["name"]: n for n in server.client().nodes()}
    assert {name: (n["gpus"], n["leaf"]) for name, n in nodes.items()} == {k: (8, v) for k, v in LEAF.items()}


def test_a_two_node_gang_lands_under_one_leaf_and_its_logs_come_back(server: Server,
                                                                     slurm_cluster: SlurmCluster) -> None:
    c = server.client()
    job = c.submit({"name": "gang", "gpus": 16, "gpus_per_node": 8,
                    "command": "echo rank $SLURM_NODEID on $(hostname -s) gpus $CUDA_VISIBLE_DEVICES; sleep 2"})
    wait_for(lambda: c.job(job["id"])["state"] == "RUNNING")
    slurm_nodes = wait_for(lambda: _slurm_nodes(slurm_cluster, job["id"]))
    assert len(slurm_nodes) == 2 and len({LEAF[n] for n in slurm_nodes}) == 1
    assert sorted(p["node"] for p in c.job(job["id"])["placement"]) == sorted(slurm_nodes)
    done = c.wait(job["id"], timeout=60)
    assert (done["state"], done["exit_code"]) == ("COMPLETED", 0)
    assert c.logs(job["id"], rank=1)["text"].startswith("rank 1 on ")


def test_one_gpu_jobs_pack_onto_one_node(server: Server, slurm_cluster: SlurmCluster) -> None:
    c = server.client()
    jobs = [c.submit({"name": f"small-{i}", "gpus": 1, "command": "sleep 5"}) for i in range(2)]
    for j in jobs:
        wait_for(lambda j=j: c.job(j["id"])["state"] == "RUNNING")
    placed = {c.job(j["id"])["placement"][0]["node"] for j in jobs}
    assert len(placed) == 1
    node = placed.pop()
    for j in jobs:
        assert wait_for(lambda j=j: _slurm_nodes(slurm_cluster, j["id"])) == [node]


def test_cancel_and_failure_reach_slurm_and_back(server: Server, slurm_cluster: SlurmCluster) -> None:
    c = server.client()
    long = c.submit({"name": "long", "gpus": 8, "command": "sleep 300"})
    wait_for(lambda: _slurm_nodes(slurm_cluster, long["id"]))
    c.cancel(long["id"])
    assert c.wait(long["id"], timeout=60)["state"] == "CANCELLED"
    wait_for(lambda: not _slurm_nodes(slurm_cluster, long["id"]))
    bad = c.wait(c.submit({"name": "bad", "gpus": 1, "command": "exit 7"})["id"], timeout=60)
    assert (bad["state"], bad["exit_code"]) == ("FAILED", 7)


def test_a_node_drained_in_slurm_gets_no_work_and_a_cordon_drains_it_in_slurm(server: Server,
                                                                               slurm_cluster: SlurmCluster) -> None:
    subprocess.run(["scontrol", "update", "NodeName=gpu1", "State=DRAIN", "Reason=fan"], env=slurm_cluster.env,
                   check=True)
    c = server.client()
    wait_for(lambda: {n["name"]: n["state"] for n in c.nodes()}["gpu1"] == "CORDONED", timeout=30)
    jobs = [c.submit({"name": f"fill-{i}", "gpus": 8, "command": "sleep 3"}) for i in range(3)]
    for j in jobs:
        wait_for(lambda j=j: c.job(j["id"])["state"] == "RUNNING")
    assert "gpu1" not in {c.job(j["id"])["placement"][0]["node"] for j in jobs}
    c.node_action("gpu4", "cordon", "neocloud says so")
    wait_for(lambda: "drain" in slurm_cluster.out("sinfo", "-h", "-n", "gpu4", "-o", "%T"))


def test_a_restart_mid_job_loses_nothing(server: Server, slurm_cluster: SlurmCluster) -> None:
    c = server.client()
    job = c.submit({"name": "survivor", "gpus": 8, "command": "until [ -e go ]; do sleep 0.1; done; echo finished"})
    wait_for(lambda: _slurm_nodes(slurm_cluster, job["id"]))
    server.kill9()
    server.start()
    c = server.client()
    wait_for(lambda: [e["kind"] for e in c.events(job["id"])][-1] == "adopted")
    (Path(server.args[server.args.index("--jobs-dir") + 1]) / "jobs" / str(job["id"]) / "go").touch()  # its HOME
    done = c.wait(job["id"], timeout=60)
    assert done["state"] == "COMPLETED" and done["attempts"] == 1
    assert c.logs(job["id"])["text"] == "finished\n"
    assert [e["kind"] for e in c.events(job["id"])] == ["submitted", "started", "adopted", "completed"]
