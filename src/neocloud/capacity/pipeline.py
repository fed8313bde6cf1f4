"""The buildout pipeline: sites, projects and their phases, the risks that delay them.

Time is in days from the plan's `as_of` date. A project goes live when its last phase ends; a
phase starts when it is planned to and when the phases (and projects) it depends on have ended,
and takes its planned length plus whatever delay befalls it. Power becomes GPUs through the
catalog: whole systems (a GB200 NVL72 rack, an 8-GPU server) at their power, plus the network and
storage overhead, within a project's IT megawatts.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field

from neocloud.errors import NeocloudError
from neocloud.model.catalog import GpuType, gpu_type

PHASES = ("shell", "power", "cooling", "hardware", "burn_in")  # in the order a build usually runs
DEFAULT_AFTER = {"cooling": ("shell", "power"), "hardware": ("cooling",), "burn_in": ("hardware",)}


@dataclass(frozen=True, slots=True)
class Triangular:
    """A delay in weeks: lowest, likeliest, highest."""

    low: float
    mode: float
    high: float


@dataclass(frozen=True, slots=True)
class Phase:
    name: str
    start: float  # planned, days from as_of
    end: float
    after: tuple[str, ...]  # phases of the same project that must end first


@dataclass(frozen=True, slots=True)
class Project:
    name: str
    site: str
    mw: float  # IT megawatts it brings live
    gpu: str
    phases: tuple[Phase, ...]
    after: tuple[str, ...] = ()  # projects that must be live before its first phase starts
    risks: tuple[str, ...] | None = None  # named risks it is exposed to (None: all)

    @property
    def planned_live(self) -> float:
        return max(p.end for p in self.phases)


@dataclass(frozen=True, slots=True)
class Site:
    name: str
    kind: str  # owned or colocation
    pue: float
    live_mw: float = 0.0  # IT megawatts live at as_of
    gpu: str = "H100-SXM"  # what the live megawatts run


@dataclass(frozen=True, slots=True)
class Risk:
    """A named factor (energy, water, labour, a shell builder, equipment, recession) that, when it
    strikes in a scenario, delays every exposed project's listed phases by one shared draw."""

    name: str
    probability: float
    phases: tuple[str, ...]
    delay: Triangular
    spread: float = 0.5  # each project's delay is the shared draw times U(1 - spread, 1 + spread)


@dataclass(frozen=True, slots=True)
class Contract:
    customer: str
    mw: float  # IT megawatts owed from `start`
    start: float  # days from as_of
    end: float
    usd_per_mw_year: float


@dataclass(frozen=True, slots=True)
class Actual:
    """A figure reported later, to hold the plan against (a backtest)."""

    day: float
    mw: float
    source: str = ""


@dataclass(frozen=True, slots=True)
class Finance:
    gpu_capex: dict[str, float] = field(default_factory=dict)  # dollars per GPU installed, by type
    facility_capex_per_mw: float = 10e6  # owned sites only; colocation pays rent instead
    debt_share: float = 0.7
    debt_rate: float = 0.09  # a year
    debt_years: float = 5.0  # straight-line amortisation
    ebitda_margin: float = 0.6  # of contract revenue, what is left to service debt


@dataclass(frozen=True, slots=True)
class Pipeline:
    as_of: dt.date
    horizon: float  # days
    target_mw: float
    target_by: float
    overhead: float  # network and storage power, as a share on top of the GPU systems
    sites: tuple[Site, ...]
    projects: tuple[Project, ...]
    phase_delays: dict[str, Triangular]
    risks: tuple[Risk, ...]
    contracts: tuple[Contract, ...] = ()
    finance: Finance = field(default_factory=Finance)
    actuals: tuple[Actual, ...] = ()

    @property
    def live_mw(self) -> float:
        return sum(s.live_mw for s in self.sites)

    def day(self, when: dt.date) -> float:
        return float((when - self.as_of).days)

    def date(self, day: float) -> dt.date:
        return self.as_of + dt.timedelta(days=int(math.floor(day)))


def unit(gpu: GpuType) -> tuple[int, float]:
    """The smallest whole thing that is installed, in GPUs and kW: a server, or a rack-scale NVLink
    domain (a GB200 NVL72 rack of 18 four-GPU trays)."""
    gpus = max(gpu.gpus_per_system, gpu.nvlink_domain)
    return gpus, gpu.system_kw * gpus / gpu.gpus_per_system


def gpus_for_mw(mw: float, gpu_name: str, overhead: float) -> int:
    """GPUs that `mw` of IT power holds: whole units, each drawing its power plus the overhead."""
    gpus, kw = unit(gpu_type(gpu_name))
    if kw <= 0:
        raise NeocloudError(f"GPU type {gpu_name!r} has no published power; it cannot be planned in MW")
    return int(mw * 1000 // (kw * (1 + overhead))) * gpus


def facility_mw(it_mw: float, pue: float) -> float:
    """Power at the meter for `it_mw` at the racks."""
    return it_mw * pue


def check(pipeline: Pipeline) -> None:
    """Raise NeocloudError naming what to fix: unknown sites or projects, and cycles in dependencies."""
    sites = {s.name for s in pipeline.sites}
    names = [p.name for p in pipeline.projects]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise NeocloudError(f"pipeline: project names must be unique; repeated: {', '.join(dupes)}")
    known = set(names)
    for p in pipeline.projects:
        if p.site not in sites:
            raise NeocloudError(f"pipeline: project {p.name!r}: unknown site {p.site!r}; sites: {', '.join(sorted(sites))}")
        if p.planned_live <= 0:
            raise NeocloudError(f"pipeline: project {p.name!r} is planned live on or before as_of; count its MW "
                                f"in its site's live_mw instead")
        for other in p.after:
            if other not in known:
                raise NeocloudError(f"pipeline: project {p.name!r}: after {other!r}, which is no project")
        for risk in p.risks or ():
            if risk not in {r.name for r in pipeline.risks}:
                raise NeocloudError(f"pipeline: project {p.name!r}: unknown risk {risk!r}")
    order(pipeline)


def dependencies(pipeline: Pipeline) -> dict[tuple[int, int], list[tuple[int, int]]]:
    """What each (project, phase) waits for: phases of its own project, and, for a phase that waits
    for none of those, every phase of each project it comes after (that project going live)."""
    index = {p.name: i for i, p in enumerate(pipeline.projects)}
    out = {}
    for i, p in enumerate(pipeline.projects):
        phase_at = {ph.name: k for k, ph in enumerate(p.phases)}
        for k, ph in enumerate(p.phases):
            before = [(i, phase_at[a]) for a in ph.after]
            if not ph.after:
                before += [(index[o], j) for o in p.after for j in range(len(pipeline.projects[index[o]].phases))]
            out[(i, k)] = before
    return out


def order(pipeline: Pipeline) -> list[tuple[int, int]]:
    """Every (project, phase) after all it waits for; a cycle is an error that names it."""
    deps = dependencies(pipeline)
    done: list[tuple[int, int]] = []
    state: dict[tuple[int, int], int] = {}  # 1: on the current path, 2: placed

    def name(node: tuple[int, int]) -> str:
        project = pipeline.projects[node[0]]
        return f"{project.name}.{project.phases[node[1]].name}"

    for root in deps:
        if state.get(root):
            continue
        state[root] = 1
        stack = [(root, iter(deps[root]))]
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                stack.pop()
                state[node] = 2
                done.append(node)
            elif state.get(nxt) == 1:
                path = [n for n, _ in stack]
                cycle = [*path[path.index(nxt):], nxt]
                raise NeocloudError("pipeline: dependencies form a cycle: " + " -> ".join(map(name, cycle)))
            elif not state.get(nxt):
                state[nxt] = 1
                stack.append((nxt, iter(deps[nxt])))
    return done
