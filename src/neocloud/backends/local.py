"""Jobs as real processes on this machine: one process group per rank, logs in files.

Each rank runs under a small `sh` wrapper in a session of its own, so it outlives a crash of the
server; processes are started by a helper process (`spawner`) so that starting hundreds a second
does not stall the server. The wrapper writes the command's exit status to a file when it ends; with the pid file
(pid and the kernel's start time, so a reused pid is not mistaken for ours) a restarted server can
tell a rank still running, one that ended while it was down, and one that was lost.

    DATA_DIR/jobs/<id>/rank-<r>.out, rank-<r>.err          logs, appended across attempts
    DATA_DIR/jobs/<id>/attempt-<a>.rank-<r>.pid, .exit     bookkeeping
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from neocloud.backends.base import Exit, Recovered, Task
from neocloud.backends.spawner import start_time

# Run the job's argv ("$@"), or its shell command line ($1) in a subshell, then record the exit
# status in the file named by $0 (read only once the wrapper is gone, so never half-written).
WRAPPER_ARGV = '"$@"; rc=$?; printf "%s" "$rc" > "$0"; exit "$rc"'
WRAPPER_SHELL = '(cmd=$1; set --; eval "$cmd"); rc=$?; printf "%s" "$rc" > "$0"; exit "$rc"'
GRACE_S = 10.0  # between SIGTERM and SIGKILL


@dataclass(slots=True)
class _Rank:
    pid: int
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
    timers: list[threading.Timer] = field(default_factory=list)


class LocalBackend:
    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._live: dict[tuple[int, int], _Attempt] = {}
        self._lock = threading.Lock()
        self._spawner: subprocess.Popen | None = None

    # -- running ------------------------------------------------------------------------------
    def launch(self, tasks: list[Task]) -> list[tuple[int, str]]:
        requests = [self._ranks(task) for task in tasks]
        failed = []
        for task, reply in zip(tasks, self._spawn(requests)):
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
        job_dir = self.root / str(task.job_id)
        ranks = []
        for rank, (node, gpus) in enumerate(task.nodes):
            stem = f"attempt-{task.attempt}.rank-{rank}"
            exit_file = job_dir / f"{stem}.exit"
            if isinstance(task.command, str):
                argv = ["/bin/sh", "-c", WRAPPER_SHELL, str(exit_file), task.command]
            else:
                argv = ["/bin/sh", "-c", WRAPPER_ARGV, str(exit_file), *task.command]
            ranks.append({"argv": argv, "cwd": str(job_dir), "pid_file": str(job_dir / f"{stem}.pid"),
                          "exit_file": str(exit_file),
                          "env": {**task.env, **_rank_env(task, rank, node, gpus)},
                          "stdout": str(self.log_path(task.job_id, rank, "stdout")),
                          "stderr": str(self.log_path(task.job_id, rank, "stderr"))})
        return ranks

    def _spawn(self, requests: list[list[dict]]) -> list[dict]:
        """Start attempts through the spawner process (started, or restarted, as needed)."""
        for _ in range(2):
            if self._spawner is None or self._spawner.poll() is not None:
                self._spawner = subprocess.Popen([sys.executable, "-m", "neocloud.backends.spawner"],
                                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            try:
                self._spawner.stdin.write(json.dumps(requests) + "\n")
                self._spawner.stdin.flush()
                line = self._spawner.stdout.readline()
            except OSError:
                line = ""
            if line:
                return json.loads(line)
            self._spawner.kill()  # it died: start another and try once more
            self._spawner.wait()
        raise OSError("the local backend's spawner process keeps dying")

    def close(self) -> None:
        if self._spawner is not None and self._spawner.poll() is None:
            self._spawner.stdin.close()
            self._spawner.wait(timeout=10)

    def stop(self, job_id: int, attempt: int) -> None:
        with self._lock:
            att = self._live.get((job_id, attempt))
        if att is None or att.stopping:
            return
        att.stopping = True
        for r in att.ranks:
            _kill_group(r.pid, signal.SIGTERM)
        timer = threading.Timer(GRACE_S, self._kill_now, (att,))
        timer.daemon = True
        att.timers.append(timer)
        timer.start()

    def _kill_now(self, att: _Attempt) -> None:
        for r in att.ranks:
            if r.alive():
                _kill_group(r.pid, signal.SIGKILL)

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
            for t in att.timers:
                t.cancel()
            with self._lock:
                self._live.pop((job_id, attempt), None)
            ended.append(Exit(job_id, attempt, tuple(r.code() for r in att.ranks)))
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

    def reap_orphans(self, keep: set[tuple[int, int]]) -> list[tuple[int, int]]:
        killed = []
        for pid_file in self.root.glob("*/attempt-*.rank-*.pid"):
            try:
                job_id = int(pid_file.parent.name)
                attempt = int(pid_file.name.split(".")[0].removeprefix("attempt-"))
            except ValueError:
                continue
            if (job_id, attempt) in keep:
                continue
            rank = self._parse_pid_file(pid_file)
            if rank is not None and rank.alive():
                _kill_group(rank.pid, signal.SIGKILL)
                killed.append((job_id, attempt))
        return sorted(set(killed))

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


def _rank_env(task: Task, rank: int, node: str, gpus: tuple[int, ...]) -> dict[str, str]:
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
        "MASTER_PORT": str(20_000 + task.job_id % 20_000),
    }


def _kill_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
