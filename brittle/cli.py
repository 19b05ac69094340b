"""Command-line conventions shared by every script: common flags and one-line user errors.

Every script's entry point is `run_cli(main)`. It loads `.env` first (secrets such as HF_TOKEN and
WANDB_API_KEY; never printed). A `UserError` raised anywhere below it (a missing model, an empty text
file, an unknown method) ends the program with one line on stderr that names the problem and the fix,
and exit code 2 - never a traceback for something the user can correct. A bad flag value
(`--seed abc`) is one such line too, not argparse's full usage.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NoReturn

USER_ERROR_EXIT_CODE = 2


class UserError(Exception):
    """A problem with the user's input or environment, reported as a single line."""


def _one_line_argument_error(parser: argparse.ArgumentParser, message: str) -> NoReturn:
    """argparse's error, as one line naming the flag and where to read the usage."""
    print(f"error: {parser.prog}: {message} (see {parser.prog} --help)", file=sys.stderr)
    sys.exit(USER_ERROR_EXIT_CODE)


@contextmanager
def one_line_argument_errors() -> Iterator[None]:
    """While active, every argparse parser reports a bad flag in one line instead of its whole usage."""
    original = argparse.ArgumentParser.error
    argparse.ArgumentParser.error = _one_line_argument_error
    try:
        yield
    finally:
        argparse.ArgumentParser.error = original


def run_cli(main: Callable[[], None]) -> None:
    """Run a script's `main` after loading `.env`; `UserError` and bad flags become one line and exit 2."""
    from brittle.tracking import load_environment

    load_environment()
    try:
        with one_line_argument_errors():
            main()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT_CODE)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


class AttentionImplementation(argparse.Action):
    """Stores --attn-implementation and makes it the process-wide default of `brittle.models.load_model`,
    so every script that loads a model honours it without passing it on."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        from brittle import models

        models.default_attn_implementation = values
        setattr(namespace, self.dest, values)


def add_attention_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """`--attn-implementation auto|sdpa|flash_attention_2|eager`."""
    parser.add_argument("--attn-implementation", default="auto", action=AttentionImplementation,
                        choices=["auto", "sdpa", "flash_attention_2", "eager"],
                        help="attention backend: auto = flash_attention_2 when the flash-attn package is installed "
                             "and the GPU supports it (Ampere+), else sdpa (eager where the model has no sdpa)")


def add_gradient_checkpointing_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """`--gradient-checkpointing auto|on|off` for the scripts that train (brittle.precision.gradient_checkpointing)."""
    parser.add_argument("--gradient-checkpointing", default="auto", choices=["auto", "on", "off"],
                        help="recompute activations in the backward pass to save memory (auto = on CUDA only)")


def add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    """`--device`, `--dtype`, `--attn-implementation` and `--seed`, with the toolkit-wide defaults."""
    parser.add_argument("--device", default="auto",
                        help="auto (best GPU by free memory, then MPS, then CPU), cuda, cuda:N, mps or cpu")
    parser.add_argument("--dtype", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                        help="compute dtype; auto = bf16 on CUDA, fp16 on MPS, fp32 on CPU (training keeps fp32 "
                             "master weights and optimizer state and computes in this dtype under autocast)")
    add_attention_argument(parser)
    parser.add_argument("--seed", type=int, default=42, help="random seed (default 42)")


def add_comparison_arguments(parser: argparse.ArgumentParser) -> None:
    """`--model-a` and `--model-b`, the two models of a pairwise step (hub ids or local folders)."""
    parser.add_argument("--model-a", required=True, help="the reference model (Base): hub id or local folder")
    parser.add_argument("--model-b", required=True,
                        help="the model compared with it (Filtered, Unlearned, ...): hub id or local folder")


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """`--outdir`, `--output-root` and `--force`."""
    parser.add_argument("--outdir", default=None,
                        help="output folder (default: derived from the model names under --output-root)")
    parser.add_argument("--output-root", default="outputs", help="root of all results (default outputs/)")
    parser.add_argument("--force", action="store_true", help="recompute even if the outputs exist")


def positive_int(text: str) -> int:
    """argparse type for counts that must be at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value
