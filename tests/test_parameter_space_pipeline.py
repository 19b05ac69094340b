"""The parameter-space steps (1, 4, 7, 10) on the toy organism, through `PRESET=toy JOBS=2 ./experiment/pipeline.sh`.

The fine-tuned stand-in (`finetuned_base`) plays the unlearned model, so no unlearning runs here; COMP1
(Base -> Filtered, two separately trained models) and COMP2 (Base -> a 40-step fine-tune of Base)
must then look as different in parameter space as they are.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from brittle.outputs import read_csv
from conftest import REPO_ROOT, ToyOrganism, last_line

pytestmark = pytest.mark.slow

PARAMETER_STEPS = "weight_comparison mlp_attn_analysis null_space_analysis mlp_nullspace"
SEED_LAYOUT = {  # the deep-ignorance study's "Output Structure" for these steps
    "weight_comparison": {"per_matrix.csv", "per_component.csv", "per_layer.csv", "per_coarse_layer.csv"},
    "param_plots": {"layer_locality.png", "stable_rank.png", "rank_comparison.png", "spectral_norm.png"},
    "mlp_attn_analysis": {"mlp_attn_summary.csv", "mlp_attn_ratio.png"},
    "null_space_analysis": {"null_space_results.csv", "energy_ratio.png", "effective_rank.png",
                            "subspace_alignment.png"},
    "mlp_nullspace": {"mlp_nullspace_results.csv", "mlp_nullspace_by_layer.csv", "null_space_fraction.png"},
}


def pipeline(workspace: Path, *args: str, **environment: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PRESET": "toy", "WORKDIR": str(workspace), **environment}
    return subprocess.run([str(REPO_ROOT / "experiment" / "pipeline.sh"), *args], env=env, capture_output=True,
                          text=True, timeout=1800)


def total_change(comparison: Path) -> dict:
    return json.loads((comparison / "weight_comparison" / "summary.json").read_text())


def test_pipeline_runs_steps_1_4_7_10_for_both_comparisons_then_skips_them(toy_organism: ToyOrganism,
                                                                           finetuned_base: Path):
    workspace, outputs = toy_organism.workspace, toy_organism.workspace / "outputs"
    settings = {"STEPS": PARAMETER_STEPS, "UNLEARNED": str(finetuned_base)}
    first = pipeline(workspace, JOBS="2", **settings)  # two at a time, each with its own log
    assert first.returncode == 0, f"{first.stdout[-3000:]}\n{first.stderr[-3000:]}"
    started = first.stdout.count("==> started")  # 8 (4 steps x 2 comparisons) unless a kept workspace has them
    assert started == first.stdout.count("==> finished")
    if started:
        assert len(list(max((outputs / ".logs").glob("*-study")).glob("*.log"))) == started  # one log per step
    comp1 = outputs / f"{toy_organism.base.name}__to__{toy_organism.filtered.name}"
    comp2 = outputs / f"{toy_organism.base.name}__to__{finetuned_base.name}"
    for comparison in (comp1, comp2):
        for folder, files in SEED_LAYOUT.items():
            present = {path.name for path in (comparison / folder).iterdir()}
            assert files <= present, f"{comparison.name}/{folder}: missing {files - present}"
        assert f"outputs/{comparison.name}/" in first.stdout  # the summary says where the results are

    # Independently trained (filtered) vs 40 fine-tuning steps: the relative change differs by orders of magnitude.
    filtered_change, finetuned_change = total_change(comp1)["dW_fro_rel_total"], total_change(comp2)["dW_fro_rel_total"]
    assert filtered_change > 0.5 and 0 < finetuned_change < 0.1, (filtered_change, finetuned_change)
    per_matrix = read_csv(comp2 / "weight_comparison" / "per_matrix.csv")
    assert len(per_matrix) == 2 + 4 * 4  # embed_in, embed_out, four matrices in each of the 4 layers
    assert {row["group"] for row in per_matrix if int(row["layer"]) >= 0} == {"attn", "mlp"}
    assert len(read_csv(comp2 / "mlp_attn_analysis" / "mlp_attn_summary.csv")) == 4
    assert len(read_csv(comp2 / "null_space_analysis" / "null_space_results.csv")) == 16  # all 16 < 50 samples
    for row in read_csv(comp2 / "mlp_nullspace" / "mlp_nullspace_results.csv"):
        fractions = float(row["column_space_fraction"]) + float(row["null_space_fraction"])
        assert fractions == pytest.approx(1.0, abs=1e-5)

    again = pipeline(workspace, **settings)
    assert again.returncode == 0 and "Ran 0 step(s)" in again.stdout
    assert again.stdout.count("weight_comparison: ") == 2  # both comparisons listed as skipped


def test_enable_flags_add_comp3_to_comp6_and_a_bad_value_is_one_line(toy_organism: ToyOrganism,
                                                                     finetuned_base: Path):
    workspace = toy_organism.workspace
    # A dry run only plans, and lists the comparisons it would run.
    planned = pipeline(workspace, DRY_RUN="1", UNLEARNED=str(finetuned_base),
                       CB_MODEL=str(toy_organism.midtrain), ENABLE_PRETRAIN_COMPARISON="1", ENABLE_CB_COMPARISONS="1")
    assert planned.returncode == 0, planned.stderr
    base, filtered, unlearned = toy_organism.base.name, toy_organism.filtered.name, finetuned_base.name
    cb, pretrain = toy_organism.midtrain.name, toy_organism.midtrain.name
    for label, folder in {"COMP1 Base -> Filtered": f"{base}__to__{filtered}",
                          "COMP2 Base -> Unlearned": f"{base}__to__{unlearned}",
                          "COMP3 Base -> Pretraining checkpoint": f"{base}__to__{pretrain}",
                          "COMP4 Base -> CB": f"{base}__to__{cb}",
                          "COMP5 CB -> Unlearned": f"{cb}__to__{unlearned}",
                          "COMP6 Unlearned -> Filtered": f"{unlearned}__to__{filtered}"}.items():
        line = next((line for line in planned.stdout.splitlines() if line.strip().startswith(label + ":")), "")
        assert line.rstrip().endswith(f"outputs/{folder}/"), f"{label}: {line!r}"

    for flag in ("ENABLE_CB_COMPARISONS", "ENABLE_PRETRAIN_COMPARISON"):
        bad = pipeline(workspace, **{flag: "2"}, UNLEARNED=str(finetuned_base))
        assert bad.returncode == 2 and "Traceback" not in bad.stderr
        assert last_line(bad.stderr) == (f"error: {flag}='2' is not a valid value; use {flag}=1 to enable it or 0 "
                                         "(the default) to leave it off")
        assert "==>" not in bad.stdout  # refused before anything ran


def test_a_missing_unlearned_model_stops_the_pipeline_with_one_line(toy_organism: ToyOrganism, tmp_path: Path):
    missing = tmp_path / "no-such-unlearned-model"
    result = pipeline(toy_organism.workspace, STEPS="weight_comparison", UNLEARNED=str(missing),
                      OUTPUT_ROOT=str(tmp_path / "outputs"))
    assert result.returncode != 0
    assert f"model {missing} not found" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "outputs" / f"{toy_organism.base.name}__to__{missing.name}").exists()
