"""Shared fixtures: a session workspace holding the toy data and organism, and a script runner.

Scripts are run through `uv run` from the workspace (so `data/`, `models/` and `outputs/` land
there), exactly as a user runs them from the repository.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def load_script(script: str) -> ModuleType:
    """A PEP 723 script of the repository (e.g. `experiment/report.py`) imported as a module, to test its
    functions in-process; registered in `sys.modules` under its file name."""
    name = Path(script).stem
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO_ROOT / script)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def run_script(script: str, *args: str, cwd: Path, check: bool = True, timeout: int = 900,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`uv run <repo>/<script> args...` in `cwd`; raises with its output when `check` and it fails."""
    command = ["uv", "run", "--quiet", str(REPO_ROOT / script), *map(str, args)]
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, **(env or {})})
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def run_in_process(script: str, *args: str, cwd: Path,
                   env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The script's `__main__` run in this process, from `cwd`, with `args` and `env` (no interpreter start-up):
    the same code path as `run_script` for tests whose subject is not the script's environment. Its output
    and exit status come back as `run_script` returns them; an uncaught exception fails the test as it is."""
    import contextlib
    import io
    import runpy

    from brittle.warmstart import exit_status

    stdout, stderr, status = io.StringIO(), io.StringIO(), 0
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        patch.chdir(cwd)
        patch.setattr(sys, "argv", [str(REPO_ROOT / script), *map(str, args)])
        patch.syspath_prepend(str((REPO_ROOT / script).parent))  # what `python script.py` puts first
        for name, value in (env or {}).items():
            patch.setenv(name, value)
        try:
            runpy.run_path(str(REPO_ROOT / script), run_name="__main__")
        except SystemExit as exit_request:
            status = exit_status(exit_request.code)
    return subprocess.CompletedProcess([script, *map(str, args)], status, stdout.getvalue(), stderr.getvalue())


def last_line(text: str) -> str:
    """The last non-blank line of a program's output."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def assert_user_error(result: subprocess.CompletedProcess, *phrases: str) -> None:
    """A failed run that ended in one `error: ...` line (no traceback) naming every phrase."""
    assert result.returncode != 0, f"expected failure, got success:\n{result.stdout}"
    assert "Traceback" not in result.stderr, result.stderr
    message = last_line(result.stderr)
    assert message.startswith("error:"), result.stderr
    for phrase in phrases:
        assert phrase in message, f"{phrase!r} not in {message!r}"


@dataclass(frozen=True)
class ToyOrganism:
    """The session's toy world: workspace folder, data folder and model folders."""

    workspace: Path
    data: Path
    base: Path
    filtered: Path
    midtrain: Path


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder for the session's data, models and outputs (BRITTLE_TEST_WORKSPACE keeps one)."""
    kept = os.environ.get("BRITTLE_TEST_WORKSPACE")
    if kept:
        Path(kept).mkdir(parents=True, exist_ok=True)
        return Path(kept).resolve()
    return tmp_path_factory.mktemp("workspace")


@pytest.fixture(scope="session")
def toy_organism(workspace: Path) -> ToyOrganism:
    """The toy data and the organism (base, filtered, mid-training base), built as the README says."""
    run_script("create_datasets.py", "--preset", "toy", cwd=workspace)
    run_script("experiment/build_organism.py", "--seed", "42", cwd=workspace, timeout=1200)
    models = workspace / "models"
    return ToyOrganism(workspace, workspace / "data" / "toy", models / "toy-base-s42",
                       models / "toy-filtered-s42", models / "toy-base-midtrain-s42")


@pytest.fixture(scope="session")
def finetuned_base(toy_organism: ToyOrganism) -> Path:
    """A quick stand-in for an unlearned model: base after 40 steps of gradient ascent on forget text.

    Cheap (seconds) and deterministic; for tests of diagnostics that need *some* model derived from
    base. Tests of the unlearning methods themselves use `unlearn/run_unlearn.sh`.
    """
    import random

    import torch

    from brittle.models import load_model_and_tokenizer
    from brittle.texts import read_texts
    from brittle.training import batch_nll, encode_texts, shuffled_batches

    folder = toy_organism.workspace / "models" / "toy-base-s42-ascent-test"
    if folder.exists():
        return folder
    torch.manual_seed(0)
    model, tokenizer = load_model_and_tokenizer(str(toy_organism.base), device="cpu")
    model.train()
    sequences = encode_texts(tokenizer, read_texts(toy_organism.data / "forget.txt"), max_length=64)
    batches = shuffled_batches(sequences, 16, tokenizer.pad_token_id, random.Random(0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for _ in range(40):
        batch = next(batches)
        loss = -batch_nll(model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits, batch.labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


VL_SEED = 7  # the test VL organism's seed


@pytest.fixture(scope="session")
def vl_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The data of a 4-entity-per-domain VL world (brittle.vlm)."""
    from brittle.vlm import build_vl_world, write_vl_data

    folder = tmp_path_factory.mktemp("toy-vlm")
    write_vl_data(folder, build_vl_world(entities_per_domain=4, seed=VL_SEED), seed=VL_SEED)
    return folder


@pytest.fixture(scope="session")
def vl_base(vl_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny LLaVA trained on forget + retain records, saved and reloadable as a model folder."""
    import argparse

    import torch

    from brittle.outputs import read_jsonl

    build = load_script("experiment/build_vlm_organism.py")
    torch.set_num_threads(1)
    args = argparse.Namespace(seed=VL_SEED, steps=500, batch_size=32, lr=4e-3, hidden_size=64, layers=2,
                              vision_hidden_size=64)
    records = read_jsonl(vl_data / "forget_qa.jsonl") + read_jsonl(vl_data / "retain_qa.jsonl")
    tokenizer = build.train_tokenizer([f"{build.vl_prompt(r['question'])} {r['answer']}" for r in records], 512)
    processor = build.make_processor(tokenizer)
    model, _ = build.train(records, processor, build.model_config(tokenizer, args), vl_data, args, "test vlm")
    folder = tmp_path_factory.mktemp("models") / "toy-vlm-base"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
