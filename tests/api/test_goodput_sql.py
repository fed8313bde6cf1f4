"""/v1/goodput sums in the database what `goodput()` works out job by job: the two must agree, on
SQLite and on PostgreSQL, for every kind of job (running, restarted, checkpointing at a fixed
interval or at `auto`, losing more than it ran)."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from sqlalchemy import delete

from neocloud.api.goodput import totals
from neocloud.control.jobs import goodput_of
from neocloud.model.goodput import LOSSES
from neocloud.store.database import connect, sessions
from neocloud.store.tables import JobRow


def _job(i: int, rng: random.Random, now: float) -> JobRow:
    state = rng.choice(["RUNNING", "COMPLETED", "FAILED", "CANCELLED"])
    spec = {"name": f"j{i}", "command": "true"}
    for key in ("restart_cost", "checkpoint_cost"):
        spec[key] = rng.choice([None, 0, 0.0, 5, 30.5, 600])
    spec["checkpoint_interval"] = rng.choice([None, "auto", 0, 60, 90.5, 3600])
    if rng.random() < 0.2:
        spec.pop("checkpoint_interval")  # jobs from before the field existed
    ledger = {k: rng.choice([0.0, 1.25, 40.0, 5000.0]) for k in ("detection_s", "recomputation_s")
              if rng.random() < 0.7}
    started = now - rng.uniform(1, 7200)
    return JobRow(id=i, tenant=rng.choice(["a", "b", "c"]), name=f"j{i}", spec=spec, state=state, priority="on-demand",
                  gpus=rng.choice([0.5, 1.0, 8.0, 16.0]), submitted_at=started - 5, started_at=started,
                  ended_at=None if state == "RUNNING" else now - 1, run_s=rng.choice([0.0, 10.0, 3601.5, 86400.0]),
                  attempts=rng.choice([0, 1, 2, 5]), reason="", cancel_requested=False,
                  interruptions=rng.choice([0, 1, 3]), ledger=ledger, usage_class="on-demand")


def test_the_database_sums_what_goodput_works_out_per_job(tmp_path: Path, database: str | None) -> None:
    engine = connect(database or f"sqlite:///{tmp_path / 'goodput.db'}")
    factory = sessions(engine)
    rng, now = random.Random(7), time.time()
    rows = [_job(i, rng, now) for i in range(1, 400)]
    with factory.begin() as s:
        s.execute(delete(JobRow))
        s.add_all(rows)
    with factory() as s:
        summed = {r[0]: r for r in s.execute(totals(now, None)).all()}
        only_b = s.execute(totals(now, "b")).all()
    engine.dispose()
    for tenant in ("a", "b", "c"):
        ran = [r for r in rows if r.tenant == tenant and r.attempts > 0]
        each = [goodput_of(r, now) for r in ran]
        _, jobs, interruptions, allocated, productive, *lost = summed[tenant]
        assert (jobs, interruptions) == (len(ran), sum(r.interruptions for r in ran))
        assert allocated == pytest.approx(sum(g.allocated_gpu_s for g in each), abs=0.01)
        assert productive == pytest.approx(sum(g.productive_gpu_s for g in each), abs=0.01)
        for k, v in zip(LOSSES, lost, strict=True):
            assert v == pytest.approx(sum(g.lost_gpu_s[k] for g in each), abs=0.01), k
    assert [r[0] for r in only_b] == ["b"] and only_b[0][1:] == summed["b"][1:]
