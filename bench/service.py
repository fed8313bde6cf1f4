"""The whole service at fleet size: `neocloud up --backend emulated` on 1,000 to 1,000,000 GPUs, full.

    python bench/service.py [--gpus 1000,100000,1000000] [--seconds 60] [--clients 16] [--profile DIR]

For each size, a real `neocloud up --backend emulated` on SQLite in a temporary data directory, on a
generated fleet of 8-GPU nodes (leaves of 25 nodes, fabrics of 50 leaves: 10,000 GPUs a fabric).
The emulated backend runs nothing: each attempt lasts its spec's `estimated_duration`, so the API,
store, controller and scheduler are what is measured. Phases, each timed on its own:

1. start-up: process start to `/healthz` 200; resident memory once idle;
2. fill: long gangs (512, then 64, then 8 GPUs; 6 h each) to 90% of the GPUs, from concurrent
   clients, until all run; then a churn share of 5% in 8-GPU jobs ending over the next 2 minutes,
   kept by a paced stream of 8-GPU jobs of 30-120 s, so room keeps appearing and the fleet stays
   about 95% held;
3. steady: the churn stream, plus probes (1 GPU, 5 s) submitted 4 times a second into the free room;
4. load: the same, plus `--clients` connections submitting 1-GPU, 2 s jobs as fast as the API
   answers them;
5. reads: `GET /v1/queue` and the dashboard's fleet page (`/ui/fleet`, logged in as a browser is)
   timed one at a time, beside `GET /healthz` (the HTTP stack alone) as their baseline.

Accepted/s counts 201s per second of the load phase; scheduled/s, jobs started per second in it (the
store's `started` events). Submit-to-running runs from the client sending the job to its `started`
event, which carries the controller's clock at the start of the turn that placed it (the turn
commits within its own length after). Controller turn quantiles are estimated from the
`neocloud_controller_turn_seconds` histogram of `/metrics` (counts between the phase's first and
last scrape, linear within a bucket, as Prometheus' histogram_quantile does). The store is read (read-only)
after the server stops. `--profile DIR` samples the server with py-spy through the load
phase (collapsed stacks with line numbers, DIR/<gpus>.txt) and writes nothing to
docs/benchmarks.md, since sampling slows what it measures.

The 1,000-GPU run is the baseline: the same load on a fleet small enough that size costs nothing.
Its free room (about 35 GPUs) cannot hold the load phase's jobs, so its queue grows there.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from doc import machine, table, write_section
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

TOKEN = "nca_bench-service"
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
GPUS_PER_NODE, NODES_PER_LEAF, LEAVES_PER_FABRIC = 8, 25, 50
LONG_SHARE, CHURN_SHARE = 0.90, 0.05  # of the fleet's GPUs: long gangs, and short jobs coming and going
LONG_S = 6 * 3600.0
CHURN_GPUS, CHURN_S = 8, (30.0, 120.0)
PROBE_RATE, PROBE_S = 4.0, 5.0  # probes per second, and how long each runs
LOAD_S = 2.0  # how long each load-phase job runs
READS = {"queue": 20, "healthz": 20}  # sequential GETs in the reads phase; the fleet page: see fleet_loads
console = Console(stderr=True)


# -- the fleet and the server ------------------------------------------------------------------------
def fleet_yaml(gpus: int) -> tuple[str, int]:
    """A fleet of at least `gpus` GPUs in whole leaves, and how many GPUs it has."""
    leaves = max(1, math.ceil(gpus / (GPUS_PER_NODE * NODES_PER_LEAF)))
    fabrics = [min(LEAVES_PER_FABRIC, leaves - i) for i in range(0, leaves, LEAVES_PER_FABRIC)]
    text = f"name: bench-{gpus}\nsites:\n  - name: dc1\n    fabrics:\n" + "".join(
        f"      - name: ib{f}\n        leaves: {{count: {n}, nodes_per_leaf: {NODES_PER_LEAF}, gpu: H100, "
        f"gpus: {GPUS_PER_NODE}}}\n" for f, n in enumerate(fabrics))
    return text, leaves * NODES_PER_LEAF * GPUS_PER_NODE


class Trouble(RuntimeError):
    """The server crashed or misbehaved: the run of this size stops, with what it said."""


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One `neocloud up --backend emulated` in a session of its own, on a temporary data directory."""

    def __init__(self, root: Path, fleet: str) -> None:
        self.root = root
        (root / "fleet.yaml").write_text(fleet)
        self.data = root / "data"
        self.log = root / "server.log"
        self.port = _port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 180.0) -> float:
        """Start it; seconds from the process's start to its first `/healthz` 200."""
        env = {**os.environ, "NEOCLOUD_ADMIN_TOKEN": TOKEN}
        env.pop("NEOCLOUD_DATABASE_URL", None)
        cmd = [sys.executable, "-m", "neocloud", "up", "--backend", "emulated", "--fleet", str(self.root / "fleet.yaml"),
               "--data-dir", str(self.data), "--port", str(self.port)]
        with open(self.log, "wb") as log:
            t0 = time.perf_counter()
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, start_new_session=True)
        with httpx.Client(timeout=2) as c:
            while time.perf_counter() - t0 < timeout_s:
                self.check()
                try:
                    if c.get(f"{self.url}/healthz").status_code == 200:
                        return time.perf_counter() - t0
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        raise Trouble(f"no /healthz 200 within {timeout_s:.0f} s")

    def check(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise Trouble(f"the server exited with status {self.proc.returncode}")

    def rss_mib(self) -> tuple[float, float]:
        """Resident and peak resident memory of the server and any children, MiB."""
        assert self.proc is not None
        pids = [self.proc.pid]
        try:
            with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
                pids += [int(p) for p in f.read().split()]
        except OSError:  # a kernel without the children list: the server alone
            pass
        rss = hwm = 0.0
        for pid in pids:
            status = Path(f"/proc/{pid}/status").read_text()
            kib = dict(re.findall(r"^(VmRSS|VmHWM):\s+(\d+)", status, re.MULTILINE))
            rss += int(kib["VmRSS"]) / 1024
            hwm += int(kib["VmHWM"]) / 1024
        return rss, hwm

    def cpu_s(self) -> float:
        """CPU seconds the server has used so far, all its threads, user and system."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


# -- metrics ------------------------------------------------------------------------------------------
_SAMPLE = re.compile(r'^([a-z_]+)(?:\{([^}]*)\})? ([0-9.eE+-]+|NaN|\+Inf)$', re.MULTILINE)


@dataclass
class Scrape:
    at: float
    turn_buckets: dict[float, float]  # upper bound -> cumulative count
    allocated: float
    checks: float  # GPUs held by the active checks on idle nodes (spot jobs of the `system` tenant)
    fleet: float
    queued: float
    running: float


def scrape(c: httpx.Client) -> Scrape:
    r = c.get("/metrics")
    if r.status_code != 200:
        raise Trouble(f"GET /metrics: {r.status_code} {r.text[:300]}")
    buckets: dict[float, float] = {}
    allocated = checks = fleet = queued = running = 0.0
    for name, labels, value in _SAMPLE.findall(r.text):
        v = float(value)
        if name == "neocloud_controller_turn_seconds_bucket":
            le = labels.partition('le="')[2].partition('"')[0]
            buckets[math.inf if le == "+Inf" else float(le)] = v
        elif name == "neocloud_gpus_allocated":
            allocated += v
            checks += v if 'tenant="system"' in labels else 0.0
        elif name == "neocloud_fleet_gpus":
            fleet = v
        elif name == "neocloud_queue_depth":
            queued += v
        elif name == "neocloud_jobs_running":
            running = v
    return Scrape(time.time(), buckets, allocated, checks, fleet, queued, running)


def bucket_quantile(before: dict[float, float], after: dict[float, float], q: float) -> tuple[float, int]:
    """The q-quantile of what was observed between two scrapes of a histogram, and how many."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1]
    if total <= 0:
        return math.nan, 0
    rank, lower, below = q * total, 0.0, 0.0
    for bound, cum in zip(bounds, counts):
        if cum >= rank:
            if math.isinf(bound):
                return lower, int(total)  # beyond the last finite bucket: only its bound is known
            inside = cum - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0), int(total)
        lower, below = bound, cum
    return lower, int(total)


# -- load generators ----------------------------------------------------------------------------------
@dataclass
class Sent:
    """What one kind of submitter sent: job id -> the client's clock when it sent it."""

    at: dict[int, float] = field(default_factory=dict)
    acked: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, job: int, t: float) -> None:
        with self.lock:
            self.at[job] = t
            self.acked += 1


class Run:
    """One server's load: the threads that submit to it, the errors they met, the monitor."""

    def __init__(self, server: Server, clients: int) -> None:
        self.server, self.clients = server, clients
        self.broken: list[str] = []
        self.halt = threading.Event()
        self.threads: list[threading.Thread] = []
        self.scrapes: list[Scrape] = []

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.server.url, headers=AUTH, timeout=120)

    def fail(self, why: str) -> None:
        self.broken.append(why)
        self.halt.set()

    def check(self) -> None:
        self.server.check()
        if self.broken:
            raise Trouble(self.broken[0])

    def submit(self, c: httpx.Client, spec: dict, sent: Sent) -> bool:
        t = time.time()
        try:
            r = c.post("/v1/jobs", content=json.dumps(spec).encode())
        except httpx.HTTPError as e:
            self.fail(f"POST /v1/jobs: {type(e).__name__}: {e}")
            return False
        if r.status_code != 201:
            self.fail(f"POST /v1/jobs: {r.status_code} {r.text[:300]}")
            return False
        sent.add(r.json()["id"], t)
        return True

    def spawn(self, target: Callable[[], None]) -> threading.Thread:
        def guarded() -> None:
            try:
                target()
            except Exception as e:  # noqa: BLE001 - a load thread's failure stops the run, with its reason
                self.fail(f"{type(e).__name__}: {e}")
        t = threading.Thread(target=guarded, daemon=True)
        t.start()
        self.threads.append(t)
        return t

    def drain(self, specs: Iterator[dict], sent: Sent, clients: int, on_ack: Callable[[dict], None]) -> None:
        """Submit every spec of `specs` from `clients` connections at once, as fast as they are answered."""
        lock = threading.Lock()

        def worker() -> None:
            with self.api() as c:
                while not self.halt.is_set():
                    with lock:
                        spec = next(specs, None)
                    if spec is None or not self.submit(c, spec, sent):
                        return
                    on_ack(spec)

        workers = [self.spawn(worker) for _ in range(clients)]
        for w in workers:
            w.join()

    def paced(self, rate: float, make: Callable[[random.Random], dict], sent: Sent, stop: threading.Event,
              threads: int = 4) -> None:
        """Submit `rate` jobs a second (from a few connections, so one slow answer does not hold the
        pace) until `stop`; a stream behind its schedule catches up at once."""
        if rate <= 0:
            return
        lock, start = threading.Lock(), time.monotonic()
        count = [0]

        def worker(seed: int) -> None:
            rng = random.Random(seed)
            with self.api() as c:
                while not (stop.is_set() or self.halt.is_set()):
                    with lock:
                        due = start + count[0] / rate
                        count[0] += 1
                    if stop.wait(max(0.0, due - time.monotonic())) or self.halt.is_set():
                        return
                    if not self.submit(c, make(rng), sent):
                        return

        for i in range(threads):
            self.spawn(functools.partial(worker, i))

    def flood(self, make: Callable[[random.Random], dict], sent: Sent, stop: threading.Event) -> list[threading.Thread]:
        """`clients` connections submitting as fast as they are answered, until `stop`."""
        def worker(seed: int) -> None:
            rng = random.Random(seed)
            with self.api() as c:
                while not (stop.is_set() or self.halt.is_set()):
                    if not self.submit(c, make(rng), sent):
                        return

        return [self.spawn(functools.partial(worker, 1000 + i)) for i in range(self.clients)]

    def monitor(self, stop: threading.Event) -> None:
        """A scrape of /metrics a second: free GPUs and queue depth through each phase."""
        def watch() -> None:
            with self.api() as c:
                while not (stop.wait(1.0) or self.halt.is_set()):
                    if self.server.proc is not None and self.server.proc.poll() is not None:
                        self.fail(f"the server exited with status {self.server.proc.returncode}")
                        return
                    self.scrapes.append(scrape(c))

        self.spawn(watch)

    def stop_all(self) -> None:
        self.halt.set()
        for t in self.threads:
            t.join(timeout=130)


# -- one size -----------------------------------------------------------------------------------------
def long_specs(target: int) -> list[dict]:
    """Gangs of 512, then 64, then 8 GPUs (whole nodes) adding up to `target` GPUs or just under."""
    specs, left = [], target
    for size in (512, 64, 8):
        while left >= size:
            specs.append({"name": f"train-{size}", "command": "train", "gpus": size, "gpus_per_node": GPUS_PER_NODE,
                          "estimated_duration": LONG_S})
            left -= size
    return specs


def churn(rng: random.Random, low: float = CHURN_S[0]) -> dict:
    return {"name": "churn", "command": "step", "gpus": CHURN_GPUS,
            "estimated_duration": round(rng.uniform(low, CHURN_S[1]), 1)}


def probe(_: random.Random) -> dict:
    return {"name": "probe", "command": "true", "gpus": 1, "estimated_duration": PROBE_S}


def load_job(_: random.Random) -> dict:
    return {"name": "load", "command": "true", "gpus": 1, "estimated_duration": LOAD_S}


@dataclass
class Phase:
    name: str
    start: float = 0.0
    end: float = 0.0
    before: Scrape | None = None
    after: Scrape | None = None


def wait_placed(run: Run, c: httpx.Client, gpus: float, what: str, progress: Progress, task: TaskID,
                stall_s: float = 90.0) -> None:
    """Until nothing is queued and at least `gpus` GPUs are held by work (not by checks); a queue that
    stops moving is the server's trouble."""
    last, moved = math.inf, time.monotonic()
    while True:
        run.check()
        s = scrape(c)
        held = s.allocated - s.checks
        progress.update(task, completed=min(held, next(t.total or 0 for t in progress.tasks if t.id == task)))
        if s.queued == 0 and held >= gpus:
            return
        if s.queued < last:
            last, moved = s.queued, time.monotonic()
        elif time.monotonic() - moved > stall_s:
            raise Trouble(f"{what}: {s.queued:,.0f} jobs still queued, {held:,.0f} of {gpus:,.0f} GPUs held, "
                          f"none placed for {stall_s:.0f} s")
        time.sleep(0.5)


def timed_gets(c: httpx.Client, path: str, n: int, pause: float = 0.2) -> tuple[list[float], int]:
    """Seconds each of `n` sequential GETs took to its last byte, and the body's size."""
    times, size = [], 0
    for _ in range(n):
        t = time.perf_counter()
        r = c.get(path)
        body = r.content
        times.append(time.perf_counter() - t)
        if r.status_code != 200:
            raise Trouble(f"GET {path}: {r.status_code} {r.text[:300]}")
        size = len(body)
        time.sleep(pause)
    return times, size


def dashboard(url: str) -> httpx.Client:
    """A client logged in to the dashboard as a browser is: the login form, then its session cookie."""
    c = httpx.Client(base_url=url, timeout=300)
    r = c.post("/ui/login", data={"token": TOKEN}, headers={"Origin": url})
    if r.status_code != 303:
        raise Trouble(f"POST /ui/login: {r.status_code} {r.text[:300]}")
    return c


@contextmanager
def sampled(pid: int, out: Path | None) -> Iterator[None]:
    """py-spy on the server, all threads, for the block's length (nothing when `out` is None)."""
    if out is None:
        yield
        return
    spy = subprocess.Popen([shutil.which("py-spy") or "py-spy", "record", "--pid", str(pid), "--format", "raw",
                            "--rate", "100", "--output", str(out)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(timeout=60)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()


def measure(gpus_asked: int, seconds: float, clients: int, profile: Path | None) -> dict:
    text, gpus = fleet_yaml(gpus_asked)
    out: dict = {"gpus": gpus, "nodes": gpus // GPUS_PER_NODE, "loadavg": os.getloadavg()[0]}
    root = Path(tempfile.mkdtemp(prefix=f"neocloud-service-{gpus}-"))
    server = Server(root, text)
    run = Run(server, clients)
    phases: dict[str, Phase] = {}
    sent = {k: Sent() for k in ("long", "churn", "probe-steady", "probe-load", "load")}
    try:
        try:
            out["up_s"] = server.start()
            time.sleep(2.0)
            out["rss_idle_mib"] = server.rss_mib()[0]
            c = run.api()
            fill_stop = threading.Event()
            run.monitor(fill_stop)

            # fill: long gangs to LONG_SHARE, then the churn share, all from `clients` connections
            specs = long_specs(int(gpus * LONG_SHARE) // GPUS_PER_NODE * GPUS_PER_NODE)
            long_gpus = sum(s["gpus"] for s in specs)
            burst = int(gpus * CHURN_SHARE) // CHURN_GPUS
            rng = random.Random(0)
            t_fill = time.perf_counter()
            with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), console=console, transient=False) as progress:
                sub = progress.add_task(f"{gpus:,} GPUs: long gangs submitted (GPUs)", total=long_gpus)
                held = progress.add_task(f"{gpus:,} GPUs: long gangs running (GPUs)", total=long_gpus)
                run.drain(iter(specs), sent["long"], clients, lambda s: progress.advance(sub, s["gpus"]))
                run.check()
                wait_placed(run, c, long_gpus, "fill", progress, held)
                out["fill_s"] = time.perf_counter() - t_fill
                sub2 = progress.add_task(f"{gpus:,} GPUs: churn share submitted (jobs)", total=burst)
                held2 = progress.add_task(f"{gpus:,} GPUs: churn share placed (GPUs held)",
                                          total=long_gpus + burst * CHURN_GPUS)
                # the share ends over the next two minutes, while the stream (30-120 s jobs) takes over
                run.drain((churn(rng, low=1.0) for _ in range(burst)), sent["churn"], clients,
                          lambda s: progress.advance(sub2))
                run.check()
                wait_placed(run, c, long_gpus, "churn share", progress, held2)
            out["long_jobs"], out["long_gpus"] = len(specs), long_gpus
            stream_stop = threading.Event()
            rate = gpus * CHURN_SHARE / CHURN_GPUS / statistics.mean(CHURN_S)
            out["churn_rate"] = rate
            run.paced(rate, churn, sent["churn"], stream_stop)

            def phase(name: str, body: Callable[[], None]) -> None:
                p = phases[name] = Phase(name)
                p.before, p.start = scrape(c), time.time()
                body()
                p.end, p.after = time.time(), scrape(c)
                run.check()

            def steady() -> None:
                stop = threading.Event()
                run.paced(PROBE_RATE, probe, sent["probe-steady"], stop, threads=2)
                run.halt.wait(seconds)
                stop.set()

            def load() -> None:
                stop = threading.Event()
                run.paced(PROBE_RATE, probe, sent["probe-load"], stop, threads=2)
                floods = run.flood(load_job, sent["load"], stop)
                t0, cpu0, mine0 = time.perf_counter(), server.cpu_s(), time.process_time()
                run.halt.wait(seconds)
                stop.set()
                for t in floods:
                    t.join(timeout=130)
                out["load_wall_s"] = wall = time.perf_counter() - t0
                out["server_cores"] = (server.cpu_s() - cpu0) / wall
                out["client_cores"] = (time.process_time() - mine0) / wall

            console.print(f"{gpus:,} GPUs: steady phase, {seconds:.0f} s")
            phase("steady", steady)
            console.print(f"{gpus:,} GPUs: load phase, {seconds:.0f} s")
            assert server.proc is not None
            with sampled(server.proc.pid, profile / f"{gpus}.txt" if profile else None):
                phase("load", load)

            console.print(f"{gpus:,} GPUs: reads")
            reads: dict[str, tuple[list[float], int]] = {}
            with httpx.Client(base_url=server.url, timeout=60) as open_client:
                reads["healthz"] = timed_gets(open_client, "/healthz", READS["healthz"])
            reads["queue"] = timed_gets(c, "/v1/queue", READS["queue"])
            ui = dashboard(server.url)
            try:
                reads["fleet"] = timed_gets(ui, "/ui/fleet", 3 if gpus > 200_000 else 5, pause=1.0)
            finally:
                ui.close()
            run.check()
            out["reads"] = reads
            out["queued_at_reads"] = scrape(c).queued
            out["rss_end_mib"], out["rss_peak_mib"] = server.rss_mib()
            stream_stop.set()
            fill_stop.set()
            c.close()
        except Trouble as e:
            out["trouble"] = str(e)
            out["log_tail"] = server.log_tail()
        finally:
            run.stop_all()
            server.stop()
        if "trouble" not in out:
            out.update(analyse(server.data / "neocloud.db", phases, sent, run.scrapes, out))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return out


def analyse(db: Path, phases: dict[str, Phase], sent: dict[str, Sent], scrapes: list[Scrape], out: dict) -> dict:
    """Figures from the store (read-only, the server stopped) and from the scrapes."""
    res: dict = {}
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        con.execute("CREATE TEMP TABLE probe (id INTEGER PRIMARY KEY, sent REAL)")
        for name, p in phases.items():
            assert p.before is not None and p.after is not None
            starts = con.execute("SELECT count(*) FROM job_events WHERE kind = 'started' AND at >= ? AND at < ?",
                                 (p.start, p.end)).fetchone()[0]
            res[f"{name}_started_per_s"] = starts / (p.end - p.start)
            for q in (0.5, 0.99):
                res[f"{name}_turn_p{int(q * 100)}_s"], res[f"{name}_turns"] = bucket_quantile(
                    p.before.turn_buckets, p.after.turn_buckets, q)
            inside = [s for s in scrapes if p.start <= s.at <= p.end] or [p.after]
            res[f"{name}_free_min"] = min(s.fleet - s.allocated for s in inside)
            res[f"{name}_queued_max"] = max(s.queued for s in inside)
            res[f"{name}_checks_max"] = max(s.checks for s in inside)
            res[f"{name}_held_mean"] = statistics.mean(s.allocated / s.fleet for s in inside if s.fleet)
            for kind in (f"probe-{name}",) + (("load",) if name == "load" else ()):
                con.execute("DELETE FROM probe")
                con.executemany("INSERT INTO probe VALUES (?, ?)", sent[kind].at.items())
                rows = con.execute(
                    "SELECT p.id, p.sent, min(e.at) FROM probe p LEFT JOIN job_events e "
                    "ON e.job_id = p.id AND e.kind = 'started' GROUP BY p.id").fetchall()
                waits = np.array([at - t for _, t, at in rows if at is not None])
                res[f"{kind}_n"], res[f"{kind}_unstarted"] = len(rows), sum(at is None for *_, at in rows)
                res[f"{kind}_p50_s"] = float(np.percentile(waits, 50)) if len(waits) else math.nan
                res[f"{kind}_p99_s"] = float(np.percentile(waits, 99)) if len(waits) else math.nan
        res["accepted_per_s"] = sent["load"].acked / out["load_wall_s"]
        res["requeued"] = con.execute("SELECT count(*) FROM job_events WHERE kind = 'requeued'").fetchone()[0]
        res["jobs"] = con.execute("SELECT count(*) FROM jobs").fetchone()[0]
    finally:
        con.close()
    return res


# -- the report ---------------------------------------------------------------------------------------
TARGETS: dict[str, dict[int, tuple[str, float, str]]] = {  # figure -> GPUs -> (comparison, bound, bound as shown)
    "accepted_per_s": {100_000: (">=", 500, "≥ 500")},
    "steady_probe_p99": {100_000: ("<", 1.0, "< 1,000"), 1_000_000: ("<", 2.0, "< 2,000")},
    "load_probe_p99": {100_000: ("<", 1.0, "< 1,000"), 1_000_000: ("<", 2.0, "< 2,000")},
    "steady_turn_p99": {100_000: ("<", 0.25, "< 250")},
    "load_turn_p99": {100_000: ("<", 0.25, "< 250")},
    "up_s": {1_000_000: ("<", 60.0, "< 60")},
    "rss_end_gib": {1_000_000: ("<", 8.0, "< 8")},
}


def verdict(figure: str, gpus: int, value: float, shown: str) -> str:
    """The figure as shown, with its target for this fleet size and PASS or MISS, if it has one."""
    target = TARGETS.get(figure, {}).get(gpus)
    if target is None:
        return shown
    op, bound, bound_shown = target
    ok = not math.isnan(value) and (value >= bound if op == ">=" else value < bound)
    return f"{shown} ({bound_shown}: {'PASS' if ok else 'MISS'})"


def ms(s: float) -> str:
    return "—" if math.isnan(s) else f"{s * 1e3:,.1f}"


def rows_for(results: list[dict]) -> list[list[object]]:
    """One row per figure, one column per fleet size; a figure with a target there says PASS or MISS."""
    def line(label: str, figure: str, value: Callable[[dict], float], fmt: Callable[[float], str],
             cell: Callable[[dict], str] | None = None) -> list[object]:
        row: list[object] = [label]
        return row + ["—" if "trouble" in r else cell(r) if cell else verdict(figure, r["gpus"], value(r),
                                                                                    fmt(value(r))) for r in results]

    def pct(xs: list[float], q: float) -> float:
        return float(np.percentile(xs, q))

    s1 = lambda v: f"{v:,.1f}"
    s0 = lambda v: f"{v:,.0f}"
    none = lambda r: 0.0
    return [
        line("start-up to /healthz 200, s", "up_s", lambda r: r["up_s"], s1),
        line("resident memory idle, MiB", "", lambda r: r["rss_idle_mib"], s0),
        line("resident memory at the end, GiB", "rss_end_gib", lambda r: r["rss_end_mib"] / 1024, lambda v: f"{v:.2f}"),
        line("fill: long gangs submitted to all running, s", "", lambda r: r["fill_s"], s1),
        line("GPUs held, mean of steady / load", "", none, s0,
             lambda r: f"{r['steady_held_mean']:.1%} / {r['load_held_mean']:.1%}"),
        line("accepted/s (load)", "accepted_per_s", lambda r: r["accepted_per_s"], s0),
        line("scheduled/s (load: every job started)", "", lambda r: r["load_started_per_s"], s0),
        line("scheduled/s (steady: churn + probes)", "", lambda r: r["steady_started_per_s"], s1),
        line("submit to running p50, ms (steady)", "", lambda r: r["probe-steady_p50_s"], ms),
        line("submit to running p99, ms (steady)", "steady_probe_p99", lambda r: r["probe-steady_p99_s"], ms),
        line("submit to running p50, ms (load, probes)", "", lambda r: r["probe-load_p50_s"], ms),
        line("submit to running p99, ms (load, probes)", "load_probe_p99", lambda r: r["probe-load_p99_s"], ms),
        line("submit to running p99, ms (load, its own jobs)", "", lambda r: r["load_p99_s"], ms),
        line("controller turn p50, ms (steady, from buckets)", "", lambda r: r["steady_turn_p50_s"], ms),
        line("controller turn p99, ms (steady, from buckets)", "steady_turn_p99", lambda r: r["steady_turn_p99_s"], ms),
        line("controller turn p50, ms (load, from buckets)", "", lambda r: r["load_turn_p50_s"], ms),
        line("controller turn p99, ms (load, from buckets)", "load_turn_p99", lambda r: r["load_turn_p99_s"], ms),
        line("GET /healthz p50 / p99, ms (baseline)", "", none, s0,
             lambda r: f"{ms(pct(r['reads']['healthz'][0], 50))} / {ms(pct(r['reads']['healthz'][0], 99))}"),
        line("GET /v1/queue p50, ms", "", lambda r: pct(r["reads"]["queue"][0], 50), ms),
        line("GET /v1/queue p99, ms", "", lambda r: pct(r["reads"]["queue"][0], 99), ms),
        line("GET /ui/fleet median, ms", "", lambda r: statistics.median(r["reads"]["fleet"][0]), ms),
        line("GET /ui/fleet slowest, ms", "", lambda r: max(r["reads"]["fleet"][0]), ms),
    ]


def detail_rows(results: list[dict]) -> list[list[object]]:
    out: list[list[object]] = []
    for r in results:
        if "trouble" in r:
            continue
        out.append([f"{r['gpus']:,}", f"{r['nodes']:,}", f"{r['long_jobs']:,} ({r['long_gpus']:,} GPUs)",
                    f"{r['churn_rate']:.2f}", f"{r['steady_free_min']:,.0f} / {r['load_free_min']:,.0f}",
                    f"{r['steady_queued_max']:,.0f} / {r['load_queued_max']:,.0f}",
                    f"{r['steady_checks_max']:,.0f} / {r['load_checks_max']:,.0f}",
                    f"{r['probe-steady_n']} / {r['probe-load_n']}",
                    f"{r['probe-steady_unstarted']} / {r['probe-load_unstarted']}",
                    f"{r['steady_turns']:,} / {r['load_turns']:,}",
                    f"{r['server_cores']:.2f} / {r['client_cores']:.2f}", f"{r['loadavg']:.1f}",
                    f"{r['requeued']:,}", f"{r['jobs']:,}",
                    f"{r['reads']['fleet'][1] / 1e6:,.1f}"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpus", default="1000,100000,1000000", help="Fleet sizes, comma-separated.")
    ap.add_argument("--seconds", type=float, default=60.0, help="Length of the steady phase and of the load phase.")
    ap.add_argument("--clients", type=int, default=16, help="Connections submitting in the fill and the load phase.")
    ap.add_argument("--profile", type=Path, help="Sample the server with py-spy into this directory; no doc written.")
    args = ap.parse_args()
    sizes = [int(g) for g in args.gpus.split(",")]
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    results = []
    for gpus in sizes:
        t = time.perf_counter()
        r = measure(gpus, args.seconds, args.clients, args.profile)
        r["wall_s"] = time.perf_counter() - t
        if "trouble" in r:
            console.print(f"[red]{gpus:,} GPUs: {r['trouble']}[/red]\nserver log, last lines:\n{r['log_tail']}")
        else:
            console.print(f"{gpus:,} GPUs: done in {r['wall_s']:.0f} s")
        results.append(r)
    cmd = f"python bench/service.py --gpus {args.gpus} --seconds {args.seconds:g} --clients {args.clients}"
    headers = ["figure"] + [f"{r['gpus']:,} GPUs" for r in results]
    troubles = [f"- {r['gpus']:,} GPUs: the server failed: {r['trouble']}. Its log ended:\n\n" +
                "\n".join("      " + line for line in r["log_tail"].splitlines()[-15:])
                for r in results if "trouble" in r]
    body = "\n".join([
        "### The service at fleet size: 1,000 to 1,000,000 emulated GPUs, kept full",
        "",
        (f"`{cmd}` ({machine()}): `neocloud up --backend emulated` on SQLite, each size on a fleet of 8-GPU nodes in "
        f"leaves of {NODES_PER_LEAF} and fabrics of {LEAVES_PER_FABRIC} leaves; long gangs (6 h) hold "
        f"{LONG_SHARE:.0%} of the GPUs, {CHURN_GPUS}-GPU jobs of {CHURN_S[0]:g}-{CHURN_S[1]:g} s a further "
        f"{CHURN_SHARE:.0%} (a paced stream keeps them coming). Steady: that, plus {PROBE_RATE:g} probes a second "
        f"(1 GPU, {PROBE_S:g} s) into the free room, for {args.seconds:g} s. Load: the same, plus {args.clients} "
        f"connections (httpx) submitting 1-GPU, {LOAD_S:g} s jobs as fast as they are answered, for "
        f"{args.seconds:g} s. Submit to running: the client's send to the job's `started` event. Turn quantiles are "
        "estimated from the `neocloud_controller_turn_seconds` buckets (linear within a bucket). The 1,000-GPU "
        "fleet is the baseline; its free room cannot hold the load phase's jobs, so its queue grows there."),
        "",
        table(headers, rows_for(results)),
        "",
        table(["GPUs", "nodes", "long gangs", "churn jobs/s", "fewest GPUs free, steady / load",
               "most queued, steady / load", "most GPUs in active checks, steady / load", "probes", "probes never started", "turns, steady / load",
               "CPU cores in load, server / this bench", "load average before",
               "jobs requeued", "jobs in the store", "fleet page, MB"], detail_rows(results)),
        *([""] + troubles if troubles else []),
    ])
    if args.profile:
        print(body)
        console.print(f"profiles in {args.profile}; docs/benchmarks.md left as it was")
        return
    write_section("service", body)


if __name__ == "__main__":
    main()
