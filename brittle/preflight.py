"""The baseline pre-flight check: does the base model know the forget facts at all?

Unlearning and the relearning attack only mean something for a base model that knows what is to be
removed. The check compares base's forget accuracy with a threshold (`BASELINE_MIN_FORGET_ACC`; 0
disables it). The accuracy comes from Step 0 when that has run on this very model
(`brittle.evaluation.step0_accuracy` checks its recorded identity: a Step 0 of another model with the same
folder name is not used), otherwise the caller measures it (experiment/relearn_attack.py
--check-baseline-only).
"""

from __future__ import annotations

from brittle.cli import UserError


def check_forget_baseline(base: str, accuracy: float, minimum: float, source: str) -> None:
    """A `UserError` when `accuracy` (measured on `source`) is below `minimum`; a line saying it passed otherwise."""
    if minimum > 0 and accuracy < minimum:
        raise UserError(f"pre-flight check failed: the base model {base} answers only {accuracy:.3f} of the forget "
                        f"questions ({source}; needs >= {minimum}); it does not know what unlearning should remove. "
                        "Use a model that knows the facts, or set BASELINE_MIN_FORGET_ACC=0 to skip the check")
    print(f"pre-flight: base {base} forget accuracy {accuracy:.3f} on {source} (threshold {minimum})")
