# /// script
# requires-python = ">=3.10"
# dependencies = ["brittle[steps]"]  # the pipeline steps' one environment (pyproject.toml)
#
# [tool.uv.sources]
# brittle = { path = "..", editable = true }
# ///
"""Step 10 - MLP nullspace alignment: does ΔW lie in the null space of the original W?

Every MLP weight matrix W (out × in) of model A and its update ΔW is split, exactly, into a part in
W's column space and a part outside it (`brittle.matrix_metrics.split_by_column_space`):

    ΔW = P ΔW + (I − P) ΔW,   P = U_r U_rᵀ,   U_r = the left singular vectors holding `--rank-threshold`
                                                     (default 99%) of W's energy

| column                       | definition                       | reading                                        |
|------------------------------|----------------------------------|------------------------------------------------|
| `W_rank`                     | r, W's 99%-energy rank           | how many output directions W uses              |
| `column_space_fraction`      | ‖P ΔW‖_F² / ‖ΔW‖_F²               | "on-manifold": changes what W already writes   |
| `null_space_fraction`        | ‖(I − P) ΔW‖_F² / ‖ΔW‖_F²         | "off-manifold": writes where W writes nothing  |
| `null_space_fraction_chance` | 1 − r / out                      | what a randomly oriented ΔW would give         |
| `input_null_space_fraction`  | ‖ΔW (I − Q)‖_F² / ‖ΔW‖_F², Q = V_r V_rᵀ | the input side: reacts to inputs W ignores |
| `input_null_space_fraction_chance` | 1 − r / in                 | its chance level                               |

The two fractions of a side sum to 1 (the parts are orthogonal). A null-space fraction well above
chance means the update adds new directions without disturbing what W computed - the "unlearned"
knowledge may still flow through the same channels, with a small, removable correction beside them.
True erasure should need on-manifold change. MLP expand matrices (4h × h) have a large null space by
construction (chance ≈ 3/4), which is why every fraction is reported beside its chance level.

Outputs (`outputs/<model_a>__to__<model_b>/mlp_nullspace/`): `mlp_nullspace_results.csv` (one row per MLP
matrix), `mlp_nullspace_by_layer.csv` (energy-weighted fractions per layer), `summary.json`, plots.

    uv run experiment/mlp_nullspace_alignment.py --model-a models/toy-base-s42 --model-b models/toy-filtered-s42
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

from brittle.architecture import parameter_role
from brittle.cli import UserError, add_comparison_arguments, add_output_arguments, add_runtime_arguments, run_cli
from brittle.identity import step_identity
from brittle.matrix_metrics import frobenius_norm, ratio, split_by_column_space, split_by_row_space
from brittle.outputs import (
    comparison_step_dir,
    comparison_title,
    skip_if_complete,
    staged_directory,
    write_csv,
    write_json,
)
from brittle.plotting import plot_by_layer
from brittle.runtime import resolve_device
from brittle.weights import computation_dtype, matrix_pairs, open_checkpoint_pair

STEP_FOLDER = "mlp_nullspace"


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_comparison_arguments(parser)
    parser.add_argument("--rank-threshold", type=float, default=0.99,
                        help="share of W's energy (Σσ²) its column space must hold (default 0.99)")
    add_runtime_arguments(parser)
    add_output_arguments(parser)
    args = parser.parse_args()
    if not 0 < args.rank_threshold <= 1:
        raise UserError(f"--rank-threshold must be in (0, 1], got {args.rank_threshold}")
    args.outdir = Path(args.outdir or comparison_step_dir(args.model_a, args.model_b, STEP_FOLDER, args.output_root))
    return args


def decompose(base, modified, threshold: float) -> dict[str, float | int]:
    """Energy shares of ΔW inside and outside W's column space (output side) and row space (input side)."""
    delta = modified - base
    delta_energy = frobenius_norm(delta) ** 2
    output_side = split_by_column_space(base, delta, threshold)
    input_side = split_by_row_space(base, delta, threshold)
    out_features, in_features = base.shape
    return {
        "W_rank": output_side.rank,
        "dW_fro": delta_energy**0.5,
        "column_space_fraction": ratio(frobenius_norm(output_side.in_space) ** 2, delta_energy),
        "null_space_fraction": ratio(frobenius_norm(output_side.outside) ** 2, delta_energy),
        "null_space_fraction_chance": 1 - output_side.rank / out_features,
        "input_null_space_fraction": ratio(frobenius_norm(input_side.outside) ** 2, delta_energy),
        "input_null_space_fraction_chance": 1 - input_side.rank / in_features,
    }


def by_layer(rows: list[dict]) -> list[dict]:
    """Per layer, over all its MLP matrices: energy-weighted fractions (Σ‖(I−P)ΔWᵢ‖² / Σ‖ΔWᵢ‖²).

    Chance levels are weighted the same way: what the layer would show if each ΔWᵢ kept its size but
    pointed in a random direction.
    """
    layers: dict[int, list[dict]] = defaultdict(list)
    for row in rows:
        layers[row["layer"]].append(row)
    records = []
    for layer in sorted(layers):
        members = layers[layer]
        energy = sum(row["dW_fro"] ** 2 for row in members)

        def weighted(column: str, members: list[dict] = members, energy: float = energy) -> float:
            return ratio(sum(row[column] * row["dW_fro"] ** 2 for row in members if row["dW_fro"] > 0), energy)

        records.append({
            "layer": layer,
            "count_mats": len(members),
            "dW_fro": energy**0.5,
            "null_space_fraction": weighted("null_space_fraction"),
            "null_space_fraction_chance": weighted("null_space_fraction_chance"),
            "input_null_space_fraction": weighted("input_null_space_fraction"),
            "input_null_space_fraction_chance": weighted("input_null_space_fraction_chance"),
        })
    return records


def series_by_component(rows: list[dict], column: str) -> dict[str, tuple[list[int], list[float]]]:
    series: dict[str, tuple[list[int], list[float]]] = {}
    for row in rows:
        layers, values = series.setdefault(row["component"], ([], []))
        layers.append(row["layer"])
        values.append(row[column])
    return series


def main() -> None:
    args = parse_arguments()
    what = f"Step 10 MLP nullspace alignment of {args.model_b} vs {args.model_a}"
    identity = step_identity(args, "model_a", "model_b")
    if skip_if_complete(args.outdir, args.force, what=what, identity=identity):
        return
    checkpoint_a, checkpoint_b = open_checkpoint_pair(args.model_a, args.model_b)
    device, dtype = resolve_device(args.device), computation_dtype(args.dtype)
    names = [name for name in checkpoint_a.matrix_names() if parameter_role(name).group == "mlp"]
    if not names:
        raise UserError("the models have no MLP weight matrices that this toolkit recognises "
                        "(GPT-NeoX, Llama-style and GPT-2-style names are supported)")
    start = time.perf_counter()

    rows = []
    for pair in matrix_pairs(checkpoint_a, checkpoint_b, names, device, dtype, description="MLP matrices"):
        rows.append({"name": pair.name, "layer": pair.role.layer, "component": pair.role.component,
                     "shape0": pair.base.shape[0], "shape1": pair.base.shape[1],
                     **decompose(pair.base, pair.modified, args.rank_threshold)})
        del pair  # before the next pair is read: two matrices in memory, not four
    layers = by_layer(rows)
    seconds = time.perf_counter() - start
    whole = by_layer([{**row, "layer": -1} for row in rows])[0]
    summary = {"model_a": args.model_a, "model_b": args.model_b, "mlp_matrices": len(rows),
               "null_space_fraction": whole["null_space_fraction"],
               "null_space_fraction_chance": whole["null_space_fraction_chance"],
               "input_null_space_fraction": whole["input_null_space_fraction"],
               "input_null_space_fraction_chance": whole["input_null_space_fraction_chance"],
               "settings": {"rank_threshold": args.rank_threshold}, "seconds": round(seconds, 1)}

    title = comparison_title(args.model_a, args.model_b)
    x_values = [row["layer"] for row in layers]
    with staged_directory(args.outdir, identity=identity) as staging:
        write_csv(staging / "mlp_nullspace_results.csv", rows)
        write_csv(staging / "mlp_nullspace_by_layer.csv", layers)
        write_json(staging / "summary.json", summary)
        plot_by_layer(staging / "null_space_fraction.png", f"MLP ΔW outside W's column space: {title}", {
            "all MLP matrices of the layer": {
                "measured": (x_values, [row["null_space_fraction"] for row in layers]),
                "chance (random ΔW)": (x_values, [row["null_space_fraction_chance"] for row in layers])},
            "by matrix": series_by_component(rows, "null_space_fraction")},
            ylabel="‖(I − P) ΔW‖_F² / ‖ΔW‖_F²")
        plot_by_layer(staging / "input_null_space_fraction.png", f"MLP ΔW acting on W's null space: {title}", {
            "all MLP matrices of the layer": {
                "measured": (x_values, [row["input_null_space_fraction"] for row in layers]),
                "chance (random ΔW)": (x_values, [row["input_null_space_fraction_chance"] for row in layers])},
            "by matrix": series_by_component(rows, "input_null_space_fraction")},
            ylabel="‖ΔW (I − Q)‖_F² / ‖ΔW‖_F²")
    print(f"Step 10: {len(rows)} MLP matrices; {summary['null_space_fraction']:.3f} of ΔW's energy outside W's "
          f"column space (chance {summary['null_space_fraction_chance']:.3f}) ({seconds:.0f} s) -> {args.outdir}")


if __name__ == "__main__":
    run_cli(main)
