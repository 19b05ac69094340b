# /// script
# requires-python = ">=3.10"
# dependencies = ["brittle"]
#
# [tool.uv.sources]
# brittle = { path = "..", editable = true }
# ///
"""Estimate the GPU memory that unlearning a model needs, per method, from its config.json alone.

    uv run unlearn/estimate_memory.py --model EleutherAI/deep-ignorance-unfiltered   # the largest method, MiB
    uv run unlearn/estimate_memory.py --method rmu --batch-size 4 --max-length 512   # one method
    uv run unlearn/estimate_memory.py --table                                         # every method, readable

Only `config.json` is read (a few KB from the hub, or the local folder); no weights are downloaded and
torch is not imported. The parameter count comes from the architecture fields (embeddings, attention
with grouped key/value heads, plain or gated MLP). Training memory follows brittle/precision.py's policy:

    trainable parameters x 16 bytes   fp32 weight, fp32 gradient, AdamW's two fp32 moments
    frozen parameters    x stored     the checkpoint's bytes per value (2: bf16) - fp32 when computing in fp32
    extra copies                      wt_dist_reg's θ_pre, in the stored dtype
    activations                       with gradient checkpointing: each decoder layer's fp32 input for every
                                      text of the step, one layer recomputed (~(26·hidden + 4·intermediate)
                                      bytes per token), and the fp32 log-probabilities over the vocabulary
                                      kept for backward by each forward pass through the output head
                                      (or, when larger, the AdamW step's fp32 temporaries: none with the
                                      fused kernel used on CUDA; on the CPU torch steps one tensor at a
                                      time, with √v and its quotient of the largest tensor)

What trains depends on the method (its card in brittle/catalogue.py): everything; for rmu, cb and cb_lat only
the embeddings and the layers up to the top target layer (the rest is frozen and never run); with LoRA
(rapidun) only the adapters. benchmarks/training_memory.py checks these predictions against measured
peaks. parallel_sweep.sh uses the largest method's estimate to choose how many GPUs each job gets.
Prints the estimate in MiB on stdout (one integer) and a readable line on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from brittle.catalogue import METHODS, method_defaults, parse_layer_ids
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


FUSED_QKV_TYPES = {"gpt_neox", "gpt2"}
# Methods whose loss runs the model on one micro-batch only (the others run forget and retain texts).
SINGLE_PASS_METHODS = {"ga_simple", "wt_dist", "wt_dist_reg"}
MIB = 2**20


@dataclass(frozen=True)
class Shape:
    """The sizes of a decoder-only transformer that memory depends on."""

    hidden: int
    layers: int
    vocab: int
    intermediate: int
    attention: int  # parameters of one layer's attention
    attention_lora_width: int  # Σ (inputs + outputs) over the attention's linear layers
    per_layer: int  # parameters of one decoder layer
    embeddings: int  # input embedding (and untied output head)
    head: int  # untied output head (0 when tied)
    mlp_matrices: int  # 2 (plain) or 3 (gated)
    parameters: int


def model_shape(config: dict) -> Shape:
    """Sizes from config.json (see `parameter_count`)."""
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
    query, key_value = heads * head_size, key_value_heads * head_size
    if config.get("model_type") in FUSED_QKV_TYPES:  # one query_key_value matrix, then the output projection
        attention_lora_width = (hidden + query + 2 * key_value) + (query + hidden)
    else:  # q, k, v and o, each its own matrix
        attention_lora_width = 4 * hidden + 2 * query + 2 * key_value
    head = 0 if config.get("tie_word_embeddings", True) else vocab * hidden
    embeddings = vocab * hidden + head
    if config.get("model_type") == "gpt2":
        embeddings += first(config, "n_positions", default=1024) * hidden
    return Shape(hidden, layers, vocab, intermediate, attention, attention_lora_width, per_layer, embeddings, head,
                 mlp_matrices, embeddings + layers * per_layer)


def parameter_count(config: dict) -> int:
    """Parameters of a decoder-only transformer from its configuration (within a few percent)."""
    return model_shape(config).parameters


def lora_parameters(shape: Shape, rank: int) -> int:
    """Adapter parameters of rank-`rank` LoRA on every linear layer of the decoder (peft's "all-linear"):
    r · (inputs + outputs) per matrix."""
    mlp_inputs_outputs = shape.mlp_matrices * (shape.hidden + shape.intermediate)
    return shape.layers * rank * (shape.attention_lora_width + mlp_inputs_outputs)


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of one method's training, by component."""

    method: str
    trainable: int
    frozen: int
    weights: int
    gradients_and_optimizer: int
    copies: int
    transient: int  # the larger of the activations kept for backward and the AdamW step's temporary

    @property
    def total(self) -> int:
        return self.weights + self.gradients_and_optimizer + self.copies + self.transient


def training_memory(config: dict, method: str, batch_size: int, length: int, layer_ids: list[int] | None = None,
                    lora_rank: int = 0, retain_batch_size: int | None = None, stored_bytes: int = 2,
                    compute_bytes: int = 2, checkpointing: bool = True, adamw: str = "fused") -> MemoryEstimate:
    """Predicted memory of `method` with micro-batches of `batch_size` forget (and `retain_batch_size`, default
    the same, retain) texts of `length` tokens, under brittle/precision.py's policy (fp32 master weights and
    AdamW state; `compute_bytes` 4 means fp32 compute, where frozen weights are fp32 as well).
    `adamw` is how torch runs the AdamW step, which decides its fp32 temporaries (the peak is the larger of
    the backward pass and the step): "fused" (CUDA, what the trainer asks for: none), "foreach" (torch's
    multi-tensor default on CUDA without `fused`: √v of every trainable parameter at once) or "single"
    (torch's only choice on the CPU: a loop over the tensors, √v and √v/√(1 − β₂ᵗ) of one at a time)."""
    card = METHODS[method]
    shape = model_shape(config)
    activation_method = "retain_activations" in card.needs
    layers_run = max(layer_ids) + 1 if activation_method and layer_ids else shape.layers
    if lora_rank:
        trainable = lora_parameters(shape, lora_rank)
        frozen = shape.parameters
    elif activation_method:
        trainable = shape.embeddings - shape.head + layers_run * shape.per_layer
        frozen = shape.parameters - trainable
    else:
        trainable, frozen = shape.parameters, 0
    frozen_bytes = stored_bytes if compute_bytes < 4 else 4
    copies = shape.parameters * stored_bytes if "pretrained_weights" in card.needs else 0

    # Activations: the texts whose graphs are alive together at the backward pass.
    retain_batch_size = retain_batch_size or batch_size
    texts = batch_size if method in SINGLE_PASS_METHODS else batch_size + retain_batch_size
    largest_pass = max(batch_size, 0 if method in SINGLE_PASS_METHODS else retain_batch_size)
    layer_bytes_per_token = 26 * shape.hidden + 4 * shape.intermediate  # one block's saved tensors, bf16/fp32 mix
    if compute_bytes == 4:
        layer_bytes_per_token *= 2
    if checkpointing:
        body = texts * length * layers_run * shape.hidden * 4 + largest_pass * length * layer_bytes_per_token
    else:
        body = texts * length * layers_run * layer_bytes_per_token
    # The output head: fp32 log-probabilities kept per pass, and a gradient of them plus the logits at backward.
    head = 0 if activation_method else (texts + 2 * largest_pass) * length * shape.vocab * 4
    # The largest trainable tensor: an embedding matrix (every full or layer-limited run trains the input
    # embedding), else the widest matrix; with LoRA an adapter, r × (inputs + outputs) at most.
    largest = lora_rank * (shape.hidden + shape.intermediate) if lora_rank else max(
        shape.vocab * shape.hidden, shape.hidden * shape.intermediate)
    step_temporary = {"fused": 0, "foreach": trainable * 4, "single": 2 * largest * 4}[adamw]
    return MemoryEstimate(method, trainable, frozen, trainable * 4 + frozen * frozen_bytes, trainable * 12, copies,
                          max(body + head, step_temporary))


def method_settings(method: str, preset: str = "real") -> dict:
    """The settings a run of `method` uses by default (batch size, length, target layers, LoRA rank, mix)."""
    chosen = get_preset(preset, 42)
    defaults = method_defaults(chosen.unlearn_defaults, method, chosen.name)
    retain, forget = (int(part) for part in str(defaults["mix_ratio"]).split(":"))
    return {"batch_size": defaults["batch_size"], "length": defaults["max_length"],
            "layer_ids": parse_layer_ids(defaults["layer_id"]), "lora_rank": defaults["lora_rank"],
            "retain_batch_size": max(1, round(defaults["batch_size"] * retain / forget))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="hub id or local folder (default: the preset's base model)")
    parser.add_argument("--preset", default="real", choices=["real", "toy"])
    parser.add_argument("--seed", type=int, default=42, help="selects the toy base model (models/toy-base-s<seed>)")
    parser.add_argument("--method", default=None, choices=list(METHODS),
                        help="the method (default: the most demanding one, for sizing GPU groups)")
    parser.add_argument("--batch-size", type=int, default=None, help="forget texts per micro-batch (default: the "
                                                                     "method's)")
    parser.add_argument("--max-length", type=int, default=None, help="tokens per text (default: the method's)")
    parser.add_argument("--stored-bytes", type=int, default=2, help="bytes per value of the checkpoint (2: bf16)")
    parser.add_argument("--compute-bytes", type=int, default=2, help="2 for bf16/fp16 compute (--dtype), 4 for fp32")
    parser.add_argument("--no-checkpointing", action="store_true", help="without gradient checkpointing")
    parser.add_argument("--overhead-mib", type=int, default=1024,
                        help="CUDA context and allocator slack added to each estimate (default 1024)")
    parser.add_argument("--table", action="store_true", help="print every method's estimate, by component")
    args = parser.parse_args()
    model = args.model or get_preset(args.preset, args.seed).base
    config = read_config(model)
    estimates = []
    for method in [args.method] if args.method else list(METHODS):
        settings = method_settings(method, args.preset)
        settings["batch_size"] = args.batch_size or settings["batch_size"]
        settings["length"] = args.max_length or settings["length"]
        estimates.append(training_memory(config, method, stored_bytes=args.stored_bytes,
                                         compute_bytes=args.compute_bytes, checkpointing=not args.no_checkpointing,
                                         **settings))
    if args.table:
        print("| method | trainable | frozen | weights | gradients + AdamW | copies | transient | total |")
        print("|---|---|---|---|---|---|---|---|")
        for estimate in estimates:
            parts = (estimate.weights, estimate.gradients_and_optimizer, estimate.copies, estimate.transient,
                     estimate.total + args.overhead_mib * MIB)
            print(f"| {estimate.method} | {estimate.trainable / 1e9:.2f}B | {estimate.frozen / 1e9:.2f}B | "
                  + " | ".join(f"{value / 2**30:.1f} GiB" for value in parts) + " |")
        return
    largest = max(estimates, key=lambda estimate: estimate.total)
    needed_mib = largest.total / MIB + args.overhead_mib
    parameters = parameter_count(config)
    count = f"{parameters / 1e9:.2f}B" if parameters >= 1e8 else f"{parameters / 1e6:.2f}M"
    print(f"{model}: ~{count} parameters -> ~{needed_mib:,.0f} MiB to train with {largest.method}", file=sys.stderr)
    print(max(1, round(needed_mib)))


if __name__ == "__main__":
    run_cli(main)
