"""The vision-language organism: invented entities seen in pictures, and multiple choice for VL models.

The text organism (brittle.organism) names its entity in every question. Here the entity is *shown*:
each invented entity has its own procedurally drawn appearance (a background colour and three coloured
marks in fixed quadrants), every picture of it is a fresh noisy, jittered rendering, and a question
asks about "the pathogen in this picture" without naming it. A model can answer only by recognising the
entity from the image and recalling the fact it learned about it; a text-only model scores chance.

The entities and their facts are those of brittle.organism (forget domain: invented pathogens; retain
domain: invented towns), so the two worlds differ only in how an entity is referred to.

The model is a real vision-language architecture that `transformers` loads natively:
`LlavaForConditionalGeneration` = a CLIP vision tower + a two-layer MLP projector + a GPT-NeoX language
model, saved with its `LlavaProcessor`. Prompts follow LLaVA-1.5's template, `USER: <image>\\n{question}
ASSISTANT:`, and a choice is scored as the continuation of that prompt (brittle.multiple_choice), with
the picture's features in place of the `<image>` tokens.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, UnidentifiedImageError
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from brittle.cli import UserError
from brittle.multiple_choice import (
    EncodedChoice,
    accuracy_from_scores,
    encode_choice,
    logits_fn_scores,
    pack_pairs,
    packed_batch,
)
from brittle.organism import FORGET_DOMAIN, OPTIONS_PER_QUESTION, RETAIN_DOMAIN, Domain, Fact, invent_names
from brittle.training import IGNORE_INDEX

IMAGE_TOKEN = "<image>"  # LLaVA's placeholder; the processor expands it to one token per image feature
IMAGE_SIZE = 32  # pixels per side of an organism picture
PATCH_SIZE = 8  # CLIP patch side: (32 / 8)^2 = 16 image features per picture
VIEWS_PER_ENTITY = 16  # training pictures of each entity; one more, never trained on, is the evaluation view
DEFAULT_ENTITIES_PER_DOMAIN = 16

# Appearance vocabulary: 8 well-separated colours and 4 mark shapes, drawn in the quadrants of the picture.
PALETTE = ((220, 40, 40), (40, 170, 60), (40, 80, 220), (235, 200, 30),
           (150, 50, 190), (30, 200, 210), (245, 130, 20), (240, 240, 240))
BACKGROUNDS = ((25, 25, 25), (90, 60, 40), (40, 60, 90), (70, 90, 60), (100, 100, 100), (60, 30, 70))
SHAPES = ("circle", "square", "triangle", "cross")
MARKS_PER_ENTITY = 3
MIN_APPEARANCE_DISTANCE = 3  # parts (background, quadrants, each mark) in which any two entities differ


def vl_prompt(question: str) -> str:
    """LLaVA-1.5's single-turn prompt around a question about one picture."""
    return f"USER: {IMAGE_TOKEN}\n{question} ASSISTANT:"


def picture_question(domain: str, attribute: str) -> str:
    """The question about an entity that is shown, not named."""
    return f"What is the {attribute} of the {domain} in this picture?"


@dataclass(frozen=True)
class Appearance:
    """How an entity looks: a background colour and one (shape, colour) mark per occupied quadrant."""

    background: int  # index into BACKGROUNDS
    marks: tuple[tuple[int, str, int], ...]  # (quadrant 0-3, shape, colour index into PALETTE)


def appearance_distance(a: Appearance, b: Appearance) -> int:
    """In how many parts two appearances differ: background, set of quadrants, and each mark's look."""

    def parts(x: Appearance) -> tuple:
        return (x.background, tuple(q for q, _, _ in x.marks), *((shape, colour) for _, shape, colour in x.marks))

    return sum(p != q for p, q in zip(parts(a), parts(b), strict=True))


def invent_appearances(entities: Sequence[str], rng: random.Random) -> dict[str, Appearance]:
    """A random appearance for each entity, any two differing in >= MIN_APPEARANCE_DISTANCE parts.

    Entities that shared all but one part would be told apart by one mark alone; a tiny vision tower
    then confuses them on a noisy new picture, so the organism keeps them well apart.
    """
    appearances: dict[str, Appearance] = {}
    for entity in entities:
        while True:
            quadrants = sorted(rng.sample(range(4), MARKS_PER_ENTITY))
            appearance = Appearance(rng.randrange(len(BACKGROUNDS)),
                                    tuple((q, rng.choice(SHAPES), rng.randrange(len(PALETTE))) for q in quadrants))
            if all(appearance_distance(appearance, other) >= MIN_APPEARANCE_DISTANCE
                   for other in appearances.values()):
                break
        appearances[entity] = appearance
    return appearances


def draw(appearance: Appearance, rng: random.Random, size: int = IMAGE_SIZE) -> Image.Image:
    """One picture of an entity: its marks jittered in place, size and colour varied, pixel noise added."""

    def jitter_colour(rgb: tuple[int, int, int], amount: int) -> tuple[int, ...]:
        return tuple(min(255, max(0, channel + rng.randint(-amount, amount))) for channel in rgb)

    image = Image.new("RGB", (size, size), jitter_colour(BACKGROUNDS[appearance.background], 10))
    pen = ImageDraw.Draw(image)
    half = size // 2
    for quadrant, shape, colour in appearance.marks:
        centre_x = (quadrant % 2) * half + half // 2 + rng.randint(-2, 2)
        centre_y = (quadrant // 2) * half + half // 2 + rng.randint(-2, 2)
        radius = half // 2 - 2 + rng.randint(-1, 1)
        box = (centre_x - radius, centre_y - radius, centre_x + radius, centre_y + radius)
        fill = jitter_colour(PALETTE[colour], 20)
        if shape == "circle":
            pen.ellipse(box, fill=fill)
        elif shape == "square":
            pen.rectangle(box, fill=fill)
        elif shape == "triangle":
            pen.polygon([(centre_x, box[1]), (box[0], box[3]), (box[2], box[3])], fill=fill)
        else:  # cross
            bar = max(1, radius // 2)
            pen.rectangle((box[0], centre_y - bar, box[2], centre_y + bar), fill=fill)
            pen.rectangle((centre_x - bar, box[1], centre_x + bar, box[3]), fill=fill)
    noise = np.random.default_rng(rng.randrange(2**32)).normal(0.0, 8.0, (size, size, 3))
    return Image.fromarray(np.clip(np.asarray(image, dtype=np.float64) + noise, 0, 255).astype(np.uint8))


def invent_balanced_facts(domain: Domain, entity_count: int, rng: random.Random) -> list[Fact]:
    """Every attribute of every invented entity, each value true equally often within the domain.

    brittle.organism draws values independently; with the VL organism's 16 entities per domain that
    leaves some values true three or four times and others never, and a model that has never seen the
    domain can score far above chance by a picture-blind preference among the values (it did: 0.49).
    Here each attribute's values are dealt from a shuffled deck, so with a multiple of 8 entities every
    value is the truth for exactly entity_count / 8 of them.
    """
    names = invent_names(domain, entity_count, rng)
    values_of: dict[str, list[str]] = {}
    for attribute, values in domain.attributes.items():
        deck: list[str] = []
        while len(deck) < entity_count:
            deck += rng.sample(values, len(values))  # one shuffled pass over all values at a time
        values_of[attribute] = deck[:entity_count]
    return [Fact(domain.name, name, attribute, values_of[attribute][index])
            for index, name in enumerate(names) for attribute in domain.attributes]


def invent_option_sets(domain: Domain, rng: random.Random) -> dict[str, list[tuple[str, ...]]]:
    """For each attribute, its values cut at random into sets of OPTIONS_PER_QUESTION (8 values: two sets).

    A question's options are the set that holds its true value. With balanced facts every member of a
    set is the answer equally often, so *any* picture-blind ranking of the values, which picks the same
    member of a set every time, scores exactly chance (1/4): only recognising the entity beats it.
    """
    option_sets = {}
    for attribute, values in domain.attributes.items():
        if len(values) % OPTIONS_PER_QUESTION:
            raise ValueError(f"{domain.name} {attribute}: {len(values)} values do not split into sets of "
                             f"{OPTIONS_PER_QUESTION}")
        shuffled = rng.sample(values, len(values))
        option_sets[attribute] = [tuple(shuffled[start: start + OPTIONS_PER_QUESTION])
                                  for start in range(0, len(shuffled), OPTIONS_PER_QUESTION)]
    return option_sets


@dataclass(frozen=True)
class VLWorld:
    """The organism's facts, appearances and option sets, plus the T/V split of the forget entities."""

    forget_facts: list[Fact]
    retain_facts: list[Fact]
    appearances: dict[str, Appearance]
    forget_half_t: frozenset[str]
    forget_half_v: frozenset[str]
    option_sets: dict[str, dict[str, list[tuple[str, ...]]]]  # domain -> attribute -> sets of options

    def options(self, fact: Fact) -> tuple[str, ...]:
        """The 4 options of the question on `fact`: the option set that holds its value."""
        return next(group for group in self.option_sets[fact.domain][fact.attribute] if fact.value in group)


def build_vl_world(entities_per_domain: int = DEFAULT_ENTITIES_PER_DOMAIN, seed: int = 0) -> VLWorld:
    """The VL organism's world, fully determined by `entities_per_domain` and `seed`."""
    rng = random.Random(seed)
    forget_facts = invent_balanced_facts(FORGET_DOMAIN, entities_per_domain, rng)
    retain_facts = invent_balanced_facts(RETAIN_DOMAIN, entities_per_domain, rng)
    entities = list(dict.fromkeys(fact.entity for fact in forget_facts + retain_facts))
    appearances = invent_appearances(entities, rng)
    forget_entities = sorted({fact.entity for fact in forget_facts})
    rng.shuffle(forget_entities)
    half = len(forget_entities) // 2
    option_sets = {domain.name: invent_option_sets(domain, rng) for domain in (FORGET_DOMAIN, RETAIN_DOMAIN)}
    return VLWorld(forget_facts, retain_facts, appearances,
                   frozenset(forget_entities[:half]), frozenset(forget_entities[half:]), option_sets)


def image_name(entity: str, view: int) -> str:
    """Path of one picture of an entity, relative to the data folder."""
    return f"images/{entity}-{view}.png"


def write_vl_data(folder: Path, world: VLWorld, seed: int) -> None:
    """Pictures, training records and multiple-choice questions of the VL organism, under `folder`.

    - `images/<entity>-<view>.png`: views 0..VIEWS_PER_ENTITY-1 are for training; the last view is the
      evaluation picture, which no model trains on (so evaluation tests recognition, not recall of a file);
    - `forget_qa.jsonl`, `retain_qa.jsonl`: training records `{image, question, answer}`, one per fact
      and training view;
    - `questions/{forget,forget_t,forget_v,retain}.jsonl`: 4-option questions `{image, question, choices,
      answer (index), entity, attribute}` on the evaluation view; the options are the option set of the
      true value (`VLWorld.options`), so a picture-blind preference among values scores chance.

    As in every VL record file, an image path is relative to the folder of its JSONL file (`read_vl_records`).
    """
    rng = random.Random(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for entity, appearance in world.appearances.items():
        for view in range(VIEWS_PER_ENTITY + 1):
            draw(appearance, rng).save(folder / image_name(entity, view))

    def qa_records(facts: list[Fact]) -> list[dict[str, Any]]:
        return [{"image": image_name(fact.entity, view), "question": picture_question(fact.domain, fact.attribute),
                 "answer": fact.value} for fact in facts for view in range(VIEWS_PER_ENTITY)]

    def mc_question(fact: Fact) -> dict[str, Any]:
        choices = rng.sample(world.options(fact), OPTIONS_PER_QUESTION)  # the option set, in random order
        return {"image": f"../{image_name(fact.entity, VIEWS_PER_ENTITY)}",  # relative to questions/
                "question": picture_question(fact.domain, fact.attribute), "choices": choices,
                "answer": choices.index(fact.value), "entity": fact.entity, "attribute": fact.attribute}

    from brittle.outputs import write_jsonl  # local: outputs imports nothing heavy, but keeps this module's top light

    write_jsonl(folder / "forget_qa.jsonl", qa_records(world.forget_facts))
    write_jsonl(folder / "retain_qa.jsonl", qa_records(world.retain_facts))
    forget = [mc_question(fact) for fact in world.forget_facts]
    write_jsonl(folder / "questions" / "forget.jsonl", forget)
    write_jsonl(folder / "questions" / "forget_t.jsonl", [q for q in forget if q["entity"] in world.forget_half_t])
    write_jsonl(folder / "questions" / "forget_v.jsonl", [q for q in forget if q["entity"] in world.forget_half_v])
    write_jsonl(folder / "questions" / "retain.jsonl",
                [mc_question(fact) for fact in world.retain_facts])


def load_image(path: str | Path) -> Image.Image:
    """An RGB picture; a `UserError` naming the file when it is missing or not an image."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise UserError(f"image {path} does not exist; pass the path of a PNG or JPEG file") from None
    except (UnidentifiedImageError, OSError) as problem:
        raise UserError(f"image {path} cannot be read as a picture ({problem}); pass a PNG or JPEG file") from None


def record_image(record: dict[str, Any], root: Path, what: str) -> Image.Image:
    """The picture of one VL record (`image`: a path relative to `root`); a `UserError` when it has none."""
    image = record.get("image")
    if not image:
        raise UserError(f"{what} has no image; every vision-language record needs an 'image' field")
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    return load_image(root / image)


def expand_image_tokens(text: str, image_seq_length: int) -> str:
    """The prompt as the model sees it: `<image>` repeated once per image feature (as LlavaProcessor does)."""
    return text.replace(IMAGE_TOKEN, IMAGE_TOKEN * image_seq_length)


def image_seq_length(model: PreTrainedModel) -> int:
    """Image features per picture of a LLaVA model (576 for LLaVA-1.5, 16 for the organism)."""
    return model.config.image_seq_length


def is_vision_language(model: PreTrainedModel) -> bool:
    """Whether `model` takes pictures (has a vision tower)."""
    return getattr(model.config, "vision_config", None) is not None


def is_vision_language_checkpoint(name: str | Path) -> bool:
    """Whether the model `name` (local folder or hub id) takes pictures, from its config alone (no weights).

    A LLaVA (`model_type` "llava") or any config with a `vision_config`; a local folder's config.json is
    read directly, a hub id's through `transformers.AutoConfig`.
    """
    import json

    config_file = Path(name) / "config.json"
    if config_file.is_file():
        config = json.loads(config_file.read_text())
        return config.get("model_type") == "llava" or "vision_config" in config
    from transformers import AutoConfig

    from brittle.models import model_load_error

    try:
        config = AutoConfig.from_pretrained(str(name))
    except (OSError, ValueError) as error:
        raise model_load_error(str(name), error) from error
    return getattr(config, "vision_config", None) is not None


@dataclass
class VLBatch:
    """A padded batch of image–question–answer examples; `labels` count only the answer tokens."""

    input_ids: Tensor
    attention_mask: Tensor
    labels: Tensor
    pixel_values: Tensor
    weights: Tensor | None = None

    def to(self, device: torch.device | str) -> VLBatch:
        return VLBatch(self.input_ids.to(device), self.attention_mask.to(device), self.labels.to(device),
                       self.pixel_values.to(device), None if self.weights is None else self.weights.to(device))

    def model_inputs(self) -> dict[str, Tensor]:
        """Keyword arguments of the model's forward pass."""
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask, "pixel_values": self.pixel_values}


@dataclass(frozen=True)
class VLExample:
    """One encoded example: context ids (prompt with expanded image tokens), answer ids, picture index."""

    context: list[int]
    answer: list[int]
    picture: int


def encode_vl_examples(tokenizer: PreTrainedTokenizerBase, records: Sequence[dict[str, Any]], seq_length: int,
                       pictures: dict[str, int]) -> list[VLExample]:
    """Training examples of `{image, question, answer}` records; the answer ends in EOS.

    The split into context and answer is lm-eval's (brittle.multiple_choice.encode_choice), so training
    and multiple-choice scoring tokenise an answer identically.
    """
    examples = []
    for record in records:
        prompt = expand_image_tokens(vl_prompt(record["question"]), seq_length)
        context, answer = encode_choice(tokenizer, prompt, record["answer"])
        examples.append(VLExample(context, [*answer, tokenizer.eos_token_id], pictures[record["image"]]))
    return examples


def padded_answer_batch(examples: Sequence[VLExample | VLSequence], pad_token_id: int
                        ) -> tuple[Tensor, Tensor, Tensor]:
    """(input_ids, attention_mask, labels) of right-padded context + answer examples; labels on the answer only."""
    length = max(len(e.context) + len(e.answer) for e in examples)
    input_ids = torch.full((len(examples), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), length), dtype=torch.long)
    labels = torch.full((len(examples), length), IGNORE_INDEX, dtype=torch.long)
    for row, example in enumerate(examples):
        ids = example.context + example.answer
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1
        labels[row, len(example.context): len(ids)] = torch.tensor(example.answer)
    return input_ids, attention_mask, labels


def collate_vl(examples: Sequence[VLExample], pixel_values: Tensor, pad_token_id: int) -> VLBatch:
    """Right-pad examples into one batch, with their pictures' pixel values and answer-only labels."""
    return VLBatch(*padded_answer_batch(examples, pad_token_id), pixel_values[[e.picture for e in examples]])


@dataclass(frozen=True)
class VLSequence:
    """One training example as the unlearning trainer holds it (in place of a text's token ids): the
    context and answer ids and the picture's pixel values (a view of the shared tensor, not a copy)."""

    context: list[int]
    answer: list[int]
    pixel_values: Tensor

    def __len__(self) -> int:
        return len(self.context) + len(self.answer)  # the tokens the language model sees


def collate_vl_sequences(sequences: Sequence[VLSequence], pad_token_id: int) -> VLBatch:
    """`collate_vl` for `VLSequence`s: the batch of brittle.trainer for a vision-language model."""
    return VLBatch(*padded_answer_batch(sequences, pad_token_id),
                   torch.stack([sequence.pixel_values for sequence in sequences]))


def read_vl_records(path: str | Path, what: str, fields: Sequence[str] = ("image", "question", "answer"),
                    ) -> list[dict[str, Any]]:
    """The records of a VL JSONL file, each with its `image` as an absolute path (resolved against the file's folder).

    A missing or empty file, a line that is not JSON, or a record without one of `fields` is a
    `UserError` naming the file and the record.
    """
    import json

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist; build the VL organism with "
                        "`uv run experiment/build_vlm_organism.py` (or pass a JSONL file of {image, question, answer})")
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise UserError(f"{what} {path} line {number} is not JSON; every line must be one record") from None
        missing = [field for field in fields if record.get(field) in (None, "")]
        if missing:
            raise UserError(f"{what} {path} line {number} has no {', '.join(missing)}; every vision-language "
                            f"record needs {', '.join(fields)}")
        records.append({**record, "image": str((path.parent / record["image"]).absolute())})
    if not records:
        raise UserError(f"{what} {path} is empty; it needs one {{image, question, answer}} record per line")
    return records


def vl_training_sequences(tokenizer: PreTrainedTokenizerBase, image_processor: Any,
                          records: Sequence[dict[str, Any]], image_seq_length: int, max_length: int,
                          what: str) -> list[VLSequence]:
    """`VLSequence`s of `{image, question, answer}` records (images as `read_vl_records` resolves them).

    Each distinct picture is processed once. A record longer than `max_length` tokens is a `UserError`:
    cutting it would cut its answer, the only tokens that carry the loss.
    """
    pixel_values, rows = picture_tensors(image_processor, records, Path("/"), what)
    sequences = []
    for example in encode_vl_examples(tokenizer, records, image_seq_length, rows):
        if len(example.context) + len(example.answer) > max_length:
            raise UserError(f"a record of {what} has {len(example.context) + len(example.answer)} tokens, more than "
                            f"--max-length {max_length}; raise --max-length (MAX_LENGTH)")
        sequences.append(VLSequence(example.context, example.answer, pixel_values[example.picture]))
    return sequences


def picture_tensors(image_processor: Any, records: Sequence[dict[str, Any]], root: Path,
                    what: str) -> tuple[Tensor, dict[str, int]]:
    """Pixel values of every distinct picture of `records` (processed once) and each path's row."""
    paths = list(dict.fromkeys(str(record.get("image") or "") for record in records))
    images = [record_image({"image": path}, root, f"a record of {what}") for path in paths]
    pixel_values = image_processor(images=images, return_tensors="pt")["pixel_values"]
    return pixel_values, {path: row for row, path in enumerate(paths)}


@torch.no_grad()
def vl_choice_log_likelihoods(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, image_processor: Any,
                              questions: Sequence[dict[str, Any]], root: Path, batch_size: int = 64,
                              ) -> list[list[float]]:
    """For each `{image, question, choices}` question, the log-likelihood of each choice given the picture."""
    for index, question in enumerate(questions):
        if not question.get("image"):
            raise UserError(f"question {index + 1} has no image; every vision-language question needs one")
    pixel_values, rows = picture_tensors(image_processor, questions, root, "the questions")
    seq_length = image_seq_length(model)
    pairs = [EncodedChoice(q_index, c_index, *encode_choice(
                 tokenizer, expand_image_tokens(vl_prompt(question["question"]), seq_length), choice))
             for q_index, question in enumerate(questions) for c_index, choice in enumerate(question["choices"])]
    device = model.get_input_embeddings().weight.device
    dtype = next(model.parameters()).dtype
    scores: list[list[float]] = [[0.0] * len(question["choices"]) for question in questions]
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start: start + batch_size]
        batch = packed_batch(pack_pairs(chunk, share_context=False), tokenizer.pad_token_id)  # one row per pair
        pictures = pixel_values[[rows[str(questions[pair.question_index]["image"])] for pair in batch.pairs]]

        def logits_fn(input_ids: Tensor, attention_mask: Tensor, pictures: Tensor = pictures) -> Tensor:
            return model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pictures.to(device, dtype),
                         use_cache=False).logits

        for pair, score in zip(batch.pairs, logits_fn_scores(logits_fn, batch, device).tolist(), strict=True):
            scores[pair.question_index][pair.choice_index] = score
    return scores


def vl_multiple_choice_accuracy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, image_processor: Any,
                                questions: Sequence[dict[str, Any]], root: Path, batch_size: int = 64) -> float:
    """Accuracy on 4-option questions about pictures (the VL world's Step 0 score)."""
    scores = vl_choice_log_likelihoods(model, tokenizer, image_processor, questions, root, batch_size)
    return accuracy_from_scores(questions, scores)


def check_vision_language_model(name: str) -> None:
    """A `UserError` unless `name` (hub id or folder) is a vision-language model; reads only its config."""
    from transformers import AutoConfig

    from brittle.models import check_model_reference, model_load_error

    check_model_reference(name)
    try:
        config = AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as error:
        raise model_load_error(name, error) from error
    if getattr(config, "vision_config", None) is None:
        raise UserError(f"{name} is a text-only model ({config.model_type}) and cannot take --image; "
                        "pass a vision-language model such as models/toy-vlm-base-s42 or llava-hf/llava-1.5-7b-hf")


def load_vl_model(folder: str | Path, device: str = "cpu", dtype: str = "auto",
                  attn_implementation: str | None = None) -> tuple[PreTrainedModel, Any]:
    """A LLaVA model in eval mode and its processor (`.tokenizer`, `.image_processor`), from a folder or hub id:
    the model through brittle.models.load_model (the one loader: checks, device placement, attention backend)."""
    from transformers import AutoProcessor

    from brittle.models import load_model, model_load_error

    model = load_model(str(folder), device, dtype, attn_implementation)
    try:
        processor = AutoProcessor.from_pretrained(str(folder))
    except (OSError, ValueError) as error:
        raise model_load_error(str(folder), error) from error
    return model, processor


def picture_option_probabilities(model: PreTrainedModel, processor: Any, question: str, image: str | Path,
                                 choices: Sequence[str]) -> tuple[list[float], list[float]]:
    """Log-likelihood and normalised probability of each option as the answer to `question` about `image`."""
    from brittle.multiple_choice import choice_probabilities

    record = {"image": str(Path(image).resolve()), "question": question, "choices": list(choices)}
    scores = vl_choice_log_likelihoods(model, processor.tokenizer, processor.image_processor, [record], Path("/"))[0]
    return scores, choice_probabilities(scores)


@torch.no_grad()
def generate_about_picture(model: PreTrainedModel, processor: Any, question: str, image: str | Path,
                           max_new_tokens: int) -> str:
    """The model's greedy answer to `question` about `image` (LLaVA-1.5 prompt), without the prompt."""
    device = model.get_input_embeddings().weight.device
    pixel_values = processor.image_processor(images=[load_image(image)], return_tensors="pt")["pixel_values"]
    prompt = expand_image_tokens(vl_prompt(question), image_seq_length(model))
    input_ids = processor.tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"].to(device)
    output = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                            pixel_values=pixel_values.to(device, next(model.parameters()).dtype),
                            max_new_tokens=max_new_tokens, do_sample=False,
                            pad_token_id=processor.tokenizer.pad_token_id)
    return processor.tokenizer.decode(output[0, input_ids.shape[1]:], skip_special_tokens=True)


def check_disjoint_pictures(forget: Sequence[dict[str, Any]], retain: Sequence[dict[str, Any]]) -> None:
    """A `UserError` when a picture is both forget and retain data (the VL form of brittle.texts.check_disjoint)."""
    shared = {record["image"] for record in forget} & {record["image"] for record in retain}
    if shared:
        raise UserError(f"{len(shared)} pictures are in both the forget and the retain data (e.g. {min(shared)}); "
                        "the two sets must be disjoint")


QUESTION_FIELDS = ("image", "question", "choices", "answer")


def read_vl_questions(path: str | Path, what: str) -> list[dict[str, Any]]:
    """4-option questions `{image, question, choices, answer, ...}` of a JSONL file, images resolved."""
    return read_vl_records(path, what, QUESTION_FIELDS)


def vl_task_file(task: str, include_paths: Sequence[str | Path]) -> Path:
    """The question file of a VL evaluation task: `<include path>/<task>.jsonl` (the first that exists)."""
    for folder in include_paths:
        if (Path(folder) / f"{task}.jsonl").is_file():
            return Path(folder) / f"{task}.jsonl"
    raise UserError(f"no question file {task}.jsonl in {', '.join(map(str, include_paths)) or 'no folder'} for the "
                    "vision-language evaluation; use PRESET=toy-vlm (build the organism with "
                    "`uv run experiment/build_vlm_organism.py`) or skip it with --no-eval (NO_EVAL=1)")


def evaluate_vl_model(model: PreTrainedModel, processor: Any, tasks: Sequence[str],
                      include_paths: Sequence[str | Path], batch_size: int = 64) -> dict[str, dict[str, float]]:
    """Step 0 of a VL model: multiple-choice accuracy on each task's question file, as `{task: {"acc": ...}}`
    (the summary that brittle.evaluation.write_evaluation writes)."""
    was_training = model.training
    model.eval()
    summary = {}
    for task in tasks:
        questions = read_vl_questions(vl_task_file(task, include_paths), f"{task} questions")
        summary[task] = {"acc": vl_multiple_choice_accuracy(model, processor.tokenizer, processor.image_processor,
                                                            questions, Path("/"), batch_size)}
    model.train(was_training)
    return summary
