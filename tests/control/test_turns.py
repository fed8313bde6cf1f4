"""The control loop's turns on a real store: a failing command leaves nothing, the others commit."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from neocloud.backends.emulated import EmulatedBackend
from neocloud.control import records
from neocloud.control.controller import Conflict, Controller
from neocloud.fleet.loader import default_fleet
from neocloud.store.database import connect, sessions
from neocloud.store.tables import JobEvent, JobRow, Tenant


@pytest.fixture
def controller(tmp_path: Path):  # noqa: ANN201 - a Controller, stopped at the end
    engine = connect(f"sqlite:///{tmp_path / 'db.sqlite'}")
    c = Controller(default_fleet(), sessions(engine), EmulatedBackend(tmp_path / "files", tmp_path / "data"))
    yield c
    c.stop()


def test_a_command_that_fails_half_way_leaves_nothing_and_the_turn_goes_on(controller: Controller) -> None:
    def half(s, now: float) -> None:  # noqa: ANN001 - the turn's session
        s.add(Tenant(name="half-made", created_at=now))
        s.flush()  # written to the store, inside the command's savepoint
        records.event(s, 1, now, "noise", "buffered for the turn's commit")
        raise Conflict("refused after writing")

    # Queued before the loop starts, so that all three share its first turn.
    before = controller.create_tenant("before")
    bad = controller.call(half)
    after = controller.submit("default", {"name": "j", "command": "true", "gpus": 1, "estimated_duration": 0.1})
    controller.start()
    with pytest.raises(Conflict, match="refused after writing"):
        bad.result(timeout=20)
    assert before.result(timeout=20).name == "before"
    job = after.result(timeout=20)
    with controller.sessions() as s:
        assert set(s.scalars(select(Tenant.name))) == {"default", "before"}
        assert s.get(JobRow, job.id) is not None
        kinds = list(s.scalars(select(JobEvent.kind).where(JobEvent.job_id == job.id)))
    assert "noise" not in kinds and kinds[0] == "submitted"
