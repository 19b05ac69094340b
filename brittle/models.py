"""Loading models and tokenizers the same way for a hub id and a local folder.

`load_model("EleutherAI/deep-ignorance-unfiltered")` and `load_model("models/toy-base-s42")` take
exactly the same path (`from_pretrained`); only the name differs. A name that is neither an existing
folder nor loadable from the hub, or a folder whose safetensors files are truncated or corrupt, ends in
one `UserError` line instead of a transformers traceback.
"""

from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from brittle.cli import UserError
from brittle.runtime import resolve_device, resolve_dtype


def looks_like_local_path(name: str) -> bool:
    """True for names that can only mean a folder (absolute, ./, ../, ~, or more than one '/')."""
    return name.startswith(("/", "./", "../", "~")) or name.count("/") > 1


def check_model_reference(name: str) -> None:
    """Fail early, in one line, for a model that is not there - before any weights load.

    An existing folder must hold a `config.json`; a name that can only be a path must exist; any
    other name is a hub id whose `config.json` (a few KB, then cached) must be obtainable.
    """
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise UserError(f"model folder {name} has no config.json; is it a Hugging Face model folder?")
        for weights in sorted(path.glob("*.safetensors")):
            check_safetensors_file(weights)
        return
    if looks_like_local_path(name) or path.exists():
        raise UserError(f"model {name} not found: no such folder. Check the path, or build the toy "
                        "organism with `PRESET=toy ./experiment/pipeline.sh`")
    try:
        AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as error:
        raise model_load_error(name, error) from error


def check_safetensors_file(path: Path) -> None:
    """A `UserError` unless `path` is a whole safetensors file: its header parses and its tensors end
    exactly at the end of the file (a copy or download cut short fails here, in a millisecond).

    Layout: 8 bytes little-endian header length N, N bytes of JSON {name: {dtype, shape,
    data_offsets: [begin, end]}, "__metadata__": ...}, then the tensor bytes.
    """
    size = path.stat().st_size
    problem = None
    try:
        with open(path, "rb") as file:
            (header_length,) = struct.unpack("<Q", file.read(8))
            if 8 + header_length > size:
                problem = f"its header needs {header_length} bytes, the file has {size}"
            else:
                header = json.loads(file.read(header_length))
                end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"),
                          default=0)
                if 8 + header_length + end != size:
                    problem = f"its tensors need {8 + header_length + end} bytes, the file has {size}"
    except (struct.error, ValueError, KeyError, TypeError, IndexError) as error:
        problem = f"its header cannot be read ({type(error).__name__})"
    if problem:
        raise UserError(f"{path} is truncated or corrupt ({problem}); copy, download or save the model again")


def model_load_error(name: str, error: Exception) -> UserError:
    """A one-line explanation of why `name` could not be loaded."""
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return UserError(f"could not load model {name}: it is not a local folder and the Hugging Face hub "
                     f"could not provide it ({reason}). Check the name or path, or your network/HF_TOKEN")


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    """The model's tokenizer, with a pad token (the EOS token when the model has none)."""
    check_model_reference(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as error:
        raise model_load_error(name, error) from error
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


ATTN_IMPLEMENTATIONS = ("auto", "sdpa", "flash_attention_2", "eager")
# The process-wide --attn-implementation (brittle.cli sets it while parsing), used when a caller passes none.
default_attn_implementation = "auto"


def flash_attention_unavailable(device: str) -> str | None:
    """Why flash-attention 2 cannot run on `device` (None when it can)."""
    if not device.startswith("cuda"):
        return f"it needs a CUDA GPU and the device is {device}"
    if importlib.util.find_spec("flash_attn") is None:
        return "the flash-attn package is not installed (`uv pip install flash-attn --no-build-isolation`)"
    major, _ = torch.cuda.get_device_capability(torch.device(device))
    if major < 8:
        return f"it needs an Ampere or newer GPU (compute capability 8.0+), and {device} has {major}.x"
    return None


def resolve_attn_implementation(spec: str | None, device: str) -> str | None:
    """The attention backend to load with: auto = flash_attention_2 when installed and supported by the
    GPU, else transformers' own default (sdpa where the architecture has it, else eager); None = that default."""
    spec = spec or default_attn_implementation
    if spec not in ATTN_IMPLEMENTATIONS:
        raise UserError(f"unknown --attn-implementation {spec!r}; use {', '.join(ATTN_IMPLEMENTATIONS)}")
    if spec == "auto":
        return None if flash_attention_unavailable(device) else "flash_attention_2"
    if spec == "flash_attention_2" and (reason := flash_attention_unavailable(device)):
        raise UserError(f"--attn-implementation flash_attention_2 is unavailable: {reason}; use auto or sdpa")
    return spec


def attn_implementation_of(model: PreTrainedModel) -> str:
    """The attention backend a loaded model runs (for run records)."""
    return str(getattr(model.config, "_attn_implementation", None) or "eager")


def load_model(name: str, device: str = "auto", dtype: str = "auto",
               attn_implementation: str | None = None) -> PreTrainedModel:
    """A causal LM (or a vision-language model such as LLaVA) in eval mode on the requested device and dtype,
    with the requested attention backend.

    `dtype="stored"` keeps the dtype the checkpoint is stored in (training: brittle/precision.py).
    With `--device auto` and CUDA available, `device_map="auto"` lets accelerate place (and if need
    be shard) the model over the visible GPUs; otherwise the model is moved to the resolved device.
    """
    check_model_reference(name)
    resolved_device = resolve_device(device)
    torch_dtype = "auto" if dtype == "stored" else resolve_dtype(dtype, resolved_device)
    attention = resolve_attn_implementation(attn_implementation, resolved_device)
    use_device_map = device == "auto" and resolved_device.startswith("cuda")
    from brittle.vlm import is_vision_language_checkpoint  # a LLaVA is an image-text-to-text model, not a causal LM

    model_class = AutoModelForImageTextToText if is_vision_language_checkpoint(name) else AutoModelForCausalLM
    try:
        model = model_class.from_pretrained(
            name, dtype=torch_dtype, device_map="auto" if use_device_map else None,
            **({"attn_implementation": attention} if attention else {}))
    except (OSError, ValueError) as error:
        if attention and "attn" in str(error).lower():
            raise UserError(f"{name} cannot run --attn-implementation {attention} ({str(error).splitlines()[0]}); "
                            "use auto") from error
        raise model_load_error(name, error) from error
    if not use_device_map:
        model.to(resolved_device)
    model.eval()
    return model


def load_model_and_tokenizer(name: str, device: str = "auto", dtype: str = "auto",
                             attn_implementation: str | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """`load_model` and `load_tokenizer` together."""
    return load_model(name, device, dtype, attn_implementation), load_tokenizer(name)


def input_device(model: PreTrainedModel) -> torch.device:
    """Where the model's inputs must live (its input embeddings' device, even when sharded)."""
    return model.get_input_embeddings().weight.device
