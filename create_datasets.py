# /// script
# requires-python = ">=3.10"
# dependencies = ["brittle", "datasets>=3.0"]
#
# [tool.uv.sources]
# brittle = { path = ".", editable = true }
# ///
"""Create the forget/retain text datasets (and multiple-choice questions) both worlds read.

Real world (default; needs the Hugging Face hub, or local JSONL files in the hub datasets' schemas):

| file                     | source                                   | purpose                                   |
|--------------------------|------------------------------------------|-------------------------------------------|
| `data/forget.txt`        | the WMDP bio forget corpus (gated; title, | text the model *should* forget: papers,   |
|                          | abstract, text, doi), or `--forget-corpus`| not the test questions                    |
| `data/retain.txt`        | WikiText-2 (+ `--bio-retain`: the WMDP    | text the model *should* still handle      |
|                          | bio-retain corpus, safe biology)         |                                           |
| `data/questions/*.jsonl` | WMDP-Bio (question, choices, answer)     | all questions, and halves T and V         |
| `data/questions/split.json` |                                       | how T/V were split, and the checks made   |
| `data/tasks/*.yaml`      |                                          | lm-eval tasks over the T and V halves     |

The relearning attack's halves share no question: near-duplicate questions (the same words, give or
take case, punctuation and a few words) are grouped and each group goes to one half. Forget texts
that contain an evaluation question verbatim are refused (unlearning on the test set contaminates
it); `--allow-eval-in-forget` turns the refusal into a warning, and `--forget-corpus questions`
(the questions' own question+answer texts, all of T and V) needs it.

Toy organism (`--preset toy`; offline): the same files under `data/toy/`, rendered from the
invented facts of `brittle.organism`, plus the lm-eval tasks `toy_forget_mcq`, `toy_forget_mcq_t`,
`toy_forget_mcq_v` and `toy_retain_mcq`.

Your own text files (`--forget-source F --retain-source R`) are checked and copied to `data/`.
Every path refuses forget and retain sets that share a line.
"""

from __future__ import annotations

import argparse
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path

from brittle import organism
from brittle.cli import UserError, positive_int, run_cli
from brittle.evaluation import multiple_choice_task_yaml
from brittle.identity import Identity
from brittle.outputs import (
    read_jsonl,
    skip_if_complete,
    staged_directory,
    write_json,
    write_jsonl,
    write_lines,
    write_text,
)
from brittle.presets import TOY_DATA_DIR
from brittle.texts import check_disjoint, read_texts

WMDP_PROMPT = "The following are multiple choice questions (with answers) about biology.\n\n"
HUB = "hub"
NEAR_DUPLICATE_JACCARD = 0.8  # questions (with their choices) sharing this much of their words are one question
MIN_VERBATIM_CHARS = 40  # shorter question stems ("Which of the following is true?") are not evidence


def split_halves(items: list, rng: random.Random) -> tuple[list, list]:
    """Shuffle a copy of `items` and cut it into two halves (T, V)."""
    shuffled = list(items)
    rng.shuffle(shuffled)
    half = len(shuffled) // 2
    return shuffled[:half], shuffled[half:]


def write_questions(staging: Path, final: Path, name: str, task: str, questions: list[dict]) -> None:
    """`questions/<name>.jsonl` and the lm-eval task `tasks/<task>.yaml` over it.

    Files are written under `staging`; the task names the questions by their path under `final`,
    where the folder will live once published.
    """
    del final  # the task names its questions relative to itself, so the folder may be copied or moved
    write_jsonl(staging / "questions" / f"{name}.jsonl", questions)
    write_text(staging / "tasks" / f"{task}.yaml",
               multiple_choice_task_yaml(task, os.path.relpath(Path("questions") / f"{name}.jsonl", "tasks")))


def write_forget_questions(staging: Path, final: Path, task_prefix: str, questions: list[dict],
                           half_t: list[dict], half_v: list[dict]) -> None:
    """All forget questions and the T and V halves, each with its task (`<prefix>`, `_t`, `_v`)."""
    for suffix, subset in (("", questions), ("_t", half_t), ("_v", half_v)):
        write_questions(staging, final, f"forget{suffix}", f"{task_prefix}{suffix}", subset)


# --------------------------------------------------------------------------------------------------
# The toy organism's data
# --------------------------------------------------------------------------------------------------

def create_toy_datasets(data_dir: Path, entities: int, seed: int, identity: Identity | None = None) -> None:
    """Forget/retain text, questions (forget split into T/V by entity) and lm-eval tasks."""
    world = organism.build_world(entities_per_domain=entities, seed=seed)
    forget_texts = organism.training_texts(world.forget_facts)
    retain_texts = organism.training_texts(world.retain_facts)
    check_disjoint(forget_texts, retain_texts)

    rng = random.Random(seed)
    forget_questions = [
        {**organism.multiple_choice_question(fact, organism.FORGET_DOMAIN, rng), "half": world.half_of(fact)}
        for fact in world.forget_facts
    ]
    retain_questions = [organism.multiple_choice_question(fact, organism.RETAIN_DOMAIN, rng)
                        for fact in world.retain_facts]

    with staged_directory(data_dir, identity=identity) as staging:
        write_lines(staging / "forget.txt", forget_texts)
        write_lines(staging / "retain.txt", retain_texts)
        write_forget_questions(staging, data_dir, "toy_forget_mcq", forget_questions,
                               [question for question in forget_questions if question["half"] == "T"],
                               [question for question in forget_questions if question["half"] == "V"])
        write_questions(staging, data_dir, "retain", "toy_retain_mcq", retain_questions)
        write_json(staging / "world.json", {
            "seed": seed,
            "entities_per_domain": entities,
            "forget_half_t": sorted(world.forget_half_t),
            "forget_half_v": sorted(world.forget_half_v),
            "facts": [vars(fact) for fact in world.forget_facts + world.retain_facts],
        })
    print(f"toy data: {len(forget_texts)} forget and {len(retain_texts)} retain texts, "
          f"{len(forget_questions)} forget questions (T {len(world.forget_half_t)} / "
          f"V {len(world.forget_half_v)} entities), {len(retain_questions)} retain questions -> {data_dir}")


# --------------------------------------------------------------------------------------------------
# The real datasets (WMDP-Bio and WikiText-2 from the Hugging Face hub)
# --------------------------------------------------------------------------------------------------

def wmdp_prompt(question: str, choices: list[str]) -> str:
    """The question as lm-eval's `wmdp_bio` task asks it; the answer is one of the letters A-D."""
    options = "".join(f"{letter}. {choice}\n" for letter, choice in zip("ABCD", choices, strict=True))
    return f"{WMDP_PROMPT}{question.strip()}\n{options}Answer:"


def load_hub_dataset(*args, **kwargs):
    """`datasets.load_dataset`, with a one-line error when the hub cannot be reached."""
    import datasets

    try:
        return datasets.load_dataset(*args, **kwargs)
    except Exception as error:  # datasets raises many types for network and auth failures
        raise UserError(f"could not load {args[0]} from the Hugging Face hub ({type(error).__name__}: "
                        f"{str(error).splitlines()[0] if str(error) else ''}); check your network and "
                        "HF_TOKEN (WMDP is gated), or use --preset toy offline") from error


@dataclass(frozen=True)
class RealSources:
    """Where each real dataset comes from: "hub", or a local JSONL file in that hub dataset's schema.

    `forget_corpus` "questions" uses the WMDP-Bio questions' own texts; `bio_retain` None leaves the
    bio-retain corpus out of the retain set.
    """

    questions: str = HUB  # cais/wmdp, wmdp-bio, test: question, choices, answer
    forget_corpus: str = HUB  # cais/wmdp-bio-forget-corpus (gated), train: title, abstract, text, doi
    wikitext: str = HUB  # wikitext, wikitext-2-raw-v1, train: text
    bio_retain: str | None = None  # cais/wmdp-corpora, bio-retain-corpus, train: text


def load_records(source: str, hub_name: str, hub_config: str | None, split: str,
                 sample: int | None = None, seed: int = 0) -> list[dict]:
    """The records of a dataset from the hub or a local JSONL file (`sample`: a seeded sample of that many)."""
    if source != HUB:
        if not Path(source).is_file():
            raise UserError(f"{source} does not exist; pass a JSONL file in {hub_name}'s schema, or 'hub'")
        records = read_jsonl(source)
    elif sample is not None:  # large corpora (bio-retain is 1.9 GB): stream and shuffle with a buffer
        stream = load_hub_dataset(hub_name, hub_config, split=split, streaming=True)
        return list(stream.shuffle(seed=seed, buffer_size=10_000).take(sample))
    else:
        records = list(load_hub_dataset(hub_name, hub_config, split=split))
    if not records:
        raise UserError(f"{source if source != HUB else hub_name} has no records")
    if sample is not None and len(records) > sample:
        records = random.Random(seed).sample(records, sample)
    return records


def one_line(text: str) -> str:
    """A text as one line of a text file (newlines and runs of spaces become one space)."""
    return " ".join(text.split())


def normalized_words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def question_key(row: dict) -> str:
    """A question with its choices, ignoring case, spacing and punctuation: equal keys are duplicates."""
    return " ".join(normalized_words(" ".join([row["question"], *map(str, row["choices"])])))


def split_questions_without_duplicates(rows: list[dict], seed: int) -> tuple[list[dict], list[dict]]:
    """Halves T and V of `rows` that share no question, exact or near duplicate.

    Questions with the same key, or whose word sets (question + choices) overlap by Jaccard >=
    NEAR_DUPLICATE_JACCARD, form one group (union-find); groups are shuffled with `seed` and dealt to
    the smaller half, so the halves stay balanced.
    """
    parent = list(range(len(rows)))

    def root(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    words = [frozenset(question_key(row).split()) for row in rows]
    for first in range(len(rows)):
        for second in range(first + 1, len(rows)):
            union = len(words[first] | words[second])
            if union and len(words[first] & words[second]) / union >= NEAR_DUPLICATE_JACCARD:
                parent[root(second)] = root(first)
    groups: dict[int, list[dict]] = {}
    for index, row in enumerate(rows):
        groups.setdefault(root(index), []).append(row)
    ordered = list(groups.values())
    random.Random(seed).shuffle(ordered)
    half_t: list[dict] = []
    half_v: list[dict] = []
    for group in ordered:
        (half_t if len(half_t) <= len(half_v) else half_v).extend(group)
    return half_t, half_v


def check_no_evaluation_questions(forget_texts: list[str], rows: list[dict], allow: bool) -> int:
    """Refuse (or, with `allow`, warn about) forget texts that contain an evaluation question verbatim.

    Returns how many forget texts contain one. Question stems shorter than MIN_VERBATIM_CHARS are not
    searched for: generic stems are no evidence of contamination.
    """
    stems = {one_line(row["question"]).lower() for row in rows}
    stems = [stem for stem in stems if len(stem) >= MIN_VERBATIM_CHARS]
    contaminated = [text for text in forget_texts if any(stem in one_line(text).lower() for stem in stems)]
    if contaminated:
        message = (f"{len(contaminated)} forget text(s) contain an evaluation question verbatim (e.g. "
                   f"{contaminated[0][:70]!r}): unlearning on the test questions contaminates the evaluation. "
                   "Use a forget corpus that is not the test set (--forget-corpus), or pass --allow-eval-in-forget")
        if not allow:
            raise UserError(message)
        print(f"WARNING: {message.split(' Use a forget corpus')[0]} (allowed by --allow-eval-in-forget)")
    return len(contaminated)


def create_real_datasets(data_dir: Path, num_samples: int, seed: int, sources: RealSources = RealSources(),
                         allow_eval_in_forget: bool = False) -> None:
    """forget.txt, retain.txt, the WMDP-Bio questions split into T/V without duplicates, and split.json."""
    rng = random.Random(seed)
    rows = load_records(sources.questions, "cais/wmdp", "wmdp-bio", "test")
    questions = [
        {
            "question": wmdp_prompt(example["question"], example["choices"]),
            "choices": ["A", "B", "C", "D"],
            "answer": int(example["answer"]),
            "text": f"{example['question'].strip()} Answer: {example['choices'][example['answer']].strip()}",
            "key": question_key(example),
        }
        for example in rows
    ]
    half_t, half_v = split_questions_without_duplicates(questions, seed)
    shared = {question["key"] for question in half_t} & {question["key"] for question in half_v}
    if shared:  # cannot happen by construction; checked because the attack's meaning depends on it
        raise UserError(f"internal error: T and V share {len(shared)} question(s)")

    if sources.forget_corpus == "questions":  # every T and V question, so the attack's halves were all unlearned
        forget_texts = [question["text"] for question in half_t + half_v]
    else:
        corpus = load_records(sources.forget_corpus, "cais/wmdp-bio-forget-corpus", None, "train")
        forget_texts = [one_line(record["text"]) for record in rng.sample(corpus, min(num_samples, len(corpus)))]
    contaminated = check_no_evaluation_questions(forget_texts, rows, allow_eval_in_forget)

    wikitext = load_records(sources.wikitext, "wikitext", "wikitext-2-raw-v1", "train")
    paragraphs = [one_line(record["text"]) for record in wikitext
                  if len(record["text"].strip()) > 200 and not record["text"].strip().startswith("=")]
    retain_texts = rng.sample(paragraphs, min(num_samples, len(paragraphs)))
    if sources.bio_retain is not None:
        bio = load_records(sources.bio_retain, "cais/wmdp-corpora", "bio-retain-corpus", "train",
                           sample=num_samples, seed=seed)
        retain_texts += [one_line(record["text"]) for record in bio]
        rng.shuffle(retain_texts)
    check_disjoint(forget_texts, retain_texts)

    split = {"seed": seed, "t_questions": len(half_t), "v_questions": len(half_v),
             "shared_between_halves": len(shared), "near_duplicate_jaccard": NEAR_DUPLICATE_JACCARD,
             "grouped_duplicates": len(questions) - len({question["key"] for question in questions}),
             "forget_source": sources.forget_corpus, "forget_texts": len(forget_texts),
             "forget_texts_with_eval_questions": contaminated,
             "retain_sources": ["wikitext", *(["bio-retain"] if sources.bio_retain is not None else [])],
             "sources": vars(sources)}
    for question in questions:
        del question["key"]
    write_lines(data_dir / "forget.txt", forget_texts)
    write_lines(data_dir / "retain.txt", retain_texts)
    write_forget_questions(data_dir, data_dir, "wmdp_bio", questions, half_t, half_v)
    write_json(data_dir / "questions" / "split.json", split)
    print(f"real data: {len(forget_texts)} forget texts ({sources.forget_corpus}), {len(retain_texts)} retain texts "
          f"({' + '.join(split['retain_sources'])}), {len(questions)} questions split T {len(half_t)} / "
          f"V {len(half_v)} with no shared question -> {data_dir}")


def copy_own_datasets(data_dir: Path, forget_source: str, retain_source: str) -> None:
    """Your own forget/retain text files (one text per line), checked and copied into `data_dir`."""
    forget_texts = read_texts(forget_source, what="forget source")
    retain_texts = read_texts(retain_source, what="retain source")
    check_disjoint(forget_texts, retain_texts)
    write_lines(data_dir / "forget.txt", forget_texts)
    write_lines(data_dir / "retain.txt", retain_texts)
    print(f"own data: {len(forget_texts)} forget and {len(retain_texts)} retain texts -> {data_dir}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=["real", "toy"], default="real",
                        help="real: WMDP-Bio + WikiText-2 from the hub; toy: the organism's invented facts")
    parser.add_argument("--data-dir", default=None, help=f"output folder (default data/, or {TOY_DATA_DIR}/ for toy)")
    parser.add_argument("--num-samples", type=positive_int, default=500,
                        help="real: texts per split (default 500)")
    parser.add_argument("--entities", type=positive_int, default=40,
                        help="toy: invented entities per domain, 5 facts each (default 40; at least 2, one per half)")
    parser.add_argument("--forget-source", default=None,
                        help="real: use this text file (one text per line) instead of WMDP-Bio")
    parser.add_argument("--retain-source", default=None,
                        help="real: use this text file (one text per line) instead of WikiText-2")
    parser.add_argument("--questions-file", default=HUB,
                        help="real: WMDP-Bio questions, 'hub' or a local JSONL (question, choices, answer)")
    parser.add_argument("--forget-corpus", default=HUB,
                        help="real: the forget texts: 'hub' (the gated WMDP bio forget corpus), a local JSONL with "
                             "a 'text' field, or 'questions' (the questions' own texts; needs --allow-eval-in-forget)")
    parser.add_argument("--wikitext-file", default=HUB, help="real: WikiText-2, 'hub' or a local JSONL ('text')")
    parser.add_argument("--bio-retain", default=None,
                        help="real: add safe biology text to the retain set: 'hub' (WMDP bio-retain corpus) or a "
                             "local JSONL ('text'); default: WikiText only")
    parser.add_argument("--allow-eval-in-forget", action="store_true",
                        help="real: warn instead of refusing forget texts that contain evaluation questions verbatim")
    parser.add_argument("--seed", type=int, default=42, help="seed of the sampling / the invented world")
    parser.add_argument("--force", action="store_true", help="recreate even if the data exists")
    args = parser.parse_args()

    if args.preset == "toy":
        if args.entities < 2:
            raise UserError(f"--entities must be at least 2 (one per half, T and V), got {args.entities}")
        data_dir = Path(args.data_dir or TOY_DATA_DIR)
        identity = Identity.of(settings={"entities": args.entities, "seed": args.seed})
        if skip_if_complete(data_dir, args.force, what="toy data", identity=identity):
            return
        create_toy_datasets(data_dir, args.entities, args.seed, identity)
    else:
        data_dir = Path(args.data_dir or "data")
        if (data_dir / "forget.txt").exists() and (data_dir / "retain.txt").exists() and not args.force:
            print(f"skipped: {data_dir}/forget.txt and retain.txt already exist; pass --force to recreate")
            return
        if (args.forget_source is None) != (args.retain_source is None):
            raise UserError("--forget-source and --retain-source go together; pass both or neither")
        if args.forget_source:
            copy_own_datasets(data_dir, args.forget_source, args.retain_source)
        else:
            create_real_datasets(data_dir, args.num_samples, args.seed,
                                 RealSources(args.questions_file, args.forget_corpus, args.wikitext_file,
                                             args.bio_retain), args.allow_eval_in_forget)


if __name__ == "__main__":
    run_cli(main)
