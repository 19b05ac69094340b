"""Influence-weighted unlearning (RapidIn -> RapidUn), fast: the sketch, the mapping, weighted losses, inputs.

The end-to-end run of `./unlearn/run_unlearn.sh rapidun` is in test_unlearning_runs.py (slow).
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "unlearn"))
import influence_weights
from test_unlearning_methods import (
    FORGET,
    RETAIN,
    make_batch,
    make_context,
    nll,
    retain_cache,
    tiny_model,
)

import unlearn
from brittle import methods, sample_weights, trainer
from brittle.cli import UserError
from brittle.presets import get_preset
from brittle.training import collate

# ---- the compression: a seeded sparse Johnson-Lindenstrauss projection --------------------------------------


def test_countsketch_keeps_dot_products_of_random_vectors_within_tolerance():
    generator = torch.Generator().manual_seed(0)
    sketch = influence_weights.CountSketch(2048, seed=1)
    worst = 0.0
    for _ in range(40):
        # Two parameter tensors per vector, as for a model's gradient; pairs with and without correlation.
        x = {"a": torch.randn(100, 80, generator=generator), "b": torch.randn(4000, generator=generator)}
        y = {name: 0.6 * value + torch.randn(value.shape, generator=generator) for name, value in x.items()}
        flat_x, flat_y = (torch.cat([t.flatten() for t in v.values()]) for v in (x, y))
        exact = flat_x @ flat_y
        estimate = sketch.project(x) @ sketch.project(y)
        worst = max(worst, abs(estimate - exact).item() / (flat_x.norm() * flat_y.norm()).item())
        assert abs(sketch.project(x).norm() / flat_x.norm() - 1) < 0.15
    # Standard deviation of the error is at most sqrt(2 / 2048) = 0.031 (in units of |x||y|).
    assert worst < 0.15


def test_countsketch_is_seeded_linear_and_batches_like_single_vectors():
    x = {"w": torch.randn(3, 7, 5)}  # a batch of three 7x5 gradients
    first, again = influence_weights.CountSketch(64, seed=3), influence_weights.CountSketch(64, seed=3)
    batched = first.project(x, batch_dims=1)
    singles = torch.stack([again.project({"w": x["w"][row]}) for row in range(3)])
    assert torch.allclose(batched, singles, atol=1e-6)
    assert torch.allclose(first.project({"w": 2 * x["w"][0]}), 2 * batched[0], atol=1e-6)
    other = influence_weights.CountSketch(64, seed=4).project({"w": x["w"][0]})
    assert not torch.allclose(other, batched[0])


# ---- influence -> weights ---------------------------------------------------------------------------------------


def text_gradients(model, texts, sketch):
    parameters = influence_weights.select_parameters(model, "all")
    return influence_weights.compressed_gradients(model, parameters, texts, sketch, torch.device("cpu"), "test")


def test_a_forget_text_duplicated_among_retain_texts_is_ascended_less_and_its_copy_held_more():
    model = tiny_model()
    rng = random.Random(0)
    forget = [[rng.randrange(1, 32) for _ in range(rng.randrange(4, 9))] for _ in range(12)]
    retain = [[rng.randrange(1, 32) for _ in range(rng.randrange(4, 9))] for _ in range(12)]
    sketch = influence_weights.CountSketch(512, seed=0)
    forget_gradients, retain_gradients = text_gradients(model, forget, sketch), text_gradients(model, retain, sketch)
    mapping = influence_weights.Mapping(map_topk=1)
    without = influence_weights.influence_weights(forget_gradients, retain_gradients, mapping)
    duplicated = 5
    with_copy = influence_weights.influence_weights(
        forget_gradients, torch.cat([retain_gradients, forget_gradients[duplicated: duplicated + 1]]), mapping)
    # The copy's gradient is the forget text's own: cosine 1, the largest forget->retain influence there is.
    assert with_copy["fr"][duplicated] == pytest.approx(1.0, abs=1e-5)
    assert with_copy["fr"][duplicated] == with_copy["fr"].max()
    # Ascending that text would undo the retain copy: its forget weight goes down ...
    assert with_copy["forget_weight"][duplicated] < without["forget_weight"][duplicated]
    assert with_copy["z_forget"][duplicated] == with_copy["z_forget"].min()
    # ... and the retain copy, the text the ascent endangers most, is held hardest.
    assert with_copy["rf"][-1] == with_copy["rf"].max()
    assert with_copy["retain_weight"][-1] == with_copy["retain_weight"].max()


def test_weights_respect_the_clip_bounds_and_average_one_inside_them():
    z = torch.linspace(-4, 4, 101)
    weights = influence_weights.scores_to_weights(z, temperature=0.7, lowest=0.2, highest=3.0)
    assert weights.min() == pytest.approx(0.2) and weights.max() == pytest.approx(3.0)
    assert torch.all(weights[1:] >= weights[:-1])  # monotone in the score
    gentle = influence_weights.scores_to_weights(z / 100, temperature=1.0, lowest=0.0, highest=10.0)
    assert gentle.mean() == pytest.approx(1.0)
    scores = influence_weights.influence_weights(torch.randn(30, 16), torch.randn(40, 16),
                                                 influence_weights.Mapping(wmin_f=0.5, wmax_f=1.5, wmin_r=0.3,
                                                                           wmax_r=2.0, map_topk=5))
    assert scores["forget_weight"].min() >= 0.5 and scores["forget_weight"].max() <= 1.5
    assert scores["retain_weight"].min() >= 0.3 and scores["retain_weight"].max() <= 2.0


def test_top_k_mean_leaves_out_each_texts_own_similarity():
    matrix = torch.tensor([[9.0, 1.0, 2.0], [1.0, 9.0, 3.0], [2.0, 3.0, 9.0]])
    assert influence_weights.top_k_mean(matrix, 1, exclude_diagonal=True).tolist() == [2.0, 3.0, 3.0]
    assert influence_weights.top_k_mean(matrix, 5, exclude_diagonal=True).tolist() == [1.5, 2.0, 2.5]
    assert influence_weights.top_k_mean(matrix, 2).tolist() == [5.5, 6.0, 6.0]


# ---- weighted losses -----------------------------------------------------------------------------------------------


def weighted_batch(forget_weights, retain_weights, **cached):
    batch = make_batch(**cached)
    batch.forget.weights = None if forget_weights is None else torch.tensor(forget_weights)
    batch.retain.weights = None if retain_weights is None else torch.tensor(retain_weights)
    return batch


@pytest.mark.parametrize("method", list(methods.LOSSES))
def test_weights_of_one_reproduce_the_unweighted_loss_exactly(method):
    model = tiny_model()
    context = make_context(model, lat_eps=0.1)
    context.pretrained = {name: parameter.detach() + 0.01 for name, parameter in model.named_parameters()}
    cached = {"forget_reference_log_prob": torch.tensor([-3.0, -2.0]),
              "retain_reference_log_prob": torch.tensor([-4.0, -1.0]), "retain_original_hidden": retain_cache(model)}
    unweighted = methods.LOSSES[method](context, weighted_batch(None, None, **cached))
    weighted = methods.LOSSES[method](context, weighted_batch([1.0, 1.0], [1.0, 1.0], **cached))
    assert torch.equal(weighted.total, unweighted.total), (weighted.total, unweighted.total)


def test_weighted_rapidun_and_grad_diff_match_their_formulas():
    model = tiny_model()
    context = make_context(model)
    batch = weighted_batch([2.0, 0.0], [0.5, 3.0])
    tokens = lambda texts: sum(len(text) - 1 for text in texts)  # noqa: E731 - predicted tokens per set
    forget_weighted = 2.0 * nll(model, FORGET[:1]) * (len(FORGET[0]) - 1) / tokens(FORGET)
    retain_weighted = (0.5 * nll(model, RETAIN[:1]) * (len(RETAIN[0]) - 1)
                       + 3.0 * nll(model, RETAIN[1:]) * (len(RETAIN[1]) - 1)) / tokens(RETAIN)
    rapidun = methods.LOSSES["rapidun"](context, batch)
    assert torch.allclose(rapidun.total, -1.5 * forget_weighted + 0.5 * retain_weighted, atol=1e-5)
    grad_diff = methods.LOSSES["grad_diff"](context, batch)
    assert torch.allclose(grad_diff.total, retain_weighted - 0.5 * forget_weighted, atol=1e-5)


def test_zero_weight_removes_a_texts_gradient():
    model = tiny_model().train()
    context = make_context(model)
    methods.LOSSES["ga_simple"](context, weighted_batch([0.0, 0.0], None)).total.backward()
    assert all(parameter.grad is None or parameter.grad.abs().max() == 0 for parameter in model.parameters())


# ---- sampling, data and settings ---------------------------------------------------------------------------------


def test_mix_ratio_sets_the_retain_batch_and_weights_travel_with_their_texts():
    assert unlearn.parse_mix_ratio("3:1") == (3, 1)
    settings = unlearn.argparse.Namespace(batch_size=4, mix_ratio="3:1")
    assert trainer.retain_batch_size(settings) == 12
    settings.mix_ratio, settings.batch_size = "1:2", 1
    assert trainer.retain_batch_size(settings) == 1
    sequences = [[index] for index in range(10)]
    train, heldout, weights = trainer.split_with_weights(sequences, [index / 10 for index in range(10)], 0.2,
                                                         random.Random(0))
    assert len(heldout) == 2 and [weight * 10 for weight in weights] == pytest.approx([s[0] for s in train])
    data = trainer.TrainingData(FORGET, RETAIN, [], [], [0.5, 2.0], None)
    batch = trainer.assemble_batch(data, trainer.Caches(), [1, 0], [0, 1], 0, torch.device("cpu"))
    assert batch.forget.weights.tolist() == [2.0, 0.5] and batch.retain.weights is None
    assert torch.equal(batch.forget.input_ids, collate([FORGET[1], FORGET[0]], 0).input_ids)


@pytest.mark.parametrize("text", ["0:1", "3:0", "3", "a:b", "1:-2"])
def test_impossible_mix_ratios_are_one_line_errors(text):
    with pytest.raises(UserError, match="--mix-ratio must be R:F"):
        unlearn.resolve_settings(unlearn.parse_arguments(["--method", "ga", "--mix-ratio", text]), get_preset("real"))


@pytest.fixture
def data_files(tmp_path: Path) -> tuple[Path, Path]:
    forget, retain = tmp_path / "forget.txt", tmp_path / "retain.txt"
    forget.write_text("a fact\nanother fact\n\nthird fact\n")  # the blank line is not a text
    retain.write_text("kept one\nkept two\n")
    return forget, retain


def write_weights(path: Path, weights) -> Path:
    path.write_text("".join(json.dumps({"index": i, "weight": w}) + "\n" for i, w in enumerate(weights)))
    return path


@pytest.mark.parametrize(("weights", "phrase"), [
    ([1.0, 1.0], "hold 2 weight(s) but forget data"),
    ([1.0, 1.0, 1.0, 1.0], "hold 4 weight(s) but forget data"),
    ([1.0, -0.5, 1.0], "weight -0.5 is negative"),
    ([1.0, float("nan"), 1.0], "is not finite"),
])
def test_bad_weight_files_are_one_line_errors(data_files, tmp_path, weights, phrase):
    forget, retain = data_files
    path = write_weights(tmp_path / "forget_weights.jsonl", weights)
    args = unlearn.parse_arguments(["--method", "grad_diff", "--forget-data", str(forget), "--retain-data", str(retain),
                                    "--forget-weights", str(path)])
    with pytest.raises(UserError, match=phrase.replace("(", r"\(").replace(")", r"\)")):
        unlearn.resolve_settings(args, get_preset("real"))


def test_rapidun_needs_lora_and_finds_its_weights_beside_the_data(data_files, tmp_path):
    forget, retain = data_files
    base = ["--method", "rapidun", "--forget-data", str(forget), "--retain-data", str(retain)]
    with pytest.raises(UserError, match=r"forget weights .* do not exist; compute them"):
        unlearn.resolve_settings(unlearn.parse_arguments(base), get_preset("real"))
    folder = sample_weights.default_weights_dir("EleutherAI/deep-ignorance-unfiltered", forget)
    assert folder == tmp_path / "influence_weights" / "EleutherAI_deep-ignorance-unfiltered"
    folder.mkdir(parents=True)
    write_weights(folder / "forget_weights.jsonl", [0.5, 2.0, 1.0])
    write_weights(folder / "retain_weights.jsonl", [1.0, 3.0])
    args, defaults = unlearn.resolve_settings(unlearn.parse_arguments(base), get_preset("real"))
    name = unlearn.run_name(args.model, args.method, args, defaults)
    fingerprint = sample_weights.weights_fingerprint(folder / "forget_weights.jsonl", folder / "retain_weights.jsonl")
    # RapidUn's published defaults: 2 epochs, lr 6e-5, batch 1, ascent 1.0, descent 0.5, 3:1, LoRA rank 16.
    assert name == ("EleutherAI_deep-ignorance-unfiltered__rapidun__ep2_lr6e-05_bs1_aa1.0_db0.5_mr3-1_lora16_"
                    f"d{unlearn.data_fingerprint(forget, retain)}_w{fingerprint}")  # d: not the preset's data
    with pytest.raises(UserError, match="rapidun trains LoRA adapters"):
        unlearn.resolve_settings(unlearn.parse_arguments([*base, "--lora-rank", "0"]), get_preset("real"))
    other = unlearn.parse_arguments(["--method", "grad_diff", "--mix-ratio", "3:1"])
    other, other_defaults = unlearn.resolve_settings(other, get_preset("real"))
    assert unlearn.run_name(other.model, "grad_diff", other, other_defaults).endswith("_fw1.0_mr3-1")
