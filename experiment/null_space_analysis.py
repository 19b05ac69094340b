# /// script
# requires-python = ">=3.10"
# dependencies = ["brittle[steps]"]  # the pipeline steps' one environment (pyproject.toml)
#
# [tool.uv.sources]
# brittle = { path = "..", editable = true }
# ///
"""Step 7 - Null space & subspace analysis: is the update low-rank, and do the principal subspaces shift?

For `--num-samples` attention/MLP weight matrices drawn with `--seed` (all of them when the model
has fewer), a full SVD of ΔW, W_base and W_modified gives:

| column                        | definition                                      | reading                      |
|-------------------------------|-------------------------------------------------|------------------------------|
| `dW_top_k_energy_ratio`       | (σ₁² + … + σ_k²) / Σ σᵢ² of ΔW, k = `--top-k`   | high: a very low-rank update |
| `dW_effective_rank`           | min r: σ₁² + … + σ_r² ≥ 0.99 Σ σᵢ² of ΔW         | dimensions the update needs  |
| `dW_effective_rank_fraction`  | `dW_effective_rank` / min(out, in)              | the same, size-free          |
| `W_effective_rank`            | the same for W_base                             | baseline                     |
| `grassmann_distance_out`      | ‖θ‖₂ over the principal angles θ (below)        | 0: same; √k·π/2: orthogonal  |
| `subspace_alignment_out`      | mean cos² θ over those angles                   | 1: same; 0: orthogonal       |
| `*_in`                        | the same for the right (input-side) vectors     |                              |

θ are the principal angles between the span of W_base's top-k left singular vectors and that of
W_modified's (cos θᵢ = the singular values of U_baseᵀ U_modified).

A low-rank ΔW with high alignment is a small nudge inside the existing computation: the matrix uses
the same directions, only with different gains. That is the geometric signature of brittleness - a
small counter-perturbation (fine-tuning) can undo it.

Outputs (`outputs/<model_a>__to__<model_b>/null_space_analysis/`): `null_space_results.csv` (one row
per sampled matrix), `summary.json` (means per group) and plots (per-layer means by group).

    uv run experiment/null_space_analysis.py --model-a models/toy-base-s42 --model-b models/toy-filtered-s42
"""

from __future__ import annotations

import argparse
import math
import random
import time
from collections import defaultdict
from pathlib import Path

import torch

from brittle.architecture import parameter_role
from brittle.cli import (
    UserError,
    add_comparison_arguments,
    add_output_arguments,
    add_runtime_arguments,
    positive_int,
    run_cli,
)
from brittle.identity import step_identity
from brittle.matrix_metrics import energy_rank, grassmann_distance, subspace_alignment, top_k_energy_ratio
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

STEP_FOLDER = "null_space_analysis"
GROUP_LABELS = {"attn": "attention", "mlp": "MLP"}


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_comparison_arguments(parser)
    parser.add_argument("--num-samples", type=positive_int, default=50,
                        help="attention/MLP weight matrices to analyse, drawn with --seed (default 50)")
    parser.add_argument("--top-k", type=positive_int, default=10,
                        help="singular directions for the energy ratio and the subspace comparison (default 10)")
    parser.add_argument("--energy-threshold", type=float, default=0.99,
                        help="share of Σσ² that the effective rank must hold (default 0.99)")
    add_runtime_arguments(parser)
    add_output_arguments(parser)
    args = parser.parse_args()
    if not 0 < args.energy_threshold <= 1:
        raise UserError(f"--energy-threshold must be in (0, 1], got {args.energy_threshold}")
    args.outdir = Path(args.outdir or comparison_step_dir(args.model_a, args.model_b, STEP_FOLDER, args.output_root))
    return args


def sample_matrices(names: list[str], count: int, seed: int) -> list[str]:
    """`count` attention/MLP weight matrices drawn with `seed` (all when there are fewer), in model order."""
    candidates = [name for name in names if parameter_role(name).group in ("attn", "mlp")]
    if not candidates:
        raise UserError("the models have no attention or MLP weight matrices that this toolkit recognises "
                        "(GPT-NeoX, Llama-style and GPT-2-style names are supported)")
    chosen = set(random.Random(seed).sample(candidates, min(count, len(candidates))))
    return [name for name in candidates if name in chosen]


def analyse_matrix(base: torch.Tensor, modified: torch.Tensor, top_k: int, threshold: float) -> dict[str, float | int]:
    """Spectrum of ΔW and the shift of W's top-k singular subspaces, from full SVDs."""
    delta_singular_values = torch.linalg.svdvals(modified - base)
    base_left, base_singular_values, base_right_t = torch.linalg.svd(base, full_matrices=False)
    modified_left, _, modified_right_t = torch.linalg.svd(modified, full_matrices=False)
    k = min(top_k, *base.shape)
    delta_rank = energy_rank(delta_singular_values, threshold)
    return {
        "top_k": k,
        "dW_top_k_energy_ratio": top_k_energy_ratio(delta_singular_values, k),
        "dW_effective_rank": delta_rank,
        "dW_effective_rank_fraction": delta_rank / min(base.shape),
        "W_effective_rank": energy_rank(base_singular_values, threshold),
        "grassmann_distance_out": grassmann_distance(base_left[:, :k], modified_left[:, :k]),
        "subspace_alignment_out": subspace_alignment(base_left[:, :k], modified_left[:, :k]),
        "grassmann_distance_in": grassmann_distance(base_right_t[:k].T, modified_right_t[:k].T),
        "subspace_alignment_in": subspace_alignment(base_right_t[:k].T, modified_right_t[:k].T),
    }


def group_means(rows: list[dict], column: str) -> dict[str, tuple[list[int], list[float]]]:
    """{group label: (layers, mean of `column` over the layer's sampled matrices)} for the plots."""
    values: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        if not math.isnan(row[column]):
            values[GROUP_LABELS[row["group"]]][row["layer"]].append(row[column])
    return {group: (sorted(by_layer), [sum(by_layer[layer]) / len(by_layer[layer]) for layer in sorted(by_layer)])
            for group, by_layer in values.items()}


def summarise(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Mean of every metric per group (and over all sampled matrices)."""
    metrics = ["dW_top_k_energy_ratio", "dW_effective_rank", "dW_effective_rank_fraction", "grassmann_distance_out",
               "subspace_alignment_out", "grassmann_distance_in", "subspace_alignment_in"]
    summary = {}
    for group in ("attn", "mlp", "all"):
        members = [row for row in rows if group in ("all", row["group"])]
        if members:
            summary[group] = {"matrices": len(members),
                              **{metric: _nanmean([row[metric] for row in members]) for metric in metrics}}
    return summary


def _nanmean(values: list[float]) -> float:
    finite = [value for value in values if not math.isnan(value)]
    return sum(finite) / len(finite) if finite else math.nan


def main() -> None:
    args = parse_arguments()
    what = f"Step 7 null-space analysis of {args.model_b} vs {args.model_a}"
    identity = step_identity(args, "model_a", "model_b")
    if skip_if_complete(args.outdir, args.force, what=what, identity=identity):
        return
    checkpoint_a, checkpoint_b = open_checkpoint_pair(args.model_a, args.model_b)
    device, dtype = resolve_device(args.device), computation_dtype(args.dtype)
    names = sample_matrices(checkpoint_a.matrix_names(), args.num_samples, args.seed)
    start = time.perf_counter()

    rows = []
    for pair in matrix_pairs(checkpoint_a, checkpoint_b, names, device, dtype, description="SVDs"):
        rows.append({"name": pair.name, "layer": pair.role.layer, "group": pair.role.group,
                     "component": pair.role.component, "shape0": pair.base.shape[0], "shape1": pair.base.shape[1],
                     **analyse_matrix(pair.base, pair.modified, args.top_k, args.energy_threshold)})
        del pair  # before the next pair is read: two matrices in memory, not four
    seconds = time.perf_counter() - start
    summary = {"model_a": args.model_a, "model_b": args.model_b, "sampled_matrices": len(rows),
               "candidate_matrices": sum(parameter_role(name).group in ("attn", "mlp")
                                         for name in checkpoint_a.matrix_names()),
               "settings": {"num_samples": args.num_samples, "top_k": args.top_k,
                            "energy_threshold": args.energy_threshold, "seed": args.seed},
               "means": summarise(rows), "seconds": round(seconds, 1)}

    title = comparison_title(args.model_a, args.model_b)
    with staged_directory(args.outdir, identity=identity) as staging:
        write_csv(staging / "null_space_results.csv", rows)
        write_json(staging / "summary.json", summary)
        plot_by_layer(staging / "energy_ratio.png", f"Energy of ΔW in its top {args.top_k} directions: {title}",
                      {"top-k energy ratio of ΔW": group_means(rows, "dW_top_k_energy_ratio")},
                      ylabel="(σ₁² + … + σ_k²) / Σσ²", reference=1.0, reference_label="all energy")
        plot_by_layer(staging / "effective_rank.png", f"Effective rank of ΔW ({args.energy_threshold:.0%}): {title}",
                      {"effective rank / min(out, in)": group_means(rows, "dW_effective_rank_fraction")},
                      ylabel="fraction of the full rank")
        plot_by_layer(staging / "subspace_alignment.png", f"Top-{args.top_k} subspace alignment, W_base vs W_modified: "
                      f"{title}", {"output side (left singular vectors)": group_means(rows, "subspace_alignment_out"),
                                   "input side (right singular vectors)": group_means(rows, "subspace_alignment_in")},
                      ylabel="mean cos² of the principal angles", reference=1.0, reference_label="same subspace")
    means = summary["means"]["all"]
    print(f"Step 7: {len(rows)} matrices; ΔW top-{args.top_k} energy {means['dW_top_k_energy_ratio']:.3f}, "
          f"output-subspace alignment {means['subspace_alignment_out']:.3f} ({seconds:.0f} s) -> {args.outdir}")


if __name__ == "__main__":
    run_cli(main)
