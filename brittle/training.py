"""Pieces every training loop shares: tokenised batches, token-level NLL, AdamW + cosine schedule.

Used by the organism builder (pretraining from scratch), the unlearning loop and the relearning
attack, so that "one batch of text" and "its NLL" mean the same thing everywhere.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100


@dataclass
class TextBatch:
    """A padded batch of texts for a causal LM; `labels` is -100 on padding.

    `weights` (optional, one per text) make each text count that many times in `batch_nll`
    (per-sample weighting, e.g. RapidUn's influence weights); None means every text counts once.
    """

    input_ids: Tensor
    attention_mask: Tensor
    labels: Tensor
    weights: Tensor | None = None

    def to(self, device: torch.device | str) -> TextBatch:
        return TextBatch(self.input_ids.to(device), self.attention_mask.to(device), self.labels.to(device),
                         None if self.weights is None else self.weights.to(device))

    def model_inputs(self) -> dict[str, Tensor]:
        """Keyword arguments of the model's forward pass (a `brittle.vlm.VLBatch` adds `pixel_values`)."""
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask}


def encode_texts(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int,
                 append_eos: bool = True) -> list[list[int]]:
    """Token ids of each text, truncated to `max_length`, ending in EOS when `append_eos`."""
    encoded = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if append_eos and tokenizer.eos_token_id is not None:
            ids = [*ids, tokenizer.eos_token_id]
        encoded.append(ids[:max_length])
    return encoded


def collate(sequences: Sequence[Sequence[int]], pad_token_id: int) -> TextBatch:
    """Right-pad token sequences into one batch."""
    length = max(len(sequence) for sequence in sequences)
    input_ids = torch.full((len(sequences), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        input_ids[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
        attention_mask[row, : len(sequence)] = 1
    labels = input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)
    return TextBatch(input_ids, attention_mask, labels)


def shuffled_batches(sequences: Sequence[Sequence[int]], batch_size: int, pad_token_id: int,
                     rng: random.Random) -> Iterator[TextBatch]:
    """Endless batches: each pass over the data in a fresh `rng` order, no sequence repeated in a pass."""
    order: list[int] = []
    while True:
        if len(order) < batch_size:
            order = list(range(len(sequences)))
            rng.shuffle(order)
        yield collate([sequences[order.pop()] for _ in range(min(batch_size, len(sequences)))], pad_token_id)


def epoch_batches(sequences: Sequence[Sequence[int]], batch_size: int, pad_token_id: int,
                  rng: random.Random | None = None, collate_fn: Callable[..., TextBatch] = collate) -> list[TextBatch]:
    """One pass over the data in batches (shuffled when `rng` is given); `collate_fn(items, pad_token_id)` makes
    each batch (brittle.trainer.collate_items also takes a vision-language model's examples)."""
    order = list(range(len(sequences)))
    if rng is not None:
        rng.shuffle(order)
    return [collate_fn([sequences[i] for i in order[start: start + batch_size]], pad_token_id)
            for start in range(0, len(order), batch_size)]


def token_log_probs(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Log-probability of each next token and a mask of the positions that count.

    `logits[:, t]` predicts `labels[:, t + 1]`; both outputs have shape (batch, length - 1).
    """
    shifted_logits = logits[:, :-1].float()
    shifted_labels = labels[:, 1:]
    mask = shifted_labels != IGNORE_INDEX
    log_probs = torch.gather(F.log_softmax(shifted_logits, dim=-1), 2,
                             shifted_labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return log_probs * mask, mask


def sequence_nll(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean token NLL of each sequence in the batch, shape (batch,)."""
    log_probs, mask = token_log_probs(logits, labels)
    return -log_probs.sum(dim=1) / mask.sum(dim=1).clamp(min=1)


def batch_nll(logits: Tensor, labels: Tensor, weights: Tensor | None = None) -> Tensor:
    """Mean NLL over all counted tokens of the batch (the usual causal-LM loss).

    With per-text `weights` (batch,), each text's token losses are multiplied by its weight before the
    sum; the denominator stays the token count, so weights of 1 give exactly the unweighted loss.
    """
    log_probs, mask = token_log_probs(logits, labels)
    if weights is not None:
        log_probs = log_probs * weights.to(log_probs.dtype)[:, None]
    return -log_probs.sum() / mask.sum().clamp(min=1)


def adamw_with_cosine_schedule(parameters: Sequence[nn.Parameter] | Iterator[nn.Parameter], lr: float,
                               total_steps: int, warmup_steps: int = 0, weight_decay: float = 0.0,
                               betas: tuple[float, float] = (0.9, 0.999),
                               ) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW and a linear-warmup + cosine-annealing-to-zero learning-rate schedule.

    On CUDA the fused kernel: the default multi-tensor step holds a temporary fp32 copy of every trainable
    parameter (√v), 4 more bytes per parameter at the step's peak (26 GiB at 6.9B).
    """
    parameters = list(parameters)
    fused = bool(parameters) and all(parameter.is_cuda for parameter in parameters)
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay, betas=betas,
                                  **({"fused": True} if fused else {}))

    def lr_factor(step: int) -> float:
        warmup = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
        progress = min(step, total_steps) / max(1, total_steps)
        return warmup * 0.5 * (1.0 + math.cos(math.pi * progress))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
