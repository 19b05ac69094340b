"""Architecture-agnostic access to decoder layers, MLP/attention parameters and modules.

Every diagnostic names parameters and modules through this file, so the same code reads GPT-NeoX
(the deep-ignorance models and the toy organism), Llama-style and GPT-2-style models:

| role               | GPT-NeoX                       | Llama-style                  | GPT-2-style        |
|--------------------|--------------------------------|------------------------------|--------------------|
| decoder layers     | `gpt_neox.layers`              | `model.layers`               | `transformer.h`    |
| q/k/v              | `attention.query_key_value`    | `self_attn.{q,k,v}_proj`     | `attn.c_attn`      |
| attention output   | `attention.dense`              | `self_attn.o_proj`           | `attn.c_proj`      |
| MLP expand (/gate) | `mlp.dense_h_to_4h`            | `mlp.up_proj`, `mlp.gate_proj` | `mlp.c_fc`       |
| MLP contract       | `mlp.dense_4h_to_h`            | `mlp.down_proj`              | `mlp.c_proj`       |
| final norm         | `gpt_neox.final_layer_norm`    | `model.norm`                 | `transformer.ln_f` |

GPT-2 stores its projections as `Conv1D` weights of shape (in, out); `as_output_by_input` returns
every weight as (out, in) like `nn.Linear`, so "column space" means the same thing everywhere.

Hidden states: with `output_hidden_states=True` a model returns `num_layers + 1` tensors; index 0 is
the embedding output, index i the output of layer i, and the last one has already been through
the final norm in all three families (apply `final_norm` only to the earlier ones).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import Tensor, nn

from brittle.cli import UserError

# `gpt_neox.layers.3.`, `model.layers.3.`, `transformer.h.3.`, and `h.3.` at the start of a name (the GPT-2
# checkpoints on the hub store their parameters without the `transformer.` prefix).
LAYER_INDEX = re.compile(r"(?:^|\.)(?:layers|h)\.(\d+)\.")

# (pattern searched in the parameter name, group, component); the first match wins.
COMPONENT_PATTERNS: tuple[tuple[re.Pattern[str], str, str], ...] = tuple(
    (re.compile(pattern), group, component)
    for pattern, group, component in (
        (r"attention\.query_key_value\.", "attn", "qkv"),
        (r"attn\.c_attn\.", "attn", "qkv"),
        (r"self_attn\.q_proj\.", "attn", "q"),
        (r"self_attn\.k_proj\.", "attn", "k"),
        (r"self_attn\.v_proj\.", "attn", "v"),
        (r"attention\.dense\.", "attn", "attn_out"),
        (r"self_attn\.o_proj\.", "attn", "attn_out"),
        (r"self_attn\.out_proj\.", "attn", "attn_out"),  # CLIP (a LLaVA's vision tower)
        (r"attn\.c_proj\.", "attn", "attn_out"),
        (r"mlp\.dense_h_to_4h\.", "mlp", "mlp_expand"),
        (r"mlp\.up_proj\.", "mlp", "mlp_expand"),
        (r"mlp\.gate_proj\.", "mlp", "mlp_gate"),
        (r"mlp\.c_fc\.", "mlp", "mlp_expand"),
        (r"mlp\.fc1\.", "mlp", "mlp_expand"),  # CLIP
        (r"mlp\.dense_4h_to_h\.", "mlp", "mlp_contract"),
        (r"mlp\.down_proj\.", "mlp", "mlp_contract"),
        (r"mlp\.c_proj\.", "mlp", "mlp_contract"),
        (r"mlp\.fc2\.", "mlp", "mlp_contract"),  # CLIP
        (r"(embed_in|embed_tokens|wte|wpe)\.", "embed", "embed"),
        (r"(^|\.)(embed_out|lm_head)\.", "embed", "unembed"),
        (r"(layernorm|layer_norm|ln_\w+|\.norm)\.", "norm", "norm"),
    )
)

# Vision-language (LLaVA) models hold three networks; diagnostics report each as its own group.
# (prefix of the parameter name, modality); anything else (e.g. `lm_head`) belongs to the language model.
MODALITY_PREFIXES: tuple[tuple[str, str], ...] = (
    ("model.vision_tower.", "vision tower"),
    ("model.multi_modal_projector.", "projector"),
    ("model.language_model.", "language model"),
    # Checkpoints saved before transformers 4.52 (llava-hf/llava-1.5-7b-hf among them) lack the `model.` prefix.
    ("vision_tower.", "vision tower"),
    ("multi_modal_projector.", "projector"),
    ("language_model.", "language model"),
)

# Parameter-name fragments of GPT-2's Conv1D modules, whose weights are stored transposed.
CONV1D_FRAGMENTS = (".c_attn.", ".c_proj.", ".c_fc.")


@dataclass(frozen=True)
class ParameterRole:
    """What a parameter is: its decoder layer (-1 outside layers), group and component."""

    layer: int
    group: str  # "attn", "mlp", "embed", "norm" or "other"
    component: str  # "qkv", "q", "k", "v", "attn_out", "mlp_expand", "mlp_gate", "mlp_contract", ...


def parameter_role(name: str) -> ParameterRole:
    """Classify a parameter by its name, e.g. `gpt_neox.layers.3.mlp.dense_h_to_4h.weight`."""
    match = LAYER_INDEX.search(name)
    layer = int(match.group(1)) if match else -1
    for pattern, group, component in COMPONENT_PATTERNS:
        if pattern.search(name):
            return ParameterRole(layer, group, component)
    return ParameterRole(layer, "other", "other")


def parameter_modality(name: str) -> str:
    """Which network of a vision-language model a parameter belongs to ("language model" in a text model)."""
    return next((modality for prefix, modality in MODALITY_PREFIXES if name.startswith(prefix)), "language model")


def as_output_by_input(name: str, weight: Tensor) -> Tensor:
    """The weight as an (out_features, in_features) matrix, undoing GPT-2's Conv1D layout."""
    if weight.ndim == 2 and any(fragment in name for fragment in CONV1D_FRAGMENTS):
        return weight.T
    return weight


def split_fused_qkv(name: str, weight: Tensor, num_attention_heads: int | None) -> dict[str, Tensor]:
    """A fused query/key/value weight (out, in) split into its q, k and v matrices; {} for other weights.

    GPT-NeoX interleaves per head: output rows are [head 0: q k v][head 1: q k v]..., each block
    `head_size` rows (its attention views the output as (heads, 3 * head_size) and chunks it in three).
    GPT-2's `c_attn` (once transposed to (out, in)) is [all q][all k][all v]. `weight` must already be
    (out, in), as `as_output_by_input` returns it; GPT-NeoX needs the model's number of heads.
    """
    role = parameter_role(name)
    if role.component != "qkv" or weight.ndim != 2:
        return {}
    if ".c_attn." in name:  # GPT-2: three contiguous blocks
        return dict(zip(("q", "k", "v"), weight.chunk(3, dim=0), strict=True))
    if not num_attention_heads:
        return {}
    out_features, in_features = weight.shape
    head_size = out_features // (3 * num_attention_heads)
    per_head = weight.reshape(num_attention_heads, 3, head_size, in_features)
    return {part: per_head[:, index].reshape(num_attention_heads * head_size, in_features)
            for index, part in enumerate(("q", "k", "v"))}


def _first_attribute(root: nn.Module, dotted_paths: tuple[str, ...], what: str) -> nn.Module:
    for dotted_path in dotted_paths:
        module = root
        for attribute in dotted_path.split("."):
            module = getattr(module, attribute, None)
            if module is None:
                break
        if module is not None:
            return module
    raise UserError(f"cannot find the {what} of {type(root).__name__}: only GPT-NeoX, Llama-style and "
                    "GPT-2-style architectures are supported")


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The list of transformer blocks."""
    return _first_attribute(model, ("gpt_neox.layers", "model.layers", "transformer.h",
                                             "model.language_model.layers"), "decoder layers")


def final_norm(model: nn.Module) -> nn.Module:
    """The norm applied to the last hidden state before the unembedding."""
    return _first_attribute(model, ("gpt_neox.final_layer_norm", "model.norm", "transformer.ln_f",
                                     "model.language_model.final_layer_norm", "model.language_model.norm"),
                            "final norm")


def mlp_expand_module(layer: nn.Module) -> nn.Module:
    """The MLP's first projection, whose input is the MLP input (hook it to read that input)."""
    return _first_attribute(layer, ("mlp.dense_h_to_4h", "mlp.up_proj", "mlp.c_fc"), "MLP input projection")


def num_layers(model: nn.Module) -> int:
    """Number of decoder layers."""
    return len(decoder_layers(model))
