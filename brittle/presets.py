"""The two worlds: real deep-ignorance runs and the toy organism, as named presets.

A preset holds only *names and defaults* - which models, which text files, which evaluation tasks,
which layers and learning rates suit the model's size. Everything else is the same code path.

    PRESET=toy ./experiment/pipeline.sh     # the organism, offline, CPU, minutes
    ./experiment/pipeline.sh                # the real 6.9B deep-ignorance models (PRESET=real)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from brittle.catalogue import VISION_LANGUAGE_LORA, toy_unlearn_defaults
from brittle.cli import UserError

REPOSITORY = Path(__file__).resolve().parents[1]
TOY_DATA_DIR = "data/toy"  # relative paths are relative to the working directory (WORKDIR)
TOY_MODELS_DIR = "models"
TOY_VLM_DATA_DIR = "data/toy-vlm"  # experiment/build_vlm_organism.py writes it
REAL_TASKS_DIR = str(REPOSITORY / "experiment" / "tasks")  # task YAMLs that ship with the code


@dataclass(frozen=True)
class Preset:
    """Model names, data paths, evaluation tasks and hyperparameter defaults of one world."""

    name: str
    # The models of the study (Experimental Pipeline table).
    base: str  # trained on everything
    filtered: str  # trained with the forget domain removed before training
    pretrain: str  # base's pretraining-stage checkpoint (COMP3)
    unlearned: str  # base + post-hoc unlearning (default CB-LAT); "" = make it with run_unlearn.sh
    cb: str  # base + circuit breakers only (COMP4-6); "" = make it with run_unlearn.sh
    # Text (one per line) and multiple-choice questions (JSONL: question, choices, answer).
    forget_text: str
    retain_text: str
    forget_questions: str
    forget_questions_t: str  # the half the relearning attack trains on
    forget_questions_v: str  # the held-out half it is measured on
    # Step 0 evaluation through lm-evaluation-harness.
    eval_tasks: tuple[str, ...]
    eval_include_paths: tuple[str, ...]  # folders of local task YAMLs
    forget_task: str  # the task that measures forget-domain knowledge
    retain_task: str  # the task that measures general capability
    mmlu_limit: int | None  # MMLU questions, spread over its 57 subjects (None = all)
    # Relearning attack (RTT): fine-tune on T, measure V; learning rates on a log range, epochs per run.
    relearn_lr_range: tuple[float, float]
    relearn_num_lrs: int
    relearn_epochs: int
    relearn_batch_size: int
    baseline_min_forget_acc: float  # pre-flight: base must know the forget facts at least this well
    # Unlearning defaults that differ from the real ones, by method ("all": every method), keyed by
    # unlearn/unlearn.py's flag names with underscores, e.g. {"all": {"max_length": 64}, "ga": {"lr": 3e-4}};
    # the toy preset's come from the method cards (brittle/catalogue.py).
    unlearn_defaults: dict[str, dict[str, float | int | str]] = field(default_factory=dict)


def toy_model_path(role: str, seed: int) -> str:
    """Folder of one organism model, e.g. `models/toy-base-s42`."""
    return f"{TOY_MODELS_DIR}/toy-{role}-s{seed}"


def toy_preset(seed: int) -> Preset:
    """The organism: tiny GPT-NeoX models trained here on invented facts (see brittle.organism)."""
    questions = f"{TOY_DATA_DIR}/questions"
    return Preset(
        name="toy",
        base=toy_model_path("base", seed),
        filtered=toy_model_path("filtered", seed),
        pretrain=toy_model_path("base-midtrain", seed),
        unlearned="",
        cb="",
        forget_text=f"{TOY_DATA_DIR}/forget.txt",
        retain_text=f"{TOY_DATA_DIR}/retain.txt",
        forget_questions=f"{questions}/forget.jsonl",
        forget_questions_t=f"{questions}/forget_t.jsonl",
        forget_questions_v=f"{questions}/forget_v.jsonl",
        eval_tasks=("toy_forget_mcq", "toy_forget_mcq_t", "toy_forget_mcq_v", "toy_retain_mcq"),
        eval_include_paths=(f"{TOY_DATA_DIR}/tasks",),
        forget_task="toy_forget_mcq",
        retain_task="toy_retain_mcq",
        mmlu_limit=None,
        relearn_lr_range=(1e-4, 3e-3),
        relearn_num_lrs=4,
        relearn_epochs=3,
        relearn_batch_size=16,
        baseline_min_forget_acc=0.8,
        unlearn_defaults=toy_unlearn_defaults(),
    )


def real_preset(seed: int) -> Preset:
    """The deep-ignorance study: 6.9B GPT-NeoX models, WMDP-Bio, WikiText-2, MMLU (needs the hub)."""
    del seed  # the released models are fixed; the seed only affects what the scripts do with them
    return Preset(
        name="real",
        base="EleutherAI/deep-ignorance-unfiltered",
        filtered="EleutherAI/deep-ignorance-e2e-strong-filter",
        pretrain="EleutherAI/deep-ignorance-pretraining-stage-unfiltered",
        unlearned="EleutherAI/deep-ignorance-unfiltered-cb-lat",
        cb="EleutherAI/deep-ignorance-unfiltered-cb",
        forget_text="data/forget.txt",
        retain_text="data/retain.txt",
        forget_questions="data/questions/forget.jsonl",
        forget_questions_t="data/questions/forget_t.jsonl",
        forget_questions_v="data/questions/forget_v.jsonl",
        eval_tasks=("mmlu", "wikitext", "wmdp_bio", "wmdp_bio_cloze"),
        eval_include_paths=(REAL_TASKS_DIR, "data/tasks"),
        forget_task="wmdp_bio",
        retain_task="mmlu",
        mmlu_limit=1000,
        relearn_lr_range=(1e-6, 3e-5),
        relearn_num_lrs=3,
        relearn_epochs=2,
        relearn_batch_size=4,
        baseline_min_forget_acc=0.35,
    )


def vision_language_defaults(unlearn_defaults: dict[str, dict]) -> dict[str, dict]:
    """`unlearn_defaults` with LoRA as seed 004 applies it to a vision-language model (`VISION_LANGUAGE_LORA`)."""
    return {**unlearn_defaults, "all": {**unlearn_defaults.get("all", {}), **VISION_LANGUAGE_LORA}}


def toy_vlm_preset(seed: int) -> Preset:
    """The vision-language organism: tiny LLaVA models trained here on pictures of invented entities (brittle.vlm).

    Its "texts" are `{image, question, answer}` JSONL records and its evaluation tasks are question files:
    task `<name>` is `<eval include path>/<name>.jsonl`, scored by brittle.vlm.vl_multiple_choice_accuracy.
    """
    questions = f"{TOY_VLM_DATA_DIR}/questions"
    text = toy_preset(seed)
    return Preset(
        name="toy-vlm",
        base=toy_model_path("vlm-base", seed),
        filtered=toy_model_path("vlm-filtered", seed),
        pretrain="",
        unlearned="",
        cb="",
        forget_text=f"{TOY_VLM_DATA_DIR}/forget_qa.jsonl",
        retain_text=f"{TOY_VLM_DATA_DIR}/retain_qa.jsonl",
        forget_questions=f"{questions}/forget.jsonl",
        forget_questions_t=f"{questions}/forget_t.jsonl",
        forget_questions_v=f"{questions}/forget_v.jsonl",
        eval_tasks=("forget", "forget_t", "forget_v", "retain"),
        eval_include_paths=(questions,),
        forget_task="forget",
        retain_task="retain",
        mmlu_limit=None,
        # Stronger than the text organism's sweep (9 steps at <= 3e-3), which on this organism did not even
        # relearn T after ga (forget NLL ~50): 50 steps at up to 1e-2 bring T back to ~0.7 (docs/multimodal.md).
        relearn_lr_range=(1e-3, 1e-2),
        relearn_num_lrs=3,
        relearn_epochs=10,
        relearn_batch_size=8,
        baseline_min_forget_acc=text.baseline_min_forget_acc,
        # The text organism's serve it too (brittle/catalogue.py), with LoRA as on a real LLaVA: the language
        # model's attention (GPT-NeoX: query_key_value), dropout 0.05.
        unlearn_defaults=vision_language_defaults(toy_unlearn_defaults()),
    )


PRESETS = {"toy": toy_preset, "real": real_preset, "toy-vlm": toy_vlm_preset}


def get_preset(name: str = "real", seed: int = 42) -> Preset:
    """The named preset ("real", "toy" or "toy-vlm") for `seed`."""
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name](seed)


def preset_as_dict(preset: Preset) -> dict:
    """The preset as plain data (for logs and run metadata)."""
    return asdict(preset)
