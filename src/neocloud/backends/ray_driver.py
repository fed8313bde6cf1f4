"""The driver of one attempt on a Ray cluster: run as a Ray job, it holds the gang's placement group.

Shipped to the cluster as the job's working directory, so it needs Ray and the standard library
only (neocloud itself need not be installed there). Its one argument is the attempt as JSON:

    {"name": "neocloud-<instance>-7-1", "job_id": 7, "attempt": 1, "command": "..." | [...], "env": {...},
     "ranks": [{"node_id": "<Ray node id>", "node": "<neocloud name>", "gpus": 2}, ...]}

Each rank is a bundle pinned to the node neocloud chose (STRICT_PACK for one node, STRICT_SPREAD
across nodes) and runs the command in a Ray task holding its GPUs, so Ray sets its
`CUDA_VISIBLE_DEVICES`. Output comes back line by line as `[rank R] ...` (stdout) and
`[rank R stderr] ...`; the last line is `[neocloud] exit codes: C0 C1 ...`. When a rank fails the
others are stopped through the gang's stop flag (the gang lives and dies together), as when the
job is stopped.

A rank's command runs under a small watchdog (`WATCH`), in a process group of its own: when the Ray
worker that started it dies without stopping it (its raylet or the Ray head went down, and Ray
kills its workers, not what they started in a session of their own), the watchdog kills the group
at once. Else an attempt neocloud has requeued would still run beside the next one: the attempt
is lost as in a node failure, and gets no grace period, as its GPUs may be handed on straight away.
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from types import FrameType
from typing import IO, Any, NoReturn

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

READY_S = 60  # a placement group not ready by then means the chosen nodes are gone
POLL_S = 1.0  # how often a rank looks at the gang's stop flag
GRACE_S = 10.0  # between SIGTERM and SIGKILL, as on the other backends
WATCH_S = 0.5  # how often a rank's watchdog looks whether the Ray worker above it is still there

# The rank's watchdog, run as `python -c WATCH <watch> <argv...>` at the head of the rank's process
# group: it runs the command in that group and exits as the command did. A stop signals the whole
# group, so the watchdog lets SIGTERM pass (the command has the grace period) and waits; if the Ray
# worker that started it dies, it kills the group, itself included.
WATCH = r"""
import os, signal, subprocess, sys
every, argv = float(sys.argv[1]), sys.argv[2:]
parent = os.getppid()
signal.signal(signal.SIGTERM, lambda *_: None)  # a handler, not SIG_IGN: the command must not inherit it
try:
    proc = subprocess.Popen(argv)
except OSError as e:
    sys.stderr.write(f"cannot start {argv[0]}: {e}\n")
    sys.exit(127)
while True:
    try:
        code = proc.wait(timeout=every)
        break
    except subprocess.TimeoutExpired:
        if os.getppid() != parent:  # its Ray worker is gone
            os.killpg(0, signal.SIGKILL)
if code < 0:  # killed by a signal: end the same way, so the rank's status says which
    if -code != signal.SIGKILL:
        signal.signal(-code, signal.SIG_DFL)
    os.kill(os.getpid(), -code)
sys.exit(code)
"""


class Abort:
    """The gang's stop flag. Ranks look at it as they run; if the driver dies, so does this actor,
    and a rank that cannot reach it stops too. (Cancelling a running Ray task does not reliably
    reach a process it started.)"""

    def __init__(self) -> None:
        self.stop = False

    def set(self) -> None:
        self.stop = True

    def is_set(self) -> bool:
        return self.stop


# Ray's stubs give an actor handle's methods the type Never (through __getattr__), which would make
# every line after a call unreachable to the checker: the handle is used untyped.
AbortActor: Any = ray.remote(num_cpus=0)(Abort)


def _aborted(abort: Any) -> bool:
    try:
        return bool(ray.get(abort.is_set.remote(), timeout=10))
    except Exception:  # noqa: BLE001 - the driver (and its actor) is gone
        return True


@ray.remote(num_returns="streaming", max_retries=0)
def run_rank(command: str | list[str], env: dict[str, str], abort: Any) -> Iterator[tuple[str, str | int | None]]:
    """Run one rank's process; yield ("stdout"|"stderr", line) as it prints, then ("exit", code)."""
    if _aborted(abort):
        yield "exit", None
        return
    argv = ["/bin/sh", "-c", command] if isinstance(command, str) else command
    try:
        proc = subprocess.Popen([sys.executable, "-c", WATCH, str(WATCH_S), *argv],
                                env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    except OSError as e:
        yield "stderr", f"cannot start {argv[0]}: {e}\n"
        yield "exit", 127
        return
    try:
        pipes: dict[str, IO[bytes]] = {name: pipe for name, pipe in (("stdout", proc.stdout), ("stderr", proc.stderr))
                                       if pipe is not None}  # both, as both are PIPE
        sel = selectors.DefaultSelector()
        for name, pipe in pipes.items():
            sel.register(pipe, selectors.EVENT_READ, name)
        checked = time.monotonic()
        while sel.get_map():
            for key, _ in sel.select(timeout=POLL_S):
                line = pipes[key.data].readline()
                if line:
                    yield key.data, line.decode(errors="replace")
                else:
                    sel.unregister(key.fileobj)
            if time.monotonic() - checked >= POLL_S:
                checked = time.monotonic()
                if _aborted(abort):
                    break
        if proc.poll() is None and _aborted(abort):
            yield "exit", None
            return
        yield "exit", proc.wait()
    finally:
        if proc.poll() is None:  # stopped: the process group has GRACE_S to save a checkpoint, then goes
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def main(attempt: dict[str, Any]) -> int:
    ranks = attempt["ranks"]
    ray.init(log_to_driver=False, logging_level=logging.WARNING)
    bundles = [{"CPU": 1, **({"GPU": r["gpus"]} if r["gpus"] else {})} for r in ranks]
    pg = placement_group(bundles, strategy="STRICT_PACK" if len(ranks) == 1 else "STRICT_SPREAD",
                         name=attempt["name"],
                         bundle_label_selector=[{"ray.io/node-id": r["node_id"]} for r in ranks])
    try:
        ray.get(pg.ready(), timeout=READY_S)
    except ray.exceptions.GetTimeoutError:
        print(f"[neocloud] the placement group did not fit on {', '.join(r['node'] for r in ranks)} "
              f"within {READY_S} s", flush=True)
        return 1
    address = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes()}
    base = {**attempt["env"], "NEOCLOUD_JOB_ID": str(attempt["job_id"]), "NEOCLOUD_ATTEMPT": str(attempt["attempt"]),
            "NEOCLOUD_NUM_NODES": str(len(ranks)), "NEOCLOUD_GPUS_TOTAL": str(sum(r["gpus"] for r in ranks)),
            "MASTER_ADDR": address.get(ranks[0]["node_id"], "127.0.0.1"),  # rank 0's node, for the launcher
            "MASTER_PORT": str(20_000 + attempt["job_id"] % 20_000)}
    abort = AbortActor.remote()
    # A streaming task's result is an ObjectRefGenerator, though Ray's stubs type it as one ObjectRef.
    gens: list[ray.ObjectRefGenerator] = [
        run_rank.options(num_cpus=1, num_gpus=r["gpus"], scheduling_strategy=PlacementGroupSchedulingStrategy(
            pg, placement_group_bundle_index=i)).remote(
            attempt["command"], {**base, "NEOCLOUD_NODE": r["node"], "NEOCLOUD_NODE_RANK": str(i)}, abort)
        for i, r in enumerate(ranks)]
    codes: list[int | None] = [None] * len(ranks)
    lock = threading.Lock()

    def follow(i: int) -> None:
        try:
            for ref in gens[i]:
                stream, item = ray.get(ref)
                if stream == "exit":
                    codes[i] = item
                    continue
                with lock:
                    sys.stdout.write(f"[rank {i}{' stderr' if stream == 'stderr' else ''}] {item.rstrip(chr(10))}\n")
                    sys.stdout.flush()
        except ray.exceptions.RayError:
            pass
        if codes[i] != 0:  # a failed rank ends the gang
            abort.set.remote()

    followers = [threading.Thread(target=follow, args=(i,), daemon=True) for i in range(len(ranks))]
    try:
        for t in followers:
            t.start()
        for t in followers:
            t.join()
    finally:
        abort.set.remote()
        for t in followers:  # each rank stops its processes within a poll and the grace period
            t.join(timeout=3 * POLL_S + GRACE_S)
        remove_placement_group(pg)
        print("[neocloud] exit codes: " + " ".join("-" if c is None else str(c) for c in codes), flush=True)
    failed = [c for c in codes if c not in (0, None)]  # the rank that failed, not those stopped after it
    return failed[0] if failed else 1 if None in codes else 0


def _stopped(signum: int, _frame: FrameType | None) -> NoReturn:
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _stopped)
    sys.exit(main(json.loads(sys.argv[1])))
