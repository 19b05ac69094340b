# /// script
# requires-python = ">=3.10"
# dependencies = ["brittle"]
#
# [tool.uv.sources]
# brittle = { path = "..", editable = true }
# ///
"""Benchmark: Step 1's peak memory on a pair of ≥ 1B-parameter checkpoints (a benchmark, not a test).

Step 1 (`experiment/collect_weight_comparison.py`) streams one tensor pair at a time from the two
checkpoints' safetensors files, so its memory must not grow with the model: the target is

    peak resident memory  ≤  the two largest tensors (as the step holds them, fp32) + 600 MB

This script writes a synthetic pair of GPT-NeoX checkpoints to a temporary folder (real parameter
names, a config.json, several safetensors shards with an index, like a hub download), runs Step 1 on
them as a user would (`uv run`, CPU), and reports the step's peak RSS and wall time against that
target. The weights are structured like trained ones rather than pure noise: W = noise + a few strong
directions (so power iteration converges as it does on real weights), and model B = W + a low-rank
update + small noise on every matrix (a fine-tune-like ΔW).

    uv run benchmarks/weight_comparison_memory.py                      # 1.01B parameters, fp32 shards
    uv run benchmarks/weight_comparison_memory.py --storage-dtype bf16 --keep --workdir /tmp/bench

Disk: the two checkpoints take 2 × 4 bytes × parameters (fp32; 2 bytes for fp16/bf16), ~8 GB by default.
Memory is polled from /proc every 20 ms for the step's processes (the generator runs in this process
and is not counted): RssAnon, the memory the step allocates (tensors, heap), is what the budget
applies to; VmRSS adds the file-backed pages of shared libraries (a CUDA build of torch maps several
hundred MB of them at import, whatever the model) and is reported beside it, with the same two numbers
for the idle interpreter (`--help`: the same imports, no work) as the baseline.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors.torch import save_file

REPO_ROOT = Path(__file__).resolve().parents[1]
STEP_SCRIPT = REPO_ROOT / "experiment" / "collect_weight_comparison.py"
STORAGE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
MEMORY_ALLOWANCE_MB = 600


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden-size", type=int, default=2048)
    parser.add_argument("--intermediate-size", type=int, default=8192)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--vocab-size", type=int, default=50304)
    parser.add_argument("--storage-dtype", choices=sorted(STORAGE_DTYPES), default="fp32",
                        help="dtype of the shards on disk (Step 1 computes in fp32 whatever is stored)")
    parser.add_argument("--shard-size-gb", type=float, default=1.0, help="maximum shard size (default 1 GB)")
    parser.add_argument("--workdir", default=None, help="where to write the checkpoints (default: a temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the checkpoints and outputs afterwards")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--power-iterations", type=int, default=None,
                        help="passed to Step 1 (default: its own, 100); fewer for a memory-only measurement")
    return parser.parse_args()


# ---- the synthetic checkpoints --------------------------------------------------------------------------------

def gpt_neox_shapes(args: argparse.Namespace) -> dict[str, tuple[int, ...]]:
    """Every parameter of a GPT-NeoX causal LM (names and shapes exactly as transformers saves them)."""
    hidden, inner = args.hidden_size, args.intermediate_size
    shapes: dict[str, tuple[int, ...]] = {"gpt_neox.embed_in.weight": (args.vocab_size, hidden)}
    for layer in range(args.layers):
        prefix = f"gpt_neox.layers.{layer}."
        for norm in ("input_layernorm", "post_attention_layernorm"):
            shapes[f"{prefix}{norm}.weight"] = shapes[f"{prefix}{norm}.bias"] = (hidden,)
        for module, (rows, columns) in {"attention.query_key_value": (3 * hidden, hidden),
                                        "attention.dense": (hidden, hidden),
                                        "mlp.dense_h_to_4h": (inner, hidden),
                                        "mlp.dense_4h_to_h": (hidden, inner)}.items():
            shapes[f"{prefix}{module}.weight"] = (rows, columns)
            shapes[f"{prefix}{module}.bias"] = (rows,)
    shapes["gpt_neox.final_layer_norm.weight"] = shapes["gpt_neox.final_layer_norm.bias"] = (hidden,)
    shapes["embed_out.weight"] = (args.vocab_size, hidden)
    return shapes


def weight_pair(shape: tuple[int, ...], generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, W + ΔW): W = noise + 8 strong directions; ΔW = a rank-4 update + small noise (fp32)."""
    if len(shape) == 1:
        base = 1.0 + 0.02 * torch.randn(shape, generator=generator)
        return base, base + 1e-3 * torch.randn(shape, generator=generator)
    rows, columns = shape
    base = 0.02 * torch.randn(shape, generator=generator)
    spikes = torch.randn(rows, 8, generator=generator) @ torch.randn(8, columns, generator=generator)
    base.add_(spikes, alpha=0.02 * 4 / (rows * columns) ** 0.25)  # σ of the spikes ≈ 4× the noise edge
    del spikes
    modified = base.clone()
    modified.addmm_(torch.randn(rows, 4, generator=generator), torch.randn(4, columns, generator=generator),
                    alpha=1e-3)
    modified.add_(torch.randn(shape, generator=generator), alpha=1e-4)
    return base, modified


def shards(shapes: dict[str, tuple[int, ...]], max_bytes: int, element_size: int) -> Iterator[list[str]]:
    """Parameter names grouped into consecutive shards of at most `max_bytes` (a bigger tensor gets its own)."""
    current: list[str] = []
    size = 0
    for name, shape in shapes.items():
        tensor_bytes = element_size * int(torch.tensor(shape).prod())
        if current and size + tensor_bytes > max_bytes:
            yield current
            current, size = [], 0
        current.append(name)
        size += tensor_bytes
    if current:
        yield current


def write_checkpoints(args: argparse.Namespace, folder_a: Path, folder_b: Path) -> dict[str, tuple[int, ...]]:
    """Both checkpoints, shard by shard (this process never holds more than one shard pair)."""
    shapes = gpt_neox_shapes(args)
    dtype = STORAGE_DTYPES[args.storage_dtype]
    element_size = torch.empty((), dtype=dtype).element_size()
    groups = list(shards(shapes, int(args.shard_size_gb * 2**30), element_size))
    generator = torch.Generator().manual_seed(args.seed)
    weight_map: dict[str, str] = {}
    for folder in (folder_a, folder_b):
        folder.mkdir(parents=True)
    for index, names in enumerate(groups, start=1):
        shard_name = f"model-{index:05d}-of-{len(groups):05d}.safetensors"
        tensors_a, tensors_b = {}, {}
        for name in names:
            base, modified = weight_pair(shapes[name], generator)
            tensors_a[name], tensors_b[name] = base.to(dtype), modified.to(dtype)
            weight_map[name] = shard_name
        save_file(tensors_a, folder_a / shard_name, metadata={"format": "pt"})
        save_file(tensors_b, folder_b / shard_name, metadata={"format": "pt"})
        print(f"  wrote shard {index}/{len(groups)} ({len(names)} tensors)", flush=True)
        del tensors_a, tensors_b
    total_size = sum(element_size * int(torch.tensor(shape).prod()) for shape in shapes.values())
    config = {"model_type": "gpt_neox", "architectures": ["GPTNeoXForCausalLM"], "hidden_size": args.hidden_size,
              "intermediate_size": args.intermediate_size, "num_hidden_layers": args.layers,
              "num_attention_heads": args.heads, "vocab_size": args.vocab_size, "torch_dtype": str(dtype)[6:]}
    for folder in (folder_a, folder_b):
        (folder / "config.json").write_text(json.dumps(config, indent=2))
        (folder / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total_size}, "weight_map": weight_map}, indent=2))
    return shapes


# ---- the measurement ----------------------------------------------------------------------------------------------

def descendants(pid: int) -> list[int]:
    """The process and all its descendants (Linux /proc)."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            with contextlib.suppress(OSError):  # the process may have just ended
                queue.extend(int(child) for child in task.read_text().split())
    return found


def memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, RssAnon) of one process in MB; RssAnon leaves out file-backed pages such as shared libraries."""
    values = {"VmRSS": 0.0, "RssAnon": 0.0}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in values:
                values[key] = int(rest.split()[0]) / 1024
    except OSError:
        pass
    return values["VmRSS"], values["RssAnon"]


def run_measured(command: list[str], cwd: Path, quiet: bool = False) -> tuple[float, float, float]:
    """Run `command`; (seconds, peak VmRSS MB, peak RssAnon MB) of its largest process, polled every 20 ms.

    (Not getrusage(RUSAGE_CHILDREN): a forked child counts its parent's pages before it execs, so it
    would report this generator's own memory.)
    """
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL if quiet else None)
    peak_rss = peak_anon = 0.0
    while process.poll() is None:
        for pid in descendants(process.pid):
            rss, anon = memory_mb(pid)
            peak_rss, peak_anon = max(peak_rss, rss), max(peak_anon, anon)
        time.sleep(0.02)
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        sys.exit(f"error: {' '.join(command)} failed with exit code {process.returncode}")
    return seconds, peak_rss, peak_anon


def main() -> None:
    args = parse_arguments()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="weight-comparison-benchmark-"))
    folder_a, folder_b = workdir / "synthetic-neox-a", workdir / "synthetic-neox-b"
    try:
        shapes = gpt_neox_shapes(args)
        parameters = sum(int(torch.tensor(shape).prod()) for shape in shapes.values())
        largest = sorted((int(torch.tensor(shape).prod()) for shape in shapes.values()), reverse=True)[:2]
        print(f"Synthetic GPT-NeoX pair: {parameters / 1e9:.3f}B parameters, {args.storage_dtype} on disk, "
              f"in {workdir}")
        started = time.perf_counter()
        write_checkpoints(args, folder_a, folder_b)
        write_seconds = time.perf_counter() - started
        shard_count = len(list(folder_a.glob("*.safetensors")))

        # Baseline: the same interpreter and imports, no work.
        _, baseline_rss, baseline_anon = run_measured(
            ["uv", "run", "--quiet", str(STEP_SCRIPT), "--help"], workdir, quiet=True)
        command = ["uv", "run", "--quiet", str(STEP_SCRIPT), "--model-a", str(folder_a), "--model-b", str(folder_b),
                   "--output-root", str(workdir / "outputs"), "--device", "cpu", "--force",
                   *(["--power-iterations", str(args.power_iterations)] if args.power_iterations else [])]
        step_seconds, peak_rss, peak_anon = run_measured(command, workdir)

        two_largest_mb = 4 * sum(largest) / 2**20  # fp32, as Step 1 holds W and ΔW
        budget_mb = two_largest_mb + MEMORY_ALLOWANCE_MB
        result = {
            "parameters": parameters,
            "storage_dtype": args.storage_dtype,
            "shards_per_checkpoint": shard_count,
            "checkpoint_gb": round(sum(path.stat().st_size for path in folder_a.glob("*.safetensors")) / 2**30, 2),
            "write_seconds": round(write_seconds, 1),
            "step_1_seconds": round(step_seconds, 1),
            "baseline_rss_mb": round(baseline_rss),
            "baseline_anonymous_mb": round(baseline_anon),
            "peak_rss_mb": round(peak_rss),
            "peak_anonymous_mb": round(peak_anon),
            "two_largest_tensors_fp32_mb": round(two_largest_mb),
            "budget_mb": round(budget_mb),
            "within_budget": peak_anon <= budget_mb,
        }
        print(json.dumps(result, indent=2))
        print(f"Step 1 on {parameters / 1e9:.2f}B parameters: {step_seconds:.0f} s; peak memory {peak_anon:.0f} MB "
              f"anonymous ({peak_rss:.0f} MB RSS with shared libraries; the idle interpreter: {baseline_anon:.0f} / "
              f"{baseline_rss:.0f} MB) vs budget {budget_mb:.0f} MB = two largest tensors {two_largest_mb:.0f} MB + "
              f"{MEMORY_ALLOWANCE_MB} MB: {'OK' if result['within_budget'] else 'OVER'}")
        (workdir / "benchmark_result.json").write_text(json.dumps(result, indent=2))
        if not result["within_budget"]:
            sys.exit(1)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
