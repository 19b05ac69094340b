"""In-process multiple-choice scoring agrees with lm-evaluation-harness, question by question."""

from __future__ import annotations

import math

import pytest

from brittle.evaluation import evaluate_model
from brittle.models import load_model_and_tokenizer
from brittle.multiple_choice import (
    accuracy_from_scores,
    choice_log_likelihoods,
    choice_probabilities,
    encode_choice,
    multiple_choice_accuracy,
)
from brittle.outputs import read_jsonl
from conftest import ToyOrganism


class CharacterTokenizer:
    """A tokenizer with one token per character, enough to check where the context ends."""

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        return {"input_ids": [ord(character) for character in text]}


def test_choice_is_the_continuation_after_one_space():
    context, continuation = encode_choice(CharacterTokenizer(), "Q: host? A:", "voles")
    assert "".join(map(chr, context)) == "Q: host? A:"
    assert "".join(map(chr, continuation)) == " voles"


def test_trailing_spaces_of_the_question_move_into_the_continuation():
    context, continuation = encode_choice(CharacterTokenizer(), "Answer: ", "B")
    assert "".join(map(chr, context)) == "Answer:"
    assert "".join(map(chr, continuation)) == "  B"


def test_accuracy_takes_the_highest_score_and_probabilities_sum_to_one():
    questions = [{"answer": 1, "choices": "ab"}, {"answer": 0, "choices": "ab"}]
    assert accuracy_from_scores(questions, [[-2.0, -1.0], [-3.0, -0.5]]) == 0.5
    probabilities = choice_probabilities([-1.0, -1.0, math.log(2) - 1.0])
    assert sum(probabilities) == pytest.approx(1.0)
    assert probabilities[2] == pytest.approx(0.5)


@pytest.mark.slow
def test_in_process_scores_match_lm_eval_on_the_organism(toy_organism: ToyOrganism):
    model, tokenizer = load_model_and_tokenizer(str(toy_organism.filtered), device="cpu")
    tasks = {"toy_forget_mcq": "forget", "toy_retain_mcq": "retain"}
    summary = evaluate_model(model, tokenizer, list(tasks), [toy_organism.data / "tasks"])
    for task, file in tasks.items():
        questions = read_jsonl(toy_organism.data / "questions" / f"{file}.jsonl")
        assert multiple_choice_accuracy(model, tokenizer, questions) == pytest.approx(summary[task]["acc"])
    # The filtered model is at chance on forget questions, so agreement there is not trivial.
    assert summary["toy_forget_mcq"]["acc"] < 0.4
    batched = choice_log_likelihoods(model, tokenizer, questions[:8], batch_size=3)
    single = [choice_log_likelihoods(model, tokenizer, [question], batch_size=1)[0] for question in questions[:8]]
    flatten = lambda rows: [score for row in rows for score in row]  # noqa: E731
    assert flatten(batched) == pytest.approx(flatten(single), abs=1e-4)  # padding does not change scores
