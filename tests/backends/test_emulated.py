"""The emulated backend on a fake clock: durations, stops, restarts, a torn record, its logs."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from neocloud.backends import BACKENDS, make_backend
from neocloud.backends import emulated as emulated_module
from neocloud.backends.base import Exit, Task
from neocloud.backends.emulated import RETAIN_S, STOPPED, EmulatedBackend
from tests.api.conftest import wait_for

T0 = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _backend(tmp_path: Path, clock: Clock) -> EmulatedBackend:
    return EmulatedBackend(tmp_path / "jobs", tmp_path, clock=clock)


def _task(job_id: int, seconds: float | None, nodes: int = 1, attempt: int = 1) -> Task:
    return Task(job_id, attempt, "python train.py", nodes=tuple((f"n{i}", (0, 1)) for i in range(nodes)),
                estimate_s=seconds)


def _journal(tmp_path: Path) -> Path:
    return tmp_path / "emulated.journal"


def test_an_attempt_runs_its_estimated_duration_and_exits_0(tmp_path: Path, clock: Clock) -> None:
    b = _backend(tmp_path, clock)
    assert b.launch([_task(1, 30, nodes=2), _task(2, None), _task(3, 0)]) == []
    b.launch([_task(1, 30, nodes=2)])  # launched again while running: still one attempt
    assert b.poll() == [Exit(3, 1, (0,))]  # no duration at all: over at once
    clock.now += 29.9
    assert b.poll() == []
    clock.now += 0.1
    assert b.poll() == [Exit(1, 1, (0, 0))]
    assert b.poll() == []  # reported once
    clock.now = T0 + 60  # no estimated_duration: the default minute
    assert b.poll() == [Exit(2, 1, (0,))]


def test_a_stopped_attempt_ends_at_once_with_143_and_only_once(tmp_path: Path, clock: Clock) -> None:
    b = _backend(tmp_path, clock)
    b.launch([_task(1, 30, nodes=2), _task(2, 5)])
    clock.now += 10
    b.stop(1, 1)
    b.stop(1, 1)
    b.stop(2, 1)  # already over by its own clock: it keeps its 0
    assert sorted(b.poll(), key=lambda e: e.job_id) == [Exit(1, 1, (STOPPED, STOPPED)), Exit(2, 1, (0,))]
    clock.now += 60
    assert b.poll() == []  # the heap entry of its first end is stale: no second exit
    b.stop(9, 1)  # unknown: nothing


def test_poll_pops_only_what_ended(tmp_path: Path, clock: Clock) -> None:
    b = _backend(tmp_path, clock)
    b.launch([_task(i, 1000 + i) for i in range(1, 5001)])
    clock.now += 1000 + 10
    assert [e.job_id for e in b.poll()] == list(range(1, 11))
    assert len(b._heap) == 4990  # the rest were not looked at, let alone popped


def test_each_attempt_ends_once_while_launches_stops_and_polls_race(tmp_path: Path, clock: Clock) -> None:
    b = _backend(tmp_path, clock)
    ended: list[Exit] = []
    stop = threading.Event()

    def poller() -> None:
        while not stop.is_set():
            ended.extend(b.poll())

    thread = threading.Thread(target=poller)
    thread.start()
    for i in range(0, 3000, 100):
        b.launch([_task(j, j % 7) for j in range(i + 1, i + 101)])
        for j in range(i + 1, i + 101, 3):
            b.stop(j, 1)
        clock.now += 1
    clock.now += 10
    wait_for(lambda: len(ended) >= 3000, timeout=30)
    stop.set()
    thread.join()
    assert sorted(e.job_id for e in ended) == list(range(1, 3001))


def test_after_a_restart_each_attempt_is_running_ended_or_unknown(tmp_path: Path, clock: Clock) -> None:
    b = _backend(tmp_path, clock)
    b.launch([_task(1, 100, nodes=2), _task(2, 10), _task(3, 100), _task(4, 100)])
    clock.now += 5
    b.stop(3, 1)
    del b  # killed: nothing closed, nothing flushed beyond what each call wrote
    clock.now += 20
    b = _backend(tmp_path, clock)
    assert b.recover(1, 1, 2) == "running"
    assert b.recover(2, 1, 1) == Exit(2, 1, (0,))  # its duration passed while the server was down
    assert b.recover(3, 1, 1) == Exit(3, 1, (STOPPED,))
    assert b.recover(1, 2, 2) is None and b.recover(99, 1, 1) is None
    assert b.reap_orphans({(1, 1)}) == [(4, 1)]  # not adopted: stopped
    assert b.poll() == []
    clock.now = T0 + 100
    assert b.poll() == [Exit(1, 1, (0, 0))]  # the adopted one ends on its first clock
    b.close()
    b = _backend(tmp_path, clock)
    assert b.recover(4, 1, 1) == Exit(4, 1, (STOPPED,))


def test_a_torn_or_corrupt_line_is_skipped_and_never_stops_start_up(tmp_path: Path, clock: Clock) -> None:
    b = _backend(tmp_path, clock)
    b.launch([_task(1, 100)])
    b.launch([_task(2, 100)])
    b.launch([_task(3, 100)])
    lines = _journal(tmp_path).read_bytes().splitlines(keepends=True)
    assert len(lines) == 3
    corrupt = lines[1].replace(b'"L",2', b'"L",7')  # its CRC no longer matches
    _journal(tmp_path).write_bytes(lines[0] + corrupt + lines[2][:-9] + b"\x00\x00")  # the last write torn
    b = _backend(tmp_path, clock)
    assert b.recover(1, 1, 1) == "running"
    assert [b.recover(j, 1, 1) for j in (2, 3, 7)] == [None, None, None]
    b.launch([_task(4, 100)])  # written after the torn tail was cut away at start
    b = _backend(tmp_path, clock)
    assert b.recover(4, 1, 1) == "running" and b.recover(1, 1, 1) == "running"
    _journal(tmp_path).write_bytes(b"\xff\xfe not a journal at all\n{}\n")
    _backend(tmp_path, clock)


def test_an_end_is_remembered_until_long_after_the_controller_heard_of_it(tmp_path: Path, clock: Clock) -> None:
    b = _backend(tmp_path, clock)
    b.launch([_task(1, 1)])
    clock.now += 2
    assert b.poll() == [Exit(1, 1, (0,))]
    b.launch([])
    b = _backend(tmp_path, clock)  # the server died before committing that end
    assert b.recover(1, 1, 1) == Exit(1, 1, (0,))
    b.reap_orphans(set())
    clock.now += RETAIN_S + 1
    b.launch([_task(2, 5)])  # records are forgotten as launches come
    assert b.recover(1, 1, 1) is None and b.recover(2, 1, 1) == "running"


def test_the_record_is_compacted_as_dead_lines_pile_up(tmp_path: Path, clock: Clock,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(emulated_module, "COMPACT_MIN", 50)
    b = _backend(tmp_path, clock)
    for job_id in range(1, 301):
        b.launch([_task(job_id, 1)])
        clock.now += 2
        b.poll()
        clock.now += RETAIN_S / 10
    b.launch([_task(1000, 1000)])
    lines = len(_journal(tmp_path).read_bytes().splitlines())
    assert lines <= 2 * len(b._runs) + 51 < 300
    b = _backend(tmp_path, clock)
    assert b.recover(1000, 1, 1) == "running" and b.recover(300, 1, 1) == Exit(300, 1, (0,))
    assert len(_journal(tmp_path).read_bytes().splitlines()) == len(b._runs)  # rewritten at start


def test_logs_exist_and_grow_by_appending(tmp_path: Path, clock: Clock) -> None:
    b = _backend(tmp_path, clock)
    b.launch([_task(1, 30, nodes=2)])
    out = b.log_path(1, 1, "stdout")
    started = out.read_text()
    assert started == "emulated: attempt 1 started on n1 GPUs 0,1 (rank 1 of 2): runs 30 s, nothing is executed\n"
    assert b.log_path(1, 1, "stdout").read_text() == started  # asked again: nothing added
    assert b.log_path(1, 0, "stderr").read_text() == ""
    assert not b.log_path(1, 5, "stdout").exists()  # no such rank: nothing is made for it
    assert not b.log_path(42, 0, "stdout").exists()
    clock.now += 31
    b.poll()
    b.launch([_task(1, 10, nodes=2, attempt=2)])
    clock.now += 4
    b.stop(1, 2)
    b.poll()
    text = b.log_path(1, 1, "stdout").read_text()
    assert text.startswith(started) and text.splitlines()[1:] == [
        "emulated: attempt 1 ended after 30 s: exit 0",
        "emulated: attempt 2 started on n1 GPUs 0,1 (rank 1 of 2): runs 10 s, nothing is executed",
        "emulated: attempt 2 ended after 4 s: exit 143 (stopped)"]


def test_cordons_are_kept_as_the_engine_s_drains(tmp_path: Path, clock: Clock) -> None:
    b = _backend(tmp_path, clock)
    assert b.isolation is None and b.drained() == {}
    b.set_node("n1", True, "bad fan")
    b.set_node("n2", True, "")
    b.set_node("n2", False, "")
    assert b.drained() == {"n1": "bad fan"}


def test_make_backend_knows_it(tmp_path: Path) -> None:
    assert "emulated" in BACKENDS
    b = make_backend("emulated", tmp_path / "data", tmp_path / "files")
    assert isinstance(b, EmulatedBackend) and b.name == "emulated"
    b.launch([_task(1, 5)])
    assert b.log_path(1, 0, "stdout").parent.parent == tmp_path / "files" / "jobs"
    # The record lies beside the jobs' files, where a standby server sharing them finds it.
    assert (tmp_path / "files" / "emulated.journal").stat().st_size > 0
