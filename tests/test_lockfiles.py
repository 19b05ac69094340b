"""Every script's environment is locked: `<script>.py.lock` beside each PEP 723 script, up to date with its
header, so `uv run` installs exactly the versions that made a result (docs/results-identity.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import load_script

lock_scripts = load_script("tests/lock_scripts.py")
SCRIPTS = lock_scripts.pep723_scripts()


def test_the_scripts_are_found():
    names = {path.relative_to(lock_scripts.REPOSITORY).as_posix() for path in SCRIPTS}
    assert {"unlearn/unlearn.py", "experiment/eval.py", "tests/run_tests.py"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.relative_to(lock_scripts.REPOSITORY).as_posix())
def test_every_script_has_an_up_to_date_lockfile(script: Path):
    assert lock_scripts.lock(script, check=True) is None, (
        f"{script.name}: lockfile missing or stale; run `uv run tests/lock_scripts.py`")


def test_a_stale_lockfile_is_caught(tmp_path: Path):
    script = tmp_path / "tool.py"
    script.write_text('# /// script\n# requires-python = ">=3.10"\n# dependencies = []\n# ///\nprint("hi")\n')
    assert lock_scripts.lock(script, check=True) == "no lockfile tool.py.lock"
    assert lock_scripts.lock(script) is None and lock_scripts.lockfile(script).exists()
    assert lock_scripts.lock(script, check=True) is None
    script.write_text(script.read_text().replace("dependencies = []", 'dependencies = ["tqdm>=4"]'))
    assert lock_scripts.lock(script, check=True) is not None  # the header changed: the lock is stale
