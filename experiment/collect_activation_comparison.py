# /// script
# requires-python = ">=3.10"
# dependencies = ["brittle[steps]"]  # the pipeline steps' one environment (pyproject.toml)
#
# [tool.uv.sources]
# brittle = { path = "..", editable = true }
# ///
"""Step 3 - Activation norms: does the intervention globally suppress or amplify activations?

For every layer (0 = embeddings, N = the final output, already through the final norm) and both
splits, the mean per-token norms of model A's and model B's hidden states and of their difference
Δh = h_B - h_A on the same tokens, averaged over every real token (the attention-mask-weighted mean).
A and B run in lockstep on the same batches (`brittle.activations`, the paired statistics pass), so
only the sums of the norms are kept:

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

from brittle.activations import (
    ActivationStore,
    PairActivations,
    activation_settings,
    add_activation_arguments,
    collect_pairs,
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


def norm_row(layer: int, split: str, pair: PairActivations) -> dict:
    """One row of activation_comparison.csv: mean norms of h_A, h_B and Δh = h_B - h_A on the same tokens,
    from the per-token norm sums the paired statistics pass accumulated."""
    norms = pair.norms(layer)
    return {"layer": layer, "split": split,
            "model_a_norm_L1": norms["model_a"][0], "model_a_norm_L2": norms["model_a"][1],
            "model_b_norm_L1": norms["model_b"][0], "model_b_norm_L2": norms["model_b"][1],
            "mean_dh_L1": norms["dh"][0], "mean_dh_L2": norms["dh"][1]}


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
        pairs = collect_pairs(store, args.model_a, args.model_b, files, texts)
        rows = [norm_row(layer, split, pair) for split, pair in pairs.items()
                for layer in range(pair.num_hidden_states)]
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
