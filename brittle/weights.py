"""Streaming two checkpoints' weights from their safetensors files, one tensor pair at a time.

The parameter-space diagnostics compare `W_base` and `W_modified` matrix by matrix, so they never need
a whole model in memory: `open_checkpoint_pair` reads only the two checkpoints' headers (names, dtypes,
shapes, byte offsets), checks that the models have the same parameters, and `matrix_pairs` then reads
each requested tensor pair straight from disk, hands it over, and lets it go before the next one.
Peak memory is about the two largest tensors (in the computation dtype), whatever the size of the model.

    checkpoint_a, checkpoint_b = open_checkpoint_pair("models/toy-base-s42", "models/toy-filtered-s42")
    for pair in matrix_pairs(checkpoint_a, checkpoint_b, checkpoint_a.matrix_names()):
        delta = pair.modified - pair.base

A model is a local Hugging Face folder or a hub id; a hub model is fetched with `huggingface_hub`
(`snapshot_download`, weights and config only). Its weights must be safetensors (`model.safetensors`,
or shards listed in `model.safetensors.index.json`).

Why not `safetensors.safe_open`? It memory-maps each file, and every page it touches stays counted in the
process's resident memory until the file is closed, so a pass over a 14 GB model "uses" 14 GB. The
format is simple enough to read directly (8-byte header length, a JSON header, then raw little-endian
tensor bytes), and ordinary reads into a fresh buffer keep only the tensors we hold.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch
from torch import Tensor
from tqdm import tqdm

from brittle.architecture import ParameterRole, as_output_by_input, parameter_role
from brittle.cli import UserError
from brittle.runtime import DTYPES

# safetensors dtype codes -> torch dtypes (https://github.com/huggingface/safetensors, "Format").
SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
WEIGHT_FILES = ("*.safetensors", "*.safetensors.index.json", "config.json")  # what a hub snapshot fetches
INDEX_FILE = "model.safetensors.index.json"
READ_CHUNK_BYTES = 32 * 2**20  # the conversion buffer of `Checkpoint.read`


@dataclass(frozen=True)
class StoredTensor:
    """Where one tensor's bytes are: file, absolute byte range, dtype and shape."""

    file: Path
    start: int
    end: int
    dtype: torch.dtype
    shape: tuple[int, ...]


class Checkpoint:
    """The tensors of one model's safetensors files, read on demand (only the headers are loaded)."""

    def __init__(self, model: str, folder: Path) -> None:
        self.model = model
        self.folder = folder
        self.config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").exists() else {}
        self.tensors: dict[str, StoredTensor] = {}
        for file in safetensors_files(folder, model):
            for name, stored in read_header(file).items():
                if name in self.tensors:
                    raise UserError(f"model {model}: parameter {name} is stored twice ({self.tensors[name].file.name} "
                                    f"and {file.name}); is there a stray .safetensors file in {folder}?")
                self.tensors[name] = stored

    def shape(self, name: str) -> tuple[int, ...]:
        return self.tensors[name].shape

    def matrix_names(self) -> list[str]:
        """Names of the floating-point 2-D tensors (weight matrices), in model order: embeddings, layer 0, 1, ..."""
        return sorted((name for name, stored in self.tensors.items() if is_matrix(stored)), key=model_order)

    def vector_names(self) -> list[str]:
        """Names of the other floating-point tensors (biases, norm gains), in model order."""
        return sorted((name for name, stored in self.tensors.items()
                       if stored.dtype.is_floating_point and not is_matrix(stored)), key=model_order)

    def read(self, name: str, dtype: torch.dtype | None = None) -> Tensor:
        """One tensor, freshly read from disk into its own CPU tensor, converted to `dtype` (default: as stored).

        A conversion (e.g. fp16 on disk to fp32 for the arithmetic) goes through a small buffer,
        `READ_CHUNK_BYTES` at a time, so it never holds the tensor in both dtypes at once: reading a
        tensor costs exactly the memory of the tensor returned.
        """
        stored = self.tensors[name]
        result = torch.empty(stored.shape, dtype=dtype or stored.dtype)
        element_size = torch.empty((), dtype=stored.dtype).element_size()
        count = result.numel()
        if stored.end - stored.start != count * element_size:
            raise UserError(f"model {self.model}: {stored.file.name} says {name} has shape {list(stored.shape)} but "
                            f"stores {stored.end - stored.start} bytes for it; the file is damaged (re-save it)")
        with open(stored.file, "rb") as file:
            file.seek(stored.start)
            if result.dtype == stored.dtype:  # no conversion: read straight into the result's memory
                read_exactly(file, result.view(-1).view(torch.uint8), self.model, name)
                return result
            flat = result.view(-1)
            per_chunk = max(1, READ_CHUNK_BYTES // element_size)
            chunk = torch.empty(min(per_chunk, count) * element_size, dtype=torch.uint8)
            for begin in range(0, count, per_chunk):
                size = min(per_chunk, count - begin)
                read_exactly(file, chunk[: size * element_size], self.model, name)
                flat[begin : begin + size].copy_(chunk[: size * element_size].view(stored.dtype))
        return result  # safetensors is little-endian, as is every host torch runs on


def read_exactly(file: BinaryIO, destination: Tensor, model: str, name: str) -> None:
    """Fill a contiguous uint8 tensor from the file's current position (one clear error if the file ends)."""
    view = memoryview(destination.numpy())
    filled = 0
    while filled < len(view):
        count = file.readinto(view[filled:])
        if not count:
            raise UserError(f"model {model}: {Path(file.name).name} ends before the bytes of {name}; "
                            "the file is truncated (re-download or re-save it)")
        filled += count


@dataclass
class MatrixPair:
    """One weight matrix of both models, as (out_features, in_features), in the computation dtype."""

    name: str
    role: ParameterRole
    base: Tensor  # W (model A, the reference)
    modified: Tensor  # W + ΔW (model B)


def is_matrix(stored: StoredTensor) -> bool:
    """A weight matrix: 2-D and floating point (not an integer buffer such as position ids)."""
    return len(stored.shape) == 2 and stored.dtype.is_floating_point


def model_order(name: str) -> tuple[int, str]:
    """Sort key: non-layer parameters first, then by layer index (numerically), then by name."""
    return parameter_role(name).layer, name


def read_header(file: Path) -> dict[str, StoredTensor]:
    """The tensors listed in one safetensors file's header (8-byte length, then JSON)."""
    with open(file, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise UserError(f"{file} is not a safetensors file (it is too short)")
        (header_length,) = struct.unpack("<Q", prefix)
        try:
            header = json.loads(handle.read(header_length))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise UserError(f"{file} is not a readable safetensors file ({error})") from error
    data_start = 8 + header_length
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if entry["dtype"] not in SAFETENSORS_DTYPES:
            raise UserError(f"{file}: tensor {name} has dtype {entry['dtype']}, which this reader does not know")
        begin, end = entry["data_offsets"]
        tensors[name] = StoredTensor(file, data_start + begin, data_start + end, SAFETENSORS_DTYPES[entry["dtype"]],
                                     tuple(entry["shape"]))
    return tensors


def safetensors_files(folder: Path, model: str) -> list[Path]:
    """The checkpoint's weight files: the shards named by the index, or every top-level .safetensors file."""
    index = folder / INDEX_FILE
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        missing = [shard for shard in shards if not (folder / shard).exists()]
        if missing:
            raise UserError(f"model {model}: {INDEX_FILE} names {len(missing)} shard(s) that are missing "
                            f"(e.g. {missing[0]}); the download is incomplete")
        return [folder / shard for shard in shards]
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        others = sorted(path.name for path in folder.glob("*.bin")) + sorted(path.name for path in folder.glob("*.pt"))
        hint = (f" (it has {others[0]}: re-save the model with `save_pretrained(folder)`, which writes safetensors)"
                if others else "")
        raise UserError(f"model {model} has no safetensors weights in {folder}{hint}")
    return files


def checkpoint_folder(model: str) -> Path:
    """A local folder holding the model's safetensors files: the model's own folder, or a hub snapshot.

    A local folder needs no transformers at all (importing it costs seconds per step); only a name that
    is not a folder goes through `check_model_reference`, for one clear line on a missing folder or an
    unknown hub id.
    """
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    from brittle.models import check_model_reference

    check_model_reference(model)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id=model, allow_patterns=list(WEIGHT_FILES)))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"could not fetch the weights of {model} from the Hugging Face hub ({reason}); "
                        "check the name, your network and HF_TOKEN") from error


def open_checkpoint(model: str) -> Checkpoint:
    """The headers of one model's weights (local folder or hub id)."""
    return Checkpoint(model, checkpoint_folder(model))


def check_same_parameters(checkpoint_a: Checkpoint, checkpoint_b: Checkpoint) -> None:
    """Refuse two checkpoints whose parameter names or shapes differ, naming the differences."""
    names_a, names_b = set(checkpoint_a.tensors), set(checkpoint_b.tensors)
    if names_a != names_b:
        only_a, only_b = sorted(names_a - names_b, key=model_order), sorted(names_b - names_a, key=model_order)
        parts = [f"{len(names)} only in {checkpoint.model} (e.g. {names[0]})"
                 for names, checkpoint in ((only_a, checkpoint_a), (only_b, checkpoint_b)) if names]
        raise UserError(f"the models have different parameters: {'; '.join(parts)}. A weight comparison needs two "
                        "checkpoints of the same architecture")
    differing = [name for name in sorted(names_a, key=model_order)
                 if checkpoint_a.shape(name) != checkpoint_b.shape(name)]
    if differing:
        name = differing[0]
        shape_a, shape_b = list(checkpoint_a.shape(name)), list(checkpoint_b.shape(name))
        raise UserError(f"the models' parameter shapes differ in {len(differing)} tensor(s), e.g. {name}: {shape_a} "
                        f"in {checkpoint_a.model} but {shape_b} in {checkpoint_b.model}. A weight comparison needs two "
                        "checkpoints of the same architecture")


def open_checkpoint_pair(model_a: str, model_b: str) -> tuple[Checkpoint, Checkpoint]:
    """Both models' headers, after checking that they have the same parameter names and shapes."""
    checkpoint_a, checkpoint_b = open_checkpoint(model_a), open_checkpoint(model_b)
    check_same_parameters(checkpoint_a, checkpoint_b)
    return checkpoint_a, checkpoint_b


def computation_dtype(spec: str) -> torch.dtype:
    """`--dtype` for weight statistics: `auto` is float32 on every device.

    ΔW of a fine-tuned model is often a thousandth of W; half precision (8 or 11 mantissa bits) would
    round much of it away, so weights are upcast from their stored dtype before subtracting.
    """
    if spec == "auto":
        return torch.float32
    if spec not in DTYPES:
        raise UserError(f"unknown --dtype {spec!r}; use auto, fp32, fp16 or bf16")
    return DTYPES[spec]


def matrix_pairs(checkpoint_a: Checkpoint, checkpoint_b: Checkpoint, names: Iterable[str], device: str = "cpu",
                 dtype: torch.dtype = torch.float32, description: str | None = None) -> Iterator[MatrixPair]:
    """Each named matrix of both checkpoints, read from disk one pair at a time, as (out, in) on `device`.

    The caller owns the yielded tensors (e.g. may subtract in place) and should drop its `pair` before
    asking for the next one: nothing here keeps a reference, so at most two matrices are alive. The
    progress bar (`description`) lives in here for that reason: wrapping this generator in `tqdm(...)`
    would keep the previous pair alive in tqdm's frame while the next one is read (four matrices).
    """
    names = list(names)
    with tqdm(total=len(names), desc=description, unit="matrix", disable=description is None) as progress:
        for name in names:
            base = checkpoint_a.read(name, dtype).to(device)
            modified = checkpoint_b.read(name, dtype).to(device)
            pair = MatrixPair(name, parameter_role(name), as_output_by_input(name, base),
                              as_output_by_input(name, modified))
            del base, modified  # the pair is now the only reference
            yield pair
            del pair
            progress.update()
