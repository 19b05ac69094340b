"""Unlearning and the relearning attack on the vision-language organism, through the same scripts as for text.

Uses conftest.py's small VL organism (`vl_data`, `vl_base`: 4 entities per domain); `PRESET=toy-vlm` finds its
data under `data/toy-vlm/` of the working directory, so the tests run in a folder that links it there.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest
import torch

from brittle.catalogue import HYPERPARAMETERS, VISION_LANGUAGE_LORA, check_values, model_settings
from brittle.cli import UserError
from brittle.outputs import read_csv
from conftest import load_script

unlearn = load_script("unlearn/unlearn.py")
relearn = load_script("experiment/relearn_attack.py")
evaluation = load_script("experiment/eval.py")


@pytest.fixture(scope="module")
def vl_workspace(vl_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working directory whose `data/toy-vlm` is the test organism's data (where the toy-vlm preset looks)."""
    folder = tmp_path_factory.mktemp("vl-workspace")
    (folder / "data").mkdir()
    (folder / "data" / "toy-vlm").symlink_to(vl_data)
    return folder


def run_unlearn(workspace: Path, monkeypatch: pytest.MonkeyPatch, *arguments: str) -> None:
    """unlearn/unlearn.py in-process, in `workspace`, with no settings taken from the environment."""
    monkeypatch.chdir(workspace)
    for variable in unlearn.environment_variables():
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr("sys.argv", ["unlearn.py", "--preset", "toy-vlm", *arguments])
    unlearn.main()


@pytest.fixture(scope="module")
def vl_unlearned(vl_workspace: Path, vl_base: Path) -> Path:
    """The test organism's base after a short gradient ascent with LoRA (toy-vlm's: the language model's attention,
    dropout 0.05) and 4 warm-up steps, made by unlearn.py (one epoch: 18 steps)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        run_unlearn(vl_workspace, monkeypatch, "--method", "ga", "--model", str(vl_base), "--lora-rank", "8",
                    "--lr", "3e-2", "--batch-size", "16", "--warmup-steps", "4", "--eval-interval", "0")
    (folder,) = (vl_workspace / "unlearned_models").iterdir()
    return folder


@pytest.mark.slow
def test_vl_unlearning_runs_through_unlearn_py_and_lowers_forget_accuracy(vl_unlearned: Path, vl_base: Path,
                                                                          vl_data: Path) -> None:
    """The run is named like a text run, saves a LLaVA with its processor, and its Step 0 (multiple choice on
    pictures) shows the forget questions lost while the retain questions mostly stay."""
    from brittle.vlm import evaluate_vl_model, load_vl_model

    assert vl_unlearned.name == f"{vl_base.name}__ga__ep1_lr3e-02_bs16_rw1.0_lora8_wu4"  # LoRA's preset shape unnamed
    record = json.loads((vl_unlearned / "unlearn_run.json").read_text())
    assert record["preset"] == "toy-vlm" and record["hyperparameters"]["lora_rank"] == 8
    after = json.loads((vl_unlearned / "evals" / "summary.json").read_text())
    assert set(after) == {"forget", "forget_t", "forget_v", "retain"}
    model, processor = load_vl_model(vl_base)
    before = evaluate_vl_model(model, processor, ("forget", "retain"), [vl_data / "questions"])
    assert before["forget"]["acc"] >= 0.8, before
    assert after["forget"]["acc"] <= before["forget"]["acc"] - 0.3, (before, after)
    assert after["retain"]["acc"] >= 0.6, (before, after)
    load_vl_model(vl_unlearned)  # a plain model folder: LoRA merged, processor saved


@pytest.mark.slow
def test_vl_lora_trains_only_the_language_models_attention_with_dropout_and_warm_up(vl_unlearned: Path,
                                                                                      vl_base: Path) -> None:
    """toy-vlm's LoRA (brittle.catalogue.VISION_LANGUAGE_LORA): adapters on the GPT-NeoX language model's
    query_key_value only, dropout 0.05; after merging, every other weight (vision tower, projector, the rest of
    the language model) is bit-identical to the base. The learning rate warms up linearly over 4 steps."""
    from safetensors.torch import load_file

    from brittle.trainer import wrap_with_lora_for
    from brittle.vlm import load_vl_model

    record = json.loads((vl_unlearned / "unlearn_run.json").read_text())["hyperparameters"]
    assert (record["lora_targets"], record["lora_dropout"], record["warmup_steps"]) == ("attention", 0.05, 4)
    base, after = load_file(vl_base / "model.safetensors"), load_file(vl_unlearned / "model.safetensors")
    assert base.keys() == after.keys()
    changed = sorted(name for name in base if not torch.equal(base[name], after[name]))
    layers = json.loads((vl_base / "config.json").read_text())["text_config"]["num_hidden_layers"]
    assert len(changed) == layers and all(name.endswith("attention.query_key_value.weight") for name in changed)
    assert any("vision_tower" in name for name in base) and any("projector" in name for name in base)

    model, _ = load_vl_model(vl_base)
    wrapped = wrap_with_lora_for(model, argparse.Namespace(lora_rank=8, lora_alpha=0.0, **VISION_LANGUAGE_LORA))
    dropouts = {name.removesuffix(".lora_dropout.default"): module.p for name, module in wrapped.named_modules()
                if name.endswith(".lora_dropout.default")}
    assert set(dropouts.values()) == {0.05}
    assert sorted(dropouts) == [f"base_model.model.model.language_model.layers.{layer}.attention.query_key_value"
                                for layer in range(layers)]
    trainable = [name for name, parameter in wrapped.named_parameters() if parameter.requires_grad]
    assert trainable and all(".lora_" in name and "language_model" in name for name in trainable)

    # Step s (from 1) runs at lr · min(1, s / 4) · ½(1 + cos(π (s − 1) / steps)).
    steps = json.loads((vl_unlearned / "unlearn_run.json").read_text())["optimizer_steps"]
    rates = [float(row["lr"]) for row in read_csv(vl_unlearned / "training_log.csv")[1:]]
    assert rates == pytest.approx([3e-2 * min(1, step / 4) * 0.5 * (1 + math.cos(math.pi * (step - 1) / steps))
                                   for step in range(1, steps + 1)])


def test_lora_targets_the_language_model_lacks_end_in_one_line(vl_base: Path) -> None:
    """Bad LoRA/warm-up settings are one line; which of them a run's identity records."""
    from brittle.trainer import lora_target_modules
    from brittle.vlm import load_vl_model

    model, _ = load_vl_model(vl_base)
    with pytest.raises(UserError, match=r"^--lora-targets q_proj,v_proj: the language model has no linear layer "
                                        r"named q_proj, v_proj; its linear layers are .*query_key_value"):
        lora_target_modules(model, "q_proj,v_proj")
    assert lora_target_modules(model, "dense") == [f"model.language_model.layers.{layer}.attention.dense"
                                                   for layer in range(2)]  # not the vision tower's
    values = {setting.name: setting.default for setting in HYPERPARAMETERS}
    for bad, message in (({"lora_targets": "q proj"}, "--lora-targets must be all-linear, attention or "
                          "comma-separated module names"), ({"lora_dropout": 1.0}, "--lora-dropout must be below 1")):
        with pytest.raises(UserError, match=f"^{message}"):
            check_values("ga", {**values, **bad})
    # Identities: the new settings at their defaults are left out (a run recorded before they existed still
    # matches), and LoRA's shape counts only with LoRA.
    recorded = model_settings(values)
    assert not {"lora_targets", "lora_dropout", "warmup_steps"} & set(recorded) and recorded["lora_rank"] == 0
    assert "lora_dropout" not in model_settings({**values, "lora_dropout": 0.05})
    assert model_settings({**values, "lora_rank": 8, **VISION_LANGUAGE_LORA}).items() >= VISION_LANGUAGE_LORA.items()
    assert model_settings({**values, "warmup_steps": 100})["warmup_steps"] == 100


def test_a_method_on_hidden_states_refuses_a_vl_model_in_one_line(vl_workspace: Path, vl_base: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UserError) as error:
        run_unlearn(vl_workspace, monkeypatch, "--method", "rmu", "--model", str(vl_base))
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("rmu cannot unlearn the vision-language model") and "image tokens" in message
    assert "use one of: ga_simple, ga, grad_diff" in message
    assert not (vl_workspace / "unlearned_models" / f"{vl_base.name}__rmu").exists()


@pytest.mark.slow
def test_relearning_attack_on_the_vl_organism_writes_a_b_c_f(vl_workspace: Path, vl_base: Path, vl_unlearned: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """T/V halves of the forget entities' pictures; the unlearned model stands in for the filtered one (the
    test organism has no filtered model), which changes nothing in how the conditions are computed."""
    monkeypatch.chdir(vl_workspace)
    relearn.main(["--model-a", str(vl_base), "--model-b", str(vl_unlearned), "--filtered", str(vl_unlearned),
                  "--preset", "toy-vlm", "--num-lrs", "1", "--lr-range", "3e-3,3e-3", "--epochs", "2",
                  "--device", "cpu", "--output-root", str(vl_workspace / "outputs")])
    (folder,) = (vl_workspace / "outputs").glob("*__to__*/relearn_attack_seed42")
    conditions = {row["condition"]: float(row["v_accuracy"]) for row in read_csv(folder / "conditions.csv")}
    assert set(conditions) == {"A", "B", "C", "F"}
    summary = read_csv(folder / "summary.csv")[0]
    assert float(summary["c_base_rtt"]) >= 0.8  # the base knows V, and fine-tuning on T does not undo that
    assert summary["recovery_rate"] != ""


def run_eval(workspace: Path, monkeypatch: pytest.MonkeyPatch, *arguments: str) -> None:
    """experiment/eval.py in-process, in `workspace` (Step 0)."""
    monkeypatch.chdir(workspace)
    monkeypatch.setattr("sys.argv", ["eval.py", "--output-root", str(workspace / "outputs"), *arguments])
    evaluation.main()


@pytest.mark.slow
def test_step_0_of_a_vl_model_through_eval_py_is_unlearn_pys_evaluation(
        vl_workspace: Path, vl_base: Path, vl_unlearned: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    """experiment/eval.py --preset toy-vlm scores a LLaVA on the preset's questions about pictures and writes the
    evals/ folder a text model gets; on the unlearned model its summary is the one unlearn.py wrote. Run again,
    it skips."""
    for model in (vl_base, vl_unlearned):
        run_eval(vl_workspace, monkeypatch, "--model", str(model), "--preset", "toy-vlm")
    base, unlearned = (vl_workspace / "outputs" / model.name / "evals" for model in (vl_base, vl_unlearned))
    for folder in (base, unlearned):
        assert {path.name for path in folder.iterdir()} >= {"summary.json", "high_level_summary.md", "identity.json",
                                                            "tasks"}
        assert {path.stem for path in (folder / "tasks").iterdir()} == {"forget", "forget_t", "forget_v", "retain"}
    summary = json.loads((base / "summary.json").read_text())
    assert summary["forget"]["acc"] >= 0.8 and summary["retain"]["acc"] >= 0.8
    assert json.loads((unlearned / "summary.json").read_text()) == json.loads(
        (vl_unlearned / "evals" / "summary.json").read_text())
    capsys.readouterr()
    run_eval(vl_workspace, monkeypatch, "--model", str(vl_base), "--preset", "toy-vlm")
    assert capsys.readouterr().out.startswith("skipped: Step 0 evaluation")


def test_step_0_refuses_a_text_model_with_picture_questions_and_a_vl_model_without_them(
        vl_workspace: Path, vl_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text_model = tmp_path / "text-model"
    text_model.mkdir()
    (text_model / "config.json").write_text(json.dumps({"model_type": "gpt_neox"}))
    with pytest.raises(UserError, match=r"^--preset toy-vlm asks questions about pictures, and .* is a text-only"):
        run_eval(vl_workspace, monkeypatch, "--model", str(text_model), "--preset", "toy-vlm")
    with pytest.raises(UserError, match=r"is a vision-language model, so Step 0 asks it questions about pictures .* "
                                        r"there is no toy_forget_mcq.jsonl in data/toy/tasks; use --preset toy-vlm"):
        run_eval(vl_workspace, monkeypatch, "--model", str(vl_base), "--preset", "toy")
    assert not (vl_workspace / "outputs" / text_model.name).exists()
