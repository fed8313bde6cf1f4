"""A real Ray cluster on this host for the tests: a head and one worker node, 8 fake GPUs each,
started with `ray start --block` (each stays in the foreground) and stopped by their PIDs.

Two nodes on one host need RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1: with it at 0 Ray binds to loopback
but refuses a second node, and a gang across nodes is what the tests are for. The dashboard (the
Jobs API) listens on loopback."""

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
from pathlib import Path

import httpx

GPUS = 8


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
        self.temp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # Ray's socket paths must stay short
        self.port, self.dashboard_port = _free_port(), _free_port()
        self.address = f"http://127.0.0.1:{self.dashboard_port}"
        self._procs: list[subprocess.Popen] = []

    def start(self) -> None:
        ray = str(Path(sys.executable).parent / "ray")
        common = [f"--temp-dir={self.temp}", f"--num-gpus={GPUS}", "--num-cpus=4", "--disable-usage-stats", "--block"]
        env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1", "RAY_USAGE_STATS_ENABLED": "0",
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}  # as if activated
        env.pop("RAY_ADDRESS", None)
        self._spawn([ray, "start", "--head", f"--port={self.port}", "--dashboard-host=127.0.0.1",
                     f"--dashboard-port={self.dashboard_port}", *common], env, "head")
        self._wait(lambda: len(self.alive_nodes()) == 1, "the Ray head")
        head_ip = self.alive_nodes()[0]["node_ip"]
        self._spawn([ray, "start", f"--address={head_ip}:{self.port}", *common], env, "worker")
        self._wait(lambda: len(self.alive_nodes()) == 2, "the Ray worker node")

    def alive_nodes(self) -> list[dict]:
        try:
            r = httpx.get(f"{self.address}/api/v0/nodes", params={"detail": "1"}, timeout=5)
            nodes = r.json()["data"]["result"]["result"]
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return []
        return [n for n in nodes if n.get("state") == "ALIVE"]

    def stop(self) -> None:
        for p in reversed(self._procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(self._procs):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(self.temp, ignore_errors=True)

    def _spawn(self, cmd: list[str], env: dict[str, str], name: str) -> None:
        with open(self.root / f"{name}.log", "wb") as log:
            self._procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT))

    def _wait(self, ready, what: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if any(p.poll() is not None for p in self._procs):
                raise RuntimeError(f"{what} exited; see {self.root}/*.log")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not come up in {timeout:g} s; see {self.root}/*.log")
            time.sleep(0.5)
