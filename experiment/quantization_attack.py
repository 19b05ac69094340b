# /// script
# requires-python = ">=3.10"
# dependencies = ["brittle[steps]"]  # the pipeline steps' one environment (pyproject.toml)
#
# [tool.uv.sources]
# brittle = { path = "..", editable = true }
# ///
"""Step 14 - Quantization attack: does rounding the unlearned weights to 8 or 4 bits bring the facts back?

Zhang et al., "Catastrophic failure of LLM unlearning via quantization" (2024): unlearning with a small
learning rate moves each weight by less than the spacing of a 4-bit grid, so quantizing the unlearned
model rounds many weights to the same code as base's, and the "forgotten" answers return. The attack
needs no data and no training, only a standard quantized load.

The models are quantized with bitsandbytes through transformers (`BitsAndBytesConfig`), the library
users load 4- and 8-bit models with on GPUs, whose CPU backend runs the organism: 8-bit is LLM.int8
(per-row absmax int8 weights), 4-bit is NF4 (blockwise 4-bit normal-float codes, blocks of 64). Only the
linear layers of the decoder are quantized (transformers keeps the output embedding in full precision).

| condition | model                 |
|-----------|-----------------------|
| A         | unlearned             |
| B         | unlearned, quantized  |
| C         | base, quantized       |
| F0 / F    | filtered / quantized  |

Besides the accuracies, `snap_back.csv` measures the mechanism directly: the fraction of quantized
weight codes of the unlearned model that are identical to base's (1.0 = quantization undid the
unlearning exactly), next to Step 1's relative change ‖ΔW‖_F / ‖W‖_F when Step 1 has run.

Outputs (outputs/<base>__to__<unlearned>/quantization_attack_seed<S>/): summary.csv (one row per bit
width), questions.csv, snap_back.csv, quantized_modules.json, identity.json, conditions.png

    uv run experiment/quantization_attack.py --model-a models/toy-base-s42 --model-b unlearned_models/... \\
        --preset toy
"""

from __future__ import annotations

import argparse
import json
import warnings
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForCausalLM, BitsAndBytesConfig, PreTrainedModel

from brittle.attacks import (
    add_attack_arguments,
    attack_identity,
    attack_models,
    attack_step_dir,
    attack_summary,
    complete_attack_arguments,
    describe,
    question_correctness,
    question_rows,
    read_questions,
    write_attack_outputs,
)
from brittle.cli import UserError, run_cli
from brittle.models import load_model, load_tokenizer, model_load_error
from brittle.outputs import comparison_step_dir, skip_if_complete, staged_directory, write_csv, write_json
from brittle.runtime import resolve_device, resolve_dtype

STEP = "quantization_attack"
BIT_WIDTHS = (8, 4)
SNAP_BACK_COLUMNS = ["bits", "quantized_weights", "same_code_fraction", "dW_fro_rel_total"]

# bitsandbytes announces every int8 matmul on CPU ("inputs will be cast from torch.float32 to float16").
warnings.filterwarnings("ignore", message=r"MatMul8bitLt")


def quantization_config(bits: int, compute_dtype: torch.dtype) -> BitsAndBytesConfig:
    """LLM.int8 for 8 bits, NF4 for 4 bits (compute in `compute_dtype`), as users load quantized models."""
    if bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    if bits == 4:
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute_dtype)
    raise UserError(f"--bits takes 8 and/or 4, not {bits}")


def load_quantized(name: str, bits: int, device: str = "auto", dtype: str = "auto") -> PreTrainedModel:
    """`name` loaded with its decoder's linear weights quantized to `bits` bits, in eval mode."""
    resolved = resolve_device(device)
    if resolved == "mps":
        raise UserError("bitsandbytes has no MPS backend; run the quantization attack with --device cpu or cuda")
    compute_dtype = resolve_dtype(dtype, resolved)
    try:
        model = AutoModelForCausalLM.from_pretrained(name, quantization_config=quantization_config(bits, compute_dtype),
                                                     dtype=compute_dtype, device_map={"": resolved})
    except (OSError, ValueError) as error:
        raise model_load_error(name, error) from error
    model.eval()
    return model


def quantized_linears(model: nn.Module) -> dict[str, nn.Module]:
    """The model's bitsandbytes linear layers by name (Linear8bitLt or Linear4bit)."""
    import bitsandbytes as bnb

    return {name: module for name, module in model.named_modules()
            if isinstance(module, (bnb.nn.Linear8bitLt, bnb.nn.Linear4bit))}


def weight_codes(module: nn.Module) -> torch.Tensor:
    """The stored integer codes of one quantized linear layer, one entry per weight (4-bit: unpacked nibbles)."""
    data = module.weight.data
    if data.dtype == torch.int8:  # LLM.int8: one signed byte per weight
        return data.flatten()
    packed = data.flatten()  # NF4: two 4-bit codes per byte
    return torch.stack([packed >> 4, packed & 0x0F], dim=1).flatten()


def storage_report(model: nn.Module) -> dict[str, Any]:
    """How each quantized layer stores its weight: dtype, bits per weight, counts (what the test checks)."""
    report = {}
    for name, module in quantized_linears(model).items():
        weight = module.weight
        stored_bits = weight.data.numel() * weight.data.element_size() * 8
        weights = module.in_features * module.out_features
        report[name] = {"class": type(module).__name__, "stored_dtype": str(weight.data.dtype).removeprefix("torch."),
                        "weights": weights, "bits_per_weight": stored_bits / weights}
    return report


def same_code_fraction(unlearned: nn.Module, base: nn.Module) -> tuple[int, float]:
    """(number of quantized weights, fraction whose code in the unlearned model equals base's)."""
    base_layers = quantized_linears(base)
    total = same = 0
    for name, module in quantized_linears(unlearned).items():
        codes, base_codes = weight_codes(module), weight_codes(base_layers[name])
        total += codes.numel()
        same += int((codes == base_codes).sum())
    return total, same / total if total else float("nan")


def relative_weight_change(args: argparse.Namespace) -> float | None:
    """Step 1's whole-model ‖ΔW‖_F / ‖W‖_F for base -> unlearned, or None when Step 1 has not run."""
    path = comparison_step_dir(args.model_a, args.model_b, "weight_comparison", args.output_root) / "summary.json"
    return json.loads(path.read_text()).get("dW_fro_rel_total") if path.exists() else None


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_attack_arguments(parser)
    parser.add_argument("--bits", type=int, nargs="+", default=list(BIT_WIDTHS), choices=BIT_WIDTHS,
                        help="bit widths to attack with (default: 8 4)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    complete_attack_arguments(args)
    models = attack_models(args)
    outdir = attack_step_dir(args, STEP)
    identity = attack_identity(args, {"eval_questions": args.eval_questions},
                               {"bits": args.bits, "dtype": args.dtype, "seed": args.seed})
    if skip_if_complete(outdir, args.force, f"quantization attack on {args.model_b}", identity):
        return
    questions = read_questions(args.eval_questions, "V")
    tokenizers = {role: load_tokenizer(name) for role, name in models.items()}

    def score(model: PreTrainedModel, role: str) -> list[int]:
        return question_correctness(model, tokenizers[role], questions, args.eval_batch_size)

    before = {}
    for condition, role in (("A", "unlearned"), ("F0", "filtered")):
        model = load_model(models[role], args.device, args.dtype)
        before[condition] = score(model, role)
        del model
    summaries, question_table, snap_back, storage = [], [], [], {}
    change = relative_weight_change(args)
    for bits in args.bits:
        attack = f"quantization {bits}-bit"
        unlearned = load_quantized(args.model_b, bits, args.device, args.dtype)
        base = load_quantized(args.model_a, bits, args.device, args.dtype)
        correct = {**before, "B": score(unlearned, "unlearned"), "C": score(base, "base")}
        count, fraction = same_code_fraction(unlearned, base)
        storage[f"{bits}-bit"] = storage_report(unlearned)
        del unlearned, base
        filtered = load_quantized(args.filtered, bits, args.device, args.dtype)
        correct["F"] = score(filtered, "filtered")
        del filtered
        settings = {condition: f"{bits}-bit" for condition in "BCF"}
        summaries.append(attack_summary(attack, args.seed, models, correct, settings))
        question_table += question_rows(attack, questions, correct)
        snap_back.append({"bits": bits, "quantized_weights": count, "same_code_fraction": fraction,
                          "dW_fro_rel_total": change})
        print(describe(summaries[-1]))
        print(f"  {fraction:.1%} of {count} quantized weights of the unlearned model have base's code")
    with staged_directory(outdir, identity=identity) as staging:
        write_attack_outputs(staging, "Quantization attack: accuracy on held-out V", summaries, question_table)
        write_csv(staging / "snap_back.csv", snap_back, SNAP_BACK_COLUMNS)
        write_json(staging / "quantized_modules.json", storage)
    print(f"results -> {outdir}")


if __name__ == "__main__":
    run_cli(main)
