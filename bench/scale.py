"""The twin at scale: a synthetic trace of 100,000 jobs on a 10,000-GPU fleet.

    python bench/scale.py [--jobs 100000] [--profile llm] [--fleet examples/fleets/sim-10k.yaml]

The baseline, run in the same process, is the same trace under `random` placement without
backfill: the cheapest pass the scheduler has.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from doc import machine, table, write_section

from neocloud.fleet.loader import load_fleet
from neocloud.sim.engine import simulate
from neocloud.sim.synth import synthesize

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--profile", default="llm")
    ap.add_argument("--load", type=float, default=0.8)
    ap.add_argument("--fleet", default=str(ROOT / "examples" / "fleets" / "sim-10k.yaml"))
    args = ap.parse_args()
    fleet = load_fleet(args.fleet)
    trace = synthesize(args.jobs, seed=0, profile=args.profile, fleet_gpus=fleet.total_gpus, load=args.load)
    rows, base = [], None
    load_before = os.getloadavg()[0]
    for policy, placement, backfill in (("fifo", "random", False), ("fifo", "topo", True), ("fair", "topo", True),
                                         ("neocloud", "neocloud", True)):
        cpu = time.process_time()
        r = simulate(fleet, trace, policy=policy, placement=placement, backfill=backfill, seed=0,
                     estimates="noisy")
        cpu = time.process_time() - cpu
        base = base or r.events_per_s
        rows.append([policy, placement, "yes" if backfill else "no", r.jobs_completed, r.events,
                     round(r.wall_s, 1), round(cpu, 1), round(r.events_per_s), f"{r.events_per_s / base:.2f}x",
                     round(r.avg_jct_s), round(r.avg_wait_s),
                     "—" if r.p99_wait_large_s is None else round(r.p99_wait_large_s),
                     r.preemptions, round(r.gpu_utilization, 3)])
    cmd = f"python bench/scale.py --jobs {args.jobs} --profile {args.profile} --load {args.load}"
    body = (
        f"### Twin at scale: {args.jobs:,} `{args.profile}` jobs on {fleet.total_gpus:,} GPUs\n\n"
        f"`{cmd}` ({machine()}, {os.cpu_count()} cores, load average {load_before:.1f} before and "
        f"{os.getloadavg()[0]:.1f} after: other work shares the cores, so wall time is noisy and CPU time says "
        f"more); offered load {args.load}, users' estimates `noisy`. The target is 60 s of wall time.\n\n"
        + table(["policy", "placement", "backfill", "jobs done", "events", "wall s", "CPU s", "events/s", "vs baseline",
                 "avg JCT s", "avg wait s", "p99 wait s, > 32 GPUs", "preemptions", "utilisation"], rows)
    )
    write_section("scale", body)


if __name__ == "__main__":
    main()
