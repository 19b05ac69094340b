# /// script
# requires-python = ">=3.10"
# dependencies = ["brittle[steps]"]  # the pipeline steps' one environment (pyproject.toml)
#
# [tool.uv.sources]
# brittle = { path = "..", editable = true }
# ///
"""Step 5 - Linear probes: at which layer is the forget/retain distinction linearly encoded?

For every layer (0 = embeddings, N = the final output) the **last-token hidden state** of each forget
and retain text is taken, and a logistic-regression probe (`LogisticRegression(C=1.0, max_iter=1000)`
on standardised features; `--C`, `--max-iter`) learns to tell which split an activation came from.
It is trained on a stratified split of the texts and scored on the held-out rest (`--test-fraction`):

| metric      | what it tells you                                                                  |
|-------------|------------------------------------------------------------------------------------|
| accuracy    | how well a linear readout separates forget from retain activations at this layer   |
| selectivity | accuracy - majority-class baseline: how far the probe beats always guessing one class |
| AUC         | how well the probe ranks forget above retain, threshold-free (0.5 random, 1 perfect) |

In a well-unlearned model no layer should separate the domains much better than chance; a poorly
unlearned model still has layers where a linear readout finds the forget domain, i.e. the knowledge
is hidden from the output head rather than erased. Per model, not per comparison.

Writes `outputs/<model>/linear_probes/probe_results.csv`, `summary.json` and `probe_accuracy.png`.

    uv run experiment/linear_probe_analysis.py --model models/toy-base-s42 --preset toy
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm.auto import tqdm

from brittle.activations import (
    ActivationStore,
    activation_settings,
    add_activation_arguments,
    collect_splits,
    run_details,
    step_inputs,
)
from brittle.cli import UserError, add_output_arguments, add_runtime_arguments, run_cli
from brittle.identity import step_identity
from brittle.outputs import model_step_dir, skip_if_complete, staged_directory, write_csv, write_json
from brittle.plotting import plot_by_layer
from brittle.runtime import seed_everything

COLUMNS = ["layer", "accuracy", "majority_baseline", "selectivity", "auc", "train_accuracy", "train_size",
           "test_size"]


def probe_layer(forget: np.ndarray, retain: np.ndarray, inverse_regularization: float, max_iter: int,
                test_fraction: float, seed: int) -> dict:
    """Train a forget(1)-vs-retain(0) logistic probe on part of the texts and score it on the rest."""
    features = np.concatenate([forget, retain])
    labels = np.concatenate([np.ones(len(forget), dtype=int), np.zeros(len(retain), dtype=int)])
    train_x, test_x, train_y, test_y = train_test_split(features, labels, test_size=test_fraction,
                                                        stratify=labels, random_state=seed)
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=inverse_regularization, max_iter=max_iter))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # reported through the numbers, not noise
        probe.fit(train_x, train_y)
    accuracy = accuracy_score(test_y, probe.predict(test_x))
    majority = max(test_y.mean(), 1 - test_y.mean())
    return {"accuracy": accuracy, "majority_baseline": majority, "selectivity": accuracy - majority,
            "auc": roc_auc_score(test_y, probe.decision_function(test_x)),
            "train_accuracy": accuracy_score(train_y, probe.predict(train_x)),
            "train_size": len(train_y), "test_size": len(test_y)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="hub id or local model folder")
    parser.add_argument("--C", type=float, default=1.0,
                        help="inverse regularisation strength of the probe (default 1.0)")
    parser.add_argument("--max-iter", type=int, default=1000, help="probe solver iterations (default 1000)")
    parser.add_argument("--test-fraction", type=float, default=0.2,
                        help="fraction of texts held out to score the probe (default 0.2)")
    add_activation_arguments(parser)
    add_runtime_arguments(parser)
    add_output_arguments(parser)
    args = parser.parse_args()

    outdir = Path(args.outdir or model_step_dir(args.model, "linear_probes", args.output_root))
    identity = step_identity(args, "model")
    if skip_if_complete(outdir, args.force, what=f"Step 5 linear probes of {args.model}", identity=identity):
        return
    if not 0 < args.test_fraction < 1:
        raise UserError(f"--test-fraction must be between 0 and 1, got {args.test_fraction}")
    if args.C <= 0 or args.max_iter < 1:
        raise UserError("--C must be positive and --max-iter at least 1")
    files, texts = step_inputs(args, args.model)
    if min(len(split_texts) for split_texts in texts.values()) < 5:
        raise UserError("the probes need at least 5 texts per split to hold some out; raise --max-samples")
    settings = activation_settings(args)
    seed_everything(args.seed)

    with ActivationStore(settings) as store:
        activations = collect_splits(store, {"model": args.model}, files, texts)
        forget, retain = activations["model", "forget"], activations["model", "retain"]
        rows = []
        for layer in tqdm(range(forget.num_hidden_states), desc="probes", unit="layer"):
            result = probe_layer(forget.last_token(layer).numpy(), retain.last_token(layer).numpy(),
                                 args.C, args.max_iter, args.test_fraction, args.seed)
            rows.append({"layer": layer, **result})
        details = run_details(args, store, files, texts)
        print(store.summary())

    best = max(rows, key=lambda row: (row["auc"], row["accuracy"]))
    with staged_directory(outdir, identity=identity) as staging:
        write_csv(staging / "probe_results.csv", rows, COLUMNS)
        layers = [row["layer"] for row in rows]
        plot_by_layer(staging / "probe_accuracy.png", f"Forget-vs-retain linear probes: {Path(args.model).name}",
                      {"held-out accuracy": {"accuracy": (layers, [row["accuracy"] for row in rows]),
                                             "majority baseline": (layers, [row["majority_baseline"] for row in rows])},
                       "held-out AUC": {"AUC": (layers, [row["auc"] for row in rows])}},
                      ylabel="score", reference=0.5, reference_label="chance")
        write_json(staging / "summary.json", {
            "model": args.model, "probe": f"StandardScaler + LogisticRegression(C={args.C}, max_iter={args.max_iter})",
            "features": "last-token hidden state", "test_fraction": args.test_fraction, **details,
            "best_layer": best["layer"], "best_auc": best["auc"], "best_accuracy": best["accuracy"],
            "max_selectivity": max(row["selectivity"] for row in rows),
        })
    print(f"  best layer {best['layer']}: AUC {best['auc']:.3f}, accuracy {best['accuracy']:.3f} "
          f"(majority baseline {best['majority_baseline']:.3f})")
    print(f"Step 5 linear probes of {args.model} -> {outdir}")


if __name__ == "__main__":
    run_cli(main)
