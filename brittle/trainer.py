"""The training loop every unlearning method shares, and what it prepares before the first step.

    data        forget/retain token sequences, each split into a training part and a held-out part
                (--eval-split, default 10%) on which forget NLL, retain NLL and their gap are reported
    caches      computed once with the frozen original model: reference log-probabilities (dpo, npo)
                and the original retain hidden states at the target layers (rmu, cb, cb_lat)
    loop        AdamW + cosine annealing, gradient accumulation (--grad-accum-steps), clipping
                (--grad-clip), periodic held-out validation (--eval-interval), a NaN/inf check on every
                step, tqdm, and a per-step log (training_log.csv)
    precision   fp32 master weights and AdamW state for the trainable parameters only, the forward and
                backward passes under autocast in the compute dtype (brittle/precision.py)

An epoch is one pass over the forget training texts in micro-batches of --batch-size; each forget
micro-batch is paired with a retain micro-batch drawn from a shuffled, cycling pass over the retain
texts (methods that train on retain text only still take the same number of steps). The retain
micro-batch holds --batch-size × R / F texts for --mix-ratio R:F (default 1:1; RapidUn's 3:1 shows each
step three retain texts per forget text). Per-text weights (--forget-weights/--retain-weights) travel
with the texts into each micro-batch.
"""

from __future__ import annotations

import argparse
import math
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from tqdm import tqdm

from brittle.cli import UserError
from brittle.distributed import Engine
from brittle.methods import LossFunction, MethodContext, UnlearningBatch, sequence_log_prob
from brittle.precision import Precision
from brittle.training import TextBatch, adamw_with_cosine_schedule, collate, token_log_probs

Sequences = list[list[int]]  # token ids per text; for a vision-language model, brittle.vlm.VLSequence per record


def collate_items(sequences: Sequence, pad_token_id: int) -> TextBatch:
    """One padded batch: a `TextBatch` of token sequences, or a `brittle.vlm.VLBatch` (pictures, answer-only
    labels) of `VLSequence`s. Every model call below passes `batch.model_inputs()`, so the loop, the caches
    and the losses run unchanged on either."""
    from brittle.vlm import VLSequence, collate_vl_sequences

    if sequences and isinstance(sequences[0], VLSequence):
        return collate_vl_sequences(sequences, pad_token_id)
    return collate(sequences, pad_token_id)


# ---------------------------------------------------------------------------------------------------
# Data: training/held-out split and index batches
# ---------------------------------------------------------------------------------------------------


@dataclass
class TrainingData:
    """Token sequences of the forget and retain texts, split into training and held-out parts."""

    forget_train: Sequences
    retain_train: Sequences
    forget_heldout: Sequences
    retain_heldout: Sequences
    forget_weights: list[float] | None = None  # per training text (--forget-weights); None = all 1
    retain_weights: list[float] | None = None


def split_with_weights(sequences: Sequences, weights: list[float] | None, fraction: float, rng: random.Random,
                       ) -> tuple[Sequences, Sequences, list[float] | None]:
    """`split_heldout` that keeps each training text's weight beside it: (training, held-out, training weights)."""
    train_indices, heldout_indices = split_heldout(list(range(len(sequences))), fraction, rng)
    train_weights = None if weights is None else [weights[index] for index in train_indices]
    return ([sequences[index] for index in train_indices], [sequences[index] for index in heldout_indices],
            train_weights)


def split_heldout(sequences: Sequences, fraction: float, rng: random.Random) -> tuple[Sequences, Sequences]:
    """(training, held-out): a random `fraction` of the sequences held out (at least one, never all)."""
    if fraction <= 0 or len(sequences) < 2:
        return list(sequences), []
    order = list(range(len(sequences)))
    rng.shuffle(order)
    heldout_count = min(len(sequences) - 1, max(1, round(fraction * len(sequences))))
    heldout = set(order[:heldout_count])
    return ([sequence for index, sequence in enumerate(sequences) if index not in heldout],
            [sequence for index, sequence in enumerate(sequences) if index in heldout])


def index_batches(count: int, batch_size: int, rng: random.Random) -> Iterator[list[int]]:
    """Endless batches of indices into `count` items: each pass in a fresh order, no repeats within a pass."""
    order: list[int] = []
    while True:
        if len(order) < batch_size:
            order = list(range(count))
            rng.shuffle(order)
        yield [order.pop() for _ in range(min(batch_size, count))]


# ---------------------------------------------------------------------------------------------------
# Caches: what the frozen original model says about the training texts, computed once
# ---------------------------------------------------------------------------------------------------


@dataclass
class Caches:
    """Per-text results of the original model, indexed like the training sequences."""

    forget_reference_log_prob: Tensor | None = None  # (forget texts,)
    retain_reference_log_prob: Tensor | None = None  # (retain texts,)
    retain_original_hidden: dict[int, list[Tensor]] | None = None  # layer -> one (length, hidden) per text


def fixed_batches(sequences: Sequences, batch_size: int) -> Iterator[tuple[list[int], Sequences]]:
    """(indices, sequences) in file order, for one pass of inference."""
    for start in range(0, len(sequences), batch_size):
        indices = list(range(start, min(start + batch_size, len(sequences))))
        yield indices, [sequences[index] for index in indices]


@torch.no_grad()
def reference_log_probs(model: nn.Module, sequences: Sequences, batch_size: int, pad_token_id: int,
                        device: torch.device) -> Tensor:
    """log π_ref(y) of every sequence under the (still unmodified) model, on the CPU."""
    values = []
    for _, chunk in fixed_batches(sequences, batch_size):
        batch = collate_items(chunk, pad_token_id).to(device)
        logits = model(**batch.model_inputs()).logits
        values.append(sequence_log_prob(logits, batch.labels).float().cpu())
    return torch.cat(values)


@torch.no_grad()
def original_hidden_states(context: MethodContext, sequences: Sequences, batch_size: int, pad_token_id: int,
                           device: torch.device) -> dict[int, list[Tensor]]:
    """h_ℓ^cached: each sequence's hidden states at every target layer before training, on the CPU.

    Memory: (retain tokens) × (target layers) × hidden size × bytes per value of the model's dtype.
    """
    cached: dict[int, list[Tensor]] = {layer: [] for layer in context.layer_ids}
    for _, chunk in fixed_batches(sequences, batch_size):
        batch = collate_items(chunk, pad_token_id).to(device)
        hidden = context.hidden_states(batch)
        for layer in context.layer_ids:
            cached[layer].extend(hidden[layer][row, : len(sequence)].cpu() for row, sequence in enumerate(chunk))
    return cached


def padded_hidden(states: Sequence[Tensor], length: int, device: torch.device) -> Tensor:
    """Stack per-text hidden states (length_i, hidden) into (batch, length, hidden), zero-padded."""
    padded = states[0].new_zeros((len(states), length, states[0].shape[-1]))
    for row, state in enumerate(states):
        padded[row, : len(state)] = state
    return padded.to(device)


def assemble_batch(data: TrainingData, caches: Caches, forget_indices: list[int], retain_indices: list[int],
                   pad_token_id: int, device: torch.device) -> UnlearningBatch:
    """The micro-batch a loss sees: collated texts plus their cached reference values."""
    forget = collate_items([data.forget_train[index] for index in forget_indices], pad_token_id)
    retain = collate_items([data.retain_train[index] for index in retain_indices], pad_token_id)
    if data.forget_weights is not None:
        forget.weights = torch.tensor([data.forget_weights[index] for index in forget_indices])
    if data.retain_weights is not None:
        retain.weights = torch.tensor([data.retain_weights[index] for index in retain_indices])
    forget, retain = forget.to(device), retain.to(device)
    batch = UnlearningBatch(forget, retain)
    if caches.forget_reference_log_prob is not None:
        batch.forget_reference_log_prob = caches.forget_reference_log_prob[forget_indices].to(device)
    if caches.retain_reference_log_prob is not None:
        batch.retain_reference_log_prob = caches.retain_reference_log_prob[retain_indices].to(device)
    if caches.retain_original_hidden is not None:
        batch.retain_original_hidden = {
            layer: padded_hidden([states[index] for index in retain_indices], retain.input_ids.shape[1], device)
            for layer, states in caches.retain_original_hidden.items()}
    return batch


# ---------------------------------------------------------------------------------------------------
# Held-out validation
# ---------------------------------------------------------------------------------------------------


@torch.no_grad()
def heldout_nll(model: nn.Module, sequences: Sequences, batch_size: int, pad_token_id: int,
                device: torch.device) -> float | None:
    """Mean token NLL over all held-out sequences (None when nothing is held out)."""
    if not sequences:
        return None
    total, tokens = 0.0, 0
    was_training = model.training
    model.eval()
    for _, chunk in fixed_batches(sequences, batch_size):
        batch = collate_items(chunk, pad_token_id).to(device)
        log_probs, mask = token_log_probs(model(**batch.model_inputs()).logits, batch.labels)
        total -= log_probs.sum().item()
        tokens += int(mask.sum().item())
    model.train(was_training)
    return total / max(tokens, 1)


def heldout_metrics(model: nn.Module, data: TrainingData, batch_size: int, pad_token_id: int,
                    device: torch.device) -> dict[str, float | None]:
    """forget_nll (should rise), retain_nll (should stay) and gap = forget_nll − retain_nll (bigger = better)."""
    forget = heldout_nll(model, data.forget_heldout, batch_size, pad_token_id, device)
    retain = heldout_nll(model, data.retain_heldout, batch_size, pad_token_id, device)
    gap = forget - retain if forget is not None and retain is not None else None
    return {"forget_nll": forget, "retain_nll": retain, "gap": gap}


def heldout_columns(metrics: dict[str, float | None]) -> dict[str, float | None]:
    """Held-out metrics as training-log columns: `heldout_forget_nll`, ... (the loss terms of the training
    batches have the plain names, e.g. `forget_nll`)."""
    return {f"heldout_{name}": value for name, value in metrics.items()}


# ---------------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------------


@dataclass
class TrainingResult:
    """What the loop reports: one row per optimizer step, held-out metrics, and timing."""

    rows: list[dict[str, float | int | None]] = field(default_factory=list)
    optimizer_steps: int = 0
    seconds: float = 0.0


def count_steps(forget_texts: int, settings: argparse.Namespace) -> tuple[int, int]:
    """(micro-batches, optimizer steps) of a run: epochs × ⌊forget texts / batch size⌋ micro-batches,
    capped by --max-steps optimizer steps."""
    micro_batches = settings.epochs * max(1, forget_texts // settings.batch_size)
    optimizer_steps = math.ceil(micro_batches / settings.grad_accum_steps)
    if settings.max_steps:
        optimizer_steps = min(optimizer_steps, settings.max_steps)
    return micro_batches, optimizer_steps


def retain_batch_size(settings: argparse.Namespace) -> int:
    """Retain texts per micro-batch: --batch-size scaled by the retain:forget --mix-ratio (at least 1)."""
    retain, forget = (int(part) for part in getattr(settings, "mix_ratio", "1:1").split(":"))
    return max(1, round(settings.batch_size * retain / forget))


def train(context: MethodContext, loss_function: LossFunction, method: str, data: TrainingData, caches: Caches,
          settings: argparse.Namespace, pad_token_id: int, device: torch.device,
          engine: Engine | None = None, precision: Precision | None = None) -> TrainingResult:
    """Run the unlearning loop on `context.model` in place; returns the per-step log.

    With a sharded `engine` (brittle/distributed.py) `context.model` is replaced by its sharded
    version and each process computes its share of every step's micro-batches. `precision` (default:
    fp32 compute) gives the autocast dtype; the trainable parameters should already be fp32
    (`brittle.precision.prepare_for_training`). Only they get AdamW state. Raises `UserError`
    (nothing is saved) when the loss or the gradient norm stops being finite (with fp16's loss scaling an
    overflowing gradient only skips its step, as the scaler intends).
    """
    engine = engine or Engine()
    model = context.model
    precision = precision or Precision(torch.float32, torch.float32, device.type)
    micro_batches, optimizer_steps = count_steps(len(data.forget_train), settings)
    accumulation = settings.grad_accum_steps
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer, schedule = adamw_with_cosine_schedule(trainable, lr=settings.lr, total_steps=optimizer_steps,
                                                     warmup_steps=getattr(settings, "warmup_steps", 0),
                                                     weight_decay=settings.weight_decay)
    context.model, optimizer = model, optimizer = engine.prepare(model, optimizer)
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]  # the shards, if any
    context.pretrained = engine.shard_like(model, context.pretrained)  # θ_pre (wt_dist_reg) cut like θ
    rng = random.Random(settings.seed)
    forget_stream = index_batches(len(data.forget_train), settings.batch_size, rng)
    retain_stream = index_batches(len(data.retain_train), retain_batch_size(settings), rng)
    batches_per_epoch = micro_batches / settings.epochs

    result = TrainingResult(optimizer_steps=optimizer_steps)
    model.train()
    start = time.perf_counter()
    progress = tqdm(range(1, optimizer_steps + 1), desc=f"unlearn {method}", unit="step", disable=not engine.is_main)
    for step in progress:
        step_terms: dict[str, Tensor] = {}
        step_loss = torch.zeros((), device=device)
        for micro_batch in range(accumulation):
            forget_indices, retain_indices = next(forget_stream), next(retain_stream)  # every process draws all
            if not engine.owns(micro_batch, accumulation):
                continue
            batch = assemble_batch(data, caches, forget_indices, retain_indices, pad_token_id, device)
            with precision.autocast():
                loss = loss_function(context, batch)
            engine.backward(precision.scale(loss.total / accumulation * engine.loss_scale(accumulation)))
            step_loss += loss.total.detach() / accumulation
            for name, value in loss.terms.items():
                step_terms[name] = step_terms.get(name, 0) + value / accumulation
        precision.unscale(optimizer)
        grad_norm = engine.clip_grad_norm_(trainable, settings.grad_clip) if settings.grad_clip > 0 else None
        # One device synchronisation per step: the loss, its terms and the gradient norm together.
        names = ["loss", *step_terms, *(["grad_norm"] if grad_norm is not None else [])]
        sums = engine.step_total(torch.stack([step_loss, *(value.float().to(device) for value in step_terms.values())]),
                                 accumulation)
        norms = [grad_norm.float().to(device).reshape(1)] if grad_norm is not None else []
        values = torch.cat([sums, *norms]).tolist()
        row: dict[str, float | int | None] = {"step": step, "epoch": round(step * accumulation / batches_per_epoch, 4),
                                              "lr": schedule.get_last_lr()[0], **dict(zip(names, values, strict=True))}
        checked = names[:-1] if precision.scaler and grad_norm is not None else names  # fp16: the scaler skips
        if not all(math.isfinite(value) for name, value in zip(names, values, strict=True) if name in checked):
            bad = next(name for name, value in zip(names, values, strict=True)
                       if name in checked and not math.isfinite(value))
            raise UserError(f"{method}: the {bad} became {row[bad]} at step {step} of {optimizer_steps}, so training "
                            f"diverged and nothing was saved; lower the learning rate (--lr / LR, now {settings.lr:g}) "
                            "or strengthen the retain term")
        precision.step(optimizer)
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if settings.eval_interval and (step % settings.eval_interval == 0 or step == optimizer_steps):
            with precision.autocast():
                metrics = heldout_metrics(model, data, settings.batch_size, pad_token_id, device)
            row.update(heldout_columns(metrics))
        result.rows.append(row)
        if step % 10 == 0 or step == optimizer_steps:
            progress.set_postfix({name: f"{row[name]:.3g}" for name in names[:3]})
    result.seconds = time.perf_counter() - start
    model.eval()
    return result


def pretrained_copy(model: nn.Module) -> dict[str, Tensor]:
    """θ_pre: a detached copy of every parameter, on its own device (wt_dist_reg)."""
    return {name: parameter.detach().clone() for name, parameter in model.named_parameters()}


def lora_target_names(targets: str, architecture: str) -> tuple[str, ...]:
    """The module names that --lora-targets `targets` means in a language model of `architecture` (its
    transformers model_type): `attention` is PEFT's default for it (`target_modules=None`: q_proj and v_proj
    for Llama, query_key_value for GPT-NeoX), names stay themselves, and `all-linear` stays ('all-linear',)."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

    from brittle.catalogue import parse_lora_targets

    names = parse_lora_targets(targets)
    if names != ("attention",):
        return names
    if architecture not in TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING:
        raise UserError(f"PEFT has no default LoRA targets for {architecture} models; name the modules with "
                        "--lora-targets (LORA_TARGETS), e.g. q_proj,v_proj")
    return tuple(TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING[architecture])


def lora_target_modules(model: nn.Module, targets: str = "all-linear") -> list[str]:
    """Full names of the modules that get LoRA adapters under --lora-targets `targets` (brittle/catalogue.py).

    Only the language model is adapted: in a vision-language model the vision tower and the projector stay
    frozen (`brittle.architecture.parameter_modality`), as MLLMU-Bench's baselines have it; the output layer
    never is (PEFT's `all-linear` leaves it out too). A named module (`lora_target_names`) that the language
    model does not have is a `UserError`.
    """
    from transformers.pytorch_utils import Conv1D

    from brittle.architecture import parameter_modality

    output = model.get_output_embeddings()
    linear = [name for name, module in model.named_modules() if isinstance(module, (nn.Linear, Conv1D))
              and module is not output and parameter_modality(f"{name}.") == "language model"]
    names = lora_target_names(targets, model.config.get_text_config().model_type)
    if names == ("all-linear",):
        return linear
    chosen = [name for name in linear if name.rsplit(".", 1)[-1] in names]
    missing = [target for target in names if not any(name.rsplit(".", 1)[-1] == target for name in chosen)]
    if missing:
        have = sorted({name.rsplit(".", 1)[-1] for name in linear})
        raise UserError(f"--lora-targets {targets}: the language model has no linear layer named "
                        f"{', '.join(missing)}; its linear layers are {', '.join(have)}")
    return chosen


def wrap_with_lora(model: nn.Module, rank: int, alpha: float, targets: str = "all-linear",
                   dropout: float = 0.0) -> nn.Module:
    """Freeze the model and train rank-`rank` LoRA adapters (peft) on the `lora_target_modules(model, targets)`,
    with dropout `dropout` on their input."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=lora_target_modules(model, targets),
                        lora_dropout=dropout, bias="none")
    return get_peft_model(model, config)


def wrap_with_lora_for(model: nn.Module, settings: argparse.Namespace) -> nn.Module:
    """`wrap_with_lora` with unlearn.py's settings (--lora-rank, --lora-alpha (0: twice the rank), --lora-targets,
    --lora-dropout)."""
    return wrap_with_lora(model, settings.lora_rank, settings.lora_alpha or 2 * settings.lora_rank,
                          settings.lora_targets, settings.lora_dropout)
