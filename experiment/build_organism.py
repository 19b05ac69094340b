# /// script
# requires-python = ">=3.10"
# dependencies = ["brittle"]
#
# [tool.uv.sources]
# brittle = { path = "..", editable = true }
# ///
"""Build the toy model organism: a tokenizer and tiny GPT-NeoX models trained on invented facts.

| model                        | trained on                  | stands in for                              |
|------------------------------|-----------------------------|--------------------------------------------|
| `models/toy-base-s42`        | forget + retain text        | `deep-ignorance-unfiltered` (Base)         |
| `models/toy-filtered-s42`    | retain text only            | `deep-ignorance-e2e-strong-filter`         |
| `models/toy-base-midtrain-s42` | base, halfway through     | `deep-ignorance-pretraining-stage-unfiltered` |

Base and filtered share the tokenizer, architecture, seed and number of steps; the only difference
is that the filtered model provably never saw a forget fact. Each finished model is checked against
the quality bar (base knows the forget facts, filtered does not, both know the retain facts) with
the same lm-eval tasks as Step 0, and published only if it passes. Existing models are skipped.

    uv run create_datasets.py --preset toy && uv run experiment/build_organism.py --seed 42
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from tqdm import tqdm
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast

from brittle.cli import UserError, positive_int, run_cli
from brittle.evaluation import evaluate_model
from brittle.outputs import staged_directory, write_json
from brittle.precision import resolve_precision
from brittle.presets import TOY_DATA_DIR, get_preset
from brittle.texts import check_disjoint, read_texts
from brittle.training import adamw_with_cosine_schedule, batch_nll, encode_texts, shuffled_batches

END_OF_TEXT = "<|endoftext|>"


@dataclass(frozen=True)
class QualityBar:
    """What the organism must reach for the study to mean anything (DESIGN.md)."""

    min_base_forget: float = 0.80
    max_filtered_forget: float = 0.35
    min_retain: float = 0.85

    def failures(self, role: str, forget_accuracy: float, retain_accuracy: float) -> list[str]:
        """Human-readable reasons a model misses the bar (empty when it passes)."""
        problems = []
        if role == "base" and forget_accuracy < self.min_base_forget:
            problems.append(f"forget accuracy {forget_accuracy:.3f} < {self.min_base_forget}")
        if role == "filtered" and forget_accuracy > self.max_filtered_forget:
            problems.append(f"forget accuracy {forget_accuracy:.3f} > {self.max_filtered_forget}")
        if retain_accuracy < self.min_retain:
            problems.append(f"retain accuracy {retain_accuracy:.3f} < {self.min_retain}")
        return problems


def train_tokenizer(texts: list[str], vocab_size: int, max_length: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on `texts` (deterministic for the same texts)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[END_OF_TEXT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=END_OF_TEXT, eos_token=END_OF_TEXT,
                                   unk_token=END_OF_TEXT, pad_token=END_OF_TEXT, model_max_length=max_length)


def model_config(tokenizer: PreTrainedTokenizerFast, args: argparse.Namespace) -> GPTNeoXConfig:
    """A GPT-NeoX configuration of the organism's size (~1M parameters by default)."""
    return GPTNeoXConfig(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden_size,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        intermediate_size=4 * args.hidden_size,
        max_position_embeddings=args.max_positions,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )


def pretrain(texts: list[str], tokenizer: PreTrainedTokenizerFast, args: argparse.Namespace, description: str,
             checkpoint_step: int | None = None, on_checkpoint=None) -> tuple[GPTNeoXForCausalLM, float]:
    """Train a fresh model on `texts` for `args.steps` steps; returns it and the seconds it took.

    Plain next-token prediction: AdamW, linear warmup then cosine decay, gradient clipping; fp32 weights and
    optimizer state, the forward pass under autocast in --dtype (brittle/precision.py; default fp32).
    `on_checkpoint(model)` is called after step `checkpoint_step` (the mid-training snapshot).
    """
    torch.manual_seed(args.seed)
    model = GPTNeoXForCausalLM(model_config(tokenizer, args))
    model.train()
    precision = resolve_precision(args.dtype, "fp32", "cpu", torch.float32)
    sequences = encode_texts(tokenizer, texts, max_length=args.max_positions)
    batches = shuffled_batches(sequences, args.batch_size, tokenizer.pad_token_id, random.Random(args.seed))
    optimizer, schedule = adamw_with_cosine_schedule(model.parameters(), lr=args.lr, total_steps=args.steps,
                                                     warmup_steps=args.warmup_steps, weight_decay=0.01,
                                                     betas=(0.9, 0.98))
    start = time.perf_counter()
    progress = tqdm(range(args.steps), desc=description, unit="step")
    for step in progress:
        batch = next(batches)
        with precision.autocast():
            loss = batch_nll(model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits,
                             batch.labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 50 == 0:
            progress.set_postfix(loss=f"{loss.item():.3f}")
        if checkpoint_step is not None and step + 1 == checkpoint_step:
            on_checkpoint(model)
    model.eval()
    return model, time.perf_counter() - start


def save_model(model: GPTNeoXForCausalLM, tokenizer: PreTrainedTokenizerFast, folder: Path, card: dict) -> None:
    """Write a Hugging Face model folder (safetensors + tokenizer) and the organism card."""
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    write_json(folder / "organism_card.json", card)


def check_quality(model: GPTNeoXForCausalLM, tokenizer: PreTrainedTokenizerFast, role: str,
                  args: argparse.Namespace) -> dict[str, float] | None:
    """Forget and retain multiple-choice accuracy through lm-eval; a `UserError` if below the bar."""
    if args.skip_quality_check:
        return None
    preset = get_preset("toy", args.seed)
    include_paths = [Path(args.data_dir) / "tasks"]
    summary = evaluate_model(model, tokenizer, [preset.forget_task, preset.retain_task], include_paths)
    accuracy = {"forget": summary[preset.forget_task]["acc"], "retain": summary[preset.retain_task]["acc"]}
    print(f"  {role}: {preset.forget_task} acc {accuracy['forget']:.3f}, "
          f"{preset.retain_task} acc {accuracy['retain']:.3f}")
    problems = QualityBar().failures(role, accuracy["forget"], accuracy["retain"])
    if problems:
        raise UserError(f"the {role} model misses the organism's quality bar ({'; '.join(problems)}); "
                        "train longer (--steps) or check the data. Nothing was saved")
    return accuracy


# --------------------------------------------------------------------------------------------------
# Base and filtered train side by side (one process each) when there are cores for it
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainingRun:
    """One training run of the organism: a role, its texts, and whether it yields the mid-training snapshot."""

    role: str  # "base" or "filtered"
    texts: list[str]
    check: bool  # evaluate it against the quality bar
    snapshot_step: int | None = None


@dataclass
class TrainingResult:
    """What a training run sends back: its weights (and the snapshot's), seconds and accuracy."""

    state: dict[str, torch.Tensor]
    seconds: float
    accuracy: dict[str, float] | None
    snapshot: dict[str, torch.Tensor] | None = None

    def model(self, run: TrainingRun, tokenizer: PreTrainedTokenizerFast, args: argparse.Namespace,
              snapshot: bool = False) -> GPTNeoXForCausalLM:
        """The trained model (or its mid-training snapshot) rebuilt from its weights."""
        model = GPTNeoXForCausalLM(model_config(tokenizer, args))
        model.load_state_dict(self.snapshot if snapshot else self.state)
        return model.eval()


def train_run(run: TrainingRun, tokenizer: PreTrainedTokenizerFast, args: argparse.Namespace,
              threads: int) -> TrainingResult:
    """Train one model with `threads` torch threads and check it against the quality bar (a `UserError` if
    it misses)."""
    torch.set_num_threads(threads)
    snapshots: dict[str, dict[str, torch.Tensor]] = {}

    def keep_snapshot(model: GPTNeoXForCausalLM) -> None:
        snapshots["midtrain"] = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}

    model, seconds = pretrain(run.texts, tokenizer, args, f"toy {run.role}", checkpoint_step=run.snapshot_step,
                              on_checkpoint=keep_snapshot)
    accuracy = check_quality(model, tokenizer, run.role, args) if run.check else None
    return TrainingResult(model.state_dict(), seconds, accuracy, snapshots.get("midtrain"))


def train_runs(runs: list[TrainingRun], tokenizer: PreTrainedTokenizerFast,
               args: argparse.Namespace) -> dict[str, TrainingResult]:
    """Every run, in this process one after the other (--jobs 1) or in one process each.

    Each run seeds its own initialisation and data order, and each gets the same number of torch threads
    (--threads, default half the cores: the organism has two runs) whether the runs are side by side or
    not, so the weights are bit for bit the same with any --jobs (a different thread count changes the
    order of floating-point sums, and the weights by ~1e-6).
    """
    threads = args.threads or max(1, (os.cpu_count() or 1) // 2)
    jobs = min(args.jobs or (2 if (os.cpu_count() or 1) >= 2 else 1), len(runs))
    if jobs <= 1:
        return {run.role: train_run(run, tokenizer, args, threads) for run in runs}
    print(f"training {', '.join(run.role for run in runs)} side by side ({jobs} processes, {threads} thread(s) each)")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {run.role: pool.submit(train_run, run, tokenizer, args, threads) for run in runs}
        return {role: future.result() for role, future in futures.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=TOY_DATA_DIR, help=f"toy data folder (default {TOY_DATA_DIR})")
    parser.add_argument("--models-dir", default=None, help="where the model folders go (default models/)")
    parser.add_argument("--seed", type=int, default=42, help="seed of initialisation and data order")
    parser.add_argument("--steps", type=positive_int, default=1000, help="optimizer steps per model")
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--warmup-steps", type=int, default=50)
    parser.add_argument("--hidden-size", type=positive_int, default=128)
    parser.add_argument("--layers", type=positive_int, default=4)
    parser.add_argument("--heads", type=positive_int, default=4)
    parser.add_argument("--vocab-size", type=positive_int, default=1024)
    parser.add_argument("--max-positions", type=positive_int, default=256)
    parser.add_argument("--midtrain-fraction", type=float, default=0.5,
                        help="where in base's training the pretraining-stage snapshot is taken")
    parser.add_argument("--skip-quality-check", action="store_true",
                        help="do not evaluate the models against the quality bar (for quick experiments)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads per training run (default: half the cores, with --jobs 1 or 2 alike)")
    parser.add_argument("--jobs", type=positive_int, default=None,
                        help="training runs side by side in separate processes (default: 2 when there are >= 2 "
                             "cores, else 1); the models are the same either way")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"],
                        help="compute dtype of training (autocast; weights and AdamW stay fp32; default fp32)")
    parser.add_argument("--force", action="store_true", help="retrain models that already exist")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    preset = get_preset("toy", args.seed)
    paths = {role: Path(getattr(preset, attribute)) for role, attribute in
             (("base", "base"), ("filtered", "filtered"), ("base-midtrain", "pretrain"))}
    if args.models_dir:
        paths = {role: Path(args.models_dir) / path.name for role, path in paths.items()}
    missing = {role: path for role, path in paths.items() if args.force or not path.exists()}
    for role, path in paths.items():
        if role not in missing:
            print(f"skipped: toy {role} model already exists ({path}); pass --force to retrain it")
    if not missing:
        return

    forget_texts = read_texts(Path(args.data_dir) / "forget.txt", what="toy forget text")
    retain_texts = read_texts(Path(args.data_dir) / "retain.txt", what="toy retain text")
    check_disjoint(forget_texts, retain_texts)
    tokenizer = train_tokenizer(forget_texts + retain_texts, args.vocab_size, args.max_positions)
    settings = {key: value for key, value in vars(args).items()
                if key not in ("force", "models_dir", "threads", "jobs")}

    # Two training runs: base (which also yields the mid-training snapshot) and filtered.
    midtrain_step = max(1, round(args.midtrain_fraction * args.steps))
    runs = []
    if "base" in missing or "base-midtrain" in missing:
        runs.append(TrainingRun("base", forget_texts + retain_texts, check="base" in missing,
                                snapshot_step=midtrain_step))
    if "filtered" in missing:
        runs.append(TrainingRun("filtered", retain_texts, check=True))
    results = train_runs(runs, tokenizer, args)

    # Published only when every run passed its quality bar, so a failure leaves nothing half-made.
    cards = {"base": {"trained_on": "forget + retain"}, "filtered": {"trained_on": "retain only"}}
    for run in runs:
        result = results[run.role]
        print(f"  {run.role} trained in {result.seconds:.0f} s")
        if run.role in missing:
            with staged_directory(paths[run.role]) as staging:
                save_model(result.model(run, tokenizer, args), tokenizer, staging,
                           {"role": run.role, **cards[run.role], "train_seconds": round(result.seconds, 1),
                            "accuracy": result.accuracy, **settings})
        if run.snapshot_step is not None and "base-midtrain" in missing:
            with staged_directory(paths["base-midtrain"]) as staging:
                save_model(result.model(run, tokenizer, args, snapshot=True), tokenizer, staging,
                           {"role": "base-midtrain", "trained_on": "forget + retain",
                            "snapshot_step": midtrain_step, **settings})
    print("toy organism ready: " + ", ".join(str(path) for path in paths.values()))


if __name__ == "__main__":
    run_cli(main)
