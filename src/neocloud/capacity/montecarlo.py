"""Monte Carlo of buildout delays, vectorised over scenarios.

A phase ends when planned, pushed back by its own delay and by whatever the phases it waits for
slipped beyond the slack the plan left it (a plan with no delay comes out as planned). Each scenario draws a delay for every phase of every project (triangular, in weeks, scaled to the
part of the phase still to do), and for each named risk whether it strikes and how hard. A risk
that strikes hits every exposed project in that scenario at once (a correlated shock: one late
shell builder, one grid queue, one recession), each project taking the shared draw times its own
factor; `correlated=False` gives every project its own independent draws of the same risks, the
baseline that shows what the correlation costs. Phases are walked once, in dependency order, each
as one numpy operation over all scenarios.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from neocloud.capacity.pipeline import Pipeline, Triangular, dependencies, order

WEEK = 7.0


@dataclass(frozen=True, slots=True)
class Scenarios:
    """Per scenario and project, in days from as_of: when it went live, when its hardware arrived
    and when its building was ready (the two moments capex is paid)."""

    live: np.ndarray  # (runs, projects)
    hardware: np.ndarray
    building: np.ndarray
    seed: int
    correlated: bool

    @property
    def runs(self) -> int:
        return int(self.live.shape[0])


def _draw(rng: np.random.Generator, t: Triangular, size: int) -> np.ndarray:
    if t.high <= t.low:
        return np.full(size, t.low * WEEK)
    return rng.triangular(t.low, min(max(t.mode, t.low), t.high), t.high, size) * WEEK


def simulate(pipeline: Pipeline, runs: int = 10_000, seed: int = 0, correlated: bool = True,
             progress: Callable[[int, int], None] | None = None) -> Scenarios:
    """Play `runs` scenarios of the pipeline; the same seed gives the same scenarios."""
    rng = np.random.default_rng(seed)
    projects = pipeline.projects
    n = len(projects)
    exposed = [[r for r in pipeline.risks if p.risks is None or r.name in p.risks] for p in projects]
    # Shared draws: whether each risk strikes, and how hard, once per scenario.
    strikes = {r.name: rng.random(runs) < r.probability for r in pipeline.risks}
    severity = {r.name: _draw(rng, r.delay, runs) for r in pipeline.risks}
    shock: dict[tuple[int, str], np.ndarray] = {}  # (project, phase) -> days of risk delay
    for i, p in enumerate(projects):
        for r in exposed[i]:
            if correlated:
                hit = strikes[r.name] * severity[r.name]
            else:
                hit = (rng.random(runs) < r.probability) * _draw(rng, r.delay, runs)
            hit = hit * rng.uniform(1 - r.spread, 1 + r.spread, runs)
            for phase in r.phases:
                shock[(i, phase)] = shock.get((i, phase), 0.0) + hit
    deps = dependencies(pipeline)
    waiting = {node: 0 for node in deps}  # phases still to read each phase's end: freed when none
    for needs in deps.values():
        for d in needs:
            waiting[d] += 1
    end: dict[tuple[int, int], np.ndarray] = {}
    live = np.zeros((runs, n), dtype=np.float32)
    hardware = np.zeros((runs, n), dtype=np.float32)
    building = np.zeros((runs, n), dtype=np.float32)
    left = [len(p.phases) for p in projects]  # phases still to walk, per project
    finished = 0
    for i, k in order(pipeline):
        ph = projects[i].phases[k]
        slip = np.zeros(runs)  # what the phases it waits for slipped, beyond its slack in the plan
        for d in deps[(i, k)]:
            before = projects[d[0]].phases[d[1]]
            slack = max(ph.start - before.end, 0.0)
            slip = np.maximum(slip, end[d] - before.end - slack)
            waiting[d] -= 1
            if not waiting[d]:
                del end[d]
        if ph.end <= 0:  # done before the plan starts
            done = np.full(runs, ph.end)
        else:
            share = (ph.end - max(ph.start, 0.0)) / (ph.end - ph.start) if ph.end > ph.start else 1.0  # still to do
            delay = _draw(rng, pipeline.phase_delays[ph.name], runs) if ph.name in pipeline.phase_delays else 0.0
            done = ph.end + slip + (delay + shock.get((i, ph.name), 0.0)) * share
        if waiting[(i, k)]:
            end[(i, k)] = done
        live[:, i] = np.maximum(live[:, i], done)
        if ph.name == "hardware":
            hardware[:, i] = done
        if ph.name in ("shell", "cooling"):
            building[:, i] = np.maximum(building[:, i], done)
        left[i] -= 1
        if not left[i]:
            finished += 1
            if progress is not None:
                progress(finished, n)
    for i, p in enumerate(projects):  # a project without those phases pays when it goes live
        names = {ph.name for ph in p.phases}
        if "hardware" not in names:
            hardware[:, i] = live[:, i]
        if not names & {"shell", "cooling"}:
            building[:, i] = live[:, i]
    return Scenarios(live, hardware, building, seed, correlated)

