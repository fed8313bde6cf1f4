"""Several servers on one PostgreSQL database: one leads, the others stand by.

The leader is whoever holds a session-level advisory lock; PostgreSQL lets it go the moment the
leader's connection drops (its process killed, its host gone), and a standby polling for it takes
over within `poll_s`. Taking over bumps an epoch in the `leadership` row, and each turn of the
leader's loop checks the epoch is still its own inside the turn's transaction (`fence`): a server
that lost the lead without noticing (a network partition) fails its next turn instead of writing
beside the new leader. On SQLite the data directory's lock already makes one server the only one.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time

from sqlalchemy import Connection, Engine, select, text, update
from sqlalchemy.orm import Session

from neocloud.errors import NeocloudError
from neocloud.store.database import LOCK_KEY
from neocloud.store.tables import Leadership as Row

POLL_S = 1.0  # how often a standby tries for the lead


class LostLeadership(NeocloudError):
    """Another server took the lead: this one must not write."""


class Leadership:
    def __init__(self, engine: Engine, poll_s: float = POLL_S) -> None:
        self.engine, self.poll_s = engine, poll_s
        self.shared = engine.dialect.name == "postgresql"  # several servers may share the database
        self.url = ""  # where this server answers, told to clients of a standby
        self.holder = f"{socket.gethostname()} pid {os.getpid()}"
        self.epoch: int | None = None  # ours while we lead
        self._conn: Connection | None = None  # holds the advisory lock

    @property
    def leading(self) -> bool:
        return self.epoch is not None

    def try_lead(self) -> bool:
        """Take the lead if no one holds it; bump the epoch if so."""
        if self.shared and not self._lock():
            return False
        with Session(self.engine) as s, s.begin():
            row = s.get(Row, 1, with_for_update=True)
            if row is None:
                row = Row(id=1, epoch=0, holder="", url="", since=0.0)
                s.add(row)
            row.epoch += 1
            row.holder, row.url, row.since = self.holder, self.url, time.time()
            self.epoch = row.epoch
        return True

    def wait_to_lead(self, halt: threading.Event) -> bool:
        """Block until this server leads (True), or `halt` is set (False)."""
        self.epoch = None
        while not halt.is_set():
            try:
                if self.try_lead():
                    return True
            except Exception:  # noqa: BLE001 - the database is down: try again later
                self._drop()
            halt.wait(self.poll_s)
        return False

    def fence(self, s: Session) -> None:
        """Inside a turn's transaction: raise LostLeadership unless the epoch is still ours. The row
        stays locked until the turn commits, so a takeover waits for the turn or comes before it."""
        if not self.shared:
            return
        done = s.execute(update(Row).where(Row.id == 1, Row.epoch == self.epoch).values(since=Row.since))
        if done.rowcount != 1:  # type: ignore[attr-defined]
            self.epoch = None
            raise LostLeadership("another server took the lead")

    def leader(self) -> tuple[str, str] | None:
        """(holder, url) of the server that leads, as the store says."""
        with Session(self.engine) as s:
            row = s.execute(select(Row.holder, Row.url).where(Row.id == 1)).first()
        return None if row is None else (row[0], row[1])

    def release(self) -> None:
        self.epoch = None
        self._drop()

    def _lock(self) -> bool:
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT 1"))
                self._conn.commit()
                return True  # still ours: a session's advisory lock lives as long as its connection
            except Exception:  # noqa: BLE001 - the connection died, and the lock with it
                self._drop()
        conn = self.engine.connect()
        if conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": LOCK_KEY}).scalar():
            conn.commit()
            self._conn = conn
            return True
        conn.close()
        return False

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):  # already gone
                self._conn.invalidate()
                self._conn.close()
            self._conn = None
