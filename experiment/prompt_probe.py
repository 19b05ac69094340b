# /// script
# requires-python = ">=3.10"
# dependencies = ["brittle[steps]"]  # the pipeline steps' one environment (pyproject.toml)
#
# [tool.uv.sources]
# brittle = { path = "..", editable = true }
# ///
"""Step 17 - Few-shot and paraphrase probing: do other prompts reach what the usual question no longer does?

No weight changes at all. Two attacks on the held-out forget half V:

- **few-shot**: each V question is preceded by k questions of T with their correct answers, one per
  line (k in `--shots`, default 1 3 5; the k examples are drawn per question with a fixed seed). An
  unlearned model that only learnt to refuse the zero-shot format, or whose suppression depends on
  the context, answers again. T and V share no entity, so the examples cannot teach V's answers.
- **paraphrase** (the organism only): V's questions asked with question templates that no training
  text uses (`brittle.organism.HELD_OUT_QUESTION_TEMPLATES`). Unlearning that was fitted to the
  trained surface form leaves paraphrases answered.

Each condition keeps its best setting (k, or template), as the relearning attack keeps its best
learning rate and epoch:

| condition | model     | prompt                                  |
|-----------|-----------|-----------------------------------------|
| A         | unlearned | the usual zero-shot question            |
| B         | unlearned | best k-shot prompt / best paraphrase    |
| C         | base      | best k-shot prompt / best paraphrase    |
| F0 / F    | filtered  | zero-shot / best of the same prompts    |

Outputs (outputs/<base>__to__<unlearned>/prompt_probe_seed<S>/): summary.csv (rows `few-shot`,
`paraphrase`), settings.csv (accuracy of every model and setting), questions.csv, identity.json,
conditions.png

    uv run experiment/prompt_probe.py --model-a models/toy-base-s42 --model-b unlearned_models/... --preset toy
"""

from __future__ import annotations

import argparse
from typing import Any

from relearn_attack import answer_texts  # the script beside this one (Step 13)

from brittle.attacks import (
    accuracy,
    add_attack_arguments,
    attack_identity,
    attack_models,
    attack_step_dir,
    attack_summary,
    best_setting,
    complete_attack_arguments,
    describe,
    question_correctness,
    question_rows,
    read_questions,
    seeded_rng,
    write_attack_outputs,
)
from brittle.cli import UserError, run_cli
from brittle.models import load_model_and_tokenizer
from brittle.organism import HELD_OUT_QUESTION_TEMPLATES, paraphrased_question
from brittle.outputs import skip_if_complete, staged_directory, write_csv

STEP = "prompt_probe"
DEFAULT_SHOTS = (1, 3, 5)
ZERO_SHOT = "0-shot"
SHOT_SEPARATOR = "\n"


def few_shot_questions(questions: list[dict[str, Any]], examples: list[dict[str, Any]], shots: int,
                       seed: int) -> list[dict[str, Any]]:
    """`questions` each preceded by `shots` solved examples drawn from `examples` (one line each)."""
    if shots > len(examples):
        raise UserError(f"--shots {shots} needs at least {shots} T questions, the file has {len(examples)}")
    rng = seeded_rng(seed, "few-shot", str(shots))
    prompts = []
    for question in questions:
        context = SHOT_SEPARATOR.join(answer_texts(rng.sample(examples, shots)))
        prompts.append({**question, "question": f"{context}{SHOT_SEPARATOR}{question['question']}"})
    return prompts


def prompt_variants(train: list[dict[str, Any]], evaluate: list[dict[str, Any]], shots: list[int],
                    seed: int) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """{attack: {setting: questions}}; each attack's first setting is the unattacked question (A, F0).

    Paraphrases need each question's `entity` and `attribute` (the organism's questions have them);
    without them only the few-shot attack runs.
    """
    variants = {"few-shot": {ZERO_SHOT: evaluate,
                             **{f"{k}-shot": few_shot_questions(evaluate, train, k, seed) for k in shots}}}
    if all("entity" in question and "attribute" in question for question in evaluate):
        variants["paraphrase"] = {"trained template": evaluate,
                                  **{f"held-out {index + 1}: {template}": [paraphrased_question(question, template)
                                                                           for question in evaluate]
                                     for index, template in enumerate(HELD_OUT_QUESTION_TEMPLATES)}}
    return variants


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_attack_arguments(parser)
    parser.add_argument("--shots", type=int, nargs="+", default=list(DEFAULT_SHOTS),
                        help="numbers of solved T examples before each V question (default: 1 3 5)")
    args = parser.parse_args(argv)
    if any(k < 1 for k in args.shots):
        parser.error("--shots values must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    complete_attack_arguments(args)
    models = attack_models(args)
    outdir = attack_step_dir(args, STEP)
    identity = attack_identity(args, {"train_questions": args.train_questions, "eval_questions": args.eval_questions},
                               {"shots": args.shots, "templates": list(HELD_OUT_QUESTION_TEMPLATES),
                                "dtype": args.dtype, "seed": args.seed})
    if skip_if_complete(outdir, args.force, f"prompt probing of {args.model_b}", identity):
        return
    evaluate = read_questions(args.eval_questions, "V")
    variants = prompt_variants(read_questions(args.train_questions, "T"), evaluate, args.shots, args.seed)
    results: dict[str, dict[str, dict[str, list[int]]]] = {}  # role -> attack -> setting -> correctness
    for role, name in models.items():
        model, tokenizer = load_model_and_tokenizer(name, args.device, args.dtype)
        results[role] = {attack: {setting: question_correctness(model, tokenizer, questions, args.eval_batch_size)
                                  for setting, questions in settings.items()}
                         for attack, settings in variants.items()}
        del model
    summaries, question_table, setting_rows = [], [], []
    for attack, settings in variants.items():
        unattacked = next(iter(settings))
        attacked = {role: {setting: results[role][attack][setting] for setting in settings if setting != unattacked}
                    for role in models}
        chosen = {condition: best_setting(attacked[role])
                  for condition, role in (("B", "unlearned"), ("C", "base"), ("F", "filtered"))}
        correct = {"A": results["unlearned"][attack][unattacked], "F0": results["filtered"][attack][unattacked],
                   **{condition: attacked[role][chosen[condition]]
                      for condition, role in (("B", "unlearned"), ("C", "base"), ("F", "filtered"))}}
        summaries.append(attack_summary(attack, args.seed, models, correct, chosen))
        question_table += question_rows(attack, evaluate, correct)
        setting_rows += [{"attack": attack, "setting": setting, "model": role, "v_accuracy": accuracy(values)}
                         for role in models for setting, values in results[role][attack].items()]
        print(describe(summaries[-1]))
    with staged_directory(outdir, identity=identity) as staging:
        write_attack_outputs(staging, "Few-shot and paraphrase probing: accuracy on held-out V", summaries,
                             question_table)
        write_csv(staging / "settings.csv", setting_rows, ["attack", "setting", "model", "v_accuracy"])
    print(f"results -> {outdir}")


if __name__ == "__main__":
    run_cli(main)
