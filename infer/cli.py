# /// script
# requires-python = ">=3.10"
# dependencies = ["brittle"]
#
# [tool.uv.sources]
# brittle = { path = "..", editable = true }
# ///
"""Generate text from one model on the command line, streaming tokens as they are produced.

    uv run infer/cli.py --model EleutherAI/deep-ignorance-unfiltered --prompt "What is biotin?"
    uv run infer/cli.py --model models/toy-base-s42 --prompt "Q: What is the host of Galdyrix? A:"
    uv run infer/cli.py --model ... --prompt "..." --device cuda:1 --dtype bf16

| flag           | default | meaning                                                          |
|----------------|---------|------------------------------------------------------------------|
| `--max-tokens` | 200     | maximum new tokens to generate                                   |
| `--device`     | auto    | auto (accelerate places the model, `device_map="auto"`), cuda, cuda:N, mps, cpu |
| `--dtype`      | auto    | auto (bf16 on CUDA, fp16 on MPS, fp32 on CPU), fp32, fp16, bf16  |
| `--temperature`| 0       | 0 = greedy decoding; above 0 samples with that temperature       |
"""

from __future__ import annotations

import argparse

import torch
from transformers import TextStreamer

from brittle.cli import UserError, add_runtime_arguments, positive_int, run_cli
from brittle.models import input_device, load_model_and_tokenizer
from brittle.runtime import seed_everything


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="hub id or local model folder")
    parser.add_argument("--prompt", required=True, help="the text to continue")
    parser.add_argument("--max-tokens", type=positive_int, default=200, help="maximum new tokens (default 200)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); > 0 samples")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling threshold when sampling")
    add_runtime_arguments(parser)
    args = parser.parse_args()
    if not args.prompt.strip():
        raise UserError("--prompt is empty; give the text the model should continue")
    if args.temperature < 0:
        raise UserError(f"--temperature must be >= 0, got {args.temperature}")

    seed_everything(args.seed)
    model, tokenizer = load_model_and_tokenizer(args.model, args.device, args.dtype)
    inputs = tokenizer(args.prompt, return_tensors="pt").to(input_device(model))
    sampling = {"do_sample": True, "temperature": args.temperature, "top_p": args.top_p} \
        if args.temperature > 0 else {"do_sample": False}
    print(args.prompt, end="", flush=True)
    with torch.no_grad():
        model.generate(**inputs, max_new_tokens=args.max_tokens, pad_token_id=tokenizer.pad_token_id,
                       streamer=TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True), **sampling)


if __name__ == "__main__":
    run_cli(main)
