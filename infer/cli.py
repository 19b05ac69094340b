# /// script
# requires-python = ">=3.10"
# dependencies = ["brittle"]
#
# [tool.uv.sources]
# brittle = { path = "..", editable = true }
# ///
"""Generate text from one model on the command line, streaming tokens as they are produced.

    uv run infer/cli.py --model EleutherAI/deep-ignorance-unfiltered --prompt "What is biotin?"
    uv run infer/cli.py --model EleutherAI/deep-ignorance-unfiltered --prompt "..." --device cuda:1
    uv run infer/cli.py --model EleutherAI/deep-ignorance-unfiltered --prompt "..." --device cpu --dtype fp32

    # does the model still know? each option's probability, scored as lm-eval scores multiple choice
    uv run infer/cli.py --model models/toy-base-s42 --prompt "Q: What is the host of Galdyrix? A:" \\
        --choices "cliff swifts" "bog shrews" "salt crabs" "marsh voles"

| flag            | default | meaning                                                                  |
|-----------------|---------|--------------------------------------------------------------------------|
| `--model`       |         | hub id or local model folder (required)                                  |
| `--prompt`      |         | the text to continue (required)                                          |
| `--max-tokens`  | 200     | maximum new tokens to generate                                           |
| `--device`      | auto    | auto (best GPU, `device_map="auto"`), cuda, cuda:N, mps, cpu             |
| `--dtype`       | auto    | auto (bf16 on CUDA, fp16 on MPS, fp32 on CPU), fp32, fp16, bf16          |
| `--temperature` | 0       | 0 = greedy decoding; above 0 samples with that temperature               |
| `--top-p`       | 1.0     | nucleus-sampling threshold (only when sampling)                          |
| `--seed`        | 42      | random seed (makes sampling reproducible)                                |
| `--choices`     |         | options of a multiple-choice question: print each one's probability      |
| `--image`       |         | a picture for a vision-language (LLaVA) model; the prompt is a question about it |

    # a vision-language model: the prompt is asked about the picture (docs/multimodal.md)
    uv run infer/cli.py --model models/toy-vlm-base-s42 --image data/toy-vlm/images/Galdyrix-16.png \\
        --prompt "What is the host of the pathogen in this picture?" --choices "cliff swifts" "marsh voles"
"""

from __future__ import annotations

import argparse

from brittle.cli import add_runtime_arguments, positive_int, run_cli
from brittle.inference import GenerationSettings, check_choices, check_prompt, score_options, stream_generation
from brittle.models import load_model_and_tokenizer
from brittle.vlm import (
    check_vision_language_model,
    generate_about_picture,
    load_image,
    load_vl_model,
    picture_option_probabilities,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="hub id or local model folder")
    parser.add_argument("--prompt", required=True, help="the text to continue")
    parser.add_argument("--max-tokens", type=positive_int, default=200, help="maximum new tokens (default 200)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); > 0 samples")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling threshold when sampling")
    parser.add_argument("--choices", nargs="+", metavar="OPTION",
                        help="options of a multiple-choice question; each is scored as the continuation of "
                             "the prompt after one space (as lm-eval does) and its probability printed")
    parser.add_argument("--image", help="a picture (PNG/JPEG) to ask a vision-language model about")
    add_runtime_arguments(parser)
    args = parser.parse_args()
    # Every mistake in the arguments is reported before any weights load.
    check_prompt(args.prompt)
    if args.choices is not None:
        check_choices(args.choices)
    settings = GenerationSettings(args.max_tokens, args.temperature, args.top_p, args.seed)
    if args.image:
        ask_about_picture(args)
        return

    model, tokenizer = load_model_and_tokenizer(args.model, args.device, args.dtype)
    print(args.prompt, end="", flush=True)
    for piece in stream_generation(model, tokenizer, args.prompt, settings):
        print(piece, end="", flush=True)
    print()

    if args.choices is not None:
        scores = score_options(model, tokenizer, args.prompt, args.choices)
        print_option_probabilities(args.choices, list(scores.probabilities))


def ask_about_picture(args: argparse.Namespace) -> None:
    """--image: a vision-language model answers the prompt about the picture (greedy), then scores --choices."""
    load_image(args.image)  # an unreadable picture and a text-only model fail before any weights load
    check_vision_language_model(args.model)
    model, processor = load_vl_model(args.model, args.device, args.dtype)
    print(f"{args.prompt} {generate_about_picture(model, processor, args.prompt, args.image, args.max_tokens)}")
    if args.choices is not None:
        _, probabilities = picture_option_probabilities(model, processor, args.prompt, args.image, args.choices)
        print_option_probabilities(args.choices, probabilities)


def print_option_probabilities(choices: list[str], probabilities: list[float]) -> None:
    """Each option's probability, the most likely one marked."""
    predicted = max(range(len(choices)), key=probabilities.__getitem__)
    print("\noption probabilities (each option's likelihood after the prompt and one space, "
          "normalised over the options):")
    for index, (choice, probability) in enumerate(zip(choices, probabilities, strict=True)):
        marker = "  <- most likely" if index == predicted else ""
        print(f"  {probability:6.3f}  {choice}{marker}")


if __name__ == "__main__":
    run_cli(main)
