# /// script
# requires-python = ">=3.10"
# dependencies = ["brittle"]
#
# [tool.uv.sources]
# brittle = { path = "..", editable = true }
# ///
"""Step 3 - Activation norms: does the intervention globally suppress or amplify activations?

For every layer (0 = embeddings, N = the final output, already through the final norm) and both
splits, the mean per-token norms of model A's and model B's hidden states and of their difference
Δh = h_B - h_A on the same tokens, averaged over every real token (the attention-mask-weighted mean):

| norm | per token           | what it captures                                              |
|------|---------------------|---------------------------------------------------------------|
| L1   | Σ_i |h_i|           | total activation mass: diffuse, low-magnitude changes         |
| L2   | sqrt(Σ_i h_i²)      | magnitude: dominated by the largest components                |

Norms are not divided by the hidden size: the models share an architecture, so they compare directly.
Similar norms for A and B with a large ‖Δh‖ mean the intervention changed *directions*, not magnitudes;
large ‖Δh‖ on forget text with small ‖Δh‖ on retain text is a targeted change.

Writes `outputs/<a>__to__<b>/activation_comparison/activation_comparison.csv` (one row per layer and
split, the deep-ignorance study's columns) and `summary.json`, and
`outputs/<a>__to__<b>/activation_plots/` (`activation_norms_<split>.png`, `activation_diffs.png`).

    uv run experiment/collect_activation_comparison.py --model-a models/toy-base-s42 \\
        --model-b models/toy-filtered-s42 --preset toy
"""

from __future__ import annotations

import argparse
from pathlib import Path

from torch import Tensor

from brittle.activations import (
    ActivationStore,
    activation_settings,
    add_activation_arguments,
    check_same_architecture,
    check_same_tokens,
    collect_splits,
    run_details,
    step_inputs,
)
from brittle.cli import add_comparison_arguments, add_output_arguments, add_runtime_arguments, run_cli
from brittle.identity import step_identity
from brittle.outputs import comparison_step_dir, skip_if_complete, staged_directory, write_csv, write_json
from brittle.plotting import plot_by_layer
from brittle.runtime import seed_everything

COLUMNS = ["layer", "split", "model_a_norm_L1", "model_a_norm_L2", "model_b_norm_L1", "model_b_norm_L2",
           "mean_dh_L1", "mean_dh_L2"]


def mean_norms(hidden: Tensor) -> tuple[float, float]:
    """Mean per-token L1 and L2 norms of (tokens, hidden) activations."""
    hidden = hidden.double()
    return hidden.abs().sum(dim=-1).mean().item(), hidden.norm(dim=-1).mean().item()


def norm_row(layer: int, split: str, hidden_a: Tensor, hidden_b: Tensor) -> dict:
    """One row of activation_comparison.csv: norms of h_A, h_B and Δh = h_B - h_A on the same tokens."""
    a_l1, a_l2 = mean_norms(hidden_a)
    b_l1, b_l2 = mean_norms(hidden_b)
    dh_l1, dh_l2 = mean_norms(hidden_b - hidden_a)
    return {"layer": layer, "split": split, "model_a_norm_L1": a_l1, "model_a_norm_L2": a_l2,
            "model_b_norm_L1": b_l1, "model_b_norm_L2": b_l2, "mean_dh_L1": dh_l1, "mean_dh_L2": dh_l2}


def plot_norms(plots_dir: Path, rows: list[dict], splits: list[str], name_a: str, name_b: str) -> None:
    """activation_norms_<split>.png (A vs B, L1 and L2 side by side) and activation_diffs.png."""
    def series(split: str, column: str) -> tuple[list[int], list[float]]:
        selected = [row for row in rows if row["split"] == split]
        return [row["layer"] for row in selected], [row[column] for row in selected]

    for split in splits:
        plot_by_layer(plots_dir / f"activation_norms_{split}.png", f"Hidden-state norms on {split} text",
                      {norm: {name_a: series(split, f"model_a_norm_{norm}"),
                              name_b: series(split, f"model_b_norm_{norm}")} for norm in ("L1", "L2")},
                      ylabel="mean norm per token")
    plot_by_layer(plots_dir / "activation_diffs.png", f"‖h_B − h_A‖ per token: {name_a} → {name_b}",
                  {f"‖Δh‖ {norm}": {split: series(split, f"mean_dh_{norm}") for split in splits}
                   for norm in ("L1", "L2")}, ylabel="mean norm of the difference per token")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_comparison_arguments(parser)
    add_activation_arguments(parser)
    add_runtime_arguments(parser)
    add_output_arguments(parser)
    args = parser.parse_args()

    outdir = Path(args.outdir or comparison_step_dir(args.model_a, args.model_b, "activation_comparison",
                                                     args.output_root))
    plots_dir = outdir.parent / "activation_plots"
    identity = step_identity(args, "model_a", "model_b")
    if skip_if_complete(outdir, args.force, what=f"Step 3 activation norms {args.model_a} -> {args.model_b}",
                        identity=identity):
        return
    files, texts = step_inputs(args, args.model_a, args.model_b)
    settings = activation_settings(args)
    seed_everything(args.seed)

    with ActivationStore(settings) as store:
        activations = collect_splits(store, {"a": args.model_a, "b": args.model_b}, files, texts)
        rows = []
        for split in texts:
            first, second = activations["a", split], activations["b", split]
            check_same_architecture(first, second)
            check_same_tokens(first, second)
            rows += [norm_row(layer, split, first.hidden(layer), second.hidden(layer))
                     for layer in range(first.num_hidden_states)]
        details = run_details(args, store, files, texts)
        print(store.summary())

    with staged_directory(outdir, identity=identity) as staging, \
            staged_directory(plots_dir, identity=identity) as plots_staging:
        write_csv(staging / "activation_comparison.csv", rows, COLUMNS)
        plot_norms(plots_staging, rows, list(texts), Path(args.model_a).name, Path(args.model_b).name)
        by_split = {split: [row for row in rows if row["split"] == split] for split in texts}
        write_json(staging / "summary.json", {
            "model_a": args.model_a, "model_b": args.model_b, **details,
            "mean_over_layers": {split: {column: sum(row[column] for row in split_rows) / len(split_rows)
                                         for column in COLUMNS[2:]} for split, split_rows in by_split.items()},
        })
    for split, split_rows in by_split.items():
        print(f"  {split}: mean ‖Δh‖₂ per token over layers "
              f"{sum(row['mean_dh_L2'] for row in split_rows) / len(split_rows):.4f}")
    print(f"Step 3 activation norms -> {outdir} (plots in {plots_dir})")


if __name__ == "__main__":
    run_cli(main)
