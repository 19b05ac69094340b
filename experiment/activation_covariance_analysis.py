# /// script
# requires-python = ">=3.10"
# dependencies = ["brittle[steps]"]  # the pipeline steps' one environment (pyproject.toml)
#
# [tool.uv.sources]
# brittle = { path = "..", editable = true }
# ///
"""Step 9 - Activation covariance: does the intervention change the *shape* of the activation distribution?

At every layer, for each model and split, the eigenvalues λ_1 ≥ ... ≥ λ_d of the covariance of the
token hidden states (every real token is one sample; C = (Σxxᵀ - n μμᵀ) / (n - 1) from the float64 sums
the statistics pass accumulates) give:

| metric               | formula                                              | captures                       |
|----------------------|------------------------------------------------------|--------------------------------|
| spectral entropy     | H = -Σ p_i log p_i, with p_i = λ_i / Σ_j λ_j (nats)  | how evenly variance spreads    |
| effective rank       | exp(H)  (k for k equal eigenvalues)                  | how many dimensions are used   |
| Wasserstein distance | W₁ between model A's and model B's eigenvalues       | how much the spectrum changed  |
| selectivity ratio    | W₁(forget) / W₁(retain)                              | is the change forget-specific? |

Two distributions can share their norms (Step 3) and still differ in shape. Filtering should
restructure the covariance (large W₁, changed effective rank); an intervention that barely disturbs
it leaves the representations in place. Selectivity > 1: the forget-text spectrum moved more.

Writes `outputs/<a>__to__<b>/activation_covariance/`: `covariance_results.csv` (one row per layer and
split), `selectivity.csv` (one row per layer), `spectra.npz` (every eigenvalue spectrum, keyed
`<model_a|model_b>/<split>/layer_<l>`), `summary.json`, `covariance.png`, `selectivity.png` and
`spectra.png`.

    uv run experiment/activation_covariance_analysis.py --model-a models/toy-base-s42 \\
        --model-b models/toy-filtered-s42 --preset toy
"""

from __future__ import annotations

import argparse
import io
import math
from pathlib import Path

import numpy as np
import torch
from scipy.stats import wasserstein_distance
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
from brittle.cli import UserError, add_comparison_arguments, add_output_arguments, add_runtime_arguments, run_cli
from brittle.identity import step_identity
from brittle.outputs import comparison_step_dir, skip_if_complete, staged_directory, write_csv, write_json
from brittle.plotting import plot_by_layer
from brittle.runtime import resolve_device, seed_everything

ROLES = ("model_a", "model_b")
COLUMNS = ["layer", "split", "model_a_effective_rank", "model_b_effective_rank", "model_a_spectral_entropy",
           "model_b_spectral_entropy", "wasserstein_distance"]
SELECTIVITY_COLUMNS = ["layer", "wasserstein_forget", "wasserstein_retain", "selectivity_ratio"]


def covariance_eigenvalues(covariance: Tensor, device: str = "cpu") -> np.ndarray:
    """Eigenvalues (descending, ≥ 0) of a (dims, dims) covariance matrix (float64; float32 on MPS)."""
    dtype = torch.float32 if device == "mps" else torch.float64  # MPS has no float64
    eigenvalues = torch.linalg.eigvalsh(covariance.to(device=device, dtype=dtype)).flip(0).clamp(min=0)
    return eigenvalues.cpu().double().numpy()


def sample_covariance(activations: Tensor) -> Tensor:
    """The float64 covariance of (samples, dims) activations (what the statistics pass accumulates online)."""
    samples = activations.double()
    centered = samples - samples.mean(dim=0)
    return centered.T @ centered / max(1, len(samples) - 1)


def spectral_entropy(eigenvalues: np.ndarray) -> float:
    """Shannon entropy (nats) of the eigenvalues normalised to a distribution."""
    total = eigenvalues.sum()
    if total <= 0:
        return 0.0
    p = eigenvalues[eigenvalues > 0] / total
    return float(-(p * np.log(p)).sum())


def effective_rank(eigenvalues: np.ndarray) -> float:
    """exp(spectral entropy): k for a spectrum of k equal eigenvalues (Roy & Vetterli, 2007)."""
    return math.exp(spectral_entropy(eigenvalues))


def spectrum_distance(first: np.ndarray, second: np.ndarray) -> float:
    """1-Wasserstein distance between two spectra, each taken as an empirical distribution of eigenvalues."""
    return float(wasserstein_distance(first, second))


def selectivity_ratio(forget_value: float, retain_value: float) -> float:
    """forget / retain; NaN when both are 0 (nothing changed), inf when only retain is 0."""
    if retain_value == 0:
        return math.nan if forget_value == 0 else math.inf
    return forget_value / retain_value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_comparison_arguments(parser)
    add_activation_arguments(parser)
    add_runtime_arguments(parser)
    add_output_arguments(parser)
    args = parser.parse_args()

    outdir = Path(args.outdir or comparison_step_dir(args.model_a, args.model_b, "activation_covariance",
                                                     args.output_root))
    identity = step_identity(args, "model_a", "model_b")
    if skip_if_complete(outdir, args.force, what=f"Step 9 activation covariance {args.model_a} -> {args.model_b}",
                        identity=identity):
        return
    files, texts = step_inputs(args, args.model_a, args.model_b)
    settings = activation_settings(args)
    device = resolve_device(args.device)
    seed_everything(args.seed)

    models = dict(zip(ROLES, (args.model_a, args.model_b), strict=True))
    spectra: dict[str, np.ndarray] = {}
    rows, selectivity_rows = [], []
    with ActivationStore(settings) as store:
        activations = collect_splits(store, models, files, texts)
        check_same_architecture(activations["model_a", "forget"], activations["model_b", "forget"])
        for split in texts:
            if activations["model_a", split].num_tokens < 2:
                raise UserError(f"the {split} texts have fewer than 2 tokens in all; a covariance needs more")
        num_hidden_states = activations["model_a", "forget"].num_hidden_states
        for layer in tqdm(range(num_hidden_states), desc="covariance spectra", unit="layer"):
            distances = {}
            for split in texts:
                eigenvalues = {role: covariance_eigenvalues(activations[role, split].covariance(layer), device)
                               for role in ROLES}
                distances[split] = spectrum_distance(eigenvalues["model_a"], eigenvalues["model_b"])
                rows.append({"layer": layer, "split": split,
                             **{f"{role}_effective_rank": effective_rank(eigenvalues[role]) for role in ROLES},
                             **{f"{role}_spectral_entropy": spectral_entropy(eigenvalues[role]) for role in ROLES},
                             "wasserstein_distance": distances[split]})
                spectra |= {f"{role}/{split}/layer_{layer:03d}": eigenvalues[role] for role in ROLES}
            selectivity_rows.append({"layer": layer, "wasserstein_forget": distances["forget"],
                                     "wasserstein_retain": distances["retain"],
                                     "selectivity_ratio": selectivity_ratio(distances["forget"], distances["retain"])})
        details = run_details(args, store, files, texts)
        print(store.summary())

    names = {role: Path(model).name for role, model in models.items()}
    with staged_directory(outdir, identity=identity) as staging:
        write_csv(staging / "covariance_results.csv", rows, COLUMNS)
        write_csv(staging / "selectivity.csv", selectivity_rows, SELECTIVITY_COLUMNS)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **spectra)
        (staging / "spectra.npz").write_bytes(buffer.getvalue())
        plot_covariance(staging, rows, selectivity_rows, names, spectra, num_hidden_states)
        write_json(staging / "summary.json", {
            "model_a": args.model_a, "model_b": args.model_b, "samples": "every real token's hidden state",
            **details, "selectivity_ratio_by_layer": [finite_or_none(row["selectivity_ratio"])
                                           for row in selectivity_rows],
        })
    print("  selectivity W₁(forget)/W₁(retain) by layer: "
          + " ".join(f"{row['selectivity_ratio']:.3f}" for row in selectivity_rows))
    print(f"Step 9 activation covariance -> {outdir}")


def plot_covariance(folder: Path, rows: list[dict], selectivity_rows: list[dict], names: dict[str, str],
                    spectra: dict[str, np.ndarray], num_hidden_states: int) -> None:
    """covariance.png (effective rank, W₁ by layer), selectivity.png and spectra.png (middle and last layer)."""
    def by_layer(split: str, column: str) -> tuple[list[int], list[float]]:
        selected = [row for row in rows if row["split"] == split]
        return [row["layer"] for row in selected], [row[column] for row in selected]

    splits = sorted({row["split"] for row in rows})
    layers = [row["layer"] for row in selectivity_rows]
    plot_by_layer(folder / "covariance.png", f"Covariance spectra: {names['model_a']} → {names['model_b']}", {
        "effective rank": {f"{names[role]} ({split})": by_layer(split, f"{role}_effective_rank")
                           for split in splits for role in ROLES},
        "Wasserstein distance A→B": {split: by_layer(split, "wasserstein_distance") for split in splits},
    }, ylabel="value")
    plot_by_layer(folder / "selectivity.png", f"Spectrum change selectivity: {names['model_a']} → {names['model_b']}",
                  {"W₁(forget) / W₁(retain)": {"selectivity": (layers, [row["selectivity_ratio"]
                                                                        for row in selectivity_rows])}},
                  ylabel="ratio", reference=1.0, reference_label="equal change")
    shown = sorted({num_hidden_states // 2, num_hidden_states - 1})
    plot_by_layer(folder / "spectra.png", "Covariance eigenvalues", {
        f"layer {layer}": {f"{names[role]} ({split})": (
            range(1, len(spectra[f"{role}/{split}/layer_{layer:03d}"]) + 1),
            np.maximum(spectra[f"{role}/{split}/layer_{layer:03d}"], 1e-12))
            for split in splits for role in ROLES} for layer in shown},
        ylabel="eigenvalue", xlabel="eigenvalue index", log_y=True)


if __name__ == "__main__":
    run_cli(main)
