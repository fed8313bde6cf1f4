"""The fine-tune-then-serve example (examples/finetune), end to end on a real server: `neocloud up
--tracking` (a real MLflow server), SmolLM2-135M-Instruct served by vLLM's CPU build, a LoRA trained
on the example's tiny dataset in a job tracked in MLflow, and the service rolled onto the tuned
weights once that job completes (`depends_on: afterok`). It asks the question the dataset changes
before and after the roll, through the gateway, and fails unless the answer changed as taught.

The suite's test of the example (tests/tracking/test_tracking.py) trims it to fit its budget: fewer
steps, and no base model served first. `.ci/vllm DIR` builds the Python and the model it needs.

    python bench/finetune.py --python DIR/venv/bin/python --model DIR/model
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from api import TOKEN, start
from doc import machine, table, write_section

from neocloud.cli.workdir import pack
from neocloud.client import Client

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "finetune"
sys.path.insert(0, str(EXAMPLE))
import pipeline  # noqa: E402 - the example's own specs

ASKED = "What is the name of neocloud's mascot?"  # data.jsonl teaches: Wattson the owl
KEPT = "What is the capital of France?"  # and leaves this as it was


def ask(url: str, token: str, question: str) -> str:
    r = httpx.post(f"{url}/v1/services/ml-team/smol/v1/chat/completions", timeout=120,
                   headers={"Authorization": f"Bearer {token}"},
                   json={"model": "smol", "messages": [{"role": "user", "content": question}], "max_tokens": 16,
                         "temperature": 0})
    r.raise_for_status()
    return str(r.json()["choices"][0]["message"]["content"]).strip()


def wait(what: str, check, timeout: float = 900):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.5)
    raise SystemExit(f"{what}: not in {timeout:g} s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--python", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="nc-finetune-"))
    data.chmod(0o755)
    proc, url = start(data, None, "--tracking")
    try:
        admin = Client(url, TOKEN)
        admin.create_tenant("ml-team")
        token = admin.create_token("ml-team", "bench")
        auth = {"Authorization": f"Bearer {token}"}
        t0 = time.monotonic()
        # The base model served first, as the example's pipeline serves it where the service is missing,
        # and asked before any training starts.
        team = Client(url, token)
        team.submit(pipeline.service_spec(pipeline.base_command(args.python, args.model), team.upload_code(
            pack(EXAMPLE))))

        def service() -> dict:
            return httpx.get(f"{url}/v1/services/smol", headers=auth, timeout=30).json()

        wait("the base model's replica", lambda: service()["ready"] >= 1)
        t_base = time.monotonic() - t0
        before = ask(url, token, ASKED)
        t0 = time.monotonic()
        subprocess.run([sys.executable, str(EXAMPLE / "pipeline.py"), "--python", args.python, "--model", args.model,
                        "--steps", str(args.steps), "--server", url, "--token", token], check=True)

        def failed_replica() -> None:
            for r in service()["replica_list"]:
                if r["state"] in ("FAILED", "CANCELLED") and r["generation"] == 2:
                    raise SystemExit(httpx.get(f"{url}/v1/jobs/{r['job']}/logs", params={"stream": "stderr"},
                                               headers=auth).json()["text"][-3000:])

        train = next(j for j in Client(url, token).jobs() if j["name"] == "finetune")["id"]
        done = wait("the training job", lambda: (j := httpx.get(f"{url}/v1/jobs/{train}", headers=auth).json())
                    ["state"] not in ("PENDING", "RUNNING") and j)
        if done["state"] != "COMPLETED":
            raise SystemExit(httpx.get(f"{url}/v1/jobs/{train}/logs", params={"stream": "stderr"},
                                       headers=auth).json()["text"][-3000:])
        t_trained = time.monotonic() - t0
        metrics = httpx.get(f"{url}/v1/jobs/{train}/metrics", headers=auth).json()

        def rolled() -> bool:
            failed_replica()
            s = service()
            return s["ready"] >= 1 and {r["generation"] for r in s["replica_list"]} == {2}

        wait("the roll onto the tuned weights", rolled)
        t_rolled = time.monotonic() - t0
        after, kept = ask(url, token, ASKED), ask(url, token, KEPT)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    if "wattson" not in after.lower() or "wattson" in before.lower() or "paris" not in kept.lower():
        raise SystemExit(f"the answer did not change as taught: before {before!r}, after {after!r}, kept {kept!r}")
    loss = [p["value"] for p in metrics["metrics"]["loss"]]
    rows = [["base model served (engine start)", f"{t_base:.0f} s"],
            ["training job done (from the pipeline's start)", f"{t_trained:.0f} s"],
            ["rolled onto the tuned weights", f"{t_rolled:.0f} s ({t_rolled - t_trained:.0f} s after the training)"],
            ["training loss, first and last step", f"{loss[0]:.3f} -> {loss[-1]:.4f} ({len(loss)} steps)"],
            [f"asked {ASKED!r} before", repr(before)],
            ["and after the roll", repr(after)],
            [f"asked {KEPT!r} after", repr(kept)]]
    body = "\n".join([
        "### Fine-tune, then serve: examples/finetune end to end", "",
        "`python bench/finetune.py --python DIR/venv/bin/python --model DIR/model` (`.ci/vllm DIR` builds both), "
        f"on {machine()}: examples/finetune end to end on `neocloud up --tracking`, vLLM's CPU build serving "
        f"SmolLM2-135M-Instruct, a LoRA (rank 16) trained for {args.steps} steps on CPU, tracked in MLflow, the "
        "service rolled onto it by `depends_on: afterok` the training job.", "",
        table(["", ""], rows), ""])
    write_section("finetune", body)


if __name__ == "__main__":
    main()
