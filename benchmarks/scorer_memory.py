# /// script
# requires-python = ">=3.10"
# dependencies = ["brittle"]
#
# [tool.uv.sources]
# brittle = { path = "..", editable = true }
# ///
"""Benchmark: peak memory of multiple-choice scoring, the former scorer against brittle.multiple_choice.

Four-option questions whose question text is --length tokens long, scored by a random-init GPT-NeoX of
Pythia-410M's shape (in --dtype) on the CPU, each scorer in a fresh process; the peak is the resident
high-water mark during scoring (/proc/self/status VmHWM, reset after the model is built) minus the
resident memory before scoring.

    former   every (question, option) pair its own row: the question re-run once per option, the
             model's default key/value cache, fp32 log-softmax over the vocabulary at every position;
             --batch-size × 4 rows per forward pass (its default was 64 pairs)
    current  brittle.multiple_choice: one row per question with its options packed behind it, no
             cache, the output head only at the positions that predict an option token; --batch-size
             questions per forward pass

Both process the same questions in the same number of forward passes, so the peak of one pass is the
peak of the run: `--questions 64 --batch-size 16` is the full case; fewer questions give the same peak
in less time (the former scorer needs minutes per pass on a CPU).

    uv run benchmarks/scorer_memory.py                                  # 64 questions of 1,024 tokens
    uv run benchmarks/scorer_memory.py --questions 2 --batch-size 2     # one pass of 2 questions
"""

from __future__ import annotations

import argparse
import json
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
    """The scorer as it was: one row per pair, full logits, fp32 log-softmax everywhere, default cache."""
    import torch

    from brittle.multiple_choice import encode_questions

    pairs = encode_questions(tokenizer, questions)
    scores = [[0.0] * OPTIONS for _ in questions]
    for start in range(0, len(pairs), batch_size * OPTIONS):
        chunk = pairs[start: start + batch_size * OPTIONS]
        length = max(len(pair.context) + len(pair.continuation) for pair in chunk)
        input_ids = torch.zeros((len(chunk), length), dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        for row, pair in enumerate(chunk):
            sequence = pair.context + pair.continuation
            input_ids[row, : len(sequence)] = torch.tensor(sequence)
            attention_mask[row, : len(sequence)] = 1
        log_probs = torch.log_softmax(model(input_ids=input_ids, attention_mask=attention_mask).logits.float(), -1)
        for row, pair in enumerate(chunk):
            positions = torch.arange(len(pair.context) - 1, len(pair.context) - 1 + len(pair.continuation))
            value = log_probs[row, positions, torch.tensor(pair.continuation)].sum().item()
            scores[pair.question_index][pair.choice_index] = value
    return scores


def measure(scorer: str, args: argparse.Namespace) -> dict:
    """Score the questions with one scorer in this process; peak bytes above the loaded model."""
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from brittle.multiple_choice import choice_log_likelihoods
    from brittle.runtime import DTYPES

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM._from_config(GPTNeoXConfig(**PYTHIA_410M), dtype=DTYPES[args.dtype]).eval()
    questions, tokenizer = random_questions(args.questions, args.length), NumberTokenizer()
    baseline = resident_bytes("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    start = time.perf_counter()
    with torch.no_grad():
        scores = (former_scores(model, tokenizer, questions, args.batch_size) if scorer == "former"
                  else choice_log_likelihoods(model, tokenizer, questions, args.batch_size))
    return {"scorer": scorer, "peak": resident_bytes("VmHWM") - baseline, "seconds": round(time.perf_counter() - start),
            "scores": scores}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=64)
    parser.add_argument("--length", type=int, default=1024, help="tokens per question (default 1024)")
    parser.add_argument("--batch-size", type=int, default=16, help="questions per forward pass (default 16)")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="model dtype (default fp32)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's choice)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.worker, args)))
        return
    results = {}
    for scorer in ("former", "current"):
        result = subprocess.run([sys.executable, __file__, "--worker", scorer, *sys.argv[1:]], capture_output=True,
                                text=True)
        if result.returncode != 0:
            sys.exit(f"error: the {scorer} scorer failed:\n{result.stderr[-3000:]}")
        results[scorer] = json.loads(result.stdout.strip().splitlines()[-1])
        print(f"{scorer}: peak {results[scorer]['peak'] / 2**30:.2f} GiB above the model, "
              f"{results[scorer]['seconds']} s", flush=True)
    former, current = (results[name]["scores"] for name in ("former", "current"))
    difference = max(abs(a - b) for row_a, row_b in zip(former, current, strict=True)
                     for a, b in zip(row_a, row_b, strict=True))
    print(f"\n{args.questions} four-option questions of {args.length} tokens, {args.batch_size} questions per pass, "
          f"Pythia-410M shape in {args.dtype}, CPU:\n")
    print("| scorer | peak memory above the model | seconds |")
    print("|---|---|---|")
    for name, result in results.items():
        print(f"| {name} | {result['peak'] / 2**30:.2f} GiB | {result['seconds']} |")
    print(f"\nlargest difference between the two scorers' log-likelihoods: {difference:.2e}")


if __name__ == "__main__":
    main()
