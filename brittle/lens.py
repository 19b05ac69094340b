"""Logit lens and tuned lens: next-token distributions read from an intermediate hidden state.

- **Logit lens**: the model's own final norm and unembedding applied to the hidden state of layer l
  (the last hidden state is already normed, so layer N is exactly the model's output).
- **Tuned lens** (Belrose et al. 2023): an affine translator per layer, h ↦ h + A_l h + b_l,
  zero-initialised (so it starts as the logit lens), before the same norm and unembedding, trained to
  minimise KL(final-layer distribution ‖ lens distribution). The final layer needs no translator.

The translators of all layers are stacked, A as (layers, d, d) and b as (layers, d), and trained in one
batched pass: each step takes one batch of tokens, reads every layer's hidden states of those tokens
and sums the per-layer KLs. The layers' objectives are independent, and SGD, momentum, weight decay
and the per-translator gradient clipping below are all per layer, so this is the tuned-lens project's
recipe (SGD with Nesterov momentum 0.9, learning rate 1.0 x (1 - 0.9), weight decay 1e-3, linear decay
over 250 steps, gradient norm clipped at 1 per translator) run for every layer at once, in
seconds on the organism. At the 6.9B shape (vocabulary 50k) the layers go through the unembedding in
groups that keep the logits within `LOGIT_BUDGET` values.

**Where the training tokens come from** (`HiddenStates`): the training texts are streamed through the
model while the lens trains, epoch after epoch in a fresh random order, and their tokens packed into
batches, as tuned-lens itself streams its corpus. Nothing is cached: the lens sees every training token
(once per epoch) at any scale, and memory is bounded by one batch, not by the corpus. The held-out KL
is measured the same way, on every token of the held-out texts.

Precision follows the real-scale rule: the lens's parameters and the unembedding's copies are float32,
and the matrix products run in the compute dtype through autocast (bf16 on CUDA by default).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from brittle.activations import TokenizedSplit, stream_activations
from brittle.architecture import final_norm

LOGIT_BUDGET = 2**28  # logit values (1 GiB in float32) computed at once while training the tuned lens
ROW_CHUNK = 1024  # positions unembedded at once when evaluating


class Unembedding(nn.Module):
    """The model's final norm and unembedding (frozen float32 copies on one device)."""

    def __init__(self, model: PreTrainedModel, device: str) -> None:
        super().__init__()
        self.norm = copy.deepcopy(final_norm(model)).float().to(device)
        self.head = copy.deepcopy(model.get_output_embeddings()).float().to(device)
        self.requires_grad_(False)

    def forward(self, hidden: Tensor, normed: bool = False) -> Tensor:
        """Logits of (..., hidden) states; `normed` states (the last hidden state) skip the norm."""
        return self.head(hidden if normed else self.norm(hidden))


class Lens(nn.Module):
    """Logit lens (no translators) or tuned lens (stacked affine translators for the layers below the last)."""

    def __init__(self, unembedding: Unembedding, num_layers: int, hidden_size: int, tuned: bool,
                 compute_dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.unembedding = unembedding
        self.num_layers = num_layers
        self.tuned = tuned
        self.compute_dtype = compute_dtype
        device = unembedding.head.weight.device
        # Zero-initialised: the tuned lens starts as the logit lens. float32 whatever the compute dtype.
        self.weight = nn.Parameter(torch.zeros(num_layers, hidden_size, hidden_size, device=device),
                                   requires_grad=tuned)
        self.bias = nn.Parameter(torch.zeros(num_layers, hidden_size, device=device), requires_grad=tuned)

    @property
    def device(self) -> torch.device:
        return self.unembedding.head.weight.device

    def autocast(self) -> torch.autocast:
        """Matrix products in the compute dtype; off for float32."""
        return torch.autocast(self.device.type, dtype=self.compute_dtype,
                              enabled=self.compute_dtype != torch.float32)

    def translate(self, hidden: Tensor, first: int, last: int) -> Tensor:
        """(layers, rows, hidden) states of layers first..last-1 through their translators."""
        if not self.tuned:
            return hidden
        return hidden + torch.baddbmm(self.bias[first:last, None, :], hidden, self.weight[first:last].transpose(1, 2))

    def forward(self, hidden: Tensor, layer: int) -> Tensor:
        """Float32 logits read from the (..., hidden) states of `layer` (0 = embeddings, num_layers = output)."""
        with self.autocast():
            if layer == self.num_layers:
                return self.unembedding(hidden, normed=True).float()
            flat = hidden.reshape(1, -1, hidden.shape[-1])
            translated = self.translate(flat, layer, layer + 1).reshape(hidden.shape)
            return self.unembedding(translated).float()


def kl_to_final(lens_logits: Tensor, final_log_probs: Tensor) -> Tensor:
    """KL(final ‖ lens) in nats, averaged over positions (the second-to-last axis; leading axes kept)."""
    return (final_log_probs.exp() * (final_log_probs - F.log_softmax(lens_logits, dim=-1))).sum(-1).mean(-1)


@dataclass(frozen=True)
class TunedLensTraining:
    """The tuned-lens project's training recipe (SGD-Nesterov, lr scale 1, 250 steps)."""

    steps: int = 250
    lr_scale: float = 1.0
    momentum: float = 0.9
    weight_decay: float = 1e-3
    batch_tokens: int = 4096
    seed: int = 42


def final_log_probs(lens: Lens, final_hidden: Tensor) -> Tensor:
    """log p_final of (rows, hidden) last hidden states (already normed), float32."""
    with torch.no_grad():
        return F.log_softmax(lens(final_hidden, lens.num_layers), dim=-1)


class HiddenStates:
    """Every layer's hidden states of some texts of a split, computed by the model when they are needed.

    Each forward pass holds whole texts, at most `batch_tokens` tokens of them (at least one text), so
    the memory needed is bounded by one lens batch whatever the number of texts. `stream` and
    `training_batches` give float32 (num_layers + 1, tokens, hidden) states on `device`; `texts_run` and
    `tokens_run` count what went through the model.
    """

    def __init__(self, model: PreTrainedModel, split: TokenizedSplit, texts: Sequence[int], batch_tokens: int,
                 pad_token_id: int, device: str | torch.device) -> None:
        self.model, self.split, self.texts = model, split, list(texts)
        self.batch_tokens, self.pad_token_id, self.device = batch_tokens, pad_token_id, torch.device(device)
        self.lengths = split.kept_lengths
        self.tokens = int(self.lengths[self.texts].sum())  # every token of the texts, once
        self.texts_run = self.tokens_run = 0

    def forward_passes(self, order: Sequence[int]) -> list[list[int]]:
        """`order` cut, in order, into forward passes of whole texts of at most `batch_tokens` tokens."""
        passes: list[list[int]] = []
        size = 0
        for index in order:
            if not passes or size + self.lengths[index] > self.batch_tokens:
                passes.append([])
                size = 0
            passes[-1].append(index)
            size += int(self.lengths[index])
        return passes

    def passes(self, order: Sequence[int]) -> Iterator[Tensor]:
        """Every token of the texts in `order`, one forward pass (no gradients, eval mode) at a time, as
        (num_layers + 1, tokens, hidden) states in the model's dtype on `device`."""
        passes = self.forward_passes(order)
        batches = stream_activations(self.model, self.split, 1, self.pad_token_id, batches=passes,
                                     what=f"the tuned lens's {self.split.name} texts")
        for texts, batch in zip(passes, batches, strict=True):
            self.texts_run += len(texts)
            self.tokens_run += len(batch.rows)
            yield torch.stack([state.to(self.device) for state in batch.hidden])  # a sharded model: many devices

    def stream(self, order: Sequence[int]) -> Iterator[Tensor]:
        """`passes(order)` in float32 (e.g. the held-out texts, for `heldout_kl_by_layer`)."""
        return (states.float() for states in self.passes(order))

    def training_batches(self, seed: int) -> Iterator[Tensor]:
        """Endless (num_layers + 1, batch_tokens, hidden) float32 batches: epoch after epoch, the texts in a
        fresh random order (seeded) and their tokens packed in that order into batches of exactly
        `batch_tokens` (a text cut at a batch's end continues the next batch). Every token is seen once per
        epoch. Only the passes not yet used up are held (in the model's dtype), at most two of them."""
        generator = torch.Generator().manual_seed(seed)
        pieces: list[Tensor] = []  # (num_layers + 1, tokens, hidden) states not yet in a batch
        waiting = 0
        while True:
            order = [self.texts[index] for index in torch.randperm(len(self.texts), generator=generator).tolist()]
            for states in self.passes(order):
                pieces.append(states)
                waiting += states.shape[1]
                while waiting >= self.batch_tokens:
                    batch, taken = [], 0
                    while taken < self.batch_tokens:
                        take = min(self.batch_tokens - taken, pieces[0].shape[1])
                        batch.append(pieces[0][:, :take])
                        pieces[0] = pieces[0][:, take:]
                        if not pieces[0].shape[1]:
                            pieces.pop(0)
                        taken += take
                    waiting -= self.batch_tokens
                    yield torch.cat(batch, dim=1).float()  # a new tensor: the passes it came from can go


def train_tuned_lens(lens: Lens, batches: Iterable[Tensor], recipe: TunedLensTraining) -> None:
    """Fit every layer's translator at once to the final layer's distribution.

    `batches` yields, for each of the `recipe.steps` steps, a (num_layers + 1, tokens, hidden_size) batch:
    every layer's states of that step's tokens (Step 6: `HiddenStates.training_batches`). Each step sums
    the per-layer KLs; layers go through the unembedding in groups of at most `LOGIT_BUDGET` logits,
    their gradients accumulated before the step.
    """
    device = lens.device
    vocabulary = lens.unembedding.head.out_features
    # PyTorch's momentum scales steps by 1 / (1 - momentum); tuned-lens undoes it so lr 1 is the scale.
    optimizer = torch.optim.SGD([lens.weight, lens.bias], lr=recipe.lr_scale * (1 - recipe.momentum),
                                momentum=recipe.momentum, nesterov=True, weight_decay=recipe.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / recipe.steps)
    batches = iter(batches)
    for _ in tqdm(range(recipe.steps), desc="tuned lens (all layers)", unit="step", leave=False):
        hidden = next(batches).to(device, torch.float32)
        target = final_log_probs(lens, hidden[lens.num_layers])
        group = max(1, LOGIT_BUDGET // (hidden.shape[1] * vocabulary))
        optimizer.zero_grad(set_to_none=True)
        for first in range(0, lens.num_layers, group):
            last = min(first + group, lens.num_layers)
            with lens.autocast():
                logits = lens.unembedding(lens.translate(hidden[first:last], first, last)).float()
            kl_to_final(logits, target).sum().backward()  # independent layers: the sum's gradient is each one's
        # clip_grad_norm_(max_norm=1) of each translator (its A and b together), as tuned-lens clips per layer.
        norms = (lens.weight.grad.pow(2).sum(dim=(1, 2)) + lens.bias.grad.pow(2).sum(dim=1)).sqrt()
        scale = (1.0 / (norms + 1e-6)).clamp(max=1.0)
        lens.weight.grad.mul_(scale[:, None, None])
        lens.bias.grad.mul_(scale[:, None])
        optimizer.step()
        schedule.step()
    lens.requires_grad_(False)


@torch.no_grad()
def heldout_kl(lens: Lens, hidden: Tensor, final_hidden: Tensor, layer: int) -> float:
    """KL(final ‖ lens) at `layer` averaged over held-out (rows, hidden) states and their final states."""
    total = 0.0
    for start in range(0, len(hidden), ROW_CHUNK):
        chunk = slice(start, start + ROW_CHUNK)
        target = final_log_probs(lens, final_hidden[chunk].to(lens.device))
        total += kl_to_final(lens(hidden[chunk].to(lens.device), layer), target).item() * len(hidden[chunk])
    return total / len(hidden)


@torch.no_grad()
def heldout_kl_by_layer(lens: Lens, batches: Iterable[Tensor]) -> list[float]:
    """KL(final ‖ lens) at every layer (0 … num_layers), averaged over every token of `batches`
    ((num_layers + 1, tokens, hidden) each, e.g. `HiddenStates.stream` of the held-out texts).

    The final distribution of each chunk of tokens (a pass through the unembedding: tokens x vocabulary) is
    computed once and shared by every layer's KL, as `heldout_kl` computes it for one layer."""
    totals, tokens = [0.0] * (lens.num_layers + 1), 0
    for hidden in batches:
        for start in range(0, hidden.shape[1], ROW_CHUNK):
            chunk = hidden[:, start:start + ROW_CHUNK].to(lens.device)
            target = final_log_probs(lens, chunk[lens.num_layers])
            for layer in range(lens.num_layers + 1):
                totals[layer] += kl_to_final(lens(chunk[layer], layer), target).item() * chunk.shape[1]
        tokens += hidden.shape[1]
    return [total / tokens for total in totals]
