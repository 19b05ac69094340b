"""Where results go, how they are written, and when a step may skip itself.

Layout (the deep-ignorance study's "Output Structure"):

    <output_root>/<model>/<step>/                  per-model steps (0, 5, 6)
    <output_root>/<model_a>__to__<model_b>/<step>/  pairwise steps (1-4, 7-12)

Every step writes its files into a hidden staging folder beside the final one and renames it into
place only when everything succeeded (`staged_directory`). A killed run therefore never leaves a
folder that makes the next run skip, and "the step's folder exists" is exactly "the step finished".
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

DEFAULT_OUTPUT_ROOT = Path("outputs")


def _process_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# tempfile creates private (0600/0700) files and folders; published results get the usual modes.
FILE_MODE = 0o666 & ~_process_umask()
FOLDER_MODE = 0o777 & ~_process_umask()


def model_slug(model: str) -> str:
    """A folder-safe name for a model: a local folder's own name, or a hub id with '/' -> '_'.

    `models/toy-base-s42` -> `toy-base-s42`; `EleutherAI/deep-ignorance-unfiltered` ->
    `EleutherAI_deep-ignorance-unfiltered` (the deep-ignorance study's naming for unlearned models).
    """
    path = Path(model).expanduser()
    if path.exists():
        return path.resolve().name
    return model.strip("/").replace("/", "_")


def comparison_name(model_a: str, model_b: str) -> str:
    """`<model_a>__to__<model_b>`: the folder of one pairwise comparison."""
    return f"{model_slug(model_a)}__to__{model_slug(model_b)}"


def comparison_title(model_a: str, model_b: str) -> str:
    """`<model_a> → <model_b>`: a pairwise comparison as plot titles name it."""
    return f"{model_slug(model_a)} → {model_slug(model_b)}"


def model_step_dir(model: str, step: str, output_root: str | Path = DEFAULT_OUTPUT_ROOT) -> Path:
    """Folder of a per-model step, e.g. `outputs/<model>/evals`."""
    return Path(output_root) / model_slug(model) / step


def comparison_step_dir(model_a: str, model_b: str, step: str,
                        output_root: str | Path = DEFAULT_OUTPUT_ROOT) -> Path:
    """Folder of a pairwise step, e.g. `outputs/<a>__to__<b>/weight_comparison`."""
    return Path(output_root) / comparison_name(model_a, model_b) / step


def skip_if_complete(final_dir: str | Path, force: bool = False, what: str | None = None) -> bool:
    """True (after printing one line) when `final_dir` exists and `force` is off."""
    final_dir = Path(final_dir)
    if final_dir.exists() and not force:
        print(f"skipped: {what or final_dir.name} already done ({final_dir}); pass --force to redo it")
        return True
    return False


@contextmanager
def staged_directory(final_dir: str | Path) -> Iterator[Path]:
    """Yield an empty staging folder; on success it atomically replaces `final_dir`.

    On any exception the staging folder is deleted and `final_dir` is left as it was.
    """
    final_dir = Path(final_dir)
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final_dir.name}.partial-", dir=final_dir.parent))
    staging.chmod(FOLDER_MODE)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    publish_directory(staging, final_dir)


def publish_directory(staging: Path, final_dir: Path) -> None:
    """Move a finished staging folder into place, replacing an older result if there is one."""
    previous = None
    if final_dir.exists():
        previous = final_dir.with_name(f".{final_dir.name}.replaced-{os.getpid()}")
        shutil.rmtree(previous, ignore_errors=True)
        final_dir.rename(previous)
    staging.rename(final_dir)
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)


def write_text(path: str | Path, text: str) -> Path:
    """Write `text` atomically: to a temporary file in the same folder, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(temporary, FILE_MODE)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, data: Any) -> Path:
    """Write `data` as indented JSON, atomically."""
    return write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_lines(path: str | Path, lines: Iterable[str]) -> Path:
    """Write one text per line, atomically."""
    return write_text(path, "".join(f"{line}\n" for line in lines))


def write_jsonl(path: str | Path, records: Iterable[Mapping[str, Any]]) -> Path:
    """Write one JSON object per line, atomically."""
    return write_lines(path, (json.dumps(record) for record in records))


def write_csv(path: str | Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> Path:
    """Write rows of dicts as CSV with the given column order (default: the first row's keys)."""
    columns = list(columns if columns is not None else (rows[0].keys() if rows else []))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="raise", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return write_text(path, buffer.getvalue())


def read_csv(path: str | Path) -> list[dict[str, str]]:
    """Rows of a CSV file as dicts of strings."""
    with open(path, newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file, one per non-blank line."""
    with open(path, encoding="utf-8") as file:
        return [json.loads(line) for line in file if line.strip()]
