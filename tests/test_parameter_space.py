"""Parameter-space diagnostics (Steps 1, 4, 7, 10): the math against exact references, the steps on tiny
Llama-style, GPT-2-style and (sharded) GPT-NeoX model pairs with planted updates, and bad input.

The tiny pairs are built here from configs with random weights (`save_pretrained`), model B being model
A plus updates whose answers are known: a rank-1 update, an update confined to the query block of a fused
q/k/v weight, an update in the left null space of an MLP matrix. The steps run in-process through their
real command lines (`run_step`), which keeps these tests to seconds; the organism end to end, through
`pipeline.sh`, is in test_parameter_space_pipeline.py.
"""

from __future__ import annotations

import math
import runpy
import sys
from collections import defaultdict
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, GPTNeoXConfig, LlamaConfig

from brittle.architecture import split_fused_qkv
from brittle.matrix_metrics import (
    energy_rank,
    frobenius_norm,
    grassmann_distance,
    spectral_norm,
    split_by_column_space,
    split_by_row_space,
    stable_rank,
    subspace_alignment,
    top_k_energy_ratio,
)
from brittle.outputs import read_csv
from conftest import REPO_ROOT, last_line

PER_MATRIX_COLUMNS = ["name", "layer", "group", "shape0", "shape1", "dW_fro", "W_fro", "dW_fro_rel", "dW_spectral",
                      "W_spectral", "dW_spectral_rel", "dW_stable_rank", "W_stable_rank"]
PER_LAYER_COLUMNS = ["layer", "group", "dW_fro_layer", "W_fro_layer", "dW_fro_layer_rel", "max_dW_spectral",
                     "max_W_spectral", "max_dW_spectral_rel", "mean_dW_stable_rank", "count_mats"]
STEP_SCRIPTS = {
    "weight_comparison": "experiment/collect_weight_comparison.py",
    "mlp_attn_analysis": "experiment/analyze_mlp_vs_attn.py",
    "null_space_analysis": "experiment/null_space_analysis.py",
    "mlp_nullspace": "experiment/mlp_nullspace_alignment.py",
}


# ---- the math against exact references ----------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(64, 32), (200, 300), (512, 128)])
def test_power_iteration_spectral_norm_is_within_one_percent_of_the_exact_one(shape):
    generator = torch.Generator().manual_seed(sum(shape))
    matrices = {
        "gaussian": torch.randn(shape, generator=generator),  # top singular values close together: the hard case
        "low rank + noise": torch.randn(shape[0], 3, generator=generator)
        @ torch.randn(3, shape[1], generator=generator) + 0.01 * torch.randn(shape, generator=generator),
    }
    for kind, matrix in matrices.items():
        exact = float(torch.linalg.matrix_norm(matrix.double(), ord=2))
        estimate = spectral_norm(matrix)
        assert abs(estimate - exact) <= 0.01 * exact, f"{kind} {shape}: {estimate} vs {exact}"
        assert estimate == spectral_norm(matrix.clone()), "the seeded start must make it deterministic"


def test_spectral_norm_of_zero_and_of_a_scaled_identity():
    assert spectral_norm(torch.zeros(16, 8)) == 0.0
    assert spectral_norm(3.0 * torch.eye(10)) == pytest.approx(3.0, rel=1e-6)


def test_stable_rank_is_one_for_a_rank_one_update_and_n_for_an_orthogonal_matrix():
    generator = torch.Generator().manual_seed(0)
    rank_one = torch.outer(torch.randn(48, generator=generator), torch.randn(24, generator=generator))
    assert stable_rank(frobenius_norm(rank_one), spectral_norm(rank_one)) == pytest.approx(1.0, rel=1e-4)
    orthogonal = torch.linalg.qr(torch.randn(40, 40, generator=generator, dtype=torch.float64)).Q
    assert stable_rank(frobenius_norm(orthogonal), spectral_norm(orthogonal)) == pytest.approx(40, rel=1e-4)
    assert stable_rank(0.0, 0.0) == 0.0


def test_energy_rank_and_top_k_energy_ratio_on_known_spectra():
    singular_values = torch.tensor([3.0, 2.0, 1.0, 0.0])  # energies 9, 4, 1, 0 of 14
    assert energy_rank(singular_values, 0.99) == 3
    assert energy_rank(singular_values, 9 / 14) == 1  # exactly reaching the threshold is enough
    assert energy_rank(singular_values, 0.9) == 2
    assert energy_rank(torch.zeros(5)) == 0
    assert top_k_energy_ratio(singular_values, 1) == pytest.approx(9 / 14)
    assert top_k_energy_ratio(singular_values, 10) == pytest.approx(1.0)


def test_grassmann_distance_is_zero_for_one_subspace_and_maximal_for_orthogonal_ones():
    generator = torch.Generator().manual_seed(1)
    basis = torch.linalg.qr(torch.randn(30, 6, generator=generator, dtype=torch.float64)).Q
    rotated = basis @ torch.linalg.qr(torch.randn(6, 6, generator=generator, dtype=torch.float64)).Q  # same span
    assert grassmann_distance(basis, rotated) == pytest.approx(0.0, abs=1e-6)
    assert subspace_alignment(basis, rotated) == pytest.approx(1.0, abs=1e-9)
    identity = torch.eye(30, dtype=torch.float64)
    first, last = identity[:, :6], identity[:, 6:12]
    assert grassmann_distance(first, last) == pytest.approx(math.sqrt(6) * math.pi / 2)  # every angle 90°
    assert subspace_alignment(first, last) == pytest.approx(0.0)
    half_shared = torch.cat([identity[:, :3], identity[:, 20:23]], dim=1)  # 3 shared directions, 3 orthogonal
    assert grassmann_distance(first, half_shared) == pytest.approx(math.sqrt(3) * math.pi / 2)
    assert subspace_alignment(first, half_shared) == pytest.approx(0.5)


def test_column_space_and_null_space_components_sum_back_to_the_update():
    generator = torch.Generator().manual_seed(2)
    weight = torch.randn(64, 5, generator=generator, dtype=torch.float64) @ torch.randn(
        5, 32, generator=generator, dtype=torch.float64)  # rank 5: column space of dimension 5 in R^64
    delta = torch.randn(64, 32, generator=generator, dtype=torch.float64)
    for split in (split_by_column_space(weight, delta, 0.999999), split_by_row_space(weight, delta, 0.999999)):
        assert split.rank == 5
        torch.testing.assert_close(split.in_space + split.outside, delta)
        assert float((split.in_space * split.outside).sum()) == pytest.approx(0.0, abs=1e-8)  # orthogonal parts
    output_side = split_by_column_space(weight, delta, 0.999999)
    left = torch.linalg.svd(weight).U[:, :5]
    torch.testing.assert_close(left.T @ output_side.outside, torch.zeros(5, 32, dtype=torch.float64))
    inside_only = left @ torch.randn(5, 32, generator=generator, dtype=torch.float64)  # an update W already writes
    assert frobenius_norm(split_by_column_space(weight, inside_only, 0.999999).outside) == pytest.approx(0, abs=1e-9)


def test_fused_qkv_splits_follow_each_architecture_layout():
    heads, head_size, hidden = 2, 3, 4
    labels = torch.arange(3 * heads * head_size, dtype=torch.float32)[:, None].expand(-1, hidden)
    # GPT-NeoX: rows [head 0: q q q k k k v v v][head 1: q q q k k k v v v]
    neox = split_fused_qkv("gpt_neox.layers.0.attention.query_key_value.weight", labels, heads)
    assert neox["q"][:, 0].tolist() == [0, 1, 2, 9, 10, 11]
    assert neox["v"][:, 0].tolist() == [6, 7, 8, 15, 16, 17]
    # GPT-2 (already transposed to (out, in)): [all q][all k][all v]
    gpt2 = split_fused_qkv("transformer.h.0.attn.c_attn.weight", labels, heads)
    assert gpt2["k"][:, 0].tolist() == [6, 7, 8, 9, 10, 11]
    assert split_fused_qkv("model.layers.0.self_attn.q_proj.weight", labels, heads) == {}


# ---- tiny model pairs with planted updates ------------------------------------------------------------------

def run_step(step: str, *args: object, model_a: Path, model_b: Path, output_root: Path) -> int:
    """Run one step's script in-process through its command line; its exit code (0 on success)."""
    argv = [STEP_SCRIPTS[step], "--model-a", str(model_a), "--model-b", str(model_b), "--output-root",
            str(output_root), "--device", "cpu", *map(str, args)]
    saved = sys.argv
    sys.argv = argv
    try:
        runpy.run_path(str(REPO_ROOT / STEP_SCRIPTS[step]), run_name="__main__")
    except SystemExit as exit_:
        return int(exit_.code or 0)
    finally:
        sys.argv = saved
    return 0


def rank_one(rows: int, columns: int, seed: int, scale: float = 0.05) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return scale * torch.outer(torch.randn(rows, generator=generator), torch.randn(columns, generator=generator))


def outside_column_space(weight: torch.Tensor, seed: int, scale: float = 0.05) -> torch.Tensor:
    """A rank-1 update (out × in) whose column is orthogonal to every column of `weight` (out × in, out > in)."""
    generator = torch.Generator().manual_seed(seed)
    basis = torch.linalg.svd(weight.double(), full_matrices=False).U
    direction = torch.randn(weight.shape[0], generator=generator, dtype=torch.float64)
    direction -= basis @ (basis.T @ direction)
    direction /= direction.norm()
    row = torch.randn(weight.shape[1], generator=generator, dtype=torch.float64)
    return (scale * torch.outer(direction, row)).float()


def save_pair(folder: Path, config, edits, **save_options) -> tuple[Path, Path]:
    """Model A (random weights from `config`) and model B = A with `edits(parameters)` applied, both saved."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model_a, model_b = folder / "model-a", folder / "model-b"
    model.save_pretrained(model_a, **save_options)
    with torch.no_grad():
        edits(dict(model.named_parameters()))
    model.save_pretrained(model_b, **save_options)
    return model_a, model_b


def run_all_steps(model_a: Path, model_b: Path, output_root: Path) -> Path:
    for step in STEP_SCRIPTS:
        assert run_step(step, model_a=model_a, model_b=model_b, output_root=output_root) == 0, step
    return output_root / f"{model_a.name}__to__{model_b.name}"


def numeric(rows: list[dict[str, str]]) -> list[dict]:
    return [{key: value if key in ("name", "group", "component", "dominant") else float(value)
             for key, value in row.items()} for row in rows]


def check_layout_and_aggregates(comparison: Path) -> tuple[list[dict], list[dict]]:
    """Every step's files exist; per_matrix/per_layer have the Appendix A columns; per_layer = its rows' aggregate."""
    expected = {
        "weight_comparison": {"per_matrix.csv", "per_layer.csv", "per_component.csv", "per_coarse_layer.csv"},
        "param_plots": {"layer_locality.png", "spectral_norm.png", "stable_rank.png", "rank_comparison.png"},
        "mlp_attn_analysis": {"mlp_attn_summary.csv", "mlp_attn_ratio.png"},
        "null_space_analysis": {"null_space_results.csv", "energy_ratio.png", "subspace_alignment.png"},
        "mlp_nullspace": {"mlp_nullspace_results.csv", "mlp_nullspace_by_layer.csv", "null_space_fraction.png"},
    }
    for folder, files in expected.items():
        present = {path.name for path in (comparison / folder).iterdir()}
        assert files <= present, f"{folder}: missing {files - present}"
    assert not [path for path in comparison.iterdir() if path.name.startswith(".")], "a staging folder was left"
    weight_comparison = comparison / "weight_comparison"
    assert (weight_comparison / "per_matrix.csv").read_text().splitlines()[0] == ",".join(PER_MATRIX_COLUMNS)
    assert (weight_comparison / "per_layer.csv").read_text().splitlines()[0] == ",".join(PER_LAYER_COLUMNS)
    per_matrix = numeric(read_csv(weight_comparison / "per_matrix.csv"))
    per_layer = numeric(read_csv(weight_comparison / "per_layer.csv"))
    members: dict[tuple, list[dict]] = defaultdict(list)
    for row in per_matrix:
        members[(row["layer"], row["group"])].append(row)
    assert {(row["layer"], row["group"]) for row in per_layer} == set(members)
    for row in per_layer:
        group = members[(row["layer"], row["group"])]
        assert row["count_mats"] == len(group)
        assert row["dW_fro_layer"] == pytest.approx(math.sqrt(sum(member["dW_fro"] ** 2 for member in group)))
        assert row["W_fro_layer"] == pytest.approx(math.sqrt(sum(member["W_fro"] ** 2 for member in group)))
        assert row["max_dW_spectral"] == pytest.approx(max(member["dW_spectral"] for member in group))
        assert row["max_W_spectral"] == pytest.approx(max(member["W_spectral"] for member in group))
        assert row["mean_dW_stable_rank"] == pytest.approx(sum(m["dW_stable_rank"] for m in group) / len(group))
        if row["W_fro_layer"] > 0:
            assert row["dW_fro_layer_rel"] == pytest.approx(row["dW_fro_layer"] / row["W_fro_layer"])
    return per_matrix, per_layer


def by_name(rows: list[dict]) -> dict[str, dict]:
    return {row["name"]: row for row in rows}


@pytest.mark.slow
def test_llama_style_pair_groups_attention_and_mlp_and_finds_the_planted_updates(tmp_path: Path):
    config = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    planted = {}

    def edits(parameters):
        planted["k"] = rank_one(16, 32, seed=1)  # grouped-query attention: k_proj is (16, 32)
        parameters["model.layers.0.self_attn.k_proj.weight"] += planted["k"]
        up = parameters["model.layers.1.mlp.up_proj.weight"]  # (64, 32): a 32-dimensional left null space
        up += outside_column_space(up, seed=2)

    model_a, model_b = save_pair(tmp_path, config, edits)
    comparison = run_all_steps(model_a, model_b, tmp_path / "outputs")
    per_matrix, _ = check_layout_and_aggregates(comparison)
    rows = by_name(per_matrix)
    groups = {name.split(".")[-2]: row["group"] for name, row in rows.items() if row["layer"] == 0}
    assert groups == {"q_proj": "attn", "k_proj": "attn", "v_proj": "attn", "o_proj": "attn",
                      "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}  # norm gains are not matrices
    changed = {name for name, row in rows.items() if row["dW_fro"] > 0}
    assert changed == {"model.layers.0.self_attn.k_proj.weight", "model.layers.1.mlp.up_proj.weight"}
    k_row = rows["model.layers.0.self_attn.k_proj.weight"]
    assert (k_row["shape0"], k_row["shape1"]) == (16, 32)
    assert k_row["dW_stable_rank"] == pytest.approx(1.0, rel=1e-3)
    assert k_row["dW_fro"] == pytest.approx(float(planted["k"].norm()), rel=1e-5)
    assert k_row["dW_spectral"] == pytest.approx(float(torch.linalg.matrix_norm(planted["k"], ord=2)), rel=1e-3)

    step4 = {int(row["layer"]): row for row in read_csv(comparison / "mlp_attn_analysis" / "mlp_attn_summary.csv")}
    assert step4[0]["dominant"] == "attn" and float(step4[0]["mlp_attn_ratio"]) == 0.0
    assert step4[1]["dominant"] == "mlp" and float(step4[1]["mlp_attn_ratio"]) == math.inf

    step10 = by_name(numeric(read_csv(comparison / "mlp_nullspace" / "mlp_nullspace_results.csv")))
    assert set(step10) == {f"model.layers.{layer}.mlp.{part}.weight" for layer in (0, 1)
                           for part in ("gate_proj", "up_proj", "down_proj")}
    up = step10["model.layers.1.mlp.up_proj.weight"]
    assert up["null_space_fraction"] == pytest.approx(1.0, abs=1e-4)
    assert up["column_space_fraction"] == pytest.approx(0.0, abs=1e-4)

    step7 = numeric(read_csv(comparison / "null_space_analysis" / "null_space_results.csv"))
    assert len(step7) == 14  # fewer attention/MLP matrices than --num-samples 50: all of them
    for row in step7:
        assert 0 <= row["subspace_alignment_out"] <= 1 and row["grassmann_distance_out"] >= 0
        if row["name"] == "model.layers.0.self_attn.k_proj.weight":
            assert row["dW_effective_rank"] == 1 and row["dW_top_k_energy_ratio"] == pytest.approx(1.0)


@pytest.mark.slow
def test_gpt2_style_pair_transposes_conv1d_weights_and_splits_the_fused_qkv(tmp_path: Path):
    config = GPT2Config(vocab_size=96, n_embd=32, n_layer=2, n_head=4, n_positions=64)

    def edits(parameters):
        c_attn = parameters["transformer.h.0.attn.c_attn.weight"]  # Conv1D (in 32, out 96): q is columns 0-31
        c_attn[:, :32] += rank_one(32, 32, seed=3).T
        parameters["transformer.h.1.mlp.c_fc.weight"] += rank_one(128, 32, seed=4).T  # (in 32, out 128)

    model_a, model_b = save_pair(tmp_path, config, edits)
    comparison = run_all_steps(model_a, model_b, tmp_path / "outputs")
    per_matrix, _ = check_layout_and_aggregates(comparison)
    rows = by_name(per_matrix)
    expected = {"attn.c_attn": ("attn", 96, 32), "attn.c_proj": ("attn", 32, 32), "mlp.c_fc": ("mlp", 128, 32),
                "mlp.c_proj": ("mlp", 32, 128)}
    for fragment, (group, rows_out, columns_in) in expected.items():
        row = rows[f"transformer.h.1.{fragment}.weight"]
        assert (row["group"], row["shape0"], row["shape1"]) == (group, rows_out, columns_in), fragment
    assert rows["transformer.wte.weight"]["group"] == "embed" and rows["transformer.wte.weight"]["layer"] == -1
    assert {name for name, row in rows.items() if row["dW_fro"] > 0} == {
        "transformer.h.0.attn.c_attn.weight", "transformer.h.1.mlp.c_fc.weight"}
    assert rows["transformer.h.1.mlp.c_fc.weight"]["dW_stable_rank"] == pytest.approx(1.0, rel=1e-3)

    components = {(row["layer"], row["component"]): row
                  for row in numeric(read_csv(comparison / "weight_comparison" / "per_component.csv"))}
    assert components[(0, "q")]["dW_fro"] > 0 and components[(0, "q")]["shape0"] == 32
    assert components[(0, "k")]["dW_fro"] == 0 and components[(0, "v")]["dW_fro"] == 0
    assert components[(1, "mlp_expand")]["dW_fro"] > 0 and components[(1, "mlp_contract")]["dW_fro"] == 0


@pytest.mark.slow
def test_sharded_gpt_neox_pair_streams_every_shard_and_splits_interleaved_heads(tmp_path: Path):
    config = GPTNeoXConfig(vocab_size=96, hidden_size=32, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, max_position_embeddings=64)

    def edits(parameters):
        qkv = parameters["gpt_neox.layers.1.attention.query_key_value.weight"]  # rows: 4 heads x [q k v] x 8
        qkv[1 * 24 + 16 : 1 * 24 + 24] += rank_one(8, 32, seed=5)  # only head 1's value rows

    model_a, model_b = save_pair(tmp_path, config, edits, max_shard_size="20KB")
    assert len(list(model_a.glob("*.safetensors"))) > 3 and (model_a / "model.safetensors.index.json").exists()
    assert run_step("weight_comparison", model_a=model_a, model_b=model_b, output_root=tmp_path / "outputs") == 0
    weight_comparison = tmp_path / "outputs" / "model-a__to__model-b" / "weight_comparison"
    per_matrix = numeric(read_csv(weight_comparison / "per_matrix.csv"))
    assert len(per_matrix) == 2 + 2 * 4  # embed_in, embed_out, and four matrices per layer, from every shard
    components = {(row["layer"], row["component"]): row for row in numeric(read_csv(weight_comparison /
                                                                                     "per_component.csv"))}
    assert components[(1, "v")]["dW_fro"] > 0 and components[(1, "v")]["dW_stable_rank"] == pytest.approx(1, rel=1e-3)
    assert components[(1, "q")]["dW_fro"] == 0 and components[(1, "k")]["dW_fro"] == 0


@pytest.mark.slow
def test_step_1_is_deterministic_skips_itself_and_reruns_with_force(tmp_path: Path, capsys):
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=32)
    model_a, model_b = save_pair(tmp_path, config, lambda p: p["model.layers.0.mlp.down_proj.weight"].mul_(1.1))
    first_root, second_root = tmp_path / "first", tmp_path / "second"
    for root in (first_root, second_root):
        assert run_step("weight_comparison", model_a=model_a, model_b=model_b, output_root=root) == 0
    name = f"{model_a.name}__to__{model_b.name}/weight_comparison/per_matrix.csv"
    assert (first_root / name).read_text() == (second_root / name).read_text()
    capsys.readouterr()
    assert run_step("weight_comparison", model_a=model_a, model_b=model_b, output_root=first_root) == 0
    assert capsys.readouterr().out.startswith("skipped:")
    assert run_step("weight_comparison", "--force", "--empirical-rank", model_a=model_a, model_b=model_b,
                    output_root=first_root) == 0
    header = (first_root / name).read_text().splitlines()[0].split(",")
    assert header == [*PER_MATRIX_COLUMNS, "dW_empirical_rank", "W_empirical_rank"]
    per_layer = (first_root / name).parent / "per_layer.csv"
    assert per_layer.read_text().splitlines()[0].split(",") == [*PER_LAYER_COLUMNS[:-1], "mean_dW_empirical_rank",
                                                                "count_mats"]
    down = by_name(numeric(read_csv(first_root / name)))["model.layers.0.mlp.down_proj.weight"]
    assert down["dW_fro_rel"] == pytest.approx(0.1, rel=1e-5)  # ΔW = 0.1 W
    assert down["dW_stable_rank"] == pytest.approx(down["W_stable_rank"], rel=1e-3)
    assert down["dW_empirical_rank"] == down["W_empirical_rank"]


# ---- bad input: one line, non-zero exit, nothing written ------------------------------------------------------

def assert_one_line_error(code: int, capsys, *phrases: str) -> None:
    captured = capsys.readouterr()
    assert code != 0
    message = last_line(captured.err)
    assert message.startswith("error:") and "Traceback" not in captured.err, captured.err
    for phrase in phrases:
        assert phrase in message, f"{phrase!r} not in {message!r}"


def test_models_whose_shapes_differ_are_refused_naming_the_tensor(tmp_path: Path, capsys):
    small = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                        num_attention_heads=2, max_position_embeddings=32)
    wide = LlamaConfig(**{**small.to_dict(), "intermediate_size": 48})
    model_a, _ = save_pair(tmp_path / "small", small, lambda parameters: None)
    model_b, _ = save_pair(tmp_path / "wide", wide, lambda parameters: None)
    output_root = tmp_path / "outputs"
    for step in ("weight_comparison", "null_space_analysis", "mlp_nullspace"):
        code = run_step(step, model_a=model_a, model_b=model_b, output_root=output_root)
        assert_one_line_error(code, capsys, "shapes differ", "model.layers.0.mlp.down_proj.weight", "[16, 32]",
                              "[16, 48]")
    assert not output_root.exists() or not any(output_root.rglob("*")), "nothing may be written"


def test_models_with_different_parameter_names_are_refused(tmp_path: Path, capsys):
    llama = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                        num_attention_heads=2, max_position_embeddings=32)
    gpt2 = GPT2Config(vocab_size=64, n_embd=16, n_layer=1, n_head=2, n_positions=32)
    model_a, _ = save_pair(tmp_path / "llama", llama, lambda parameters: None)
    model_b, _ = save_pair(tmp_path / "gpt2", gpt2, lambda parameters: None)
    code = run_step("weight_comparison", model_a=model_a, model_b=model_b, output_root=tmp_path / "outputs")
    assert_one_line_error(code, capsys, "different parameters", "only in", "same architecture")
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("*"))


def test_a_missing_model_and_a_missing_step_1_are_one_line_each(tmp_path: Path, capsys):
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=32)
    model_a, _ = save_pair(tmp_path, config, lambda parameters: None)
    missing = tmp_path / "no-such-model"
    for step in ("weight_comparison", "null_space_analysis", "mlp_nullspace"):
        code = run_step(step, model_a=model_a, model_b=missing, output_root=tmp_path / "outputs")
        assert_one_line_error(code, capsys, "not found", str(missing))
    code = run_step("mlp_attn_analysis", model_a=model_a, model_b=model_a, output_root=tmp_path / "outputs")
    assert_one_line_error(code, capsys, "run Step 1 first")
    (model_a / "model.safetensors").rename(model_a / "weights.bin")
    code = run_step("weight_comparison", model_a=model_a, model_b=model_a, output_root=tmp_path / "outputs")
    assert_one_line_error(code, capsys, "no safetensors weights", "save_pretrained")
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("*"))
