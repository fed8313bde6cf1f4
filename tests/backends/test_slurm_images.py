"""Jobs in OCI images on a real Slurm cluster (`srun --container`, rootless runc as the tenant's
user) through a real server: the image's files, not the host's; the GPUs Slurm gave; the code;
a stop that reaches the container; a missing image refused at submit."""

from __future__ import annotations

import pwd
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from neocloud.backends.identity import user_name
from neocloud.cli.workdir import pack
from neocloud.client import ApiError, Client
from tests.api.conftest import Server, wait_for
from tests.backends.images import built_image
from tests.backends.slurm_cluster import SlurmCluster, available, slurm_server

pytestmark = pytest.mark.skipif(available() is not None, reason=str(available()))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, slurm_cluster: SlurmCluster) -> Iterator[Server]:
    with slurm_server(tmp_path_factory.mktemp("slurm-images"), slurm_cluster) as srv:
        yield srv


def _tenant(srv: Server, name: str) -> Client:
    admin = srv.client()
    admin.create_tenant(name)
    return srv.client(admin.create_token(name, "test"))


def test_a_gang_in_an_image_runs_as_the_tenant_in_the_image_with_its_gpus(server: Server) -> None:
    team = _tenant(server, "img-team")
    job = team.submit({"name": "in-image", "gpus": 4, "gpus_per_node": 2, "image": built_image(),
                       "command": 'echo "rank $NEOCLOUD_NODE_RANK uid $(id -u) home $HOME in $(pwd)"; '
                                  'touch "mine-$NEOCLOUD_NODE_RANK"; '
                                  'echo "gpus $CUDA_VISIBLE_DEVICES"; ls /dev | grep "^nvidia" | tr "\\n" " "; echo; '
                                  'test -e /usr/bin/python3 && echo "host python"; '
                                  f'test -e {server.data_dir} && echo "server data"; echo done'})
    done = team.wait(job["id"], timeout=120)
    assert (done["state"], done["exit_code"]) == ("COMPLETED", 0), (team.events(job["id"]), team.logs(job["id"], stream="stderr"))
    uid = pwd.getpwnam(user_name("img-team")).pw_uid
    jobs = Path(server.args[server.args.index("--jobs-dir") + 1]) / "jobs"
    for rank in (0, 1):
        lines = team.logs(job["id"], rank=rank)["text"].splitlines()
        assert lines[0] == f"rank {rank} uid 0 home /job in /job"  # a user namespace's root: the tenant outside
        assert (jobs / str(job["id"]) / f"mine-{rank}").stat().st_uid == uid
        gpus = re.fullmatch(r"gpus ((\d+),(\d+))", lines[1])
        assert gpus, lines
        devices = lines[2].split()
        assert {f"nvidia{g}" for g in gpus[1].split(",")} <= set(devices) and "nvidiactl" in devices
        assert lines[3:] == ["done"]  # neither the host's python nor the server's data directory


def test_code_reaches_each_node_inside_the_image(server: Server, tmp_path: Path) -> None:
    team = _tenant(server, "img-code")
    (tmp_path / "run.sh").write_text('echo "node $NEOCLOUD_NODE_RANK in $(pwd): $(cat note.txt)"\n')
    (tmp_path / "note.txt").write_text("from the workdir\n")
    digest = team.upload_code(pack(tmp_path))
    job = team.submit({"name": "code-in-image", "gpus": 2, "gpus_per_node": 1, "image": built_image(),
                       "code": digest, "command": "sh run.sh"})
    done = team.wait(job["id"], timeout=120)
    assert done["state"] == "COMPLETED", team.events(job["id"])
    for rank in (0, 1):
        assert team.logs(job["id"], rank=rank)["text"] == f"node {rank} in /job/work/rank-{rank}: from the workdir\n"


def test_a_cancel_signals_the_rank_and_stops_the_container(server: Server, slurm_cluster: SlurmCluster) -> None:
    team = _tenant(server, "img-stop")
    job = team.submit({"name": "long", "gpus": 1, "image": built_image(),
                       "command": "trap 'echo stopped gracefully; exit 0' TERM; echo started; sleep 300 & wait"})
    wait_for(lambda: team.logs(job["id"])["text"] == "started\n", timeout=60)
    team.cancel(job["id"])
    assert team.wait(job["id"], timeout=60)["state"] == "CANCELLED"
    try:  # the signal reached the rank
        wait_for(lambda: team.logs(job["id"])["text"] == "started\nstopped gracefully\n")
    except AssertionError:
        raise AssertionError((team.logs(job["id"]), team.logs(job["id"], stream="stderr"), team.events(job["id"]))) \
            from None
    name = f"neocloud-{job['id']}-1"
    wait_for(lambda: name not in slurm_cluster.out("squeue", "-h", "-o", "%j"), timeout=60)
    uid = pwd.getpwnam(user_name("img-stop")).pw_uid
    wait_for(lambda: not _processes_of(uid), timeout=30)  # neither the container nor its rank left behind


def _processes_of(uid: int) -> list[str]:
    return [p.name for p in Path("/proc").iterdir() if p.name.isdigit() and _owner(p) == uid]


def _owner(p: Path) -> int | None:
    try:
        return p.stat().st_uid
    except OSError:
        return None


def test_a_missing_image_is_a_422_at_submit_with_the_reason(server: Server) -> None:
    with pytest.raises(ApiError) as e:
        server.client().submit({"name": "no-image", "gpus": 1, "image": "localhost/not-here:1", "command": "true"})
    assert e.value.status == 422 and "image 'localhost/not-here:1' is not on this node" in str(e.value)

