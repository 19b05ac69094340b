# /// script
# requires-python = ">=3.10"
# dependencies = ["brittle[steps]"]  # the pipeline steps' one environment (pyproject.toml)
#
# [tool.uv.sources]
# brittle = { path = "..", editable = true }
# ///
"""Step 0 - Evaluation: does the model still have general capabilities, and what does it know?

Runs lm-evaluation-harness on one model before the expensive mechanistic diagnostics, which
immediately exposes models that collapsed during unlearning (they score near chance, 0.25).

| preset | tasks                                                              |
|--------|--------------------------------------------------------------------|
| real   | mmlu (1000 questions over its 57 subjects), wikitext, wmdp_bio, wmdp_bio_cloze |
| toy    | toy_forget_mcq, toy_forget_mcq_t, toy_forget_mcq_v, toy_retain_mcq |

Writes `outputs/<model>/evals/`: `summary.json` (task -> metrics, `acc` for multiple choice),
`tasks/<task>.json` (per task, including MMLU's subjects), `high_level_summary.md` and `identity.json`
(which model, task files and settings made it; a later run skips only when they match).

    uv run experiment/eval.py --model EleutherAI/deep-ignorance-unfiltered
    uv run experiment/eval.py --model models/toy-base-s42 --preset toy
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from brittle.cli import UserError, add_output_arguments, add_runtime_arguments, run_cli
from brittle.evaluation import evaluate_model, local_task_files, task_manager, write_evaluation
from brittle.identity import Identity
from brittle.models import check_model_reference, load_model_and_tokenizer
from brittle.outputs import model_step_dir, skip_if_complete, staged_directory
from brittle.presets import get_preset
from brittle.runtime import seed_everything
from brittle.tracking import log_to_wandb


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="hub id or local model folder")
    parser.add_argument("--preset", choices=["real", "toy"], default="real", help="which world's tasks (default real)")
    parser.add_argument("--tasks", default=None, help="comma-separated lm-eval tasks (default: the preset's)")
    parser.add_argument("--include-path", action="append", default=[],
                        help="extra folder of lm-eval task YAMLs (repeatable)")
    parser.add_argument("--limit", type=int, default=None,
                        help="MMLU questions, a seeded uniform sample over its 57 subjects "
                             "(default: the preset's, 1000 for real; 0 = all)")
    parser.add_argument("--batch-size", default="32", help="lm-eval batch size, or 'auto' (default 32)")
    parser.add_argument("--wandb-project", default=None, help="log the results to this W&B project (if configured)")
    parser.add_argument("--wandb-name", default=None, help="W&B run name (default: the model name)")
    add_runtime_arguments(parser)
    add_output_arguments(parser)
    return parser.parse_args()


def task_data_files(include_paths: list[str]) -> dict[str, Path]:
    """{role: file} of every local task YAML and the questions it reads: what the scores depend on.
    (lm-eval's own tasks are identified by its version, recorded with the environment.)"""
    files = {}
    for folder in include_paths:
        for task_file, questions in local_task_files(folder).items():
            files[f"task {task_file.stem}"] = task_file
            if questions is not None:
                files[f"questions of {task_file.stem}"] = questions
    return files


def main() -> None:
    args = parse_arguments()
    preset = get_preset(args.preset, args.seed)
    outdir = args.outdir or model_step_dir(args.model, "evals", args.output_root)
    tasks = [task.strip() for task in args.tasks.split(",")] if args.tasks else list(preset.eval_tasks)
    if not all(tasks):
        raise UserError(f"--tasks has an empty task name: {args.tasks!r}")
    mmlu_limit = preset.mmlu_limit if args.limit is None else (args.limit or None)
    batch_size = args.batch_size if args.batch_size == "auto" else int(args.batch_size)
    include_paths = [*preset.eval_include_paths, *args.include_path]
    identity = Identity.from_arguments(args, models=["model"], extra_data=task_data_files(include_paths),
                                       ignore=["include_path", "limit"], tasks=tasks, mmlu_limit=mmlu_limit)
    if skip_if_complete(outdir, args.force, what=f"Step 0 evaluation of {args.model}", identity=identity):
        return

    check_model_reference(args.model)
    manager = task_manager(include_paths, tasks)  # unknown task names fail here, before loading
    seed_everything(args.seed)
    model, tokenizer = load_model_and_tokenizer(args.model, args.device, args.dtype)
    start = time.perf_counter()
    summary = evaluate_model(model, tokenizer, tasks, include_paths, mmlu_limit=mmlu_limit,
                             batch_size=batch_size, seed=args.seed, manager=manager)
    seconds = time.perf_counter() - start

    with staged_directory(outdir, identity=identity) as staging:
        write_evaluation(staging, args.model, summary, headline_tasks=tasks,
                         details={"preset": args.preset, "mmlu_limit": mmlu_limit, "seconds": round(seconds, 1)})
    for task in tasks:
        metrics = summary.get(task, {})
        shown = ", ".join(f"{name} {value:.4f}" for name, value in metrics.items()
                          if name in ("acc", "acc_norm", "word_perplexity") and value is not None)
        print(f"  {task}: {shown}")
    print(f"Step 0 evaluation of {args.model} ({seconds:.0f} s) -> {outdir}")

    if args.wandb_project:
        log_to_wandb(args.wandb_project, args.wandb_name or args.model, {"model": args.model, "tasks": tasks},
                     {f"{task}/{name}": value for task, metrics in summary.items()
                      for name, value in metrics.items() if isinstance(value, float)})


if __name__ == "__main__":
    run_cli(main)
