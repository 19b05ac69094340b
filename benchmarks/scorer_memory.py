# /// script
# requires-python = ">=3.10"
# dependencies = ["brittle"]
#
# [tool.uv.sources]
# brittle = { path = "..", editable = true }
# ///
"""Benchmark: peak memory of multiple-choice scoring, the former scorer against brittle.multiple_choice.

Four-option questions whose question text is --length tokens long, scored by a random-init GPT-NeoX of
Pythia-410M's shape (24 layers, width 1024; in --dtype, bf16 as the real checkpoints) on the CPU, each
scorer in a fresh process. Peak = the process's resident high-water mark (/proc/self/status VmHWM,
exact: the kernel keeps it; reset with /proc/self/clear_refs once the model is built) minus the
resident memory at that moment, i.e. what scoring adds to the loaded model. It is read after every
forward pass, so the output shows the peak after 1, 2, ... passes: flat for a scorer whose passes
free what they allocate, which makes the peak of a few passes the peak of 64 questions.

    former   brittle/multiple_choice.py before 4e4e468 (reconstructed below, line for line): every
             (question, option) pair its own right-padded row, so the question runs once per option;
             the model's forward with its default `use_cache=True` (a key/value cache of every layer);
             `log_softmax(logits.float())` over the whole vocabulary at every position; `batch_size`
             pairs per pass (its default was 64 pairs, i.e. 16 questions)
    current  brittle.multiple_choice.choice_log_likelihoods: one row per question with its options
             packed behind it, no cache, the output head only at the positions that predict an option
             token; `--batch-size` questions per pass (its default is 16)

    uv run benchmarks/scorer_memory.py --scorer current --questions 64 --batch-size 16   # the full case
    uv run benchmarks/scorer_memory.py --scorer former --questions 4 --batch-size 1      # 4 passes of 4 rows

With glibc's default the resident peak also holds freed blocks the allocator keeps, which can creep up
over the first passes; `MALLOC_MMAP_THRESHOLD_=131072` in the environment returns every block of 128 KiB
or more on freeing, so the peak is the tensors' (see benchmarks/training_memory.py).

Both scorers get the same questions; `--batch-size` is questions per pass for both (× 4 rows for the
former). The measurements go to --output (one entry per scorer and setting) and --report prints them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

PYTHIA_410M = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096,
               "vocab_size": 50304, "max_position_embeddings": 2048, "tie_word_embeddings": False}
OPTIONS = 4


def resident_bytes(field: str) -> int:
    """VmRSS or VmHWM of this process, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


class NumberTokenizer:
    """Texts of space-separated token ids (random questions need no real vocabulary)."""

    pad_token_id = 0
    bos_token_id = eos_token_id = 0

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        return {"input_ids": [int(word) for word in text.split()]}


def random_questions(count: int, length: int) -> list[dict]:
    """`count` questions of `length` random tokens, each with four options of 1 to 4 tokens."""
    import random

    rng = random.Random(0)
    words = lambda size: " ".join(str(rng.randrange(1, PYTHIA_410M["vocab_size"])) for _ in range(size))  # noqa: E731
    return [{"question": words(length), "choices": [words(rng.randint(1, 4)) for _ in range(OPTIONS)], "answer": 0}
            for _ in range(count)]


def former_scores(model, tokenizer, questions: list[dict], batch_size: int) -> list[list[float]]:
    """The scorer before commit 4e4e468 (`git show 4e4e468^:brittle/multiple_choice.py`): `pad_pairs`,
    `model_logits` and `continuation_log_likelihoods` of that file, with `batch_size` pairs per pass."""
    import torch

    from brittle.multiple_choice import encode_questions

    def pad_pairs(pairs, pad_token_id):
        sequences = [pair.context + pair.continuation for pair in pairs]
        length = max(len(sequence) for sequence in sequences)
        input_ids = torch.full((len(pairs), length), pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(pairs), length), dtype=torch.long)
        for row, sequence in enumerate(sequences):
            input_ids[row, : len(sequence)] = torch.tensor(sequence)
            attention_mask[row, : len(sequence)] = 1
        return input_ids, attention_mask

    def continuation_log_likelihoods(logits, pairs):
        log_probs = torch.log_softmax(logits.float(), dim=-1)  # every position, the whole vocabulary
        scores = []
        for row, pair in enumerate(pairs):
            start = len(pair.context)
            targets = torch.tensor(pair.continuation, device=logits.device)
            positions = torch.arange(start - 1, start - 1 + len(pair.continuation), device=logits.device)
            scores.append(log_probs[row, positions, targets].sum())
        return torch.stack(scores)

    pairs = encode_questions(tokenizer, questions)
    scores = [[0.0] * len(question["choices"]) for question in questions]
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start: start + batch_size]
        input_ids, attention_mask = pad_pairs(chunk, tokenizer.pad_token_id)
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits  # use_cache: the config's (True)
        for pair, score in zip(chunk, continuation_log_likelihoods(logits, chunk).tolist(), strict=True):
            scores[pair.question_index][pair.choice_index] = score
    return scores


def measure(scorer: str, args: argparse.Namespace) -> dict:
    """Score the questions with one scorer in this process, pass by pass; the peak above the loaded model
    after each pass, in bytes."""
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from brittle.multiple_choice import choice_log_likelihoods
    from brittle.runtime import DTYPES

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM._from_config(GPTNeoXConfig(**PYTHIA_410M), dtype=DTYPES[args.dtype]).eval()
    assert model.config.use_cache, "the former scorer ran with the model's default use_cache=True"
    questions, tokenizer = random_questions(args.questions, args.length), NumberTokenizer()
    baseline = resident_bytes("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    scores, peaks, start = [], [], time.perf_counter()
    with torch.no_grad():
        for first in range(0, len(questions), args.batch_size):
            chunk = questions[first: first + args.batch_size]
            scores += (former_scores(model, tokenizer, chunk, args.batch_size * OPTIONS) if scorer == "former"
                       else choice_log_likelihoods(model, tokenizer, chunk, args.batch_size))
            peaks.append(resident_bytes("VmHWM") - baseline)
            print(f"{scorer}: {len(scores)} questions, peak {peaks[-1] / 2**30:.3f} GiB, "
                  f"{time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return {"scorer": scorer, "questions": args.questions, "batch_size": args.batch_size, "length": args.length,
            "dtype": args.dtype, "peak": max(peaks), "peak_after_each_pass": peaks,
            "seconds": round(time.perf_counter() - start), "scores": scores, "commit": commit(),
            "load_average": os.getloadavg()}


def commit() -> str:
    """The checked-out commit (with "+changes" when the work tree differs from it)."""
    def git(*arguments: str) -> str:
        return subprocess.run(["git", *arguments], cwd=Path(__file__).resolve().parents[1], capture_output=True,
                              text=True).stdout.strip()
    return git("rev-parse", "--short", "HEAD") + ("+changes" if git("status", "--porcelain", "--untracked-files=no")
                                                  else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scorer", default="former,current", help="former, current or both (comma-separated)")
    parser.add_argument("--questions", type=int, default=64)
    parser.add_argument("--length", type=int, default=1024, help="tokens per question (default 1024)")
    parser.add_argument("--batch-size", type=int, default=16, help="questions per forward pass (default 16)")
    parser.add_argument("--dtype", default="bf16", choices=["fp32", "bf16"], help="model dtype (default bf16)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1; the peak does not "
                                                               "depend on it)")
    parser.add_argument("--output", default="outputs/benchmarks/scorer_memory.json")
    parser.add_argument("--report", action="store_true", help="measure nothing: print what --output holds")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.worker, args)))
        return
    output = Path(args.output)
    runs = json.loads(output.read_text())["runs"] if output.is_file() else {}
    for scorer in [] if args.report else args.scorer.split(","):
        result = subprocess.run([sys.executable, __file__, "--worker", scorer, *sys.argv[1:]], stdout=subprocess.PIPE,
                                text=True)
        if result.returncode != 0:
            sys.exit(f"error: the {scorer} scorer failed (its messages are above)")
        run = json.loads(result.stdout.strip().splitlines()[-1])
        runs[f"{scorer} q{args.questions} b{args.batch_size} l{args.length} {args.dtype}"] = run
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps({"runs": runs}, indent=2))
    print("\nFour-option questions, Pythia-410M shape, CPU; peak = resident high-water mark above the loaded model:\n")
    print("| scorer | questions × tokens | questions per pass | rows per pass | peak after each pass (GiB) | peak | "
          "seconds | commit | load |")
    print("|---|---|---|---|---|---|---|---|---|")
    for run in runs.values():
        rows = run["batch_size"] * (OPTIONS if run["scorer"] == "former" else 1)
        trace = ", ".join(f"{peak / 2**30:.2f}" for peak in run["peak_after_each_pass"])
        print(f"| {run['scorer']} ({run['dtype']}) | {run['questions']} × {run['length']} | {run['batch_size']} | "
              f"{rows} | {trace} | {run['peak'] / 2**30:.2f} GiB | {run['seconds']} | {run['commit']} | "
              f"{run['load_average'][0]:.1f} |")
    former = [run for run in runs.values() if run["scorer"] == "former"]
    current = [run for run in runs.values() if run["scorer"] == "current"]
    if former and current:  # the same random questions (seed 0): compare the scores both gave
        pairs = [(a, b) for run_a in former for run_b in current
                 if (run_a["length"], run_a["dtype"]) == (run_b["length"], run_b["dtype"])
                 for row_a, row_b in zip(run_a["scores"], run_b["scores"], strict=False)
                 for a, b in zip(row_a, row_b, strict=True)]
        if pairs:
            print(f"\nlargest difference between the two scorers' log-likelihoods: "
                  f"{max(abs(a - b) for a, b in pairs):.2e} over {len(pairs)} options")


if __name__ == "__main__":
    main()
