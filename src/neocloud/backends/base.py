"""What the controller asks of a backend, and what a backend reports back."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol


@dataclass(frozen=True, slots=True)
class Task:
    """One attempt of a job: the same command on each of its nodes, one process group per node."""

    job_id: int
    attempt: int
    command: str | tuple[str, ...]  # a shell command line, or an argv
    env: dict[str, str] = field(default_factory=dict)
    nodes: tuple[tuple[str, tuple[int, ...]], ...] = ()  # (node name, GPU indices on it) per rank
    tenant: str = ""  # whose job it is: the rank runs as this tenant's own user where the backend can
    checkpoint_dir: Path | None = None  # kept across attempts; given to the job as NEOCLOUD_CHECKPOINT_DIR
    cpu_milli: int = 0  # per rank: enforced where the backend can (0: no limit)
    memory_mib: int = 0  # per rank, likewise
    trusted: bool = False  # neocloud's own (an active check): runs as the server's user, outside any sandbox
    estimate_s: float | None = None  # the spec's estimated_duration: how long an emulated attempt runs
    image: str | None = None  # an OCI image to run each rank in (where the backend can), else the host's system
    code: Path | None = None  # the job's code (a gzipped tar, backends/code.py): each rank starts in its own copy


STOPPED = (128 + 15, 128 + 9)  # a rank's status once SIGTERM or SIGKILL stopped it


@dataclass(frozen=True, slots=True)
class Exit:
    """An attempt that ended: each rank's exit status (None when it left none: killed or lost)."""

    job_id: int
    attempt: int
    codes: tuple[int | None, ...]
    # It went with its node or its engine (a Ray head restarted), by the backend's own account: no
    # fault of the job's. A status the job's own files fail to give is not this: that is the job's.
    lost: bool = False

    @property
    def ok(self) -> bool:
        return all(c == 0 for c in self.codes)

    @property
    def code(self) -> int | None:
        """The job's exit status: the first failed rank's, not one the backend stopped after it (by
        SIGTERM or SIGKILL: 143, 137), unless only such are left; else 0."""
        failed = [c for c in self.codes if c not in (0, None)]
        if failed:
            return next((c for c in failed if c not in STOPPED), failed[0])
        return None if None in self.codes else 0


Recovered = Literal["running"] | Exit | None


def read_file(path: Path, offset: int = 0, limit: int = 1 << 20) -> bytes:
    """Up to `limit` bytes of a regular file from `offset` (b"" if it is missing or shorter).

    Where a tenant's user may write in a job's directory (Slurm's), a log or exit file may be a
    link, a FIFO or a device put there to make the server, as root, read something else or block:
    such a file is refused (OSError), never followed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return b""
    with os.fdopen(fd, "rb") as f:
        size = file_size(path, os.fstat(fd))
        if offset >= size:  # past the end is nothing yet (seeking there may fail)
            return b""
        f.seek(offset)
        return f.read(limit)


def file_size(path: Path, st: os.stat_result | None = None) -> int:
    """A regular file's size, 0 if it is missing; OSError if it is anything else (see `read_file`)."""
    try:
        st = st or os.lstat(path)
    except FileNotFoundError:
        return 0
    if not stat.S_ISREG(st.st_mode):
        raise OSError(f"{path} is not a regular file")
    return st.st_size


class Backend(Protocol):
    name: str
    isolation: str | None  # why it cannot keep tenants apart (it then serves one), or None if it can

    def launch(self, tasks: list[Task]) -> list[tuple[int, str]]:
        """Start every rank of each attempt; return (job id, why) for those that could not start."""

    def stop(self, job_id: int, attempt: int) -> None:
        """Stop the attempt's processes (its end then comes through `poll`)."""

    def poll(self) -> list[Exit]:
        """Attempts that ended since the last poll."""

    def recover(self, job_id: int, attempt: int, ranks: int) -> Recovered:
        """After a restart: 'running' (adopted), its Exit if it ended meanwhile, None if lost."""

    def take_over(self) -> None:
        """This server leads now (at start, or after another server led): read again whatever
        record of attempts the backend keeps itself, before `recover` is asked."""

    def reap_orphans(self, keep: set[tuple[int, int]]) -> list[tuple[int, int]]:
        """Kill processes of attempts not in `keep` (ended or cancelled jobs); say which."""

    def log_path(self, job_id: int, rank: int, stream: str) -> Path:
        """Where a rank's stdout or stderr is kept."""

    def close(self) -> None:
        """Let go of helpers (the jobs themselves keep running)."""

    def drained(self) -> dict[str, str]:
        """Nodes the engine itself has taken out of service, with its reason."""

    def set_node(self, name: str, cordoned: bool, reason: str) -> None:
        """Tell the engine of a cordon or uncordon made in neocloud."""
