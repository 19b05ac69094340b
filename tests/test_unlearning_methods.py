"""Unlearning, fast: every loss against its formula on a hand-made batch, folder names, settings, the loop.

The reference values are computed independently of the code under test: each text is run through the
model on its own (no padding, no hooks), and hidden states come from `output_hidden_states`.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM

from brittle.architecture import decoder_layers
from brittle.cli import UserError
from brittle.presets import get_preset
from brittle.training import collate
from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "unlearn"))
import estimate_memory

import unlearn
from brittle import catalogue, methods, trainer

FORGET = [[1, 2, 3, 4, 5], [6, 7, 8]]
RETAIN = [[9, 10, 11], [12, 13, 14, 15, 16, 17]]
LAYERS = [0, 1]  # of 3: the last layer's output_hidden_states entry is after the final norm


def tiny_model(family: str = "gpt_neox") -> torch.nn.Module:
    torch.manual_seed(0)
    if family == "gpt_neox":
        model = GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=32, hidden_size=16, num_hidden_layers=3,
                                                 num_attention_heads=2, intermediate_size=32,
                                                 max_position_embeddings=32))
    elif family == "llama":
        model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                                             num_key_value_heads=1, intermediate_size=32,
                                             max_position_embeddings=32))
    else:
        model = GPT2LMHeadModel(GPT2Config(vocab_size=32, n_embd=16, n_layer=3, n_head=2, n_positions=32))
    return model.eval()


def settings(**overrides) -> argparse.Namespace:
    values = {"retain_weight": 2.0, "forget_weight": 0.5, "beta": 0.3, "alpha": 3.0, "steering_coeff": 5.0,
              "lat_eps": 0.0, "lat_steps": 2, "wt_reg_lambda": 0.01, "ascent_alpha": 1.5, "descent_beta": 0.5}
    return argparse.Namespace(**{**values, **overrides})


def make_context(model, **overrides) -> methods.MethodContext:
    return methods.MethodContext(model, settings(**overrides), decoder_layers(model), LAYERS,
                                 random_directions=methods.random_directions(LAYERS, 16, seed=1))


def make_batch(**cached) -> methods.UnlearningBatch:
    return methods.UnlearningBatch(collate(FORGET, 0), collate(RETAIN, 0), **cached)


# ---- independent references: one text at a time ----------------------------------------------------

def token_log_probs_of(model, text: list[int]) -> torch.Tensor:
    logits = model(input_ids=torch.tensor([text])).logits[0]
    return torch.log_softmax(logits[:-1].float(), dim=-1).gather(1, torch.tensor(text[1:])[:, None])[:, 0]


def nll(model, texts) -> torch.Tensor:
    """Mean token NLL pooled over all predicted tokens of all texts."""
    log_probs = torch.cat([token_log_probs_of(model, text) for text in texts])
    return -log_probs.mean()


def log_prob(model, texts) -> torch.Tensor:
    return torch.stack([token_log_probs_of(model, text).sum() for text in texts])


def hidden(model, texts, layer: int) -> list[torch.Tensor]:
    return [model(input_ids=torch.tensor([text]), output_hidden_states=True).hidden_states[layer + 1][0]
            for text in texts]


def pooled_mean(per_text: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(per_text).mean()


def close(value, expected) -> None:
    assert torch.allclose(torch.as_tensor(value).float(), torch.as_tensor(expected).float(), atol=1e-5, rtol=1e-5), \
        (value, expected)


# ---- each loss equals its formula --------------------------------------------------------------------

def test_gradient_ascent_family_matches_formulas():
    model = tiny_model()
    context, batch = make_context(model), make_batch()
    forget, retain = nll(model, FORGET), nll(model, RETAIN)
    close(methods.LOSSES["ga_simple"](context, batch).total, -forget)
    close(methods.LOSSES["ga"](context, batch).total, -forget + 2.0 * retain)
    close(methods.LOSSES["grad_diff"](context, batch).total, retain - 0.5 * forget)
    close(methods.LOSSES["wt_dist"](context, batch).total, retain)


def test_preference_losses_match_formulas():
    model = tiny_model()
    context = make_context(model)
    forget_log_prob, retain_log_prob = log_prob(model, FORGET), log_prob(model, RETAIN)
    reference_forget, reference_retain = forget_log_prob + torch.tensor([0.7, -1.1]), retain_log_prob - 0.4
    batch = make_batch(forget_reference_log_prob=reference_forget, retain_reference_log_prob=reference_retain)
    beta = 0.3
    expected_dpo = -F.logsigmoid(beta * ((retain_log_prob - reference_retain) -
                                         (forget_log_prob - reference_forget))).mean()
    close(methods.LOSSES["dpo"](context, batch).total, expected_dpo)
    expected_npo = (-(2 / beta) * F.logsigmoid(-beta * (forget_log_prob - reference_forget)).mean()
                    + 2.0 * nll(model, RETAIN))
    close(methods.LOSSES["npo"](context, batch).total, expected_npo)
    average = forget_log_prob / torch.tensor([len(text) - 1 for text in FORGET])
    expected_simnpo = -(2 / beta) * F.logsigmoid(-beta * average).mean() + 2.0 * nll(model, RETAIN)
    close(methods.LOSSES["simnpo"](context, batch).total, expected_simnpo)


def test_npo_starts_at_its_closed_form_when_the_model_is_the_reference():
    model = tiny_model()
    reference = trainer.reference_log_probs(model, FORGET, 2, 0, torch.device("cpu"))
    batch = make_batch(forget_reference_log_prob=reference, retain_reference_log_prob=torch.zeros(2))
    loss = methods.LOSSES["npo"](make_context(model, retain_weight=0.0), batch)
    close(loss.total, (2 / 0.3) * torch.log(torch.tensor(2.0)))  # −(2/β)·log σ(0) = (2/β)·log 2


def retain_cache(model, seed: int = 3) -> dict[int, torch.Tensor]:
    """Arbitrary 'original' retain activations, padded like the batch."""
    generator = torch.Generator().manual_seed(seed)
    length = max(map(len, RETAIN))
    return {layer: torch.randn(len(RETAIN), length, 16, generator=generator) for layer in LAYERS}


def test_representation_losses_match_formulas():
    model = tiny_model()
    context = make_context(model)
    cached = retain_cache(model)
    batch = make_batch(retain_original_hidden=cached)
    alpha, coefficient = 3.0, 5.0
    expected_rmu, expected_cb = 0.0, 0.0
    for layer in LAYERS:
        target = coefficient * context.random_directions[layer]
        forget_hidden, retain_hidden = hidden(model, FORGET, layer), hidden(model, RETAIN, layer)
        originals = [cached[layer][row, : len(text)] for row, text in enumerate(RETAIN)]
        expected_rmu = expected_rmu + pooled_mean([(h - target).pow(2).mean(-1) for h in forget_hidden]) + alpha * \
            pooled_mean([(h - o).pow(2).mean(-1) for h, o in zip(retain_hidden, originals, strict=True)])
        expected_cb = expected_cb - pooled_mean([F.cosine_similarity(h, target[None], dim=-1) for h in forget_hidden]) \
            + alpha * (1 - pooled_mean([F.cosine_similarity(h, o, dim=-1)
                                        for h, o in zip(retain_hidden, originals, strict=True)]))
    close(methods.LOSSES["rmu"](context, batch).total, expected_rmu)
    close(methods.LOSSES["cb"](context, batch).total, expected_cb)
    # With ε = 0 the adversary cannot move: LAT is GA and CB-LAT is CB.
    close(methods.LOSSES["cb_lat"](context, batch).total, expected_cb)
    close(methods.LOSSES["lat"](context, batch).total, -nll(model, FORGET) + 2.0 * nll(model, RETAIN))


def test_weight_distance_regularisation_matches_formula():
    model = tiny_model()
    context = make_context(model)
    context.pretrained = {name: parameter.detach() + 0.01 * torch.ones_like(parameter)
                          for name, parameter in model.named_parameters()}
    count = sum(parameter.numel() for parameter in model.parameters())
    loss = methods.LOSSES["wt_dist_reg"](context, make_batch())
    close(loss.total, nll(model, RETAIN) - 0.01 * count * 0.01**2)
    close(loss.terms["squared_distance"], count * 0.01**2)


def test_every_method_has_a_loss_and_a_card():
    assert set(methods.LOSSES) == set(catalogue.METHODS)
    assert list(catalogue.METHODS) == ["ga_simple", "ga", "grad_diff", "dpo", "npo", "simnpo", "rmu", "cb", "lat",
                                       "cb_lat", "wt_dist", "wt_dist_reg", "rapidun"]
    assert tuple(catalogue.METHODS)[:12] == catalogue.DEFAULT_METHODS  # the deep-ignorance study's twelve


# ---- the catalogue ----------------------------------------------------------------------------------------------

def test_every_card_names_only_settings_with_values_of_their_type():
    names = {setting.name for setting in catalogue.HYPERPARAMETERS}
    for name, card in catalogue.METHODS.items():
        assert set(card.hyperparameters) | set(card.positive) | set(card.defaults) | set(card.toy) <= names, name
        for setting, values in filter(None, (card.sweep, card.toy_sweep)):
            assert [catalogue.SETTING[setting].kind(value) for value in values], name  # each value parses
        for preset in ("real", "toy"):
            grid = catalogue.sweep_grid(name, preset)
            assert grid[0] == ("LR", catalogue.SWEEP_LEARNING_RATES[preset])
            assert all(variable in catalogue.environment_variables() for variable, _ in grid)
    assert catalogue.sweep_grid("rmu", "toy")[1] == ("ALPHA", ("0.3", "1.0", "3.0"))  # the organism's own scale
    assert catalogue.sweep_grid("ga_simple", "real") == [("LR", ("5e-6", "1e-5", "3e-5"))]
    flags = [flag for setting in catalogue.SETTINGS for flag in (setting.flag, *setting.flag_aliases)]
    variables = [variable for setting in catalogue.SETTINGS
                 for variable in (setting.environment_variable, *setting.aliases) if variable]
    assert len(flags) == len(set(flags)) and len(variables) == len(set(variables))


def test_docs_method_table_is_the_generated_one():
    page = (REPO_ROOT / "docs" / "unlearning.md").read_text()
    begin, end = "<!-- method table: generated by `uv run unlearn/unlearn.py --list-methods table` -->\n", \
        "<!-- end of method table -->"
    assert begin in page and end in page, "docs/unlearning.md lost the markers of its method table"
    assert page.split(begin)[1].split(end)[0] == catalogue.method_table(), \
        "the method table is stale: paste `uv run unlearn/unlearn.py --list-methods table` into docs/unlearning.md"


def test_settings_come_from_environment_variables_and_a_flag_wins():
    environment = {"LR": "5e-6", "RETAIN_WEIGHT": "2", "NO_SAVE": "yes", "BASE": "some/model", "THREADS": ""}
    args = unlearn.parse_arguments(["--method", "ga", "--retain-weight", "3"], environment=environment)
    assert (args.lr, args.retain_weight, args.no_save, args.model, args.threads) == (5e-6, 3.0, True, "some/model",
                                                                                    None)
    assert unlearn.parse_arguments(["--method", "ga", "--check-wandb-only"], environment={}).check_only
    with pytest.raises(UserError, match=r"LR='fast' is not a float"):
        unlearn.parse_arguments(["--method", "ga"], environment={"LR": "fast"})
    with pytest.raises(UserError, match="NO_SAVE='maybe' is not a switch value"):
        unlearn.parse_arguments(["--method", "ga"], environment={"NO_SAVE": "maybe"})
    near = {"RETAIN_WIEGHT": "2", "LAYER_IDS": "1", "PATH": "/bin", "OMP_NUM_THREADS": "1", "FORCE_COLOR": "1",
            "LRS": "1e-3", "SEED": "1"}
    assert catalogue.near_misses(near) == [("LAYER_IDS", "LAYER_ID"), ("RETAIN_WIEGHT", "RETAIN_WEIGHT")]


# ---- LAT's adversary and the hooks ---------------------------------------------------------------------

def test_adversary_stays_in_budget_lowers_forget_nll_and_leaves_weights_alone():
    model = tiny_model()
    context = make_context(model, lat_eps=0.2, lat_steps=5)
    forget = collate(FORGET, 0)
    delta = context.adversarial_perturbation(forget)
    assert delta.shape == (2, 5, 16) and not delta.requires_grad
    assert delta.abs().max() <= 0.2 + 1e-7 and delta.abs().max() > 0
    assert all(parameter.grad is None for parameter in model.parameters())
    with torch.no_grad():
        unperturbed = context.nll(forget)
        with context.perturbed(delta):
            perturbed = context.nll(forget)
    assert perturbed < unperturbed  # the adversary helps recall
    assert context.perturbation_layer == 1  # the middle of [0, 1]


def test_hidden_states_read_under_a_perturbation_include_it():
    model = tiny_model()
    context = make_context(model)
    forget = collate(FORGET, 0)
    with torch.no_grad():
        clean = context.hidden_states(forget)
        with context.perturbed(torch.full((2, 5, 16), 0.5)):
            shifted = context.hidden_states(forget)
    close(shifted[1], clean[1] + 0.5)
    close(shifted[0], clean[0])  # layers before the perturbation are untouched


@pytest.mark.parametrize("family", ["gpt_neox", "llama", "gpt2"])
def test_every_loss_trains_on_each_architecture_family(family):
    model = tiny_model(family).train()
    context = make_context(model, lat_eps=0.1)
    context.pretrained = trainer.pretrained_copy(model)
    cached = retain_cache(model)
    for name, loss_function in methods.LOSSES.items():
        batch = make_batch(forget_reference_log_prob=torch.zeros(2), retain_reference_log_prob=torch.zeros(2),
                           retain_original_hidden=cached)
        loss = loss_function(context, batch)
        loss.total.backward()
        assert torch.isfinite(loss.total), name
        assert any(parameter.grad is not None and parameter.grad.abs().sum() > 0 for parameter in model.parameters())
        model.zero_grad(set_to_none=True)


def test_weight_noise_has_the_requested_scale_and_is_reproducible():
    first, second = tiny_model(), tiny_model()
    original = {name: parameter.detach().clone() for name, parameter in first.named_parameters()}
    methods.add_weight_noise(first, 0.05, seed=7)
    methods.add_weight_noise(second, 0.05, seed=7)
    noise = torch.cat([(parameter.detach() - original[name]).flatten() for name, parameter in first.named_parameters()])
    assert abs(noise.std().item() - 0.05) < 0.003 and abs(noise.mean().item()) < 0.003
    assert all(torch.equal(a, b) for a, b in zip(first.parameters(), second.parameters(), strict=True))


def test_random_directions_are_fixed_unit_vectors_per_layer():
    directions = methods.random_directions([2, 5], 64, seed=3)
    assert set(directions) == {2, 5}
    assert all(abs(vector.norm().item() - 1) < 1e-6 for vector in directions.values())
    assert not torch.allclose(directions[2], directions[5])
    assert torch.equal(methods.random_directions([2, 5], 64, seed=3)[5], directions[5])


# ---- folder names and settings ------------------------------------------------------------------------------

REAL_NAMES = {
    "ga_simple": "ep1_lr1e-05_bs4",
    "ga": "ep1_lr1e-05_bs4_rw1.0",
    "grad_diff": "ep1_lr1e-05_bs4_fw1.0",
    "dpo": "ep1_lr1e-05_bs4_b0.1",
    "npo": "ep1_lr1e-05_bs4_b0.1_rw1.0",
    "simnpo": "ep1_lr1e-05_bs4_b0.1_rw1.0",
    "rmu": "ep1_lr1e-05_bs4_a100.0_sc20.0_ly5-6-7",
    "cb": "ep1_lr1e-05_bs4_a100.0_sc20.0_ly5-6-7",
    "lat": "ep1_lr1e-05_bs4_rw1.0_le0.1_ls5_ly5-6-7",
    "cb_lat": "ep1_lr1e-05_bs4_a100.0_sc20.0_le0.1_ls5_ly5-6-7",
    "wt_dist": "ep1_lr1e-05_bs4_wn0.02",
    "wt_dist_reg": "ep1_lr1e-05_bs4_wr0.1",
}


def planned_name(*argv: str) -> str:
    args = unlearn.parse_arguments(list(argv), environment={})
    preset = get_preset(args.preset, args.seed)
    args, defaults = unlearn.resolve_settings(args, preset)
    return unlearn.run_name(args.model, args.method, args, defaults)


@pytest.mark.parametrize("method", list(REAL_NAMES))
def test_folder_name_of_every_method_with_the_real_defaults(method):
    assert planned_name("--method", method) == f"EleutherAI_deep-ignorance-unfiltered__{method}__{REAL_NAMES[method]}"


def test_folder_names_follow_the_specs_examples_and_encode_every_change():
    assert planned_name("--method", "cb_lat", "--epochs", "2", "--lr", "5e-6") == \
        "EleutherAI_deep-ignorance-unfiltered__cb_lat__ep2_lr5e-06_bs4_a100.0_sc20.0_le0.1_ls5_ly5-6-7"
    assert planned_name("--method", "npo", "--lr", "5e-05", "--batch-size", "8", "--beta", "0.1") == \
        "EleutherAI_deep-ignorance-unfiltered__npo__ep1_lr5e-05_bs8_b0.1_rw1.0"
    changed = planned_name("--method", "ga", "--lora-rank", "8", "--seed", "7", "--max-length", "256",
                           "--grad-accum-steps", "2", "--max-steps", "10", "--layer-id", "9")
    assert changed == "EleutherAI_deep-ignorance-unfiltered__ga__ep1_lr1e-05_bs4_rw1.0_ml256_acc2_st10_lora8_s7"
    # Layers are normalised; hyperparameters a method does not use never change its name.
    assert planned_name("--method", "rmu", "--layer-id", "7,5,6,5").endswith("_ly5-6-7")
    assert planned_name("--method", "ga", "--beta", "0.9") == planned_name("--method", "ga")
    assert planned_name("--method", "ga", "--eval-interval", "5") == planned_name("--method", "ga")


def test_toy_folder_names_use_the_preset_defaults(toy_models_stub):
    name = planned_name("--method", "cb_lat", "--preset", "toy")
    defaults = unlearn.method_defaults(get_preset("toy"), "cb_lat")
    assert defaults["alpha"] == catalogue.METHODS["cb_lat"].toy["alpha"]
    assert name.startswith("toy-base-s42__cb_lat__ep")
    assert name.endswith(f"_ly{defaults['layer_id'].replace(',', '-')}")
    assert "_ml" not in name  # the preset's own max length is its default, not a change


@pytest.fixture
def toy_models_stub(tmp_path, monkeypatch):
    """A working directory where the toy base model's folder exists (naming only needs the folder)."""
    (tmp_path / "models" / "toy-base-s42").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)


def test_learning_rates_are_written_in_the_specs_scientific_form():
    assert [unlearn.scientific(value) for value in (1e-5, 5e-6, 1.5e-5, 3e-4, 1e-3)] == \
        ["1e-05", "5e-06", "1.5e-05", "3e-04", "1e-03"]


@pytest.mark.parametrize(("argv", "phrase"), [
    (["--method", "wt_dist", "--lora-rank", "8"], "wt_dist cannot use LoRA"),
    (["--method", "wt_dist_reg", "--lora-rank", "4"], "wt_dist_reg cannot use LoRA"),
    (["--method", "forget_everything"], "unknown method 'forget_everything'"),
    (["--method", "rmu", "--layer-id", "a,b"], "--layer-id must be comma-separated"),
    (["--method", "ga", "--lr", "0"], "--lr must be positive"),
    (["--method", "npo", "--beta", "0"], "--beta must be positive for npo"),
    (["--method", "lat", "--lat-steps", "0"], "--lat-steps must be positive for lat"),
    (["--method", "ga", "--alpha", "-1"], "--alpha must not be negative"),
    (["--method", "ga", "--eval-split", "1"], "--eval-split must be in [0, 1)"),
    (["--method", "ga", "--push-to-hub", "--no-save"], "--push-to-hub needs the weights"),
])
def test_impossible_settings_are_one_line_errors(argv, phrase):
    args = unlearn.parse_arguments(argv, environment={})
    with pytest.raises(UserError, match=phrase.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        unlearn.resolve_settings(args, get_preset("real"))


def test_toy_defaults_are_complete_and_inside_the_organism():
    toy = get_preset("toy")
    assert set(toy.unlearn_defaults) <= {"all", *catalogue.METHODS}
    for method in catalogue.METHODS:
        defaults = unlearn.method_defaults(toy, method)
        assert max(catalogue.parse_layer_ids(defaults["layer_id"])) < 4  # the organism has 4 layers
        assert defaults["lr"] > 0 and defaults["max_length"] <= 256


# ---- the loop's pieces ----------------------------------------------------------------------------------------

def test_heldout_split_and_index_batches():
    sequences = [[index] for index in range(20)]
    train, heldout = trainer.split_heldout(sequences, 0.1, random.Random(0))
    assert len(heldout) == 2 and len(train) == 18 and not {tuple(s) for s in train} & {tuple(s) for s in heldout}
    assert trainer.split_heldout(sequences, 0.0, random.Random(0)) == (sequences, [])
    stream = trainer.index_batches(10, 4, random.Random(0))
    first_pass = [next(stream) for _ in range(2)]
    seen = [index for batch in first_pass for index in batch]
    assert all(len(batch) == 4 for batch in first_pass) and len(set(seen)) == 8  # no repeats within a pass


def test_step_count_follows_epochs_accumulation_and_max_steps():
    args = argparse.Namespace(epochs=2, batch_size=4, grad_accum_steps=3, max_steps=0)
    assert trainer.count_steps(540, args) == (270, 90)
    args.max_steps = 7
    assert trainer.count_steps(540, args) == (270, 7)


def test_cached_retain_activations_are_the_models_own_per_text():
    model = tiny_model()
    context = make_context(model)
    cached = trainer.original_hidden_states(context, RETAIN, 2, 0, torch.device("cpu"))
    for layer in LAYERS:
        for state, expected in zip(cached[layer], hidden(model, RETAIN, layer), strict=True):
            close(state, expected)
    data = trainer.TrainingData(FORGET, RETAIN, [], [])
    batch = trainer.assemble_batch(data, trainer.Caches(retain_original_hidden=cached), [1, 0], [1, 0], 0,
                                   torch.device("cpu"))
    assert batch.retain_original_hidden[0].shape == (2, 6, 16)
    close(batch.retain_original_hidden[0][1, :3], cached[0][0])
    close(batch.retain_original_hidden[0][1, 3:], torch.zeros(3, 16))


def test_training_loop_reports_nan_as_a_user_error():
    model = tiny_model().train()
    context = make_context(model)

    def exploding(context, batch):
        loss = context.nll(batch.forget)
        return methods.Loss(loss * float("nan"), {"forget_nll": loss})

    args = argparse.Namespace(epochs=1, batch_size=2, grad_accum_steps=1, max_steps=0, lr=1e-3, weight_decay=0.0,
                              seed=0, grad_clip=1.0, eval_interval=0)
    data = trainer.TrainingData(FORGET * 2, RETAIN * 2, [], [])
    with pytest.raises(UserError, match="the loss became nan at step 1"):
        trainer.train(context, exploding, "exploding", data, trainer.Caches(), args, 0, torch.device("cpu"))


# ---- memory estimate -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", ["gpt_neox", "llama", "gpt2"])
def test_parameter_count_from_config_alone(family, tmp_path):
    model = tiny_model(family)
    model.config.save_pretrained(tmp_path)
    estimated = estimate_memory.parameter_count(json.loads(Path(tmp_path / "config.json").read_text()))
    actual = sum(parameter.numel() for parameter in model.parameters())
    assert abs(estimated - actual) / actual < 0.05, (estimated, actual)


def test_parameter_count_of_the_deep_ignorance_models():
    config = {"model_type": "gpt_neox", "hidden_size": 4096, "num_hidden_layers": 32, "vocab_size": 50304,
              "intermediate_size": 16384, "num_attention_heads": 32, "tie_word_embeddings": False}
    assert 6.8e9 < estimate_memory.parameter_count(config) < 6.9e9


def test_every_lora_capable_loss_trains_only_the_adapters():
    model = tiny_model()
    context = make_context(model, lat_eps=0.1)
    cached = retain_cache(model)
    context.model = trainer.wrap_with_lora(model, rank=4, alpha=8.0)
    for name, loss_function in methods.LOSSES.items():
        if not catalogue.METHODS[name].lora:
            continue
        batch = make_batch(forget_reference_log_prob=torch.zeros(2), retain_reference_log_prob=torch.zeros(2),
                           retain_original_hidden=cached)
        loss_function(context, batch).total.backward()
        trained = {parameter_name for parameter_name, parameter in context.model.named_parameters()
                   if parameter.grad is not None and parameter.grad.abs().sum() > 0}
        assert trained and all("lora_" in parameter_name for parameter_name in trained), (name, trained)
        context.model.zero_grad(set_to_none=True)
