"""Writes a benchmark's table into docs/benchmarks.md, between markers named for the benchmark."""

from __future__ import annotations

import platform
import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def table(headers: list[str], rows: list[list[object]]) -> str:
    def cell(v: object) -> str:
        return f"{v:,.2f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def machine() -> str:
    return f"{platform.python_implementation()} {platform.python_version()} on {platform.machine()}"


def write_section(name: str, body: str) -> None:
    """Replace (or append) the section between `<!-- bench:name -->` and `<!-- /bench:name -->`."""
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    block = f"<!-- bench:{name} -->\n{body.strip()}\n<!-- /bench:{name} -->"
    pattern = re.compile(rf"<!-- bench:{name} -->.*?<!-- /bench:{name} -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    DOC.write_text(text)
    print(body)
