# /// script
# requires-python = ">=3.10"
# dependencies = ["brittle", "peft>=0.13"]
#
# [tool.uv.sources]
# brittle = { path = "..", editable = true }
# ///
"""Benchmark: how much does the shared unlearning loop cost over a bare training step?

    uv run unlearn/benchmark_step.py --preset toy                  # ga on the organism, CPU
    uv run unlearn/benchmark_step.py --model EleutherAI/deep-ignorance-unfiltered --batch-size 4 --steps 20

Both contenders train the same model on the *same* forget and retain micro-batch, step after step:

    bare   logits -> loss -> backward -> optimizer.step -> zero_grad     (the least any loop can do)
    loop   brittle/trainer.py's `train` with the method's registered loss: batch assembly, the loss
           function, gradient clipping, the cosine schedule, one device sync per step for the log row,
           the NaN check, tqdm

and the ratio loop / bare is reported (target: at most 1.2). Each contender runs --warmup steps first
(not timed), then --repeats timed blocks of --steps steps, alternating between the two; the median
block is reported. This is a benchmark to read, not a test: timings depend on the machine and on
what else runs on it (the load average is printed beside them).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TQDM_DISABLE", "1")  # the progress bar's cost still counts; its output need not

import torch

import unlearn
from brittle.architecture import decoder_layers
from brittle.cli import UserError, run_cli
from brittle.methods import LOSSES, MethodContext, UnlearningBatch
from brittle.models import input_device, load_model_and_tokenizer
from brittle.presets import get_preset
from brittle.texts import read_texts
from brittle.trainer import Caches, TrainingData, train
from brittle.training import collate, encode_texts

SUPPORTED = ("ga_simple", "ga", "grad_diff", "simnpo", "wt_dist")  # losses that need no cache


def bare_steps(model: torch.nn.Module, batch: UnlearningBatch, context: MethodContext, loss_name: str,
               steps: int, lr: float) -> float:
    """Seconds for `steps` plain steps of the method's loss on one fixed batch."""
    optimizer = torch.optim.AdamW([parameter for parameter in model.parameters() if parameter.requires_grad], lr=lr)
    loss_function = LOSSES[loss_name]
    synchronize(batch.forget.input_ids.device)
    start = time.perf_counter()
    for _ in range(steps):
        loss_function(context, batch).total.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    synchronize(batch.forget.input_ids.device)
    return time.perf_counter() - start


def loop_steps(context: MethodContext, loss_name: str, data: TrainingData, settings: argparse.Namespace,
               steps: int, pad_token_id: int, device: torch.device) -> float:
    """Seconds for `steps` steps of the shared loop (`trainer.train`) on the same batch."""
    settings = copy.copy(settings)
    settings.max_steps = steps
    settings.epochs = steps  # one forget batch per epoch: `steps` micro-batches in all
    return train(context, LOSSES[loss_name], loss_name, data, Caches(), settings, pad_token_id, device).seconds


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="real", choices=["real", "toy"])
    parser.add_argument("--model", default=None, help="model to train (default: the preset's base)")
    parser.add_argument("--method", default="ga", choices=SUPPORTED, help="the loss both contenders minimise")
    parser.add_argument("--batch-size", type=int, default=None, help="texts per micro-batch (default: the preset's)")
    parser.add_argument("--steps", type=int, default=30, help="steps per timed block (default 30)")
    parser.add_argument("--repeats", type=int, default=3, help="timed blocks per contender (default 3)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (default 5)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: the preset's)")
    args = parser.parse_args()
    if min(args.steps, args.repeats) < 1 or args.warmup < 0:
        raise UserError("--steps and --repeats must be at least 1 and --warmup at least 0")

    preset = get_preset(args.preset)
    settings, _ = unlearn.resolve_settings(unlearn.parse_arguments(["--method", args.method, "--preset", args.preset]),
                                           preset)
    settings.batch_size = args.batch_size or settings.batch_size
    settings.eval_interval = 0
    threads = settings.threads if args.threads is None else args.threads
    if threads:
        torch.set_num_threads(threads)
    model_name = args.model or preset.base
    model, tokenizer = load_model_and_tokenizer(model_name, args.device, args.dtype)
    device = input_device(model)
    model.train()

    def first_texts(path: str) -> list[list[int]]:
        return encode_texts(tokenizer, read_texts(path, settings.batch_size), settings.max_length)

    forget, retain = first_texts(settings.forget_data), first_texts(settings.retain_data)
    pad = tokenizer.pad_token_id
    batch = UnlearningBatch(collate(forget, pad).to(device), collate(retain, pad).to(device))
    data = TrainingData(forget, retain, [], [])  # exactly these texts: every loop step sees the same batch
    context = MethodContext(model, settings, decoder_layers(model), [])

    bare_steps(model, batch, context, args.method, args.warmup, settings.lr)
    loop_steps(context, args.method, data, settings, max(1, args.warmup), pad, device)
    bare, loop = [], []
    for _ in range(args.repeats):  # interleaved, so a change in machine load hits both alike
        bare.append(bare_steps(model, batch, context, args.method, args.steps, settings.lr) / args.steps)
        loop.append(loop_steps(context, args.method, data, settings, args.steps, pad, device) / args.steps)
    bare_median, loop_median = statistics.median(bare), statistics.median(loop)
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"model {model_name}, method {args.method}, batch {settings.batch_size} forget + {settings.batch_size} "
          f"retain texts, device {device}, {torch.get_num_threads()} thread(s), load average {load}")
    print(f"bare forward/backward/step : {1000 * bare_median:8.2f} ms/step  (blocks: "
          f"{', '.join(f'{1000 * value:.2f}' for value in bare)})")
    print(f"shared unlearning loop     : {1000 * loop_median:8.2f} ms/step  (blocks: "
          f"{', '.join(f'{1000 * value:.2f}' for value in loop)})")
    print(f"loop / bare                : {loop_median / bare_median:8.3f}x  (target <= 1.2x)")


if __name__ == "__main__":
    run_cli(main)
