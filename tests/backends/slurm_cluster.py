"""A real Slurm cluster on this host for the tests: munge, slurmctld and four slurmd daemons
(gpu1..gpu4, 8 fake GPUs each, leaf1 = gpu1-2 and leaf2 = gpu3-4), on loopback, in a scratch
directory; stopped by the PIDs they wrote. The recipe is ../shared/reference/slurm-localhost."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.api.conftest import Server

RECIPE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "slurm-localhost"
NODES = ("gpu1", "gpu2", "gpu3", "gpu4")


def available() -> str | None:
    """Why a cluster cannot be started here, or None if it can."""
    missing = [b for b in ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol")
               if shutil.which(b) is None]
    if missing:
        return f"Slurm is not installed ({', '.join(missing)} missing; .ci/run installs Debian's slurm-wlm)"
    if os.geteuid() != 0:
        return "starting slurmd needs root"
    if not RECIPE.is_dir():
        return f"the Slurm recipe is not at {RECIPE}"
    return None


class SlurmCluster:
    def __init__(self, root: Path, cpus: int | None = None, scheduler: str | None = None) -> None:
        """`cpus` per node overrides the recipe's 2 (slurmd then trusts the configuration, not the
        hardware); `scheduler` sets Slurm's SchedulerParameters."""
        self.root = root
        self.cpus, self.scheduler = cpus, scheduler
        self.conf = root / "etc" / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    def start(self) -> None:
        d = self.root
        for sub in ("etc", "run", "log", "spool/ctld", "dev", "jobs", *(f"spool/d-{n}" for n in NODES)):
            (d / sub).mkdir(parents=True, exist_ok=True)
        host = socket.gethostname().split(".")[0]
        for name in ("slurm.conf", "gres.conf", "topology.conf"):
            text = (RECIPE / name).read_text().replace("@DIR@", str(d)).replace("@HOST@", host)
            if name == "slurm.conf":  # a cluster per test worker (pytest-xdist), each on ports of its own
                text = _ports(text, PORT_STEP * int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0))
            if name == "slurm.conf" and self.cpus:
                text = text.replace("CPUs=2 ", f"CPUs={self.cpus} ") + "SlurmdParameters=config_overrides\n"
            if name == "slurm.conf" and self.scheduler:
                text += f"SchedulerParameters={self.scheduler}\n"
            (d / "etc" / name).write_text(text)
            (d / "etc" / name).chmod(0o644)  # read by each job's srun, as its tenant's user
        for name, minor in [*((f"nvidia{i}", i) for i in range(8)), ("nvidiactl", 255)]:
            if not (d / "dev" / name).exists():
                os.mknod(d / "dev" / name, 0o666 | 0o020000, os.makedev(195, minor))
        key = d / "run" / "munge.key"
        key.write_bytes(os.urandom(128))
        key.chmod(0o600)
        self._run("munged", f"--socket={d}/run/munge.sock", f"--key-file={key}", f"--pid-file={d}/run/munged.pid",
                  f"--log-file={d}/log/munged.log", f"--seed-file={d}/run/munged.seed", "--force")
        self._run("slurmctld", "-c")
        self._wait(lambda: "UP" in self.out("scontrol", "ping"), "slurmctld")
        for n in NODES:
            self._run("slurmd", "-N", n)
        self._wait(lambda: len(self.out("sinfo", "-h", "-N", "-t", "idle", "-o", "%N").split()) == len(NODES),
                   "the slurmd daemons")

    def stop(self) -> None:
        for pid_file in sorted((self.root / "run").glob("*.pid"), key=lambda p: p.name.startswith("munged")):
            try:
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)
            except (ValueError, OSError):
                pass

    def out(self, *cmd: str) -> str:
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=30).stdout

    def _run(self, *cmd: str) -> None:
        subprocess.run(cmd, env=self.env, check=True, timeout=30, capture_output=True)

    @staticmethod
    def _wait(ready, what: str, timeout: float = 30.0) -> None:  # noqa: ANN001
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not come up in {timeout:g} s")
            time.sleep(0.2)


@contextmanager
def running_cluster() -> Iterator[SlurmCluster]:
    """A started cluster, its spool where tenants' users can reach it (not under pytest's 0700 tmp)."""
    root = Path(tempfile.mkdtemp(prefix="neocloud-slurm-"))
    root.chmod(0o755)
    c = SlurmCluster(root)
    try:
        c.start()
        yield c
    finally:
        c.stop()
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def slurm_server(tmp_path: Path, cluster: SlurmCluster) -> Iterator[Server]:
    """neocloud up on the cluster, its jobs' files on a directory tenants' users can reach; after it,
    its jobs cancelled and the nodes resumed."""
    jobs = Path(tempfile.mkdtemp(prefix="neocloud-jobs-"))
    jobs.chmod(0o711)
    srv = Server(tmp_path / "data", None, backend="slurm", env={"SLURM_CONF": str(cluster.conf)},
                 args=("--jobs-dir", str(jobs), "--gpu-devices", str(cluster.root / "dev")))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
        for line in cluster.out("squeue", "-h", "-o", "%i %j").splitlines():
            job_id, name = line.split()
            if name.startswith("neocloud-"):
                subprocess.run(["scancel", job_id], env=cluster.env, check=False)
        for node in NODES:
            subprocess.run(["scontrol", "update", f"NodeName={node}", "State=RESUME"], env=cluster.env,
                           capture_output=True, check=False)
        shutil.rmtree(jobs, ignore_errors=True)


PORT_STEP = 100  # between the ports of two test workers' clusters


def _ports(conf: str, offset: int) -> str:
    """The recipe's slurm.conf with every port moved up by `offset`."""
    return re.sub(r"(SlurmctldPort=|SlurmdPort=|Port=\[)(\d+)(?:-(\d+))?",
                  lambda m: m.group(1) + str(int(m.group(2)) + offset)
                  + (f"-{int(m.group(3)) + offset}" if m.group(3) else ""), conf)
