"""What the sandbox costs a job: submit to the job's first instruction, with and without it.

    python bench/sandbox.py [--jobs 50]

Two real `neocloud up` servers on the local backend, started side by side: one as it runs by
default (each rank as its tenant's own user, in bubblewrap's namespaces, in its cgroup, under its
supervisor) and the baseline with `--no-sandbox` (the same supervisor and cgroup, the command run
as a plain process of the server's user). Jobs go to the two in turn, one at a time on idle
servers; each job's first instruction prints the time, which is compared with when the client
sent the job. Needs root and bubblewrap.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from api import TOKEN, start
from doc import machine, table, write_section

FIRST = "date +%s.%N"  # the job's first instruction tells when it ran


def first_instruction(c: httpx.Client) -> float:
    """Seconds from sending a job to its first instruction."""
    sent = time.time()
    r = c.post("/v1/jobs", json={"name": "first", "command": FIRST, "gpus": 1})
    r.raise_for_status()
    job = r.json()["id"]
    for _ in range(2000):
        state = c.get(f"/v1/jobs/{job}").json()["state"]
        if state not in ("PENDING", "RUNNING"):
            break
        time.sleep(0.01)
    if state != "COMPLETED":
        raise SystemExit(f"job {job} {state}: {c.get(f'/v1/jobs/{job}/logs', params={'stream': 'stderr'}).json()}")
    return float(c.get(f"/v1/jobs/{job}/logs").json()["text"]) - sent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--jobs", type=int, default=50, help="Jobs per server.")
    args = ap.parse_args()
    if os.geteuid() != 0 or shutil.which("bwrap") is None:
        raise SystemExit("the sandbox needs root and bubblewrap (apt install bubblewrap)")
    modes = {"sandboxed (default)": (), "--no-sandbox (baseline)": ("--no-sandbox",)}
    with tempfile.TemporaryDirectory() as tmp:
        servers = {}
        for i, (label, extra) in enumerate(modes.items()):
            (Path(tmp) / str(i)).mkdir()
            servers[label] = start(Path(tmp) / str(i), None, *extra)
        try:
            clients = {label: httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
                       for label, (_, url) in servers.items()}
            for c in clients.values():  # the first job of a tenant makes its Unix user: not what is measured
                first_instruction(c)
            ms: dict[str, list[float]] = {label: [] for label in modes}
            for _ in range(args.jobs):
                for label, c in clients.items():
                    ms[label].append(1000 * first_instruction(c))
        finally:
            for proc, _ in servers.values():
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
    rows = [[label, args.jobs, f"{np.median(v):.1f}", f"{np.percentile(v, 90):.1f}", f"{max(v):.1f}"]
            for label, v in ms.items()]
    added = np.median(ms["sandboxed (default)"]) - np.median(ms["--no-sandbox (baseline)"])
    body = (
        "### What the sandbox costs: submit to first instruction on the local backend\n\n"
        f"`python bench/sandbox.py --jobs {args.jobs}` ({machine()}, as root, bubblewrap "
        f"{_version()}); two real `neocloud up` servers side by side, one job at a time on each in turn, "
        "from the client sending `POST /v1/jobs` to the job's first instruction (`date`). The baseline runs "
        "the same supervisor and cgroup with `--no-sandbox`. Target: under 50 ms added at the median.\n\n"
        + table(["server", "jobs", "median ms", "p90 ms", "max ms"], rows)
        + f"\n\nThe sandbox adds {added:.1f} ms per job at the median."
    )
    write_section("sandbox", body)


def _version() -> str:
    return subprocess.run(["bwrap", "--version"], capture_output=True, text=True).stdout.split()[-1]


if __name__ == "__main__":
    main()
