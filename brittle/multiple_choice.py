"""Multiple-choice scoring exactly as lm-evaluation-harness does it, but in-process and batched.

A question is `{question, choices, answer}` (the common JSONL schema of brittle/evaluation.py). Each
choice is a *continuation* of the question, after one space; its score is the summed log-probability
of its tokens given the question, and the prediction is the highest-scoring choice. Tokenisation
follows lm-eval's `_encode_pair`: encode question + " " + choice as a whole, and take as the
continuation the tokens after those of the question alone.

Use this where lm-eval's per-call overhead would dominate (an attack that evaluates after every epoch)
or where the logits do not come from the model's final layer (a logit or tuned lens): pass
`logits_fn` to score from any function of the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

TARGET_DELIMITER = " "  # lm-eval's default between question and choice


@dataclass(frozen=True)
class EncodedChoice:
    """Token ids of one (question, choice) pair, split where lm-eval splits them."""

    question_index: int
    choice_index: int
    context: list[int]
    continuation: list[int]


def encode_choice(tokenizer: PreTrainedTokenizerBase, question: str, choice: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) for `choice` as the continuation of `question`."""
    context, continuation = question, TARGET_DELIMITER + choice
    trailing_spaces = len(context) - len(context.rstrip())
    if trailing_spaces:  # lm-eval moves trailing context spaces into the continuation
        continuation = context[-trailing_spaces:] + continuation
        context = context[:-trailing_spaces]
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    context_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
    return whole[: len(context_ids)], whole[len(context_ids):]


def encode_questions(tokenizer: PreTrainedTokenizerBase, questions: Sequence[dict[str, Any]]) -> list[EncodedChoice]:
    """Every (question, choice) pair of `questions`, encoded."""
    return [
        EncodedChoice(question_index, choice_index, *encode_choice(tokenizer, question["question"], choice))
        for question_index, question in enumerate(questions)
        for choice_index, choice in enumerate(question["choices"])
    ]


def pad_pairs(pairs: Sequence[EncodedChoice], pad_token_id: int) -> tuple[Tensor, Tensor]:
    """Right-padded input ids (context + continuation) and their attention mask."""
    sequences = [pair.context + pair.continuation for pair in pairs]
    length = max(len(sequence) for sequence in sequences)
    input_ids = torch.full((len(pairs), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(pairs), length), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        input_ids[row, : len(sequence)] = torch.tensor(sequence)
        attention_mask[row, : len(sequence)] = 1
    return input_ids, attention_mask


def continuation_log_likelihoods(logits: Tensor, pairs: Sequence[EncodedChoice]) -> Tensor:
    """Summed log-probability of each pair's continuation, from logits of its padded batch."""
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    scores = []
    for row, pair in enumerate(pairs):
        start = len(pair.context)  # position of the first continuation token
        targets = torch.tensor(pair.continuation, device=logits.device)
        positions = torch.arange(start - 1, start - 1 + len(pair.continuation), device=logits.device)
        scores.append(log_probs[row, positions, targets].sum())
    return torch.stack(scores)


def model_logits(model: PreTrainedModel) -> Callable[[Tensor, Tensor], Tensor]:
    """The usual logits function: the model's own output head."""
    return lambda input_ids, attention_mask: model(input_ids=input_ids, attention_mask=attention_mask).logits


@torch.no_grad()
def choice_log_likelihoods(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                           questions: Sequence[dict[str, Any]], batch_size: int = 64,
                           logits_fn: Callable[[Tensor, Tensor], Tensor] | None = None) -> list[list[float]]:
    """For each question, the log-likelihood of each of its choices (lm-eval's `acc` scores)."""
    logits_fn = logits_fn or model_logits(model)
    device = model.get_input_embeddings().weight.device
    pairs = encode_questions(tokenizer, questions)
    scores: list[list[float]] = [[0.0] * len(question["choices"]) for question in questions]
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start: start + batch_size]
        input_ids, attention_mask = pad_pairs(chunk, tokenizer.pad_token_id)
        logits = logits_fn(input_ids.to(device), attention_mask.to(device))
        for pair, score in zip(chunk, continuation_log_likelihoods(logits, chunk).tolist(), strict=True):
            scores[pair.question_index][pair.choice_index] = score
    return scores


def accuracy_from_scores(questions: Sequence[dict[str, Any]], scores: Sequence[Sequence[float]]) -> float:
    """Fraction of questions whose highest-scoring choice is the answer (ties go to the first)."""
    correct = sum(max(range(len(row)), key=row.__getitem__) == question["answer"]
                  for question, row in zip(questions, scores, strict=True))
    return correct / len(questions)


def multiple_choice_accuracy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                             questions: Sequence[dict[str, Any]], batch_size: int = 64) -> float:
    """lm-eval's `acc` on `questions`, computed in-process."""
    return accuracy_from_scores(questions, choice_log_likelihoods(model, tokenizer, questions, batch_size))


def choice_probabilities(scores: Sequence[float]) -> list[float]:
    """Log-likelihoods of one question's choices turned into probabilities that sum to one."""
    return torch.softmax(torch.tensor(scores, dtype=torch.float64), dim=0).tolist()
