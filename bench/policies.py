"""Queue policies with and without backfill on the Tiresias testbed trace and a Gavel Philly trace.

    python bench/policies.py [--gavel-trace 6214e9] [--arrival-scale 0.1]

The Gavel trace is one Philly virtual cluster's jobs over seven weeks, light for 500 GPUs; its
arrivals are compressed (times x0.1 by default) so that jobs contend and the policies differ.

Every row runs in this process on the same fleet and trace; `vs fifo` is the average JCT of
plain FIFO without backfill (the baseline) divided by the row's.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from doc import SHARED, machine, table, write_section

from neocloud.fleet.loader import load_fleet
from neocloud.sim.engine import simulate, with_arrival_scale
from neocloud.sim.traces import load_trace

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "fleets"
POLICIES = ("fifo", "sjf", "las", "fair")


def rows_for(fleet, trace) -> list[list[object]]:
    rows, base = [], None
    for policy in POLICIES:
        for backfill in (False, True):
            r = simulate(fleet, trace, policy=policy, backfill=backfill, placement="topo", seed=0)
            base = base or r.avg_jct_s
            rows.append([policy, "yes" if backfill else "no", r.jobs_completed, round(r.avg_jct_s / 3600, 2),
                         round(r.p99_jct_s / 3600, 2), round(r.avg_wait_s / 3600, 2), round(r.gpu_utilization, 3),
                         r.preemptions, f"{base / r.avg_jct_s:.2f}x", round(r.wall_s, 2)])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--gavel-trace", default="6214e9")
    ap.add_argument("--arrival-scale", type=float, default=0.1)
    args = ap.parse_args()
    headers = ["policy", "backfill", "jobs done", "avg JCT h", "p99 JCT h", "avg wait h", "utilisation",
               "preemptions", "vs fifo", "wall s"]
    tiresias = load_trace(SHARED / "traces" / "tiresias" / "60_job.csv")
    gavel = load_trace(SHARED / "traces" / "philly-gavel" / "seed0" / f"{args.gavel_trace}.trace")
    sections = []
    for title, fleet_file, trace, scale in (
        ("Tiresias 60-job trace on its testbed, 32 nodes x 4 GPUs, arrivals as recorded", "tiresias.yaml", tiresias, 1.0),
        (f"Gavel Philly trace `{args.gavel_trace}` (seed0) on 500 V100s (125 x 4), arrivals x{args.arrival_scale}",
         "philly.yaml", gavel, args.arrival_scale),
    ):
        rows = rows_for(load_fleet(EXAMPLES / fleet_file), with_arrival_scale(trace, scale))
        sections.append(f"#### {title}\n\n" + table(headers, rows))
    cmd = f"python bench/policies.py --gavel-trace {args.gavel_trace} --arrival-scale {args.arrival_scale}"
    body = (f"### Queue policies, with and without EASY backfill\n\n`{cmd}` ({machine()}); placement `topo`, "
            "estimates perfect, seed 0.\n\n" + "\n\n".join(sections))
    write_section("policies", body)


if __name__ == "__main__":
    main()
