# /// script
# requires-python = ">=3.10"
# dependencies = ["brittle"]
#
# [tool.uv.sources]
# brittle = { path = "..", editable = true }
# ///
"""Benchmark: the tuned lens's training time and held-out KL, Step 6's streamed route vs the two it replaced.

**Part 1, the organism** (`--workspace` holding `models/toy-base-s42` and `data/toy`). Three routes train
the same lens (`brittle.lens.Lens`, Step 6's recipe and batch size), all holding out the last
`--validation-fraction` of the retain texts:

- **streamed** (Step 6 now, run with Step 6's own code): the training texts streamed through the model
  while the lens trains (`brittle.lens.HiddenStates.training_batches`): every training token, once per
  epoch, in batches of whole texts packed to the batch size; nothing cached;
- **sample** (Step 6 at commit 3a7b907, rebuilt here): the statistics pass kept the hidden states of a
  random sample of at most `--lens-tokens` retain tokens (drawn as the store drew it), and each step drew
  a batch of them with replacement; `--lens-tokens` runs several sample sizes: 2 x width is the 6.9B
  model's ratio (8192 tokens for width 4096);
- **before** (commit a548fa2, rebuilt here): every token of the retain texts (the raw cache), each
  layer's translator trained after the other (one `nn.Linear`, one SGD optimizer and one clipping per
  layer, batches drawn from one generator in turn).

Every lens is measured on the same held-out tokens: every token of the held-out texts, which is what
Step 6 reports now; the logit lens is the reference. The training time of the streamed route includes
its forward passes.

**Part 2, the real shape** (skipped with `--skip-real`). A random-init GPT-NeoX of Pythia-410M's shape
(24 layers, width 1024, vocabulary 50304) gives the final norm and unembedding and the forward pass;
one lens training step at `--real-batch-tokens` tokens is timed on random hidden states (a step's cost
does not depend on their values), and one forward pass of the model over that many tokens (what the
streamed route adds per step). Both are scaled by FLOPs to Step 6's 4096-token batches and to the 6.9B
shape (32 layers, width 4096) on one H100-class GPU at an assumed throughput.

    uv run benchmarks/tuned_lens.py --workspace /path/to/workspace     # a few minutes on one CPU core
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from brittle.activations import TokenizedSplit, tokenize_texts
from brittle.lens import (
    HiddenStates,
    Lens,
    TunedLensTraining,
    Unembedding,
    heldout_kl_by_layer,
    kl_to_final,
    train_tuned_lens,
)
from brittle.models import load_model_and_tokenizer
from brittle.texts import read_texts

TOY_BATCH_TOKENS = 512  # Step 6's TUNED_LENS_BATCH_TOKENS["toy"]
REAL_BATCH_TOKENS = 4096  # Step 6's TUNED_LENS_BATCH_TOKENS["real"]
OLD_LENS_TOKENS = 8192  # the statistics store's lens sample at commit 3a7b907 (--lens-tokens)
BIG_SHAPE = (32, 4096, 50304)  # the 6.9B GPT-NeoX: layers, width, vocabulary
BIG_CONTEXT = 512  # Step 6's --max-length: the retain texts' tokens per forward pass


# ---------------------------------------------------------------------------------------------
# The replaced routes: in-memory hidden states, batches of tokens drawn with replacement
# ---------------------------------------------------------------------------------------------

def sampled_batches(hidden: Tensor, recipe: TunedLensTraining) -> Iterator[Tensor]:
    """3a7b907's batches: `batch_tokens` (at most all) tokens of `hidden` drawn with replacement per step."""
    generator = torch.Generator().manual_seed(recipe.seed)
    tokens = hidden.shape[1]
    while True:
        yield hidden[:, torch.randint(tokens, (min(recipe.batch_tokens, tokens),), generator=generator)]


def train_layer_by_layer(lens: Lens, hidden: Tensor, recipe: TunedLensTraining) -> None:
    """a548fa2's `train_tuned_lens`: each layer's translator (an `nn.Linear`) fitted after the other on
    every training token, then copied into `lens`'s stacked parameters (h + W h + b, the same map)."""
    generator = torch.Generator().manual_seed(recipe.seed)
    unembedding = lens.unembedding
    final_hidden = hidden[lens.num_layers]
    tokens = hidden.shape[1]
    for layer in range(lens.num_layers):
        translator = nn.Linear(hidden.shape[-1], hidden.shape[-1])
        nn.init.zeros_(translator.weight)
        nn.init.zeros_(translator.bias)
        optimizer = torch.optim.SGD(translator.parameters(), lr=recipe.lr_scale * (1 - recipe.momentum),
                                    momentum=recipe.momentum, nesterov=True, weight_decay=recipe.weight_decay)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / recipe.steps)
        for _ in range(recipe.steps):
            batch = torch.randint(tokens, (min(recipe.batch_tokens, tokens),), generator=generator)
            with torch.no_grad():
                target = F.log_softmax(unembedding(final_hidden[batch], normed=True), dim=-1)
            states = hidden[layer, batch]
            loss = kl_to_final(unembedding(states + translator(states)), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(translator.parameters(), 1.0)
            optimizer.step()
            schedule.step()
        with torch.no_grad():
            lens.weight[layer] = translator.weight
            lens.bias[layer] = translator.bias
    lens.requires_grad_(False)


# ---------------------------------------------------------------------------------------------
# Part 1: the organism
# ---------------------------------------------------------------------------------------------

@dataclass
class RetainTokens:
    """Every layer's hidden states of every retain token (text order) and which text each belongs to."""

    hidden: Tensor  # (layers + 1, tokens, width)
    sequence: np.ndarray  # (tokens,)

    def of(self, rows: np.ndarray) -> Tensor:
        return self.hidden[:, torch.from_numpy(rows)]


def timed(train, *arguments) -> tuple[float, float]:
    """Wall and CPU seconds of `train(*arguments)` (CPU time: all threads, unaffected by other processes)."""
    wall, cpu = time.perf_counter(), time.process_time()
    train(*arguments)
    return time.perf_counter() - wall, time.process_time() - cpu


def organism(args: argparse.Namespace) -> None:
    os.chdir(args.workspace)
    texts = read_texts(Path(args.retain_text), args.max_samples)
    held_out_texts = max(1, round(len(texts) * args.validation_fraction))
    training_texts = len(texts) - held_out_texts
    model, tokenizer = load_model_and_tokenizer(args.model, device="cpu", dtype="fp32")
    split = tokenize_texts(tokenizer, texts, args.max_length, "retain", args.retain_text)
    unembedding = Unembedding(model, "cpu")
    num_layers, width = model.config.num_hidden_layers, model.config.hidden_size
    def lens(tuned: bool) -> Lens:
        return Lens(unembedding, num_layers, width, tuned=tuned)

    def states(indices: range) -> HiddenStates:
        return HiddenStates(model, split, indices, args.batch_tokens, tokenizer.pad_token_id, "cpu")

    # Every token in memory (the raw cache's content), in text order: for the replaced routes and the KL.
    every = RetainTokens(torch.cat(list(states(range(len(texts))).stream(range(len(texts)))), dim=1),
                         np.repeat(np.arange(len(texts)), split.kept_lengths))
    training_rows = np.flatnonzero(every.sequence < training_texts)
    held_out = every.of(np.flatnonzero(every.sequence >= training_texts))
    print(f"organism {args.model}: {num_layers} layers, width {width}; {len(texts)} retain texts, "
          f"{len(training_rows)} training and {held_out.shape[1]} held-out tokens; {args.steps} steps "
          f"of {args.batch_tokens} tokens, torch threads {torch.get_num_threads()}")

    rows: dict[str, list[tuple[int, tuple[float, float], list[float]]]] = {}

    def record(name: str, tokens: int, seconds: tuple[float, float], trained: Lens) -> None:
        rows.setdefault(name, []).append((tokens, seconds, heldout_kl_by_layer(trained, [held_out])))

    for seed in args.seeds:  # the batches' seed (the store's sample keeps its own fixed seed, as it did)
        recipe = TunedLensTraining(args.steps, seed=seed, batch_tokens=args.batch_tokens)
        before = lens(tuned=True)
        seconds = timed(train_layer_by_layer, before, every.of(training_rows), recipe)
        record("before: every token in memory, layer by layer (a548fa2)", len(training_rows), seconds, before)
        streamed, stream = lens(tuned=True), states(range(training_texts))
        seconds = timed(train_tuned_lens, streamed, stream.training_batches(seed), recipe)
        record("**now: streamed through the model, every token, all layers at once**", stream.tokens, seconds,
               streamed)
        print(f"  seed {seed}: the streamed route ran {stream.texts_run} texts ({stream.tokens_run} tokens, "
              f"{stream.tokens_run / stream.tokens:.1f} epochs) through the model while training")
        for lens_tokens in args.lens_tokens:
            # The statistics pass's sample (3a7b907): uniform over all retain tokens, fixed seed, row order.
            sample = np.arange(len(every.sequence))
            if len(sample) > lens_tokens:
                sample = np.sort(np.random.default_rng(0).choice(len(sample), lens_tokens, replace=False))
            train_sample = sample[every.sequence[sample] < training_texts]
            today = lens(tuned=True)
            seconds = timed(train_tuned_lens, today, sampled_batches(every.of(train_sample), recipe), recipe)
            record(f"sample: {lens_tokens}-token sample, all layers at once (3a7b907)", len(train_sample), seconds,
                   today)

    seeds = len(args.seeds)
    print(f"\nheld-out KL(final ‖ lens) in nats on every token of the {held_out_texts} held-out texts, by layer"
          + (f"; mean (min-max) over the seeds {' '.join(map(str, args.seeds))}" if seeds > 1 else "")
          + "; training time of the first seed")
    print("| lens | training tokens | training time, wall (CPU) | "
          + " | ".join(f"layer {layer}" for layer in range(num_layers)) + " |")
    print("|---|---|---|" + "---|" * num_layers)
    print("| logit lens | - | - | " + " | ".join(f"{value:.4f}" for value in
                                                 heldout_kl_by_layer(lens(False), [held_out])[:num_layers]) + " |")
    for name, runs in rows.items():
        tokens, seconds, _ = runs[0]
        values = np.array([kls[:num_layers] for _, _, kls in runs])
        cells = [f"{mean:.4f}" + (f" ({low:.4f}-{high:.4f})" if seeds > 1 else "")
                 for mean, low, high in zip(values.mean(0), values.min(0), values.max(0), strict=True)]
        print(f"| {name} | {tokens} | {seconds[0]:.1f} s ({seconds[1]:.1f} s) | " + " | ".join(cells) + " |")


# ---------------------------------------------------------------------------------------------
# Part 2: the real shape, one training step timed, extrapolated by FLOPs
# ---------------------------------------------------------------------------------------------

def step_flops(layers: int, width: int, vocab: int, tokens: int) -> float:
    """FLOPs of one training step: per layer and token, the translator (2·d², and 2·d² for its weight's
    gradient) and the unembedding (2·d·V, and 2·d·V for the gradient of its input); plus the final
    layer's target distribution (2·d·V). Norms, softmax and the optimizer are O(d + V) per token."""
    return tokens * (layers * (4 * width * width + 4 * width * vocab) + 2 * width * vocab)


def forward_flops(layers: int, width: int, vocab: int, context: int, tokens: int) -> float:
    """FLOPs of the model's forward pass over `tokens` tokens in texts of `context` tokens (Kaplan et al.'s
    2N + 2·layers·context·d per token, N = 12·layers·d² + d·V the non-embedding weights and the unembedding)."""
    return tokens * (2 * (12 * layers * width * width + width * vocab) + 2 * layers * context * width)


def real_shape(args: argparse.Namespace) -> None:
    config = GPTNeoXConfig(vocab_size=args.vocab, hidden_size=args.width, num_hidden_layers=args.layers,
                           num_attention_heads=16, intermediate_size=4 * args.width, max_position_embeddings=2048)
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(config).eval()
    unembedding = Unembedding(model, "cpu")
    tokens = args.real_batch_tokens
    hidden = torch.randn(args.layers + 1, tokens, args.width)
    times = {steps: timed(train_tuned_lens, Lens(unembedding, args.layers, args.width, tuned=True),
                          itertools.repeat(hidden), TunedLensTraining(steps, batch_tokens=tokens))
             for steps in (1, 1 + args.real_steps)}  # the difference leaves out the set-up both runs share
    per_step, cpu_per_step = ((times[1 + args.real_steps][kind] - times[1][kind]) / args.real_steps for kind in (0, 1))
    # The streamed route's extra work per step: one forward pass over the step's tokens (one text of them).
    text = tuple(torch.randint(args.vocab, (tokens,), generator=torch.Generator().manual_seed(0)).tolist())
    stream = HiddenStates(model, TokenizedSplit("retain", "random", (text,), (0,)), [0], tokens, 0, "cpu")
    next(stream.stream([0]))  # warm-up
    forward = min(timed(lambda: next(stream.stream([0]))) for _ in range(args.real_steps))
    flops = step_flops(args.layers, args.width, args.vocab, tokens)
    forward_flop = forward_flops(args.layers, args.width, args.vocab, tokens, tokens)
    full = (cpu_per_step + forward[1]) * REAL_BATCH_TOKENS / tokens
    big_step = step_flops(*BIG_SHAPE, REAL_BATCH_TOKENS)
    big_forward = forward_flops(*BIG_SHAPE, BIG_CONTEXT, REAL_BATCH_TOKENS)
    gpu_step = (big_step + big_forward) / (args.gpu_tflops * 1e12)
    print(f"\nGPT-NeoX of {args.layers} layers, width {args.width}, vocabulary {args.vocab} (random init), "
          f"CPU float32, torch threads {torch.get_num_threads()}:")
    print(f"  one lens step of {tokens} tokens: {per_step:.1f} s wall, {cpu_per_step:.1f} s CPU "
          f"({flops / 1e12:.2f} TFLOP, {flops / cpu_per_step / 1e9:.0f} GFLOP/s of CPU time)")
    print(f"  the forward pass streaming those {tokens} tokens: {forward[0]:.1f} s wall, {forward[1]:.1f} s CPU "
          f"({forward_flop / 1e12:.2f} TFLOP, {forward_flop / forward[1] / 1e9:.0f} GFLOP/s of CPU time)")
    print(f"  a {REAL_BATCH_TOKENS}-token step (Step 6's), forward pass included: ~{full:.0f} s of CPU time, "
          f"250 steps {250 * full / 3600:.1f} h")
    print(f"  6.9B shape ({BIG_SHAPE[0]} layers, width {BIG_SHAPE[1]}, vocabulary {BIG_SHAPE[2]}; texts of "
          f"{BIG_CONTEXT} tokens): {big_step / 1e12:.0f} TFLOP of lens training + {big_forward / 1e12:.0f} TFLOP "
          f"of forward pass per {REAL_BATCH_TOKENS}-token step, {250 * (big_step + big_forward) / 1e15:.1f} PFLOP "
          f"for 250 steps; at {args.gpu_tflops:.0f} TFLOP/s (bf16 on one H100-class GPU) {gpu_step:.2f} s per "
          f"step, 250 steps {250 * gpu_step / 60:.1f} min")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", default=".", help="folder holding the organism's models/ and data/ (default .)")
    parser.add_argument("--model", default="models/toy-base-s42")
    parser.add_argument("--retain-text", default="data/toy/retain.txt")
    parser.add_argument("--max-samples", type=int, default=500, help="retain texts (Step 6's default 500)")
    parser.add_argument("--validation-fraction", type=float, default=0.1, help="Step 6's default 0.1")
    parser.add_argument("--steps", type=int, default=250, help="training steps (Step 6's default 250)")
    parser.add_argument("--batch-tokens", type=int, default=TOY_BATCH_TOKENS, help="Step 6's toy default 512")
    parser.add_argument("--max-length", type=int, default=512, help="tokens per text (Step 6's default 512)")
    parser.add_argument("--lens-tokens", type=int, nargs="*", default=[OLD_LENS_TOKENS, 1024, 256],
                        help="token samples to train the replaced sample route on (default 8192 1024 256)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42],
                        help="seeds of the training batches; several give the spread (default 42, Step 6's)")
    parser.add_argument("--skip-organism", action="store_true")
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=50304)
    parser.add_argument("--real-batch-tokens", type=int, default=64,
                        help="tokens of the timed step at the real shape (default 64; CPU time is linear in it)")
    parser.add_argument("--real-steps", type=int, default=2, help="timed steps at the real shape (default 2)")
    parser.add_argument("--gpu-tflops", type=float, default=400.0,
                        help="assumed sustained bf16 throughput of one H100-class GPU (default 400 TFLOP/s, "
                             "about 40%% of the H100 SXM's dense peak)")
    args = parser.parse_args()

    if not args.skip_organism:
        organism(args)
    if not args.skip_real:
        real_shape(args)


if __name__ == "__main__":
    main()
