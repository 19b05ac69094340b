# /// script
# requires-python = ">=3.10"
# dependencies = ["brittle[steps]"]  # the pipeline steps' one environment (pyproject.toml)
#
# [tool.uv.sources]
# brittle = { path = "..", editable = true }
# ///
"""Step 11 - Row-space projection: do forget-text activations align with the directions the
intervention modified?

At every decoder layer, ΔW = W_B - W_A of the MLP's input-side weights (GPT-NeoX `dense_h_to_4h`;
Llama-style `up_proj` and `gate_proj` stacked, since both read the MLP input; GPT-2 `c_fc`) is
decomposed as ΔW = U Σ Vᵀ. The top-k right singular vectors V_k span the input directions the update
acts on most (its principal row space). For each MLP input activation x (every real token):

    projection(x) = ‖V_kᵀ x‖² / ‖x‖²        (1 for x inside the span, k/d on average for random x)

averaged over the forget and the retain tokens, and

    selectivity = projection(forget) / projection(retain)

High selectivity with a low-rank ΔW is a surgical edit that fires only on forget-domain inputs - and
the easiest one to undo, by learning a small correction in the same subspace. Selectivity near 1 is
a blunt instrument. Both models' MLP inputs are reported: model A's (what the edit meets when applied
to the original model) and model B's (what the edited model feeds it).

The projections come from the paired statistics pass (`brittle.activations`): ΔW is read from the
two models' safetensors files and decomposed (float32, on `--device`) before the pass, and the pass
keeps, per layer and singular direction j, Σ (v_jᵀx)²/‖x‖² over the tokens. Since ‖V_kᵀx‖² =
Σ_{j≤k} (v_jᵀx)², every `--top-k` is read from the same statistics.

Writes `outputs/<a>__to__<b>/row_space_projection/projection_results.csv` (one row per layer),
`summary.json` and `row_space_projection.png`.

    uv run experiment/row_space_projection_analysis.py --model-a models/toy-base-s42 \\
        --model-b models/toy-filtered-s42 --preset toy --top-k 16
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from torch import Tensor

from brittle.activations import (
    MLP_INPUT_COMPONENTS,
    ROLES,
    ActivationStore,
    PairActivations,
    activation_settings,
    add_activation_arguments,
    collect_pairs,
    finite_or_none,
    right_singular_vectors,
    run_details,
    step_inputs,
)
from brittle.cli import UserError, add_comparison_arguments, add_output_arguments, add_runtime_arguments, run_cli
from brittle.identity import step_identity
from brittle.outputs import comparison_step_dir, skip_if_complete, staged_directory, write_csv, write_json
from brittle.plotting import plot_by_layer
from brittle.runtime import seed_everything

COLUMNS = ["layer", "top_k", "dW_rank", "dW_fro", "dW_energy_top_k", "random_baseline",
           "model_a_forget_projection", "model_a_retain_projection", "model_a_selectivity",
           "model_b_forget_projection", "model_b_retain_projection", "model_b_selectivity"]


def row_space_basis(delta: Tensor, top_k: int, device: str = "cpu") -> tuple[Tensor, Tensor, int]:
    """(V_k as (in, k) columns, all singular values, numerical rank) of ΔW; k = min(top_k, rank)."""
    right_vectors, singular_values, rank = right_singular_vectors(delta, device)
    return right_vectors[:, : min(top_k, rank)], singular_values, rank


def projection_fraction(activations: Tensor, basis: Tensor) -> float:
    """Mean over rows of ‖basisᵀ x‖² / ‖x‖² (basis: orthonormal columns); NaN for an empty basis.

    The definition, on activations held in memory; the step reads the same mean from the statistics
    pass, which accumulates it per singular direction (`brittle.activations.RowSpaceProjections`).
    """
    if basis.shape[1] == 0:
        return math.nan
    activations = activations.double()
    basis = basis.double()
    squared_norms = activations.pow(2).sum(dim=1)
    inside = (activations @ basis).pow(2).sum(dim=1)
    nonzero = squared_norms > 0
    return (inside[nonzero] / squared_norms[nonzero]).mean().item()


def selectivity(forget_projection: float, retain_projection: float) -> float:
    """forget / retain projection (NaN when undefined)."""
    if math.isnan(forget_projection) or math.isnan(retain_projection) or retain_projection == 0:
        return math.nan
    return forget_projection / retain_projection


def projection_row(layer: int, top_k: int, pairs: dict[str, PairActivations]) -> dict:
    """One row of projection_results.csv from the paired statistics (ΔW's spectrum and the projection sums)."""
    first = pairs["forget"]
    rank = int(first.tensor("dW_rank")[layer])
    k = min(top_k, rank)
    energy = first.tensor("dW_singular_values")[layer].pow(2)
    row = {"layer": layer, "top_k": k, "dW_rank": rank, "dW_fro": first.tensor("dW_fro")[layer].item(),
           "dW_energy_top_k": (energy[:k].sum() / energy.sum()).item() if rank else math.nan,
           "random_baseline": k / first.meta["in_features"]}
    for role in ROLES:
        forget, retain = (pairs[split].projection(role, layer, top_k) for split in ("forget", "retain"))
        row |= {f"{role}_forget_projection": forget, f"{role}_retain_projection": retain,
                f"{role}_selectivity": selectivity(forget, retain)}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_comparison_arguments(parser)
    parser.add_argument("--top-k", type=int, default=16,
                        help="row-space directions of ΔW to project onto, by singular value (default 16)")
    add_activation_arguments(parser)
    add_runtime_arguments(parser)
    add_output_arguments(parser)
    args = parser.parse_args()

    outdir = Path(args.outdir or comparison_step_dir(args.model_a, args.model_b, "row_space_projection",
                                                     args.output_root))
    identity = step_identity(args, "model_a", "model_b")
    if skip_if_complete(outdir, args.force, what=f"Step 11 row-space projection {args.model_a} -> {args.model_b}",
                        identity=identity):
        return
    if args.top_k < 1:
        raise UserError(f"--top-k must be at least 1, got {args.top_k}")
    files, texts = step_inputs(args, args.model_a, args.model_b)
    settings = activation_settings(args)
    seed_everything(args.seed)

    models = dict(zip(ROLES, (args.model_a, args.model_b), strict=True))
    with ActivationStore(settings) as store:
        pairs = collect_pairs(store, args.model_a, args.model_b, files, texts)
        rows = [projection_row(layer, args.top_k, pairs) for layer in range(pairs["forget"].num_layers)]
        details = run_details(args, store, files, texts)
        print(store.summary())

    names = {role: Path(model).name for role, model in models.items()}
    with staged_directory(outdir, identity=identity) as staging:
        write_csv(staging / "projection_results.csv", rows, COLUMNS)
        layers = [row["layer"] for row in rows]
        plot_by_layer(staging / "row_space_projection.png",
                      f"MLP inputs in ΔW's top-{args.top_k} row space: {names['model_a']} → {names['model_b']}", {
                          "projection ‖V_kᵀx‖²/‖x‖²": {
                              f"{names[role]} inputs, {split}": (layers,
                                                                 [row[f"{role}_{split}_projection"] for row in rows])
                              for role in ROLES for split in ("forget", "retain")}
                          | {"random k/d": (layers, [row["random_baseline"] for row in rows])},
                          "selectivity forget / retain": {
                              f"{names[role]} inputs": (layers, [row[f"{role}_selectivity"] for row in rows])
                              for role in ROLES},
                      }, ylabel="value")
        write_json(staging / "summary.json", {
            "model_a": args.model_a, "model_b": args.model_b, "top_k": args.top_k,
            "weights": "MLP input-side weights (" + ", ".join(MLP_INPUT_COMPONENTS) + "), float32", **details,
            "selectivity_by_layer": {role: [finite_or_none(row[f"{role}_selectivity"]) for row in rows]
                                     for role in ROLES},
        })
    print("  selectivity (model A inputs) by layer: "
          + " ".join(f"{row['model_a_selectivity']:.3f}" for row in rows))
    print(f"Step 11 row-space projection -> {outdir}")


if __name__ == "__main__":
    run_cli(main)
