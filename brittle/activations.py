"""Activation statistics: one pass per (model, split), or per (model A, model B, split), shared by every step.

Every activation-space diagnostic (Steps 3, 5, 6, 8, 9, 11) reads what a model computes on the
forget and retain texts. None of them needs every token's hidden state: each needs a statistic that
can be accumulated while the batches stream through the model. This module runs that pass once and
keeps only the statistics, so that a 6.9B model costs a few GB of disk instead of ~140 GB:

    with ActivationStore(settings) as store:
        forget = store.texts("models/toy-base-s42", "forget", "data/toy/forget.txt", texts)
        forget.last_token(2)     # (texts, hidden) Step 5: the last token of each text after layer 2
        forget.mean_pooled(2)    # (texts, hidden) Step 8: the mean over each text's tokens
        forget.covariance(2)     # (hidden, hidden) Step 9: from Σx and Σxxᵀ, accumulated in float64
        pair = store.pair("models/toy-base-s42", "models/toy-filtered-s42", "forget", path, texts)
        pair.norms(2)            # Step 3: mean ‖h_A‖, ‖h_B‖, ‖h_B - h_A‖ (L1, L2) per token
        pair.projection("model_a", 1, top_k=16)   # Step 11: mean ‖V_kᵀx‖²/‖x‖² of layer 1's MLP inputs

| pass                      | statistic (per layer)                                             | step |
|---------------------------|-------------------------------------------------------------------|------|
| model, split              | last-token vectors, per-text mean vectors                          | 5, 8 |
| model, split              | token count, Σx and Σxxᵀ (float64; the upper triangle is stored)   | 9    |
| model, question positions | hidden states at the positions that predict an answer's tokens     | 6    |
| model A + B, split        | Σ‖h_A‖, Σ‖h_B‖, Σ‖h_B - h_A‖ (L1 and L2), A and B in lockstep       | 3    |
| model A + B, split        | Σ (v_jᵀx)²/‖x‖² per right singular vector v_j of ΔW, both models' x | 11   |

Step 11's projections are stored per singular direction: ‖V_kᵀx‖² = Σ_{j≤k} (v_jᵀx)², so any `--top-k`
is a sum over the first k entries, and the SVD of ΔW (read from the safetensors files before the
pass) is done once. Index 0 of the hidden states is the embeddings, index i the output of decoder
layer i; the last one is already through the final norm (see `brittle.architecture`).

The store (`<output-root>/.activation_statistics/` by default, `--statistics-dir`) keeps one folder per
pass, keyed by the models, the split, its text file, the number of texts, `--max-length` and the
compute dtype. A folder is reused only when the models' fingerprints (config and weight
files, or the hub commit) and the token ids are unchanged and every file's size and SHA-256 match the
ones its `meta.json` recorded; otherwise it is recomputed, with one line saying why. A pass writes
into a hidden staging folder named after its host and process id and renames it into place when
complete; a staging folder whose process is gone is deleted by the next run. A lock file serialises
two processes that need the same pass (steps running side by side), so it is computed once.

Step 6's tuned lens needs no statistic: it trains on the retain texts streamed through the model during
its training (`brittle.lens.HiddenStates`), every token, nothing stored.

Every pass is counted: the store keeps a tally, and when `BRITTLE_FORWARD_PASS_LOG` names a file each
pass (and each read of a stored one) is appended to it as one tab-separated line, which is how
`experiment/pipeline.sh` reports the forward passes of its whole activation section.
"""

from __future__ import annotations

import argparse
import fcntl
import gc
import hashlib
import json
import math
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from brittle.architecture import decoder_layers, mlp_expand_module, parameter_role
from brittle.cli import UserError
from brittle.models import check_model_reference, input_device, load_model, load_tokenizer, looks_like_local_path
from brittle.outputs import FOLDER_MODE, model_slug, publish_directory, write_json
from brittle.presets import get_preset
from brittle.runtime import resolve_device, resolve_dtype
from brittle.texts import DEFAULT_MAX_SAMPLES, check_disjoint, read_texts
from brittle.training import collate

STORE_FORMAT = 2  # bump when the files a store folder holds change meaning (2: no lens sample)
FORWARD_PASS_LOG = "BRITTLE_FORWARD_PASS_LOG"
SPLITS = ("forget", "retain")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
MLP_INPUT_COMPONENTS = ("mlp_expand", "mlp_gate")  # the weights that read the MLP input (Step 11)
ROLES = ("model_a", "model_b")
STAGING_MARK = ".partial-"  # .<folder>.partial-<host>-<pid>-<random>


# ---------------------------------------------------------------------------------------------
# Command-line flags shared by the activation steps
# ---------------------------------------------------------------------------------------------

def add_activation_arguments(parser: argparse.ArgumentParser, texts: bool = True, store: bool = True) -> None:
    """`--preset`, the text files and `--max-samples`, `--max-length`, `--batch-size` and the store's flags.

    `store=False` leaves out the store flags, for a step that cannot reuse statistics (Step 12).
    """
    parser.add_argument("--preset", choices=["real", "toy"], default="real",
                        help="which world's default text files (default real)")
    if texts:
        parser.add_argument("--forget-text", default=None, help="forget texts, one per line (default: the preset's)")
        parser.add_argument("--retain-text", default=None, help="retain texts, one per line (default: the preset's)")
        parser.add_argument("--max-samples", type=int, default=DEFAULT_MAX_SAMPLES,
                            help=f"texts per split, the first N of each file (default {DEFAULT_MAX_SAMPLES})")
    parser.add_argument("--max-length", type=int, default=512,
                        help="tokens per text, longer ones are cut (default 512)")
    parser.add_argument("--batch-size", type=int, default=8, help="texts per forward pass batch (default 8)")
    if not store:
        return
    parser.add_argument("--statistics-dir", default=None,
                        help="where activation statistics are kept (default <output-root>/.activation_statistics)")


@dataclass(frozen=True)
class ActivationSettings:
    """How the statistics passes run and where they are kept."""

    statistics_dir: Path
    max_length: int = 512
    batch_size: int = 8
    device: str = "auto"
    dtype: str = "auto"


def activation_settings(args: argparse.Namespace) -> ActivationSettings:
    """The settings the activation flags (and `--device`, `--dtype`, `--output-root`) ask for."""
    if args.max_length < 2:
        raise UserError(f"--max-length must be at least 2 tokens, got {args.max_length}")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    folder = Path(args.statistics_dir or Path(args.output_root) / ".activation_statistics")
    return ActivationSettings(folder, max_length=args.max_length, batch_size=args.batch_size, device=args.device,
                              dtype=args.dtype)


def text_files(args: argparse.Namespace) -> dict[str, Path]:
    """{"forget": path, "retain": path}: the flags, or the preset's files."""
    preset = get_preset(args.preset, args.seed)
    return {"forget": Path(args.forget_text or preset.forget_text),
            "retain": Path(args.retain_text or preset.retain_text)}


def read_split_texts(files: dict[str, Path], max_samples: int) -> dict[str, list[str]]:
    """The first `max_samples` texts of each split, refusing missing, empty and overlapping files."""
    texts = {split: read_texts(path, max_samples, what=f"{split} text file") for split, path in files.items()}
    if "forget" in texts and "retain" in texts:
        check_disjoint(texts["forget"], texts["retain"])
    return texts


def step_inputs(args: argparse.Namespace, *models: str) -> tuple[dict[str, Path], dict[str, list[str]]]:
    """An activation step's split files and texts (`--max-samples` each), after checking that every model
    exists: the refusals that need no model, made before any model loads."""
    files = text_files(args)
    texts = read_split_texts(files, args.max_samples)
    for model in models:
        check_model_reference(model)
    return files, texts


# ---------------------------------------------------------------------------------------------
# What a pass runs on: token sequences and which of their positions to keep
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TokenizedSplit:
    """Token sequences fed to the model; positions `keep_from[i]` onwards of sequence i are recorded.

    Text splits keep every token (`keep_from` all 0); multiple-choice splits keep only the positions
    that predict an answer's tokens (Step 6).
    """

    name: str  # "forget", "retain", "forget_questions", ...
    source: str  # the file it came from (part of the store key)
    sequences: tuple[tuple[int, ...], ...]
    keep_from: tuple[int, ...]

    def __post_init__(self) -> None:
        for index, (sequence, start) in enumerate(zip(self.sequences, self.keep_from, strict=True)):
            if not sequence:
                raise UserError(f"{self.name}: text {index + 1} of {self.source} has no tokens")
            if not 0 <= start < len(sequence):
                raise ValueError(f"keep_from[{index}] = {start} outside a sequence of {len(sequence)} tokens")

    @property
    def kept_lengths(self) -> np.ndarray:
        """Recorded tokens per sequence."""
        return np.array([len(sequence) - start for sequence, start in zip(self.sequences, self.keep_from,
                                                                          strict=True)], dtype=np.int64)

    @property
    def offsets(self) -> np.ndarray:
        """Row of each sequence's first kept token in the split's (sequence, position) order, and the total."""
        return np.concatenate([[0], np.cumsum(self.kept_lengths)])

    def fingerprint(self) -> str:
        """A hash of exactly what the model sees and what is kept (texts, tokenizer and truncation)."""
        digest = hashlib.sha256()
        for sequence, start in zip(self.sequences, self.keep_from, strict=True):
            digest.update(np.asarray(sequence, dtype=np.int64).tobytes())
            digest.update(f"|{start}\n".encode())
        return digest.hexdigest()


def tokenize_texts(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int, name: str,
                   source: str | Path) -> TokenizedSplit:
    """Each text as the model reads it (the tokenizer's own special tokens, as lm-eval encodes), cut to
    `max_length` tokens, every position kept."""
    sequences = tuple(tuple(tokenizer(text, truncation=True, max_length=max_length)["input_ids"]) for text in texts)
    return TokenizedSplit(name, str(source), sequences, (0,) * len(sequences))


# ---------------------------------------------------------------------------------------------
# The forward pass, streamed: each batch's kept tokens, flattened, for the accumulators
# ---------------------------------------------------------------------------------------------

@dataclass
class BatchActivations:
    """One batch's kept tokens in the split's (sequence, position) order.

    `hidden[i]` is (tokens, hidden) for hidden state i; `mlp_inputs[l]` what layer l's MLP read (only
    when asked for); `rows` each token's row in the whole split; `sequences` its sequence.
    """

    hidden: list[Tensor]
    mlp_inputs: list[Tensor] | None
    rows: Tensor
    sequences: Tensor


def batch_order(split: TokenizedSplit, batch_size: int) -> list[list[int]]:
    """Sequences batched longest first (little padding); every pass of a split uses the same batches."""
    order = sorted(range(len(split.sequences)), key=lambda index: -len(split.sequences[index]))
    return [order[start: start + batch_size] for start in range(0, len(order), batch_size)]


def stream_activations(model: PreTrainedModel, split: TokenizedSplit, batch_size: int, pad_token_id: int,
                       mlp_inputs: bool = False, what: str = "",
                       batches: Sequence[Sequence[int]] | None = None) -> Iterator[BatchActivations]:
    """Run `model` over `split` batch by batch, yielding each batch's kept tokens (right-padded batches).

    `batches` lists the sequences of each forward pass (default: `batch_order`, `batch_size` at a time).
    """
    layers = decoder_layers(model)
    num_layers = len(layers)
    offsets = split.offsets
    recorded: dict[int, Tensor] = {}
    hooks = [mlp_expand_module(layer).register_forward_pre_hook(
        lambda _module, inputs, index=index: recorded.__setitem__(index, inputs[0]))
        for index, layer in enumerate(layers)] if mlp_inputs else []
    device = input_device(model)
    try:
        for batch_indices in batches if batches is not None else batch_order(split, batch_size):
            batch = collate([split.sequences[index] for index in batch_indices], pad_token_id)
            positions = torch.arange(batch.input_ids.shape[1])
            starts = torch.tensor([split.keep_from[index] for index in batch_indices]).unsqueeze(1)
            kept = batch.attention_mask.bool() & (positions >= starts)
            rows = torch.from_numpy(np.concatenate([np.arange(offsets[index], offsets[index + 1])
                                                    for index in batch_indices]))
            sequences = torch.tensor(batch_indices).unsqueeze(1).expand_as(kept)[kept]
            with torch.inference_mode():
                output = model(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device),
                               output_hidden_states=True, use_cache=False)
            hidden_states = getattr(output, "hidden_states", None)
            if hidden_states is None or len(hidden_states) != num_layers + 1:
                found = "none" if hidden_states is None else f"{len(hidden_states)}"
                raise UserError(f"{what or type(model).__name__}: the model returned {found} hidden states for "
                                f"output_hidden_states=True (expected {num_layers + 1}); the activation steps need "
                                "a causal LM whose forward pass returns its hidden states")
            if mlp_inputs and len(recorded) != num_layers:
                raise UserError(f"{what}: the MLP input hooks fired for {len(recorded)} of {num_layers} layers")
            hidden = [state[kept.to(state.device)] for state in hidden_states]
            if not all(torch.isfinite(state).all() for state in hidden):
                raise UserError(f"{what}: the model produced non-finite hidden states")
            inputs = [recorded[index][kept.to(recorded[index].device)] for index in range(num_layers)] \
                if mlp_inputs else None
            recorded.clear()
            yield BatchActivations(hidden, inputs, rows, sequences)
    finally:
        for hook in hooks:
            hook.remove()


# ---------------------------------------------------------------------------------------------
# Accumulators: what each statistic adds per batch, and the tensors it leaves in the store
# ---------------------------------------------------------------------------------------------

def packed_upper(matrix: Tensor) -> Tensor:
    """The upper triangle (diagonal included) of a symmetric (d, d) matrix, row by row: d(d+1)/2 values."""
    rows, columns = torch.triu_indices(*matrix.shape, device=matrix.device)
    return matrix[rows, columns]


def unpacked_symmetric(packed: Tensor, size: int) -> Tensor:
    """The symmetric (size, size) matrix whose upper triangle `packed_upper` returned."""
    rows, columns = torch.triu_indices(size, size)
    matrix = torch.zeros(size, size, dtype=packed.dtype)
    matrix[rows, columns] = packed
    matrix[columns, rows] = packed
    return matrix


class TextStatistics:
    """Steps 5, 8 and 9 of one (model, split): last-token and mean vectors, token count, Σx and Σxxᵀ.

    Σxxᵀ is accumulated in float64 on the model's device (33 x 4096² x 8 B = 4.4 GB at the 6.9B shape)
    and stored as its upper triangle; the covariance is then (Σxxᵀ - n μμᵀ) / (n - 1).
    """

    def __init__(self, num_states: int, hidden_size: int, lengths: np.ndarray, device: torch.device) -> None:
        self.lengths = torch.from_numpy(lengths)
        texts = len(lengths)
        self.last = torch.zeros(num_states, texts, hidden_size)
        self.sums = torch.zeros(num_states, texts, hidden_size, dtype=torch.float64)
        self.token_sum = torch.zeros(num_states, hidden_size, dtype=torch.float64, device=device)
        self.gram = torch.zeros(num_states, hidden_size, hidden_size, dtype=torch.float64, device=device)

    def update(self, batch: BatchActivations) -> None:
        last = torch.ones_like(batch.sequences, dtype=torch.bool)
        last[:-1] = batch.sequences[1:] != batch.sequences[:-1]  # the last kept token of each sequence
        for index, state in enumerate(batch.hidden):
            wide = state.double()
            self.token_sum[index] += wide.sum(dim=0)
            self.gram[index] += wide.T @ wide
            self.last[index, batch.sequences[last]] = state[last.to(state.device)].float().cpu()
            self.sums[index].index_add_(0, batch.sequences, wide.cpu())

    def tensors(self) -> dict[str, Tensor]:
        return {"last_token": self.last, "mean_pooled": (self.sums / self.lengths[None, :, None]).float(),
                "lengths": self.lengths, "token_sum": self.token_sum.cpu(),
                "gram_upper": torch.stack([packed_upper(gram).cpu() for gram in self.gram])}


class RowSample:
    """The hidden states of chosen rows of the split, in every layer, as the model computed them."""

    def __init__(self, rows: np.ndarray, sequence_of_row: np.ndarray, num_states: int, hidden_size: int,
                 dtype: torch.dtype) -> None:
        self.rows = torch.from_numpy(rows)
        self.where = torch.full((len(sequence_of_row),), -1, dtype=torch.int64)
        self.where[self.rows] = torch.arange(len(rows))
        self.sequence = torch.from_numpy(sequence_of_row[rows])
        self.hidden = torch.zeros(num_states, len(rows), hidden_size, dtype=dtype)

    def update(self, batch: BatchActivations) -> None:
        slots = self.where[batch.rows]
        chosen = slots >= 0
        for index, state in enumerate(batch.hidden):
            self.hidden[index, slots[chosen]] = state[chosen.to(state.device)].cpu()

    def tensors(self) -> dict[str, Tensor]:
        return {"sample_hidden": self.hidden, "sample_rows": self.rows, "sample_sequence": self.sequence}


class PairNorms:
    """Step 3: per layer, Σ over tokens of the L1 and L2 norms of h_A, h_B and h_B - h_A (float64)."""

    def __init__(self, num_states: int) -> None:
        self.sums = torch.zeros(num_states, 3, 2, dtype=torch.float64)  # (layer, [a, b, dh], [L1, L2])
        self.tokens = 0

    def update(self, first: BatchActivations, second: BatchActivations) -> None:
        self.tokens += len(first.rows)
        for index, (state_a, state_b) in enumerate(zip(first.hidden, second.hidden, strict=True)):
            state_a, state_b = state_a.double(), state_b.to(state_a.device).double()
            for slot, values in enumerate((state_a, state_b, state_b - state_a)):
                self.sums[index, slot, 0] += values.abs().sum().item()
                self.sums[index, slot, 1] += values.norm(dim=-1).sum().item()

    def tensors(self) -> dict[str, Tensor]:
        return {"norm_sums": self.sums, "norm_tokens": torch.tensor(self.tokens)}


class RowSpaceProjections:
    """Step 11: per layer, Σ over tokens of (v_jᵀx)² / ‖x‖² for every right singular vector v_j of ΔW.

    Tokens whose MLP input is exactly zero are left out (their fraction is undefined) and counted apart.
    """

    def __init__(self, bases: list[Tensor]) -> None:
        self.bases = [basis.double() for basis in bases]  # (in, r) columns, by singular value
        self.sums = [torch.zeros(basis.shape[1], dtype=torch.float64) for basis in bases]
        self.counts = torch.zeros(len(bases), dtype=torch.int64)

    def update(self, batch: BatchActivations) -> None:
        for layer, inputs in enumerate(batch.mlp_inputs):
            inputs = inputs.double()
            squared_norms = inputs.pow(2).sum(dim=1)
            nonzero = squared_norms > 0
            inside = (inputs[nonzero] @ self.bases[layer].to(inputs.device)).pow(2)
            self.sums[layer] += (inside / squared_norms[nonzero, None]).sum(dim=0).cpu()
            self.counts[layer] += int(nonzero.sum())

    def tensors(self, prefix: str) -> dict[str, Tensor]:
        return {f"{prefix}_projection_sums": torch.stack(self.sums), f"{prefix}_projection_tokens": self.counts}


# ---------------------------------------------------------------------------------------------
# Step 11's weights: ΔW of the MLP's input side and its SVD, read straight from the safetensors files
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RowSpace:
    """Per decoder layer: the right singular vectors of ΔW (columns), its singular values, rank and norm."""

    bases: list[Tensor]
    singular_values: Tensor  # (layers, r)
    ranks: Tensor
    frobenius: Tensor
    in_features: int


def right_singular_vectors(delta: Tensor, device: str = "cpu") -> tuple[Tensor, Tensor, int]:
    """(V as (in, r) columns by singular value, the singular values, the numerical rank) of a (out, in) ΔW."""
    _, singular_values, right_vectors = torch.linalg.svd(delta.to(device), full_matrices=False)
    singular_values, right_vectors = singular_values.cpu(), right_vectors.cpu()
    rank = 0
    if singular_values.numel() and singular_values.max() > 0:
        tolerance = singular_values.max() * max(delta.shape) * torch.finfo(delta.dtype).eps
        rank = int((singular_values > tolerance).sum())
    return right_vectors.T, singular_values, rank


def mlp_input_row_space(model_a: str, model_b: str, device: str = "cpu") -> RowSpace:
    """The SVD of ΔW = W_B - W_A of each layer's MLP input-side weights (GPT-NeoX `dense_h_to_4h`;
    Llama-style `up_proj` and `gate_proj` stacked, since both read the MLP input; GPT-2 `c_fc`), in float32."""
    from brittle.weights import matrix_pairs, open_checkpoint_pair

    checkpoint_a, checkpoint_b = open_checkpoint_pair(model_a, model_b)
    names = [name for name in checkpoint_a.matrix_names()
             if parameter_role(name).component in MLP_INPUT_COMPONENTS and name.endswith("weight")
             and parameter_role(name).layer >= 0]
    if not names:
        raise UserError(f"found no MLP input weights in {model_a}; only GPT-NeoX, Llama-style and GPT-2-style "
                        "architectures are supported")
    deltas: dict[int, list[Tensor]] = {}
    for pair in matrix_pairs(checkpoint_a, checkpoint_b, names):
        deltas.setdefault(pair.role.layer, []).append(pair.modified - pair.base)
    bases, values, ranks, norms = [], [], [], []
    for layer in tqdm(sorted(deltas), desc="SVD of ΔW (MLP input side)", unit="layer", leave=False):
        delta = torch.cat(deltas.pop(layer))
        right_vectors, singular_values, rank = right_singular_vectors(delta, device)
        bases.append(right_vectors)
        values.append(singular_values)
        ranks.append(rank)
        norms.append(delta.norm().item())
    return RowSpace(bases, torch.stack(values), torch.tensor(ranks), torch.tensor(norms, dtype=torch.float64),
                    bases[0].shape[0])


# ---------------------------------------------------------------------------------------------
# Reading stored statistics
# ---------------------------------------------------------------------------------------------

class StoredPass:
    """One store folder: its meta.json and its tensors (loaded on first use)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.meta = json.loads((self.folder / "meta.json").read_text())
        self.num_hidden_states: int = self.meta["num_hidden_states"]  # num_layers + 1
        self.num_layers: int = self.num_hidden_states - 1
        self.hidden_size: int = self.meta["hidden_size"]
        self._files: dict[str, Path] = {}
        for file in self.meta["files"]:
            with safe_open(self.folder / file, "pt") as opened:
                self._files |= dict.fromkeys(opened.keys(), self.folder / file)
        self._tensors: dict[str, Tensor] = {}

    def tensor(self, name: str) -> Tensor:
        """One stored tensor, read from its file on first use."""
        if name not in self._tensors:
            with safe_open(self._files[name], "pt") as file:
                self._tensors[name] = file.get_tensor(name)
        return self._tensors[name]


class SplitActivations(StoredPass):
    """The statistics of one model on one text split (Steps 5, 8 and 9)."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.model: str = self.meta["model"]
        self.split: str = self.meta["split"]
        self.lengths = self.tensor("lengths").numpy()
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)])
        self.num_sequences = len(self.lengths)
        self.num_tokens = int(self.offsets[-1])

    def last_token(self, index: int) -> Tensor:
        """(texts, hidden) the hidden state of each text's last token."""
        return self.tensor("last_token")[index]

    def mean_pooled(self, index: int) -> Tensor:
        """(texts, hidden) the mean hidden state over each text's tokens."""
        return self.tensor("mean_pooled")[index]

    def covariance(self, index: int) -> Tensor:
        """(hidden, hidden) float64 covariance of the token hidden states (every token one sample)."""
        count = self.num_tokens
        mean = self.tensor("token_sum")[index] / count
        second = unpacked_symmetric(self.tensor("gram_upper")[index], self.hidden_size)
        return (second - count * torch.outer(mean, mean)) / max(1, count - 1)


class RecordedRows(StoredPass):
    """Hidden states at every kept position of a split (Step 6's question pass), in split row order."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.lengths = self.tensor("lengths").numpy()
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)])

    def hidden(self, index: int) -> Tensor:
        """(rows, hidden) float32 hidden states of every kept position."""
        return self.tensor("sample_hidden")[index].float()


class PairActivations(StoredPass):
    """The paired statistics of models A and B on one split (Steps 3 and 11)."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.split: str = self.meta["split"]

    def norms(self, index: int) -> dict[str, tuple[float, float]]:
        """{"model_a" | "model_b" | "dh": (mean L1, mean L2) per token} at hidden state `index`."""
        sums = self.tensor("norm_sums")[index] / int(self.tensor("norm_tokens"))
        return {name: (sums[slot, 0].item(), sums[slot, 1].item()) for slot, name in enumerate(("model_a", "model_b",
                                                                                                 "dh"))}

    def projection(self, role: str, layer: int, top_k: int) -> float:
        """Mean over `role`'s MLP-input tokens of ‖V_kᵀx‖²/‖x‖², k = min(top_k, rank of ΔW); NaN for k = 0."""
        k = min(top_k, int(self.tensor("dW_rank")[layer]))
        tokens = int(self.tensor(f"{role}_projection_tokens")[layer])
        if k == 0 or tokens == 0:
            return math.nan
        return (self.tensor(f"{role}_projection_sums")[layer, :k].sum() / tokens).item()


# ---------------------------------------------------------------------------------------------
# Model fingerprints and the forward-pass ledger
# ---------------------------------------------------------------------------------------------

def model_identity(name: str) -> str:
    """What names the model in a store key: its absolute folder, or its hub id."""
    path = Path(name).expanduser()
    return str(path.resolve()) if path.is_dir() else name


def model_fingerprint(name: str) -> str:
    """Changes whenever the model's weights may have: config + weight files' sizes and times, or hub commit.

    A local folder is fingerprinted by its `config.json` bytes and each weight file's name, size and
    modification time (retraining or `save_pretrained` into the folder changes them) - cheap even for
    14 GB of weights. A hub model by the commit of the snapshot `from_pretrained` resolves to.
    """
    check_model_reference(name)
    digest = hashlib.sha256()
    path = Path(name).expanduser()
    if path.is_dir():
        digest.update((path / "config.json").read_bytes())
        for file in sorted(path.iterdir()):
            if file.suffix in WEIGHT_SUFFIXES or file.name.endswith(".index.json"):
                stat = file.stat()
                digest.update(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        return digest.hexdigest()
    if looks_like_local_path(name):
        raise UserError(f"model {name} not found")
    from transformers.utils import cached_file

    config_path = Path(cached_file(name, "config.json"))
    digest.update(f"{name}@{config_path.parent.name}".encode())  # .../snapshots/<commit>/config.json
    return digest.hexdigest()


def log_forward_passes(kind: str, passes: int, model: str, split: str, sequences: int, tokens: int,
                       seconds: float) -> None:
    """Append one line to the `BRITTLE_FORWARD_PASS_LOG` file (if set): kind, passes, model, split, ...

    `kind` is `computed` (a statistics pass over a split; `passes` counts the models it ran), `cached`
    (statistics read from the store instead), `perturbed` (Step 12's passes over perturbed inputs) or
    `lens` (Step 6's retain texts streamed through the model for the tuned lens: `sequences` and `tokens`
    count every text and token that went through it, over all epochs).
    """
    path = os.environ.get(FORWARD_PASS_LOG)
    if not path:
        return
    with open(path, "a", encoding="utf-8") as file:
        file.write(f"{kind}\t{passes}\t{model}\t{split}\t{sequences}\t{tokens}\t{seconds:.2f}\n")


# ---------------------------------------------------------------------------------------------
# Integrity: checksummed folders, staging folders named after their process, one writer at a time
# ---------------------------------------------------------------------------------------------

def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in 8 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(8 * 2**20):
            digest.update(block)
    return digest.hexdigest()


def store_problem(folder: Path, expected: dict) -> str | None:
    """Why `folder` may not be reused (None when it may): missing, other inputs, or damaged files.

    Every file that meta.json lists must exist with the recorded size and SHA-256, so a truncated or
    overwritten file is never read.
    """
    meta_path = folder / "meta.json"
    if not meta_path.exists():
        return "missing"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return "its meta.json is unreadable"
    changed = [key for key, value in expected.items() if meta.get(key) != value]
    if changed:
        return f"{', '.join(changed)} changed"
    for name, record in meta.get("files", {}).items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != record["bytes"]:
            return f"{name} is missing or has the wrong size"
        if file_sha256(path) != record["sha256"]:
            return f"{name} fails its checksum"
    return None if meta.get("files") else "it lists no files"


def staging_owner(path: Path) -> tuple[str, int] | None:
    """(host, pid) of the process that made a staging folder `.<name>.partial-<host>-<pid>-<random>`."""
    _, _, tail = path.name.partition(STAGING_MARK)
    host, _, rest = tail.rpartition("-")[0].rpartition("-")
    try:
        return host, int(rest)
    except ValueError:
        return None


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_staging(folder: Path) -> None:
    """Delete staging folders in `folder` left by dead processes of this host; report other hosts' ones."""
    if not folder.is_dir():
        return
    for path in folder.glob(f".*{STAGING_MARK}*"):
        owner = staging_owner(path)
        if owner is None:
            continue
        host, pid = owner
        if host == socket.gethostname() and not process_alive(pid):
            shutil.rmtree(path, ignore_errors=True)
            print(f"removed {path}: the staging folder of a killed run (process {pid})")
        elif host != socket.gethostname():
            print(f"note: {path} is a staging folder of a run on {host}; delete it if that run is over")


@contextmanager
def staged_store_folder(final: Path) -> Iterator[Path]:
    """A staging folder beside `final`, named after this host and process, renamed into place on success."""
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}{STAGING_MARK}{socket.gethostname()}-{os.getpid()}-",
                                    dir=final.parent))
    staging.chmod(FOLDER_MODE)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    publish_directory(staging, final)


@contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `lock_path` (released by the OS if the process dies)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_store_files(folder: Path, tensors: dict[str, dict[str, Tensor]], meta: dict) -> None:
    """Save each group of tensors as `<group>.safetensors`, then meta.json with every file's size and SHA-256."""
    files = {}
    for group, group_tensors in tensors.items():
        path = folder / f"{group}.safetensors"
        save_file({name: tensor.contiguous() for name, tensor in group_tensors.items()}, path)
        files[path.name] = {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
    write_json(folder / "meta.json", {**meta, "files": files})


# ---------------------------------------------------------------------------------------------
# The store: one pass per (model, split) or (model A, model B, split), reused while valid
# ---------------------------------------------------------------------------------------------

class ActivationStore:
    """Hands out stored statistics, running each pass at most once.

    A single-model pass keeps at most one model in memory (asking for another releases the first); a
    pair pass holds both models, since A and B run in lockstep on the same batches.
    """

    def __init__(self, settings: ActivationSettings) -> None:
        self.settings = settings
        self.root = Path(settings.statistics_dir)
        self._tokenizers: dict[str, PreTrainedTokenizerBase] = {}
        self._loaded: dict[str, PreTrainedModel] = {}
        self._row_spaces: dict[tuple[str, str], RowSpace] = {}
        self.computed: list[str] = []  # "<model> <split>" of each pass run here
        self.reused: list[str] = []  # ... and of each read from the store

    def __enter__(self) -> ActivationStore:
        return self

    def __exit__(self, *exception) -> None:
        self.close()

    def close(self) -> None:
        """Release the models."""
        self.release_model()

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype the forward passes run in (`--dtype`, resolved for `--device`)."""
        return resolve_dtype(self.settings.dtype, resolve_device(self.settings.device))

    def release_model(self) -> None:
        """Free the loaded models (their statistics stay readable)."""
        self._loaded.clear()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def tokenizer(self, model_name: str) -> PreTrainedTokenizerBase:
        """The model's tokenizer (loaded once)."""
        if model_name not in self._tokenizers:
            self._tokenizers[model_name] = load_tokenizer(model_name)
        return self._tokenizers[model_name]

    def model(self, model_name: str, keep: Sequence[str] = ()) -> PreTrainedModel:
        """The model, loaded on first use; loaded models other than it and `keep` are released first."""
        others = [name for name in self._loaded if name != model_name and name not in keep]
        if others:
            for name in others:
                del self._loaded[name]
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        if model_name not in self._loaded:
            self._loaded[model_name] = load_model(model_name, self.settings.device, self.settings.dtype)
        return self._loaded[model_name]

    def pad_token_id(self, model_name: str) -> int:
        """The token id batches are padded with (the tokenizer's pad token, else 0)."""
        tokenizer = self.tokenizer(model_name)
        return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def _key(self, kind: str, models: Sequence[str], split: TokenizedSplit) -> Path:
        """The store folder of one pass: kind, models, split, source, size, length, dtype."""
        key = json.dumps([STORE_FORMAT, kind, split.name, str(Path(split.source).resolve()), len(split.sequences),
                          self.settings.max_length, str(self.compute_dtype)])
        identity = "|".join(model_identity(model) for model in models)
        slug = "__to__".join(model_slug(model) for model in models)
        folder = f"{slug}-{hashlib.sha256(identity.encode()).hexdigest()[:8]}"
        return self.root / folder / f"{kind}-{split.name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"

    def _stored(self, kind: str, models: Sequence[str], split: TokenizedSplit, compute, reader):
        """The stored pass when valid, else `compute(staging)` into a fresh folder; read through `reader`."""
        folder = self._key(kind, models, split)
        expected = {"format": STORE_FORMAT, "tokens_fingerprint": split.fingerprint(),
                    "model_fingerprints": [model_fingerprint(model) for model in models]}
        label = f"{' + '.join(models)} {split.name}"
        remove_stale_staging(folder.parent)
        with exclusive(folder.parent / f".{folder.name}.lock"):
            problem = store_problem(folder, expected)
            if problem is None:
                self.reused.append(label)
                stored = reader(folder)
                log_forward_passes("cached", 0, " + ".join(models), split.name, len(split.sequences),
                                   int(split.kept_lengths.sum()), 0.0)
                return stored
            if problem != "missing":
                print(f"activation statistics {folder} not reused ({problem}): recomputing")
            started = time.perf_counter()
            with staged_store_folder(folder) as staging:
                tensors, details = compute()
                write_store_files(staging, tensors, {**expected, "models": list(models), "split": split.name,
                                                     "source": split.source, "sequences": len(split.sequences),
                                                     "tokens": int(split.kept_lengths.sum()),
                                                     "max_length": self.settings.max_length,
                                                     "dtype": str(self.compute_dtype), **details})
        seconds = time.perf_counter() - started
        self.computed.append(label)
        log_forward_passes("computed", len(models), " + ".join(models), split.name, len(split.sequences),
                           int(split.kept_lengths.sum()), seconds)
        return reader(folder)

    @staticmethod
    def _shape(model: PreTrainedModel) -> dict[str, int]:
        return {"num_hidden_states": len(decoder_layers(model)) + 1,
                "hidden_size": model.get_input_embeddings().weight.shape[1]}

    # ---- single model ----------------------------------------------------------------------------

    def texts(self, model_name: str, split: str, path: str | Path, texts: Sequence[str]) -> SplitActivations:
        """The statistics of `model_name` on `texts` (read from `path`), one split."""
        tokenized = tokenize_texts(self.tokenizer(model_name), texts, self.settings.max_length, split, path)
        return self.split(model_name, tokenized)

    def split(self, model_name: str, split: TokenizedSplit) -> SplitActivations:
        """Steps 5, 8 and 9 of `model_name` on `split`."""
        def compute() -> tuple[dict[str, dict[str, Tensor]], dict]:
            model = self.model(model_name)
            shape = self._shape(model)
            statistics = TextStatistics(shape["num_hidden_states"], shape["hidden_size"], split.kept_lengths,
                                        input_device(model))
            self._run(model, model_name, split, [statistics])
            vectors = statistics.tensors()
            return {"moments": {"gram_upper": vectors.pop("gram_upper")}, "vectors": vectors}, {**shape,
                                                                                                 "model": model_name}

        return self._stored("text", [model_name], split, compute, SplitActivations)

    def rows(self, model_name: str, split: TokenizedSplit) -> RecordedRows:
        """Every kept position's hidden states of `model_name` on `split` (Step 6's question pass)."""
        def compute() -> tuple[dict[str, dict[str, Tensor]], dict]:
            model = self.model(model_name)
            shape = self._shape(model)
            total = int(split.kept_lengths.sum())
            sequence_of_row = np.repeat(np.arange(len(split.sequences)), split.kept_lengths)
            sample = RowSample(np.arange(total), sequence_of_row, shape["num_hidden_states"], shape["hidden_size"],
                               model.dtype)
            self._run(model, model_name, split, [sample])
            return {"rows": {**sample.tensors(), "lengths": torch.from_numpy(split.kept_lengths)}}, shape

        return self._stored("rows", [model_name], split, compute, RecordedRows)

    def _run(self, model: PreTrainedModel, model_name: str, split: TokenizedSplit, accumulators: list) -> None:
        stream = stream_activations(model, split, self.settings.batch_size, self.pad_token_id(model_name),
                                    what=f"{model_name} {split.name}")
        total = len(batch_order(split, self.settings.batch_size))
        for batch in tqdm(stream, total=total, desc=f"statistics {Path(model_name).name} {split.name}",
                          unit="batch", leave=False):
            for accumulator in accumulators:
                accumulator.update(batch)

    # ---- two models in lockstep ------------------------------------------------------------------

    def pair(self, model_a: str, model_b: str, split: str, path: str | Path, texts: Sequence[str]) -> PairActivations:
        """Steps 3 and 11 of models A and B on `texts` (one split), both models run on the same batches."""
        tokenized = tokenize_texts(self.tokenizer(model_a), texts, self.settings.max_length, split, path)
        other = tokenize_texts(self.tokenizer(model_b), texts, self.settings.max_length, split, path)
        if tokenized.sequences != other.sequences:
            raise UserError(f"{model_a} and {model_b} tokenize the {split} texts differently; token-by-token "
                            "comparisons need models that share a tokenizer")

        def compute() -> tuple[dict[str, dict[str, Tensor]], dict]:
            if (model_a, model_b) not in self._row_spaces:  # once for both splits
                self._row_spaces[model_a, model_b] = mlp_input_row_space(model_a, model_b,
                                                                         resolve_device(self.settings.device))
            row_space = self._row_spaces[model_a, model_b]
            first = self.model(model_a, keep=[model_b])
            second = self.model(model_b, keep=[model_a])
            shape = self._shape(first)
            if shape != self._shape(second):
                raise UserError(f"{model_a} and {model_b} have different architectures; compare models that "
                                "share one")
            norms = PairNorms(shape["num_hidden_states"])
            projections = {role: RowSpaceProjections(row_space.bases) for role in ROLES}
            streams = [stream_activations(model, tokenized, self.settings.batch_size, self.pad_token_id(name),
                                          mlp_inputs=True, what=f"{name} {split}")
                       for model, name in ((first, model_a), (second, model_b))]
            total = len(batch_order(tokenized, self.settings.batch_size))
            for batch_a, batch_b in tqdm(zip(*streams, strict=True), total=total, unit="batch", leave=False,
                                         desc=f"paired statistics {split}"):
                norms.update(batch_a, batch_b)
                projections["model_a"].update(batch_a)
                projections["model_b"].update(batch_b)
            tensors = {**norms.tensors(), **projections["model_a"].tensors("model_a"),
                       **projections["model_b"].tensors("model_b"),
                       "dW_singular_values": row_space.singular_values, "dW_rank": row_space.ranks,
                       "dW_fro": row_space.frobenius}
            return {"pair": tensors}, {**shape, "in_features": row_space.in_features}

        return self._stored("pair", [model_a, model_b], tokenized, compute, PairActivations)

    # ---- tallies ----------------------------------------------------------------------------------

    def summary(self) -> str:
        """One line: how many passes ran and how many were read from the store."""
        return (f"statistics passes: {len(self.computed)} computed, {len(self.reused)} read from the store "
                f"({self.root})")

    def counts(self) -> dict[str, int]:
        """{"forward_passes": computed, "statistics_reads": reused}, for a step's summary.json."""
        return {"forward_passes": len(self.computed), "statistics_reads": len(self.reused)}


# ---------------------------------------------------------------------------------------------
# Helpers the step scripts share
# ---------------------------------------------------------------------------------------------

def collect_splits(store: ActivationStore, models: dict[str, str], files: dict[str, Path],
                   texts: dict[str, list[str]]) -> dict[tuple[str, str], SplitActivations]:
    """{(role, split): statistics} for every model (role -> name) and split, one model at a time."""
    return {(role, split): store.texts(model, split, files[split], texts[split])
            for role, model in models.items() for split in texts}


def collect_pairs(store: ActivationStore, model_a: str, model_b: str, files: dict[str, Path],
                  texts: dict[str, list[str]]) -> dict[str, PairActivations]:
    """{split: paired statistics of A and B}."""
    return {split: store.pair(model_a, model_b, split, files[split], texts[split]) for split in texts}


def check_same_architecture(first: SplitActivations, second: SplitActivations) -> None:
    """Refuse to compare models with different numbers of layers or hidden sizes."""
    if (first.num_hidden_states, first.hidden_size) != (second.num_hidden_states, second.hidden_size):
        raise UserError(f"{first.model} ({first.num_layers} layers, width {first.hidden_size}) and {second.model} "
                        f"({second.num_layers} layers, width {second.hidden_size}) have different architectures; "
                        "compare models that share one")


def run_details(args: argparse.Namespace, store: ActivationStore, files: dict[str, Path] | None = None,
                texts: dict[str, list[str]] | None = None) -> dict:
    """What a step's summary.json records about its inputs and its statistics passes."""
    details = {"max_length": store.settings.max_length, "dtype": str(store.compute_dtype),
               "statistics_dir": str(store.settings.statistics_dir), "seed": args.seed, **store.counts()}
    if files is not None and texts is not None:
        details["text_files"] = {split: str(path) for split, path in files.items()}
        details["texts_per_split"] = {split: len(split_texts) for split, split_texts in texts.items()}
    return details


def finite_or_none(value: float) -> float | None:
    """`value`, or None for NaN and infinities (which JSON cannot hold)."""
    return value if math.isfinite(value) else None
