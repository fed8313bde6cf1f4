"""Llama 3 in the twin: one 16,384-GPU job for 54 days at Llama 3's failure rates, on the twin's
engine and the production health policy; plain cluster vs neocloud, then towards ByteRobust's 97%.

    python bench/reliability.py [--seeds 5]

Rows add one mechanism at a time, so each table shows what each buys; the baseline of each row is
the row above, run in the same process. Every row is checked against the first-order model (loss
per fault = detection + waiting + restart + half an interval, plus the save cost over the interval).
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

from doc import machine, table, write_section

from neocloud.sim.failures import (
    ASYNC_SAVE_S,
    DAY,
    LOSSES,
    PEER_RESTART_S,
    PLAIN_REPAIRS,
    HealthChecks,
    Outcome,
    Repairs,
    Scenario,
    asynchronous,
    neocloud,
    peers,
    plain,
    run,
)

# The job's checkpoint, for the costs column: Llama 3 405B with Adam, 14 bytes a parameter (bf16
# weights 2, fp32 master weights 4, two fp32 moments 8), sharded over the job's nodes.
CHECKPOINT_TB = 405e9 * 14 / 1e12
FAST = HealthChecks(telemetry_s=1.0, heartbeat_s=1.0)


def measure(rows_spec: list[tuple[str, Scenario, object]], seeds: int) -> tuple[list[list[object]], list[Outcome]]:
    """A row per setting, and each setting's run of seed 0."""
    rows, firsts, last = [], [], None
    for label, s, cost in rows_spec:
        outs: list[Outcome] = [run(s, seed) for seed in range(seeds)]
        ettr = [o.ettr for o in outs]
        mean = statistics.mean(ettr)
        interval = statistics.mean(o.mean_interval_s for o in outs)
        lost = {w: statistics.mean(o.lost[w] for o in outs) / 3600 for w in LOSSES}
        rows.append([label, f"{100 * mean:.2f}%", f"{100 * statistics.stdev(ettr):.2f}" if seeds > 1 else "—",
                     f"{100 * s.analytic():.2f}%", "—" if last is None else f"{100 * (mean - last):+.2f}",
                     f"{statistics.mean(o.interruptions for o in outs):.0f}",
                     f"{statistics.mean(o.restarts_in_place for o in outs):.0f}", f"{interval / 60:.1f}",
                     *(f"{lost[w]:.1f}" for w in LOSSES), cost(s, interval) if callable(cost) else cost])
        firsts.append(outs[0])
        last = mean
    return rows, firsts


def storage(s: Scenario, interval: float) -> str:
    return f"checkpoint writes to storage: {CHECKPOINT_TB:.2f} TB every {interval / 60:.1f} min = " \
           f"{CHECKPOINT_TB * 1000 / interval:.0f} GB/s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=5)
    args = ap.parse_args()
    started = time.perf_counter()
    base = plain()
    n = neocloud()
    shard = CHECKPOINT_TB * 1000 / n.nodes  # GB per node

    def spares(s: Scenario, _: float) -> str:
        return f"{s.spares} nodes idle ({s.spares * s.gpus_per_node} GPUs, {100 * s.spares / s.nodes:.1f}% of the job's)"

    first = [
        ("plain cluster", base, storage),
        ("+ health checks", replace(base, timeout_s=None), "telemetry from every node"),
        ("+ hot spares (32), repair and burn-in", replace(base, timeout_s=None, spares=32, repairs=Repairs()), spares),
        ("+ Daly's interval = neocloud", n, storage),
    ]
    rows1, firsts = measure(first, args.seeds)
    second = [
        ("neocloud", n, storage),
        ("+ asynchronous checkpoints", asynchronous(),
         lambda s, t: f"host memory for a snapshot ({shard:.1f} GB a node); " + storage(s, t)),
        ("+ in-memory checkpoints on peers", peers(),
         lambda s, t: f"host memory for two snapshots, its own and a peer's ({2 * shard:.1f} GB a node); "
                      f"{shard * 1000 / t:.0f} MB/s a node to its peer; storage written as a fallback only"),
        ("+ faster detection", peers(checks=FAST),
         "telemetry sampled every 1 s instead of 15 s, heartbeats every 1 s"),
        ("+ 64 hot spares", peers(checks=FAST, spares=64), spares),
    ]
    rows2, _ = measure(second, args.seeds)
    wall = time.perf_counter() - started
    one = firsts[-1]
    headers = ["setup", "ETTR (twin)", "sd", "ETTR (first-order)", "gain", "interruptions", "restarts in place",
               "interval (min)", *(f"lost: {w}" for w in LOSSES), "cost"]
    checks = n.checks
    body = "\n".join([
        "### Llama 3 in the twin: plain cluster vs neocloud",
        "",
        f"`python bench/reliability.py --seeds {args.seeds}` ({machine()}): one {n.gpus:,}-GPU job "
        f"({n.nodes:,} nodes) for {n.days:g} days, replayed by the twin's engine (`sim/engine.py`) with the "
        "production health policy (`health/policy.py`), its burn-in schedule (`health/checks.py`) and restart "
        "arithmetic (`health/restarts.py`); ETTR = productive time over wall time, mean and standard deviation "
        f"over {args.seeds} seeds; lost time in hours per run. One run: {one.events:,} events in "
        f"{one.engine_wall_s:.1f} s; the {(len(first) + len(second)) * args.seeds} runs of both tables took "
        f"{wall:.0f} s.",
        "",
        table(headers, rows1),
        "",
        "#### Towards 97%: what ByteDance's ByteRobust reports on a 9,600-GPU job",
        "",
        table(headers, rows2),
        "",
        "How the twin plays it (`src/neocloud/sim/faults.py`, `nodes.py`, `recovery.py`, `failures.py`):",
        "",
        "- Failures: Llama 3's unexpected interruptions per 1,000 GPU-days by cause (GPU 0.303, software "
        "0.063, network 0.040, host maintenance 0.036, host hardware 0.016, NIC 0.008, NCCL 0.008; "
        "0.474 in all: one every 3.1 h for the job), a Poisson process on every node of the fleet, spares "
        "included, for the whole run. A node out of service or already broken does not fail again, and "
        "software and NCCL faults strike only where the job runs, so a run sees fewer faults than 419.",
        f"- Signals, as a node reports them, judged by the production rules: a GPU fault as XID 79 "
        f"(triage) at the next telemetry sample ({checks.latency('xid'):g} s on average); a dead link or NIC "
        f"drains the node at once ({checks.latency('link'):g} s) but only the job's stall (GPUs busy without "
        f"power for 60 s, the stall rule) triages it ({checks.latency('stall'):g} s), as for an NCCL hang; a "
        f"lost host, for which there is no rule, is moved to triage by the operator after three missed "
        f"{checks.heartbeat_s:g} s heartbeats ({checks.latency('heartbeat'):g} s); a crashed process is "
        f"seen at the next poll ({checks.latency('exit'):g} s) and restarted in place by the job's launcher "
        "(no node fault, no interruption counted).",
        "- The policy decides the rest: triage stops the job (the scheduler's `interrupt`, then the job "
        "requeued), releases a hot spare of the fabric for each node the job loses, and the pool is "
        "refilled as nodes come back; the "
        f"job runs again from its last checkpoint. A failed node then goes through triage "
        f"({n.repairs.triage_s / 3600:g} h, assumed), repair ({n.repairs.repair_s / 3600:g} h, CoreWeave's "
        f"Zap) and a {n.repairs.burn_in_s / 3600:g} h burn-in (CoreWeave's Test) before production; a hung "
        "node with no fault found skips the repair.",
        f"- Plain cluster: every fault found by a {base.timeout_s / 60:g}-minute collective timeout; no "
        f"spares and no burn-in, a failed node rebooted and put back in "
        f"{PLAIN_REPAIRS.triage_s / 60:g} minutes while the job waits; a checkpoint every hour.",
        f"- Costs: a {n.checkpoint_s:g} s blocking save and a {n.restart_s / 60:g}-minute restart once the "
        f"nodes are ready; asynchronous checkpoints block for {ASYNC_SAVE_S:g} s (the snapshot to host "
        f"memory; the write overlaps training); restored from a peer's memory, a restart is assumed to take "
        f"{PEER_RESTART_S:g} s (half of it was reading the checkpoint back from storage). Checkpoint size "
        f"for the costs column: {CHECKPOINT_TB:.2f} TB (405B parameters x 14 bytes: bf16 weights, fp32 "
        f"master weights and two Adam moments), {shard:.1f} GB a node.",
        f"- Daly's interval sqrt(2 C (M + R)) at each start, with M from the interruptions the fleet has shown "
        f"(production's `auto`, from Llama 3's rate as if seen for 1,000 GPU-days); it counts node failures "
        f"only, so the first-order column takes Daly's at that rate: {n._interval() / 60:.1f} min here.",
        "",
        f"neocloud's ETTR is {rows1[-1][1]} against the first-order model's {rows1[-1][3]}, on production's "
        f"own policy; every neocloud row is within a point of the model. The plain cluster loses more in the "
        "first-order model than in the twin (its losses are large, and in the twin faults strike only nodes "
        "in service). Asynchronous and in-memory checkpoints are what take the job past 97%: with the save "
        "hidden, Daly's interval shortens, so both the recomputation and the writes shrink, and a restart "
        "from memory halves the largest loss left. Faster detection and more spares buy little once health "
        "checks and 32 spares are in place: most faults are seen in seconds, and a dead link waits for the "
        "60 s stall rule. For scale: Meta reports more than 90% for Llama 3, CoreWeave goodput up to 96%, "
        f"ByteRobust 97%; a {n.days:g}-day run is {n.days * DAY / 3600:,.0f} h.",
    ])
    write_section("reliability", body)


if __name__ == "__main__":
    main()
