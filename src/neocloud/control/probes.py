"""Readiness probes: each replica that listens is asked its readiness path (an HTTP GET, 2xx or
3xx is ready) every PROBE_S, off the loop, many at once; the answers go to `Endpoints`, whose
changes the loop reads at its next turn."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx

from neocloud.control.endpoints import Endpoints

PROBE_S = 0.5
TIMEOUT_S = 2.0
WORKERS = 16


class Prober:
    def __init__(self, endpoints: Callable[[], Endpoints]) -> None:
        self.endpoints = endpoints  # the controller's current table (it is rebuilt after a store failure)
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="neocloud-probe")
        self._http = httpx.Client(timeout=TIMEOUT_S, follow_redirects=False, trust_env=False)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="neocloud-prober", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._halt.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._http.close()

    def _run(self) -> None:
        while not self._halt.wait(PROBE_S):
            table = self.endpoints()
            targets = table.targets()
            for (service_id, job_id, _), ok in zip(targets, self._pool.map(self._probe, [t[2] for t in targets])):
                table.probed(service_id, job_id, ok)

    def _probe(self, url: str) -> bool:
        try:
            return self._http.get(url).status_code < 400
        except httpx.HTTPError:
            return False
