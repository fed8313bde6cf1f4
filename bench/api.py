"""Submit throughput and submit-to-running latency through the REST API, SQLite and PostgreSQL.

    python bench/api.py [--jobs 2000] [--clients 32] [--postgres-url postgresql://user@host/db]

Starts a real `neocloud up` (local backend, a fleet of 256 emulated 8-GPU nodes so that no job
waits for GPUs), then submits 1-GPU jobs (`true`) from concurrent HTTP clients. Accepted/s is
jobs answered 201 per second of submitting; scheduled/s is jobs that reached RUNNING (their
its start recorded, its processes handed to the backend) per second from the first submit;
completed/s counts jobs whose processes ran and exited. Latency is from the client sending a job
to the server recording its start. Requests go through the standard library's HTTP client, one
kept-alive connection per client thread. The baseline, run in the same process against the same server, is
`GET /healthz` at the same concurrency: the HTTP stack with no work behind it.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from doc import machine, table, write_section

TOKEN = "nca_bench"
FLEET = """\
name: bench
sites:
  - name: here
    fabrics:
      - name: ib0
        leaves: {count: 8, nodes_per_leaf: 32, gpu: H100, gpus: 8}
"""


def start(data_dir: Path, database_url: str | None, *args: str) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (data_dir / "fleet.yaml").write_text(FLEET)
    cmd = [sys.executable, "-m", "neocloud", "up", "--data-dir", str(data_dir), "--port", str(port),
           "--fleet", str(data_dir / "fleet.yaml"), *args]
    if database_url:
        cmd += ["--database-url", database_url]
    proc = subprocess.Popen(cmd, env={**os.environ, "NEOCLOUD_ADMIN_TOKEN": TOKEN},
                            stdout=subprocess.DEVNULL, stderr=open(data_dir / "server.log", "wb"))
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit(f"server did not start: {(data_dir / 'server.log').read_text()[-2000:]}")


def hammer(url: str, n: int, clients: int, request) -> float:  # noqa: ANN001
    """Seconds to make `n` requests from `clients` threads, each with its own kept-alive connection.

    The standard library's client: a load generator should cost the machine little of what it
    measures (httpx's client takes about five times the CPU per request).
    """
    per = [n // clients + (i < n % clients) for i in range(clients)]
    host, port = url.removeprefix("http://").split(":")

    def worker(count: int) -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        try:
            for _ in range(count):
                request(conn)
        finally:
            conn.close()

    t = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(worker, per))
    return time.perf_counter() - t


def call(conn: http.client.HTTPConnection, method: str, path: str, body: str | None, status: int) -> dict:
    conn.request(method, path, body, {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    if r.status != status:
        raise SystemExit(f"{method} {path}: {r.status} {data[:300]!r}")
    return json.loads(data)


def run(label: str, database_url: str | None, jobs: int, clients: int, *args: str) -> list[object]:
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start(Path(tmp), database_url, *args)
        try:
            base_s = hammer(url, jobs, clients, lambda c: call(c, "GET", "/healthz", None, 200))

            sent: dict[int, float] = {}  # job id -> when the client sent it (same clock as the server's)
            body = json.dumps({"name": "b", "command": "true", "gpus": 1})

            def submit(c: http.client.HTTPConnection) -> None:
                t = time.time()
                sent[call(c, "POST", "/v1/jobs", body, 201)["id"]] = t

            submit_s = hammer(url, jobs, clients, submit)
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as c:
                rows: list[dict] = []
                for _ in range(600):
                    rows, before = [], None
                    while True:
                        page = c.get("/v1/jobs", params={"limit": 1000, **({"before": before} if before else {})}).json()
                        rows += page
                        if len(page) < 1000:
                            break
                        before = page[-1]["id"]
                    if len(rows) == jobs and all(r["state"] == "COMPLETED" for r in rows):
                        break
                    time.sleep(0.5)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    first = min(sent.values())
    started = np.array([r["started_at"] for r in rows])
    ended = np.array([r["ended_at"] for r in rows])
    latency_ms = np.array([(r["started_at"] - sent[r["id"]]) * 1e3 for r in rows])
    return [label, jobs, clients, round(jobs / base_s), round(jobs / submit_s), round(jobs / (started.max() - first)),
            round(jobs / (ended.max() - first)), f"{np.percentile(latency_ms, 50):.1f}",
            f"{np.percentile(latency_ms, 99):.1f}"]


@contextlib.contextmanager
def postgres_database(server_url: str) -> Iterator[str]:
    """A new, empty database on the server for one run, dropped after it."""
    import psycopg

    name = f"nc_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield server_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--postgres-url", help="A PostgreSQL server whose user may create databases.")
    ap.add_argument("--repeat", type=int, default=3, help="Runs per database; the median (by accepted/s) is shown.")
    args = ap.parse_args()

    def median(label: str, fresh_database, *extra: str) -> list[object]:  # noqa: ANN001 - () -> context of a URL
        runs = []
        for _ in range(args.repeat):
            with fresh_database() as url:
                runs.append(run(label, url, args.jobs, args.clients, *extra))
        return sorted(runs, key=lambda r: r[4])[len(runs) // 2]

    rows = [median("SQLite (WAL, synchronous=FULL)", lambda: contextlib.nullcontext(None))]
    if os.geteuid() == 0:  # jobs then start in their sandboxes: what that costs the same two cores
        rows.append(median("SQLite, jobs as plain processes (--no-sandbox)", lambda: contextlib.nullcontext(None),
                           "--no-sandbox"))
    if args.postgres_url:
        rows.append(median("PostgreSQL", lambda: postgres_database(args.postgres_url)))
    cmd = f"python bench/api.py --jobs {args.jobs} --clients {args.clients} --repeat {args.repeat}" + \
        (" --postgres-url URL" if args.postgres_url else "")
    body = (
        f"### Control plane: submit throughput and submit-to-running latency through the REST API\n\n"
        f"`{cmd}` ({machine()}); a real `neocloud up` with the local backend on 2,048 emulated GPUs, "
        f"{args.jobs:,} one-GPU jobs from {args.clients} concurrent clients, the median of {args.repeat} runs "
        "by accepted/s. Every submit is committed "
        "before it is answered; every start is committed before its process is spawned. Target: 500 "
        "jobs/s accepted and scheduled (Slurm's documented sustained rate). As root, each job starts in its "
        "sandbox as its tenant's user; the `--no-sandbox` row starts them as plain processes.\n\n"
        + table(["database", "jobs", "clients", "baseline GET /healthz per s", "accepted/s", "scheduled/s",
                 "completed/s", "submit to running p50 ms", "p99 ms"], rows)
    )
    write_section("api", body)


if __name__ == "__main__":
    main()
