"""The YAML fleet file as pydantic models: validation at the edge, nothing else.

These models only check what one value can know about itself (ranges, GPU names, unknown keys);
cross-cutting rules (unique names, a non-empty fleet) and numbering live in the loader, which
turns a validated `FleetSpec` into the frozen dataclasses of `neocloud.model.fleet`.
Every pydantic error leaves this module as a `ConfigError` naming file, path and fix.
"""

from __future__ import annotations

import difflib
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from neocloud.errors import ConfigError, NeocloudError
from neocloud.model.catalog import gpu_type

MAX_GPUS_PER_NODE = 72  # one GB200 NVL72 rack seen as a single node is the largest sane shape
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_NAME_RULE = "use letters, digits, '.', '_' and '-', starting with a letter or digit"


class Strict(BaseModel):
    """Rejects unknown keys with a message that names the key and the keys allowed here."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            allowed = list(cls.model_fields)
            for key in data:
                if key not in allowed:
                    close = difflib.get_close_matches(str(key), allowed, n=1)
                    hint = f" (did you mean {close[0]!r}?)" if close else ""
                    raise ValueError(
                        f"unknown key {key!r}{hint}; allowed keys here: {', '.join(allowed)}"
                    )
        return data


def megawatts(field: str) -> AfterValidator:
    """IT megawatts: none or more (the message names the field)."""
    def check(value: float) -> float:
        if value < 0:
            raise ValueError(f"{field} must be >= 0 megawatts of IT power, got {value}")
        return value
    return AfterValidator(check)


def _pue(value: float) -> float:
    if value < 1:
        raise ValueError(f"pue must be at least 1.0 (facility power / IT power), got {value}")
    return value


PUE = Annotated[float, AfterValidator(_pue)]


def _check_name(value: str, what: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"{what} {value!r} is not a valid name; {_NAME_RULE}")
    return value


def known_gpu(value: str) -> str:
    """A catalog GPU type's own name; for pydantic, a ValueError that lists the known types."""
    try:
        return gpu_type(value).name
    except NeocloudError as exc:
        raise ValueError(str(exc)) from None


GpuTypeName = Annotated[str, AfterValidator(known_gpu)]


class _NodeShape(Strict):
    """What every node of a group shares: GPU model and count, CPU, memory, NVLink domains."""

    gpu: GpuTypeName
    gpus: int
    cpu_milli: int = 0
    memory_mib: int = 0
    nvlink_domain_size: int | None = None  # nodes per NVLink domain (18 for GB200 NVL72)

    @field_validator("gpus")
    @classmethod
    def _gpus_range(cls, value: int) -> int:
        if not 1 <= value <= MAX_GPUS_PER_NODE:
            raise ValueError(f"gpus must be 1-{MAX_GPUS_PER_NODE} (GPUs per node), got {value}")
        return value

    @field_validator("cpu_milli", "memory_mib")
    @classmethod
    def _not_negative(cls, value: int) -> int:
        if value < 0:
            raise ValueError(f"must be >= 0 (0 means not tracked), got {value}")
        return value

    @field_validator("nvlink_domain_size")
    @classmethod
    def _domain_size(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise ValueError(f"nvlink_domain_size must be at least 1 node, got {value}")
        return value

    def _check_domains(self, nodes: int, field: str) -> None:
        size = self.nvlink_domain_size
        if size is not None and nodes % size:
            raise ValueError(
                f"{field} ({nodes}) must be a multiple of nvlink_domain_size ({size}): "
                "NVLink domains are whole racks"
            )


class NodeGroupSpec(_NodeShape):
    """`count` identical nodes; named `<name_prefix><i>` or, by default, `<leaf>-n<i>`."""

    count: int
    name_prefix: str | None = None

    @field_validator("count")
    @classmethod
    def _count(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"count must be at least 1 node, got {value}")
        return value

    @field_validator("name_prefix")
    @classmethod
    def _prefix(cls, value: str | None) -> str | None:
        return None if value is None else _check_name(value, "name_prefix")

    @model_validator(mode="after")
    def _whole_domains(self) -> NodeGroupSpec:
        self._check_domains(self.count, "count")
        return self


class LeafSpec(Strict):
    name: str
    nodes: list[NodeGroupSpec]

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_name(value, "leaf name")


class CompactLeavesSpec(_NodeShape):
    """`count` leaves of `nodes_per_leaf` identical nodes, named `<fabric>-l<i>`."""

    count: int
    nodes_per_leaf: int

    @field_validator("count", "nodes_per_leaf")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be at least 1, got {value}")
        return value

    @model_validator(mode="after")
    def _whole_domains(self) -> CompactLeavesSpec:
        self._check_domains(self.nodes_per_leaf, "nodes_per_leaf")
        return self


def _leaves_form(value: Any) -> str | None:
    if isinstance(value, list):
        return "explicit"
    if isinstance(value, dict):
        return "compact"
    return None


_LEAVES_TAGS = ("explicit", "compact")
Leaves = Annotated[
    Annotated[list[LeafSpec], Tag("explicit")] | Annotated[CompactLeavesSpec, Tag("compact")],
    Discriminator(
        _leaves_form,
        custom_error_type="leaves_form",
        custom_error_message=(
            "leaves must be a list of leaves ({name, nodes}) or the compact mapping "
            "{count, nodes_per_leaf, gpu, gpus}"
        ),
    ),
]


class FabricSpec(Strict):
    name: str
    leaves: Leaves

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_name(value, "fabric name")


class SiteSpec(Strict):
    name: str
    kind: Literal["owned", "colocation"] = "owned"
    it_mw: Annotated[float, megawatts("it_mw")] = 0.0  # 0 means not tracked
    pue: PUE = 1.3
    fabrics: list[FabricSpec] = []

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_name(value, "site name")



class FleetSpec(Strict):
    name: str
    sites: list[SiteSpec]

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("fleet name must not be empty")
        return value


def parse_fleet_spec(data: dict[str, Any], source: str) -> FleetSpec:
    """Validate a fleet mapping, turning the first pydantic error (and a list of any others)
    into one ConfigError."""
    try:
        return FleetSpec.model_validate(data)
    except ValidationError as exc:
        raise config_error(exc, source) from None


def config_error(exc: ValidationError, source: str) -> ConfigError:
    errors = exc.errors(include_url=False)
    first, rest = errors[0], errors[1:]
    path, problem = _describe(first)
    if rest:
        more = "; ".join(f"{p or '(top)'}: {q}" for p, q in map(_describe, rest[:4]))
        problem += f" (also: {more}{'; ...' if len(rest) > 4 else ''})"
    return ConfigError(source, path, problem)


def _describe(error: Any) -> tuple[str, str]:
    """(path inside the file, problem) for one pydantic error."""
    loc = _strip_tags(tuple(error["loc"]))
    kind, got = error["type"], error.get("input")
    if kind in ("value_error", "assertion_error"):
        return format_loc(loc), str(error["ctx"]["error"])
    if kind == "missing":
        return format_loc(loc[:-1]), f"missing required key {loc[-1]!r}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return format_loc(loc), f"expected a mapping, got {_show(got)}"
    if kind == "list_type":
        return format_loc(loc), f"expected a list, got {_show(got)}"
    msg = error["msg"]
    if loc and isinstance(loc[-1], str) and msg.startswith("Input"):
        msg = loc[-1] + msg[len("Input") :]
    return format_loc(loc), f"{msg}, got {_show(got)}"


def _strip_tags(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """Drop the union tag pydantic puts after `leaves`: it is not a key in the file."""
    out: list[Any] = []
    for i, part in enumerate(loc):
        if part in _LEAVES_TAGS and i > 0 and loc[i - 1] == "leaves":
            continue
        out.append(part)
    return tuple(out)


def format_loc(loc: tuple[Any, ...]) -> str:
    """('sites', 0, 'fabrics', 1, 'leaves', 'gpus') -> 'sites[0].fabrics[1].leaves.gpus'."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
