"""What every attack on an unlearned model shares: conditions, recovery rates, intervals and outputs.

"Erased or hidden?" is asked of one unlearned model from several angles (Steps 13-18). Each attack is
run under the conditions of the relearning attack (Step 13), measured on the held-out forget half V:

| condition | model     | attack | question it answers                                    |
|-----------|-----------|--------|--------------------------------------------------------|
| A         | unlearned | none   | what does the unlearned model show?                    |
| B         | unlearned | yes    | what can an attacker get back?                         |
| C         | base      | yes    | the ceiling: the same attack on the model that knew    |
| F0 / F    | filtered  | no/yes | the floor: a model that never saw the facts            |

    recovery rate          = (B - A) / (C - A)     the fraction of the forgotten accuracy brought back
    relative accuracy      = B / C
    filtered recovery rate = (F - F0) / (C - F0)   what the same attack "recovers" where nothing is hidden

Every attack that scores questions itself keeps each question's correctness per condition, so the
recovery rate gets a paired bootstrap interval over questions (`paired_bootstrap_interval`). Each
attack's folder holds `summary.csv` (one row per attack variant, `SUMMARY_COLUMNS` first),
`questions.csv` (per-question correctness) and `identity.json` (what made the result: model
fingerprints, data files, settings); the folder is reused only when `identity.json` matches
(`attack_identity`, brittle/identity.py). The verdict (experiment/verdict.py) reads the summaries.
"""

from __future__ import annotations

import argparse
import html
import math
import random
import statistics
import zlib
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from brittle.architecture import decoder_layers
from brittle.cli import add_output_arguments, add_runtime_arguments, positive_int
from brittle.identity import Identity
from brittle.models import check_model_reference
from brittle.multiple_choice import choice_log_likelihoods
from brittle.outputs import comparison_step_dir, read_csv, write_csv
from brittle.plotting import figure_and_axes, save_figure
from brittle.presets import Preset, get_preset
from brittle.questions import question_records
from brittle.training import collate, encode_texts, token_log_probs

CONDITIONS = ("A", "B", "C", "F0", "F")
CONDITION_LABELS = {"A": "A: unlearned", "B": "B: unlearned + attack", "C": "C: base + attack",
                    "F0": "F0: filtered", "F": "F: filtered + attack"}
SUMMARY_COLUMNS = [
    "attack", "seed", "base", "unlearned", "filtered", "questions",
    "a_unlearned", "b_unlearned_attacked", "c_base_attacked", "f0_filtered", "f_filtered_attacked",
    "recovery_rate", "recovery_ci_low", "recovery_ci_high", "relative_accuracy", "filtered_recovery_rate",
    "b_setting", "c_setting", "f_setting",
]
QUESTION_COLUMNS = ["attack", "condition", "question", "entity", "correct"]
BOOTSTRAP_SAMPLES = 2000
CONFIDENCE = 0.95


# --------------------------------------------------------------------------------------------------
# The command line every attack shares
# --------------------------------------------------------------------------------------------------

def add_attack_arguments(parser: argparse.ArgumentParser) -> None:
    """The three models, the preset, the T/V questions, and the runtime and output flags."""
    parser.add_argument("--model-a", required=True, help="the base model (condition C)")
    parser.add_argument("--model-b", required=True, help="the unlearned model under attack (conditions A and B)")
    parser.add_argument("--filtered", default=None, help="the filtered model (the floor; default: the preset's)")
    parser.add_argument("--preset", choices=["real", "toy"], default="real")
    parser.add_argument("--train-questions", default=None, help="T questions JSONL (default: the preset's)")
    parser.add_argument("--eval-questions", default=None, help="V questions JSONL (default: the preset's)")
    parser.add_argument("--eval-batch-size", type=positive_int, default=64)
    add_runtime_arguments(parser)
    add_output_arguments(parser)


def complete_attack_arguments(args: argparse.Namespace) -> Preset:
    """Fill the preset's defaults into `args`, check the models exist, and return the preset."""
    preset = get_preset(args.preset, args.seed)
    args.filtered = args.filtered or preset.filtered
    args.train_questions = args.train_questions or preset.forget_questions_t
    args.eval_questions = args.eval_questions or preset.forget_questions_v
    for model in (args.model_a, args.model_b, args.filtered):
        check_model_reference(model)
    return preset


def attack_models(args: argparse.Namespace) -> dict[str, str]:
    """{"base", "unlearned", "filtered"} -> model name."""
    return {"base": args.model_a, "unlearned": args.model_b, "filtered": args.filtered}


def read_questions(path: str | Path, what: str) -> list[dict[str, Any]]:
    """The multiple-choice questions of a JSONL file as records, checked line by line (brittle.questions)."""
    return question_records(path, f"the {what} questions")


def attack_step_dir(args: argparse.Namespace, step: str) -> Path:
    """`<output-root>/<base>__to__<unlearned>/<step>_seed<S>/` (or `--outdir`)."""
    return Path(args.outdir or comparison_step_dir(args.model_a, args.model_b, f"{step}_seed{args.seed}",
                                                   args.output_root))


# --------------------------------------------------------------------------------------------------
# Scoring and the arithmetic of recovery
# --------------------------------------------------------------------------------------------------

def question_correctness(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                         questions: Sequence[dict[str, Any]], batch_size: int = 64,
                         logits_fn: Callable[[Tensor, Tensor], Tensor] | None = None) -> list[int]:
    """1 for each question whose highest-scoring choice is the answer (lm-eval's `acc`), else 0."""
    scores = choice_log_likelihoods(model, tokenizer, questions, batch_size, logits_fn)
    return [int(max(range(len(row)), key=row.__getitem__) == question["answer"])
            for question, row in zip(questions, scores, strict=True)]


def accuracy(correct: Sequence[int]) -> float:
    """Fraction correct."""
    return sum(correct) / len(correct)


def recovery_rate(a: float, b: float, c: float) -> float | None:
    """(B - A) / (C - A): the fraction of the forgotten accuracy an attack brings back; None if C <= A."""
    return (b - a) / (c - a) if c - a > 0 else None


def relative_accuracy(b: float, c: float) -> float | None:
    """B / C; None when C is 0."""
    return b / c if c > 0 else None


def _percentile_interval(values: list[float], confidence: float) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def paired_bootstrap_interval(a: Sequence[int], b: Sequence[int], c: Sequence[int],
                              samples: int = BOOTSTRAP_SAMPLES, confidence: float = CONFIDENCE,
                              seed: int = 0) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of the recovery rate, resampling questions (paired across A, B, C).

    Each resample draws len(a) question indices with replacement and recomputes (B - A) / (C - A) on
    them; resamples where C <= A (no forgotten accuracy to recover) are dropped. (None, None) when
    every resample is dropped.
    """
    if not len(a) == len(b) == len(c):
        raise ValueError("A, B and C must be scored on the same questions")
    rng = np.random.default_rng(seed)
    matrix = np.array([a, b, c], dtype=float)  # (3, questions)
    indices = rng.integers(0, matrix.shape[1], size=(samples, matrix.shape[1]))
    means = matrix[:, indices].mean(axis=2)  # (3, samples)
    rates = [recovery_rate(*column) for column in means.T]
    return _percentile_interval([rate for rate in rates if rate is not None], confidence)


def binomial_bootstrap_interval(a: float, b: float, c: float, questions: int,
                                samples: int = BOOTSTRAP_SAMPLES, confidence: float = CONFIDENCE,
                                seed: int = 0) -> tuple[float | None, float | None]:
    """The recovery rate's interval when only accuracies are known (Steps 13 and 15's best settings).

    Each condition's accuracy is resampled as Binomial(questions, accuracy) / questions, independently:
    the parametric bootstrap over questions. Ignoring the pairing of A, B and C makes it wider than
    `paired_bootstrap_interval` would be on the same data.
    """
    rng = np.random.default_rng(seed)
    draws = rng.binomial(questions, [a, b, c], size=(samples, 3)) / questions
    rates = [recovery_rate(*row) for row in draws]
    return _percentile_interval([rate for rate in rates if rate is not None], confidence)


def best_setting(results: Mapping[str, Sequence[int]]) -> str:
    """The setting with the highest accuracy; ties go to the first listed (the cheapest, by convention)."""
    return max(results, key=lambda setting: (accuracy(results[setting]), -list(results).index(setting)))


def attack_summary(attack: str, seed: int, models: Mapping[str, str], correct: Mapping[str, Sequence[int]],
                   settings: Mapping[str, str]) -> dict[str, Any]:
    """One `SUMMARY_COLUMNS` row from per-question correctness of conditions A, B, C, F0, F.

    `models` maps base/unlearned/filtered to their names; `settings` the chosen setting of B, C and F.
    """
    a, b, c, f0, f = (accuracy(correct[condition]) for condition in CONDITIONS)
    rate = recovery_rate(a, b, c)
    low, high = (None, None) if rate is None else paired_bootstrap_interval(correct["A"], correct["B"], correct["C"],
                                                                            seed=seed)
    return {
        "attack": attack, "seed": seed, **{role: models[role] for role in ("base", "unlearned", "filtered")},
        "questions": len(correct["A"]),
        "a_unlearned": a, "b_unlearned_attacked": b, "c_base_attacked": c, "f0_filtered": f0,
        "f_filtered_attacked": f, "recovery_rate": rate, "recovery_ci_low": low,
        "recovery_ci_high": high, "relative_accuracy": relative_accuracy(b, c),
        "filtered_recovery_rate": recovery_rate(f0, f, c),
        **{f"{condition.lower()}_setting": settings.get(condition, "") for condition in "BCF"},
    }


def question_rows(attack: str, questions: Sequence[dict[str, Any]],
                  correct: Mapping[str, Sequence[int]]) -> list[dict[str, Any]]:
    """`QUESTION_COLUMNS` rows: one per (condition, question)."""
    return [{"attack": attack, "condition": condition, "question": index, "entity": question.get("entity", ""),
             "correct": value}
            for condition in CONDITIONS
            for index, (question, value) in enumerate(zip(questions, correct[condition], strict=True))]


def describe(summary: Mapping[str, Any]) -> str:
    """One line for the terminal: A -> B, C, filtered, recovery rate and its interval."""
    rate, low, high = (summary[key] for key in ("recovery_rate", "recovery_ci_low", "recovery_ci_high"))
    interval = "" if low is None else f" [{low:.2f}, {high:.2f}]"
    return (f"{summary['attack']}: A {summary['a_unlearned']:.3f} -> B {summary['b_unlearned_attacked']:.3f}, "
            f"C {summary['c_base_attacked']:.3f}, filtered {summary['f0_filtered']:.3f} -> "
            f"{summary['f_filtered_attacked']:.3f}; recovery {'n/a' if rate is None else f'{rate:.3f}'}{interval}")


def plot_conditions(path: Path, title: str, summaries: Sequence[Mapping[str, Any]]) -> None:
    """Grouped bars: V accuracy of A, B, C, F0 and F for each attack variant."""
    keys = dict(zip(CONDITIONS, ("a_unlearned", "b_unlearned_attacked", "c_base_attacked", "f0_filtered",
                                 "f_filtered_attacked"), strict=True))
    figure, axis = figure_and_axes(width=max(6.4, 1.6 * len(summaries) + 3))
    width = 0.8 / len(CONDITIONS)
    for offset, condition in enumerate(CONDITIONS):
        axis.bar([index + (offset - 2) * width for index in range(len(summaries))],
                 [summary[keys[condition]] for summary in summaries], width, label=CONDITION_LABELS[condition])
    axis.axhline(0.25, color="grey", linestyle=":", linewidth=1, label="chance (4 options)")
    axis.set_xticks(range(len(summaries)), [summary["attack"] for summary in summaries])
    axis.set_ylabel("accuracy on held-out V")
    axis.set_ylim(0, 1.02)
    axis.set_title(title, fontsize="medium")
    axis.legend(fontsize="small", ncol=2)
    save_figure(figure, path)


def write_attack_outputs(staging: Path, title: str, summaries: Sequence[Mapping[str, Any]],
                         questions: Sequence[Mapping[str, Any]], extra_columns: Sequence[str] = ()) -> None:
    """`summary.csv`, `questions.csv` and `conditions.png` of one attack step (`staged_directory` adds
    `identity.json`)."""
    write_csv(staging / "summary.csv", summaries, [*SUMMARY_COLUMNS, *extra_columns])
    write_csv(staging / "questions.csv", questions, QUESTION_COLUMNS)
    plot_conditions(staging / "conditions.png", title, summaries)


# --------------------------------------------------------------------------------------------------
# Results identify what made them
# --------------------------------------------------------------------------------------------------

def attack_identity(args: argparse.Namespace, data: Mapping[str, str | Path],
                    settings: Mapping[str, Any]) -> Identity:
    """What an attack step's result depends on (`identity.json`, brittle/identity.py): its three models under
    the relearning attack's roles (`model_a` Base, `model_b` the unlearned model, `filtered`), the data files
    and the settings. The step and the pipeline skip a finished folder only when all of them match."""
    return Identity.of(models={"model_a": args.model_a, "model_b": args.model_b, "filtered": args.filtered},
                       data=data, settings=settings)


# --------------------------------------------------------------------------------------------------
# Directional ablation (Step 16)
# --------------------------------------------------------------------------------------------------

def _hidden(output: Tensor | tuple) -> Tensor:
    """A decoder layer's residual-stream output (layers return a tensor or a tuple starting with it)."""
    return output[0] if isinstance(output, tuple) else output


@torch.no_grad()
def mean_layer_outputs(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str],
                       batch_size: int = 16, max_length: int = 512) -> Tensor:
    """Mean residual stream after each decoder layer over every real token of `texts`, shape (layers, hidden).

    Running sums in fp32, read by forward hooks: no activation is stored (a statistic, not a cache).
    """
    layers = decoder_layers(model)
    sums: list[Tensor | None] = [None] * len(layers)
    mask_holder: dict[str, Tensor] = {}

    def accumulate(index: int) -> Callable:
        def hook(_module: nn.Module, _inputs: tuple, output: Tensor | tuple) -> None:
            hidden = _hidden(output).float()
            total = (hidden * mask_holder["mask"][..., None]).sum(dim=(0, 1))
            sums[index] = total if sums[index] is None else sums[index] + total
        return hook

    handles = [layer.register_forward_hook(accumulate(index)) for index, layer in enumerate(layers)]
    device = model.get_input_embeddings().weight.device
    tokens = 0
    try:
        sequences = encode_texts(tokenizer, texts, max_length=max_length)
        for start in range(0, len(sequences), batch_size):
            batch = collate(sequences[start: start + batch_size], tokenizer.pad_token_id).to(device)
            mask_holder["mask"] = batch.attention_mask.float()
            model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
            tokens += int(batch.attention_mask.sum())
    finally:
        for handle in handles:
            handle.remove()
    return torch.stack(sums) / tokens


def unit_directions(difference: Tensor, minimum_norm: float = 1e-8) -> Tensor:
    """Each row scaled to unit length; rows shorter than `minimum_norm` (no separation) become zero."""
    norms = difference.norm(dim=-1, keepdim=True)
    return torch.where(norms > minimum_norm, difference / norms.clamp(min=minimum_norm), torch.zeros_like(difference))


def project_out(hidden: Tensor, direction: Tensor) -> Tensor:
    """h - (h · r̂) r̂: `hidden` (..., d) with its component along the unit vector `direction` removed."""
    direction = direction.to(hidden.dtype)
    return hidden - (hidden @ direction)[..., None] * direction


@contextmanager
def directions_ablated(model: PreTrainedModel, directions: Tensor):
    """Within the block, every decoder layer's output has its own direction (row of `directions`) projected out.

    Forward hooks on `brittle.architecture.decoder_layers`, so GPT-NeoX, Llama- and GPT-2-style models
    work alike; the weights are untouched and the hooks are removed on exit.
    """
    layers = decoder_layers(model)
    if directions.shape[0] != len(layers):
        raise ValueError(f"{directions.shape[0]} directions for {len(layers)} decoder layers")

    def ablate(direction: Tensor) -> Callable:
        def hook(_module: nn.Module, _inputs: tuple, output: Tensor | tuple) -> Tensor | tuple:
            hidden = project_out(_hidden(output), direction.to(_hidden(output).device))
            return (hidden, *output[1:]) if isinstance(output, tuple) else hidden
        return hook

    handles = [layer.register_forward_hook(ablate(direction)) for layer, direction in zip(layers, directions,
                                                                                            strict=True)]
    try:
        yield model
    finally:
        for handle in handles:
            handle.remove()


# --------------------------------------------------------------------------------------------------
# Membership inference (Step 18)
# --------------------------------------------------------------------------------------------------

MIA_METRICS = ("loss", "zlib", "min_k", "min_k_plus_plus")
DEFAULT_MIN_K = 0.4  # open-unlearning's default fraction of lowest-scoring tokens


def _lowest_mean(values: Tensor, fraction: float) -> float:
    """Mean of the `fraction` smallest entries (at least one)."""
    count = max(1, math.ceil(fraction * values.numel()))
    return float(values.sort().values[:count].mean())


@torch.no_grad()
def membership_scores(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str],
                      k: float = DEFAULT_MIN_K, batch_size: int = 16, max_length: int = 512
                      ) -> dict[str, list[float]]:
    """Per-text membership scores; for every metric, higher means "more likely a training text".

    With per-token log-probabilities log p(x_t | x_<t) over a text's T scored tokens:

    - **LOSS** (Yeom et al. 2018): the mean log-probability, -NLL.
    - **zlib** (Carlini et al. 2021): -NLL / zlib(text), the loss normalised by the text's zlib-compressed
      length in bytes (its "entropy" to a generic compressor), so texts that are easy for any
      compressor do not look like members.
    - **Min-K%** (Shi et al. 2024): the mean of the k·T lowest token log-probabilities; a member has
      few very surprising tokens.
    - **Min-K%++** (Zhang et al. 2024): the same over z_t = (log p(x_t) - μ_t) / σ_t, with μ_t and σ_t²
      the mean and variance of log p(z) under z ~ p(· | x_<t): a token is scored against what the
      model expected at that position (training makes a member's tokens local maxima).
    """
    device = model.get_input_embeddings().weight.device
    sequences = encode_texts(tokenizer, texts, max_length=max_length)
    scores: dict[str, list[float]] = {metric: [] for metric in MIA_METRICS}
    for start in range(0, len(sequences), batch_size):
        batch = collate(sequences[start: start + batch_size], tokenizer.pad_token_id).to(device)
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        token_lp, mask = token_log_probs(logits, batch.labels)
        log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        expected = (log_probs.exp() * log_probs).sum(-1)  # μ_t
        variance = (log_probs.exp() * log_probs.square()).sum(-1) - expected.square()
        z = (token_lp - expected) / variance.clamp(min=1e-12).sqrt()
        for row, text in enumerate(texts[start: start + batch_size]):
            kept = mask[row]
            mean_lp = float(token_lp[row][kept].mean())
            scores["loss"].append(mean_lp)
            scores["zlib"].append(mean_lp / len(zlib.compress(text.encode("utf-8"))))
            scores["min_k"].append(_lowest_mean(token_lp[row][kept], k))
            scores["min_k_plus_plus"].append(_lowest_mean(z[row][kept], k))
    return scores


def auc(members: Sequence[float], nonmembers: Sequence[float]) -> float:
    """ROC AUC of telling members from non-members by score: P(member score > non-member score), ties 1/2.

    Computed from ranks (the Mann-Whitney U statistic): 0.5 = no signal, 1 = perfectly separated.
    """
    values = np.concatenate([np.asarray(members, float), np.asarray(nonmembers, float)])
    order = values.argsort(kind="mergesort")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    for value in np.unique(values):  # average the ranks of ties
        tied = values == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    count = len(members)
    u = ranks[:count].sum() - count * (count + 1) / 2
    return float(u / (count * len(nonmembers)))


# --------------------------------------------------------------------------------------------------
# The verdict (read by experiment/verdict.py and experiment/report.py)
# --------------------------------------------------------------------------------------------------

VERDICT_FOLDER = "verdict"
VERDICT_COLUMNS = ["unlearned", "attack", "measure", "seeds", "a_before", "b_after", "c_base_attacked",
                   "f0_filtered", "f_filtered_attacked", "recovery_rate", "recovery_rate_std", "recovery_ci_low",
                   "recovery_ci_high", "filtered_recovery_rate"]


def mean_and_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation of the known values (std None for fewer than two)."""
    known = [value for value in values if value is not None]
    if not known:
        return None, None
    return statistics.fmean(known), statistics.stdev(known) if len(known) > 1 else None


def _number(value: Any, digits: int = 3) -> str:
    if value in (None, ""):
        return "–"
    return f"{float(value):.{digits}f}"


def verdict_html(output_root: str | Path = "outputs") -> str:
    """An HTML fragment with the verdict table (`<root>/verdict/verdict.csv`), or "" when it has not been made.

    For experiment/report.py: `from brittle.attacks import verdict_html` and add the string to the page.
    """
    path = Path(output_root) / VERDICT_FOLDER / "verdict.csv"
    return verdict_table_html(read_csv(path)) if path.exists() else ""


def verdict_table_html(rows: Sequence[Mapping[str, str]]) -> str:
    """The verdict rows (`VERDICT_COLUMNS`, as read from verdict.csv) as an HTML section."""
    header = ("<tr><th>unlearned model</th><th>attack</th><th>measure</th><th>seeds</th><th>A before</th>"
              "<th>B after</th><th>C base + attack</th><th>filtered F0 → F</th><th>recovery (B−A)/(C−A)</th>"
              "<th>95% CI</th><th>filtered recovery</th></tr>")
    body = []
    for row in rows:
        spread = f" ± {_number(row['recovery_rate_std'])}" if row["recovery_rate_std"] else ""
        interval = (f"[{_number(row['recovery_ci_low'], 2)}, {_number(row['recovery_ci_high'], 2)}]"
                    if row["recovery_ci_low"] else "–")
        cells = [row["unlearned"], row["attack"], row["measure"], row["seeds"], _number(row["a_before"]),
                 _number(row["b_after"]), _number(row["c_base_attacked"]),
                 f"{_number(row['f0_filtered'])} → {_number(row['f_filtered_attacked'])}",
                 f"{_number(row['recovery_rate'])}{spread}", interval, _number(row["filtered_recovery_rate"])]
        body.append("<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in cells) + "</tr>")
    return ("<section id=\"verdict\"><h2>Verdict: erased or hidden?</h2>\n"
            "<p>Each attack under the relearning attack's conditions, measured on the held-out forget half V "
            "(mean ± std over seeds; interval: bootstrap over questions, pooled over seeds). A recovery rate near "
            "0 with the filtered model's near 0 says erased; near 1 says hidden. MIA rows give AUCs (forget texts "
            "vs never-seen texts) and the share of base's membership signal left in the unlearned model.</p>\n"
            f"<table>\n{header}\n" + "\n".join(body) + "\n</table></section>\n")


def seeded_rng(seed: int, *labels: str) -> random.Random:
    """A `random.Random` fixed by the seed and labels (so two uses of one seed do not share a stream)."""
    return random.Random(f"{seed}:" + ":".join(labels))
