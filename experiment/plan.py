# /// script
# requires-python = ">=3.10"
# dependencies = ["brittle[steps]"]  # the pipeline steps' one environment (pyproject.toml)
#
# [tool.uv.sources]
# brittle = { path = "..", editable = true }
# ///
"""The pipeline's planner and scheduler: what `experiment/pipeline.sh` asks before and while running steps.

It reads the pipeline's settings from the environment (PRESET, SEED, SEEDS, STEPS, JOBS, DRY_RUN, BASE, ...,
see pipeline.sh) and the steps from `experiment/steps.py`. Only `run` loads torch, once, to warm-start the CPU
steps (WARM_START, brittle/warmstart.py); that is why this script's environment is the steps' own.

    uv run experiment/plan.py check
        checks every setting, flag, step name and model before anything runs: one `error:` line otherwise

    uv run experiment/plan.py preset --preset toy --seed 42
        prints shell assignments of the preset's models and data (`BASE=${BASE:-...}`), so that
        variables the user already set win: eval "$(uv run experiment/plan.py preset ...)"

    uv run experiment/plan.py run --stage preflight|study [--force]
        plans the study's steps (every step of experiment/steps.py for every model, comparison and attacked
        model), skips the finished ones, and runs the rest: independent steps side by side, one per free
        GPU, or JOBS at a time on the CPU; `--stage preflight` runs only Step 0 of Base. With DRY_RUN=1 it
        prints the plan (wave, device, skipped) and runs nothing. `--stage study` ends with the summary.

    uv run experiment/plan.py preflight --model BASE --task TASK --threshold X [--output-root R]
        the baseline pre-flight check from Step 0's results: exit 0 when base's accuracy on the forget
        task reaches the threshold, 2 (with one error line) when it does not, 3 when Step 0 has not run

    uv run experiment/plan.py done --step evals --model M [--model-b B] [--output-root R]
        exit status 0 when that step is finished (the shared skip logic says so), 1 otherwise

Scheduling. Each step of each unit is a task; a task waits for (1) the steps it `needs` on the same unit,
(2) the first task that computes the activation statistics of one of its models, when it reads them too,
and (3) an earlier task that writes one of the same folders. Among the tasks whose waits are over, the one
earliest in the plan (the order of experiment/steps.py) starts first on the first free slot; with several
slots a `long` step (one that trains or perturbs) goes before the short ones.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from steps import STEP_NAMES, STEPS, Step, UnknownStepError, step

from brittle.cli import UserError, run_cli
from brittle.evaluation import step0_accuracy
from brittle.identity import Identity, read_identity
from brittle.outputs import comparison_name, model_slug, skip_if_complete, write_text
from brittle.preflight import check_forget_baseline
from brittle.presets import PRESETS, get_preset
from brittle.texts import DEFAULT_MAX_SAMPLES
from brittle.warmstart import ForkedScript, WarmStart, same_environment

STEP_0_MISSING = 3  # exit status of `preflight` when it cannot answer without measuring
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")  # what a CPU slot sets to share the cores
WARM_NOTE = "   # warm start: forked from the pipeline's interpreter (brittle/warmstart.py)"
REPOSITORY = Path(__file__).resolve().parents[1]

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
MODEL_VARIABLES = ("BASE", "FILTERED", "UNLEARNED", "PRETRAIN", "CB_MODEL")
# Flags that add comparisons, and flags that steps name in `enabled_by`: each is 0 (default) or 1.
COMPARISON_FLAGS = ("ENABLE_PRETRAIN_COMPARISON", "ENABLE_CB_COMPARISONS")
FLAGS = tuple(dict.fromkeys([*COMPARISON_FLAGS, "DRY_RUN", "WARM_START",
                             *(entry.enabled_by for entry in STEPS if entry.enabled_by)]))


# --------------------------------------------------------------------------------------------------
# Settings: read from the environment and checked, all before the first step
# --------------------------------------------------------------------------------------------------

def whole_number(variable: str, text: str, minimum: int = 0) -> int:
    """`text` as an integer >= minimum, or a `UserError` naming the variable."""
    if not re.fullmatch(r"[0-9]+", text.strip()) or int(text) < minimum:
        kind = "a whole number" if minimum == 0 else f"a whole number >= {minimum}"
        raise UserError(f"{variable} must be {kind}, got '{text}'")
    return int(text)


def flag(variable: str) -> bool:
    """A 0/1 environment flag (default 0)."""
    value = os.environ.get(variable, "0")
    if value not in ("0", "1"):
        raise UserError(f"{variable}='{value}' is not a valid value; use {variable}=1 to enable it or 0 "
                        "(the default) to leave it off")
    return value == "1"


def selected_steps() -> set[str] | None:
    """The step names in STEPS (None: all); an unknown name is one error line listing the steps."""
    names = os.environ.get("STEPS", "").split()
    if not names:
        return None
    chosen = set()
    for name in names:
        try:
            chosen.add(step(name).name)
        except UnknownStepError:
            raise UserError(f"STEPS names '{name}', which is not a step; the steps are: {' '.join(STEP_NAMES)}") \
                from None
    return chosen


def seeds() -> list[int]:
    """SEEDS (several) or SEED (one), checked."""
    if os.environ.get("SEEDS", "").strip():
        text = os.environ["SEEDS"]
        if not all(re.fullmatch(r"[0-9]+", seed) for seed in text.split()):
            raise UserError(f"SEEDS must be whole numbers separated by spaces, got '{text}'")
        return [int(seed) for seed in text.split()]
    return [whole_number("SEED", os.environ.get("SEED", "42"))]


def gpu_list() -> list[str]:
    """The GPUs the pipeline may use: GPU_LIST, else CUDA_VISIBLE_DEVICES, else nvidia-smi's (none on a CPU)."""
    if os.environ.get("GPU_LIST", "").strip():
        gpus = re.split(r"[,\s]+", os.environ["GPU_LIST"].strip())
        if not all(gpu.isdigit() for gpu in gpus):
            raise UserError(f"GPU_LIST must be GPU indices separated by commas, got '{os.environ['GPU_LIST']}'")
        return gpus
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return [gpu for gpu in re.split(r"[,\s]+", os.environ["CUDA_VISIBLE_DEVICES"].strip()) if gpu]
    try:
        listing = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                                 text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return listing.stdout.split() if listing.returncode == 0 else []


@dataclass(frozen=True)
class Slot:
    """Where one task runs: a name for the plan, the environment it adds, and whether it is a CPU slot (whose
    steps may be warm-started: brittle/warmstart.py)."""

    name: str
    environment: dict[str, str] = field(default_factory=dict)
    cpu: bool = True


def slots(device: str) -> list[Slot]:
    """One slot per group of GPUS_PER_JOB GPUs (DEVICE auto or cuda, when there are GPUs), else JOBS CPU slots.

    On the CPU each of N slots gets cores/N torch threads, so that side-by-side steps do not fight over cores.
    """
    jobs = whole_number("JOBS", os.environ["JOBS"], minimum=1) if os.environ.get("JOBS") else None
    per_job = whole_number("GPUS_PER_JOB", os.environ.get("GPUS_PER_JOB", "1"), minimum=1)
    gpus = gpu_list() if device in ("auto", "cuda") else []
    if gpus:
        groups = [gpus[start:start + per_job] for start in range(0, len(gpus) - per_job + 1, per_job)]
        if not groups:
            raise UserError(f"GPUS_PER_JOB={per_job} is more than the {len(gpus)} GPU(s) available; lower it")
        return [Slot(f"GPU {','.join(group)}", {"CUDA_VISIBLE_DEVICES": ",".join(group)}, cpu=False)
                for group in groups[:jobs]]
    count = jobs or 1
    if count == 1:
        return [Slot("CPU")]
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // count))
    return [Slot(f"CPU slot {index + 1}", dict.fromkeys(THREAD_VARIABLES, threads)) for index in range(count)]


def model_problem(model: str, preset: str) -> str | None:
    """Why `model` cannot be used, or None: a local folder must exist; a hub id (at most one '/', not a
    path) is checked by the steps themselves, except under the offline toy preset."""
    path = Path(model).expanduser()
    if path.is_dir():
        return None
    looks_like_path = path.exists() or model.startswith(("/", ".", "~")) or model.count("/") > 1
    if looks_like_path or preset == "toy":
        return "no such folder"
    return None


def check_environment() -> None:
    """Every setting, flag, step name and model of the run: the first problem as a `UserError`."""
    preset_name = os.environ.get("PRESET", "real")
    if preset_name not in PRESETS:
        raise UserError(f"unknown PRESET '{preset_name}'; use {' or '.join(PRESETS)}")
    for variable in FLAGS:
        flag(variable)
    run_seeds = seeds()
    selected_steps()
    for variable in ("MAX_SAMPLES",):
        if os.environ.get(variable):
            whole_number(variable, os.environ[variable], minimum=1)
    slots(os.environ.get("DEVICE", "auto"))
    for seed in run_seeds:
        preset = get_preset(preset_name, seed)
        for variable in MODEL_VARIABLES:
            own = getattr(preset, SHELL_VARIABLES[variable])
            model = os.environ.get(variable) or own
            if preset_name == "toy" and model == own:
                continue  # the organism and the toy unlearned models are made by the pipeline
            if not model:
                continue  # an empty real UNLEARNED/CB_MODEL is reported where it is needed
            problem = model_problem(model, preset_name)
            if problem and (variable in ("BASE", "FILTERED", "UNLEARNED") or comparison_uses(variable)):
                raise UserError(f"model {model} not found ({variable}): {problem}; set {variable} to an existing "
                                "model folder or a hub id")


def comparison_uses(variable: str) -> bool:
    """Whether the optional model `variable` is part of the study under the current flags."""
    return {"PRETRAIN": flag("ENABLE_PRETRAIN_COMPARISON"), "CB_MODEL": flag("ENABLE_CB_COMPARISONS")}[variable]


# --------------------------------------------------------------------------------------------------
# The study: its models, comparisons and attacked models, as pipeline.sh exported them
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Study:
    """Labelled models and comparisons, the models the attacks target, and the common step settings."""

    models: dict[str, str]  # model -> labels ("Base, Unlearned" when one model has two roles)
    comparisons: list[tuple[str, str, str]]  # (label, model A, model B)
    attacked: list[str]  # unlearned models attacked against Base
    base: str
    filtered: str
    preset: str
    seed: int
    output_root: Path
    device: str = "auto"
    dtype: str = "auto"
    max_samples: int | None = None
    baseline_min_forget_acc: str = "0"
    to_make: dict[str, str] = field(default_factory=dict)  # model folder -> the method that makes it (toy)


def study_from_environment() -> Study:
    """The models and comparisons pipeline.sh asks for (COMP1, COMP2; COMP3 and COMP4-6 behind flags)."""
    env = os.environ
    base, filtered, unlearned = env["BASE"], env["FILTERED"], env["UNLEARNED"]
    models: dict[str, str] = {}

    def add_model(label: str, model: str) -> None:
        models[model] = f"{models[model]}, {label}" if model in models else label

    add_model("Base", base)
    add_model("Filtered", filtered)
    add_model("Unlearned", unlearned)
    comparisons = [("COMP1 Base -> Filtered", base, filtered),          # what does genuine ignorance look like?
                   ("COMP2 Base -> Unlearned", base, unlearned)]        # what does post-hoc unlearning look like?
    attacked = [unlearned]
    if flag("ENABLE_PRETRAIN_COMPARISON"):
        add_model("Pretraining checkpoint", env["PRETRAIN"])
        comparisons.append(("COMP3 Base -> Pretraining checkpoint", base, env["PRETRAIN"]))  # training-stage effects
    if flag("ENABLE_CB_COMPARISONS"):
        cb = env["CB_MODEL"]
        add_model("CB", cb)
        comparisons += [("COMP4 Base -> CB", base, cb),                  # circuit breakers alone
                        ("COMP5 CB -> Unlearned", cb, unlearned),        # what LAT adds on top of CB
                        ("COMP6 Unlearned -> Filtered", unlearned, filtered)]  # how far unlearning is from ignorance
        attacked.append(cb)
    max_samples = env.get("MAX_SAMPLES")
    # MAKE_MODELS: the toy unlearned models pipeline.sh found missing, as `<folder>=<method>` words; the study
    # makes them as its first tasks, beside the steps that do not need them.
    to_make = dict(word.split("=", 1) for word in env.get("MAKE_MODELS", "").split())
    return Study(models, comparisons, attacked, base, filtered, env.get("PRESET", "real"), seeds()[0],
                 Path(env.get("OUTPUT_ROOT", "outputs")), env.get("DEVICE", "auto"), env.get("DTYPE", "auto"),
                 int(max_samples) if max_samples else None, env.get("BASELINE_MIN_FORGET_ACC", "0"), to_make)


# --------------------------------------------------------------------------------------------------
# Tasks: one step on one unit
# --------------------------------------------------------------------------------------------------

@dataclass
class Task:
    """One step on one unit (a model, a comparison, an attacked model, or the study)."""

    step: Step
    models: tuple[str, ...]  # (model,), (model A, model B), or () for the study
    label: str
    folder: Path  # the step's results folder; its existence (through the shared skip logic) is "done"
    writes: tuple[Path, ...]  # every folder it writes, for ordering tasks that share one
    script: str  # the step script's path
    arguments: list[str]  # its command-line arguments
    done: bool = False
    ran_earlier: bool = False  # ran in an earlier stage of this pipeline run (Step 0 of Base, --force)
    after: set[int] = field(default_factory=set)  # indices of tasks this one waits for
    interpreter: tuple[str, ...] = ("uv", "run", "--quiet")  # what runs the script when it is not warm-started

    @property
    def command(self) -> list[str]:
        """How a user runs this step by hand (and how it runs when it is not warm-started)."""
        return [*self.interpreter, self.script, *self.arguments]


def unit_folder(models: tuple[str, ...], root: Path) -> Path:
    """`<root>/<model>` or `<root>/<a>__to__<b>`: where a unit's steps write."""
    return root / (model_slug(models[0]) if len(models) == 1 else comparison_name(*models))


def passed_settings(arguments: list[str]) -> dict[str, list[str]]:
    """{setting: its values} of a step's `--flag value ...` arguments (`--max-samples 40` -> max_samples: ["40"])."""
    settings: dict[str, list[str]] = {}
    name = None
    for word in arguments:
        if word.startswith("--"):
            name = word[2:].replace("-", "_")
            settings[name] = []
        elif name is not None:
            settings[name].append(word)
    return settings


def same_setting(recorded: object, passed: list[str]) -> bool:
    """Whether a setting recorded in identity.json (as JSON holds it) is the value the pipeline passes now."""
    def same(value: object, word: str) -> bool:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                return float(word) == float(value)
            except ValueError:
                return False
        return str(value) == word
    if isinstance(recorded, list):
        return len(recorded) == len(passed) and all(map(same, recorded, passed))
    return len(passed) == 1 and same(recorded, passed[0])


# The settings that the study's variables pass to its steps (MAX_SAMPLES, DTYPE, SEED, PRESET): they may change
# between two runs into the same folder, where the registry's fixed arguments (`--lens both`) do not.
STUDY_SETTINGS = ("max_samples", "dtype", "seed", "preset")


def is_done(folder: Path, models: tuple[str, ...] = (), arguments: list[str] = ()) -> bool:
    """The shared skip logic of every step script (brittle.outputs.skip_if_complete), without its message,
    and only when the folder was made from these very `models` (their recorded fingerprints) and with the
    values of the study's settings that `arguments` pass now (`STUDY_SETTINGS`): any other result is handed
    back to the step script, which recomputes it with a note. (The step script checks the rest of its
    recorded identity — data, and every other setting — itself.)"""
    with contextlib.redirect_stdout(io.StringIO()):
        if not skip_if_complete(folder):
            return False
    roles = ("model",) if len(models) == 1 else ("model_a", "model_b")
    current = Identity.of(models=dict(zip(roles, models, strict=False)))
    recorded = read_identity(folder)
    reasons = current.differences(recorded, parts=("models",))
    if [reason for reason in reasons if "was an input then" not in reason]:
        return False
    recorded_settings = (recorded or {}).get("settings") or {}
    passed = passed_settings(arguments)
    return all(same_setting(recorded_settings[name], passed[name])
               for name in STUDY_SETTINGS if passed.get(name) and name in recorded_settings)


def make_task(entry: Step, models: tuple[str, ...], study: Study, force: bool) -> Task:
    """Step `entry` on one unit: its command line, results folder, the folders it writes, and whether it is done."""
    root, folder_name = study.output_root, entry.folder(study.seed)
    values = {"preset": study.preset, "filtered": study.filtered,
              "baseline_min_forget_acc": study.baseline_min_forget_acc}
    arguments = [argument.format(**values) for argument in entry.arguments]
    if entry.texts:
        arguments += ["--max-samples", str(study.max_samples or DEFAULT_MAX_SAMPLES)]
    script = str(REPOSITORY / entry.script)
    if entry.scope == "study":
        return Task(entry, (), entry.name, root, (), script, ["--output-root", str(root), *arguments])
    model_arguments = ["--model", models[0]] if len(models) == 1 else ["--model-a", models[0], "--model-b", models[1]]
    arguments = [*model_arguments, "--output-root", str(root), "--device", study.device, "--dtype", study.dtype,
                 "--seed", str(study.seed), *(["--force"] if force else []), *arguments]
    folder = unit_folder(models, root) / folder_name
    roles = {"model": models[:1], "model_a": models[:1], "model_b": models[-1:], "comparison": models,
             "filtered": (study.filtered,)}
    writes = (*(unit_folder(models, root) / output.replace("*", str(study.seed)) for output in entry.outputs),
              *(unit_folder(roles[role], root) / name.format(seed=study.seed) for role, name in entry.also_writes))
    label = f"{folder_name}: {' -> '.join(models)}"
    return Task(entry, models, label, folder, writes, script, arguments,
                done=not force and is_done(folder, models, arguments))


# Making a toy unlearned model (unlearn/run_unlearn.sh METHOD): not a diagnostics step, but a task of the study
# so that it trains beside the steps of Base and Filtered; every task of that model waits for it.
MAKE_MODEL = Step("unlearned_model", None, "study", "unlearn/run_unlearn.sh", "a toy unlearned model", summary="",
                  long=True)


def make_model_tasks(study: Study) -> list[Task]:
    """One task per model in `study.to_make`: `run_unlearn.sh METHOD` under the study's preset and seed."""
    return [Task(MAKE_MODEL, (model,), f"toy {method} model (seed {study.seed})", Path(model), (Path(model),),
                 str(REPOSITORY / MAKE_MODEL.script), [method], interpreter=())
            for model, method in study.to_make.items()]


def units(entry: Step, study: Study) -> list[tuple[str, ...]]:
    """The units a step runs on, in the study's order."""
    return {"model": [(model,) for model in study.models],
            "comparison": [(model_a, model_b) for _, model_a, model_b in study.comparisons],
            "attack": [(study.base, model) for model in study.attacked],
            "study": [()]}[entry.scope]


def plan_tasks(study: Study, chosen: set[str] | None, force: bool, include_report: bool = True,
               ran_earlier: set[str] = frozenset()) -> list[Task]:
    """Every task of the study that STEPS selects (all when `chosen` is None), in run order, with its waits.

    Tasks labelled in `ran_earlier` count as finished. A selected step that needs a step which is neither
    selected nor finished is a `UserError` here, before anything runs.
    """
    every: dict[tuple[str, tuple[str, ...]], Task] = {}  # all tasks of the study, to resolve `needs`
    for scope in ("model", "comparison", "attack", "study"):
        for unit_models in dict.fromkeys(model_units for entry in STEPS if entry.scope == scope
                                         for model_units in units(entry, study)):
            for entry in STEPS:
                wanted = entry.scope == scope and (entry.scope != "study" or include_report) and \
                    (entry.enabled_by is None or flag(entry.enabled_by))
                if wanted and (entry.name, unit_models) not in every:
                    every[(entry.name, unit_models)] = make_task(entry, unit_models, study, force)
    for task in every.values():
        if task.label in ran_earlier:
            task.done = task.ran_earlier = True
    made = make_model_tasks(study)
    tasks = [*made, *(task for task in every.values() if chosen is None or task.step.name in chosen)]
    maker = {task.models[0]: index for index, task in enumerate(made)}
    position = {id(task): index for index, task in enumerate(tasks)}
    producers: dict[tuple[str, str], int] = {}  # first to-run task of each shared resource
    for index, task in enumerate(tasks):
        if task.done:
            continue
        task.after.update(maker[model] for model in task.models if model in maker and maker[model] != index)
        for needed in (*task.step.needs, *task.step.reads):
            for needed_task in needed_tasks(every, step(needed), task.models):
                if id(needed_task) in position and not needed_task.done:
                    task.after.add(position[id(needed_task)])
                elif not needed_task.done and needed in task.step.needs:
                    raise UserError(f"{task.label} needs {needed_task.label}, which has not run; add {needed} to "
                                    "STEPS (or leave STEPS empty)")
        resources = [("folder", str(folder)) for folder in task.writes]
        if task.step.activations:
            resources += [("activations", model) for model in task.models]
        for resource in resources:
            producer = producers.setdefault(resource, index)
            if producer != index:
                task.after.add(producer)
        if task.step.scope == "study":
            task.after.update(other for other in range(index) if not tasks[other].done)
    return tasks


def needed_tasks(every: dict, needed: Step, models: tuple[str, ...]) -> list[Task]:
    """The tasks of step `needed` that a task on `models` reads: the same unit, or each of its models."""
    if needed.scope == "model":
        return [every[(needed.name, (model,))] for model in models if (needed.name, (model,)) in every]
    return [every[(needed.name, models)]] if (needed.name, models) in every else []


def start_order(tasks: list[Task], ready: list[int], slot_count: int) -> list[int]:
    """The order in which ready tasks take free slots: with several slots the `long` steps first (longest
    first keeps a long step from running alone at the end), then the plan's order; with one, the plan's."""
    return sorted(ready, key=lambda index: (slot_count > 1 and not tasks[index].step.long, index))


def waves(tasks: list[Task], slot_count: int) -> dict[int, tuple[int, int]]:
    """(wave, slot) of each task to run, if every task took the same time: in each wave the free slots take
    the ready tasks in `start_order`. The real run starts a task as soon as its waits are over."""
    placed: dict[int, tuple[int, int]] = {}
    pending = [index for index, task in enumerate(tasks) if not task.done]
    wave = 0
    while pending:
        wave += 1
        ready = start_order(tasks, [index for index in pending
                                    if all(other in placed for other in tasks[index].after)], slot_count)[:slot_count]
        if not ready:
            raise RuntimeError("the plan has a cycle")  # impossible: waits point to earlier tasks only
        for slot, index in enumerate(ready):
            placed[index] = (wave, slot)
        pending = [index for index in pending if index not in placed]
    return placed


# --------------------------------------------------------------------------------------------------
# Running: the ledger of what ran, per-step logs, W&B summaries
# --------------------------------------------------------------------------------------------------

def ledger(status: str, label: str, seconds: float | None = None) -> None:
    """Append one line to the run's ledger (PIPELINE_LEDGER), which the final summary reads."""
    path = os.environ.get("PIPELINE_LEDGER")
    if path:
        with open(path, "a", encoding="utf-8") as file:
            file.write(f"{status}\t{label}\t{'' if seconds is None else round(seconds)}\n")


def log_summary_to_wandb(task: Task, study: Study) -> None:
    """The finished step's summary (its numbers) as one W&B run, when W&B is configured; a note if it fails."""
    from brittle.tracking import log_to_wandb, wandb_enabled

    if not task.step.summary or not wandb_enabled():
        return
    path = task.folder / task.step.summary
    try:
        metrics = summary_metrics(path)
        log_to_wandb(None, f"{task.folder.parent.name}/{task.folder.name}",
                     {"step": task.step.name, "models": list(task.models), "preset": study.preset,
                      "seed": study.seed}, metrics, job_type=task.step.name)
    except Exception as error:  # W&B is optional: never fail a finished step
        print(f"note: could not log {path} to W&B ({type(error).__name__}: {error})")


def summary_metrics(path: Path) -> dict[str, float]:
    """The numbers of a summary.json (nested keys joined with '/') or a one-row summary.csv."""
    if not path.exists():
        return {}
    if path.suffix == ".csv":
        from brittle.outputs import read_csv

        rows = read_csv(path)
        data: dict = rows[0] if len(rows) == 1 else {}
    else:
        data = json.loads(path.read_text())
    metrics: dict[str, float] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}/{key}" if prefix else str(key), item)
        elif isinstance(value, bool):
            return
        elif isinstance(value, (int, float)):
            metrics[prefix] = value
        elif isinstance(value, str):
            with contextlib.suppress(ValueError):
                metrics[prefix] = float(value)

    walk("", data)
    return metrics


def log_file_name(index: int, label: str) -> str:
    return f"{index + 1:03d}-{re.sub(r'[^A-Za-z0-9._-]+', '_', label)[:120]}.log"


def run_tasks(tasks: list[Task], study: Study, pool: list[Slot], log_dir: Path,
              warm_start: WarmStart | None = None) -> None:
    """Run every task not done, as many at a time as there are slots, each as soon as its waits are over.

    One slot: each step's output goes to the terminal, as a plain sequential run. Several: each step writes
    its own log (log_dir), and the terminal shows one line when a step starts and one when it ends. A failed
    step stops new starts; running steps finish; the error names the step and its log. With `warm_start`, a
    step on a CPU slot whose script shares this script's environment starts as a fork of this process
    instead of through `uv run` (the same script, arguments and environment; no interpreter start-up).
    """
    pending = [index for index, task in enumerate(tasks) if not task.done]
    for task in tasks:
        if task.done and not task.ran_earlier:
            ledger("skipped", task.label)
    parallel = len(pool) > 1
    if parallel and pending:
        log_dir.mkdir(parents=True, exist_ok=True)
        print(f"\n==> {len(pending)} step(s) on {len(pool)} slots ({', '.join(slot.name for slot in pool)}); "
              f"logs in {log_dir}/")
    finished: set[int] = set()
    running: dict[int, tuple[subprocess.Popen | ForkedScript, Slot, float, Path | None]] = {}
    base_environment = dict(os.environ)  # before anything this process does (W&B) can add to it
    failed: list[tuple[Task, int, Path | None]] = []
    free = list(pool)

    def stop_all(signal_number: int, _frame) -> None:
        for process, *_ in running.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        sys.exit(128 + signal_number)

    signal.signal(signal.SIGTERM, stop_all)
    signal.signal(signal.SIGINT, stop_all)
    while pending or running:
        while free and not failed:
            ready = next(iter(start_order(tasks, [index for index in pending if tasks[index].after <= finished],
                                          len(pool))), None)
            if ready is None:
                break
            pending.remove(ready)
            task, slot = tasks[ready], free.pop(0)
            added = slot.environment
            if task.step is MAKE_MODEL:  # trained with a one-slot run's threads: the model must not depend on JOBS
                added = {name: value for name, value in added.items() if name not in THREAD_VARIABLES}
            environment = {**base_environment, **added}
            warm = warm_start is not None and slot.cpu and same_environment(task.script, __file__)
            if parallel:
                log = log_dir / log_file_name(ready, task.label)
                print(f"==> started  {task.label} [{slot.name}]", flush=True)
                with open(log, "w", encoding="utf-8") as output:
                    output.write(f"$ {shlex.join(task.command)}{WARM_NOTE if warm else ''}\n")
                    output.flush()
                    process = warm_start.start(task.script, task.arguments, environment, output.fileno()) if warm \
                        else subprocess.Popen(task.command, stdout=output, stderr=subprocess.STDOUT,
                                              env=environment, start_new_session=True)
            else:
                log = None
                print(f"\n==> {task.label}", flush=True)
                process = warm_start.start(task.script, task.arguments, environment) if warm \
                    else subprocess.Popen(task.command, env=environment, start_new_session=True)
            running[ready] = (process, slot, time.monotonic(), log)
        if not running:
            break
        if parallel or len(running) > 1:
            time.sleep(0.2)
        for index in list(running):
            process, slot, started, log = running[index]
            status = process.wait() if not parallel else process.poll()
            if status is None:
                continue
            del running[index]
            free.append(slot)
            free.sort(key=pool.index)
            seconds = time.monotonic() - started
            task = tasks[index]
            if status != 0:
                failed.append((task, status, log))
                ledger("failed", task.label, seconds)
                print(f"==> failed   {task.label} (exit {status}, {seconds:.0f} s)", flush=True)
                continue
            finished.add(index)
            ledger("ran", task.label, seconds)
            if parallel:
                print(f"==> finished {task.label} ({seconds:.0f} s)", flush=True)
                if task.step.scope == "study":  # the report's headlines belong on the terminal
                    print("".join(log.read_text(errors="replace").splitlines(keepends=True)[1:]), end="")
            log_summary_to_wandb(task, study)
        if failed and not running:
            break
    if failed:
        for _, _, log in failed:
            if log is not None:
                tail = log.read_text(errors="replace").splitlines()[-15:]
                print(f"--- last lines of {log}:\n" + "\n".join(tail), file=sys.stderr)
        task, status, log = failed[0]
        where = f"; its log: {log}" if log else ""
        not_started = len(pending)
        unstarted = f" ({not_started} step(s) not started)" if not_started else ""
        raise StepFailedError(f"'{task.label}' failed (exit {status}){where}; fix the problem and re-run: finished "
                              f"steps are skipped{unstarted}", status)


class StepFailedError(Exception):
    """A step exited non-zero (its status is the pipeline's)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def print_plan(tasks: list[Task], pool: list[Slot]) -> None:
    """DRY_RUN: each task's wave and slot, and the steps that would be skipped."""
    placed = waves(tasks, len(pool))
    to_run = [index for index in range(len(tasks)) if index in placed]
    print(f"\n==> Plan: {len(to_run)} step(s) to run on {len(pool)} slot(s) ({', '.join(slot.name for slot in pool)}), "
          f"{len(tasks) - len(to_run)} finished (skipped)")
    for index in sorted(to_run, key=lambda index: placed[index]):
        wave, slot = placed[index]
        print(f"  wave {wave:>2}  {pool[slot].name:<12} {tasks[index].label}")
    for task in tasks:
        if task.done and not task.ran_earlier:
            print(f"  skipped         {task.label}: finished ({task.folder})")


def ledger_entries() -> list[list[str]]:
    """The run's ledger so far: [status, label, seconds] per line."""
    path = Path(os.environ.get("PIPELINE_LEDGER") or "/nonexistent")
    return [line.split("\t") for line in path.read_text().splitlines() if line] if path.is_file() else []


def print_summary(study: Study, elapsed: float) -> None:
    """What ran and what was skipped (from the ledger), and where each model's and comparison's results are."""
    entries = ledger_entries()
    ran = [f"{label} ({seconds} s)" for status, label, seconds in entries if status == "ran"]
    skipped = [label for status, label, _ in entries if status == "skipped"]
    print(f"\n==> Pipeline finished in {elapsed:.0f} s (PRESET={study.preset}, SEED={study.seed})")
    print(f"Ran {len(ran)} step(s):")
    for entry in ran:
        print(f"  - {entry}")
    print(f"Skipped {len(skipped)} finished step(s) (pass --force to redo them):")
    for entry in skipped:
        print(f"  - {entry}")
    print_folders(study)


def print_folders(study: Study) -> None:
    print("Results per model (<folder>/<step>/):")
    for model, labels in study.models.items():
        print(f"  {labels + ':':<40} {unit_folder((model,), study.output_root)}/")
    print("Results per comparison (<folder>/<step>/):")
    for label, model_a, model_b in study.comparisons:
        print(f"  {label + ':':<40} {unit_folder((model_a, model_b), study.output_root)}/")


def write_manifest(study: Study) -> None:
    """The comparisons of this seed, for the report (and for a SEEDS run's report over every seed), each with
    whether the attack steps run on its model B (an attacked model, or Filtered, their F condition)."""
    attacked = {*study.attacked, study.filtered}
    write_text(study.output_root / ".manifests" / f"seed{study.seed}.tsv",
               "".join(f"{label}\t{model_a}\t{model_b}\t{int(model_b in attacked)}\n"
                       for label, model_a, model_b in study.comparisons))


def run_stage(stage: str, force: bool) -> None:
    """`run --stage preflight`: Step 0 of Base; `run --stage study`: every selected step, then the summary."""
    study = study_from_environment()
    chosen = selected_steps()
    pool = slots(study.device)
    one_seed_of_several = bool(os.environ.get("PIPELINE_ONE_SEED"))
    dry_run = flag("DRY_RUN")
    if stage == "preflight":
        if chosen is not None and "evals" not in chosen:
            return
        only_base = Study({study.base: "Base"}, [], [], study.base, study.filtered, study.preset, study.seed,
                          study.output_root, study.device, study.dtype, study.max_samples,
                          study.baseline_min_forget_acc)
        tasks = plan_tasks(only_base, {"evals"}, force, include_report=False)
    else:
        earlier = {label for _, label, _ in ledger_entries()}  # Step 0 of Base, run or skipped before the pre-flight
        tasks = plan_tasks(study, chosen, force, include_report=not one_seed_of_several, ran_earlier=earlier)
    if dry_run:
        print_plan(tasks, pool)
        if stage == "study":
            print_folders(study)
        return
    started = float(os.environ.get("PIPELINE_STARTED", time.time()))
    if stage == "study":
        write_manifest(study)
        for task in tasks:
            if task.step.manifest:
                task.arguments += ["--manifest", str(study.output_root / ".manifests" / f"seed{study.seed}.tsv")]
    log_dir = study.output_root / ".logs" / f"{datetime.now():%Y%m%d-%H%M%S}-seed{study.seed}-{stage}"
    warm_start = None
    if flag("WARM_START") and any(slot.cpu for slot in pool) and \
            any(not task.done and same_environment(task.script, __file__) for task in tasks):
        warm_start = WarmStart()
        print(f"==> warm start: torch and transformers imported once ({warm_start.seconds:.1f} s); CPU steps start "
              "as forks of this process (WARM_START=0: each through `uv run`)", flush=True)
    try:
        run_tasks(tasks, study, pool, log_dir, warm_start)
    except StepFailedError as failure:
        print(f"error: {failure}", file=sys.stderr)
        sys.exit(failure.status)
    if stage == "study":
        print_summary(study, time.time() - started)


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------

def print_preset(preset_name: str, seed: int) -> None:
    """Shell lines that give each unset variable the preset's value."""
    preset = get_preset(preset_name, seed)
    for variable, field_name in SHELL_VARIABLES.items():
        print(f"{variable}=${{{variable}:-{shlex.quote(str(getattr(preset, field_name)))}}}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help="check every setting, flag, step name and model of the run")
    preset_parser = commands.add_parser("preset", help="print the preset's variables as shell assignments")
    preset_parser.add_argument("--preset", default="real")
    preset_parser.add_argument("--seed", type=int, default=42)
    run_parser = commands.add_parser("run", help="run (or, with DRY_RUN=1, print) the planned steps")
    run_parser.add_argument("--stage", choices=["preflight", "study"], required=True)
    run_parser.add_argument("--force", action="store_true", help="recompute finished steps")
    done_parser = commands.add_parser("done", help="exit 0 when a step is finished")
    done_parser.add_argument("--step", required=True, help="the step's output folder name, e.g. evals")
    done_parser.add_argument("--model", required=True, help="the model (model A of a comparison)")
    done_parser.add_argument("--model-b", default=None, help="model B, for a pairwise step")
    done_parser.add_argument("--output-root", default="outputs")
    preflight_parser = commands.add_parser("preflight", help="the baseline pre-flight check from Step 0's results")
    preflight_parser.add_argument("--model", required=True, help="the base model")
    preflight_parser.add_argument("--task", required=True, help="the forget task of Step 0, e.g. toy_forget_mcq")
    preflight_parser.add_argument("--threshold", type=float, required=True, help="minimum accuracy (0 disables)")
    preflight_parser.add_argument("--output-root", default="outputs")
    args = parser.parse_args()

    if args.command == "check":
        check_environment()
    elif args.command == "preset":
        print_preset(args.preset, args.seed)
    elif args.command == "run":
        run_stage(args.stage, args.force)
    elif args.command == "preflight":
        if args.threshold <= 0:
            print("pre-flight: disabled (BASELINE_MIN_FORGET_ACC=0)")
            return
        accuracy = step0_accuracy(args.model, args.task, args.output_root)
        if accuracy is None:
            sys.exit(STEP_0_MISSING)
        check_forget_baseline(args.model, accuracy, args.threshold, f"Step 0 {args.task}")
    else:
        try:
            step(args.step)
        except UnknownStepError as error:
            raise UserError(str(error)) from None
        models = (args.model,) if args.model_b is None else (args.model, args.model_b)
        sys.exit(0 if is_done(unit_folder(models, Path(args.output_root)) / args.step, models) else 1)


if __name__ == "__main__":
    run_cli(main)
