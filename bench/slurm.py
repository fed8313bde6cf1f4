"""Side by side on one real Slurm cluster: Slurm's own scheduler, then neocloud deciding and Slurm running.

    python bench/slurm.py [--trace b436b2] [--jobs 150] [--scale 6000] [--load 1.3]

The cluster is the tests' (four slurmd of 8 fake GPUs under two leaf switches, on loopback), with
8 CPUs per node so that CPUs never bind before GPUs, and Slurm's backfill tuned to this time scale
(`bf_interval=1,bf_resolution=1`: every second rather than every 30, to the second rather than the
minute). The workload is the first `--jobs` jobs of a Philly virtual-cluster trace (Gavel's
re-sampling, seed 0; 1 to 16 GPUs): durations divided by `--scale` and kept within 2-180 s, arrival
times rescaled so that the offered load is `--load` times the cluster. Each job is `sleep` for its
duration, and stamps its own start and end (rank 0), so both runs are timed by the same clock.

1. Straight to Slurm: each job is an `sbatch` at its arrival (nodes = GPUs / 8 rounded up, GPUs
   per node as GRES, one task per node, its duration as `--time`, which Slurm keeps in whole
   minutes); Slurm's backfill scheduler and topology plugin decide.
2. Through neocloud: `neocloud up --backend slurm` on the same cluster; each job is a POST with
   its duration as `estimated_duration`; neocloud's default queue and placement decide and hand
   Slurm an `sbatch` pinned to the nodes chosen.

Overhead: on the idle cluster, twenty 1-GPU jobs one after another, from submit (sbatch, or the
POST) to the job's first instruction.
"""

from __future__ import annotations

import argparse
import math
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from doc import SHARED, machine, table, write_section

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from neocloud.sim.traces import load_trace
from tests.api.conftest import Server
from tests.backends.slurm_cluster import SlurmCluster, available

GPUS, PER_NODE = 32, 8


@dataclass(frozen=True)
class Work:
    name: str
    arrival_s: float
    gpus: int
    duration_s: float


def workload(trace: str, jobs: int, scale: float, load: float) -> list[Work]:
    t = load_trace(SHARED / "traces" / "philly-gavel" / "seed0" / f"{trace}.trace")
    picked = [tj for tj in t.jobs if 1 <= tj.job.gpus <= 16][:jobs]
    durations = [min(max(tj.duration_s / scale, 2.0), 180.0) for tj in picked]
    work = sum(d * tj.job.gpus for d, tj in zip(durations, picked))
    span = work / (GPUS * load)
    first, last = picked[0].job.submit_s, picked[-1].job.submit_s
    return [Work(f"j{i}", (tj.job.submit_s - first) / (last - first) * span, int(tj.job.gpus), round(d, 1))
            for i, (tj, d) in enumerate(zip(picked, durations))]


def command(stamps: Path, name: str, duration_s: float) -> str:
    rank0 = '[ "${SLURM_NODEID:-0}" = 0 ]'
    return (f"if {rank0}; then date +%s.%N > {stamps}/{name}.start; fi; sleep {duration_s}; "
            f"if {rank0}; then date +%s.%N > {stamps}/{name}.end; fi")


def sbatch(cluster: SlurmCluster, w: Work, cmd: str) -> None:
    nodes = math.ceil(w.gpus / PER_NODE)
    script = f"#!/bin/sh\nexec srun --ntasks-per-node=1 /bin/sh -c {shlex.quote(cmd)}\n"
    subprocess.run(["sbatch", "--parsable", f"--job-name=bench-{w.name}", f"--nodes={nodes}", "--ntasks-per-node=1",
                    f"--gres=gpu:{w.gpus // nodes}", f"--time={math.ceil(w.duration_s / 60)}", "--output=/dev/null"],
                   input=script, env=cluster.env, capture_output=True, text=True, check=True)


def spec(w: Work, cmd: str) -> dict:
    return {"name": w.name, "gpus": w.gpus, "gpus_per_node": min(w.gpus, PER_NODE) if w.gpus > PER_NODE else None,
            "command": cmd, "estimated_duration": w.duration_s}


def replay(jobs: list[Work], stamps: Path, submit) -> dict[str, float]:
    """Submit each job at its arrival; wait for every one to end; return submit times."""
    submitted: dict[str, float] = {}
    t0 = time.time()
    for w in jobs:
        time.sleep(max(t0 + w.arrival_s - time.time(), 0))
        submitted[w.name] = time.time()
        submit(w, command(stamps, w.name, w.duration_s))
    deadline = time.time() + 3600
    while len(list(stamps.glob("*.end"))) < len(jobs):
        if time.time() > deadline:
            raise RuntimeError(f"only {len(list(stamps.glob('*.end')))} of {len(jobs)} jobs ended in an hour")
        time.sleep(1)
    return submitted


def measure(jobs: list[Work], stamps: Path, submitted: dict[str, float]) -> dict[str, float]:
    start = {w.name: float((stamps / f"{w.name}.start").read_text()) for w in jobs}
    end = {w.name: float((stamps / f"{w.name}.end").read_text()) for w in jobs}
    jct = np.array([end[w.name] - submitted[w.name] for w in jobs])
    wait = np.array([start[w.name] - submitted[w.name] for w in jobs])
    makespan = max(end.values()) - min(submitted.values())
    busy = sum(w.gpus * (end[w.name] - start[w.name]) for w in jobs)
    return {"avg_jct": jct.mean(), "p99_jct": float(np.percentile(jct, 99)), "avg_wait": wait.mean(),
            "makespan": makespan, "util": busy / (GPUS * makespan)}


def latency(stamps: Path, submit, n: int = 20) -> list[float]:
    """Submit-to-first-instruction on the idle cluster, one 1-GPU job at a time."""
    out = []
    for i in range(n):
        w = Work(f"idle{i}", 0, 1, 1)
        t = time.time()
        submit(w, f"date +%s.%N > {stamps}/{w.name}.start")
        while not (stamps / f"{w.name}.start").exists() or not (stamps / f"{w.name}.start").read_text():
            time.sleep(0.01)
        out.append(float((stamps / f"{w.name}.start").read_text()) - t)
        time.sleep(1.0)  # let the job end and its GPUs come back
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trace", default="b436b2")
    ap.add_argument("--jobs", type=int, default=150)
    ap.add_argument("--scale", type=float, default=6000)
    ap.add_argument("--load", type=float, default=1.3)
    args = ap.parse_args()
    if (why := available()) is not None:
        sys.exit(f"cannot start the Slurm cluster: {why}")
    jobs = workload(args.trace, args.jobs, args.scale, args.load)
    root = Path(tempfile.mkdtemp(prefix="bench-slurm-"))
    root.chmod(0o755)  # neocloud runs each job as its tenant's user, who must reach the cluster's spool
    cluster = SlurmCluster(root / "cluster", cpus=PER_NODE, scheduler="bf_interval=1,bf_resolution=1")
    results, lat = {}, {}
    cluster.start()
    try:
        stamps = root / "slurm"
        stamps.mkdir()
        submit = lambda w, cmd: sbatch(cluster, w, cmd)
        print(f"straight to Slurm: {len(jobs)} jobs over {jobs[-1].arrival_s:.0f} s", flush=True)
        results["Slurm (backfill + topology/tree)"] = measure(jobs, stamps, replay(jobs, stamps, submit))
        lat["Slurm"] = latency(stamps, submit)

        server = Server(root / "neocloud", None, backend="slurm", env={"SLURM_CONF": str(cluster.conf)},
                        args=("--jobs-dir", str(root / "neocloud-jobs")))
        server.start()
        try:
            client = server.client()
            stamps = root / "neocloud-stamps"
            stamps.mkdir()
            stamps.chmod(0o777)  # written by the jobs, as the tenant's user
            submit = lambda w, cmd: client.submit(spec(w, cmd))
            print("through neocloud", flush=True)
            results["neocloud (default queue + placement) on Slurm"] = measure(jobs, stamps,
                                                                               replay(jobs, stamps, submit))
            lat["neocloud"] = latency(stamps, submit)
        finally:
            server.stop()
    finally:
        cluster.stop()

    rows = [[name, *(f"{r[k]:.1f}" for k in ("avg_jct", "p99_jct", "avg_wait", "makespan")),
             f"{100 * r['util']:.1f}%"] for name, r in results.items()]
    slurm_lat, neo_lat = np.array(lat["Slurm"]), np.array(lat["neocloud"])
    lat_rows = [[name, round(float(np.median(v)) * 1000), round(float(np.percentile(v, 90)) * 1000)]
                for name, v in (("sbatch, Slurm decides", slurm_lat), ("POST /jobs, neocloud decides", neo_lat))]
    sizes = {g: sum(w.gpus == g for w in jobs) for g in sorted({w.gpus for w in jobs})}
    body = "\n".join([
        "### Side by side on a real Slurm cluster",
        "",
        f"`python bench/slurm.py --trace {args.trace} --jobs {args.jobs} --scale {args.scale:g} "
        f"--load {args.load:g}` ({machine()}): Slurm 22.05, four slurmd of 8 fake GPUs under two leaf "
        f"switches on loopback; Philly {args.trace} (seed 0), the first {len(jobs)} jobs "
        f"({', '.join(f'{n} x {g} GPU' for g, n in sizes.items())}), durations / {args.scale:g} within 2-180 s "
        f"(mean {np.mean([w.duration_s for w in jobs]):.1f} s), arrivals over {jobs[-1].arrival_s:.0f} s "
        f"(offered load {args.load:g}x). Seconds, from each job's own start and end stamps.",
        "",
        table(["scheduler", "avg JCT", "p99 JCT", "avg wait", "makespan", "GPU utilisation"], rows),
        "",
        "Submit to the job's first instruction on the idle cluster (20 one-GPU jobs, ms):",
        "",
        table(["path", "median", "p90"], lat_rows),
        "",
        f"neocloud adds {1000 * (np.median(neo_lat) - np.median(slurm_lat)):.0f} ms per job at the median.",
        "",
        _verdict(*results.values()),
    ])
    write_section("slurm", body)


def _verdict(slurm: dict[str, float], neo: dict[str, float]) -> str:
    def change(key: str) -> str:
        d = neo[key] / slurm[key] - 1
        return f"{abs(100 * d):.0f}% {'lower' if d < 0 else 'higher'}"

    return (f"Through neocloud, average JCT is {change('avg_jct')} and average wait {change('avg_wait')} than with "
            f"Slurm's own scheduler; p99 JCT is {change('p99_jct')} and makespan {change('makespan')}. neocloud's "
            "queue (earliest virtual deadline: arrival plus estimated run time) lets short jobs overtake long "
            "ones, where Slurm's FIFO with backfill keeps the 2-second 8-GPU jobs behind minutes-long ones; the "
            "price is paid by the longest jobs of the busiest minutes, which run last and stretch the makespan "
            "(utilisation here is busy GPU-time over the makespan, so it moves with it).")


if __name__ == "__main__":
    main()
