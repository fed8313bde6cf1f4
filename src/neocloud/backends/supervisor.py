"""The supervisor of one rank, outside its sandbox (as `slurmstepd` or `conmon` are).

Forked by the spawner, it runs as the server's user (root on a shared host) in a session of its
own, so it outlives a crash of the server. It starts the rank in the rank's cgroup, carries the
rank's output into its log files (the job never holds them, so it cannot rewrite what it wrote
before, nor fill the disk past the cap), stops it on request, and when the rank's first process
ends kills whatever it left behind, then records the exit status where the job cannot write:
the status is in the file only once every process of the rank is gone.

Signals: SIGTERM stops the rank gracefully (SIGTERM to its processes, SIGKILL after the grace);
SIGUSR1 kills it at once. Both are blocked from the spawner's fork until the handlers are in
place, so a stop sent the moment a rank starts is carried out, not lost with the supervisor.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from typing import Any, NoReturn

from neocloud.backends.cgroups import Cgroup
from neocloud.backends.sandbox import ARGS_FD

GRACE_S = 10.0  # between SIGTERM and SIGKILL
EXIT_WIDTH = 16  # bytes of the exit file: blank until the rank has ended, then its status
STOPS = frozenset({signal.SIGTERM, signal.SIGUSR1})  # blocked from the fork until the handlers are in place
LOG_CAP = 1 << 30  # bytes a rank's stream may add to its log in one attempt
CUT = b"\n[neocloud: output over 1 GiB in this attempt was dropped]\n"
ENTRY = {"bwrap", "setpriv", "env"}  # what a sandboxed rank passes through before its own command runs


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
    args_fd = _args_file(rank.get("fd_args"), rank.get("fd_text"))
    pid = os.fork()
    if pid == 0:
        _exec(rank, [w for _, w in pipes], args_fd, cgroup)
    for fd in [w for _, w in pipes] + ([] if args_fd is None else [args_fd]):
        os.close(fd)
    pumps = [threading.Thread(target=_pump, args=(r, log), daemon=True) for (r, _), log in zip(pipes, logs)]
    for t in pumps:
        t.start()

    def spared() -> set[int]:
        """Processes a graceful stop leaves alone: in a sandbox, bubblewrap's monitor (its end would
        kill the rank at once) and the PID namespace's init (which takes no signal it has no handler for)."""
        if not rank.get("spare_top") or cgroup is None:
            return set()
        return {pid} | {p for p in cgroup.pids() if _namespace_init(p)}

    ended = threading.Event()

    def kill(*_: object) -> None:
        if cgroup is not None:
            cgroup.kill()
        else:
            _killpg(pid, signal.SIGKILL)

    def graceful() -> None:
        """SIGTERM to the rank's processes, SIGKILL at the end of the grace. Stopped the moment it
        starts, the rank may still be on its way in (bubblewrap, setpriv, env: a signal then may be
        lost): it is signalled once its own command runs."""
        deadline = time.monotonic() + GRACE_S
        if rank.get("stop"):
            while not ended.is_set() and time.monotonic() < deadline:  # tried until the rank has it
                with contextlib.suppress(OSError, subprocess.SubprocessError):
                    if subprocess.run(rank["stop"], stdin=null, stdout=null, stderr=null,
                                      timeout=max(deadline - time.monotonic(), 0.1)).returncode == 0:
                        break
                ended.wait(0.1)
        elif cgroup is None:
            _killpg(pid, signal.SIGTERM)
        else:
            while time.monotonic() < deadline:
                skip = spared()
                if any(_command(p) not in ENTRY for p in cgroup.pids() if p not in skip):
                    cgroup.signal(signal.SIGTERM, skip)
                    break
                time.sleep(0.02)
        if not ended.wait(max(deadline - time.monotonic(), 0.0)):
            kill()

    def stop(*_: object) -> None:
        threading.Thread(target=graceful, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGUSR1, kill)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPS)  # a stop sent since the fork is handled now
    _, status = os.waitpid(pid, 0)
    ended.set()
    code = os.waitstatus_to_exitcode(status)
    code = 128 - code if code < 0 else code  # killed by signal N: 128 + N, as a shell says
    kill()  # what the rank left running in the background goes with it
    if rank.get("after"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(rank["after"], stdin=null, stdout=null, stderr=null, timeout=120)
    for t in pumps:
        t.join(timeout=30)
    if cgroup is not None:
        with contextlib.suppress(OSError):  # one that will not go is swept at the server's next start
            cgroup.remove()
    fd = os.open(rank["exit_file"], os.O_WRONLY | os.O_CLOEXEC)  # made blank by the spawner: no new room needed
    try:
        os.pwrite(fd, str(code).ljust(EXIT_WIDTH).encode(), 0)
    finally:
        os.close(fd)
    return 0


def _args_file(args: list[str] | None, text: str | None = None) -> int | None:
    """bubblewrap's arguments (the job's environment among them), or podman's env file, in an
    anonymous file."""
    if args is None and text is None:
        return None
    fd = os.memfd_create("neocloud-args", 0)
    data = text.encode() if text is not None else b"".join(a.encode("utf-8", "surrogateescape") + b"\0" for a in args or [])
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _exec(rank: dict[str, Any], outputs: list[int], args_fd: int | None, cgroup: Cgroup | None) -> NoReturn:
    try:
        for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGPIPE, signal.SIGXFSZ):  # as a fresh process has them
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
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
    """Copy the rank's output into its log, up to the cap; past it, or while the log cannot be
    written (a full disk), keep reading and drop: a rank must never block on its own output."""
    written = 0
    while chunk := os.read(source, 1 << 16):
        if written < LOG_CAP:
            keep = chunk[: LOG_CAP - written]
            try:
                os.write(log, keep)
                written += len(keep)
                if written >= LOG_CAP:
                    os.write(log, CUT)
            except OSError:  # this chunk is lost; the next may find room again
                pass
    os.close(source)


def _command(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def _namespace_init(pid: int) -> bool:
    """Whether the process is PID 1 of a namespace below this one (NSpid ends in 1)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            line = next((x for x in f if x.startswith("NSpid:")), "")
    except OSError:
        return False
    ids = line.split()[1:]
    return len(ids) > 1 and ids[-1] == "1"


def _killpg(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
