"""Reserved contracts in the twin: a week on 500 GPUs, three contracted tenants and on-demand load.

    python bench/contracts.py [--jobs 11200] [--load 1.4] [--seed 0]

A synthetic Philly-shaped week (`neocloud trace synth --profile philly`) on Philly's 125 x 4 V100
fleet; 60% of the jobs belong to three tenants with reserved contracts (guarantees of 160, 100 and
60 GPUs, in proportion to their share of the load), the rest to ten on-demand tenants, a tenth of
whose jobs are spot. Each tenant's guarantee owes it, at every instant, its demand up to the
guarantee; delivered is what it ran within that. The same week runs three ways in one process:
guarantees with borrowing (neocloud's rules), guarantees without borrowing (idle guarantees stay
idle: the baseline), and no guarantees at all (everyone on demand).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
from doc import machine, table, write_section

from neocloud.fleet.loader import load_fleet
from neocloud.model.job import PriorityClass
from neocloud.sim.engine import simulate
from neocloud.sim.synth import synthesize
from neocloud.sim.trace import Trace

FLEET = Path(__file__).resolve().parents[1] / "examples" / "fleets" / "philly.yaml"
GUARANTEES = {"lab-a": 160, "lab-b": 100, "lab-c": 60}
CONTRACTED_SHARE = 0.6


def tenants(trace: Trace, seed: int) -> Trace:
    """Give each job a tenant: contracted ones in proportion to their guarantees, else on demand."""
    rng = np.random.default_rng(seed + 1)
    names = list(GUARANTEES)
    weights = np.array(list(GUARANTEES.values()), dtype=float)
    jobs = []
    for tj in trace.jobs:
        if rng.random() < CONTRACTED_SHARE:
            job = replace(tj.job, tenant=names[rng.choice(len(names), p=weights / weights.sum())])
        else:
            spot = rng.random() < 0.1
            job = replace(tj.job, tenant=f"od-{rng.integers(10)}",
                          priority=PriorityClass.SPOT if spot else PriorityClass.ON_DEMAND)
        jobs.append(replace(tj, job=job))
    return Trace(trace.name, jobs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=11200)
    ap.add_argument("--load", type=float, default=1.4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    fleet = load_fleet(FLEET)
    trace = tenants(synthesize(args.jobs, seed=args.seed, profile="philly", fleet_gpus=fleet.total_gpus,
                               load=args.load, gpus_per_node=4), args.seed)
    days = trace.jobs[-1].job.submit_s / 86400
    runs = [("guarantees, borrowing (neocloud)", GUARANTEES, True),
            ("guarantees, no borrowing", GUARANTEES, False),
            ("no guarantees (all on demand)", None, True)]
    rows, per_tenant = [], []
    for label, quotas, borrowing in runs:
        r = simulate(fleet, trace, seed=args.seed, estimates="noisy", quotas=quotas, borrowing=borrowing).to_dict()
        g = r.get("guarantees", {})
        rows.append([label, f"{100 * r['gpu_utilization_while_arriving']:.1f}%", f"{r['avg_jct_s'] / 3600:.2f}",
                     f"{r['avg_wait_s'] / 3600:.2f}", r["preemptions"],
                     "—" if not g else f"{100 * min(v['delivered_share'] for v in g.values()):.3f}%"])
        for tenant, v in g.items():
            per_tenant.append([label, tenant, v["guaranteed_gpus"], f"{v['owed_gpu_h']:,.1f}",
                               f"{v['delivered_gpu_h']:,.1f}", f"{100 * v['delivered_share']:.3f}%"])
    body = "\n".join([
        "### Reserved contracts in the twin: guarantees kept, idle ones lent",
        "",
        f"`python bench/contracts.py --jobs {args.jobs} --load {args.load:g} --seed {args.seed}` ({machine()}): "
        f"{args.jobs:,} Philly-shaped jobs over {days:.1f} days on {fleet.total_gpus} V100s; "
        f"{100 * CONTRACTED_SHARE:.0f}% of jobs from three contracted tenants "
        f"({', '.join(f'{t} {g} GPUs' for t, g in GUARANTEES.items())}), the rest on demand (a tenth spot); "
        "neocloud queue and placement, noisy estimates.",
        "",
        table(["setup", "GPU utilisation (week)", "avg JCT (h)", "avg wait (h)", "preemptions", "least delivered"], rows),
        "",
        "Guaranteed GPU-hours owed (demand up to the guarantee) and delivered, per tenant:",
        "",
        table(["setup", "tenant", "guarantee (GPUs)", "owed GPU-h", "delivered GPU-h", "delivered"], per_tenant),
        "",
        f"Borrowing adds {float(rows[0][1][:-1]) - float(rows[1][1][:-1]):.1f} points of utilisation over keeping "
        f"idle guarantees idle, while every guarantee is delivered to at least {rows[0][-1]} of what it owed "
        "(owed: what the tenant held within its guarantee, plus its waiting jobs that fit in the rest). An owner "
        "takes its GPUs back in the pass where it asks: it preempts borrowers (spot first); where the room is there "
        "in count but scattered over nodes, it moves other jobs off the nodes nearest to whole, and on-demand jobs "
        "that cannot move at once wait in its place. What is left undelivered (under a GPU-hour in the week per "
        "tenant) is time a job within its guarantee waited for a place of its shape that no such moves could make.",
    ])
    write_section("contracts", body)


if __name__ == "__main__":
    main()
