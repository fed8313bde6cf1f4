"""Where each service's replicas listen, which are ready, and what each is carrying: the one
table the loop, the readiness prober and the gateway share, each from its own thread.

The loop writes the replicas (started, moved, gone) and what each service wants; the prober
writes readiness; the gateway picks a replica and counts its requests in flight. A replica being
drained takes no new request, and the loop stops it once those it carries are answered."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import NamedTuple

FAILS_TO_UNREADY = 2  # probes in a row that fail before a ready replica leaves the rotation


@dataclass(slots=True)
class Endpoint:
    service_id: int
    job_id: int
    generation: int
    address: str | None = None  # host:port while it runs
    ready: bool = False
    draining: bool = False
    in_flight: int = 0
    served: int = 0  # requests answered, for the autoscaler's rate
    fails: int = 0  # probes in a row that failed
    problem: str | None = None  # why its last probe was not even sent


class Target(NamedTuple):
    """A replica to probe."""

    service_id: int
    job_id: int
    tenant: str
    address: str
    url: str
    ready: bool
    problem: str | None


@dataclass(slots=True)
class Route:
    """A service as the gateway sees it."""

    id: int
    tenant: str
    name: str
    readiness: str  # the probe's path
    wake_on_request: bool  # it may scale to zero: a request asks for a replica and waits for it
    model: str  # what its answers' tokens are priced as: the spec's model, else the service's name
    replicas: dict[int, Endpoint] = field(default_factory=dict)
    woken: bool = False  # a request found no replica ready and asked for one
    waiting: int = 0  # requests waiting for a replica to be ready
    served: int = 0  # requests answered by replicas gone since, for the autoscaler's rate


class Endpoints:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._routes: dict[tuple[str, str], Route] = {}
        self._by_id: dict[int, Route] = {}
        self._changed: set[int] = set()  # services whose replicas' readiness changed, or that were woken

    # -- the loop's ---------------------------------------------------------------------------
    def set_service(self, service_id: int, tenant: str, name: str, readiness: str, wake_on_request: bool,
                    model: str) -> None:
        with self._lock:
            route = self._by_id.get(service_id)
            if route is None:
                route = Route(service_id, tenant, name, readiness, wake_on_request, model)
                self._by_id[service_id] = self._routes[(tenant, name)] = route
            route.readiness, route.wake_on_request, route.model = readiness, wake_on_request, model

    def drop_service(self, service_id: int) -> None:
        with self._lock:
            route = self._by_id.pop(service_id, None)
            if route is not None:
                self._routes.pop((route.tenant, route.name), None)

    def set_replica(self, service_id: int, job_id: int, generation: int, address: str | None) -> None:
        """A replica added, or placed anew (address None while it waits in the queue)."""
        with self._lock:
            route = self._by_id[service_id]
            ep = route.replicas.get(job_id)
            if ep is None:
                ep = route.replicas[job_id] = Endpoint(service_id, job_id, generation)
            if ep.address != address:
                ep.address, ep.ready, ep.fails = address, False, 0

    def drain(self, service_id: int, job_id: int) -> None:
        with self._lock:
            ep = self._by_id[service_id].replicas.get(job_id)
            if ep is not None:
                ep.draining = True

    def drop_replica(self, service_id: int, job_id: int) -> None:
        with self._lock:
            route = self._by_id.get(service_id)
            if route is not None and (ep := route.replicas.pop(job_id, None)) is not None:
                route.served += ep.served

    def load(self, service_id: int) -> tuple[int, int, int]:
        """The service's requests in flight, those waiting for a replica, and those answered so far."""
        with self._lock:
            route = self._by_id.get(service_id)
            if route is None:
                return 0, 0, 0
            eps = route.replicas.values()
            return sum(e.in_flight for e in eps), route.waiting, route.served + sum(e.served for e in eps)

    def take_changed(self) -> set[int]:
        with self._lock:
            changed, self._changed = self._changed, set()
            return changed

    def replicas(self, service_id: int) -> list[Endpoint]:
        """A copy of the service's replicas, as they are now."""
        with self._lock:
            route = self._by_id.get(service_id)
            return [] if route is None else [Endpoint(**{k: getattr(e, k) for k in Endpoint.__slots__})
                                             for e in route.replicas.values()]

    def take_woken(self, service_id: int) -> bool:
        with self._lock:
            route = self._by_id.get(service_id)
            woken = route is not None and route.woken
            if woken:
                route.woken = False  # type: ignore[union-attr]
            return woken

    # -- the prober's -------------------------------------------------------------------------
    def targets(self) -> list[Target]:
        """Every replica that listens somewhere and is not being drained."""
        with self._lock:
            return [Target(r.id, e.job_id, r.tenant, e.address, f"http://{e.address}{r.readiness}", e.ready, e.problem)
                    for r in self._by_id.values() for e in r.replicas.values()
                    if e.address is not None and not e.draining]

    def probed(self, service_id: int, job_id: int, ok: bool, problem: str | None = None) -> None:
        with self._lock:
            route = self._by_id.get(service_id)
            ep = None if route is None else route.replicas.get(job_id)
            if ep is None:
                return
            ep.fails = 0 if ok else ep.fails + 1
            ep.problem = problem
            ready = ok or (ep.ready and ep.fails < FAILS_TO_UNREADY and problem is None)
            if ready != ep.ready:
                ep.ready = ready
                self._changed.add(service_id)

    # -- the gateway's ------------------------------------------------------------------------
    def route(self, tenant: str, name: str) -> Route | None:
        with self._lock:
            return self._routes.get((tenant, name))

    def pick(self, route: Route, tried: set[tuple[int, str]]) -> Endpoint | None:
        """The ready replica carrying least, of those (replica, address) not tried yet for this request."""
        with self._lock:
            ready = [e for e in route.replicas.values()
                     if e.ready and not e.draining and e.address is not None and (e.job_id, e.address) not in tried]
            if not ready:
                return None
            ep = min(ready, key=lambda e: (e.in_flight, e.served))
            ep.in_flight += 1
            return ep

    def done(self, ep: Endpoint) -> None:
        with self._lock:
            ep.in_flight -= 1
            ep.served += 1
            if ep.draining and ep.in_flight == 0:
                self._changed.add(ep.service_id)

    def wait(self, route: Route, by: int) -> None:
        """A request starts (1) or stops (-1) waiting for a replica; one that may scale from zero is
        asked for at once."""
        with self._lock:
            route.waiting += by
            if by > 0 and route.wake_on_request and not route.woken:
                route.woken = True
                self._changed.add(route.id)
