"""Warm start: run scripts in forked copies of one interpreter that has already imported torch and transformers.

Every step of the pipeline is a script that `uv run` starts in a fresh interpreter, which then imports torch,
transformers and this package: about 10 s of CPU time before the step does anything (measured; see
docs/pipeline.md). On a GPU that is noise next to a step's minutes; on the toy organism, where a step's own
work takes seconds, it is most of the pipeline. A `WarmStart` pays it once: it imports those modules, then
starts each script as a fork of itself. The child is an ordinary process of its own (its own pid, session,
environment, working folder and output); it shares the parent's imported modules copy-on-write, runs the
script as `__main__` (what `python script.py` does) and exits with the script's status.

Two conditions keep this exactly equivalent to `uv run script.py`:

- **The same environment.** A script is forked only when its committed lockfile (`<script>.py.lock`) is
  byte-for-byte the lockfile of the script that runs the warm start: same requirements, same resolved
  versions. Any other script is started with `uv run`, as before.
- **No CUDA in the parent.** A forked child cannot use a CUDA context of its parent, and a GPU step is
  minutes long anyway: the pipeline warm-starts only its CPU steps, and `WarmStart` refuses to fork once
  this process has initialised CUDA.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import os
import runpy
import signal
import sys
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path

# What a step imports that takes time: torch, transformers' model-loading machinery (which pulls in
# torch.distributed.tensor, sympy and torch._dynamo), the organism's model class, plotting, and the
# package's own modules. Importing one a step does not use costs memory the children share, nothing else.
PRELOAD = (
    "torch",
    "transformers",
    "transformers.modeling_utils",
    "transformers.models.gpt_neox.modeling_gpt_neox",
    "matplotlib.pyplot",
    "brittle.activations",
    "brittle.attacks",
    "brittle.evaluation",
    "brittle.identity",
    "brittle.lens",
    "brittle.models",
    "brittle.multiple_choice",
    "brittle.outputs",
    "brittle.plotting",
    "brittle.precision",
    "brittle.runtime",
    "brittle.training",
    "brittle.weights",
)


def lockfile(script: str | Path) -> Path:
    """The committed lockfile of a PEP 723 script: `<script>.py.lock` beside it."""
    return Path(f"{script}.lock")


def same_environment(script: str | Path, host_script: str | Path) -> bool:
    """Whether `script` runs in `host_script`'s environment: both lockfiles exist and are identical."""
    mine, theirs = lockfile(host_script), lockfile(script)
    return mine.is_file() and theirs.is_file() and mine.read_bytes() == theirs.read_bytes()


def exit_status(code: object) -> int:
    """The process exit status Python gives `sys.exit(code)`: None is 0, an int itself, anything else 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


class ForkedScript:
    """A script running in a forked child; the parts of `subprocess.Popen` the pipeline uses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        """The exit status when the child has ended (negative: killed by that signal), else None."""
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self) -> int:
        """Block until the child ends; its exit status."""
        if self.returncode is None:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


class WarmStart:
    """Imports `PRELOAD` once (`seconds` says how long it took), then starts scripts as forks of itself."""

    def __init__(self, preload: Sequence[str] = PRELOAD) -> None:
        started = time.monotonic()
        for module in preload:
            importlib.import_module(module)
        self.seconds = time.monotonic() - started

    def can_fork(self) -> bool:
        """False once this process has initialised CUDA (a forked child could not use it)."""
        torch = sys.modules.get("torch")
        return torch is None or not torch.cuda.is_initialized()

    def start(self, script: str | Path, arguments: Sequence[str], environment: Mapping[str, str],
              output: int | None = None) -> ForkedScript:
        """Run `script arguments...` in a forked child, in its own session (like `start_new_session=True`),
        with exactly `environment` as its environment and, when `output` is a file descriptor, its stdout and
        stderr written there."""
        if not self.can_fork():
            raise RuntimeError("this process has initialised CUDA; start the script with `uv run` instead")
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid:
            return ForkedScript(pid)
        _run_child(Path(script), arguments, environment, output)  # never returns


def _run_child(script: Path, arguments: Sequence[str], environment: Mapping[str, str], output: int | None) -> None:
    """In the forked child: become the script's own process, run it as `__main__`, and exit with its status."""
    status = 1
    try:
        os.setsid()
        # The parent's signal handlers and exit hooks are the parent's: start from Python's defaults.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        atexit._clear()
        if output is not None:
            os.dup2(output, 1)
            os.dup2(output, 2)
        # Fresh line-buffered streams on descriptors 1 and 2 (the parent's may be buffers of its own).
        sys.stdout = open(1, "w", encoding="utf-8", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", buffering=1, closefd=False)  # noqa: SIM115
        os.environ.clear()
        os.environ.update(environment)
        # OpenMP read OMP_NUM_THREADS when torch was loaded in the parent: apply this child's value.
        threads = environment.get("OMP_NUM_THREADS", "").strip()
        if threads.isdigit() and int(threads) > 0:
            import torch

            torch.set_num_threads(int(threads))
        sys.argv = [str(script), *arguments]
        sys.path[0] = str(script.parent)  # what `python script.py` puts first
        try:
            runpy.run_path(str(script), run_name="__main__")
            status = 0
        except SystemExit as exit_request:
            status = exit_status(exit_request.code)
        except KeyboardInterrupt:
            traceback.print_exc()
            status = 130
        except BaseException:
            traceback.print_exc()
            status = 1
        # What the interpreter does at exit: wait for non-daemon threads, then run the exit hooks.
        for thread in threading.enumerate():
            if thread is not threading.main_thread() and not thread.daemon:
                thread.join()
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(ValueError, OSError):  # a stream the script closed
                stream.flush()
        os._exit(status)
