# /// script
# requires-python = ">=3.10"
# dependencies = ["brittle[steps]"]  # the pipeline steps' one environment (pyproject.toml)
#
# [tool.uv.sources]
# brittle = { path = "..", editable = true }
# ///
"""Step 16 - Directional ablation: is the forgetting a direction in the residual stream that can be removed?

Łucki et al., "An adversarial perspective on machine unlearning for AI safety" (2024): methods such as
RMU and circuit breakers make the unlearned model's activations on forget text differ from base's along
a few directions. If the knowledge is still in the weights, projecting those directions out at
inference (no weight change) brings it back.

For each decoder layer l the direction is the difference of means of the residual stream (the layer's
output) between the attacked model and base over forget text,

    r_l = mean_t h_l^model(t) - mean_t h_l^base(t),    r̂_l = r_l / ‖r_l‖,

and at inference every layer's output becomes h_l - (h_l · r̂_l) r̂_l (forward hooks, so GPT-NeoX,
Llama- and GPT-2-style models work alike). The forget text is T's questions with their answers (what
the relearning attack trains on), so V, where the attack is measured, never enters the direction.

| condition | model                                                                   |
|-----------|-------------------------------------------------------------------------|
| A         | unlearned                                                               |
| B         | unlearned with its directions (unlearned - base) ablated                |
| C         | base (its own directions are zero: the attack leaves it unchanged)      |
| F0 / F    | filtered / with its directions (filtered - base) ablated: the floor     |

Outputs (outputs/<base>__to__<unlearned>/directional_ablation_seed<S>/): summary.csv, questions.csv,
directions.csv (per layer: ‖r_l‖ against ‖mean h_l^base‖), identity.json, conditions.png

    uv run experiment/directional_ablation.py --model-a models/toy-base-s42 --model-b unlearned_models/... \\
        --preset toy
"""

from __future__ import annotations

import argparse

import torch
from relearn_attack import answer_texts  # the script beside this one (Step 13)
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from brittle.attacks import (
    add_attack_arguments,
    attack_identity,
    attack_models,
    attack_step_dir,
    attack_summary,
    complete_attack_arguments,
    describe,
    directions_ablated,
    mean_layer_outputs,
    question_correctness,
    question_rows,
    read_questions,
    unit_directions,
    write_attack_outputs,
)
from brittle.cli import UserError, positive_int, run_cli
from brittle.models import load_model_and_tokenizer
from brittle.outputs import skip_if_complete, staged_directory, write_csv

STEP = "directional_ablation"
DIRECTION_COLUMNS = ["model", "layer", "difference_norm", "base_mean_norm"]


def ablated_correctness(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, questions: list[dict],
                        directions: torch.Tensor, batch_size: int) -> list[int]:
    """Per-question correctness of `model` with `directions` projected out of every layer's output."""
    with directions_ablated(model, directions):
        return question_correctness(model, tokenizer, questions, batch_size)


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_attack_arguments(parser)
    parser.add_argument("--batch-size", type=positive_int, default=16, help="texts per forward pass (directions)")
    parser.add_argument("--max-length", type=positive_int, default=512)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    complete_attack_arguments(args)
    models = attack_models(args)
    outdir = attack_step_dir(args, STEP)
    identity = attack_identity(args, {"train_questions": args.train_questions, "eval_questions": args.eval_questions},
                               {"max_length": args.max_length, "dtype": args.dtype, "seed": args.seed})
    if skip_if_complete(outdir, args.force, f"directional ablation on {args.model_b}", identity):
        return
    texts = answer_texts(read_questions(args.train_questions, "T"))
    questions = read_questions(args.eval_questions, "V")

    base, base_tokenizer = load_model_and_tokenizer(args.model_a, args.device, args.dtype)
    base_means = mean_layer_outputs(base, base_tokenizer, texts, args.batch_size, args.max_length)
    correct = {"C": question_correctness(base, base_tokenizer, questions, args.eval_batch_size)}
    del base
    direction_rows = []
    for role, before, after in (("unlearned", "A", "B"), ("filtered", "F0", "F")):
        model, tokenizer = load_model_and_tokenizer(models[role], args.device, args.dtype)
        means = mean_layer_outputs(model, tokenizer, texts, args.batch_size, args.max_length)
        if means.shape != base_means.shape:
            raise UserError(f"{models[role]} and {args.model_a} differ in layers or width ({tuple(means.shape)} vs "
                            f"{tuple(base_means.shape)}); directional ablation needs the same architecture")
        difference = means - base_means
        direction_rows += [{"model": role, "layer": layer + 1, "difference_norm": float(difference[layer].norm()),
                            "base_mean_norm": float(base_means[layer].norm())} for layer in range(len(difference))]
        correct[before] = question_correctness(model, tokenizer, questions, args.eval_batch_size)
        correct[after] = ablated_correctness(model, tokenizer, questions, unit_directions(difference),
                                             args.eval_batch_size)
        del model
    settings = {"B": "unlearned - base, every layer", "C": "none (zero direction)",
                "F": "filtered - base, every layer"}
    summary = attack_summary("directional ablation", args.seed, models, correct, settings)
    print(describe(summary))
    with staged_directory(outdir, identity=identity) as staging:
        write_attack_outputs(staging, "Directional ablation: accuracy on held-out V", [summary],
                             question_rows("directional ablation", questions, correct))
        write_csv(staging / "directions.csv", direction_rows, DIRECTION_COLUMNS)
    print(f"results -> {outdir}")


if __name__ == "__main__":
    run_cli(main)
