"""The one mixed-precision policy of every training loop: fp32 master weights, low-precision compute.

    trainable weights, gradients, AdamW moments   fp32 (always)
    frozen weight matrices (LoRA base, layers      the checkpoint's dtype (bf16 for the real models), or
    above RMU's)                                   fp32 when the compute dtype is fp32; frozen vectors fp32
    matrix multiplications                        `--dtype` under torch.autocast (bf16/fp16 on GPU; bf16
                                                   also runs on CPU, which is how the tests exercise it)
    what is written                               `--save-dtype` (default: the checkpoint's own dtype;
                                                   `fp32` keeps every bit of the update)

Why: AdamW applied directly to bf16 weights rounds most updates away. A bf16 weight of size w moves only
when the update exceeds about w·2⁻⁹, so at the learning rates of unlearning (1e-5) and of the relearning
attack (1e-6) the realised ΔW is a small, distorted fraction of the intended one. Keeping the weights
and the optimizer in fp32 and only *computing* in bf16 makes the bf16 run's ΔW the fp32 run's ΔW up to
the rounding of the activations (tests/test_precision.py: cosine >= 0.99, norm within 2%).

fp16 compute also gets a dynamic loss scale (`torch.amp.GradScaler`) so that small gradients do not
underflow; bf16 has fp32's exponent range and needs none.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from brittle.cli import UserError
from brittle.runtime import DTYPES, resolve_dtype

SAVE_DTYPE_CHOICES = ("auto", *DTYPES)  # auto = the dtype the base checkpoint is stored in
DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}


def dtype_name(dtype: torch.dtype) -> str:
    """`bf16` for torch.bfloat16, and so on (the names of --dtype and --save-dtype)."""
    return DTYPE_NAMES.get(dtype, str(dtype).replace("torch.", ""))


def stored_dtype(model_name: str, loaded: nn.Module | None = None) -> torch.dtype:
    """The dtype a checkpoint is stored in: its config.json's `dtype`/`torch_dtype`, else the loaded weights'."""
    config_file = Path(model_name).expanduser() / "config.json"
    names = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if config_file.is_file():
        config = json.loads(config_file.read_text())
        name = config.get("dtype") or config.get("torch_dtype")
        if name in names:
            return names[name]
    if loaded is not None:
        return next(loaded.parameters()).dtype
    return torch.float32


@dataclass
class Precision:
    """Compute dtype (autocast), save dtype, and the loss scaler fp16 compute needs."""

    compute: torch.dtype
    save: torch.dtype
    device_type: str
    scaler: torch.amp.GradScaler | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.compute == torch.float16 and self.scaler is None:
            self.scaler = torch.amp.GradScaler(self.device_type)

    @property
    def mixed(self) -> bool:
        """True when matrix multiplications run in a lower precision than the weights."""
        return self.compute != torch.float32

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context every forward pass of training (and its caches and validation) runs in."""
        if not self.mixed:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.compute)

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        """The loss to differentiate: multiplied by the fp16 loss scale, unchanged otherwise."""
        return self.scaler.scale(loss) if self.scaler else loss

    def backward(self, loss: torch.Tensor) -> None:
        """loss.backward(), scaled for fp16."""
        self.scale(loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Bring the gradients back to their true scale (before clipping or reading their norm)."""
        if self.scaler:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """optimizer.step(); with fp16, skipped (and the scale lowered) when a gradient overflowed."""
        if self.scaler:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()

    def record(self) -> dict[str, str]:
        """What a run record stores: {"compute_dtype": "bf16", "save_dtype": "fp32", "master_dtype": "fp32"}."""
        return {"compute_dtype": dtype_name(self.compute), "save_dtype": dtype_name(self.save),
                "master_dtype": "fp32"}


def resolve_precision(dtype: str, save_dtype: str, device: str | torch.device, checkpoint: torch.dtype) -> Precision:
    """The policy for `--dtype` (compute; auto = bf16 on CUDA, fp16 on MPS, fp32 on CPU) and `--save-dtype`."""
    device = torch.device(device)
    compute = resolve_dtype(dtype, str(device))
    if save_dtype not in SAVE_DTYPE_CHOICES:
        raise UserError(f"unknown --save-dtype {save_dtype!r}; use {', '.join(SAVE_DTYPE_CHOICES)}")
    save = checkpoint if save_dtype == "auto" else DTYPES[save_dtype]
    if compute == torch.float16 and device.type == "cpu":
        raise UserError("--dtype fp16 cannot train on the CPU (no fp16 autocast there); use --dtype bf16 or fp32")
    return Precision(compute, save, device.type)


def prepare_for_training(model: nn.Module, precision: Precision) -> list[nn.Parameter]:
    """Trainable parameters to fp32 (master weights); frozen matrices stay as loaded unless compute is fp32.

    Frozen vectors (norm weights, biases: a negligible share of the memory) become fp32 too, since a norm
    with low-precision weights cannot take the fp32 activations of a trainable layer below it. Returns
    the trainable parameters, the only ones the optimizer may hold state for.
    """
    for parameter in model.parameters():
        if parameter.requires_grad or not precision.mixed or parameter.dim() < 2:
            parameter.data = parameter.data.float()
    for buffer_owner in model.modules():  # e.g. rotary caches: leave integer buffers alone
        for name, buffer in buffer_owner.named_buffers(recurse=False):
            if buffer.is_floating_point() and not precision.mixed:
                setattr(buffer_owner, name, buffer.float())
    return [parameter for parameter in model.parameters() if parameter.requires_grad]


def gradient_checkpointing(model: nn.Module, setting: str, device: torch.device) -> bool:
    """--gradient-checkpointing on|off|auto (auto: on CUDA, where memory is the limit): recompute each
    layer's activations in the backward pass instead of keeping them. Returns whether it is on."""
    enabled = setting == "on" or (setting == "auto" and device.type == "cuda")
    if enabled:
        model.config.use_cache = False
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return enabled


def cast_for_saving(model: nn.Module, precision: Precision) -> nn.Module:
    """The trained model in the save dtype (in place), ready for `save_pretrained` and evaluation."""
    return model.to(precision.save)


@contextlib.contextmanager
def released_optimizer(optimizer: torch.optim.Optimizer) -> Iterator[None]:
    """Move the optimizer's state (AdamW: two fp32 copies of the trainable weights) to the CPU for the
    duration, so that an evaluation in between has the accelerator's memory; moved back afterwards."""
    moved: list[tuple[dict, str, torch.device]] = []
    for state in optimizer.state.values():
        for key, value in state.items():
            if torch.is_tensor(value) and value.device.type != "cpu":
                moved.append((state, key, value.device))
                state[key] = value.to("cpu")
    if moved and torch.cuda.is_available():
        torch.cuda.empty_cache()
    try:
        yield
    finally:
        for state, key, device in moved:
            state[key] = state[key].to(device)
