"""A service on a real Slurm cluster through a real server: its replicas are Slurm jobs on the
nodes, reached by the gateway at the node's address, and stopped with the service."""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from neocloud.cli.workdir import pack
from tests.api.conftest import ADMIN, Server, wait_for
from tests.backends.slurm_cluster import SlurmCluster, available, slurm_server

pytestmark = pytest.mark.skipif(available() is not None, reason=str(available()))
REPLICA = Path(__file__).parents[1] / "services" / "replica.py"


@pytest.fixture
def server(tmp_path: Path, slurm_cluster: SlurmCluster) -> Iterator[Server]:
    with slurm_server(tmp_path, slurm_cluster) as srv:
        yield srv


def test_a_services_replicas_run_as_slurm_jobs_and_answer_through_the_gateway(
        server: Server, slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    admin = server.client()
    admin.create_tenant("slurm-svc")
    token = admin.create_token("slurm-svc", "test")
    team = server.client(token)
    code = tmp_path / "code"
    code.mkdir()
    shutil.copy(REPLICA, code / "replica.py")
    team.submit({"kind": "service", "name": "web", "gpus": 1, "replicas": 2, "command": "exec python3 replica.py",
                 "code": team.upload_code(pack(code)), "readiness": {"path": "/health"}})
    shown = wait_for(lambda: (s := team._call("GET", "/v1/services/web"))["ready"] == 2 and s, timeout=120)
    replicas = {r["job"]: r for r in shown["replica_list"]}
    assert all(r["address"].startswith("127.0.0.1:") for r in replicas.values())  # the nodes' NodeAddr
    assert {r["node"] for r in replicas.values()} <= {"gpu1", "gpu2", "gpu3", "gpu4"}
    def in_slurm() -> set[int]:
        names = slurm_cluster.out("squeue", "-h", "-o", "%j").split()
        return {job for job in replicas if any(n.startswith(f"neocloud-{job}-") for n in names)}

    assert in_slurm() == set(replicas)
    answers = [httpx.get(f"{server.url}/v1/services/slurm-svc/web/", headers={"Authorization": f"Bearer {token}"},
                         timeout=30) for _ in range(10)]
    assert all(a.status_code == 200 for a in answers)
    assert set(Counter(a.json()["replica"] for a in answers)) == set(replicas)  # both carry the load
    assert team._call("DELETE", "/v1/services/web")["state"] == "STOPPED"
    for job in replicas:
        assert team.wait(job, timeout=60)["state"] == "CANCELLED"
    wait_for(lambda: not in_slurm(), timeout=60)
    assert httpx.get(f"{server.url}/v1/services/slurm-svc/web/",
                     headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 404
