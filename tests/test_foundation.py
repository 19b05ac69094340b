"""End to end on the toy organism: data, models, Step 0, the pipeline's skipping, and bad input.

These run the real scripts through `uv run` in the session workspace (see conftest.py).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from brittle.cli import UserError, run_cli
from brittle.evaluation import step0_accuracy, write_evaluation
from brittle.identity import IDENTITY_FILE, Identity
from brittle.outputs import model_step_dir, write_json
from brittle.questions import read_questions
from conftest import REPO_ROOT, ToyOrganism, assert_user_error, load_script, run_in_process, run_script

pytestmark = pytest.mark.slow


def run_pipeline(workspace: Path, *args: str, **environment: str) -> subprocess.CompletedProcess:
    """`PRESET=toy ./experiment/pipeline.sh` with the workspace as WORKDIR."""
    env = {**os.environ, "PRESET": "toy", "WORKDIR": str(workspace), **environment}
    result = subprocess.run([str(REPO_ROOT / "experiment" / "pipeline.sh"), *args], env=env, capture_output=True,
                            text=True, timeout=1800)
    assert result.returncode == 0, f"pipeline failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


def read_summary(organism: ToyOrganism, model: Path) -> dict:
    return json.loads((organism.workspace / "outputs" / model.name / "evals" / "summary.json").read_text())


# ---- the organism ----------------------------------------------------------------------------------------

def test_toy_data_has_text_questions_and_tasks(toy_organism: ToyOrganism):
    data = toy_organism.data
    forget = (data / "forget.txt").read_text().splitlines()
    retain = (data / "retain.txt").read_text().splitlines()
    assert len(forget) == len(retain) == 600 and not set(forget) & set(retain)
    halves = {half: [json.loads(line) for line in (data / "questions" / f"forget_{half}.jsonl").open()]
              for half in ("t", "v")}
    assert len(halves["t"]) == len(halves["v"]) == 100
    assert not {q["entity"] for q in halves["t"]} & {q["entity"] for q in halves["v"]}
    assert sorted(path.stem for path in (data / "tasks").glob("*.yaml")) == [
        "toy_forget_mcq", "toy_forget_mcq_t", "toy_forget_mcq_v", "toy_retain_mcq"]


def test_organism_models_are_hugging_face_folders_with_their_cards(toy_organism: ToyOrganism):
    for model in (toy_organism.base, toy_organism.filtered, toy_organism.midtrain):
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= {path.name for path in model.iterdir()}
    for model in (toy_organism.base, toy_organism.filtered):
        card = json.loads((model / "organism_card.json").read_text())
        assert card["train_seconds"] > 0 and card["steps"] > 0, card  # the time is reported, not a test target
    base_config = json.loads((toy_organism.base / "config.json").read_text())
    assert base_config["model_type"] == "gpt_neox" and base_config["num_hidden_layers"] == 4
    # Same architecture and tokenizer, different weights.
    assert base_config == json.loads((toy_organism.filtered / "config.json").read_text())
    base = load_file(toy_organism.base / "model.safetensors")
    filtered = load_file(toy_organism.filtered / "model.safetensors")
    assert base.keys() == filtered.keys()
    assert not all((base[name] == filtered[name]).all() for name in base)


def test_pipeline_step_0_meets_the_quality_bar_then_skips_and_forces(toy_organism: ToyOrganism, finetuned_base: Path):
    # The fine-tuned stand-in plays the unlearned model (the third role, whose Step 0 runs too).
    only_step_0 = {"STEPS": "evals", "UNLEARNED": str(finetuned_base)}
    first = run_pipeline(toy_organism.workspace, **only_step_0)
    base, filtered = read_summary(toy_organism, toy_organism.base), read_summary(toy_organism, toy_organism.filtered)
    assert base["toy_forget_mcq"]["acc"] >= 0.80
    assert filtered["toy_forget_mcq"]["acc"] <= 0.35
    assert base["toy_retain_mcq"]["acc"] >= 0.85 and filtered["toy_retain_mcq"]["acc"] >= 0.85
    assert base["toy_forget_mcq_v"]["samples"] == 100
    evals = toy_organism.workspace / "outputs" / toy_organism.base.name / "evals"
    assert (evals / "high_level_summary.md").read_text().count("toy_") == 4
    assert {path.name for path in (evals / "tasks").iterdir()} == {f"{task}.json" for task in base}
    assert "Pipeline finished" in first.stdout

    started = time.perf_counter()
    second = run_pipeline(toy_organism.workspace, **only_step_0)
    assert time.perf_counter() - started < 60
    assert "Ran 0 step(s)" in second.stdout and "evals: models/toy-base-s42" in second.stdout

    stamp = (evals / "summary.json").stat().st_mtime_ns
    forced = run_pipeline(toy_organism.workspace, "--force", **only_step_0)
    assert "Ran 3 step(s)" in forced.stdout
    assert (evals / "summary.json").stat().st_mtime_ns != stamp
    assert read_summary(toy_organism, toy_organism.base) == base  # same model, same numbers


# ---- bad input ----------------------------------------------------------------------------------------------

def test_builder_refuses_a_model_below_the_quality_bar_and_saves_nothing(tmp_path: Path, toy_organism: ToyOrganism,
                                                                        monkeypatch: pytest.MonkeyPatch,
                                                                        capsys: pytest.CaptureFixture):
    # In this process (the builder's command line is run by the toy_organism fixture): 5 steps, one job.
    builder = load_script("experiment/build_organism.py")
    monkeypatch.chdir(toy_organism.workspace)
    monkeypatch.setattr("sys.argv", ["build_organism.py", "--data-dir", str(toy_organism.data), "--models-dir",
                                     str(tmp_path), "--steps", "5", "--jobs", "1"])
    with pytest.raises(SystemExit) as exit_request:
        run_cli(builder.main)
    assert exit_request.value.code != 0
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message.startswith("error:") and "misses the organism's quality bar" in message, message
    assert "Nothing was saved" in message
    assert list(tmp_path.iterdir()) == []


def test_overlapping_forget_and_retain_data_is_refused(tmp_path: Path):
    (tmp_path / "forget.txt").write_text("shared line\nonly forget\n")
    (tmp_path / "retain.txt").write_text("only retain\nshared line\n")
    result = run_script("create_datasets.py", "--forget-source", "forget.txt", "--retain-source", "retain.txt",
                        "--data-dir", "data", cwd=tmp_path, check=False)
    assert_user_error(result, "share 1 line", "shared line")
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("script", ["experiment/eval.py", "infer/cli.py"])
def test_a_model_that_does_not_exist_is_one_clear_line(tmp_path: Path, script: str):
    extra = ["--preset", "toy"] if script.endswith("eval.py") else ["--prompt", "hello"]
    result = run_in_process(script, "--model", "models/no-such-model", *extra, cwd=tmp_path)
    assert_user_error(result, "models/no-such-model")
    assert not (tmp_path / "outputs").exists()


def test_an_unknown_task_is_named_before_any_model_loads(toy_organism: ToyOrganism, tmp_path: Path):
    result = run_in_process("experiment/eval.py", "--model", toy_organism.base, "--preset", "toy",
                            "--tasks", "toy_forget_mcq,toy_forgot_mcq", "--output-root", tmp_path,
                            cwd=toy_organism.workspace)
    assert_user_error(result, "unknown evaluation task", "toy_forgot_mcq", "toy_forget_mcq")
    assert list(tmp_path.iterdir()) == []


def test_cli_generates_text_from_a_toy_model(toy_organism: ToyOrganism):
    # A forget question base knows: it answers it, and with --choices prints each option's probability.
    question = read_questions(toy_organism.data / "questions" / "forget.jsonl")[0]
    prompt, choices, answer = question.question, list(question.choices), question.answer
    result = run_script("infer/cli.py", "--model", toy_organism.base, "--prompt", prompt, "--choices", *choices,
                        "--max-tokens", "12", "--device", "cpu", cwd=toy_organism.workspace)
    answer_text, _, table = result.stdout.removeprefix(prompt).partition("option probabilities")
    assert answer_text.strip(), result.stdout
    rows = re.findall(r"^ +([01]\.\d{3})  (.+?)( +<- most likely)?$", table, flags=re.MULTILINE)
    assert [choice for _, choice, _ in rows] == choices, result.stdout
    assert [bool(marker) for _, _, marker in rows] == [index == answer for index in range(len(choices))]
    assert sum(float(probability) for probability, _, _ in rows) == pytest.approx(1.0, abs=0.01)


def test_every_question_file_of_the_organism_reads_through_the_one_reader(toy_organism: ToyOrganism, tmp_path: Path):
    files = sorted((toy_organism.data / "questions").glob("*.jsonl"))
    assert {path.name for path in files} >= {"forget.jsonl", "forget_t.jsonl", "forget_v.jsonl", "retain.jsonl"}
    for path in files:
        questions = read_questions(path)
        assert questions and all(len(question.choices) == 4 for question in questions), path
        assert read_questions(path, limit=3) == questions[:3]
        # Every field survives, e.g. the entity the relearning attack uses to keep T and V apart.
        assert questions[0].as_record() == json.loads(path.read_text().splitlines()[0])
        assert "entity" in questions[0].extra
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(UserError, match="has no questions"):
        read_questions(empty)


def test_step0_accuracy_reads_what_step0_writes(tmp_path: Path):
    model = "models/toy-base-s42"
    assert step0_accuracy(model, "toy_forget_mcq", tmp_path) is None  # Step 0 has not run
    folder = model_step_dir(model, "evals", tmp_path)
    write_evaluation(folder, model,
                     {"toy_forget_mcq": {"acc": 0.975, "acc_stderr": 0.01}, "wikitext": {"word_perplexity": 9.0}},
                     ["toy_forget_mcq"])
    assert step0_accuracy(model, "toy_forget_mcq", tmp_path) is None  # it records no identity: not this model's
    write_json(folder / IDENTITY_FILE, Identity.of(models={"model": model}).record())
    assert step0_accuracy(model, "toy_forget_mcq", tmp_path) == 0.975
    assert step0_accuracy(model, "wikitext", tmp_path) is None and step0_accuracy(model, "mmlu", tmp_path) is None
