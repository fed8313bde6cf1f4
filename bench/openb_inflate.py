"""The openb fragmentation experiment, 10 seeds, our placements beside the paper's figures.

    python bench/openb_inflate.py [--trace default] [--seeds 42-51] [--inflate 1.3] [--ablation]

With `--ablation`, `neocloud` is also run without each of its parts (see `sched/packing.py`).
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

from doc import SHARED, machine, table, write_section

from neocloud.fleet.openb import load_openb_nodes
from neocloud.sched.packing import ShapeAwarePacking
from neocloud.sched.placement import Placement
from neocloud.sched.placements import PLACEMENTS, placement
from neocloud.sim.inflate import run_inflate
from neocloud.sim.traces.openb import load_openb_pods

PUBLISHED = {  # mean of 10 seeds at 130%, from the paper's repository (../shared/traces/README.md)
    "default": {"random": 87.47, "bestfit": 93.08, "fgd": 95.39},
    "multigpu50": {"bestfit": 95.74, "fgd": 97.18},
    "gpuspec33": {"bestfit": 93.09, "fgd": 94.55},
    "gpushare100": {"bestfit": 85.01, "fgd": 86.90},
}


ABLATIONS = {  # neocloud without one of its parts
    "neocloud, no stranding": {"lam": 0.0},
    "neocloud, no waste": {"mu": 0.0},
    "neocloud, no pull": {"pull": 0.0},
}


def policies(ablation: bool) -> dict[str, Callable[[], Placement]]:
    out: dict[str, Callable[[], Placement]] = {name: (lambda name=name: placement(name)) for name in PLACEMENTS}
    if ablation:
        for label, params in ABLATIONS.items():
            out[label] = type("Ablated", (ShapeAwarePacking,), params)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trace", default="default", choices=list(PUBLISHED))
    ap.add_argument("--seeds", default="42-51")
    ap.add_argument("--inflate", type=float, default=1.3)
    ap.add_argument("--ablation", action="store_true", help="also run neocloud without each of its parts")
    args = ap.parse_args()
    lo, hi = (int(x) for x in args.seeds.split("-"))
    seeds = range(lo, hi + 1)
    data = SHARED / "traces" / "alibaba-gpu-v2023"
    fleet = load_openb_nodes(data / "openb_node_list_gpu_node.csv")
    pods = [tj.job for tj in load_openb_pods(data / f"openb_pod_list_{args.trace}.csv").jobs]
    end = str(round(args.inflate * 100))
    rows = []
    fgd: tuple[float, float] | None = None  # its mean allocation and wall time, to compare with
    for name, make in policies(args.ablation).items():
        runs = [run_inflate(fleet, pods, make(), inflate=args.inflate, seed=s) for s in seeds]
        at100 = statistics.mean(r.allocation_at["100"] for r in runs)
        final = [r.allocation_at[end] for r in runs]
        mean, wall = statistics.mean(final), statistics.mean(r.wall_s for r in runs)
        fgd = (mean, wall) if name == "fgd" else fgd
        pub = PUBLISHED[args.trace].get(name)
        rows.append([name, at100, mean, statistics.stdev(final) if len(final) > 1 else 0.0,
                     f"{pub:.2f}" if pub else "—", f"{mean - pub:+.2f}" if pub else "—",
                     f"{mean - fgd[0]:+.2f}" if fgd else "—", round(wall, 2),
                     f"{wall / fgd[1]:.2f}x" if fgd else "—"])
    cmd = f"python bench/openb_inflate.py --trace {args.trace} --seeds {args.seeds} --inflate {args.inflate}"
    cmd += " --ablation" if args.ablation else ""
    body = (
        f"### openb `{args.trace}`, inflated to {end}% (seeds {args.seeds})\n\n"
        f"`{cmd}` ({machine()}). Share of GPU capacity allocated, mean of {len(seeds)} seeds.\n\n"
        + table(["placement", "alloc % at 100%", f"alloc % at {end}%", "stdev", "published", "delta", "vs fgd",
                 "wall s/run", "wall / fgd"], rows)
    )
    write_section(f"openb-{args.trace}", body)


if __name__ == "__main__":
    main()
