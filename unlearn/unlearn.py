# /// script
# requires-python = ">=3.10"
# dependencies = ["brittle", "peft>=0.13", "wandb>=0.18"]
#
# [tool.uv.sources]
# brittle = { path = "..", editable = true }
# ///
"""Make an unlearned model: base model + one of thirteen unlearning methods, then Step 0 evaluation.

    uv run unlearn/unlearn.py --method cb_lat                          # real preset, its defaults
    uv run unlearn/unlearn.py --method npo --preset toy --lr 3e-4       # the toy organism
    uv run unlearn/unlearn.py --method ga --preset toy-vlm              # the vision-language organism
    LR=3e-4 PRESET=toy uv run unlearn/unlearn.py --method npo           # the same: every flag has a variable
    ./unlearn/run_unlearn.sh npo                                        # the same, plus the organism if missing
    uv run unlearn/unlearn.py --list-methods table                      # the methods (docs/unlearning.md)
    uv run unlearn/unlearn.py --sweep-grid npo --preset toy             # the grid sweep_unlearn.sh runs

Every setting is also an environment variable, the flag in capitals (--retain-weight: RETAIN_WEIGHT); an
explicit flag wins, and a variable that looks like a misspelt setting (RETAIN_WIEGHT) is reported. The methods,
settings, defaults, validation rules and sweep grids are in brittle/catalogue.py.

`rapidun` (RapidIn/RapidUn influence-weighted unlearning) is LoRA gradient difference with per-text weights
from influence estimates (unlearn/influence_weights.py; ./unlearn/run_unlearn.sh rapidun computes them when
missing). --forget-weights / --retain-weights weight the per-text terms of *any* method, and --mix-ratio R:F
sets how many retain texts each step sees per forget text (default 1:1; rapidun 3:1).

Formulas: brittle/methods.py (one loss function per method). Shared loop: brittle/trainer.py.

A vision-language base model (its config says `model_type: llava`) is unlearned on `{image, question,
answer}` JSONL records (loss on the answer tokens; images relative to the file's folder) and evaluated by
multiple choice on pictures (brittle.vlm); methods whose loss acts on hidden states (rmu, cb, lat, cb_lat) or
on text-only influence weights (rapidun) refuse it. `--preset toy-vlm` is the VL organism (docs/multimodal.md).

The output folder encodes the base model, the method and its relevant hyperparameters, so runs never
overwrite each other:

    unlearned_models/<base model>__<method>__ep<epochs>_lr<lr>_bs<batch>_<method's own>[_<non-defaults>]
    e.g. unlearned_models/EleutherAI_deep-ignorance-unfiltered__cb_lat__ep1_lr1e-05_bs4_a100.0_sc20.0_le0.1_ls5_ly5-6-7

Method tags: rw retain weight, fw forget weight, b beta, a alpha, sc steering coeff, le LAT epsilon, ls
LAT steps, ly layers, wn weight-noise std, wr weight-distance lambda, aa ascent alpha, db descent beta,
mr mix ratio (3:1 -> mr3-1), lora LoRA rank (rapidun). Settings that differ from their (preset) default
are appended: ml max length, acc gradient accumulation, gc gradient clip, es eval split, st max steps,
wd weight decay, lora LoRA rank, la LoRA alpha, mr mix ratio; then d<6 hex digits> (a fingerprint of the
forget and retain texts, when they differ from the preset's files), w<6 hex digits> (of the per-text
weights, when some are given) and s<seed> (when not 42).

The folder is an ordinary Hugging Face model folder (merged weights even after LoRA) plus
`unlearn_run.json` (the completion marker: hyperparameters, held-out NLLs, timings), `evals/` (Step 0
on the preset's tasks, as experiment/eval.py writes it), `training_log.csv` and `training_curves.png`.
It appears atomically when everything succeeded, with `identity.json` (the base model's fingerprint,
the data's and weights' hashes, the hyperparameters, the environment). A finished configuration is
skipped before any model loads only when that record matches the request (otherwise one `note:` line
says what differs and it trains again); with --no-save, also when W&B already holds a finished run of
that name.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from brittle.catalogue import (
    ALWAYS_NAMED,
    DEFAULT_METHODS,
    DEFAULT_SEED,
    HYPERPARAMETERS,
    LORA_SHAPE,
    METHODS,
    NAMED_WHEN_CHANGED,
    SETTING,
    SETTINGS,
    MethodCard,
    check_method,
    check_values,
    environment_variables,
    method_table,
    model_settings,
    near_misses,
    parse_layer_ids,
    parse_lora_targets,
    parse_mix_ratio,
    sweep_grid,
)
from brittle.catalogue import method_defaults as catalogue_defaults
from brittle.cli import UserError, run_cli
from brittle.distributed import relaunch_if_requested
from brittle.identity import Identity, content_fingerprint, read_identity
from brittle.outputs import model_slug
from brittle.presets import Preset, get_preset
from brittle.sample_weights import (
    FORGET_WEIGHTS_FILE,
    RETAIN_WEIGHTS_FILE,
    default_weights_dir,
    read_sample_weights,
    weights_fingerprint,
)
from brittle.texts import check_disjoint, read_texts

RUN_RECORD = "unlearn_run.json"  # written last: its presence marks a finished run
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


# ---------------------------------------------------------------------------------------------------
# Folder names (torch-free: naming and skipping never import torch)
# ---------------------------------------------------------------------------------------------------


def method_defaults(preset: Preset, method: str) -> dict[str, Any]:
    """Every hyperparameter's default for `method` in `preset` (brittle.catalogue.method_defaults)."""
    return catalogue_defaults(preset.unlearn_defaults, method, preset.name)


def scientific(value: float) -> str:
    """The shortest exact scientific form: 1e-05, 5e-06, 1.5e-05 (the deep-ignorance spec's `lr1e-05`)."""
    for digits in range(16):
        text = f"{value:.{digits}e}"
        if float(text) == value:
            return text
    return repr(value)


def format_value(name: str, value: Any) -> str:
    """How a setting's value appears in a folder name."""
    if name == "lr":
        return scientific(value)
    if name == "layer_id":
        return "-".join(str(layer) for layer in parse_layer_ids(value))
    if name == "mix_ratio":
        return "-".join(map(str, parse_mix_ratio(value)))
    if name == "lora_targets":
        return "-".join(parse_lora_targets(value))
    return str(value)


def data_fingerprint(forget_data: str | Path, retain_data: str | Path) -> str:
    """Six hex digits of the forget and retain texts (a missing file counts as empty: it fails later)."""
    return content_fingerprint(*(path for path in (forget_data, retain_data) if Path(path).is_file()))


def uses_preset_data(settings: argparse.Namespace) -> bool:
    """True when the forget and retain texts are the preset's: the same contents (or, before the preset's
    files exist, the same paths)."""
    preset = get_preset(settings.preset, settings.seed)
    given, default = (settings.forget_data, settings.retain_data), (preset.forget_text, preset.retain_text)
    if all(Path(path).is_file() for path in default):
        return data_fingerprint(*given) == data_fingerprint(*default)
    return all(Path(path).resolve() == Path(other).resolve() for path, other in zip(given, default, strict=True))


def run_identity(args: argparse.Namespace) -> Identity:
    """What made a run: base model, data, sample weights, and the settings that change the model."""
    return Identity.of(
        models={"model": args.model},
        data={"forget": args.forget_data, "retain": args.retain_data, "forget_weights": args.forget_weights,
              "retain_weights": args.retain_weights},
        settings={"method": args.method, "preset": args.preset, "seed": args.seed, "dtype": args.dtype,
                  **model_settings({setting.name: getattr(args, setting.name) for setting in HYPERPARAMETERS})})


def run_name(model: str, method: str, settings: argparse.Namespace, defaults: dict[str, Any]) -> str:
    """`<base model slug>__<method>__<encoded hyperparameters>`: the unlearned model's folder name."""
    names = [*ALWAYS_NAMED, *METHODS[method].hyperparameters]
    names += [name for name in NAMED_WHEN_CHANGED if getattr(settings, name) != defaults[name] and name not in names
              and not (name in LORA_SHAPE and not settings.lora_rank)]
    parts = [f"{SETTING[name].tag}{format_value(name, getattr(settings, name))}" for name in names]
    weight_files = [path for path in (getattr(settings, "forget_weights", None), getattr(settings, "retain_weights",
                                                                                         None)) if path]
    if not uses_preset_data(settings):
        parts.append(f"d{data_fingerprint(settings.forget_data, settings.retain_data)}")
    if weight_files:
        parts.append(f"w{weights_fingerprint(*weight_files)}")
    if settings.seed != DEFAULT_SEED:
        parts.append(f"s{settings.seed}")
    return f"{model_slug(model)}__{method}__{'_'.join(parts)}"


# ---------------------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------------------


def parse_arguments(argv: list[str] | None = None, environment: dict[str, str] | None = None) -> argparse.Namespace:
    """The flags, then each unset setting from its environment variable (default: os.environ), then its default."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default=None, metavar="METHOD", help=f"one of: {', '.join(METHODS)}")
    parser.add_argument("--list-methods", nargs="?", const="default", choices=["default", "all", "table"],
                        help="print the default set of methods (one a line), all of them, or their Markdown table, "
                             "and exit")
    parser.add_argument("--sweep-grid", metavar="METHOD",
                        help="print the grid a sweep runs for METHOD under --preset, one VARIABLE=values line per "
                             "swept setting (learning rates first), and exit")
    groups = {
        "hyperparameters": parser.add_argument_group(
            "hyperparameters", "defaults are the real preset's; the toy preset and some methods set their own "
            "(brittle/catalogue.py), and an explicit flag always wins"),
        "runtime": parser.add_argument_group("runtime and outputs"),
    }
    for setting in SETTINGS:
        variable = " or ".join(filter(None, (setting.environment_variable, *setting.aliases)))
        where = f"; {variable}" if variable else ""
        flags = [setting.flag, *setting.flag_aliases]
        if setting.kind is bool:
            groups[setting.group].add_argument(*flags, dest=setting.name, action="store_true", default=None,
                                               help=f"{setting.help}{f' ({variable}=1)' if variable else ''}")
            continue
        default = "" if setting.default is None else f"default {setting.default}"
        groups[setting.group].add_argument(
            *flags, dest=setting.name, type=setting.kind, default=None, metavar=setting.name.upper(),
            choices=setting.choices or None, help=f"{setting.help} ({default}{where})".replace("(; ", "("))
    args = parser.parse_args(argv)
    read_environment(args, os.environ if environment is None else environment)
    if args.method is None and not (args.list_methods or args.sweep_grid):
        parser.error("the following arguments are required: --method")
    return args


def read_environment(args: argparse.Namespace, environment: dict[str, str]) -> None:
    """Set each setting that no flag set from its environment variable (RETAIN_WEIGHT=2), else its default."""
    for variable, setting in environment_variables().items():
        text = environment.get(variable, "")
        if getattr(args, setting.name) is None and text != "":
            setattr(args, setting.name, setting.parse(text, variable))
    for setting in SETTINGS:
        if getattr(args, setting.name) is None and setting.group == "runtime":
            setattr(args, setting.name, setting.default)


def report_near_misses(environment: dict[str, str]) -> None:
    """A note for each environment variable that looks like a misspelt setting (it is ignored)."""
    for variable, match in near_misses(environment):
        print(f"note: {variable} is not a setting of unlearn.py and is ignored; did you mean {match}?",
              file=sys.stderr)


def print_catalogue(args: argparse.Namespace) -> None:
    """--list-methods and --sweep-grid: what the shell scripts and docs read from the catalogue."""
    if args.list_methods == "table":
        print(method_table(), end="")
    elif args.list_methods:
        print("\n".join(DEFAULT_METHODS if args.list_methods == "default" else METHODS))
    if args.sweep_grid:
        for variable, values in sweep_grid(args.sweep_grid, args.preset):
            print(f"{variable}={' '.join(values)}")


def resolve_settings(args: argparse.Namespace, preset: Preset) -> tuple[argparse.Namespace, dict[str, Any]]:
    """Fill every unset hyperparameter with the preset's default for the method and check the values."""
    check_method(args.method)
    defaults = method_defaults(preset, args.method)
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.model = args.model or preset.base
    args.forget_data = args.forget_data or preset.forget_text
    args.retain_data = args.retain_data or preset.retain_text
    args.layer_ids = parse_layer_ids(args.layer_id)
    args.layer_id = ",".join(map(str, args.layer_ids))
    args.mix_ratio = ":".join(map(str, parse_mix_ratio(args.mix_ratio)))
    args.lora_targets = ",".join(parse_lora_targets(args.lora_targets))
    if "sample_weights" in METHODS[args.method].needs:
        folder = default_weights_dir(args.model, args.forget_data)
        args.forget_weights = args.forget_weights or str(folder / FORGET_WEIGHTS_FILE)
        args.retain_weights = args.retain_weights or str(folder / RETAIN_WEIGHTS_FILE)
    check_settings(args)
    return args, defaults


def check_settings(args: argparse.Namespace) -> None:
    """Values that cannot work, as one-line errors before anything loads (the rules are in the catalogue)."""
    check_values(args.method, {setting.name: getattr(args, setting.name) for setting in HYPERPARAMETERS})
    if args.push_to_hub and args.no_save:
        raise UserError("--push-to-hub needs the weights; drop --no-save (NO_SAVE) to push a model")
    for what in ("forget", "retain"):  # read and checked now: a bad file fails before anything loads
        path = getattr(args, f"{what}_weights")
        if path:
            read_sample_weights(path, getattr(args, f"{what}_data"), what)


# ---------------------------------------------------------------------------------------------------
# Finished runs
# ---------------------------------------------------------------------------------------------------


def read_run_record(outdir: Path) -> dict | None:
    """The completion marker of a finished run in `outdir`, or None."""
    path = outdir / RUN_RECORD
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def has_weights(outdir: Path) -> bool:
    return any((outdir / name).exists() for name in WEIGHT_FILES)


def finished_run_satisfies(outdir: Path, args: argparse.Namespace, identity: Identity) -> bool:
    """True when the folder holds a finished run of this model, data and settings, with everything this
    request asks for."""
    record = read_run_record(outdir)
    if record is None:
        return False
    reasons = identity.differences(read_identity(outdir))
    if reasons:
        print(f"note: not reusing {outdir}: {'; '.join(reasons)}; training again", file=sys.stderr)
        return False
    if not args.no_save and not has_weights(outdir):
        print(f"note: {outdir} finished without weights (--no-save); training again to keep them", file=sys.stderr)
        return False
    if not args.no_eval and not record.get("evaluated"):
        print(f"note: {outdir} finished without evaluation (--no-eval); training again to evaluate it",
              file=sys.stderr)
        return False
    return True


def already_finished(outdir: Path, run: str, args: argparse.Namespace, identity: Identity) -> str | None:
    """Where a finished run of this configuration was found ("local" or "W&B"), or None."""
    if args.force:
        return None
    if finished_run_satisfies(outdir, args, identity):
        return "local"
    if args.no_save:  # W&B holds the results but never the weights
        from brittle.tracking import finished_wandb_run_exists

        if finished_wandb_run_exists(args.wandb_project, run):
            return "W&B"
    return None


# ---------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunPlan:
    """A named run: what the heavy part (brittle.unlearning) needs to know besides the arguments."""

    name: str
    outdir: Path
    card: MethodCard
    hyperparameters: dict[str, Any]
    identity: Identity
    record_file: str = RUN_RECORD


def main() -> None:
    process_start = time.perf_counter()
    # SIGTERM (parallel_sweep.sh stopping, a scheduler's kill) unwinds like Ctrl-C: no half-written folder.
    signal.signal(signal.SIGTERM, lambda _signal, _frame: sys.exit(143))
    report_near_misses(dict(os.environ))
    args = parse_arguments()
    if args.list_methods or args.sweep_grid:
        print_catalogue(args)
        return
    preset = get_preset(args.preset, args.seed)
    args, defaults = resolve_settings(args, preset)
    if args.preset != "real" and not Path(args.model).exists():  # the folder's name is the run's name
        if args.model != preset.base:
            raise UserError(f"model {args.model} not found: no such folder; check --model (MODEL / BASE)")
        build = ("`PRESET=toy ./experiment/pipeline.sh`" if args.preset == "toy" else
                 f"`uv run experiment/build_vlm_organism.py --seed {args.seed}`")
        raise UserError(f"{args.preset} base model {args.model} not found; build the organism with {build} "
                        f"(or run PRESET={args.preset} ./unlearn/run_unlearn.sh, which builds it)")
    run = run_name(args.model, args.method, args, defaults)
    outdir = Path(args.outdir) if args.outdir else Path(args.unlearned_root) / run
    if args.print_outdir:
        print(outdir)
        return
    from brittle.tracking import load_environment

    load_environment()
    args.wandb_project = args.wandb_project or os.environ.get("WANDB_PROJECT") or None
    identity = run_identity(args)
    found = already_finished(outdir, run, args, identity)
    if args.check_only:
        sys.exit(0 if found else 1)
    if found:
        print(f"skipped: {args.method} run {run} already finished ({found}: {outdir}); pass --force to redo it")
        if args.push_to_hub:
            push_to_hub(outdir, args)
        return
    if args.push_to_hub:
        check_hub_token()

    # Missing, empty or overlapping data files fail now, in a second, rather than after the heavy imports.
    from brittle.vlm import check_disjoint_pictures, is_vision_language_checkpoint, read_vl_records

    if is_vision_language_checkpoint(args.model):  # its config says so (model_type llava): image records
        check_vision_language_method(args.method, args.model)
        check_disjoint_pictures(read_vl_records(args.forget_data, "forget data"),
                                read_vl_records(args.retain_data, "retain data"))
    else:
        check_disjoint(read_texts(args.forget_data, what="forget data"),
                       read_texts(args.retain_data, what="retain data"))

    # NUM_PROCESSES > 1 or ACCELERATE_CONFIG: this very command again, under `accelerate launch`.
    relaunch_if_requested()

    # Only now the heavy imports: torch, transformers, lm-eval (tens of seconds on a busy machine).
    from brittle.unlearning import run_unlearning

    hyperparameters = {setting.name: getattr(args, setting.name) for setting in HYPERPARAMETERS}
    run_unlearning(args, RunPlan(run, outdir, METHODS[args.method], hyperparameters, identity), preset,
                   process_start)
    if args.push_to_hub:
        push_to_hub(outdir, args)


def check_vision_language_method(method: str, model: str) -> None:
    """A `UserError` when `method`'s loss does not apply unchanged to a vision-language model's language side."""
    reason = METHODS[method].not_for_vision_language
    if reason:
        usable = ", ".join(name for name, card in METHODS.items() if not card.not_for_vision_language)
        raise UserError(f"{method} cannot unlearn the vision-language model {model}: it {reason}; use one of: {usable}")


def check_hub_token() -> None:
    """--push-to-hub needs a Hugging Face token; say so before training, not after."""
    from huggingface_hub import get_token

    if not get_token():
        raise UserError("--push-to-hub needs a Hugging Face token: set HF_TOKEN in .env (or `hf auth login`)")


def push_to_hub(outdir: Path, args: argparse.Namespace) -> None:
    """Upload the finished folder to the hub (default repository: <user>/<base model>__<method>)."""
    from huggingface_hub import HfApi

    from brittle.outputs import write_json

    record = read_run_record(outdir) or {}
    api = HfApi()
    repo = args.hub_repo or f"{api.whoami()['name']}/{model_slug(args.model)}__{args.method}"
    if record.get("pushed_to") == repo and not args.force:
        print(f"skipped: {outdir} is already on the hub as {repo}")
        return
    api.create_repo(repo, exist_ok=True)
    api.upload_folder(folder_path=str(outdir), repo_id=repo, commit_message=f"Unlearned model {outdir.name}")
    write_json(outdir / RUN_RECORD, {**record, "pushed_to": repo})
    print(f"pushed {outdir} -> https://huggingface.co/{repo}")


if __name__ == "__main__":
    run_cli(main)
