"""Inference with a loaded model: streaming generation and multiple-choice option probabilities.

Shared by `infer/cli.py` (the terminal) and `infer/app.py` (the side-by-side web UI), so that a
prompt means the same thing in both and the option probabilities are those lm-eval compares:

    stream = stream_generation(model, tokenizer, "Q: What is the host of Galdyrix? A:", GenerationSettings())
    scores = score_options(model, tokenizer, "Q: What is the host of Galdyrix? A:", ["salt crabs", "bog shrews"])
    scores.probabilities  # [0.97, 0.03]: each option's share of the options' total likelihood

Multiple-choice scoring is `brittle.multiple_choice`, which follows lm-eval's `multiple_choice` tasks
exactly: every option is a continuation of the question after one space, its log-likelihood is the sum
of its tokens' log-probabilities given the question, and `acc` picks the largest. Normalising those
likelihoods over the options (a softmax of the log-likelihoods) gives the probabilities shown.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase, TextIteratorStreamer

from brittle.cli import UserError
from brittle.models import input_device
from brittle.multiple_choice import choice_log_likelihoods, choice_probabilities
from brittle.questions import Question
from brittle.questions import read_questions as read_questions  # the inference tools' reader, re-exported
from brittle.runtime import seed_everything

MODEL_FOLDERS = ("models", "unlearned_models")  # where local models live, relative to the working directory


# --- generation ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class GenerationSettings:
    """How to continue a prompt: greedy when `temperature` is 0, otherwise nucleus sampling."""

    max_new_tokens: int = 200
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 42

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise UserError(f"max new tokens must be at least 1, got {self.max_new_tokens}")
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):
            raise UserError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise UserError(f"top-p must be in (0, 1], got {self.top_p}")

    def generate_arguments(self) -> dict[str, object]:
        """Keyword arguments for `model.generate` (besides the inputs and the streamer)."""
        if self.temperature == 0:
            return {"max_new_tokens": self.max_new_tokens, "do_sample": False}
        return {"max_new_tokens": self.max_new_tokens, "do_sample": True,
                "temperature": self.temperature, "top_p": self.top_p}


def check_prompt(prompt: str) -> None:
    """A prompt must contain something for the model to continue."""
    if not prompt.strip():
        raise UserError("the prompt is empty; give the text the model should continue")


def stream_generation(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: str,
                      settings: GenerationSettings) -> Iterator[str]:
    """The continuation of `prompt`, yielded piece by piece as the model produces it.

    `model.generate` runs in a background thread and hands decoded text to a queue
    (`TextIteratorStreamer`); an exception raised there is re-raised here once the stream ends.
    The prompt itself is not repeated and special tokens (EOS) are dropped.
    """
    check_prompt(prompt)
    encoded = tokenizer(prompt, return_tensors="pt")
    device = input_device(model)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    failures: list[BaseException] = []

    def generate() -> None:
        try:
            model.generate(input_ids=encoded["input_ids"].to(device),
                           attention_mask=encoded["attention_mask"].to(device),
                           pad_token_id=tokenizer.pad_token_id, streamer=streamer,
                           **settings.generate_arguments())
        except BaseException as error:  # handed to the reading thread below, never lost
            failures.append(error)
            streamer.end()  # unblock the reader

    seed_everything(settings.seed)
    worker = threading.Thread(target=generate, name="generate", daemon=True)
    worker.start()
    yield from streamer
    worker.join()
    if failures:
        raise failures[0]


def generate_text(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: str,
                  settings: GenerationSettings) -> str:
    """The whole continuation of `prompt` at once."""
    return "".join(stream_generation(model, tokenizer, prompt, settings))


# --- multiple choice, scored as lm-eval scores it -----------------------------------------------

# One question type and reader for the toolkit (brittle.questions); the old name stays for callers.
MultipleChoiceQuestion = Question


@dataclass(frozen=True)
class OptionScores:
    """A model's verdict on the options of one question."""

    choices: tuple[str, ...]
    log_likelihoods: tuple[float, ...]  # log P(" " + option | question), summed over its tokens
    probabilities: tuple[float, ...]  # the likelihoods normalised over the options (they sum to 1)

    @property
    def predicted(self) -> int:
        """The option lm-eval's `acc` would pick: the largest log-likelihood."""
        return max(range(len(self.log_likelihoods)), key=self.log_likelihoods.__getitem__)


def score_options(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, question: str,
                  choices: Sequence[str]) -> OptionScores:
    """Each option's log-likelihood and normalised probability as the answer to `question`."""
    check_prompt(question)
    check_choices(choices)
    record = {"question": question, "choices": list(choices)}
    log_likelihoods = choice_log_likelihoods(model, tokenizer, [record])[0]
    return OptionScores(tuple(choices), tuple(log_likelihoods), tuple(choice_probabilities(log_likelihoods)))


def check_choices(choices: Sequence[str]) -> None:
    """At least two options, none blank, no repeats."""
    if len(choices) < 2:
        raise UserError(f"a multiple-choice question needs at least two options, got {len(choices)}")
    if any(not choice.strip() for choice in choices):
        raise UserError("an option is blank; give every option some text")
    repeated = sorted({choice for choice in choices if list(choices).count(choice) > 1})
    if repeated:
        raise UserError(f"option(s) given more than once: {', '.join(repeated)}")


# --- finding things to run ----------------------------------------------------------------------

def find_local_models(roots: Sequence[str | Path] = MODEL_FOLDERS, max_depth: int = 2) -> list[str]:
    """Model folders (holding a config.json) under `roots`, as paths to type: `models/toy-base-s42`.

    Looks `max_depth` folders deep and skips hidden folders (e.g. a run's unfinished staging folder).
    """
    found = []
    for root in map(Path, roots):
        for depth in range(1, max_depth + 1):
            for config in sorted(root.glob("/".join(["*"] * depth) + "/config.json")):
                folder = config.parent
                if not any(part.startswith(".") for part in folder.relative_to(root).parts):
                    found.append(folder.as_posix())
    return found


def find_question_files(data_root: str | Path = "data") -> list[Path]:
    """Question JSONL files the toolkit writes: `data/questions/*.jsonl`, `data/<preset>/questions/*.jsonl`."""
    root = Path(data_root)
    return sorted([*root.glob("questions/*.jsonl"), *root.glob("*/questions/*.jsonl")])
