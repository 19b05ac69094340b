"""Multiple-choice scoring exactly as lm-evaluation-harness does it, but in-process and batched.

A question is `{question, choices, answer}` (the common JSONL schema of brittle/evaluation.py). Each
choice is a *continuation* of the question, after one space; its score is the summed log-probability
of its tokens given the question, and the prediction is the highest-scoring choice. Tokenisation
follows lm-eval's `_encode_pair`: encode question + " " + choice as a whole, and take as the
continuation the tokens after those of the question alone.

Use this where lm-eval's per-call overhead would dominate (an attack that evaluates after every epoch)
or where the logits do not come from the model's final layer (a logit or tuned lens): pass
`logits_fn` to score from any function of the batch.

It is memory-lean, for long questions on large models: each question's context runs once with all of
its choices packed behind it under a block attention mask, without a key/value cache, and the output
head and the fp32 log-softmax over the vocabulary are computed only at the positions that predict a
choice token (benchmarks/scorer_memory.py measures the difference).
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
    """(context ids, continuation ids) for `choice` as the continuation of `question`.

    An empty question becomes the BOS (else EOS) token, as lm-eval conditions an unconditional
    continuation.
    """
    context, continuation = question, TARGET_DELIMITER + choice
    if not context:
        prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        return [prefix], tokenizer(continuation, add_special_tokens=False)["input_ids"]
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


@dataclass(frozen=True)
class PackedRow:
    """One model input: a context followed by every continuation that shares it (all choices of a
    question, as a rule), each continuation seeing the context and itself but not the others."""

    context: list[int]
    pairs: list[EncodedChoice]

    @property
    def length(self) -> int:
        return len(self.context) + sum(len(pair.continuation) for pair in self.pairs)


def pack_pairs(pairs: Sequence[EncodedChoice], share_context: bool = True) -> list[PackedRow]:
    """Group (question, choice) pairs with identical context ids into rows (one row per pair when not
    `share_context`). lm-eval's split can give one choice a different context (a token merging across the
    boundary); such a choice gets a row of its own, so every score stays exactly lm-eval's."""
    rows: dict[tuple, PackedRow] = {}
    for index, pair in enumerate(pairs):
        key = (pair.question_index, tuple(pair.context)) if share_context else (index,)
        rows.setdefault(key, PackedRow(pair.context, [])).pairs.append(pair)
    return list(rows.values())


@dataclass
class PackedBatch:
    """Model inputs for a list of rows, and where each continuation token is predicted."""

    input_ids: Tensor  # (rows, length), right-padded
    position_ids: Tensor  # (rows, length): every continuation continues the context's positions
    allowed: Tensor  # (rows, length, length) bool: query i may attend to key j
    attention_mask: Tensor  # (rows, length) 1 on tokens, 0 on padding
    row: Tensor  # (continuation tokens,) the row of each scored token
    position: Tensor  # (continuation tokens,) the position whose output predicts it
    target: Tensor  # (continuation tokens,) the token
    pair_of_token: Tensor  # (continuation tokens,) index into `pairs`
    pairs: list[EncodedChoice]


def packed_batch(rows: Sequence[PackedRow], pad_token_id: int) -> PackedBatch:
    """Lay out the rows: context at positions 0..C-1, each continuation from position C again.

    Segment 0 is the context, segment k the k-th continuation; a token attends causally to earlier tokens
    of its own segment and of the context. The first token of every continuation is predicted by the
    last context position, later ones by the continuation's previous token (lm-eval's scoring).
    """
    length = max(row.length for row in rows)
    input_ids = torch.full((len(rows), length), pad_token_id, dtype=torch.long)
    position_ids = torch.zeros((len(rows), length), dtype=torch.long)
    segment = torch.full((len(rows), length), -1, dtype=torch.long)  # -1: padding
    scored_row, scored_position, target, pair_of_token, pairs = [], [], [], [], []
    for row_index, row in enumerate(rows):
        context_length = len(row.context)
        input_ids[row_index, :context_length] = torch.tensor(row.context)
        position_ids[row_index, :context_length] = torch.arange(context_length)
        segment[row_index, :context_length] = 0
        start = context_length
        for number, pair in enumerate(row.pairs, start=1):
            end = start + len(pair.continuation)
            input_ids[row_index, start:end] = torch.tensor(pair.continuation)
            position_ids[row_index, start:end] = torch.arange(context_length, context_length + end - start)
            segment[row_index, start:end] = number
            scored_position += [context_length - 1, *range(start, end - 1)]
            scored_row += [row_index] * (end - start)
            target += pair.continuation
            pair_of_token += [len(pairs)] * (end - start)
            pairs.append(pair)
            start = end
    index = torch.arange(length)
    causal = index[None, :, None] >= index[None, None, :]
    query, key = segment[:, :, None], segment[:, None, :]
    allowed = causal & ((key == 0) | (key == query)) & (key >= 0)
    allowed |= torch.eye(length, dtype=torch.bool)[None]  # padding attends to itself (no empty softmax rows)
    return PackedBatch(input_ids, position_ids, allowed, (segment >= 0).long(), torch.tensor(scored_row),
                       torch.tensor(scored_position), torch.tensor(target), torch.tensor(pair_of_token), pairs)


def attention_mask_4d(allowed: Tensor, model: PreTrainedModel) -> Tensor:
    """The (rows, 1, length, length) mask the model's attention takes: bool for sdpa, additive for eager."""
    mask = allowed[:, None]
    if getattr(model.config, "_attn_implementation", "eager") == "eager":
        dtype = next(model.parameters()).dtype
        return torch.zeros(mask.shape, dtype=dtype).masked_fill(~mask, torch.finfo(dtype).min)
    return mask


def scored_log_probs(hidden: Tensor, head: Callable[[Tensor], Tensor], batch: PackedBatch) -> Tensor:
    """Summed log-probability of each pair's continuation: the output head and the fp32 log-softmax over
    the vocabulary only at the positions that predict a continuation token."""
    device = hidden.device
    logits = head(hidden[batch.row.to(device), batch.position.to(device)]).float()
    token_log_probs = torch.log_softmax(logits, dim=-1).gather(1, batch.target.to(device)[:, None]).squeeze(1)
    sums = torch.zeros(len(batch.pairs), dtype=torch.float64, device=device)
    return sums.index_add_(0, batch.pair_of_token.to(device), token_log_probs.double())


def packed_scores(model: PreTrainedModel, batch: PackedBatch) -> Tensor:
    """Run the model's body once over the packed rows (no key/value cache), then score at the scored
    positions with the model's own output head."""
    device = model.get_input_embeddings().weight.device
    body = model.get_decoder() if hasattr(model, "get_decoder") else model.base_model
    hidden = body(input_ids=batch.input_ids.to(device), position_ids=batch.position_ids.to(device),
                  attention_mask=attention_mask_4d(batch.allowed, model).to(device), use_cache=False).last_hidden_state
    return scored_log_probs(hidden, model.get_output_embeddings(), batch)


def logits_fn_scores(logits_fn: Callable[[Tensor, Tensor], Tensor], batch: PackedBatch,
                     device: torch.device) -> Tensor:
    """Scores from any function of (input ids, 2-D attention mask) -> logits, e.g. a lens; one pair per row."""
    logits = logits_fn(batch.input_ids.to(device), batch.attention_mask.to(device))
    return scored_log_probs(logits, lambda selected: selected, batch)


def continuation_log_likelihoods(logits: Tensor, pairs: Sequence[EncodedChoice]) -> Tensor:
    """Summed log-probability of each pair's continuation from logits already computed for it: row r holds
    pairs[r]'s context then continuation (right-padded). The fp32 log-softmax runs only at the positions
    that predict a continuation token (the lenses, which produce their logits on a window of positions)."""
    scores = []
    for row, pair in enumerate(pairs):
        start = len(pair.context) - 1  # the position that predicts the first continuation token
        positions = torch.arange(start, start + len(pair.continuation), device=logits.device)
        targets = torch.tensor(pair.continuation, device=logits.device)
        log_probs = torch.log_softmax(logits[row, positions].float(), dim=-1)
        scores.append(log_probs.gather(1, targets[:, None]).sum())
    return torch.stack(scores)


def memory_lean_batches(rows: list[PackedRow], batch_size: int) -> list[list[PackedRow]]:
    """Rows in batches of `batch_size`, longest first (little padding)."""
    ordered = sorted(rows, key=lambda row: -row.length)
    return [ordered[start: start + batch_size] for start in range(0, len(ordered), batch_size)]


def is_fully_sharded(model: torch.nn.Module) -> bool:
    """Whether FSDP2 (`fully_shard`) wraps the model: its submodules cannot be called on their own."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # torch without FSDP2
        return False
    return isinstance(model, FSDPModule)


@torch.no_grad()
def choice_log_likelihoods(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                           questions: Sequence[dict[str, Any]], batch_size: int = 16,
                           logits_fn: Callable[[Tensor, Tensor], Tensor] | None = None) -> list[list[float]]:
    """For each question, the log-likelihood of each of its choices (lm-eval's `acc` scores).

    Memory-lean: each question's context runs once with all its choices packed behind it (`packed_batch`),
    `batch_size` questions per forward pass, no key/value cache, and the output head and log-softmax only
    where a choice token is predicted; a 1,024-token question with 4 choices costs one forward pass over
    ~1,030 tokens instead of four over 1,024 and (4 × 1,024) × vocabulary fp32 log-probabilities.
    Flash-attention cannot take the packed mask, so there (and with `logits_fn`, which returns logits for
    every position) each choice gets its own row, still scored only at its continuation positions. A model
    sharded with FSDP2 runs only through its root module's forward, so it is scored the same way.
    """
    device = model.get_input_embeddings().weight.device
    if logits_fn is None and is_fully_sharded(model):
        def logits_fn(input_ids: Tensor, attention_mask: Tensor) -> Tensor:
            return model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    share = logits_fn is None and getattr(model.config, "_attn_implementation", None) != "flash_attention_2"
    rows = pack_pairs(encode_questions(tokenizer, questions), share_context=share)
    scores: list[list[float]] = [[0.0] * len(question["choices"]) for question in questions]
    for chunk in memory_lean_batches(rows, batch_size):
        batch = packed_batch(chunk, tokenizer.pad_token_id)
        values = packed_scores(model, batch) if logits_fn is None else logits_fn_scores(logits_fn, batch, device)
        for pair, score in zip(batch.pairs, values.tolist(), strict=True):
            scores[pair.question_index][pair.choice_index] = score
    return scores


def accuracy_from_scores(questions: Sequence[dict[str, Any]], scores: Sequence[Sequence[float]]) -> float:
    """Fraction of questions whose highest-scoring choice is the answer (ties go to the first)."""
    correct = sum(max(range(len(row)), key=row.__getitem__) == question["answer"]
                  for question, row in zip(questions, scores, strict=True))
    return correct / len(questions)


def multiple_choice_accuracy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                             questions: Sequence[dict[str, Any]], batch_size: int = 16) -> float:
    """lm-eval's `acc` on `questions`, computed in-process."""
    return accuracy_from_scores(questions, choice_log_likelihoods(model, tokenizer, questions, batch_size))


def choice_probabilities(scores: Sequence[float]) -> list[float]:
    """Log-likelihoods of one question's choices turned into probabilities that sum to one."""
    return torch.softmax(torch.tensor(scores, dtype=torch.float64), dim=0).tolist()
