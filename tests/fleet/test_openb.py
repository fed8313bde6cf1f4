"""The Alibaba openb node list as a fleet: the published files, and every malformed line."""

from __future__ import annotations

from pathlib import Path

import pytest

from neocloud.errors import ConfigError
from neocloud.fleet.loader import load_fleet
from neocloud.fleet.openb import load_openb_nodes

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
OPENB = SHARED / "traces" / "alibaba-gpu-v2023"
GPU_NODES = OPENB / "openb_node_list_gpu_node.csv"
ALL_NODES = OPENB / "openb_node_list_all_node.csv"
HEADER = "sn,cpu_milli,memory_mib,gpu,model\n"

needs_trace = pytest.mark.skipif(not GPU_NODES.exists(), reason="openb trace not in shared/")


@needs_trace
def test_gpu_node_list() -> None:
    fleet = load_openb_nodes(GPU_NODES)
    assert len(fleet.nodes) == 1213 and fleet.total_gpus == 6212
    assert dict(fleet.gpus_by_type()) == {
        "G2": 4392, "T4": 842, "G3": 312, "P100": 265, "V100": 204, "V100-16GB": 195, "A10": 2,
    }
    assert [s.name for s in fleet.sites] == ["openb"]
    assert len(fleet.fabrics) == 1 and len(fleet.leaves) == 1
    assert {n.leaf for n in fleet.nodes} == {0}
    assert [n.id for n in fleet.nodes] == list(range(1213))
    first = fleet.nodes[0]
    assert (first.name, first.cpu_milli, first.memory_mib, first.gpus) == (
        "openb-node-0000", 64000, 262144, 2)
    assert first.gpu is not None and first.gpu.name == "P100"


@needs_trace
def test_all_node_list_has_cpu_nodes() -> None:
    fleet = load_fleet(ALL_NODES)  # .csv dispatches to the openb reader
    assert len(fleet.nodes) == 1523 and fleet.total_gpus == 6212
    cpu_only = [n for n in fleet.nodes if n.gpu is None]
    assert len(cpu_only) == 310 and all(n.gpus == 0 for n in cpu_only)
    assert all(n.cpu_milli > 0 and n.memory_mib > 0 for n in fleet.nodes)


def test_small_file(tmp_path: Path) -> None:
    file = tmp_path / "nodes.csv"
    file.write_text(HEADER + "a,96000,786432,8,V100M32\nb,32000,262144,0,\nc,8000,1024,1,t4\n")
    fleet = load_openb_nodes(file)
    assert [(n.name, n.gpus) for n in fleet.nodes] == [("a", 8), ("b", 0), ("c", 1)]
    assert [n.gpu.name if n.gpu else None for n in fleet.nodes] == ["V100", None, "T4"]


@pytest.mark.parametrize(
    ("text", "path", "words"),
    [
        ("sn,cpu,memory_mib,gpu,model\n", "line 1", ["expected the header", "sn,cpu_milli"]),
        ("", "line 1", ["expected the header"]),
        (HEADER, "", ["no nodes"]),
        (HEADER + "a,1000,1024,2,T4\nb,lots,1024,2,T4\n", "line 3", ["cpu_milli", "'lots'"]),
        (HEADER + "a,1000,1024,-2,T4\n", "line 2", ["gpu must be a whole number >= 0", "'-2'"]),
        (HEADER + "a,1000,1.5,2,T4\n", "line 2", ["memory_mib", "'1.5'"]),
        (HEADER + "a,1000,1024,2,H900\n", "line 2", ["unknown GPU type 'H900'", "known types"]),
        (HEADER + "a,1000,1024,2,\n", "line 2", ["model is empty", "2 GPUs"]),
        (HEADER + "a,1000,1024,2\n", "line 2", ["expected 5 fields, got 4"]),
        (HEADER + "a,1,1,1,T4\n\na,1,1,1,T4\n", "line 4", ["duplicate node sn 'a'", "line 2"]),
        (HEADER + ",1,1,1,T4\n", "line 2", ["sn"]),
    ],
)
def test_csv_errors(tmp_path: Path, text: str, path: str, words: list[str]) -> None:
    file = tmp_path / "nodes.csv"
    file.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_openb_nodes(file)
    err = info.value
    assert (err.source, err.path) == (str(file), path), str(err)
    for word in words:
        assert word in err.problem, str(err)


def test_missing_csv(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nodes\.csv: file not found"):
        load_fleet(tmp_path / "nodes.csv")
