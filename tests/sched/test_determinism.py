"""Every placement is a function of the run's seed: the same seed, the same decisions."""

from __future__ import annotations

import pytest

from neocloud.model.job import Job
from neocloud.sched.placements import PLACEMENTS, placement
from neocloud.sim.inflate import run_inflate
from tests.conftest import custom_fleet


def _fleet():
    return custom_fleet([[[
        {"count": 3, "gpu": "T4", "gpus": 2, "cpu_milli": 16_000, "memory_mib": 65_536},
        {"count": 3, "gpu": "V100", "gpus": 8, "cpu_milli": 96_000, "memory_mib": 393_216},
    ]]])


def _pods() -> list[Job]:
    sizes = (0.1, 0.25, 0.5, 0.8, 1, 2, 0)
    return [Job(f"p{i:02d}", sizes[i % len(sizes)], cpu_milli=1_000 + 3_000 * (i % 4), memory_mib=2_048)
            for i in range(40)]


@pytest.mark.parametrize("name", list(PLACEMENTS))
def test_same_seed_same_decisions(name: str) -> None:
    runs = [run_inflate(_fleet(), _pods(), placement(name), inflate=1.3, seed=s) for s in (5, 5, 6)]
    assert str(runs[0].allocation_at) == str(runs[1].allocation_at)  # str: NaN where no arrival rounds to p%
    assert runs[0].pods_placed == runs[1].pods_placed
    assert runs[2].pods_placed > 0
