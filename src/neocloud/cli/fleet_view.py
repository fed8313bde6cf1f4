"""`neocloud fleet show`: the fleet at a glance, from megawatts down to GPUs.

Only rendering lives here; every figure comes from the `Fleet` and the GPU catalog.
Power is the catalog's full-load system power, so "drawn" is what the hardware would pull
flat out: IT power at the racks, and that times PUE at the facility meter.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from rich.console import Group
from rich.table import Table
from rich.text import Text

from neocloud.model.catalog import GpuType
from neocloud.model.fleet import Fleet

_DASH = "—"


def fleet_summary(fleet: Fleet, max_leaf_rows: int = 32) -> Group:
    """Sites, fabrics (and their leaves when there are few), GPUs by type, and totals."""
    tables: list[Table | Text] = [_sites(fleet), _fabrics(fleet)]
    if len(fleet.leaves) <= max_leaf_rows:
        tables.append(_leaves(fleet))
    else:
        tables.append(Text(f"({len(fleet.leaves)} leaves: per-leaf table omitted)", style="dim"))
    tables += [_gpu_types(fleet), _totals(fleet)]
    return Group(*tables)


def _site_index(fleet: Fleet) -> list[int]:
    """Site position of every fabric: Fleet.site_of scans the site list once per node."""
    by_name = {s.name: i for i, s in enumerate(fleet.sites)}
    return [by_name[f.site] for f in fleet.fabrics]


def _site_load(fleet: Fleet) -> tuple[Counter[int], Counter[int], defaultdict[int, float]]:
    """Nodes, GPUs and IT kW per site index."""
    fabric_site = _site_index(fleet)
    nodes: Counter[int] = Counter()
    gpus: Counter[int] = Counter()
    kw: defaultdict[int, float] = defaultdict(float)
    for n in fleet.nodes:
        s = fabric_site[fleet.leaves[n.leaf].fabric]
        nodes[s] += 1
        gpus[s] += n.gpus
        kw[s] += n.it_kw
    return nodes, gpus, kw


def _mw(value: float) -> str:
    return f"{value:,.2f}" if value else _DASH


def _power(kw: float) -> str:
    return f"{kw / 1000:,.2f} MW" if kw >= 1000 else f"{kw:,.1f} kW"


def _share(used_kw: float, capacity_mw: float) -> Text:
    """Share of the site's IT capacity the hardware draws; red when it does not fit."""
    if not capacity_mw:
        return Text(_DASH)
    share = used_kw / (capacity_mw * 1000)
    return Text(f"{share:.0%}", style="bold red" if share > 1 else "")


def _sites(fleet: Fleet) -> Table:
    table = Table(title=f"Fleet {fleet.name!r}: sites", title_justify="left")
    for col in ("Site", "Kind"):
        table.add_column(col)
    for col in ("IT MW", "PUE", "Nodes", "GPUs", "IT kW drawn", "Facility kW", "Of IT MW"):
        table.add_column(col, justify="right")
    nodes, gpus, kw = _site_load(fleet)
    for i, s in enumerate(fleet.sites):
        table.add_row(
            s.name,
            s.kind,
            _mw(s.it_mw),
            f"{s.pue:.2f}",
            f"{nodes[i]:,}",
            f"{gpus[i]:,}",
            f"{kw[i]:,.1f}",
            f"{kw[i] * s.pue:,.1f}",
            _share(kw[i], s.it_mw),
        )
    return table


def _fabrics(fleet: Fleet) -> Table:
    table = Table(title="Fabrics", title_justify="left")
    for col in ("Fabric", "Site"):
        table.add_column(col)
    for col in ("Leaves", "Nodes", "Nodes/leaf", "GPUs", "NVLink domains"):
        table.add_column(col, justify="right")
    per_leaf = Counter(n.leaf for n in fleet.nodes)
    gpus: Counter[int] = Counter()
    domains: defaultdict[int, set[str]] = defaultdict(set)
    for n in fleet.nodes:
        f = fleet.leaves[n.leaf].fabric
        gpus[f] += n.gpus
        if n.nvlink_domain:
            domains[f].add(n.nvlink_domain)
    for fi, fabric in enumerate(fleet.fabrics):
        sizes = [per_leaf[li] for li, leaf in enumerate(fleet.leaves) if leaf.fabric == fi]
        spread = _DASH
        if sizes:
            lo, hi = min(sizes), max(sizes)
            spread = f"{lo:,}" if lo == hi else f"{lo:,}-{hi:,}"
        table.add_row(
            fabric.name,
            fabric.site,
            f"{len(sizes):,}",
            f"{sum(sizes):,}",
            spread,
            f"{gpus[fi]:,}",
            f"{len(domains[fi]):,}" if domains[fi] else _DASH,
        )
    return table


def _leaves(fleet: Fleet) -> Table:
    table = Table(title="Leaves", title_justify="left")
    for col in ("Leaf", "Fabric"):
        table.add_column(col)
    for col in ("Nodes", "GPUs"):
        table.add_column(col, justify="right")
    table.add_column("GPU types")
    nodes: Counter[int] = Counter()
    gpus: Counter[int] = Counter()
    types: defaultdict[int, Counter[str]] = defaultdict(Counter)
    for n in fleet.nodes:
        nodes[n.leaf] += 1
        gpus[n.leaf] += n.gpus
        if n.gpu is not None and n.gpus:
            types[n.leaf][n.gpu.name] += n.gpus
    for li, leaf in enumerate(fleet.leaves):
        mix = ", ".join(f"{c:,} {t}" for t, c in types[li].most_common()) or _DASH
        table.add_row(
            leaf.name, fleet.fabrics[leaf.fabric].name, f"{nodes[li]:,}", f"{gpus[li]:,}", mix
        )
    return table


def _gpu_types(fleet: Fleet) -> Table:
    table = Table(title="GPUs by type", title_justify="left")
    table.add_column("Type")
    for col in ("Nodes", "GPUs", "Memory GB", "Dense PFLOPS", "IT kW"):
        table.add_column(col, justify="right")
    nodes: Counter[str] = Counter()
    kw: defaultdict[str, float] = defaultdict(float)
    catalog: dict[str, GpuType] = {}
    for n in fleet.nodes:
        if n.gpu is not None and n.gpus:
            nodes[n.gpu.name] += 1
            kw[n.gpu.name] += n.it_kw
            catalog[n.gpu.name] = n.gpu
    for name, count in fleet.gpus_by_type().most_common():
        t = catalog[name]
        pflops = f"{t.dense_tflops * count / 1000:,.1f}" if t.dense_tflops is not None else _DASH
        memory = f"{t.memory_gb * count:,}" if t.memory_gb else _DASH
        table.add_row(name, f"{nodes[name]:,}", f"{count:,}", memory, pflops, f"{kw[name]:,.1f}")
    cpu_only = sum(1 for n in fleet.nodes if n.gpu is None or not n.gpus)
    if cpu_only:
        table.add_row("(no GPU)", f"{cpu_only:,}", "0", _DASH, _DASH, "0.0")
    return table


def _totals(fleet: Fleet) -> Table:
    table = Table(title="Totals", title_justify="left", show_header=False)
    table.add_column("What")
    table.add_column("Value", justify="right")
    _, _, kw = _site_load(fleet)
    it_kw = fleet.it_power_kw()
    facility_kw = sum(kw[i] * s.pue for i, s in enumerate(fleet.sites))
    capacity_mw = sum(s.it_mw for s in fleet.sites)
    table.add_row("Nodes", f"{len(fleet.nodes):,}")
    table.add_row("GPUs", f"{fleet.total_gpus:,}")
    table.add_row("IT power drawn (full load)", _power(it_kw))
    table.add_row("Facility power (x PUE)", _power(facility_kw))
    table.add_row("Sites' IT capacity", f"{capacity_mw:,.2f} MW" if capacity_mw else _DASH)
    if capacity_mw:
        tracked_kw = sum(kw[i] for i, s in enumerate(fleet.sites) if s.it_mw)
        table.add_row("Drawn / capacity", _share(tracked_kw, capacity_mw))
    unknown = sorted({n.gpu.name for n in fleet.nodes if n.gpu and not n.gpu.system_kw})
    if unknown:
        table.add_row("Power not published for", ", ".join(unknown))
    return table
