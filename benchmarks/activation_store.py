# /// script
# requires-python = ">=3.10"
# dependencies = ["brittle"]
#
# [tool.uv.sources]
# brittle = { path = "..", editable = true }
# ///
"""Benchmark: bytes written and wall time of the activation section, raw cache vs statistics store.

A random-init pair of GPT-NeoX models of Pythia-410M's shape (24 layers, width 1024, 16 heads,
vocabulary 50304) reads `--texts` random texts per split (forget, retain) of `--tokens` tokens each:

- **before** (the raw cache this project used to keep): every token's hidden states (num_layers + 1)
  and MLP inputs (num_layers) in float32, one `.npy` per layer, for each (model, split);
- **after** (`brittle.activations.ActivationStore`): the statistics passes the activation steps run,
  i.e. a single-model pass per (model, split) (Steps 5, 8, 9) and the paired pass per split (Steps 3
  and 11, with ΔW's SVD read from the safetensors files). Step 6's tuned lens stores nothing: it streams
  the retain texts through the model while it trains (`brittle.lens.HiddenStates`).

Both are measured here (bytes on disk, wall time, CPU by default), then extrapolated to the 6.9B shape
(32 layers, width 4096) with `--real-texts` texts per split: each store's size is a sum of terms
linear in layers x width² and layers x width x texts, so the measured
bytes are scaled by the ratio of the formula at the two shapes (the formula's own prediction at the
small shape is printed beside the measurement, to show it accounts for every byte).

    uv run benchmarks/activation_store.py                 # 64 texts of 128 tokens, CPU: a few minutes
    uv run benchmarks/activation_store.py --tokens 512 --device cuda --dtype bf16
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast

from brittle.activations import ActivationSettings, ActivationStore, stream_activations, tokenize_texts
from brittle.models import load_model, load_tokenizer

SPLITS = ("forget", "retain")


@dataclass(frozen=True)
class Shape:
    """What the store's size depends on."""

    layers: int
    width: int
    texts: int  # per split
    tokens_per_text: int

    @property
    def tokens(self) -> int:
        return self.texts * self.tokens_per_text

    def raw_bytes(self) -> int:
        """Raw cache per model: every token's hidden states and MLP inputs, float32, both splits."""
        return len(SPLITS) * self.tokens * (2 * self.layers + 1) * self.width * 4

    def statistics_bytes(self) -> int:
        """Statistics per model, both splits: Σxxᵀ (upper triangle, float64), Σx, last-token and mean vectors
        (float32), lengths."""
        states = self.layers + 1
        per_split = (states * self.width * (self.width + 1) // 2 * 8 + states * self.width * 8
                     + 2 * states * self.texts * self.width * 4 + self.texts * 8)
        return len(SPLITS) * per_split

    def pair_bytes(self) -> int:
        """The paired statistics per comparison, both splits: per-direction projection sums of two models
        (float64), ΔW's singular values (float32), norm sums."""
        return len(SPLITS) * (2 * self.layers * self.width * 8 + self.layers * self.width * 4)


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def make_models(folder: Path, args: argparse.Namespace) -> list[str]:
    """Two random-init GPT-NeoX models of the given shape and a word-level tokenizer of their vocabulary."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel({f"t{index}": index for index in range(args.vocab)}, unk_token="t0"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="t0", unk_token="t0")
    config = GPTNeoXConfig(vocab_size=args.vocab, hidden_size=args.width, num_hidden_layers=args.layers,
                           num_attention_heads=args.heads, intermediate_size=4 * args.width,
                           max_position_embeddings=2048)
    names = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        path = folder / f"random-{seed}"
        GPTNeoXForCausalLM(config).save_pretrained(path)
        fast.save_pretrained(path)
        names.append(str(path))
    return names


def write_raw_cache(models: list[str], files: dict[str, Path], texts: dict[str, list[str]], folder: Path,
                    args: argparse.Namespace) -> None:
    """The raw route: every kept token's hidden states and MLP inputs, float32 memory-mapped `.npy` files."""
    for model_name in models:
        model = load_model(model_name, args.device, args.dtype)
        tokenizer = load_tokenizer(model_name)
        for split in SPLITS:
            tokenized = tokenize_texts(tokenizer, texts[split], args.tokens, split, files[split])
            slot = folder / Path(model_name).name / split
            slot.mkdir(parents=True)
            total = int(tokenized.kept_lengths.sum())
            files_of = {kind: [np.lib.format.open_memmap(slot / f"{kind}_{index:03d}.npy", mode="w+",
                                                         dtype=np.float32, shape=(total, args.width))
                               for index in range(count)]
                        for kind, count in (("hidden", args.layers + 1), ("mlp_input", args.layers))}
            for batch in stream_activations(model, tokenized, 8, tokenizer.pad_token_id, mlp_inputs=True):
                rows = batch.rows.numpy()
                for kind, tensors in (("hidden", batch.hidden), ("mlp_input", batch.mlp_inputs)):
                    for file, tensor in zip(files_of[kind], tensors, strict=True):
                        file[rows] = tensor.float().cpu().numpy()
            for memmap in (*files_of["hidden"], *files_of["mlp_input"]):
                memmap.flush()
            np.save(slot / "lengths.npy", tokenized.kept_lengths)
        del model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--vocab", type=int, default=50304)
    parser.add_argument("--texts", type=int, default=64, help="texts per split (default 64)")
    parser.add_argument("--tokens", type=int, default=128, help="tokens per text (default 128)")
    parser.add_argument("--real-texts", type=int, default=500, help="texts per split at the 6.9B shape (500)")
    parser.add_argument("--real-tokens", type=int, default=512, help="tokens per text at the 6.9B shape (512)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--workdir", default=None, help="where models and stores go (default: a temporary folder)")
    args = parser.parse_args()

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="activation-store-bench-"))
    try:
        models = make_models(workdir, args)
        generator = np.random.default_rng(0)
        texts = {split: [" ".join(f"t{token}" for token in generator.integers(1, args.vocab, args.tokens))
                         for _ in range(args.texts)] for split in SPLITS}
        files = {split: workdir / f"{split}.txt" for split in SPLITS}
        for split in SPLITS:
            files[split].write_text("\n".join(texts[split]) + "\n")

        started = time.perf_counter()
        write_raw_cache(models, files, texts, workdir / "raw", args)
        raw_seconds = time.perf_counter() - started
        raw_bytes = folder_bytes(workdir / "raw")

        settings = ActivationSettings(workdir / "statistics", max_length=args.tokens, device=args.device,
                                      dtype=args.dtype)
        started = time.perf_counter()
        with ActivationStore(settings) as store:
            for model in models:
                for split in SPLITS:
                    store.texts(model, split, files[split], texts[split])
            for split in SPLITS:
                store.pair(models[0], models[1], split, files[split], texts[split])
        statistics_seconds = time.perf_counter() - started
        pair_bytes = sum(folder_bytes(path) for path in (workdir / "statistics").glob("*__to__*"))
        statistics_bytes = folder_bytes(workdir / "statistics") - pair_bytes
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)

    small = Shape(args.layers, args.width, args.texts, args.tokens)
    real = Shape(32, 4096, args.real_texts, args.real_tokens)
    per_model = {"raw": raw_bytes / 2, "statistics": statistics_bytes / 2}

    def gb(value: float) -> str:
        return f"{value / 1e6:.2f} MB" if value < 1e9 else f"{value / 1e9:.1f} GB"

    print(f"shape: {args.layers} layers, width {args.width}, vocabulary {args.vocab}; {args.texts} texts x "
          f"{args.tokens} tokens per split; {args.device} {args.dtype}")
    print("| route | written per model (measured) | formula | wall time, 2 models x 2 splits | "
          f"6.9B, {args.real_texts} texts x {args.real_tokens} tokens, per model |")
    print("|---|---|---|---|---|")
    print(f"| raw cache (before) | {gb(per_model['raw'])} | {gb(small.raw_bytes())} | {raw_seconds:.0f} s | "
          f"{gb(per_model['raw'] * real.raw_bytes() / small.raw_bytes())} |")
    print(f"| statistics (after) | {gb(per_model['statistics'])} | {gb(small.statistics_bytes())} | "
          f"{statistics_seconds:.0f} s (incl. paired passes) | "
          f"{gb(per_model['statistics'] * real.statistics_bytes() / small.statistics_bytes())} |")
    print(f"| paired statistics, per comparison | {gb(pair_bytes)} | {gb(small.pair_bytes())} | (above) | "
          f"{gb(pair_bytes * real.pair_bytes() / small.pair_bytes())} |")


if __name__ == "__main__":
    main()
