"""The baseline pre-flight check: does the base model know the forget facts at all?

Unlearning and the relearning attack only mean something for a base model that knows what is to be
removed. The check compares base's forget accuracy with a threshold (`BASELINE_MIN_FORGET_ACC`; 0
disables it). The accuracy comes from Step 0 when that has run on this very model (its recorded
identity; a Step 0 of another model with the same folder name is not used), otherwise the caller
measures it (experiment/relearn_attack.py --check-baseline-only).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from brittle.cli import UserError
from brittle.identity import Identity, read_identity
from brittle.outputs import model_step_dir


def step0_forget_accuracy(base: str, forget_task: str, output_root: str | Path) -> float | None:
    """Base's `acc` on the forget task from Step 0's summary.json, or None when Step 0 has not run on
    this model (a note says so when the folder holds another model's Step 0)."""
    folder = model_step_dir(base, "evals", output_root)
    summary = folder / "summary.json"
    if not summary.exists():
        return None
    reasons = Identity.of(models={"model": base}).differences(read_identity(folder), parts=("models",))
    if reasons:
        print(f"note: pre-flight does not use {folder}: {'; '.join(reasons)}", file=sys.stderr)
        return None
    return json.loads(summary.read_text()).get(forget_task, {}).get("acc")


def check_forget_baseline(base: str, accuracy: float, minimum: float, source: str) -> None:
    """A `UserError` when `accuracy` (measured on `source`) is below `minimum`; a line saying it passed otherwise."""
    if minimum > 0 and accuracy < minimum:
        raise UserError(f"pre-flight check failed: the base model {base} answers only {accuracy:.3f} of the forget "
                        f"questions ({source}; needs >= {minimum}); it does not know what unlearning should remove. "
                        "Use a model that knows the facts, or set BASELINE_MIN_FORGET_ACC=0 to skip the check")
    print(f"pre-flight: base {base} forget accuracy {accuracy:.3f} on {source} (threshold {minimum})")
