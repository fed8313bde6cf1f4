"""kill -9 of the server, while jobs are being submitted and run: every acknowledged job is there
in the end, and each ran exactly once (local processes and the emulated engine alike). Ten rounds
on each backend, twenty kills in all: each round costs a server start."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from neocloud.client import Client
from neocloud.errors import NeocloudError
from tests.api.conftest import ADMIN, FLEET, Server, serving, wait_for

ROUNDS = 10


@pytest.mark.parametrize("backend", ["local", "emulated"])
def test_ten_kill_9_rounds_under_load_on_each_backend(tmp_path: Path, backend: str) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEET)
    args = ("--fleet", str(fleet)) if backend == "emulated" else ()
    # A local job says so on stderr (kept across attempts); an emulated one in its log.
    spec = {"name": "load", "gpus": 1, "command": "echo ran $NEOCLOUD_ATTEMPT >&2; sleep 0.3",
            "estimated_duration": 0.3}
    with serving(Server(tmp_path / "data", None, backend=backend, args=args)) as srv:
        acknowledged: list[int] = []
        stop = threading.Event()

        def submit() -> None:
            c = Client(srv.url, ADMIN, timeout=5)
            while not stop.wait(0.1):
                try:
                    acknowledged.append(c.submit(spec)["id"])
                except NeocloudError:
                    pass  # the server is down: not acknowledged, so not owed

        load = threading.Thread(target=submit)
        load.start()
        try:
            for _ in range(ROUNDS):
                seen = len(acknowledged)
                wait_for(lambda: len(acknowledged) >= seen + 3, timeout=60)  # it takes work before each kill
                srv.kill9()
                srv.start()
        finally:
            stop.set()
            load.join()
        c = srv.client()
        for job_id in acknowledged:  # each one there (a lost one answers 404), and done
            assert c.wait(job_id, timeout=120)["state"] == "COMPLETED"
            if backend == "local":
                runs = c.logs(job_id, stream="stderr")["text"].count("ran")
            else:
                runs = c.logs(job_id)["text"].count(" started on ")
            assert runs == 1, (job_id, c.events(job_id))
        assert len(acknowledged) >= 3 * ROUNDS
