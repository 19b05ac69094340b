"""The thirteen unlearning methods: one small loss function each, registered by name.

Every method is a function `loss(context, batch) -> Loss` that reads like its formula in the deep-ignorance
study's "Algorithm Details"; the training loop around it (brittle/trainer.py) is shared. What a loss may use:

- `batch` (`UnlearningBatch`): a forget and a retain micro-batch, plus what was computed once before
  training with the frozen original model: the reference log-probabilities log π_ref(y) of each text
  (dpo, npo) and the original hidden states of each retain text at the target layers (rmu, cb, cb_lat).
  Caching these replaces a second, frozen copy of the model in memory.
- `context` (`MethodContext`): the model being trained, the hyperparameters, the decoder layers and
  target layer ids, the fixed random directions r̂_ℓ (rmu, cb, cb_lat) and the pretrained weights θ_pre
  (wt_dist_reg), with helpers that run the model: `nll`, `sequence_log_prob`, `hidden_states`, and
  LAT's adversary `adversarial_perturbation` / `perturbed`.

Per-text weights (--forget-weights / --retain-weights, RapidUn) ride on the batches (`TextBatch.weights`)
and enter every per-text term: token-level NLLs and activation terms weight each text's tokens, and
sequence-level terms (dpo, npo, simnpo) weight each text's term; weights of 1 change nothing.

Notation: NLL is the mean token negative log-likelihood of a batch; log π(y) is the *sum* of a text's
token log-probabilities; h_ℓ is the output hidden state of decoder layer ℓ (0-based, as `--layer-id`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from brittle.architecture import final_norm
from brittle.training import TextBatch, batch_nll, sequence_nll, token_log_probs

# ---------------------------------------------------------------------------------------------------
# What a loss receives and returns
# ---------------------------------------------------------------------------------------------------


@dataclass
class UnlearningBatch:
    """One micro-batch of forget and retain texts, with what was cached about them before training."""

    forget: TextBatch
    retain: TextBatch
    forget_reference_log_prob: Tensor | None = None  # (batch,) log π_ref(y) of each forget text
    retain_reference_log_prob: Tensor | None = None  # (batch,) log π_ref(y) of each retain text
    retain_original_hidden: dict[int, Tensor] | None = None  # layer -> (batch, length, hidden) before training


@dataclass
class Loss:
    """The scalar to minimise and its named parts (detached, for the training log)."""

    total: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.terms = {name: value.detach() for name, value in self.terms.items()}


@dataclass
class MethodContext:
    """The model being unlearned and everything about it that a loss may use."""

    model: nn.Module
    settings: argparse.Namespace  # the resolved hyperparameters (beta, alpha, retain_weight, ...)
    layers: nn.ModuleList  # the model's decoder layers (brittle.architecture.decoder_layers)
    layer_ids: list[int]  # --layer-id, sorted
    random_directions: dict[int, Tensor] = field(default_factory=dict)  # layer -> unit vector r̂_ℓ
    pretrained: dict[str, Tensor] = field(default_factory=dict)  # parameter name -> θ_pre (wt_dist_reg)

    # -- running the model ------------------------------------------------------------------------
    def logits(self, batch: TextBatch) -> Tensor:
        """The model's logits on the batch (with its pictures, for a vision-language batch)."""
        return self.model(**batch.model_inputs()).logits

    def nll(self, batch: TextBatch) -> Tensor:
        """Mean token NLL of the batch (the usual causal-LM loss), each text weighted by `batch.weights`."""
        return batch_nll(self.logits(batch), batch.labels, batch.weights)

    def sequence_log_prob(self, batch: TextBatch) -> Tensor:
        """log π_θ(y) of each text: the sum of its token log-probabilities, shape (batch,)."""
        return sequence_log_prob(self.logits(batch), batch.labels)

    def hidden_states(self, batch: TextBatch) -> dict[int, Tensor]:
        """h_ℓ for every target layer ℓ: the decoder layer's output, (batch, length, hidden).

        The forward pass stops after the top target layer: nothing above it (later layers, final norm,
        the output head over the whole vocabulary) is computed or kept for backward.
        """
        with layer_outputs(self.layers, self.layer_ids) as hidden, suppress(StopForwardError):
            self.model(**batch.model_inputs())
        return hidden

    # -- LAT's adversary --------------------------------------------------------------------------
    @property
    def perturbation_layer(self) -> int:
        """The middle target layer, where LAT's perturbation δ is added to the residual stream."""
        return self.layer_ids[len(self.layer_ids) // 2]

    def perturbed(self, delta: Tensor):
        """Context manager: forward passes inside it add δ to the middle target layer's output."""
        return added_to_output(self.layers[self.perturbation_layer], delta)

    def adversarial_perturbation(self, batch: TextBatch) -> Tensor:
        """δ* ≈ argmin_{‖δ‖∞ ≤ ε} NLL_forget(θ, δ): PGD that helps the model *recall* the forget text.

        `--lat-steps` steps of δ ← clip(δ − ε·sign(∇_δ NLL), −ε, ε) from δ = 0 (the model-diffs analysis tools' update).
        Gradients flow only into δ (`torch.autograd.grad`), never into the model's parameters.
        """
        epsilon, layer = self.settings.lat_eps, self.layers[self.perturbation_layer]
        parameter = next(layer.parameters())
        delta = torch.zeros(*batch.input_ids.shape, self.model.config.hidden_size,
                            device=parameter.device, dtype=parameter.dtype)
        for _ in range(self.settings.lat_steps):
            delta.requires_grad_(True)
            with self.perturbed(delta):
                adversary_loss = self.nll(batch)
            (gradient,) = torch.autograd.grad(adversary_loss, delta)
            delta = (delta.detach() - epsilon * gradient.sign()).clamp(-epsilon, epsilon)
        return delta.detach()


LossFunction = Callable[[MethodContext, UnlearningBatch], Loss]
LOSSES: dict[str, LossFunction] = {}


def register(name: str) -> Callable[[LossFunction], LossFunction]:
    """Register a loss function under its method name (`--method name`)."""

    def add(function: LossFunction) -> LossFunction:
        LOSSES[name] = function
        return function

    return add


# ---------------------------------------------------------------------------------------------------
# Small pieces of math the losses share
# ---------------------------------------------------------------------------------------------------


def sequence_log_prob(logits: Tensor, labels: Tensor) -> Tensor:
    """log π(y) per sequence: the sum of the log-probabilities of its counted tokens, shape (batch,)."""
    log_probs, _ = token_log_probs(logits, labels)
    return log_probs.sum(dim=1)


def weighted_mean(values: Tensor, weights: Tensor | None) -> Tensor:
    """Mean of per-text `values` (batch,), each multiplied by its weight (None: all weights 1)."""
    return values.mean() if weights is None else (values * weights.to(values.dtype)).mean()


def masked_mean(values: Tensor, mask: Tensor, weights: Tensor | None = None) -> Tensor:
    """Mean of per-token `values` (batch, length) over the positions where `mask` is 1; with per-text
    `weights`, each text's tokens count that many times (the denominator stays the token count)."""
    mask = mask.to(values.dtype)
    masked = values * mask
    if weights is not None:
        masked = masked * weights.to(values.dtype)[:, None]
    return masked.sum() / mask.sum().clamp(min=1)


def masked_mse(hidden: Tensor, target: Tensor, mask: Tensor, weights: Tensor | None = None) -> Tensor:
    """Mean squared error over the hidden dimension and the real (unpadded) tokens."""
    return masked_mean((hidden.float() - target.float()).pow(2).mean(dim=-1), mask, weights)


def masked_cosine(hidden: Tensor, target: Tensor, mask: Tensor, weights: Tensor | None = None) -> Tensor:
    """Mean cosine similarity between each token's hidden state and its target, over real tokens."""
    return masked_mean(F.cosine_similarity(hidden.float(), target.float().expand_as(hidden), dim=-1), mask, weights)


# ---------------------------------------------------------------------------------------------------
# Hooks: reading a layer's output, and adding a perturbation to it
# ---------------------------------------------------------------------------------------------------


def _output_hidden_state(output):
    """Decoder layers return the hidden state itself or a tuple that starts with it."""
    return output[0] if isinstance(output, tuple) else output


class StopForwardError(Exception):
    """Raised by `layer_outputs(..., stop=True)` once the last wanted layer has run."""


@contextmanager
def layer_outputs(layers: nn.ModuleList, layer_ids: list[int], stop: bool = True) -> Iterator[dict[int, Tensor]]:
    """Yield a dict that forward passes inside the block fill with {layer id: output hidden state}.

    With `stop`, the highest layer's hook raises `StopForwardError` after capturing its output, ending the
    forward pass there (catch it around the model call). Hooks registered here run after any hook
    registered earlier on the same layer, so a layer perturbed by an enclosing `added_to_output` is read
    *with* its perturbation.
    """
    captured: dict[int, Tensor] = {}
    top = max(layer_ids, default=-1)

    def capture(_module, _inputs, output, layer_id: int) -> None:
        captured[layer_id] = _output_hidden_state(output)
        if stop and layer_id == top:
            raise StopForwardError

    handles = [layers[layer_id].register_forward_hook(
        lambda module, inputs, output, layer_id=layer_id: capture(module, inputs, output, layer_id))
        for layer_id in layer_ids]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def added_to_output(layer: nn.Module, delta: Tensor) -> Iterator[None]:
    """Forward passes inside the block add `delta` to `layer`'s output hidden state."""

    def add_delta(_module, _inputs, output):
        hidden = _output_hidden_state(output)
        perturbed = hidden + delta.to(hidden.device, hidden.dtype)
        return (perturbed, *output[1:]) if isinstance(output, tuple) else perturbed

    handle = layer.register_forward_hook(add_delta)
    try:
        yield
    finally:
        handle.remove()


# ---------------------------------------------------------------------------------------------------
# Loss-based methods: they act on the output distribution
# ---------------------------------------------------------------------------------------------------


@register("ga_simple")
def gradient_ascent_simple(context: MethodContext, batch: UnlearningBatch) -> Loss:
    """GA Simple (Jang et al. 2023): L = −NLL_forget. No retain term: risks global collapse."""
    forget_nll = context.nll(batch.forget)
    return Loss(-forget_nll, {"forget_nll": forget_nll})


@register("ga")
def gradient_ascent(context: MethodContext, batch: UnlearningBatch) -> Loss:
    """GA with retain regularisation: L = −NLL_forget + w_retain · NLL_retain."""
    forget_nll, retain_nll = context.nll(batch.forget), context.nll(batch.retain)
    return Loss(-forget_nll + context.settings.retain_weight * retain_nll,
                {"forget_nll": forget_nll, "retain_nll": retain_nll})


@register("grad_diff")
def gradient_difference(context: MethodContext, batch: UnlearningBatch) -> Loss:
    """Gradient Difference: L = NLL_retain − w · NLL_forget (w = --forget-weight; w = 1 is GA)."""
    forget_nll, retain_nll = context.nll(batch.forget), context.nll(batch.retain)
    return Loss(retain_nll - context.settings.forget_weight * forget_nll,
                {"forget_nll": forget_nll, "retain_nll": retain_nll})


def pair_weights(batch: UnlearningBatch, pairs: int) -> Tensor | None:
    """Weight of each (retain, forget) pair of DPO: the product of the two texts' weights."""
    forget, retain = batch.forget.weights, batch.retain.weights
    if forget is None and retain is None:
        return None
    forget = forget[:pairs] if forget is not None else 1.0
    retain = retain[:pairs] if retain is not None else 1.0
    return forget * retain


@register("rapidun")
def influence_weighted_gradient_difference(context: MethodContext, batch: UnlearningBatch) -> Loss:
    """RapidUn: influence-weighted ascent on forget + weighted descent on retain, trained through LoRA.

    L = −a · NLL_forget^w + b · NLL_retain^w,   NLL^w = Σ_i w_i Σ_t nll_it / Σ_i T_i
    with a = --ascent-alpha, b = --descent-beta and per-text weights w_i from RapidIn-style influence
    estimates (unlearn/influence_weights.py): forget texts central to the forget set and far from retain
    texts are pushed hardest; retain texts that the ascent endangers are held hardest.
    """
    forget_nll, retain_nll = context.nll(batch.forget), context.nll(batch.retain)
    settings = context.settings
    return Loss(-settings.ascent_alpha * forget_nll + settings.descent_beta * retain_nll,
                {"forget_nll": forget_nll, "retain_nll": retain_nll})


@register("dpo")
def direct_preference_optimization(context: MethodContext, batch: UnlearningBatch) -> Loss:
    """DPO (Rafailov et al. 2023) with retain text chosen (y_w) and forget text rejected (y_l):

    L = −log σ(β · [log π_θ(y_w)/π_ref(y_w) − log π_θ(y_l)/π_ref(y_l)]), averaged over (y_w, y_l) pairs.
    """
    chosen = context.sequence_log_prob(batch.retain) - batch.retain_reference_log_prob
    rejected = context.sequence_log_prob(batch.forget) - batch.forget_reference_log_prob
    pairs = min(len(chosen), len(rejected))
    margin = chosen[:pairs] - rejected[:pairs]
    loss = weighted_mean(-F.logsigmoid(context.settings.beta * margin), pair_weights(batch, pairs))
    return Loss(loss, {"dpo": loss, "chosen_log_ratio": chosen.mean(), "rejected_log_ratio": rejected.mean()})


@register("npo")
def negative_preference_optimization(context: MethodContext, batch: UnlearningBatch) -> Loss:
    """NPO (Zhang et al. 2024): L = −(2/β) · E_forget[log σ(−β · log π_θ(y)/π_ref(y))] + w_retain · NLL_retain."""
    beta = context.settings.beta
    log_ratio = context.sequence_log_prob(batch.forget) - batch.forget_reference_log_prob
    preference = -(2 / beta) * weighted_mean(F.logsigmoid(-beta * log_ratio), batch.forget.weights)
    retain_nll = context.nll(batch.retain)
    return Loss(preference + context.settings.retain_weight * retain_nll,
                {"npo": preference, "forget_log_ratio": log_ratio.mean(), "retain_nll": retain_nll})


@register("simnpo")
def simple_negative_preference_optimization(context: MethodContext, batch: UnlearningBatch) -> Loss:
    """SimNPO (Meng et al. 2024), reference-free: the length-normalised log-probability replaces the ratio.

    L = −(2/β) · E_forget[log σ(−β · avg_logprob_θ(y))] + w_retain · NLL_retain
    """
    beta = context.settings.beta
    average_log_prob = -sequence_nll(context.logits(batch.forget), batch.forget.labels)
    preference = -(2 / beta) * weighted_mean(F.logsigmoid(-beta * average_log_prob), batch.forget.weights)
    retain_nll = context.nll(batch.retain)
    return Loss(preference + context.settings.retain_weight * retain_nll,
                {"simnpo": preference, "forget_avg_log_prob": average_log_prob.mean(), "retain_nll": retain_nll})


# ---------------------------------------------------------------------------------------------------
# Activation-space methods: they act on hidden states at the target layers (--layer-id)
# ---------------------------------------------------------------------------------------------------


def steering_target(context: MethodContext, layer_id: int) -> Tensor:
    """c · r̂_ℓ: the fixed random direction of layer ℓ scaled by --steering-coeff."""
    return context.settings.steering_coeff * context.random_directions[layer_id]


@register("rmu")
def representation_misdirection(context: MethodContext, batch: UnlearningBatch) -> Loss:
    """RMU (Li et al. 2024): forget activations to a random point, retain activations kept in place.

    L = Σ_ℓ [ MSE(h_ℓ^forget, c · r̂_ℓ) + α · MSE(h_ℓ^retain, h_ℓ^cached) ]
    """
    forget_hidden, retain_hidden = context.hidden_states(batch.forget), context.hidden_states(batch.retain)
    forget, retain = batch.forget, batch.retain
    forget_term = sum(masked_mse(forget_hidden[layer], steering_target(context, layer), forget.attention_mask,
                                 forget.weights) for layer in context.layer_ids)
    retain_term = sum(masked_mse(retain_hidden[layer], batch.retain_original_hidden[layer], retain.attention_mask,
                                 retain.weights) for layer in context.layer_ids)
    return Loss(forget_term + context.settings.alpha * retain_term,
                {"forget_mse": forget_term, "retain_mse": retain_term})


def circuit_breaker_loss(context: MethodContext, forget_hidden: dict[int, Tensor], batch: UnlearningBatch) -> Loss:
    """L = Σ_ℓ [ −cos(h_ℓ^forget, c · r̂_ℓ) + α · (1 − cos(h_ℓ^retain, h_ℓ^cached)) ] (shared by cb and cb_lat)."""
    retain_hidden = context.hidden_states(batch.retain)
    forget, retain = batch.forget, batch.retain
    forget_cosine = sum(masked_cosine(forget_hidden[layer], steering_target(context, layer), forget.attention_mask,
                                      forget.weights) for layer in context.layer_ids)
    retain_distance = sum(1 - masked_cosine(retain_hidden[layer], batch.retain_original_hidden[layer],
                                            retain.attention_mask, retain.weights) for layer in context.layer_ids)
    return Loss(-forget_cosine + context.settings.alpha * retain_distance,
                {"forget_cosine": forget_cosine, "retain_cosine_distance": retain_distance})


@register("cb")
def circuit_breakers(context: MethodContext, batch: UnlearningBatch) -> Loss:
    """Circuit Breakers (Zou et al. 2024): RMU with cosine similarity, so only directions matter."""
    return circuit_breaker_loss(context, context.hidden_states(batch.forget), batch)


@register("lat")
def latent_adversarial_training(context: MethodContext, batch: UnlearningBatch) -> Loss:
    """LAT (Casper et al. 2024): unlearn while an adversary δ* at the middle target layer helps recall.

    Inner: δ* = argmin_{‖δ‖∞ ≤ ε} NLL_forget(δ) (PGD). Outer: L = −NLL_forget(δ*) + w_retain · NLL_retain.
    """
    delta = context.adversarial_perturbation(batch.forget)
    with context.perturbed(delta):
        forget_nll = context.nll(batch.forget)
    retain_nll = context.nll(batch.retain)
    return Loss(-forget_nll + context.settings.retain_weight * retain_nll,
                {"adversarial_forget_nll": forget_nll, "retain_nll": retain_nll})


@register("cb_lat")
def circuit_breakers_with_latent_adversary(context: MethodContext, batch: UnlearningBatch) -> Loss:
    """CB-LAT: the circuit-breaker loss with forget activations read *under* LAT's adversarial δ*.

    L = Σ_ℓ [ −cos(h_ℓ^forget(δ*), c · r̂_ℓ) + α · (1 − cos(h_ℓ^retain, h_ℓ^cached)) ]
    """
    delta = context.adversarial_perturbation(batch.forget)
    with context.perturbed(delta):
        forget_hidden = context.hidden_states(batch.forget)
    return circuit_breaker_loss(context, forget_hidden, batch)


# ---------------------------------------------------------------------------------------------------
# Parameter-space methods (Siddiqui et al. 2025): they act on the weights themselves (no LoRA)
# ---------------------------------------------------------------------------------------------------


@register("wt_dist")
def weight_distortion(context: MethodContext, batch: UnlearningBatch) -> Loss:
    """Weight Distortion: θ₀ ← θ_pre + N(0, σ²I) before training (`add_weight_noise`), then L = NLL_retain."""
    retain_nll = context.nll(batch.retain)
    return Loss(retain_nll, {"retain_nll": retain_nll})


def local_shard(tensor: Tensor) -> Tensor:
    """This process's shard of a tensor sharded by FSDP2 (a DTensor); any other tensor itself."""
    from torch.distributed.tensor import DTensor

    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


class SquaredDistance(torch.autograd.Function):
    """‖θ − θ₀‖² of one tensor, in fp32, whose backward *recomputes* ∂/∂θ = 2(θ − θ₀).

    Plain autograd would keep the difference (θ − θ₀) of every parameter for backward: one more fp32
    copy of the whole model. Here backward saves only references to θ and θ₀ (which exist anyway) and
    builds each tensor's gradient when it is needed, one tensor at a time.
    One fp32 temporary per tensor in each direction: θ₀ (bf16) is promoted inside the subtraction rather
    than copied to fp32 first, and the square and the scaling happen in place.

    Sharded (FSDP2, brittle/distributed.py): θ and θ₀ are DTensors cut into the same shards, and this is
    the sum over *this process's* shard only; its gradient is that shard's exact gradient, handed back as
    a DTensor of θ's layout. `squared_distance_from` adds the processes' sums.
    """

    @staticmethod
    def forward(ctx, parameter: Tensor, pretrained: Tensor) -> Tensor:
        ctx.save_for_backward(parameter, pretrained)
        return (local_shard(parameter).detach().float() - local_shard(pretrained)).pow_(2).sum()

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> tuple[Tensor, None]:
        from torch.distributed.tensor import DTensor

        parameter, pretrained = ctx.saved_tensors
        gradient = (local_shard(parameter).detach().float() - local_shard(pretrained)).mul_(2 * grad_output)
        gradient = gradient.to(parameter.dtype)
        if isinstance(parameter, DTensor):
            gradient = DTensor.from_local(gradient, parameter.device_mesh, parameter.placements, run_check=False,
                                          shape=parameter.shape, stride=parameter.stride())
        return gradient, None


def squared_distance_from(model: nn.Module, pretrained: dict[str, Tensor]) -> Tensor:
    """‖θ − θ_pre‖²₂ summed over the parameters in `pretrained` (see `SquaredDistance` for its memory).

    Sharded, each process sums its own shards and the processes' sums are added (one all-reduce): the value
    is the whole model's distance on every process, but it is differentiated through the local sum only,
    `local + (total − local).detach()`, so each shard receives exactly its own 2(θ − θ₀). (Differentiating
    through the all-reduce would add the N processes' identical incoming gradients: N times too much.)
    """
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor, Shard

    for module in model.modules():  # a forward without backward (validation) leaves the root's weights gathered
        if isinstance(module, FSDPModule):
            module.reshard()  # back to the shards θ_pre is cut like (a no-op when they already are)
    pairs = [(parameter, pretrained[name]) for name, parameter in model.named_parameters() if name in pretrained]
    local = sum(SquaredDistance.apply(parameter, reference) for parameter, reference in pairs)
    sharded = [parameter for parameter, _ in pairs if isinstance(parameter, DTensor)]
    if not sharded:
        return local
    if len(sharded) != len(pairs) or not all(isinstance(reference, DTensor) for _, reference in pairs):
        raise RuntimeError("θ_pre must be sharded exactly like the parameters (brittle.distributed.Engine.shard_like)")
    if not all(isinstance(placement, Shard) for parameter in sharded for placement in parameter.placements):
        raise RuntimeError("a replicated parameter would be counted once per process; FSDP2 shards every parameter")
    mesh = sharded[0].device_mesh
    total = local.detach().to(mesh.device_type, copy=True)  # NCCL adds only tensors on the GPU
    torch.distributed.all_reduce(total, group=mesh.get_group())
    return local + (total.to(local.device) - local.detach())


@register("wt_dist_reg")
def weight_distance_regularization(context: MethodContext, batch: UnlearningBatch) -> Loss:
    """Weight Distance Regularisation: L = NLL_retain − λ · ‖θ − θ_pre‖²₂ (push away from the pretrained basin).

    The distance term is built *before* the forward pass on purpose: autograd runs later-built nodes
    first, so each 2λ(θ − θ₀) is then made only after the NLL's gradient of that tensor, and added to it
    at once instead of waiting, all of them together, for the backward pass to reach the weights.
    """
    squared_distance = squared_distance_from(context.model, context.pretrained)
    penalty = context.settings.wt_reg_lambda * squared_distance
    retain_nll = context.nll(batch.retain)
    return Loss(retain_nll - penalty, {"retain_nll": retain_nll, "squared_distance": squared_distance})


def freeze_above(model: nn.Module, layers: nn.ModuleList, top_layer: int) -> int:
    """Freeze what an activation loss at layers <= `top_layer` cannot reach (rmu, cb, cb_lat): the later
    decoder layers, the final norm and the output head (unless it is tied to the input embedding). Frozen
    parameters get no gradient buffer and no optimizer state. Returns the number of frozen parameters."""
    head = model.get_output_embeddings()
    tied = head is not None and head.weight is model.get_input_embeddings().weight
    modules = [*layers[top_layer + 1:], final_norm(model), *([head] if head is not None and not tied else [])]
    frozen = 0
    for module in modules:
        for parameter in module.parameters():
            if parameter.requires_grad:
                parameter.requires_grad_(False)
                frozen += parameter.numel()
    return frozen


@torch.no_grad()
def add_weight_noise(model: nn.Module, std: float, seed: int) -> None:
    """wt_dist's starting point: every parameter θ ← θ + N(0, σ²), drawn reproducibly from `seed`."""
    generator = torch.Generator().manual_seed(seed)
    for parameter in model.parameters():
        noise = torch.randn(parameter.shape, generator=generator, dtype=torch.float32) * std
        parameter.add_(noise.to(parameter.device, parameter.dtype))


def random_directions(layer_ids: list[int], hidden_size: int, seed: int) -> dict[int, Tensor]:
    """r̂_ℓ: one fixed random unit vector per target layer (uniform in [0, 1)^d, normalised, as RMU)."""
    generator = torch.Generator().manual_seed(seed)
    directions = {}
    for layer_id in layer_ids:
        vector = torch.rand(hidden_size, generator=generator)
        directions[layer_id] = vector / vector.norm()
    return directions
