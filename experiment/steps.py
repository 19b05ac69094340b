"""The step registry: every step of the diagnostics pipeline, in one table.

`experiment/pipeline.sh` (through `experiment/plan.py`), `experiment/report.py` and the tests read this
table, so a step's folder name is typed once, here. Asking for a step that is not in it (`step("evals")`
with a typo, `STEPS=evls`) raises an error that lists every step, instead of a silently missing report cell.

A step is one script run once per *unit*, named by its `scope`:

| scope        | runs once per                                   | results folder                       |
|--------------|-------------------------------------------------|--------------------------------------|
| `model`      | model of the study (Base, Filtered, Unlearned…) | `outputs/<model>/<folder>/`          |
| `comparison` | comparison (COMP1 Base -> Filtered, …)          | `outputs/<a>__to__<b>/<folder>/`     |
| `attack`     | unlearned model, attacked against Base          | `outputs/<base>__to__<unlearned>/<folder>/` |
| `study`      | study (after every other step)                  | `outputs/` (the report)              |

Numbering follows the seed's Experimental Pipeline table. There is no Step 2: the seed's Step 2 (the
per-component and per-layer breakdown of ΔW) is written by Step 1's script in the same pass
(`weight_comparison/per_component.csv`, `per_layer.csv`), so it has no script or folder of its own.

Adding a step is adding one `Step(...)` to `STEPS` (see docs/pipeline.md): the pipeline runs it for every
unit of its scope, in parallel with every step it does not depend on, skips it when its folder is done,
accepts its name in `STEPS=`, and logs its `summary.json` to W&B.
"""

from __future__ import annotations

from dataclasses import dataclass

SCOPES = ("model", "comparison", "attack", "study")
# Folder roles a step may write besides its own folder (`Step.also_writes`).
WRITE_ROLES = ("model", "model_a", "model_b", "comparison", "filtered")


@dataclass(frozen=True)
class Step:
    """One step of the pipeline: what it runs, on what, what it needs and what it writes.

    `folder` is the step's results folder under its unit's folder and, without `{seed}`, its name; it may
    contain `{seed}` (the relearning attack keeps one folder per seed). `arguments` are added to the common
    ones (`--model` or `--model-a/--model-b`, `--output-root`, `--device`, `--dtype`, `--seed`, `--force`)
    and may name `{preset}`, `{filtered}` and `{baseline_min_forget_acc}`. `texts` adds `--max-samples`:
    MAX_SAMPLES, or brittle.texts.DEFAULT_MAX_SAMPLES when it is unset, always said explicitly so that the
    pipeline's skip check can compare it with the one a finished result records.

    Scheduling: a step runs after the steps in `needs` and `reads` (same unit: the same model or comparison;
    a per-model step needed by a pairwise one means both of its models); a step in `needs` that is neither
    finished nor selected in STEPS stops the pipeline before it starts. `activations` marks a step that
    streams text through its models: the first such step of a model computes that model's activation
    statistics and the others start after it and reuse them. Two units that write the same folder
    (`also_writes`, e.g. Base's attack runs, shared by every attacked model) run one after the other. With
    several slots, the ready `long` steps start first (longest first is the classic rule that keeps one long
    step from running alone at the end); with one slot the order is STEPS'.
    """

    name: str
    number: int | None
    scope: str
    script: str
    title: str
    arguments: tuple[str, ...] = ()
    texts: bool = False
    activations: bool = False
    needs: tuple[str, ...] = ()  # steps whose outputs it cannot run without
    reads: tuple[str, ...] = ()  # steps whose outputs it uses when they exist (it runs after them if planned)
    extra_outputs: tuple[str, ...] = ()  # other folders it writes beside `folder`, in the same unit folder
    also_writes: tuple[tuple[str, str], ...] = ()  # (role, folder) outside its unit folder
    enabled_by: str | None = None  # an environment flag that must be 1 for the step to run (default: always)
    folder_template: str | None = None  # the folder name when it differs from `name` (may hold {seed})
    summary: str = "summary.json"  # the file logged to W&B after the step, inside `folder`
    manifest: bool = False  # a study step told which comparisons this run made (`--manifest`: the report)
    long: bool = False  # it trains or perturbs: with several slots, a ready long step starts before short ones

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise ValueError(f"step {self.name}: scope {self.scope!r} is not one of {', '.join(SCOPES)}")
        for role, _ in self.also_writes:
            if role not in WRITE_ROLES:
                raise ValueError(f"step {self.name}: also_writes role {role!r} is not one of {', '.join(WRITE_ROLES)}")

    @property
    def label(self) -> str:
        """`Step 1 weight_comparison`: how the report and the summary name the step."""
        return self.name if self.number is None else f"Step {self.number} {self.name}"

    def folder(self, seed: int) -> str:
        """The results folder's name for one seed."""
        return (self.folder_template or self.name).format(seed=seed)

    @property
    def folder_pattern(self) -> str:
        """The results folder as a glob over every seed (`relearn_attack_seed*`)."""
        return (self.folder_template or self.name).replace("{seed}", "*")

    @property
    def outputs(self) -> tuple[str, ...]:
        """Every folder (as globs over seeds) this step writes in its unit folder."""
        return (self.folder_pattern, *self.extra_outputs)


TEXT_ARGUMENTS = ("--preset", "{preset}")
ATTACK_ARGUMENTS = ("--filtered", "{filtered}", "--preset", "{preset}")

# The steps, in the order a one-slot pipeline runs them (per-model steps for every model first, then
# pairwise steps for every comparison, then the attacks, then the report).
STEPS: tuple[Step, ...] = (
    Step("evals", 0, "model", "experiment/eval.py", "capabilities (lm-eval: forget, retain, MMLU)",
         arguments=("--preset", "{preset}")),
    Step("linear_probes", 5, "model", "experiment/linear_probe_analysis.py", "linear probes: forget vs retain",
         arguments=TEXT_ARGUMENTS, texts=True, activations=True),
    Step("wmdp_tuned_lens", 6, "model", "experiment/layerwise_wmdp_accuracy.py",
         "logit and tuned lens on the forget questions", arguments=("--lens", "both", *TEXT_ARGUMENTS), texts=True,
         activations=True, reads=("evals",), extra_outputs=("wmdp_logit_lens",), long=True),
    Step("weight_comparison", 1, "comparison", "experiment/collect_weight_comparison.py",
         "ΔW per matrix, component and layer (the seed's Steps 1 and 2)", extra_outputs=("param_plots",)),
    Step("mlp_attn_analysis", 4, "comparison", "experiment/analyze_mlp_vs_attn.py", "MLP vs attention change",
         needs=("weight_comparison",)),
    Step("null_space_analysis", 7, "comparison", "experiment/null_space_analysis.py", "ΔW's spectrum and subspaces"),
    Step("mlp_nullspace", 10, "comparison", "experiment/mlp_nullspace_alignment.py",
         "MLP ΔW in W's null space"),
    Step("activation_comparison", 3, "comparison", "experiment/collect_activation_comparison.py",
         "activation change per layer", arguments=TEXT_ARGUMENTS, texts=True, activations=True,
         extra_outputs=("activation_plots",)),
    Step("activation_separation", 8, "comparison", "experiment/activation_separation_analysis.py",
         "forget/retain separation", arguments=TEXT_ARGUMENTS, texts=True, activations=True),
    Step("activation_covariance", 9, "comparison", "experiment/activation_covariance_analysis.py",
         "activation covariance spectra", arguments=TEXT_ARGUMENTS, texts=True, activations=True),
    Step("row_space_projection", 11, "comparison", "experiment/row_space_projection_analysis.py",
         "activations in ΔW's row space", arguments=TEXT_ARGUMENTS, texts=True, activations=True),
    Step("lipschitzness", 12, "comparison", "experiment/local_lipschitzness_analysis.py",
         "local Lipschitz estimates", arguments=TEXT_ARGUMENTS, texts=True, long=True),
    Step("relearn_attack", 13, "attack", "experiment/relearn_attack.py", "relearning attack (RTT)",
         arguments=("--filtered", "{filtered}", "--preset", "{preset}",
                    "--baseline-min-forget-acc", "{baseline_min_forget_acc}"),
         reads=("evals",), folder_template="relearn_attack_seed{seed}", summary="summary.csv", long=True,
         also_writes=(("model_a", "relearn_attack_seed{seed}"), ("model_b", "relearn_attack_seed{seed}"),
                      ("filtered", "relearn_attack_seed{seed}"))),
    # Steps 14-18: more attacks on each unlearned model, with the relearning attack's A/B/C/F conditions
    # (brittle/attacks.py; docs/attacks.md). ENABLE_ATTACKS=0 switches them and the verdict off.
    *(Step(name, number, "attack", script, title, arguments=ATTACK_ARGUMENTS, folder_template=f"{name}_seed{{seed}}",
           summary="summary.csv", enabled_by="ENABLE_ATTACKS", **extra)
      for name, number, script, title, extra in (
          ("quantization_attack", 14, "experiment/quantization_attack.py", "quantization attack (8 and 4 bit)",
           {"reads": ("weight_comparison",)}),
          ("benign_finetune", 15, "experiment/benign_finetune_attack.py", "benign fine-tuning on retain text",
           {"also_writes": (("model_a", "benign_finetune_seed{seed}"), ("model_b", "benign_finetune_seed{seed}"),
                            ("filtered", "benign_finetune_seed{seed}")), "long": True}),
          ("directional_ablation", 16, "experiment/directional_ablation.py", "directional ablation", {}),
          ("prompt_probe", 17, "experiment/prompt_probe.py", "few-shot and paraphrase probing", {}),
          ("membership_inference", 18, "experiment/membership_inference.py",
           "membership inference (LOSS, zlib, Min-K%, Min-K%++)", {}),
      )),
    Step("verdict", 19, "study", "experiment/verdict.py", "the verdict: every attack's recovery, per model",
         enabled_by="ENABLE_ATTACKS", summary=""),
    Step("report", None, "study", "experiment/report.py", "the HTML report of every comparison", summary="",
         arguments=("--preset", "{preset}"), manifest=True),
)

STEP_NAMES: tuple[str, ...] = tuple(entry.name for entry in STEPS)
_BY_NAME = {entry.name: entry for entry in STEPS}
if len(_BY_NAME) != len(STEPS):
    raise ValueError("two steps share a name in experiment/steps.py")


class UnknownStepError(KeyError):
    """A step name that is not in the registry (the message lists every step)."""

    def __str__(self) -> str:
        return str(self.args[0])


def unknown_step_message(name: str) -> str:
    return f"unknown step '{name}'; the steps are: {' '.join(STEP_NAMES)}"


def step(name: str) -> Step:
    """The step called `name` (its folder name); `UnknownStepError` listing every step otherwise.

    A seed-suffixed folder (`relearn_attack_seed42`) names its step too.
    """
    if name in _BY_NAME:
        return _BY_NAME[name]
    for entry in STEPS:
        if entry.folder_template and _matches_template(name, entry.folder_template):
            return entry
    raise UnknownStepError(unknown_step_message(name))


def _matches_template(name: str, template: str) -> bool:
    prefix, _, suffix = template.partition("{seed}")
    middle = name[len(prefix):len(name) - len(suffix)] if suffix else name[len(prefix):]
    return name.startswith(prefix) and name.endswith(suffix) and middle.isdigit()


def _check_needs() -> None:
    for entry in STEPS:
        for needed in (*entry.needs, *entry.reads):
            if needed not in _BY_NAME:
                raise ValueError(f"step {entry.name} needs '{needed}', which is not a step")
            if STEP_NAMES.index(needed) > STEP_NAMES.index(entry.name):
                raise ValueError(f"step {entry.name} needs '{needed}', which comes after it in STEPS")


_check_needs()
