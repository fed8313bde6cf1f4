"""Fine-tune, then serve: the whole loop through neocloud, with what a tenant has (its token).

1. the model is served as it is, if the service is not there yet (vLLM, `SERVICE`);
2. a training job fine-tunes it on data.jsonl (train.py), its loss tracked in the job's MLflow run,
   the LoRA adapter logged to the run;
3. the service is updated to serve the tuned weights (serve.py finds the adapter in the training
   job's run), with `depends_on: afterok` the training job: the new replicas wait until it
   completes, and the old ones serve until the new are ready. If it fails, the roll stalls there
   and the old weights serve on.

This directory goes with the jobs as their code (`workdir`). PYTHON must have torch, transformers,
peft, vLLM and MLflow's client on the nodes; MODEL is the base model's directory there.

Usage: python pipeline.py --python PYTHON --model MODEL [--server URL --token TOKEN] [--steps N]"""

from __future__ import annotations

import argparse
import os
import shlex
from pathlib import Path

from neocloud.cli.workdir import pack
from neocloud.client import ApiError, Client

HERE = Path(__file__).resolve().parent
SERVICE = "smol"
ENGINE = ("--served-model-name {name} --host $HOST --port $PORT --dtype float32 --enforce-eager "
          "--kv-cache-memory-bytes 512M --max-model-len 2048")
QUIET = {"HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "OMP_NUM_THREADS": "1",
         "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}


def service_spec(command: str, code: str, **more: object) -> dict[str, object]:
    return {"kind": "service", "name": SERVICE, "gpus": 0.1, "model": SERVICE, "code": code, "env": QUIET,
            "command": command, "readiness": {"path": "/health"}, **more}


def base_command(python: str, model: str) -> str:
    """vLLM serving the base model as it is."""
    return (f"exec {shlex.quote(python)} -m vllm.entrypoints.openai.api_server --model {shlex.quote(model)} "
            + ENGINE.format(name=SERVICE))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", required=True, help="the Python with torch, peft, vLLM and MLflow, on the nodes")
    parser.add_argument("--model", required=True, help="the base model's directory, on the nodes")
    parser.add_argument("--server", default=os.environ.get("NEOCLOUD_SERVER"))
    parser.add_argument("--token", default=os.environ.get("NEOCLOUD_TOKEN"))
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    c = Client(args.server, args.token)
    code = c.upload_code(pack(HERE))
    python, model, engine = shlex.quote(args.python), shlex.quote(args.model), ENGINE.format(name=SERVICE)

    try:
        c.service(SERVICE)
    except ApiError as e:
        if e.status != 404:
            raise
        c.submit(service_spec(base_command(args.python, args.model), code))
        print(f"service {SERVICE}: serving {args.model} as it is")

    train = c.submit({"name": "finetune", "gpus": 1, "code": code, "env": {"HF_HUB_OFFLINE": "1"},
                      "command": f"exec {python} train.py --model {model} --steps {args.steps}"})
    print(f"job {train['id']}: fine-tunes {args.model} on data.jsonl (neocloud job {train['id']} --metrics)")
    rolled = c._call("PUT", f"/v1/services/{SERVICE}", json=service_spec(
        f"exec {python} serve.py --model {model} --job {train['id']} {engine}", code,
        depends_on=[{"job": train["id"], "when": "afterok"}]))
    print(f"service {SERVICE}: generation {rolled['generation']} serves the tuned weights once job {train['id']} "
          "completes")


if __name__ == "__main__":
    main()
