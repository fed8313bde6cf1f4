"""Readiness probes: each replica that listens is asked its readiness path (an HTTP GET, 2xx or
3xx is ready) every PROBE_S, off the loop, many at once; the answers go to `Endpoints`, whose
changes the loop reads at its next turn.

When a replica that is not ready answers its probe, the backend is asked whether what listens at
its address is its tenant's own, before it takes requests: another tenant's process that took the
port the replica was given (before it listened, or after it died) would otherwise get its callers'
requests. Once the tenant's own listener holds the port, no other user's socket can take it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx

from neocloud.control.endpoints import Endpoints, Target
from neocloud.errors import NeocloudError

log = logging.getLogger("neocloud.probes")
PROBE_S = 0.5
TIMEOUT_S = 2.0
WORKERS = 16
Owner = Callable[[str, str], bool | None]  # (tenant, address): is what listens there the tenant's (None: none)
NOT_ITS_OWN = "what listens at its address is not its tenant's: another tenant's process holds the port"


class Prober:
    def __init__(self, endpoints: Callable[[], Endpoints], owner: Owner | None = None) -> None:
        self.endpoints = endpoints  # the controller's current table (it is rebuilt after a store failure)
        self.owner = owner  # None: the backend cannot tell, and any listener is taken for the replica
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
            for t, (ok, problem) in zip(targets, self._pool.map(self._probe, targets)):
                if problem is not None and problem != t.problem:
                    log.warning("service replica job %d at %s: %s", t.job_id, t.address, problem)
                table.probed(t.service_id, t.job_id, ok, problem)

    def _probe(self, t: Target) -> tuple[bool, str | None]:
        try:
            ok = self._http.get(t.url).status_code < 400
        except httpx.HTTPError:
            return False, None
        if not ok or t.ready or self.owner is None:
            return ok, None
        try:
            own = self.owner(t.tenant, t.address)
        except (OSError, ValueError, NeocloudError) as e:
            return False, f"cannot tell whose its listener is: {e}"
        return (True, None) if own else (False, None) if own is None else (False, NOT_ITS_OWN)
