"""README's commands, as a new user runs them from the checkout after README's install: the
Quickstart block through bash, and `neocloud up` with the two client commands beside it. Nothing
they write may land in the checkout."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path

from tests.api.conftest import Server, serving

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
BIN = Path(sys.executable).parent  # where README's install put `neocloud`: .venv/bin
# Sizes that take long, made small; every other word of the block runs as written.
SMALLER = {"--jobs 100000": "--jobs 2000", "--runs 100000": "--runs 2000", "--nodes 12500": "--nodes 16",
           "--pending 10000": "--pending 20", "--scenario neocloud": "--scenario neocloud --seeds 1 --days 5"}
OUTPUTS = ("llm.csv", "report.json", "plan.html", "bench.json")  # what the block writes, all under $out


def quickstart() -> str:
    """The Quickstart section's first code block, as the shell reads it."""
    section = README.split("\n## Quickstart\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"\n((?: {4}.*\n|\n)+)", section).group(1)
    return "\n".join(line[4:] for line in block.splitlines()) + "\n"


def test_the_quickstart_activates_the_venv_and_writes_only_under_a_scratch_folder() -> None:
    script = quickstart()
    lines = [line for line in script.splitlines() if line.strip() and not line.startswith("#")]
    assert lines[:2] == [". .venv/bin/activate", "out=$(mktemp -d)"]
    assert all(line.startswith(("neocloud ", "    --", ".", "out=")) for line in lines), lines
    written = re.findall(r"--(?:out|html|png) (\S+)", script)
    assert written and all(w.startswith("$out/") for w in written), written
    section = README.split("\n## Quickstart\n", 1)[1].split("\n## ", 1)[0]
    assert "--png $out/plan.png" in section and "pip install -e '.[charts]'" in section  # the extra --png needs
    assert "charts" in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def test_the_quickstart_runs_as_written(tmp_path: Path) -> None:
    script = quickstart()
    openb = (ROOT.parent / "shared" / "traces" / "alibaba-gpu-v2023").is_dir()
    if not openb:  # README says where to get it; tests/cli/test_cli.py's openb replay says it is missing
        script = script.split("# The openb fragmentation experiment")[0]
    for long, short in SMALLER.items():  # each one is in the block
        assert long in script, long
        script = script.replace(long, short)
    activate = ROOT / ".venv" / "bin" / "activate"
    if not (activate.exists() and (ROOT / ".venv" / "bin").resolve() == BIN.resolve()):
        # The tests run from another environment than README's .venv: put that one on the PATH instead.
        script = script.replace(". .venv/bin/activate", f"export PATH={BIN}:$PATH")
    started = time.time()
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # mktemp -d makes $out in the test's own folder
    res = subprocess.run(["bash", "-euo", "pipefail", "-c", script + 'echo "out=$out"\n'], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"{res.stderr[-3000:]}\n{res.stdout[-2000:]}"
    out = Path(res.stdout.rsplit("out=", 1)[1].strip())
    assert out.is_relative_to(tmp_path)
    assert all((out / name).stat().st_size > 0 for name in OUTPUTS), sorted(p.name for p in out.iterdir())
    for text in ("P(850 MW by 2025-12-31)", "ETTR", *(["130%"] if openb else [])):
        assert text in res.stdout, text
    assert not [n for n in OUTPUTS + ("plan.png",) if (ROOT / n).exists() and (ROOT / n).stat().st_mtime >= started]


def test_up_then_submit_and_follow_the_logs_as_readme_says(tmp_path: Path) -> None:
    """`neocloud up` bare (no fleet: one emulated node; its own admin token in its data directory),
    in the background on a named data directory; then README's two client commands, verbatim."""
    commands = re.findall(r"`(\.venv/bin/neocloud (?:submit|logs) [^`]+)`", README)
    assert commands == [".venv/bin/neocloud submit examples/jobs/hello.yaml", ".venv/bin/neocloud logs 1 -f"]
    srv = Server(tmp_path / "data", None, env={"NEOCLOUD_ADMIN_TOKEN": ""})  # empty: the server makes its own
    srv.fleet = None
    env = {**os.environ, "NEOCLOUD_SERVER": srv.url, "NEOCLOUD_DATA_DIR": str(srv.data_dir)}
    for name in ("NEOCLOUD_TOKEN", "NEOCLOUD_ADMIN_TOKEN"):
        env.pop(name, None)
    with serving(srv):
        assert (srv.data_dir / "admin.token").read_text().startswith("nca_")
        outputs = []
        for command in commands:
            argv = command.split()
            argv[0] = str(ROOT / argv[0]) if (ROOT / argv[0]).exists() else str(BIN / "neocloud")
            res = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
            assert res.returncode == 0, res.stderr[-2000:]
            outputs.append(res.stdout)
    assert outputs[0].startswith("job 1 (hello) submitted")
    assert "hello from job 1 on local-0" in outputs[1] and "step 3" in outputs[1]
