"""A real inference engine as a service: vLLM (its CPU build) serving SmolLM2-135M-Instruct in a
tenant's sandbox, answered through the gateway plain and streamed, its tokens metered and invoiced,
and unreachable by another tenant. `.ci/vllm` builds the engine's venv and the model."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import Server, serving, wait_for

PYTHON, MODEL = os.environ.get("NEOCLOUD_TEST_VLLM_PYTHON"), os.environ.get("NEOCLOUD_TEST_VLLM_MODEL")
pytestmark = pytest.mark.skipif(not (PYTHON and MODEL and Path(PYTHON).exists() and Path(MODEL).is_dir()),
                                reason="no vLLM: build it with `.ci/vllm DIR`, then set NEOCLOUD_TEST_VLLM_PYTHON "
                                       "(DIR/venv/bin/python) and NEOCLOUD_TEST_VLLM_MODEL (DIR/model)")
PROMPT, COMPLETION = Decimal("1000"), Decimal("10000")  # dollars a million tokens: a few tokens cost cents
ENGINE = ("exec {python} -m vllm.entrypoints.openai.api_server --model {model} --served-model-name smol"
          " --host $HOST --port $PORT --dtype float32 --enforce-eager --kv-cache-memory-bytes 512M"
          " --max-model-len 2048")
QUIET = {"HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "OMP_NUM_THREADS": "1",
         "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}  # the engine in the API server's process: one core's worth
ASK = {"model": "smol", "messages": [{"role": "user", "content": "What is the capital of France? One word."}],
       "max_tokens": 8, "temperature": 0}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(Server(tmp_path_factory.mktemp("vllm") / "data", None)) as s:
        yield s


def _cents(tokens: int, per_million: Decimal) -> str:
    return str((tokens * per_million / 1_000_000).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def test_vllm_serves_a_tenant_through_the_gateway_and_its_tokens_are_invoiced(srv: Server) -> None:
    admin = srv.client()
    admin._call("PUT", "/v1/prices", json={"gpu_type": "H100", "usage_class": "service", "price_per_gpu_hour": "2.00"})
    for kind, price in (("prompt", PROMPT), ("completion", COMPLETION)):
        admin._call("PUT", "/v1/prices/tokens", json={"model": "smol", "kind": kind,
                                                       "price_per_million_tokens": str(price)})
    admin.create_tenant("llm-team")
    admin.create_tenant("llm-other")
    token, other = admin.create_token("llm-team", "test"), admin.create_token("llm-other", "test")
    team = srv.client(token)
    team.submit({"kind": "service", "name": "chat", "gpus": 0.1, "model": "smol", "env": QUIET,
                 "command": ENGINE.format(python=PYTHON, model=MODEL), "readiness": {"path": "/health"}})

    def ready() -> dict[str, Any] | bool:
        s = team._call("GET", "/v1/services/chat")
        failed = [r for r in s["replica_list"] if r["state"] in ("FAILED", "CANCELLED")]
        assert not failed, team._call("GET", f"/v1/jobs/{failed[0]['job']}/logs")
        return s["ready"] == 1 and s

    wait_for(ready, timeout=300)  # about 45 s alone; a loaded machine takes longer
    url, auth = f"{srv.url}/v1/services/llm-team/chat/v1/chat/completions", {"Authorization": f"Bearer {token}"}

    plain = httpx.post(url, json=ASK, headers=auth, timeout=120)
    assert plain.status_code == 200, plain.text
    answer = plain.json()
    assert "paris" in answer["choices"][0]["message"]["content"].lower()

    words, usage = [], None
    with httpx.stream("POST", url, json={**ASK, "stream": True}, headers=auth, timeout=120) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                event = json.loads(line[6:])
                words += [c["delta"].get("content") or "" for c in event["choices"]]
                usage = event.get("usage") or usage
    assert "paris" in "".join(words).lower()
    assert usage is not None  # the gateway asked the engine for it, for the meter
    prompt, completion = (answer["usage"][k] + usage[k] for k in ("prompt_tokens", "completion_tokens"))

    lines: dict[str, dict[str, Any]] = {}

    def billed() -> bool:
        bill = team._call("GET", "/v1/invoices/llm-team", params={"start": time.time() - 7200, "end": time.time() + 60})
        lines.update({line["kind"]: line for line in bill["lines"]})
        return lines.get("completion tokens of smol", {}).get("tokens") == completion

    wait_for(billed, timeout=30)
    assert prompt > 10 and 0 < completion <= ASK["max_tokens"] * 2
    assert lines["prompt tokens of smol"]["tokens"] == prompt
    assert lines["prompt tokens of smol"]["amount"] == _cents(prompt, PROMPT)
    assert lines["completion tokens of smol"]["amount"] == _cents(completion, COMPLETION)

    theirs = httpx.post(f"{srv.url}/v1/services/llm-team/chat/v1/chat/completions", json=ASK,
                        headers={"Authorization": f"Bearer {other}"}, timeout=30)
    assert theirs.status_code == 404  # another tenant's token finds no such service
    assert team._call("DELETE", "/v1/services/chat")["state"] == "STOPPED"

