"""The openb fragmentation experiment, 10 seeds, our placements beside the paper's figures.

    python bench/openb_inflate.py [--trace default] [--seeds 42-51] [--inflate 1.3]
"""

from __future__ import annotations

import argparse
import statistics

from doc import SHARED, machine, table, write_section

from neocloud.fleet.openb import load_openb_nodes
from neocloud.sched.placements import PLACEMENTS, placement
from neocloud.sim.inflate import run_inflate
from neocloud.sim.traces.openb import load_openb_pods

PUBLISHED = {  # mean of 10 seeds at 130%, from the paper's repository (../shared/traces/README.md)
    "default": {"random": 87.47, "bestfit": 93.08, "fgd": 95.39},
    "multigpu50": {"bestfit": 95.74, "fgd": 97.18},
    "gpuspec33": {"bestfit": 93.09, "fgd": 94.55},
    "gpushare100": {"bestfit": 85.01, "fgd": 86.90},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trace", default="default", choices=list(PUBLISHED))
    ap.add_argument("--seeds", default="42-51")
    ap.add_argument("--inflate", type=float, default=1.3)
    args = ap.parse_args()
    lo, hi = (int(x) for x in args.seeds.split("-"))
    seeds = range(lo, hi + 1)
    data = SHARED / "traces" / "alibaba-gpu-v2023"
    fleet = load_openb_nodes(data / "openb_node_list_gpu_node.csv")
    pods = [tj.job for tj in load_openb_pods(data / f"openb_pod_list_{args.trace}.csv").jobs]
    end = str(round(args.inflate * 100))
    rows = []
    for name in PLACEMENTS:
        runs = [run_inflate(fleet, pods, placement(name), inflate=args.inflate, seed=s) for s in seeds]
        at100 = statistics.mean(r.allocation_at["100"] for r in runs)
        final = [r.allocation_at[end] for r in runs]
        pub = PUBLISHED[args.trace].get(name)
        rows.append([name, at100, statistics.mean(final), statistics.stdev(final) if len(final) > 1 else 0.0,
                     f"{pub:.2f}" if pub else "—", f"{statistics.mean(final) - pub:+.2f}" if pub else "—",
                     round(statistics.mean(r.wall_s for r in runs), 2)])
    cmd = f"python bench/openb_inflate.py --trace {args.trace} --seeds {args.seeds} --inflate {args.inflate}"
    body = (
        f"### openb `{args.trace}`, inflated to {end}% (seeds {args.seeds})\n\n"
        f"`{cmd}` ({machine()}). Share of GPU capacity allocated, mean of {len(seeds)} seeds.\n\n"
        + table(["placement", "alloc % at 100%", f"alloc % at {end}%", "stdev", "published", "delta", "wall s/run"],
                rows)
    )
    write_section(f"openb-{args.trace}", body)


if __name__ == "__main__":
    main()
