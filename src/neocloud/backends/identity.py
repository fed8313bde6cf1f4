"""Each tenant is a Unix user of its own: `nc-<tenant>`, made on first use when neocloud runs as root.

The user database is the record (as for Slurm, whose nodes must resolve a job's user too): an
operator may make the users beforehand (from LDAP, say) and neocloud takes them as they are,
but never one that is root or in root's group. A tenant name that is no valid user name
(capitals, dots, over 32 characters) maps to `ncx-<digest>`. Not as root, every job runs as the
server's own user, and tenants are not kept apart by the kernel: see docs/security.md.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import subprocess
import threading
import time
from dataclasses import dataclass

from neocloud.errors import NeocloudError

PREFIX = "nc-"
_VALID = re.compile(r"^[a-z_][a-z0-9_-]{0,28}$")  # useradd's rule, less the prefix's room
_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class Identity:
    user: str
    uid: int
    gid: int


def user_name(tenant: str) -> str:
    if _VALID.match(tenant):
        return PREFIX + tenant
    return "ncx-" + hashlib.sha256(tenant.encode()).hexdigest()[:16]  # no nc-<name> can take it


def tenant_identity(tenant: str) -> Identity:
    """The tenant's Unix user, made (a system user with no home and no login shell) if missing."""
    name = user_name(tenant)
    with _lock:
        for attempt in range(20):
            try:
                p = pwd.getpwnam(name)
            except KeyError:
                pass
            else:
                if p.pw_uid == 0 or p.pw_gid == 0:
                    raise NeocloudError(f"the Unix user {name} of tenant {tenant!r} is root or in root's group: "
                                        "a tenant's job never runs so; give it a user of its own")
                return Identity(name, p.pw_uid, p.pw_gid)
            done = subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir",
                                   "/nonexistent", "--shell", "/usr/sbin/nologin", "--comment",
                                   f"neocloud tenant {tenant}", name], capture_output=True, text=True)
            if done.returncode not in (0, 9):  # 9: made meanwhile by another process
                if "lock" in done.stderr and attempt < 19:  # another useradd holds /etc/passwd
                    time.sleep(0.05 * (attempt + 1))
                    continue
                raise NeocloudError(f"cannot make the Unix user {name} for tenant {tenant!r}: "
                                    f"{done.stderr.strip() or 'useradd failed'}")
    raise NeocloudError(f"cannot make the Unix user {name} for tenant {tenant!r}: /etc/passwd stays locked")


def server_identity() -> Identity:
    return Identity(pwd.getpwuid(os.getuid()).pw_name, os.getuid(), os.getgid())
