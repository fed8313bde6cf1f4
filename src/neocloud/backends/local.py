"""Jobs as real processes on this machine: each rank in a sandbox, as its tenant's own user.

Each rank has a supervisor (`supervisor.py`), forked by a helper process (`spawner`) so that
starting hundreds a second does not stall the server. The supervisor runs in a session of its
own, so the rank outlives a crash of the server; it holds the rank's logs, puts every process of
the rank in one cgroup (`cgroups.py`) and writes the exit status when the last of them is gone.
With the pid file (pid and the kernel's start time, so a reused pid is not mistaken for ours) a
restarted server can tell a rank still running, one that ended while it was down, and one that
was lost. The rank itself runs in the sandbox of `sandbox.py` as the tenant's user (`identity.py`).

    FILES/jobs/<id>/rank-<r>.out, rank-<r>.err          logs, appended across attempts (server's)
    FILES/jobs/<id>/attempt-<a>.rank-<r>.pid, .exit     bookkeeping (server's)
    FILES/work/<id>/                                    the job's work directory (tenant's)
    FILES/checkpoints/<id>/                             its checkpoints, kept across attempts (tenant's)

FILES is the data directory unless `neocloud up --jobs-dir` says otherwise.

Where neocloud is not root, or bubblewrap is missing, the kernel cannot keep tenants apart here:
the backend says so in `isolation`, and the controller then serves one tenant.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path

import neocloud
from neocloud.backends.base import Exit, Recovered, Task
from neocloud.backends.cgroups import Cgroup, available
from neocloud.backends.code import unpack
from neocloud.backends.container import Containers
from neocloud.backends.identity import Identity, tenant_identity
from neocloud.backends.listeners import listening_uids
from neocloud.backends.sandbox import Sandbox, tools
from neocloud.backends.spawner import start_time
from neocloud.errors import NeocloudError

_CGROUP = re.compile(r"^j(\d+)-a(\d+)-r(\d+)$")  # a rank's cgroup: job, attempt, rank


@dataclass(slots=True)
class _Rank:
    pid: int  # its supervisor's
    start: str  # the kernel's start time of `pid`
    exit_file: Path

    def alive(self) -> bool:
        return start_time(self.pid) == self.start

    def code(self) -> int | None:
        try:
            return int(self.exit_file.read_text())
        except (OSError, ValueError):
            return None


@dataclass(slots=True)
class _Attempt:
    ranks: list[_Rank]
    stopping: bool = False


class LocalBackend:
    name = "local"

    def __init__(self, files: Path, data_dir: Path | None = None, devices: Path = Path("/dev"),
                 sandbox: bool = True) -> None:
        """`files` holds jobs/, work/ and checkpoints/ (by default the data directory itself);
        `sandbox` False runs jobs as plain processes of the server's user (tenants then trust each other)."""
        self.files = files
        self.root = files / "jobs"
        self.data_dir = data_dir or files
        self.root.mkdir(parents=True, exist_ok=True)
        for d in {self.data_dir, self.files, self.root}:
            d.chmod(0o700)  # the store, the admin token and the logs are the server's alone
        self.instance = hashlib.sha256(str(self.files.resolve()).encode()).hexdigest()[:12]
        bwrap, setpriv = tools() if sandbox else (None, None)
        self.as_tenants = os.geteuid() == 0 and setpriv is not None
        self.cgroups = available() is None
        hide = {str(self.data_dir.resolve()), str(self.files.resolve()), str(Path(neocloud.__file__).resolve().parent)}
        self.sandbox = Sandbox(hide=tuple(sorted(hide)), devices=devices, bwrap=bwrap, setpriv=setpriv)
        self.containers = Containers(devices=devices)
        self.isolation = ("the sandbox is off (--no-sandbox)" if not sandbox else
                          "bubblewrap is not installed (apt install bubblewrap)" if bwrap is None else
                          "neocloud is not running as root, so every job runs as its user" if os.geteuid() != 0 else
                          "setpriv is missing (util-linux)" if setpriv is None else
                          f"no cgroups: {available()}" if not self.cgroups else None)
        self._live: dict[tuple[int, int], _Attempt] = {}
        self._lock = threading.Lock()
        self._spawner: subprocess.Popen | None = None

    # -- running ------------------------------------------------------------------------------
    def launch(self, tasks: list[Task]) -> list[tuple[int, str]]:
        requests, failed = [], []
        for task in tasks:
            try:
                requests.append((task, self._ranks(task)))
            except (OSError, NeocloudError) as e:  # e.g. the tenant's user could not be made
                failed.append((task.job_id, str(e)))
        for (task, _), reply in zip(requests, self._spawn([r for _, r in requests])):
            if "error" in reply:
                failed.append((task.job_id, reply["error"]))
                continue
            job_dir = self.root / str(task.job_id)
            ranks = [_Rank(pid, start, job_dir / f"attempt-{task.attempt}.rank-{r}.exit")
                     for r, (pid, start) in enumerate(reply["started"])]
            with self._lock:
                self._live[(task.job_id, task.attempt)] = _Attempt(ranks)
        return failed

    def _ranks(self, task: Task) -> list[dict]:
        trusted = task.trusted
        who: Identity | None = tenant_identity(task.tenant) if self.as_tenants and not trusted else None
        owner = (who.uid, who.gid) if who else (None, None)
        job_dir = self.root / str(task.job_id)
        work = self.files / "work" / str(task.job_id)
        dirs = [[str(job_dir), None, None], [str(work), *owner]]
        if task.checkpoint_dir is not None:
            dirs.append([str(task.checkpoint_dir), *owner])
        command = ["/bin/sh", "-c", task.command] if isinstance(task.command, str) else list(task.command)
        sandbox = Sandbox(()) if trusted else self.sandbox  # the server's own checks see the host as it is
        if task.image is not None and (why := self.containers.missing(task.image)):
            raise NeocloudError(why)
        ranks, port = [], _free_port()
        for rank, (node, gpus) in enumerate(task.nodes):
            stem = job_dir / f"attempt-{task.attempt}.rank-{rank}"
            env = {**task.env, **_rank_env(task, rank, node, gpus, port)}
            name = f"j{task.job_id}-a{task.attempt}-r{rank}"
            home = work if task.code is None else self._code_copy(task.code, job_dir, work, rank, owner)
            env_text = None
            if task.image is None:
                how = sandbox.rank(command, env, who, home, task.checkpoint_dir, gpus)
            else:
                how, env_text = self.containers.rank(task.image, command, env, who, home, task.checkpoint_dir, gpus,
                                                     f"neocloud-{self.instance}-{name}",
                                                     f"neocloud-{self.instance}/{name}" if self.cgroups else None)
            cgroup = {"instance": self.instance, "name": name,
                      "cpu_milli": task.cpu_milli, "memory_mib": task.memory_mib} if self.cgroups else None
            ranks.append({"argv": how.argv, "env": how.env, "cwd": how.cwd, "fd_args": how.fd_args, "fd_text": env_text,
                          "spare_top": how.spare_top, "stop": how.stop, "after": how.after, "dirs": dirs, "cgroup": cgroup,
                          "pid_file": f"{stem}.pid", "exit_file": f"{stem}.exit",
                          "stdout": str(self.log_path(task.job_id, rank, "stdout")),
                          "stderr": str(self.log_path(task.job_id, rank, "stderr"))})
        return ranks

    def service_address(self, node: str) -> str:
        """Where a service's replica listens (its $PORT): a port free on this host's loopback now."""
        return f"127.0.0.1:{_free_port()}"

    def listens_as(self, tenant: str, address: str) -> bool | None:
        """Whether what listens at a replica's `address` is the tenant's own (None: nothing does):
        with tenants apart, every socket on its port must be the tenant's user's, as another
        tenant's process may have taken a port its replica was given. With them together, any is."""
        if not self.as_tenants:
            return True
        uids = listening_uids(int(address.rpartition(":")[2]))
        return uids == {tenant_identity(tenant).uid} if uids else None

    def image_missing(self, image: str) -> str | None:
        """Why `image` cannot run on this machine (every node of this backend), or None: asked at
        submit, so that a missing image is a 422 rather than a failed start."""
        return self.containers.missing(image)

    def _code_copy(self, archive: Path, job_dir: Path, work: Path, rank: int, owner: tuple[int | None, int | None]) -> Path:
        """The rank's own copy of the job's code, made at its first attempt and kept for later
        ones (as a work directory is): the rank starts there, as /job."""
        dest = work / f"rank-{rank}"
        if not os.path.lexists(dest):
            job_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            work.mkdir(parents=True, exist_ok=True)
            uid, gid = owner
            if uid is not None and gid is not None:
                os.chown(work, uid, gid)
            unpack(archive, dest, job_dir, None if uid is None or gid is None else (uid, gid))
        return dest

    def _spawn(self, requests: list[list[dict]]) -> list[dict]:
        """Start attempts through the spawner process (started, or restarted, as needed)."""
        if not requests:
            return []
        for _ in range(2):
            if self._spawner is None or self._spawner.poll() is not None:
                self._spawner = subprocess.Popen([sys.executable, "-m", "neocloud.backends.spawner"],
                                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            stdin, stdout = self._spawner.stdin, self._spawner.stdout
            assert stdin is not None and stdout is not None  # both are pipes
            try:
                stdin.write(json.dumps(requests) + "\n")
                stdin.flush()
                line = stdout.readline()
            except OSError:
                line = ""
            if line:
                return json.loads(line)
            self._spawner.kill()  # it died: start another and try once more
            self._spawner.wait()
        raise OSError("the local backend's spawner process keeps dying")

    def close(self) -> None:
        if self._spawner is not None and self._spawner.poll() is None and self._spawner.stdin is not None:
            self._spawner.stdin.close()
            self._spawner.wait(timeout=10)

    def stop(self, job_id: int, attempt: int) -> None:
        """Each rank's supervisor stops its rank: SIGTERM, then SIGKILL after the grace."""
        with self._lock:
            att = self._live.get((job_id, attempt))
        if att is None or att.stopping:
            return
        att.stopping = True
        for r in att.ranks:
            _signal(r, signal.SIGTERM)

    def poll(self) -> list[Exit]:
        ended: list[Exit] = []
        with self._lock:
            items = list(self._live.items())
        for (job_id, attempt), att in items:
            alive = [r.alive() for r in att.ranks]
            if any(alive):
                # A gang lives or dies together: one rank failing stops the others.
                if not att.stopping and any(not a and r.code() != 0 for a, r in zip(alive, att.ranks)):
                    self.stop(job_id, attempt)
                continue
            with self._lock:
                self._live.pop((job_id, attempt), None)
            codes = tuple(r.code() for r in att.ranks)
            if None in codes:  # a supervisor was killed: what its rank left behind goes now
                self._kill_cgroups({(job_id, attempt)})
            ended.append(Exit(job_id, attempt, codes))
        return ended

    # -- after a restart ----------------------------------------------------------------------
    def recover(self, job_id: int, attempt: int, ranks: int) -> Recovered:
        found = [self._read_rank(job_id, attempt, r) for r in range(ranks)]
        if any(r is None for r in found):
            return None  # never fully started: nothing of it can be running
        known = [r for r in found if r is not None]
        if any(r.alive() for r in known):
            with self._lock:
                self._live[(job_id, attempt)] = _Attempt(known)
            return "running"
        codes = tuple(r.code() for r in known)
        return None if any(c is None for c in codes) else Exit(job_id, attempt, codes)

    def take_over(self) -> None:
        """Nothing to read again: its attempts' pid and exit files are the record, read by `recover`."""

    def reap_orphans(self, keep: set[tuple[int, int]]) -> list[tuple[int, int]]:
        killed = set()
        for pid_file in self.root.glob("*/attempt-*.rank-*.pid"):
            key = _attempt_of(pid_file.parent.name, pid_file.name.split(".")[0].removeprefix("attempt-"))
            if key is None or key in keep:
                continue
            rank = self._parse_pid_file(pid_file)
            if rank is not None and rank.alive():
                _signal(rank, signal.SIGUSR1)  # its supervisor kills the rank at once
                killed.add(key)
        prefix, stale = f"neocloud-{self.instance}-", []
        for name in self.containers.leftovers(prefix):
            if (m := _CGROUP.match(name.removeprefix(prefix))) and (int(m[1]), int(m[2])) not in keep:
                stale.append(name)
                killed.add((int(m[1]), int(m[2])))
        self.containers.remove(stale)
        return sorted(killed | self._kill_cgroups(None, keep))

    def _kill_cgroups(self, only: set[tuple[int, int]] | None,
                      keep: AbstractSet[tuple[int, int]] = frozenset()) -> set[tuple[int, int]]:
        """Kill and remove rank cgroups of these attempts (or of every attempt not kept) whose
        supervisors are gone; say which attempts had any."""
        if not self.cgroups:
            return set()
        found = set()
        for name in Cgroup.leftovers(self.instance):
            if not (m := _CGROUP.match(name)):
                continue
            job_id, attempt, rank = map(int, m.groups())
            if (job_id, attempt) in keep or (only is not None and (job_id, attempt) not in only):
                continue
            supervisor = self._read_rank(job_id, attempt, rank)
            if supervisor is None or not supervisor.alive():
                group = Cgroup(self.instance, name)
                if group.pids():
                    found.add((job_id, attempt))
                with contextlib.suppress(OSError):  # one that will not go is tried again at the next sweep
                    group.remove()
        return found

    def _read_rank(self, job_id: int, attempt: int, rank: int) -> _Rank | None:
        return self._parse_pid_file(self.root / str(job_id) / f"attempt-{attempt}.rank-{rank}.pid")

    @staticmethod
    def _parse_pid_file(path: Path) -> _Rank | None:
        try:
            pid, start = path.read_text().split()
            return _Rank(int(pid), start, path.with_suffix(".exit"))
        except (OSError, ValueError):
            return None

    def drained(self) -> dict[str, str]:
        return {}  # nothing but neocloud takes this host's slots out of service

    def set_node(self, name: str, cordoned: bool, reason: str) -> None:
        pass

    def log_path(self, job_id: int, rank: int, stream: str) -> Path:
        return self.root / str(job_id) / f"rank-{rank}.{'out' if stream == 'stdout' else 'err'}"


def _free_port() -> int:
    """A port free now for the gang's rendezvous: not one another tenant's job could foresee and
    take first on the loopback they share."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_env(task: Task, rank: int, node: str, gpus: tuple[int, ...], port: int) -> dict[str, str]:
    world = sum(len(g) for _, g in task.nodes)
    return {
        "CUDA_VISIBLE_DEVICES": ",".join(map(str, gpus)),
        "NEOCLOUD_JOB_ID": str(task.job_id),
        "NEOCLOUD_ATTEMPT": str(task.attempt),
        "NEOCLOUD_NODE": node,
        "NEOCLOUD_NODE_RANK": str(rank),
        "NEOCLOUD_NUM_NODES": str(len(task.nodes)),
        "NEOCLOUD_GPUS_TOTAL": str(world),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }


def _attempt_of(job: str, attempt: str) -> tuple[int, int] | None:
    try:
        return int(job), int(attempt)
    except ValueError:
        return None


def _signal(rank: _Rank, sig: int) -> None:
    if rank.alive():
        try:
            os.kill(rank.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
