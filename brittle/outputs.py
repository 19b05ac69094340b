"""Where results go, how they are written, and when a step may skip itself.

Layout (the deep-ignorance study's "Output Structure"):

    <output_root>/<model>/<step>/                  per-model steps (0, 5, 6)
    <output_root>/<model_a>__to__<model_b>/<step>/  pairwise steps (1-4, 7-12)

Every step writes its files into a hidden staging folder beside the final one and renames it into
place only when everything succeeded (`staged_directory`). A killed run therefore never leaves a
folder that makes the next run skip, and "the step's folder exists" is exactly "the step finished".

A finished folder also records what made it (`identity.json`, brittle/identity.py): a step skips only
when the recorded models, data and settings match the request; otherwise it recomputes, with one
`note:` line saying what differs. Staging folders left by a killed run (their owner process is gone)
are removed by the next run of the same step.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from brittle.cli import UserError
from brittle.identity import IDENTITY_FILE, Identity, read_identity

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


def skip_if_complete(final_dir: str | Path, force: bool = False, what: str | None = None,
                     identity: Identity | None = None) -> bool:
    """True (after printing one line) when `final_dir` holds this result and `force` is off.

    With an `identity`, the folder counts as this result only when the inputs it records match; when
    they do not, one `note:` line says what differs and the step recomputes (replacing the folder).
    Whenever the step is to run, its output location is checked to be writable first, so a bad
    `--outdir` fails in one line before any model loads.
    """
    final_dir = Path(final_dir)
    what = what or final_dir.name
    if final_dir.exists() and not force:
        reasons = identity.differences(read_identity(final_dir)) if identity is not None else []
        if not reasons:
            print(f"skipped: {what} already done ({final_dir}); pass --force to redo it")
            return True
        print(f"note: not reusing {final_dir}: {'; '.join(reasons)}; computing {what} again", file=sys.stderr)
    check_writable(final_dir)
    return False


def check_writable(final_dir: str | Path) -> None:
    """A `UserError` when `final_dir` cannot be created or replaced: a file in the way, or no permission."""
    final_dir = Path(final_dir).expanduser().absolute()
    if final_dir.exists() and not final_dir.is_dir():
        raise UserError(f"output folder {final_dir} is a file, not a folder; remove it or choose another --outdir")
    ancestor = final_dir.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"cannot create output folder {final_dir}: {ancestor} is a file, not a folder; "
                        "choose another --outdir/--output-root")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserError(f"cannot write output folder {final_dir}: no write permission in {ancestor}; "
                        "choose another --outdir/--output-root or fix the permissions")


STAGING_MARKERS = ("partial", "replaced")  # `.<name>.partial-<pid>@<host>-<random>`, `.<name>.replaced-<pid>@<host>`


def _host() -> str:
    return socket.gethostname().replace("-", "_")  # no '-': it separates the owner from mkdtemp's suffix


def _owner_tag() -> str:
    return f"{os.getpid()}@{_host()}"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_staging(final_dir: str | Path) -> list[Path]:
    """Delete the staging folders of `final_dir` whose owner process (on this host) is gone; returns them.

    A staging folder whose owner cannot be told (another host, or an older naming) is reported with one
    `note:` line and left alone.
    """
    final_dir = Path(final_dir)
    if not final_dir.parent.is_dir():
        return []
    pattern = re.compile(rf"^\.{re.escape(final_dir.name)}\.(?:{'|'.join(STAGING_MARKERS)})-(?P<owner>.*)$")
    removed = []
    for candidate in sorted(final_dir.parent.iterdir()):
        match = pattern.match(candidate.name)
        if not match or not candidate.is_dir():
            continue
        owner = re.match(r"^(?P<pid>\d+)@(?P<host>[^-]+)(?:-.*)?$", match["owner"])
        if owner and owner["host"] == _host():
            if not _process_alive(int(owner["pid"])):
                shutil.rmtree(candidate, ignore_errors=True)
                print(f"note: removed {candidate}, left by a run that was killed (process {owner['pid']} is gone)",
                      file=sys.stderr)
                removed.append(candidate)
        else:
            print(f"note: {candidate} was left by a run on another host or an older version; remove it if no run "
                  "is writing there", file=sys.stderr)
    return removed


@contextmanager
def staged_directory(final_dir: str | Path, identity: Identity | None = None) -> Iterator[Path]:
    """Yield an empty staging folder; on success it atomically replaces `final_dir`.

    With an `identity`, its record is written into the folder as `identity.json` before publishing.
    On any exception the staging folder is deleted and `final_dir` is left as it was. Staging folders
    of killed earlier runs are removed first.
    """
    final_dir = Path(final_dir)
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(final_dir)
    staging = Path(tempfile.mkdtemp(prefix=f".{final_dir.name}.partial-{_owner_tag()}-", dir=final_dir.parent))
    staging.chmod(FOLDER_MODE)
    try:
        yield staging
        if identity is not None:
            write_json(staging / IDENTITY_FILE, identity.record())
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    publish_directory(staging, final_dir)


def publish_directory(staging: Path, final_dir: Path) -> None:
    """Move a finished staging folder into place, replacing an older result if there is one."""
    previous = None
    if final_dir.exists():
        previous = final_dir.with_name(f".{final_dir.name}.replaced-{_owner_tag()}")
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
