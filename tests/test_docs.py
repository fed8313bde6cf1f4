"""Every GPU type the documentation and the examples name is one the catalog knows: a reader who
copies `gpu_type: X` or `gpu: X` from them gets a spec or a fleet that loads."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from neocloud.fleet.schema import known_gpu

ROOT = Path(__file__).resolve().parents[1]
# `gpu_type: X`, `gpu: X`, `"gpu_type": "X"` (YAML, flow mappings, JSON) and `--gpu-type X`, not `--gres=gpu:N`.
KEYED = re.compile(r"""(?<![=\w-])["']?(?:gpu_type|gpu)["']?\s*:\s*["']?([A-Za-z][\w|.-]*)|--gpu(?:-type)?[ =]([\w|.-]+)""")
# A backquoted model name (`H100`, `V100-16GB`, `A100|H100`) on a line that speaks of GPU types.
MODEL = r"[A-Z]{1,2}\d{1,4}[A-Z0-9]*(?:-[A-Z0-9]+)*"
NAMED = re.compile(rf"`({MODEL}(?:\|{MODEL})*)`")
ABOUT_TYPES = re.compile(r"gpu_type|gpu-type|GPU types?|catalog|models?\b", re.IGNORECASE)


def sources() -> list[Path]:
    """README.md, docs/ (the measured results aside: they quote runs, not specs) and the examples."""
    docs = [p for p in sorted((ROOT / "docs").glob("*.md")) if p.name != "benchmarks.md"]
    examples = sorted(p for p in (ROOT / "examples").rglob("*") if p.suffix in (".yaml", ".yml", ".md", ".json"))
    return [ROOT / "README.md", *docs, *examples]


def gpu_names(text: str) -> list[str]:
    """The GPU types `text` names, one entry per mention (an `A|B` alternative counts both)."""
    found = [a or b for a, b in KEYED.findall(text)]
    for line in text.splitlines():
        if ABOUT_TYPES.search(line):
            found += NAMED.findall(line)
    return [name for alternatives in found for name in alternatives.split("|") if name]


def trace_gpu_names() -> list[tuple[str, str]]:
    """The gpu_type column of every example trace, as (where, name)."""
    names = []
    for path in sorted((ROOT / "examples").rglob("*.csv")):
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                names += [(path.name, n) for n in (row.get("gpu_type") or "").split("|") if n]
    return names


MENTIONS = [(str(p.relative_to(ROOT)), name) for p in sources() for name in gpu_names(p.read_text(encoding="utf-8"))]


def test_the_search_finds_the_names_it_should() -> None:
    text = ("| `gpu_type` | a catalog model (`H100`, `A100-80GB`, ...) |\n"
            "gpu_type: B200\n  - {count: 2, gpu: GB200, gpus: 4}\n"
            '{"gpu_type": "L40S"}\n--gpu-type T4 --gres=gpu:8\n`gpu_type` (`H100` or `A100|H100`)\n'
            "P10/P50/P90 of `P90`\ncatalog aliases such as `V100M16` also work\n")
    assert gpu_names(text) == ["B200", "GB200", "L40S", "T4", "H100", "A100-80GB", "H100", "A100", "H100", "V100M16"]
    with pytest.raises(ValueError, match="unknown GPU type 'A100-80GB'"):
        known_gpu("A100-80GB")


def test_the_documentation_names_gpu_types() -> None:
    where = {w for w, _ in MENTIONS}
    assert {"docs/control-plane.md", "docs/fleet-format.md", "docs/capacity.md",
            "examples/contracts.yaml", "examples/fleets/small.yaml"} <= where, where
    assert len(MENTIONS) > 50


@pytest.mark.parametrize(("where", "name"), sorted(set(MENTIONS)))
def test_every_gpu_type_named_is_in_the_catalog(where: str, name: str) -> None:
    known_gpu(name)  # a ValueError that lists the known types otherwise


def test_every_gpu_type_of_the_example_traces_is_in_the_catalog() -> None:
    unknown = sorted({(w, n) for w, n in trace_gpu_names() if not _known(n)})
    assert not unknown, unknown


def _known(name: str) -> bool:
    try:
        known_gpu(name)
    except ValueError:
        return False
    return True
