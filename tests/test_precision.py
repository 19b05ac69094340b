"""Training precision and memory: bf16 compute with fp32 master weights, wt_dist_reg's penalty without
saved differences, frozen layers above the activation losses, the optimizer released for evaluation,
and the attention backend choice."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from brittle import methods, models
from brittle.architecture import decoder_layers
from brittle.cli import UserError
from brittle.precision import Precision, prepare_for_training, released_optimizer, resolve_precision
from brittle.training import batch_nll, collate
from conftest import REPO_ROOT, ToyOrganism

sys.path.insert(0, str(REPO_ROOT / "unlearn"))
import estimate_memory

import unlearn


def tiny_model() -> GPTNeoXForCausalLM:
    torch.manual_seed(0)
    return GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=32, hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
                                            intermediate_size=32, max_position_embeddings=32)).eval()


TEXTS = [[1, 2, 3, 4, 5, 6], [7, 8, 9]]


# ---- the must-show: bf16 compute changes the weights as fp32 does ------------------------------------------

def unlearned_delta(organism: ToyOrganism, folder: Path, dtype: str, monkeypatch: pytest.MonkeyPatch,
                    ) -> tuple[torch.Tensor, dict]:
    """ΔW (all parameters, flattened) of 10 steps of ga at lr 1e-5 with `--dtype dtype`, and the run record."""
    monkeypatch.chdir(organism.workspace)
    monkeypatch.setattr(sys, "argv", ["unlearn.py", "--method", "ga", "--preset", "toy", "--model", str(organism.base),
                                      "--device", "cpu", "--dtype", dtype, "--lr", "1e-5", "--max-steps", "10",
                                      "--eval-split", "0", "--no-eval", "--outdir", str(folder)])
    unlearn.main()
    base, trained = load_file(organism.base / "model.safetensors"), load_file(folder / "model.safetensors")
    assert all(tensor.dtype == torch.float32 for tensor in trained.values())  # saved as the base is stored
    delta = torch.cat([(trained[name].double() - base[name].double()).flatten() for name in sorted(base)])
    return delta, json.loads((folder / "unlearn_run.json").read_text())


@pytest.mark.slow
def test_bf16_compute_gives_the_fp32_runs_weight_change(toy_organism: ToyOrganism, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch):
    full, full_record = unlearned_delta(toy_organism, tmp_path / "fp32", "fp32", monkeypatch)
    mixed, mixed_record = unlearned_delta(toy_organism, tmp_path / "bf16", "bf16", monkeypatch)
    cosine = torch.nn.functional.cosine_similarity(full, mixed, dim=0).item()
    assert full.norm() > 0
    assert cosine >= 0.99, cosine
    assert abs(mixed.norm() / full.norm() - 1) <= 0.02, (mixed.norm(), full.norm())
    assert mixed_record["precision"] == {"compute_dtype": "bf16", "save_dtype": "fp32", "master_dtype": "fp32"}
    assert full_record["precision"]["compute_dtype"] == "fp32"
    assert mixed_record["attn_implementation"] in ("sdpa", "eager")


def test_training_keeps_fp32_master_weights_of_a_bf16_checkpoint_and_freezes_nothing_else():
    model = tiny_model().to(torch.bfloat16)
    methods.freeze_above(model, decoder_layers(model), 1)
    precision = resolve_precision("bf16", "auto", "cpu", torch.bfloat16)
    trainable = prepare_for_training(model, precision)
    assert precision.save == torch.bfloat16 and precision.mixed
    assert trainable and all(parameter.dtype == torch.float32 for parameter in trainable)
    frozen = [parameter for parameter in model.parameters() if not parameter.requires_grad and parameter.dim() == 2]
    assert frozen and all(parameter.dtype == torch.bfloat16 for parameter in frozen)
    batch = collate(TEXTS, 0)
    with precision.autocast():  # mixed fp32/bf16 weights run under autocast
        loss = batch_nll(model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits, batch.labels)
    loss.backward()
    assert all(parameter.grad is not None and parameter.grad.dtype == torch.float32 for parameter in trainable)


def test_precision_choices_are_checked():
    with pytest.raises(UserError, match="--dtype fp16 cannot train on the CPU"):
        resolve_precision("fp16", "auto", "cpu", torch.float32)
    assert resolve_precision("auto", "fp32", "cpu", torch.bfloat16) == Precision(torch.float32, torch.float32, "cpu")


# ---- memory: what trains, what backward keeps ------------------------------------------------------------------

def test_wt_dist_reg_penalty_and_gradient_equal_plain_autograd():
    model, reference = tiny_model(), tiny_model()
    pretrained = {name: parameter.detach() + 0.01 * torch.randn_like(parameter)
                  for name, parameter in model.named_parameters()}
    context = methods.MethodContext(model, unlearn_settings(wt_reg_lambda=0.3), decoder_layers(model), [],
                                    pretrained=pretrained)
    batch = methods.UnlearningBatch(collate(TEXTS, 0), collate(TEXTS[::-1], 0))
    loss = methods.LOSSES["wt_dist_reg"](context, batch)
    loss.total.backward()
    # The plain version: autograd through (θ − θ₀)² itself.
    retain = batch.retain
    plain_distance = sum((parameter - pretrained[name]).pow(2).sum()
                         for name, parameter in reference.named_parameters())
    plain = batch_nll(reference(input_ids=retain.input_ids, attention_mask=retain.attention_mask).logits,
                      retain.labels) - 0.3 * plain_distance
    plain.backward()
    torch.testing.assert_close(loss.total, plain)
    torch.testing.assert_close(loss.terms["squared_distance"], plain_distance.detach())
    for (name, parameter), expected in zip(model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(parameter.grad, expected.grad, msg=name)


def unlearn_settings(**overrides):
    import argparse

    return argparse.Namespace(**{"alpha": 2.0, "steering_coeff": 3.0, "wt_reg_lambda": 0.1, **overrides})


def test_activation_losses_train_and_run_nothing_above_the_top_target_layer():
    model = tiny_model().train()
    layers = decoder_layers(model)
    frozen = methods.freeze_above(model, layers, 1)
    assert frozen == sum(parameter.numel() for module in (*layers[2:], model.gpt_neox.final_layer_norm,
                                                            model.get_output_embeddings())
                         for parameter in module.parameters())
    context = methods.MethodContext(model, unlearn_settings(), layers, [0, 1],
                                    random_directions=methods.random_directions([0, 1], 16, seed=1))
    calls = []
    layers[2].register_forward_hook(lambda *_: calls.append(2))
    batch = collate(TEXTS, 0)
    hidden = context.hidden_states(batch)
    assert set(hidden) == {0, 1} and not calls  # the forward pass stopped after layer 1
    with torch.no_grad():
        expected = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                         output_hidden_states=True).hidden_states
    torch.testing.assert_close(hidden[1], expected[2])
    cached = {layer: value.detach() for layer, value in hidden.items()}
    unlearning = methods.UnlearningBatch(batch, batch, retain_original_hidden=cached)
    methods.LOSSES["rmu"](context, unlearning).total.backward()
    assert all((parameter.grad is not None) == parameter.requires_grad for parameter in model.parameters())
    assert layers[0].attention.query_key_value.weight.grad.abs().sum() > 0


def test_optimizer_state_is_released_for_an_evaluation_and_restored():
    model = tiny_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = collate(TEXTS, 0)
    batch_nll(model(input_ids=batch.input_ids).logits, batch.labels).backward()
    optimizer.step()
    before = {key: value.clone() for key, value in optimizer.state[model.get_output_embeddings().weight].items()}
    with released_optimizer(optimizer):
        pass  # on a GPU the moments sit in host memory here; on the CPU there is nothing to move
    for key, value in optimizer.state[model.get_output_embeddings().weight].items():
        torch.testing.assert_close(value, before[key])


# ---- attention backends -------------------------------------------------------------------------------------

def test_attention_backend_choice_and_its_errors():
    assert models.resolve_attn_implementation("auto", "cpu") is None  # transformers' default: sdpa where it exists
    assert models.resolve_attn_implementation("eager", "cpu") == "eager"
    with pytest.raises(UserError, match="flash_attention_2 is unavailable: it needs a CUDA GPU"):
        models.resolve_attn_implementation("flash_attention_2", "cpu")
    with pytest.raises(UserError, match="unknown --attn-implementation"):
        models.resolve_attn_implementation("fast", "cpu")


# ---- the memory estimate counts what really trains --------------------------------------------------------------

@pytest.mark.parametrize(("method", "lora_rank"), [("ga", 0), ("rmu", 0), ("npo", 4)])
def test_memory_estimate_counts_the_parameters_that_train(method: str, lora_rank: int):
    import argparse

    from brittle.precision import resolve_precision as policy
    from brittle.unlearning import prepare_training

    torch.manual_seed(0)  # wide enough that biases (not in the estimate) are under 2% of a layer
    model = GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=32, hidden_size=64, num_hidden_layers=4, num_attention_heads=2,
                                             intermediate_size=256, max_position_embeddings=32))
    config = model.config.to_dict()
    from brittle.catalogue import SETTINGS

    # Every setting at its default (brittle/catalogue.py), then what this case changes.
    settings = argparse.Namespace(**{setting.name: setting.default for setting in SETTINGS}, layer_ids=[1])
    settings.lora_rank = lora_rank
    context = prepare_training(model, decoder_layers(model), unlearn.METHODS[method], settings,
                               policy("fp32", "auto", "cpu", torch.float32))
    trainable = sum(parameter.numel() for parameter in context.model.parameters() if parameter.requires_grad)
    estimate = estimate_memory.training_memory(config, method, 1, 8, [1], lora_rank, stored_bytes=2)
    assert estimate.trainable == pytest.approx(trainable, rel=0.02), (estimate.trainable, trainable)
    assert estimate.gradients_and_optimizer == 12 * estimate.trainable


def test_memory_estimate_of_wt_dist_reg_is_one_copy_of_the_weights_above_wt_dist():
    """wt_dist_reg's penalty recomputes 2λ(θ − θ_pre) in backward (`methods.SquaredDistance`), so all it adds to
    a single-pass full-parameter method is θ_pre in the stored dtype (no fp32 difference kept per parameter)."""
    config = {"model_type": "gpt_neox", "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
              "intermediate_size": 4096, "vocab_size": 50304, "tie_word_embeddings": False}
    for stored_bytes in (2, 4):
        for adamw in ("fused", "foreach", "single"):
            regularised, plain = (estimate_memory.training_memory(config, method, 4, 512, stored_bytes=stored_bytes,
                                                                  adamw=adamw)
                                  for method in ("wt_dist_reg", "wt_dist"))
            assert regularised.total - plain.total == estimate_memory.parameter_count(config) * stored_bytes
