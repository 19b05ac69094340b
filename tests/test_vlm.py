"""The vision-language organism: its pictures and data, a tiny LLaVA trained on them, and bad input.

The trained model (conftest.py's session fixtures `vl_data`, `vl_base`) is a smaller organism (4 entities
per domain, trained in-process for a few hundred steps) than experiment/build_vlm_organism.py's default, so
the tests stay cheap; it is the same code path (data writer, tokenizer, LLaVA config, processor, training
loop, multiple-choice scoring).
"""

from __future__ import annotations

import argparse
import filecmp
from pathlib import Path

import pytest

from brittle.cli import UserError
from brittle.organism import FORGET_DOMAIN, RETAIN_DOMAIN, Fact
from brittle.outputs import read_jsonl
from brittle.vlm import (
    VIEWS_PER_ENTITY,
    build_vl_world,
    image_name,
    load_image,
    load_vl_model,
    picture_question,
    vl_choice_log_likelihoods,
    vl_multiple_choice_accuracy,
    write_vl_data,
)
from conftest import VL_SEED as SEED
from conftest import load_script

build = load_script("experiment/build_vlm_organism.py")


def test_data_is_deterministic_and_questions_do_not_name_the_entity(vl_data: Path, tmp_path: Path) -> None:
    write_vl_data(tmp_path, build_vl_world(entities_per_domain=4, seed=SEED), seed=SEED)
    for name in ("forget_qa.jsonl", "questions/forget.jsonl", "questions/retain.jsonl", "images/"):
        if name.endswith("/"):
            assert not filecmp.dircmp(vl_data / name, tmp_path / name).diff_files
        else:
            assert filecmp.cmp(vl_data / name, tmp_path / name, shallow=False)
    questions = read_jsonl(vl_data / "questions" / "forget.jsonl")
    assert all(q["entity"] not in q["question"] for q in questions)
    half_t = {q["entity"] for q in read_jsonl(vl_data / "questions" / "forget_t.jsonl")}
    half_v = {q["entity"] for q in read_jsonl(vl_data / "questions" / "forget_v.jsonl")}
    assert half_t and half_v and not half_t & half_v


def test_a_picture_blind_preference_among_values_scores_exactly_chance() -> None:
    """The organism's world (16 entities per domain): every value of an attribute is true equally often, and a
    question's options are the option set of its value, so a model that ranks the values without looking at the
    picture - any fixed ranking - picks the truth in exactly 1 question of 4 (the filtered model's floor)."""
    import random

    world = build_vl_world(seed=42)
    for facts in (world.forget_facts, world.retain_facts):
        for attribute in {fact.attribute for fact in facts}:
            asked = [fact for fact in facts if fact.attribute == attribute]
            values = sorted({value for group in world.option_sets[asked[0].domain][attribute] for value in group})
            assert {fact.value for fact in asked} == set(values)
            assert len({sum(fact.value == value for fact in asked) for value in values}) == 1  # each equally often
            for seed in range(5):
                ranking = random.Random(seed).sample(values, len(values))
                picked = [min(world.options(fact), key=ranking.index) for fact in asked]
                assert sum(p == fact.value for p, fact in zip(picked, asked, strict=True)) * 4 == len(asked)


def test_a_question_about_a_picture_is_answered_from_the_picture(vl_data: Path, vl_base: Path) -> None:
    """Known on evaluation pictures it never trained on; and the same question with the same options, shown
    another entity's picture, gets that entity's answer: the answer comes from the picture, not the text."""
    model, processor = load_vl_model(vl_base)
    questions = read_jsonl(vl_data / "questions" / "retain.jsonl") + read_jsonl(vl_data / "questions" / "forget.jsonl")
    accuracy = vl_multiple_choice_accuracy(model, processor.tokenizer, processor.image_processor, questions,
                                           vl_data / "questions")
    assert accuracy >= 0.8, accuracy

    world = build_vl_world(entities_per_domain=4, seed=SEED)
    by_entity: dict[str, dict[str, Fact]] = {}
    for fact in world.forget_facts + world.retain_facts:
        by_entity.setdefault(fact.entity, {})[fact.attribute] = fact
    entities = list(by_entity)
    pairs = []  # (question with A's picture, same question with B's picture) where A and B differ
    for first, second in zip(entities[::2], entities[1::2], strict=True):
        for attribute, fact in by_entity[first].items():
            other = by_entity[second][attribute]
            if fact.value == other.value:
                continue
            domain = FORGET_DOMAIN if fact.domain == FORGET_DOMAIN.name else RETAIN_DOMAIN
            fillers = [v for v in domain.attributes[attribute] if v not in (fact.value, other.value)][:2]
            question = {"question": picture_question(fact.domain, attribute),
                        "choices": [fact.value, other.value, *fillers]}
            pairs.append((dict(question, image=image_name(first, VIEWS_PER_ENTITY), answer=0),
                          dict(question, image=image_name(second, VIEWS_PER_ENTITY), answer=1)))
    scores = vl_choice_log_likelihoods(model, processor.tokenizer, processor.image_processor,
                                       [q for pair in pairs for q in pair], vl_data)
    chosen = [max(range(4), key=row.__getitem__) for row in scores]
    followed = sum(chosen[2 * i] == 0 and chosen[2 * i + 1] == 1 for i in range(len(pairs)))
    assert len(pairs) >= 10
    assert followed >= 0.75 * len(pairs), f"only {followed} of {len(pairs)} answers followed the picture"


def test_bad_pictures_and_records_end_in_one_clear_error(vl_data: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a picture")
    with pytest.raises(UserError, match=r"broken\.png cannot be read as a picture"):
        load_image(broken)
    with pytest.raises(UserError, match="does not exist"):
        load_image(tmp_path / "missing.png")
    question = dict(read_jsonl(vl_data / "questions" / "retain.jsonl")[0])
    del question["image"]
    with pytest.raises(UserError, match="question 1 has no image"):
        vl_choice_log_likelihoods(None, None, None, [question], vl_data)  # type: ignore[arg-type]


def test_build_script_refuses_unknown_roles(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("sys.argv", ["build_vlm_organism.py", "--roles", "base,teacher",
                                     "--data-dir", str(tmp_path / "data")])
    with pytest.raises(UserError, match="unknown --roles teacher"):
        build.main()
    assert not (tmp_path / "data").exists()  # refused before anything was written


def test_cli_answers_about_a_picture_and_refuses_bad_input(vl_data: Path, vl_base: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """infer/cli.py --image: option probabilities from the picture; a broken picture or a text-only model
    fails with one clear line before any weights load."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    cli = load_script("infer/cli.py")
    question = read_jsonl(vl_data / "questions" / "retain.jsonl")[0]

    def run(*arguments: str) -> None:
        monkeypatch.setattr("sys.argv", ["cli.py", "--device", "cpu", "--max-tokens", "4", *arguments])
        cli.main()

    image = vl_data / "questions" / question["image"]  # relative to the question file's folder
    run("--model", str(vl_base), "--image", str(image), "--prompt", question["question"],
        "--choices", *question["choices"])
    printed = capsys.readouterr().out
    assert f"{question['choices'][question['answer']]}  <- most likely" in printed, printed

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a picture")
    with pytest.raises(UserError, match="cannot be read as a picture"):
        run("--model", str(vl_base), "--image", str(broken), "--prompt", question["question"])
    text_only = tmp_path / "text-only"
    GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32)).save_pretrained(text_only)
    with pytest.raises(UserError, match=r"text-only model .*cannot take --image"):
        run("--model", str(text_only), "--image", str(image), "--prompt", question["question"])


def test_llava_parameters_fall_into_vision_projector_and_language_groups() -> None:
    """brittle.architecture sees a LLaVA's three networks and finds its language model's layers."""
    from brittle.architecture import decoder_layers, final_norm, parameter_modality

    tokenizer = build.train_tokenizer(["USER: <image>\nWhat is it? ASSISTANT: a fox"], 300)
    args = argparse.Namespace(hidden_size=32, layers=2, vision_hidden_size=16)
    model = build.LlavaForConditionalGeneration(build.model_config(tokenizer, args))
    counts: dict[str, int] = {}
    for name, parameter in model.named_parameters():
        counts[parameter_modality(name)] = counts.get(parameter_modality(name), 0) + parameter.numel()
    assert set(counts) == {"vision tower", "projector", "language model"}
    assert counts["projector"] == sum(p.numel() for p in model.model.multi_modal_projector.parameters())
    assert decoder_layers(model) is model.model.language_model.layers
    assert final_norm(model) is model.model.language_model.final_layer_norm
    assert parameter_modality("gpt_neox.layers.0.mlp.dense_h_to_4h.weight") == "language model"
