"""Services from the command line, against a real server: a spec with kind: service and a workdir
submitted as a job is, then listed, shown, scaled, rolled, called with a service key and stopped."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import yaml

from tests.api.conftest import ADMIN, Server, serving, wait_for
from tests.cli.test_cli import neocloud

REPLICA = Path(__file__).with_name("replica.py")


def test_a_service_from_submit_to_stop(tmp_path: Path) -> None:
    work = tmp_path / "app"
    work.mkdir()
    shutil.copy(REPLICA, work / "replica.py")
    spec = {"kind": "service", "name": "web", "gpus": 0.5, "command": "exec python3 replica.py", "workdir": "app",
            "replicas": 1, "env": {"VERSION": "1"}}
    (tmp_path / "web.yaml").write_text(yaml.safe_dump(spec))
    with serving(Server(tmp_path / "data", None)) as srv:
        common = ("--server", srv.url, "--token", ADMIN)

        def show() -> dict:
            return json.loads(neocloud("services", "show", "web", "--json", *common).stdout)

        made = neocloud("submit", str(tmp_path / "web.yaml"), *common)
        assert made.returncode == 0, made.stderr
        assert made.stdout.startswith("service web (default) RUNNING") and "/v1/services/default/web/" in made.stdout
        wait_for(lambda: show()["ready"] == 1, timeout=60)
        listed = json.loads(neocloud("services", "--json", *common).stdout)
        assert [(s["name"], s["endpoint"]) for s in listed] == [("web", "/v1/services/default/web/")]
        assert neocloud("services", "scale", "web", "2", *common).returncode == 0
        wait_for(lambda: show()["ready"] == 2, timeout=60)
        (tmp_path / "web.yaml").write_text(yaml.safe_dump({**spec, "env": {"VERSION": "2"}}))
        rolled = neocloud("services", "update", str(tmp_path / "web.yaml"), *common)
        assert rolled.returncode == 0 and "generation 2" in rolled.stdout, rolled.stderr
        try:
            wait_for(lambda: (s := show())["ready"] == 1 and {r["generation"] for r in s["replica_list"]} == {2},
                     timeout=30)  # the spec's replicas: 1 again
        except AssertionError:
            raise AssertionError(show()) from None
        made_key = neocloud("services", "keys", "create", "web", "--label", "frontend", *common)
        assert made_key.returncode == 0 and "/v1/services/default/web/" in made_key.stderr, made_key.stderr
        key = made_key.stdout.strip()
        answer = httpx.get(f"{srv.url}/v1/services/default/web/", headers={"Authorization": f"Bearer {key}"})
        assert answer.json()["version"] == "2"
        keys = json.loads(neocloud("services", "keys", "list", "--json", *common).stdout)
        assert [(k["service"], k["label"], k["state"]) for k in keys] == [("web", "frontend", "active")]
        assert neocloud("services", "keys", "revoke", str(keys[0]["id"]), *common).returncode == 0
        assert httpx.get(f"{srv.url}/v1/services/default/web/",
                         headers={"Authorization": f"Bearer {key}"}).status_code == 401
        waiting = neocloud("submit", str(tmp_path / "web.yaml"), "--wait", *common)
        assert waiting.returncode == 2 and "a service runs until stopped" in waiting.stderr
        again = neocloud("submit", str(tmp_path / "web.yaml"), *common)
        assert again.returncode != 0 and "service 'web' exists" in again.stderr
        stopped = neocloud("services", "stop", "web", *common)
        assert stopped.returncode == 0 and "STOPPED" in stopped.stdout
        missing = neocloud("services", "show", "nope", *common)
        assert missing.returncode != 0 and "no service 'nope'" in missing.stderr and "Traceback" not in missing.stderr
