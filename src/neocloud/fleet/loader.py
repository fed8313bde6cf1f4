"""Fleet files in, `Fleet` out: the YAML fleet format (docs/fleet-format.md) and openb CSVs.

The loader owns what no single value can check: names unique across the fleet, dense numbering
(node ids 0..N-1 in file order, leaves and fabrics by index) and a fleet with at least one node.
"""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml

from neocloud.errors import ConfigError
from neocloud.fleet.openb import load_openb_nodes
from neocloud.fleet.schema import (
    CompactLeavesSpec,
    FleetSpec,
    LeafSpec,
    NodeGroupSpec,
    parse_fleet_spec,
)
from neocloud.model.catalog import gpu_type
from neocloud.model.fleet import Fabric, Fleet, Leaf, Node, Site

_DICT_SOURCE = "<dict>"


def load_fleet(path: str | Path) -> Fleet:
    """Load a fleet file, choosing the format by suffix: .yaml/.yml fleet, or .csv openb list."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return load_openb_nodes(path)
    if suffix not in (".yaml", ".yml"):
        raise ConfigError(
            str(path),
            "",
            f"unknown fleet file type {suffix or '(none)'!r}; use .yaml/.yml for a fleet file "
            "or .csv for an Alibaba openb node list",
        )
    return fleet_from_dict(read_yaml(path), str(path))


def fleet_from_dict(data: Any, source: str = _DICT_SOURCE) -> Fleet:
    """Build a fleet from an already-parsed mapping (a YAML document, a test, an API body)."""
    if not isinstance(data, dict):
        got = "an empty document" if data is None else f"a {type(data).__name__}"
        raise ConfigError(
            source, "", f"a fleet file must be a mapping with keys 'name' and 'sites', got {got}"
        )
    return _build(parse_fleet_spec(data, source), source)


def default_fleet() -> Fleet:
    """One node of 8 H100: what the local backend pretends to have when no GPU is present."""
    return Fleet(
        name="local",
        sites=[Site("local", "owned", 0.0, 1.3)],
        fabrics=[Fabric("local", "local")],
        leaves=[Leaf("local-l0", 0)],
        nodes=[Node(0, "local-0", gpu_type("H100-SXM"), 8, 0)],
    )


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping instead of keeping the last."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable):
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep)


class _NoAliasLoader(_UniqueKeyLoader):
    """For text from strangers: no aliases (`*name`), so a few hundred bytes cannot expand into
    gigabytes (the "billion laughs")."""

    # The stubs say `index: int`; PyYAML also passes a mapping value's key node. It is only passed on.
    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]  # PyYAML's stubs leave it untyped
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed here", event.start_mark)
        return super().compose_node(parent, index)


def read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), "", "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), "", f"cannot read the file: {exc}") from None
    return parse_yaml(text, str(path))


def parse_yaml(text: str, source: str, *, aliases: bool = True) -> Any:
    """YAML text as data, each mistake a ConfigError naming its line; `aliases` False for text
    from strangers (a form, a request)."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader if aliases else _NoAliasLoader)  # noqa: S506 - SafeLoaders
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        context = f"{exc.context}: " if exc.context else ""
        raise ConfigError(source, where, f"invalid YAML: {context}{exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, "", f"invalid YAML: {exc}") from None


class _Names:
    """First use of each name of one kind, so a duplicate can point at the original."""

    def __init__(self, kind: str, source: str, hint: str) -> None:
        self.kind, self.source, self.hint = kind, source, hint
        self.first: dict[str, str] = {}

    def claim(self, name: str, path: str) -> None:
        other = self.first.get(name)
        if other is not None:
            raise ConfigError(
                self.source,
                path,
                f"duplicate {self.kind} name {name!r} (first used at {other}); {self.hint}",
            )
        self.first[name] = path


def _build(spec: FleetSpec, source: str) -> Fleet:
    fleet = Fleet(name=spec.name)
    unique = "names must be unique across the fleet"
    sites = _Names("site", source, unique)
    fabrics = _Names("fabric", source, unique)
    leaves = _Names("leaf", source, unique)
    nodes = _Names("node", source, "give the node group a distinct name_prefix")
    for si, site in enumerate(spec.sites):
        site_path = f"sites[{si}]"
        sites.claim(site.name, f"{site_path}.name")
        fleet.sites.append(Site(site.name, site.kind, site.it_mw, site.pue))
        for fi, fabric in enumerate(site.fabrics):
            fabric_path = f"{site_path}.fabrics[{fi}]"
            fabrics.claim(fabric.name, f"{fabric_path}.name")
            fleet.fabrics.append(Fabric(fabric.name, site.name))
            for leaf, name_path, group_paths in _expand_leaves(
                fabric.name, fabric.leaves, fabric_path
            ):
                leaves.claim(leaf.name, name_path)
                fleet.leaves.append(Leaf(leaf.name, len(fleet.fabrics) - 1))
                _add_nodes(fleet, leaf, group_paths, nodes)
    if not fleet.nodes:
        raise ConfigError(
            source,
            "sites",
            "the fleet has no nodes; add a site with a fabric whose leaves hold node groups",
        )
    return fleet


def _expand_leaves(
    fabric: str, leaves: list[LeafSpec] | CompactLeavesSpec, fabric_path: str
) -> list[tuple[LeafSpec, str, list[str]]]:
    """Explicit leaves as written; the compact form as `count` leaves named `<fabric>-l<i>`.

    Returns (leaf, path of its name, path of each node group) so that errors point into the
    file as written, not into the expansion.
    """
    if isinstance(leaves, list):
        return [
            (
                leaf,
                f"{fabric_path}.leaves[{i}].name",
                [f"{fabric_path}.leaves[{i}].nodes[{g}]" for g in range(len(leaf.nodes))],
            )
            for i, leaf in enumerate(leaves)
        ]
    group = NodeGroupSpec(
        count=leaves.nodes_per_leaf,
        gpu=leaves.gpu,
        gpus=leaves.gpus,
        cpu_milli=leaves.cpu_milli,
        memory_mib=leaves.memory_mib,
        nvlink_domain_size=leaves.nvlink_domain_size,
    )
    path = f"{fabric_path}.leaves"
    return [
        (LeafSpec(name=f"{fabric}-l{i}", nodes=[group]), path, [path])
        for i in range(leaves.count)
    ]


def _add_nodes(fleet: Fleet, leaf: LeafSpec, group_paths: list[str], names: _Names) -> None:
    """Append a leaf's nodes: ids in file order, NVLink domains `<leaf>-nvl<k>` per leaf."""
    leaf_index = len(fleet.leaves) - 1
    position = 0  # node's place within the leaf, across its groups
    domains = 0  # NVLink domains already opened in this leaf
    for group, group_path in zip(leaf.nodes, group_paths, strict=True):
        gpu = gpu_type(group.gpu)
        size = group.nvlink_domain_size
        for j in range(group.count):
            if group.name_prefix is not None:
                name = f"{group.name_prefix}{j}"
            else:
                name = f"{leaf.name}-n{position}"
            names.claim(name, group_path)
            domain = f"{leaf.name}-nvl{domains + j // size}" if size else None
            fleet.nodes.append(
                Node(
                    id=len(fleet.nodes),
                    name=name,
                    gpu=gpu,
                    gpus=group.gpus,
                    leaf=leaf_index,
                    cpu_milli=group.cpu_milli,
                    memory_mib=group.memory_mib,
                    nvlink_domain=domain,
                )
            )
            position += 1
        if size:
            domains += group.count // size
