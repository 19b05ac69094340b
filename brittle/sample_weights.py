"""Per-text weights of the forget and retain sets (RapidUn): where they live and how they are read.

A weights file is JSONL with one object per text of its data file, in the same order:
`{"index": 0, "weight": 1.37}` (the data file's blank lines are not texts and get no weight). It is
written by `unlearn/influence_weights.py` and read by `unlearn/unlearn.py --forget-weights/--retain-weights`.

By default the weights of a model and a pair of data files live beside the forget data:

    <forget data folder>/influence_weights/<model slug>/forget_weights.jsonl, retain_weights.jsonl

Torch-free on purpose: unlearn.py names (and skips) runs without importing torch.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from brittle.cli import UserError
from brittle.identity import content_fingerprint
from brittle.outputs import model_slug
from brittle.texts import read_texts

FORGET_WEIGHTS_FILE = "forget_weights.jsonl"
RETAIN_WEIGHTS_FILE = "retain_weights.jsonl"


def default_weights_dir(model: str, forget_data: str | Path) -> Path:
    """Where influence_weights.py writes, and rapidun looks for, the weights of `model` on this data."""
    return Path(forget_data).parent / "influence_weights" / model_slug(model)


def read_sample_weights(path: str | Path, data_path: str | Path, what: str) -> list[float]:
    """The weights in `path`, one per text of `data_path`, checked: a `UserError` for a missing file, a
    line that is not a weight, a negative or non-finite weight, or a count that differs from the data."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} weights {path} do not exist; compute them with `uv run unlearn/influence_weights.py` "
                        "(./unlearn/run_unlearn.sh rapidun does it for you)")
    weights = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            value = record["weight"] if isinstance(record, dict) else record
            # JSON true/false and "1.5" would pass float(); a weight must be a JSON number.
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"not a number: {value!r}")
            weight = float(value)
        except (ValueError, KeyError, TypeError):
            raise UserError(f"{what} weights {path} line {number} is not a weight: expected "
                            f'{{"weight": <number>}}, got {line[:60]!r}') from None
        if not math.isfinite(weight) or weight < 0:
            raise UserError(f"{what} weights {path} line {number}: weight {weight} is "
                            f"{'negative' if weight < 0 else 'not finite'}; weights must be finite and >= 0")
        weights.append(weight)
    texts = read_texts(data_path, what=f"{what} data")
    if len(weights) != len(texts):
        raise UserError(f"{what} weights {path} hold {len(weights)} weight(s) but {what} data {data_path} has "
                        f"{len(texts)} text(s); they must match line for line - recompute the weights for this data")
    return weights


def weights_fingerprint(*paths: str | Path) -> str:
    """Six hex digits of the files' contents: runs with different weights get different folder names."""
    return content_fingerprint(*paths)
