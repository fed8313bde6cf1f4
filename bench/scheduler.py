"""Scheduler decisions per second on a 100,000-GPU fleet, filled to a realistic mix first.

    python bench/scheduler.py [--nodes 12500] [--gpus-per-node 8] [--pending 10000] [--seed 0]

Each row is one `neocloud bench scheduler` run (neocloud.sim.schedbench). The baseline, run in
the same process, is `random` placement without backfill: the cheapest pass the scheduler has.
The `saturated` row frees only 1% of the GPUs before each pass, so the fleet stays near full and
most passes end in a blocked head job, its EASY reservation, and 100 backfill attempts.
"""

from __future__ import annotations

import argparse

from doc import machine, table, write_section

from neocloud.sim.schedbench import run_scheduler_bench

# Published throughput of the schedulers people run today:
# kube-scheduler's own CI (scheduler_perf / perf-dash, 5,000 nodes) and Slurm's sustained rate
# (SchedMD's high-throughput guide). Different work per decision: a pod is one node, a Slurm job
# goes through slurmctld's RPCs; ours is the core's decision alone, with no API server or RPC.
PUBLISHED = [
    ("kube-scheduler, 5,000 nodes (its CI)", "680-810 pods/s"),
    ("Slurm, sustained", "500 jobs/s"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--nodes", type=int, default=12_500)
    ap.add_argument("--gpus-per-node", type=int, default=8)
    ap.add_argument("--pending", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    runs = (
        ("baseline", "fifo", "random", False, None),
        ("default", "neocloud", "neocloud", True, None),
        ("saturated", "neocloud", "neocloud", True, 0.01),
        ("fifo+topo", "fifo", "topo", True, None),
        ("fair share", "fair", "topo", True, None),
    )
    rows, base, default = [], None, None
    for label, policy, placement, backfill, step in runs:
        r = run_scheduler_bench(args.nodes, args.gpus_per_node, args.pending, seed=args.seed, placement=placement,
                                policy=policy, backfill=backfill, step=step)
        base = base or r["decisions_per_s"]
        default = default or (r if label == "default" else None)
        rows.append([label, policy, placement, "yes" if backfill else "no", f"{r['fill_share']:.3f}",
                     r["decisions"], r["started"], r["passes"], round(r["decisions_per_s"]),
                     f"{r['decisions_per_s'] / base:.2f}x", f"{r['p50_decision_ms']:.3f}",
                     f"{r['p99_decision_ms']:.3f}", f"{r['p99_pass_ms']:.1f}"])
    assert default is not None
    sizes = [[size, row["decisions"], f"{row['p50_ms']:.3f}", f"{row['p99_ms']:.3f}", f"{row['max_ms']:.3f}"]
             for size, row in default["per_gang_size"].items()]
    ours = f"{round(default['decisions_per_s']):,} decisions/s, p99 {default['p99_decision_ms']:.2f} ms"
    cmd = (f"neocloud bench scheduler --nodes {args.nodes} --gpus-per-node {args.gpus_per_node} "
           f"--pending {args.pending} --seed {args.seed}")
    body = (
        f"### Scheduler: decisions per second, {default['gpus']:,} GPUs, {args.pending:,} pending gangs\n\n"
        f"`python bench/scheduler.py --nodes {args.nodes} --gpus-per-node {args.gpus_per_node} "
        f"--pending {args.pending} --seed {args.seed}` ({machine()}); one row is `{cmd}` with the "
        "row's options. The fleet (leaves of 32 nodes, fabrics of 64 leaves) is filled with the "
        "`mixed` GPU mix to 95% and drained at random to the fill share; then the pending gangs "
        "(the `llm` mix, 1-512 GPUs) are placed as jobs end. A decision is one attempt to place one "
        "job, as the pass makes it, with its commit or its EASY reservation; decisions/s is over the "
        "wall time of whole passes. Target: 5,000 decisions/s and p99 under 20 ms.\n\n"
        + table(["run", "policy", "placement", "backfill", "fill", "decisions", "started", "passes",
                 "decisions/s", "vs baseline", "p50 ms", "p99 ms", "p99 pass ms"], rows)
        + "\n\n#### Decision latency by gang size (`default` row; GPUs rounded up to a power of two)\n\n"
        + table(["GPUs", "decisions", "p50 ms", "p99 ms", "max ms"], sizes)
        + "\n\n#### Beside published figures\n\n"
        + table(["scheduler", "throughput"], [*map(list, PUBLISHED), ["neocloud core, this run", ours]])
        + "\n\nThe published figures are whole systems (API server, binding, RPCs); ours is the "
        "core's decision alone, which is what the twin replays and the controller calls."
    )
    write_section("scheduler", body)


if __name__ == "__main__":
    main()
