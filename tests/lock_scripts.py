# /// script
# requires-python = ">=3.10"
# dependencies = []
# ///
"""Lock (or check the locks of) every script's environment: `uv lock --script` for each PEP 723 script.

A script's lockfile `<script>.py.lock` sits beside it and is kept in the repository; `uv run <script>.py`
then installs exactly the versions it names, so a result can be re-run with the environment that made it
(every result's `identity.json` records the versions it actually ran with).

    uv run tests/lock_scripts.py            # write or refresh every lockfile (after changing a header)
    uv run tests/lock_scripts.py --check    # fail if a lockfile is missing or out of date (the tests do)
    uv run tests/lock_scripts.py --upgrade  # move every lock to the newest versions the headers allow

Prints each script's lockfile size and the total.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
SKIPPED_FOLDERS = {".git", ".venv", "data", "outputs", "models", "unlearned_models"}


def pep723_scripts(root: Path = REPOSITORY) -> list[Path]:
    """Every Python file under `root` that starts with an inline script metadata block (`# /// script`)."""
    return sorted(path for path in root.rglob("*.py")
                  if not SKIPPED_FOLDERS & set(path.relative_to(root).parts)
                  and path.read_text(encoding="utf-8").startswith("# /// script"))


def lockfile(script: Path) -> Path:
    """Where uv looks for a script's lock: `<script>.py.lock` beside it."""
    return script.with_name(script.name + ".lock")


def lock(script: Path, *, check: bool = False, upgrade: bool = False) -> str | None:
    """Lock one script (or, with `check`, only verify its lock without writing); the failure's last line,
    or None when it succeeded. A missing lockfile fails the check."""
    if check and not lockfile(script).exists():
        return f"no lockfile {lockfile(script).name}"
    command = ["uv", "lock", *(["--check"] if check else []), *(["--upgrade"] if upgrade else []),
               "--script", str(script)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode == 0:
        return None
    return (result.stderr.strip().splitlines() or ["(no message)"])[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="only check that every lockfile is up to date")
    mode.add_argument("--upgrade", action="store_true", help="re-resolve to the newest allowed versions")
    args = parser.parse_args()
    scripts = pep723_scripts()
    failed, total = [], 0
    for script in scripts:
        problem = lock(script, check=args.check, upgrade=args.upgrade)
        size = lockfile(script).stat().st_size if lockfile(script).exists() else 0
        total += size
        print(f"{'FAILED' if problem else 'ok':6} {size / 1024:8.1f} KiB  {script.relative_to(REPOSITORY)}")
        if problem:
            failed.append(script)
            print(f"       {problem}")
    print(f"{len(scripts)} scripts, lockfiles {total / 1024:.1f} KiB in all")
    if failed:
        print(f"error: {len(failed)} script(s) could not be locked{' (missing or out of date)' if args.check else ''}; "
              "run `uv run tests/lock_scripts.py`", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
