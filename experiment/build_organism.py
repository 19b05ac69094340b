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
import random
import time
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
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
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
    settings = {key: value for key, value in vars(args).items() if key not in ("force", "models_dir", "threads")}

    if "base" in missing or "base-midtrain" in missing:
        midtrain_step = max(1, round(args.midtrain_fraction * args.steps))
        snapshots: dict[str, GPTNeoXForCausalLM] = {}

        def keep_snapshot(model: GPTNeoXForCausalLM) -> None:
            snapshots["midtrain"] = GPTNeoXForCausalLM(model.config)
            snapshots["midtrain"].load_state_dict(model.state_dict())
            snapshots["midtrain"].eval()

        base, seconds = pretrain(forget_texts + retain_texts, tokenizer, args, "toy base",
                                 checkpoint_step=midtrain_step, on_checkpoint=keep_snapshot)
        print(f"  base trained in {seconds:.0f} s")
        if "base" in missing:
            accuracy = check_quality(base, tokenizer, "base", args)
            with staged_directory(paths["base"]) as staging:
                save_model(base, tokenizer, staging, {"role": "base", "trained_on": "forget + retain",
                                                      "train_seconds": round(seconds, 1), "accuracy": accuracy,
                                                      **settings})
        if "base-midtrain" in missing:
            with staged_directory(paths["base-midtrain"]) as staging:
                save_model(snapshots["midtrain"], tokenizer, staging,
                           {"role": "base-midtrain", "trained_on": "forget + retain",
                            "snapshot_step": midtrain_step, **settings})

    if "filtered" in missing:
        filtered, seconds = pretrain(retain_texts, tokenizer, args, "toy filtered")
        print(f"  filtered trained in {seconds:.0f} s")
        accuracy = check_quality(filtered, tokenizer, "filtered", args)
        with staged_directory(paths["filtered"]) as staging:
            save_model(filtered, tokenizer, staging, {"role": "filtered", "trained_on": "retain only",
                                                      "train_seconds": round(seconds, 1), "accuracy": accuracy,
                                                      **settings})
    print("toy organism ready: " + ", ".join(str(path) for path in paths.values()))


if __name__ == "__main__":
    run_cli(main)
