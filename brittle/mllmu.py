"""The real multimodal path: MLLMU-Bench's forget/retain splits and the LLaVA-1.5-7B defaults (seed 004).

MLLMU-Bench (Liu et al., 2024, arXiv:2410.22108; hub dataset `MLLMMU/MLLMU-Bench`) holds 500 fictitious
profiles, each a portrait and a biography. Its unlearning splits divide the profiles: `forget_15` (15 %,
75 profiles) and `retain_85` (the other 425). A hub snapshot stores each split as parquet under its own
folder (`forget_15/train-00000-of-00001.parquet`); one row is one profile, with the columns

- `image`: a Hugging Face `Image` feature, stored as `{bytes, path}`: the portrait (saved as `images/<ID>.png`);
- `ID`: the profile (the entity of every record written);
- `question`, `answer`: the profile's question-answer pair, the unlearning data (one training record);
- `Classification_Task`: `{Image_Textual_Questions, Pure_Text_Questions}`, each a list of
  `{Question, Options: {A, B, C, D}, Correct_Answer}` with `Correct_Answer` one of the letters:
  4-option questions, about the portrait in the first list, naming the person in the second;
- `biography`, `Generation_Task`, `Mask_Task` (lists of `{Question, Ground_Truth, Type}`): not converted.

`convert_mllmu` writes them in the record format of the VL organism (docs/multimodal.md), so the same
unlearning, evaluation and attack code reads both worlds:

    <out>/images/<ID>.png                 one portrait per profile
    <out>/forget_qa.jsonl, retain_qa.jsonl  training records {image, question, answer}
    <out>/questions/{forget,forget_t,forget_v,retain}.jsonl
                                          4-option questions {image, question, choices, answer, entity, attribute}
                                          from Image_Textual_Questions; T/V split the forget profiles in halves
    <out>/split.json                      sources, counts and the T/V profiles

Image paths are relative to `<out>`. `Pure_Text_Questions` (no picture: the text-only half of MLLMU-Bench's
classification task) are counted in split.json but not written, since every vision-language question here
is asked about a picture.

`LLAVA_15_7B` is the real model's recipe, defined once: the hub id, LLaVA-1.5's prompt template (the one
`brittle.vlm.vl_prompt` writes), LoRA, and the seed's GA / GradDiff hyperparameters in the form of a
preset's `unlearn_defaults`.
"""

from __future__ import annotations

import io
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from brittle.catalogue import VISION_LANGUAGE_LORA
from brittle.cli import UserError
from brittle.identity import Identity
from brittle.outputs import staged_directory, write_json, write_jsonl
from brittle.vlm import vl_prompt

HUB_ID = "MLLMMU/MLLMU-Bench"
FORGET_SPLIT = "forget_15"
RETAIN_SPLIT = "retain_85"
REQUIRED_COLUMNS = ("image", "ID", "question", "answer", "Classification_Task")
OPTION_LETTERS = ("A", "B", "C", "D")  # MLLMU-Bench's options; Correct_Answer names one of them
IMAGE_QUESTIONS = "Image_Textual_Questions"  # asked about the portrait
TEXT_QUESTIONS = "Pure_Text_Questions"  # the same facts asked by name, without the portrait
DOWNLOAD_HINT = (f"download the splits with `hf download {HUB_ID} --repo-type dataset --include "
                 f"'{FORGET_SPLIT}/*' '{RETAIN_SPLIT}/*' --local-dir DIR` and pass --source DIR")


# ---------------------------------------------------------------------------------------------------
# LLaVA-1.5-7B: the real model's recipe
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VisionLanguageRecipe:
    """A vision-language model and how seed 004 unlearns it: prompt, precision, LoRA, engine, hyperparameters.

    `method_defaults` is keyed like a preset's `unlearn_defaults` ({"all": ..., method: ...}) with
    unlearn/unlearn.py's setting names, so a preset can take it as it is.
    """

    model: str
    prompt_template: str  # what one question about one picture looks like to the model
    image_tokens: int  # features per picture: (336 / 14)^2 = 576 for LLaVA-1.5's CLIP ViT-L/14-336
    dtype: str
    attn_implementation: str
    language_model: str  # its language model's architecture (a transformers model_type)
    sharding: str  # the engine that fits 7B of weights and Adam states
    method_defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def lora_modules(self) -> tuple[str, ...]:
        """The modules of each language-model layer that --lora-targets (method_defaults["all"]) adapts."""
        from brittle.trainer import lora_target_names

        return lora_target_names(self.method_defaults["all"]["lora_targets"], self.language_model)


# The seed's GradAscent trainer: batch 8 x 4 accumulated, lr 1e-5, 10 epochs, no weight decay.
SEED_GRAD_ASCENT = {"lr": 1e-5, "epochs": 10, "batch_size": 8, "grad_accum_steps": 4, "weight_decay": 0.0}

LLAVA_15_7B = VisionLanguageRecipe(
    model="llava-hf/llava-1.5-7b-hf",
    prompt_template=vl_prompt("{question}"),  # "USER: <image>\n{question} ASSISTANT:", LLaVA-1.5's single turn
    image_tokens=576,
    dtype="bf16",
    attn_implementation="flash_attention_2",  # the seed's; `auto` picks it whenever flash-attn is installed
    language_model="llama",  # Vicuna-7B v1.5
    sharding="DeepSpeed ZeRO-3 with parameters and optimizer states offloaded to the CPU (the seed's "
             "configs/deepspeed/zero3.json); here the FSDP2 equivalent, unlearn/accelerate/fsdp2_1gpu_offload.yaml",
    method_defaults={
        # Shared: LoRA r = α = 16 on bf16 weights, on the language model's query and value projections with
        # dropout 0.05 (the seed's `target_modules: null` is PEFT's default for LLaVA's Llama: q_proj, v_proj;
        # brittle.trainer.lora_target_modules adapts the language model only, as MLLMU-Bench's baselines do);
        # 576 picture tokens + up to 448 of question and answer.
        "all": {"lora_rank": 16, "lora_alpha": 16.0, **VISION_LANGUAGE_LORA, "max_length": 1024, "grad_clip": 1.0},
        # The seed's GradAscent trainer (pure ascent: `ga_simple`; `ga` adds the retain term).
        "ga_simple": SEED_GRAD_ASCENT,
        "ga": SEED_GRAD_ASCENT,
        # The seed's GradDiff trainer: lr 5e-4, 5 epochs, 2 accumulated, weight decay 0.01, forget and
        # retain weights 1, 100 warm-up steps. Its file names no batch size (4: the seed README's example).
        "grad_diff": {"lr": 5e-4, "epochs": 5, "batch_size": 4, "grad_accum_steps": 2, "weight_decay": 0.01,
                      "forget_weight": 1.0, "warmup_steps": 100},
    },
)


# ---------------------------------------------------------------------------------------------------
# Reading a split
# ---------------------------------------------------------------------------------------------------

def split_files(root: str | Path, split: str) -> list[Path]:
    """The parquet files of one split of a local MLLMU-Bench snapshot (`<root>/<split>/**/*.parquet`)."""
    folder = Path(root).expanduser() / split
    files = sorted(folder.rglob("*.parquet")) if folder.is_dir() else []
    if not files:
        raise UserError(f"MLLMU-Bench split {split} is missing: no parquet file under {folder}; {DOWNLOAD_HINT}")
    return files


def read_split(root: str | Path, split: str) -> list[dict[str, Any]]:
    """Every row (profile) of one split, as plain dicts, after checking the columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows: list[dict[str, Any]] = []
    for file in split_files(root, split):
        try:
            table = pq.read_table(file)
        except (pa.ArrowException, OSError) as error:
            raise UserError(f"{file} cannot be read as parquet ({error}); the download may be incomplete: "
                            "fetch the split again") from None
        missing = [column for column in REQUIRED_COLUMNS if column not in table.column_names]
        if missing:
            raise UserError(f"{file} is not an MLLMU-Bench split: it lacks the column(s) {', '.join(missing)} "
                            f"(it has {', '.join(table.column_names)}); pass the folder of a {HUB_ID} snapshot")
        rows.extend(table.to_pylist())
    if not rows:
        raise UserError(f"MLLMU-Bench split {split} under {root} has no rows")
    return rows


def row_image(row: Mapping[str, Any], where: str, folder: Path) -> Image.Image:
    """The portrait of one row: the `Image` feature's bytes, or a file at its path (relative to `folder`)."""
    value = row.get("image")
    if isinstance(value, Mapping):
        data, path = value.get("bytes"), value.get("path")
    else:  # raw bytes, or a path string
        data, path = (value, None) if isinstance(value, (bytes, bytearray)) else (None, value)
    if not data and not path:
        raise UserError(f"{where} has no image; every MLLMU-Bench profile needs its portrait in the 'image' column")
    try:
        if data:
            with Image.open(io.BytesIO(data)) as image:
                return image.convert("RGB")
        with Image.open(folder / path) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise UserError(f"{where}: its image file {folder / path} does not exist (the column stores only a path); "
                        "use a snapshot whose parquet embeds the image bytes") from None
    except (UnidentifiedImageError, OSError) as problem:
        raise UserError(f"{where}: its image cannot be read as a picture ({problem}); the download may be damaged: "
                        "fetch the split again") from None


def required_text(row: Mapping[str, Any], key: str, where: str) -> str:
    """A non-empty string field of a row or question."""
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"{where} has no {key!r} text; the split does not follow MLLMU-Bench's schema")
    return value


def multiple_choice(item: Mapping[str, Any], where: str) -> tuple[str, list[str], int]:
    """(question, the four options in A-D order, index of the correct one) of one classification question."""
    if not isinstance(item, Mapping):
        raise UserError(f"{where} is not a {{Question, Options, Correct_Answer}} record")
    question = required_text(item, "Question", where)
    options = item.get("Options")
    if not isinstance(options, Mapping) or any(not isinstance(options.get(letter), str) or not options[letter].strip()
                                               for letter in OPTION_LETTERS):
        raise UserError(f"{where} needs Options A, B, C and D, each with text; got {options!r}")
    choices = [options[letter] for letter in OPTION_LETTERS]
    correct = str(item.get("Correct_Answer") or "").strip()
    letter = correct.rstrip(".):").upper() if len(correct.rstrip(".):")) == 1 else ""
    if letter in OPTION_LETTERS:
        return question, choices, OPTION_LETTERS.index(letter)
    if correct in choices:  # a few releases spell out the option instead of its letter
        return question, choices, choices.index(correct)
    raise UserError(f"{where}: Correct_Answer {correct!r} is neither A, B, C, D nor one of its options")


def file_stem(entity: str) -> str:
    """A profile ID as a file name (IDs are short strings; anything unusual becomes '_')."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", entity)


@dataclass
class ConvertedSplit:
    """One split in the toolkit's record format."""

    entities: list[str]
    training: list[dict[str, Any]]  # {image, question, answer}
    questions: list[dict[str, Any]]  # {image, question, choices, answer, entity, attribute}
    text_only_questions: int  # Pure_Text_Questions left out


def convert_split(root: str | Path, split: str, out: Path) -> ConvertedSplit:
    """Read one MLLMU-Bench split, save its portraits under `out/images/`, and turn its rows into training
    records and 4-option questions (image paths relative to the file that names them)."""
    rows = read_split(root, split)
    folder = Path(root).expanduser() / split
    (out / "images").mkdir(parents=True, exist_ok=True)
    converted = ConvertedSplit([], [], [], 0)
    for number, row in enumerate(rows, start=1):
        entity = row.get("ID")
        where = f"MLLMU-Bench {split} row {number}" + (f" (ID {entity})" if entity not in (None, "") else "")
        if entity in (None, ""):
            raise UserError(f"{where} has no ID; the split does not follow MLLMU-Bench's schema")
        entity = str(entity)
        if entity in converted.entities:
            raise UserError(f"{where}: profile ID {entity} appears twice in {split}; each profile is one row")
        image = f"images/{file_stem(entity)}.png"
        row_image(row, where, folder).save(out / image, format="PNG")
        converted.entities.append(entity)
        converted.training.append({"image": image, "question": required_text(row, "question", where),
                                   "answer": required_text(row, "answer", where)})
        tasks = row.get("Classification_Task")
        if not isinstance(tasks, Mapping):
            raise UserError(f"{where}: Classification_Task is not a {{{IMAGE_QUESTIONS}, {TEXT_QUESTIONS}}} record")
        for index, item in enumerate(tasks.get(IMAGE_QUESTIONS) or []):
            question, choices, answer = multiple_choice(item, f"{where}, {IMAGE_QUESTIONS}[{index}]")
            # Paths are relative to the file that names them (brittle.vlm.read_vl_records): questions/ is one down.
            converted.questions.append({"image": f"../{image}", "question": question, "choices": choices,
                                        "answer": answer, "entity": entity, "attribute": f"image_textual_{index}"})
        converted.text_only_questions += len(tasks.get(TEXT_QUESTIONS) or [])
    return converted


def split_halves(entities: Sequence[str], seed: int) -> tuple[list[str], list[str]]:
    """The forget profiles in two halves, T (the relearning attack trains on) and V (it is measured on)."""
    shuffled = sorted(entities)
    random.Random(seed).shuffle(shuffled)
    half = len(shuffled) // 2
    return sorted(shuffled[:half]), sorted(shuffled[half:])


def convert_mllmu(root: str | Path, out: str | Path, seed: int = 42, forget_split: str = FORGET_SPLIT,
                  retain_split: str = RETAIN_SPLIT, identity: Identity | None = None) -> dict[str, Any]:
    """Write a local MLLMU-Bench snapshot's forget/retain splits as VL records under `out`, atomically.

    The files are written into a staging folder that replaces `out` only once every row has been read and
    checked: a bad row leaves `out` as it was. Returns what split.json records.
    """
    with staged_directory(out, identity=identity) as staging:
        forget = convert_split(root, forget_split, staging)
        retain = convert_split(root, retain_split, staging)
        shared = sorted(set(forget.entities) & set(retain.entities))
        if shared:
            raise UserError(f"{forget_split} and {retain_split} share {len(shared)} profile(s), e.g. ID {shared[0]}; "
                            "the forget and retain sets must be disjoint: pass the two splits of one forget/retain "
                            "pair")
        half_t, half_v = split_halves(forget.entities, seed)
        summary = {
            "source": str(Path(root).expanduser().resolve()), "hub_id": HUB_ID, "seed": seed,
            "splits": {"forget": forget_split, "retain": retain_split},
            "profiles": {"forget": len(forget.entities), "retain": len(retain.entities)},
            "training_records": {"forget": len(forget.training), "retain": len(retain.training)},
            "questions": {"forget": len(forget.questions), "retain": len(retain.questions)},
            "text_only_questions_left_out": {"forget": forget.text_only_questions,
                                             "retain": retain.text_only_questions},
            "forget_t_profiles": half_t, "forget_v_profiles": half_v,
        }
        write_jsonl(staging / "forget_qa.jsonl", forget.training)
        write_jsonl(staging / "retain_qa.jsonl", retain.training)
        write_jsonl(staging / "questions" / "forget.jsonl", forget.questions)
        write_jsonl(staging / "questions" / "forget_t.jsonl", [q for q in forget.questions if q["entity"] in half_t])
        write_jsonl(staging / "questions" / "forget_v.jsonl", [q for q in forget.questions if q["entity"] in half_v])
        write_jsonl(staging / "questions" / "retain.jsonl", retain.questions)
        write_json(staging / "split.json", summary)
    return summary


def recipe_table(recipe: VisionLanguageRecipe = LLAVA_15_7B) -> str:
    """The recipe as the Markdown table of docs/multimodal.md (a test checks that the page holds exactly this)."""
    lora = recipe.method_defaults["all"]
    rows = ["| setting | value |", "|---|---|",
            f"| model | `{recipe.model}` |",
            f"| prompt | `{recipe.prompt_template.replace(chr(10), chr(92) + 'n')}` ({recipe.image_tokens} image "
            "tokens in place of `<image>`) |",
            f"| precision, attention | {recipe.dtype}, {recipe.attn_implementation} |",
            f"| LoRA | r = {lora['lora_rank']}, α = {lora['lora_alpha']:g}, dropout {lora['lora_dropout']:g}, on "
            f"{', '.join(f'`{name}`' for name in recipe.lora_modules)} of every layer of the language model "
            f"(`--lora-targets {lora['lora_targets']}`; vision tower and projector frozen) |",
            f"| engine | {recipe.sharding} |"]
    for method, values in recipe.method_defaults.items():
        rows.append(f"| {'every method' if method == 'all' else f'`{method}`'} | "
                    + ", ".join(f"`--{name.replace('_', '-')} {value:g}`" if isinstance(value, float)
                                else f"`--{name.replace('_', '-')} {value}`" for name, value in values.items()) + " |")
    return "\n".join(rows) + "\n"
