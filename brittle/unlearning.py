"""One unlearning run, once unlearn.py has named it and found it not done yet.

    check inputs -> load base -> split data -> freeze / LoRA -> fp32 master weights -> cache what the
    method needs -> train -> save dtype, merge -> held-out NLLs -> save the folder -> Step 0 evaluation
    -> completion marker

Precision (brittle/precision.py): the base loads in the dtype it is stored in; the trainable weights
become fp32 and AdamW holds fp32 state for them only; every forward pass runs under autocast in
--dtype; the result is written in --save-dtype (default: the base checkpoint's dtype).

Everything is written into a staging folder that is renamed into place only at the end, so a run
that fails (bad input, NaN loss, Ctrl-C) leaves nothing behind that a later run would mistake for a
finished one.
"""

from __future__ import annotations

import argparse
import datetime
import random
import time
from pathlib import Path
from typing import Any

import torch
import transformers
from torch import nn

from brittle.architecture import decoder_layers
from brittle.cli import UserError
from brittle.distributed import start_engine
from brittle.evaluation import evaluate_model, task_manager, write_evaluation
from brittle.methods import LOSSES, MethodContext, add_weight_noise, freeze_above, random_directions
from brittle.models import attn_implementation_of, check_model_reference, input_device, load_model_and_tokenizer
from brittle.outputs import staged_directory, write_csv, write_json, write_text
from brittle.plotting import plot_by_layer
from brittle.precision import (
    Precision,
    cast_for_saving,
    dtype_name,
    gradient_checkpointing,
    prepare_for_training,
    resolve_precision,
    stored_dtype,
)
from brittle.presets import Preset
from brittle.runtime import seed_everything
from brittle.sample_weights import read_sample_weights
from brittle.texts import check_disjoint, read_texts
from brittle.tracking import log_to_wandb
from brittle.trainer import (
    Caches,
    TrainingData,
    TrainingResult,
    heldout_columns,
    heldout_metrics,
    original_hidden_states,
    pretrained_copy,
    reference_log_probs,
    split_with_weights,
    train,
    wrap_with_lora_for,
)
from brittle.training import encode_texts
from brittle.vlm import (
    check_disjoint_pictures,
    evaluate_vl_model,
    is_vision_language_checkpoint,
    read_vl_records,
    vl_task_file,
    vl_training_sequences,
)


def configured_layer_count(model_name: str) -> int | None:
    """Number of decoder layers (of the language model, for a vision-language model) from the config alone."""
    config = transformers.AutoConfig.from_pretrained(model_name).get_text_config()
    for field in ("num_hidden_layers", "n_layer", "num_layers"):
        if isinstance(getattr(config, field, None), int):
            return getattr(config, field)
    return None


def check_layer_ids(layer_ids: list[int], layer_count: int | None, model_name: str) -> None:
    if layer_count is not None and layer_ids[-1] >= layer_count:
        raise UserError(f"--layer-id {','.join(map(str, layer_ids))} is outside the model: {model_name} has "
                        f"{layer_count} decoder layers (ids 0-{layer_count - 1}); set --layer-id / LAYER_ID to "
                        "layers that exist")


def run_unlearning(args: argparse.Namespace, plan, preset: Preset, process_start: float) -> None:
    """Train, save and evaluate one unlearned model into `plan.outdir` (see the module docstring).

    `plan` (unlearn.py's `RunPlan`) holds the run's name, folder, method card and hyperparameters.
    """
    card, run, outdir = plan.card, plan.name, plan.outdir
    uses_layers = "layer_id" in card.hyperparameters
    vision_language = is_vision_language_checkpoint(args.model)
    # -- inputs, checked before any weights load ------------------------------------------------------
    if vision_language:  # {image, question, answer} records; the loss is on the answer tokens
        forget_texts = read_vl_records(args.forget_data, "forget data")
        retain_texts = read_vl_records(args.retain_data, "retain data")
        check_disjoint_pictures(forget_texts, retain_texts)
    else:
        forget_texts = read_texts(args.forget_data, what="forget data")
        retain_texts = read_texts(args.retain_data, what="retain data")
        check_disjoint(forget_texts, retain_texts)
    sample_weights = {what: read_sample_weights(getattr(args, f"{what}_weights"), getattr(args, f"{what}_data"), what)
                      for what in ("forget", "retain") if getattr(args, f"{what}_weights")}
    check_model_reference(args.model)
    if uses_layers:
        check_layer_ids(args.layer_ids, configured_layer_count(args.model), args.model)
    tasks = list(preset.eval_tasks)
    include_paths = list(preset.eval_include_paths)
    manager = None if args.no_eval or vision_language else task_manager(include_paths, tasks)
    if vision_language and not args.no_eval:
        for task in tasks:  # a missing question file fails now, not after training
            vl_task_file(task, include_paths)

    if args.threads:
        torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    engine = start_engine()  # sharded over processes when started by `accelerate launch` (NUM_PROCESSES)
    model, tokenizer = load_model_and_tokenizer(args.model, engine.device_for(args.device), "stored",
                                                args.attn_implementation)
    config = model.config  # to rebuild the unsharded model after sharded training
    device = input_device(model)
    precision = resolve_precision(args.dtype, args.save_dtype, device, stored_dtype(args.model, model))
    layers = decoder_layers(model)
    if uses_layers:
        check_layer_ids(args.layer_ids, len(layers), args.model)

    # -- data --------------------------------------------------------------------------------------------
    split_rng = random.Random(args.seed)
    processor = None
    if vision_language:
        processor = transformers.AutoProcessor.from_pretrained(args.model)

        def encode(records: list, what: str) -> list:
            return vl_training_sequences(tokenizer, processor.image_processor, records, config.image_seq_length,
                                         args.max_length, what)
    else:
        def encode(texts: list, what: str) -> list:
            return encode_texts(tokenizer, texts, args.max_length)
    forget_train, forget_heldout, forget_weights = split_with_weights(
        encode(forget_texts, "forget data"), sample_weights.get("forget"), args.eval_split, split_rng)
    retain_train, retain_heldout, retain_weights = split_with_weights(
        encode(retain_texts, "retain data"), sample_weights.get("retain"), args.eval_split, split_rng)
    data = TrainingData(forget_train, retain_train, forget_heldout, retain_heldout, forget_weights, retain_weights)
    pad = tokenizer.pad_token_id
    kind = "records" if vision_language else "texts"
    print(f"{args.method} on {args.model}: {len(forget_train)} forget / {len(retain_train)} retain training {kind}, "
          f"{len(forget_heldout)} / {len(retain_heldout)} held out; device {device}, stored "
          f"{dtype_name(model.dtype)}, compute {dtype_name(precision.compute)}, save {dtype_name(precision.save)}")

    # -- what trains, in which precision, and what the method needs from the original model -------------
    context = prepare_training(model, layers, card, args, precision)
    model = context.model
    model.eval()
    with precision.autocast():
        before = heldout_metrics(model, data, args.batch_size, pad, device)
    caches = prepare_caches(context, card, data, args, pad, device, precision)
    checkpointing = gradient_checkpointing(model, args.gradient_checkpointing, device)

    # -- train ---------------------------------------------------------------------------------------------
    result = train(context, LOSSES[args.method], args.method, data, caches, args, pad, device, engine, precision)
    context.pretrained = {}
    if engine.sharded:  # the full weights, on process 0 only: it alone saves, evaluates and marks completion
        model = engine.gathered_model(context.model, lambda: rebuilt_model(config, args))
        context = layers = None  # the sharded model is no longer needed
        engine.finish()
        if model is None:
            return
        model.to(device)
    model = cast_for_saving(model, precision)  # before merging: LoRA merges in the save dtype
    if args.lora_rank:
        model = model.merge_and_unload()
    if checkpointing:
        model.gradient_checkpointing_disable()
        model.config.use_cache = True
    model.eval()
    with precision.autocast():
        after = heldout_metrics(model, data, args.batch_size, pad, device)
    print(f"held-out NLL  forget {format_nll(before['forget_nll'])} -> {format_nll(after['forget_nll'])}, "
          f"retain {format_nll(before['retain_nll'])} -> {format_nll(after['retain_nll'])}, "
          f"gap {format_nll(before['gap'])} -> {format_nll(after['gap'])}  ({result.seconds:.1f} s training)")

    # -- save, evaluate, mark complete ---------------------------------------------------------------
    with staged_directory(outdir, identity=plan.identity) as staging:
        if args.no_save:
            model.config.save_pretrained(staging)  # the architecture, without the weights
        else:
            model.save_pretrained(staging)
        (processor or tokenizer).save_pretrained(staging)  # a VL model's processor holds its tokenizer
        write_training_log(staging, result, before, after, args.method)
        summary, evaluation_seconds = {}, 0.0
        if not args.no_eval:
            evaluation_start = time.perf_counter()
            if vision_language:
                summary = evaluate_vl_model(model, processor, tasks, include_paths, args.eval_batch_size)
            else:
                summary = evaluate_model(model, tokenizer, tasks, include_paths, mmlu_limit=preset.mmlu_limit,
                                         batch_size=args.eval_batch_size, seed=args.seed, manager=manager)
            evaluation_seconds = time.perf_counter() - evaluation_start
            write_evaluation(staging / "evals", str(outdir), summary, headline_tasks=tasks,
                             details={"preset": preset.name, "mmlu_limit": preset.mmlu_limit,
                                      "seconds": round(evaluation_seconds, 1)})
        record = run_record(args, plan, preset, data, result, before, after, summary, model, device, precision,
                            {"train": round(result.seconds, 1), "evaluation": round(evaluation_seconds, 1),
                             "total": round(time.perf_counter() - process_start, 1)})
        write_text(staging / "README.md", model_card(record))
        write_json(staging / plan.record_file, record)  # last: the completion marker

    for task in tasks if summary else []:
        print(f"  {task}: acc {summary.get(task, {}).get('acc', float('nan')):.4f}")
    saved = "weights and results" if not args.no_save else "results only (--no-save)"
    print(f"unlearned model ({saved}) -> {outdir}  [{record['seconds']['total']:.0f} s in all]")
    log_to_wandb(args.wandb_project, run, {**record["hyperparameters"], "method": args.method,
                                           "base_model": args.model, "preset": preset.name},
                 wandb_metrics(record, summary), job_type="unlearn")


def rebuilt_model(config: transformers.PretrainedConfig, args: argparse.Namespace) -> torch.nn.Module:
    """The architecture that was trained (with its LoRA adapters, if any), for the gathered weights."""
    vision_language = getattr(config, "vision_config", None) is not None
    model_class = transformers.AutoModelForImageTextToText if vision_language else transformers.AutoModelForCausalLM
    model = model_class.from_config(config)
    return wrap_with_lora_for(model, args) if args.lora_rank else model


def prepare_training(model: nn.Module, layers: nn.ModuleList, card, args: argparse.Namespace,
                     precision: Precision) -> MethodContext:
    """Decide what trains and in which precision; returns the method's context (its `model` is the LoRA
    wrapper when --lora-rank is set).

    θ_pre (wt_dist_reg) is copied first, exactly, in the dtype the checkpoint is stored in; activation
    losses (rmu, cb, cb_lat) freeze everything above their top target layer; LoRA freezes the base; then
    the trainable parameters become fp32 master weights (`brittle.precision.prepare_for_training`).
    """
    context = MethodContext(model, args, layers, args.layer_ids if "layer_id" in card.hyperparameters else [])
    if "pretrained_weights" in card.needs:
        context.pretrained = pretrained_copy(model)
    if "retain_activations" in card.needs:
        freeze_above(model, layers, max(args.layer_ids))
    if args.lora_rank:
        context.model = wrap_with_lora_for(model, args)
    prepare_for_training(context.model, precision)
    return context


def prepare_caches(context: MethodContext, card, data: TrainingData, args: argparse.Namespace, pad: int,
                   device: torch.device, precision: Precision) -> Caches:
    """What the method needs from the original model, computed once (in the compute dtype), then the
    random directions and wt_dist's weight noise."""
    caches = Caches()
    model = context.model
    with precision.autocast():
        if "reference_log_probs" in card.needs:
            caches.forget_reference_log_prob = reference_log_probs(model, data.forget_train, args.batch_size, pad,
                                                                   device)
            caches.retain_reference_log_prob = reference_log_probs(model, data.retain_train, args.batch_size, pad,
                                                                   device)
        if "retain_activations" in card.needs:
            caches.retain_original_hidden = original_hidden_states(context, data.retain_train, args.batch_size, pad,
                                                                   device)
    if "random_directions" in card.needs:
        directions = random_directions(context.layer_ids, model.config.hidden_size, args.seed)
        context.random_directions = {layer: direction.to(next(context.layers[layer].parameters()).device)
                                     for layer, direction in directions.items()}
    if "weight_noise" in card.needs:
        add_weight_noise(model, args.wt_noise_std, args.seed)
    return caches


def format_nll(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def write_training_log(folder: Path, result: TrainingResult, before: dict, after: dict, method: str) -> None:
    """training_log.csv (one row per optimizer step: the loss and its terms on the training batch; the
    held-out NLLs, `heldout_*`, at step 0, every --eval-interval and at the end) and training_curves.png."""
    rows = [{"step": 0, **heldout_columns(before)}, *result.rows]
    rows[-1] = {**rows[-1], **heldout_columns(after)}
    columns: list[str] = []
    for row in rows:
        columns += [name for name in row if name not in columns]
    write_csv(folder / "training_log.csv", [{column: row.get(column) for column in columns} for row in rows], columns)
    losses = [(row["step"], row["loss"]) for row in result.rows]
    panels = {"training loss": {"loss": tuple(zip(*losses, strict=True))}} if losses else {}
    heldout = {name: tuple(zip(*[(row["step"], row[name]) for row in rows if row.get(name) is not None], strict=True))
               for name in ("heldout_forget_nll", "heldout_retain_nll")}
    heldout = {name.split("_")[1]: series for name, series in heldout.items() if series}
    if heldout:
        panels["held-out NLL (forget should rise, retain stay)"] = heldout
    if panels:
        plot_by_layer(folder / "training_curves.png", f"unlearning with {method}", panels, ylabel="value",
                      xlabel="optimizer step")


def run_record(args: argparse.Namespace, plan, preset: Preset, data: TrainingData,
               result: TrainingResult, before: dict, after: dict, summary: dict, model, device: torch.device,
               precision: Precision, seconds: dict[str, float]) -> dict[str, Any]:
    """Everything needed to interpret (and redo) the run; written last as the completion marker."""
    return {
        "run_name": plan.name,
        "method": args.method,
        "kind": plan.card.kind,
        "base_model": args.model,
        "preset": preset.name,
        "seed": args.seed,
        "hyperparameters": plan.hyperparameters,
        "method_hyperparameters": list(plan.card.hyperparameters),
        "forget_data": str(args.forget_data),
        "retain_data": str(args.retain_data),
        "forget_weights": args.forget_weights,
        "retain_weights": args.retain_weights,
        "texts": {"forget_train": len(data.forget_train), "retain_train": len(data.retain_train),
                  "forget_heldout": len(data.forget_heldout), "retain_heldout": len(data.retain_heldout)},
        "optimizer_steps": result.optimizer_steps,
        "heldout_before": before,
        "heldout_after": after,
        "evaluation": {task: metrics.get("acc", metrics.get("word_perplexity")) for task, metrics in summary.items()},
        "forget_task": preset.forget_task,
        "retain_task": preset.retain_task,
        "weights_saved": not args.no_save,
        "evaluated": not args.no_eval,
        "seconds": seconds,
        "device": str(device),
        "dtype": str(model.dtype).replace("torch.", ""),
        "precision": precision.record(),
        "attn_implementation": attn_implementation_of(model),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def wandb_metrics(record: dict, summary: dict) -> dict[str, float]:
    metrics = {f"{task}/{name}": value for task, values in summary.items() for name, value in values.items()
               if isinstance(value, float)}
    for when in ("before", "after"):
        metrics.update({f"heldout_{when}/{name}": value for name, value in record[f"heldout_{when}"].items()
                        if value is not None})
    metrics.update({f"seconds/{name}": value for name, value in record["seconds"].items()})
    return metrics


def model_card(record: dict) -> str:
    """A short README.md for the model folder (shown on the hub after --push-to-hub)."""
    lines = ["---", "library_name: transformers", f"tags: [unlearning, {record['method']}]", "---", "",
             f"# {record['run_name']}", "",
             f"`{record['base_model']}` unlearned with **{record['method']}** ({record['kind']} method) by "
             "`unlearn/unlearn.py` of the *What makes unlearning brittle?* toolkit.", "",
             "| hyperparameter | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in record["hyperparameters"].items()]
    lines += ["", "| held-out NLL | before | after |", "|---|---|---|"]
    lines += [f"| {name} | {format_nll(record['heldout_before'][name])} | {format_nll(record['heldout_after'][name])} |"
              for name in ("forget_nll", "retain_nll", "gap")]
    if record["evaluation"]:
        lines += ["", "| evaluation task | score |", "|---|---|"]
        lines += [f"| {task} | {value:.4f} |" for task, value in record["evaluation"].items() if value is not None]
    return "\n".join(lines) + "\n"
