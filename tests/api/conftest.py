"""A real `neocloud up` in a subprocess, on SQLite or on the PostgreSQL that .ci/run starts.

Set NEOCLOUD_TEST_POSTGRES_URL (a server URL whose user may create databases) to run every API
test against PostgreSQL as well; each server then gets a database of its own.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from neocloud.backends.local import LocalBackend
from neocloud.client import Client

ADMIN = "nca_test-admin-token"
FLEET = """\
name: test
sites:
  - name: here
    fabrics:
      - name: ib0
        leaves:
          - name: leaf-a
            nodes:
              - {count: 2, gpu: H100, gpus: 8}
"""
POSTGRES = os.environ.get("NEOCLOUD_TEST_POSTGRES_URL")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One control plane: start, kill -9, restart on the same data directory and database."""

    def __init__(self, data_dir: Path, database_url: str | None, backend: str = "local",
                 env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> None:
        self.data_dir = data_dir
        self.args = args
        self.database_url = database_url
        self.backend = backend
        self.extra_env = env or {}
        data_dir.mkdir(parents=True, exist_ok=True)
        self.fleet: Path | None = None
        if backend == "local":  # other backends bring their own inventory
            self.fleet = data_dir / "fleet.yaml"
            self.fleet.write_text(FLEET)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log = data_dir / "server.log"
        self.start_s = 30.0  # how long it may take to answer /healthz

    def start(self, ready: tuple[str, ...] = ("ok", "degraded")) -> None:
        """Start the server and wait until /healthz says one of `ready` (a standby: "standby")."""
        env = {**os.environ, "NEOCLOUD_ADMIN_TOKEN": ADMIN, **self.extra_env}
        env.pop("NEOCLOUD_DATABASE_URL", None)
        cmd = [sys.executable, "-m", "neocloud", "up", "--data-dir", str(self.data_dir), "--port", str(self.port),
               "--backend", self.backend, *self.args]
        if self.fleet is not None:
            cmd += ["--fleet", str(self.fleet)]
        if self.database_url:
            cmd += ["--database-url", self.database_url]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + self.start_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).json().get("status") in ready:
                    return
            except (httpx.TransportError, ValueError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not come up: {self.log.read_text()[-2000:]}")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def client(self, token: str = ADMIN) -> Client:
        return Client(self.url, token)


def postgres_database() -> str:
    """A database of its own on the test PostgreSQL (the test fails, or skips, without one)."""
    if not POSTGRES:
        pytest.skip("NEOCLOUD_TEST_POSTGRES_URL is not set (.ci/run starts PostgreSQL and sets it)")
    import psycopg

    name = f"nc_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return POSTGRES.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest) -> str | None:
    if request.param == "sqlite":
        return None
    return postgres_database()


@contextmanager
def serving(srv: Server) -> Iterator[Server]:
    """A started server, stopped (and anything it left running killed) at the end."""
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
        _kill_leftovers(srv.data_dir)


@pytest.fixture
def server(tmp_path: Path, database: str | None) -> Iterator[Server]:
    with serving(Server(tmp_path / "data", database)) as srv:
        yield srv


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def shared_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the module's tests that leave nothing another test could trip on: what they
    send is refused, or stored under names of their own (a tenant, a job that ends), and they count
    what they add, not what the store holds. A start (seconds) saved per test."""
    database = None if request.param == "sqlite" else postgres_database()
    with serving(Server(tmp_path_factory.mktemp("shared") / "data", database)) as srv:
        yield srv


def _kill_leftovers(data_dir: Path) -> None:
    """Job processes outlive a killed server by design; a test cleans up after itself."""
    if (data_dir / "jobs").is_dir():
        LocalBackend(data_dir).reap_orphans(set())


def wait_for(predicate, timeout: float = 20.0, poll: float = 0.1):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(poll)
