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
| toy-vlm | forget, forget_t, forget_v, retain (questions about pictures, for a vision-language model) |

A vision-language model (a LLaVA: its config has a `vision_config`) answers questions about pictures
instead: task `<name>` is the question file `<include path>/<name>.jsonl` (the VL organism's, or MLLMU-Bench's
converted by experiment/prepare_mllmu.py), scored by brittle.vlm.evaluate_vl_model (each option's
log-likelihood as the continuation of the prompt, with the picture; lm-eval's `acc`).

Writes `outputs/<model>/evals/`: `summary.json` (task -> metrics, `acc` for multiple choice),
`tasks/<task>.json` (per task, including MMLU's subjects), `high_level_summary.md` and `identity.json`
(which model, task files and settings made it; a later run skips only when they match).

    uv run experiment/eval.py --model EleutherAI/deep-ignorance-unfiltered
    uv run experiment/eval.py --model models/toy-base-s42 --preset toy
    uv run experiment/eval.py --model models/toy-vlm-base-s42 --preset toy-vlm
    uv run experiment/eval.py --model <llava> --tasks forget,retain --include-path data/mllmu/questions
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
from brittle.presets import PRESETS, get_preset
from brittle.runtime import seed_everything
from brittle.tracking import log_to_wandb
from brittle.vlm import evaluate_vl_model, is_vision_language_checkpoint, load_vl_model, vl_task_file


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="hub id or local model folder")
    parser.add_argument("--preset", choices=list(PRESETS), default="real", help="which world's tasks (default real)")
    parser.add_argument("--tasks", default=None, help="comma-separated lm-eval tasks, or question files of a "
                        "vision-language model (default: the preset's)")
    parser.add_argument("--include-path", action="append", default=[],
                        help="extra folder of lm-eval task YAMLs, or of <task>.jsonl question files for a "
                             "vision-language model (repeatable)")
    parser.add_argument("--limit", type=int, default=None,
                        help="MMLU questions, a seeded uniform sample over its 57 subjects "
                             "(default: the preset's, 1000 for real; 0 = all)")
    parser.add_argument("--batch-size", default="32", help="lm-eval batch size, or 'auto' (default 32; a "
                        "vision-language model's: questions per batch, auto = 64)")
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


def takes_pictures(model: str) -> bool:
    """Whether `model` is a vision-language model, from its config; False when there is none to read (the model
    check, after the output folder's, then says why in one line)."""
    try:
        return is_vision_language_checkpoint(model)
    except UserError:
        return False


def vl_question_files(model: str, tasks: list[str], include_paths: list[str]) -> dict[str, Path]:
    """{role: file} of a vision-language model's tasks (`<include path>/<task>.jsonl`); a `UserError` naming the
    missing one. The pictures they name count too (brittle.identity hashes them with each file)."""
    missing = [task for task in tasks
               if not any((Path(folder) / f"{task}.jsonl").is_file() for folder in include_paths)]
    if missing:
        raise UserError(f"{model} is a vision-language model, so Step 0 asks it questions about pictures from "
                        f"<task>.jsonl files, and there is no {missing[0]}.jsonl in "
                        f"{', '.join(include_paths) or 'no folder'}; use --preset toy-vlm, or --tasks and "
                        "--include-path naming a folder of question files (e.g. data/mllmu/questions)")
    return {f"questions of {task}": vl_task_file(task, include_paths) for task in tasks}


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
    vision_language = takes_pictures(args.model)
    task_files = vl_question_files(args.model, tasks, include_paths) if vision_language else task_data_files(
        include_paths)
    identity = Identity.from_arguments(args, models=["model"], extra_data=task_files,
                                       ignore=["include_path", "limit"], tasks=tasks, mmlu_limit=mmlu_limit)
    if skip_if_complete(outdir, args.force, what=f"Step 0 evaluation of {args.model}", identity=identity):
        return

    check_model_reference(args.model)
    if preset.name == "toy-vlm" and not vision_language:
        raise UserError(f"--preset toy-vlm asks questions about pictures, and {args.model} is a text-only model; "
                        "pass a vision-language model (e.g. models/toy-vlm-base-s42) or --preset toy / real")
    seed_everything(args.seed)
    if vision_language:
        model, processor = load_vl_model(args.model, args.device, args.dtype)
        start = time.perf_counter()
        summary = evaluate_vl_model(model, processor, tasks, include_paths,
                                    **({} if batch_size == "auto" else {"batch_size": batch_size}))
    else:
        manager = task_manager(include_paths, tasks)  # unknown task names fail here, before loading
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
