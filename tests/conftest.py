"""Shared fixtures and fleet builders for the test suite.

Fleets are built through `neocloud.fleet.loader.fleet_from_dict`, the same path a fleet file
takes, so tests exercise real numbering (node ids dense in file order, leaves and fabrics by
index). The builders are plain functions too, importable as `tests.conftest`, for hypothesis
tests that cannot take function-scoped fixtures.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from neocloud.fleet.loader import fleet_from_dict
from neocloud.model.fleet import Fleet

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
STRICT = os.environ.get("NEOCLOUD_TEST_STRICT") == "1"  # .ci/run sets it: there nothing may be missing


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    """Where everything a test needs must be there (CI), a test that would skip fails instead, with
    its reason: a missing PostgreSQL, Slurm, Ray, Chromium, bubblewrap or ../shared is a failure."""
    outcome = yield
    report = outcome.get_result()
    if STRICT and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome, report.longrepr = "failed", f"would skip, and NEOCLOUD_TEST_STRICT=1 allows none: {reason}"


def make_fleet(
    leaves: int = 1,
    nodes_per_leaf: int = 1,
    gpus: int = 8,
    gpu: str = "H100",
    fabrics: int = 1,
    *,
    cpu_milli: int = 0,
    memory_mib: int = 0,
    name: str = "test",
) -> Fleet:
    """`fabrics` fabrics of `leaves` identical leaves of `nodes_per_leaf` identical nodes.

    Node ids run fabric by fabric, leaf by leaf: node i sits in leaf i // nodes_per_leaf.
    """
    data = {
        "name": name,
        "sites": [{
            "name": "s0",
            "fabrics": [
                {"name": f"f{f}", "leaves": {
                    "count": leaves, "nodes_per_leaf": nodes_per_leaf, "gpu": gpu, "gpus": gpus,
                    "cpu_milli": cpu_milli, "memory_mib": memory_mib,
                }}
                for f in range(fabrics)
            ],
        }],
    }
    return fleet_from_dict(data, "<test>")


def custom_fleet(fabrics: Sequence[Sequence[Sequence[dict[str, Any]]]], name: str = "custom") -> Fleet:
    """A hand-made fleet: fabrics -> leaves -> node groups ({count, gpu, gpus, cpu_milli, ...}).

    Leaves are named f<i>-l<j>; nodes keep the loader's default names.
    """
    data = {
        "name": name,
        "sites": [{
            "name": "s0",
            "fabrics": [
                {"name": f"f{fi}", "leaves": [
                    {"name": f"f{fi}-l{li}", "nodes": [dict(g) for g in groups]}
                    for li, groups in enumerate(leaves)
                ]}
                for fi, leaves in enumerate(fabrics)
            ],
        }],
    }
    return fleet_from_dict(data, "<test>")


@pytest.fixture(name="make_fleet")
def make_fleet_fixture() -> Callable[..., Fleet]:
    return make_fleet


@pytest.fixture(name="custom_fleet")
def custom_fleet_fixture() -> Callable[..., Fleet]:
    return custom_fleet


@pytest.fixture
def shared() -> Path:
    """The ../shared folder (traces, references); tests that need it skip when it is absent."""
    if not SHARED.is_dir():
        pytest.skip("../shared not present")
    return SHARED


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[Any]:
    """One real Slurm cluster on this host for every test that needs one (tests/backends/slurm_cluster.py)."""
    from tests.backends.slurm_cluster import running_cluster

    with running_cluster() as cluster:
        yield cluster
