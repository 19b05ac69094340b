# /// script
# requires-python = ">=3.10"
# dependencies = []
# ///
"""Lock (or check the locks of) every script's environment: `uv lock --script` for each PEP 723 script.

A script's lockfile `<script>.py.lock` sits beside it; `uv run <script>.py` then installs exactly the
versions it names, so a result can be re-run with the environment that made it (every result's
`identity.json` records the versions it actually ran with).

    uv run tests/lock_scripts.py            # write or refresh every lockfile (after changing a header)
    uv run tests/lock_scripts.py --check    # fail if a lockfile is missing or out of date (CI)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="only check that every lockfile is up to date")
    mode.add_argument("--upgrade", action="store_true", help="re-resolve to the newest allowed versions")
    args = parser.parse_args()
    failed, total = [], 0
    for script in pep723_scripts():
        command = ["uv", "lock", "--script", str(script), *(["--check"] if args.check else []),
                   *(["--upgrade"] if args.upgrade else [])]
        result = subprocess.run(command, capture_output=True, text=True)
        lockfile = script.with_name(script.name + ".lock")
        size = lockfile.stat().st_size if lockfile.exists() else 0
        total += size
        status = "ok" if result.returncode == 0 else "FAILED"
        print(f"{status:6} {size / 1024:8.1f} KiB  {script.relative_to(REPOSITORY)}")
        if result.returncode != 0:
            failed.append(script)
            print("       " + (result.stderr.strip().splitlines() or ["(no message)"])[-1])
    print(f"{len(pep723_scripts())} scripts, lockfiles {total / 1024:.1f} KiB in all")
    if failed:
        print(f"error: {len(failed)} script(s) could not be locked{' (out of date)' if args.check else ''}; "
              "run `uv run tests/lock_scripts.py`", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
