# /// script
# requires-python = ">=3.10"
# dependencies = ["brittle", "peft>=0.13"]
#
# [tool.uv.sources]
# brittle = { path = "..", editable = true }
# ///
"""Benchmark: peak memory of unlearning training, measured against unlearn/estimate_memory.py (not a test).

For each method, a fresh process builds a random-init GPT-NeoX of Pythia-410M's shape (24 layers, width
1024, 16 heads, vocabulary 50304) stored in bf16 like the real checkpoints, prepares it exactly as
`unlearn/unlearn.py` does (brittle.unlearning.prepare_training / prepare_caches: frozen layers, LoRA,
fp32 master weights, caches, gradient checkpointing on) and runs 3 optimizer steps of the shared loop
(brittle.trainer.train) on random token texts, in the compute dtype of --dtype (bf16 autocast also runs
on the CPU). The peak is the process's resident-memory high-water mark during those steps
(/proc/self/status VmHWM, reset just before the model is built) minus the resident memory before it;
the prediction is `estimate_memory.training_memory` for the same settings. Target: every prediction
within ±25% of the measurement. It also prints the estimate for the 6.9B deep-ignorance shape.

    uv run benchmarks/training_memory.py                       # the default methods, batch 1 × 64 tokens
    uv run benchmarks/training_memory.py --methods ga,rmu --batch-size 2 --length 128 --threads 2

Each method takes minutes on a CPU (3 steps of a 405M-parameter model, plus the caches and the adversary).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "unlearn"))

import estimate_memory  # noqa: E402  (the scripts of unlearn/ are not a package)

import unlearn  # noqa: E402

PYTHIA_410M = {"model_type": "gpt_neox", "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
               "intermediate_size": 4096, "vocab_size": 50304, "max_position_embeddings": 2048,
               "tie_word_embeddings": False}
DEEP_IGNORANCE_6_9B = {**PYTHIA_410M, "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
                       "intermediate_size": 16384}
# One method per memory profile: full-parameter one and two passes, cached references, activation losses
# (with and without the adversary), the adversary alone, θ_pre's copy, LoRA.
DEFAULT_METHODS = "ga_simple,ga,npo,rmu,cb_lat,lat,wt_dist,wt_dist_reg,rapidun"
TOLERANCE = 0.25


def resident_bytes(field: str) -> int:
    """VmRSS or VmHWM of this process, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak() -> None:
    """Set VmHWM back to the current resident size (Linux ≥ 4.0)."""
    Path("/proc/self/clear_refs").write_text("5")


def method_settings(method: str, args: argparse.Namespace) -> argparse.Namespace:
    """The run's settings: the seed's defaults for `method`, with this benchmark's batch, length and steps."""
    from brittle.presets import get_preset

    settings = unlearn.method_defaults(get_preset("real", 42), method)
    settings.update(batch_size=args.batch_size, max_length=args.length, max_steps=args.steps, epochs=1,
                    eval_interval=0, seed=0, method=method)
    settings["layer_ids"] = unlearn.parse_layer_ids(settings["layer_id"])
    return argparse.Namespace(**settings)


def measure(method: str, args: argparse.Namespace) -> dict:
    """Run the 3 steps of `method` in this process; the measured and predicted peaks in bytes."""
    import random

    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from brittle.architecture import decoder_layers
    from brittle.methods import LOSSES
    from brittle.precision import gradient_checkpointing, resolve_precision
    from brittle.runtime import DTYPES
    from brittle.trainer import TrainingData, retain_batch_size, train
    from brittle.unlearning import prepare_caches, prepare_training

    if args.threads:
        torch.set_num_threads(args.threads)
    settings = method_settings(method, args)
    card = unlearn.METHODS[method]
    rng = random.Random(0)
    retain_size = retain_batch_size(settings)
    texts = lambda count: [[rng.randrange(1, 50304) for _ in range(args.length)] for _ in range(count)]  # noqa: E731
    data = TrainingData(texts(args.batch_size * args.steps), texts(retain_size * args.steps), [], [])
    device = torch.device("cpu")
    stored = DTYPES[args.stored_dtype]
    precision = resolve_precision(args.dtype, "auto", device, stored)

    baseline = resident_bytes("VmRSS")
    reset_peak()
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM._from_config(GPTNeoXConfig(**PYTHIA_410M), dtype=stored)
    context = prepare_training(model, decoder_layers(model), card, settings, precision)
    caches = prepare_caches(context, card, data, settings, 0, device, precision)
    gradient_checkpointing(context.model, "on", device)
    start = time.perf_counter()
    train(context, LOSSES[method], method, data, caches, settings, 0, device, precision)
    seconds = time.perf_counter() - start
    measured = resident_bytes("VmHWM") - baseline

    predicted = estimate_memory.training_memory(
        PYTHIA_410M, method, args.batch_size, args.length, settings.layer_ids, settings.lora_rank, retain_size,
        stored_bytes=stored.itemsize, compute_bytes=precision.compute.itemsize, checkpointing=True, fused_adamw=False)
    return {"method": method, "measured": measured, "predicted": predicted.total, "trainable": predicted.trainable,
            "seconds": round(seconds, 1)}


def gib(value: float) -> str:
    return f"{value / 2**30:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=DEFAULT_METHODS, help=f"comma-separated (default {DEFAULT_METHODS})")
    parser.add_argument("--batch-size", type=int, default=1, help="forget texts per step (default 1)")
    parser.add_argument("--length", type=int, default=64, help="tokens per text (default 64)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"], help="compute dtype (default bf16)")
    parser.add_argument("--stored-dtype", default="bf16", choices=["bf16", "fp32"],
                        help="dtype the random checkpoint is stored in (default bf16, as deep-ignorance)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's choice)")
    parser.add_argument("--output", default="outputs/benchmarks/training_memory.json",
                        help="where the measurements go (JSON)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.worker, args)))
        return

    rows = []
    for method in args.methods.split(","):
        if method not in unlearn.METHODS:
            sys.exit(f"error: unknown method {method!r}; choose from {', '.join(unlearn.METHODS)}")
        command = [sys.executable, __file__, "--worker", method, *sys.argv[1:]]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit(f"error: {method} failed:\n{result.stderr[-3000:]}")
        row = json.loads(result.stdout.strip().splitlines()[-1])
        row["error"] = row["predicted"] / row["measured"] - 1
        rows.append(row)
        print(f"{method}: measured {gib(row['measured'])} GiB, predicted {gib(row['predicted'])} GiB "
              f"({row['error']:+.0%}), {row['seconds']} s", flush=True)

    print(f"\nPythia-410M shape, batch {args.batch_size} × {args.length} tokens, {args.steps} steps, compute "
          f"{args.dtype}, stored {args.stored_dtype}, gradient checkpointing on, CPU:\n")
    print("| method | trainable | measured peak | predicted | prediction error |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['method']} | {row['trainable'] / 1e6:.0f}M | {gib(row['measured'])} GiB | "
              f"{gib(row['predicted'])} GiB | {row['error']:+.0%} |")
    print(f"\nall within ±{TOLERANCE:.0%}: {all(abs(row['error']) <= TOLERANCE for row in rows)}")
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"settings": {key: value for key, value in vars(args).items() if key != "worker"},
                                  "rows": rows}, indent=2))

    print("\n6.9B deep-ignorance shape, each method's default batch and length (bf16 stored and compute):\n")
    print("| method | trainable | total |")
    print("|---|---|---|")
    for method in unlearn.METHODS:
        estimate = estimate_memory.training_memory(DEEP_IGNORANCE_6_9B, method,
                                                   **estimate_memory.method_settings(method))
        print(f"| {method} | {estimate.trainable / 1e9:.2f}B | {gib(estimate.total)} GiB |")


if __name__ == "__main__":
    main()
