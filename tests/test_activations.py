"""The activation-space steps (3, 5, 6, 8, 9, 11, 12) and their shared statistics passes.

Four kinds of test: the formulas on synthetic activations whose answers are known (fast); every step's
CSV against the raw route (every token's activations in memory) on the organism; the statistics store's
reuse, invalidation and integrity, in-process, including a pass killed with SIGKILL; and the real scripts
end to end on the organism with few texts (one run of each, shared by several assertions), with bad inputs.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from brittle.activations import ActivationSettings, ActivationStore, stream_activations, tokenize_texts
from brittle.cli import UserError, run_cli
from brittle.texts import read_texts
from conftest import REPO_ROOT, ToyOrganism, assert_user_error, run_script

SAMPLES = "40"  # texts per split in the end-to-end runs


def load_step(name: str) -> ModuleType:
    """An experiment script imported as a module (its functions are the formulas under test)."""
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "experiment" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


norms = load_step("collect_activation_comparison")
probes = load_step("linear_probe_analysis")
separation = load_step("activation_separation_analysis")
covariance = load_step("activation_covariance_analysis")
row_space = load_step("row_space_projection_analysis")


def random_rotation(dimension: int, generator: torch.Generator) -> torch.Tensor:
    """A random orthogonal matrix."""
    return torch.linalg.qr(torch.randn(dimension, dimension, generator=generator, dtype=torch.float64))[0]


# ---- the formulas on synthetic activations ------------------------------------------------------------------

def pair_norm_means(hidden_a: torch.Tensor, hidden_b: torch.Tensor) -> torch.Tensor:
    """(3, 2) mean L1/L2 norms of h_A, h_B and h_B - h_A, accumulated by the paired pass in two batches."""
    from brittle.activations import BatchActivations, PairNorms

    norms = PairNorms(1)
    for rows in (slice(0, 1), slice(1, None)):
        batches = [BatchActivations([hidden[rows]], None, torch.arange(len(hidden))[rows], torch.zeros(1))
                   for hidden in (hidden_a, hidden_b)]
        norms.update(*batches)
    tensors = norms.tensors()
    return tensors["norm_sums"][0] / int(tensors["norm_tokens"])


def test_norms_of_identical_activations_differ_by_zero_and_match_hand_values():
    hidden = torch.tensor([[3.0, -4.0], [0.0, 1.0]])
    means = pair_norm_means(hidden, hidden.clone())
    assert means[2].tolist() == [0, 0]
    assert means[0].tolist() == pytest.approx([(7 + 1) / 2, (5 + 1) / 2])
    shifted = pair_norm_means(hidden, hidden + torch.tensor([1.0, 1.0]))
    assert shifted[2].tolist() == pytest.approx([2, math.sqrt(2)])


def test_online_moments_give_the_sample_covariance():
    from brittle.activations import BatchActivations, TextStatistics, unpacked_symmetric

    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(30, 6, generator=generator) * 5 + 3  # a mean far from zero: the sums must not cancel
    statistics = TextStatistics(1, 6, np.array([30]), torch.device("cpu"))
    for rows in (slice(0, 11), slice(11, None)):
        statistics.update(BatchActivations([hidden[rows]], None, torch.arange(30)[rows], torch.zeros(30)[rows].long()))
    tensors = statistics.tensors()
    mean = tensors["token_sum"][0] / 30
    online = (unpacked_symmetric(tensors["gram_upper"][0], 6) - 30 * torch.outer(mean, mean)) / 29
    torch.testing.assert_close(online, covariance.sample_covariance(hidden), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(tensors["mean_pooled"][0, 0], hidden.mean(0))
    assert torch.equal(tensors["last_token"][0, 0], hidden[-1])


def test_identical_spectra_are_zero_wasserstein_and_equal_change_is_selectivity_one():
    generator = torch.Generator().manual_seed(0)
    activations = torch.randn(500, 16, generator=generator)
    eigenvalues = covariance.covariance_eigenvalues(covariance.sample_covariance(activations))
    assert covariance.spectrum_distance(eigenvalues, eigenvalues.copy()) == 0
    scaled = covariance.covariance_eigenvalues(covariance.sample_covariance(2 * activations))
    change = covariance.spectrum_distance(eigenvalues, scaled)
    assert change > 0
    # The same texts as forget and retain: whatever changed, it changed equally on both.
    assert covariance.selectivity_ratio(change, change) == 1
    assert math.isnan(covariance.selectivity_ratio(0.0, 0.0))


@pytest.mark.parametrize("rank", [1, 5, 12])
def test_a_rank_k_covariance_has_effective_rank_k(rank: int):
    generator = torch.Generator().manual_seed(rank)
    directions = random_rotation(32, generator)[:, :rank]  # k orthonormal directions in 32 dimensions
    activations = torch.randn(20000, rank, generator=generator, dtype=torch.float64) @ directions.T
    eigenvalues = covariance.covariance_eigenvalues(covariance.sample_covariance(activations))
    assert covariance.effective_rank(eigenvalues) == pytest.approx(rank, rel=0.03)
    assert covariance.spectral_entropy(eigenvalues) == pytest.approx(math.log(rank), abs=0.03)


def test_separable_clusters_have_auc_one_and_identical_ones_no_separation():
    generator = np.random.default_rng(0)
    forget = generator.normal(size=(60, 8)) + 10.0
    retain = generator.normal(size=(60, 8)) - 10.0
    assert separation.linear_auc(forget, retain, seed=0) == 1.0
    assert separation.variance_ratio(forget, retain) > 10
    assert separation.centroid_cosine_distance(forget, retain) == pytest.approx(2.0, abs=0.05)  # opposite centroids
    assert separation.centroid_cosine_distance(forget, forget.copy()) == pytest.approx(0.0, abs=1e-12)
    result = probes.probe_layer(forget, retain, 1.0, 1000, 0.25, seed=0)
    assert result["auc"] == 1.0 and result["accuracy"] == 1.0 and result["selectivity"] == pytest.approx(0.5)


def test_projection_onto_the_full_row_space_keeps_the_whole_norm():
    generator = torch.Generator().manual_seed(0)
    delta = torch.randn(48, 16, generator=generator)  # (out, in): full row space = all 16 input directions
    basis, _, rank = row_space.row_space_basis(delta, top_k=16)
    assert rank == 16 and basis.shape == (16, 16)
    activations = torch.randn(200, 16, generator=generator)
    assert row_space.projection_fraction(activations, basis) == pytest.approx(1.0, abs=1e-6)  # float32 basis
    # A rank-3 update: its row space is 3-dimensional, and inputs inside it project fully.
    low_rank = torch.randn(48, 3, generator=generator) @ torch.randn(3, 16, generator=generator)
    basis, _, rank = row_space.row_space_basis(low_rank, top_k=16)
    assert rank == 3 and basis.shape == (16, 3)
    inside = torch.randn(50, 3, generator=generator) @ basis.T
    assert row_space.projection_fraction(inside, basis) == pytest.approx(1.0, abs=1e-6)
    forget = row_space.projection_fraction(activations, basis)
    assert 0 < forget < 1 and row_space.selectivity(forget, forget) == 1


# ---- the statistics route equals the raw hidden states (in-process, on the organism) ------------------------------

EQUALITY_SAMPLES = 24  # texts per split


def raw_activations(model_name: str, texts: list[str], batch_size: int = 8) -> dict[str, list[torch.Tensor]]:
    """The raw route: every real token's hidden states and MLP inputs of every layer, in memory, in the
    split's (text, position) order, from the same batched, right-padded forward pass the raw cache ran."""
    from brittle.activations import batch_order
    from brittle.architecture import decoder_layers, mlp_expand_module
    from brittle.models import load_model_and_tokenizer
    from brittle.training import collate

    model, tokenizer = load_model_and_tokenizer(model_name, device="cpu")
    split = tokenize_texts(tokenizer, texts, 512, "texts", "texts.txt")
    layers = decoder_layers(model)
    recorded: dict[int, torch.Tensor] = {}
    hooks = [mlp_expand_module(layer).register_forward_pre_hook(
        lambda _module, inputs, index=index: recorded.__setitem__(index, inputs[0]))
        for index, layer in enumerate(layers)]
    per_text: dict[int, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
    for indices in batch_order(split, batch_size):
        batch = collate([split.sequences[index] for index in indices], tokenizer.pad_token_id)
        with torch.no_grad():
            states = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                           output_hidden_states=True).hidden_states
        for row, index in enumerate(indices):
            length = len(split.sequences[index])
            per_text[index] = ([state[row, :length] for state in states],
                               [recorded[layer][row, :length] for layer in range(len(layers))])
    for hook in hooks:
        hook.remove()
    order = range(len(texts))
    return {"hidden": [torch.cat([per_text[index][0][layer] for index in order]) for layer in range(len(layers) + 1)],
            "mlp": [torch.cat([per_text[index][1][layer] for index in order]) for layer in range(len(layers))],
            "lengths": [len(split.sequences[index]) for index in order]}


def raw_mlp_weight_deltas(model_a: str, model_b: str) -> dict[int, torch.Tensor]:
    """ΔW of each layer's MLP input-side weights, from the loaded models (the raw route read them so)."""
    from brittle.architecture import as_output_by_input, parameter_role
    from brittle.models import load_model

    def weights(name: str) -> dict[int, torch.Tensor]:
        return {parameter_role(key).layer: as_output_by_input(key, value.detach())
                for key, value in load_model(name, device="cpu", dtype="fp32").named_parameters()
                if parameter_role(key).component == "mlp_expand" and key.endswith("weight")}

    first, second = weights(model_a), weights(model_b)
    return {layer: second[layer] - first[layer] for layer in sorted(first)}


def expected_rows(base: str, filtered: str, texts: dict[str, list[str]], seed: int = 42) -> dict[str, list[dict]]:
    """Each step's CSV rows computed the raw way: the step's formula applied to every token's activations."""
    raw = {(role, split): raw_activations(model, texts[split]) for role, model in (("model_a", base),
                                                                                 ("model_b", filtered))
           for split in texts}

    def per_text(values: torch.Tensor, lengths: list[int], reduce) -> np.ndarray:
        return torch.stack([reduce(chunk) for chunk in values.split(lengths)]).numpy()

    def last(role: str, split: str, layer: int) -> np.ndarray:
        return per_text(raw[role, split]["hidden"][layer], raw[role, split]["lengths"], lambda chunk: chunk[-1])

    def mean(role: str, split: str, layer: int) -> np.ndarray:
        return per_text(raw[role, split]["hidden"][layer], raw[role, split]["lengths"], lambda chunk: chunk.mean(0))

    layers = range(len(raw["model_a", "forget"]["hidden"]))
    rows: dict[str, list[dict]] = {"activation_comparison": [], "linear_probes": [], "activation_separation": [],
                                   "activation_covariance": [], "row_space_projection": []}
    for split in texts:
        for layer in layers:
            hidden_a, hidden_b = (raw[role, split]["hidden"][layer].double() for role in ("model_a", "model_b"))
            row = {"layer": layer, "split": split}
            for name, values in (("model_a_norm", hidden_a), ("model_b_norm", hidden_b),
                                 ("mean_dh", hidden_b - hidden_a)):
                row |= {f"{name}_L1": values.abs().sum(-1).mean().item(),
                        f"{name}_L2": values.norm(dim=-1).mean().item()}
            rows["activation_comparison"].append(row)
    for layer in layers:
        rows["linear_probes"].append({"layer": layer, **probes.probe_layer(last("model_a", "forget", layer),
                                                                           last("model_a", "retain", layer),
                                                                           1.0, 1000, 0.2, seed)})
        row = {"layer": layer}
        for role in ("model_a", "model_b"):
            row |= {f"{role}_{metric}": value for metric, value in
                    separation.separation(mean(role, "forget", layer), mean(role, "retain", layer), seed).items()}
        rows["activation_separation"].append(row)
    for layer in layers:
        for split in texts:
            eigenvalues = {role: covariance.covariance_eigenvalues(covariance.sample_covariance(
                raw[role, split]["hidden"][layer])) for role in ("model_a", "model_b")}
            rows["activation_covariance"].append({
                "layer": layer, "split": split,
                **{f"{role}_effective_rank": covariance.effective_rank(values) for role, values in eigenvalues.items()},
                **{f"{role}_spectral_entropy": covariance.spectral_entropy(values)
                   for role, values in eigenvalues.items()},
                "wasserstein_distance": covariance.spectrum_distance(eigenvalues["model_a"], eigenvalues["model_b"])})
    for layer, delta in raw_mlp_weight_deltas(base, filtered).items():
        basis, singular_values, rank = row_space.row_space_basis(delta, 16)
        energy = singular_values.pow(2)
        row = {"layer": layer, "top_k": basis.shape[1], "dW_rank": rank, "dW_fro": delta.norm().item(),
               "dW_energy_top_k": (energy[: basis.shape[1]].sum() / energy.sum()).item(),
               "random_baseline": basis.shape[1] / delta.shape[1]}
        for role in ("model_a", "model_b"):
            forget, retain = (row_space.projection_fraction(raw[role, split]["mlp"][layer], basis) for split in texts)
            row |= {f"{role}_forget_projection": forget, f"{role}_retain_projection": retain,
                    f"{role}_selectivity": forget / retain}
        rows["row_space_projection"].append(row)
    return rows


def assert_rows_close(found: list[dict[str, str]], expected: list[dict], what: str) -> None:
    """Same rows, every number within relative tolerance 1e-4 (absolute 1e-9 around zero)."""
    assert len(found) == len(expected), what
    for found_row, expected_row in zip(found, expected, strict=True):
        for column, value in expected_row.items():
            if isinstance(value, str):
                assert found_row[column] == value, (what, column)
            else:
                assert float(found_row[column]) == pytest.approx(float(value), rel=1e-4, abs=1e-9), \
                    (what, found_row["layer"], column)


@pytest.mark.slow
def test_every_activation_step_equals_the_raw_hidden_state_route(toy_organism: ToyOrganism, tmp_path: Path):
    base, filtered = f"models/{toy_organism.base.name}", f"models/{toy_organism.filtered.name}"
    workspace = toy_organism.workspace
    common = ("--preset", "toy", "--max-samples", EQUALITY_SAMPLES, "--device", "cpu",
              "--output-root", tmp_path / "outputs")
    run_main("linear_probe_analysis", "--model", base, *common, cwd=workspace)
    run_main("layerwise_wmdp_accuracy", "--model", base, *common, cwd=workspace)
    for script in ("collect_activation_comparison", "activation_separation_analysis",
                   "activation_covariance_analysis", "row_space_projection_analysis"):
        run_main(script, "--model-a", base, "--model-b", filtered, *common, cwd=workspace)
    texts = {split: read_texts(toy_organism.data / f"{split}.txt", EQUALITY_SAMPLES) for split in ("forget", "retain")}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workspace)
        expected = expected_rows(base, filtered, texts)
    outputs = tmp_path / "outputs"
    comparison = outputs / f"{toy_organism.base.name}__to__{toy_organism.filtered.name}"
    files = {"activation_comparison": comparison / "activation_comparison" / "activation_comparison.csv",
             "linear_probes": outputs / toy_organism.base.name / "linear_probes" / "probe_results.csv",
             "activation_separation": comparison / "activation_separation" / "separation_results.csv",
             "activation_covariance": comparison / "activation_covariance" / "covariance_results.csv",
             "row_space_projection": comparison / "row_space_projection" / "projection_results.csv"}
    for step, path in files.items():
        assert_rows_close(read_rows(path), expected[step], step)
    # Step 6's logit lens: its held-out KL on every token of the held-out retain texts (streamed by Step 6).
    from brittle.lens import Lens, Unembedding, heldout_kl
    from brittle.models import load_model

    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workspace)
        model = load_model(base, device="cpu", dtype="fp32")
        retain = raw_activations(base, texts["retain"][-2:])  # 10% of 24 texts: the last 2 are held out
    lens = Lens(Unembedding(model, "cpu"), len(retain["mlp"]), model.config.hidden_size, tuned=False)
    logit_rows = read_rows(outputs / toy_organism.base.name / "wmdp_logit_lens" / "wmdp_lens_results.csv")
    for row in logit_rows:
        layer = int(row["layer"])
        reference = heldout_kl(lens, retain["hidden"][layer], retain["hidden"][-1], layer)
        assert float(row["heldout_kl"]) == pytest.approx(reference, rel=1e-4, abs=1e-9), layer


@pytest.mark.slow
def test_the_stacked_tuned_lens_trains_each_layer_as_the_per_layer_recipe_does(toy_organism: ToyOrganism):
    """All layers at once (Step 6) = each layer alone with the tuned-lens recipe (an nn.Linear translator, its
    own SGD-Nesterov and linear decay, its gradient clipped at norm 1) on the same batches: no layer leaks
    into another, and the clipping is per translator."""
    from brittle.lens import Lens, TunedLensTraining, Unembedding, kl_to_final, train_tuned_lens
    from brittle.models import load_model

    model = load_model(str(toy_organism.base), device="cpu", dtype="fp32")
    hidden = torch.stack(raw_activations(str(toy_organism.base),
                                         read_texts(toy_organism.data / "retain.txt", 8))["hidden"])
    unembedding = Unembedding(model, "cpu")
    num_layers, width = hidden.shape[0] - 1, hidden.shape[-1]
    recipe = TunedLensTraining(steps=6, batch_tokens=32)
    generator = torch.Generator().manual_seed(recipe.seed)
    batches = [torch.randint(hidden.shape[1], (recipe.batch_tokens,), generator=generator)
               for _ in range(recipe.steps)]
    stacked = Lens(unembedding, num_layers, width, tuned=True)
    train_tuned_lens(stacked, (hidden[:, batch] for batch in batches), recipe)
    clipped = []
    for layer in range(num_layers):
        translator = nn.Linear(width, width)
        nn.init.zeros_(translator.weight)
        nn.init.zeros_(translator.bias)
        optimizer = torch.optim.SGD(translator.parameters(), lr=recipe.lr_scale * (1 - recipe.momentum),
                                    momentum=recipe.momentum, nesterov=True, weight_decay=recipe.weight_decay)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / recipe.steps)
        for batch in batches:
            with torch.no_grad():
                target = torch.log_softmax(unembedding(hidden[num_layers, batch], normed=True), dim=-1)
            states = hidden[layer, batch]
            optimizer.zero_grad()
            kl_to_final(unembedding(states + translator(states)), target).backward()
            clipped.append(nn.utils.clip_grad_norm_(translator.parameters(), 1.0).item() > 1)
            optimizer.step()
            schedule.step()
        torch.testing.assert_close(stacked.weight[layer], translator.weight.detach(), rtol=1e-3, atol=1e-6)
        torch.testing.assert_close(stacked.bias[layer], translator.bias.detach(), rtol=1e-3, atol=1e-6)
        assert stacked.weight[layer].abs().max() > 1e-3, layer  # it trained
    assert any(clipped) and not all(clipped)  # both branches of the clipping were exercised


@pytest.mark.slow
def test_the_tuned_lens_streams_every_training_token_once_per_epoch(toy_organism: ToyOrganism):
    """Step 6's training batches are the model's own hidden states of the training texts, computed while
    the lens trains: each epoch holds every token of the training texts exactly once (none of the
    held-out ones), in a fresh order, and no forward pass holds more than one batch of tokens."""
    from brittle.lens import HiddenStates
    from brittle.models import load_model_and_tokenizer

    texts = read_texts(toy_organism.data / "retain.txt", 10)
    model, tokenizer = load_model_and_tokenizer(str(toy_organism.base), device="cpu")
    split = tokenize_texts(tokenizer, texts, 512, "retain", "retain.txt")
    batch_tokens = 16
    states = HiddenStates(model, split, range(8), batch_tokens, tokenizer.pad_token_id, "cpu")  # 8, 9 held out
    raw = torch.stack(raw_activations(str(toy_organism.base), texts)["hidden"])
    training = raw[:, : sum(len(sequence) for sequence in split.sequences[:8])]
    assert states.tokens == training.shape[1] > 2 * batch_tokens
    batches = states.training_batches(seed=0)
    streamed = torch.zeros(raw.shape[0], 0, raw.shape[2])
    while streamed.shape[1] < 2 * states.tokens:
        batch = next(batches)
        assert batch.shape == (raw.shape[0], batch_tokens, raw.shape[2]) and batch.dtype == torch.float32
        streamed = torch.cat([streamed, batch], dim=1)
    epochs = [streamed[:, : states.tokens], streamed[:, states.tokens: 2 * states.tokens]]
    # A token's fingerprint: every layer's state projected on one random direction.
    direction = torch.randn(raw.shape[0] * raw.shape[2], generator=torch.Generator().manual_seed(0))

    def fingerprints(hidden: torch.Tensor) -> torch.Tensor:
        return hidden.permute(1, 0, 2).reshape(hidden.shape[1], -1) @ direction

    for epoch in epochs:
        torch.testing.assert_close(fingerprints(epoch).sort().values, fingerprints(training).sort().values,
                                   rtol=1e-4, atol=1e-3)
    assert not torch.equal(fingerprints(epochs[0]), fingerprints(epochs[1]))  # each epoch in a fresh order
    assert all(sum(len(split.sequences[index]) for index in texts) <= batch_tokens
               for texts in states.forward_passes(range(8)) if len(texts) > 1)
    assert states.tokens_run >= 2 * states.tokens and states.texts_run >= 16


# ---- the store: reuse, invalidation, integrity, a killed pass (in-process, on the organism) ---------------------

@pytest.mark.slow
def test_the_store_is_reused_and_invalidated_by_text_count_length_model_and_damage(toy_organism: ToyOrganism,
                                                                                   tmp_path: Path,
                                                                                   capsys: pytest.CaptureFixture):
    texts = read_texts(toy_organism.data / "forget.txt", 12)
    text_file = tmp_path / "forget.txt"
    text_file.write_text("\n".join(texts) + "\n")
    model = tmp_path / "model"
    model.mkdir()
    for file in toy_organism.base.iterdir():  # a copy of base we may "retrain"
        (model / file.name).write_bytes(file.read_bytes())
    settings = ActivationSettings(tmp_path / "store", device="cpu")

    def statistics(store: ActivationStore, count: int = 12, file: Path = text_file):
        return store.texts(str(model), "forget", file, read_texts(file, count))

    with ActivationStore(settings) as store:
        first = statistics(store)
        first_last = first.last_token(3).clone()
        again = statistics(store)
        assert store.counts() == {"forward_passes": 1, "statistics_reads": 1}
        layers = json.loads((model / "config.json").read_text())["num_hidden_layers"]
        assert first.num_hidden_states == layers + 1 and first.num_sequences == 12
        assert torch.equal(first_last, again.last_token(3))
        statistics(store, count=8)  # fewer texts: another pass
        assert store.counts()["forward_passes"] == 2
    text_file.write_text("\n".join(reversed(texts)) + "\n")  # same file, other texts
    with ActivationStore(settings) as store:
        statistics(store)
        assert store.counts() == {"forward_passes": 1, "statistics_reads": 0}
    with ActivationStore(ActivationSettings(tmp_path / "store", device="cpu", max_length=6)) as store:
        assert statistics(store).lengths.max() <= 6 and store.counts()["forward_passes"] == 1
    (model / "model.safetensors").write_bytes((toy_organism.filtered / "model.safetensors").read_bytes())
    with ActivationStore(settings) as store:
        changed = statistics(store)
        assert store.counts() == {"forward_passes": 1, "statistics_reads": 0}  # new weights: recomputed
        assert not torch.equal(changed.last_token(3), first_last)
        changed_last = changed.last_token(3).clone()
    # A damaged file (same size, other bytes) is caught by its checksum, named in one line, and recomputed.
    damaged = changed.folder / "vectors.safetensors"
    data = bytearray(damaged.read_bytes())
    data[-8:] = bytes(8)
    damaged.write_bytes(bytes(data))
    capsys.readouterr()
    with ActivationStore(settings) as store:
        repaired = statistics(store)
        assert store.counts() == {"forward_passes": 1, "statistics_reads": 0}
        assert torch.equal(repaired.last_token(3), changed_last)
    assert "vectors.safetensors fails its checksum): recomputing" in capsys.readouterr().out
    (repaired.folder / "moments.safetensors").write_bytes(b"")  # truncated
    with ActivationStore(settings) as store:
        statistics(store)
        assert store.counts() == {"forward_passes": 1, "statistics_reads": 0}
    assert "moments.safetensors is missing or has the wrong size" in capsys.readouterr().out


KILLED_PASS = """
import sys, time
from pathlib import Path
import brittle.activations as activations
from brittle.texts import read_texts

signal = Path(sys.argv[3])
original = activations.TextStatistics.update
def update(self, batch):
    original(self, batch)
    signal.touch()  # the pass is under way, its staging folder exists: now wait to be killed
    time.sleep(600)
activations.TextStatistics.update = update
settings = activations.ActivationSettings(Path(sys.argv[2]), device="cpu", batch_size=4)
with activations.ActivationStore(settings) as store:
    store.texts(sys.argv[1], "retain", sys.argv[4], read_texts(sys.argv[4], 12))
"""


@pytest.mark.slow
def test_a_pass_killed_with_sigkill_is_never_reused_and_its_staging_folder_is_removed(
        toy_organism: ToyOrganism, tmp_path: Path, capsys: pytest.CaptureFixture):
    import signal as signals
    import time

    store_dir, signal = tmp_path / "store", tmp_path / "started"
    text_file = toy_organism.data / "retain.txt"
    child = subprocess.Popen([sys.executable, "-c", KILLED_PASS, str(toy_organism.base), str(store_dir), str(signal),
                              str(text_file)], cwd=REPO_ROOT)
    deadline = time.monotonic() + 300
    while not signal.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert signal.exists(), "the child never started its pass"
    child.send_signal(signals.SIGKILL)
    child.wait()
    staging = list(store_dir.glob("*/.*.partial-*"))
    assert len(staging) == 1 and not [path for path in store_dir.glob("*/*") if not path.name.startswith(".")]
    texts = read_texts(text_file, 12)
    with ActivationStore(ActivationSettings(store_dir, device="cpu", batch_size=4)) as store:
        rerun = store.texts(str(toy_organism.base), "retain", text_file, texts)
        assert store.counts() == {"forward_passes": 1, "statistics_reads": 0}
    assert f"removed {staging[0]}: the staging folder of a killed run (process {child.pid})" in capsys.readouterr().out
    assert not staging[0].exists()
    with ActivationStore(ActivationSettings(tmp_path / "uninterrupted", device="cpu", batch_size=4)) as store:
        uninterrupted = store.texts(str(toy_organism.base), "retain", text_file, texts)
    for name in ("last_token", "mean_pooled", "token_sum", "gram_upper"):
        assert torch.equal(rerun.tensor(name), uninterrupted.tensor(name)), name


@pytest.mark.slow
def test_a_model_without_hidden_state_output_is_one_clear_error(toy_organism: ToyOrganism, tmp_path: Path):
    from brittle.models import load_model_and_tokenizer

    real, tokenizer = load_model_and_tokenizer(str(toy_organism.base), device="cpu")

    class NoHiddenStates(nn.Module):
        """A causal LM whose forward pass ignores output_hidden_states."""

        def __init__(self) -> None:
            super().__init__()
            self.gpt_neox = real.gpt_neox

        def get_input_embeddings(self) -> nn.Module:
            return real.get_input_embeddings()

        def forward(self, **inputs) -> SimpleNamespace:
            inputs.pop("output_hidden_states")
            return SimpleNamespace(logits=real(**inputs).logits)

    split = tokenize_texts(tokenizer, ["Galdyrix spreads through bog shrews."], 32, "forget", "forget.txt")
    with pytest.raises(UserError, match="returned none hidden states"):
        next(stream_activations(NoHiddenStates(), split, batch_size=4, pad_token_id=0, what="stub"))


# ---- the scripts end to end on the organism ----------------------------------------------------------------

def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def run_main(script: str, *args: str, cwd: Path) -> None:
    """Run an experiment script's `main()` in this process (no interpreter start-up), from `cwd`."""
    module = load_step(script)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        patch.setattr(sys, "argv", [script, *map(str, args)])
        module.main()


@pytest.fixture(scope="module")
def activation_outputs(toy_organism: ToyOrganism) -> Path:
    """The activation section for Base -> Filtered on 40 texts per split, sharing one statistics store and
    one forward-pass log: Steps 0, 5, 6 (short tuned-lens training), 8, 9 and 11 run in-process (each
    `uv run` costs an interpreter start-up), then the pipeline runs Steps 3 and 12. Steps 6, 8 and 9 read
    the statistics that Step 5 computed; Step 3 reads the paired statistics that Step 11 computed."""
    workspace = toy_organism.workspace
    root = workspace / "outputs"
    log = workspace / "forward_passes.tsv"
    log.unlink(missing_ok=True)
    shutil.rmtree(root / ".activation_statistics", ignore_errors=True)  # a kept workspace's store would be reused
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BRITTLE_FORWARD_PASS_LOG", str(log))
        for model in (f"models/{toy_organism.base.name}", f"models/{toy_organism.filtered.name}"):
            run_main("eval", "--model", model, "--preset", "toy", "--device", "cpu", cwd=workspace)  # skips if done
            run_main("linear_probe_analysis", "--model", model, "--preset", "toy", "--max-samples", SAMPLES,
                     "--device", "cpu", "--force", cwd=workspace)
            run_main("layerwise_wmdp_accuracy", "--model", model, "--preset", "toy", "--lens", "both",
                     "--max-samples", SAMPLES, "--tuned-lens-steps", "30", "--device", "cpu", "--force", cwd=workspace)
        pair = ("--model-a", f"models/{toy_organism.base.name}", "--model-b", f"models/{toy_organism.filtered.name}")
        for script in ("activation_separation_analysis", "activation_covariance_analysis",
                       "row_space_projection_analysis"):
            run_main(script, *pair, "--preset", "toy", "--max-samples", SAMPLES, "--device", "cpu", "--force",
                     cwd=workspace)
    steps = "activation_comparison lipschitzness"  # through the driver, as a user runs them
    # Filtered stands in for the unlearned model, so that COMP2 is COMP1 (computed once) and no model is unlearned.
    environment = {**os.environ, "PRESET": "toy", "WORKDIR": str(workspace), "MAX_SAMPLES": SAMPLES, "STEPS": steps,
                   "UNLEARNED": f"models/{toy_organism.filtered.name}"}
    result = subprocess.run([str(REPO_ROOT / "experiment" / "pipeline.sh"), "--force"], env=environment,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (workspace / "pipeline_stdout.txt").write_text(result.stdout)
    return root


@pytest.mark.slow
def test_step_3_writes_the_appendix_columns_for_both_splits_with_plots(activation_outputs: Path,
                                                                       toy_organism: ToyOrganism):
    comparison = activation_outputs / f"{toy_organism.base.name}__to__{toy_organism.filtered.name}"
    rows = read_rows(comparison / "activation_comparison" / "activation_comparison.csv")
    assert list(rows[0]) == ["layer", "split", "model_a_norm_L1", "model_a_norm_L2", "model_b_norm_L1",
                             "model_b_norm_L2", "mean_dh_L1", "mean_dh_L2"]
    assert [(row["layer"], row["split"]) for row in rows] == [(str(layer), split) for split in ("forget", "retain")
                                                               for layer in range(5)]
    embeddings = [row for row in rows if row["layer"] == "0"]
    assert all(float(row["mean_dh_L2"]) > 0 for row in rows)  # different models, different states
    assert all(float(row["model_a_norm_L1"]) > float(row["model_a_norm_L2"]) > 0 for row in embeddings)
    assert {"activation_norms_forget.png", "activation_norms_retain.png", "activation_diffs.png"} <= {
        path.name for path in (comparison / "activation_plots").iterdir()}


@pytest.mark.slow
def test_a_rerun_plans_again_only_what_other_settings_made(activation_outputs: Path, toy_organism: ToyOrganism):
    """The planner's skip check against the identities that the text steps above recorded: the same
    MAX_SAMPLES plans nothing; MAX_SAMPLES unset (each step's default, more texts) plans every one again
    rather than passing off the 40-text results as the full study's."""
    steps = ("linear_probes wmdp_tuned_lens activation_comparison activation_separation activation_covariance "
             "row_space_projection lipschitzness")
    environment = {**os.environ, "PRESET": "toy", "WORKDIR": str(toy_organism.workspace), "STEPS": steps,
                   "DRY_RUN": "1", "UNLEARNED": f"models/{toy_organism.filtered.name}"}

    def planned(**settings: str) -> str:
        result = subprocess.run([str(REPO_ROOT / "experiment" / "pipeline.sh")], env={**environment, **settings},
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result.stdout

    assert "==> Plan: 0 step(s) to run" in planned(MAX_SAMPLES=SAMPLES)
    again = planned()
    assert "==> Plan: 9 step(s) to run" in again and ", 0 finished (skipped)" in again  # 2 models x 2, 5 pairwise


@pytest.mark.slow
def test_each_model_and_split_is_computed_once_and_shared(activation_outputs: Path, toy_organism: ToyOrganism):
    stdout = (activation_outputs.parent / "pipeline_stdout.txt").read_text()
    # Step 5 on base and filtered computed both splits; Steps 8 and 9 only read those statistics. Step 11 ran
    # the paired pass (A and B in lockstep) on both splits, and Step 3, through the pipeline, read it.
    comparison = activation_outputs / f"{toy_organism.base.name}__to__{toy_organism.filtered.name}"
    expected = {"activation_separation": (0, 4), "activation_covariance": (0, 4), "row_space_projection": (2, 0),
                "activation_comparison": (0, 2)}
    for step, (passes, reads) in expected.items():
        summary = json.loads((comparison / step / "summary.json").read_text())
        assert (summary["forward_passes"], summary["statistics_reads"]) == (passes, reads), step
    assert "Activation forward passes: 0 over (model, split) texts, 44 perturbed (Step 12)" in stdout
    # Step 6 ran the questions through the same store: one (model, forget_questions) entry per model.
    ledger = [line.split("\t") for line in (activation_outputs.parent / "forward_passes.tsv").read_text().splitlines()]
    assert sorted(entry[2] for entry in ledger if entry[3] == "forget_questions") == sorted(
        f"models/{model.name}" for model in (toy_organism.base, toy_organism.filtered))
    # Step 12 perturbs its inputs: 1 clean + 10 perturbed passes per model and split.
    lipschitz = json.loads((comparison / "lipschitzness" / "summary.json").read_text())
    assert lipschitz["forward_passes"] == 2 * 2 * 11
    rows = read_rows(comparison / "lipschitzness" / "lipschitz_results.csv")
    assert {(row["model"], row["split"]) for row in rows} == {(model, split) for model in ("model_a", "model_b")
                                                              for split in ("forget", "retain")}
    assert all(float(row["lipschitz_mean"]) > 0 and float(row["gradient_norm_mean"]) > 0 for row in rows)


@pytest.mark.slow
def test_base_lens_reproduces_step_0_and_filtered_stays_near_chance(activation_outputs: Path,
                                                                    toy_organism: ToyOrganism):
    base = json.loads((activation_outputs / toy_organism.base.name / "wmdp_logit_lens" / "summary.json").read_text())
    assert base["step0_accuracy"] is not None
    assert abs(base["final_layer_accuracy"] - base["step0_accuracy"]) <= 0.02
    assert base["best_accuracy"] >= 0.8
    for lens in ("logit", "tuned"):
        folder = activation_outputs / toy_organism.filtered.name / f"wmdp_{lens}_lens"
        rows = read_rows(folder / "wmdp_lens_results.csv")
        assert len(rows) == 5 and (folder / "layerwise_accuracy.png").exists()
        assert all(float(row["accuracy"]) <= 0.40 for row in rows), (lens, [row["accuracy"] for row in rows])
    tuned = read_rows(activation_outputs / toy_organism.base.name / "wmdp_tuned_lens" / "wmdp_lens_results.csv")
    logit = read_rows(activation_outputs / toy_organism.base.name / "wmdp_logit_lens" / "wmdp_lens_results.csv")
    # The tuned lens is trained to match the final layer: closer to it than the logit lens below the top.
    assert float(tuned[1]["heldout_kl"]) < float(logit[1]["heldout_kl"])
    assert float(tuned[-1]["heldout_kl"]) == float(logit[-1]["heldout_kl"]) == 0.0


@pytest.mark.slow
def test_probes_find_the_forget_domain_in_base(activation_outputs: Path, toy_organism: ToyOrganism):
    rows = read_rows(activation_outputs / toy_organism.base.name / "linear_probes" / "probe_results.csv")
    assert len(rows) == 5 and max(float(row["auc"]) for row in rows) >= 0.9
    assert all(float(row["selectivity"]) == pytest.approx(float(row["accuracy"]) - float(row["majority_baseline"]))
               for row in rows)
    covariance_rows = read_rows(activation_outputs / f"{toy_organism.base.name}__to__{toy_organism.filtered.name}"
                                / "activation_covariance" / "covariance_results.csv")
    assert len(covariance_rows) == 10 and all(float(row["wasserstein_distance"]) > 0 for row in covariance_rows)


# ---- bad input ---------------------------------------------------------------------------------------------

def assert_one_line_error(capsys: pytest.CaptureFixture, script: str, *args: str, cwd: Path,
                          phrases: tuple[str, ...]) -> None:
    """`main()` of `script` ends through `run_cli` in one `error:` line naming `phrases`, exit code 2."""
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: run_main(script, *args, cwd=cwd))
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error[-1].startswith("error:") and all(phrase in error[-1] for phrase in phrases), error


@pytest.mark.slow
def test_bad_inputs_end_in_one_line(toy_organism: ToyOrganism, tmp_path: Path, capsys: pytest.CaptureFixture):
    base, filtered = str(toy_organism.base), str(toy_organism.filtered)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    common = ("--preset", "toy", "--output-root", str(tmp_path / "outputs"), "--device", "cpu")
    # Once as a user runs it: `uv run`, a missing text file, one line and exit code 2.
    assert_user_error(run_script("experiment/collect_activation_comparison.py", "--model-a", base, "--model-b",
                                 filtered, *common, "--forget-text", str(tmp_path / "missing.txt"),
                                 cwd=toy_organism.workspace, check=False), "missing.txt", "does not exist")
    workspace = toy_organism.workspace
    assert_one_line_error(capsys, "linear_probe_analysis", "--model", base, *common, "--retain-text", str(empty),
                          cwd=workspace, phrases=("empty.txt", "is empty"))
    assert_one_line_error(capsys, "activation_covariance_analysis", "--model-a", base, "--model-b", filtered,
                          *common, "--max-samples", "0", cwd=workspace, phrases=("--max-samples must be at least 1",))
    # An architecture whose hidden states the hooks cannot read (OPT) is refused in one line, nothing written.
    from transformers import OPTConfig, OPTForCausalLM

    unsupported = tmp_path / "tiny-opt"
    OPTForCausalLM(OPTConfig(vocab_size=953, hidden_size=16, num_hidden_layers=2, ffn_dim=32, num_attention_heads=2,
                             word_embed_proj_dim=16, max_position_embeddings=64)).save_pretrained(unsupported)
    for file in toy_organism.base.glob("tokenizer*"):
        (unsupported / file.name).write_bytes(file.read_bytes())
    assert_one_line_error(capsys, "activation_separation_analysis", "--model-a", str(unsupported), "--model-b",
                          str(unsupported), *common, "--max-samples", "4", cwd=workspace,
                          phrases=("OPTForCausalLM", "supported"))
    assert not (tmp_path / "outputs" / "tiny-opt__to__tiny-opt").exists()
