"""Who listens on a TCP port of this host: the kernel's socket tables (/proc/net/tcp and tcp6),
which give each socket's owner. Every tenant's rank runs as the tenant's own user, so a port a
replica was given and another tenant's process holds is told apart before any request goes there."""

from __future__ import annotations

from pathlib import Path

LISTEN = "0A"  # the socket state, in the tables' hex
TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))


def listening_uids(port: int, tables: tuple[Path, ...] = TABLES) -> set[int]:
    """The users whose sockets listen on `port`, on any address of this host's network namespace."""
    uids: set[int] = set()
    for table in tables:
        try:
            lines = table.read_text().splitlines()[1:]
        except OSError:  # no IPv6, say
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 7 and fields[3] == LISTEN and int(fields[1].rpartition(":")[2], 16) == port:
                uids.add(int(fields[7]))
    return uids
