"""The YAML fleet format: example files, numbering, compact form, and every error message."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from neocloud.cli.fleet_view import fleet_summary
from neocloud.errors import ConfigError
from neocloud.fleet.loader import default_fleet, fleet_from_dict, load_fleet
from neocloud.model.fleet import Fleet

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "fleets"


def _check_topology(fleet: Fleet) -> None:
    """Dense ids, valid indices, leaves' nodes contiguous in file order, unique names."""
    assert [n.id for n in fleet.nodes] == list(range(len(fleet.nodes)))
    assert all(0 <= leaf.fabric < len(fleet.fabrics) for leaf in fleet.leaves)
    assert all(0 <= n.leaf < len(fleet.leaves) for n in fleet.nodes)
    assert [n.leaf for n in fleet.nodes] == sorted(n.leaf for n in fleet.nodes)
    assert {f.site for f in fleet.fabrics} <= {s.name for s in fleet.sites}
    for names in ([s.name for s in fleet.sites], [f.name for f in fleet.fabrics],
                  [leaf.name for leaf in fleet.leaves], [n.name for n in fleet.nodes]):
        assert len(names) == len(set(names))


@pytest.mark.parametrize(
    ("file", "sites", "fabrics", "leaves", "nodes", "gpus", "by_type"),
    [
        ("small.yaml", 1, 1, 2, 8, 64, {"H100-SXM": 64}),
        ("tiresias.yaml", 1, 1, 1, 32, 128, {"V100": 128}),
        ("philly.yaml", 1, 1, 5, 125, 500, {"V100": 500}),
        ("sim-10k.yaml", 1, 2, 50, 1250, 10_000, {"H100-SXM": 10_000}),
        ("multisite.yaml", 2, 2, 6, 272, 1600, {"H100-SXM": 1024, "GB200": 576}),
    ],
)
def test_examples_load(
    file: str, sites: int, fabrics: int, leaves: int, nodes: int, gpus: int, by_type: dict[str, int]
) -> None:
    fleet = load_fleet(EXAMPLES / file)
    assert (len(fleet.sites), len(fleet.fabrics), len(fleet.leaves)) == (sites, fabrics, leaves)
    assert (len(fleet.nodes), fleet.total_gpus) == (nodes, gpus)
    assert dict(fleet.gpus_by_type()) == by_type
    _check_topology(fleet)


def test_examples_render_in_fleet_view() -> None:
    console = Console(record=True, width=140)
    console.print(fleet_summary(load_fleet(EXAMPLES / "multisite.yaml")))
    text = console.export_text()
    for expected in ("us-east", "colocation", "eun-nvl", "GB200", "1,600", "gb-leaf1"):
        assert expected in text


def test_small_names_and_indices() -> None:
    fleet = load_fleet(EXAMPLES / "small.yaml")
    assert [leaf.name for leaf in fleet.leaves] == ["leaf-a", "leaf-b"]
    assert [n.name for n in fleet.nodes[3:5]] == ["leaf-a-n3", "leaf-b-n0"]
    assert [n.leaf for n in fleet.nodes] == [0] * 4 + [1] * 4
    assert fleet.nodes[0].cpu_milli == 224000 and fleet.nodes[0].memory_mib == 2097152
    assert fleet.it_power_kw() == pytest.approx(8 * 10.2)


def test_sim_10k_fabrics_and_leaves() -> None:
    fleet = load_fleet(EXAMPLES / "sim-10k.yaml")
    assert [f.name for f in fleet.fabrics] == ["ib-a", "ib-b"]
    assert [leaf.fabric for leaf in fleet.leaves] == [0] * 25 + [1] * 25
    assert fleet.leaves[25].name == "ib-b-l0"
    assert fleet.nodes[625].name == "ib-b-l0-n0" and fleet.fabric_of(fleet.nodes[625]) == 1


def test_multisite_nvlink_domains() -> None:
    fleet = load_fleet(EXAMPLES / "multisite.yaml")
    assert [s.kind for s in fleet.sites] == ["owned", "colocation"]
    gb = [n for n in fleet.nodes if n.gpu is not None and n.gpu.name == "GB200"]
    assert all(n.gpus == 4 for n in gb)
    domains: dict[str, int] = {}
    for n in gb:
        assert n.nvlink_domain is not None
        domains[n.nvlink_domain] = domains.get(n.nvlink_domain, 0) + 1
    assert len(domains) == 8 and set(domains.values()) == {18}
    assert gb[0].nvlink_domain == "gb-leaf0-nvl0" and gb[18].nvlink_domain == "gb-leaf0-nvl1"
    assert gb[-1].nvlink_domain == "gb-leaf1-nvl3"
    assert fleet.site_of(gb[0]).name == "eu-north"
    assert all(n.nvlink_domain is None for n in fleet.nodes if n not in gb)


def test_tiresias_name_prefix() -> None:
    fleet = load_fleet(EXAMPLES / "tiresias.yaml")
    assert fleet.nodes[0].name == "tiresias-0" and fleet.nodes[31].name == "tiresias-31"


def test_default_fleet() -> None:
    fleet = default_fleet()
    assert [n.name for n in fleet.nodes] == ["local-0"]
    assert fleet.total_gpus == 8 and dict(fleet.gpus_by_type()) == {"H100-SXM": 8}
    _check_topology(fleet)


def _fleet(leaves: Any, **site: Any) -> dict[str, Any]:
    """A one-site, one-fabric fleet mapping around the given `leaves` value."""
    base = {"name": "lab", "kind": "owned", "it_mw": 1.0, "pue": 1.2}
    base.update(site)
    return {"name": "t", "sites": [{**base, "fabrics": [{"name": "f", "leaves": leaves}]}]}


def test_compact_equals_explicit() -> None:
    compact = {"count": 3, "nodes_per_leaf": 4, "gpu": "h100", "gpus": 8,
               "cpu_milli": 1000, "nvlink_domain_size": 2}
    explicit = [
        {"name": f"f-l{i}", "nodes": [{"count": 4, "gpu": "H100-SXM", "gpus": 8,
                                       "cpu_milli": 1000, "nvlink_domain_size": 2}]}
        for i in range(3)
    ]
    a, b = fleet_from_dict(_fleet(compact)), fleet_from_dict(_fleet(explicit))
    assert a == b
    assert [n.name for n in a.nodes[:5]] == ["f-l0-n0", "f-l0-n1", "f-l0-n2", "f-l0-n3", "f-l1-n0"]
    assert [n.nvlink_domain for n in a.nodes[:4]] == ["f-l0-nvl0"] * 2 + ["f-l0-nvl1"] * 2


def test_groups_in_one_leaf_number_across_groups() -> None:
    leaves = [{"name": "mix", "nodes": [
        {"count": 2, "gpu": "A100", "gpus": 8, "nvlink_domain_size": 2},
        {"count": 2, "gpu": "L40S", "gpus": 4, "nvlink_domain_size": 1},
        {"count": 1, "gpu": "T4", "gpus": 1, "name_prefix": "edge-"},
    ]}]
    fleet = fleet_from_dict(_fleet(leaves))
    assert [n.name for n in fleet.nodes] == ["mix-n0", "mix-n1", "mix-n2", "mix-n3", "edge-0"]
    assert [n.nvlink_domain for n in fleet.nodes] == [
        "mix-nvl0", "mix-nvl0", "mix-nvl1", "mix-nvl2", None]
    assert dict(fleet.gpus_by_type()) == {"A100-SXM": 16, "L40S": 8, "T4": 1}


# Each case: a change to a valid fleet, the path the error must name, and words in the problem.
GOOD_LEAF = {"name": "l0", "nodes": [{"count": 2, "gpu": "H100", "gpus": 8}]}
GOOD: dict[str, Any] = {"name": "t", "sites": [
    {"name": "a", "kind": "owned", "it_mw": 1.0, "pue": 1.2, "fabrics": [
        {"name": "f0", "leaves": [GOOD_LEAF]},
        {"name": "f1", "leaves": {"count": 2, "nodes_per_leaf": 4, "gpu": "H100", "gpus": 8}},
    ]}]}


def _set(data: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    data = copy.deepcopy(data)
    target: Any = data
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    elif isinstance(target, list) and path[-1] == len(target):
        target.append(value)
    else:
        target[path[-1]] = value
    return data


_DELETE = object()
S0 = ("sites", 0)
F0 = (*S0, "fabrics", 0)
G0 = (*F0, "leaves", 0, "nodes", 0)
F1L = (*S0, "fabrics", 1, "leaves")


@pytest.mark.parametrize(
    ("change", "value", "path", "words"),
    [
        ((*G0, "gpu"), "H900", "sites[0].fabrics[0].leaves[0].nodes[0].gpu",
         ["unknown GPU type 'H900'", "H100-SXM", "GB200"]),
        ((*G0, "gpus"), 0, "sites[0].fabrics[0].leaves[0].nodes[0].gpus",
         ["gpus must be 1-72", "got 0"]),
        ((*G0, "gpus"), 73, "sites[0].fabrics[0].leaves[0].nodes[0].gpus", ["got 73"]),
        ((*F1L, "gpus"), 0, "sites[0].fabrics[1].leaves.gpus", ["gpus must be 1-72", "got 0"]),
        ((*F1L, "count"), 0, "sites[0].fabrics[1].leaves.count", ["at least 1", "got 0"]),
        ((*F1L, "nvlink_domain_size"), 3, "sites[0].fabrics[1].leaves",
         ["nodes_per_leaf (4) must be a multiple of nvlink_domain_size (3)"]),
        ((*G0, "count"), 0, "sites[0].fabrics[0].leaves[0].nodes[0].count", ["got 0"]),
        ((*G0, "gpus"), "eight", "sites[0].fabrics[0].leaves[0].nodes[0].gpus",
         ["valid integer", "'eight'"]),
        ((*G0, "memory_mib"), -1, "sites[0].fabrics[0].leaves[0].nodes[0].memory_mib",
         [">= 0", "got -1"]),
        ((*S0, "it_mw"), -5, "sites[0].it_mw", ["it_mw must be >= 0", "got -5"]),
        ((*S0, "pue"), 0.9, "sites[0].pue", ["pue must be at least 1.0", "got 0.9"]),
        ((*S0, "kind"), "rented", "sites[0].kind", ["'owned' or 'colocation'", "'rented'"]),
        ((*S0, "name"), "us east", "sites[0].name", ["not a valid name"]),
        ((*F0, "leafs"), [], "sites[0].fabrics[0]",
         ["unknown key 'leafs'", "did you mean 'leaves'", "allowed keys here: name, leaves"]),
        ((*G0, "gpu_count"), 4, "sites[0].fabrics[0].leaves[0].nodes[0]",
         ["unknown key 'gpu_count'"]),
        ((*F1L, "nodes"), 4, "sites[0].fabrics[1].leaves", ["unknown key 'nodes'"]),
        ((*F0, "name"), _DELETE, "sites[0].fabrics[0]", ["missing required key 'name'"]),
        ((*F0, "leaves"), "many", "sites[0].fabrics[0].leaves",
         ["list of leaves", "compact mapping"]),
        ((*S0, "fabrics"), {"name": "f"}, "sites[0].fabrics", ["expected a list"]),
        (("sites",), [], "sites", ["no nodes"]),
        ((*S0, "fabrics"), [], "sites", ["no nodes"]),
        ((*S0, "fabrics", 1, "name"), "f0", "sites[0].fabrics[1].name",
         ["duplicate fabric name 'f0'", "sites[0].fabrics[0].name"]),
        ((*F0, "leaves", 1), GOOD_LEAF, "sites[0].fabrics[0].leaves[1].name",
         ["duplicate leaf name 'l0'"]),
        ((*S0, "fabrics", 0, "name"), "f1", "sites[0].fabrics[1].name",
         ["duplicate fabric name 'f1'"]),
        ((*F0, "leaves", 0, "name"), "f1-l1", "sites[0].fabrics[1].leaves",
         ["duplicate leaf name 'f1-l1'", "sites[0].fabrics[0].leaves[0].name"]),
        ((*G0, "name_prefix"), "f1-l0-n", "sites[0].fabrics[1].leaves",
         ["duplicate node name 'f1-l0-n0'", "name_prefix"]),
    ],
)
def test_errors_name_source_path_and_fix(
    change: tuple[Any, ...], value: Any, path: str, words: list[str]
) -> None:
    with pytest.raises(ConfigError) as info:
        fleet_from_dict(_set(GOOD, change, value), "fleet.yaml")
    err = info.value
    assert (err.source, err.path) == ("fleet.yaml", path), str(err)
    for word in words:
        assert word in err.problem, str(err)
    assert str(err).startswith(f"fleet.yaml: {path}: ")


def test_duplicate_site() -> None:
    data = copy.deepcopy(GOOD)
    data["sites"].append({"name": "a", "fabrics": []})
    with pytest.raises(ConfigError, match=r"sites\[1\]\.name: duplicate site name 'a'"):
        fleet_from_dict(data, "fleet.yaml")


def test_several_problems_reported_together() -> None:
    data = _set(_set(GOOD, (*S0, "pue"), 0.5), (*S0, "it_mw"), -1)
    with pytest.raises(ConfigError) as info:
        fleet_from_dict(data, "fleet.yaml")
    assert info.value.path == "sites[0].it_mw" and "also: sites[0].pue" in info.value.problem


def test_dict_source_and_not_a_mapping() -> None:
    with pytest.raises(ConfigError, match=r"^<dict>: a fleet file must be a mapping"):
        fleet_from_dict(["not", "a", "mapping"])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^<dict>: missing required key 'sites'"):
        fleet_from_dict({"name": "x"})


@pytest.mark.parametrize(
    ("text", "path", "words"),
    [
        ("name: t\nsites:\n  - name: a\n    fabrics: [\n", "line 5", ["invalid YAML"]),
        ("name: t\nsites: [{name: a}\n  oops: 1\n", "line 3", ["invalid YAML"]),
        ("name: t\nname: u\nsites: []\n", "line 2", ["duplicate key 'name'"]),
        ("- just\n- a list\n", "", ["must be a mapping", "got a list"]),
        ("", "", ["must be a mapping", "empty document"]),
    ],
)
def test_yaml_file_errors(tmp_path: Path, text: str, path: str, words: list[str]) -> None:
    file = tmp_path / "fleet.yaml"
    file.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_fleet(file)
    assert info.value.source == str(file)
    assert info.value.path.startswith(path), str(info.value)
    for word in words:
        assert word in info.value.problem, str(info.value)


def test_yaml_file_error_names_the_file(tmp_path: Path) -> None:
    file = tmp_path / "fleet.yml"
    file.write_text("name: t\nsites:\n  - {name: a, pue: 0.5}\n")
    with pytest.raises(ConfigError, match=r"fleet\.yml: sites\[0\]\.pue: pue must be"):
        load_fleet(file)


def test_missing_file_and_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: file not found"):
        load_fleet(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"fleet\.json: unknown fleet file type '\.json'"):
        load_fleet(tmp_path / "fleet.json")
