"""`neocloud up --tracking`: a real MLflow tracking server, kept in the data directory and reached
only through a Unix socket there, so that no tenant's job (which shares the host's network) can
call it past neocloud. Its workers are a process group of their own, stopped with the server."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from neocloud.errors import NeocloudError
from neocloud.tracking.mlflow import Upstream

READY_S = 120.0  # MLflow's first start migrates its database: tens of seconds on a loaded machine


class MLflowServer:
    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir / "tracking"
        self.socket = self.dir / "mlflow.sock"
        self.pidfile = self.dir / "mlflow.pid"  # its process group's, for the next start if this one is killed
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def upstream(self) -> Upstream:
        return Upstream("http://localhost", str(self.socket))

    def start(self) -> Upstream:
        if importlib.util.find_spec("mlflow") is None:
            raise NeocloudError("--tracking runs an MLflow server, which is not installed: pip install "
                                "'neocloud[tracking]' (or point --tracking-uri at a server of yours)")
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._stop_leftover()
        self.socket.unlink(missing_ok=True)
        log = open(self.dir / "mlflow.log", "ab")  # noqa: SIM115 - the child's, closed here once it has it
        with log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{self.dir / 'mlflow.db'}",
                 "--artifacts-destination", str(self.dir / "artifacts"), "--workers", "1",
                 "--uvicorn-opts", f"--uds {self.socket}"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, cwd=self.dir)
        self.pidfile.write_text(str(self._process.pid))
        self._wait()
        return self.upstream

    def _wait(self) -> None:
        deadline = time.monotonic() + READY_S
        with self.upstream.client() as http:
            while time.monotonic() < deadline:
                assert self._process is not None
                if self._process.poll() is not None:
                    raise NeocloudError(f"the MLflow server exited ({self._process.returncode}) at start; "
                                        f"see {self.dir / 'mlflow.log'}")
                if self.socket.exists():
                    try:
                        if http.get("health").status_code == 200:
                            return
                    except httpx.HTTPError:
                        pass
                time.sleep(0.2)
        self.stop()
        raise NeocloudError(f"the MLflow server did not answer within {READY_S:g} s; see {self.dir / 'mlflow.log'}")

    def _stop_leftover(self) -> None:
        """The MLflow server a killed neocloud left behind, if it is still there."""
        try:
            pid = int(self.pidfile.read_text())
            if b"mlflow" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.killpg(pid, signal.SIGKILL)
        except (OSError, ValueError):
            pass

    def stop(self) -> None:
        """Stop it and every worker it started (their process group)."""
        if self._process is None:
            return
        for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self._process.pid, sig)
            except ProcessLookupError:
                break
            try:
                self._process.wait(timeout=wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
        try:  # workers that outlived their parent
            os.killpg(self._process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._process = None
        self.pidfile.unlink(missing_ok=True)
