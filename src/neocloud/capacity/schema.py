"""Pipeline files in (YAML, or the same mapping as an API body), `Pipeline` out; docs/capacity.md
describes the format. Every mistake is reported with its place in the file and what to fix."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ValidationError, field_validator, model_validator

from neocloud.capacity.pipeline import (
    DEFAULT_AFTER,
    PHASES,
    Actual,
    Contract,
    Finance,
    Phase,
    Pipeline,
    Project,
    Risk,
    Site,
    Triangular,
    check,
)
from neocloud.errors import ConfigError, NeocloudError
from neocloud.fleet.loader import read_yaml
from neocloud.fleet.schema import PUE, Strict, config_error, known_gpu, megawatts
from neocloud.model.catalog import gpu_type

MAX_YEARS = 10  # of horizon: a plan is weekly, and every week is a column of every scenario


def _weeks(value: Any) -> Any:
    """[low, likeliest, high] weeks, or one number for a fixed delay."""
    if isinstance(value, int | float):
        return [value, value, value]
    return value


class DelaySpec(Strict):
    weeks: tuple[float, float, float]

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, data: Any) -> Any:
        return {"weeks": _weeks(data)} if not isinstance(data, dict) else data

    @field_validator("weeks")
    @classmethod
    def _ordered(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        low, mode, high = value
        if not 0 <= low <= mode <= high:
            raise ValueError(f"a delay is [low, likeliest, high] weeks with 0 <= low <= likeliest <= high, got {list(value)}")
        return value


def _powered_gpu(value: str) -> str:
    name = known_gpu(value)
    if gpu_type(name).system_kw <= 0:
        raise ValueError(f"GPU type {value!r} has no published power per system; pick one that does")
    return name


GpuName = Annotated[str, AfterValidator(_powered_gpu)]  # a catalog type with a power: planned in MW


class SiteSpec(Strict):
    name: str
    kind: Literal["owned", "colocation"] = "owned"
    pue: PUE = 1.3
    live_mw: Annotated[float, megawatts("live_mw")] = 0.0
    gpu: GpuName = "H100-SXM"





class ProjectSpec(Strict):
    name: str
    site: str
    mw: float
    gpu: GpuName
    phases: dict[str, tuple[dt.date, dt.date]]
    after: list[str] = []
    risks: list[str] | None = None

    @field_validator("mw")
    @classmethod
    def _mw(cls, value: float) -> float:
        if value <= 0:
            raise ValueError(f"mw must be > 0 megawatts of IT power, got {value}")
        return value

    @field_validator("phases")
    @classmethod
    def _phases(cls, value: dict[str, tuple[dt.date, dt.date]]) -> dict[str, tuple[dt.date, dt.date]]:
        if not value:
            raise ValueError(f"a project needs at least one phase of: {', '.join(PHASES)}")
        for name, (start, end) in value.items():
            if name not in PHASES:
                raise ValueError(f"unknown phase {name!r}; phases are: {', '.join(PHASES)}")
            if end < start:
                raise ValueError(f"phase {name!r} ends ({end}) before it starts ({start})")
        return value


class RiskSpec(Strict):
    probability: float
    phases: list[str]
    delay: DelaySpec
    spread: float = 0.5

    @field_validator("probability")
    @classmethod
    def _p(cls, value: float) -> float:
        if not 0 <= value <= 1:
            raise ValueError(f"probability must be within 0-1, got {value}")
        return value

    @field_validator("phases")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        for name in value:
            if name not in PHASES:
                raise ValueError(f"unknown phase {name!r}; phases are: {', '.join(PHASES)}")
        return value

    @field_validator("spread")
    @classmethod
    def _spread(cls, value: float) -> float:
        if not 0 <= value <= 1:
            raise ValueError(f"spread must be within 0-1 (each project's share of the shared delay varies by +-spread), got {value}")
        return value


class TargetSpec(Strict):
    mw: float
    by: dt.date


class ContractSpec(Strict):
    customer: str
    mw: float
    start: dt.date
    end: dt.date
    usd_per_mw_year: float

    @model_validator(mode="after")
    def _sane(self) -> ContractSpec:
        if self.mw <= 0 or self.usd_per_mw_year < 0:
            raise ValueError("a contract needs mw > 0 and usd_per_mw_year >= 0")
        if self.end <= self.start:
            raise ValueError(f"contract for {self.customer!r} ends ({self.end}) before it starts ({self.start})")
        return self


class FinanceSpec(Strict):
    gpu_capex: dict[str, float] = {}
    facility_capex_per_mw: float = 10e6
    debt_share: float = 0.7
    debt_rate: float = 0.09
    debt_years: float = 5.0
    ebitda_margin: float = 0.6


class ActualSpec(Strict):
    date: dt.date
    mw: float
    source: str = ""


class PipelineSpec(Strict):
    as_of: dt.date
    horizon: dt.date
    target: TargetSpec
    overhead: float = 0.10
    sites: list[SiteSpec]
    projects: list[ProjectSpec]
    phase_delays: dict[str, DelaySpec] = {}
    risks: dict[str, RiskSpec] = {}
    contracts: list[ContractSpec] = []
    finance: FinanceSpec = FinanceSpec()
    actuals: list[ActualSpec] = []

    @model_validator(mode="after")
    def _dates(self) -> PipelineSpec:
        if not self.as_of < self.horizon <= self.as_of + dt.timedelta(days=366 * MAX_YEARS):
            raise ValueError(f"horizon ({self.horizon}) must come after as_of ({self.as_of}), "
                             f"by at most {MAX_YEARS} years")
        for name in self.phase_delays:
            if name not in PHASES:
                raise ValueError(f"phase_delays: unknown phase {name!r}; phases are: {', '.join(PHASES)}")
        return self


def load_pipeline(path: str | Path) -> Pipeline:
    path = Path(path)
    return pipeline_from_dict(read_yaml(path), str(path))


def pipeline_from_dict(data: Any, source: str = "<pipeline>") -> Pipeline:
    if not isinstance(data, dict):
        raise ConfigError(source, "", "a pipeline must be a mapping with as_of, horizon, target, sites and projects")
    try:
        spec = PipelineSpec.model_validate(data)
    except ValidationError as exc:
        raise config_error(exc, source) from None
    try:
        return _build(spec)
    except NeocloudError as exc:
        raise ConfigError(source, "", str(exc).removeprefix("pipeline: ")) from None


def _build(spec: PipelineSpec) -> Pipeline:
    def day(d: dt.date) -> float:
        return float((d - spec.as_of).days)

    projects = []
    for p in spec.projects:
        phases = []
        for name in (n for n in PHASES if n in p.phases):
            start, end = p.phases[name]
            after = tuple(a for a in DEFAULT_AFTER.get(name, ()) if a in p.phases)
            phases.append(Phase(name, day(start), day(end), after))
        projects.append(Project(p.name, p.site, p.mw, p.gpu, tuple(phases), tuple(p.after),
                                tuple(p.risks) if p.risks is not None else None))
    d = spec.finance
    pipeline = Pipeline(
        as_of=spec.as_of, horizon=day(spec.horizon), target_mw=spec.target.mw, target_by=day(spec.target.by),
        overhead=spec.overhead,
        sites=tuple(Site(s.name, s.kind, s.pue, s.live_mw, s.gpu) for s in spec.sites),
        projects=tuple(projects),
        phase_delays={k: Triangular(*v.weeks) for k, v in spec.phase_delays.items()},
        risks=tuple(Risk(k, r.probability, tuple(r.phases), Triangular(*r.delay.weeks), r.spread)
                    for k, r in spec.risks.items()),
        contracts=tuple(Contract(c.customer, c.mw, day(c.start), day(c.end), c.usd_per_mw_year) for c in spec.contracts),
        finance=Finance({gpu_type(k).name: v for k, v in d.gpu_capex.items()}, d.facility_capex_per_mw,
                        d.debt_share, d.debt_rate, d.debt_years, d.ebitda_margin),
        actuals=tuple(Actual(day(a.date), a.mw, a.source) for a in spec.actuals),
    )
    check(pipeline)
    return pipeline
