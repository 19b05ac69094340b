"""Hidden states and MLP inputs of a model on a text split: one forward pass, shared by every step.

Every activation-space diagnostic (Steps 3, 5, 6, 8, 9, 11) reads what a model computes on the
forget and retain texts. Running the model once per (model, split) and handing the result to every
step is what this module does:

    with ActivationStore(settings) as store:
        forget = store.texts("models/toy-base-s42", "forget", "data/toy/forget.txt", max_samples=500)
        forget.hidden(2)        # (tokens, hidden) states after decoder layer 2, every real token
        forget.mlp_input(2)     # (tokens, hidden) the input of layer 2's MLP (its first projection)
        forget.last_token(2)    # (texts, hidden) the last token of each text
        forget.mean_pooled(2)   # (texts, hidden) the mean over each text's tokens

One forward pass records, for every real (non-padding) token, the `num_layers + 1` hidden states
(index 0 = embeddings, index i = output of decoder layer i; the last one is already through the
final norm, see `brittle.architecture`) and the input of every MLP (read by a forward pre-hook on its
first projection). They are written layer by layer as `.npy` files (float32, or float16 with
`--cache-fp16`, the model-diffs analysis tools' half-precision cache) and memory-mapped back one layer at a time, so a
7B model's activations never have to fit in memory at once.

The cache (`<output-root>/.activation_cache/` by default) keeps one slot per (model, split, text file,
number of texts, maximum length, dtypes). A slot is reused only when the model's fingerprint (its
config and weight files, or the hub commit) and the token ids of the split (the texts as tokenized)
are unchanged; otherwise it is recomputed and replaced. `--no-cache` writes the same files into a
temporary folder that is deleted when the step ends, so every step pays for its own passes.

Every forward pass is counted: the store keeps a tally, and when `BRITTLE_FORWARD_PASS_LOG` names a
file each pass (and each cache read) is appended to it as one tab-separated line, which is how
`experiment/pipeline.sh` reports the forward passes of its whole activation section.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import math
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from brittle.architecture import decoder_layers, mlp_expand_module
from brittle.cli import UserError
from brittle.models import check_model_reference, input_device, load_model, load_tokenizer, looks_like_local_path
from brittle.outputs import model_slug, staged_directory, write_json
from brittle.presets import get_preset
from brittle.runtime import resolve_device, resolve_dtype
from brittle.texts import check_disjoint, read_texts
from brittle.training import collate

CACHE_FORMAT = 1  # bump when the files a slot holds change meaning
FORWARD_PASS_LOG = "BRITTLE_FORWARD_PASS_LOG"
SPLITS = ("forget", "retain")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


# ---------------------------------------------------------------------------------------------
# Command-line flags shared by the activation steps
# ---------------------------------------------------------------------------------------------

def add_activation_arguments(parser: argparse.ArgumentParser, texts: bool = True, cache: bool = True) -> None:
    """`--preset`, the text files and `--max-samples`, and how activations are computed and cached.

    `cache=False` leaves out the cache flags, for a step that cannot reuse hidden states (Step 12).
    """
    parser.add_argument("--preset", choices=["real", "toy"], default="real",
                        help="which world's default text files (default real)")
    if texts:
        parser.add_argument("--forget-text", default=None, help="forget texts, one per line (default: the preset's)")
        parser.add_argument("--retain-text", default=None, help="retain texts, one per line (default: the preset's)")
        parser.add_argument("--max-samples", type=int, default=500,
                            help="texts per split, the first N of each file (default 500)")
    parser.add_argument("--max-length", type=int, default=512,
                        help="tokens per text, longer ones are cut (default 512)")
    parser.add_argument("--batch-size", type=int, default=8, help="texts per forward pass batch (default 8)")
    if not cache:
        return
    parser.add_argument("--cache-dir", default=None,
                        help="where hidden states are cached (default <output-root>/.activation_cache)")
    parser.add_argument("--no-cache", action="store_true",
                        help="do not reuse or keep hidden states: this step runs its own forward passes")
    parser.add_argument("--cache-fp16", action="store_true",
                        help="store hidden states in float16 (half the disk and I/O, less precision)")


@dataclass(frozen=True)
class ActivationSettings:
    """How hidden states are computed and where they are kept."""

    max_length: int = 512
    batch_size: int = 8
    device: str = "auto"
    dtype: str = "auto"
    cache_dir: Path | None = None  # None: a temporary folder, deleted with the store (no reuse)
    cache_fp16: bool = False


def activation_settings(args: argparse.Namespace) -> ActivationSettings:
    """The settings the activation flags (and `--device`, `--dtype`, `--output-root`) ask for."""
    if args.max_length < 2:
        raise UserError(f"--max-length must be at least 2 tokens, got {args.max_length}")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    cache_dir = None if args.no_cache else Path(args.cache_dir or Path(args.output_root) / ".activation_cache")
    return ActivationSettings(max_length=args.max_length, batch_size=args.batch_size, device=args.device,
                              dtype=args.dtype, cache_dir=cache_dir, cache_fp16=args.cache_fp16)


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
# What a forward pass runs on: token sequences and which of their positions to keep
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TokenizedSplit:
    """Token sequences fed to the model; positions `keep_from[i]` onwards of sequence i are recorded.

    Text splits keep every token (`keep_from` all 0); multiple-choice splits keep only the positions
    that predict an answer's tokens (Step 6).
    """

    name: str  # "forget", "retain", "forget_questions", ...
    source: str  # the file it came from (part of the cache slot)
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
# Reading a recorded (model, split)
# ---------------------------------------------------------------------------------------------

class SplitActivations:
    """The recorded activations of one model on one split, read one layer at a time from disk."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.meta = json.loads((self.folder / "meta.json").read_text())
        self.model: str = self.meta["model"]
        self.split: str = self.meta["split"]
        self.num_hidden_states: int = self.meta["num_hidden_states"]  # num_layers + 1
        self.num_layers: int = self.num_hidden_states - 1
        self.hidden_size: int = self.meta["hidden_size"]
        self.lengths = np.load(self.folder / "lengths.npy")
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)])
        self.num_sequences = len(self.lengths)
        self.num_tokens = int(self.offsets[-1])

    def _layer_file(self, kind: str, index: int, count: int) -> Tensor:
        if not 0 <= index < count:
            raise IndexError(f"{kind} index {index} outside 0..{count - 1}")
        array = np.load(self.folder / f"{kind}_{index:03d}.npy", mmap_mode="r")
        return torch.from_numpy(np.array(array, dtype=np.float32))

    def hidden(self, index: int) -> Tensor:
        """(tokens, hidden) hidden states: index 0 embeddings, i the output of layer i (last: final-normed)."""
        return self._layer_file("hidden", index, self.num_hidden_states)

    def mlp_input(self, layer: int) -> Tensor:
        """(tokens, hidden) what decoder layer `layer`'s MLP reads (the input of its first projection)."""
        return self._layer_file("mlp_input", layer, self.num_layers)

    def token_ids(self) -> np.ndarray:
        """The input token id at each recorded position."""
        return np.load(self.folder / "token_ids.npy")

    def sequence_index(self) -> Tensor:
        """(tokens,) which sequence each recorded token belongs to."""
        return torch.from_numpy(np.repeat(np.arange(self.num_sequences), self.lengths))

    def last_token(self, index: int) -> Tensor:
        """(sequences, hidden) the hidden state of each sequence's last recorded token."""
        return self.hidden(index)[torch.from_numpy(self.offsets[1:] - 1)]

    def mean_pooled(self, index: int) -> Tensor:
        """(sequences, hidden) the mean hidden state over each sequence's recorded tokens."""
        hidden = self.hidden(index)
        sums = torch.zeros(self.num_sequences, hidden.shape[1]).index_add_(0, self.sequence_index(), hidden)
        return sums / torch.from_numpy(self.lengths).unsqueeze(1).float()



# ---------------------------------------------------------------------------------------------
# The forward pass
# ---------------------------------------------------------------------------------------------

def record_activations(model: PreTrainedModel, split: TokenizedSplit, folder: Path, batch_size: int,
                       pad_token_id: int, storage_dtype: np.dtype = np.float32, what: str = "") -> None:
    """Run `model` once over `split`, writing every kept token's hidden states and MLP inputs to `folder`.

    Sequences are batched longest first (little padding) and right-padded; each kept token's row is
    written at its place in the original order, layer by layer, into memory-mapped `.npy` files.
    """
    layers = decoder_layers(model)
    num_layers = len(layers)
    hidden_size = model.get_input_embeddings().weight.shape[1]
    lengths = split.kept_lengths
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    total_tokens = int(offsets[-1])

    def new_file(kind: str, index: int) -> np.memmap:
        return np.lib.format.open_memmap(folder / f"{kind}_{index:03d}.npy", mode="w+", dtype=storage_dtype,
                                         shape=(total_tokens, hidden_size))

    hidden_files = [new_file("hidden", index) for index in range(num_layers + 1)]
    mlp_files = [new_file("mlp_input", index) for index in range(num_layers)]
    token_ids = np.zeros(total_tokens, dtype=np.int64)

    mlp_inputs: dict[int, Tensor] = {}
    hooks = [mlp_expand_module(layer).register_forward_pre_hook(
        lambda _module, inputs, index=index: mlp_inputs.__setitem__(index, inputs[0]))
        for index, layer in enumerate(layers)]
    device = input_device(model)
    order = sorted(range(len(split.sequences)), key=lambda index: -len(split.sequences[index]))
    batches = [order[start: start + batch_size] for start in range(0, len(order), batch_size)]
    try:
        for batch_indices in tqdm(batches, desc=f"forward pass {what}".strip(), unit="batch", leave=False):
            batch = collate([split.sequences[index] for index in batch_indices], pad_token_id)
            positions = torch.arange(batch.input_ids.shape[1])
            starts = torch.tensor([split.keep_from[index] for index in batch_indices]).unsqueeze(1)
            kept = (batch.attention_mask.bool() & (positions >= starts)).to(device)
            # Destination rows of the kept tokens, in the (row, position) order of `tensor[kept]`.
            rows = torch.from_numpy(np.concatenate([np.arange(offsets[index], offsets[index + 1])
                                                    for index in batch_indices]))
            with torch.inference_mode():
                output = model(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device),
                               output_hidden_states=True, use_cache=False)
            hidden_states = getattr(output, "hidden_states", None)
            if hidden_states is None or len(hidden_states) != num_layers + 1:
                found = "none" if hidden_states is None else f"{len(hidden_states)}"
                raise UserError(f"{what or type(model).__name__}: the model returned {found} hidden states for "
                                f"output_hidden_states=True (expected {num_layers + 1}); the activation steps need "
                                "a causal LM whose forward pass returns its hidden states")
            if len(mlp_inputs) != num_layers:
                raise UserError(f"{what}: the MLP input hooks fired for {len(mlp_inputs)} of {num_layers} layers")
            token_ids[rows.numpy()] = batch.input_ids[kept.cpu()].numpy()
            recorded = ((hidden_files, hidden_states), (mlp_files, [mlp_inputs[i] for i in range(num_layers)]))
            for files, tensors in recorded:
                for file, tensor in zip(files, tensors, strict=True):
                    values = tensor[kept.to(tensor.device)].float().cpu().numpy().astype(storage_dtype, copy=False)
                    if not np.isfinite(values).all():
                        hint = " (float16 overflows here: drop --cache-fp16)" if storage_dtype == np.float16 else ""
                        raise UserError(f"{what}: non-finite activations{hint}")
                    file[rows.numpy()] = values
            mlp_inputs.clear()
    finally:
        for hook in hooks:
            hook.remove()
    for file in (*hidden_files, *mlp_files):
        file.flush()
    del hidden_files, mlp_files
    np.save(folder / "lengths.npy", lengths)
    np.save(folder / "token_ids.npy", token_ids)


# ---------------------------------------------------------------------------------------------
# Model fingerprints and the forward-pass ledger
# ---------------------------------------------------------------------------------------------

def model_identity(name: str) -> str:
    """What names the model in a cache slot: its absolute folder, or its hub id."""
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

    `kind` is `computed` (a forward pass over a split), `cached` (a split read from the cache instead)
    or `perturbed` (Step 12's passes over perturbed inputs; `passes` counts them).
    """
    path = os.environ.get(FORWARD_PASS_LOG)
    if not path:
        return
    with open(path, "a", encoding="utf-8") as file:
        file.write(f"{kind}\t{passes}\t{model}\t{split}\t{sequences}\t{tokens}\t{seconds:.2f}\n")


# ---------------------------------------------------------------------------------------------
# The store: one forward pass per (model, split), reused through the cache
# ---------------------------------------------------------------------------------------------

class ActivationStore:
    """Hands out `SplitActivations`, running each (model, split) forward pass at most once.

    At most one model is in memory at a time (asking for another model's split releases the first),
    so a pairwise step on two 7B models needs the memory of one.
    """

    def __init__(self, settings: ActivationSettings) -> None:
        self.settings = settings
        self._temporary = None if settings.cache_dir else tempfile.TemporaryDirectory(prefix="brittle-activations-")
        self.root = Path(settings.cache_dir or self._temporary.name)
        self._tokenizers: dict[str, PreTrainedTokenizerBase] = {}
        self._loaded: tuple[str, PreTrainedModel] | None = None
        self.computed: list[str] = []  # "<model> <split>" of each forward pass run here
        self.reused: list[str] = []  # ... and of each read from the cache

    def __enter__(self) -> ActivationStore:
        return self

    def __exit__(self, *exception) -> None:
        self.close()

    def close(self) -> None:
        """Release the model and delete the temporary folder (cache off)."""
        self.release_model()
        if self._temporary is not None:
            self._temporary.cleanup()
            self._temporary = None

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype the forward passes run in (`--dtype`, resolved for `--device`)."""
        return resolve_dtype(self.settings.dtype, resolve_device(self.settings.device))

    @property
    def storage_dtype(self) -> np.dtype:
        return np.dtype(np.float16 if self.settings.cache_fp16 else np.float32)

    def release_model(self) -> None:
        """Free the loaded model (its recorded activations stay readable)."""
        self._loaded = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def tokenizer(self, model_name: str) -> PreTrainedTokenizerBase:
        """The model's tokenizer (loaded once)."""
        if model_name not in self._tokenizers:
            self._tokenizers[model_name] = load_tokenizer(model_name)
        return self._tokenizers[model_name]

    def model(self, model_name: str) -> PreTrainedModel:
        """The model, loaded on first use; loading another model releases this one."""
        if self._loaded is None or self._loaded[0] != model_name:
            self.release_model()
            self._loaded = (model_name, load_model(model_name, self.settings.device, self.settings.dtype))
        return self._loaded[1]

    def texts(self, model_name: str, split: str, path: str | Path, texts: Sequence[str]) -> SplitActivations:
        """The activations of `model_name` on `texts` (read from `path`), one split."""
        tokenized = tokenize_texts(self.tokenizer(model_name), texts, self.settings.max_length, split, path)
        return self.split(model_name, tokenized)

    def slot(self, model_name: str, split: TokenizedSplit) -> Path:
        """The cache folder of this (model, split, source, size, length, dtypes)."""
        identity = model_identity(model_name)
        key = json.dumps([CACHE_FORMAT, split.name, str(Path(split.source).resolve()), len(split.sequences),
                          self.settings.max_length, str(self.compute_dtype), self.storage_dtype.name])
        model_folder = f"{model_slug(model_name)}-{hashlib.sha256(identity.encode()).hexdigest()[:8]}"
        return self.root / model_folder / f"{split.name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"

    def split(self, model_name: str, split: TokenizedSplit) -> SplitActivations:
        """The activations of `model_name` on `split`: from the cache when still valid, else one forward pass."""
        folder = self.slot(model_name, split)
        expected = {"format": CACHE_FORMAT, "model_fingerprint": model_fingerprint(model_name),
                    "tokens_fingerprint": split.fingerprint()}
        label = f"{model_name} {split.name}"
        if (folder / "meta.json").exists():
            meta = json.loads((folder / "meta.json").read_text())
            if all(meta.get(key) == value for key, value in expected.items()):
                self.reused.append(label)
                activations = SplitActivations(folder)
                log_forward_passes("cached", 0, model_name, split.name, activations.num_sequences,
                                   activations.num_tokens, 0.0)
                return activations

        model = self.model(model_name)
        started = time.perf_counter()
        with staged_directory(folder) as staging:
            record_activations(model, split, staging, self.settings.batch_size, self._pad_token_id(model_name),
                               self.storage_dtype, what=label)
            write_json(staging / "meta.json", {
                **expected, "model": model_name, "split": split.name, "source": split.source,
                "num_hidden_states": len(decoder_layers(model)) + 1,
                "hidden_size": model.get_input_embeddings().weight.shape[1],
                "sequences": len(split.sequences), "tokens": int(split.kept_lengths.sum()),
                "max_length": self.settings.max_length, "dtype": str(model.dtype),
                "storage_dtype": self.storage_dtype.name,
            })
        seconds = time.perf_counter() - started
        self.computed.append(label)
        activations = SplitActivations(folder)
        log_forward_passes("computed", 1, model_name, split.name, activations.num_sequences,
                           activations.num_tokens, seconds)
        return activations

    def _pad_token_id(self, model_name: str) -> int:
        tokenizer = self.tokenizer(model_name)
        return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def summary(self) -> str:
        """One line: how many forward passes ran and how many splits came from the cache."""
        where = f"cache {self.root}" if self._temporary is None else "cache off"
        return (f"forward passes: {len(self.computed)} computed, {len(self.reused)} read from the cache ({where})")

    def counts(self) -> dict[str, int]:
        """{"forward_passes": computed, "cache_reads": reused}, for a step's summary.json."""
        return {"forward_passes": len(self.computed), "cache_reads": len(self.reused)}


# ---------------------------------------------------------------------------------------------
# Helpers the step scripts share
# ---------------------------------------------------------------------------------------------

def collect_splits(store: ActivationStore, models: dict[str, str], files: dict[str, Path],
                   texts: dict[str, list[str]]) -> dict[tuple[str, str], SplitActivations]:
    """{(role, split): activations} for every model (role -> name) and split, one model at a time."""
    return {(role, split): store.texts(model, split, files[split], texts[split])
            for role, model in models.items() for split in texts}


def check_same_architecture(first: SplitActivations, second: SplitActivations) -> None:
    """Refuse to compare models with different numbers of layers or hidden sizes."""
    if (first.num_hidden_states, first.hidden_size) != (second.num_hidden_states, second.hidden_size):
        raise UserError(f"{first.model} ({first.num_layers} layers, width {first.hidden_size}) and {second.model} "
                        f"({second.num_layers} layers, width {second.hidden_size}) have different architectures; "
                        "compare models that share one")


def check_same_tokens(first: SplitActivations, second: SplitActivations) -> None:
    """Refuse token-by-token comparisons of models that tokenize the texts differently."""
    if not np.array_equal(first.token_ids(), second.token_ids()):
        raise UserError(f"{first.model} and {second.model} tokenize the {first.split} texts differently; "
                        "token-by-token comparisons need models that share a tokenizer")


def run_details(args: argparse.Namespace, store: ActivationStore, files: dict[str, Path] | None = None,
                texts: dict[str, list[str]] | None = None) -> dict:
    """What a step's summary.json records about its inputs and its forward passes."""
    details = {"max_length": store.settings.max_length, "dtype": str(store.compute_dtype),
               "cache": "off" if store.settings.cache_dir is None else str(store.settings.cache_dir),
               "cache_fp16": store.settings.cache_fp16, "seed": args.seed, **store.counts()}
    if files is not None and texts is not None:
        details["text_files"] = {split: str(path) for split, path in files.items()}
        details["texts_per_split"] = {split: len(split_texts) for split, split_texts in texts.items()}
    return details


def finite_or_none(value: float) -> float | None:
    """`value`, or None for NaN and infinities (which JSON cannot hold)."""
    return value if math.isfinite(value) else None
