# /// script
# requires-python = ">=3.10"
# dependencies = ["brittle", "wandb>=0.18"]
#
# [tool.uv.sources]
# brittle = { path = "../..", editable = true }
# ///
"""Rank finished unlearning runs by what they forgot and what they kept, against Base and Filtered.

    uv run unlearn/analysis/analyze_runs.py                 # real preset: WMDP-Bio vs MMLU
    uv run unlearn/analysis/analyze_runs.py --preset toy    # toy_forget_mcq vs toy_retain_mcq

Reads every finished run of the base model under `unlearned_models/` (`unlearn_run.json` and
`evals/summary.json`, written by unlearn/unlearn.py, with or without weights) and, when W&B is
configured, the finished `unlearn` runs of the W&B project that are not on this machine. The
baselines are the Step 0 results of Base and Filtered (`outputs/<model>/evals/summary.json`; make them
with `uv run experiment/eval.py --model M [--preset toy]` or `./experiment/pipeline.sh`).

Ranking: runs whose retain accuracy stays within --max-retain-drop of Base come first, by forget
accuracy (lower is better; Filtered shows what genuine ignorance scores); the rest follow by retain
accuracy. Writes `unlearn/analysis/best_unlearning_models.md` (best run per method, then every run),
the same table as CSV, and a forget-vs-retain scatter plot beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from brittle.cli import UserError, run_cli
from brittle.outputs import model_slug, model_step_dir, write_csv, write_text
from brittle.presets import get_preset

DEFAULT_REPORT = Path(__file__).resolve().parent / "best_unlearning_models.md"


@dataclass
class Run:
    """One finished unlearning run and its headline scores."""

    run_name: str
    method: str
    forget: float
    retain: float
    source: str  # "local" or "W&B"
    hyperparameters: str  # the run name's encoded part, e.g. ep1_lr1e-05_bs4_rw1.0
    train_seconds: float | None = None
    weights_saved: bool | None = None
    rank: int = 0
    within_tolerance: bool = False


@dataclass
class Baselines:
    base_forget: float | None = None
    base_retain: float | None = None
    filtered_forget: float | None = None
    filtered_retain: float | None = None


def task_score(summary: dict, task: str) -> float | None:
    metrics = summary.get(task) or {}
    return metrics.get("acc", metrics.get("word_perplexity"))


def read_baselines(base: str, filtered: str, forget_task: str, retain_task: str, output_root: str) -> Baselines:
    """Step 0 results of Base and Filtered, where they exist."""
    baselines = Baselines()
    for role, model in (("base", base), ("filtered", filtered)):
        path = model_step_dir(model, "evals", output_root) / "summary.json"
        if not path.is_file():
            print(f"note: no baseline metrics for {role} ({path} is missing); evaluate it first: "
                  f"uv run experiment/eval.py --model {model}", file=sys.stderr)
            continue
        summary = json.loads(path.read_text())
        setattr(baselines, f"{role}_forget", task_score(summary, forget_task))
        setattr(baselines, f"{role}_retain", task_score(summary, retain_task))
    return baselines


def local_runs(root: Path, base: str, forget_task: str, retain_task: str) -> list[Run]:
    """Finished and evaluated runs of `base` under `root`."""
    runs = []
    prefix = f"{model_slug(base)}__"
    for record_path in sorted(root.glob("*/unlearn_run.json")):
        folder = record_path.parent
        summary_path = folder / "evals" / "summary.json"
        if not folder.name.startswith(prefix) or not summary_path.is_file():
            continue
        record = json.loads(record_path.read_text())
        summary = json.loads(summary_path.read_text())
        forget, retain = task_score(summary, forget_task), task_score(summary, retain_task)
        if forget is None or retain is None:
            continue
        runs.append(Run(folder.name, record["method"], forget, retain, "local", folder.name.split("__")[-1],
                        record.get("seconds", {}).get("train"), record.get("weights_saved")))
    return runs


def wandb_runs(project: str | None, base: str, forget_task: str, retain_task: str, known: set[str]) -> list[Run]:
    """Finished `unlearn` runs of `base` in the W&B project that are not among `known` (empty when W&B is off)."""
    from brittle.tracking import wandb_enabled

    if not wandb_enabled():
        return []
    import os

    import wandb

    api = wandb.Api()
    project = project or os.environ.get("WANDB_PROJECT", "brittle-unlearning")
    path = f"{os.environ.get('WANDB_ENTITY') or api.default_entity}/{project}"
    runs = []
    try:
        for wandb_run in api.runs(path, filters={"state": "finished", "jobType": "unlearn"}):
            name = wandb_run.name
            if name in known or not name.startswith(f"{model_slug(base)}__"):
                continue
            forget = wandb_run.summary.get(f"{forget_task}/acc")
            retain = wandb_run.summary.get(f"{retain_task}/acc")
            if forget is not None and retain is not None:
                runs.append(Run(name, wandb_run.config.get("method", name.split("__")[1]), float(forget), float(retain),
                                "W&B", name.split("__")[-1]))
    except Exception as error:  # network or permissions: the local runs still rank
        print(f"note: could not read W&B runs from {path} ({type(error).__name__})", file=sys.stderr)
    return runs


def rank_runs(runs: list[Run], baselines: Baselines, max_retain_drop: float) -> list[Run]:
    """Within the retain tolerance by forget accuracy (low first), then the rest by retain accuracy."""
    for run in runs:
        run.within_tolerance = (baselines.base_retain is None
                                or run.retain >= baselines.base_retain - max_retain_drop - 1e-9)
    ranked = sorted(runs, key=lambda run: (not run.within_tolerance,
                                           run.forget if run.within_tolerance else -run.retain,
                                           -run.retain))
    for position, run in enumerate(ranked, start=1):
        run.rank = position
    return ranked


def number(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def markdown_table(runs: list[Run], baselines: Baselines) -> list[str]:
    lines = ["| rank | method | forget acc | retain acc | Δ forget vs base | Δ retain vs base | hyperparameters | "
             "within tolerance | train s | source |", "|---|---|---|---|---|---|---|---|---|---|"]
    for run in runs:
        forget_change = None if baselines.base_forget is None else run.forget - baselines.base_forget
        retain_change = None if baselines.base_retain is None else run.retain - baselines.base_retain
        lines.append(f"| {run.rank} | {run.method} | {run.forget:.3f} | {run.retain:.3f} | {number(forget_change)} | "
                     f"{number(retain_change)} | `{run.hyperparameters}` | {'yes' if run.within_tolerance else 'no'} | "
                     f"{number(run.train_seconds, 0)} | {run.source} |")
    return lines


def report(runs: list[Run], baselines: Baselines, preset_name: str, base: str, filtered: str, forget_task: str,
           retain_task: str, max_retain_drop: float) -> str:
    best_per_method: dict[str, Run] = {}
    for run in runs:
        best_per_method.setdefault(run.method, run)
    lines = [f"# Best unlearning models of `{base}`", "",
             f"Preset `{preset_name}`: forget task `{forget_task}` (lower is better), retain task `{retain_task}` "
             "(higher is better). Chance on 4-option multiple choice is 0.25.", "",
             "| baseline | forget acc | retain acc |", "|---|---|---|",
             f"| Base (`{base}`) | {number(baselines.base_forget)} | {number(baselines.base_retain)} |",
             f"| Filtered (`{filtered}`) | {number(baselines.filtered_forget)} | {number(baselines.filtered_retain)} |",
             "", f"Runs whose retain accuracy stays within {max_retain_drop} of Base rank first, by forget accuracy; "
             "the others follow by retain accuracy.", "", "## Best run per method", ""]
    lines += markdown_table(list(best_per_method.values()), baselines)
    lines += ["", f"## All {len(runs)} runs", ""]
    lines += markdown_table(runs, baselines)
    return "\n".join(lines) + "\n"


def plot(runs: list[Run], baselines: Baselines, path: Path, forget_task: str, retain_task: str) -> None:
    """Forget accuracy against retain accuracy, one colour per method, Base and Filtered as stars."""
    import matplotlib.pyplot as plt

    from brittle.plotting import save_figure

    figure, axis = plt.subplots(figsize=(7.5, 5.5))
    methods = sorted({run.method for run in runs})
    colours = plt.get_cmap("tab20")(range(len(methods)))
    for method, colour in zip(methods, colours, strict=True):
        points = [(run.forget, run.retain) for run in runs if run.method == method]
        axis.scatter(*zip(*points, strict=True), color=colour, label=method, s=28, alpha=0.85)
    for name, forget, retain, marker_colour in (("Base", baselines.base_forget, baselines.base_retain, "black"),
                                                ("Filtered", baselines.filtered_forget, baselines.filtered_retain,
                                                 "green")):
        if forget is not None and retain is not None:
            axis.scatter([forget], [retain], marker="*", s=220, color=marker_colour, label=name, zorder=5)
    axis.axvline(0.25, color="grey", linestyle=":", linewidth=1)
    axis.axhline(0.25, color="grey", linestyle=":", linewidth=1, label="chance")
    axis.set_xlabel(f"{forget_task} accuracy (forget: lower is better)")
    axis.set_ylabel(f"{retain_task} accuracy (retain: higher is better)")
    axis.set_title("Unlearning runs: what was forgotten vs what was kept")
    axis.legend(fontsize="x-small", ncol=2, loc="lower right")
    save_figure(figure, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="real", choices=["real", "toy"])
    parser.add_argument("--seed", type=int, default=42, help="selects the toy models (default 42)")
    parser.add_argument("--base", default=None, help="base model whose runs to rank (default: the preset's)")
    parser.add_argument("--filtered", default=None, help="filtered baseline model (default: the preset's)")
    parser.add_argument("--unlearned-root", default="unlearned_models", help="where the run folders are")
    parser.add_argument("--output-root", default="outputs", help="where the baselines' Step 0 results are")
    parser.add_argument("--max-retain-drop", type=float, default=0.05,
                        help="retain accuracy a run may lose against Base and still rank first (default 0.05)")
    parser.add_argument("--wandb-project", default=None, help="also read finished runs from this W&B project")
    parser.add_argument("--output", default=str(DEFAULT_REPORT),
                        help="the Markdown report (default unlearn/analysis/best_unlearning_models.md)")
    args = parser.parse_args()

    preset = get_preset(args.preset, args.seed)
    base, filtered = args.base or preset.base, args.filtered or preset.filtered
    baselines = read_baselines(base, filtered, preset.forget_task, preset.retain_task, args.output_root)
    runs = local_runs(Path(args.unlearned_root), base, preset.forget_task, preset.retain_task)
    runs += wandb_runs(args.wandb_project, base, preset.forget_task, preset.retain_task, {run.run_name for run in runs})
    if not runs:
        raise UserError(f"no finished, evaluated runs of {base} under {args.unlearned_root}/; make some with "
                        f"`PRESET={args.preset} ./unlearn/run_unlearn.sh METHOD` or ./unlearn/sweep_unlearn.sh")
    ranked = rank_runs(runs, baselines, args.max_retain_drop)

    output = Path(args.output)
    write_text(output, report(ranked, baselines, preset.name, base, filtered, preset.forget_task, preset.retain_task,
                              args.max_retain_drop))
    write_csv(output.with_suffix(".csv"), [asdict(run) for run in ranked])
    plot(ranked, baselines, output.with_suffix(".png"), preset.forget_task, preset.retain_task)
    print(f"{'rank':>4}  {'method':<12} {'forget':>6} {'retain':>6}  run")
    for run in ranked[:15]:
        print(f"{run.rank:>4}  {run.method:<12} {run.forget:6.3f} {run.retain:6.3f}  {run.run_name}")
    print(f"{len(ranked)} run(s) ranked -> {output} (+ .csv, .png)")


if __name__ == "__main__":
    run_cli(main)
