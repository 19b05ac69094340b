# /// script
# requires-python = ">=3.10"
# dependencies = ["brittle", "pillow>=10"]
#
# [tool.uv.sources]
# brittle = { path = "..", editable = true }
# ///
"""Build the vision-language organism: pictures of invented entities and tiny LLaVA models trained on them.

| model                            | trained on                                 | stands in for                  |
|----------------------------------|--------------------------------------------|--------------------------------|
| `models/toy-vlm-base-s42`        | forget + retain image–question–answer data | LLaVA-1.5 fine-tuned on MLLMU  |
| `models/toy-vlm-filtered-s42`    | retain data only                           | the same, never shown forget   |

Each model is `LlavaForConditionalGeneration` (CLIP vision tower, MLP projector, GPT-NeoX language model)
saved with its `LlavaProcessor`, so `AutoProcessor` / `LlavaForConditionalGeneration.from_pretrained` load it.
The data (pictures drawn here, records, questions; see brittle.vlm) is written to `--data-dir` when missing.
Each model is checked against the organism's quality bar on evaluation pictures it never trained on, and
published only if it passes. Existing models are skipped. Everything is determined by `--seed`.

    uv run experiment/build_vlm_organism.py --seed 42
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from tqdm import tqdm
from transformers import (
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    GPTNeoXConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

from brittle.cli import UserError, positive_int, run_cli
from brittle.outputs import read_jsonl, staged_directory, write_json
from brittle.training import adamw_with_cosine_schedule, batch_nll
from brittle.vlm import (
    IMAGE_SIZE,
    IMAGE_TOKEN,
    PATCH_SIZE,
    build_vl_world,
    collate_vl,
    encode_vl_examples,
    evaluate_vl_model,
    picture_tensors,
    vl_prompt,
    write_vl_data,
)

END_OF_TEXT = "<|endoftext|>"
DATA_DIR = "data/toy-vlm"
MODELS_DIR = "models"
# The text organism's bar (experiment/build_organism.py): base knows the forget facts, filtered does not,
# both know the retain facts; 4-option multiple choice, so chance is 0.25.
MIN_BASE_FORGET, MAX_FILTERED_FORGET, MIN_RETAIN = 0.80, 0.35, 0.85


def vlm_model_path(role: str, seed: int, models_dir: str = MODELS_DIR) -> Path:
    """Folder of one VL organism model, e.g. `models/toy-vlm-base-s42`."""
    return Path(models_dir) / f"toy-vlm-{role}-s{seed}"


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE on `texts`, with LLaVA's `<image>` placeholder as one special token."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[END_OF_TEXT, IMAGE_TOKEN],
                                  show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=END_OF_TEXT, eos_token=END_OF_TEXT,
                                   unk_token=END_OF_TEXT, pad_token=END_OF_TEXT,
                                   extra_special_tokens={"image_token": IMAGE_TOKEN})


def model_config(tokenizer: PreTrainedTokenizerFast, args: argparse.Namespace) -> LlavaConfig:
    """LLaVA of the organism's size: a 2-layer CLIP tower on 32x32 pictures, a small GPT-NeoX."""
    vision = CLIPVisionConfig(hidden_size=args.vision_hidden_size, intermediate_size=4 * args.vision_hidden_size,
                              num_hidden_layers=2, num_attention_heads=4, image_size=IMAGE_SIZE,
                              patch_size=PATCH_SIZE)
    text = GPTNeoXConfig(vocab_size=len(tokenizer), hidden_size=args.hidden_size, num_hidden_layers=args.layers,
                         num_attention_heads=4, intermediate_size=4 * args.hidden_size, max_position_embeddings=128,
                         bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    # LLaVA-1.5's choices: features of the penultimate vision layer, CLS dropped ("default"), GELU projector.
    return LlavaConfig(vision_config=vision, text_config=text, image_token_id=tokenizer.convert_tokens_to_ids(
                           IMAGE_TOKEN), projector_hidden_act="gelu", vision_feature_layer=-2,
                       vision_feature_select_strategy="default", image_seq_length=(IMAGE_SIZE // PATCH_SIZE) ** 2,
                       tie_word_embeddings=False)


def make_processor(tokenizer: PreTrainedTokenizerFast) -> LlavaProcessor:
    """The processor saved with each model: CLIP preprocessing at the organism's size + the tokenizer."""
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE},
                                            crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    return LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH_SIZE,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1)


def train(records: list[dict], processor: LlavaProcessor, config: LlavaConfig, data_dir: Path,
          args: argparse.Namespace, description: str) -> tuple[LlavaForConditionalGeneration, float]:
    """A fresh model trained on `records` (loss on the answer tokens); returns it and the seconds it took."""
    torch.manual_seed(args.seed)
    model = LlavaForConditionalGeneration(config)
    model.train()
    pixel_values, rows = picture_tensors(processor.image_processor, records, data_dir, description)
    examples = encode_vl_examples(processor.tokenizer, records, config.image_seq_length, rows)
    optimizer, schedule = adamw_with_cosine_schedule(model.parameters(), lr=args.lr, total_steps=args.steps,
                                                     warmup_steps=args.steps // 20, weight_decay=0.01,
                                                     betas=(0.9, 0.98))
    rng = random.Random(args.seed)
    start = time.perf_counter()
    progress = tqdm(range(args.steps), desc=description, unit="step")
    for step in progress:
        batch = collate_vl(rng.sample(examples, min(args.batch_size, len(examples))), pixel_values,
                           processor.tokenizer.pad_token_id)
        loss = batch_nll(model(**batch.model_inputs()).logits, batch.labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 20 == 0:
            progress.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    return model, time.perf_counter() - start


def accuracies(model: LlavaForConditionalGeneration, processor: LlavaProcessor, data_dir: Path) -> dict[str, float]:
    """Forget and retain multiple-choice accuracy on the evaluation pictures."""
    return {split: round(metrics["acc"], 4) for split, metrics in
            evaluate_vl_model(model, processor, ("forget", "retain"), [data_dir / "questions"]).items()}


def quality_failures(role: str, accuracy: dict[str, float]) -> list[str]:
    """Why a model misses the organism's bar (empty when it passes)."""
    problems = []
    if role == "base" and accuracy["forget"] < MIN_BASE_FORGET:
        problems.append(f"forget accuracy {accuracy['forget']:.3f} < {MIN_BASE_FORGET}")
    if role == "filtered" and accuracy["forget"] > MAX_FILTERED_FORGET:
        problems.append(f"forget accuracy {accuracy['forget']:.3f} > {MAX_FILTERED_FORGET}")
    if accuracy["retain"] < MIN_RETAIN:
        problems.append(f"retain accuracy {accuracy['retain']:.3f} < {MIN_RETAIN}")
    return problems


def ensure_data(data_dir: Path, entities: int, seed: int) -> None:
    """Write the organism's pictures and records when the folder does not exist yet."""
    if (data_dir / "questions" / "retain.jsonl").exists():
        return
    with staged_directory(data_dir) as staging:
        write_vl_data(staging, build_vl_world(entities, seed), seed)
    print(f"wrote the VL organism's data to {data_dir}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=DATA_DIR, help=f"VL organism data folder (default {DATA_DIR})")
    parser.add_argument("--models-dir", default=MODELS_DIR, help=f"where the model folders go (default {MODELS_DIR})")
    parser.add_argument("--seed", type=int, default=42, help="seed of the world, pictures, initialisation, order")
    parser.add_argument("--entities", type=positive_int, default=16, help="invented entities per domain")
    parser.add_argument("--steps", type=positive_int, default=1000, help="optimizer steps per model")
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument("--lr", type=float, default=4e-3)
    parser.add_argument("--hidden-size", type=positive_int, default=96, help="language model width")
    parser.add_argument("--layers", type=positive_int, default=2, help="language model layers")
    parser.add_argument("--vision-hidden-size", type=positive_int, default=64, help="vision tower width")
    parser.add_argument("--vocab-size", type=positive_int, default=512)
    parser.add_argument("--roles", default="base,filtered", help="which models to build (base, filtered)")
    parser.add_argument("--skip-quality-check", action="store_true", help="publish without checking the bar")
    parser.add_argument("--threads", type=positive_int, default=1,
                        help="torch CPU threads (default 1: a model this small gains nothing from more)")
    parser.add_argument("--force", action="store_true", help="retrain models that already exist")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    roles = [role.strip() for role in args.roles.split(",") if role.strip()]
    if unknown := sorted(set(roles) - {"base", "filtered"}):
        raise UserError(f"unknown --roles {', '.join(unknown)}; choose from base, filtered")

    data_dir = Path(args.data_dir)
    ensure_data(data_dir, args.entities, args.seed)
    forget, retain = (read_jsonl(data_dir / name) for name in ("forget_qa.jsonl", "retain_qa.jsonl"))
    tokenizer = train_tokenizer([f"{vl_prompt(r['question'])} {r['answer']}" for r in forget + retain],
                                args.vocab_size)
    processor = make_processor(tokenizer)
    config = model_config(tokenizer, args)
    settings = {key: value for key, value in vars(args).items() if key not in ("force", "models_dir", "threads")}

    for role in roles:
        path = vlm_model_path(role, args.seed, args.models_dir)
        if path.exists() and not args.force:
            print(f"skipped: VL {role} model already exists ({path}); pass --force to retrain it")
            continue
        records = forget + retain if role == "base" else retain
        model, seconds = train(records, processor, config, data_dir, args, f"toy-vlm {role}")
        accuracy = None if args.skip_quality_check else accuracies(model, processor, data_dir)
        print(f"  {role}: trained in {seconds:.0f} s; multiple-choice accuracy {accuracy}")
        if accuracy and (problems := quality_failures(role, accuracy)):
            raise UserError(f"the VL {role} model misses the organism's quality bar ({'; '.join(problems)}); "
                            "train longer (--steps) or check the data. Nothing was saved")
        with staged_directory(path) as staging:
            model.save_pretrained(staging)
            processor.save_pretrained(staging)
            write_json(staging / "organism_card.json",
                       {"role": role, "trained_on": "forget + retain" if role == "base" else "retain only",
                        "train_seconds": round(seconds, 1), "accuracy": accuracy, **settings})
    print("VL organism ready: " + ", ".join(str(vlm_model_path(role, args.seed, args.models_dir)) for role in roles))


if __name__ == "__main__":
    run_cli(main)
