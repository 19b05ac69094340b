# /// script
# requires-python = ">=3.10"
# dependencies = ["brittle", "peft>=0.13", "wandb>=0.18"]
#
# [tool.uv.sources]
# brittle = { path = "..", editable = true }
# ///
"""Make an unlearned model: base model + one of twelve unlearning methods, then Step 0 evaluation.

    uv run unlearn/unlearn.py --method cb_lat                          # real preset, seed defaults
    uv run unlearn/unlearn.py --method npo --preset toy --lr 3e-4       # the toy organism
    ./unlearn/run_unlearn.sh npo                                        # the same, driven by env vars

| method        | kind             | key hyperparameters                          | needs                          |
|---------------|------------------|----------------------------------------------|--------------------------------|
| `ga_simple`   | loss             | -                                            | forget text                    |
| `ga`          | loss             | --retain-weight                              | forget + retain text           |
| `grad_diff`   | loss             | --forget-weight                              | forget + retain text           |
| `dpo`         | loss             | --beta                                       | reference log-probs (cached)   |
| `npo`         | loss             | --beta, --retain-weight                      | reference log-probs (cached)   |
| `simnpo`      | loss             | --beta, --retain-weight                      | -                              |
| `rmu`         | activation space | --alpha, --steering-coeff, --layer-id        | retain activations (cached)    |
| `cb`          | activation space | --alpha, --steering-coeff, --layer-id        | retain activations (cached)    |
| `lat`         | activation space | --retain-weight, --lat-eps, --lat-steps, --layer-id | PGD adversary            |
| `cb_lat`      | activation space | --alpha, --steering-coeff, --lat-eps, --lat-steps, --layer-id | both           |
| `wt_dist`     | parameter space  | --wt-noise-std                               | full weights (no LoRA)         |
| `wt_dist_reg` | parameter space  | --wt-reg-lambda                              | full weights (no LoRA)         |
| `rapidun`     | loss, weighted   | --ascent-alpha, --descent-beta, --mix-ratio  | per-text weights, LoRA         |

`rapidun` (seed 003) is LoRA gradient difference with per-text weights from RapidIn-style influence
estimates (unlearn/influence_weights.py; ./unlearn/run_unlearn.sh rapidun computes them when missing).
--forget-weights / --retain-weights weight the per-text terms of *any* method, and --mix-ratio R:F sets
how many retain texts each step sees per forget text (default 1:1; rapidun 3:1).

Formulas: brittle/methods.py (one loss function per method). Shared loop: brittle/trainer.py.

The output folder encodes the base model, the method and its relevant hyperparameters, so runs never
overwrite each other:

    unlearned_models/<base model>__<method>__ep<epochs>_lr<lr>_bs<batch>_<method's own>[_<non-defaults>]
    e.g. unlearned_models/EleutherAI_deep-ignorance-unfiltered__cb_lat__ep1_lr1e-05_bs4_a100.0_sc20.0_le0.1_ls5_ly5-6-7

Method tags: rw retain weight, fw forget weight, b beta, a alpha, sc steering coeff, le LAT epsilon, ls
LAT steps, ly layers, wn weight-noise std, wr weight-distance lambda, aa ascent alpha, db descent beta,
mr mix ratio (3:1 -> mr3-1), lora LoRA rank (rapidun). Settings that differ from their (preset) default
are appended: ml max length, acc gradient accumulation, gc gradient clip, es eval split, st max steps,
wd weight decay, lora LoRA rank, la LoRA alpha, mr mix ratio; then w<6 hex digits> (a fingerprint of the
per-text weights, when some are given) and s<seed> (when not 42).

The folder is an ordinary Hugging Face model folder (merged weights even after LoRA) plus
`unlearn_run.json` (the completion marker: hyperparameters, held-out NLLs, timings), `evals/` (Step 0
on the preset's tasks, as experiment/eval.py writes it), `training_log.csv` and `training_curves.png`.
It appears atomically when everything succeeded; a finished configuration is skipped before any model
loads (and, with --no-save, also when W&B already holds a finished run of that name).
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

from brittle.cli import UserError, add_attention_argument, run_cli
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
# The methods and their hyperparameters (torch-free: naming and skipping never import torch)
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MethodCard:
    """What a method needs and which of its hyperparameters name its output folder."""

    kind: str  # "loss", "activation" or "parameter"
    hyperparameters: tuple[str, ...]  # encoded in the folder name, in this order
    needs: frozenset[str] = frozenset()  # what the trainer prepares before the first step
    lora: bool = True  # False: the method works on the weights themselves
    description: str = ""


def card(kind: str, hyperparameters: tuple[str, ...], needs: tuple[str, ...] = (), lora: bool = True,
         description: str = "") -> MethodCard:
    return MethodCard(kind, hyperparameters, frozenset(needs), lora, description)


METHODS: dict[str, MethodCard] = {
    "ga_simple": card("loss", (), description="pure gradient ascent on forget text"),
    "ga": card("loss", ("retain_weight",), description="gradient ascent on forget + descent on retain"),
    "grad_diff": card("loss", ("forget_weight",), description="retain NLL − w · forget NLL"),
    "dpo": card("loss", ("beta",), ("reference_log_probs",), description="DPO: retain chosen, forget rejected"),
    "npo": card("loss", ("beta", "retain_weight"), ("reference_log_probs",),
                description="negative preference optimisation + retain NLL"),
    "simnpo": card("loss", ("beta", "retain_weight"), description="reference-free NPO + retain NLL"),
    "rmu": card("activation", ("alpha", "steering_coeff", "layer_id"), ("random_directions", "retain_activations"),
                description="MSE of forget activations to a random direction"),
    "cb": card("activation", ("alpha", "steering_coeff", "layer_id"), ("random_directions", "retain_activations"),
               description="circuit breakers: cosine rerouting to a random direction"),
    "lat": card("activation", ("retain_weight", "lat_eps", "lat_steps", "layer_id"), ("adversary",),
                description="latent adversarial training: GA under a PGD perturbation"),
    "cb_lat": card("activation", ("alpha", "steering_coeff", "lat_eps", "lat_steps", "layer_id"),
                   ("random_directions", "retain_activations", "adversary"),
                   description="circuit breakers under a PGD perturbation"),
    "wt_dist": card("parameter", ("wt_noise_std",), ("weight_noise",), lora=False,
                    description="Gaussian noise on all weights, then retain fine-tuning"),
    "wt_dist_reg": card("parameter", ("wt_reg_lambda",), ("pretrained_weights",), lora=False,
                        description="retain NLL − λ · squared distance from the pretrained weights"),
    "rapidun": card("loss", ("ascent_alpha", "descent_beta", "mix_ratio", "lora_rank"), ("sample_weights",),
                    description="influence-weighted LoRA ascent on forget + descent on retain (RapidUn)"),
}


@dataclass(frozen=True)
class Setting:
    """One tunable flag: its seed default, its tag in folder names, its shell variable."""

    name: str  # argparse destination and preset key, e.g. "retain_weight"
    kind: type  # float, int or str
    default: Any  # the seed's default (the real preset's)
    help: str
    tag: str = ""  # "rw" -> "..._rw1.0"; "" = never in the folder name

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def variable(self) -> str:
        """The run_unlearn.sh environment variable that sets it (e.g. RETAIN_WEIGHT)."""
        return self.name.upper()


SETTINGS: tuple[Setting, ...] = (
    # Shared by every method, always in the folder name.
    Setting("epochs", int, 1, "passes over the forget training texts", "ep"),
    Setting("lr", float, 1e-5, "peak learning rate of AdamW (cosine annealing to 0)", "lr"),
    Setting("batch_size", int, 4, "texts per micro-batch (forget and retain each)", "bs"),
    # Method hyperparameters, in the folder name of the methods that use them.
    Setting("retain_weight", float, 1.0, "weight of the retain NLL (ga, npo, simnpo, lat)", "rw"),
    Setting("forget_weight", float, 1.0, "weight w of the forget ascent (grad_diff)", "fw"),
    Setting("beta", float, 0.1, "inverse temperature β (dpo, npo, simnpo)", "b"),
    Setting("alpha", float, 100.0, "retain weight α of the representation loss (rmu, cb, cb_lat)", "a"),
    Setting("steering_coeff", float, 20.0, "scale c of the random target direction (rmu, cb, cb_lat)", "sc"),
    Setting("lat_eps", float, 0.1, "L∞ budget ε of LAT's perturbation (lat, cb_lat)", "le"),
    Setting("lat_steps", int, 5, "PGD steps of LAT's inner loop (lat, cb_lat)", "ls"),
    Setting("layer_id", str, "5,6,7", "target decoder layers, 0-based, comma-separated (rmu, cb, lat, cb_lat)", "ly"),
    Setting("wt_noise_std", float, 0.02, "std σ of the Gaussian weight noise (wt_dist)", "wn"),
    Setting("wt_reg_lambda", float, 0.1, "weight λ of the squared distance from θ_pre (wt_dist_reg)", "wr"),
    Setting("ascent_alpha", float, 1.0, "weight of the weighted forget ascent (rapidun)", "aa"),
    Setting("descent_beta", float, 0.5, "weight of the weighted retain descent (rapidun)", "db"),
    Setting("mix_ratio", str, "1:1", "retain:forget texts per step, R:F (rapidun's default 3:1)", "mr"),
    # Loop settings, in the folder name only when they differ from their default.
    Setting("max_length", int, 512, "tokens per text (longer texts are truncated)", "ml"),
    Setting("grad_accum_steps", int, 1, "micro-batches per optimizer step", "acc"),
    Setting("grad_clip", float, 1.0, "gradient-norm clipping (0 = off)", "gc"),
    Setting("eval_split", float, 0.1, "fraction of forget/retain texts held out for NLL reporting (0 = none)", "es"),
    Setting("max_steps", int, 0, "stop after this many optimizer steps (0 = all epochs)", "st"),
    Setting("weight_decay", float, 0.0, "AdamW weight decay", "wd"),
    Setting("lora_rank", int, 0, "train LoRA adapters of this rank instead of all weights (0 = full)", "lora"),
    Setting("lora_alpha", float, 0.0, "LoRA scaling alpha (0 = twice the rank)", "la"),
    # Reporting only: never change the model.
    Setting("eval_interval", int, 0, "held-out NLL every N optimizer steps (0 = only before and after)"),
    Setting("eval_batch_size", int, 32, "lm-eval batch size of the Step 0 evaluation"),
    Setting("threads", int, 0, "torch CPU threads (0 = torch's choice; 1 is fastest for tiny models on busy CPUs)"),
)
SETTING = {setting.name: setting for setting in SETTINGS}
ALWAYS_NAMED = ("epochs", "lr", "batch_size")
NAMED_WHEN_CHANGED = ("max_length", "grad_accum_steps", "grad_clip", "eval_split", "max_steps", "weight_decay",
                      "lora_rank", "lora_alpha", "mix_ratio")
# Seed defaults that belong to one method (seed 003's RapidUn configuration), under the presets' own.
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "rapidun": {"lora_rank": 16, "lora_alpha": 16.0, "lr": 6e-5, "epochs": 2, "batch_size": 1, "mix_ratio": "3:1"},
}
DEFAULT_SEED = 42


def method_defaults(preset: Preset, method: str) -> dict[str, Any]:
    """Every setting's default for `method` in `preset`: the seed's (shared, then the method's own), then the
    preset's "all", then the preset's for the method."""
    overrides = {**METHOD_DEFAULTS.get(method, {}), **preset.unlearn_defaults.get("all", {}),
                 **preset.unlearn_defaults.get(method, {})}
    unknown = set(overrides) - set(SETTING)
    if unknown:
        raise UserError(f"preset {preset.name} sets unknown unlearning defaults {sorted(unknown)}")
    return {setting.name: setting.kind(overrides.get(setting.name, setting.default)) for setting in SETTINGS}


def parse_layer_ids(text: str) -> list[int]:
    """'5,6,7' -> [5, 6, 7] (sorted, unique); a `UserError` for anything else."""
    try:
        layer_ids = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise UserError(f"--layer-id must be comma-separated layer numbers such as 5,6,7, got {text!r}") from None
    if not layer_ids or layer_ids[0] < 0:
        raise UserError(f"--layer-id must list one or more layers numbered from 0, got {text!r}")
    return layer_ids


def parse_mix_ratio(text: str) -> tuple[int, int]:
    """'3:1' -> (3, 1): retain texts and forget texts per step, both positive integers."""
    retain, separator, forget = text.partition(":")
    try:
        ratio = (int(retain), int(forget))
    except ValueError:
        ratio = (0, 0)
    if not separator or min(ratio) < 1:
        raise UserError(f"--mix-ratio must be R:F, retain:forget texts per step as two positive integers such as "
                        f"3:1, got {text!r}")
    return ratio


def scientific(value: float) -> str:
    """The shortest exact scientific form: 1e-05, 5e-06, 1.5e-05 (the seed's `lr1e-05`)."""
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
    return str(value)


def run_name(model: str, method: str, settings: argparse.Namespace, defaults: dict[str, Any]) -> str:
    """`<base model slug>__<method>__<encoded hyperparameters>`: the unlearned model's folder name."""
    names = [*ALWAYS_NAMED, *METHODS[method].hyperparameters]
    names += [name for name in NAMED_WHEN_CHANGED if getattr(settings, name) != defaults[name] and name not in names]
    parts = [f"{SETTING[name].tag}{format_value(name, getattr(settings, name))}" for name in names]
    weight_files = [path for path in (getattr(settings, "forget_weights", None), getattr(settings, "retain_weights",
                                                                                         None)) if path]
    if weight_files:
        parts.append(f"w{weights_fingerprint(*weight_files)}")
    if settings.seed != DEFAULT_SEED:
        parts.append(f"s{settings.seed}")
    return f"{model_slug(model)}__{method}__{'_'.join(parts)}"


# ---------------------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------------------


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", required=True, metavar="METHOD",
                        help=f"one of: {', '.join(METHODS)}")
    parser.add_argument("--preset", default="real", choices=["real", "toy"],
                        help="which world: base model, data, eval tasks and hyperparameter defaults (default real)")
    parser.add_argument("--model", default=None, help="base model, hub id or local folder (default: the preset's base)")
    parser.add_argument("--forget-data", default=None, help="forget texts, one per line (default: the preset's)")
    parser.add_argument("--retain-data", default=None, help="retain texts, one per line (default: the preset's)")
    parser.add_argument("--forget-weights", default=None,
                        help="per-text weights of the forget texts, JSONL (unlearn/influence_weights.py); rapidun's "
                             "default: <forget data folder>/influence_weights/<model>/forget_weights.jsonl")
    parser.add_argument("--retain-weights", default=None, help="per-text weights of the retain texts (likewise)")
    hyperparameters = parser.add_argument_group(
        "hyperparameters", "defaults are the seed's; the toy preset sets its own (brittle/presets.py), and an "
        "explicit flag always wins. Shell variable of each: the flag in capitals (--retain-weight: RETAIN_WEIGHT)")
    for setting in SETTINGS:
        hyperparameters.add_argument(setting.flag, type=setting.kind, default=None, metavar=setting.name.upper(),
                                     help=f"{setting.help} (seed default {setting.default})")
    runtime = parser.add_argument_group("runtime and outputs")
    runtime.add_argument("--device", default="auto",
                         help="auto (accelerate places the model on the visible GPUs; else MPS, else CPU), cuda, "
                              "cuda:N, mps or cpu")
    runtime.add_argument("--dtype", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                         help="compute dtype (autocast); auto = bf16 on CUDA, fp16 on MPS, fp32 on CPU. Trainable "
                              "weights and AdamW state are always fp32, frozen weights stay in the checkpoint's dtype")
    runtime.add_argument("--save-dtype", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                         help="dtype of the saved weights (SAVE_DTYPE); auto = the dtype the base checkpoint is "
                              "stored in (bf16 for the real models: updates below bf16's resolution, ~w/256, are "
                              "rounded away on saving); fp32 keeps every bit of ΔW at twice the disk space")
    add_attention_argument(runtime)  # --attn-implementation (ATTN_IMPLEMENTATION)
    runtime.add_argument("--seed", type=int, default=DEFAULT_SEED,
                         help="seed of the data split, batch order, random targets and noise (default 42)")
    runtime.add_argument("--gradient-checkpointing", default="auto", choices=["auto", "on", "off"],
                         help="recompute activations in the backward pass to save memory (auto = on CUDA only)")
    runtime.add_argument("--outdir", default=None, help="output folder (default: <unlearned-root>/<run name>)")
    runtime.add_argument("--unlearned-root", default="unlearned_models",
                         help="where unlearned model folders go (default unlearned_models/)")
    runtime.add_argument("--no-eval", action="store_true", help="skip the Step 0 evaluation after training")
    runtime.add_argument("--no-save", action="store_true",
                         help="do not keep the weights (results, config and logs are kept; for sweeps)")
    runtime.add_argument("--push-to-hub", action="store_true",
                         help="upload the finished folder to the Hugging Face hub")
    runtime.add_argument("--hub-repo", default=None,
                         help="hub repository for --push-to-hub (default <your user>/<base model>__<method>)")
    runtime.add_argument("--wandb-project", default=None,
                         help="W&B project for logging and the finished-run check (default $WANDB_PROJECT)")
    runtime.add_argument("--force", action="store_true", help="train even if this configuration already finished")
    runtime.add_argument("--print-outdir", action="store_true",
                         help="print the output folder and exit (loads nothing, trains nothing)")
    runtime.add_argument("--check-only", action="store_true",
                         help="exit 0 if this configuration already finished (locally, or on W&B with --no-save), "
                              "1 otherwise; loads nothing")
    return parser.parse_args(argv)


def resolve_settings(args: argparse.Namespace, preset: Preset) -> tuple[argparse.Namespace, dict[str, Any]]:
    """Fill every unset hyperparameter with the preset's default for the method and check the values."""
    if args.method not in METHODS:
        raise UserError(f"unknown method {args.method!r}; choose one of: {', '.join(METHODS)}")
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
    if "sample_weights" in METHODS[args.method].needs:
        folder = default_weights_dir(args.model, args.forget_data)
        args.forget_weights = args.forget_weights or str(folder / FORGET_WEIGHTS_FILE)
        args.retain_weights = args.retain_weights or str(folder / RETAIN_WEIGHTS_FILE)
    check_settings(args)
    return args, defaults


def check_settings(args: argparse.Namespace) -> None:
    """Values that cannot work, as one-line errors before anything loads."""
    card = METHODS[args.method]
    if args.method == "rapidun" and not args.lora_rank:
        raise UserError("rapidun trains LoRA adapters: --lora-rank (LORA_RANK) must be at least 1 (seed default 16)")
    if args.lora_rank and not card.lora:
        raise UserError(f"{args.method} cannot use LoRA (--lora-rank / LORA_RANK={args.lora_rank}): it works on the "
                        "weights themselves and needs full-parameter training; drop --lora-rank for this method")
    positive = {"epochs": args.epochs, "batch_size": args.batch_size, "grad_accum_steps": args.grad_accum_steps,
                "lr": args.lr, "eval_batch_size": args.eval_batch_size}
    if "adversary" in card.needs:
        positive["lat_steps"] = args.lat_steps
    for name, value in positive.items():
        if value <= 0:
            raise UserError(f"{SETTING[name].flag} must be positive, got {value}")
    non_negative = ("lat_eps", "wt_noise_std", "grad_clip", "max_steps", "weight_decay", "lora_rank", "lora_alpha",
                    "eval_interval", "beta", "retain_weight", "forget_weight", "alpha", "ascent_alpha",
                    "descent_beta")
    for name in non_negative:
        if getattr(args, name) < 0:
            raise UserError(f"{SETTING[name].flag} must not be negative, got {getattr(args, name)}")
    if args.method in ("dpo", "npo", "simnpo") and args.beta == 0:
        raise UserError(f"--beta must be positive for {args.method} (it divides the loss), got 0")
    if not 0 <= args.eval_split < 1:
        raise UserError(f"--eval-split must be in [0, 1), got {args.eval_split}")
    if args.max_length < 2:
        raise UserError(f"--max-length must be at least 2 tokens, got {args.max_length}")
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


def finished_run_satisfies(outdir: Path, args: argparse.Namespace) -> bool:
    """True when the folder holds a finished run that has everything this request asks for."""
    record = read_run_record(outdir)
    if record is None:
        return False
    if not args.no_save and not has_weights(outdir):
        print(f"note: {outdir} finished without weights (--no-save); training again to keep them", file=sys.stderr)
        return False
    if not args.no_eval and not record.get("evaluated"):
        print(f"note: {outdir} finished without evaluation (--no-eval); training again to evaluate it",
              file=sys.stderr)
        return False
    return True


def already_finished(outdir: Path, run: str, args: argparse.Namespace) -> str | None:
    """Where a finished run of this configuration was found ("local" or "W&B"), or None."""
    if args.force:
        return None
    if finished_run_satisfies(outdir, args):
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
    record_file: str = RUN_RECORD


def main() -> None:
    process_start = time.perf_counter()
    # SIGTERM (parallel_sweep.sh stopping, a scheduler's kill) unwinds like Ctrl-C: no half-written folder.
    signal.signal(signal.SIGTERM, lambda _signal, _frame: sys.exit(143))
    args = parse_arguments()
    preset = get_preset(args.preset, args.seed)
    args, defaults = resolve_settings(args, preset)
    if args.preset == "toy" and not Path(args.model).exists():  # the folder's name is the run's name
        if args.model != preset.base:
            raise UserError(f"model {args.model} not found: no such folder; check --model (MODEL / BASE)")
        raise UserError(f"toy base model {args.model} not found; build the organism with "
                        "`PRESET=toy ./experiment/pipeline.sh` (or run ./unlearn/run_unlearn.sh, which builds it)")
    run = run_name(args.model, args.method, args, defaults)
    outdir = Path(args.outdir) if args.outdir else Path(args.unlearned_root) / run
    if args.print_outdir:
        print(outdir)
        return
    from brittle.tracking import load_environment

    load_environment()
    args.wandb_project = args.wandb_project or os.environ.get("WANDB_PROJECT") or None
    found = already_finished(outdir, run, args)
    if args.check_only:
        sys.exit(0 if found else 1)
    if found:
        print(f"skipped: {args.method} run {run} already finished ({found}: {outdir}); pass --force to redo it")
        if args.push_to_hub:
            push_to_hub(outdir, args)
        return
    if args.push_to_hub:
        check_hub_token()

    # Missing, empty or overlapping text files fail now, in a second, rather than after the heavy imports.
    check_disjoint(read_texts(args.forget_data, what="forget data"), read_texts(args.retain_data, what="retain data"))

    # Only now the heavy imports: torch, transformers, lm-eval (tens of seconds on a busy machine).
    from brittle.unlearning import run_unlearning

    hyperparameters = {setting.name: getattr(args, setting.name) for setting in SETTINGS}
    run_unlearning(args, RunPlan(run, outdir, METHODS[args.method], hyperparameters), preset, process_start)
    if args.push_to_hub:
        push_to_hub(outdir, args)


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
