"""The report (experiment/report.py): it reads the steps' files, averages seeds, and names what is missing."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from brittle.cli import UserError, run_cli
from brittle.outputs import read_csv, write_csv, write_json
from conftest import load_script

steps = load_script("experiment/steps.py")  # the step registry report.py imports
report = load_script("experiment/report.py")


def write_seed(root: Path, seed: int, forget_b: float, recovery: float, delta_scale: float) -> tuple[str, str]:
    """Hand-made outputs of Step 0, Step 1 and Step 13 for one seed's Base -> Unlearned comparison."""
    base, unlearned = f"toy-base-s{seed}", f"toy-unlearned-s{seed}"
    write_json(root / base / "evals" / "summary.json", {"toy_forget_mcq": {"acc": 1.0}, "toy_retain_mcq": {"acc": 1.0}})
    write_json(root / unlearned / "evals" / "summary.json",
               {"toy_forget_mcq": {"acc": forget_b}, "toy_retain_mcq": {"acc": 0.9}})
    comparison = root / f"{base}__to__{unlearned}"
    # two matrices: ‖ΔW‖ = (3, 4) * scale, ‖W‖ = (6, 8) -> whole-model relative change 0.5 * scale
    write_csv(comparison / "weight_comparison" / "per_matrix.csv", [
        {"name": "layers.0.attention.dense.weight", "layer": 0, "group": "attn", "dW_fro": 3 * delta_scale,
         "W_fro": 6, "dW_spectral_rel": 0.1, "dW_stable_rank": 1.0},
        {"name": "layers.0.mlp.dense_4h_to_h.weight", "layer": 0, "group": "mlp", "dW_fro": 4 * delta_scale,
         "W_fro": 8, "dW_spectral_rel": 0.2, "dW_stable_rank": 3.0},
    ])
    # the attack: B goes 0.25 -> 0.25 + recovery * 0.7 on V, the base (C) reaches 0.95
    attack = f"relearn_attack_seed{seed}"
    write_csv(root / unlearned / attack / "runs.csv", [{"epoch": 0, "v_accuracy": 0.25},
                                                      {"epoch": 1, "v_accuracy": 0.25 + recovery * 0.7}])
    write_csv(root / base / attack / "runs.csv", [{"epoch": 0, "v_accuracy": 1.0}, {"epoch": 1, "v_accuracy": 0.95}])
    return base, unlearned


def test_cells_average_seeds_and_name_every_missing_step(tmp_path: Path):
    root = tmp_path / "outputs"
    # Models named as the pipeline names local folders ("models/<name>", which need not exist from here).
    comparisons = [["--comparison", "COMP2 Base -> Unlearned",
                    *(f"models/{name}" for name in write_seed(root, seed, forget_b, recovery, scale))]
                   for seed, forget_b, recovery, scale in ((42, 0.3, 0.8, 1.0), (123, 0.5, 0.6, 2.0))]
    report.main([argument for triple in comparisons for argument in triple] +
                ["--preset", "toy", "--output-root", str(root)])

    summary = {row["measure"]: row for row in read_csv(root / "report_summary.csv")}
    forget = summary["forget acc (toy_forget_mcq), B"]
    assert int(forget["n"]) == 2 and float(forget["mean"]) == pytest.approx(0.4)
    assert float(forget["std"]) == pytest.approx(math.sqrt(0.02))  # sample std of 0.3 and 0.5
    change = summary["‖ΔW‖_F / ‖W‖_F, whole model"]
    assert [float(value) for value in change["values"].split()] == pytest.approx([0.5, 1.0])
    assert float(summary["max σ₁(ΔW) / σ₁(W)"]["mean"]) == pytest.approx(0.2)
    assert float(summary["mean stable rank of ΔW"]["mean"]) == pytest.approx(2.0)
    assert float(summary["recovery rate (B − A) / (C − A)"]["mean"]) == pytest.approx(0.7)
    assert summary["local Lipschitz B/A, forget"]["n"] == "0"

    page = (root / "report.html").read_text()
    assert "0.400 ± 0.141 (n=2)" in page
    assert page.count("COMP2 Base -&gt; Unlearned") >= 2  # the column header and the list of comparisons
    missing = page[page.index("<h2>Missing</h2>"):]
    for step in ("Step 12 lipschitzness", "Step 3 activation_comparison", "Step 6 wmdp_logit_lens",
                 "Step 5 linear_probes"):
        assert step in missing
    assert "Step 0 evals" not in missing  # every Step 0 file exists


def test_attack_rows_of_a_comparison_the_attacks_do_not_run_on_are_not_applicable_not_missing(tmp_path: Path):
    root = tmp_path / "outputs"
    base, unlearned = write_seed(root, 42, 0.3, 0.8, 1.0)
    checkpoint = "toy-base-midtrain-s42"  # COMP3: the pipeline never attacks the pretraining checkpoint
    write_json(root / checkpoint / "evals" / "summary.json", {"toy_forget_mcq": {"acc": 0.5}})
    manifest = tmp_path / "seed42.tsv"
    manifest.write_text(f"COMP2 Base -> Unlearned\tmodels/{base}\tmodels/{unlearned}\t1\n"
                        f"COMP3 Base -> Pretraining checkpoint\tmodels/{base}\tmodels/{checkpoint}\t0\n")
    report.main(["--manifest", str(manifest), "--preset", "toy", "--output-root", str(root)])
    rows = {(row["comparison"], row["measure"]): row for row in read_csv(root / "report_summary.csv")}
    assert float(rows[("COMP2 Base -> Unlearned", "recovery rate (B − A) / (C − A)")]["mean"]) == pytest.approx(0.8)
    assert rows[("COMP3 Base -> Pretraining checkpoint", "recovery rate (B − A) / (C − A)")]["n"] == "0"
    page = (root / "report.html").read_text()
    assert "n/a (not attacked)" in page
    missing = page[page.index("<h2>Missing</h2>"):]
    assert f"{base}__to__{checkpoint}/weight_comparison" in missing  # COMP3's own missing steps are still named
    assert not any("midtrain" in line and "relearn_attack" in line for line in missing.split("<li>"))
    with pytest.raises(UserError, match="0 or 1"):
        manifest.write_text(f"COMP2\tmodels/{base}\tmodels/{unlearned}\tyes\n")
        report.main(["--manifest", str(manifest), "--output-root", str(root)])


def test_an_unreadable_file_is_reported_not_fatal(tmp_path: Path):
    root = tmp_path / "outputs"
    base, unlearned = write_seed(root, 42, 0.3, 0.8, 1.0)
    (root / f"{base}__to__{unlearned}" / "weight_comparison" / "per_matrix.csv").write_text("name,layer\nx,0\n")
    report.main(["--preset", "toy", "--output-root", str(root)])  # comparisons discovered from the folders
    page = (root / "report.html").read_text()
    assert "cannot read" in page and "per_matrix.csv" in page and "KeyError" in page


def test_no_outputs_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture):
    with pytest.raises(UserError, match="does not exist"):
        report.main(["--output-root", str(tmp_path / "nowhere")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exit_request:  # as on the command line (the pipeline runs it there)
        run_cli(lambda: report.main(["--output-root", str(tmp_path / "empty")]))
    assert exit_request.value.code != 0
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: no comparison folders")


def test_a_number_from_a_misspelt_step_or_folder_fails_when_the_report_is_defined():
    with pytest.raises(steps.UnknownStepError, match="unknown step 'weight_comparisn'; the steps are: evals"):
        report.Measure("x", "weight_comparisn", "comparison", "per_matrix.csv", report.mlp_share)
    with pytest.raises(ValueError, match="does not write a folder 'wmdp_logit_lenz'"):
        report.Measure("x", "wmdp_tuned_lens", "model_b", "a.csv", report.csv_last("accuracy"),
                       folder="wmdp_logit_lenz")
    with pytest.raises(ValueError, match="does not write a folder 'plots'"):
        report.KeyPlot("x", "weight_comparison", (("comparison", "a.png"),), folder="plots")
    # Every number of the page is named after its step's registered folder.
    measures = [measure for row in report.big_picture_rows("f", "r") for measure in row.measures]
    assert {measure.source.split("/")[0] for measure in measures} <= {
        output for entry in steps.STEPS for output in (*entry.outputs, *(f.replace("{seed}", "*")
                                                                           for _, f in entry.also_writes))}
    assert {measure.step_label for measure in measures if measure.step == "relearn_attack"} == {
        "Step 13 relearn_attack"}


def test_the_report_logs_its_means_to_wandb_when_configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    logged = []
    monkeypatch.setattr(report, "log_to_wandb", lambda *args, **kwargs: logged.append(args))
    root = tmp_path / "outputs"
    write_seed(root, 42, 0.3, 0.8, 1.0)
    report.main(["--preset", "toy", "--output-root", str(root)])
    _, run_name, config, metrics = logged[0]
    assert run_name == "report/toy" and config["preset"] == "toy"
    label = "toy-base-s42__to__toy-unlearned-s42"
    assert metrics[f"{label}/forget acc (toy_forget_mcq), B"] == pytest.approx(0.3)
    assert f"{label}/local Lipschitz B/A, forget" not in metrics  # missing numbers are not logged
