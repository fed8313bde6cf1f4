"""The database: SQLite (WAL) in the data directory by default, PostgreSQL by URL.

Migrations run at start-up, so a data directory from an older release is brought up to date
before anything reads it.
"""

from __future__ import annotations

import os
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from neocloud.errors import NeocloudError

MIGRATIONS = Path(__file__).parent / "migrations"
LOCK_KEY = 0x6E656F636C6F7564 & 0x7FFFFFFFFFFFFFFF  # "neocloud"


def database_url(data_dir: Path, url: str | None = None) -> str:
    """The URL given (or NEOCLOUD_DATABASE_URL), else SQLite in the data directory."""
    url = url or os.environ.get("NEOCLOUD_DATABASE_URL")
    if url:
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url.removeprefix("postgresql://")  # the driver we ship
        return url
    return f"sqlite:///{(data_dir / 'neocloud.db').resolve()}"


def connect(url: str) -> Engine:
    """An engine for `url`, migrated to the latest schema."""
    if not url.startswith(("sqlite", "postgresql")):
        raise NeocloudError(f"database URL {_safe(url)!r}: neocloud keeps its state in SQLite or PostgreSQL; "
                            "give sqlite:////path/to/file.db or postgresql://user:password@host/database")
    try:
        if url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
            event.listen(engine, "connect", _sqlite_pragmas)
            event.listen(engine, "begin", _sqlite_begin)
        else:
            engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
        migrate(engine)
    except ArgumentError as e:
        raise NeocloudError(f"database URL {url!r} is not valid: {e}") from None
    except ModuleNotFoundError as e:
        raise NeocloudError(f"database URL {url!r} needs the {e.name!r} driver: "
                            "pip install 'neocloud[postgres]'") from None
    except OperationalError as e:
        raise NeocloudError(f"cannot open the database at {_safe(url)}: {e.orig}") from None
    return engine


def sessions(engine: Engine) -> sessionmaker[Session]:
    # No autoflush: the controller writes many rows a turn and flushes them together at commit.
    return sessionmaker(engine, expire_on_commit=False, autoflush=False)


def migrate(engine: Engine) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001 - DB-API connection
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")  # a commit is on disk before the API acknowledges it
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
    # The driver's own transaction handling would commit under a SAVEPOINT (each controller
    # command runs in one): SQLAlchemy emits BEGIN itself instead (its documented pysqlite recipe).
    dbapi_conn.isolation_level = None


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN")


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    head, sep, tail = url.partition("@")
    if not sep or "://" not in head:
        return url
    scheme, _, cred = head.partition("://")
    return f"{scheme}://{cred.split(':')[0]}:***@{tail}"
