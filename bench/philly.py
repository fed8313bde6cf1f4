"""Queueing on Philly: neocloud's default against Tiresias (LAS) and Slurm's default (FIFO + backfill).

    python bench/philly.py [--traces 6214e9,6c71a0,b436b2] [--seeds 0,1] [--arrival-scale 0.1] [--failures none]

Three virtual-cluster traces of Gavel's Philly re-sampling, both seeds, on 500 V100s (125 x 4).
`x bound` is the average JCT over the lower bound: each job's consolidated run time, no wait.
Estimate-driven policies (sjf, neocloud) see users' estimates as the twin's error model makes
them (`noisy`); the default also runs with no estimates and with perfect ones, and with
topology-blind placement (`random`), where spread gangs run at the unconsolidated speed.
`--failures llama3` (or a causes file) replays every run with failures through the health policy,
into a section of its own.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from doc import SHARED, machine, table, write_section

from neocloud.fleet.loader import load_fleet
from neocloud.sim.engine import simulate, with_arrival_scale
from neocloud.sim.faults import FailureModel, causes_named
from neocloud.sim.traces import load_trace

FLEET = Path(__file__).resolve().parents[1] / "examples" / "fleets" / "philly.yaml"
RUNS = (  # (policy, backfill, placement, estimates)
    ("fifo", True, "topo", "noisy"),
    ("sjf", True, "topo", "noisy"),
    ("las", False, "topo", "noisy"),
    ("neocloud", True, "neocloud", "noisy"),
    ("neocloud", True, "neocloud", "none"),
    ("neocloud", True, "neocloud", "perfect"),
    ("neocloud", True, "random", "noisy"),
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--traces", default="6214e9,6c71a0,b436b2")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--arrival-scale", type=float, default=0.1)
    ap.add_argument("--failures", default="none", help="none, llama3, or a YAML/JSON file of causes")
    args = ap.parse_args()
    model = None if args.failures == "none" else \
        FailureModel(causes_named(args.failures), name=Path(args.failures).name)
    fleet = load_fleet(FLEET)
    rows = []
    jct: dict[tuple, dict[str, float]] = {run: {} for run in RUNS}  # run -> trace -> (avg, p99) JCT
    for seed in args.seeds.split(","):
        for name in args.traces.split(","):
            trace = with_arrival_scale(load_trace(SHARED / "traces" / "philly-gavel" / f"seed{seed}" / f"{name}.trace"),
                                       args.arrival_scale)
            bound = statistics.mean(tj.duration_s for tj in trace.jobs)
            for policy, backfill, placement, estimates in RUNS:
                r = simulate(fleet, trace, policy=policy, backfill=backfill, placement=placement, seed=int(seed),
                             estimates=estimates, failures=model)
                rows.append([f"seed{seed}/{name}", policy, placement, "yes" if backfill else "no", estimates,
                             round(r.avg_jct_s / 3600, 2), round(r.p99_jct_s / 3600, 1), f"{r.avg_jct_s / bound:.3f}",
                             round(r.avg_wait_s / 3600, 2),
                             "—" if r.p99_wait_large_s is None else round(r.p99_wait_large_s / 3600, 2),
                             r.preemptions, round(r.wall_s, 1)])
                jct[(policy, backfill, placement, estimates)][f"{seed}/{name}"] = (r.avg_jct_s, r.p99_jct_s)
    las, fifo = jct[RUNS[2]], jct[RUNS[0]]
    summary = []
    for run, per_trace in jct.items():
        def ratio(base: dict, i: int) -> str:
            r = statistics.geometric_mean(per_trace[t][i] / base[t][i] for t in per_trace)
            wins = sum(per_trace[t][i] < base[t][i] for t in per_trace)
            return f"{r:.3f} ({wins}/{len(per_trace)})"
        summary.append([run[0], run[2], "yes" if run[1] else "no", run[3], ratio(las, 0), ratio(fifo, 0),
                        ratio(las, 1), ratio(fifo, 1)])
    cmd = f"python bench/philly.py --traces {args.traces} --seeds {args.seeds} --arrival-scale {args.arrival_scale}"
    under = ""
    if model is not None:
        cmd += f" --failures {args.failures}"
        under = f", under failures ({model.name}: the jobs' checkpoints and restarts as in the table above)"
    body = (f"### Philly on 500 V100s: neocloud against LAS and FIFO+backfill{under}\n\n`{cmd}` ({machine()}).\n\n"
            + "Summary over all runs: JCT as a ratio to LAS's and to FIFO+backfill's (geometric mean; in brackets, "
              "the runs where it is lower).\n\n"
            + table(["policy", "placement", "backfill", "estimates", "avg JCT / las", "avg JCT / fifo",
                     "p99 JCT / las", "p99 JCT / fifo"], summary)
            + "\n\n"
            + table(["trace", "policy", "placement", "backfill", "estimates", "avg JCT h", "p99 JCT h", "x bound",
                     "avg wait h", "p99 wait h, > 32 GPUs", "preemptions", "wall s"], rows))
    write_section("philly" if model is None else "philly-under-failures", body)


if __name__ == "__main__":
    main()
