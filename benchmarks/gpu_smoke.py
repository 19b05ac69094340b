# /// script
# requires-python = ">=3.10"
# dependencies = ["brittle", "peft>=0.13"]
#
# [tool.uv.sources]
# brittle = { path = "..", editable = true }
# ///
"""One line of benchmarks/gpu_smoke.sh: a random-init GPT-NeoX, random tokens, the toolkit's own code.

    python benchmarks/gpu_smoke.py prepare --shape 6.9b|tiny --workdir W     # the models and data on disk
    python benchmarks/gpu_smoke.py LINE    --shape 6.9b|tiny --workdir W     # one line, appended to W/results.jsonl
    python benchmarks/gpu_smoke.py table   --workdir W                       # the table; exit 1 unless all passed

`prepare` writes W/model (random init, stored in bf16 like the real checkpoints, with a word-level tokenizer:
token i is the word "i", so no tokenizer download), W/perturbed (the same weights × (1 + 0.01·N(0, 1)),
Step 1's pair), the relearning attack's questions and a small local lm-eval task. The lines, each in its own
process so that each peak memory is its own:

    ga_bf16      5 `ga` steps, fp32 master weights + AdamW, bf16 compute (brittle.trainer.train, as unlearn.py)
    ga_fp32      the same in fp32 compute: the reference for ga_bf16's ΔW of one MLP matrix
                 (ga_bf16 passes when ≥ 90% of the matrix changed and its ‖ΔW‖ is within 5% of this run's)
    cb_lat       3 `cb_lat` steps (forward hooks on the target layers, LAT's adversary)
    wt_dist_reg  3 `wt_dist_reg` steps (θ_pre sharded like θ, the penalty summed over the shards)
    relearn      experiment/relearn_attack.py's `attack_once` on W/model: 10 steps (10 T answers of 1,024
                 tokens, batch 1) then 64 four-option V questions of 1,024 tokens scored like lm-eval's acc
    step1        experiment/collect_weight_comparison.py (Step 1) on (W/model, W/perturbed): passes when its total
                 relative ‖ΔW‖ is the perturbation's 1% (within 5%)
    step0        brittle.evaluation.evaluate_model (lm-eval, the Step 0 path) on W/model, local task smoke_mcq

The training lines and `relearn` run under brittle.distributed's engine when ACCELERATE_CONFIG is set (the
shell script sets unlearn/accelerate/fsdp2_1gpu_offload.yaml on a GPU, cpu_gloo.yaml without): they shard
and offload exactly as `./unlearn/run_unlearn.sh` and `relearn_attack.py` do. `step1` and `step0` run in one
plain process, as their scripts do.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SHAPES: dict[str, dict[str, Any]] = {  # the 6.9B deep-ignorance shape, and a tiny one for the CPU rehearsal
    "6.9b": {"hidden": 4096, "layers": 32, "heads": 32, "intermediate": 16384, "vocabulary": 50304,
             "train_length": 512, "layer_id": "5,6,7"},
    "tiny": {"hidden": 64, "layers": 4, "heads": 4, "intermediate": 256, "vocabulary": 512,
             "train_length": 64, "layer_id": "1,2"},
}
TRAINING_LINES = {"ga_bf16": ("ga", 5), "ga_fp32": ("ga", 5), "cb_lat": ("cb_lat", 3),  # line: (method, steps)
                  "wt_dist_reg": ("wt_dist_reg", 3)}
LINES = (*TRAINING_LINES, "relearn", "step1", "step0")
MATRIX = "gpt_neox.layers.0.mlp.dense_h_to_4h.weight"  # the MLP matrix whose update ga_bf16 checks
PERTURBATION = 0.01  # Step 1's pair: W_B = W_A × (1 + 0.01·ε), so ‖ΔW‖ / ‖W‖ = 1% up to sampling and bf16 rounding
ATTACK_STEPS, ATTACK_QUESTIONS, QUESTION_LENGTH, OPTION_TOKENS = 10, 64, 1024, 8  # at every shape
STEP0_QUESTIONS, STEP0_LENGTH = 32, 64
RESULTS = "results.jsonl"


# ---------------------------------------------------------------------------------------------------
# The model, the tokenizer and the data
# ---------------------------------------------------------------------------------------------------


def build_model(shape: str, device, dtype=None):
    """A random-init GPT-NeoX of `shape` on `device` (seeded: every line starts from the same weights)."""
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    size = SHAPES[shape]
    config = GPTNeoXConfig(hidden_size=size["hidden"], num_hidden_layers=size["layers"],
                           num_attention_heads=size["heads"], intermediate_size=size["intermediate"],
                           vocab_size=size["vocabulary"], tie_word_embeddings=False, max_position_embeddings=2048)
    torch.manual_seed(0)
    with torch.device(device):
        model = GPTNeoXForCausalLM(config)
    return model.to(dtype or torch.bfloat16).eval()  # stored in bf16, like the real checkpoints


def word_level_tokenizer(vocabulary: int):
    """Token i is the word "i": random texts are strings of numbers, no tokenizer download."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    word_level = Tokenizer(models.WordLevel({str(index): index for index in range(vocabulary)}, unk_token="0"))
    word_level.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=word_level, pad_token="0", eos_token="0")


def random_sequences(count: int, length: int, vocabulary: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(1, vocabulary) for _ in range(length)] for _ in range(count)]


def random_questions(count: int, length: int, vocabulary: int, seed: int) -> list[dict[str, Any]]:
    """Four-option questions of `length` tokens in all (question + the longest option)."""
    rng = random.Random(seed)

    def words(number: int) -> str:
        return " ".join(str(rng.randrange(1, vocabulary)) for _ in range(number))

    return [{"question": words(length - OPTION_TOKENS), "choices": [words(OPTION_TOKENS) for _ in range(4)],
             "answer": rng.randrange(4)} for _ in range(count)]


def prepare(shape: str, workdir: Path) -> None:
    """W/model, W/perturbed, the attack's T and V questions, and the local lm-eval task smoke_mcq."""
    import torch

    from brittle.evaluation import multiple_choice_task_yaml
    from brittle.outputs import write_text

    size = SHAPES[shape]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = word_level_tokenizer(size["vocabulary"])
    model = build_model(shape, device)
    model.save_pretrained(workdir / "model")
    tokenizer.save_pretrained(workdir / "model")
    generator = torch.Generator(device).manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            noise = torch.randn(parameter.shape, generator=generator, device=device, dtype=torch.float32)
            parameter.copy_(parameter.float() * (1 + PERTURBATION * noise))
    model.save_pretrained(workdir / "perturbed")
    tokenizer.save_pretrained(workdir / "perturbed")
    for name, count, length, seed in (("attack_t", ATTACK_STEPS, QUESTION_LENGTH, 4),
                                      ("attack_v", ATTACK_QUESTIONS, QUESTION_LENGTH, 5),
                                      ("step0", STEP0_QUESTIONS, STEP0_LENGTH, 6)):
        questions = random_questions(count, length, size["vocabulary"], seed)
        write_text(workdir / f"{name}.jsonl", "".join(json.dumps(question) + "\n" for question in questions))
    (workdir / "tasks").mkdir(exist_ok=True)
    task = multiple_choice_task_yaml("smoke_mcq", str(workdir / "step0.jsonl"))
    write_text(workdir / "tasks" / "smoke_mcq.yaml", task)
    print(f"prepared {workdir}: model, perturbed copy, {ATTACK_STEPS} + {ATTACK_QUESTIONS} attack questions, task "
          "smoke_mcq")


def load_script(relative: str):
    """An experiment script as a module (its functions are the library code of its step)."""
    path = REPO / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------------------
# The lines
# ---------------------------------------------------------------------------------------------------


def peak_gib() -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


def reset_peak() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def method_settings(method: str, steps: int, shape: str) -> argparse.Namespace:
    """unlearn.py's settings for `method`: the catalogue's defaults, batch 2, `steps` optimizer steps."""
    from brittle.catalogue import HYPERPARAMETERS, parse_layer_ids

    settings = argparse.Namespace(**{setting.name: setting.default for setting in HYPERPARAMETERS})
    settings.batch_size, settings.max_steps, settings.seed = 2, steps, 42
    settings.layer_id = SHAPES[shape]["layer_id"]
    settings.layer_ids = parse_layer_ids(settings.layer_id)
    settings.gradient_checkpointing = "auto"
    return settings


def train_line(line: str, shape: str) -> dict:
    """ga_bf16, ga_fp32, cb_lat or wt_dist_reg: `steps` optimizer steps of unlearn.py's preparation and loop."""
    import torch

    from brittle.architecture import decoder_layers
    from brittle.catalogue import METHODS
    from brittle.distributed import start_engine
    from brittle.methods import LOSSES
    from brittle.precision import Precision, gradient_checkpointing
    from brittle.trainer import TrainingData, train
    from brittle.unlearning import prepare_caches, prepare_training

    engine = start_engine()
    device = torch.device(engine.device_for("cuda" if torch.cuda.is_available() else "cpu"))
    method, steps = TRAINING_LINES[line]
    settings = method_settings(method, steps, shape)
    size = SHAPES[shape]
    texts = settings.batch_size * steps
    data = TrainingData(random_sequences(texts, size["train_length"], size["vocabulary"], 1),
                        random_sequences(texts, size["train_length"], size["vocabulary"], 2), [], [])
    model = build_model(shape, device)
    # bf16 autocast also runs on the CPU: the rehearsal computes in the dtype the GPU run does.
    precision = Precision(torch.float32 if line == "ga_fp32" else torch.bfloat16, torch.bfloat16, device.type)
    card = METHODS[method]
    context = prepare_training(model, decoder_layers(model), card, settings, precision)
    caches = prepare_caches(context, card, data, settings, 0, device, precision)
    gradient_checkpointing(context.model, settings.gradient_checkpointing, device)
    before = context.model.get_parameter(MATRIX).detach().float().cpu().clone()
    reset_peak()
    start = time.perf_counter()
    result = train(context, LOSSES[method], method, data, caches, settings, 0, device, engine, precision)
    seconds = time.perf_counter() - start
    peak = peak_gib()
    trained = engine.gathered_model(context.model, lambda: build_model(shape, "meta")) if engine.sharded else model
    engine.finish()
    if trained is None:  # not process 0
        return {}
    delta = trained.get_parameter(MATRIX).detach().float().cpu() - before
    final_loss = result.rows[-1]["loss"]
    record = {"line": line, "steps": steps, "seconds": round(seconds, 1), "seconds_per_step": round(seconds / steps, 2),
              "peak_gpu_gib": peak, "final_loss": final_loss, "changed_fraction": (delta != 0).float().mean().item(),
              "delta_norm": delta.norm().item()}
    record["passed"] = math.isfinite(final_loss) and math.isfinite(record["delta_norm"]) and record["delta_norm"] > 0
    record["check"] = f"final loss {final_loss:.3f}, |ΔW| of layer 0's MLP matrix {record['delta_norm']:.3g}"
    return record


def relearn_line(workdir: Path) -> dict:
    """relearn_attack.py's `attack_once`: 10 steps on T's answers, then V's 64 questions scored (epoch 1)."""
    from brittle.distributed import start_engine
    from brittle.questions import read_questions

    attack = load_script("experiment/relearn_attack.py")
    train_questions = [question.as_record() for question in read_questions(workdir / "attack_t.jsonl")]
    evaluate = [question.as_record() for question in read_questions(workdir / "attack_v.jsonl")]
    args = argparse.Namespace(seed=42, device="auto", dtype="auto", gradient_checkpointing="auto",
                              max_length=QUESTION_LENGTH, batch_size=1, epochs=1, eval_batch_size=16)
    unattacked = {"v_accuracy": math.nan, "t_accuracy": math.nan}  # epoch 0 is not scored: 64 questions in all
    reset_peak()
    start = time.perf_counter()
    rows = attack.attack_once(str(workdir / "model"), 1e-5, train_questions, evaluate, args, unattacked)
    seconds = time.perf_counter() - start
    engine = start_engine()
    engine.finish()
    if not engine.is_main:
        return {}
    last = rows[-1]
    passed = last["step"] == ATTACK_STEPS and math.isfinite(last["loss"]) and 0 <= last["v_accuracy"] <= 1
    return {"line": "relearn", "steps": last["step"], "seconds": round(seconds, 1),
            "seconds_per_step": round(seconds / ATTACK_STEPS, 2), "peak_gpu_gib": peak_gib(), "passed": passed,
            "check": f"{last['step']} steps, loss {last['loss']:.3f}; V accuracy {last['v_accuracy']:.2f} on "
                     f"{len(evaluate)} questions of 1,024 tokens (includes scoring)"}


def step1_line(workdir: Path) -> dict:
    """Step 1 (collect_weight_comparison.py's main) on (W/model, W/perturbed), its outputs under W/outputs."""
    import torch

    step1 = load_script("experiment/collect_weight_comparison.py")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    arguments = ["--model-a", str(workdir / "model"), "--model-b", str(workdir / "perturbed"), "--device", device,
                 "--output-root", str(workdir / "outputs"), "--force"]
    saved_argv, sys.argv = sys.argv, ["collect_weight_comparison.py", *arguments]
    reset_peak()
    start = time.perf_counter()
    try:
        step1.main()
    finally:
        sys.argv = saved_argv
    seconds = time.perf_counter() - start
    summary_file = next((workdir / "outputs").rglob("summary.json"))
    summary = json.loads(summary_file.read_text())
    relative = summary["dW_fro_rel_total"]
    return {"line": "step1", "steps": summary["weight_matrices"], "seconds": round(seconds, 1),
            "seconds_per_step": None, "peak_gpu_gib": peak_gib(),
            "passed": abs(relative / PERTURBATION - 1) <= 0.05,
            "check": f"{summary['weight_matrices']} matrices, total |ΔW|/|W| {relative:.4f} (perturbation "
                     f"{PERTURBATION})"}


def step0_line(workdir: Path) -> dict:
    """Step 0's lm-eval path (brittle.evaluation.evaluate_model) on W/model and the local task smoke_mcq."""
    from brittle.evaluation import evaluate_model
    from brittle.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(str(workdir / "model"), "auto", "auto")
    reset_peak()
    start = time.perf_counter()
    summary = evaluate_model(model, tokenizer, ["smoke_mcq"], [str(workdir / "tasks")], batch_size=16)
    seconds = time.perf_counter() - start
    result = summary.get("smoke_mcq", {})
    accuracy, samples = result.get("acc", math.nan), result.get("samples")
    return {"line": "step0", "steps": samples, "seconds": round(seconds, 1), "seconds_per_step": None,
            "peak_gpu_gib": peak_gib(), "passed": samples == STEP0_QUESTIONS and 0 <= accuracy <= 1,
            "check": f"lm-eval acc {accuracy:.2f} on {samples} local questions ({model.dtype})"}


# ---------------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------------


def read_records(results: Path) -> dict[str, dict]:
    if not results.is_file():
        return {}
    return {record["line"]: record for record in map(json.loads, results.read_text().splitlines())}


def judge(records: dict[str, dict]) -> dict[str, dict]:
    """The check across lines: bf16 compute on fp32 master weights must move the matrix as fp32 compute does
    (≥ 90% of its entries changed, ‖ΔW‖ within 5% of ga_fp32's)."""
    bf16, fp32 = records.get("ga_bf16"), records.get("ga_fp32")
    if bf16 and fp32:
        ratio = bf16["delta_norm"] / fp32["delta_norm"] if fp32["delta_norm"] else math.inf
        bf16["check"] = f"{bf16['changed_fraction']:.1%} of layer 0's MLP matrix changed; |ΔW| / fp32's {ratio:.3f}"
        bf16["passed"] = bf16["passed"] and bf16["changed_fraction"] >= 0.9 and abs(ratio - 1) <= 0.05
    elif bf16:
        bf16["passed"], bf16["check"] = False, "no ga_fp32 reference to compare with"
    return records


def table(records: dict[str, dict]) -> tuple[str, bool]:
    """The printed table and whether every line finished and passed."""
    records = judge(records)
    lines = [f"{'line':<12} {'peak GPU GiB':>12} {'s/step':>7} {'seconds':>8}  {'result':<6} check"]
    for line in LINES:
        record = records.get(line)
        if record is None:
            lines.append(f"{line:<12} {'-':>12} {'-':>7} {'-':>8}  FAIL   did not finish")
            continue
        peak = "-" if record["peak_gpu_gib"] is None else f"{record['peak_gpu_gib']:.1f}"
        per_step = "-" if record["seconds_per_step"] is None else f"{record['seconds_per_step']:.2f}"
        verdict = "pass" if record["passed"] else "FAIL"
        lines.append(f"{line:<12} {peak:>12} {per_step:>7} {record['seconds']:>8.1f}  {verdict:<6} {record['check']}")
    passed = all(line in records and records[line]["passed"] for line in LINES)
    return "\n".join(lines), passed


def main() -> None:
    from brittle.cli import run_cli
    from brittle.distributed import relaunch_if_requested

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("line", choices=["prepare", *LINES, "table"])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="6.9b")
    parser.add_argument("--workdir", type=Path, required=True, help="models, data and results.jsonl of this run")
    args = parser.parse_args()

    def run() -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub, no internet: everything is in --workdir
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
        if args.line == "table":
            text, passed = table(read_records(args.workdir / RESULTS))
            print(text)
            sys.exit(0 if passed else 1)
        if args.line == "prepare":
            args.workdir.mkdir(parents=True, exist_ok=True)
            prepare(args.shape, args.workdir)
            return
        if args.line in (*TRAINING_LINES, "relearn"):
            relaunch_if_requested()  # under ACCELERATE_CONFIG: the engine of run_unlearn.sh / relearn_attack.py
        if args.line in TRAINING_LINES:
            record = train_line(args.line, args.shape)
        else:
            record = {"relearn": relearn_line, "step1": step1_line, "step0": step0_line}[args.line](args.workdir)
        if record:
            with (args.workdir / RESULTS).open("a") as results:
                results.write(json.dumps(record) + "\n")

    run_cli(run)


if __name__ == "__main__":
    main()
