"""A small helper process that starts the local backend's processes, off the server's interpreter.

Starting a process holds the parent's interpreter lock while the child is created; done in the
server, hundreds of starts a second would stall the API and the controller. The server sends one
JSON line of attempts on stdin and reads one line back: for each attempt, each rank's pid and
kernel start time (also written to the rank's pid file), or an error. The helper reaps its children; the children are session leaders, so they outlive it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time


def start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat: when the process started, in clock ticks since boot."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return None if fields[0] == "Z" else fields[19]


def _reap() -> None:
    while True:
        try:
            os.wait()
        except ChildProcessError:
            time.sleep(0.05)


def _spawn(rank: dict) -> tuple[int, str]:
    os.makedirs(rank["cwd"], exist_ok=True)
    try:
        os.unlink(rank["exit_file"])  # left by an earlier try of this attempt
    except FileNotFoundError:
        pass
    with open(rank["stdout"], "ab") as out, open(rank["stderr"], "ab") as err:
        proc = subprocess.Popen(rank["argv"], cwd=rank["cwd"], env={**os.environ, **rank["env"]},
                                stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True)
    proc.returncode = 0  # reaped by `_reap`, not by Popen
    start = start_time(proc.pid) or ""
    with open(rank["pid_file"], "w") as f:
        f.write(f"{proc.pid} {start}")
    return proc.pid, start


def _attempt(ranks: list[dict]) -> dict:
    """Start every rank of one attempt, or none: a gang that cannot start whole is killed."""
    started: list[tuple[int, str]] = []
    try:
        for rank in ranks:
            started.append(_spawn(rank))
    except (OSError, ValueError, KeyError) as e:
        for pid, _ in started:
            try:
                os.killpg(pid, 9)
            except OSError:
                pass
        return {"error": str(e)}
    return {"started": started}


def main() -> None:
    threading.Thread(target=_reap, daemon=True).start()
    for line in sys.stdin:  # one line: the attempts to start, each a list of ranks
        sys.stdout.write(json.dumps([_attempt(ranks) for ranks in json.loads(line)]) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
