# /// script
# requires-python = ">=3.10"
# dependencies = ["brittle[steps]"]  # the pipeline steps' one environment (pyproject.toml)
#
# [tool.uv.sources]
# brittle = { path = "..", editable = true }
# ///
"""Step 15 - Benign fine-tuning attack: does fine-tuning on text without a single forget fact bring them back?

Several studies find that fine-tuning an unlearned model on unrelated, harmless data (here the retain
text, which contains no forget fact) restores "forgotten" knowledge: the update undoes whatever
suppressed it. This is the relearning attack of Step 13 with one change - the training data - and runs
the very same sweep (`relearn_attack.attacked_runs`: log-spaced learning rates, evaluated after every
epoch, best setting per condition), so its recovery rates read exactly like Step 13's:

| condition | model     | attack                          |
|-----------|-----------|---------------------------------|
| A         | unlearned | none                            |
| B         | unlearned | fine-tuned on retain text       |
| C         | base      | fine-tuned on retain text       |
| F0 / F    | filtered  | none / fine-tuned on retain text |

The sweep reports accuracies only, so the recovery rate's interval is the parametric (binomial)
bootstrap over V's questions (`brittle.attacks.binomial_bootstrap_interval`).

Outputs:
    outputs/<model>/benign_finetune_seed<S>/             per attacked model: runs.csv, settings.json, plot
    outputs/<base>__to__<unlearned>/benign_finetune_seed<S>/   summary.csv, identity.json, conditions.png,
                                                         attack_curves.png

    uv run experiment/benign_finetune_attack.py --model-a models/toy-base-s42 --model-b unlearned_models/... \\
        --preset toy
"""

from __future__ import annotations

import argparse

import relearn_attack as relearn  # the script beside this one (Step 13): its sweep, reused as it is

from brittle.attacks import (
    add_attack_arguments,
    attack_identity,
    attack_models,
    attack_step_dir,
    binomial_bootstrap_interval,
    complete_attack_arguments,
    describe,
    read_questions,
    recovery_rate,
    relative_accuracy,
    write_attack_outputs,
)
from brittle.cli import UserError, add_gradient_checkpointing_argument, positive_int, run_cli
from brittle.outputs import skip_if_complete, staged_directory
from brittle.texts import read_texts

STEP = "benign_finetune"
LABEL = "benign fine-tuning"
DEFAULT_MAX_SAMPLES = 1000


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, completed with the preset's relearning-sweep defaults."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_attack_arguments(parser)
    parser.add_argument("--retain-text", default=None, help="the benign training text (default: the preset's retain)")
    parser.add_argument("--max-samples", type=positive_int, default=DEFAULT_MAX_SAMPLES,
                        help=f"benign texts to train on, from the top of the file (default {DEFAULT_MAX_SAMPLES})")
    parser.add_argument("--lr-range", default=None, help="LOW,HIGH learning rates (default: Step 13's, the preset's)")
    parser.add_argument("--num-lrs", type=positive_int, default=None)
    parser.add_argument("--epochs", type=positive_int, default=None)
    parser.add_argument("--batch-size", type=positive_int, default=None)
    parser.add_argument("--max-length", type=positive_int, default=512)
    add_gradient_checkpointing_argument(parser)
    args = parser.parse_args(argv)
    preset = complete_attack_arguments(args)
    args.retain_text = args.retain_text or preset.retain_text
    args.epochs = args.epochs or preset.relearn_epochs
    args.batch_size = args.batch_size or preset.relearn_batch_size
    args.num_lrs = args.num_lrs or preset.relearn_num_lrs
    if args.lr_range:
        try:
            args.lr_range = tuple(float(value) for value in args.lr_range.split(","))
        except ValueError:
            raise UserError(f"--lr-range must be LOW,HIGH (e.g. 1e-4,3e-3), got {args.lr_range!r}") from None
        if len(args.lr_range) != 2:
            raise UserError(f"--lr-range must be LOW,HIGH (e.g. 1e-4,3e-3), got {args.lr_range!r}")
    else:
        args.lr_range = preset.relearn_lr_range
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    models = attack_models(args)
    rates = relearn.learning_rates(*args.lr_range, args.num_lrs)
    outdir = attack_step_dir(args, STEP)
    identity = attack_identity(args, {"retain_text": args.retain_text, "train_questions": args.train_questions,
                                      "eval_questions": args.eval_questions},
                               {"learning_rates": rates, "epochs": args.epochs, "batch_size": args.batch_size,
                                "max_length": args.max_length, "max_samples": args.max_samples,
                                "dtype": args.dtype, "seed": args.seed})
    if skip_if_complete(outdir, args.force, f"benign fine-tuning attack on {args.model_b}", identity):
        return
    texts = read_texts(args.retain_text, args.max_samples, what="benign (retain) text")
    train = read_questions(args.train_questions, "T")
    evaluate = read_questions(args.eval_questions, "V")
    runs = {condition: relearn.attacked_runs(models[role], train, evaluate, rates, args, texts=texts, step=STEP,
                                             label=LABEL)
            for condition, role in (("B", "unlearned"), ("C", "base"), ("F", "filtered"))}
    best = {condition: relearn.best_run(rows) for condition, rows in runs.items()}
    a, f0 = relearn.before_attack(runs["B"]), relearn.before_attack(runs["F"])
    b, c, f = (best[condition]["v_accuracy"] for condition in "BCF")
    rate = recovery_rate(a, b, c)
    low, high = (None, None) if rate is None else binomial_bootstrap_interval(a, b, c, len(evaluate), seed=args.seed)
    summary = {
        "attack": LABEL, "seed": args.seed, **models, "questions": len(evaluate),
        "a_unlearned": a, "b_unlearned_attacked": b, "c_base_attacked": c, "f0_filtered": f0,
        "f_filtered_attacked": f, "recovery_rate": rate, "recovery_ci_low": low,
        "recovery_ci_high": high, "relative_accuracy": relative_accuracy(b, c),
        "filtered_recovery_rate": recovery_rate(f0, f, c),
        **{f"{condition.lower()}_setting": f"lr {best[condition]['lr']:g}, epoch {best[condition]['epoch']}"
           for condition in "BCF"},
    }
    print(describe(summary))
    with staged_directory(outdir, identity=identity) as staging:
        write_attack_outputs(staging, "Benign fine-tuning (retain text): accuracy on held-out V", [summary], [])
        relearn.plot_attack(staging / "attack_curves.png",
                            "Benign fine-tuning on retain text: accuracy on held-out V (best learning rate)",
                            {"B: unlearned + benign FT": relearn.best_curve(runs["B"]),
                             "C: base + benign FT": relearn.best_curve(runs["C"]),
                             "F: filtered + benign FT": relearn.best_curve(runs["F"])},
                            flat_lines={"A: unlearned, no attack": a})
    print(f"results -> {outdir}")


if __name__ == "__main__":
    run_cli(main)
