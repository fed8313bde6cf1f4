"""A small helper process that starts the local backend's ranks, off the server's interpreter.

Starting a process holds the parent's interpreter lock while the child is created; done in the
server, hundreds of starts a second would stall the API and the controller. The server sends one
JSON line of attempts on stdin and reads one line back: for each attempt, each rank's supervisor
pid and kernel start time (which the supervisor writes to the rank's pid file first), or an error. Each rank gets a
supervisor forked from here (`supervisor.py`); the kernel reaps them, and they are session
leaders, so they outlive this helper and the server.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from typing import Any

from neocloud.backends.cgroups import Cgroup, Limits
from neocloud.backends.supervisor import EXIT_WIDTH, STOPS, supervise


def start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat: when the process started, in clock ticks since boot."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return None if fields[0] == "Z" else fields[19]


def _prepare(rank: dict[str, Any]) -> tuple[tuple[int, int], Cgroup | None]:
    """Everything that can fail, done before any rank of the attempt starts: its directories,
    its log files (the server's, the job never holds them) and its cgroup."""
    for path, uid, gid in rank["dirs"]:
        os.makedirs(path, mode=0o700, exist_ok=True)
        if uid is not None:
            os.chown(path, uid, gid)
        os.chmod(path, 0o700)
    # The exit file's room is taken now, blank (no status yet): the supervisor writes the status in
    # place, so even on a disk the job has filled it finds the room to say how the rank ended.
    fd = os.open(rank["exit_file"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, b" " * EXIT_WIDTH)
    finally:
        os.close(fd)
    append = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
    logs = (os.open(rank["stdout"], append, 0o600), os.open(rank["stderr"], append, 0o600))
    cgroup = None
    if rank.get("cgroup"):
        c = rank["cgroup"]
        cgroup = Cgroup(c["instance"], c["name"])
        cgroup.create(Limits(c.get("cpu_milli", 0), c.get("memory_mib", 0)))
    return logs, cgroup


def _start(rank: dict[str, Any], logs: tuple[int, int], cgroup: Cgroup | None) -> tuple[int, str]:
    """Fork the rank's supervisor. It records its own pid and start time before anything else, so
    a rank that ends at once is still known to have started (recovery must never run it again)."""
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOPS)  # until the supervisor can handle them
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(ready_r)
            start = start_time(os.getpid()) or ""
            with open(rank["pid_file"], "w") as f:
                f.write(f"{os.getpid()} {start}")
            os.write(ready_w, start.encode())
            os.close(ready_w)
        except BaseException:  # noqa: BLE001 - never back into the spawner's loop
            os._exit(1)
        supervise(rank, logs, cgroup)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    os.close(ready_w)
    try:
        start = os.read(ready_r, 64).decode()
    finally:
        os.close(ready_r)
    if not start:
        raise OSError(f"the supervisor of {rank['pid_file']} could not start")
    return pid, start


def _attempt(ranks: list[dict[str, Any]]) -> dict[str, Any]:
    """Start every rank of one attempt, or none: a gang that cannot start whole is not started."""
    prepared: list[tuple[tuple[int, int], Cgroup | None]] = []
    try:
        for rank in ranks:
            prepared.append(_prepare(rank))
        started = [_start(rank, logs, cgroup) for rank, (logs, cgroup) in zip(ranks, prepared)]
    except (OSError, ValueError, KeyError) as e:
        for _, cgroup in prepared:
            if cgroup is not None:
                with contextlib.suppress(OSError):
                    cgroup.remove()
        return {"error": str(e)}
    finally:
        for logs, _ in prepared:
            for fd in logs:
                os.close(fd)
    return {"started": started}


def main() -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the supervisors
    for line in sys.stdin:  # one line: the attempts to start, each a list of ranks
        sys.stdout.write(json.dumps([_attempt(ranks) for ranks in json.loads(line)]) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
