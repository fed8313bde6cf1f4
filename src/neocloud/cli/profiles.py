"""Saved logins: a server and token by name, kept in the user's config directory
($XDG_CONFIG_HOME/neocloud/config.yaml, default ~/.config/neocloud/), so that a shell needs no
NEOCLOUD_* variable. The file is the user's alone (mode 600, its directory 700) and written
whole or not at all. Which server and token a command uses is decided here, and where each came
from is kept so that `whoami` and the errors can say it."""

from __future__ import annotations

import os
import re
import stat
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from neocloud.client import DEFAULT_SERVER, local_admin_token_path
from neocloud.errors import NeocloudError

PROFILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
DEFAULT_PROFILE = "default"


def config_dir() -> Path:
    """$XDG_CONFIG_HOME/neocloud, or ~/.config/neocloud (a relative XDG_CONFIG_HOME is ignored, as
    the XDG spec says)."""
    base = os.environ.get("XDG_CONFIG_HOME", "")
    root = Path(base) if base and Path(base).is_absolute() else Path("~/.config").expanduser()
    return root / "neocloud"


def config_path() -> Path:
    return config_dir() / "config.yaml"


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    server: str
    token: str


@dataclass(slots=True)
class Config:
    """The saved profiles and which one is current."""

    profiles: dict[str, Profile]
    current: str | None = None


def check_name(name: str) -> str:
    if not PROFILE_NAME.match(name):
        raise NeocloudError(f"profile name {name!r}: use letters, digits, '.', '_' or '-' (up to 63), "
                            "starting with a letter or digit")
    return name


def load() -> Config:
    """The saved profiles (none if there is no file yet)."""
    path = config_path()
    try:
        raw = yaml.safe_load(path.read_text())
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return Config({})
    except OSError as e:
        raise NeocloudError(f"cannot read {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise NeocloudError(f"{path} is not valid YAML ({e}); fix it, or delete it and `neocloud login` "
                            "again") from None
    if mode & 0o077:
        print(f"warning: {path} holds tokens and others may read it (mode {mode:o}): chmod 600 {path}",
              file=sys.stderr)
    raw = raw or {}
    entries = raw.get("profiles") if isinstance(raw, dict) else None
    if not isinstance(entries, dict) or not all(isinstance(v, dict) for v in entries.values()):
        raise NeocloudError(f"{path}: expected 'profiles:' mapping names to a server and a token; fix it, or "
                            "delete it and `neocloud login` again")
    profiles = {str(k): Profile(str(k), str(v.get("server") or DEFAULT_SERVER), str(v.get("token") or ""))
                for k, v in entries.items()}
    current = raw.get("current")
    return Config(profiles, str(current) if current in profiles else None)


def save(config: Config) -> Path:
    """Write the profiles atomically (a temporary file in the same directory, renamed over the
    old one), readable by the user alone."""
    directory = config_dir()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    body: dict[str, Any] = {"current": config.current,
                            "profiles": {p.name: {"server": p.server, "token": p.token}
                                         for p in config.profiles.values()}}
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".config.", suffix=".tmp")  # mode 600
    try:
        with os.fdopen(fd, "w") as f:
            f.write("# neocloud's saved logins (`neocloud login`): holds tokens, keep it private\n")
            yaml.safe_dump(body, f, sort_keys=False)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, config_path())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return config_path()


@dataclass(frozen=True, slots=True)
class Credentials:
    """The server and token a command uses, and where each came from (for whoami and errors)."""

    servers: str
    server_from: str
    token: str | None
    token_from: str
    profile: str | None  # the profile consulted, if any

    @property
    def server(self) -> str:
        return self.servers.split(",")[0].strip().rstrip("/")


def same_server(a: str, b: str) -> bool:
    """Whether two --server values name the same servers."""
    norm = lambda s: [u.strip().rstrip("/") for u in s.split(",") if u.strip()]  # noqa: E731
    return norm(a) == norm(b)


def chosen_profile(config: Config, name: str | None) -> tuple[Profile | None, str]:
    """The profile to use: --profile, else NEOCLOUD_PROFILE, else the current one; a named one
    that does not exist is an error, not a silent fall back to another server."""
    how = "--profile"
    if name is None and os.environ.get("NEOCLOUD_PROFILE"):
        name, how = os.environ["NEOCLOUD_PROFILE"], "NEOCLOUD_PROFILE"
    if name is None:
        return (config.profiles[config.current], "current") if config.current else (None, "")
    if name not in config.profiles:
        known = ", ".join(sorted(config.profiles)) or "none yet"
        raise NeocloudError(f"no profile {name!r} ({how}) in {config_path()} (profiles: {known}); "
                            f"`neocloud login --profile {name}` makes it")
    return config.profiles[name], how


def resolve(server: str | None, token: str | None, profile: str | None = None) -> Credentials:
    """Flags first, then NEOCLOUD_SERVER / NEOCLOUD_TOKEN, then the profile, then (for the token)
    the admin token of a server on this machine. A profile's token goes only to its own server:
    pointed elsewhere, a command does not send it."""
    saved, _ = chosen_profile(load(), profile)
    label = f"profile {saved.name!r}" if saved else ""
    if server:
        servers, server_from = server, "--server"
    elif os.environ.get("NEOCLOUD_SERVER"):
        servers, server_from = os.environ["NEOCLOUD_SERVER"], "NEOCLOUD_SERVER"
    elif saved:
        servers, server_from = saved.server, label
    else:
        servers, server_from = DEFAULT_SERVER, "the default"
    found: str | None
    if token:
        found, token_from = token, "--token"
    elif os.environ.get("NEOCLOUD_TOKEN"):
        found, token_from = os.environ["NEOCLOUD_TOKEN"], "NEOCLOUD_TOKEN"
    elif saved and saved.token and same_server(saved.server, servers):
        found, token_from = saved.token, label
    else:
        found, token_from = local_admin_token()
        if found is None and saved and saved.token:
            token_from = f"none ({label} keeps its token for {saved.server} alone)"
    return Credentials(servers, server_from, found, token_from, saved.name if saved else None)


def local_admin_token(directory: str | Path | None = None) -> tuple[str | None, str]:
    """The admin token a server on this machine wrote to its data directory, and where it is."""
    path = local_admin_token_path(directory)
    try:
        found = path.read_text().strip() or None
    except OSError:
        found = None
    return (found, f"the local admin token ({path})") if found else (None, "none")
