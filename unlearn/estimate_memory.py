# /// script
# requires-python = ">=3.10"
# dependencies = ["brittle"]
#
# [tool.uv.sources]
# brittle = { path = "..", editable = true }
# ///
"""Estimate the GPU memory that full-parameter unlearning of a model needs, from its config.json alone.

    uv run unlearn/estimate_memory.py --model EleutherAI/deep-ignorance-unfiltered   # prints MiB
    uv run unlearn/estimate_memory.py --preset toy

Only `config.json` is read (a few KB from the hub, or the local folder); no weights are downloaded and
torch is not imported. The parameter count comes from the architecture fields (embeddings, attention
with grouped key/value heads, plain or gated MLP), and training needs about

    parameters x bytes per value (2: bf16) x 4.5   (weights, gradients, Adam's two moments, activations)

which is the deep-ignorance study's rule of thumb. parallel_sweep.sh uses it to choose how many GPUs each job gets.
Prints the estimate in MiB on stdout (one integer) and a readable line on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from brittle.cli import UserError, run_cli
from brittle.presets import get_preset

GATED_MLP_TYPES = {"llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "olmo", "olmo2",
                   "phi3", "granite", "cohere"}


def read_config(model: str) -> dict:
    """The model's config.json: from its folder, or downloaded alone from the hub."""
    folder = Path(model).expanduser()
    if folder.is_dir():
        path = folder / "config.json"
        if not path.is_file():
            raise UserError(f"{model} has no config.json; is it a Hugging Face model folder?")
    else:
        from huggingface_hub import hf_hub_download

        try:
            path = Path(hf_hub_download(model, "config.json"))
        except Exception as error:  # offline, gated, misspelt: the caller falls back to 1 GPU per job
            raise UserError(f"could not fetch config.json of {model} ({type(error).__name__})") from error
    return json.loads(path.read_text())


def first(config: dict, *names: str, default=None):
    return next((config[name] for name in names if config.get(name) is not None), default)


def parameter_count(config: dict) -> int:
    """Parameters of a decoder-only transformer from its configuration (within a few percent)."""
    hidden = first(config, "hidden_size", "n_embd", "d_model")
    layers = first(config, "num_hidden_layers", "n_layer", "num_layers")
    vocab = first(config, "vocab_size")
    if not (hidden and layers and vocab):
        raise UserError("config.json lacks hidden size, layer count or vocabulary size")
    heads = first(config, "num_attention_heads", "n_head", default=1)
    key_value_heads = first(config, "num_key_value_heads", default=heads)
    head_size = first(config, "head_dim", default=hidden // heads)
    intermediate = first(config, "intermediate_size", "n_inner", "ffn_dim", default=4 * hidden)
    attention = hidden * heads * head_size * 2 + hidden * key_value_heads * head_size * 2  # q, o, k, v
    mlp_matrices = 3 if config.get("model_type") in GATED_MLP_TYPES else 2
    per_layer = attention + mlp_matrices * hidden * intermediate + 4 * hidden  # + norms
    embeddings = vocab * hidden * (1 if config.get("tie_word_embeddings", True) else 2)
    if config.get("model_type") == "gpt2":
        embeddings += first(config, "n_positions", default=1024) * hidden
    return embeddings + layers * per_layer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="hub id or local folder (default: the preset's base model)")
    parser.add_argument("--preset", default="real", choices=["real", "toy"])
    parser.add_argument("--seed", type=int, default=42, help="selects the toy base model (models/toy-base-s<seed>)")
    parser.add_argument("--bytes-per-value", type=float, default=2.0, help="2 for bf16/fp16 training, 4 for fp32")
    parser.add_argument("--factor", type=float, default=4.5,
                        help="training memory / weight memory (default 4.5: weights, gradients, Adam states)")
    args = parser.parse_args()
    model = args.model or get_preset(args.preset, args.seed).base
    parameters = parameter_count(read_config(model))
    needed_mib = parameters * args.bytes_per_value * args.factor / 2**20
    count = f"{parameters / 1e9:.2f}B" if parameters >= 1e8 else f"{parameters / 1e6:.2f}M"
    print(f"{model}: ~{count} parameters -> ~{needed_mib:,.0f} MiB to train", file=sys.stderr)
    print(max(1, round(needed_mib)))


if __name__ == "__main__":
    run_cli(main)
