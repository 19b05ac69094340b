# /// script
# requires-python = ">=3.10"
# dependencies = ["brittle"]
#
# [tool.uv.sources]
# brittle = { path = "..", editable = true }
# ///
"""What the shell drivers need to know before running anything, answered without loading torch.

    uv run experiment/plan.py preset --preset toy --seed 42
        prints shell assignments of the preset's models and data (`BASE=${BASE:-...}`), so that
        variables the user already set win: eval "$(uv run experiment/plan.py preset ...)"

    uv run experiment/plan.py done --step evals --model M [--model-b B] [--output-root R]
        exit status 0 when that step's output folder exists (the step finished), 1 otherwise

    uv run experiment/plan.py where [--output-root R] M 'A|B' ...
        prints, one per line, the results folder of a model (`R/<model>`) or a comparison (`R/<a>__to__<b>`)

    uv run experiment/plan.py preflight --model BASE --task TASK --threshold X [--output-root R]
        the baseline pre-flight check from Step 0's results: exit 0 when base's accuracy on the forget
        task reaches the threshold, 2 (with one error line) when it does not, 3 when Step 0 has not run

All answer in a fraction of a second, which keeps a re-run of a finished pipeline fast: the
drivers skip finished steps without starting Python processes that import torch.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from brittle.cli import run_cli
from brittle.evaluation import step0_accuracy
from brittle.outputs import comparison_name, comparison_step_dir, model_slug, model_step_dir
from brittle.preflight import check_forget_baseline
from brittle.presets import get_preset

STEP_0_MISSING = 3  # exit status of `preflight` when it cannot answer without measuring

# Shell variable -> preset field.
SHELL_VARIABLES = {
    "BASE": "base",
    "FILTERED": "filtered",
    "PRETRAIN": "pretrain",
    "UNLEARNED": "unlearned",
    "CB_MODEL": "cb",
    "FORGET_TEXT": "forget_text",
    "RETAIN_TEXT": "retain_text",
    "FORGET_QUESTIONS": "forget_questions",
    "FORGET_QUESTIONS_T": "forget_questions_t",
    "FORGET_QUESTIONS_V": "forget_questions_v",
    "FORGET_TASK": "forget_task",
    "RETAIN_TASK": "retain_task",
    "BASELINE_MIN_FORGET_ACC": "baseline_min_forget_acc",
}


def print_preset(preset_name: str, seed: int) -> None:
    """Shell lines that give each unset variable the preset's value."""
    preset = get_preset(preset_name, seed)
    for variable, field in SHELL_VARIABLES.items():
        print(f"{variable}=${{{variable}:-{shlex.quote(str(getattr(preset, field)))}}}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    preset_parser = commands.add_parser("preset", help="print the preset's variables as shell assignments")
    preset_parser.add_argument("--preset", default="real")
    preset_parser.add_argument("--seed", type=int, default=42)
    done_parser = commands.add_parser("done", help="exit 0 when a step's outputs exist")
    done_parser.add_argument("--step", required=True, help="the step's output folder name, e.g. evals")
    done_parser.add_argument("--model", required=True, help="the model (model A of a comparison)")
    done_parser.add_argument("--model-b", default=None, help="model B, for a pairwise step")
    done_parser.add_argument("--output-root", default="outputs")
    where_parser = commands.add_parser("where", help="print the results folders of models and comparisons")
    where_parser.add_argument("entries", nargs="+", help="a model, or a comparison written 'MODEL_A|MODEL_B'")
    where_parser.add_argument("--output-root", default="outputs")
    preflight_parser = commands.add_parser("preflight", help="the baseline pre-flight check from Step 0's results")
    preflight_parser.add_argument("--model", required=True, help="the base model")
    preflight_parser.add_argument("--task", required=True, help="the forget task of Step 0, e.g. toy_forget_mcq")
    preflight_parser.add_argument("--threshold", type=float, required=True, help="minimum accuracy (0 disables)")
    preflight_parser.add_argument("--output-root", default="outputs")
    args = parser.parse_args()

    if args.command == "preset":
        print_preset(args.preset, args.seed)
        return
    if args.command == "where":
        for entry in args.entries:
            model_a, _, model_b = entry.partition("|")
            print(Path(args.output_root) / (comparison_name(model_a, model_b) if model_b else model_slug(model_a)))
        return
    if args.command == "preflight":
        if args.threshold <= 0:
            print("pre-flight: disabled (BASELINE_MIN_FORGET_ACC=0)")
            return
        accuracy = step0_accuracy(args.model, args.task, args.output_root)
        if accuracy is None:
            sys.exit(STEP_0_MISSING)
        check_forget_baseline(args.model, accuracy, args.threshold, f"Step 0 {args.task}")
        return
    if args.model_b:
        folder = comparison_step_dir(args.model, args.model_b, args.step, args.output_root)
    else:
        folder = model_step_dir(args.model, args.step, args.output_root)
    sys.exit(0 if folder.exists() else 1)


if __name__ == "__main__":
    run_cli(main)
