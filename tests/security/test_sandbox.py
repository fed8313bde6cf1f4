"""A tenant's job is hostile code: against a real `neocloud up` (local backend, server as root), a
job of mallory's tries what an attacker would try first, against the server and against alice's
running job, and every read, write, kill and forge fails; alice's job ends with its own output
and exit status, and the server stays up."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import neocloud
from neocloud.backends.base import Task
from neocloud.backends.cgroups import Cgroup
from neocloud.backends.local import LocalBackend
from neocloud.client import ApiError, Client
from tests.api.conftest import ADMIN, Server, serving, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("bwrap") is None,
                                reason="the sandbox needs root and bubblewrap (apt install bubblewrap)")

# Each probe is one thing an attacker tries; the job reports, per probe, what happened.
PROBE = r"""
import json, os, signal, sqlite3, urllib.request
e = os.environ
def attempt(name, act):
    try:
        got = act()
        results[name] = "DONE: " + repr(got)[:200]
    except Exception as x:
        results[name] = "blocked: " + type(x).__name__
results = {}
def post(path):
    req = urllib.request.Request(e["API"] + path, data=b"{}", method="POST",
                                 headers={"Content-Type": "application/json"})
    return urllib.request.urlopen(req, timeout=5).status
def insert_token():
    db = sqlite3.connect(e["DATA"] + "/neocloud.db")
    db.execute("insert into tokens (tenant, digest, label, created_at) values ('alice', 'x', 'forged', 0)")
    db.commit()
attempt("read admin token", lambda: open(e["DATA"] + "/admin.token").read())
attempt("read the server's environment", lambda: open("/proc/%s/environ" % e["SERVER_PID"], "rb").read())
attempt("read the server's lock file", lambda: open(e["DATA"] + "/server.lock").read())
attempt("copy the store", lambda: open(e["DATA"] + "/neocloud.db", "rb").read(100))
attempt("insert a token row", insert_token)
attempt("make a token for alice without one", lambda: post("/v1/tenants/alice/tokens"))
attempt("read alice's log", lambda: open(e["VICTIM_LOG"]).read())
attempt("forge a line in alice's log", lambda: open(e["VICTIM_LOG"], "a").write("forged\n"))
attempt("list alice's checkpoints", lambda: os.listdir(e["VICTIM_CKPT"]))
attempt("overwrite alice's checkpoint", lambda: open(e["VICTIM_CKPT"] + "/step", "w").write("0"))
attempt("read alice's pid file", lambda: open(e["VICTIM_PIDFILE"]).read())
attempt("forge alice's exit status", lambda: open(e["VICTIM_EXIT"], "w").write("0"))
attempt("kill alice's rank", lambda: os.kill(int(e["VICTIM_PID"]), signal.SIGKILL))
attempt("kill alice's process group", lambda: os.killpg(int(e["VICTIM_PID"]), signal.SIGKILL))
attempt("kill alice's supervisor", lambda: os.kill(int(e["VICTIM_SUPERVISOR"]), signal.SIGKILL))
attempt("kill the server", lambda: os.kill(int(e["SERVER_PID"]), signal.SIGKILL))
attempt("write into the server's code", lambda: open(e["PACKAGE"] + "/evil.py", "w").write("x = 1\n"))
attempt("write outside its own directories", lambda: open("/usr/evil", "w").write("x"))
attempt("see the server's processes", lambda: [p for p in os.listdir("/proc") if p == e["SERVER_PID"]] or 1 / 0)
print(json.dumps(results))
"""


def _make_gpus(root: Path) -> Path:
    """Fake GPU device files (character devices 195:N, as NVIDIA's) for the sandbox to bind."""
    root.mkdir()
    for name, minor in [*((f"nvidia{i}", i) for i in range(8)), ("nvidiactl", 255)]:
        os.mknod(root / name, 0o666 | 0o020000, os.makedev(195, minor))
    return root


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the module: each test's jobs end or are cancelled, and it counts what it adds.
    The last sends its node to triage."""
    root = tmp_path_factory.mktemp("cloud")
    srv = Server(root / "data", None, args=("--gpu-devices", str(_make_gpus(root / "dev"))))
    with serving(srv):
        admin = srv.client()
        for name in ("alice", "mallory"):
            admin.create_tenant(name)
        yield srv


def _as(srv: Server, tenant: str) -> Client:
    return srv.client(srv.client().create_token(tenant, "test"))


def _rank_pids(srv: Server, job_id: int) -> list[int]:
    """The processes of rank 0 of the job's first attempt, from its cgroup (as the host sees them)."""
    return Cgroup(LocalBackend(srv.data_dir).instance, f"j{job_id}-a1-r0").pids()


def test_a_hostile_job_reaches_nothing_of_the_server_nor_of_another_tenant(cloud: Server) -> None:
    alice, mallory = _as(cloud, "alice"), _as(cloud, "mallory")
    victim = alice.submit({"name": "victim", "gpus": 1, "command":
                           'echo alice-start; echo 41 > "$NEOCLOUD_CHECKPOINT_DIR/step"; '
                           'while [ ! -e go ]; do sleep 0.05; done; echo alice-end; exit 3'})
    vid = victim["id"]
    wait_for(lambda: "alice-start" in alice.logs(vid)["text"])
    jobs, data = cloud.data_dir / "jobs" / str(vid), cloud.data_dir
    env = {"API": cloud.url, "DATA": str(data), "SERVER_PID": str(cloud.proc.pid),
           "VICTIM_LOG": str(jobs / "rank-0.out"), "VICTIM_CKPT": str(data / "checkpoints" / str(vid)),
           "VICTIM_PIDFILE": str(jobs / "attempt-1.rank-0.pid"), "VICTIM_EXIT": str(jobs / "attempt-1.rank-0.exit"),
           "VICTIM_PID": str(wait_for(lambda: _rank_pids(cloud, vid))[-1]),
           "VICTIM_SUPERVISOR": (jobs / "attempt-1.rank-0.pid").read_text().split()[0],
           "PACKAGE": str(Path(neocloud.__file__).parent)}
    probe = mallory.wait(mallory.submit({"name": "probe", "gpus": 1, "command": ["python3", "-c", PROBE],
                                         "env": env})["id"])
    out = mallory.logs(probe["id"])["text"]
    assert probe["state"] == "COMPLETED", mallory.logs(probe["id"], stream="stderr")["text"]
    results = json.loads(out)
    assert len(results) == 19 and all(v.startswith("blocked") for v in results.values()), results
    assert ADMIN not in out + mallory.logs(probe["id"], stream="stderr")["text"]

    # Alice's job was untouched: still running, its checkpoint and log its own; it ends as it says.
    assert alice.job(vid)["state"] == "RUNNING"
    assert (data / "checkpoints" / str(vid) / "step").read_text() == "41\n"
    (data / "work" / str(vid) / "go").touch()
    done = alice.wait(vid)
    assert (done["state"], done["exit_code"]) == ("FAILED", 3)
    assert alice.logs(vid)["text"] == "alice-start\nalice-end\n"
    assert not (Path(neocloud.__file__).parent / "evil.py").exists()
    assert cloud.proc.poll() is None and cloud.client().health()["status"] == "ok"


def test_the_spec_cannot_set_neocloud_s_own_variables(cloud: Server) -> None:
    mallory = _as(cloud, "mallory")
    before = len(mallory.jobs(limit=1000))
    for name in ("NEOCLOUD_CHECKPOINT_DIR", "NEOCLOUD_JOB_ID", "CUDA_VISIBLE_DEVICES", "LD_PRELOAD"):
        with pytest.raises(ApiError) as e:
            mallory.submit({"name": "sneaky", "command": "true", "env": {name: "/tmp"}})
        assert e.value.status == 422 and name in str(e.value)
    assert len(mallory.jobs(limit=1000)) == before


def test_each_tenant_runs_as_its_own_user_with_only_its_environment(cloud: Server) -> None:
    seen = {}
    for tenant in ("alice", "mallory"):
        c = _as(cloud, tenant)
        job = c.wait(c.submit({"name": "who", "gpus": 0.5, "env": {"MINE": tenant}, "command":
                               "id -u; id -G; echo $HOME; pwd; env | cut -d= -f1 | sort | tr '\\n' ' '; echo;"
                               "touch /tmp/mine /dev/shm/mine && stat -c %a /tmp /dev/shm | tr '\\n' ' '"})["id"])
        uid, groups, home, cwd, names, scratch = c.logs(job["id"])["text"].splitlines()
        assert scratch.split() == ["1777", "1777"]  # its private /tmp and /dev/shm (Python's semaphores) are its own
        seen[tenant] = int(uid)
        user = pwd.getpwnam(f"nc-{tenant}")
        assert (int(uid), groups, home, cwd) == (user.pw_uid, str(user.pw_gid), "/job", "/job")
        assert set(names.split()) == {"PATH", "LANG", "HOME", "PWD", "MINE", "CUDA_VISIBLE_DEVICES",
                                      "MASTER_ADDR", "MASTER_PORT", "NEOCLOUD_ATTEMPT", "NEOCLOUD_CHECKPOINT_DIR",
                                      "NEOCLOUD_GPUS_TOTAL", "NEOCLOUD_JOB_ID", "NEOCLOUD_NODE", "NEOCLOUD_NODE_RANK",
                                      "NEOCLOUD_NUM_NODES"} - ({"LANG"} if "LANG" not in os.environ else set())
    assert seen["alice"] != seen["mallory"] and 0 not in seen.values()


def test_a_rank_sees_only_its_own_gpus(cloud: Server) -> None:
    c = _as(cloud, "alice")
    blocker = c.submit({"name": "first", "gpus": 3, "command": "sleep 60"})
    wait_for(lambda: c.job(blocker["id"])["state"] == "RUNNING")
    job = c.wait(c.submit({"name": "gpus", "gpus": 2, "command":
                           "echo $CUDA_VISIBLE_DEVICES; ls /dev | grep nvidia | tr '\\n' ' '"})["id"])
    visible, devices = c.logs(job["id"])["text"].splitlines()
    placed = job["placement"][0]["gpus"]
    assert visible == ",".join(map(str, placed))
    assert sorted(devices.split()) == sorted([f"nvidia{g}" for g in placed] + ["nvidiactl"])
    c.cancel(blocker["id"])


def test_a_stop_reaches_processes_that_left_the_session(cloud: Server) -> None:
    c = _as(cloud, "mallory")
    job = c.submit({"name": "escape", "gpus": 1, "command":
                    "(setsid sleep 1001 &); (sh -c 'sleep 1002 &' &); echo forked; sleep 1003"})
    wait_for(lambda: "forked" in c.logs(job["id"])["text"] and len(_rank_pids(cloud, job["id"])) >= 5)
    pids = _rank_pids(cloud, job["id"])
    c.cancel(job["id"])
    assert c.wait(job["id"])["state"] == "CANCELLED"
    assert not any(Path(f"/proc/{p}").exists() and b"sleep" in Path(f"/proc/{p}/cmdline").read_bytes()
                   for p in pids)
    # A job that ends leaves nothing running behind it either.
    quick = c.submit({"name": "leaves", "gpus": 1, "command": "(setsid sleep 1004 &); echo bye"})
    assert c.wait(quick["id"])["state"] == "COMPLETED"
    assert not any(b"sleep\x001004" in p.read_bytes() for p in Path("/proc").glob("[0-9]*/cmdline")
                   if p.exists())


def test_cpus_and_memory_are_enforced(cloud: Server) -> None:
    c = _as(cloud, "alice")
    hog = c.wait(c.submit({"name": "hog", "gpus": 1, "memory": "64Mi", "command":
                           ["python3", "-c", "b = bytearray(256 << 20); print('survived')"]})["id"])
    assert (hog["state"], hog["exit_code"]) == ("FAILED", 137) and "survived" not in c.logs(hog["id"])["text"]
    fits = c.wait(c.submit({"name": "fits", "gpus": 1, "memory": "256Mi", "command":
                            ["python3", "-c", "b = bytearray(16 << 20); print('fine')"]})["id"])
    assert fits["state"] == "COMPLETED" and c.logs(fits["id"])["text"] == "fine\n"
    spin = c.submit({"name": "spin", "gpus": 1, "cpus": 0.25, "command": "echo go; while :; do :; done"})
    wait_for(lambda: "go" in c.logs(spin["id"])["text"])
    group = Cgroup(LocalBackend(cloud.data_dir).instance, f"j{spin['id']}-a1-r0")
    cpu = group.controllers["cpu"]
    quota = (cpu / "cpu.max").read_text().split()[0] if (cpu / "cpu.max").exists() \
        else (cpu / "cpu.cfs_quota_us").read_text().strip()
    assert int(quota) == 25_000  # a quarter of each 100 ms period
    c.cancel(spin["id"])
    assert c.wait(spin["id"])["state"] == "CANCELLED"


def test_no_tenant_may_take_the_name_of_neocloud_s_own_jobs(cloud: Server) -> None:
    for name in ("system", "SYSTEM"):
        with pytest.raises(ApiError) as e:
            cloud.client().create_tenant(name)
        assert e.value.status == 409 and "neocloud's own jobs" in str(e.value)


def test_a_stop_sent_as_the_rank_starts_is_carried_out(tmp_path: Path) -> None:
    """Cancelled the moment it is launched, each rank still gets its SIGTERM (its trap runs, or the
    signal ends it before the trap is set), its supervisor records how it ended, nothing is left."""
    backend = LocalBackend(tmp_path)
    command = "trap 'exit 5' TERM; while :; do sleep 0.05; done"
    try:
        for job in range(1, 11):
            backend.launch([Task(job, 1, command, {}, (("n0", (0,)),), tenant="alice")])
            backend.stop(job, 1)
        ended: list = []
        wait_for(lambda: ended.extend(backend.poll()) or len(ended) == 10, timeout=60)
        assert {e.codes for e in ended} <= {(5,), (143,)} and (5,) in {e.codes for e in ended}
        assert Cgroup.leftovers(backend.instance) == []
    finally:
        backend.reap_orphans(set())
        backend.close()


def test_a_checkpoint_tree_of_any_shape_does_not_stop_the_controller(cloud: Server) -> None:
    c = _as(cloud, "mallory")
    job = c.submit({"name": "deep", "gpus": 8, "command":
                    'cd "$NEOCLOUD_CHECKPOINT_DIR"; for i in $(seq 1200); do mkdir d; cd d; done; '
                    'ln -s /dev/zero zero; ln -s / root; echo deep; sleep 600'})
    wait_for(lambda: "deep" in c.logs(job["id"])["text"], timeout=60)
    node = c.job(job["id"])["placement"][0]["node"]
    result = cloud.client().signal(node, {"kind": "xid", "code": 79})
    assert result["interrupted"] == [job["id"]]
    wait_for(lambda: c.job(job["id"])["attempts"] == 2)
    assert cloud.client().health()["status"] == "ok"
    c.cancel(job["id"])
    assert c.wait(job["id"])["state"] == "CANCELLED"
    # rm, not Python's rmtree, which recurses as deep as the tree goes
    subprocess.run(["rm", "-rf", str(cloud.data_dir / "checkpoints" / str(job["id"]))], check=True)


def test_a_full_disk_does_not_hang_another_tenant_s_job(tmp_path: Path) -> None:
    """mallory fills the filesystem the jobs' files live on; alice's running job, which goes on
    writing to its log (what finds no room is dropped), still runs to its end, and how it ended is
    known."""
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(small)], check=True)
    try:
        srv = Server(tmp_path / "data", None, args=("--jobs-dir", str(small)))
        with serving(srv):
            admin = srv.client()
            for name in ("alice", "mallory"):
                admin.create_tenant(name)
            mallory, alice = _as(srv, "mallory"), _as(srv, "alice")
            talker = alice.submit({"name": "talk", "gpus": 1, "command":
                                   "while [ ! -e go ]; do echo waiting; sleep 0.01; done; seq 1 200000; echo done"})
            wait_for(lambda: "waiting" in alice.logs(talker["id"])["text"])
            filler = mallory.wait(mallory.submit({"name": "fill", "gpus": 1, "command":
                                                  "dd if=/dev/zero of=/job/fill bs=1M count=64; true"})["id"])
            assert filler["state"] == "COMPLETED"
            assert shutil.disk_usage(small).free < 64 << 10
            (small / "work" / str(talker["id"]) / "go").touch()
            done = alice.wait(talker["id"], timeout=60)
            assert (done["state"], done["exit_code"]) == ("COMPLETED", 0)
            assert srv.client().health()["status"] == "ok"
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)
