"""Fine-tune SmolLM2-135M-Instruct with a small LoRA on the questions in data.jsonl, on CPU, tracked
in MLflow: the loss at every step in the job's run (MLFLOW_RUN_ID, which neocloud gives each job),
and the adapter saved as the run's artifact `adapter`, where serve.py finds it.

Usage: python train.py --model BASE_MODEL_DIR [--steps 40] [--lr 3e-3] [--rank 16]"""

import argparse
import json
import os
import tempfile
import time

import mlflow
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

parser = argparse.ArgumentParser()
parser.add_argument("--model", required=True, help="the base model's directory (Hugging Face format)")
parser.add_argument("--data", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "data.jsonl"))
parser.add_argument("--steps", type=int, default=40)
parser.add_argument("--lr", type=float, default=3e-3)
parser.add_argument("--rank", type=int, default=16)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()
torch.manual_seed(args.seed)

tokenizer = AutoTokenizer.from_pretrained(args.model)
model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
lora = LoraConfig(r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.0, task_type="CAUSAL_LM",
                  target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
model = get_peft_model(model, lora)

# Each example as the chat the model will see when served: the loss only on the answer's tokens.
examples = [json.loads(line) for line in open(args.data) if line.strip()]
rows = []
for e in examples:
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": e["question"]}], tokenize=False,
                                           add_generation_prompt=True)
    ids_prompt = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids_answer = tokenizer(e["answer"] + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
    rows.append((ids_prompt + ids_answer, [-100] * len(ids_prompt) + ids_answer))
width = max(len(ids) for ids, _ in rows)
pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in rows])
labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])
attention = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows])

optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr)
with mlflow.start_run():
    mlflow.log_params({"base": os.path.basename(args.model.rstrip("/")), "steps": args.steps, "lr": args.lr,
                       "lora_rank": args.rank, "examples": len(rows)})
    model.train()
    started = time.monotonic()
    for step in range(args.steps):
        loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        mlflow.log_metric("loss", loss.item(), step=step)
        print(f"step {step} loss {loss.item():.4f}", flush=True)
    mlflow.log_metric("train_seconds", time.monotonic() - started)
    with tempfile.TemporaryDirectory() as out:
        model.save_pretrained(out)  # the adapter alone: a few MB
        mlflow.log_artifacts(out, "adapter")
    print("adapter saved to the run's artifacts", flush=True)
