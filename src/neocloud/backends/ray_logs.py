"""An attempt's Ray log, followed as the driver writes it and copied into per-rank files.

Ray's Jobs API has no read from an offset: `get_job_logs` answers the whole log, every time. Its
websocket (`tail_job_logs`) sends the log from its beginning and then each line once, as it is
written, until the job ends. So each live attempt is followed by one stream, and a poll only
copies what the streams brought. A stream starts from the log's beginning, after a broken
connection as after a restart; what was copied before (the offset kept in `attempt-<a>.seen`) is
skipped, not copied twice.

The driver prefixes each rank's lines with `[rank R]` (`[rank R stderr]` for its stderr) and ends
with `[neocloud] exit codes: C0 C1 ...`; Ray's own INFO lines are dropped, anything else goes to
rank 0's stderr.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

CODES = "[neocloud] exit codes: "
_LINE = re.compile(r"^\[rank (\d+)( stderr)?\] ?(.*)$")
_RAY_NOISE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\s+(INFO|DEBUG)\b|Running entrypoint for job )")
CLOSE_S = 10.0  # how long closing waits for the streams to end


@dataclass(slots=True)
class AttemptLog:
    """How far one attempt's log is copied, where the current stream stands, and the driver's exit
    codes once they have passed."""

    seen_file: Path  # holds `seen`, so that a restarted neocloud copies no line twice
    rank_path: Callable[[int, str], Path]  # (rank, "stdout" | "stderr") -> the rank's file
    ranks: int
    seen: int = 0  # characters of the log already copied
    pos: int = 0  # where `pending` starts in the log
    pending: str = ""  # the start of a line whose end has not arrived yet
    codes: tuple[int | None, ...] | None = None

    @classmethod
    def resume(cls, seen_file: Path, rank_path: Callable[[int, str], Path], ranks: int) -> AttemptLog:
        """The log of an attempt that an earlier neocloud (or this one) began copying."""
        try:
            seen = int(seen_file.read_text())
        except (OSError, ValueError):
            seen = 0
        return cls(seen_file, rank_path, ranks, seen)

    def restart(self) -> None:
        """A new stream: it starts again from the log's beginning."""
        self.pos, self.pending = 0, ""

    def feed(self, new: str) -> None:
        """Copy the complete lines of `new` (what followed the stream's last chunk) past `seen`."""
        text = self.pending + new
        end = text.rfind("\n") + 1
        start = self.pos
        self.pending, self.pos = text[end:], start + end
        if not end:
            return
        skip = min(max(self.seen - start, 0), end)  # copied already, by an earlier stream or neocloud
        if CODES in text[:skip]:  # still wanted for the attempt's end
            self.codes = exit_codes(text[:skip], self.ranks) or self.codes
        if skip == end:
            return
        out: dict[Path, list[str]] = {}
        for line in text[skip:end].splitlines():
            if m := _LINE.match(line):
                out.setdefault(self.rank_path(int(m[1]), "stderr" if m[2] else "stdout"), []).append(m[3] + "\n")
            elif line.startswith(CODES):
                self.codes = exit_codes(line, self.ranks) or self.codes
            elif not _RAY_NOISE.match(line):
                out.setdefault(self.rank_path(0, "stderr"), []).append(line + "\n")
        for path, lines in out.items():
            with open(path, "a") as f:
                f.writelines(lines)
        self.seen = start + end
        self.seen_file.write_text(str(self.seen))

    def finish(self) -> None:
        """The log is complete: copy its last line even without a newline."""
        if self.pending:
            self.feed("\n")


def exit_codes(text: str, ranks: int) -> tuple[int | None, ...] | None:
    """Each rank's exit status from the last `[neocloud] exit codes:` line of `text`, if any."""
    for line in reversed(text.splitlines()):
        if line.startswith(CODES):
            codes = tuple(None if c == "-" else int(c) for c in line[len(CODES):].split())
            if len(codes) == ranks:
                return codes
    return None


class LogStreams:
    """Ray jobs' logs, followed over the Jobs API's websocket on one thread with its own event
    loop (started on first use), each stream handing its chunks to its callbacks."""

    def __init__(self, client: JobSubmissionClient) -> None:
        self.client = client
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def follow(self, name: str, chunk: Callable[[str], None], closed: Callable[[str], None]) -> Future[None]:
        """Stream job `name`'s log from its beginning: `chunk` for each piece as it comes, then
        `closed` once, with "" when the job ended and the log is complete, else why the stream broke."""
        return asyncio.run_coroutine_threadsafe(self._tail(name, chunk, closed), self._started())

    async def _tail(self, name: str, chunk: Callable[[str], None], closed: Callable[[str], None]) -> None:
        why = ""
        try:
            async for text in self.client.tail_job_logs(name):
                chunk(text)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - a broken stream: its owner asks Ray what became of the job
            why = f"{type(e).__name__}: {e}"
        closed(why)

    def _started(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=self._loop.run_forever, name="neocloud-ray-logs", daemon=True)
                self._thread.start()
            return self._loop

    def close(self) -> None:
        """End every stream and the thread (the jobs themselves go on)."""
        with self._lock:
            loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(_cancel_all(), loop).result(timeout=CLOSE_S)
        except TimeoutError:
            pass  # a stream that will not end goes with the (daemon) thread
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=CLOSE_S)
        if not thread.is_alive():
            loop.close()


async def _cancel_all() -> None:
    """Cancel the loop's other tasks (the streams) and let them finish."""
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
