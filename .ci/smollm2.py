"""SmolLM2-135M-Instruct's GGUF as a model directory vLLM loads (it reads no GGUF itself): weights,
config and tokenizer, the tokenizer and chat template from the GGUF. Usage: smollm2.py GGUF OUT"""

import json
import os
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

gguf, out = os.path.abspath(sys.argv[1]), sys.argv[2]
where, name = os.path.dirname(gguf), os.path.basename(gguf)
tokenizer = AutoTokenizer.from_pretrained(where, gguf_file=name)
model = AutoModelForCausalLM.from_pretrained(where, gguf_file=name, dtype=torch.float32)
model.hf_quantizer = None  # dequantized on load: saved as plain weights
model.to(torch.float16).save_pretrained(out)
tokenizer.save_pretrained(out)
config = os.path.join(out, "config.json")
with open(config) as f:
    settings = json.load(f)
settings.pop("quantization_config", None)  # else vLLM would take the weights for GGUF-quantized ones
with open(config, "w") as f:
    json.dump(settings, f, indent=2)
