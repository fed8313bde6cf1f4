"""The Alibaba openb node list (clusterdata, GPU 2023) as a fleet.

The CSV has columns `sn,cpu_milli,memory_mib,gpu,model` and no topology, so every node goes
into one site, one fabric and one leaf named "openb". CPU and memory are kept because openb
pods ask for them and a node can run out of CPU before it runs out of GPU.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TextIO

from neocloud.errors import ConfigError, NeocloudError
from neocloud.model.catalog import GpuType, gpu_type
from neocloud.model.fleet import Fabric, Fleet, Leaf, Node, Site

COLUMNS = ("sn", "cpu_milli", "memory_mib", "gpu", "model")
_NO_MODEL = ("", "nan", "none")  # how GPU-less nodes spell their model in the published files


def load_openb_nodes(path: str | Path) -> Fleet:
    """Read an openb node list; nodes with 0 GPUs get gpu=None, models resolve via the catalog."""
    source = str(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return _parse(f, source)
    except FileNotFoundError:
        raise ConfigError(source, "", "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(source, "", f"cannot read the file: {exc}") from None
    except csv.Error as exc:
        raise ConfigError(source, "", f"invalid CSV: {exc}") from None


def _parse(f: TextIO, source: str) -> Fleet:
    rows = csv.reader(f)
    header = [h.strip() for h in next(rows, [])]
    if tuple(header) != COLUMNS:
        raise ConfigError(
            source,
            "line 1",
            f"expected the header {','.join(COLUMNS)!r}, got {','.join(header)!r}",
        )
    fleet = Fleet(
        name="openb",
        sites=[Site("openb", "owned", 0.0, 1.3)],
        fabrics=[Fabric("openb", "openb")],
        leaves=[Leaf("openb-l0", 0)],
    )
    seen: dict[str, int] = {}
    for row in rows:
        line = rows.line_num
        if not row or all(not cell.strip() for cell in row):
            continue
        where = f"line {line}"
        if len(row) != len(COLUMNS):
            raise ConfigError(source, where, f"expected {len(COLUMNS)} fields, got {len(row)}")
        sn, cpu, mem, gpus_text, model = (cell.strip() for cell in row)
        if not sn:
            raise ConfigError(source, where, "sn (the node name) is empty")
        if sn in seen:
            raise ConfigError(source, where, f"duplicate node sn {sn!r} (first on line {seen[sn]})")
        seen[sn] = line
        gpus = _count(gpus_text, "gpu", source, where)
        fleet.nodes.append(
            Node(
                id=len(fleet.nodes),
                name=sn,
                gpu=_model(model, gpus, source, where),
                gpus=gpus,
                leaf=0,
                cpu_milli=_count(cpu, "cpu_milli", source, where),
                memory_mib=_count(mem, "memory_mib", source, where),
            )
        )
    if not fleet.nodes:
        raise ConfigError(source, "", "the node list has a header but no nodes")
    return fleet


def _count(text: str, column: str, source: str, where: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ConfigError(source, where, f"{column} must be a whole number >= 0, got {text!r}")
    return value


def _model(name: str, gpus: int, source: str, where: str) -> GpuType | None:
    if gpus == 0:
        return None
    if name.lower() in _NO_MODEL:
        raise ConfigError(source, where, f"model is empty but the node has {gpus} GPUs")
    try:
        return gpu_type(name)
    except NeocloudError as exc:
        raise ConfigError(source, where, str(exc)) from None
