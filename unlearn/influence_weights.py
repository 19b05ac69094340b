# /// script
# requires-python = ">=3.10"
# dependencies = ["brittle", "peft>=0.13"]
#
# [tool.uv.sources]
# brittle = { path = "..", editable = true }
# ///
"""Per-text weights for influence-weighted unlearning (RapidIn influence estimates -> RapidUn weights).

    uv run unlearn/influence_weights.py --preset toy                 # the organism's forget/retain texts
    uv run unlearn/influence_weights.py --model M --forget-data F --retain-data R --proj-dim 8192

1. **Gradients.** For every forget and retain text, the gradient g of its mean token NLL with respect to
   the LoRA parameters of a freshly initialised, seeded adapter (default; `--gradient-params all` or a
   regular expression over parameter names selects weights of the model instead). With a fresh adapter
   B = 0, so only B receives gradient: dL/dB = (dL/dW) A^T, a random projection of the full weight
   gradient - the same quantity RapidIn computes on a LoRA model.
2. **Compression.** Each gradient is compressed to --proj-dim numbers by a seeded CountSketch (a sparse
   Johnson-Lindenstrauss projection, like RapidIn's RapidGrad: every coordinate is added, with a random
   sign, to one random bucket). Inner products are preserved in expectation, with variance at most
   2 |x|^2 |y|^2 / proj-dim; memory is texts x proj-dim, whatever the model's size.
3. **Influence.** Similarities (cosine by default, or dot products) of the compressed gradients, in four
   blocks: forget->forget (FF), forget->retain (FR), retain->forget (RF = FR^T), retain->retain (RR).
   Each text's score in a block is the mean of its --map-topk largest entries (itself excluded in FF/RR).
4. **Weights.** Scores are standardised over their set (z) and mapped to weights

       forget:  w_f = clip( exp(z_f / tau_f) / mean, wmin_f, wmax_f ),  z_f = alpha z(FF) - beta  z(FR)
       retain:  w_r = clip( exp(z_r / tau_r) / mean, wmin_r, wmax_r ),  z_r = gamma z(RF) + delta z(RR)

   so forget texts that are typical of the forget set (FF) but unlike any retain text (FR) are ascended
   hardest, forget texts whose gradient also serves retain texts are ascended gently (ascending them
   would damage retain knowledge), and retain texts whose gradient resembles the forget texts' (RF) -
   the ones the ascent endangers - are held hardest. Defaults: RapidUn's mapping settings.

Writes <forget data folder>/influence_weights/<model>/ (or --outdir): forget_weights.jsonl and
retain_weights.jsonl (one {"index", "weight"} per text, in file order; unlearn.py --forget-weights /
--retain-weights), influence_scores.csv (per text: its block scores, z and weight), weights_histogram.png
and influence_weights.json (settings, data fingerprints, summary). A folder computed with the same
settings is skipped; different settings are refused unless --force.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm import tqdm

from brittle.cli import UserError, add_attention_argument, run_cli
from brittle.models import input_device, load_model_and_tokenizer
from brittle.outputs import staged_directory, write_csv, write_json, write_jsonl
from brittle.precision import Precision, prepare_for_training, resolve_precision, stored_dtype
from brittle.presets import get_preset
from brittle.runtime import seed_everything
from brittle.sample_weights import FORGET_WEIGHTS_FILE, RETAIN_WEIGHTS_FILE, default_weights_dir
from brittle.texts import check_disjoint, read_texts
from brittle.training import batch_nll, encode_texts

RECORD = "influence_weights.json"

# ---------------------------------------------------------------------------------------------------
# Compression: a seeded CountSketch of a (large) gradient
# ---------------------------------------------------------------------------------------------------


class CountSketch:
    """A seeded sparse random projection R^D -> R^k: coordinate j goes to bucket h(j) with sign s(j).

    `project({name: tensor})` sketches the concatenation of the named tensors (each may carry leading
    batch dimensions given by `batch_dims`). The hash and signs of each name are drawn once, from the
    seed and the name's position in the first call, and kept (int32 + int8: 5 bytes per coordinate).
    """

    def __init__(self, dimension: int, seed: int) -> None:
        self.dimension = dimension
        self.generator = torch.Generator().manual_seed(seed)
        self.hashes: dict[str, tuple[Tensor, Tensor]] = {}

    def _hash(self, name: str, size: int, device: torch.device) -> tuple[Tensor, Tensor]:
        if name not in self.hashes:
            buckets = torch.randint(0, self.dimension, (size,), generator=self.generator, dtype=torch.int32)
            signs = torch.randint(0, 2, (size,), generator=self.generator, dtype=torch.int8) * 2 - 1
            self.hashes[name] = (buckets.to(device), signs.to(device))
        return self.hashes[name]

    def project(self, tensors: dict[str, Tensor], batch_dims: int = 0) -> Tensor:
        """The sketch of the named tensors, shape (*batch, dimension), in float32."""
        sketch = None
        for name, tensor in tensors.items():
            batch_shape = tensor.shape[:batch_dims]
            flat = tensor.reshape(*batch_shape, -1).float()
            buckets, signs = self._hash(name, flat.shape[-1], flat.device)
            if sketch is None:
                sketch = flat.new_zeros((*batch_shape, self.dimension))
            sketch.index_add_(flat.dim() - 1, buckets, flat * signs)
        if sketch is None:
            raise ValueError("nothing to project")
        return sketch


# ---------------------------------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------------------------------


def select_parameters(model: nn.Module, which: str) -> dict[str, nn.Parameter]:
    """The parameters whose gradients are compared: "lora" (trainable adapter weights), "all", or a regex."""
    if which == "lora":
        chosen = {name: parameter for name, parameter in model.named_parameters() if parameter.requires_grad}
    elif which == "all":
        chosen = dict(model.named_parameters())
    else:
        try:
            pattern = re.compile(which)
        except re.error as error:
            raise UserError(f"--gradient-params {which!r} is not a regular expression ({error})") from None
        chosen = {name: parameter for name, parameter in model.named_parameters() if pattern.search(name)}
    if not chosen:
        names = ", ".join(name for name, _ in list(model.named_parameters())[:4])
        raise UserError(f"--gradient-params {which!r} selects no parameter; names look like: {names}, ...")
    for parameter in chosen.values():
        parameter.requires_grad_(True)
    return chosen


def compressed_gradients(model: nn.Module, parameters: dict[str, nn.Parameter], sequences: Sequence[list[int]],
                         sketch: CountSketch, device: torch.device, what: str,
                         precision: Precision | None = None) -> Tensor:
    """One sketched gradient of the mean token NLL per text, shape (texts, proj-dim), on the CPU.

    The gradient parameters are fp32 and the forward pass runs under `precision`'s autocast, as in training.
    """
    precision = precision or Precision(torch.float32, torch.float32, device.type)
    names, tensors = list(parameters), list(parameters.values())
    rows = []
    for sequence in tqdm(sequences, desc=f"gradients of {what} texts", unit="text"):
        input_ids = torch.tensor([sequence], device=device)
        with precision.autocast():
            loss = batch_nll(model(input_ids=input_ids).logits, input_ids)
        gradients = torch.autograd.grad(loss, tensors, allow_unused=True)
        named = {name: gradient for name, gradient in zip(names, gradients, strict=True) if gradient is not None}
        rows.append(sketch.project(named).cpu())
    return torch.stack(rows)


# ---------------------------------------------------------------------------------------------------
# Influence and the mapping to weights
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mapping:
    """How influence scores become weights (RapidUn's `rapidin` mapping settings)."""

    map_topk: int = 40
    alpha: float = 1.0  # forget: + typical of the forget set (FF)
    beta: float = 1.0  # forget: - entangled with retain texts (FR)
    gamma: float = 1.0  # retain: + endangered by the forget ascent (RF)
    delta: float = 1.0  # retain: + typical of the retain set (RR)
    tau_f: float = 0.7
    tau_r: float = 1.2
    wmin_f: float = 0.2
    wmax_f: float = 3.0
    wmin_r: float = 0.2
    wmax_r: float = 3.0
    similarity: str = "cosine"


def similarity_matrix(rows: Tensor, columns: Tensor, kind: str) -> Tensor:
    """Dot products (or cosines) of every row gradient with every column gradient."""
    if kind == "cosine":
        rows = torch.nn.functional.normalize(rows, dim=1)
        columns = torch.nn.functional.normalize(columns, dim=1)
    return rows @ columns.T


def top_k_mean(matrix: Tensor, k: int, exclude_diagonal: bool = False) -> Tensor:
    """Each row's mean over its k largest entries (its own column left out when `exclude_diagonal`)."""
    if exclude_diagonal:
        matrix = matrix.clone()
        matrix.fill_diagonal_(-math.inf)
    available = matrix.shape[1] - (1 if exclude_diagonal else 0)
    if available < 1:
        return torch.zeros(matrix.shape[0])
    return matrix.topk(min(k, available), dim=1).values.mean(dim=1)


def standardize(scores: Tensor) -> Tensor:
    """z-scores over the set (all zeros when the scores do not vary)."""
    spread = scores.std() if len(scores) > 1 else torch.tensor(0.0)
    return (scores - scores.mean()) / spread if spread > 0 else torch.zeros_like(scores)


def scores_to_weights(z: Tensor, temperature: float, lowest: float, highest: float) -> Tensor:
    """exp(z / temperature), scaled to mean 1, then clipped to [lowest, highest]."""
    weights = torch.exp((z / temperature).clamp(max=60.0))
    return (weights / weights.mean()).clamp(lowest, highest)


def influence_weights(forget: Tensor, retain: Tensor, mapping: Mapping) -> dict[str, Tensor]:
    """Block scores, z-scores and weights of the forget and retain texts from their compressed gradients."""
    forget_forget = similarity_matrix(forget, forget, mapping.similarity)
    forget_retain = similarity_matrix(forget, retain, mapping.similarity)
    retain_retain = similarity_matrix(retain, retain, mapping.similarity)
    scores = {
        "ff": top_k_mean(forget_forget, mapping.map_topk, exclude_diagonal=True),
        "fr": top_k_mean(forget_retain, mapping.map_topk),
        "rf": top_k_mean(forget_retain.T, mapping.map_topk),
        "rr": top_k_mean(retain_retain, mapping.map_topk, exclude_diagonal=True),
    }
    scores["z_forget"] = mapping.alpha * standardize(scores["ff"]) - mapping.beta * standardize(scores["fr"])
    scores["z_retain"] = mapping.gamma * standardize(scores["rf"]) + mapping.delta * standardize(scores["rr"])
    scores["forget_weight"] = scores_to_weights(scores["z_forget"], mapping.tau_f, mapping.wmin_f, mapping.wmax_f)
    scores["retain_weight"] = scores_to_weights(scores["z_retain"], mapping.tau_r, mapping.wmin_r, mapping.wmax_r)
    return scores


# ---------------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------------


def file_fingerprint(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def plot_histograms(path: Path, forget: Tensor, retain: Tensor, mapping: Mapping) -> None:
    import matplotlib.pyplot as plt

    from brittle.plotting import save_figure

    figure, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for axis, weights, what, bounds in ((axes[0], forget, "forget", (mapping.wmin_f, mapping.wmax_f)),
                                        (axes[1], retain, "retain", (mapping.wmin_r, mapping.wmax_r))):
        axis.hist(weights.numpy(), bins=40, color="tab:red" if what == "forget" else "tab:blue", alpha=0.8)
        for bound in bounds:
            axis.axvline(bound, color="grey", linestyle=":", linewidth=1)
        axis.axvline(1.0, color="black", linewidth=0.8)
        axis.set_title(f"{what} weights ({len(weights)} texts, mean {weights.mean():.2f})")
        axis.set_xlabel("weight (dotted: clip bounds)")
        axis.set_ylabel("texts")
    figure.suptitle("Influence weights (RapidIn -> RapidUn)")
    save_figure(figure, path)


def check_previous(outdir: Path, settings: dict, force: bool) -> bool:
    """True (after one line) when `outdir` already holds weights computed with these settings."""
    record_path = outdir / RECORD
    if force or not record_path.is_file():
        return False
    previous = json.loads(record_path.read_text()).get("settings", {})
    if previous == settings:
        print(f"skipped: influence weights already computed with these settings ({outdir}); pass --force to redo them")
        return True
    changed = ", ".join(f"{name} {previous.get(name)!r} -> {value!r}" for name, value in settings.items()
                        if previous.get(name) != value)
    raise UserError(f"{outdir} holds influence weights computed with other settings ({changed}); pass --force to "
                    "replace them, or --outdir for a separate folder")


# ---------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="real", choices=["real", "toy"])
    parser.add_argument("--model", default=None, help="model whose gradients are compared (default: the preset's base)")
    parser.add_argument("--forget-data", default=None, help="forget texts, one per line (default: the preset's)")
    parser.add_argument("--retain-data", default=None, help="retain texts, one per line (default: the preset's)")
    parser.add_argument("--outdir", default=None,
                        help="output folder (default <forget data folder>/influence_weights/<model>/)")
    parser.add_argument("--max-length", type=int, default=None, help="tokens per text (default: the preset's)")
    gradients = parser.add_argument_group("gradients and compression")
    gradients.add_argument("--gradient-params", default="lora",
                           help="'lora' (a fresh seeded adapter, default), 'all', or a regex over parameter names")
    gradients.add_argument("--lora-rank", type=int, default=16, help="rank of the gradient adapter (default 16)")
    gradients.add_argument("--proj-dim", type=int, default=4096, help="CountSketch dimension (default 4096)")
    mapping = parser.add_argument_group("mapping influences to weights (RapidUn's defaults)")
    for field, value in asdict(Mapping()).items():
        if field == "similarity":
            mapping.add_argument("--similarity", default=value, choices=["cosine", "dot"],
                                 help="compare compressed gradients by cosine (default) or dot product")
        else:
            mapping.add_argument(f"--{field.replace('_', '-')}", type=type(value), default=value,
                                 help=f"default {value}")
    runtime = parser.add_argument_group("runtime")
    runtime.add_argument("--device", default="auto")
    runtime.add_argument("--dtype", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                         help="compute dtype (autocast); the gradient parameters are fp32, frozen weight matrices "
                              "stay in the checkpoint's dtype (auto = bf16 on CUDA, fp32 on CPU)")
    add_attention_argument(runtime)
    runtime.add_argument("--seed", type=int, default=42, help="seed of the adapter and the sketch (default 42)")
    runtime.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: the preset's)")
    runtime.add_argument("--force", action="store_true", help="recompute even if the weights exist")
    return parser.parse_args()


def check_arguments(args: argparse.Namespace) -> None:
    if args.proj_dim < 1 or args.map_topk < 1 or args.lora_rank < 1:
        raise UserError("--proj-dim, --map-topk and --lora-rank must be at least 1")
    if min(args.tau_f, args.tau_r) <= 0:
        raise UserError("--tau-f and --tau-r must be positive")
    for what in ("f", "r"):
        lowest, highest = getattr(args, f"wmin_{what}"), getattr(args, f"wmax_{what}")
        if not 0 <= lowest <= highest:
            raise UserError(f"--wmin-{what} and --wmax-{what} must satisfy 0 <= wmin <= wmax, got {lowest}, {highest}")


def main() -> None:
    args = parse_arguments()
    check_arguments(args)
    preset = get_preset(args.preset, args.seed)
    defaults = {**preset.unlearn_defaults.get("all", {}), **preset.unlearn_defaults.get("rapidun", {})}
    model_name = args.model or preset.base
    forget_path, retain_path = args.forget_data or preset.forget_text, args.retain_data or preset.retain_text
    max_length = args.max_length or int(defaults.get("max_length", 512))
    outdir = Path(args.outdir) if args.outdir else default_weights_dir(model_name, forget_path)
    forget_texts = read_texts(forget_path, what="forget data")
    retain_texts = read_texts(retain_path, what="retain data")
    check_disjoint(forget_texts, retain_texts)
    mapping = Mapping(**{field: getattr(args, field) for field in asdict(Mapping())})
    settings = {"model": model_name, "forget_data": str(forget_path), "retain_data": str(retain_path),
                "forget_fingerprint": file_fingerprint(forget_path),
                "retain_fingerprint": file_fingerprint(retain_path),
                "gradient_params": args.gradient_params, "lora_rank": args.lora_rank, "proj_dim": args.proj_dim,
                "max_length": max_length, "seed": args.seed, **asdict(mapping)}
    if check_previous(outdir, settings, args.force):
        return

    threads = args.threads if args.threads is not None else int(defaults.get("threads", 0))
    if threads:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    seed_everything(args.seed)
    model, tokenizer = load_model_and_tokenizer(model_name, args.device, "stored")
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    if args.gradient_params == "lora":
        from brittle.trainer import wrap_with_lora

        torch.manual_seed(args.seed)  # the adapter's A matrices: part of the projection
        model = wrap_with_lora(model, args.lora_rank, 2.0 * args.lora_rank)
    parameters = select_parameters(model, args.gradient_params)
    device = input_device(model)
    precision = resolve_precision(args.dtype, "auto", device, stored_dtype(model_name, model))
    prepare_for_training(model, precision)
    sketch = CountSketch(args.proj_dim, args.seed)
    forget = compressed_gradients(model, parameters, encode_texts(tokenizer, forget_texts, max_length), sketch, device,
                                  "forget", precision)
    retain = compressed_gradients(model, parameters, encode_texts(tokenizer, retain_texts, max_length), sketch, device,
                                  "retain", precision)
    scores = influence_weights(forget, retain, mapping)
    seconds = time.perf_counter() - start

    with staged_directory(outdir) as staging:
        for what, weights in (("forget", scores["forget_weight"]), ("retain", scores["retain_weight"])):
            name = FORGET_WEIGHTS_FILE if what == "forget" else RETAIN_WEIGHTS_FILE
            write_jsonl(staging / name, ({"index": index, "weight": round(float(weight), 6)}
                                         for index, weight in enumerate(weights)))
        rows = [{"set": "forget", "index": index, "ff": float(scores["ff"][index]), "fr": float(scores["fr"][index]),
                 "rf": None, "rr": None, "z": float(scores["z_forget"][index]),
                 "weight": float(scores["forget_weight"][index]), "text": text}
                for index, text in enumerate(forget_texts)]
        rows += [{"set": "retain", "index": index, "ff": None, "fr": None, "rf": float(scores["rf"][index]),
                  "rr": float(scores["rr"][index]), "z": float(scores["z_retain"][index]),
                  "weight": float(scores["retain_weight"][index]), "text": text}
                 for index, text in enumerate(retain_texts)]
        write_csv(staging / "influence_scores.csv", rows)
        plot_histograms(staging / "weights_histogram.png", scores["forget_weight"], scores["retain_weight"], mapping)
        summary = {what: {"mean": float(weights.mean()), "min": float(weights.min()), "max": float(weights.max()),
                          "at_lower_bound": int((weights <= getattr(mapping, f"wmin_{what[0]}") + 1e-9).sum()),
                          "at_upper_bound": int((weights >= getattr(mapping, f"wmax_{what[0]}") - 1e-9).sum())}
                   for what, weights in (("forget", scores["forget_weight"]), ("retain", scores["retain_weight"]))}
        write_json(staging / RECORD, {"settings": settings, "summary": summary, "seconds": round(seconds, 1),
                                      "gradient_parameters": sum(p.numel() for p in parameters.values())})
    for what, stats in summary.items():
        print(f"  {what} weights: mean {stats['mean']:.3f}, range {stats['min']:.3f}-{stats['max']:.3f}, "
              f"{stats['at_lower_bound']} at the lower and {stats['at_upper_bound']} at the upper bound")
    print(f"influence weights of {len(forget_texts)} forget and {len(retain_texts)} retain texts -> {outdir} "
          f"({seconds:.0f} s)")


if __name__ == "__main__":
    run_cli(main)
