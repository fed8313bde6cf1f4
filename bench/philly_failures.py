"""Philly on 500 V100s with failures: the same replay without failures, with checkpoints only, at
Llama 3's rates and at ten times them, through the production health policy.

    python bench/philly_failures.py [--traces 6214e9,6c71a0,b436b2] [--seeds 0,1] [--arrival-scale 0.1]

neocloud's default queue and placement, users' estimates noisy, as in bench/philly.py. The
ten-times row reads its causes from a file (`neocloud simulate --failures FILE`), written here.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import yaml
from doc import SHARED, machine, table, write_section

from neocloud.fleet.loader import load_fleet
from neocloud.model.goodput import DEFAULT_CHECKPOINT_S
from neocloud.sim.engine import simulate, with_arrival_scale
from neocloud.sim.faults import LLAMA3_CAUSES, FailureModel, Repairs, causes_named
from neocloud.sim.runs import LOSSES
from neocloud.sim.traces import load_trace

FLEET = Path(__file__).resolve().parents[1] / "examples" / "fleets" / "philly.yaml"
OUT = ("triage", "repair", "burn-in", "draining", "cordoned")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--traces", default="6214e9,6c71a0,b436b2")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--arrival-scale", type=float, default=0.1)
    args = ap.parse_args()
    fleet = load_fleet(FLEET)
    with tempfile.TemporaryDirectory() as tmp:
        x10 = Path(tmp) / "llama3x10.yaml"
        x10.write_text(yaml.safe_dump([{"name": c.name, "per_1000_gpu_days": round(10 * c.per_1000_gpu_days, 4),
                                        "takes_node": c.takes_node, "signal": c.signal} for c in LLAMA3_CAUSES]))
        models = {"none": None, "no faults (checkpoints only)": FailureModel(causes=(), name="no faults"),
                  "llama3": FailureModel(causes_named("llama3")),
                  "llama3 x10 (file)": FailureModel(causes_named(str(x10)), name="llama3 x10")}
    rows, ratios = [], {label: [] for label in models}
    totals: dict[str, dict[str, float]] = {label: {} for label in models}  # summed over runs
    for seed in args.seeds.split(","):
        for name in args.traces.split(","):
            trace = with_arrival_scale(load_trace(SHARED / "traces" / "philly-gavel" / f"seed{seed}" / f"{name}.trace"),
                                       args.arrival_scale)
            base = None
            for label, model in models.items():
                r = simulate(fleet, trace, seed=int(seed), estimates="noisy", failures=model)
                base = base or r
                busy = r.extra["gpu_utilization_while_arriving"]
                ratios[label].append((r.avg_jct_s / base.avg_jct_s, r.p99_jct_s / base.p99_jct_s,
                                      busy / base.extra["gpu_utilization_while_arriving"]))
                f = r.extra.get("failures")
                if f is not None:
                    t = totals[label]
                    for key in ("faults", "interruptions", "restart_capped", "productive_gpu_h", "allocated_gpu_h"):
                        t[key] = t.get(key, 0.0) + f[key]
                    for w in LOSSES:
                        t[w] = t.get(w, 0.0) + f["lost_gpu_h"][w]
                rows.append([f"seed{seed}/{name}", label, round(r.avg_jct_s / 3600, 2), round(r.p99_jct_s / 3600, 1),
                             round(r.avg_wait_s / 3600, 2), f"{100 * busy:.2f}%", f"{100 * r.gpu_utilization:.2f}%",
                             r.jobs_completed,
                             *(["—"] * 5 + ["—"] * len(LOSSES) + ["—"] if f is None else
                               [f["faults"], f["interruptions"], f["restart_capped"], f"{100 * f['goodput']:.2f}%",
                                f"{100 * f['ettr']:.2f}%", *(round(f["lost_gpu_h"][w], 1) for w in LOSSES),
                                round(sum(f["node_h"].get(s, 0.0) for s in OUT))]),
                             round(r.wall_s, 1)])
    summary = []
    for label, v in ratios.items():
        t = totals[label]
        summary.append([label, *(f"{statistics.geometric_mean(x[i] for x in v):.3f}" for i in range(3)),
                        *(["—"] * (4 + len(LOSSES)) if not t else
                          [int(t["faults"]), int(t["interruptions"]), int(t["restart_capped"]),
                           f"{100 * t['productive_gpu_h'] / t['allocated_gpu_h']:.2f}%",
                           *(round(t[w], 1) for w in LOSSES)])])
    repairs = Repairs()
    cmd = f"python bench/philly_failures.py --traces {args.traces} --seeds {args.seeds} " \
          f"--arrival-scale {args.arrival_scale}"
    body = "\n".join([
        "### Philly on 500 V100s with failures",
        "",
        f"`{cmd}` ({machine()}): Gavel's Philly traces (arrivals x{args.arrival_scale:g}) on 125 nodes of 4 V100, "
        "neocloud's queue and placement, noisy estimates; the same replay without failures (`--failures none`, "
        "exactly the replay of the queueing benchmarks), with the failure accounting but no fault (what "
        "checkpointing costs), at Llama 3's rates (`--failures llama3`) and at ten times them (a causes file).",
        "",
        f"Summary over the {len(rows) // len(models)} runs: JCT and utilisation as ratios to the replay without "
        "failures (geometric mean); faults, interruptions, capped jobs and lost GPU-hours summed, goodput over "
        "all of them.",
        "",
        table(["failures", "avg JCT / none", "p99 JCT / none", "GPU utilisation while arriving / none", "faults",
               "interruptions", "restart capped", "goodput", *(f"lost GPU-h: {w}" for w in LOSSES)], summary),
        "",
        "At Llama 3's rates failures cost Philly's jobs little: their GPU-time is small (a few thousand "
        "GPU-days a trace, most jobs one GPU for an hour or two), so few faults find a job, and the average JCT "
        "moves by a few percent either way, within the replay's sensitivity to when its long jobs start (the "
        "row with checkpoints and no fault moves it too). What is lost is mostly recomputation, by the long jobs "
        "that never reach their first checkpoint. At ten times the rates recomputation grows "
        f"{totals['llama3 x10 (file)']['recomputation'] / totals['llama3']['recomputation']:.1f} times and "
        f"{int(totals['llama3 x10 (file)']['restart_capped'])} long jobs use up their three restarts.",
        "",
        table(["trace", "failures", "avg JCT h", "p99 JCT h", "avg wait h", "GPU utilisation while arriving",
               "GPU utilisation", "completed", "faults",
               "interruptions", "restart capped", "goodput", "ETTR", *(f"lost GPU-h: {w}" for w in LOSSES),
               "node-h out of production", "wall s"], rows),
        "",
        "JCT counts completed jobs: one that used up its restarts drops out (a long one, as a rule, so the "
        "average can fall). Utilisation while arriving is over the time jobs arrive; over the whole makespan "
        "it follows a handful of long jobs (the longest run for weeks, ten times slower when their gang is "
        "spread, at Gavel's measured unconsolidated speed), so a small shift in when they start swings it.",
        "",
        "Faults strike every node for the whole replay (the Philly traces run for months: most of it a few "
        "long jobs on an otherwise idle fleet, so most faults find idle nodes, which go through triage "
        f"({repairs.triage_s / 3600:g} h), repair ({repairs.repair_s / 3600:g} h) and burn-in "
        f"({repairs.burn_in_s / 3600:g} h) without costing a job). No hot spares (`--spares-per-fabric 0`, "
        "production's default). Trace jobs declare nothing, so each checkpoints at the `auto` interval "
        f"(Daly's, from the failures the fleet has shown) with a {DEFAULT_CHECKPOINT_S:g} s save (production's "
        "assumption when a job does not say) and restarts in the engine's 10 s; a 1-GPU job's Daly interval "
        "at Llama 3's rate is about 40 h, so most Philly jobs never checkpoint and a fault costs them all "
        "they had run. A job runs again at most 3 times (production's `max_restarts`). Goodput is productive "
        "over allocated GPU-time; ETTR productive over GPUs x wall time since first start, so it also counts "
        "preemptions' waits; waiting is the GPUs of an interrupted job times its wait to run again.",
    ])
    write_section("philly-failures", body)


if __name__ == "__main__":
    main()
