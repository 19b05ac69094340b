# /// script
# requires-python = ">=3.10"
# dependencies = ["brittle"]
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

Writes `outputs/<a>__to__<b>/row_space_projection/projection_results.csv` (one row per layer),
`summary.json` and `row_space_projection.png`. Weight differences are taken in float32 on the CPU;
the SVD runs on `--device`.

    uv run experiment/row_space_projection_analysis.py --model-a models/toy-base-s42 \\
        --model-b models/toy-filtered-s42 --preset toy --top-k 16
"""

from __future__ import annotations

import argparse
import gc
import math
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from brittle.activations import (
    ActivationStore,
    activation_settings,
    add_activation_arguments,
    check_same_architecture,
    collect_splits,
    finite_or_none,
    run_details,
    step_inputs,
)
from brittle.architecture import as_output_by_input, parameter_role
from brittle.cli import UserError, add_comparison_arguments, add_output_arguments, add_runtime_arguments, run_cli
from brittle.identity import step_identity
from brittle.models import load_model
from brittle.outputs import comparison_step_dir, skip_if_complete, staged_directory, write_csv, write_json
from brittle.plotting import plot_by_layer
from brittle.runtime import resolve_device, seed_everything

ROLES = ("model_a", "model_b")
MLP_INPUT_COMPONENTS = ("mlp_expand", "mlp_gate")  # the weights that read the MLP input
COLUMNS = ["layer", "top_k", "dW_rank", "dW_fro", "dW_energy_top_k", "random_baseline",
           "model_a_forget_projection", "model_a_retain_projection", "model_a_selectivity",
           "model_b_forget_projection", "model_b_retain_projection", "model_b_selectivity"]


def mlp_input_weights(model_name: str) -> dict[int, Tensor]:
    """{layer: the MLP's input-side weights as one (out, in) float32 matrix}, read from the model."""
    model = load_model(model_name, device="cpu", dtype="fp32")
    pieces: dict[int, list[Tensor]] = {}
    for name, parameter in model.named_parameters():
        role = parameter_role(name)
        if role.component in MLP_INPUT_COMPONENTS and name.endswith("weight") and role.layer >= 0:
            pieces.setdefault(role.layer, []).append(as_output_by_input(name, parameter.detach()).clone())
    del model
    gc.collect()
    if not pieces:
        raise UserError(f"found no MLP input weights in {model_name}; only GPT-NeoX, Llama-style and GPT-2-style "
                        "architectures are supported")
    return {layer: torch.cat(matrices) for layer, matrices in sorted(pieces.items())}


def row_space_basis(delta: Tensor, top_k: int, device: str = "cpu") -> tuple[Tensor, Tensor, int]:
    """(V_k as (in, k) columns, all singular values, numerical rank) of ΔW; k = min(top_k, rank)."""
    _, singular_values, right_vectors = torch.linalg.svd(delta.to(device), full_matrices=False)
    singular_values, right_vectors = singular_values.cpu(), right_vectors.cpu()
    rank = 0
    if singular_values.numel() and singular_values.max() > 0:
        tolerance = singular_values.max() * max(delta.shape) * torch.finfo(delta.dtype).eps
        rank = int((singular_values > tolerance).sum())
    return right_vectors[: min(top_k, rank)].T, singular_values, rank


def projection_fraction(activations: Tensor, basis: Tensor) -> float:
    """Mean over rows of ‖basisᵀ x‖² / ‖x‖² (basis: orthonormal columns); NaN for an empty basis."""
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
    device = resolve_device(args.device)
    seed_everything(args.seed)

    models = dict(zip(ROLES, (args.model_a, args.model_b), strict=True))
    with ActivationStore(settings) as store:
        activations = collect_splits(store, models, files, texts)
        check_same_architecture(activations["model_a", "forget"], activations["model_b", "forget"])
        store.release_model()  # free the last model before the weights are read
        weights_a = mlp_input_weights(args.model_a)
        weights_b = mlp_input_weights(args.model_b)
        if weights_a.keys() != weights_b.keys() or any(weights_a[layer].shape != weights_b[layer].shape
                                                       for layer in weights_a):
            raise UserError(f"{args.model_a} and {args.model_b} have different MLP shapes; compare models that "
                            "share an architecture")
        rows = []
        for layer in tqdm(weights_a, desc="row-space projections", unit="layer"):
            delta = weights_b[layer] - weights_a[layer]
            basis, singular_values, rank = row_space_basis(delta, args.top_k, device)
            energy = singular_values.pow(2)
            row = {"layer": layer, "top_k": basis.shape[1], "dW_rank": rank, "dW_fro": delta.norm().item(),
                   "dW_energy_top_k": (energy[: basis.shape[1]].sum() / energy.sum()).item() if rank else math.nan,
                   "random_baseline": basis.shape[1] / delta.shape[1]}
            for role in ROLES:
                forget = projection_fraction(activations[role, "forget"].mlp_input(layer), basis)
                retain = projection_fraction(activations[role, "retain"].mlp_input(layer), basis)
                row |= {f"{role}_forget_projection": forget, f"{role}_retain_projection": retain,
                        f"{role}_selectivity": selectivity(forget, retain)}
            rows.append(row)
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
