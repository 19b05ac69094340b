# /// script
# requires-python = ">=3.10"
# dependencies = ["brittle", "datasets>=3.0"]
#
# [tool.uv.sources]
# brittle = { path = ".", editable = true }
# ///
"""Create the forget/retain text datasets (and multiple-choice questions) both worlds read.

Real world (default; needs the Hugging Face hub):

| file                   | source      | purpose                                                  |
|------------------------|-------------|----------------------------------------------------------|
| `data/forget.txt`      | WMDP-Bio    | text the model *should* have forgotten (the target)      |
| `data/retain.txt`      | WikiText-2  | benign text the model *should* still handle (the control)|
| `data/questions/*.jsonl` | WMDP-Bio  | the questions, all and split into halves T and V         |
| `data/tasks/*.yaml`    |             | lm-eval tasks over the T and V halves (relearning attack)|

Toy organism (`--preset toy`; offline): the same files under `data/toy/`, rendered from the
invented facts of `brittle.organism`, plus the lm-eval tasks `toy_forget_mcq`, `toy_forget_mcq_t`,
`toy_forget_mcq_v` and `toy_retain_mcq`.

Your own text files (`--forget-source F --retain-source R`) are checked and copied to `data/`.
Every path refuses forget and retain sets that share a line.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from brittle import organism
from brittle.cli import UserError, positive_int, run_cli
from brittle.evaluation import multiple_choice_task_yaml
from brittle.outputs import skip_if_complete, staged_directory, write_json, write_jsonl, write_lines, write_text
from brittle.presets import TOY_DATA_DIR
from brittle.texts import check_disjoint, read_texts

WMDP_PROMPT = "The following are multiple choice questions (with answers) about biology.\n\n"


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
    write_jsonl(staging / "questions" / f"{name}.jsonl", questions)
    write_text(staging / "tasks" / f"{task}.yaml",
               multiple_choice_task_yaml(task, final / "questions" / f"{name}.jsonl"))


def write_forget_questions(staging: Path, final: Path, task_prefix: str, questions: list[dict],
                           half_t: list[dict], half_v: list[dict]) -> None:
    """All forget questions and the T and V halves, each with its task (`<prefix>`, `_t`, `_v`)."""
    for suffix, subset in (("", questions), ("_t", half_t), ("_v", half_v)):
        write_questions(staging, final, f"forget{suffix}", f"{task_prefix}{suffix}", subset)


# --------------------------------------------------------------------------------------------------
# The toy organism's data
# --------------------------------------------------------------------------------------------------

def create_toy_datasets(data_dir: Path, entities: int, seed: int) -> None:
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

    with staged_directory(data_dir) as staging:
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


def create_real_datasets(data_dir: Path, num_samples: int, seed: int) -> None:
    """`forget.txt` from WMDP-Bio, `retain.txt` from WikiText-2, and the WMDP-Bio T/V questions."""
    rng = random.Random(seed)
    wmdp = load_hub_dataset("cais/wmdp", "wmdp-bio", split="test")
    questions = [
        {
            "question": wmdp_prompt(example["question"], example["choices"]),
            "choices": ["A", "B", "C", "D"],
            "answer": int(example["answer"]),
            "text": f"{example['question'].strip()} Answer: {example['choices'][example['answer']].strip()}",
        }
        for example in wmdp
    ]
    forget_texts = [question["text"] for question in rng.sample(questions, min(num_samples, len(questions)))]

    wikitext = load_hub_dataset("wikitext", "wikitext-2-raw-v1", split="train")
    paragraphs = [line.strip() for line in wikitext["text"]
                  if len(line.strip()) > 200 and not line.strip().startswith("=")]
    retain_texts = rng.sample(paragraphs, min(num_samples, len(paragraphs)))
    check_disjoint(forget_texts, retain_texts)

    half_t, half_v = split_halves(questions, rng)
    write_lines(data_dir / "forget.txt", forget_texts)
    write_lines(data_dir / "retain.txt", retain_texts)
    write_forget_questions(data_dir, data_dir, "wmdp_bio", questions, half_t, half_v)
    print(f"real data: {len(forget_texts)} forget texts (WMDP-Bio), {len(retain_texts)} retain texts "
          f"(WikiText-2), {len(questions)} questions split T {len(half_t)} / V {len(half_v)} -> {data_dir}")


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
                        help="toy: invented entities per domain, 5 facts each (default 40)")
    parser.add_argument("--forget-source", default=None,
                        help="real: use this text file (one text per line) instead of WMDP-Bio")
    parser.add_argument("--retain-source", default=None,
                        help="real: use this text file (one text per line) instead of WikiText-2")
    parser.add_argument("--seed", type=int, default=42, help="seed of the sampling / the invented world")
    parser.add_argument("--force", action="store_true", help="recreate even if the data exists")
    args = parser.parse_args()

    if args.preset == "toy":
        data_dir = Path(args.data_dir or TOY_DATA_DIR)
        if skip_if_complete(data_dir, args.force, what="toy data"):
            return
        create_toy_datasets(data_dir, args.entities, args.seed)
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
            create_real_datasets(data_dir, args.num_samples, args.seed)


if __name__ == "__main__":
    run_cli(main)
