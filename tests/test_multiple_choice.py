"""In-process multiple-choice scoring agrees with lm-evaluation-harness, question by question."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from brittle.evaluation import evaluate_model
from brittle.models import load_model_and_tokenizer
from brittle.multiple_choice import (
    accuracy_from_scores,
    choice_log_likelihoods,
    choice_probabilities,
    encode_choice,
    encode_questions,
    multiple_choice_accuracy,
    pack_pairs,
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


def one_choice_at_a_time(model, tokenizer, question: dict) -> list[float]:
    """The plain reference: each choice alone after its context, full logits, log-softmax everywhere."""
    scores = []
    for choice in question["choices"]:
        context, continuation = encode_choice(tokenizer, question["question"], choice)
        log_probs = torch.log_softmax(model(input_ids=torch.tensor([context + continuation])).logits[0].float(), -1)
        scores.append(sum(log_probs[len(context) - 1 + index, token].item()
                          for index, token in enumerate(continuation)))
    return scores


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_choices_score_as_each_choice_run_alone(attention: str):
    torch.manual_seed(0)
    config = GPTNeoXConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=64, max_position_embeddings=128)
    config._attn_implementation = attention
    model = GPTNeoXForCausalLM(config).eval()
    tokenizer = CharacterTokenizer()
    tokenizer.pad_token_id = 0
    questions = [{"question": f"Q{index}: what is the host of Galdyrix?{' ' * (index % 2)}", "answer": 0,
                  "choices": ["salt crabs", "bog shrews", "a", "a much longer answer than the others"]}
                 for index in range(5)]
    assert len(pack_pairs(encode_questions(tokenizer, questions))) == 5  # one row per question
    packed = choice_log_likelihoods(model, tokenizer, questions, batch_size=2)
    expected = [one_choice_at_a_time(model, tokenizer, question) for question in questions]
    assert [score for row in packed for score in row] == pytest.approx([s for row in expected for s in row], abs=1e-4)
    lens = choice_log_likelihoods(model, tokenizer, questions, batch_size=3,
                                  logits_fn=lambda ids, mask: model(input_ids=ids, attention_mask=mask).logits)
    assert [score for row in lens for score in row] == pytest.approx([s for row in expected for s in row], abs=1e-4)
