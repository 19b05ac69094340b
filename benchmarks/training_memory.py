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
(/proc/self/status VmHWM, kept exactly by the kernel, reset just before the model is built) minus the
resident memory before it (the interpreter, torch and the random texts, which the estimate does not
model); the prediction is `estimate_memory.training_memory` for the same settings, with the CPU's
AdamW (torch's single-tensor loop: foreach and fused kernels are for accelerators). Target: every
prediction within ±25% of the measurement. It also prints the estimate for the 6.9B deep-ignorance
shape. One thread is the default, for a shared machine: the tensors, which make the peak, are the same
whatever the thread count (more threads add only their stacks and small per-thread scratch buffers).
At 64 tokens per text the activations are small (<0.1 GiB) next to the weights and AdamW state: this
length checks the per-parameter terms of every method and the activation term only where it is
comparable (LoRA); longer texts check the activations at minutes more per method.

    uv run benchmarks/training_memory.py                            # all 13 methods, batch 1 × 64 tokens
    uv run benchmarks/training_memory.py --methods ga,rmu --batch-size 2 --length 128
    uv run benchmarks/training_memory.py --report                   # the stored measurements, estimate as now
    MALLOC_MMAP_THRESHOLD_=131072 uv run benchmarks/training_memory.py   # see below

glibc keeps freed blocks below its mmap threshold, which it raises as large blocks are freed (up to 32
MiB, i.e. most per-layer tensors here), so the resident peak includes memory that no tensor holds and
that creeps up from step to step. A fixed threshold (the environment variable above; it is recorded with
each measurement) returns every block of 128 KiB or more to the system when it is freed, so the peak is
then the tensors' own, which is what the estimate models.

Each method takes minutes on a CPU (3 steps of a 405M-parameter model, plus the caches and the
adversary); each measurement is stored in --output as it finishes, so an estimate can be revised and
checked again with --report without training anything.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "unlearn"))

import estimate_memory  # noqa: E402  (the scripts of unlearn/ are not a package)

from brittle.catalogue import METHODS, method_defaults, parse_layer_ids  # noqa: E402

PYTHIA_410M = {"model_type": "gpt_neox", "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
               "intermediate_size": 4096, "vocab_size": 50304, "max_position_embeddings": 2048,
               "tie_word_embeddings": False}
DEEP_IGNORANCE_6_9B = {**PYTHIA_410M, "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
                       "intermediate_size": 16384}
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

    real = get_preset("real", 42)
    settings = method_defaults(real.unlearn_defaults, method, real.name)
    settings.update(batch_size=args.batch_size, max_length=args.length, max_steps=args.steps, epochs=1,
                    eval_interval=0, seed=0, method=method)
    settings["layer_ids"] = parse_layer_ids(settings["layer_id"])
    return argparse.Namespace(**settings)


def measure(method: str, args: argparse.Namespace) -> dict:
    """Run the 3 steps of `method` in this process; the measured and predicted peaks in bytes."""
    import random

    import torch
    from torch.optim.optimizer import register_optimizer_step_pre_hook
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
    card = METHODS[method]
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
    # The high-water mark as each optimizer step begins: whether the peak comes from the forward and
    # backward passes (it is already reached here) or from the AdamW step itself (it rises after).
    before_steps = []
    register_optimizer_step_pre_hook(
        lambda *_: before_steps.append(resident_bytes("VmHWM") - baseline))
    start = time.perf_counter()
    train(context, LOSSES[method], method, data, caches, settings, 0, device, precision=precision)
    seconds = time.perf_counter() - start
    return {"method": method, "measured": resident_bytes("VmHWM") - baseline, "baseline": baseline,
            "peak_before_each_step": before_steps,
            "seconds": round(seconds, 1), "batch_size": args.batch_size, "retain_batch_size": retain_size,
            "length": args.length, "layer_ids": settings.layer_ids, "lora_rank": settings.lora_rank,
            "stored_bytes": stored.itemsize, "compute_bytes": precision.compute.itemsize,
            "commit": commit(), "load_average": os.getloadavg(),
            "malloc_mmap_threshold": os.environ.get("MALLOC_MMAP_THRESHOLD_")}


def predict(row: dict) -> estimate_memory.MemoryEstimate:
    """The estimate for the settings a measurement ran with (CPU: single-tensor AdamW, checkpointing on)."""
    return estimate_memory.training_memory(
        PYTHIA_410M, row["method"], row["batch_size"], row["length"], row["layer_ids"], row["lora_rank"],
        row["retain_batch_size"], stored_bytes=row["stored_bytes"], compute_bytes=row["compute_bytes"],
        checkpointing=True, adamw="single")


def commit() -> str:
    """The checked-out commit (with "+changes" when the work tree differs from it)."""
    def git(*arguments: str) -> str:
        return subprocess.run(["git", *arguments], cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()
    return git("rev-parse", "--short", "HEAD") + ("+changes" if git("status", "--porcelain", "--untracked-files=no")
                                                  else "")


def gib(value: float) -> str:
    return f"{value / 2**30:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated (default: all 13)")
    parser.add_argument("--batch-size", type=int, default=1, help="forget texts per step (default 1)")
    parser.add_argument("--length", type=int, default=64, help="tokens per text (default 64)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"], help="compute dtype (default bf16)")
    parser.add_argument("--stored-dtype", default="bf16", choices=["bf16", "fp32"],
                        help="dtype the random checkpoint is stored in (default bf16, as deep-ignorance)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1; the peak does not "
                                                               "depend on it)")
    parser.add_argument("--output", default="outputs/benchmarks/training_memory.json",
                        help="where the measurements go (JSON, one entry per method; re-running a method replaces "
                             "its entry)")
    parser.add_argument("--report", action="store_true",
                        help="measure nothing: print the table for the measurements in --output against the "
                             "estimate as it is now")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.worker, args)))
        return

    output = Path(args.output)
    measured = json.loads(output.read_text())["measurements"] if output.is_file() else {}
    for method in [] if args.report else args.methods.split(","):
        if method not in METHODS:
            sys.exit(f"error: unknown method {method!r}; choose from {', '.join(METHODS)}")
        command = [sys.executable, __file__, "--worker", method, *sys.argv[1:]]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit(f"error: {method} failed:\n{result.stderr[-3000:]}")
        measured[method] = json.loads(result.stdout.strip().splitlines()[-1])
        predicted = predict(measured[method]).total
        print(f"{method}: measured {gib(measured[method]['measured'])} GiB, predicted {gib(predicted)} GiB "
              f"({predicted / measured[method]['measured'] - 1:+.0%}), {measured[method]['seconds']} s", flush=True)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps({"measurements": measured}, indent=2))  # after each method: minutes each

    rows = [(row, predict(row)) for method, row in measured.items() if method in METHODS]
    print("\nPythia-410M shape, gradient checkpointing on, CPU (single-tensor AdamW); peak = resident high-water "
          "mark minus the resident memory before the model was built:\n")
    print("| method | texts × tokens (forget + retain) | trainable | measured peak | predicted | error | commit | "
          "load |")
    print("|---|---|---|---|---|---|---|---|")
    errors = []
    for row, estimate in rows:
        error = estimate.total / row["measured"] - 1
        errors.append(abs(error))
        retain = 0 if row["method"] in estimate_memory.SINGLE_PASS_METHODS else row["retain_batch_size"]
        print(f"| {row['method']} | ({row['batch_size']} + {retain}) × {row['length']} | "
              f"{estimate.trainable / 1e6:.0f}M | {gib(row['measured'])} GiB | {gib(estimate.total)} GiB | "
              f"{error:+.0%} | {row['commit']} | {row['load_average'][0]:.1f} |")
    print(f"\nall within ±{TOLERANCE:.0%}: {all(error <= TOLERANCE for error in errors)}")
    if "ga" in measured and "wt_dist_reg" in measured:
        extra = measured["wt_dist_reg"]["measured"] - measured["ga"]["measured"]
        weights = estimate_memory.parameter_count(PYTHIA_410M) * measured["wt_dist_reg"]["stored_bytes"]
        print(f"wt_dist_reg's peak - ga's peak: {gib(extra)} GiB; one copy of the weights (θ_pre, stored dtype): "
              f"{gib(weights)} GiB")

    print("\n6.9B deep-ignorance shape, each method's default batch and length (bf16 stored and compute, fused "
          "AdamW):\n")
    print("| method | trainable | total |")
    print("|---|---|---|")
    for method in METHODS:
        estimate = estimate_memory.training_memory(DEEP_IGNORANCE_6_9B, method,
                                                   **estimate_memory.method_settings(method))
        print(f"| {method} | {estimate.trainable / 1e9:.2f}B | {gib(estimate.total)} GiB |")


if __name__ == "__main__":
    main()
