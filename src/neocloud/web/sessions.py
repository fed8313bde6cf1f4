"""The dashboard's login sessions: an opaque random id in the browser, everything else here.

The browser never holds the bearer token, only a session id that is worthless once the session
ends (logout, expiry, idle timeout, a restart). A session keeps the digest of the token it was
opened with, so the dashboard re-resolves the caller on every request: a token revoked or expired
ends its sessions at once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("neocloud.web")

ABSOLUTE_S = 12 * 3600.0  # a session ends this long after login, however busy
IDLE_S = 3600.0  # or this long after its last request
MAX_SESSIONS = 10_000  # the store's bound; the least recently used session goes first
MAX_PER_TOKEN = 32  # so one token's logins cannot push everyone else's sessions out


@dataclass(slots=True)
class Session:
    """One login: whose token (its digest), the CSRF token its forms carry, and when it ends."""

    token_digest: str
    csrf: str
    opened_at: float
    seen_at: float


def _key(session_id: str) -> str:
    # The store is keyed by a hash of the id, so the ids themselves are not kept in memory.
    return hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()


class Sessions:
    """Bounded, in-memory, thread-safe (pages are served from the event loop and from threads)."""

    def __init__(self, absolute_s: float = ABSOLUTE_S, idle_s: float = IDLE_S, limit: int = MAX_SESSIONS,
                 per_token: int = MAX_PER_TOKEN, clock: Callable[[], float] = time.monotonic) -> None:
        self.absolute_s = absolute_s
        self.idle_s = idle_s
        self.limit = limit
        self.per_token = per_token
        self.clock = clock
        self._lock = threading.Lock()
        self._by_key: OrderedDict[str, Session] = OrderedDict()  # least recently seen first

    @classmethod
    def from_env(cls) -> Sessions:
        """Lifetimes from NEOCLOUD_UI_SESSION_S and NEOCLOUD_UI_IDLE_S (seconds), else the defaults."""
        return cls(absolute_s=_seconds("NEOCLOUD_UI_SESSION_S", ABSOLUTE_S), idle_s=_seconds("NEOCLOUD_UI_IDLE_S", IDLE_S))

    def open(self, token_digest: str) -> tuple[str, Session]:
        """A new session for this token: its id (for the cookie) and the session."""
        session_id = secrets.token_urlsafe(32)
        now = self.clock()
        session = Session(token_digest, secrets.token_urlsafe(32), now, now)
        with self._lock:
            self._sweep(now)
            same = [k for k, s in self._by_key.items() if s.token_digest == token_digest]
            for k in same[:max(len(same) - self.per_token + 1, 0)]:
                del self._by_key[k]
            while len(self._by_key) >= self.limit:
                self._by_key.popitem(last=False)
            self._by_key[_key(session_id)] = session
        return session_id, session

    def get(self, session_id: str, *, touch: bool = True) -> Session | None:
        """The live session with this id, if any; `touch` counts this as activity (the idle timer)."""
        if not session_id:
            return None
        key, now = _key(session_id), self.clock()
        with self._lock:
            session = self._by_key.get(key)
            if session is None:
                return None
            if self._ended(session, now):
                del self._by_key[key]
                return None
            if touch:
                session.seen_at = now
                self._by_key.move_to_end(key)
            return session

    def close(self, session_id: str) -> None:
        """End a session (logout)."""
        with self._lock:
            self._by_key.pop(_key(session_id), None)

    def __len__(self) -> int:
        return len(self._by_key)

    def _ended(self, session: Session, now: float) -> bool:
        return now - session.opened_at >= self.absolute_s or now - session.seen_at >= self.idle_s

    def _sweep(self, now: float) -> None:
        for key in [k for k, s in self._by_key.items() if self._ended(s, now)]:
            del self._by_key[key]


def _seconds(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        log.warning("%s must be a positive number of seconds, not %r: using %g", name, raw, default)
        return default
    return value
