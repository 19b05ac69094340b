# /// script
# requires-python = ">=3.10"
# dependencies = ["brittle[steps]"]  # the pipeline steps' one environment (pyproject.toml)
#
# [tool.uv.sources]
# brittle = { path = "..", editable = true }
# ///
"""Step 18 - Membership inference on the forget set: can one still tell that the model was trained on it?

A model assigns its training texts higher likelihood than comparable texts it never saw. The four
reference-free attacks of open-unlearning's MIA suite (LOSS, zlib, Min-K%, Min-K%++; formulas in
`brittle.attacks.membership_scores`) score every forget text and every never-seen text; the AUC of
telling them apart is 0.5 for a model that never saw the forget texts and approaches 1 for one that
memorised them. Erasure should bring the unlearned model's AUC down to the filtered model's.

| model     | reads as                                                           |
|-----------|--------------------------------------------------------------------|
| unlearned | A: the membership signal unlearning left                           |
| base      | C: the signal of a model trained on the forget texts (the ceiling) |
| filtered  | F: a model that never saw them (the floor, ≈ 0.5)                  |

    signal left = (AUC_unlearned - AUC_filtered) / (AUC_base - AUC_filtered)

Never-seen texts: `--nonmember-text` (one per line; for real runs, forget-domain text published after
the models' training data was collected). With the toy preset and no file, they are the forget facts
with each value replaced by another value of the same attribute (`brittle.organism.counterfactual_facts`):
the same names, templates and vocabulary, never trained on - written to the output folder as
`nonmember.txt`. (Texts about invented entities that no model saw would be the obvious choice, but the
organism's tokenizer was trained on the forget text, so the forget names tokenize differently from new
ones and even the filtered model separates them: AUC 0.70-0.75 on a test organism.)

Outputs (outputs/<base>__to__<unlearned>/membership_inference_seed<S>/): summary.csv (one row per
metric), scores.csv (every text's scores per model), nonmember.txt (toy), identity.json, auc.png

    uv run experiment/membership_inference.py --model-a models/toy-base-s42 --model-b unlearned_models/... \\
        --preset toy
"""

from __future__ import annotations

import argparse
from pathlib import Path

from brittle.attacks import (
    DEFAULT_MIN_K,
    MIA_METRICS,
    add_attack_arguments,
    attack_identity,
    attack_models,
    attack_step_dir,
    auc,
    complete_attack_arguments,
    membership_scores,
    read_questions,
    recovery_rate,
)
from brittle.cli import UserError, positive_int, run_cli
from brittle.models import load_model_and_tokenizer
from brittle.organism import FORGET_DOMAIN, Fact, counterfactual_facts, training_texts
from brittle.outputs import skip_if_complete, staged_directory, write_csv, write_lines
from brittle.plotting import figure_and_axes, save_figure
from brittle.texts import read_texts

STEP = "membership_inference"
SUMMARY_COLUMNS = ["metric", "seed", "base", "unlearned", "filtered", "members", "nonmembers",
                   "auc_unlearned", "auc_base", "auc_filtered", "signal_left"]
ROLES = ("unlearned", "base", "filtered")


def toy_facts(questions_path: str | Path) -> list[Fact]:
    """The forget facts, read back from the forget questions (entity, attribute, correct choice)."""
    return [Fact(FORGET_DOMAIN.name, question["entity"], question["attribute"],
                 question["choices"][question["answer"]]) for question in read_questions(questions_path, "forget")]


def toy_nonmember_texts(questions_path: str | Path, count: int, seed: int) -> list[str]:
    """`count` counterfactual statements (the forget facts with other values, same templates as forget.txt)."""
    return training_texts(counterfactual_facts(toy_facts(questions_path), FORGET_DOMAIN, seed))[:count]


def plot_auc(path: Path, rows: list[dict]) -> None:
    """Bars: AUC per metric for unlearned, base and filtered."""
    figure, axis = figure_and_axes()
    width = 0.8 / len(ROLES)
    for offset, role in enumerate(ROLES):
        axis.bar([index + (offset - 1) * width for index in range(len(rows))], [row[f"auc_{role}"] for row in rows],
                 width, label=role)
    axis.axhline(0.5, color="grey", linestyle=":", linewidth=1, label="no signal (0.5)")
    axis.set_xticks(range(len(rows)), [row["metric"] for row in rows])
    axis.set_ylabel("AUC: forget texts vs never-seen texts")
    axis.set_ylim(0, 1.02)
    axis.set_title("Membership inference on the forget texts", fontsize="medium")
    axis.legend(fontsize="small")
    save_figure(figure, path)


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_attack_arguments(parser)
    parser.add_argument("--forget-text", default=None, help="the member texts (default: the preset's forget text)")
    parser.add_argument("--nonmember-text", default=None,
                        help="never-seen texts of the same domain (required for the real preset)")
    parser.add_argument("--max-samples", type=positive_int, default=500, help="texts of each kind (default 500)")
    parser.add_argument("--k", type=float, default=DEFAULT_MIN_K,
                        help=f"fraction of lowest-scoring tokens of Min-K%% and Min-K%%++ (default {DEFAULT_MIN_K})")
    parser.add_argument("--batch-size", type=positive_int, default=16)
    parser.add_argument("--max-length", type=positive_int, default=512)
    args = parser.parse_args(argv)
    if not 0 < args.k <= 1:
        raise UserError(f"--k must be in (0, 1], got {args.k}")
    preset = complete_attack_arguments(args)
    args.forget_text = args.forget_text or preset.forget_text
    args.forget_questions = preset.forget_questions
    if args.nonmember_text is None and preset.name != "toy":
        raise UserError("--nonmember-text is required with the real preset: give forget-domain texts the models "
                        "never saw (e.g. published after their training data was collected)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    models = attack_models(args)
    outdir = attack_step_dir(args, STEP)
    files = {"forget_text": args.forget_text,
             **({"nonmember_text": args.nonmember_text} if args.nonmember_text else
                {"forget_questions": args.forget_questions})}
    nonmember_source = "file" if args.nonmember_text else "counterfactual forget facts"
    identity = attack_identity(args, files, {"nonmembers": nonmember_source, "max_samples": args.max_samples,
                                             "k": args.k, "max_length": args.max_length, "dtype": args.dtype,
                                             "seed": args.seed})
    if skip_if_complete(outdir, args.force, f"membership inference on {args.model_b}", identity):
        return
    members = read_texts(args.forget_text, args.max_samples, what="forget text")
    nonmembers = (read_texts(args.nonmember_text, args.max_samples, what="never-seen text") if args.nonmember_text
                  else toy_nonmember_texts(args.forget_questions, len(members), args.seed))
    scores = {}
    for role in ROLES:
        model, tokenizer = load_model_and_tokenizer(models[role], args.device, args.dtype)
        scores[role] = membership_scores(model, tokenizer, [*members, *nonmembers], args.k, args.batch_size,
                                         args.max_length)
        del model
    summary = []
    for metric in MIA_METRICS:
        aucs = {role: auc(scores[role][metric][:len(members)], scores[role][metric][len(members):]) for role in ROLES}
        summary.append({"metric": metric, "seed": args.seed, **models, "members": len(members),
                        "nonmembers": len(nonmembers), **{f"auc_{role}": value for role, value in aucs.items()},
                        "signal_left": recovery_rate(aucs["filtered"], aucs["unlearned"], aucs["base"])})
        print(f"{metric}: AUC unlearned {aucs['unlearned']:.3f}, base {aucs['base']:.3f}, "
              f"filtered {aucs['filtered']:.3f}")
    texts = [("member", text) for text in members] + [("nonmember", text) for text in nonmembers]
    score_rows = [{"model": role, "kind": kind, "text": index,
                   **{metric: scores[role][metric][index] for metric in MIA_METRICS}}
                  for role in ROLES for index, (kind, _) in enumerate(texts)]
    with staged_directory(outdir, identity=identity) as staging:
        write_csv(staging / "summary.csv", summary, SUMMARY_COLUMNS)
        write_csv(staging / "scores.csv", score_rows, ["model", "kind", "text", *MIA_METRICS])
        if not args.nonmember_text:
            write_lines(staging / "nonmember.txt", nonmembers)
        plot_auc(staging / "auc.png", summary)
    print(f"results -> {outdir}")


if __name__ == "__main__":
    run_cli(main)
