"""Reading the forget/retain text files (one text per line) and checking they do not leak.

Both worlds use the same format: `data/forget.txt` and `data/retain.txt` for real runs,
`data/toy/forget.txt` and `data/toy/retain.txt` for the organism.
"""

from __future__ import annotations

from pathlib import Path

from brittle.cli import UserError

# Texts per split that the activation steps read when `--max-samples` (the pipeline's MAX_SAMPLES) is not given.
DEFAULT_MAX_SAMPLES = 500


def read_texts(path: str | Path, max_samples: int | None = None, what: str = "text file") -> list[str]:
    """The non-blank lines of `path` (stripped), at most `max_samples` of them, in file order.

    A missing or empty file is a `UserError` naming the file and how to create it.
    """
    path = Path(path)
    if max_samples is not None and max_samples < 1:
        raise UserError(f"--max-samples must be at least 1, got {max_samples}")
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist; create it with `uv run create_datasets.py` "
                        "(add `--preset toy` for the toy organism)")
    texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not texts:
        raise UserError(f"{what} {path} is empty; it needs one text per line")
    return texts[:max_samples] if max_samples is not None else texts


def check_disjoint(forget_texts: list[str], retain_texts: list[str]) -> None:
    """Refuse forget and retain sets that share a line (data leakage; the model-diffs analysis tools' rule)."""
    overlap = set(forget_texts) & set(retain_texts)
    if overlap:
        example = min(overlap)
        raise UserError(f"forget and retain data share {len(overlap)} line(s), e.g. {example[:80]!r}; "
                        "the two sets must be disjoint - remove the shared lines from one of them")
