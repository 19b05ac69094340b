"""experiment/compare_outputs.py: two results folders compared number by number."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from brittle.cli import UserError
from conftest import REPO_ROOT, assert_user_error, run_script

sys.path.insert(0, str(REPO_ROOT / "experiment"))
from compare_outputs import Tolerance, compare_folders


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """A small results folder: a CSV, a JSON summary, a JSONL file and a PNG (never compared)."""
    folder = tmp_path / "before" / "toy-base-s42" / "evals"
    folder.mkdir(parents=True)
    (folder / "rows.csv").write_text("layer,accuracy,note\n0,0.25,chance\n1,0.9,nan\n")
    (folder / "summary.json").write_text(json.dumps({"toy_forget_mcq": {"acc": 1.0, "n": 200}, "seconds": 3.2,
                                                     "layers": [0.5, float("nan")]}))
    (folder / "records.jsonl").write_text('{"index": 0, "weight": 0.5}\n')
    (folder / "plot.png").write_bytes(b"\x89PNG")
    return tmp_path / "before"


def edit(root: Path, name: str, old: str, new: str) -> None:
    path = root / "toy-base-s42" / "evals" / name
    path.write_text(path.read_text().replace(old, new))


def test_identical_folders_and_every_kind_of_difference(results: Path, tmp_path: Path):
    after = tmp_path / "after"
    shutil.copytree(results, after)
    (after / "toy-base-s42" / "evals" / "plot.png").write_bytes(b"other")  # pictures are not compared
    assert compare_folders(results, after) == ([], 3)  # NaN equals NaN

    edit(after, "rows.csv", "0.9", "0.9000001")
    edit(after, "summary.json", '"seconds": 3.2', '"seconds": 9.9')
    edit(after, "records.jsonl", '"weight": 0.5', '"weight": "0.5x"')
    (after / "extra.json").write_text("{}")
    differences, compared = compare_folders(results, after)
    assert compared == 3
    assert differences == [f"extra.json: only in {after}",
                           "toy-base-s42/evals/records.jsonl[0].weight: 0.5 != '0.5x'",
                           "toy-base-s42/evals/rows.csv row 2 accuracy: 0.9 != 0.9000001",
                           "toy-base-s42/evals/summary.json.seconds: 3.2 != 9.9"]
    # A relative tolerance forgives the rounding, an ignored field the timing, an ignored file the rest.
    assert compare_folders(results, after, Tolerance(relative=1e-6), ["seconds"], ["*.jsonl", "extra.json"]) == ([], 2)
    edit(after, "rows.csv", "layer,accuracy", "layer,acc")
    assert compare_folders(results, after, ignored_files=["*.jsonl", "*.json"])[0] == [
        "toy-base-s42/evals/rows.csv: columns differ: ['layer', 'accuracy', 'note'] != ['layer', 'acc', 'note']"]
    with pytest.raises(UserError, match="does not exist"):
        compare_folders(results, tmp_path / "missing")


def test_the_script_exits_non_zero_on_a_difference(results: Path, tmp_path: Path):
    after = tmp_path / "after"
    shutil.copytree(results, after)
    edit(after, "summary.json", '"acc": 1.0', '"acc": 0.5')
    result = run_script("experiment/compare_outputs.py", results, after, cwd=tmp_path, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.splitlines() == ["toy-base-s42/evals/summary.json.toy_forget_mcq.acc: 1.0 != 0.5",
                                          f"1 difference(s): 3 file(s) compared in both {results} and {after} "
                                          "(rtol 0, atol 0)"]
    assert_user_error(run_script("experiment/compare_outputs.py", results, tmp_path / "gone", cwd=tmp_path,
                                 check=False), "results folder", "does not exist")
