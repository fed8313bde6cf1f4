"""One cgroup per rank: every process of the rank in it, so a stop reaches them all (a double fork
or `setsid` does not escape), and the rank's CPU, memory and process limits enforced there.

Works on the unified hierarchy (cgroup v2) and on the hybrid layout many hosts still have (v1
controllers with a v2 tree beside them for tracking): the v2 tree, where there is one, tracks
and kills (`cgroup.kill`); limits go to whichever hierarchy holds each controller. Creating
cgroups needs root (or a delegated subtree); `available()` says whether this host allows it.

    <hierarchy>/neocloud-<instance>/<rank>            one per rank, per hierarchy used
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 100_000  # the CPU quota's period
PIDS_MAX = 16_384  # processes and threads a rank may hold (and all ranks half the host's): a fork bomb stops here


@dataclass(frozen=True, slots=True)
class Limits:
    cpu_milli: int = 0  # 0: no limit
    memory_mib: int = 0  # 0: no limit
    pids: int = PIDS_MAX


def _v2(path: Path) -> bool:
    return (path / "cgroup.controllers").exists()


def _layout() -> tuple[Path | None, dict[str, Path]]:
    """The v2 tree (if any) and, per controller, the hierarchy that holds it."""
    if _v2(ROOT):  # unified: one tree holds every controller it offers
        offered = (ROOT / "cgroup.controllers").read_text().split()
        return ROOT, {c: ROOT for c in ("cpu", "memory", "pids") if c in offered}
    unified = ROOT / "unified"
    v1 = {c: ROOT / c for c in ("cpu", "memory", "pids") if (ROOT / c / "cgroup.procs").exists()}
    return (unified if _v2(unified) else None), v1


def available() -> str | None:
    """Why cgroups cannot be made here, or None if they can."""
    if os.geteuid() != 0:
        return "making cgroups needs root"
    tree, controllers = _layout()
    if tree is None and "pids" not in controllers:
        return f"no cgroup hierarchy to track processes in under {ROOT}"
    return None


class Cgroup:
    """A rank's cgroup in every hierarchy it uses; the first directory tracks its processes."""

    def __init__(self, instance: str, name: str) -> None:
        tree, controllers = _layout()
        self.controllers = {c: h / f"neocloud-{instance}" / name for c, h in controllers.items()}
        tracker = tree if tree is not None else controllers["pids"]
        self.tracker = tracker / f"neocloud-{instance}" / name
        self.dirs = list(dict.fromkeys([self.tracker, *self.controllers.values()]))

    def create(self, limits: Limits) -> None:
        for d in self.dirs:
            if not d.parent.exists():
                d.parent.mkdir(exist_ok=True)
                if d == self.controllers.get("pids"):  # all ranks together leave the host room
                    with contextlib.suppress(OSError):
                        _write(d.parent, "pids.max", str(_host_pids() // 2))
            wanted = " ".join(f"+{c}" for c, cd in self.controllers.items() if cd == d)
            if wanted and _v2(d.parent):  # a v2 controller reaches a cgroup only through its parents
                for level in (d.parent.parent, d.parent):
                    with contextlib.suppress(OSError):
                        (level / "cgroup.subtree_control").write_text(wanted)
            d.mkdir(exist_ok=True)
        self._limit(limits)

    def _limit(self, limits: Limits) -> None:
        mem, cpu, pids = (self.controllers.get(c) for c in ("memory", "cpu", "pids"))
        if (limits.memory_mib and mem is None) or (limits.cpu_milli and cpu is None):
            raise OSError("this host offers no cgroup controller for the rank's memory or CPU limit")
        if limits.memory_mib and mem is not None:
            _write(mem, "memory.max" if _v2(mem) else "memory.limit_in_bytes", str(limits.memory_mib << 20))
        if limits.cpu_milli and cpu is not None:
            quota = max(limits.cpu_milli * PERIOD_US // 1000, 1000)
            if _v2(cpu):
                _write(cpu, "cpu.max", f"{quota} {PERIOD_US}")
            else:
                _write(cpu, "cpu.cfs_period_us", str(PERIOD_US))
                _write(cpu, "cpu.cfs_quota_us", str(quota))
        if pids is not None:
            _write(pids, "pids.max", str(limits.pids))

    def join(self, pid: int) -> None:
        """Put a process (and so all it will start) in the cgroup."""
        for d in self.dirs:
            (d / "cgroup.procs").write_text(str(pid))

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in (self.tracker / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def signal(self, sig: int, spare: AbstractSet[int] = frozenset()) -> int:
        """Send `sig` to every process in the cgroup but those in `spare`; say to how many."""
        sent = 0
        for pid in self.pids():
            if pid not in spare:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
                    sent += 1
        return sent

    def kill(self) -> None:
        """SIGKILL every process in it, at once (`cgroup.kill`), or one by one where that is missing."""
        try:
            (self.tracker / "cgroup.kill").write_text("1")
        except OSError:
            self.signal(signal.SIGKILL)

    def remove(self, wait_s: float = 5.0) -> None:
        """Kill what is left, and remove the directories once empty: the last processes may take a
        moment to exit, and a cgroup cannot go before they have."""
        deadline = time.monotonic() + wait_s
        self.kill()
        for d in self.dirs:
            while True:
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # busy: its last processes are still exiting
                    if time.monotonic() > deadline:
                        raise
                    self.kill()
                    time.sleep(0.005)

    @classmethod
    def leftovers(cls, instance: str) -> list[str]:
        """Names of this instance's rank cgroups that exist now."""
        tree, controllers = _layout()
        tracker = tree if tree is not None else controllers.get("pids")
        if tracker is None:
            return []
        parent = tracker / f"neocloud-{instance}"
        return sorted(p.name for p in parent.iterdir() if p.is_dir()) if parent.is_dir() else []


def _host_pids() -> int:
    try:
        return int(Path("/proc/sys/kernel/pid_max").read_text())
    except (OSError, ValueError):
        return 32_768


def _write(d: Path, name: str, value: str) -> None:
    (d / name).write_text(value)
