"""One training run on several processes: Hugging Face Accelerate driving PyTorch FSDP2.

    NUM_PROCESSES=8 ./unlearn/run_unlearn.sh cb_lat                  # 8 GPUs, everything sharded
    ACCELERATE_CONFIG=unlearn/accelerate/fsdp2_1gpu_offload.yaml ./unlearn/run_unlearn.sh cb_lat   # 1 GPU
    NUM_PROCESSES=2 PRESET=toy ./unlearn/run_unlearn.sh ga            # no GPU: 2 CPU processes (gloo)

A training script calls `relaunch_if_requested()` once it knows there is work to do (after its skip
check): with NUM_PROCESSES > 1 or an ACCELERATE_CONFIG it replaces itself by `accelerate launch` of the
same command in the same Python environment. Each launched process then builds an `Engine` with
`start_engine()`; without a launch the engine is a no-op and the single-process path is unchanged.

What the engine does to a training loop (brittle/trainer.py, experiment/relearn_attack.py):
- `prepare` shards the model with FSDP2 (one unit per decoder layer): each process keeps 1/N of the
  fp32 weights, gradients and Adam states, and all-gathers a layer's weights just for its forward and
  backward pass. Forward hooks (target-layer activations, LAT's adversary) see ordinary full tensors.
- Same results as one process. An optimizer step averages the gradients of `accumulation`
  micro-batches. When `accumulation` is a multiple of N, process r computes micro-batches r, r + N, ...
  and multiplies its loss by N: FSDP's reduce-scatter *averages* over processes, so the sum is the
  one-process gradient. Otherwise every process computes every micro-batch: the gradient is again
  the one-process gradient, and the memory is still sharded, but the compute is not split.
- `shard_like` cuts full tensors that belong to the parameters (wt_dist_reg's θ_pre) into the same shards,
  so that a loss over the weights is computed shard by shard (brittle.methods.squared_distance_from).
- `gathered_model` collects the full weights on process 0, one tensor at a time, and rebuilds an
  ordinary (unsharded) model there; the other processes stop, so saving, evaluation and the
  completion marker happen once.
- Printing, progress bars and errors come from process 0 only (the others' output goes to /dev/null;
  a failure of theirs also fails process 0, in a collective).

Accelerate turns FSDP on only for accelerators; on a CPU-only machine `start_engine` switches it on
itself (FSDP2 supports the CPU with the gloo backend), so tests run the very code path of the GPUs.
"""

from __future__ import annotations

import functools
import os
import shutil
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ACCELERATE_CONFIGS = Path(__file__).resolve().parent.parent / "unlearn" / "accelerate"
GPU_CONFIG = ACCELERATE_CONFIGS / "fsdp2_gpus.yaml"  # N GPUs, fully sharded
ONE_GPU_CONFIG = ACCELERATE_CONFIGS / "fsdp2_1gpu_offload.yaml"  # 1 GPU, weights and Adam states on the CPU
CPU_CONFIG = ACCELERATE_CONFIGS / "cpu_gloo.yaml"  # no GPU: processes on the CPU (tests, rehearsal)


# ---------------------------------------------------------------------------------------------------
# Launching: the script re-executes itself under `accelerate launch`
# ---------------------------------------------------------------------------------------------------


def requested_processes() -> int:
    """NUM_PROCESSES from the environment (default 1); a bad value is a one-line error."""
    from brittle.cli import UserError

    text = os.environ.get("NUM_PROCESSES", "") or "1"
    if not text.isdigit() or int(text) < 1:
        raise UserError(f"NUM_PROCESSES must be a whole number >= 1, got {text!r}")
    return int(text)


def launched() -> bool:
    """True inside a process started by `accelerate launch` (torchrun sets LOCAL_RANK)."""
    return "LOCAL_RANK" in os.environ and "ACCELERATE_USE_FSDP" in os.environ


def gpus_visible() -> bool:
    """Whether this machine shows a GPU, without importing torch (that costs seconds before a relaunch)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1"):
        return False
    return shutil.which("nvidia-smi") is not None


def default_config(processes: int) -> Path:
    """The configuration to use when ACCELERATE_CONFIG is not set."""
    if not gpus_visible():
        return CPU_CONFIG
    return ONE_GPU_CONFIG if processes == 1 else GPU_CONFIG


def free_port() -> int:
    """A TCP port nobody listens on now: the rendezvous port, so that several jobs share one machine."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def sharding_requested() -> bool:
    return requested_processes() > 1 or bool(os.environ.get("ACCELERATE_CONFIG"))


def relaunch_if_requested() -> None:
    """Replace this process by `accelerate launch` of the same script when NUM_PROCESSES > 1 or
    ACCELERATE_CONFIG is set; return (and change nothing) otherwise or when already launched."""
    from brittle.cli import UserError

    if launched() or not sharding_requested():
        return
    processes, config = requested_processes(), os.environ.get("ACCELERATE_CONFIG", "")
    config_path = Path(config) if config else default_config(processes)
    if not config_path.is_file():
        raise UserError(f"ACCELERATE_CONFIG={config} is not a file; pick one of {ACCELERATE_CONFIGS}/*.yaml")
    command = [sys.executable, "-m", "brittle.distributed", "--config_file", str(config_path),
               "--num_processes", str(processes), "--num_machines", "1",
               "--main_process_port", str(free_port()), *sys.argv]
    print(f"launching {processes} process(es) with {config_path.name}", flush=True)
    sys.stderr.flush()
    os.execv(sys.executable, command)  # same pid: Ctrl-C and SIGTERM reach the launcher, which stops every process


def launch(arguments: list[str]) -> None:
    """`accelerate launch ARGUMENTS`, ending like a one-process run: the processes' exit code, and process
    0's own last line (e.g. a one-line `error: ...`) last, without the launcher's report and traceback."""
    import logging

    from accelerate.commands.launch import launch_command, launch_command_parser
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    for name in ["torch.distributed.elastic", *logging.root.manager.loggerDict]:  # the launcher's own reports
        if name.startswith("torch.distributed.elastic"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        launch_command(launch_command_parser().parse_args(arguments))
    except ChildFailedError as failure:
        exitcode = failure.get_first_failure()[1].exitcode
        sys.exit(exitcode if exitcode > 0 else 128 - exitcode)  # killed by signal s: 128 + s, as a shell says


# ---------------------------------------------------------------------------------------------------
# Inside a launched process
# ---------------------------------------------------------------------------------------------------


@dataclass
class Engine:
    """The training loop's view of the sharding engine; `Engine()` is one plain process."""

    accelerator: Any = None  # accelerate.Accelerator when launched, else None

    @property
    def sharded(self) -> bool:
        return self.accelerator is not None

    @property
    def processes(self) -> int:
        return self.accelerator.num_processes if self.sharded else 1

    @property
    def is_main(self) -> bool:
        return not self.sharded or self.accelerator.is_main_process

    @property
    def device(self):
        return self.accelerator.device if self.sharded else None

    def device_for(self, requested: str) -> str:
        """Where to load a model: this process's own device when sharded, else `requested` (--device)."""
        if not self.sharded:
            return requested
        return "cpu" if self.device.type == "cpu" else str(self.device)  # cuda:<local rank>

    def prepare(self, model, optimizer):
        """Shard `model` and point `optimizer` at the shards (no-op for one plain process).

        A learning-rate schedule built on `optimizer` keeps working: FSDP2 swaps the parameters inside
        the optimizer's parameter groups in place.
        """
        if not self.sharded:
            return model, optimizer
        fsdp_on_cpu(self.accelerator)  # again: Accelerate's state can fall back to MULTI_CPU between two models
        return self.accelerator.prepare(model, optimizer)

    def shard_like(self, model, tensors: dict[str, Any]) -> dict[str, Any]:
        """Full tensors keyed by parameter name (wt_dist_reg's θ_pre) cut into this process's shards exactly as
        `model`'s prepared parameters of those names are (same mesh, same placements, same device: the CPU
        under the offload configuration). Each process already holds the full tensors, so no data moves
        between processes; every full copy is dropped as soon as its shard is cut. No-op for one plain process.
        """
        if not self.sharded:
            return tensors
        from torch.distributed.tensor import DTensor, distribute_tensor

        parameters = dict(model.named_parameters())
        shards = {}
        for name in list(tensors):
            full, parameter = tensors.pop(name), parameters[name]
            if not isinstance(parameter, DTensor):
                shards[name] = full
                continue
            shard = distribute_tensor(full, parameter.device_mesh, parameter.placements, src_data_rank=None)
            device = parameter.to_local().device
            shards[name] = DTensor.from_local(shard.to_local().to(device), parameter.device_mesh,
                                              parameter.placements, run_check=False, shape=parameter.shape,
                                              stride=parameter.stride())
            del full, shard
        return shards

    # -- splitting an optimizer step's micro-batches -----------------------------------------------
    def splits(self, accumulation: int) -> bool:
        """True when each process computes only its own share of the step's micro-batches."""
        return self.processes > 1 and accumulation % self.processes == 0

    def owns(self, micro_batch: int, accumulation: int) -> bool:
        """Whether this process computes micro-batch `micro_batch` (0-based) of an optimizer step."""
        return not self.splits(accumulation) or micro_batch % self.processes == self.accelerator.process_index

    def loss_scale(self, accumulation: int) -> int:
        """N when the micro-batches are split (FSDP averages the N partial gradients), else 1."""
        return self.processes if self.splits(accumulation) else 1

    def step_total(self, values, accumulation: int):
        """The step's logged sums (loss, loss terms) over all processes when the micro-batches are split."""
        if not self.splits(accumulation):
            return values
        return self.accelerator.reduce(values, reduction="sum")

    # -- the step ---------------------------------------------------------------------------------
    def backward(self, loss) -> None:
        if self.sharded:
            self.accelerator.backward(loss)
        else:
            loss.backward()

    def clip_grad_norm_(self, parameters: list, max_norm: float):
        """Clip the global gradient norm (over all shards) to `max_norm`; returns the norm before clipping."""
        import torch

        if self.sharded:
            return self.accelerator.clip_grad_norm_(parameters, max_norm)
        return torch.nn.utils.clip_grad_norm_(parameters, max_norm)

    # -- after training ---------------------------------------------------------------------------
    def gathered_model(self, model, build: Callable[[], Any]):
        """The trained weights as an ordinary model on process 0's CPU; None on every other process.

        `build()` must construct the same (unsharded) architecture; it runs on the meta device, so it
        costs no memory before the gathered weights are assigned. Tensors outside the state dict
        (non-persistent buffers such as rotary frequencies) are copied from the sharded model.
        """
        import torch

        if not self.sharded:
            return model
        state = {}  # one full tensor at a time: every process takes part in each gather, process 0 keeps it
        for name, value in model.state_dict().items():
            full = value.full_tensor() if hasattr(value, "full_tensor") else value  # DTensor shard -> whole tensor
            if self.is_main:
                state[name] = full.detach().to("cpu", copy=True)
            del full
        sources = {name: module for name, module in model.named_modules()}
        self.accelerator.free_memory()  # drop Accelerate's references to the sharded model and optimizer
        if not self.is_main:
            return None
        with torch.device("meta"):
            plain = build()
        plain.load_state_dict(state, assign=True)
        for name, module in plain.named_modules():
            for attribute, value in list(vars(module).items()) + list(module._buffers.items()):
                if isinstance(value, torch.Tensor) and value.is_meta:
                    replacement = getattr(sources[name], attribute).detach().to("cpu", copy=True)
                    if attribute in module._buffers:
                        module._buffers[attribute] = replacement
                    else:
                        setattr(module, attribute, replacement)
        return plain.eval()

    def release(self) -> None:
        """Forget the prepared models and optimizers (before training a fresh copy of a model)."""
        if self.sharded:
            self.accelerator.free_memory()

    def finish(self) -> None:
        """End the process group cleanly (process 0 may then keep working alone)."""
        if self.sharded:
            import torch.distributed

            if torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()


def fsdp_on_cpu(accelerator) -> None:
    """Accelerate enables FSDP only on accelerators; FSDP2 itself runs on the CPU with gloo, so switch it on."""
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    if accelerator.distributed_type == DistributedType.MULTI_CPU:
        state = accelerator.state
        state.fsdp_plugin = getattr(state, "fsdp_plugin", None) or FullyShardedDataParallelPlugin()
        state.distributed_type = DistributedType.FSDP


@functools.cache
def start_engine() -> Engine:
    """The engine of this process (one per process): sharded when started by `accelerate launch`, else plain."""
    if not launched():
        return Engine()
    import torch
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    fsdp_on_cpu(accelerator)
    if not accelerator.is_fsdp2:
        from brittle.cli import UserError

        raise UserError("the accelerate configuration must select FSDP2 (distributed_type: FSDP, fsdp_version: 2); "
                        f"use one of {ACCELERATE_CONFIGS}/*.yaml")
    if not accelerator.is_main_process:
        sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - process 0 speaks for all
        os.environ["TQDM_DISABLE"] = "1"  # every progress bar, transformers' included
    return Engine(accelerator)


if __name__ == "__main__":  # the launcher that relaunch_if_requested starts
    launch(sys.argv[1:])
