# /// script
# requires-python = ">=3.10"
# dependencies = ["brittle[steps]"]  # the pipeline steps' one environment (pyproject.toml)
#
# [tool.uv.sources]
# brittle = { path = "..", editable = true }
# ///
"""Step 12 - Local Lipschitzness: did the intervention make the output more or less sensitive to
small changes of the input?

For every text, the input embeddings e (one vector per token) are perturbed `--num-perturbations`
times by δ, a random direction of length `--epsilon` for every real token (a point on the ε-sphere
around each embedding), and the model's output f = next-token log-probabilities at every real
position is compared with the clean one:

| metric          | per text                                                   | captures                       |
|-----------------|------------------------------------------------------------|--------------------------------|
| local Lipschitz | max_k ‖f(e + δ_k) - f(e)‖ / ‖δ_k‖  (Frobenius over tokens)  | worst-case local sensitivity   |
| gradient norm   | ‖∂ NLL(text) / ∂e‖ (mean next-token NLL)                   | first-order sensitivity of the loss |
| output variance | mean over tokens and vocabulary of Var_k f(e + δ_k)        | spread of outputs in the ε-ball |

Averaged over the texts of each split, for model A and model B. Forget text becoming *rougher* (higher
Lipschitz) means an unstable regime that small pushes - fine-tuning - can tip back; *smoother* means the
model learned to ignore forget-domain features; retain text should stay the same.

This step perturbs its inputs, so it cannot reuse the shared activation statistics: it runs 1 + K forward
passes per model and split (logged as `perturbed` in the forward-pass ledger) plus one backward pass
for the gradient. Computation runs in `--dtype` (bf16 on CUDA by default; `--dtype fp32` resolves
ε = 0.01 more finely).

Writes `outputs/<a>__to__<b>/lipschitzness/lipschitz_results.csv` (one row per model and split),
`summary.json` (with B/A ratios per split) and `lipschitzness.png`.

    uv run experiment/local_lipschitzness_analysis.py --model-a models/toy-base-s42 \\
        --model-b models/toy-filtered-s42 --preset toy --epsilon 0.01 --num-perturbations 10
"""

from __future__ import annotations

import argparse
import gc
import math
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from brittle.activations import (
    TokenizedSplit,
    add_activation_arguments,
    log_forward_passes,
    step_inputs,
    tokenize_texts,
)
from brittle.cli import UserError, add_comparison_arguments, add_output_arguments, add_runtime_arguments, run_cli
from brittle.identity import step_identity
from brittle.models import input_device, load_model, load_tokenizer
from brittle.outputs import comparison_step_dir, skip_if_complete, staged_directory, write_csv, write_json
from brittle.plotting import save_figure
from brittle.runtime import seed_everything
from brittle.training import collate, sequence_nll

ROLES = ("model_a", "model_b")
METRICS = ("lipschitz_mean", "gradient_norm_mean", "output_variance_mean")
COLUMNS = ["model", "model_name", "split", "num_texts", "lipschitz_mean", "lipschitz_median", "lipschitz_max",
           "gradient_norm_mean", "output_variance_mean"]


def sphere_perturbation(shape: torch.Size, mask: Tensor, epsilon: float, generator: torch.Generator) -> Tensor:
    """A random direction of length `epsilon` for every real token (zero on padding)."""
    direction = torch.randn(shape, generator=generator)
    direction = direction / direction.norm(dim=-1, keepdim=True)
    return epsilon * direction * mask.unsqueeze(-1)


def batch_sensitivity(model: PreTrainedModel, input_ids: Tensor, attention_mask: Tensor, epsilon: float,
                      num_perturbations: int, generator: torch.Generator) -> dict[str, Tensor]:
    """Per-text Lipschitz estimate, gradient norm and output variance for one batch."""
    device = input_device(model)
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    mask = attention_mask.float()
    embeddings = model.get_input_embeddings()(input_ids).detach().requires_grad_(True)

    # Clean pass: the reference output and the gradient of the text's NLL with respect to its embeddings.
    logits = model(inputs_embeds=embeddings, attention_mask=attention_mask).logits
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    (gradient,) = torch.autograd.grad(sequence_nll(logits, labels).sum(), embeddings)
    clean = F.log_softmax(logits.detach().float(), dim=-1)
    gradient_norm = gradient.float().pow(2).sum(dim=(1, 2)).sqrt()

    ratios = []
    change_sum = torch.zeros_like(clean)
    change_square_sum = torch.zeros_like(clean)
    with torch.no_grad():
        for _ in range(num_perturbations):
            delta = sphere_perturbation(embeddings.shape, mask.cpu(), epsilon, generator).to(device, embeddings.dtype)
            perturbed = model(inputs_embeds=embeddings.detach() + delta, attention_mask=attention_mask).logits
            change = (F.log_softmax(perturbed.float(), dim=-1) - clean) * mask.unsqueeze(-1)
            ratios.append(change.pow(2).sum(dim=(1, 2)).sqrt() / delta.float().pow(2).sum(dim=(1, 2)).sqrt())
            change_sum += change
            change_square_sum += change.pow(2)
    mean_change = change_sum / num_perturbations
    variance = (change_square_sum / num_perturbations - mean_change.pow(2)).clamp(min=0)
    tokens = mask.sum(dim=1)
    output_variance = variance.mean(dim=-1).mul(mask).sum(dim=1) / tokens
    return {"lipschitz": torch.stack(ratios, dim=1).amax(dim=1).cpu(), "gradient_norm": gradient_norm.cpu(),
            "output_variance": output_variance.cpu()}


def split_sensitivity(model: PreTrainedModel, model_name: str, split: TokenizedSplit, pad_token_id: int,
                      batch_size: int, epsilon: float, num_perturbations: int, seed: int) -> dict[str, np.ndarray]:
    """Per-text metrics for a whole split, batched (the same perturbations for every model, by seed)."""
    generator = torch.Generator().manual_seed(seed)
    results: dict[str, list[Tensor]] = {"lipschitz": [], "gradient_norm": [], "output_variance": []}
    started = time.perf_counter()
    starts = range(0, len(split.sequences), batch_size)
    for start in tqdm(starts, desc=f"ε-ball {model_name} {split.name}", unit="batch", leave=False):
        batch = collate(split.sequences[start: start + batch_size], pad_token_id)
        for name, values in batch_sensitivity(model, batch.input_ids, batch.attention_mask, epsilon,
                                              num_perturbations, generator).items():
            results[name].append(values)
    log_forward_passes("perturbed", 1 + num_perturbations, model_name, split.name, len(split.sequences),
                       int(split.kept_lengths.sum()), time.perf_counter() - started)
    return {name: torch.cat(values).double().numpy() for name, values in results.items()}


def plot_sensitivity(path: Path, rows: list[dict], names: dict[str, str]) -> None:
    """One bar panel per metric: forget and retain, model A beside model B."""
    figure, axes = plt.subplots(1, len(METRICS), figsize=(5.2 * len(METRICS), 3.8), squeeze=False)
    splits = sorted({row["split"] for row in rows})
    width = 0.38
    for axis, metric in zip(axes[0], METRICS, strict=True):
        for offset, role in zip((-width / 2, width / 2), ROLES, strict=True):
            values = [next(row[metric] for row in rows if row["model"] == role and row["split"] == split)
                      for split in splits]
            axis.bar(np.arange(len(splits)) + offset, values, width, label=names[role])
        axis.set_xticks(np.arange(len(splits)), splits)
        axis.set_title(metric.replace("_", " "))
        axis.legend(fontsize="small")
    figure.suptitle(f"Local sensitivity: {names['model_a']} → {names['model_b']}", fontsize="medium")
    save_figure(figure, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_comparison_arguments(parser)
    parser.add_argument("--epsilon", type=float, default=0.01, help="radius of the per-token perturbation (0.01)")
    parser.add_argument("--num-perturbations", type=int, default=10, help="perturbations per text (default 10)")
    add_activation_arguments(parser, store=False)  # perturbed inputs: no statistics to reuse
    add_runtime_arguments(parser)
    add_output_arguments(parser)
    args = parser.parse_args()

    outdir = Path(args.outdir or comparison_step_dir(args.model_a, args.model_b, "lipschitzness", args.output_root))
    identity = step_identity(args, "model_a", "model_b")
    if skip_if_complete(outdir, args.force, what=f"Step 12 local Lipschitzness {args.model_a} -> {args.model_b}",
                        identity=identity):
        return
    if not args.epsilon > 0 or args.num_perturbations < 1:
        raise UserError("--epsilon must be positive and --num-perturbations at least 1")
    if args.batch_size < 1 or args.max_length < 2:
        raise UserError("--batch-size must be at least 1 and --max-length at least 2")
    files, texts = step_inputs(args, args.model_a, args.model_b)
    seed_everything(args.seed)

    models = dict(zip(ROLES, (args.model_a, args.model_b), strict=True))
    rows = []
    for role, model_name in models.items():
        tokenizer = load_tokenizer(model_name)
        model = load_model(model_name, args.device, args.dtype)
        model.requires_grad_(False)
        for split, split_texts in texts.items():
            tokenized = tokenize_texts(tokenizer, split_texts, args.max_length, split, files[split])
            metrics = split_sensitivity(model, model_name, tokenized, tokenizer.pad_token_id, args.batch_size,
                                        args.epsilon, args.num_perturbations, args.seed)
            rows.append({"model": role, "model_name": model_name, "split": split, "num_texts": len(split_texts),
                         "lipschitz_mean": metrics["lipschitz"].mean(),
                         "lipschitz_median": np.median(metrics["lipschitz"]),
                         "lipschitz_max": metrics["lipschitz"].max(),
                         "gradient_norm_mean": metrics["gradient_norm"].mean(),
                         "output_variance_mean": metrics["output_variance"].mean()})
        del model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def value(role: str, split: str, metric: str) -> float:
        return next(row[metric] for row in rows if row["model"] == role and row["split"] == split)

    ratios = {split: {metric: (value("model_b", split, metric) / value("model_a", split, metric)
                               if value("model_a", split, metric) else math.nan) for metric in METRICS}
              for split in texts}
    names = {role: Path(model_name).name for role, model_name in models.items()}
    forward_passes = len(models) * len(texts) * (1 + args.num_perturbations)
    with staged_directory(outdir, identity=identity) as staging:
        write_csv(staging / "lipschitz_results.csv", rows, COLUMNS)
        plot_sensitivity(staging / "lipschitzness.png", rows, names)
        write_json(staging / "summary.json", {
            "model_a": args.model_a, "model_b": args.model_b, "epsilon": args.epsilon,
            "num_perturbations": args.num_perturbations, "output": "next-token log-probabilities",
            "max_length": args.max_length, "seed": args.seed,
            "texts_per_split": {split: len(split_texts) for split, split_texts in texts.items()},
            "forward_passes": forward_passes, "ratio_b_over_a": ratios,
        })
    for split in texts:
        trend = "rougher" if ratios[split]["lipschitz_mean"] > 1 else "smoother"
        print(f"  {split}: Lipschitz B/A {ratios[split]['lipschitz_mean']:.3f} ({trend}), "
              f"gradient norm B/A {ratios[split]['gradient_norm_mean']:.3f}")
    print(f"forward passes: {forward_passes} over perturbed inputs (no shared statistics for this step)")
    print(f"Step 12 local Lipschitzness -> {outdir}")


if __name__ == "__main__":
    run_cli(main)
