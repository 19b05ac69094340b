"""Step 0's engine: lm-evaluation-harness on a loaded model, and the summary files it leaves.

Real runs use lm-eval's own tasks (MMLU, WikiText, WMDP-Bio) plus the local variants in
`experiment/tasks/`; the organism's multiple-choice tasks are local task YAMLs over JSONL
questions written by `create_datasets.py --preset toy`. Both go through `simple_evaluate` with the
`hf` model, so a toy accuracy means exactly what a real one does.

Multiple-choice questions everywhere share one JSONL schema: `question` (the full prompt),
`choices` (continuations, scored after a space) and `answer` (index of the correct choice). Local
task YAMLs name their questions file relative to themselves, so a copied or moved `data/` folder keeps
working; `task_manager` hands lm-eval copies with the paths resolved.

MMLU (Step 0) is a seeded uniform sample of `mmlu_limit` of its questions over all 57 subjects, given to
lm-eval as `samples=` (not `limit=`, which would take the first questions of each subject).
"""

from __future__ import annotations

import atexit
import difflib
import json
import logging
import math
import random
import re
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from brittle.cli import UserError
from brittle.identity import Identity, read_identity
from brittle.outputs import model_step_dir, write_json, write_text

LOCAL_TASK_MARKER = "# brittle local task: data_files are relative to this file's folder"
DATA_FILE_LINE = re.compile(r'^(?P<indent>\s+test: )(?P<path>".*")\s*$', re.MULTILINE)


def multiple_choice_task_yaml(task_name: str, questions_path: str) -> str:
    """An lm-eval task over a local JSONL of {question, choices, answer} records.

    `questions_path` is relative to the folder the YAML is written to (e.g. `../questions/forget.jsonl`).
    Each choice is scored as the continuation of `question` (lm-eval inserts one space), so the
    accuracy is that of comparing the log-likelihoods of the options.
    """
    return (
        f"{LOCAL_TASK_MARKER}\n"
        f"task: {task_name}\n"
        "dataset_path: json\n"
        "dataset_kwargs:\n"
        "  data_files:\n"
        f"    test: {json.dumps(str(questions_path))}\n"
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


def local_task_files(folder: str | Path) -> dict[Path, Path | None]:
    """{task YAML: the questions file it reads (None for hub-backed tasks)} of one task folder."""
    files: dict[Path, Path | None] = {}
    for path in sorted(Path(folder).glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        match = DATA_FILE_LINE.search(text) if text.startswith(LOCAL_TASK_MARKER) else None
        files[path] = (path.parent / json.loads(match["path"])).resolve() if match else None
    return files


def resolved_task_folder(folder: str | Path) -> Path:
    """`folder` itself, or (when it holds local tasks with relative paths) a temporary copy whose
    YAMLs name their questions by absolute path, as lm-eval (which resolves them against the working
    directory) needs."""
    files = local_task_files(folder)
    if not any(files.values()):
        return Path(folder)
    copy = Path(tempfile.mkdtemp(prefix="brittle-tasks-"))
    atexit.register(shutil.rmtree, copy, True)
    for path, questions in files.items():
        text = path.read_text(encoding="utf-8")
        if questions is not None:
            text = DATA_FILE_LINE.sub(lambda match, target=questions: f"{match['indent']}{json.dumps(str(target))}",
                                      text, count=1)
        (copy / path.name).write_text(text, encoding="utf-8")
    return copy


def task_manager(include_paths: Sequence[str | Path], tasks: Sequence[str]):
    """An lm-eval TaskManager that knows `tasks`, or a `UserError` naming the unknown ones."""
    from lm_eval.tasks import TaskManager

    paths = [str(resolved_task_folder(path)) for path in include_paths if Path(path).is_dir()]
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


def sample_questions(sizes: Mapping[str, int], count: int, seed: int) -> dict[str, list[int]]:
    """A seeded uniform sample of `count` questions from subtasks of `sizes` ({subtask: questions}).

    Every question of every subtask is equally likely (so a subject's share follows its size), and
    the same seed always draws the same questions. Returns {subtask: sorted indices}, leaving out
    subtasks with no question drawn.
    """
    names = sorted(sizes)
    total = sum(sizes[name] for name in names)
    drawn = sorted(random.Random(seed).sample(range(total), min(count, total)))
    sample: dict[str, list[int]] = {}
    start, position = 0, 0
    for name in names:  # walk the subtasks' consecutive ranges of the global index
        end = start + sizes[name]
        while position < len(drawn) and drawn[position] < end:
            sample.setdefault(name, []).append(drawn[position] - start)
            position += 1
        start = end
    return sample


def group_leaves(task_dict: Mapping[Any, Any]) -> dict[str, Any]:
    """{subtask name: Task} of a (nested) lm-eval task dictionary."""
    leaves = {}
    for key, value in task_dict.items():
        if isinstance(value, Mapping):
            leaves.update(group_leaves(value))
        else:
            leaves[str(key)] = value
    return leaves


def pooled_accuracy(results: Mapping[str, Mapping[str, Any]], counts: Mapping[str, int]) -> dict[str, Any]:
    """The group's accuracy as lm-eval's MMLU group computes it: the question-weighted mean of its
    subtasks, with the standard error of a mean of `n` right/wrong answers."""
    questions = sum(counts.values())
    accuracy = sum(results[name]["acc"] * counts[name] for name in counts) / questions
    stderr = math.sqrt(accuracy * (1 - accuracy) / (questions - 1)) if questions > 1 else None
    return {"acc": accuracy, "acc_stderr": stderr, "samples": questions}


def evaluate_model(model, tokenizer, tasks: Sequence[str], include_paths: Sequence[str | Path] = (),
                   mmlu_limit: int | None = None, batch_size: int | str = 32, seed: int = 42,
                   manager=None, sampled_groups: Sequence[str] = ("mmlu",)) -> dict[str, dict[str, Any]]:
    """Run lm-eval on an already-loaded model; returns {task: {metric: value, "samples": n}}.

    A group task of `sampled_groups` (MMLU) is evaluated, when `mmlu_limit` is set, on a seeded
    uniform sample of `mmlu_limit` of its questions (`sample_questions`); its accuracy is pooled over
    the sampled questions. Every other task runs on all of its questions. Pass `manager` (from
    `task_manager`) to reuse a validated one.
    """
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import get_task_dict

    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    manager = manager or task_manager(include_paths, tasks)
    language_model = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    sampled = [task for task in tasks if task in sampled_groups and mmlu_limit is not None]
    runs: list[tuple[list, dict[str, list[int]] | None, str | None]] = []
    if [task for task in tasks if task not in sampled]:
        runs.append(([task for task in tasks if task not in sampled], None, None))
    for group in sampled:
        leaves = group_leaves(get_task_dict([group], manager))
        sample = sample_questions({name: len(task.eval_docs) for name, task in leaves.items()}, mmlu_limit, seed)
        # lm-eval reads an empty index list as "all questions": only the subtasks with a draw run.
        runs.append(([leaves[name] for name in sample], sample, group))
    summary: dict[str, dict[str, Any]] = {}
    for task_list, sample, group in runs:
        output = simple_evaluate(model=language_model, tasks=list(task_list), task_manager=manager,
                                 samples=sample, log_samples=False, random_seed=seed,
                                 numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed)
        counts = output.get("n-samples", {})
        for task, task_results in output["results"].items():
            summary[task] = flatten_metrics(task_results)
            if task in counts:
                summary[task]["samples"] = counts[task].get("effective", counts[task].get("original"))
        if group is not None:
            summary[group] = pooled_accuracy(summary, {name: len(indices) for name, indices in sample.items()})
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
    `write_evaluation`), or None when Step 0 has not run on this very model (its recorded identity: a
    Step 0 of another model with the same folder name is not used, with a note) or the task has no accuracy."""
    folder = model_step_dir(model, "evals", output_root)
    summary = folder / "summary.json"
    if not summary.exists():
        return None
    reasons = Identity.of(models={"model": model}).differences(read_identity(folder), parts=("models",))
    if reasons:
        print(f"note: not using {folder} (Step 0 of another model): {'; '.join(reasons)}", file=sys.stderr)
        return None
    return json.loads(summary.read_text()).get(task, {}).get("acc")
