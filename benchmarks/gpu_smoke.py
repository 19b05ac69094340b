# /// script
# requires-python = ">=3.10"
# dependencies = ["brittle"]
#
# [tool.uv.sources]
# brittle = { path = "..", editable = true }
# ///
"""One line of benchmarks/gpu_smoke.sh: a random-init GPT-NeoX, random tokens, the toolkit's own code.

    python benchmarks/gpu_smoke.py LINE --shape 6.9b|tiny --results results.jsonl

Lines (each in its own process, so each peak memory is its own):
    ga_bf16     5 `ga` steps, fp32 weights and Adam states, bf16 compute (autocast); saves one MLP matrix's ΔW
    ga_fp32     the same in fp32 compute: the reference for ga_bf16's ΔW (norm within 5%, ≥ 90% changed)
    cb_lat      3 `cb_lat` steps (hooks on the target layers, LAT's adversary)
    score       64 four-option questions of 1,024 tokens scored as lm-eval's `acc` (brittle.multiple_choice)

Training lines use brittle.trainer.train under brittle.distributed's engine: run with ACCELERATE_CONFIG
set (the shell script sets unlearn/accelerate/fsdp2_1gpu_offload.yaml on a GPU, cpu_gloo.yaml without)
they shard/offload exactly as `./unlearn/run_unlearn.sh` does. Appends one JSON line to --results.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from contextlib import nullcontext
from pathlib import Path

SHAPES = {  # hidden, layers, heads, intermediate, vocabulary, training length, scoring length
    "6.9b": (4096, 32, 32, 16384, 50304, 512, 1024),
    "tiny": (64, 4, 4, 256, 512, 64, 128),
}
MATRIX = "gpt_neox.layers.0.mlp.dense_h_to_4h.weight"  # the MLP matrix whose update is checked


def settings_for(method: str, steps: int) -> argparse.Namespace:
    """The loop's settings (the real preset's values where the method has them)."""
    return argparse.Namespace(lr=1e-5, weight_decay=0.0, seed=42, batch_size=2, grad_accum_steps=1, epochs=1,
                              max_steps=steps, grad_clip=1.0, eval_interval=0, mix_ratio="1:1", retain_weight=1.0,
                              alpha=100.0, steering_coeff=20.0, lat_eps=0.1, lat_steps=5, layer_id="1,2")


def random_sequences(count: int, length: int, vocabulary: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(1, vocabulary) for _ in range(length)] for _ in range(count)]


def build_model(shape: str, device):
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    hidden, layers, heads, intermediate, vocabulary, _, _ = SHAPES[shape]
    config = GPTNeoXConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                           intermediate_size=intermediate, vocab_size=vocabulary, tie_word_embeddings=False,
                           max_position_embeddings=2048)
    torch.manual_seed(0)
    with torch.device(device):
        return GPTNeoXForCausalLM(config).float().eval()


def train_line(line: str, shape: str) -> dict:
    """ga_bf16, ga_fp32 or cb_lat: a few optimizer steps of the shared loop on the engine."""
    import torch

    from brittle.architecture import decoder_layers
    from brittle.distributed import start_engine
    from brittle.methods import LOSSES, MethodContext, random_directions
    from brittle.trainer import Caches, TrainingData, original_hidden_states, train

    engine = start_engine()
    device = torch.device(engine.device_for("cuda" if torch.cuda.is_available() else "cpu"))
    method, steps = ("cb_lat", 3) if line == "cb_lat" else ("ga", 5)
    settings = settings_for(method, steps)
    model = build_model(shape, device)
    *_, vocabulary, length, _ = SHAPES[shape]
    texts = settings.batch_size * steps
    data = TrainingData(random_sequences(texts, length, vocabulary, 1), random_sequences(texts, length, vocabulary, 2),
                        [], [])
    layers = decoder_layers(model)
    context = MethodContext(model, settings, layers, [1, 2] if method == "cb_lat" else [])
    compute = torch.autocast(device.type, dtype=torch.bfloat16) if line != "ga_fp32" else nullcontext()
    caches = Caches()
    with compute:
        if method == "cb_lat":
            caches.retain_original_hidden = original_hidden_states(context, data.retain_train, settings.batch_size, 0,
                                                                   device)
            context.random_directions = {layer: vector.to(device) for layer, vector in
                                         random_directions(context.layer_ids, model.config.hidden_size, 42).items()}
        before = model.get_parameter(MATRIX).detach().float().cpu().clone()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        result = train(context, LOSSES[method], method, data, caches, settings, 0, device, engine)
        seconds = (time.perf_counter() - start) / steps
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    trained = engine.gathered_model(context.model, lambda: build_model(shape, "meta")) if engine.sharded else model
    engine.finish()
    if trained is None:
        return {}
    delta = trained.get_parameter(MATRIX).detach().float().cpu() - before
    record = {"line": line, "steps": steps, "seconds_per_step": round(seconds, 2), "peak_gpu_gib": peak,
              "final_loss": result.rows[-1]["loss"], "changed_fraction": (delta != 0).float().mean().item(),
              "delta_norm": delta.norm().item()}
    record["passed"] = math.isfinite(record["final_loss"]) and math.isfinite(record["delta_norm"])
    return record


def score_line(shape: str) -> dict:
    """64 four-option questions of ~1,024 tokens, scored as lm-eval's `acc` on a bf16 model."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from brittle.multiple_choice import multiple_choice_accuracy

    *_, vocabulary, _, length = SHAPES[shape]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    # Token i is the word "i": random questions are strings of numbers, no tokenizer download.
    word_level = Tokenizer(models.WordLevel({str(index): index for index in range(vocabulary)}, unk_token="0"))
    word_level.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=word_level, pad_token="0", eos_token="0")
    rng = random.Random(3)
    questions = [{"question": " ".join(str(rng.randrange(1, vocabulary)) for _ in range(length - 8)),
                  "choices": [" ".join(str(rng.randrange(1, vocabulary)) for _ in range(8)) for _ in range(4)],
                  "answer": rng.randrange(4)} for _ in range(64)]
    model = build_model(shape, device).to(torch.bfloat16 if device == "cuda" else torch.float32)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    accuracy = multiple_choice_accuracy(model, tokenizer, questions, batch_size=16)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
    return {"line": "score", "steps": 1, "seconds_per_step": round(seconds, 2), "peak_gpu_gib": peak,
            "accuracy": accuracy, "passed": 0.0 <= accuracy <= 1.0}


def table(results: Path) -> bool:
    """Print the table of every line's result, with the checks across lines; True when all passed."""
    records = {record["line"]: record for record in map(json.loads, results.read_text().splitlines())}
    bf16, fp32 = records.get("ga_bf16"), records.get("ga_fp32")
    if bf16 and fp32:  # bf16 compute on fp32 weights must move the matrix like fp32 compute does
        ratio = bf16["delta_norm"] / fp32["delta_norm"]
        bf16["check"] = f"{bf16['changed_fraction']:.1%} of layer 0's MLP matrix changed; |ΔW| / fp32's {ratio:.3f}"
        bf16["passed"] = bf16["passed"] and bf16["changed_fraction"] >= 0.9 and abs(ratio - 1) <= 0.05
    print(f"{'line':<10} {'peak GPU GiB':>12} {'s/step':>8}  {'result':<6} check")
    for line in ("ga_bf16", "ga_fp32", "cb_lat", "score"):
        record = records.get(line)
        if record is None:
            print(f"{line:<10} {'-':>12} {'-':>8}  FAIL   did not finish")
            continue
        peak = "-" if record["peak_gpu_gib"] is None else f"{record['peak_gpu_gib']:.1f}"
        check = record.get("check") or (f"accuracy {record['accuracy']:.2f}" if line == "score"
                                        else f"final loss {record['final_loss']:.3f}")
        verdict = "pass" if record["passed"] else "FAIL"
        print(f"{line:<10} {peak:>12} {record['seconds_per_step']:>8}  {verdict:<6} {check}")
    return len(records) == 4 and all(record["passed"] for record in records.values())


def main() -> None:
    from brittle.cli import run_cli
    from brittle.distributed import relaunch_if_requested

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("line", choices=["ga_bf16", "ga_fp32", "cb_lat", "score", "table"])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="6.9b")
    parser.add_argument("--results", required=True, help="JSON lines file to append this line's result to")
    args = parser.parse_args()

    def run() -> None:
        if args.line == "table":
            sys.exit(0 if table(Path(args.results)) else 1)
        if args.line != "score":
            relaunch_if_requested()
        record = score_line(args.shape) if args.line == "score" else train_line(args.line, args.shape)
        if record:
            with Path(args.results).open("a") as results:
                results.write(json.dumps(record) + "\n")

    run_cli(run)


if __name__ == "__main__":
    main()
