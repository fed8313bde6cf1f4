"""Fleet reliability over the running server: health signals, the node lifecycle, recovery from checkpoint."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from neocloud.client import ApiError
from tests.api.conftest import Server, _kill_leftovers, wait_for

# Counts steps, saving each one to its checkpoint directory; a restart resumes from the last step saved.
TRAINER = ('d=$NEOCLOUD_CHECKPOINT_DIR; mkdir -p "$d"; step=$(cat "$d/step" 2>/dev/null || echo 0); '
           'echo "attempt $NEOCLOUD_ATTEMPT on $NEOCLOUD_NODE from step $step"; '
           'while [ "$step" -lt 100000 ]; do step=$((step + 1)); echo $step > "$d/tmp"; mv "$d/tmp" "$d/step"; '
           'sleep 0.02; done')


def _steps(server: Server, job_id: int) -> int:
    try:
        return int((server.data_dir / "checkpoints" / str(job_id) / "step").read_text())
    except (OSError, ValueError):
        return 0


def _running_on(c, job_id: int) -> str:  # noqa: ANN001
    job = c.job(job_id)
    return job["placement"][0]["node"] if job["state"] == "RUNNING" else ""


def test_xid_79_sends_the_node_to_triage_and_the_job_resumes_elsewhere_from_its_checkpoint(server: Server) -> None:
    c = server.client()
    job = c.submit({"name": "trainer", "gpus": 8, "command": TRAINER})
    first = wait_for(lambda: _running_on(c, job["id"]))
    wait_for(lambda: _steps(server, job["id"]) >= 20)
    result = c.signal(first, {"kind": "xid", "code": 79, "gpu": 3, "message": "GPU has fallen off the bus"})
    assert (result["action"], result["stage"], result["interrupted"]) == ("triage", "triage", [job["id"]])
    second = wait_for(lambda: c.job(job["id"])["attempts"] == 2 and _running_on(c, job["id"]))
    assert second != first
    wait_for(lambda: "attempt 2" in c.logs(job["id"])["text"])
    lines = c.logs(job["id"])["text"].splitlines()
    assert lines[0] == f"attempt 1 on {first} from step 0"
    resumed = int(lines[1].split("from step ")[1])
    assert lines[1].startswith(f"attempt 2 on {second} from step ") and resumed >= 20
    kinds = [e["kind"] for e in c.events(job["id"])]
    assert kinds[:5] == ["submitted", "started", "interrupted", "requeued", "started"]
    interrupted = next(e for e in c.events(job["id"]) if e["kind"] == "interrupted")
    assert f"node {first} went to triage" in interrupted["message"] and "code=79" in interrupted["message"]
    node = c.node(first)
    assert (node["stage"], node["state"], node["jobs"]) == ("triage", "OUT", [])
    assert node["history"][0]["from_stage"] == "production" and node["history"][0]["to_stage"] == "triage"
    assert node["signals"][0]["kind"] == "xid" and node["signals"][0]["action"] == "triage"
    c.cancel(job["id"])


def test_a_node_goes_through_triage_repair_and_burn_in_back_to_production(server: Server) -> None:
    c = server.client()
    name = c.nodes()[0]["name"]
    assert c.signal(name, {"kind": "ecc", "uncorrectable": 2})["stage"] == "triage"
    with pytest.raises(ApiError) as refused:
        c.node_action(name, "uncordon")
    assert refused.value.status == 409 and "from there it can go to: repair, rma, burn-in" in str(refused.value)
    c.move_node(name, "repair", "HBM replaced")
    c.move_node(name, "burn-in", "back from repair")
    wide = c.submit({"name": "wide", "gpus": 16, "gpus_per_node": 8, "command": "true"})
    assert c.signal(name, {"kind": "active_check", "passed": False, "report": {"matmul_tflops": 1.0}})["stage"] \
        == "triage"
    c.move_node(name, "burn-in", "reseated")
    assert c.job(wide["id"])["state"] == "PENDING"  # a node out of production takes no work
    done = c.signal(name, {"kind": "active_check", "passed": True})
    assert done["stage"] == "production"
    assert c.wait(wide["id"], timeout=30)["state"] == "COMPLETED"  # both nodes take work again
    moves = [(m["from_stage"], m["to_stage"]) for m in reversed(c.node(name)["history"])]
    assert moves == [("production", "triage"), ("triage", "repair"), ("repair", "burn-in"), ("burn-in", "triage"),
                     ("triage", "burn-in"), ("burn-in", "production")]
    metrics = c.http.get("/metrics").text
    assert 'neocloud_node_moves_total{from_stage="burn-in",to_stage="production"} 1.0' in metrics


def test_watched_signals_change_nothing_and_rules_are_published(server: Server) -> None:
    c = server.client()
    name = c.nodes()[0]["name"]
    assert c.signal(name, {"kind": "xid", "code": 13})["action"] == "watch"
    assert c.signal(name, {"kind": "thermal", "temperature_c": 70})["action"] == "watch"
    assert c.node(name)["stage"] == "production"
    assert c.signal(name, {"kind": "link_flap", "link": "mlx5_0/1", "flaps": 5})["stage"] == "draining"
    assert c.signal(name, {"kind": "xid", "code": 31})["stage"] == "draining"  # a watch never moves it back
    rules = c.health_rules()
    assert {"kind": "xid", "when": rules[0]["when"], "action": "triage"} == rules[0] and "79" in rules[0]["when"]


@pytest.mark.parametrize(("body", "status", "words"), [
    ({"kind": "xid"}, 422, "code"),
    ({"kind": "xid", "code": 0}, 422, "code"),
    ({"kind": "smoke"}, 422, "kind"),
    ({"code": 79}, 422, "kind"),
    ({"kind": "ecc", "uncorrectable": -1}, 422, "uncorrectable"),
    ({"kind": "link_flap", "flaps": 3}, 422, "link"),
    ({"kind": "thermal", "temperature_c": "hot"}, 422, "temperature_c"),
    ({"kind": "xid", "code": 79, "severity": "high"}, 422, "severity"),
])
def test_bad_signals_get_clear_errors(server: Server, body: dict, status: int, words: str) -> None:
    c = server.client()
    name = c.nodes()[0]["name"]
    r = c.http.post(f"/v1/nodes/{name}/signals", json=body)
    assert r.status_code == status and words in r.text, r.text
    assert c.node(name)["signals"] == []


def test_signals_are_for_admins_and_known_nodes(server: Server) -> None:
    c = server.client()
    c.create_tenant("lab")
    tenant = server.client(c.create_token("lab"))
    name = c.nodes()[0]["name"]
    for call, status in ((lambda: tenant.signal(name, {"kind": "xid", "code": 79}), 403),
                         (lambda: c.signal("nowhere", {"kind": "xid", "code": 79}), 404),
                         (lambda: c.move_node(name, "heaven"), 400)):
        with pytest.raises(ApiError) as e:
            call()
        assert e.value.status == status
    assert c.node(name)["stage"] == "production"


@pytest.fixture
def spare_server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "data", None, args=("--spares-per-fabric", "1"))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
        _kill_leftovers(srv.data_dir)


def test_a_hot_spare_takes_the_place_of_a_failed_node_and_restarts_are_capped(spare_server: Server) -> None:
    c = spare_server.client()
    states = {n["name"]: n["state"] for n in c.nodes()}
    assert sorted(states.values()) == ["IDLE", "SPARE"]
    spare = next(n for n, st in states.items() if st == "SPARE")
    job = c.submit({"name": "trainer", "gpus": 8, "command": TRAINER, "max_restarts": 1})
    first = wait_for(lambda: _running_on(c, job["id"]))
    assert first != spare
    c.signal(first, {"kind": "stall", "for_s": 120})
    assert wait_for(lambda: _running_on(c, job["id"])) == spare
    c.signal(spare, {"kind": "xid", "code": 48})
    failed = c.wait(job["id"], timeout=30)
    assert failed["state"] == "FAILED" and "interrupted 2 times by node failures (max_restarts 1)" in failed["reason"]


def test_node_check_posts_its_verdict_and_brings_a_burned_in_node_to_production(server: Server) -> None:
    from tests.api.conftest import ADMIN
    from tests.cli.test_cli import neocloud

    c = server.client()
    name = c.nodes()[0]["name"]
    c.move_node(name, "triage", "suspect")
    c.move_node(name, "burn-in", "no fault found")
    res = neocloud("node", "check", "--quick", "--post", name, "--server", server.url, "--token", ADMIN)
    assert res.returncode == 0, res.stderr
    assert f"posted to node {name}: stage production" in res.stdout
    node = c.node(name)
    assert node["stage"] == "production" and node["signals"][0]["payload"]["report"]["device"] == "cpu"
