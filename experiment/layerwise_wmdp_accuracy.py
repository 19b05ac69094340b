# /// script
# requires-python = ">=3.10"
# dependencies = ["brittle[steps]"]  # the pipeline steps' one environment (pyproject.toml)
#
# [tool.uv.sources]
# brittle = { path = "..", editable = true }
# ///
"""Step 6 - Layer-wise WMDP accuracy: at which layer does the model "know" the forget-domain answers?

Multiple-choice accuracy on the forget questions (WMDP-Bio for real runs, the organism's forget
questions under `--preset toy`) read out at every layer through a lens:

- **Logit lens** (default): the model's own final norm and unembedding applied to the hidden state of
  layer l (the last hidden state is already normed, so layer N is exactly the model's output). Free.
- **Tuned lens**: a per-layer affine translator h ↦ h + A_l h + b_l (zero-initialised, so it starts as
  the logit lens) before the same final norm and unembedding, trained as the tuned-lens project does:
  minimise KL(final-layer distribution ‖ lens distribution) on held-out text (the retain texts, never
  the questions), SGD with Nesterov momentum 0.9, learning rate 1.0 × (1 - 0.9), weight decay 1e-3,
  linear decay over 250 steps, gradient clipping at 1. The final layer needs no translator. All layers
  train at once, on batches of every layer's hidden states computed by streaming the retain texts through
  the model during the training (every token, epoch after epoch, nothing cached); see `brittle/lens.py`.

Each question is scored exactly as lm-evaluation-harness scores it, by the same functions as the
in-process scorer (`brittle.multiple_choice`): every choice is the continuation of the question after
one space, split from it as lm-eval splits it, and the choice whose tokens have the largest summed
log-probability wins. The only difference is where the logits come from: the lens at layer l instead
of the model's head, so the last layer reproduces the Step 0 accuracy. One forward pass over the
questions (stored like every other statistics pass) records the hidden states at the positions that predict a
choice's tokens; every layer and both lenses are read from it.

| metric         | what it tells you                                                              |
|----------------|--------------------------------------------------------------------------------|
| accuracy       | fraction of questions answered correctly from the representation at this layer |
| Δ from final   | accuracy here minus at the final layer (> 0: known here, hidden at the output)  |
| held-out KL    | KL(final ‖ lens) on every token of the held-out retain texts: how faithful the lens is |

A base model's accuracy ramps up through the layers; a model that really lost the knowledge stays
near chance (0.25 for 4 options) at *every* layer; high accuracy at intermediate layers with a drop
at the output means the knowledge is hidden, not erased. Per model, not per comparison.

Writes `outputs/<model>/wmdp_logit_lens/` and/or `outputs/<model>/wmdp_tuned_lens/`, each with
`wmdp_lens_results.csv`, `summary.json` and `layerwise_accuracy.png` (`--lens logit|tuned|both`).

    uv run experiment/layerwise_wmdp_accuracy.py --model models/toy-base-s42 --preset toy --lens both
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from brittle.activations import (
    ActivationStore,
    RecordedRows,
    TokenizedSplit,
    activation_settings,
    add_activation_arguments,
    log_forward_passes,
    read_split_texts,
    run_details,
    tokenize_texts,
)
from brittle.cli import UserError, add_output_arguments, add_runtime_arguments, run_cli
from brittle.evaluation import step0_accuracy
from brittle.identity import step_identity
from brittle.lens import HiddenStates, Lens, TunedLensTraining, Unembedding, heldout_kl_by_layer, train_tuned_lens
from brittle.models import check_model_reference
from brittle.multiple_choice import (
    EncodedChoice,
    accuracy_from_scores,
    continuation_log_likelihoods,
    encode_questions,
)
from brittle.outputs import model_step_dir, skip_if_complete, staged_directory, write_csv, write_json
from brittle.plotting import plot_by_layer
from brittle.presets import get_preset
from brittle.questions import read_questions
from brittle.runtime import resolve_device, seed_everything

COLUMNS = ["layer", "accuracy", "delta_from_final", "heldout_kl", "num_questions"]
LENSES = {"logit": ["logit"], "tuned": ["tuned"], "both": ["logit", "tuned"]}
DEFAULT_MAX_LENGTH = 2048  # lm-eval's fallback when the config names no context length
PAIR_BATCH = 256  # (question, choice) pairs scored at once
TUNED_LENS_BATCH_TOKENS = {"real": 4096, "toy": 512}  # tuned-lens itself uses 2**18 on the Pile


# ---------------------------------------------------------------------------------------------
# Questions: the (question, choice) pairs lm-eval scores, and the one forward pass they need
# ---------------------------------------------------------------------------------------------

def context_window(model_config) -> int:
    """The longest input lm-eval feeds this model (its configured context length, else 2048)."""
    for attribute in ("n_positions", "max_position_embeddings", "n_ctx"):
        if isinstance(getattr(model_config, attribute, None), int):
            return getattr(model_config, attribute)
    return DEFAULT_MAX_LENGTH


@dataclass(frozen=True)
class QuestionPass:
    """What one forward pass over the questions runs, and where each pair's scored positions land.

    As in lm-eval, a pair's model input is (context + continuation)[-(window + 1):][:-1] and its last
    len(continuation) positions predict the continuation. Pairs whose inputs coincide (the one-token
    answers " A" ... " D" of WMDP) share one sequence. Only the scored positions are recorded.
    """

    pairs: list[EncodedChoice]
    split: TokenizedSplit
    first_scored: list[tuple[int, int]]  # per pair: (sequence, position predicting its first token)

    def rows(self, activations: RecordedRows, pair_number: int) -> Tensor:
        """The recorded rows (one per continuation token) of pair `pair_number`."""
        sequence, position = self.first_scored[pair_number]
        start = int(activations.offsets[sequence]) + position - self.split.keep_from[sequence]
        return torch.arange(start, start + len(self.pairs[pair_number].continuation))


def question_pass(tokenizer: PreTrainedTokenizerBase, questions: list[dict], window: int,
                  source: Path) -> QuestionPass:
    """The (question, choice) pairs of `questions`, encoded by `brittle.multiple_choice`, and their inputs."""
    pairs = encode_questions(tokenizer, questions)
    sequence_of: dict[tuple[int, ...], int] = {}
    sequences: list[tuple[int, ...]] = []
    keep_from: list[int] = []
    first_scored = []
    for pair in pairs:
        if not pair.context or not pair.continuation:
            question = questions[pair.question_index]
            raise UserError(f"question {question['question'][:60]!r} or its choice "
                            f"{question['choices'][pair.choice_index]!r} has no tokens")
        inputs = tuple((pair.context + pair.continuation)[-(window + 1):][:-1])
        position = len(inputs) - len(pair.continuation)
        if inputs not in sequence_of:
            sequence_of[inputs] = len(sequences)
            sequences.append(inputs)
            keep_from.append(position)
        sequence = sequence_of[inputs]
        keep_from[sequence] = min(keep_from[sequence], position)
        first_scored.append((sequence, position))
    split = TokenizedSplit("forget_questions", str(source), tuple(sequences), tuple(keep_from))
    return QuestionPass(pairs, split, first_scored)


@torch.no_grad()
def layer_choice_scores(lens: Lens, layer: int, activations: RecordedRows, plan: QuestionPass,
                        questions: list[dict]) -> list[list[float]]:
    """Each choice's summed log-probability read through `lens` at `layer`, scored by lm-eval's rules.

    The lens's logits for each pair's recorded window (its scored positions, padded to the longest in
    the batch) go to `continuation_log_likelihoods`. The window starts at the position that predicts
    the first continuation token, so seen through the window the pair's context is its last token.
    """
    device = lens.device
    hidden = activations.hidden(layer)
    scores = [[0.0] * len(question["choices"]) for question in questions]
    for start in range(0, len(plan.pairs), PAIR_BATCH):
        numbers = range(start, min(start + PAIR_BATCH, len(plan.pairs)))
        chunk = [plan.pairs[number] for number in numbers]
        window = torch.zeros(len(chunk), max(len(pair.continuation) for pair in chunk), hidden.shape[1])
        for row, number in enumerate(numbers):
            window[row, : len(plan.pairs[number].continuation)] = hidden[plan.rows(activations, number)]
        logits = lens(window.to(device), layer)
        seen = [replace(pair, context=pair.context[-1:]) for pair in chunk]
        for pair, score in zip(chunk, continuation_log_likelihoods(logits, seen).tolist(), strict=True):
            scores[pair.question_index][pair.choice_index] = score
    return scores


# ---------------------------------------------------------------------------------------------
# The script
# ---------------------------------------------------------------------------------------------

def write_lens_results(folder: Path, lens_name: str, rows: list[dict], summary: dict, model: str) -> None:
    """wmdp_lens_results.csv, summary.json and layerwise_accuracy.png of one lens."""
    write_csv(folder / "wmdp_lens_results.csv", rows, COLUMNS)
    write_json(folder / "summary.json", summary)
    layers = [row["layer"] for row in rows]
    plot_by_layer(folder / "layerwise_accuracy.png", f"{lens_name} lens on the forget questions: {Path(model).name}",
                  {"multiple-choice accuracy": {"accuracy": (layers, [row["accuracy"] for row in rows]),
                                                "chance": (layers, [summary["chance"]] * len(layers))},
                   "held-out KL(final ‖ lens), nats": {"KL": (layers, [row["heldout_kl"] for row in rows])}},
                  ylabel="value")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="hub id or local model folder")
    parser.add_argument("--lens", choices=list(LENSES), default="logit", help="logit (default), tuned or both")
    parser.add_argument("--questions", default=None,
                        help="multiple-choice JSONL (default: the preset's forget questions, WMDP-Bio for real)")
    parser.add_argument("--max-questions", type=int, default=None, help="use only the first N questions (default all)")
    parser.add_argument("--tuned-lens-steps", type=int, default=250, help="translator training steps per layer (250)")
    parser.add_argument("--tuned-lens-lr", type=float, default=1.0,
                        help="learning-rate scale of the tuned lens's SGD (default 1.0, as tuned-lens)")
    parser.add_argument("--tuned-lens-batch-tokens", type=int, default=None,
                        help="tokens per training step, and at most per forward pass of the retain texts streamed "
                             "through the model (default 4096; 512 under --preset toy, whose vocabulary and texts "
                             "are small)")
    parser.add_argument("--validation-fraction", type=float, default=0.1,
                        help="fraction of the retain texts held out to measure the lenses' KL (default 0.1)")
    add_activation_arguments(parser)  # --retain-text is the tuned lens's training text
    add_runtime_arguments(parser)
    add_output_arguments(parser)
    args = parser.parse_args()

    def lens_folder(lens: str) -> Path:
        name = f"wmdp_{lens}_lens"
        return Path(args.outdir) / name if args.outdir else model_step_dir(args.model, name, args.output_root)

    identity = step_identity(args, "model", lens=None)  # one record for both lens folders: --lens only picks them
    lenses = [lens for lens in LENSES[args.lens]
              if not skip_if_complete(lens_folder(lens), args.force, what=f"Step 6 {lens} lens of {args.model}",
                                      identity=identity)]
    if not lenses:
        return
    if not 0 < args.validation_fraction < 1:
        raise UserError(f"--validation-fraction must be between 0 and 1, got {args.validation_fraction}")
    if args.tuned_lens_steps < 1 or (args.tuned_lens_batch_tokens is not None and args.tuned_lens_batch_tokens < 1):
        raise UserError("--tuned-lens-steps and --tuned-lens-batch-tokens must be at least 1")
    if args.max_questions is not None and args.max_questions < 1:
        raise UserError(f"--max-questions must be at least 1, got {args.max_questions}")
    preset = get_preset(args.preset, args.seed)
    questions_path = Path(args.questions or preset.forget_questions)
    questions = [question.as_record() for question in read_questions(questions_path, args.max_questions)]
    retain_path = Path(args.retain_text or preset.retain_text)
    retain_texts = read_split_texts({"retain": retain_path}, args.max_samples)["retain"]
    if len(retain_texts) < 2:
        raise UserError("the lenses need at least 2 retain texts (one to train on, one held out)")
    check_model_reference(args.model)
    settings = activation_settings(args)
    seed_everything(args.seed)

    with ActivationStore(settings) as store:
        model = store.model(args.model)
        plan = question_pass(store.tokenizer(args.model), questions, context_window(model.config), questions_path)
        question_activations = store.rows(args.model, plan.split)
        # The retain texts, streamed through the model while the lens trains (every token, no cache): the
        # last ones are held out to measure the lenses, the tuned lens trains on the others.
        retain = tokenize_texts(store.tokenizer(args.model), retain_texts, settings.max_length, "retain", retain_path)
        validation_texts = max(1, round(len(retain_texts) * args.validation_fraction))
        training_texts = len(retain_texts) - validation_texts
        device = resolve_device(args.device)
        recipe = TunedLensTraining(args.tuned_lens_steps, args.tuned_lens_lr, seed=args.seed,
                                   batch_tokens=args.tuned_lens_batch_tokens or TUNED_LENS_BATCH_TOKENS[args.preset])
        pad_token_id = store.pad_token_id(args.model)
        train_states, validation_states = (
            HiddenStates(model, retain, texts, recipe.batch_tokens, pad_token_id, device)
            for texts in (range(training_texts), range(training_texts, len(retain_texts))))
        num_layers = question_activations.num_layers
        unembedding = Unembedding(model, device)
        chance = float(np.mean([1 / len(question["choices"]) for question in questions]))
        results = {}
        started = time.perf_counter()
        for lens_name in lenses:
            lens = Lens(unembedding, num_layers, question_activations.hidden_size, tuned=lens_name == "tuned",
                        compute_dtype=store.compute_dtype)
            if lens_name == "tuned":
                train_tuned_lens(lens, train_states.training_batches(args.seed), recipe)
            kls = heldout_kl_by_layer(lens, validation_states.stream(validation_states.texts))
            rows = [{"layer": layer, "accuracy": accuracy_from_scores(
                        questions, layer_choice_scores(lens, layer, question_activations, plan, questions)),
                     "heldout_kl": kls[layer], "num_questions": len(questions)}
                    for layer in tqdm(range(num_layers + 1), desc=f"{lens_name} lens", unit="layer")]
            for row in rows:
                row["delta_from_final"] = row["accuracy"] - rows[-1]["accuracy"]
            results[lens_name] = rows
        streamed = [(states.texts_run, states.tokens_run) for states in (train_states, validation_states)]
        log_forward_passes("lens", 1, args.model, "retain", sum(texts for texts, _ in streamed),
                           sum(tokens for _, tokens in streamed), time.perf_counter() - started)
        details = run_details(args, store)
        print(store.summary())

    reference = step0_accuracy(args.model, preset.forget_task, args.output_root)
    for lens_name, rows in results.items():
        best = max(rows, key=lambda row: row["accuracy"])
        summary = {
            "model": args.model, "lens": lens_name, "questions": str(questions_path), "num_questions": len(questions),
            "chance": chance, "final_layer_accuracy": rows[-1]["accuracy"], "best_layer": best["layer"],
            "best_accuracy": best["accuracy"], "max_delta_from_final": best["delta_from_final"],
            "step0_task": preset.forget_task, "step0_accuracy": reference,
            "lens_training": ({**vars(recipe), "text": str(retain_path), "training_texts": training_texts,
                               "training_tokens": train_states.tokens, "tokens_streamed": train_states.tokens_run}
                              if lens_name == "tuned" else None),
            "heldout_tokens": validation_states.tokens, **details,
        }
        with staged_directory(lens_folder(lens_name), identity=identity) as staging:
            write_lens_results(staging, lens_name, rows, summary, args.model)
        accuracies = " ".join(f"{row['accuracy']:.3f}" for row in rows)
        print(f"  {lens_name} lens accuracy by layer: {accuracies} (chance {chance:.2f}"
              + (f"; Step 0 {preset.forget_task} {reference:.3f}" if reference is not None else "") + ")")
        print(f"Step 6 {lens_name} lens of {args.model} -> {lens_folder(lens_name)}")


if __name__ == "__main__":
    run_cli(main)
