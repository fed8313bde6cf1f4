"""The live forecast's refresher: snapshots taken on the loop only when the scheduler changed and
its share allows, forecasts run off it, dry runs on a snapshot of the scheduler as it is."""

from __future__ import annotations

import threading

from neocloud.control.forecasts import Base, Forecasts
from neocloud.model.job import Job
from neocloud.sched.scheduler import Scheduler
from tests.api.conftest import wait_for
from tests.conftest import make_fleet


def _busy() -> Scheduler:
    sched = Scheduler(make_fleet(nodes_per_leaf=1, gpus=8), queue="fifo", placement="topo")
    sched.submit(Job("a", 8, estimate_s=100.0), 0.0)
    sched.schedule(0.0)
    sched.submit(Job("b", 8, estimate_s=50.0, submit_s=1.0), 1.0)
    sched.schedule(1.0)
    return sched


def _settle(f: Forecasts) -> None:
    assert f._running is not None
    f._running.result(timeout=30)


def test_a_forecast_runs_off_the_loop_and_again_only_once_the_scheduler_changed() -> None:
    sched, f = _busy(), Forecasts(min_gap_s=0.0)
    ran_on: list[str] = []
    run = f._run
    f._run = lambda base: (ran_on.append(threading.current_thread().name), run(base))[1]  # type: ignore[method-assign]
    f.after_turn(sched, 2.0)
    _settle(f)
    assert f.of("b", 2.0) == (100.0, 150.0) and f.of("a", 2.0) == (None, 100.0)
    assert ran_on and all(name.startswith("neocloud-forecast") for name in ran_on)
    first = f.base
    f.after_turn(sched, 3.0)  # nothing changed: the same snapshot, no new forecast
    assert f.base is first and len(ran_on) == 1
    sched.submit(Job("c", 8, estimate_s=10.0, submit_s=4.0), 4.0)
    wait_for(lambda: f.after_turn(sched, 4.0) or f.base is not first)  # once the share allows (milliseconds)
    _settle(f)
    assert f.of("c", 4.0) == (150.0, 160.0) and len(ran_on) == 2
    assert f.of("b", 120.0)[0] == 120.0  # a start already due reads as now
    f.stop()


def test_snapshots_keep_to_the_loops_share_and_a_dry_run_waits_for_a_current_one() -> None:
    sched, f = _busy(), Forecasts(min_gap_s=60.0)
    f.after_turn(sched, 2.0)
    _settle(f)
    first = f.base
    sched.submit(Job("c", 8, estimate_s=10.0, submit_s=3.0), 3.0)
    f.after_turn(sched, 3.0)  # changed, but within the gap: no snapshot yet
    assert f.base is first
    f._share_until = float("inf")  # as if the last snapshot had used up the loop's share
    assert isinstance(f.current(sched, 3.0), float)  # a dry run is told to wait
    f._share_until = 0.0
    base = f.current(sched, 3.0)
    assert isinstance(base, Base) and base is not first and base.mark == sched.changes
    out = f.dry_run(base, Job("what-if", 4, estimate_s=5.0, submit_s=3.0))
    assert out.start == {"b": 100.0, "c": 150.0, "what-if": 160.0}  # in fifo order, behind c
    assert "what-if" not in sched.jobs  # the live scheduler never saw it
    f.stop()
