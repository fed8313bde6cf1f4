"""The supervisor of one rank, outside its sandbox (as `slurmstepd` or `conmon` are).

Forked by the spawner, it runs as the server's user (root on a shared host) in a session of its
own, so it outlives a crash of the server. It starts the rank in the rank's cgroup, carries the
rank's output into its log files (the job never holds them, so it cannot rewrite what it wrote
before, nor fill the disk past the cap), stops it on request, and when the rank's first process
ends kills whatever it left behind, then records the exit status where the job cannot write:
the file appears only once every process of the rank is gone.

Signals: SIGTERM stops the rank gracefully (SIGTERM to its processes, SIGKILL after the grace);
SIGUSR1 kills it at once.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any, NoReturn

from neocloud.backends.cgroups import Cgroup
from neocloud.backends.sandbox import ARGS_FD

GRACE_S = 10.0  # between SIGTERM and SIGKILL
LOG_CAP = 1 << 30  # bytes a rank's stream may add to its log in one attempt
CUT = b"\n[neocloud: output over 1 GiB in this attempt was dropped]\n"


def supervise(rank: dict[str, Any], logs: tuple[int, int], cgroup: Cgroup | None) -> NoReturn:
    """Run in the spawner's forked child; never returns."""
    code = 1
    try:
        code = _supervise(rank, logs, cgroup)
    finally:
        os._exit(code)


def _supervise(rank: dict[str, Any], logs: tuple[int, int], cgroup: Cgroup | None) -> int:
    os.setsid()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the spawner ignores it; we wait for our child
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    pipes = [os.pipe() for _ in logs]
    args_fd = _args_file(rank.get("fd_args"))
    pid = os.fork()
    if pid == 0:
        _exec(rank, [w for _, w in pipes], args_fd, cgroup)
    for fd in [w for _, w in pipes] + ([] if args_fd is None else [args_fd]):
        os.close(fd)
    pumps = [threading.Thread(target=_pump, args=(r, log), daemon=True) for (r, _), log in zip(pipes, logs)]
    for t in pumps:
        t.start()
    spare = pid if rank.get("spare_top") else None

    def kill(*_: object) -> None:
        if cgroup is not None:
            cgroup.kill()
        else:
            _killpg(pid, signal.SIGKILL)

    def stop(*_: object) -> None:
        if cgroup is not None:
            cgroup.signal(signal.SIGTERM, spare)
        else:
            _killpg(pid, signal.SIGTERM)
        timer = threading.Timer(rank.get("grace_s", GRACE_S), kill)
        timer.daemon = True
        timer.start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGUSR1, kill)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    code = 128 - code if code < 0 else code  # killed by signal N: 128 + N, as a shell says
    kill()  # what the rank left running in the background goes with it
    for t in pumps:
        t.join(timeout=30)
    if cgroup is not None:
        cgroup.remove()
    tmp = rank["exit_file"] + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(code))
    os.replace(tmp, rank["exit_file"])
    return 0


def _args_file(args: list[str] | None) -> int | None:
    """bubblewrap's arguments (the job's environment among them) in an anonymous file."""
    if args is None:
        return None
    fd = os.memfd_create("neocloud-args", 0)
    os.write(fd, b"".join(a.encode("utf-8", "surrogateescape") + b"\0" for a in args))
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _exec(rank: dict[str, Any], outputs: list[int], args_fd: int | None, cgroup: Cgroup | None) -> NoReturn:
    try:
        for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        os.setpgid(0, 0)
        if cgroup is not None:
            cgroup.join(os.getpid())
        os.dup2(outputs[0], 1)
        os.dup2(outputs[1], 2)
        if args_fd is not None:
            os.dup2(args_fd, ARGS_FD)
        os.closerange(ARGS_FD + 1 if args_fd is not None else 3, os.sysconf("SC_OPEN_MAX"))
        os.chdir(rank["cwd"])
        os.execve(rank["argv"][0], rank["argv"], rank["env"])
    except BaseException as e:  # noqa: BLE001 - whatever it was, the rank could not start: say so
        os.write(2, f"neocloud: the rank could not start: {e}\n".encode())
    os._exit(127)


def _pump(source: int, log: int) -> None:
    """Copy the rank's output into its log, up to the cap; past it keep reading and drop."""
    written = 0
    while chunk := os.read(source, 1 << 16):
        if written < LOG_CAP:
            keep = chunk[: LOG_CAP - written]
            os.write(log, keep)
            written += len(keep)
            if written >= LOG_CAP:
                os.write(log, CUT)
    os.close(source)


def _killpg(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
