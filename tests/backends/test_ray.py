"""The Ray backend against a real Ray cluster on this host (a head and a worker, 8 fake GPUs each);
last, that cluster's head crashed and restarted under a running server."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from neocloud.backends import ray as ray_backend
from neocloud.backends.base import Exit, Task
from neocloud.backends.ray import POLL_S, RayBackend
from neocloud.client import ApiError
from neocloud.errors import NeocloudError
from tests.api.conftest import Server, serving, wait_for
from tests.backends.ray_cluster import GPUS, RayCluster, available

pytestmark = pytest.mark.skipif(available() is not None, reason=str(available()))
T = TypeVar("T")


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
    """Ray node id by the name neocloud gives the node: Ray's node name (unique in this cluster)."""
    return {n["node_name"]: n["node_id"] for n in cluster.alive_nodes()}


def _placement_group(cluster: RayCluster, name: str) -> dict | None:
    from ray.util.state import list_placement_groups

    groups = list_placement_groups(address=cluster.address, detail=True, filters=[("name", "=", name)])
    live = [g for g in groups if g.state == "CREATED"]
    return live[0].__dict__ if live else None


def _ray_name(server: Server, job_id: int) -> str:
    return f"neocloud-{(server.data_dir / 'jobs' / 'ray-instance').read_text()}-{job_id}-1"


def _running(marker: str) -> bool:
    return subprocess.run(["pgrep", "-f", marker], check=False, capture_output=True).returncode == 0


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


def test_a_job_in_an_image_is_refused_at_submit_with_what_to_do(server: Server) -> None:
    from neocloud.client import ApiError

    with pytest.raises(ApiError) as e:
        server.client().submit({"name": "in-image", "gpus": 1, "image": "localhost/train:1", "command": "true"})
    assert e.value.status == 422 and "leave `image` out" in str(e.value)


def test_a_failing_rank_fails_the_gang_with_its_status(server: Server) -> None:
    c = server.client()
    job = c.submit({"name": "bad", "gpus": 2, "gpus_per_node": 1,
                    "command": "if [ $NEOCLOUD_NODE_RANK = 1 ]; then exit 7; fi; sleep 300"})
    done = c.wait(job["id"], timeout=60)
    assert (done["state"], done["exit_code"]) == ("FAILED", 7)


def test_a_restart_mid_job_loses_nothing(server: Server, tmp_path: Path) -> None:
    c = server.client()
    go = tmp_path / "go"  # the job runs until the restart is over, however long a loaded host takes
    job = c.submit({"name": "survivor", "gpus": 1,
                    "command": f"echo started; while [ ! -e {go} ]; do sleep 0.1; done; echo finished"})
    wait_for(lambda: "started" in c.logs(job["id"])["text"], timeout=60)  # running in Ray
    server.kill9()
    server.start()
    c = server.client()
    wait_for(lambda: any(e["kind"] == "adopted" for e in c.events(job["id"])), timeout=60)
    go.touch()
    done = c.wait(job["id"], timeout=60)
    assert done["state"] == "COMPLETED" and done["attempts"] == 1
    assert c.logs(job["id"])["text"] == "started\nfinished\n"
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


# -- the backend on its own: how its logs are read ------------------------------------------------
@pytest.fixture
def backend(tmp_path: Path, cluster: RayCluster) -> Iterator[RayBackend]:
    b = RayBackend(tmp_path / "jobs", cluster.address)
    b.inventory()
    try:
        yield b
    finally:
        b.close()


def _task(b: RayBackend, job_id: int, command: str) -> Task:
    return Task(job_id=job_id, attempt=1, command=command, nodes=((b.inventory().nodes[0].name, (0,)),))


def _until_exit(b: RayBackend, job_id: int, timeout: float = 60.0) -> Exit:
    return wait_for(lambda: next((e for e in b.poll() if e.job_id == job_id), None), timeout=timeout, poll=0.2)


def _seen(b: RayBackend, job_id: int) -> int:
    """How much of the attempt's Ray log the backend has noted as copied."""
    return int((b.root / str(job_id) / "attempt-1.seen").read_text())


def _rank0(b: RayBackend, job_id: int) -> str:
    path = b.log_path(job_id, 0, "stdout")
    return path.read_text() if path.exists() else ""


def _after(go: Path) -> str:
    """A shell line that waits until the test creates `go` (the ranks run on this host)."""
    return f"while [ ! -e {go} ]; do sleep 0.1; done"


def test_a_log_is_copied_as_it_is_written_and_read_once(backend: RayBackend, tmp_path: Path) -> None:
    """Each character of an attempt's Ray log crosses the wire once however often poll runs, a
    quiet attempt costs a poll nothing, and Ray is asked about the attempt once: when it ended."""
    go = tmp_path / "go"
    command = f"for i in 1 2 3; do echo line $i; sleep 0.5; done; {_after(go)}; echo bye; exit 3"
    assert backend.launch([_task(backend, 1, command)]) == []
    wait_for(lambda: (backend.poll(), _rank0(backend, 1) == "line 1\nline 2\nline 3\n")[1], timeout=60, poll=0.2)
    received, seen = backend.received, _seen(backend, 1)
    deadline = time.monotonic() + 3 * POLL_S
    while time.monotonic() < deadline:  # the rank is quiet: polls find nothing to do
        assert backend.poll() == []
        time.sleep(0.2)
    assert (backend.received, _seen(backend, 1), backend.asked) == (received, seen, 0)
    go.touch()
    done = _until_exit(backend, 1)
    assert done.codes == (3,) and backend.asked == 1
    assert _rank0(backend, 1) == "line 1\nline 2\nline 3\nbye\n"
    whole = backend.client.get_job_logs(backend._name(1, 1))
    assert backend.received == len(whole) and _seen(backend, 1) == len(whole)


def test_a_restarted_backend_copies_only_what_it_had_not(tmp_path: Path, cluster: RayCluster) -> None:
    """A new backend on the same data directory picks up each attempt where the last one stopped
    copying: a running one through a new stream, an ended one from its whole log, never a line twice."""
    go1, go2 = tmp_path / "go1", tmp_path / "go2"
    first = RayBackend(tmp_path / "jobs", cluster.address)
    first.inventory()
    first.launch([_task(first, 1, f"echo before; {_after(go1)}; echo after"),
                  _task(first, 2, f"echo early; {_after(go2)}; echo late >&2; exit 5")])
    wait_for(lambda: (first.poll(), _rank0(first, 1) == "before\n" and _rank0(first, 2) == "early\n")[1],
             timeout=60, poll=0.2)
    first.close()  # as a neocloud that stops: the Ray jobs go on
    go2.touch()
    from ray.job_submission import JobSubmissionClient

    ray_jobs = JobSubmissionClient(cluster.address)
    wait_for(lambda: ray_jobs.get_job_status(first._name(2, 1)).value == "FAILED", timeout=30)
    second = RayBackend(tmp_path / "jobs", cluster.address)
    try:
        second.inventory()
        assert second.recover(2, 1, 1) == Exit(2, 1, (5,))  # ended meanwhile
        assert _rank0(second, 2) == "early\n" and second.log_path(2, 0, "stderr").read_text() == "late\n"
        assert second.recover(1, 1, 1) == "running"
        go1.touch()
        assert _until_exit(second, 1).codes == (0,)
        assert _rank0(second, 1) == "before\nafter\n"
        assert second.recover(3, 1, 1) is None  # Ray never had it
    finally:
        second.close()


def _pids(pattern: str) -> list[int]:
    found = subprocess.run(["pgrep", "-f", pattern], check=False, capture_output=True, text=True).stdout
    return [int(pid) for pid in found.split()]


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_a_rank_whose_ray_worker_dies_is_stopped(backend: RayBackend) -> None:
    """Ray kills its worker processes when their raylet or head goes, not what they started in a
    session of their own: the rank's watchdog stops it, or a requeued job would run twice at once."""
    marker = f"ray-orphan-{time.time_ns()}"
    assert backend.launch([_task(backend, 1, f"while :; do sleep 0.2; done # {marker}")]) == []
    rank = wait_for(lambda: _pids(f"^/bin/sh -c while :; do sleep 0.2; done # {marker}"), timeout=60)[0]
    worker = _parent(rank)
    while not Path(f"/proc/{worker}/cmdline").read_bytes().startswith(b"ray::"):  # the Ray worker running the task
        worker = _parent(worker)
    os.kill(worker, signal.SIGKILL)
    wait_for(lambda: not _pids(f"^/bin/sh -c while :; do sleep 0.2; done # {marker}"), timeout=15)
    assert _until_exit(backend, 1).codes == (None,)  # it left no status


def test_a_hung_head_fails_each_call_in_time(backend: RayBackend, cluster: RayCluster,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A head that takes connections and never answers makes the backend's calls fail within their
    time limit, not hang the controller's watcher; once it answers, so does the backend."""
    monkeypatch.setattr(ray_backend, "REQUEST_S", 1)
    task = _task(backend, 1, "true")
    with cluster.head_hung():
        started = time.monotonic()
        with pytest.raises(NeocloudError, match="cannot list the Ray cluster's nodes"):
            backend.drained()
        assert [job for job, _ in backend.launch([task])] == [1]  # not started: it is tried again later
        assert time.monotonic() - started < 5
    assert backend.drained() == {}
    assert backend.launch([_task(backend, 2, "echo back")]) == []
    assert _until_exit(backend, 2).codes == (0,) and _rank0(backend, 2) == "back\n"


# -- the head crashed and restarted under the server: last, as it crashes the module's cluster --
def _health(srv: Server) -> dict:
    return httpx.get(f"{srv.url}/healthz", timeout=5).json()


def _quick(call: Callable[[], T]) -> T:
    """The call's answer, which must come at once: the API does not wait on the backend."""
    started = time.monotonic()
    answer = call()
    assert time.monotonic() - started < 2, "the API hung on the backend"
    return answer


def test_the_ray_head_restarted_under_the_server(tmp_path: Path, cluster: RayCluster) -> None:
    """The server keeps answering (degraded while the head is away), reconnects by itself once it is
    back, and loses and duplicates nothing. A restarted head is a new cluster: the Ray jobs of the
    old one are gone with their drivers, so a job that ran there is requeued, as after a node
    failure, and runs again once, never beside its lost attempt. On the module's cluster (a start
    saved), so last in the module."""
    work = tmp_path / "work"  # the ranks run on this host: they see the test's files
    work.mkdir()
    go = work / "go"
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
