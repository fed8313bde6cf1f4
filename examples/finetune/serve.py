"""A replica of the fine-tuned model: fetch the LoRA adapter the training job logged to its MLflow
run, merge it into the base weights, and serve the result with vLLM's OpenAI-compatible server.

The run is found by the training job's id (neocloud tags each job's run `neocloud.job`), through
neocloud's tracking proxy with the replica's own MLFLOW_TRACKING_TOKEN: only the tenant's runs.

Usage: python serve.py --model BASE_MODEL_DIR --job TRAINING_JOB_ID [vLLM's arguments...]"""

import argparse
import os
import sys
import tempfile

import mlflow
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

parser = argparse.ArgumentParser()
parser.add_argument("--model", required=True, help="the base model's directory")
parser.add_argument("--job", required=True, help="the neocloud job that trained the adapter")
args, engine = parser.parse_known_args()

runs = mlflow.search_runs(experiment_ids=[os.environ["MLFLOW_EXPERIMENT_ID"]], output_format="list",
                          filter_string=f"tags.`neocloud.job` = '{args.job}'")
if not runs:
    sys.exit(f"no run of job {args.job} in this tenant's experiment")
work = tempfile.mkdtemp(prefix="tuned-", dir=os.getcwd())
adapter = mlflow.artifacts.download_artifacts(run_id=runs[0].info.run_id, artifact_path="adapter", dst_path=work)
base = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
merged = PeftModel.from_pretrained(base, adapter).merge_and_unload()
weights = os.path.join(work, "model")
merged.to(torch.float16).save_pretrained(weights)
AutoTokenizer.from_pretrained(args.model).save_pretrained(weights)
print(f"serving {args.model} with the adapter of run {runs[0].info.run_id} (job {args.job})", flush=True)
os.execv(sys.executable, [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", weights, *engine])
