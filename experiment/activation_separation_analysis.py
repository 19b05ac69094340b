# /// script
# requires-python = ">=3.10"
# dependencies = ["brittle[steps]"]  # the pipeline steps' one environment (pyproject.toml)
#
# [tool.uv.sources]
# brittle = { path = "..", editable = true }
# ///
"""Step 8 - Activation separation: can forget-text activations be told apart from retain-text ones,
and does the intervention change that?

Each text is represented at every layer by its mean hidden state over its tokens. Per layer and
model, the forget and retain representations are compared by:

| metric                   | formula                                                      | captures          |
|--------------------------|--------------------------------------------------------------|-------------------|
| centroid cosine distance | 1 - cos(μ_forget, μ_retain)                                  | direction         |
| linear AUC               | ROC AUC of a logistic regression, 5-fold cross-validated     | linear separability |
| variance ratio           | Σ_c n_c ‖μ_c - μ‖² / Σ_c Σ_i ‖x_i - μ_c‖² (between / within) | Fisher-style separation |

If the intervention *increases* separation, the model routes forget text down a different path;
if separation stays the same, it does not treat the two kinds of text differently inside.

Writes `outputs/<a>__to__<b>/activation_separation/separation_results.csv` (one row per layer, model A
and model B side by side), `summary.json` and `separation.png`.

    uv run experiment/activation_separation_analysis.py --model-a models/toy-base-s42 \\
        --model-b models/toy-filtered-s42 --preset toy
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm.auto import tqdm

from brittle.activations import (
    ActivationStore,
    activation_settings,
    add_activation_arguments,
    check_same_architecture,
    collect_splits,
    run_details,
    step_inputs,
)
from brittle.cli import UserError, add_comparison_arguments, add_output_arguments, add_runtime_arguments, run_cli
from brittle.identity import step_identity
from brittle.outputs import comparison_step_dir, skip_if_complete, staged_directory, write_csv, write_json
from brittle.plotting import plot_by_layer
from brittle.runtime import seed_everything

METRICS = ("centroid_cosine_distance", "linear_auc", "variance_ratio")
COLUMNS = ["layer", *(f"{model}_{metric}" for metric in METRICS for model in ("model_a", "model_b"))]
FOLDS = 5


def centroid_cosine_distance(forget: np.ndarray, retain: np.ndarray) -> float:
    """1 - cosine similarity of the two class means."""
    first, second = forget.mean(axis=0), retain.mean(axis=0)
    return float(1 - first @ second / (np.linalg.norm(first) * np.linalg.norm(second)))


def variance_ratio(forget: np.ndarray, retain: np.ndarray) -> float:
    """Between-class over within-class scatter (traces), as in Fisher's discriminant."""
    everything = np.concatenate([forget, retain])
    grand_mean = everything.mean(axis=0)
    between = sum(len(group) * np.sum((group.mean(axis=0) - grand_mean) ** 2) for group in (forget, retain))
    within = sum(np.sum((group - group.mean(axis=0)) ** 2) for group in (forget, retain))
    return float(between / within) if within > 0 else float("inf")


def linear_auc(forget: np.ndarray, retain: np.ndarray, seed: int, inverse_regularization: float = 1.0) -> float:
    """ROC AUC of a logistic regression on held-out folds: every text is scored by a classifier not trained on it."""
    features = np.concatenate([forget, retain])
    labels = np.concatenate([np.ones(len(forget), dtype=int), np.zeros(len(retain), dtype=int)])
    classifier = make_pipeline(StandardScaler(), LogisticRegression(C=inverse_regularization, max_iter=1000))
    folds = StratifiedKFold(n_splits=min(FOLDS, len(forget), len(retain)), shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        scores = cross_val_predict(classifier, features, labels, cv=folds, method="decision_function")
    return float(roc_auc_score(labels, scores))


def separation(forget: np.ndarray, retain: np.ndarray, seed: int) -> dict[str, float]:
    """All three metrics for one model at one layer."""
    return {"centroid_cosine_distance": centroid_cosine_distance(forget, retain),
            "linear_auc": linear_auc(forget, retain, seed), "variance_ratio": variance_ratio(forget, retain)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_comparison_arguments(parser)
    add_activation_arguments(parser)
    add_runtime_arguments(parser)
    add_output_arguments(parser)
    args = parser.parse_args()

    outdir = Path(args.outdir or comparison_step_dir(args.model_a, args.model_b, "activation_separation",
                                                     args.output_root))
    identity = step_identity(args, "model_a", "model_b")
    if skip_if_complete(outdir, args.force, what=f"Step 8 activation separation {args.model_a} -> {args.model_b}",
                        identity=identity):
        return
    files, texts = step_inputs(args, args.model_a, args.model_b)
    if min(len(split_texts) for split_texts in texts.values()) < 2:
        raise UserError("separation needs at least 2 texts per split; raise --max-samples")
    settings = activation_settings(args)
    seed_everything(args.seed)

    models = {"model_a": args.model_a, "model_b": args.model_b}
    with ActivationStore(settings) as store:
        activations = collect_splits(store, models, files, texts)
        check_same_architecture(activations["model_a", "forget"], activations["model_b", "forget"])
        rows = []
        for layer in tqdm(range(activations["model_a", "forget"].num_hidden_states), desc="separation", unit="layer"):
            row = {"layer": layer}
            for role in models:
                metrics = separation(activations[role, "forget"].mean_pooled(layer).numpy(),
                                     activations[role, "retain"].mean_pooled(layer).numpy(), args.seed)
                row |= {f"{role}_{metric}": value for metric, value in metrics.items()}
            rows.append(row)
        details = run_details(args, store, files, texts)
        print(store.summary())

    names = {role: Path(model).name for role, model in models.items()}
    with staged_directory(outdir, identity=identity) as staging:
        write_csv(staging / "separation_results.csv", rows, COLUMNS)
        layers = [row["layer"] for row in rows]
        title = f"Forget vs retain separation: {names['model_a']} → {names['model_b']}"
        plot_by_layer(staging / "separation.png", title,
                      {metric.replace("_", " "): {names[role]: (layers, [row[f"{role}_{metric}"] for row in rows])
                                                  for role in models} for metric in METRICS},
                      ylabel="value")
        write_json(staging / "summary.json", {
            "model_a": args.model_a, "model_b": args.model_b, "representation": "mean hidden state over each text",
            "auc_folds": FOLDS, **details,
            "mean_over_layers": {column: float(np.mean([row[column] for row in rows])) for column in COLUMNS[1:]},
        })
    for role in models:
        print(f"  {names[role]}: linear AUC by layer "
              + " ".join(f"{row[f'{role}_linear_auc']:.3f}" for row in rows))
    print(f"Step 8 activation separation -> {outdir}")


if __name__ == "__main__":
    run_cli(main)
