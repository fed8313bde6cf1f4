"""Bearer tokens: the admin's (from the environment or the data directory) and tenants' (hashed,
revocable, optionally expiring); failed attempts are limited per client address."""

from __future__ import annotations

import hmac
import ipaddress
import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, Request

from neocloud.control.controller import digest

log = logging.getLogger("neocloud.auth")
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}  # calls the audit log records, answered or refused
NO_TOKEN = "no bearer token: send 'Authorization: Bearer TOKEN'. "
UNKNOWN_TOKEN = "unknown, expired or revoked bearer token. "
KEY_ELSEWHERE = ("a service key calls only its service, at /v1/services/TENANT/NAME/ (the gateway), never the rest "
                 "of the API. ")
GET_A_TOKEN = ("A tenant's token comes from its operator (`neocloud tenants token TENANT` with the admin token); "
               "the CLI takes it with `neocloud login --token TOKEN` or NEOCLOUD_TOKEN")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the admin, or one tenant."""

    tenant: str | None  # None for the admin

    @property
    def admin(self) -> bool:
        return self.tenant is None

    @property
    def name(self) -> str:
        return "admin" if self.tenant is None else self.tenant


def identify(request: Request, service: str | None = None) -> Principal | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return holder(request, token, service)


def holder(request: Request, token: str, service: str | None = None) -> Principal | None:
    """Whose token this is, if anyone's (and if it is neither revoked nor expired); a service key
    is someone's only for a call to its `service`."""
    if not token.strip():
        return None
    return principal_of_digest(request, digest(token.strip()), service)


async def caller(request: Request) -> Principal:
    """Any valid token (FastAPI dependency; async, as it never blocks, so it runs on the loop).

    A valid token is never refused: clients sharing an address (every job on a host shares its
    loopback) cannot lock each other out. Failures are counted per address and audited; past the
    limit they are answered 429 and no longer audited, so a flood of them costs little."""
    return authenticate(request, None)


def authenticate(request: Request, service: str | None) -> Principal:
    """The caller of the API (`service` None) or of a service at the gateway, where its keys hold too."""
    who = identify(request, service)
    if who is None:
        sent = request.headers.get("authorization", "").strip()
        if sent:  # a credential that did not hold
            check_rate(request)
            note_failure(request)
        key = sent.startswith("Bearer nck_") and request.app.state.service.controller.is_service_key(
            digest(sent.partition(" ")[2].strip()))
        raise HTTPException(401, (KEY_ELSEWHERE if key else UNKNOWN_TOKEN if sent else NO_TOKEN) + GET_A_TOKEN,
                            headers={"WWW-Authenticate": "Bearer"})
    return who


async def admin(request: Request) -> Principal:
    """The admin token only (FastAPI dependency)."""
    who = await caller(request)
    if not who.admin:
        raise HTTPException(403, f"this needs the admin token, and this token is tenant {who.tenant}'s: the "
                                 "admin token is the server's NEOCLOUD_ADMIN_TOKEN, or admin.token in its data "
                                 "directory (`neocloud login --token T` saves it)")
    return who


def principal_of_digest(request: Request, token_digest: str, called: str | None = None) -> Principal | None:
    """Whose token has this digest, if it is still valid: the dashboard's sessions keep the digest,
    never the token, and re-resolve it on every request so a revoked token stops working at once.
    `called`: the service a gateway request is for, where that service's keys hold too."""
    service = request.app.state.service
    if hmac.compare_digest(token_digest, service.admin_digest):
        return Principal(None)
    tenant = service.controller.tenant_of(token_digest, called)
    return Principal(tenant) if tenant is not None else None


class FailureLimit:
    """Failed authentications per client address in a sliding window: after `limit` failures
    within `window_s`, the address is refused until the oldest of them is `window_s` old.

    Memory is bounded: at most `max_clients` addresses are tracked (the least recently failed
    forgotten first), each with at most `limit` times."""

    def __init__(self, limit: int = 10, window_s: float = 60.0, max_clients: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window_s, self.max_clients, self.clock = limit, window_s, max_clients, clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._refused: set[str] = set()  # addresses refused in their current block (audited once)
        self._lock = threading.Lock()

    def retry_after(self, client: str) -> float:
        """Seconds until this address may try again; 0 if it may now."""
        with self._lock:
            times = self._failures.get(client)
            if times is None:
                return 0.0
            now = self.clock()
            while times and times[0] <= now - self.window_s:
                times.popleft()
            if len(times) < self.limit:
                self._refused.discard(client)
                if not times:
                    del self._failures[client]
                return 0.0
            return times[0] + self.window_s - now

    def fail(self, client: str) -> None:
        """Count one failed attempt from this address."""
        with self._lock:
            times = self._failures.pop(client, None) or deque(maxlen=self.limit)
            times.append(self.clock())
            self._failures[client] = times  # the most recent last
            while len(self._failures) > self.max_clients:
                forgotten, _ = self._failures.popitem(last=False)
                self._refused.discard(forgotten)

    def first_refusal(self, client: str) -> bool:
        """Whether this is the first refusal of the address's current block (the one audited)."""
        with self._lock:
            if client in self._refused:
                return False
            self._refused.add(client)
            return True


def limiter(request: Request) -> FailureLimit:
    """The app's failure limit (made on first use, with the defaults)."""
    state = request.app.state
    if getattr(state, "auth_failures", None) is None:
        state.auth_failures = FailureLimit()
    return state.auth_failures


def client_address(request: Request) -> str:
    return request.client.host if request.client else ""


def client_key(request: Request) -> str:
    """Whose failures count together: an IPv4 address, an IPv6 /64 (one host's), all of loopback."""
    try:
        ip = ipaddress.ip_address(client_address(request))
    except ValueError:
        return client_address(request)
    if ip.is_loopback:
        return "loopback"
    return str(ipaddress.ip_network(f"{ip}/64", strict=False)) if ip.version == 6 else str(ip)


def check_rate(request: Request) -> None:
    """Refuse (429, with Retry-After in seconds) a failed authentication from a client address that
    failed too often lately. For every way in: the API's bearer tokens, the dashboard's login form."""
    client = client_key(request)
    wait = limiter(request).retry_after(client)
    if wait <= 0:
        return
    if limiter(request).first_refusal(client):
        _audit(request, 429, f"too many failed authentications from {client}: refused for {math.ceil(wait)} s")
    raise HTTPException(429, f"too many failed authentications from this address; try again in {math.ceil(wait)} s",
                        headers={"Retry-After": str(max(1, math.ceil(wait)))})


def note_failure(request: Request, status: int = 401) -> None:
    """Count a failed authentication from the request's address, and audit it."""
    limiter(request).fail(client_key(request))
    _audit(request, status, "unknown, expired or revoked credential")


def _audit(request: Request, status: int, detail: str) -> None:
    """Audit a refusal; POST, PUT, PATCH and DELETE are audited anyway, with their answer."""
    if request.method in MUTATING:
        return
    entry = {"actor": "anonymous", "method": request.method, "path": request.url.path[:2048],
             "client": client_address(request)[:255], "status": status, "detail": detail}
    request.app.state.service.controller.audit(entry).add_done_callback(unrecorded(entry))


def unrecorded(entry: dict[str, Any]) -> Callable[[Future], None]:
    """A done-callback for an audit entry queued to the controller: the entry is logged if the
    controller could not keep it, so that no audited call goes unrecorded silently."""

    def done(future: Future) -> None:
        if future.exception() is not None:
            log.error("audit entry not recorded: %s", entry)

    return done
