"""On a real Slurm cluster: each tenant's job runs as its own user, with none of the server's
environment, and a job of mallory's can neither read, forge nor cancel anything of alice's."""

from __future__ import annotations

import json
import pwd
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import ADMIN, Server, wait_for
from tests.backends.slurm_cluster import SlurmCluster, available, slurm_server

pytestmark = pytest.mark.skipif(available() is not None, reason=str(available()))

PROBE = r"""
import json, os, subprocess
e = os.environ
results = {}
def attempt(name, act):
    try:
        results[name] = "DONE: " + repr(act())[:200]
    except Exception as x:
        results[name] = "blocked: " + type(x).__name__
def scancel():
    done = subprocess.run(["scancel", e["VICTIM_SLURM_ID"]], capture_output=True, text=True)
    if done.returncode or done.stderr:
        raise PermissionError(done.stderr.strip())
attempt("read alice's log", lambda: open(e["VICTIM_DIR"] + "/rank-0.out").read())
attempt("forge alice's exit status", lambda: open(e["VICTIM_DIR"] + "/attempt-1.rank-0.exit", "w").write("0"))
attempt("list alice's checkpoints", lambda: os.listdir(e["VICTIM_CKPT"]))
attempt("read the store", lambda: open(e["DATA"] + "/neocloud.db", "rb").read(100))
attempt("read the admin token", lambda: open(e["DATA"] + "/admin.token").read())
attempt("cancel alice's job", scancel)
print(json.dumps(results))
"""


@pytest.fixture
def cloud(tmp_path: Path, slurm_cluster: SlurmCluster) -> Iterator[Server]:
    with slurm_server(tmp_path, slurm_cluster) as srv:
        for name in ("alice", "mallory"):
            srv.client().create_tenant(name)
        yield srv


def _slurm_id(slurm_cluster: SlurmCluster, job_id: int) -> str:
    return slurm_cluster.out("squeue", "-h", "-n", f"neocloud-{job_id}-1", "-o", "%i").strip()


def test_a_tenant_s_job_runs_as_its_user_and_reaches_nothing_of_another(cloud: Server,
                                                                         slurm_cluster: SlurmCluster) -> None:
    admin = cloud.client()
    alice, mallory = (cloud.client(admin.create_token(t, "test")) for t in ("alice", "mallory"))
    victim = alice.submit({"name": "victim", "gpus": 1, "command":
                           'id -u; env; mkdir -p "$NEOCLOUD_CHECKPOINT_DIR/s"; echo alice-start; '
                           'while [ ! -e go ]; do sleep 0.05; done; echo alice-end; exit 3'})
    vid = victim["id"]
    wait_for(lambda: "alice-start" in alice.logs(vid)["text"], timeout=60)
    slurm_id = _slurm_id(slurm_cluster, vid)
    jobs = Path(cloud.args[1])
    env = {"VICTIM_DIR": str(jobs / "jobs" / str(vid)), "VICTIM_CKPT": str(jobs / "checkpoints" / str(vid)),
           "DATA": str(cloud.data_dir), "VICTIM_SLURM_ID": slurm_id, "SLURM_CONF": str(slurm_cluster.conf)}
    probe = mallory.wait(mallory.submit({"name": "probe", "gpus": 1, "env": env,
                                         "command": ["python3", "-c", PROBE]})["id"], timeout=60)
    assert probe["state"] == "COMPLETED", mallory.logs(probe["id"], stream="stderr")["text"]
    results = json.loads(mallory.logs(probe["id"])["text"])
    assert len(results) == 6 and all(v.startswith("blocked") for v in results.values()), results

    assert alice.job(vid)["state"] == "RUNNING" and _slurm_id(slurm_cluster, vid) == slurm_id
    (jobs / "jobs" / str(vid) / "go").touch()
    done = alice.wait(vid, timeout=60)
    assert (done["state"], done["exit_code"]) == ("FAILED", 3)
    lines = alice.logs(vid)["text"].splitlines()
    assert lines[0] == str(pwd.getpwnam("nc-alice").pw_uid) and lines[-2:] == ["alice-start", "alice-end"]
    variables = dict(line.split("=", 1) for line in lines[1:-2] if "=" in line)
    assert ADMIN not in "\n".join(lines) and "NEOCLOUD_ADMIN_TOKEN" not in variables
    assert variables["NEOCLOUD_JOB_ID"] == str(vid) and variables["HOME"] == str(jobs / "jobs" / str(vid))
    owner = (jobs / "checkpoints" / str(vid)).stat()
    assert (owner.st_uid, oct(owner.st_mode & 0o777)) == (pwd.getpwnam("nc-alice").pw_uid, "0o700")


def test_links_and_fifos_in_a_job_s_own_directory_make_the_server_read_nothing_else(cloud: Server) -> None:
    """The job's directory is its user's: whatever it leaves there in place of its logs and exit
    file (a link to a secret, a FIFO, a device), the server, as root, neither follows nor blocks."""
    mallory = cloud.client(cloud.client().create_token("mallory", "test"))
    job = mallory.wait(mallory.submit({"name": "links", "gpus": 1, "command":
                                       "echo before; rm -f rank-0.err rank-0.out; ln -s /etc/shadow rank-0.err; "
                                       "mkfifo rank-0.out; ln -sf /dev/zero attempt-1.rank-0.exit"})["id"], timeout=60)
    assert (job["state"], job["exit_code"]) == ("FAILED", None)  # its exit status could not be read: lost
    quick = httpx.Client(base_url=cloud.url, headers={"Authorization": mallory.http.headers["Authorization"]},
                         timeout=5)
    for stream in ("stdout", "stderr"):
        r = quick.get(f"/v1/jobs/{job['id']}/logs", params={"stream": stream})
        assert r.status_code == 200 and r.json()["text"] == ""
    assert "root:" not in quick.get(f"/v1/jobs/{job['id']}/logs", params={"stream": "stderr"}).text
    assert cloud.client().health()["status"] == "ok"
    again = mallory.wait(mallory.submit({"name": "after", "gpus": 1, "command": "echo fine"})["id"], timeout=60)
    assert again["state"] == "COMPLETED" and mallory.logs(again["id"])["text"] == "fine\n"
