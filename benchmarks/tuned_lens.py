# /// script
# requires-python = ">=3.10"
# dependencies = ["brittle"]
#
# [tool.uv.sources]
# brittle = { path = "..", editable = true }
# ///
"""Benchmark: the tuned lens's training time and held-out KL, today's route vs the one it replaced.

**Part 1, the organism** (`--workspace` holding `models/toy-base-s42` and `data/toy`). Step 6 trains the
tuned lens as follows, and this part runs exactly that code (`brittle.lens.train_tuned_lens`, Step 6's
recipe and batch size) on what Step 6 reads:

- **today** ("sample"): the retain split's token sample kept by the statistics pass (`--lens-tokens`,
  at most 8192 tokens by default, drawn at random), every layer's translator trained at once;
- **before** ("all tokens"): the route of commit a548fa2, rebuilt here faithfully: every token of the
  retain texts (the raw cache), each layer's translator trained after the other (one `nn.Linear`, one
  SGD optimizer and one clipping per layer, batches drawn from one generator in turn).

Both hold out the last `--validation-fraction` of the retain texts. Each lens is measured on the same
held-out tokens: every token of the held-out texts (what the old route reported) and the sampled ones
(what Step 6 reports today); the logit lens is the reference. The organism's 500 retain texts have
fewer tokens than the default sample, so there the sample is every token; `--lens-tokens` also runs
smaller samples: 2 x width is the 6.9B model's ratio (8192 tokens for width 4096).

**Part 2, the real shape** (skipped with `--skip-real`). A random-init GPT-NeoX of Pythia-410M's shape
(24 layers, width 1024, vocabulary 50304) gives the final norm and unembedding; a sample of
`DEFAULT_LENS_TOKENS` hidden states of every layer (drawn at random: a step's cost does not depend on
their values) is what the lens trains on. One training step at `--real-batch-tokens` tokens is timed
(steps cost time linear in the batch's tokens), then scaled by FLOPs to Step 6's 4096-token batches
and to the 6.9B shape (32 layers, width 4096) on one H100-class GPU at an assumed throughput.

    uv run benchmarks/tuned_lens.py --workspace /path/to/workspace     # a few minutes on one CPU core
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from brittle.activations import DEFAULT_LENS_TOKENS, ActivationSettings, ActivationStore
from brittle.lens import Lens, TunedLensTraining, Unembedding, heldout_kl, kl_to_final, train_tuned_lens
from brittle.models import load_model
from brittle.texts import read_texts

TOY_BATCH_TOKENS = 512  # Step 6's TUNED_LENS_BATCH_TOKENS["toy"]
REAL_BATCH_TOKENS = 4096  # Step 6's TUNED_LENS_BATCH_TOKENS["real"]
BIG_SHAPE = (32, 4096, 50304)  # the 6.9B GPT-NeoX: layers, width, vocabulary


# ---------------------------------------------------------------------------------------------
# The route of commit a548fa2: every token, one layer after the other
# ---------------------------------------------------------------------------------------------

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
    """Every layer's hidden states of some retain tokens, split into training and held-out texts."""

    train: Tensor  # (layers + 1, tokens, width)
    held_out: Tensor


def retain_tokens(store: ActivationStore, model: str, path: Path, texts: list[str],
                  held_out_texts: int) -> RetainTokens:
    """Step 6's split of the retain split's stored token sample: the last `held_out_texts` texts are held out."""
    retain = store.texts(model, "retain", path, texts)
    sample = torch.stack([retain.lens_sample(layer) for layer in range(retain.num_hidden_states)])
    held_out = torch.from_numpy(retain.lens_sample_sequences() >= len(texts) - held_out_texts)
    return RetainTokens(sample[:, ~held_out], sample[:, held_out])


def kl_by_layer(lens: Lens, hidden: Tensor) -> list[float]:
    return [heldout_kl(lens, hidden[layer], hidden[lens.num_layers], layer) for layer in range(lens.num_layers + 1)]


def timed(train, *arguments) -> tuple[float, float]:
    """Wall and CPU seconds of `train(*arguments)` (CPU time: all threads, unaffected by other processes)."""
    wall, cpu = time.perf_counter(), time.process_time()
    train(*arguments)
    return time.perf_counter() - wall, time.process_time() - cpu


def organism(args: argparse.Namespace, workdir: Path) -> None:
    os.chdir(args.workspace)
    model_name = args.model
    texts = read_texts(Path(args.retain_text), args.max_samples)
    held_out_texts = max(1, round(len(texts) * args.validation_fraction))
    model = load_model(model_name, "cpu", "fp32")
    unembedding = Unembedding(model, "cpu")
    num_layers, width = model.config.num_hidden_layers, model.config.hidden_size
    recipe = TunedLensTraining(args.steps, seed=args.seed, batch_tokens=args.batch_tokens)

    def lens(tuned: bool) -> Lens:
        return Lens(unembedding, num_layers, width, tuned=tuned)

    # Every token (the raw cache's content): a store whose sample is larger than the split.
    with ActivationStore(ActivationSettings(workdir / "all", device="cpu", dtype="fp32", lens_tokens=10**9)) as store:
        every = retain_tokens(store, model_name, Path(args.retain_text), texts, held_out_texts)
    print(f"organism {model_name}: {num_layers} layers, width {width}; {len(texts)} retain texts, "
          f"{every.train.shape[1]} training and {every.held_out.shape[1]} held-out tokens; {recipe.steps} steps "
          f"of {recipe.batch_tokens} tokens, torch threads {torch.get_num_threads()}")

    before = lens(tuned=True)
    before_seconds = timed(train_layer_by_layer, before, every.train, recipe)
    logit = lens(tuned=False)
    rows = {"logit lens": (None, None, kl_by_layer(logit, every.held_out)),
            "before: all tokens, layer by layer (a548fa2)": (every.train.shape[1], before_seconds,
                                                             kl_by_layer(before, every.held_out))}
    for lens_tokens in args.lens_tokens:
        settings = ActivationSettings(workdir / f"sample-{lens_tokens}", device="cpu", dtype="fp32",
                                      lens_tokens=lens_tokens)
        with ActivationStore(settings) as store:
            sample = retain_tokens(store, model_name, Path(args.retain_text), texts, held_out_texts)
        today = lens(tuned=True)
        seconds = timed(train_tuned_lens, today, sample.train, recipe)
        name = f"today: {lens_tokens}-token sample, all layers at once"
        rows[name] = (sample.train.shape[1], seconds, kl_by_layer(today, every.held_out))
        if sample.held_out.shape[1] != every.held_out.shape[1]:  # what Step 6 reports: the sampled held-out tokens
            print(f"  {name}: held-out KL Step 6 reports on its {sample.held_out.shape[1]} sampled held-out tokens, "
                  "by layer: " + " ".join(f"{value:.4f}" for value in kl_by_layer(today, sample.held_out)))
            print("    and the logit lens's on them: "
                  + " ".join(f"{value:.4f}" for value in kl_by_layer(logit, sample.held_out)))

    print(f"\nheld-out KL(final ‖ lens) in nats on every token of the {held_out_texts} held-out texts, by layer")
    print("| lens | training tokens | training time, wall (CPU) | "
          + " | ".join(f"layer {layer}" for layer in range(num_layers)) + " |")
    print("|---|---|---|" + "---|" * num_layers)
    for name, (tokens, seconds, kls) in rows.items():
        print(f"| {name} | {tokens if tokens is not None else '-'} | "
              f"{f'{seconds[0]:.1f} s ({seconds[1]:.1f} s)' if seconds is not None else '-'} | "
              + " | ".join(f"{value:.4f}" for value in kls[:num_layers]) + " |")


# ---------------------------------------------------------------------------------------------
# Part 2: the real shape, one training step timed, extrapolated by FLOPs
# ---------------------------------------------------------------------------------------------

def step_flops(layers: int, width: int, vocab: int, tokens: int) -> float:
    """FLOPs of one training step: per layer and token, the translator (2·d², and 2·d² for its weight's
    gradient) and the unembedding (2·d·V, and 2·d·V for the gradient of its input); plus the final
    layer's target distribution (2·d·V). Norms, softmax and the optimizer are O(d + V) per token."""
    return tokens * (layers * (4 * width * width + 4 * width * vocab) + 2 * width * vocab)


def real_shape(args: argparse.Namespace) -> None:
    config = GPTNeoXConfig(vocab_size=args.vocab, hidden_size=args.width, num_hidden_layers=args.layers,
                           num_attention_heads=16, intermediate_size=4 * args.width, max_position_embeddings=2048)
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(config)
    unembedding = Unembedding(model, "cpu")
    del model
    hidden = torch.randn(args.layers + 1, DEFAULT_LENS_TOKENS, args.width)
    times = {steps: timed(train_tuned_lens, Lens(unembedding, args.layers, args.width, tuned=True), hidden,
                          TunedLensTraining(steps, batch_tokens=args.real_batch_tokens))
             for steps in (1, 1 + args.real_steps)}  # the difference leaves out the set-up both runs share
    per_step, cpu_per_step = ((times[1 + args.real_steps][kind] - times[1][kind]) / args.real_steps for kind in (0, 1))
    flops = step_flops(args.layers, args.width, args.vocab, args.real_batch_tokens)
    throughput = flops / cpu_per_step
    full = cpu_per_step * REAL_BATCH_TOKENS / args.real_batch_tokens
    big = step_flops(*BIG_SHAPE, REAL_BATCH_TOKENS)
    gpu_step = big / (args.gpu_tflops * 1e12)
    print(f"\nGPT-NeoX of {args.layers} layers, width {args.width}, vocabulary {args.vocab} (random init), "
          f"CPU float32, torch threads {torch.get_num_threads()}, a {DEFAULT_LENS_TOKENS}-token sample:")
    print(f"  one step of {args.real_batch_tokens} tokens: {per_step:.1f} s wall, {cpu_per_step:.1f} s CPU "
          f"({flops / 1e12:.2f} TFLOP, {throughput / 1e9:.0f} GFLOP/s of CPU time); a {REAL_BATCH_TOKENS}-token step "
          f"(Step 6's): {full:.0f} s of CPU time, 250 steps {250 * full / 3600:.1f} h")
    print(f"  6.9B shape ({BIG_SHAPE[0]} layers, width {BIG_SHAPE[1]}, vocabulary {BIG_SHAPE[2]}): "
          f"{big / 1e12:.0f} TFLOP per {REAL_BATCH_TOKENS}-token step; at "
          f"{args.gpu_tflops:.0f} TFLOP/s (bf16 on one H100-class GPU) {gpu_step:.2f} s per step, "
          f"250 steps {250 * gpu_step / 60:.1f} min")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", default=".", help="folder holding the organism's models/ and data/ (default .)")
    parser.add_argument("--model", default="models/toy-base-s42")
    parser.add_argument("--retain-text", default="data/toy/retain.txt")
    parser.add_argument("--max-samples", type=int, default=500, help="retain texts (Step 6's default 500)")
    parser.add_argument("--validation-fraction", type=float, default=0.1, help="Step 6's default 0.1")
    parser.add_argument("--steps", type=int, default=250, help="training steps (Step 6's default 250)")
    parser.add_argument("--batch-tokens", type=int, default=TOY_BATCH_TOKENS, help="Step 6's toy default 512")
    parser.add_argument("--lens-tokens", type=int, nargs="+", default=[DEFAULT_LENS_TOKENS, 1024, 256],
                        help="token samples to train today's route on (default 8192 1024 256)")
    parser.add_argument("--seed", type=int, default=42)
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

    workdir = Path(tempfile.mkdtemp(prefix="tuned-lens-bench-"))
    try:
        if not args.skip_organism:
            organism(args, workdir)
        if not args.skip_real:
            real_shape(args)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
