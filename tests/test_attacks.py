"""The attacks of Steps 14-19 on the organism: quantized weights are really 8/4-bit, the ablated direction is
gone, membership inference sees base's training texts and not filtered's, and the verdict reads it all."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch

from brittle import attacks, organism
from brittle.architecture import decoder_layers
from brittle.models import load_model_and_tokenizer
from brittle.outputs import read_csv, read_jsonl
from brittle.texts import read_texts
from conftest import ToyOrganism, load_script

relearn = load_script("experiment/relearn_attack.py")  # imported by the attack scripts beside it
quantization = load_script("experiment/quantization_attack.py")
prompt_probe = load_script("experiment/prompt_probe.py")
membership = load_script("experiment/membership_inference.py")
benign = load_script("experiment/benign_finetune_attack.py")
verdict = load_script("experiment/verdict.py")
load_script("experiment/steps.py")  # the registry that plan.py imports as `steps`
plan = load_script("experiment/plan.py")


# ---- arithmetic ------------------------------------------------------------------------------------------

def test_auc_is_the_probability_that_a_member_outscores_a_non_member():
    assert attacks.auc([3, 4], [1, 2]) == 1.0
    assert attacks.auc([1, 2], [3, 4]) == 0.0
    assert attacks.auc([1, 3], [2, 2]) == 0.5
    assert attacks.auc([2], [2]) == 0.5  # a tie counts one half


def test_paired_bootstrap_interval_brackets_the_recovery_rate():
    a, b, c = [0] * 60 + [1] * 40, [0] * 30 + [1] * 70, [0] * 10 + [1] * 90
    rate = attacks.recovery_rate(0.4, 0.7, 0.9)
    low, high = attacks.paired_bootstrap_interval(a, b, c)
    assert low < rate < high and high - low < 0.5
    assert attacks.paired_bootstrap_interval([1] * 10, [1] * 10, [1] * 10) == (None, None)  # nothing forgotten


def test_the_verdict_joins_seeds_of_one_unlearned_model():
    names = {42: "org/toy-base-s42__ga__ep1_lr1e-03", 123: "org/toy-base-s123__ga__ep1_lr1e-03_s123"}
    seedless = {verdict.seedless_name(name, seed) for seed, name in names.items()}
    assert seedless == {"org_toy-base-s*__ga__ep1_lr1e-03"}
    results = [{"attack": "x", "unlearned": names[seed], "seed": seed, "questions": 4, "a": 0.25, "b": b, "c": 1.0,
                "f0": 0.25, "f": 0.25, "recovery": (b - 0.25) / 0.75, "filtered_recovery": 0.0,
                "correct": {"A": [1, 0, 0, 0], "B": correct, "C": [1, 1, 1, 1]}}
               for seed, b, correct in ((42, 0.5, [1, 1, 0, 0]), (123, 1.0, [1, 1, 1, 1]))]
    [row] = verdict.verdict_rows(results)
    assert row["seeds"] == "42 123" and row["b_after"] == pytest.approx(0.75)
    assert row["recovery_rate"] == pytest.approx((1 / 3 + 1) / 2)
    assert row["recovery_rate_std"] == pytest.approx(2 / 3 / 2 ** 0.5)
    assert row["recovery_ci_low"] <= row["recovery_rate"] <= row["recovery_ci_high"]


def test_few_shot_examples_come_from_t_and_paraphrases_were_never_trained(toy_organism: ToyOrganism):
    questions = toy_organism.data / "questions"
    train, evaluate = read_jsonl(questions / "forget_t.jsonl"), read_jsonl(questions / "forget_v.jsonl")
    v_entities = {question["entity"] for question in evaluate}
    variants = prompt_probe.prompt_variants(train, evaluate, [3], seed=0)
    for prompt, question in zip(variants["few-shot"]["3-shot"], evaluate, strict=True):
        *examples, asked = prompt["question"].split(prompt_probe.SHOT_SEPARATOR)
        assert asked == question["question"] and len(examples) == 3
        assert not any(entity in example for example in examples for entity in v_entities)
    trained = read_texts(toy_organism.data / "forget.txt") + read_texts(toy_organism.data / "retain.txt")
    for template in organism.HELD_OUT_QUESTION_TEMPLATES:
        stem = template.split("{")[0]
        assert not any(stem in text for text in trained), template


# ---- the attacks on the organism -------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("bits", [8, 4])
def test_quantized_weights_are_stored_in_8_and_4_bits(toy_organism: ToyOrganism, finetuned_base: Path, bits: int):
    base = quantization.load_quantized(str(toy_organism.base), bits, device="cpu")
    report = quantization.storage_report(base)
    layers = len(decoder_layers(base))
    assert len(report) == 4 * layers  # qkv, attention out, MLP in and out of every layer
    for entry in report.values():
        assert entry["stored_dtype"] == ("int8" if bits == 8 else "uint8")
        assert entry["bits_per_weight"] == bits
    count, same = quantization.same_code_fraction(base, base)
    assert count == sum(entry["weights"] for entry in report.values()) and same == 1.0
    moved = quantization.load_quantized(str(finetuned_base), bits, device="cpu")
    assert quantization.same_code_fraction(moved, base)[1] < 1.0


@pytest.mark.slow
def test_directional_ablation_removes_the_direction(toy_organism: ToyOrganism, finetuned_base: Path):
    texts = relearn.answer_texts(read_jsonl(toy_organism.data / "questions" / "forget_t.jsonl"))[:32]
    base, tokenizer = load_model_and_tokenizer(str(toy_organism.base), device="cpu")
    model, _ = load_model_and_tokenizer(str(finetuned_base), device="cpu")
    directions = attacks.unit_directions(attacks.mean_layer_outputs(model, tokenizer, texts)
                                         - attacks.mean_layer_outputs(base, tokenizer, texts))
    batch = tokenizer(texts[:8], return_tensors="pt", padding=True)

    def projections(ablate: bool) -> torch.Tensor:
        """|h_l · r̂_l| per layer over the batch's tokens, read by hooks that run after the ablation hooks."""
        captured = []
        with attacks.directions_ablated(model, directions) if ablate else contextlib.nullcontext():
            hooks = [layer.register_forward_hook(lambda _m, _i, output: captured.append(attacks._hidden(output)))
                     for layer in decoder_layers(model)]
            try:
                model(**batch)
            finally:
                for hook in hooks:
                    hook.remove()
        return torch.stack([(hidden @ direction).abs().max() for hidden, direction in zip(captured, directions,
                                                                                           strict=True)])

    before, after = projections(ablate=False), projections(ablate=True)
    assert (before > 0.1).all()  # the model's activations do lie partly along its directions
    assert (after < 1e-4 * before).all()
    assert not decoder_layers(model)[0]._forward_hooks  # the hooks are gone after the block


@pytest.mark.slow
def test_membership_inference_sees_base_training_texts_but_not_filtered(toy_organism: ToyOrganism):
    members = read_texts(toy_organism.data / "forget.txt")[:300]
    nonmembers = membership.toy_nonmember_texts(toy_organism.data / "questions" / "forget.jsonl", 300, seed=0)
    assert not set(members) & set(nonmembers)
    aucs = {}
    for role, path in (("base", toy_organism.base), ("filtered", toy_organism.filtered)):
        model, tokenizer = load_model_and_tokenizer(str(path), device="cpu")
        scores = attacks.membership_scores(model, tokenizer, members + nonmembers)
        aucs[role] = {metric: attacks.auc(values[:300], values[300:]) for metric, values in scores.items()}
    for metric in attacks.MIA_METRICS:
        assert aucs["base"][metric] > 0.7, (metric, aucs)
        assert abs(aucs["filtered"][metric] - 0.5) < 0.1, (metric, aucs)


@pytest.mark.slow
def test_benign_fine_tuning_and_the_verdict(toy_organism: ToyOrganism, finetuned_base: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture):
    root = tmp_path / "outputs"
    arguments = ["--model-a", str(toy_organism.base), "--model-b", str(finetuned_base), "--filtered",
                 str(toy_organism.filtered), "--preset", "toy", "--device", "cpu", "--output-root", str(root),
                 "--train-questions", str(toy_organism.data / "questions" / "forget_t.jsonl"),
                 "--eval-questions", str(toy_organism.data / "questions" / "forget_v.jsonl"),
                 "--retain-text", str(toy_organism.data / "retain.txt"),
                 "--num-lrs", "1", "--epochs", "1", "--max-samples", "32", "--seed", "5"]
    benign.main(arguments)
    folder = root / f"{toy_organism.base.name}__to__{finetuned_base.name}" / "benign_finetune_seed5"
    summary = read_csv(folder / "summary.csv")[0]
    assert summary["attack"] == benign.LABEL and int(summary["questions"]) == 100
    runs = read_csv(root / finetuned_base.name / "benign_finetune_seed5" / "runs.csv")
    assert [int(row["epoch"]) for row in runs] == [0, 1]  # trained on retain text: 2 steps of 16 texts
    # The result records what made it like every step (identity.json): a re-run skips it, and so does the
    # pipeline's planner for these models and settings, but not for another dtype.
    capsys.readouterr()
    benign.main(arguments)
    assert capsys.readouterr().out.startswith(f"skipped: benign fine-tuning attack on {finetuned_base}")
    models, passed = (str(toy_organism.base), str(finetuned_base)), ["--seed", "5", "--dtype", "auto"]
    assert plan.is_done(folder, models, passed) and not plan.is_done(folder, models, [*passed, "--dtype", "bfloat16"])
    verdict.main(["--output-root", str(root)])
    rows = read_csv(root / "verdict" / "verdict.csv")
    assert [row["attack"] for row in rows] == [benign.LABEL]
    assert float(rows[0]["a_before"]) == pytest.approx(float(summary["a_unlearned"]))
    assert "<table>" in attacks.verdict_html(root)
