"""The dashboard's session store on its own, with a clock the test moves: the idle timeout, the
absolute lifetime, logout, and the bounds that keep it from growing without end."""

from __future__ import annotations

import pytest

from neocloud.web.sessions import Sessions


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_idle_session_ends_and_activity_keeps_it_until_its_lifetime() -> None:
    clock = Clock()
    store = Sessions(absolute_s=100, idle_s=10, clock=clock)
    busy, _ = store.open("d1")
    idle, _ = store.open("d2")
    for _ in range(11):  # a request every 9 s keeps `busy` for 99 s, not `idle`
        clock.now += 9
        assert store.get(busy) is not None
    assert store.get(idle) is None
    clock.now += 9
    assert store.get(busy) is None  # past 100 s from login, however busy
    assert len(store) == 0


def test_a_peek_does_not_count_as_activity() -> None:
    clock = Clock()
    store = Sessions(absolute_s=100, idle_s=10, clock=clock)
    sid, _ = store.open("d")
    clock.now += 6
    assert store.get(sid, touch=False) is not None
    clock.now += 6
    assert store.get(sid) is None


def test_ids_are_random_and_logout_ends_the_session() -> None:
    store = Sessions()
    a, session_a = store.open("d")
    b, session_b = store.open("d")
    assert a != b and session_a.csrf != session_b.csrf and len(a) >= 40
    assert store.get(a).token_digest == "d"
    store.close(a)
    assert store.get(a) is None and store.get(b) is not None
    assert store.get("") is None and store.get("not-a-session") is None and store.get("\ud800") is None


def test_the_store_is_bounded_and_one_token_cannot_push_others_out() -> None:
    clock = Clock()
    store = Sessions(limit=5, per_token=2, clock=clock)
    admin, _ = store.open("admin")
    tenant = [store.open("tenant")[0] for _ in range(10)]
    assert len(store) == 3 and store.get(admin) is not None
    assert [store.get(s) is not None for s in tenant] == [False] * 8 + [True] * 2
    others = [store.open(f"t{i}")[0] for i in range(5)]
    assert len(store) == 5 and all(store.get(s) is not None for s in others)  # the least recently used went


@pytest.mark.parametrize("raw", ["", "abc", "-5", "0", "inf", "nan"])
def test_lifetimes_from_the_environment_fall_back_to_the_defaults(raw: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEOCLOUD_UI_SESSION_S", raw)
    monkeypatch.setenv("NEOCLOUD_UI_IDLE_S", "30")
    store = Sessions.from_env()
    assert store.absolute_s == 12 * 3600 and store.idle_s == 30
