"""The controller's node keeper on a real store: NVLink domains cordoned whole, spares, moves kept."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from neocloud.control.metrics import Metrics
from neocloud.control.nodes import Nodes
from neocloud.fleet.loader import load_fleet
from neocloud.model.lifecycle import LifecycleError, Stage
from neocloud.sched.scheduler import Scheduler
from neocloud.store.database import connect, migrate, sessions
from neocloud.store.tables import NodeEvent, NodeRow

RACKS = """\
name: nvl
sites:
  - name: here
    fabrics:
      - name: f0
        leaves:
          - name: rack
            nodes:
              - {count: 8, gpu: GB200, gpus: 4, nvlink_domain_size: 4}
"""


@pytest.fixture
def keeper(tmp_path: Path):
    path = tmp_path / "fleet.yaml"
    path.write_text(RACKS)
    fleet = load_fleet(path)
    engine = connect(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrate(engine)
    sched = Scheduler(fleet)
    return Nodes(fleet, sched.state, Metrics(), spares_per_fabric=1), sessions(engine), sched


def test_a_domain_is_cordoned_whole_once_more_than_two_nodes_are_out(keeper) -> None:
    nodes, factory, sched = keeper
    domain = [n.name for n in nodes.fleet.nodes if n.nvlink_domain == nodes.fleet.nodes[0].nvlink_domain]
    assert len(domain) == 4
    with factory.begin() as s:
        for name in domain[:2]:
            nodes.move(s, name, Stage.TRIAGE, "xid 79", 1.0)
        assert nodes.stage[domain[2]] == Stage.PRODUCTION  # two out: the domain still works
        moved = nodes.move(s, domain[2], Stage.TRIAGE, "xid 79", 2.0)
    assert nodes.stage[domain[3]] == Stage.CORDONED
    last = moved.moves[-1]
    assert (last.node, last.frm, last.to) == (domain[3], Stage.PRODUCTION, Stage.CORDONED)
    assert "3 of 4 nodes out" in last.reason
    assert not sched.state.schedulable[nodes.ids[domain[3]]]
    others = [n.name for n in nodes.fleet.nodes if n.name not in domain]
    assert all(nodes.stage[n] == Stage.PRODUCTION for n in others)
    with factory() as s:
        assert s.scalar(select(NodeRow.stage).where(NodeRow.name == domain[3])) == "cordoned"
        assert len(s.scalars(select(NodeEvent)).all()) == 4


def test_stages_and_spares_survive_a_restart_and_bad_moves_are_refused(keeper) -> None:
    nodes, factory, sched = keeper
    with factory.begin() as s:
        nodes.top_up(s, 0.0)
        nodes.move(s, "rack-n0", Stage.DRAINING, "maintenance", 1.0)
        with pytest.raises(LifecycleError, match="from there it can go to: production, cordoned, triage"):
            nodes.move(s, "rack-n0", Stage.REPAIR, "", 2.0)
    assert len(nodes.spare) == 1
    again = Nodes(nodes.fleet, Scheduler(nodes.fleet).state, Metrics(), spares_per_fabric=1)
    with factory() as s:
        again.load(s, 3.0)
    assert again.stage["rack-n0"] == Stage.DRAINING and again.spare == nodes.spare
    assert not again.state.schedulable[again.ids[next(iter(again.spare))]]
