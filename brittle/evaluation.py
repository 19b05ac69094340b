"""Step 0's engine: lm-evaluation-harness on a loaded model, and the summary files it leaves.

Real runs use lm-eval's own tasks (MMLU, WikiText, WMDP-Bio) plus the local variants in
`experiment/tasks/`; the organism's multiple-choice tasks are local task YAMLs over JSONL
questions written by `create_datasets.py --preset toy`. Both go through `simple_evaluate` with the
`hf` model, so a toy accuracy means exactly what a real one does.

Multiple-choice questions everywhere share one JSONL schema: `question` (the full prompt),
`choices` (continuations, scored after a space) and `answer` (index of the correct choice).
"""

from __future__ import annotations

import difflib
import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from brittle.cli import UserError
from brittle.outputs import model_step_dir, write_json, write_text

MMLU_SUBJECTS = 57


def multiple_choice_task_yaml(task_name: str, questions_path: str | Path) -> str:
    """An lm-eval task over a local JSONL of {question, choices, answer} records.

    Each choice is scored as the continuation of `question` (lm-eval inserts one space), so the
    accuracy is that of comparing the log-likelihoods of the options.
    """
    data_file = json.dumps(str(Path(questions_path).resolve()))
    return (
        f"task: {task_name}\n"
        "dataset_path: json\n"
        "dataset_kwargs:\n"
        "  data_files:\n"
        f"    test: {data_file}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        "doc_to_text: question\n"
        "doc_to_choice: choices\n"
        "doc_to_target: answer\n"
        "metric_list:\n"
        "  - metric: acc\n"
        "    aggregation: mean\n"
        "    higher_is_better: true\n"
        "metadata:\n"
        "  version: 1\n"
    )


def task_manager(include_paths: Sequence[str | Path], tasks: Sequence[str]):
    """An lm-eval TaskManager that knows `tasks`, or a `UserError` naming the unknown ones."""
    from lm_eval.tasks import TaskManager

    paths = [str(path) for path in include_paths if Path(path).is_dir()]
    local_only = TaskManager(include_path=paths, include_defaults=False) if paths else None
    # Indexing lm-eval's ~15k built-in tasks takes seconds; skip it when local tasks suffice.
    if local_only is not None and all(task in local_only.all_tasks for task in tasks):
        return local_only
    manager = TaskManager(include_path=paths or None)
    unknown = [task for task in tasks if task not in manager.all_tasks]
    if unknown:
        hints = {task: difflib.get_close_matches(task, manager.all_tasks, n=3) for task in unknown}
        described = "; ".join(f"{task} (did you mean {', '.join(close)}?)" if close else task
                              for task, close in hints.items())
        raise UserError(f"unknown evaluation task(s): {described}. Toy tasks need "
                        "`uv run create_datasets.py --preset toy` first")
    return manager


def flatten_metrics(task_results: Mapping[str, Any]) -> dict[str, float]:
    """lm-eval's `{'acc,none': x, 'acc_stderr,none': s, 'alias': ...}` -> `{'acc': x, 'acc_stderr': s}`."""
    metrics = {}
    for key, value in task_results.items():
        if key == "alias" or not isinstance(value, (int, float)):
            continue
        metric, _, filter_name = key.partition(",")
        name = metric if filter_name in ("", "none") else f"{metric}_{filter_name}"
        metrics[name] = float(value) if not (isinstance(value, float) and math.isnan(value)) else None
    return metrics


def evaluate_model(model, tokenizer, tasks: Sequence[str], include_paths: Sequence[str | Path] = (),
                   mmlu_limit: int | None = None, batch_size: int | str = 32, seed: int = 42,
                   manager=None) -> dict[str, dict[str, Any]]:
    """Run lm-eval on an already-loaded model; returns {task: {metric: value, "samples": n}}.

    MMLU is evaluated on `mmlu_limit` questions spread evenly over its 57 subjects; every other
    task on all of its questions. Pass `manager` (from `task_manager`) to reuse a validated one.
    """
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    manager = manager or task_manager(include_paths, tasks)
    language_model = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    mmlu_tasks = [task for task in tasks if task == "mmlu" or task.startswith("mmlu_")]
    other_tasks = [task for task in tasks if task not in mmlu_tasks]
    runs = [(other_tasks, None)]
    if mmlu_tasks:
        per_subject = None if mmlu_limit is None else max(1, math.ceil(mmlu_limit / MMLU_SUBJECTS))
        runs.append((mmlu_tasks, per_subject))
    summary: dict[str, dict[str, Any]] = {}
    for task_names, limit in runs:
        if not task_names:
            continue
        output = simple_evaluate(model=language_model, tasks=list(task_names), task_manager=manager,
                                 limit=limit, log_samples=False, random_seed=seed,
                                 numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed)
        samples = output.get("n-samples", {})
        for task, task_results in output["results"].items():
            summary[task] = flatten_metrics(task_results)
            if task in samples:
                summary[task]["samples"] = samples[task].get("effective", samples[task].get("original"))
    return summary


def high_level_summary(model_name: str, summary: Mapping[str, Mapping[str, Any]],
                       headline_tasks: Sequence[str]) -> str:
    """A short Markdown table of the headline tasks' main metric."""
    lines = [f"# Evaluation of `{model_name}`", "", "| task | metric | value | stderr | questions |",
             "|---|---|---|---|---|"]
    for task in headline_tasks:
        metrics = summary.get(task, {})
        metric = next((name for name in ("acc", "word_perplexity", "acc_norm") if name in metrics), None)
        if metric is None:
            lines.append(f"| {task} | (missing) | | | |")
            continue
        stderr = metrics.get(f"{metric}_stderr")
        lines.append(f"| {task} | {metric} | {metrics[metric]:.4f} | "
                     f"{'' if stderr is None else f'{stderr:.4f}'} | {metrics.get('samples', '')} |")
    lines += ["", "Chance for 4-option multiple choice is 0.25; a collapsed model scores near it."]
    return "\n".join(lines) + "\n"


def write_evaluation(folder: str | Path, model_name: str, summary: Mapping[str, Mapping[str, Any]],
                     headline_tasks: Sequence[str], details: Mapping[str, Any] | None = None) -> None:
    """`summary.json`, one `<task>.json` per task and `high_level_summary.md` in `folder`."""
    folder = Path(folder)
    write_json(folder / "summary.json", dict(summary))
    for task, metrics in summary.items():
        write_json(folder / "tasks" / f"{task}.json", {"model": model_name, "task": task, "metrics": metrics,
                                                       **(details or {})})
    write_text(folder / "high_level_summary.md", high_level_summary(model_name, summary, headline_tasks))


def step0_accuracy(model: str, task: str, output_root: str | Path = "outputs") -> float | None:
    """The model's `acc` on `task` from Step 0's `<output root>/<model>/evals/summary.json` (written by
    `write_evaluation`), or None when Step 0 has not run for it or the task has no accuracy."""
    summary = model_step_dir(model, "evals", output_root) / "summary.json"
    if not summary.exists():
        return None
    return json.loads(summary.read_text()).get(task, {}).get("acc")
