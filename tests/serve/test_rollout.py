"""The rollout plan's promises, for any replicas in any state: no ready replica leaves while fewer
than the wanted number would be ready, the surge is kept, and following the plan converges."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from neocloud.serve.rollout import Replica, plan, surge_of

replicas = st.lists(st.tuples(st.integers(1, 3), st.booleans()), max_size=12).map(
    lambda rs: [Replica(i + 1, gen, ready) for i, (gen, ready) in enumerate(rs)])


@given(st.integers(0, 8), st.integers(1, 3), replicas)
def test_no_ready_replica_leaves_below_the_wanted_number(wanted: int, generation: int, rs: list[Replica]) -> None:
    todo = plan(wanted, generation, rs)
    ready_left = sum(r.ready for r in rs if r.id not in todo.drain)
    assert ready_left >= min(wanted, sum(r.ready for r in rs))
    assert len(set(todo.drain)) == len(todo.drain) <= len(rs)


@given(st.integers(0, 8), st.integers(1, 3), replicas)
def test_starts_keep_within_the_surge(wanted: int, generation: int, rs: list[Replica]) -> None:
    todo = plan(wanted, generation, rs)
    staying = len(rs) - len(todo.drain)
    assert todo.start == 0 or staying + todo.start <= wanted + surge_of(wanted)


@given(st.integers(0, 8), st.integers(1, 3), replicas)
def test_following_the_plan_ends_with_the_wanted_replicas_all_current(wanted: int, generation: int,
                                                                       rs: list[Replica]) -> None:
    next_id = 100
    for _ in range(50):
        todo = plan(wanted, generation, rs)
        if not todo.start and not todo.drain and all(r.ready for r in rs):
            break
        rs = [Replica(r.id, r.generation, True) for r in rs if r.id not in todo.drain]  # the staying get ready
        rs += [Replica(next_id + i, generation, False) for i in range(todo.start)]
        next_id += todo.start
    assert len(rs) == wanted and all(r.generation == generation for r in rs)


def test_a_roll_adds_one_new_replica_before_the_first_old_one_leaves() -> None:
    old = [Replica(1, 1, True), Replica(2, 1, True)]
    assert plan(2, 2, old).start == 1 and plan(2, 2, old).drain == ()
    assert plan(2, 2, [*old, Replica(3, 2, False)]).drain == ()  # the new one is not ready yet
    assert plan(2, 2, [*old, Replica(3, 2, True)]).drain == (1,)  # now one old may go
