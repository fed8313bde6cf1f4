"""The examples the dashboard offers (fleets and traces for the twin, the pipeline for capacity)
ship inside the wheel, and a server run from an installed wheel, not from the checkout, lists them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import ADMIN, Server, serving

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """neocloud's wheel, built from a copy of the checkout (the build leaves its files in the copy)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    junk = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    shutil.copytree(ROOT / "src", source / "src", symlinks=True, ignore=junk)
    shutil.copytree(EXAMPLES, source / "examples", ignore=junk)
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(source),
                          "-w", str(tmp / "dist")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    (built,) = (tmp / "dist").glob("neocloud-*.whl")
    return built


def test_the_wheel_holds_every_example(wheel: Path) -> None:
    shipped = {n.removeprefix("neocloud/web/examples/") for n in zipfile.ZipFile(wheel).namelist()
               if n.startswith("neocloud/web/examples/")}
    expected = {str(p.relative_to(EXAMPLES)) for p in EXAMPLES.rglob("*") if p.is_file()}
    assert {"fleets/small.yaml", "traces/mixed-2k.csv", "capacity/pipeline.yaml"} <= expected
    assert shipped == expected


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`neocloud up` from the wheel installed in a folder of its own, ahead of the checkout on the path."""
    target = tmp_path_factory.mktemp("installed")
    res = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "-q", "--target",
                          str(target), str(wheel)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    env = {"PYTHONPATH": str(target)}
    where = subprocess.run([sys.executable, "-c", "import neocloud; print(neocloud.__file__)"], env={**os.environ, **env},
                           capture_output=True, text=True, timeout=60).stdout.strip()
    assert Path(where).is_relative_to(target), where  # the installed copy, not the checkout's
    with serving(Server(tmp_path_factory.mktemp("data") / "data", None, env=env)) as srv:
        yield srv


@contextmanager
def _logged_in(srv: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=srv.url, headers={"Origin": srv.url}) as ui:
        assert ui.post("/ui/login", data={"token": ADMIN}).status_code == 303
        yield ui


def test_the_twin_page_of_an_installed_server_offers_the_examples(installed: Server) -> None:
    with _logged_in(installed) as ui:
        page = ui.get("/ui/twin")
        assert page.status_code == 200
        options = set(re.findall(r"<option[^>]*>([^<]+)</option>", page.text))
        assert {p.name for p in (EXAMPLES / "fleets").glob("*.yaml")} <= options
        assert {p.name for p in (EXAMPLES / "traces").glob("*.csv")} <= options
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        replay = ui.post("/ui/twin", data={"trace": "mixed-2k.csv", "fleet_file": "small.yaml", "policy": "fifo",
                                           "csrf": csrf})
        assert replay.status_code == 303, replay.text[-2000:]
        assert "fifo / neocloud" in ui.get("/ui/twin").text.split('id="reports"', 1)[1]  # the replay's report


def test_the_capacity_page_of_an_installed_server_starts_from_the_example_pipeline(installed: Server) -> None:
    with _logged_in(installed) as ui:
        page = ui.get("/ui/capacity")
        assert page.status_code == 200
        assert "nj-campus" in page.text and "denton-2" in page.text  # the example's sites and projects
