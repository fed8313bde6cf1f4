"""Jobs as real processes on this machine: one process group per rank, logs in files.

Each rank runs under a small `sh` wrapper in a session of its own, so it outlives a crash of the
server. The wrapper writes the command's exit status to a file when it ends; with the pid file
(pid and the kernel's start time, so a reused pid is not mistaken for ours) a restarted server can
tell a rank still running, one that ended while it was down, and one that was lost.

    DATA_DIR/jobs/<id>/rank-<r>.out, rank-<r>.err          logs, appended across attempts
    DATA_DIR/jobs/<id>/attempt-<a>.rank-<r>.pid, .exit     bookkeeping
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

from neocloud.backends.base import Exit, Recovered, Task

# Runs "$@" and records its status atomically; exits with it.
WRAPPER = '"$@"; rc=$?; printf "%s" "$rc" > "$0.tmp" && mv "$0.tmp" "$0"; exit "$rc"'
GRACE_S = 10.0  # between SIGTERM and SIGKILL


@dataclass(slots=True)
class _Rank:
    pid: int
    start: str  # the kernel's start time of `pid`
    exit_file: Path
    proc: subprocess.Popen | None = None  # None when adopted after a restart

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return _start_time(self.pid) == self.start

    def code(self) -> int | None:
        try:
            return int(self.exit_file.read_text())
        except (OSError, ValueError):
            if self.proc is not None and self.proc.returncode is not None and self.proc.returncode >= 0:
                return self.proc.returncode
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

    # -- running ------------------------------------------------------------------------------
    def launch(self, task: Task) -> None:
        job_dir = self.root / str(task.job_id)
        job_dir.mkdir(parents=True, exist_ok=True)
        ranks: list[_Rank] = []
        try:
            for rank, (node, gpus) in enumerate(task.nodes):
                env = {**os.environ, **task.env, **_rank_env(task, rank, node, gpus)}
                exit_file = job_dir / f"attempt-{task.attempt}.rank-{rank}.exit"
                exit_file.unlink(missing_ok=True)
                with open(self.log_path(task.job_id, rank, "stdout"), "ab") as out, \
                        open(self.log_path(task.job_id, rank, "stderr"), "ab") as err:
                    proc = subprocess.Popen(
                        ["/bin/sh", "-c", WRAPPER, str(exit_file), *task.argv],
                        cwd=job_dir, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                        start_new_session=True,
                    )
                start = _start_time(proc.pid) or ""
                (job_dir / f"attempt-{task.attempt}.rank-{rank}.pid").write_text(f"{proc.pid} {start}")
                ranks.append(_Rank(proc.pid, start, exit_file, proc))
        except OSError:
            for r in ranks:
                _kill_group(r.pid, signal.SIGKILL)
            raise
        with self._lock:
            self._live[(task.job_id, task.attempt)] = _Attempt(ranks)

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


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat: when the process started, in clock ticks since boot."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return None if fields[0] == "Z" else fields[19]


def _kill_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
