"""Fleet reliability over the running server: health signals, the node lifecycle, recovery from checkpoint."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from neocloud.client import ApiError
from tests.api.conftest import Server, serving, wait_for

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


def _running_on(c, job_id: int) -> str:
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
    wide = c.submit({"name": "wide", "gpus": 16, "gpus_per_node": 8, "command": "true"})
    c.move_node(name, "burn-in", "back from repair")  # its active check starts by itself
    assert c.job(wide["id"])["state"] == "PENDING"  # a node out of production takes no work
    wait_for(lambda: c.node(name)["stage"] == "production", timeout=60)
    assert c.wait(wide["id"], timeout=30)["state"] == "COMPLETED"  # both nodes take work again
    node = c.node(name)
    moves = [(m["from_stage"], m["to_stage"]) for m in reversed(node["history"])]
    assert moves == [("production", "triage"), ("triage", "repair"), ("repair", "burn-in"), ("burn-in", "production")]
    verdict = node["signals"][0]
    assert verdict["kind"] == "active_check" and verdict["payload"]["passed"] is True
    assert verdict["payload"]["report"]["device"] == "cpu"  # `neocloud node check`'s own report
    (check,) = c.jobs(tenant="system")
    assert check["name"] == f"check-{name}" and check["state"] == "COMPLETED" and check["priority"] == "spot"
    metrics = c.http.get("/metrics").text
    assert 'neocloud_node_moves_total{from_stage="burn-in",to_stage="production"} 1.0' in metrics


def _server(tmp_path: Path, *args: str) -> Iterator[Server]:
    with serving(Server(tmp_path / "data", None, args=args)) as srv:
        yield srv


@pytest.fixture
def failing_checks(tmp_path: Path) -> Iterator[Server]:
    yield from _server(tmp_path, "--check-command", "echo no good; exit 3")


@pytest.fixture
def slow_checks(tmp_path: Path) -> Iterator[Server]:
    yield from _server(tmp_path, "--check-every", "1", "--check-command", "sleep 600")


def test_a_node_failing_its_burn_in_check_goes_back_to_triage(failing_checks: Server) -> None:
    c = failing_checks.client()
    name = c.nodes()[0]["name"]
    c.move_node(name, "triage", "suspect")
    c.move_node(name, "burn-in", "no fault found")
    wait_for(lambda: c.node(name)["stage"] == "triage", timeout=30)
    signal = c.node(name)["signals"][0]
    assert signal["payload"] == {"kind": "active_check", "passed": False, "report": {"output": "no good\n"}}


def test_idle_nodes_are_checked_as_spot_work_that_real_work_preempts(slow_checks: Server) -> None:
    c = slow_checks.client()
    wait_for(lambda: len([j for j in c.jobs(tenant="system") if j["state"] == "RUNNING"]) == 2, timeout=30)
    job = c.submit({"name": "work", "gpus": 8, "command": "sleep 1"})
    assert c.wait(job["id"], timeout=30)["state"] == "COMPLETED"
    preempted = [j for j in c.jobs(tenant="system") if j["state"] == "CANCELLED"]
    assert len(preempted) >= 1 and preempted[0]["reason"] == "preempted: the node is wanted for work"


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
def test_bad_signals_get_clear_errors(shared_server: Server, body: dict, status: int, words: str) -> None:
    c = shared_server.client()
    name = c.nodes()[0]["name"]
    r = c.http.post(f"/v1/nodes/{name}/signals", json=body)
    assert r.status_code == status and words in r.text, r.text
    assert c.node(name)["signals"] == []


def test_signals_are_for_admins_and_known_nodes(shared_server: Server) -> None:
    c = shared_server.client()
    c.create_tenant("lab")
    tenant = shared_server.client(c.create_token("lab"))
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
    yield from _server(tmp_path, "--spares-per-fabric", "1")


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


def test_goodput_counts_what_a_failure_cost_the_job_and_its_tenant(server: Server) -> None:
    import time

    c = server.client()
    job = c.submit({"name": "trainer", "gpus": 8, "command": TRAINER, "restart_cost": "2s"})
    first = wait_for(lambda: _running_on(c, job["id"]))
    wait_for(lambda: _steps(server, job["id"]) >= 50)
    c.signal(first, {"kind": "xid", "code": 79, "observed_at": time.time() - 0.5})  # seen 0.5 s before it came in
    wait_for(lambda: c.job(job["id"])["attempts"] == 2 and _running_on(c, job["id"]))
    g = wait_for(lambda: (g := c.goodput(job["id"]))["ettr"] > 0 and g)  # run long enough to have paid its restart
    assert g["interruptions"] == 1
    assert g["lost_gpu_s"]["detection"] == pytest.approx(8 * 0.5, abs=8 * 0.3)
    assert 0 <= g["lost_gpu_s"]["recomputation"] < 8 * 3.0  # it checkpoints every step: seconds at most, even loaded
    assert g["lost_gpu_s"]["restart"] == pytest.approx(8 * 2)
    assert g["queueing_after_failure_s"] >= 0 and g["allocated_gpu_s"] > 0
    assert g["productive_gpu_s"] == pytest.approx(g["allocated_gpu_s"] - sum(g["lost_gpu_s"].values()), abs=0.01)
    assert 0 < g["ettr"] <= 1
    (tenant,) = c.goodput()
    assert tenant["tenant"] == "default" and tenant["interruptions"] == 1
    assert tenant["lost_gpu_s"]["detection"] == g["lost_gpu_s"]["detection"]
    c.cancel(job["id"])


def test_the_cli_shows_a_node_and_goodput(server: Server) -> None:
    from tests.api.conftest import ADMIN
    from tests.cli.test_cli import neocloud

    c = server.client()
    name = c.nodes()[0]["name"]
    common = ("--server", server.url, "--token", ADMIN)
    res = neocloud("node", "signal", name, '{"kind": "ecc", "uncorrectable": 1}', *common)
    assert res.returncode == 0 and "triage" in res.stdout, res.stderr
    shown = neocloud("node", "show", name, *common)
    assert shown.returncode == 0 and "production" in shown.stdout and "uncorrectable=1" in shown.stdout
    bad = neocloud("node", "signal", name, "{kind: xid}", *common)
    assert bad.returncode == 2 and "the signal is not JSON" in bad.stderr and "Traceback" not in bad.stderr
    moved = neocloud("node", "move", name, "production", *common)
    assert moved.returncode == 2 and "from there it can go to" in moved.stderr
    job = c.submit({"name": "short", "gpus": 1, "command": "sleep 0.2"})
    c.wait(job["id"], timeout=30)
    assert neocloud("goodput", str(job["id"]), *common).returncode == 0
    totals = neocloud("goodput", *common)
    assert totals.returncode == 0 and "default" in totals.stdout


def test_a_job_asking_for_auto_gets_dalys_interval(server: Server) -> None:
    from neocloud.model.goodput import auto_interval

    c = server.client()
    job = c.submit({"name": "auto", "gpus": 8, "checkpoint_interval": "auto", "checkpoint_cost": "30s",
                    "command": "echo $NEOCLOUD_CHECKPOINT_INTERVAL"})
    assert c.wait(job["id"], timeout=30)["state"] == "COMPLETED"
    assert float(c.logs(job["id"])["text"]) == pytest.approx(auto_interval(8, 0, 0.0, 30.0, None), rel=1e-3)
    fixed = c.submit({"name": "fixed", "gpus": 1, "checkpoint_interval": "15m", "command": "echo $NEOCLOUD_CHECKPOINT_INTERVAL"})
    c.wait(fixed["id"], timeout=30)
    assert c.logs(fixed["id"])["text"] == "900\n"
    with pytest.raises(ApiError) as bad:
        c.submit({"name": "bad", "gpus": 1, "checkpoint_interval": "often", "command": "true"})
    assert bad.value.status == 422 and "checkpoint_interval" in str(bad.value)
