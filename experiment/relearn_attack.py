# /// script
# requires-python = ">=3.10"
# dependencies = ["brittle[steps]"]  # the pipeline steps' one environment (pyproject.toml)
#
# [tool.uv.sources]
# brittle = { path = "..", editable = true }
# ///
"""Step 13 - Relearning attack (RTT): was the forget knowledge removed, or only hidden?

The protocol of Deeb & Roger, "Do Unlearning Methods Remove Information from Language Model Weights?":
the forget questions are split (by entity, for the organism) into halves **T** and **V**. The attacker
fine-tunes on T's answers and measures accuracy on V, which it never trains on, over a small sweep of
learning rates (log range) and epochs, keeping the best setting per V. Facts about different entities
are independent, so learning T cannot teach V: if V comes back, it was still in the weights.

| condition | model     | attack | question it answers                                  |
|-----------|-----------|--------|------------------------------------------------------|
| A         | unlearned | none   | what does the unlearned model show?                  |
| B         | unlearned | RTT    | what can an attacker get back?                       |
| C         | base      | RTT    | the ceiling: the same attack on the model that knew  |
| F         | filtered  | RTT    | the floor: the same attack on a model that never knew |

    recovery rate       = (B - A) / (C - A)   the fraction of the forgotten accuracy that RTT brings back
    relative accuracy   = B / C               attacked unlearned model vs attacked base
    filtered recovery   = (F - F0) / (C - F0) the same for the filtered model (F0: before the attack)

Precision and memory (brittle/precision.py): the attacked model trains with fp32 weights and AdamW
state and computes in --dtype under autocast (bf16 on CUDA), so that the small learning rates of the
sweep are not rounded away; gradient checkpointing is on by default on CUDA; during each evaluation
the optimizer state waits in host memory, and the scorer runs each question's context once.

A pre-flight check first verifies that the base model knows the forget facts (accuracy on T and V at
least `--baseline-min-forget-acc`; 0 disables it): without that there is nothing to unlearn or recover.

Outputs:
    outputs/<model>/relearn_attack_seed<S>/          per attacked model: runs.csv, identity.json, plot
    outputs/<base>__to__<unlearned>/relearn_attack_seed<S>/   summary.csv (one row), conditions.csv,
                                                     attack_curves.png

    uv run experiment/relearn_attack.py --model-a models/toy-base-s42 --model-b unlearned_models/... \\
        --filtered models/toy-filtered-s42 --preset toy
    uv run experiment/relearn_attack.py --model-a models/toy-vlm-base-s42 --model-b unlearned_models/... \\
        --preset toy-vlm        # the vision-language organism: questions about pictures (docs/multimodal.md)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import sys
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from brittle.attacks import recovery_rate, relative_accuracy
from brittle.cli import (
    UserError,
    add_gradient_checkpointing_argument,
    add_output_arguments,
    add_runtime_arguments,
    positive_int,
    run_cli,
)
from brittle.distributed import relaunch_if_requested, start_engine
from brittle.evaluation import step0_accuracy
from brittle.identity import Identity, read_identity
from brittle.models import check_model_reference, input_device, load_model_and_tokenizer
from brittle.multiple_choice import multiple_choice_accuracy
from brittle.outputs import (
    comparison_step_dir,
    model_step_dir,
    read_csv,
    skip_if_complete,
    staged_directory,
    write_csv,
)
from brittle.plotting import figure_and_axes, save_figure
from brittle.precision import (
    dtype_name,
    gradient_checkpointing,
    prepare_for_training,
    released_optimizer,
    resolve_precision,
    stored_dtype,
)
from brittle.preflight import check_forget_baseline
from brittle.presets import PRESETS, get_preset
from brittle.questions import question_records
from brittle.runtime import resolve_device, resolve_dtype, seed_everything
from brittle.trainer import collate_items
from brittle.training import adamw_with_cosine_schedule, batch_nll, encode_texts, epoch_batches
from brittle.vlm import is_vision_language_checkpoint, vl_multiple_choice_accuracy, vl_training_sequences

RUN_COLUMNS = ["model", "lr", "epoch", "step", "v_accuracy", "t_accuracy", "loss"]  # loss: mean over the epoch
SUMMARY_COLUMNS = [
    "seed", "base", "unlearned", "filtered",
    "base_before", "a_unlearned", "b_unlearned_rtt", "c_base_rtt", "f0_filtered", "f_filtered_rtt",
    "recovery_rate", "relative_accuracy", "filtered_recovery_rate",
    "b_best_lr", "b_best_epoch", "c_best_lr", "c_best_epoch", "f_best_lr", "f_best_epoch",
]


# --------------------------------------------------------------------------------------------------
# The attack
# --------------------------------------------------------------------------------------------------

def learning_rates(low: float, high: float, count: int) -> list[float]:
    """`count` learning rates evenly spaced in log space from `low` to `high`."""
    if not 0 < low <= high:
        raise UserError(f"learning-rate range must satisfy 0 < low <= high, got low={low:g}, high={high:g}")
    if count == 1 or low == high:
        return [low]
    step = (math.log(high) - math.log(low)) / (count - 1)
    return [float(f"{math.exp(math.log(low) + index * step):.3g}") for index in range(count)]


def answer_texts(questions: list[dict[str, Any]]) -> list[str]:
    """What the attacker trains on: each question followed by its correct answer."""
    return [f"{question['question']} {question['choices'][question['answer']]}" for question in questions]


def load_attacked(model_name: str, device: str) -> tuple[Any, Any, Any]:
    """(model, tokenizer, image processor) in the dtype the checkpoint is stored in; the image processor is None
    for a text-only model (a vision-language one is told by its config)."""
    model, tokenizer = load_model_and_tokenizer(model_name, device, "stored")
    if not is_vision_language_checkpoint(model_name):
        return model, tokenizer, None
    from transformers import AutoProcessor

    return model, tokenizer, AutoProcessor.from_pretrained(model_name).image_processor


def question_accuracy(model: Any, tokenizer: Any, image_processor: Any, questions: list[dict[str, Any]],
                      batch_size: int) -> float:
    """Multiple-choice accuracy: of text questions, or of questions about pictures when there is an image processor."""
    if image_processor is None:
        return multiple_choice_accuracy(model, tokenizer, questions, batch_size)
    return vl_multiple_choice_accuracy(model, tokenizer, image_processor, questions, Path("/"), batch_size)


def attack_sequences(model: Any, tokenizer: Any, image_processor: Any, train: list[dict], texts: list[str] | None,
                     max_length: int) -> list:
    """What the attacker trains on: T's answers (as text, or as `{image, question, answer}` examples with the loss
    on the answer, for a vision-language model), or `texts`."""
    if image_processor is None:
        return encode_texts(tokenizer, answer_texts(train) if texts is None else texts, max_length=max_length)
    if texts is not None:
        raise UserError("this fine-tuning attack trains on text, and a vision-language model needs questions "
                        "about pictures; attack it with experiment/relearn_attack.py")
    records = [{"image": q["image"], "question": q["question"], "answer": q["choices"][q["answer"]]} for q in train]
    return vl_training_sequences(tokenizer, image_processor, records, model.config.image_seq_length, max_length,
                                 "the T questions")


def attack_once(model_name: str, lr: float, train: list[dict], evaluate: list[dict],
                args: argparse.Namespace, unattacked: dict[str, float] | None = None,
                texts: list[str] | None = None) -> list[dict[str, Any]]:
    """Fine-tune a fresh copy of the model on T at one learning rate; V and T accuracy per epoch.

    AdamW with a cosine schedule over all epochs; evaluated before training (epoch 0) and after
    every epoch, so one run also answers "how many epochs?". `unattacked` (the epoch-0 accuracies,
    identical for every learning rate) skips scoring the untouched model again. `texts` replaces T's
    answers as the training data (the benign fine-tuning attack, Step 15, trains on retain text). Under
    NUM_PROCESSES > 1 the model is sharded (brittle/distributed.py) and every process computes every batch.
    """
    engine = start_engine()
    seed_everything(args.seed)
    model, tokenizer, image_processor = load_attacked(model_name, engine.device_for(args.device))
    device = input_device(model)
    precision = resolve_precision(args.dtype, "auto", device, stored_dtype(model_name, model))
    trainable = prepare_for_training(model, precision)
    gradient_checkpointing(model, args.gradient_checkpointing, device)
    sequences = attack_sequences(model, tokenizer, image_processor, train, texts, args.max_length)
    steps_per_epoch = math.ceil(len(sequences) / args.batch_size)
    optimizer, schedule = adamw_with_cosine_schedule(trainable, lr=lr, total_steps=steps_per_epoch * args.epochs)
    model, optimizer = engine.prepare(model, optimizer)
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]  # the shards, if any
    rng = random.Random(args.seed)
    rows, step = [], 0
    for epoch in tqdm(range(args.epochs + 1), desc=f"RTT {Path(model_name).name} lr={lr:g}", unit="epoch",
                      disable=not engine.is_main):
        losses = []
        if epoch > 0:
            model.train()
            for batch in epoch_batches(sequences, args.batch_size, tokenizer.pad_token_id, rng, collate_items):
                batch = batch.to(device)
                with precision.autocast():
                    logits = model(**batch.model_inputs()).logits
                    loss = batch_nll(logits, batch.labels)
                if not torch.isfinite(loss):
                    raise UserError(f"the attack loss became {loss.item()} at lr {lr:g} on {model_name}; "
                                    "lower the learning-rate range (--lr-range)")
                engine.backward(precision.scale(loss))
                precision.unscale(optimizer)
                engine.clip_grad_norm_(trainable, 1.0)
                losses.append(loss.detach())
                precision.step(optimizer)
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
            model.eval()
        if epoch == 0 and unattacked is not None:
            accuracies = unattacked
        else:
            with released_optimizer(optimizer), precision.autocast():
                accuracies = {"v_accuracy": question_accuracy(model, tokenizer, image_processor, evaluate,
                                                              args.eval_batch_size),
                              "t_accuracy": question_accuracy(model, tokenizer, image_processor, train,
                                                              args.eval_batch_size)}
        mean_loss = torch.stack(losses).mean().item() if losses else None
        rows.append({"model": model_name, "lr": lr, "epoch": epoch, "step": step, **accuracies, "loss": mean_loss})
    engine.release()
    return rows


def attack(model_name: str, train: list[dict], evaluate: list[dict], rates: list[float],
           args: argparse.Namespace, texts: list[str] | None = None) -> list[dict[str, Any]]:
    """The sweep: one fresh fine-tuning run per learning rate (the untouched model is scored once)."""
    rows: list[dict[str, Any]] = []
    unattacked = None
    for lr in rates:
        run = attack_once(model_name, lr, train, evaluate, args, unattacked, texts)
        unattacked = {key: run[0][key] for key in ("v_accuracy", "t_accuracy")}
        rows += run
    return rows


def attacked_runs(model_name: str, train: list[dict], evaluate: list[dict], rates: list[float],
                  args: argparse.Namespace, texts: list[str] | None = None, step: str = "relearn_attack",
                  label: str = "RTT") -> list[dict[str, Any]]:
    """The attack on one model, computed once per (model, questions, settings) and kept in its own folder.

    Base and filtered are attacked identically for every unlearned model, so their runs are reused -
    but only when the folder records this very model (its weights' fingerprint, not its folder name),
    the same T and V questions and the same settings. `texts`, `step` and `label` let another
    fine-tuning attack (Step 15) reuse the sweep: its training texts, its folder name and its plot label.
    """
    folder = model_step_dir(model_name, f"{step}_seed{args.seed}", args.output_root)
    settings = {"learning_rates": rates, "epochs": args.epochs, "batch_size": args.batch_size,
                "max_length": args.max_length, "seed": args.seed, "master_dtype": "fp32",
                "compute_dtype": dtype_name(resolve_dtype(args.dtype, resolve_device(args.device))),
                "attn_implementation": args.attn_implementation,
                "train_questions": question_digest(train), "eval_questions": question_digest(evaluate)}
    if texts is not None:
        settings["train_texts_sha256"] = hashlib.sha256("\n".join(texts).encode()).hexdigest()
    identity = Identity.of(models={"model": model_name}, settings=settings)
    reasons = identity.differences(read_identity(folder)) if folder.exists() else ["none yet"]
    if not reasons and not args.force:
        print(f"reusing the attack on {model_name} ({folder})")
        return [{**row, "model": model_name, **{key: float(row[key]) for key in ("lr", "v_accuracy", "t_accuracy")},
                 "epoch": int(row["epoch"]), "step": int(row["step"]),
                 "loss": float(row["loss"]) if row.get("loss") else None}  # epoch 0 trains nothing: no loss
                for row in read_csv(folder / "runs.csv")]
    if folder.exists() and not args.force:
        print(f"note: not reusing {folder}: {'; '.join(reasons)}; attacking {model_name} again", file=sys.stderr)
    rows = attack(model_name, train, evaluate, rates, args, texts)
    if not start_engine().is_main:  # under NUM_PROCESSES > 1 process 0 alone writes
        return rows
    with staged_directory(folder, identity=identity) as staging:
        write_csv(staging / "runs.csv", rows, RUN_COLUMNS)
        plot_attack(staging / "relearning_curves.png",
                    f"{label} on {Path(model_name).name}: V accuracy per learning rate",
                    {f"lr {lr:g}": [row for row in rows if row["lr"] == lr] for lr in rates})
    return rows


def question_digest(questions: list[dict[str, Any]]) -> str:
    """A short hash of a question list's content: the same count of other questions is another attack."""
    return hashlib.sha256(json.dumps(questions, sort_keys=True).encode()).hexdigest()[:16]


def before_attack(rows: list[dict[str, Any]]) -> float:
    """V accuracy of the untouched model (epoch 0)."""
    return next(row["v_accuracy"] for row in rows if row["epoch"] == 0)


def best_run(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The attacked setting (learning rate, epoch) with the highest V accuracy; ties go to the fewest steps."""
    return max((row for row in rows if row["epoch"] > 0), key=lambda row: (row["v_accuracy"], -row["step"]))


def recovery_rates(a: float, b: float, c: float) -> dict[str, float | None]:
    """(B - A) / (C - A) and B / C; None where the denominator is not positive."""
    return {"recovery_rate": recovery_rate(a, b, c), "relative_accuracy": relative_accuracy(b, c)}


# --------------------------------------------------------------------------------------------------
# Pre-flight and reporting
# --------------------------------------------------------------------------------------------------

def check_baseline(base: str, questions: list[dict[str, Any]], minimum: float, args: argparse.Namespace) -> None:
    """A `UserError` when base's forget accuracy is below `minimum` (0 disables the check).

    The accuracy comes from base's Step 0 when that has run (no model load); otherwise it is measured
    here on the T and V questions.
    """
    if minimum <= 0:
        print(f"pre-flight: check disabled (threshold {minimum})")
        return
    accuracy = step0_accuracy(base, args.forget_task, args.output_root)
    if accuracy is not None:
        check_forget_baseline(base, accuracy, minimum, f"Step 0's {args.forget_task}")
        return
    model, tokenizer, image_processor = load_attacked(base, start_engine().device_for(args.device))
    accuracy = question_accuracy(model, tokenizer, image_processor, questions, args.eval_batch_size)
    del model
    check_forget_baseline(base, accuracy, minimum, f"the {len(questions)} T and V questions")


def plot_attack(path: Path, title: str, curves: dict[str, list[dict[str, Any]]],
                flat_lines: dict[str, float] | None = None) -> None:
    """V accuracy against attack steps, one curve per entry; dashed lines for unattacked references."""
    figure, axis = figure_and_axes()
    for label, rows in curves.items():
        axis.plot([row["step"] for row in rows], [row["v_accuracy"] for row in rows], marker="o", label=label)
    for label, value in (flat_lines or {}).items():
        axis.axhline(value, linestyle="--", linewidth=1.2, label=label)
    axis.axhline(0.25, color="grey", linestyle=":", linewidth=1, label="chance (4 options)")
    axis.set_xlabel("attack steps (fine-tuning on T)")
    axis.set_ylabel("accuracy on held-out V")
    axis.set_ylim(0, 1.02)
    axis.set_title(title, fontsize="medium")
    axis.legend(fontsize="small")
    save_figure(figure, path)


def best_curve(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The whole run (all epochs) of the learning rate that reached the best V accuracy."""
    lr = best_run(rows)["lr"]
    return [row for row in rows if row["lr"] == lr]


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, completed with the preset's defaults and checked."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-a", required=True, help="the base model (condition C)")
    parser.add_argument("--model-b", default=None, help="the unlearned model under attack (conditions A and B)")
    parser.add_argument("--filtered", default=None, help="the filtered model (gold standard; default: preset's)")
    parser.add_argument("--preset", choices=list(PRESETS), default="real")
    parser.add_argument("--train-questions", default=None, help="T questions JSONL (default: the preset's)")
    parser.add_argument("--eval-questions", default=None, help="V questions JSONL (default: the preset's)")
    parser.add_argument("--lr-range", default=None,
                        help="LOW,HIGH learning rates of the sweep (log-spaced; default: the preset's)")
    parser.add_argument("--num-lrs", type=positive_int, default=None, help="learning rates in the sweep")
    parser.add_argument("--epochs", type=positive_int, default=None, help="epochs per run (evaluated after each)")
    parser.add_argument("--batch-size", type=positive_int, default=None)
    parser.add_argument("--eval-batch-size", type=positive_int, default=16,
                        help="questions per forward pass of the scorer (all choices of a question share one row)")
    add_gradient_checkpointing_argument(parser)
    parser.add_argument("--max-length", type=positive_int, default=512)
    parser.add_argument("--baseline-min-forget-acc", type=float, default=None,
                        help="pre-flight threshold on base's forget accuracy (default: the preset's; 0 disables)")
    parser.add_argument("--check-baseline-only", action="store_true", help="run the pre-flight check and stop")
    add_runtime_arguments(parser)
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    preset = get_preset(args.preset, args.seed)
    args.filtered = args.filtered or preset.filtered
    args.forget_task = preset.forget_task  # Step 0's task whose accuracy the pre-flight reads
    args.train_questions = args.train_questions or preset.forget_questions_t
    args.eval_questions = args.eval_questions or preset.forget_questions_v
    args.epochs = args.epochs or preset.relearn_epochs
    args.batch_size = args.batch_size or preset.relearn_batch_size
    args.num_lrs = args.num_lrs or preset.relearn_num_lrs
    if args.baseline_min_forget_acc is None:
        args.baseline_min_forget_acc = preset.baseline_min_forget_acc
    if args.lr_range:
        try:
            low, high = (float(value) for value in args.lr_range.split(","))
        except ValueError:
            raise UserError(f"--lr-range must be LOW,HIGH (e.g. 1e-4,3e-3), got {args.lr_range!r}") from None
        args.lr_range = (low, high)
    else:
        args.lr_range = preset.relearn_lr_range
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    rates = learning_rates(*args.lr_range, args.num_lrs)
    train, evaluate = (question_records(path, f"the {half} split (the attack needs both T and V)")
                       for path, half in ((args.train_questions, "T"), (args.eval_questions, "V")))
    shared = {question["entity"] for question in train if "entity" in question} & \
             {question["entity"] for question in evaluate if "entity" in question}
    if shared:
        raise UserError(f"T and V share {len(shared)} entities (e.g. {min(shared)}); they must be disjoint")
    for model in (args.model_a, args.model_b, args.filtered):
        if model:
            check_model_reference(model)
    if args.check_baseline_only:
        check_baseline(args.model_a, train + evaluate, args.baseline_min_forget_acc, args)
        return
    if not args.model_b:
        raise UserError("--model-b (the unlearned model to attack) is required unless --check-baseline-only")

    outdir = args.outdir or comparison_step_dir(args.model_a, args.model_b, f"relearn_attack_seed{args.seed}",
                                                args.output_root)
    identity = Identity.from_arguments(args, models=["model_a", "model_b", "filtered"],
                                       data=["train_questions", "eval_questions"], learning_rates=rates)
    if skip_if_complete(outdir, args.force, what=f"relearning attack on {args.model_b}", identity=identity):
        return
    relaunch_if_requested()  # NUM_PROCESSES > 1 or ACCELERATE_CONFIG: again, under `accelerate launch`
    check_baseline(args.model_a, train + evaluate, args.baseline_min_forget_acc, args)

    runs = {condition: attacked_runs(model, train, evaluate, rates, args)
            for condition, model in (("B", args.model_b), ("C", args.model_a), ("F", args.filtered))}
    best = {condition: best_run(rows) for condition, rows in runs.items()}
    a, f0 = before_attack(runs["B"]), before_attack(runs["F"])
    b, c, f = (best[condition]["v_accuracy"] for condition in "BCF")
    summary = {
        "seed": args.seed, "base": args.model_a, "unlearned": args.model_b, "filtered": args.filtered,
        "base_before": before_attack(runs["C"]), "a_unlearned": a, "b_unlearned_rtt": b, "c_base_rtt": c,
        "f0_filtered": f0, "f_filtered_rtt": f,
        **recovery_rates(a, b, c),
        "filtered_recovery_rate": recovery_rates(f0, f, c)["recovery_rate"],
        **{f"{condition.lower()}_best_{key}": best[condition][key] for condition in "BCF" for key in ("lr", "epoch")},
    }
    if not start_engine().is_main:
        return
    conditions = [
        {"condition": "A", "model": args.model_b, "attack": "none", "v_accuracy": a},
        {"condition": "B", "model": args.model_b, "attack": "RTT", "v_accuracy": b, "best_lr": best["B"]["lr"],
         "best_epoch": best["B"]["epoch"]},
        {"condition": "C", "model": args.model_a, "attack": "RTT", "v_accuracy": c, "best_lr": best["C"]["lr"],
         "best_epoch": best["C"]["epoch"]},
        {"condition": "F", "model": args.filtered, "attack": "RTT", "v_accuracy": f, "best_lr": best["F"]["lr"],
         "best_epoch": best["F"]["epoch"]},
    ]
    with staged_directory(outdir, identity=identity) as staging:
        write_csv(staging / "summary.csv", [summary], SUMMARY_COLUMNS)
        write_csv(staging / "conditions.csv", conditions, ["condition", "model", "attack", "v_accuracy", "best_lr",
                                                           "best_epoch"])
        plot_attack(staging / "attack_curves.png", "Relearning attack: accuracy on held-out V (best learning rate)",
                    {"B: unlearned + RTT": best_curve(runs["B"]), "C: base + RTT": best_curve(runs["C"]),
                     "F: filtered + RTT": best_curve(runs["F"])},
                    flat_lines={"A: unlearned, no attack": a})
    print(f"relearning attack (seed {args.seed}): A {a:.3f}  B {b:.3f}  C {c:.3f}  filtered {f0:.3f} -> {f:.3f}")
    rate = summary["recovery_rate"]
    print(f"  recovery rate (B-A)/(C-A) = {'n/a' if rate is None else f'{rate:.3f}'}; results -> {outdir}")


if __name__ == "__main__":
    run_cli(main)
