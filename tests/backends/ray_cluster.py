"""A real Ray cluster on this host for the tests: a head and one worker node, 8 fake GPUs each,
started with `ray start --block` (each stays in the foreground, in a session of its own) and
stopped by their PIDs: each node's process tree is killed, as when its machine goes (Ray's own
orderly stop takes half a minute a node).

Two nodes on one host need RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1: with it at 0 Ray binds to loopback
but refuses a second node, and a gang across nodes is what the tests are for. The dashboard (the
Jobs API) listens on loopback. Each node is given its name (`--node-name`): by default both would
be named by the host's address, and neocloud would then tell them apart by their Ray node ids,
which change whenever a node restarts. Each has a temporary directory of its own, as on machines
of their own: a node unpacks a job's working directory anew there for each job it runs, which would
pull it from under the other node's processes.

The head can crash (`crash_head`: every process it started killed at once, as when its machine
dies) and come back on the same ports (`restart_head`). Ray keeps its cluster's state in the head
unless told to keep it in Redis, so a restarted head starts a new cluster, and the worker's raylet,
which belonged to the old one, exits (Ray waits a minute for that: here it is killed at once, with
its session, which holds Ray's own processes but not what they started in sessions of their own)
and a new raylet joins."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

GPUS = 8
NODES = ("head", "worker")


def available() -> str | None:
    """Why a cluster cannot be started here, or None if it can."""
    if importlib.util.find_spec("ray") is None:
        return "Ray is not installed (pip install 'neocloud[ray]')"
    return None if shutil.which("ray", path=str(Path(sys.executable).parent)) else "the `ray` command is missing"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RayCluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        # Ray's socket paths must stay short
        self.temps = {name: Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp")) for name in NODES}
        self.port, self.dashboard_port = _free_port(), _free_port()
        self.address = f"http://127.0.0.1:{self.dashboard_port}"
        self._procs: dict[str, subprocess.Popen] = {}
        self._ray = str(Path(sys.executable).parent / "ray")
        self._env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1", "RAY_USAGE_STATS_ENABLED": "0",
                     "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}  # as if activated
        self._env.pop("RAY_ADDRESS", None)

    def start(self) -> None:
        self._start_head()
        self._start_worker()

    def crash_head(self) -> None:
        """Kill every process the head node started at once, and wait until its dashboard is gone."""
        self._kill("head", tree=True)
        self._wait(lambda: not self._answers(), "the Ray head to go", watch=())

    @contextmanager
    def head_hung(self) -> Iterator[None]:
        """The head's dashboard (the Jobs and state APIs) stopped, not dead: connections are taken by
        the kernel and never answered, as by a head that hangs or a network that drops replies."""
        head = self._procs["head"]
        dashboards = [pid for pid in _descendants(head.pid) if b"dashboard/dashboard.py" in _cmdline(pid)]
        assert dashboards, "the head runs no dashboard"
        for pid in dashboards:
            _signal(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            for pid in dashboards:
                _signal(pid, signal.SIGCONT)

    def restart_head(self) -> None:
        """Start the head again on the same ports (crashing it first if it is up), and the worker
        node's raylet anew in the new cluster. Returns once both nodes are alive."""
        if "head" in self._procs:
            self.crash_head()
        self._kill("worker", tree=False)
        self._start_head()
        self._start_worker()

    def alive_nodes(self) -> list[dict]:
        try:
            r = httpx.get(f"{self.address}/api/v0/nodes", params={"detail": "1"}, timeout=5)
            nodes = r.json()["data"]["result"]["result"]
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return []
        return [n for n in nodes if n.get("state") == "ALIVE"]

    def stop(self) -> None:
        for name in reversed(list(self._procs)):
            self._kill(name, tree=True)
        for pid in _pids():  # what outlived its node: a driver or a rank of a crashed head's cluster
            if any(_cwd(pid).startswith(f"{temp}/") for temp in self.temps.values()):
                _signal(pid, signal.SIGKILL)
        for temp in self.temps.values():
            shutil.rmtree(temp, ignore_errors=True)

    def _start_head(self) -> None:
        self._spawn("head", ["--head", f"--port={self.port}", "--dashboard-host=127.0.0.1",
                             f"--dashboard-port={self.dashboard_port}"])
        self._wait(lambda: {n["node_name"] for n in self.alive_nodes()} == {"head"}, "the Ray head")

    def _start_worker(self) -> None:
        head_ip = next(n["node_ip"] for n in self.alive_nodes() if n["node_name"] == "head")
        self._spawn("worker", [f"--address={head_ip}:{self.port}"])
        self._wait(lambda: {n["node_name"] for n in self.alive_nodes()} == set(NODES), "the Ray worker node")

    def _answers(self) -> bool:
        try:
            httpx.get(f"{self.address}/api/version", timeout=2)
        except httpx.HTTPError:
            return False
        return True

    def _spawn(self, name: str, args: list[str]) -> None:
        cmd = [self._ray, "start", *args, f"--node-name={name}", f"--temp-dir={self.temps[name]}", f"--num-gpus={GPUS}",
               "--num-cpus=4", "--disable-usage-stats", "--block"]
        with open(self.root / f"{name}.log", "ab") as log:
            self._procs[name] = subprocess.Popen(cmd, env=self._env, stdout=log, stderr=subprocess.STDOUT,
                                                 start_new_session=True)

    def _kill(self, name: str, tree: bool) -> None:
        """SIGKILL the node's session (`ray start` and Ray's own processes, its workers too), and with
        `tree` every process they started (in sessions of their own too), as when its machine dies."""
        p = self._procs.pop(name, None)
        if p is None:
            return
        doomed = {pid for pid in _pids() if _session(pid) == p.pid} | (_descendants(p.pid) if tree else set())
        for pid in doomed:
            _signal(pid, signal.SIGKILL)
        p.wait()

    def _wait(self, ready: Callable[[], bool], what: str, timeout: float = 60.0,
              watch: tuple[str, ...] | None = None) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if any(p.poll() is not None for n, p in self._procs.items() if watch is None or n in watch):
                raise RuntimeError(f"{what} exited; see {self.root}/*.log")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not come up in {timeout:g} s; see {self.root}/*.log")
            time.sleep(0.5)


def _pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def _cwd(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return ""


def _session(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _descendants(root: int) -> set[int]:
    """Every process below `root`, by parent links as they are now."""
    children: dict[int, list[int]] = {}
    for pid in _pids():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(pid)
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
