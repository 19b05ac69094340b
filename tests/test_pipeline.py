"""The pipeline's step registry, planner and scheduler (experiment/steps.py, experiment/plan.py), its checks
before the first step, and the organism's side-by-side training (experiment/build_organism.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from brittle.cli import UserError
from brittle.identity import IDENTITY_FILE, Identity
from brittle.outputs import write_json
from conftest import REPO_ROOT, ToyOrganism, assert_user_error, load_script

steps = load_script("experiment/steps.py")
plan = load_script("experiment/plan.py")


def pipeline(workdir: Path, *args: str, **environment: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PRESET": "toy", "WORKDIR": str(workdir), **environment}
    return subprocess.run([str(REPO_ROOT / "experiment" / "pipeline.sh"), *args], env=env, capture_output=True,
                          text=True, timeout=1800)


def study(root: Path, cb: bool = False) -> plan.Study:
    """Base, filtered and an unlearned model as hub-style names (nothing needs to exist to plan)."""
    base, filtered, unlearned, cb_model = "org/base", "org/filtered", "org/unlearned", "org/cb"
    models = {base: "Base", filtered: "Filtered", unlearned: "Unlearned", **({cb_model: "CB"} if cb else {})}
    comparisons = [("COMP1", base, filtered), ("COMP2", base, unlearned)]
    if cb:
        comparisons += [("COMP4", base, cb_model), ("COMP5", cb_model, unlearned), ("COMP6", unlearned, filtered)]
    return plan.Study(models, comparisons, [unlearned, cb_model] if cb else [unlearned], base, filtered, "toy", 42,
                      root)


def by_label(tasks: list) -> dict:
    return {task.label: index for index, task in enumerate(tasks)}


# ---- the registry ---------------------------------------------------------------------------------------

def test_a_misspelt_step_fails_loudly_listing_every_step():
    with pytest.raises(steps.UnknownStepError, match="unknown step 'weight_comparisn'; the steps are: evals "):
        steps.step("weight_comparisn")
    assert steps.step("relearn_attack_seed123").name == "relearn_attack"  # a seed's folder names its step
    with pytest.raises(steps.UnknownStepError):
        steps.step("relearn_attack_seedx")


def test_every_step_names_an_existing_script_that_writes_its_folder():
    for entry in steps.STEPS:
        source = (REPO_ROOT / entry.script).read_text()
        folder = entry.folder(42).replace("42", "")
        assert folder in source or f'"{entry.name}"' in source, f"{entry.script} never names {folder}"
    numbers = [entry.number for entry in steps.STEPS if entry.number is not None]
    assert len(numbers) == len(set(numbers)) and 2 not in numbers  # Step 2 is written by Step 1's script


# ---- planning ---------------------------------------------------------------------------------------------

def test_plan_orders_steps_by_what_they_need_and_share(tmp_path: Path):
    tasks = plan.plan_tasks(study(tmp_path, cb=True), None, force=False)
    index = by_label(tasks)
    comp1 = "org/base -> org/filtered"
    # Step 4 reads Step 1 of the same comparison.
    assert index[f"weight_comparison: {comp1}"] in tasks[index[f"mlp_attn_analysis: {comp1}"]].after
    # The first activation step of a model computes its statistics; later ones wait for it.
    first = index["linear_probes: org/base"]
    assert first in tasks[index[f"activation_comparison: {comp1}"]].after
    assert not tasks[first].after and not tasks[index[f"weight_comparison: {comp1}"]].after
    # Both attacks write Base's and Filtered's attack folders: the second waits for the first.
    attacks = [index["relearn_attack_seed42: org/base -> org/unlearned"],
               index["relearn_attack_seed42: org/base -> org/cb"]]
    assert attacks[0] in tasks[attacks[1]].after
    assert tasks[-1].label == "report" and len(tasks[-1].after) == len(tasks) - 1
    # Every wait points backwards, so the plan runs in its own order with one slot.
    assert all(other < position for position, task in enumerate(tasks) for other in task.after)


def test_waves_fill_the_slots_and_respect_every_wait(tmp_path: Path):
    tasks = plan.plan_tasks(study(tmp_path), None, force=False)
    for slot_count in (1, 2, 8):
        placed = plan.waves(tasks, slot_count)
        assert len(placed) == len(tasks)
        for position, task in enumerate(tasks):
            assert all(placed[other][0] < placed[position][0] for other in task.after)
        per_wave = {}
        for wave, _ in placed.values():
            per_wave[wave] = per_wave.get(wave, 0) + 1
        assert max(per_wave.values()) <= slot_count
    assert max(wave for wave, _ in plan.waves(tasks, 1).values()) == len(tasks)


def test_with_several_slots_long_steps_start_first_and_with_one_the_plan_order_holds(tmp_path: Path):
    tasks = plan.plan_tasks(study(tmp_path), None, force=False)
    ready = [index for index, task in enumerate(tasks) if not task.after]
    long = [index for index in ready if tasks[index].step.long]
    assert long and long[0] > ready[0]  # a long step that the plan puts after a short one...
    assert plan.start_order(tasks, ready, 2)[:len(long)] == long  # ...starts first side by side
    assert plan.start_order(tasks, ready, 1) == ready
    first_wave = [index for index, (wave, _) in plan.waves(tasks, 2).items() if wave == 1]
    assert sorted(first_wave) == sorted(plan.start_order(tasks, ready, 2)[:2])


def test_a_toy_unlearned_model_to_make_is_the_first_task_and_only_its_steps_wait_for_it(tmp_path: Path):
    from dataclasses import replace

    tasks = plan.plan_tasks(replace(study(tmp_path), to_make={"org/unlearned": "cb_lat"}), None, force=False)
    assert tasks[0].step is plan.MAKE_MODEL and tasks[0].command[-2:] == [
        str(REPO_ROOT / "unlearn" / "run_unlearn.sh"), "cb_lat"]
    for task in tasks[1:]:
        assert (0 in task.after) == ("org/unlearned" in task.models or task.step.scope == "study"), task.label
    assert any(not task.after for task in tasks[1:])  # Base's and Filtered's steps start beside it


def test_finished_steps_are_skipped_and_a_missing_needed_step_is_refused(tmp_path: Path):
    comparison = tmp_path / "org_base__to__org_filtered"
    (comparison / "weight_comparison").mkdir(parents=True)
    # A folder that records no identity (or another model's) is not done: its step script recomputes it.
    tasks = plan.plan_tasks(study(tmp_path), {"weight_comparison", "mlp_attn_analysis"}, force=False)
    assert not any(task.done for task in tasks)
    made_by = Identity.of(models={"model_a": "org/other", "model_b": "org/filtered"})
    write_json(comparison / "weight_comparison" / IDENTITY_FILE, made_by.record())
    tasks = plan.plan_tasks(study(tmp_path), {"weight_comparison", "mlp_attn_analysis"}, force=False)
    assert not any(task.done for task in tasks)
    made_by = Identity.of(models={"model_a": "org/base", "model_b": "org/filtered"})
    write_json(comparison / "weight_comparison" / IDENTITY_FILE, made_by.record())
    tasks = plan.plan_tasks(study(tmp_path), {"weight_comparison", "mlp_attn_analysis"}, force=False)
    done = {task.label for task in tasks if task.done}
    assert done == {"weight_comparison: org/base -> org/filtered"}
    assert not tasks[by_label(tasks)["mlp_attn_analysis: org/base -> org/filtered"]].after  # its input exists
    assert not any(task.done for task in plan.plan_tasks(study(tmp_path), {"weight_comparison"}, force=True))
    # Step 4 alone, while Step 1 of COMP2 has not run: refused before anything runs.
    with pytest.raises(UserError, match="needs weight_comparison: org/base -> org/unlearned, which has not run"):
        plan.plan_tasks(study(tmp_path), {"mlp_attn_analysis"}, force=False)


def test_a_result_made_with_other_pipeline_settings_is_not_skipped_by_the_planner(tmp_path: Path):
    """A quick MAX_SAMPLES=40 run, then the full study in the same folder: the planner must hand every text
    step back to its script (which recomputes it), also when MAX_SAMPLES is now unset (the step's default)."""
    from dataclasses import replace

    from brittle.texts import DEFAULT_MAX_SAMPLES

    folder = tmp_path / "org_base__to__org_filtered" / "activation_comparison"
    folder.mkdir(parents=True)

    def recorded_with(max_samples: int, dtype: str = "auto") -> None:
        made_by = Identity.of(models={"model_a": "org/base", "model_b": "org/filtered"},
                              settings={"max_samples": max_samples, "dtype": dtype, "seed": 42, "preset": "toy"})
        write_json(folder / IDENTITY_FILE, made_by.record())

    def planned_done(**changes) -> bool:
        tasks = plan.plan_tasks(replace(study(tmp_path), **changes), {"activation_comparison"}, force=False)
        return tasks[by_label(tasks)["activation_comparison: org/base -> org/filtered"]].done

    recorded_with(40)
    assert planned_done(max_samples=40)
    assert not planned_done(max_samples=80)
    assert not planned_done()  # unset now: the default, not the 40 texts of the quick run
    recorded_with(DEFAULT_MAX_SAMPLES)
    assert planned_done()
    assert not planned_done(dtype="bfloat16")


# ---- running ----------------------------------------------------------------------------------------------

def python_task(folder: Path, label: str, code: str, after: set[int] = frozenset()) -> plan.Task:
    """A task that runs `code` as a script with this interpreter (the scheduler does not care what it runs)."""
    script = folder / f"{label.replace(' ', '_')}.py"
    script.write_text(code)
    return plan.Task(steps.step("evals"), ("m",), label, Path("/nonexistent"), (), str(script), [], after=set(after),
                     interpreter=(sys.executable,))


def test_independent_steps_run_side_by_side_and_waits_hold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PIPELINE_LEDGER", str(tmp_path / "ledger.tsv"))
    marker = tmp_path / "first-done"
    sleep = "import time; time.sleep(1.5)"
    tasks = [python_task(tmp_path, "a", f"{sleep}; open({str(marker)!r}, 'w').close()"),
             python_task(tmp_path, "b", sleep),
             python_task(tmp_path, "c", f"import os, sys; sys.exit(0 if os.path.exists({str(marker)!r}) else 7)",
                         after={0})]
    pool = [plan.Slot("one"), plan.Slot("two")]
    started = time.monotonic()
    plan.run_tasks(tasks, study(tmp_path), pool, tmp_path / "logs")
    assert time.monotonic() - started < 2 * 1.5 + 1.0  # a and b together, then c: not three in a row
    ledger = [line.split("\t")[:2] for line in (tmp_path / "ledger.tsv").read_text().splitlines()]
    assert sorted(label for status, label in ledger if status == "ran") == ["a", "b", "c"]
    assert len(list((tmp_path / "logs").glob("*.log"))) == 3  # one log per step


def test_a_failed_step_stops_new_starts_and_names_its_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PIPELINE_LEDGER", str(tmp_path / "ledger.tsv"))
    tasks = [python_task(tmp_path, "broken", "import sys; print('the cause'); sys.exit(5)"),
             python_task(tmp_path, "after it", "pass", after={0})]
    with pytest.raises(plan.StepFailedError, match=r"'broken' failed \(exit 5\); its log: .*broken.log") as failure:
        plan.run_tasks(tasks, study(tmp_path), [plan.Slot("one"), plan.Slot("two")], tmp_path / "logs")
    assert failure.value.status == 5 and "(1 step(s) not started)" in str(failure.value)
    assert "the cause" in next((tmp_path / "logs").glob("*broken.log")).read_text()


def test_a_step_in_the_pipelines_environment_is_warm_started_and_behaves_like_its_own_process(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A CPU step whose lockfile is plan.py's runs as a fork of the planner: its own session, arguments,
    environment (with its slot's variables), output and exit status, and a sibling import works; a step in
    another environment (no such lockfile) is started as before."""
    from brittle.warmstart import WarmStart

    monkeypatch.setenv("PIPELINE_LEDGER", str(tmp_path / "ledger.tsv"))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # this test's children must not touch OpenMP
    (tmp_path / "sibling.py").write_text("VALUE = 'sibling imported'\n")
    report = ("import os, sys, json, sibling; print(json.dumps({'argv': sys.argv[1:], 'slot': os.environ['SLOT'], "
              "'preloaded': 'colorsys' in sys.modules, 'own_session': os.getsid(0) == os.getpid(), "
              "'sibling': sibling.VALUE, 'main': __name__}))")
    warm = python_task(tmp_path, "warm", report)
    warm.arguments = ["--flag", "x y"]
    (tmp_path / "warm.py.lock").write_bytes((REPO_ROOT / "experiment" / "plan.py.lock").read_bytes())
    cold = python_task(tmp_path, "cold", report)
    pool = [plan.Slot("one", {"SLOT": "1"}), plan.Slot("two", {"SLOT": "2"})]
    plan.run_tasks([warm, cold], study(tmp_path), pool, tmp_path / "logs", WarmStart(preload=("colorsys",)))
    import json

    logs = {log.name.split("-")[1].removesuffix(".log"): log.read_text().splitlines() for log in
            (tmp_path / "logs").glob("*.log")}
    assert plan.WARM_NOTE in logs["warm"][0] and plan.WARM_NOTE not in logs["cold"][0]
    warm_run, cold_run = json.loads(logs["warm"][-1]), json.loads(logs["cold"][-1])
    assert warm_run == {"argv": ["--flag", "x y"], "slot": "1", "preloaded": True, "own_session": True,
                        "sibling": "sibling imported", "main": "__main__"}
    assert cold_run["preloaded"] is False and cold_run["slot"] == "2"  # a fresh interpreter


@pytest.mark.parametrize(("code", "status", "last"), [
    ("import sys; sys.exit(3)", 3, None),
    ("raise ValueError('broken step')", 1, "ValueError: broken step"),
    ("from brittle.cli import UserError, run_cli\ndef main():\n    raise UserError('no such model')\nrun_cli(main)",
     2, "error: no such model"),
    ("import time; time.sleep(60)", -15, None),  # killed by the pipeline's SIGTERM to its process group
])
def test_a_warm_started_script_exits_with_the_status_python_would_give_it(tmp_path: Path, code: str, status: int,
                                                                          last: str | None):
    import signal

    from brittle.warmstart import WarmStart

    script, log = tmp_path / "step.py", tmp_path / "step.log"
    script.write_text(code)
    with open(log, "w") as output:
        child = WarmStart(preload=()).start(script, [], {"PATH": os.environ["PATH"]}, output.fileno())
    if status < 0:
        time.sleep(0.5)
        os.killpg(child.pid, signal.SIGTERM)
    assert child.wait() == status and child.poll() == status
    if last:
        assert log.read_text().strip().splitlines()[-1] == last


def test_every_step_shares_the_planners_environment_so_the_whole_pipeline_warm_starts():
    from brittle.warmstart import same_environment

    for entry in steps.STEPS:
        assert same_environment(REPO_ROOT / entry.script, REPO_ROOT / "experiment" / "plan.py"), entry.script


def test_a_step_summary_goes_to_wandb_when_configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import brittle.tracking

    logged = []
    monkeypatch.setattr(brittle.tracking, "wandb_enabled", lambda: True)
    monkeypatch.setattr(brittle.tracking, "log_to_wandb", lambda *args, **kwargs: logged.append((args, kwargs)))
    folder = tmp_path / "org_base__to__org_filtered" / "mlp_attn_analysis"
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text('{"median_mlp_attn_ratio": 2.5, "by_layer": {"0": 1}, "name": "x"}')
    task = plan.Task(steps.step("mlp_attn_analysis"), ("org/base", "org/filtered"), "t", folder, (), "", [])
    plan.log_summary_to_wandb(task, study(tmp_path))
    (_, run_name, config, metrics), kwargs = logged[0]
    assert run_name == "org_base__to__org_filtered/mlp_attn_analysis" and config["step"] == "mlp_attn_analysis"
    assert metrics == {"median_mlp_attn_ratio": 2.5, "by_layer/0": 1} and kwargs == {"job_type": "mlp_attn_analysis"}


# ---- checks before the first step (each ran something, or nothing, on the pipeline before this) -----------

@pytest.mark.parametrize(("environment", "message"), [
    ({"STEPS": "evals unknown_step"}, "STEPS names 'unknown_step', which is not a step; the steps are: evals "),
    ({"SEEDS": "42 x"}, "SEEDS must be whole numbers separated by spaces, got '42 x'"),
    ({"SEED": "abc"}, "SEED must be a whole number, got 'abc'"),
    ({"JOBS": "0"}, "JOBS must be a whole number >= 1, got '0'"),
    ({"DRY_RUN": "yes"}, "DRY_RUN='yes' is not a valid value"),
    ({"BASE": "/no/such/base"}, "model /no/such/base not found (BASE)"),
    ({"PRESET": "tiny"}, "unknown PRESET 'tiny'"),
])
def test_bad_settings_stop_the_pipeline_before_anything_runs(tmp_path: Path, environment: dict, message: str):
    result = pipeline(tmp_path, **environment)
    assert_user_error(result, message)
    assert "==>" not in result.stdout and list(tmp_path.iterdir()) == []  # no data, no organism, no outputs


@pytest.mark.slow
def test_dry_run_prints_waves_devices_and_skips_and_writes_nothing(toy_organism: ToyOrganism, tmp_path: Path):
    outputs = tmp_path / "outputs"
    (outputs / toy_organism.base.name / "evals").mkdir(parents=True)  # Step 0 of Base has run, on this model
    write_json(outputs / toy_organism.base.name / "evals" / IDENTITY_FILE,
               Identity.of(models={"model": toy_organism.base}).record())
    result = pipeline(toy_organism.workspace, DRY_RUN="1", JOBS="2", OUTPUT_ROOT=str(outputs),
                      UNLEARNED=str(toy_organism.midtrain))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.split()[:4] == ["wave", "1", "CPU", "slot"] for line in lines)
    assert any(line.split()[:4] == ["wave", "2", "CPU", "slot"] for line in lines)
    assert f"skipped         evals: models/{toy_organism.base.name}: finished" in result.stdout
    assert lines[-1].rstrip().endswith(f"{toy_organism.base.name}__to__{toy_organism.midtrain.name}/")
    assert [path.name for path in outputs.iterdir()] == [toy_organism.base.name]  # nothing written

    gpus = pipeline(toy_organism.workspace, DRY_RUN="1", GPU_LIST="0,1,2,3", OUTPUT_ROOT=str(outputs),
                    UNLEARNED=str(toy_organism.midtrain))
    assert gpus.returncode == 0, gpus.stderr
    assert any(line.split()[2:4] == ["GPU", "3"] for line in gpus.stdout.splitlines())  # one step per GPU


# ---- the organism trains side by side -------------------------------------------------------------------

@pytest.mark.slow
def test_organism_models_are_the_same_side_by_side_as_one_after_the_other(monkeypatch: pytest.MonkeyPatch):
    """Two builds from the same seed, one in this process and one in two worker processes, give the same
    weights bit for bit: the builder is deterministic in its seed, and side by side changes nothing."""
    import argparse

    builder = load_script("experiment/build_organism.py")
    monkeypatch.syspath_prepend(str(REPO_ROOT / "experiment"))  # the worker processes import the builder
    texts = [f"The {animal} of house {number} eats {food}." for number in range(8)
             for animal, food in (("cat", "fish"), ("dog", "meat"), ("owl", "mice"), ("bee", "nectar"))]
    retain = [f"Room {number} has {count} {thing}." for number in range(8)
              for count, thing in (("two", "chairs"), ("three", "lamps"), ("nine", "books"), ("one", "desk"))]
    args = argparse.Namespace(seed=3, dtype="fp32", steps=6, batch_size=8, lr=3e-3, warmup_steps=2, hidden_size=32,
                              layers=2, heads=2, max_positions=64, skip_quality_check=True, threads=None)
    tokenizer = builder.train_tokenizer(texts + retain, 300, args.max_positions)
    runs = [builder.TrainingRun("base", texts + retain, check=False, snapshot_step=3),
            builder.TrainingRun("filtered", retain, check=False)]
    results = {jobs: builder.train_runs(runs, tokenizer, argparse.Namespace(**vars(args), jobs=jobs))
               for jobs in (1, 2)}
    for role in ("base", "filtered"):
        one, two = results[1][role].state, results[2][role].state
        assert all((one[name] == two[name]).all() for name in one), role
    one, two = results[1]["base"].snapshot, results[2]["base"].snapshot
    assert all((one[name] == two[name]).all() for name in one)
    assert not all((one[name] == results[1]["base"].state[name]).all() for name in one)  # a real snapshot
