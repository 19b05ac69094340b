"""The relearning attack (Step 13): its arithmetic, its pre-flight check, and a small run on the organism."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from brittle.cli import UserError
from brittle.identity import IDENTITY_FILE, Identity
from brittle.outputs import read_csv, read_jsonl, write_json
from conftest import ToyOrganism, assert_user_error, load_script, run_in_process, run_script

relearn = load_script("experiment/relearn_attack.py")


# ---- arithmetic --------------------------------------------------------------------------------------

def test_recovery_rate_is_the_fraction_of_forgotten_accuracy_brought_back():
    rates = relearn.recovery_rates(a=0.25, b=0.75, c=0.95)
    assert rates["recovery_rate"] == pytest.approx(0.5 / 0.7)
    assert rates["relative_accuracy"] == pytest.approx(0.75 / 0.95)
    assert relearn.recovery_rates(a=0.3, b=0.3, c=0.9)["recovery_rate"] == 0.0
    assert relearn.recovery_rates(a=0.9, b=0.95, c=0.9)["recovery_rate"] is None  # nothing was forgotten


def test_learning_rates_are_log_spaced_and_validated():
    assert relearn.learning_rates(1e-4, 1e-2, 3) == pytest.approx([1e-4, 1e-3, 1e-2])
    assert relearn.learning_rates(3e-4, 3e-4, 5) == [3e-4]
    with pytest.raises(UserError, match="low <= high"):
        relearn.learning_rates(1e-2, 1e-4, 3)


def test_best_run_picks_the_highest_attacked_accuracy_earliest():
    rows = [{"lr": 1e-3, "epoch": 0, "step": 0, "v_accuracy": 0.9},  # before the attack: not a candidate
            {"lr": 1e-3, "epoch": 1, "step": 7, "v_accuracy": 0.6},
            {"lr": 1e-2, "epoch": 1, "step": 7, "v_accuracy": 0.7},
            {"lr": 1e-2, "epoch": 2, "step": 14, "v_accuracy": 0.7}]
    assert relearn.best_run(rows) == rows[2]
    assert relearn.before_attack(rows) == 0.9


def test_the_attack_trains_on_the_question_followed_by_its_answer():
    question = {"question": "Q: What is the host of Velarix? A:", "choices": ["cave newts", "salt crabs"], "answer": 1}
    assert relearn.answer_texts([question]) == ["Q: What is the host of Velarix? A: salt crabs"]


def test_t_and_v_never_share_an_entity(toy_organism: ToyOrganism):
    halves = [read_jsonl(toy_organism.data / "questions" / f"forget_{half}.jsonl") for half in ("t", "v")]
    entities = [{question["entity"] for question in half} for half in halves]
    assert entities[0] and entities[1] and not entities[0] & entities[1]


def test_pre_flight_reads_step_0_instead_of_loading_the_model(tmp_path: Path, capsys: pytest.CaptureFixture):
    # No such model exists anywhere: the check can only pass or fail from Step 0's summary.json.
    base = "example-org/never-loaded"
    summary = tmp_path / "outputs" / "example-org_never-loaded" / "evals" / "summary.json"
    summary.parent.mkdir(parents=True)
    settings = SimpleNamespace(forget_task="toy_forget_mcq", output_root=tmp_path / "outputs")
    write_json(summary.parent / IDENTITY_FILE, Identity.of(models={"model": base}).record())  # Step 0 of this model
    summary.write_text(json.dumps({"toy_forget_mcq": {"acc": 0.31}}))
    with pytest.raises(UserError, match=r"answers only 0\.310 .*Step 0's toy_forget_mcq"):
        relearn.check_baseline(base, [], 0.5, settings)
    summary.write_text(json.dumps({"toy_forget_mcq": {"acc": 0.93}}))
    relearn.check_baseline(base, [], 0.5, settings)
    assert "forget accuracy 0.930 on Step 0's toy_forget_mcq" in capsys.readouterr().out
    relearn.check_baseline(base, [], 0, settings)
    assert "check disabled" in capsys.readouterr().out


# ---- bad input -----------------------------------------------------------------------------------------

def attack_arguments(organism: ToyOrganism, unlearned: Path, *extra: str) -> list:
    return ["--model-a", organism.base, "--model-b", unlearned, "--filtered", organism.filtered, "--preset", "toy",
            "--device", "cpu", "--num-lrs", "1", "--epochs", "1", *extra]


@pytest.mark.slow
def test_bad_input_is_refused_before_any_model_loads(toy_organism: ToyOrganism, finetuned_base: Path,
                                                    tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(toy_organism.workspace)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    cases = [
        (["--train-questions", str(empty)], "T split .* has no questions"),
        (["--eval-questions", str(empty)], "V split .* has no questions"),
        (["--lr-range", "1e-2,1e-4"], "low <= high"),
        (["--lr-range", "fast"], "--lr-range must be LOW,HIGH"),
    ]
    for extra, message in cases:
        arguments = [str(value) for value in attack_arguments(toy_organism, finetuned_base, *extra)]
        with pytest.raises(UserError, match=message):
            relearn.main([*arguments, "--output-root", str(tmp_path / "out")])
    with pytest.raises(UserError, match="models/no-such-base"):
        relearn.main(["--model-a", "models/no-such-base", "--model-b", str(finetuned_base), "--preset", "toy"])
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_bad_input_from_the_command_line_is_one_line_and_a_nonzero_exit(toy_organism: ToyOrganism,
                                                                      finetuned_base: Path, tmp_path: Path):
    result = run_script("experiment/relearn_attack.py", *attack_arguments(toy_organism, finetuned_base, "--lr-range",
                                                                          "1e-2,1e-4"),
                        "--output-root", tmp_path / "out", cwd=toy_organism.workspace, check=False)
    assert_user_error(result, "low <= high")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_pre_flight_stops_a_base_that_does_not_know_the_forget_facts(toy_organism: ToyOrganism, tmp_path: Path):
    result = run_in_process("experiment/relearn_attack.py", "--model-a", toy_organism.filtered, "--preset", "toy",
                            "--check-baseline-only", "--device", "cpu", cwd=toy_organism.workspace)
    assert_user_error(result, "pre-flight check failed", "BASELINE_MIN_FORGET_ACC=0")
    disabled = run_in_process("experiment/relearn_attack.py", "--model-a", toy_organism.filtered, "--preset", "toy",
                              "--check-baseline-only", "--baseline-min-forget-acc", "0", "--device", "cpu",
                              cwd=toy_organism.workspace)
    assert disabled.returncode == 0 and "pre-flight" in disabled.stdout


# ---- a small real attack -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_attack_on_the_organism_writes_conditions_and_recovery(toy_organism: ToyOrganism, finetuned_base: Path,
                                                               tmp_path: Path):
    run_script("experiment/relearn_attack.py", *attack_arguments(toy_organism, finetuned_base, "--lr-range",
                                                                 "1e-3,1e-3"),
               "--output-root", tmp_path, cwd=toy_organism.workspace)
    comparison = tmp_path / f"{toy_organism.base.name}__to__{finetuned_base.name}" / "relearn_attack_seed42"
    summary = read_csv(comparison / "summary.csv")
    assert len(summary) == 1 and list(summary[0]) == relearn.SUMMARY_COLUMNS
    row = {key: float(value) for key, value in summary[0].items() if key.endswith(("_rtt", "_before", "_unlearned",
                                                                                    "_filtered"))}
    assert row["base_before"] >= 0.8  # the organism's base knows V
    assert row["c_base_rtt"] >= 0.8  # fine-tuning on T does not destroy V for base
    assert row["f0_filtered"] <= 0.4 and row["f_filtered_rtt"] <= 0.45  # filtered never saw V: nothing to recover
    conditions = read_csv(comparison / "conditions.csv")
    assert [condition["condition"] for condition in conditions] == ["A", "B", "C", "F"]
    assert (comparison / "attack_curves.png").stat().st_size > 10_000
    for model in (toy_organism.base, toy_organism.filtered, finetuned_base):
        runs = read_csv(tmp_path / model.name / "relearn_attack_seed42" / "runs.csv")
        assert [int(run["epoch"]) for run in runs] == [0, 1]
        identity = json.loads((tmp_path / model.name / "relearn_attack_seed42" / "identity.json").read_text())
        assert identity["settings"]["learning_rates"] == [1e-3]
        assert identity["models"]["model"]["source"] == str(model.resolve())
