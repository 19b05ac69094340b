# /// script
# requires-python = ">=3.10"
# dependencies = ["brittle[steps]"]  # the pipeline steps' one environment (pyproject.toml)
#
# [tool.uv.sources]
# brittle = { path = "..", editable = true }
# ///
"""Step 4 - MLP vs attention: is the change in knowledge storage (MLP) or in routing (attention)?

Reads Step 1's tables (`weight_comparison/per_layer.csv`, `per_component.csv`) and, at every layer,
compares how much the MLP changed with how much attention changed. In the "key-value memory" view
(Geva et al., 2021) facts live in MLPs; an intervention that only edits attention may be routing
around the knowledge rather than erasing it.

| column              | definition                                                          |
|---------------------|---------------------------------------------------------------------|
| `attn_dW_fro_rel`   | the layer's attention change, √Σ‖ΔWᵢ‖_F² / √Σ‖Wᵢ‖_F² (Step 1)        |
| `mlp_dW_fro_rel`    | the same for the layer's MLP                                        |
| `mlp_attn_ratio`    | `mlp_dW_fro_rel / attn_dW_fro_rel`: > 1 means the MLP moved more, relative to its size |
| `mlp_attn_ratio_raw`| `mlp_dW_fro / attn_dW_fro`: the same on raw norms (an MLP has ~2x attention's parameters) |
| `mlp_share`         | `mlp_dW_fro² / (mlp_dW_fro² + attn_dW_fro²)`: the MLP's share of the layer's squared change |
| `dominant`          | `mlp` or `attn`, by `mlp_attn_ratio`                                 |

Outputs (`outputs/<model_a>__to__<model_b>/mlp_attn_analysis/`): `mlp_attn_summary.csv` (above, one
row per layer), `component_shares.csv` (each component's share of its layer's squared change: q, k,
v, attention output, MLP expand/gate/contract), `summary.json` (whole-model totals) and plots.

    uv run experiment/analyze_mlp_vs_attn.py --model-a models/toy-base-s42 --model-b models/toy-filtered-s42
"""

from __future__ import annotations

import argparse
import math
from collections import defaultdict
from pathlib import Path

import matplotlib.pyplot as plt

from brittle.cli import UserError, add_comparison_arguments, add_output_arguments, add_runtime_arguments, run_cli
from brittle.identity import step_identity
from brittle.outputs import (
    comparison_step_dir,
    comparison_title,
    read_csv,
    skip_if_complete,
    staged_directory,
    write_csv,
    write_json,
)
from brittle.plotting import plot_by_layer, save_figure

STEP_FOLDER = "mlp_attn_analysis"
COMPONENT_ORDER = ("q", "k", "v", "qkv", "attn_out", "mlp_gate", "mlp_expand", "mlp_contract")


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_comparison_arguments(parser)
    parser.add_argument("--weight-comparison-dir", default=None,
                        help="Step 1's output folder (default: <output-root>/<a>__to__<b>/weight_comparison)")
    add_runtime_arguments(parser)  # accepted for a uniform pipeline; this step only reads CSVs
    add_output_arguments(parser)
    args = parser.parse_args()
    args.outdir = Path(args.outdir or comparison_step_dir(args.model_a, args.model_b, STEP_FOLDER, args.output_root))
    args.weight_comparison_dir = Path(args.weight_comparison_dir or comparison_step_dir(
        args.model_a, args.model_b, "weight_comparison", args.output_root))
    return args


def read_step1_table(folder: Path, file_name: str, model_a: str, model_b: str) -> list[dict[str, str]]:
    """One of Step 1's CSVs, or one clear line saying how to make it."""
    path = folder / file_name
    if not path.exists():
        raise UserError(f"{path} not found: run Step 1 first (uv run experiment/collect_weight_comparison.py "
                        f"--model-a {model_a} --model-b {model_b})")
    return read_csv(path)


def layer_breakdown(per_layer: list[dict[str, str]]) -> list[dict]:
    """One row per decoder layer comparing its MLP change with its attention change."""
    groups: dict[int, dict[str, dict[str, str]]] = defaultdict(dict)
    for row in per_layer:
        if row["group"] in ("attn", "mlp") and int(row["layer"]) >= 0:
            groups[int(row["layer"])][row["group"]] = row
    rows = []
    for layer in sorted(groups):
        if set(groups[layer]) != {"attn", "mlp"}:
            continue  # a layer without both groups has nothing to compare
        attn, mlp = groups[layer]["attn"], groups[layer]["mlp"]
        attn_fro, mlp_fro = float(attn["dW_fro_layer"]), float(mlp["dW_fro_layer"])
        attn_rel, mlp_rel = float(attn["dW_fro_layer_rel"]), float(mlp["dW_fro_layer_rel"])
        mlp_attn_ratio = change_ratio(mlp_rel, attn_rel)
        rows.append({
            "layer": layer,
            "attn_dW_fro": attn_fro,
            "mlp_dW_fro": mlp_fro,
            "attn_dW_fro_rel": attn_rel,
            "mlp_dW_fro_rel": mlp_rel,
            "mlp_attn_ratio": mlp_attn_ratio,
            "mlp_attn_ratio_raw": change_ratio(mlp_fro, attn_fro),
            "mlp_share": ratio(mlp_fro**2, mlp_fro**2 + attn_fro**2),
            "dominant": "" if math.isnan(mlp_attn_ratio) else ("mlp" if mlp_attn_ratio > 1 else "attn"),
        })
    return rows


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, NaN when the denominator is 0 (this step needs no torch, so no matrix_metrics)."""
    return numerator / denominator if denominator != 0 else math.nan


def change_ratio(mlp_change: float, attn_change: float) -> float:
    """MLP change / attention change: inf when only the MLP moved, NaN when neither did."""
    if attn_change == 0:
        return math.inf if mlp_change > 0 else math.nan
    return mlp_change / attn_change


def component_shares(per_component: list[dict[str, str]]) -> list[dict]:
    """Each attention/MLP component's share of its layer's squared change (shares of a layer sum to 1)."""
    by_layer: dict[int, list[dict[str, str]]] = defaultdict(list)
    for row in per_component:
        if row["group"] in ("attn", "mlp") and int(row["layer"]) >= 0:
            by_layer[int(row["layer"])].append(row)
    rows = []
    for layer in sorted(by_layer):
        members = sorted(by_layer[layer], key=lambda row: component_rank(row["component"]))
        total = sum(float(row["dW_fro"]) ** 2 for row in members)
        rows.extend({"layer": layer, "group": row["group"], "component": row["component"],
                     "dW_fro": float(row["dW_fro"]), "dW_fro_rel": float(row["dW_fro_rel"]),
                     "share_of_layer": ratio(float(row["dW_fro"]) ** 2, total)} for row in members)
    return rows


def component_rank(component: str) -> int:
    return COMPONENT_ORDER.index(component) if component in COMPONENT_ORDER else len(COMPONENT_ORDER)


def whole_model(layers: list[dict]) -> dict:
    """MLP vs attention over all decoder layers together."""
    attn = math.sqrt(sum(row["attn_dW_fro"] ** 2 for row in layers))
    mlp = math.sqrt(sum(row["mlp_dW_fro"] ** 2 for row in layers))
    return {
        "layers": len(layers),
        "attn_dW_fro": attn,
        "mlp_dW_fro": mlp,
        "mlp_share": ratio(mlp**2, mlp**2 + attn**2),
        "mlp_dominated_layers": [row["layer"] for row in layers if row["dominant"] == "mlp"],
        "attn_dominated_layers": [row["layer"] for row in layers if row["dominant"] == "attn"],
        "median_mlp_attn_ratio": median([row["mlp_attn_ratio"] for row in layers]),
    }


def median(values: list[float]) -> float:
    values = sorted(value for value in values if not math.isnan(value))
    if not values:
        return math.nan
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def plot_component_shares(path: Path, title: str, shares: list[dict]) -> None:
    """Stacked bars: how each layer's change divides among its components."""
    layers = sorted({row["layer"] for row in shares})
    components = sorted({row["component"] for row in shares}, key=component_rank)
    figure, axis = plt.subplots(figsize=(max(5.5, 0.45 * len(layers) + 3), 3.8))
    bottom = [0.0] * len(layers)
    for component in components:
        heights = [next((row["share_of_layer"] for row in shares
                         if row["layer"] == layer and row["component"] == component), 0.0) for layer in layers]
        axis.bar(layers, heights, bottom=bottom, label=component, width=0.8)
        bottom = [base + height for base, height in zip(bottom, heights, strict=True)]
    axis.set_xlabel("layer")
    axis.set_ylabel("share of the layer's ‖ΔW‖_F²")
    axis.set_title(title, fontsize="medium")
    axis.legend(fontsize="small", bbox_to_anchor=(1.02, 1), loc="upper left")
    save_figure(figure, path)


def main() -> None:
    args = parse_arguments()
    identity = step_identity(args, "model_a", "model_b", data={"step1": args.weight_comparison_dir})
    if skip_if_complete(args.outdir, args.force, what=f"Step 4 MLP vs attention of {args.model_b} vs {args.model_a}",
                        identity=identity):
        return
    per_layer = read_step1_table(args.weight_comparison_dir, "per_layer.csv", args.model_a, args.model_b)
    per_component = read_step1_table(args.weight_comparison_dir, "per_component.csv", args.model_a, args.model_b)
    layers = layer_breakdown(per_layer)
    if not layers:
        raise UserError(f"{args.weight_comparison_dir / 'per_layer.csv'} has no layer with both attention and MLP "
                        "weights; is it a Step 1 table of a transformer?")
    shares = component_shares(per_component)
    summary = {"model_a": args.model_a, "model_b": args.model_b, **whole_model(layers)}

    title = comparison_title(args.model_a, args.model_b)
    x_values = [row["layer"] for row in layers]
    with staged_directory(args.outdir, identity=identity) as staging:
        write_csv(staging / "mlp_attn_summary.csv", layers)
        write_csv(staging / "component_shares.csv", shares)
        write_json(staging / "summary.json", summary)
        plot_by_layer(staging / "mlp_attn_ratio.png", f"MLP / attention change: {title}",
                      {"relative change, MLP / attention": {
                          "MLP / attention": (x_values, [row["mlp_attn_ratio"] for row in layers])}},
                      ylabel="mlp_dW_fro_rel / attn_dW_fro_rel", log_y=True, reference=1.0,
                      reference_label="equal (above: MLP moved more)")
        plot_by_layer(staging / "mlp_attn_change.png", f"Relative change by group: {title}",
                      {"‖ΔW‖_F / ‖W‖_F": {"attention": (x_values, [row["attn_dW_fro_rel"] for row in layers]),
                                          "MLP": (x_values, [row["mlp_dW_fro_rel"] for row in layers])}},
                      ylabel="relative change")
        plot_component_shares(staging / "component_shares.png", f"Where each layer's change goes: {title}", shares)
    print(f"Step 4: MLP share of the change {summary['mlp_share']:.3f}; MLP dominates "
          f"{len(summary['mlp_dominated_layers'])}/{len(layers)} layers -> {args.outdir}")


if __name__ == "__main__":
    run_cli(main)
