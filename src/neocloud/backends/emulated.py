"""Jobs that run nowhere, as KWOK's nodes do for Kubernetes: the fleet file's nodes, no processes.

An attempt "runs" for its spec's `estimated_duration` (DEFAULT_S when it has none) and exits 0, or
143 on every rank (as SIGTERM leaves a process) when it is stopped first. So the real API, store,
controller and scheduler can be driven at a million GPUs on one machine: launch, stop and poll cost
what changed (a heap of end times; a poll pops only the attempts that ended), never a scan of all
that run.

Like a real engine's processes, an attempt outlives kill -9 of the server. Its record is a journal
beside the jobs' files (where a standby server sharing them reads it when it takes the lead; only
the leader reads and writes it): one line per launch (fsync'd once per launch batch) and per stop, each line
with its CRC, so a line torn by a crash is skipped, never fatal. It is rewritten without its dead
lines at start and whenever they outnumber the live ones. An attempt is remembered RETAIN_S after
the controller heard of its end (from `poll`, `recover` or `reap_orphans`), so that a restart
before the controller committed that end still finds it rather than running the job again.

    FILES/emulated.journal          the record
    FILES/jobs/<id>/rank-<r>.out    a line when each attempt started and one when it ended,
    FILES/jobs/<id>/rank-<r>.err    (empty) written when the log is asked for

Nothing of a tenant's runs, so there is nothing to keep apart: `isolation` is None.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import logging
import math
import os
import re
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neocloud.backends.base import Exit, Recovered, Task
from neocloud.errors import NeocloudError

log = logging.getLogger("neocloud.backends.emulated")
DEFAULT_S = 60.0  # how long an attempt runs whose spec gives no estimated_duration
STOPPED = 143  # each rank's exit status when stopped: 128 + SIGTERM, as a shell says
RETAIN_S = 600.0  # how long an ended attempt is remembered after the controller heard of it
COMPACT_MIN = 100_000  # dead journal lines tolerated, beyond as many as there are live records
_LOG_LINE = re.compile(rb"^emulated: attempt (\d+) (started|ended)", re.MULTILINE)

Key = tuple[int, int]  # (job id, attempt)


@dataclass(slots=True)
class _Run:
    job_id: int
    attempt: int
    start: float
    end: float  # when it ends, or ended: start + its duration, or when it was stopped
    duration: float  # as launched
    nodes: tuple[tuple[str, tuple[int, ...]], ...]
    code: int = 0  # every rank's exit status
    live: bool = False  # its end is still to be reported by `poll`

    def record(self) -> bytes:
        return _encode(["L", self.job_id, self.attempt, self.start, self.end, self.duration, self.code,
                        [[n, list(g)] for n, g in self.nodes]])

    def log_lines(self, rank: int, now: float) -> list[tuple[tuple[int, bytes], bytes]]:
        """Its stdout for `rank`, keyed by (attempt, what): a start line, then an end line once ended."""
        node, gpus = self.nodes[rank]
        where = f"{node} GPUs {','.join(map(str, gpus)) or 'none'} (rank {rank} of {len(self.nodes)})"
        lines = [((self.attempt, b"started"),
                  f"emulated: attempt {self.attempt} started on {where}: runs {self.duration:.6g} s, "
                  "nothing is executed\n".encode())]
        if not self.live and self.end <= now:
            how = " (stopped)" if self.code == STOPPED else ""
            lines.append(((self.attempt, b"ended"), f"emulated: attempt {self.attempt} ended after "
                          f"{self.end - self.start:.6g} s: exit {self.code}{how}\n".encode()))
        return lines


class EmulatedBackend:
    name = "emulated"
    isolation: str | None = None  # no tenant's code runs, so none can reach another's

    def __init__(self, files: Path, data_dir: Path, clock: Callable[[], float] = time.time,
                 default_s: float = DEFAULT_S) -> None:
        """`files`: where the per-rank logs go (FILES/jobs); `data_dir`: where the journal is kept;
        `clock`: wall-clock seconds (the record outlives the process, so not a monotonic clock)."""
        self.root = files
        self.clock = clock
        self.default_s = default_s
        for d in (data_dir, self.root):
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o700)  # the store, the admin token and the logs are the server's alone
        self._lock = threading.Lock()  # the state below: `poll` waits on nothing else
        self._writing = threading.Lock()  # the journal and changes to a run's record: held outside `_lock`
        self._log_lock = threading.Lock()
        self._journal_path = data_dir / "emulated.journal"
        self._journal: _Journal | None = None  # read when this server first leads (`take_over`)
        self._clear()

    def _clear(self) -> None:
        self._runs: dict[Key, _Run] = {}  # every attempt in the record
        self._by_job: dict[int, list[_Run]] = {}  # the same, by job: for its logs
        self._heap: list[tuple[float, int, int]] = []  # (end, job id, attempt) of live runs; stale ones skipped
        self._done: deque[tuple[float, _Run]] = deque()  # (when the controller heard of its end, run)
        self._cordons: dict[str, str] = {}  # the operator's, in memory as an engine keeps them

    def take_over(self) -> None:
        """This server leads now: (re)read the record, which another server may have written."""
        with self._writing, self._lock:
            if self._journal is not None:
                self._journal.close()
            self._clear()
            journal = _Journal(self._journal_path)
            skipped = 0
            for rec in journal.read():
                try:
                    self._replay(rec)
                except (ValueError, TypeError, IndexError, KeyError):
                    skipped += 1
            skipped += journal.skipped
            if skipped:
                log.warning("%s: skipped %d unreadable line(s) (a write torn by a crash)", journal.path, skipped)
            if skipped or journal.lines != len(self._runs):  # a torn tail, stops or dead lines: rewritten
                journal.rewrite(r.record() for r in self._runs.values())
            self._journal = journal

    def _ready(self) -> _Journal:
        """The record, read at first use where no server said it leads (in tests). Only the leader
        runs attempts, so only it may read (and compact) the record: a standby's logs read files."""
        if self._journal is None:
            self.take_over()
        assert self._journal is not None
        return self._journal

    def _replay(self, rec: list[Any]) -> None:
        if rec[0] == "L":
            _, job_id, attempt, start, end, duration, code, nodes = rec
            self._add(_Run(int(job_id), int(attempt), float(start), float(end), float(duration),
                           tuple((str(n), tuple(int(g) for g in gpus)) for n, gpus in nodes), int(code)))
        elif rec[0] == "S":
            run = self._runs.get((int(rec[1]), int(rec[2])))
            at = float(rec[3])
            if run is not None and run.code == 0 and at < run.end:
                run.end, run.code = at, STOPPED
        else:
            raise ValueError(f"unknown record {rec[0]!r}")

    def _add(self, run: _Run) -> None:
        old = self._runs.get((run.job_id, run.attempt))
        if old is not None:
            self._by_job[run.job_id].remove(old)
        self._runs[(run.job_id, run.attempt)] = run
        self._by_job.setdefault(run.job_id, []).append(run)

    # -- running ------------------------------------------------------------------------------
    def launch(self, tasks: list[Task]) -> list[tuple[int, str]]:
        """Record the batch (one write, one fsync), then start each attempt's clock."""
        journal = self._ready()
        now = self.clock()
        runs = []
        for t in tasks:
            seconds = self._duration(t)
            runs.append(_Run(t.job_id, t.attempt, now, now + seconds, seconds, t.nodes))
        with self._writing:
            with self._lock:  # one launched twice runs once
                runs = [r for r in runs if not ((old := self._runs.get((r.job_id, r.attempt))) and old.live)]
            journal.append(b"".join(r.record() for r in runs), sync=True)
            with self._lock:
                for r in runs:
                    r.live = True
                    self._add(r)
                    heapq.heappush(self._heap, (r.end, r.job_id, r.attempt))
                self._forget(now)
            if journal.lines > 2 * len(self._runs) + COMPACT_MIN:
                with self._lock:
                    runs = list(self._runs.values())
                journal.rewrite(r.record() for r in runs)
        return []

    def _duration(self, task: Task) -> float:
        s = self.default_s if task.estimate_s is None else float(task.estimate_s)
        return s if math.isfinite(s) and s >= 0 else self.default_s

    def stop(self, job_id: int, attempt: int) -> None:
        """The attempt ends now, with 143 on every rank; one that already ended keeps its 0."""
        journal = self._ready()
        now = self.clock()
        with self._writing, self._lock:
            run = self._runs.get((job_id, attempt))
            if run is None or not run.live or run.code != 0 or run.end <= now:
                return
            journal.append(_encode(["S", job_id, attempt, now]), sync=False)  # kill -9 keeps it
            run.end, run.code = now, STOPPED
            heapq.heappush(self._heap, (now, job_id, attempt))

    def poll(self) -> list[Exit]:
        self._ready()
        now = self.clock()
        ended = []
        with self._lock:
            heap = self._heap
            while heap and heap[0][0] <= now:
                end, job_id, attempt = heapq.heappop(heap)
                run = self._runs.get((job_id, attempt))
                if run is None or not run.live or run.end != end:
                    continue  # an entry left behind by a stop
                run.live = False
                self._done.append((now, run))
                ended.append(Exit(job_id, attempt, (run.code,) * len(run.nodes)))
        return ended

    def _forget(self, now: float) -> None:
        """Drop the records of attempts whose end the controller heard of RETAIN_S ago (under `_lock`)."""
        while self._done and self._done[0][0] <= now - RETAIN_S:
            run = self._done.popleft()[1]
            key = (run.job_id, run.attempt)
            if self._runs.get(key) is run and not run.live:
                del self._runs[key]
                runs = self._by_job[run.job_id]
                runs.remove(run)
                if not runs:
                    del self._by_job[run.job_id]

    # -- after a restart ----------------------------------------------------------------------
    def recover(self, job_id: int, attempt: int, ranks: int) -> Recovered:
        self._ready()
        now = self.clock()
        with self._lock:
            run = self._runs.get((job_id, attempt))
            if run is None:
                return None  # never recorded as launched: it did not start
            if run.live:
                return "running"
            if run.end > now:  # still within its duration (a stopped one ended when stopped)
                run.live = True
                heapq.heappush(self._heap, (run.end, job_id, attempt))
                return "running"
            self._done.append((now, run))
            return Exit(job_id, attempt, (run.code,) * len(run.nodes))

    def reap_orphans(self, keep: set[Key]) -> list[Key]:
        """Stop every attempt still within its duration that is not kept; say which."""
        journal = self._ready()
        now = self.clock()
        killed = []
        with self._writing, self._lock:
            for key, run in self._runs.items():
                if key in keep:
                    continue
                if run.code == 0 and run.end > now:
                    run.end, run.code = now, STOPPED
                    killed.append(key)
                    if run.live:  # adopted, then not kept: its end comes through poll
                        heapq.heappush(self._heap, (now, *key))
                if not run.live:
                    self._done.append((now, run))
            journal.append(b"".join(_encode(["S", *k, now]) for k in killed), sync=True)
        return sorted(killed)

    # -- nodes, logs --------------------------------------------------------------------------
    def drained(self) -> dict[str, str]:
        """The cordons neocloud told it of, as Slurm reports its DRAIN; kept in memory only."""
        return dict(self._cordons)

    def set_node(self, name: str, cordoned: bool, reason: str) -> None:
        if cordoned:
            self._cordons[name] = reason or "cordoned by neocloud"
        else:
            self._cordons.pop(name, None)

    def log_path(self, job_id: int, rank: int, stream: str) -> Path:
        """The rank's log, brought up to date with what is known of the job's attempts when asked
        for: appended to, never rewritten, so a reader following it by offset reads on."""
        path = self.root / str(job_id) / f"rank-{rank}.{'out' if stream == 'stdout' else 'err'}"
        now = self.clock()
        with self._lock:
            lines = [line for run in self._by_job.get(job_id, ()) if rank < len(run.nodes)
                     for line in run.log_lines(rank, now)]
        if not lines:  # no attempt had this rank: nothing is made (a rank number is the caller's choice)
            return path
        with self._log_lock:
            path.parent.mkdir(exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "r+b") as f:
                if stream == "stdout":
                    have = {(int(m[1]), m[2]) for m in _LOG_LINE.finditer(f.read())}
                    f.write(b"".join(text for key, text in lines if key not in have))
        return path

    def close(self) -> None:
        """Flush the journal (the attempts go on "running" in it, as processes would)."""
        with self._writing:
            if self._journal is not None:
                self._journal.close()


class _Journal:
    """An append-only file of lines `<crc32 hex> <json>\\n`; one not whole or not matching its CRC is skipped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines = 0  # in the file now
        self.skipped = 0  # unreadable lines found by `read`
        self._fd: int | None = None

    def read(self) -> Iterator[list[Any]]:
        try:
            f = open(self.path, "rb")  # noqa: SIM115 - closed below, as the generator ends
        except FileNotFoundError:
            return
        except OSError as e:
            raise NeocloudError(f"{self.path}: cannot read the emulated backend's record ({e}); "
                                "fix its permissions, or move it away to forget every emulated job") from None
        with f:
            for raw in f:
                try:
                    if not raw.endswith(b"\n"):
                        raise ValueError("torn")
                    crc, payload = raw[:-1].split(b" ", 1)
                    if int(crc, 16) != zlib.crc32(payload):
                        raise ValueError("crc")
                    rec = json.loads(payload)
                    if not isinstance(rec, list) or not rec:
                        raise ValueError("shape")
                except ValueError:
                    self.skipped += 1
                    continue
                self.lines += 1
                yield rec

    def append(self, data: bytes, sync: bool) -> None:
        if not data:
            return
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
        if sync:
            os.fsync(self._fd)
        self.lines += data.count(b"\n")

    def rewrite(self, records: Iterable[bytes]) -> None:
        """Replace the file by these lines, atomically: a crash leaves the old file or the new."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        count = 0
        with open(tmp, "wb") as f:
            for rec in records:
                f.write(rec)
                count += 1
            f.flush()
            os.fsync(f.fileno())
        self.close()
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self.lines = count

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None


_JSON = json.JSONEncoder(separators=(",", ":"))  # made once: json.dumps with options makes one per call


def _encode(rec: list[Any]) -> bytes:
    payload = _JSON.encode(rec).encode()
    return b"%08x %s\n" % (zlib.crc32(payload), payload)
