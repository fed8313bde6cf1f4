"""The live forecast: how right it is, and what it costs at fleet scale.

    python bench/forecast.py accuracy [--traces 6214e9,6c71a0,b436b2] [--seeds 0,1] [--every 1]
    python bench/forecast.py scale [--pending 10000] [--repeat 3]

`accuracy`: the Philly replays of bench/philly.py (500 V100s, arrivals x0.1, the default policy
with noisy estimates). At each arrival, every job that arrived and did not start at once is
forecast as a tenant would ask for it then, and compared with when it really started: by
neocloud's forecast (the production scheduler run forward, sched/forecast.py) and by a naive
Slurm-style estimate on the same state (`squeue --start`: reservations walked in queue order
from running jobs' estimated ends, each job at the first time enough GPUs are free for its whole
estimate, the fleet counted as one pool of GPUs). `--every N` forecasts at every N-th arrival.

`scale`: the twin replays `--warm` jobs of the `llm` mix on 100,000 GPUs (examples/fleets/sim-100k.yaml)
at 90% load, then `--pending` more arrive at once (estimates twice their run time); that live state
is forecast (snapshot and run), against the same forecast taking a pass at every end.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from doc import SHARED, machine, table, write_section

from neocloud.fleet.loader import load_fleet
from neocloud.sched.forecast import DEFAULT_S, forecast, snapshot
from neocloud.sched.scheduler import Scheduler
from neocloud.sim.engine import simulate, with_arrival_scale
from neocloud.sim.synth import synthesize
from neocloud.sim.trace import Trace
from neocloud.sim.traces import load_trace

ROOT = Path(__file__).resolve().parents[1]
PHILLY = ROOT / "examples" / "fleets" / "philly.yaml"
BIG = ROOT / "examples" / "fleets" / "sim-100k.yaml"


def naive(sched: Scheduler, now: float, default_s: float = DEFAULT_S) -> dict[str, float]:
    """Slurm-style expected starts: each pending job, in queue order, at the first time the fleet's
    free GPUs (as running jobs end at their estimates, less what earlier jobs reserved) stay enough
    for its whole estimate. No placement: the fleet is one pool of GPUs."""
    times = np.array([now])
    free = np.array([float(sched.state.total_gpus) - sum(r.job.gpus for r in sched.running.values())])
    for rec in sched.running.values():
        left = rec.remaining_estimate(now)
        if left is None:
            left = max(default_s - rec.ran_s - (now - (rec.started_s or now)), 60.0)
        times, free = _reserve(times, free, now + left, np.inf, -rec.job.gpus)
    starts: dict[str, float] = {}
    for rec in sched.queue.order(sched.usage):
        need, est = rec.job.gpus, rec.remaining_estimate(now) or default_s
        for i in np.flatnonzero(free >= need):
            j = int(np.searchsorted(times, times[i] + est))
            if free[i:j].min() >= need:
                starts[rec.job.id] = float(times[i])
                times, free = _reserve(times, free, float(times[i]), float(times[i]) + est, need)
                break
    return starts


def _reserve(times: np.ndarray, free: np.ndarray, start: float, stop: float,
             gpus: float) -> tuple[np.ndarray, np.ndarray]:
    """Take `gpus` from the step function `free` (free[i] from times[i] on) over [start, stop)."""
    for t in (start, stop):
        i = int(np.searchsorted(times, t))
        if t != np.inf and (i == len(times) or times[i] != t):
            times, free = np.insert(times, i, t), np.insert(free, i, free[i - 1])
    free[int(np.searchsorted(times, start)):int(np.searchsorted(times, stop))] -= gpus
    return times, free


def accuracy(args: argparse.Namespace) -> None:
    fleet = load_fleet(PHILLY)
    rows, all_ours, all_naive = [], [], []
    for seed in args.seeds.split(","):
        for name in args.traces.split(","):
            trace = with_arrival_scale(load_trace(SHARED / "traces" / "philly-gavel" / f"seed{seed}" / f"{name}.trace"),
                                       0.1)
            asked: dict[str, tuple[float, float, float]] = {}  # job -> (asked at, ours, naive)
            live: list[Scheduler] = []
            seen = [0]
            cost = [0.0]

            def observe(sched: Scheduler, now: float, arrived: list[str]) -> None:
                if not live:
                    live.append(sched)
                waiting = [j for j in arrived if sched.jobs[j].state == "PENDING"]
                seen[0] += 1
                if not waiting or seen[0] % args.every:
                    return
                t = time.perf_counter()
                ours = forecast(sched, now).start
                cost[0] += time.perf_counter() - t
                theirs = naive(sched, now)
                for j in waiting:
                    asked[j] = (now, ours.get(j, np.inf), theirs.get(j, np.inf))

            simulate(fleet, trace, policy="neocloud", placement="neocloud", seed=int(seed), estimates="noisy",
                     observe=observe)
            sched = live[0]
            ours_err, naive_err = [], []
            for j, (_, ours, theirs) in asked.items():
                actual = sched.jobs[j].first_start_s
                if actual is None:
                    continue
                ours_err.append(abs(ours - actual))
                naive_err.append(abs(theirs - actual))
            all_ours += ours_err
            all_naive += naive_err
            rows.append([f"seed{seed}/{name}", len(ours_err), *_errors(ours_err), *_errors(naive_err),
                         round(1000 * cost[0] / max(len(asked), 1), 1)])
    rows.append(["all", len(all_ours), *_errors(all_ours), *_errors(all_naive), ""])
    body = (f"### Forecast accuracy on Philly\n\n`python bench/forecast.py accuracy --traces {args.traces} "
            f"--seeds {args.seeds} --every {args.every}` ({machine()}). Jobs that waited, forecast at their "
            "arrival; absolute error of the expected start against the real one, in hours.\n\n"
            + table(["trace", "jobs", "neocloud median h", "neocloud p90 h", "naive median h", "naive p90 h",
                     "ms per forecast"], rows))
    print(body)
    write_section("forecast-accuracy", body)


def _errors(errors: list[float]) -> list[float]:
    if not errors:
        return [0.0, 0.0]
    a = np.array(errors)
    a[~np.isfinite(a)] = 1e9  # not expected within the horizon, yet it started
    return [round(float(np.median(a)) / 3600, 3), round(float(np.percentile(a, 90)) / 3600, 3)]


def scale(args: argparse.Namespace) -> None:
    fleet = load_fleet(BIG)
    trace = synthesize(args.warm + 2 * args.pending, seed=0, profile="llm", fleet_gpus=fleet.total_gpus, load=0.9)
    warm, burst = trace.jobs[:args.warm], trace.jobs[args.warm:]
    taken: list[tuple[Scheduler, float]] = []

    class Warm(Exception):
        pass

    def observe(sched: Scheduler, now: float, arrived: list[str]) -> None:
        if arrived[-1] == warm[-1].job.id:
            taken.append((sched, now))
            raise Warm

    try:
        simulate(fleet, Trace(trace.name, warm), policy="neocloud", placement="neocloud", seed=0, estimates="perfect",
                 observe=observe)
    except Warm:
        pass
    live, now = taken[0]
    for tj in burst:  # a burst of submissions onto the running fleet, until enough wait
        live.submit(replace(tj.job, submit_s=now, estimate_s=tj.duration_s * 2), now)
        if len(live.queue) % 1000 == 0:
            live.schedule(now)
            if len(live.queue) >= args.pending:
                break
    rows = []
    for step in ["batched"] * args.repeat + ["a pass per end"]:
        t0, c0 = time.perf_counter(), time.process_time()
        twin = snapshot(live)
        copied = time.perf_counter() - t0
        f = forecast(twin, now, copy=False) if step == "batched" else forecast(twin, now, copy=False, step_s=0.0,
                                                                               rel_step=0.0)
        rows.append([step, f"{len(live.queue):,}", f"{len(live.running):,}", f"{len(f.start):,}", f"{f.passes:,}",
                     round(copied, 2), round(time.perf_counter() - t0, 2), round(time.process_time() - c0, 2)])
    body = (f"### Forecasting the live queue at scale\n\n`python bench/forecast.py scale --pending {args.pending} "
            f"--warm {args.warm} --repeat {args.repeat}` ({machine()}): the twin's state once {args.pending:,} `llm` "
            f"jobs wait on {fleet.total_gpus:,} GPUs, forecast from a snapshot (its cost included); the baseline "
            "takes a pass at every end instead of one for the ends within a second or 1% of the time from now.\n\n"
            + table(["ends", "pending", "running", "starts forecast", "passes", "snapshot s", "forecast s", "CPU s"],
                    rows)
            + f"\n\nMedian, batched: {statistics.median(r[6] for r in rows[:-1]):.2f} s.")
    print(body)
    write_section("forecast-scale", body)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    acc = sub.add_parser("accuracy")
    acc.add_argument("--traces", default="6214e9,6c71a0,b436b2")
    acc.add_argument("--seeds", default="0,1")
    acc.add_argument("--every", type=int, default=1)
    sc = sub.add_parser("scale")
    sc.add_argument("--pending", type=int, default=10_000)
    sc.add_argument("--warm", type=int, default=5_000)
    sc.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    accuracy(args) if args.what == "accuracy" else scale(args)


if __name__ == "__main__":
    main()
