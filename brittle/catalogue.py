"""The unlearning methods and settings, in one place that every script, test and page reads.

A *method card* says what a method is (its kind and one-line description), which of its
hyperparameters name its output folder, what the trainer prepares for it, whether it may use LoRA,
which values must be positive for it, its defaults (for the real models and for the toy organism), its
sweep grid and whether it belongs to the default set of the deep-ignorance study's twelve methods.
A *setting* is one flag of `unlearn/unlearn.py`: its type, default, help, tag in folder names and the
environment variable that sets it. Everything else is derived:

    uv run unlearn/unlearn.py --list-methods            # the default set, one name a line (for shell loops)
    uv run unlearn/unlearn.py --list-methods all        # every method
    uv run unlearn/unlearn.py --list-methods table      # the Markdown table of docs/unlearning.md
    uv run unlearn/unlearn.py --sweep-grid npo --preset toy   # the grid sweep_unlearn.sh runs for npo

A new method is its loss in `brittle/methods.py`, its card here and its test (docs/extending.md); a new
setting is one `Setting` line below. This module imports neither torch nor transformers, so naming a
run, skipping a finished one and listing methods take a fraction of a second.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from brittle.cli import UserError

# ---------------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------------

SWITCH_ON = ("1", "true", "yes")
SWITCH_OFF = ("0", "false", "no")


@dataclass(frozen=True)
class Setting:
    """One flag of unlearn.py, defined once: type, default, help, folder-name tag and environment variable.

    `kind` is `float`, `int`, `str` or `bool` (a switch: `--no-save`, `NO_SAVE=1`). Settings in the
    "hyperparameters" group are recorded in `unlearn_run.json`; `tag` puts them into folder names ("rw" ->
    `..._rw1.0`, "" = never). `minimum` is a rule every method obeys: "positive" or "non_negative".
    `variable` is the environment variable that sets it (default: the name in capitals; "" = none), and
    `aliases` are other variables accepted for it (BASE for MODEL), `flag_aliases` other flags.
    """

    name: str  # argparse destination and preset key, e.g. "retain_weight"
    kind: type
    default: Any  # the real preset's default (the deep-ignorance study's)
    help: str
    tag: str = ""
    minimum: str = ""
    group: str = "hyperparameters"  # or "runtime": outputs, devices and logging, never the model
    choices: tuple[str, ...] = ()
    variable: str | None = None
    aliases: tuple[str, ...] = ()
    flag_aliases: tuple[str, ...] = ()  # other spellings of the flag (the deep-ignorance spec's names)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def environment_variable(self) -> str:
        """The environment variable that sets it (e.g. RETAIN_WEIGHT), or "" when none does."""
        return self.name.upper() if self.variable is None else self.variable

    def parse(self, text: str, source: str) -> Any:
        """`text` (from an environment variable) as this setting's type; a `UserError` naming `source`."""
        if self.kind is bool:
            if text.lower() in SWITCH_ON:
                return True
            if text.lower() in SWITCH_OFF:
                return False
            raise UserError(f"{source}={text!r} is not a switch value; use 1 (on) or 0 (off)")
        try:
            value = self.kind(text)
        except ValueError:
            raise UserError(f"{source}={text!r} is not a {self.kind.__name__}; fix the variable or unset it") from None
        if self.choices and value not in self.choices:
            raise UserError(f"{source}={text!r} is not one of: {', '.join(self.choices)}")
        return value


def _hyperparameter(name: str, kind: type, default: Any, help: str, tag: str = "", minimum: str = "") -> Setting:
    return Setting(name, kind, default, help, tag, minimum)


def _runtime(name: str, kind: type, default: Any, help: str, **options: Any) -> Setting:
    return Setting(name, kind, default, help, group="runtime", **options)


SETTINGS: tuple[Setting, ...] = (
    # Shared by every method, always in the folder name.
    _hyperparameter("epochs", int, 1, "passes over the forget training texts", "ep", "positive"),
    _hyperparameter("lr", float, 1e-5, "peak learning rate of AdamW (cosine annealing to 0)", "lr", "positive"),
    _hyperparameter("batch_size", int, 4, "texts per micro-batch (forget and retain each)", "bs", "positive"),
    # Method hyperparameters, in the folder name of the methods that use them.
    _hyperparameter("retain_weight", float, 1.0, "weight of the retain NLL (ga, npo, simnpo, lat)", "rw",
                    "non_negative"),
    _hyperparameter("forget_weight", float, 1.0, "weight w of the forget ascent (grad_diff)", "fw", "non_negative"),
    _hyperparameter("beta", float, 0.1, "inverse temperature β (dpo, npo, simnpo)", "b", "non_negative"),
    _hyperparameter("alpha", float, 100.0, "retain weight α of the representation loss (rmu, cb, cb_lat)", "a",
                    "non_negative"),
    _hyperparameter("steering_coeff", float, 20.0, "scale c of the random target direction (rmu, cb, cb_lat)", "sc"),
    _hyperparameter("lat_eps", float, 0.1, "L∞ budget ε of LAT's perturbation (lat, cb_lat)", "le", "non_negative"),
    _hyperparameter("lat_steps", int, 5, "PGD steps of LAT's inner loop (lat, cb_lat)", "ls"),
    _hyperparameter("layer_id", str, "5,6,7", "target decoder layers, 0-based, comma-separated (rmu, cb, lat, "
                    "cb_lat)", "ly"),
    _hyperparameter("wt_noise_std", float, 0.02, "std σ of the Gaussian weight noise (wt_dist)", "wn", "non_negative"),
    _hyperparameter("wt_reg_lambda", float, 0.1, "weight λ of the squared distance from θ_pre (wt_dist_reg)", "wr"),
    _hyperparameter("ascent_alpha", float, 1.0, "weight of the weighted forget ascent (rapidun)", "aa",
                    "non_negative"),
    _hyperparameter("descent_beta", float, 0.5, "weight of the weighted retain descent (rapidun)", "db",
                    "non_negative"),
    _hyperparameter("mix_ratio", str, "1:1", "retain:forget texts per step, R:F (rapidun's default 3:1)", "mr"),
    # Loop settings, in the folder name only when they differ from their default.
    _hyperparameter("max_length", int, 512, "tokens per text (longer texts are truncated)", "ml"),
    _hyperparameter("grad_accum_steps", int, 1, "micro-batches per optimizer step", "acc", "positive"),
    _hyperparameter("grad_clip", float, 1.0, "gradient-norm clipping (0 = off)", "gc", "non_negative"),
    _hyperparameter("eval_split", float, 0.1, "fraction of forget/retain texts held out for NLL reporting (0 = none)",
                    "es"),
    _hyperparameter("max_steps", int, 0, "stop after this many optimizer steps (0 = all epochs)", "st",
                    "non_negative"),
    _hyperparameter("weight_decay", float, 0.0, "AdamW weight decay", "wd", "non_negative"),
    _hyperparameter("lora_rank", int, 0, "train LoRA adapters of this rank instead of all weights (0 = full)", "lora",
                    "non_negative"),
    _hyperparameter("lora_alpha", float, 0.0, "LoRA scaling alpha (0 = twice the rank)", "la", "non_negative"),
    _hyperparameter("lora_targets", str, "all-linear", "modules that get LoRA adapters: all-linear (every linear "
                    "layer but the output layer), attention (PEFT's default for the architecture: the attention's "
                    "query and value projections, q_proj,v_proj in Llama, query_key_value in GPT-NeoX) or "
                    "comma-separated module names such as q_proj,v_proj; in a vision-language model only the "
                    "language model's (its vision tower and projector stay frozen)", "lt"),
    _hyperparameter("lora_dropout", float, 0.0, "dropout on the input of the LoRA adapters, in [0, 1)", "ld",
                    "non_negative"),
    _hyperparameter("warmup_steps", int, 0, "optimizer steps of linear learning-rate warm-up before the cosine "
                    "annealing", "wu", "non_negative"),
    # Reporting only: never change the model.
    _hyperparameter("eval_interval", int, 0, "held-out NLL every N optimizer steps (0 = only before and after)",
                    minimum="non_negative"),
    _hyperparameter("eval_batch_size", int, 32, "lm-eval batch size of the Step 0 evaluation", minimum="positive"),
    _hyperparameter("threads", int, 0, "torch CPU threads (0 = torch's choice; 1 is fastest for tiny models on busy "
                    "CPUs)"),
    # Runtime: which world, which files, which device, where outputs go. Never in the folder name.
    _runtime("preset", str, "real", "which world: base model, data, eval tasks and hyperparameter defaults",
             choices=("real", "toy", "toy-vlm")),
    _runtime("seed", int, 42, "seed of the data split, batch order, random targets and noise (in the folder name "
             "when not 42)"),
    _runtime("model", str, None, "base model, hub id or local folder (default: the preset's base)", aliases=("BASE",)),
    _runtime("forget_data", str, None, "forget texts, one per line (default: the preset's)"),
    _runtime("retain_data", str, None, "retain texts, one per line (default: the preset's)"),
    _runtime("forget_weights", str, None, "per-text weights of the forget texts, JSONL (unlearn/influence_weights.py);"
             " rapidun's default: <forget data folder>/influence_weights/<model>/forget_weights.jsonl"),
    _runtime("retain_weights", str, None, "per-text weights of the retain texts (likewise)"),
    _runtime("device", str, "auto", "auto (accelerate places the model on the visible GPUs; else MPS, else CPU), "
             "cuda, cuda:N, mps or cpu"),
    _runtime("dtype", str, "auto", "compute dtype (autocast); auto = bf16 on CUDA, fp16 on MPS, fp32 on CPU. "
             "Trainable weights and AdamW state are always fp32, frozen weights stay in the checkpoint's dtype",
             choices=("auto", "fp32", "fp16", "bf16")),
    _runtime("save_dtype", str, "auto", "dtype of the saved weights; auto = the dtype the base checkpoint is stored "
             "in (bf16 for the real models: updates below bf16's resolution, ~w/256, are rounded away on saving); "
             "fp32 keeps every bit of ΔW at twice the disk space", choices=("auto", "fp32", "fp16", "bf16")),
    _runtime("attn_implementation", str, "auto", "attention backend: auto = flash_attention_2 when the flash-attn "
             "package is installed and the GPU supports it (Ampere+), else sdpa (eager where the model has no sdpa)",
             choices=("auto", "sdpa", "flash_attention_2", "eager")),
    _runtime("gradient_checkpointing", str, "auto", "recompute activations in the backward pass to save memory "
             "(auto = on CUDA only)", choices=("auto", "on", "off")),
    _runtime("outdir", str, None, "output folder (default: <unlearned-root>/<run name>)", variable=""),
    _runtime("unlearned_root", str, "unlearned_models", "where unlearned model folders go"),
    _runtime("wandb_project", str, None, "W&B project for logging and the finished-run check (also read from .env)"),
    _runtime("hub_repo", str, None, "hub repository for --push-to-hub (default <your user>/<base model>__<method>)"),
    _runtime("no_eval", bool, False, "skip the Step 0 evaluation after training"),
    _runtime("no_save", bool, False, "do not keep the weights (results, config and logs are kept; for sweeps)"),
    _runtime("push_to_hub", bool, False, "upload the finished folder to the Hugging Face hub"),
    _runtime("force", bool, False, "train even if this configuration already finished"),
    _runtime("print_outdir", bool, False, "print the output folder and exit (loads nothing, trains nothing)"),
    _runtime("check_only", bool, False, "exit 0 if this configuration already finished (locally, or on W&B with "
             "--no-save), 1 otherwise; loads nothing", flag_aliases=("--check-wandb-only",)),
)
SETTING: dict[str, Setting] = {setting.name: setting for setting in SETTINGS}
HYPERPARAMETERS: tuple[Setting, ...] = tuple(setting for setting in SETTINGS if setting.group == "hyperparameters")
ALWAYS_NAMED = ("epochs", "lr", "batch_size")
NAMED_WHEN_CHANGED = ("max_length", "grad_accum_steps", "grad_clip", "eval_split", "max_steps", "weight_decay",
                      "lora_rank", "lora_alpha", "mix_ratio", "lora_targets", "lora_dropout", "warmup_steps")
# What the LoRA adapters look like: meaningless without --lora-rank, so then never named nor recorded.
LORA_SHAPE = ("lora_targets", "lora_dropout")
# Settings added after runs were first recorded: in a run's identity only when set away from their default, so that
# a run recorded before they existed (which trained as their defaults do) is still recognised as finished.
RECORDED_WHEN_SET = ("lora_targets", "lora_dropout", "warmup_steps")
# LoRA on a vision-language model as the seed's LLaVA-1.5 PEFT file has it (`target_modules: null`, PEFT's default
# for the architecture: the attention's query and value projections; dropout 0.05), held to the language model.
VISION_LANGUAGE_LORA: dict[str, Any] = {"lora_targets": "attention", "lora_dropout": 0.05}
DEFAULT_SEED: int = SETTING["seed"].default
# Variables that the unlearning shell scripts read themselves (so they are never "near misses").
SHELL_VARIABLES = ("WORKDIR", "METHODS", "LRS", "RUN_UNLEARN", "NUM_PROCESSES", "ACCELERATE_CONFIG")


def environment_variables() -> dict[str, Setting]:
    """Every environment variable that sets a setting (aliases included) -> its setting."""
    variables = {}
    for setting in SETTINGS:
        for variable in (setting.environment_variable, *setting.aliases):
            if variable:
                variables[variable] = setting
    return variables


def near_misses(environment: Mapping[str, str]) -> list[tuple[str, str]]:
    """(set variable, the setting variable it resembles) for each variable that looks like a misspelt setting.

    `RETAIN_WIEGHT=2` would otherwise be ignored without a word. Only capitalised names close to a known
    variable (difflib ratio >= 0.85) count, so PATH, HOME or OMP_NUM_THREADS are never reported.
    """
    known = environment_variables()
    misses = []
    for variable in sorted(environment):
        if variable in known or variable in SHELL_VARIABLES or not variable.isupper():
            continue
        match = difflib.get_close_matches(variable, known, n=1, cutoff=0.85)
        if match:
            misses.append((variable, match[0]))
    return misses


# ---------------------------------------------------------------------------------------------------
# Values that need more than a type
# ---------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------
# Methods
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MethodCard:
    """Everything about a method except its loss (which is `brittle.methods.LOSSES[name]`)."""

    kind: str  # "loss", "activation" or "parameter"
    hyperparameters: tuple[str, ...]  # encoded in the folder name, in this order
    description: str
    needs: frozenset[str] = frozenset()  # what the trainer prepares before the first step
    lora: bool = True  # False: the method works on the weights themselves (LoRA is refused)
    positive: Mapping[str, str] = field(default_factory=dict)  # setting -> why it must be > 0 for this method
    defaults: Mapping[str, Any] = field(default_factory=dict)  # the method's own real defaults
    toy: Mapping[str, Any] = field(default_factory=dict)  # the toy organism's defaults (over TOY_DEFAULTS)
    sweep: tuple[str, tuple[str, ...]] | None = None  # (setting, values) swept beside the learning rate
    toy_sweep: tuple[str, tuple[str, ...]] | None = None  # the organism's grid, when its scale differs
    default_set: bool = True  # one of the study's twelve, made by create_all_unlearning_models.sh
    not_for_vision_language: str = ""  # why the method cannot unlearn a vision-language model ("" = it can)

    @property
    def needs_text(self) -> str:
        return ", ".join(sorted(self.needs)) or "-"


def card(kind: str, hyperparameters: tuple[str, ...], description: str, needs: tuple[str, ...] = (),
         **fields: Any) -> MethodCard:
    """A `MethodCard` (needs as a tuple, for brevity)."""
    return MethodCard(kind, hyperparameters, description, frozenset(needs), **fields)


BETA_DIVIDES = {"beta": "divides the loss by it"}
LAT_STEPS = {"lat_steps": "runs that many PGD steps of its adversary"}
ALPHA_GRID = ("alpha", ("10.0", "100.0", "1000.0"))
# On the organism, α = 100 anchors the retain activations so hard that nothing is forgotten.
TOY_ALPHA_GRID = ("alpha", ("0.3", "1.0", "3.0"))
BETA_GRID = ("beta", ("0.05", "0.1", "0.5"))
ACTIVATION_NEEDS = ("random_directions", "retain_activations")
# On a vision-language model the decoder layers' hidden states hold the picture's features as well as the text,
# so these losses would steer the image tokens too: not the language-side loss they define.
ON_HIDDEN_STATES = ("acts on the hidden states of every token at --layer-id, and in a vision-language model those "
                    "include the picture's image tokens, so its loss does not apply unchanged to the language side")

METHODS: dict[str, MethodCard] = {
    "ga_simple": card("loss", (), "pure gradient ascent on forget text",
                      # No retain term: the step size alone decides how much of retain survives. No setting has
                      # margin: lr 1e-4 forgets nothing, 1.5e-4 stops at forget 0.46, 2e-4 forgets (0.38 on organism
                      # seeds 42 and 123) and costs retain accuracy (0.79, 0.66): docs/results.md has the sweep.
                      toy={"lr": 2e-4, "epochs": 2}),
    "ga": card("loss", ("retain_weight",), "gradient ascent on forget + descent on retain",
               sweep=("retain_weight", ("1.0", "2.0", "5.0"))),
    "grad_diff": card("loss", ("forget_weight",), "retain NLL − w · forget NLL",
                      sweep=("forget_weight", ("0.5", "1.0", "2.0"))),
    "dpo": card("loss", ("beta",), "DPO: retain chosen, forget rejected", ("reference_log_probs",),
                positive=BETA_DIVIDES, sweep=BETA_GRID),
    "npo": card("loss", ("beta", "retain_weight"), "negative preference optimisation + retain NLL",
                ("reference_log_probs",), positive=BETA_DIVIDES, toy={"lr": 2e-3}, sweep=BETA_GRID),
    "simnpo": card("loss", ("beta", "retain_weight"), "reference-free NPO + retain NLL", positive=BETA_DIVIDES,
                   sweep=BETA_GRID),
    "rmu": card("activation", ("alpha", "steering_coeff", "layer_id"),
                "MSE of forget activations to a random direction", ACTIVATION_NEEDS,
                toy={"lr": 3e-3, "alpha": 1.0}, sweep=ALPHA_GRID, toy_sweep=TOY_ALPHA_GRID,
                not_for_vision_language=ON_HIDDEN_STATES),
    "cb": card("activation", ("alpha", "steering_coeff", "layer_id"),
               "circuit breakers: cosine rerouting to a random direction", ACTIVATION_NEEDS,
               toy={"lr": 2e-3, "alpha": 1.0}, sweep=ALPHA_GRID, toy_sweep=TOY_ALPHA_GRID,
                not_for_vision_language=ON_HIDDEN_STATES),
    "lat": card("activation", ("retain_weight", "lat_eps", "lat_steps", "layer_id"),
                "latent adversarial training: GA under a PGD perturbation", ("adversary",), positive=LAT_STEPS,
                not_for_vision_language=ON_HIDDEN_STATES, sweep=("lat_eps", ("0.05", "0.1", "0.5"))),
    "cb_lat": card("activation", ("alpha", "steering_coeff", "lat_eps", "lat_steps", "layer_id"),
                   "circuit breakers under a PGD perturbation", (*ACTIVATION_NEEDS, "adversary"), positive=LAT_STEPS,
                   toy={"lr": 2e-3, "alpha": 1.0}, sweep=ALPHA_GRID, toy_sweep=TOY_ALPHA_GRID,
                not_for_vision_language=ON_HIDDEN_STATES),
    "wt_dist": card("parameter", ("wt_noise_std",), "Gaussian noise on all weights, then retain fine-tuning",
                    ("weight_noise",), lora=False,
                    # 0.02 is too little noise for weights of the organism's scale.
                    toy={"wt_noise_std": 0.1, "epochs": 2}, sweep=("wt_noise_std", ("0.01", "0.02", "0.05")),
                    toy_sweep=("wt_noise_std", ("0.05", "0.1", "0.2"))),
    "wt_dist_reg": card("parameter", ("wt_reg_lambda",),
                        "retain NLL − λ · squared distance from the pretrained weights", ("pretrained_weights",),
                        lora=False, toy={"wt_reg_lambda": 0.03}, sweep=("wt_reg_lambda", ("0.01", "0.1", "1.0")),
                        toy_sweep=("wt_reg_lambda", ("0.01", "0.03", "0.1"))),
    "rapidun": card("loss", ("ascent_alpha", "descent_beta", "mix_ratio", "lora_rank"),
                    "influence-weighted LoRA ascent on forget + descent on retain (RapidUn)", ("sample_weights",),
                    positive={"lora_rank": "trains LoRA adapters; its default rank is 16"},
                    # RapidUn's published configuration (the RapidIn/RapidUn influence-weighted unlearning paper).
                    defaults={"lora_rank": 16, "lora_alpha": 16.0, "lr": 6e-5, "epochs": 2, "batch_size": 1,
                              "mix_ratio": "3:1"},
                    # LoRA on a tiny model needs a larger step; 4 forget + 12 retain texts per step.
                    toy={"lr": 1e-3, "batch_size": 4}, sweep=("descent_beta", ("0.5", "1.0", "2.0")),
                    default_set=False,
                    not_for_vision_language="weights its texts by influence estimates that "
                    "unlearn/influence_weights.py computes on text only"),
}
DEFAULT_METHODS: tuple[str, ...] = tuple(name for name, method in METHODS.items() if method.default_set)

# The organism's defaults for every method (4 layers of width 128, texts of ~15 tokens): the real layers 5-7 do
# not exist and a learning rate of 1e-5 barely moves a model this small. One CPU thread: a model this small gains
# nothing from more, and on a shared CPU extra threads make each step ~8x slower. The cards' `toy` entries come
# on top (docs/results.md has what each reaches).
TOY_DEFAULTS: dict[str, Any] = {"layer_id": "1,2", "max_length": 64, "lr": 1e-3, "eval_interval": 20, "threads": 1}
# Learning rates every sweep tries, per preset, beside each method's own grid.
# The vision-language organism (PRESET=toy-vlm) shares the toy defaults: ga and grad_diff reach the filtered model's
# forget accuracy with them, keeping retain above 0.9 (docs/multimodal.md).
SWEEP_LEARNING_RATES: dict[str, tuple[str, ...]] = {"real": ("5e-6", "1e-5", "3e-5"), "toy": ("3e-4", "1e-3", "3e-3"),
                                                    "toy-vlm": ("3e-4", "1e-3", "3e-3")}


def toy_unlearn_defaults() -> dict[str, dict[str, Any]]:
    """The organism's unlearning defaults as `Preset.unlearn_defaults` holds them: {"all": ..., method: ...}."""
    return {"all": dict(TOY_DEFAULTS), **{name: dict(method.toy) for name, method in METHODS.items() if method.toy}}


def model_settings(values: Mapping[str, Any]) -> dict[str, Any]:
    """The settings that change the trained model (those with a folder-name tag), as a run's identity records
    them: LoRA's shape only with --lora-rank, and the `RECORDED_WHEN_SET` ones only when set."""
    return {setting.name: values[setting.name] for setting in SETTINGS if setting.tag
            and not (setting.name in LORA_SHAPE and not values["lora_rank"])
            and not (setting.name in RECORDED_WHEN_SET and values[setting.name] == setting.default)}


def parse_lora_targets(text: str) -> tuple[str, ...]:
    """'q_proj, v_proj' -> ('q_proj', 'v_proj'); 'all-linear' and 'attention' stay one word; a `UserError` else."""
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    if names in (("all-linear",), ("attention",)) or (names and all(name.isidentifier() for name in names)):
        return names
    raise UserError(f"--lora-targets must be all-linear, attention or comma-separated module names such as "
                    f"q_proj,v_proj, got {text!r}")


def check_method(method: str) -> MethodCard:
    """The card of `method`; a `UserError` listing the methods for anything else."""
    if method not in METHODS:
        raise UserError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")
    return METHODS[method]


def method_defaults(unlearn_defaults: Mapping[str, Mapping[str, Any]], method: str, preset: str) -> dict[str, Any]:
    """Every hyperparameter's default for `method`: the setting's, the card's, the preset's "all", the preset's for
    the method (later wins). `unlearn_defaults` is the preset's table, `preset` its name (for errors)."""
    overrides = {**METHODS[method].defaults, **unlearn_defaults.get("all", {}), **unlearn_defaults.get(method, {})}
    unknown = set(overrides) - {setting.name for setting in HYPERPARAMETERS}
    if unknown:
        raise UserError(f"preset {preset} sets unknown unlearning defaults {sorted(unknown)}")
    return {setting.name: setting.kind(overrides.get(setting.name, setting.default)) for setting in HYPERPARAMETERS}


def check_values(method: str, values: Mapping[str, Any]) -> None:
    """The settings' and the card's rules on hyperparameter `values`, as one-line errors."""
    method_card = METHODS[method]
    if values["lora_rank"] and not method_card.lora:
        raise UserError(f"{method} cannot use LoRA (--lora-rank / LORA_RANK={values['lora_rank']}): it works on the "
                        "weights themselves and needs full-parameter training; drop --lora-rank for this method")
    for setting in HYPERPARAMETERS:
        value = values[setting.name]
        if setting.minimum == "positive" and value <= 0:
            raise UserError(f"{setting.flag} must be positive, got {value}")
        if setting.minimum == "non_negative" and value < 0:
            raise UserError(f"{setting.flag} must not be negative, got {value}")
    for name, reason in method_card.positive.items():
        if values[name] <= 0:
            setting = SETTING[name]
            raise UserError(f"{setting.flag} must be positive for {method} ({method} {reason}), got {values[name]} "
                            f"(set {setting.flag} or {setting.environment_variable})")
    if not 0 <= values["eval_split"] < 1:
        raise UserError(f"--eval-split must be in [0, 1), got {values['eval_split']}")
    if values["lora_dropout"] >= 1:
        raise UserError(f"--lora-dropout must be below 1 (it is the probability of dropping an input), got "
                        f"{values['lora_dropout']}")
    parse_lora_targets(values["lora_targets"])
    if values["max_length"] < 2:
        raise UserError(f"--max-length must be at least 2 tokens, got {values['max_length']}")
    parse_layer_ids(values["layer_id"])
    parse_mix_ratio(values["mix_ratio"])


def sweep_grid(method: str, preset: str) -> list[tuple[str, tuple[str, ...]]]:
    """The grid a sweep runs for `method`: [(VARIABLE, values), ...], the learning rates first."""
    method_card = check_method(method)
    grid = [("LR", SWEEP_LEARNING_RATES[preset])]
    own = (method_card.toy_sweep or method_card.sweep) if preset.startswith("toy") else method_card.sweep
    if own:
        grid.append((SETTING[own[0]].environment_variable, own[1]))
    return grid


def method_table() -> str:
    """The Markdown table of every method (docs/unlearning.md holds exactly this; a test checks it)."""
    rows = ["| method | kind | folder-name hyperparameters | needs | LoRA | default set | what it does |",
            "|---|---|---|---|---|---|---|"]
    for name, method in METHODS.items():
        flags = ", ".join(f"`{SETTING[hyperparameter].flag}`" for hyperparameter in method.hyperparameters) or "-"
        lora = "required" if "lora_rank" in method.positive else ("optional" if method.lora else "no")
        rows.append(f"| `{name}` | {method.kind} | {flags} | {method.needs_text} | {lora} | "
                    f"{'yes' if method.default_set else 'no'} | {method.description} |")
    return "\n".join(rows) + "\n"
