"""Unlearning end to end on the toy organism: run_unlearn.sh, skipping, folders, analysis, bad input, sweeps.

One real run with the toy defaults (`ga`, about a minute) is shared by the tests that read its folder;
the other runs are capped at a few optimizer steps. Everything goes through the shell drivers exactly
as a user types them, with the session workspace as WORKDIR.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from brittle.outputs import read_csv
from conftest import REPO_ROOT, ToyOrganism, assert_user_error, run_script

pytestmark = pytest.mark.slow

RUN_UNLEARN = REPO_ROOT / "unlearn" / "run_unlearn.sh"
PARALLEL_SWEEP = REPO_ROOT / "unlearn" / "parallel_sweep.sh"
SWEEP = REPO_ROOT / "unlearn" / "sweep_unlearn.sh"


def run_unlearn(workspace: Path, method: str, root: Path | None = None, timeout: int = 600,
                **settings: str) -> subprocess.CompletedProcess:
    """`PRESET=toy SEED=42 [SETTINGS...] ./unlearn/run_unlearn.sh METHOD` in the workspace."""
    env = {**os.environ, "PRESET": "toy", "SEED": "42", "WORKDIR": str(workspace), **settings}
    if root is not None:
        env["UNLEARNED_ROOT"] = str(root)
    return subprocess.run([str(RUN_UNLEARN), method], env=env, capture_output=True, text=True, timeout=timeout)


def succeeded(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"run failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@dataclass(frozen=True)
class FinishedRun:
    root: Path
    folder: Path
    output: subprocess.CompletedProcess


@pytest.fixture(scope="module")
def ga_run(toy_organism: ToyOrganism, tmp_path_factory: pytest.TempPathFactory) -> FinishedRun:
    """`PRESET=toy ./unlearn/run_unlearn.sh ga` with the toy defaults: trained, saved and evaluated."""
    root = tmp_path_factory.mktemp("unlearned_models")
    output = succeeded(run_unlearn(toy_organism.workspace, "ga", root))
    folders = [path for path in root.iterdir()]
    assert len(folders) == 1, folders
    return FinishedRun(root, folders[0], output)


# ---- one real run ----------------------------------------------------------------------------------------

def test_ga_with_toy_defaults_unlearns_and_keeps_retain_knowledge(ga_run: FinishedRun):
    folder = ga_run.folder
    assert folder.name == "toy-base-s42__ga__ep1_lr1e-03_bs4_rw1.0"
    files = {path.relative_to(folder).as_posix() for path in folder.rglob("*")}
    assert {"config.json", "model.safetensors", "tokenizer.json", "unlearn_run.json", "training_log.csv",
            "training_curves.png", "README.md", "evals/summary.json", "evals/high_level_summary.md",
            "evals/tasks/toy_forget_mcq.json"} <= files
    summary = json.loads((folder / "evals" / "summary.json").read_text())
    assert set(summary) == {"toy_forget_mcq", "toy_forget_mcq_t", "toy_forget_mcq_v", "toy_retain_mcq"}
    # Base scores 1.00 on both; Filtered (never saw the forget facts) 0.27 / 1.00; chance is 0.25.
    assert summary["toy_forget_mcq"]["acc"] <= 0.6
    assert summary["toy_retain_mcq"]["acc"] >= 0.8
    record = json.loads((folder / "unlearn_run.json").read_text())
    assert record["method"] == "ga" and record["weights_saved"] and record["evaluated"]
    assert record["optimizer_steps"] == 135  # 540 forget training texts / batch 4, one epoch
    assert record["hyperparameters"]["lr"] == 1e-3 and record["hyperparameters"]["layer_id"] == "1,2"
    before, after = record["heldout_before"], record["heldout_after"]
    # Held-out forget text became unlikely; held-out retain text barely moved. Gradient ascent is unbounded,
    # so the exact rises depend on float summation order (thread count) and on the organism build: one run
    # measured forget 0.44 -> 36.3 and retain 0.44 -> 1.07 nats, another a retain rise of 1.42. The bound is
    # on selectivity.
    forget_rise, retain_rise = after["forget_nll"] - before["forget_nll"], after["retain_nll"] - before["retain_nll"]
    assert forget_rise > 1.0
    assert retain_rise < 0.1 * forget_rise
    log = read_csv(folder / "training_log.csv")
    assert {"step", "epoch", "lr", "loss", "forget_nll", "retain_nll", "grad_norm", "heldout_forget_nll",
            "heldout_retain_nll", "heldout_gap"} <= set(log[0])
    assert [row["step"] for row in log] == [str(step) for step in range(136)]
    assert sum(row["heldout_forget_nll"] != "" for row in log) == 1 + 135 // 20 + 1  # before, every 20 steps, end
    assert float(log[-1]["heldout_forget_nll"]) == pytest.approx(after["forget_nll"])
    assert "toy_forget_mcq: acc" in ga_run.output.stdout


def test_second_call_of_a_finished_configuration_skips_before_any_model_loads(ga_run: FinishedRun,
                                                                               toy_organism: ToyOrganism):
    marker = ga_run.folder / "unlearn_run.json"
    written = marker.stat().st_mtime_ns
    result = succeeded(run_unlearn(toy_organism.workspace, "ga", ga_run.root))
    assert result.stdout.startswith("skipped: ga run toy-base-s42__ga__ep1_lr1e-03_bs4_rw1.0 already finished")
    assert "Loading weights" not in result.stderr and "unlearn ga" not in result.stderr
    assert marker.stat().st_mtime_ns == written


def test_print_outdir_prints_only_the_folder(ga_run: FinishedRun, toy_organism: ToyOrganism, tmp_path: Path):
    result = succeeded(run_unlearn(toy_organism.workspace, "ga", ga_run.root, PRINT_OUTDIR="1"))
    assert result.stdout.splitlines() == [str(ga_run.folder)]
    # pipeline.sh's use: the default unlearned model and the CB model, relative to WORKDIR; SEED picks
    # the base model (models/toy-base-s<SEED>) and enters the name. Nothing is loaded, so a bare folder will do.
    (tmp_path / "models" / "toy-base-s7").mkdir(parents=True)
    for method, name in (("cb_lat", "toy-base-s7__cb_lat__ep1_lr2e-03_bs4_a1.0_sc20.0_le0.1_ls5_ly1-2_s7"),
                         ("cb", "toy-base-s7__cb__ep1_lr2e-03_bs4_a1.0_sc20.0_ly1-2_s7")):
        result = succeeded(run_unlearn(tmp_path, method, PRINT_OUTDIR="1", SEED="7"))
        assert result.stdout == f"unlearned_models/{name}\n"
    assert not (tmp_path / "unlearned_models").exists() and not (tmp_path / "data").exists()


def test_unlearn_py_reads_the_settings_variables_and_names_a_misspelt_one(tmp_path: Path):
    (tmp_path / "models" / "toy-base-s42").mkdir(parents=True)  # naming loads nothing: a bare folder will do
    result = succeeded(run_unlearn(tmp_path, "ga", PRINT_OUTDIR="1", LR="5e-4", GRAD_ACCUM_STEPS="2",
                                   RETAIN_WIEGHT="2"))
    assert result.stdout == "unlearned_models/toy-base-s42__ga__ep1_lr5e-04_bs4_rw1.0_acc2\n"
    assert "note: RETAIN_WIEGHT is not a setting of unlearn.py and is ignored; did you mean RETAIN_WEIGHT?" \
        in result.stderr


def test_lora_run_without_saving_keeps_results_but_not_weights(toy_organism: ToyOrganism, tmp_path: Path):
    succeeded(run_unlearn(toy_organism.workspace, "grad_diff", tmp_path, LORA_RANK="8", MAX_STEPS="15",
                          NO_SAVE="1"))
    (folder,) = tmp_path.iterdir()
    assert folder.name == "toy-base-s42__grad_diff__ep1_lr1e-03_bs4_fw1.0_st15_lora8"
    assert not any(folder.glob("*.safetensors")) and (folder / "config.json").is_file()
    record = json.loads((folder / "unlearn_run.json").read_text())
    assert record["weights_saved"] is False and record["evaluated"] is True and record["optimizer_steps"] == 15
    assert record["heldout_after"]["forget_nll"] > record["heldout_before"]["forget_nll"]  # the adapters did train
    assert (folder / "evals" / "summary.json").is_file()


def test_no_eval_run_has_no_evaluation_and_a_later_evaluated_request_trains_again(toy_organism: ToyOrganism,
                                                                                   tmp_path: Path):
    succeeded(run_unlearn(toy_organism.workspace, "ga_simple", tmp_path, MAX_STEPS="2", NO_EVAL="1", NO_SAVE="1"))
    (folder,) = tmp_path.iterdir()
    assert not (folder / "evals").exists()
    assert json.loads((folder / "unlearn_run.json").read_text())["evaluated"] is False
    check = subprocess.run(["uv", "run", "--quiet", str(REPO_ROOT / "unlearn" / "unlearn.py"), "--preset", "toy",
                            "--method", "ga_simple", "--max-steps", "2", "--no-save", "--unlearned-root",
                            str(tmp_path), "--check-only"], cwd=toy_organism.workspace, capture_output=True,
                           text=True, timeout=120)
    assert check.returncode == 1 and "without evaluation" in check.stderr  # not done: it was never evaluated


def test_analyze_runs_ranks_finished_runs_against_the_baselines(ga_run: FinishedRun, toy_organism: ToyOrganism,
                                                                tmp_path: Path):
    for model in (toy_organism.base, toy_organism.filtered):  # Step 0 baselines (skipped when present)
        run_script("experiment/eval.py", "--model", f"models/{model.name}", "--preset", "toy",
                   cwd=toy_organism.workspace)
    report = tmp_path / "best_unlearning_models.md"
    result = run_script("unlearn/analysis/analyze_runs.py", "--preset", "toy", "--unlearned-root", ga_run.root,
                        "--output", report, cwd=toy_organism.workspace)
    assert "1 run(s) ranked" in result.stdout
    text = report.read_text()
    assert "| Base (`models/toy-base-s42`) | 1.000 | 1.000 |" in text
    summary = json.loads((ga_run.folder / "evals" / "summary.json").read_text())
    forget, retain = summary["toy_forget_mcq"]["acc"], summary["toy_retain_mcq"]["acc"]
    assert f"| 1 | ga | {forget:.3f} | {retain:.3f} | {forget - 1:.3f} | {retain - 1:.3f} | `ep1_lr1e-03_bs4_rw1.0` |" \
        in text
    assert (tmp_path / "best_unlearning_models.csv").is_file() and (tmp_path / "best_unlearning_models.png").is_file()


# ---- bad input: one line, non-zero exit, nothing saved ---------------------------------------------------------

@pytest.mark.parametrize(("method", "settings", "phrases"), [
    ("forget_everything", {}, ("unknown method 'forget_everything'",)),
    ("wt_dist", {"LORA_RANK": "4"}, ("wt_dist cannot use LoRA",)),
    ("ga", {"MODEL": "models/no-such-model"}, ("model models/no-such-model not found",)),
    ("rmu", {"LAYER_ID": "1,9"}, ("--layer-id 1,9 is outside the model", "4 decoder layers")),
    ("ga", {"FORGET_DATA": "data/toy/missing.txt"}, ("forget data data/toy/missing.txt does not exist",)),
    ("ga", {"RETAIN_DATA": "overlap"}, ("forget and retain data share 5 line(s)",)),
    ("ga", {"LR": "1e30", "MAX_STEPS": "5", "GRAD_CLIP": "0"}, ("training diverged and nothing was saved",)),
    ("grad_diff", {"MIX_RATIO": "0:1"}, ("--mix-ratio must be R:F",)),
    ("grad_diff", {"FORGET_WEIGHTS": "short"}, ("hold 599 weight(s) but forget data", "has 600 text(s)")),
    ("rapidun", {"FORGET_WEIGHTS": "negative", "RETAIN_WEIGHTS": "ones"}, ("weight -1.0 is negative",)),
])
def test_bad_input_is_one_line_and_saves_nothing(toy_organism: ToyOrganism, tmp_path: Path, method, settings,
                                                 phrases):
    if settings.get("RETAIN_DATA") == "overlap":
        forget = (toy_organism.data / "forget.txt").read_text().splitlines()
        retain = (toy_organism.data / "retain.txt").read_text().splitlines()
        overlapping = tmp_path / "retain_with_forget_lines.txt"
        overlapping.write_text("\n".join(retain[:50] + forget[:5]) + "\n")
        settings = {**settings, "RETAIN_DATA": str(overlapping)}
    weights = {"short": [1.0] * 599, "negative": [1.0] * 599 + [-1.0], "ones": [1.0] * 600}
    for variable in ("FORGET_WEIGHTS", "RETAIN_WEIGHTS"):
        if variable in settings:
            path = tmp_path / f"{variable.lower()}.jsonl"
            path.write_text("".join(json.dumps({"weight": weight}) + "\n" for weight in weights[settings[variable]]))
            settings = {**settings, variable: str(path)}
    root = tmp_path / "unlearned_models"
    assert_user_error(run_unlearn(toy_organism.workspace, method, root, **settings), *phrases)
    assert not root.exists() or not any(root.iterdir())


# ---- RapidUn: weights computed when missing, then influence-weighted LoRA unlearning --------------------------

def test_rapidun_computes_missing_weights_trains_and_then_skips_both(toy_organism: ToyOrganism, tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("forget", "retain"):  # 40 texts each keep the influence pass to seconds
        lines = (toy_organism.data / f"{name}.txt").read_text().splitlines()[:40]
        (data / f"{name}.txt").write_text("\n".join(lines) + "\n")
    settings = {"FORGET_DATA": str(data / "forget.txt"), "RETAIN_DATA": str(data / "retain.txt"), "MAX_STEPS": "10",
                "NO_EVAL": "1", "NO_SAVE": "1"}
    runs = tmp_path / "runs"
    first = succeeded(run_unlearn(toy_organism.workspace, "rapidun", runs, **settings))
    weights_dir = data / "influence_weights" / "toy-base-s42"
    assert {"forget_weights.jsonl", "retain_weights.jsonl", "influence_scores.csv", "weights_histogram.png",
            "influence_weights.json"} <= {path.name for path in weights_dir.iterdir()}
    for name in ("forget", "retain"):
        weights = [json.loads(line)["weight"] for line in (weights_dir / f"{name}_weights.jsonl").open()]
        assert len(weights) == 40 and all(0.2 - 1e-9 <= weight <= 3.0 + 1e-9 for weight in weights)
        assert len(set(weights)) > 1  # influence tells the texts apart
    (folder,) = runs.iterdir()
    # Not the preset's data (40 lines of each): the name carries its fingerprint, then the weights'.
    assert re.fullmatch(r"toy-base-s42__rapidun__ep2_lr1e-03_bs4_aa1.0_db0.5_mr3-1_lora16_st10_d[0-9a-f]{6}"
                        r"_w[0-9a-f]{6}", folder.name), folder.name
    record = json.loads((folder / "unlearn_run.json").read_text())
    assert record["forget_weights"] == str(weights_dir / "forget_weights.jsonl") and record["optimizer_steps"] == 10
    assert record["heldout_after"]["forget_nll"] > record["heldout_before"]["forget_nll"]
    assert "influence weights of 40 forget and 40 retain texts" in first.stderr
    second = succeeded(run_unlearn(toy_organism.workspace, "rapidun", runs, **settings))
    assert "skipped: influence weights already computed" in second.stderr
    assert second.stdout.startswith("skipped: rapidun run")


# ---- parallel sweeps over (fake) GPU groups --------------------------------------------------------------------

FAKE_RUNNER = """#!/usr/bin/env bash
# Stands in for run_unlearn.sh: records the configuration and its GPUs, then works for a while.
echo "$$" > "$RECORDS/pid-$$"
echo "start $(date +%s.%N) $1 LR=$LR RETAIN_WEIGHT=${RETAIN_WEIGHT:-} GPUS=$CUDA_VISIBLE_DEVICES" >> "$RECORDS/log"
sleep "$FAKE_SECONDS"
echo "end $(date +%s.%N) $1 LR=$LR RETAIN_WEIGHT=${RETAIN_WEIGHT:-} GPUS=$CUDA_VISIBLE_DEVICES" >> "$RECORDS/log"
"""


def git_status() -> str:
    return subprocess.run(["git", "status", "--porcelain"], cwd=REPO_ROOT, capture_output=True, text=True,
                          check=True).stdout


@pytest.fixture
def fake_sweep(tmp_path: Path) -> dict[str, str]:
    """Environment for parallel_sweep.sh over four fake GPUs with a fake runner, in a scratch WORKDIR."""
    runner = tmp_path / "fake_run_unlearn.sh"
    runner.write_text(FAKE_RUNNER)
    runner.chmod(0o755)
    records = tmp_path / "records"
    records.mkdir()
    (tmp_path / "work").mkdir()
    # The memory probe reads the toy base model's config.json: ~1M parameters -> ~1,046 MiB to train its most
    # demanding method (CUDA context included), so with 600 MiB per (pretend) GPU it must choose groups of two.
    env = {**os.environ, "GPU_LIST": "0,1,2,3", "GPU_MEMORY_MIB": "600", "PARALLEL_SWEEP_RUNNER": str(runner),
           "RECORDS": str(records), "WORKDIR": str(tmp_path / "work"), "PRESET": "toy", "METHODS": "ga_simple ga",
           "LRS": "1e-3", "PARALLEL_SWEEP_POLL_SECONDS": "0.2", "FAKE_SECONDS": "1"}
    env.pop("GPUS_PER_JOB", None)
    return env


def test_parallel_sweep_runs_every_configuration_once_in_gpu_groups(fake_sweep, toy_organism: ToyOrganism):
    env = {**fake_sweep, "MODEL": str(toy_organism.base)}
    before = git_status()
    result = subprocess.run([str(PARALLEL_SWEEP), str(SWEEP)], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "GPUs per job: 2" in result.stdout and "2 group(s): 0,1 | 2,3" in result.stdout
    assert "4 job(s) succeeded, 0 failed" in result.stdout
    events = [line.split() for line in (Path(env["RECORDS"]) / "log").read_text().splitlines()]
    starts = sorted(" ".join(event[2:5]) for event in events if event[0] == "start")
    assert starts == ["ga LR=1e-3 RETAIN_WEIGHT=1.0", "ga LR=1e-3 RETAIN_WEIGHT=2.0", "ga LR=1e-3 RETAIN_WEIGHT=5.0",
                      "ga_simple LR=1e-3 RETAIN_WEIGHT="]  # every configuration once
    assert sorted(" ".join(event[2:5]) for event in events if event[0] == "end") == starts  # ... and it finished
    assert {event[5] for event in events} == {"GPUS=0,1", "GPUS=2,3"}
    # Never two jobs on one group at once, and both groups busy together at some point.
    timeline = sorted((float(event[1]), 1 if event[0] == "start" else -1, event[5]) for event in events)
    running: dict[str, int] = {}
    most = 0
    for _, change, group in timeline:
        running[group] = running.get(group, 0) + change
        assert running[group] <= 1
        most = max(most, sum(running.values()))
    assert most == 2
    assert git_status() == before


def test_killing_a_parallel_sweep_stops_its_jobs_and_changes_no_tracked_file(fake_sweep, toy_organism: ToyOrganism):
    env = {**fake_sweep, "MODEL": str(toy_organism.base), "FAKE_SECONDS": "60"}
    before = git_status()
    sweep = subprocess.Popen([str(PARALLEL_SWEEP), str(SWEEP)], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    records = Path(env["RECORDS"])
    deadline = time.monotonic() + 120
    while len(list(records.glob("pid-*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(list(records.glob("pid-*"))) == 2, "two jobs should be running, one per GPU group"
    sweep.send_signal(signal.SIGTERM)
    output, _ = sweep.communicate(timeout=60)
    assert sweep.returncode != 0 and "stopping" in output
    for pid_file in records.glob("pid-*"):
        pid = int(pid_file.read_text())
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower(), pid
    assert "end" not in (records / "log").read_text()
    assert git_status() == before
