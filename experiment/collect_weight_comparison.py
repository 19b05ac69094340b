# /// script
# requires-python = ">=3.10"
# dependencies = ["brittle[steps]"]  # the pipeline steps' one environment (pyproject.toml)
#
# [tool.uv.sources]
# brittle = { path = "..", editable = true }
# ///
"""Step 1 - Parameter statistics: how large is the intervention, and where is it concentrated?

For every weight matrix W of model A (the reference) and ΔW = W_B − W_A:

| column             | formula                               | what it tells you                                |
|--------------------|---------------------------------------|--------------------------------------------------|
| `dW_fro_rel`       | ‖ΔW‖_F / ‖W‖_F                        | the fraction of the weight that moved            |
| `dW_fro`, `W_fro`  | √(Σᵢⱼ ΔWᵢⱼ²), √(Σᵢⱼ Wᵢⱼ²)             | raw magnitudes                                   |
| `dW_spectral_rel`  | σ₁(ΔW) / σ₁(W)  (block power iteration) | worst-case amplification along one direction   |
| `dW_stable_rank`   | ‖ΔW‖_F² / σ₁(ΔW)²                     | dimensionality of the update (≈1: rank-1 spike)  |
| `W_stable_rank`    | ‖W‖_F² / σ₁(W)²                       | the weight's own dimensionality, for comparison  |
| `*_empirical_rank` | min k: σ₁² + … + σ_k² ≥ 0.99 Σ σᵢ²    | opt-in (`--empirical-rank`): needs a full SVD     |

Outputs (`outputs/<model_a>__to__<model_b>/`):

    weight_comparison/per_matrix.csv        one row per weight matrix (the deep-ignorance study's columns)
    weight_comparison/per_layer.csv         per (layer, group): root-sum-square norms, max spectral, mean ranks
    weight_comparison/per_component.csv     per (layer, component): q, k, v (fused q/k/v weights split),
                                            attn_out, mlp_expand, mlp_gate, mlp_contract, embed, unembed
    weight_comparison/per_coarse_layer.csv  per layer, all its matrices together (the coarsest locality view)
    weight_comparison/summary.json          whole-model totals, settings, biases and norm gains
    weight_comparison/per_network.csv       vision-language models only: the vision tower, the projector and
                                            the language model, each as one group (also in summary.json)
    param_plots/                            layer locality, spectral norm, stable rank, rank comparison,
                                            component locality (PNG)

A vision-language model (a config with a `vision_config`, e.g. LLaVA) holds three networks, told apart by
their parameter names (`brittle.architecture.parameter_modality`): every table then gains a `network`
column, its layers are numbered within their network, and per_network.csv adds one row per network.
Text models' outputs are unchanged.

Memory: the weights stream from the two checkpoints' safetensors files one tensor pair at a time
(`brittle.weights`), so a 7B comparison needs about two matrices of memory, not two models.

    uv run experiment/collect_weight_comparison.py --model-a EleutherAI/deep-ignorance-unfiltered \\
        --model-b EleutherAI/deep-ignorance-e2e-strong-filter
    uv run experiment/collect_weight_comparison.py --model-a models/toy-base-s42 --model-b models/toy-filtered-s42
"""

from __future__ import annotations

import argparse
import math
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from brittle.architecture import MODALITY_PREFIXES, parameter_modality, split_fused_qkv
from brittle.cli import add_comparison_arguments, add_output_arguments, add_runtime_arguments, positive_int, run_cli
from brittle.identity import step_identity
from brittle.matrix_metrics import energy_rank, frobenius_norm, ratio, spectral_norm, stable_rank
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
from brittle.weights import MatrixPair, computation_dtype, matrix_pairs, open_checkpoint_pair

STEP_FOLDER = "weight_comparison"
PLOT_FOLDER = "param_plots"
METRIC_COLUMNS = ["dW_fro", "W_fro", "dW_fro_rel", "dW_spectral", "W_spectral", "dW_spectral_rel",
                  "dW_stable_rank", "W_stable_rank"]
EMPIRICAL_COLUMNS = ["dW_empirical_rank", "W_empirical_rank"]
PER_MATRIX_COLUMNS = ["name", "layer", "group", "shape0", "shape1", *METRIC_COLUMNS]
PER_COMPONENT_COLUMNS = ["name", "layer", "group", "component", "shape0", "shape1", *METRIC_COLUMNS]
AGGREGATE_COLUMNS = ["dW_fro_layer", "W_fro_layer", "dW_fro_layer_rel", "max_dW_spectral", "max_W_spectral",
                     "max_dW_spectral_rel", "mean_dW_stable_rank"]
GROUP_ORDER = {"embed": 0, "attn": 1, "mlp": 2, "norm": 3, "other": 4}
# A vision-language model's networks in the order its input flows through them.
NETWORK_ORDER = {network: index for index, network in enumerate(dict.fromkeys(m for _, m in MODALITY_PREFIXES))}
GROUP_LABELS = {"attn": "attention", "mlp": "MLP"}


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_comparison_arguments(parser)
    parser.add_argument("--empirical-rank", action="store_true",
                        help="also compute the 99%%-energy rank of ΔW and W (a full SVD per matrix: slow)")
    parser.add_argument("--power-iterations", type=positive_int, default=100,
                        help="maximum block power iterations per spectral norm (default 100; stops earlier "
                             "once the estimate changes by less than 1e-6)")
    parser.add_argument("--plot-dir", default=None,
                        help=f"folder for the plots (default: {PLOT_FOLDER}/ beside the output folder)")
    add_runtime_arguments(parser)
    add_output_arguments(parser)
    parser.set_defaults(dtype="auto")
    args = parser.parse_args()
    args.outdir = Path(args.outdir or comparison_step_dir(args.model_a, args.model_b, STEP_FOLDER, args.output_root))
    args.plot_dir = Path(args.plot_dir or args.outdir.parent / PLOT_FOLDER)
    return args


# ---- the per-matrix measurements ------------------------------------------------------------------------------

def matrix_statistics(weight: Tensor, delta: Tensor, seed: int, power_iterations: int,
                      empirical: bool) -> dict[str, float | int]:
    """The deep-ignorance study's table for one matrix W (out × in) and its update ΔW."""
    delta_fro, weight_fro = frobenius_norm(delta), frobenius_norm(weight)
    delta_spectral = spectral_norm(delta, max_iterations=power_iterations, seed=seed)
    weight_spectral = spectral_norm(weight, max_iterations=power_iterations, seed=seed)
    statistics: dict[str, float | int] = {
        "dW_fro": delta_fro,
        "W_fro": weight_fro,
        "dW_fro_rel": ratio(delta_fro, weight_fro),
        "dW_spectral": delta_spectral,
        "W_spectral": weight_spectral,
        "dW_spectral_rel": ratio(delta_spectral, weight_spectral),
        "dW_stable_rank": stable_rank(delta_fro, delta_spectral),
        "W_stable_rank": stable_rank(weight_fro, weight_spectral),
    }
    if empirical:
        statistics["dW_empirical_rank"] = energy_rank(torch.linalg.svdvals(delta))
        statistics["W_empirical_rank"] = energy_rank(torch.linalg.svdvals(weight))
    return statistics


def component_rows(pair: MatrixPair, identity: dict, delta: Tensor, statistics: dict, num_heads: int | None,
                   args: argparse.Namespace) -> list[dict]:
    """per_component.csv rows of one matrix (`identity`: its name, network, layer and group): itself, or its
    q, k and v parts when it is a fused q/k/v weight."""
    weight_parts = split_fused_qkv(pair.name, pair.base, num_heads)
    if not weight_parts:
        return [{**identity, "component": pair.role.component, "shape0": pair.base.shape[0],
                 "shape1": pair.base.shape[1], **statistics}]
    delta_parts = split_fused_qkv(pair.name, delta, num_heads)
    return [{**identity, "component": component, "shape0": weight_part.shape[0], "shape1": weight_part.shape[1],
             **matrix_statistics(weight_part, delta_parts[component], args.seed, args.power_iterations,
                                 args.empirical_rank)}
            for component, weight_part in weight_parts.items()]


# ---- aggregation ------------------------------------------------------------------------------------------------

def aggregate(rows: Sequence[dict], fields: tuple[str, ...], empirical: bool) -> list[dict]:
    """Group per-matrix rows by `fields` (e.g. layer and group) and aggregate each group as per_layer.csv does.

    Norms add as root-sum-squares (√Σ‖ΔWᵢ‖_F² is the Frobenius norm of all the group's matrices taken
    together); spectral norms take the maximum; ranks are averaged.
    """
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[tuple(row[field] for field in fields)].append(row)
    aggregated = []
    for values in sorted(groups, key=lambda values: sort_key(fields, values)):
        members = groups[values]
        delta_fro = math.sqrt(sum(row["dW_fro"] ** 2 for row in members))
        weight_fro = math.sqrt(sum(row["W_fro"] ** 2 for row in members))
        max_delta_spectral = max(row["dW_spectral"] for row in members)
        max_weight_spectral = max(row["W_spectral"] for row in members)
        record = {
            **dict(zip(fields, values, strict=True)),
            "dW_fro_layer": delta_fro,
            "W_fro_layer": weight_fro,
            "dW_fro_layer_rel": ratio(delta_fro, weight_fro),
            "max_dW_spectral": max_delta_spectral,
            "max_W_spectral": max_weight_spectral,
            "max_dW_spectral_rel": ratio(max_delta_spectral, max_weight_spectral),
            "mean_dW_stable_rank": mean(row["dW_stable_rank"] for row in members),
        }
        if empirical:
            record["mean_dW_empirical_rank"] = mean(row["dW_empirical_rank"] for row in members)
        record["count_mats"] = len(members)
        aggregated.append(record)
    return aggregated


def sort_key(fields: tuple[str, ...], values: tuple) -> tuple:
    """Networks in input order (vision tower, projector, language model); layers in numeric order; within a
    layer, embeddings, attention, MLP, then the rest."""
    orders = {"group": GROUP_ORDER, "network": NETWORK_ORDER}
    return tuple(orders[field].get(value, len(orders[field])) if field in orders else value
                 for field, value in zip(fields, values, strict=True))


def mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else math.nan


# ---- plots ------------------------------------------------------------------------------------------------------

def network_prefix(row: dict) -> str:
    """`vision tower: ` for a row of a vision-language model, so its series are not merged with the language
    model's layers of the same number; "" for a text model."""
    return f"{row['network']}: " if "network" in row else ""


def by_layer(rows: Sequence[dict], column: str, field: str = "group") -> dict[str, tuple[list[int], list[float]]]:
    """{group: (layers, values)} over the decoder layers (layer ≥ 0), for `plot_by_layer`."""
    series: dict[str, tuple[list[int], list[float]]] = {}
    for row in rows:
        if row["layer"] < 0 or row.get(field) in (None, "embed", "norm", "other"):
            continue
        layers, values = series.setdefault(network_prefix(row) + GROUP_LABELS.get(row[field], row[field]), ([], []))
        layers.append(row["layer"])
        values.append(row[column])
    return series


def write_plots(plot_dir: Path, title: str, per_matrix: list[dict], per_layer: list[dict], per_component: list[dict],
                per_coarse_layer: list[dict], empirical: bool) -> None:
    """The Step 1 figures: where the change is (locality), how sharp (spectral) and how many-dimensional (rank)."""
    coarse: dict[str, tuple[list[int], list[float]]] = {}
    for row in per_coarse_layer:
        if row["layer"] >= 0:
            layers, values = coarse.setdefault(network_prefix(row) + "whole layer", ([], []))
            layers.append(row["layer"])
            values.append(row["dW_fro_layer_rel"])
    plot_by_layer(plot_dir / "layer_locality.png", f"Layer locality: {title}",
                  {"attention vs MLP": by_layer(per_layer, "dW_fro_layer_rel"), "all matrices of the layer": coarse},
                  ylabel="relative change ‖ΔW‖_F / ‖W‖_F")
    plot_by_layer(plot_dir / "spectral_norm.png", f"Spectral norm: {title}",
                  {"relative σ₁(ΔW) / σ₁(W)": by_layer(per_layer, "max_dW_spectral_rel"),
                   "σ₁(ΔW)": by_layer(per_layer, "max_dW_spectral")},
                  ylabel="largest in the group")
    plot_by_layer(plot_dir / "stable_rank.png", f"Stable rank of ΔW: {title}",
                  {"mean stable rank of ΔW": by_layer(per_layer, "mean_dW_stable_rank")},
                  ylabel="‖ΔW‖_F² / σ₁(ΔW)²", reference=1.0, reference_label="rank-1 update")
    rank_panels = {}
    for group in ("attn", "mlp"):
        rank_rows = [row for row in per_matrix if row["group"] == group]
        columns = [("dW_stable_rank", "ΔW stable rank"), ("W_stable_rank", "W stable rank")]
        if empirical:
            columns += [("dW_empirical_rank", "ΔW 99% rank"), ("W_empirical_rank", "W 99% rank")]
        networks = dict.fromkeys(network_prefix(row) for row in rank_rows)
        rank_panels[GROUP_LABELS[group]] = {
            network + label: mean_by_layer([row for row in rank_rows if network_prefix(row) == network], column)
            for network in networks for column, label in columns}
    plot_by_layer(plot_dir / "rank_comparison.png", f"Rank of the update vs the weight: {title}", rank_panels,
                  ylabel="mean over the group's matrices", log_y=True)
    plot_by_layer(plot_dir / "component_locality.png", f"Locality by component: {title}",
                  {"relative change per component": by_layer(per_component, "dW_fro_rel", field="component")},
                  ylabel="‖ΔW‖_F / ‖W‖_F")


def mean_by_layer(rows: Sequence[dict], column: str) -> tuple[list[int], list[float]]:
    """(layers, mean of `column` over each layer's rows)."""
    values: dict[int, list[float]] = defaultdict(list)
    for row in rows:
        values[row["layer"]].append(row[column])
    layers = sorted(values)
    return layers, [mean(values[layer]) for layer in layers]


# ---- the step ---------------------------------------------------------------------------------------------------

def main() -> None:
    args = parse_arguments()
    identity = step_identity(args, "model_a", "model_b")
    if args.outdir.exists() and args.plot_dir.exists() and skip_if_complete(
            args.outdir, args.force, what=f"Step 1 weight comparison of {args.model_b} vs {args.model_a}",
            identity=identity):
        return
    checkpoint_a, checkpoint_b = open_checkpoint_pair(args.model_a, args.model_b)
    device, dtype = resolve_device(args.device), computation_dtype(args.dtype)
    num_heads = checkpoint_a.config.get("num_attention_heads")
    # A vision-language model: every row also names its network, and layers are numbered within it.
    networks = ("network",) if "vision_config" in checkpoint_a.config else ()
    if networks:  # LLaVA keeps its language model's settings in `text_config`
        num_heads = (checkpoint_a.config.get("text_config") or {}).get("num_attention_heads")
    start = time.perf_counter()

    per_matrix, per_component = [], []
    names = checkpoint_a.matrix_names()
    for pair in matrix_pairs(checkpoint_a, checkpoint_b, names, device, dtype, description="weight matrices"):
        delta = pair.modified.sub_(pair.base)  # ΔW in place of W_B: two matrices in memory, not three
        labels = {"name": pair.name, **({"network": parameter_modality(pair.name)} if networks else {}),
                  "layer": pair.role.layer, "group": pair.role.group}
        shape = {"shape0": pair.base.shape[0], "shape1": pair.base.shape[1]}
        statistics = matrix_statistics(pair.base, delta, args.seed, args.power_iterations, args.empirical_rank)
        per_matrix.append({**labels, **shape, **statistics})
        per_component.extend(component_rows(pair, labels, delta, statistics, num_heads, args))
        del pair, delta  # before the next pair is read: two matrices in memory, not four

    vectors = vector_totals(checkpoint_a, checkpoint_b, device, dtype)
    per_layer = aggregate(per_matrix, (*networks, "layer", "group"), args.empirical_rank)  # the study's per_layer.csv
    per_coarse_layer = aggregate(per_matrix, (*networks, "layer"), args.empirical_rank)  # all of a layer's matrices
    per_network = aggregate(per_matrix, networks, args.empirical_rank) if networks else []
    empirical_columns = EMPIRICAL_COLUMNS if args.empirical_rank else []
    aggregate_columns = [*AGGREGATE_COLUMNS, *(["mean_dW_empirical_rank"] if args.empirical_rank else []), "count_mats"]
    total = aggregate(per_matrix, (), False)[0]  # every weight matrix of the model together
    layers = [row for row in per_coarse_layer if row["layer"] >= 0]
    most_changed = max(layers, key=lambda row: row["dW_fro_layer_rel"]) if layers else None
    seconds = time.perf_counter() - start
    summary = {
        "model_a": args.model_a,
        "model_b": args.model_b,
        "weight_matrices": len(per_matrix),
        "dW_fro_total": total["dW_fro_layer"],
        "W_fro_total": total["W_fro_layer"],
        "dW_fro_rel_total": total["dW_fro_layer_rel"],
        "most_changed_layer": most_changed["layer"] if most_changed else None,
        "most_changed_layer_dW_fro_rel": most_changed["dW_fro_layer_rel"] if most_changed else None,
        **({"most_changed_layer_network": most_changed["network"] if most_changed else None,
            "networks": {row["network"]: {"weight_matrices": row["count_mats"], "dW_fro": row["dW_fro_layer"],
                                          "W_fro": row["W_fro_layer"], "dW_fro_rel": row["dW_fro_layer_rel"]}
                         for row in per_network}} if networks else {}),
        "vector_parameters": vectors,
        "settings": {"seed": args.seed, "power_iterations": args.power_iterations,
                     "empirical_rank": args.empirical_rank, "dtype": str(dtype), "device": device},
        "seconds": round(seconds, 1),
    }

    title = comparison_title(args.model_a, args.model_b)
    with staged_directory(args.outdir, identity=identity) as staging, \
            staged_directory(args.plot_dir, identity=identity) as plot_staging:
        # The plots are published first and the CSV folder last: its existence marks the step as done.
        write_csv(staging / "per_matrix.csv", per_matrix, with_networks(PER_MATRIX_COLUMNS, networks)
                  + empirical_columns)
        write_csv(staging / "per_layer.csv", per_layer, [*networks, "layer", "group", *aggregate_columns])
        write_csv(staging / "per_component.csv", per_component, with_networks(PER_COMPONENT_COLUMNS, networks)
                  + empirical_columns)
        write_csv(staging / "per_coarse_layer.csv", per_coarse_layer, [*networks, "layer", *aggregate_columns])
        if networks:
            write_csv(staging / "per_network.csv", per_network, ["network", *aggregate_columns])
        write_json(staging / "summary.json", summary)
        write_plots(plot_staging, title, per_matrix, per_layer, per_component, per_coarse_layer, args.empirical_rank)
    print(f"Step 1: {len(per_matrix)} weight matrices, total relative change {summary['dW_fro_rel_total']:.4g}"
          + (f", most in {network_prefix(most_changed).removesuffix(': ')}"
             f"{' ' if networks else ''}layer {summary['most_changed_layer']}" if most_changed else "")
          + "".join(f"; {row['network']} {row['dW_fro_layer_rel']:.4g}" for row in per_network)
          + f" ({seconds:.0f} s) -> {args.outdir}, {args.plot_dir}")


def with_networks(columns: Sequence[str], networks: tuple[str, ...]) -> list[str]:
    """`columns` with the `network` column after `name` for a vision-language model; unchanged otherwise."""
    return [columns[0], *networks, *columns[1:]]


def vector_totals(checkpoint_a, checkpoint_b, device: str, dtype: torch.dtype) -> dict[str, float | int]:
    """Biases and norm gains are not matrices; their combined change is still worth one number."""
    names = checkpoint_a.vector_names()
    delta_squared = weight_squared = 0.0
    for name in names:
        base = checkpoint_a.read(name, dtype).to(device)
        modified = checkpoint_b.read(name, dtype).to(device)
        delta_squared += frobenius_norm(modified - base) ** 2
        weight_squared += frobenius_norm(base) ** 2
    return {"count": len(names), "dW_norm": math.sqrt(delta_squared), "W_norm": math.sqrt(weight_squared),
            "dW_norm_rel": ratio(math.sqrt(delta_squared), math.sqrt(weight_squared))}


if __name__ == "__main__":
    run_cli(main)
