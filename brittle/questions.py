"""Multiple-choice questions: one type and one reader for every script.

The toolkit's question files are JSONL, one record a line: `question` (the full prompt), `choices` (the
options, scored as continuations after a space) and `answer` (the index of the correct option). They are
written by `create_datasets.py` (`data/questions/`, `data/toy/questions/`) and read by Step 0's local tasks,
the lenses (experiment/layerwise_wmdp_accuracy.py), the relearning attack and the inference tools.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from brittle.cli import UserError


@dataclass(frozen=True)
class Question:
    """One multiple-choice question: the prompt, its options, the correct index."""

    question: str
    choices: tuple[str, ...]
    answer: int | None = None  # None when the right option is unknown (a question typed in the UI)
    extra: dict[str, Any] = field(default_factory=dict)  # the record's other fields, e.g. the toy "entity"

    def as_record(self) -> dict[str, Any]:
        """The JSONL record as read (what brittle.multiple_choice scores): question, choices, answer and the rest."""
        return {"question": self.question, "choices": list(self.choices), "answer": self.answer, **self.extra}


def read_questions(path: str | Path, limit: int | None = None) -> list[Question]:
    """The first `limit` (default all) questions of a JSONL file, each checked; a one-line `UserError` naming the
    file and line for a missing, empty or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"cannot read questions from {path}: no such file; create it with `uv run create_datasets.py` "
                        "(add `--preset toy` for the toy organism)")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read questions from {path}: {error}") from error
    questions = []
    for number, line in enumerate(lines, start=1):
        if limit is not None and len(questions) >= limit:
            break
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            extra = {key: value for key, value in record.items() if key not in ("question", "choices", "answer")}
            question = Question(str(record["question"]), tuple(map(str, record["choices"])), int(record["answer"]),
                                extra)
        except (ValueError, KeyError, TypeError) as error:
            raise UserError(f"{path} line {number} is not a {{question, choices, answer}} record ({error})") from error
        if not 0 <= question.answer < len(question.choices):
            raise UserError(f"{path} line {number}: answer {question.answer} is not the index of one of its "
                            f"{len(question.choices)} choices")
        questions.append(question)
    if not questions:
        raise UserError(f"question file {path} has no questions")
    return questions


def question_records(path: str | Path, what: str | None = None) -> list[dict[str, Any]]:
    """The questions of `path` as the records brittle.multiple_choice scores (`Question.as_record`), checked
    line by line as `read_questions` does; `what` (e.g. "the V split") starts a reading error's line.

    Questions about pictures (a vision-language organism's) get their `image` resolved against the file's folder.
    """
    try:
        records = [question.as_record() for question in read_questions(path)]
    except UserError as error:
        raise UserError(f"{what}: {error}" if what else str(error)) from None
    folder = Path(path).parent.absolute()
    return [{**record, "image": str(folder / record["image"])} if record.get("image") else record for record in records]
