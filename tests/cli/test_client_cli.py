"""The client commands as a user runs them: a real `neocloud` process against a real server, with
a home of its own and no NEOCLOUD_* variable; login, profiles, --json, piped tables, submit --wait
and --follow, why a job failed, logs' ranks and hints, and 401s that name the fix."""

from __future__ import annotations

import json
import os
import select
import shlex
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import ADMIN, Server, serving, wait_for

ENTRY = Path(sys.executable).with_name("neocloud")
NEOCLOUD = [str(ENTRY)] if ENTRY.exists() else [sys.executable, "-m", "neocloud"]
LONG_NAME = "a-training-run-whose-name-is-long-enough-to-overflow-80-columns"  # 63, the longest allowed


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the module: each test counts what it adds, under names of its own."""
    with serving(Server(tmp_path_factory.mktemp("cli") / "data", None)) as s:
        yield s


class User:
    """A shell of a user with a home of their own: no NEOCLOUD_* variable, no COLUMNS."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("NEOCLOUD_") and k != "COLUMNS"}
        self.env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"))

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*NEOCLOUD, *args], capture_output=True, text=True, env={**self.env, **env},
                              timeout=120)

    def ok(self, *args: str, **env: str) -> str:
        done = self.run(*args, **env)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def json(self, *args: str, **env: str) -> Any:
        """A command's --json, run in this process (a fresh interpreter costs a second) with the
        same environment as `run`: nothing else may be on its stdout."""
        from typer.testing import CliRunner

        from neocloud.cli.main import app

        clean: dict[str, str | None] = {k: None for k in os.environ if k.startswith("NEOCLOUD_") or k == "COLUMNS"}
        result = CliRunner().invoke(app, [*args, "--json"], env={**clean, **self.env_delta, **env})
        assert result.exit_code == 0, (result.output, result.exception)
        return json.loads(result.stdout)

    @property
    def env_delta(self) -> dict[str, str]:
        return {"HOME": self.env["HOME"], "XDG_CONFIG_HOME": self.env["XDG_CONFIG_HOME"]}

    @property
    def config(self) -> Path:
        return self.home / ".config" / "neocloud" / "config.yaml"


@pytest.fixture
def user(tmp_path: Path) -> User:
    return User(tmp_path / "home")


def _spec(tmp_path: Path, name: str, command: str, **more: Any) -> Path:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"name": name, "command": command, **more}))
    return path


def test_login_once_then_commands_need_no_environment(srv: Server, user: User) -> None:
    out = user.ok("login", "--server", srv.url, "--token", ADMIN)
    assert f"logged in to {srv.url} as the admin (token from --token)" in out and "profile 'default'" in out
    assert stat.S_IMODE(user.config.stat().st_mode) == 0o600
    assert stat.S_IMODE(user.config.parent.stat().st_mode) == 0o700
    job = srv.client().wait(srv.client().submit({"name": "after-login", "command": "true"})["id"])
    listed = user.json("jobs")
    assert listed == srv.client().jobs(limit=50)
    assert job["id"] in [j["id"] for j in listed]
    me = user.json("whoami")
    assert (me["server"], me["server_from"], me["token_from"], me["admin"]) == \
        (srv.url, "profile 'default'", "profile 'default'", True)
    assert "forgot profile 'default'" in user.ok("logout")
    after = user.run("whoami", "--json")  # forgotten: the default server, and no token to send it
    assert after.returncode == 1
    assert json.loads(after.stdout) | {"error": None} == {"server": "http://127.0.0.1:8420", "servers":
                                                           "http://127.0.0.1:8420", "server_from": "the default",
                                                           "token_from": "none", "profile": None, "admin": None,
                                                           "tenant": None, "error": None}


def test_up_says_how_to_log_in_and_that_login_takes_its_admin_token(tmp_path: Path, user: User) -> None:
    with serving(Server(tmp_path / "data", None, env={"NEOCLOUD_ADMIN_TOKEN": ""})) as own:  # writes admin.token
        banner = wait_for(lambda: [line for line in own.log.read_text().splitlines() if "log in from any shell" in line])
        suggested = shlex.split(banner[0].split("log in from any shell: ", 1)[1])
        assert suggested == ["neocloud", "login", "--server", own.url, "--data-dir", str(own.data_dir)]
        out = user.ok(*suggested[1:])
        assert "as the admin" in out and f"the local admin token ({own.data_dir / 'admin.token'})" in out
        assert user.json("whoami")["admin"] is True
        (user.home / ".neocloud").mkdir(parents=True)  # the default data directory: found with no flag
        (user.home / ".neocloud" / "admin.token").write_text((own.data_dir / "admin.token").read_text())
        user.ok("logout")
        assert "as the admin" in user.ok("login", "--server", own.url)
        with_show = user.ok("login", "--show")
        assert f"server  {own.url} (from profile 'default')" in with_show and "as      the admin" in with_show


def test_flags_beat_the_environment_which_beats_the_profile(srv: Server, user: User) -> None:
    user.ok("login", "--server", srv.url, "--token", ADMIN)
    tenant_token = srv.client().create_token(srv.client().create_tenant("cli-flags")["name"])
    assert "as tenant cli-flags" in user.ok("login", "--profile", "team", "--token", tenant_token)  # same server

    def whoami(*args: str, **env: str) -> tuple[str, str, str | None]:
        me = user.json("whoami", *args, **env)
        return me["server_from"], me["token_from"], me["tenant"]

    assert whoami() == ("profile 'team'", "profile 'team'", "cli-flags")  # the last login is current
    assert whoami("--profile", "default") == ("profile 'default'", "profile 'default'", None)
    assert whoami(NEOCLOUD_PROFILE="default")[2] is None
    assert whoami(NEOCLOUD_TOKEN=ADMIN) == ("profile 'team'", "NEOCLOUD_TOKEN", None)  # env over profile
    assert whoami("--token", tenant_token, NEOCLOUD_TOKEN=ADMIN) == ("profile 'team'", "--token", "cli-flags")
    nowhere = user.run("jobs", NEOCLOUD_SERVER="http://127.0.0.1:9")
    assert nowhere.returncode == 2 and "cannot reach" in nowhere.stderr and "NEOCLOUD_SERVER" in nowhere.stderr
    assert whoami("--server", srv.url, NEOCLOUD_SERVER="http://127.0.0.1:9")[0] == "--server"  # flag over env
    elsewhere = user.run("whoami", "--json", "--server", "http://127.0.0.1:9")
    assert elsewhere.returncode == 1 and json.loads(elsewhere.stdout)["error"].startswith("no token")
    assert json.loads(elsewhere.stdout)["token_from"] == \
        f"none (profile 'team' keeps its token for {srv.url} alone)"  # a profile's token is not sent elsewhere
    forbidden = user.run("tenants", "list")
    assert forbidden.returncode == 2 and "needs the admin token" in forbidden.stderr and "cli-flags" in forbidden.stderr
    missing = user.run("jobs", "--profile", "nope")
    assert missing.returncode == 2 and "no profile 'nope'" in missing.stderr and "neocloud login --profile nope" \
        in missing.stderr and "Traceback" not in missing.stderr


def test_a_missing_or_refused_token_says_how_to_get_one(srv: Server, user: User) -> None:
    none = user.run("jobs", "--server", srv.url)
    assert none.returncode == 2 and "Traceback" not in none.stderr
    assert f"no token for {srv.url}" in none.stderr
    for fix in ("neocloud login --token", "NEOCLOUD_TOKEN", "neocloud tenants token TENANT"):
        assert fix in none.stderr
    bad = user.run("jobs", "--server", srv.url, NEOCLOUD_TOKEN="nct_not-a-token")
    assert bad.returncode == 2 and "refused the token from NEOCLOUD_TOKEN" in bad.stderr
    assert "neocloud login --token" in bad.stderr
    no_login = user.run("login", "--server", srv.url)
    assert no_login.returncode == 2 and "give --token" in no_login.stderr and not user.config.exists()
    bad_login = user.run("login", "--server", srv.url, "--token", "nct_not-a-token")
    assert bad_login.returncode == 2 and "nothing was saved" in bad_login.stderr and not user.config.exists()
    for headers in ({}, {"Authorization": "Bearer nct_not-a-token"}):  # the API's own answer names the fix too
        r = httpx.get(f"{srv.url}/v1/jobs", headers=headers)
        assert r.status_code == 401
        assert "neocloud login --token" in r.json()["detail"] and "neocloud tenants token" in r.json()["detail"]


def test_json_is_the_apis_and_piped_tables_are_whole(srv: Server, user: User, tmp_path: Path) -> None:
    c = srv.client()
    user.ok("login", "--server", srv.url, "--token", ADMIN)
    command = "echo " + "x" * 150
    job = c.wait(c.submit({"name": LONG_NAME, "command": command})["id"])
    table = user.ok("jobs")  # through a pipe, where Rich would assume 80 columns
    assert LONG_NAME in table and "…" not in table
    shown = user.ok("job", str(job["id"]))
    assert command in shown and "…" not in shown
    assert user.json("job", str(job["id"])) == c.job(job["id"])
    assert user.json("events", str(job["id"])) == c.events(job["id"])
    assert user.json("queue") == c.queue()
    node = c.nodes()[0]["name"]
    assert user.json("nodes") == c.nodes()
    assert user.json("node", "show", node) == c.node(node)
    assert user.json("tenants", "list") == c.tenants()
    assert user.json("tenants", "tokens") == c.tokens()
    assert user.json("goodput") == c.goodput()
    assert user.json("goodput", str(job["id"])) == c.goodput(job["id"])
    assert [a["id"] for a in user.json("audit", "--limit", "5")] == [a["id"] for a in c.audit(5)]
    made = user.json("submit", str(_spec(tmp_path, "as-json", "true")))
    assert made["name"] == "as-json" and set(made) == set(c.job(made["id"]))


def test_submit_wait_exits_with_the_jobs_status_and_job_says_why(srv: Server, user: User, tmp_path: Path) -> None:
    user.ok("login", "--server", srv.url, "--token", ADMIN)
    failing = _spec(tmp_path, "exits-three", "echo to-out; echo first-err >&2; echo the-last-err >&2; exit 3")
    done = user.run("submit", str(failing), "--wait")
    assert done.returncode == 3, done.stderr
    assert "FAILED" in done.stderr and "exit status 3" in done.stderr
    job_id = int(done.stdout.split()[1])
    why = user.ok("job", str(job_id))
    assert "exit code 3" in why and "rank 0's stderr" in why
    assert why.rstrip().endswith("first-err\nthe-last-err")
    ok = user.run("submit", str(_spec(tmp_path, "exits-zero", "true")), "--wait")
    assert ok.returncode == 0 and "COMPLETED" in ok.stdout
    ended = user.run("submit", str(_spec(tmp_path, "long-stderr", "seq 1 300000 >&2; exit 1")), "--wait", "--json")
    assert ended.returncode == 1 and json.loads(ended.stdout)["state"] == "FAILED"  # --json: the record alone
    long_err = user.ok("job", str(json.loads(ended.stdout)["id"]))
    assert long_err.rstrip().endswith("\n".join(str(i) for i in range(299981, 300001)))
    assert "299980" not in long_err  # the last 20 lines, read from the end of a 2 MB log


def test_submit_wait_and_follow_see_every_task_of_an_array(srv: Server, user: User, tmp_path: Path) -> None:
    user.ok("login", "--server", srv.url, "--token", ADMIN)
    sweep = _spec(tmp_path, "sweep", 'echo "task $NEOCLOUD_ARRAY_INDEX"; exit $((NEOCLOUD_ARRAY_INDEX == 2 ? 4 : 0))',
                  gpus=0.5, array="0-3%2")
    followed = user.run("submit", str(sweep), "--follow")
    assert followed.returncode == 4, followed.stderr
    assert followed.stdout == "task 0\ntask 1\ntask 2\ntask 3\n"  # each task's output, in index order
    assert "4 tasks, 3 COMPLETED, 1 FAILED; task 2 (job" in followed.stderr and "exit status 4" in followed.stderr
    waited = user.run("submit", str(sweep), "--wait", "--json")
    tasks = json.loads(waited.stdout)
    assert waited.returncode == 4 and [t["array_index"] for t in tasks] == [0, 1, 2, 3]
    assert [t["state"] for t in tasks] == ["COMPLETED", "COMPLETED", "FAILED", "COMPLETED"]
    dry = user.ok("submit", str(sweep), "--dry-run")
    assert dry.startswith("sweep is an array of 4 tasks; its first:\nsweep would start")


def test_submit_follow_streams_while_the_job_runs_then_exits_as_it_ended(srv: Server, user: User,
                                                                          tmp_path: Path) -> None:
    c = srv.client()
    user.ok("login", "--server", srv.url, "--token", ADMIN)
    spec = _spec(tmp_path, "follows", "echo first-line; sleep 60; echo never")
    proc = subprocess.Popen([*NEOCLOUD, "submit", str(spec), "--follow"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=user.env)
    try:
        assert proc.stdout is not None and select.select([proc.stdout], [], [], 30)[0], "no output while it runs"
        assert proc.stdout.readline() == "first-line\n"
        job = next(j for j in c.jobs(limit=20) if j["name"] == "follows")
        assert job["state"] == "RUNNING"  # streamed as it came, not at the end
        c.cancel(job["id"])
        out, errors = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode != 0 and "CANCELLED" in errors and "never" not in out


def test_logs_refuses_a_rank_the_job_lacks_and_points_at_stderr(srv: Server, user: User, tmp_path: Path) -> None:
    c = srv.client()
    user.ok("login", "--server", srv.url, "--token", ADMIN)
    quiet = c.wait(c.submit({"name": "stderr-only", "command": "echo only-on-stderr >&2"})["id"])
    wrong = user.run("logs", str(quiet["id"]), "--rank", "5")
    assert wrong.returncode == 2 and wrong.stdout == ""
    assert "has rank 0" in wrong.stderr and "--rank 5 is not one of them" in wrong.stderr
    hinted = user.run("logs", str(quiet["id"]))
    assert hinted.returncode == 0 and hinted.stdout == ""
    assert f"neocloud logs {quiet['id']} --stderr" in hinted.stderr
    assert user.ok("logs", str(quiet["id"]), "--stderr") == "only-on-stderr\n"
    blocker = c.submit({"name": "fills-the-fleet", "command": "sleep 60", "gpus": 16, "gpus_per_node": 8})
    wait_for(lambda: c.job(blocker["id"])["state"] == "RUNNING")
    waiting = c.submit({"name": "waits-its-turn", "command": "true"})
    try:
        early = user.run("logs", str(waiting["id"]))
        assert early.returncode == 2 and "has not started (PENDING" in early.stderr and "--follow" in early.stderr
    finally:
        c.cancel(waiting["id"])
        c.cancel(blocker["id"])
        c.wait(blocker["id"])


def test_a_gang_shows_the_rank_that_failed_and_has_only_its_ranks(srv: Server, user: User) -> None:
    c = srv.client()
    user.ok("login", "--server", srv.url, "--token", ADMIN)
    gang = c.wait(c.submit({"name": "gang-fails", "gpus": 16, "gpus_per_node": 8, "command":
                            'if [ "$NEOCLOUD_NODE_RANK" = 1 ]; then echo rank-one-broke >&2; exit 4; fi; sleep 30'}
                           )["id"], timeout=60)
    assert gang["state"] == "FAILED"
    why = user.ok("job", str(gang["id"]))
    assert "rank 1's stderr" in why and why.rstrip().endswith("rank-one-broke")
    assert user.ok("logs", str(gang["id"]), "--rank", "1", "--stderr") == "rank-one-broke\n"
    beyond = user.run("logs", str(gang["id"]), "--rank", "2")
    assert beyond.returncode == 2 and "ranks 0 to 1" in beyond.stderr


# -- without a server -----------------------------------------------------------------------------------------

def test_resolution_order_and_the_profile_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from neocloud.cli import profiles

    for k in [k for k in os.environ if k.startswith("NEOCLOUD_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/is/ignored")
    assert profiles.config_path() == tmp_path / ".config" / "neocloud" / "config.yaml"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    config = profiles.Config({"p": profiles.Profile("p", "http://a:1", "tok-p")}, "p")
    profiles.save(config)
    assert profiles.load() == config
    assert [f.name for f in profiles.config_dir().iterdir()] == ["config.yaml"]  # no temporary left behind
    creds = profiles.resolve(None, None)
    assert (creds.server, creds.token, creds.token_from) == ("http://a:1", "tok-p", "profile 'p'")
    monkeypatch.setenv("NEOCLOUD_TOKEN", "tok-env")
    assert profiles.resolve(None, None).token == "tok-env"
    assert profiles.resolve(None, "tok-flag").token == "tok-flag"
    monkeypatch.delenv("NEOCLOUD_TOKEN")
    elsewhere = profiles.resolve("http://b:2", None)
    assert elsewhere.token is None and elsewhere.token_from.startswith("none")  # the token stays with its server
    profiles.config_path().chmod(0o644)
    profiles.load()
    assert "others may read it (mode 644)" in capsys.readouterr().err
    profiles.config_path().write_text("profiles: [not, a, mapping]\n")
    with pytest.raises(Exception, match="expected 'profiles:'"):
        profiles.load()


@pytest.mark.parametrize("job, status", [
    ({"state": "COMPLETED", "exit_code": 0}, 0),
    ({"state": "FAILED", "exit_code": 3}, 3),
    ({"state": "FAILED", "exit_code": None}, 1),
    ({"state": "FAILED", "exit_code": -9}, 137),
    ({"state": "CANCELLED", "exit_code": None}, 1),
    ({"state": "TIMEOUT", "exit_code": -15}, 143),
])
def test_exit_status_of_each_end(job: dict[str, Any], status: int) -> None:
    from neocloud.cli.jobs import exit_status

    assert exit_status(job) == status


@pytest.mark.parametrize("reason, rank", [
    ("exit status per node: 0, 3", 1),
    ("exit status per node: -15, 0, 2", 2),  # the rank that failed, not one stopped because of it
    ("exit status per node: 143, 4", 1),  # a shell stopped by SIGTERM exits 143
    ("exit status per node: 143, 137", 0),
    ("exit status per node: 0, lost", 1),
    ("cancelled", 0),
])
def test_the_rank_that_failed(reason: str, rank: int) -> None:
    from neocloud.cli.jobs import failed_rank

    assert failed_rank({"reason": reason}) == rank


def test_wait_ends_on_any_end_state(monkeypatch: pytest.MonkeyPatch) -> None:
    from neocloud.client import Client

    states = iter(["PENDING", "RUNNING", "TIMEOUT"])
    monkeypatch.setattr(Client, "job", lambda self, job_id: {"id": job_id, "state": next(states)})
    started = time.monotonic()
    assert Client("http://127.0.0.1:1", "t").wait(7, poll_s=0.01)["state"] == "TIMEOUT"
    assert time.monotonic() - started < 5
