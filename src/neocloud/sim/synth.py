"""Synthetic traces calibrated on published distributions, for fleets bigger than any public trace.

No public trace holds LLM-scale gangs, nor enough jobs for a 10,000-GPU fleet, so the twin also
runs on generated jobs whose size and run-time distributions match published figures:

- "philly": run times from the empirical Philly run-time distribution (83,154 jobs, shipped as a
  table of 211 quantiles, 201 evenly spaced plus 10 in the heavy top 1%, and sampled by inverse
  CDF with log-linear interpolation between quantiles); GPU counts from the Philly GPU mix of
  Gavel's re-sampled Philly traces.
- "llm": calibrated on Shanghai AI Lab's Kalos cluster (AcmeTrace, NSDI'24,
  `cluster_summary.csv`): 26.77 GPUs a job on average, median 1, at most 1,024; run time median
  124 s, mean 1,260 s, at most 625,740 s. GPUs: a mixture of small jobs (1, 2 or 4 GPUs with
  probabilities 0.8, 0.1, 0.1) and gangs of 8, 16, ..., 1024 GPUs, each doubling 0.8 times as
  likely as the one before (mean gang 134.5 GPUs); the gang share g is solved in closed form,
  g = (26.77 - mean_small) / (mean_gang - mean_small) = 0.19, so the expected mean is exactly
  26.77 and the median stays 1. Run times: a log-normal with median 124 s and mean 1,260 s
  (sigma = sqrt(2 ln(1260/124)) = 2.15), clipped to [1 s, 625,740 s], drawn independently of size.
- "mixed": each job is a "philly" job or an "llm" job with equal probability.

Arrivals are a Poisson process scaled so that the offered load, sum(gpus * duration) /
(fleet_gpus * horizon) with the horizon the last arrival time, equals `load` for the sampled
jobs: n Poisson arrivals conditioned on the last one falling at the horizon. Gang sizes are
capped at `fleet_gpus` so every job fits. Tenants t0..t7 are drawn Zipf-like (weight 1/(k+1)) so
fair-share has something to do. Everything comes from numpy's default_rng(seed): one seed, one
trace.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from importlib import resources

import numpy as np

from neocloud.errors import NeocloudError
from neocloud.model.job import Job
from neocloud.sim.trace import Trace, TraceJob

PROFILES = ("philly", "llm", "mixed")

# Jobs per GPU count in Gavel's re-sampled Philly traces, counted over all 15 files of
# ../shared/traces/philly-gavel/seed0/*.trace (15,264 jobs; stanford-futuredata/gavel
# scheduler/traces/msr/seed=0). Mean 2.76 GPUs a job, median 1, max 64.
PHILLY_GPU_COUNTS = {
    1: 10480,
    2: 463,
    4: 2044,
    7: 2,
    8: 1916,
    12: 6,
    16: 255,
    20: 1,
    24: 5,
    32: 91,
    64: 1,
}
_PHILLY_TOTAL = sum(PHILLY_GPU_COUNTS.values())
PHILLY_GPU_PROBS = {g: n / _PHILLY_TOTAL for g, n in PHILLY_GPU_COUNTS.items()}

# Kalos (AcmeTrace cluster_summary.csv): the targets of the "llm" profile.
KALOS = {
    "mean_gpus": 26.77,
    "median_gpus": 1.0,
    "max_gpus": 1024.0,
    "median_runtime_s": 124.0,
    "mean_runtime_s": 1259.689,
    "max_runtime_s": 625740.0,
}
LLM_SMALL = {1: 0.8, 2: 0.1, 4: 0.1}  # GPUs -> share among the small jobs
LLM_GANG_DECAY = 0.8  # each doubling of gang size is this much as likely as the one before
LLM_GANGS = tuple(8 * 2**k for k in range(8))  # 8 .. 1024


def _llm_gpu_probs() -> dict[int, float]:
    """The "llm" GPU mix, with the gang share solved so the mean is Kalos' 26.77 GPUs."""
    small_mean = sum(g * p for g, p in LLM_SMALL.items())
    weights = np.array([LLM_GANG_DECAY**k for k in range(len(LLM_GANGS))])
    weights /= weights.sum()
    gang_mean = float(np.dot(LLM_GANGS, weights))
    share = (KALOS["mean_gpus"] - small_mean) / (gang_mean - small_mean)
    probs = {g: (1 - share) * p for g, p in LLM_SMALL.items()}
    probs.update({g: share * float(w) for g, w in zip(LLM_GANGS, weights, strict=True)})
    return probs


LLM_GPU_PROBS = _llm_gpu_probs()
_LLM_MU = math.log(KALOS["median_runtime_s"])
_LLM_SIGMA = math.sqrt(2 * math.log(KALOS["mean_runtime_s"] / KALOS["median_runtime_s"]))

TENANTS = tuple(f"t{k}" for k in range(8))
_TENANT_P = np.array([1 / (k + 1) for k in range(len(TENANTS))])
_TENANT_P /= _TENANT_P.sum()


@lru_cache(maxsize=1)
def philly_runtime_table() -> dict[str, object]:
    """The shipped Philly run-time quantile table (see bench/make_runtime_quantiles.py)."""
    text = resources.files("neocloud").joinpath("data/philly_runtime_quantiles.json").read_text()
    table: dict[str, object] = json.loads(text)
    return table


def _philly_runtimes(rng: np.random.Generator, n: int) -> np.ndarray:
    """Inverse-CDF samples, interpolating log(run time) linearly between quantiles."""
    table = philly_runtime_table()
    probs = np.asarray(table["probabilities"], dtype=float)
    log_q = np.log(np.asarray(table["quantiles_s"], dtype=float))
    samples: np.ndarray = np.exp(np.interp(rng.random(n), probs, log_q))
    return samples


def _gpus(rng: np.random.Generator, probs: dict[int, float], n: int) -> np.ndarray:
    values = np.fromiter(probs, dtype=float)
    p = np.fromiter(probs.values(), dtype=float)
    return rng.choice(values, size=n, p=p / p.sum())


def _llm_runtimes(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.lognormal(_LLM_MU, _LLM_SIGMA, size=n)
    return np.clip(x, 1.0, KALOS["max_runtime_s"])


def synthesize(
    n_jobs: int,
    *,
    seed: int,
    profile: str = "philly",
    fleet_gpus: int = 10_000,
    load: float = 0.8,
    gpus_per_node: int = 8,
) -> Trace:
    """`n_jobs` jobs of `profile` arriving so that they offer `load` of `fleet_gpus`."""
    if profile not in PROFILES:
        raise NeocloudError(
            f"unknown synthetic profile {profile!r}; use one of {', '.join(PROFILES)}"
        )
    if n_jobs < 0 or fleet_gpus < 1 or gpus_per_node < 1 or not load > 0:
        raise NeocloudError(
            "synthesize needs n_jobs >= 0, fleet_gpus >= 1, gpus_per_node >= 1 and load > 0; "
            f"got n_jobs={n_jobs}, fleet_gpus={fleet_gpus}, gpus_per_node={gpus_per_node}, "
            f"load={load}"
        )
    rng = np.random.default_rng(seed)
    n = n_jobs
    # Draw both families for every job, always in the same order: a seed fixes the trace.
    philly_gpus = _gpus(rng, PHILLY_GPU_PROBS, n)
    philly_runs = _philly_runtimes(rng, n)
    llm_gpus = _gpus(rng, LLM_GPU_PROBS, n)
    llm_runs = _llm_runtimes(rng, n)
    if profile == "philly":
        is_llm = np.zeros(n, dtype=bool)
    elif profile == "llm":
        is_llm = np.ones(n, dtype=bool)
    else:
        is_llm = rng.random(n) < 0.5
    gpus = np.minimum(np.where(is_llm, llm_gpus, philly_gpus), fleet_gpus)
    durations = np.maximum(np.where(is_llm, llm_runs, philly_runs), 1.0)
    tenants = rng.choice(len(TENANTS), size=n, p=_TENANT_P)
    gaps = rng.exponential(size=n)
    if n:
        horizon = float(np.dot(gpus, durations)) / (fleet_gpus * load)
        arrivals = np.cumsum(gaps)
        arrivals *= horizon / arrivals[-1]
    else:
        arrivals = gaps

    jobs: list[TraceJob] = []
    names = ("philly", "llm")
    for i, (g, d, t, a, llm) in enumerate(
        zip(
            gpus.tolist(),
            durations.tolist(),
            tenants.tolist(),
            arrivals.tolist(),
            is_llm.tolist(),
            strict=True,
        )
    ):
        job = Job(
            id=f"{profile}-{i}",
            gpus=g,
            gpus_per_node=gpus_per_node if g > gpus_per_node else None,
            tenant=TENANTS[t],
            submit_s=a,
            name=names[llm],
        )
        jobs.append(TraceJob(job=job, duration_s=d))
    return Trace(name=f"synth-{profile}-seed{seed}", jobs=jobs)


def offered_load(trace: Trace, fleet_gpus: int) -> float:
    """sum(gpus * duration) / (fleet_gpus * last arrival): the load a trace offers a fleet."""
    if not trace.jobs:
        return 0.0
    work = sum(tj.job.gpus * tj.duration_s for tj in trace.jobs)
    horizon = max(tj.job.submit_s for tj in trace.jobs)
    return work / (fleet_gpus * horizon) if horizon > 0 else math.inf


def _targets(profile: str) -> dict[str, float | None]:
    """Published figures; None where the source gives none (Kalos has no run-time quantiles)."""
    table = philly_runtime_table()
    quantile = dict(zip(table["probabilities"], table["quantiles_s"], strict=True))  # type: ignore[call-overload]
    philly: dict[str, float | None] = {
        "mean_gpus": sum(g * p for g, p in PHILLY_GPU_PROBS.items()),
        "median_gpus": 1.0,
        "max_gpus": float(max(PHILLY_GPU_COUNTS)),
        "median_runtime_s": float(table["median_s"]),  # type: ignore[arg-type]
        "mean_runtime_s": float(table["mean_s"]),  # type: ignore[arg-type]
        "p10_runtime_s": quantile[0.1],
        "p90_runtime_s": quantile[0.9],
        "p99_runtime_s": quantile[0.99],
    }
    llm: dict[str, float | None] = {k: KALOS.get(k) for k in philly}
    if profile == "philly":
        return philly
    if profile == "llm":
        return llm
    blend = dict.fromkeys(philly)  # a 50/50 blend: means blend, quantiles do not
    blend.update(median_gpus=1.0, max_gpus=1024.0)
    for k in ("mean_gpus", "mean_runtime_s"):
        blend[k] = (philly[k] + llm[k]) / 2  # type: ignore[operator]
    return blend


def calibration(
    profile: str, *, n_jobs: int = 100_000, seed: int = 0, fleet_gpus: int = 10_000
) -> dict[str, object]:
    """Target statistics of a profile beside those of a generated trace, for the docs."""
    trace = synthesize(n_jobs, seed=seed, profile=profile, fleet_gpus=fleet_gpus)
    gpus = np.array([tj.job.gpus for tj in trace.jobs])
    runs = np.array([tj.duration_s for tj in trace.jobs])
    p10, p50, p90, p99 = np.percentile(runs, [10, 50, 90, 99])
    return {
        "profile": profile,
        "jobs": n_jobs,
        "seed": seed,
        "target": _targets(profile),
        "achieved": {
            "mean_gpus": float(gpus.mean()),
            "median_gpus": float(np.median(gpus)),
            "max_gpus": float(gpus.max()),
            "median_runtime_s": float(p50),
            "mean_runtime_s": float(runs.mean()),
            "p10_runtime_s": float(p10),
            "p90_runtime_s": float(p90),
            "p99_runtime_s": float(p99),
            "offered_load": offered_load(trace, fleet_gpus),
        },
    }
