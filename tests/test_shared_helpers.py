"""The shared package: output folders, atomic writes, skipping, text files, presets, architectures."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM

from brittle import architecture, outputs, presets, texts
from brittle.cli import UserError

# ---- outputs -----------------------------------------------------------------------------------

def test_model_slug_uses_the_folder_name_locally_and_flattens_hub_ids(tmp_path):
    folder = tmp_path / "models" / "toy-base-s42"
    folder.mkdir(parents=True)
    assert outputs.model_slug(str(folder)) == "toy-base-s42"
    assert outputs.model_slug("EleutherAI/deep-ignorance-unfiltered") == "EleutherAI_deep-ignorance-unfiltered"
    assert outputs.comparison_name("org/a", "org/b") == "org_a__to__org_b"
    assert outputs.comparison_step_dir("org/a", "org/b", "weight_comparison", tmp_path) == \
        tmp_path / "org_a__to__org_b" / "weight_comparison"


def test_staged_directory_publishes_only_on_success(tmp_path):
    final = tmp_path / "step"
    with pytest.raises(RuntimeError), outputs.staged_directory(final) as staging:
        outputs.write_text(staging / "half.csv", "a,b\n")
        raise RuntimeError("killed halfway")
    assert not final.exists()
    assert list(tmp_path.iterdir()) == []  # no staging leftovers either

    with outputs.staged_directory(final) as staging:
        outputs.write_csv(staging / "rows.csv", [{"layer": 0, "value": 1.5}])
    assert outputs.read_csv(final / "rows.csv") == [{"layer": "0", "value": "1.5"}]


def test_staged_directory_replaces_an_older_result(tmp_path):
    final = tmp_path / "step"
    for version in ("old", "new"):
        with outputs.staged_directory(final) as staging:
            outputs.write_text(staging / f"{version}.txt", version)
    assert [path.name for path in final.iterdir()] == ["new.txt"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["step"]


def test_skip_if_complete_says_so_in_one_line(tmp_path, capsys):
    assert not outputs.skip_if_complete(tmp_path / "missing")
    (tmp_path / "done").mkdir()
    assert outputs.skip_if_complete(tmp_path / "done", what="Step 1")
    assert not outputs.skip_if_complete(tmp_path / "done", force=True)
    assert capsys.readouterr().out.strip().splitlines() == [
        f"skipped: Step 1 already done ({tmp_path / 'done'}); pass --force to redo it"]


def test_atomic_writes_leave_no_temporary_files(tmp_path):
    outputs.write_json(tmp_path / "a.json", {"x": 1})
    outputs.write_jsonl(tmp_path / "b.jsonl", [{"y": 2}, {"y": 3}])
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.json", "b.jsonl"]
    assert outputs.read_jsonl(tmp_path / "b.jsonl") == [{"y": 2}, {"y": 3}]


# ---- texts ---------------------------------------------------------------------------------------

def test_read_texts_strips_skips_blank_lines_and_caps(tmp_path):
    path = tmp_path / "forget.txt"
    path.write_text(" one \n\ntwo\nthree\n")
    assert texts.read_texts(path) == ["one", "two", "three"]
    assert texts.read_texts(path, max_samples=2) == ["one", "two"]


@pytest.mark.parametrize("content, phrase", [(None, "does not exist"), ("\n \n", "is empty")])
def test_read_texts_refuses_missing_or_empty_files(tmp_path, content, phrase):
    path = tmp_path / "retain.txt"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UserError, match=phrase):
        texts.read_texts(path)


def test_read_texts_refuses_zero_samples(tmp_path):
    (tmp_path / "f.txt").write_text("a\n")
    with pytest.raises(UserError, match="--max-samples must be at least 1"):
        texts.read_texts(tmp_path / "f.txt", max_samples=0)


def test_check_disjoint_names_the_overlap():
    texts.check_disjoint(["a", "b"], ["c"])
    with pytest.raises(UserError, match="share 1 line"):
        texts.check_disjoint(["a", "b"], ["b", "c"])


# ---- presets ---------------------------------------------------------------------------------------

def test_presets_name_both_worlds():
    toy, real = presets.get_preset("toy", seed=7), presets.get_preset("real")
    assert toy.base == "models/toy-base-s7" and toy.filtered == "models/toy-filtered-s7"
    assert {"toy_forget_mcq", "toy_forget_mcq_t", "toy_forget_mcq_v", "toy_retain_mcq"} == set(toy.eval_tasks)
    assert real.base == "EleutherAI/deep-ignorance-unfiltered" and "mmlu" in real.eval_tasks
    with pytest.raises(UserError, match="unknown preset"):
        presets.get_preset("huge")


# ---- architecture ------------------------------------------------------------------------------------

def tiny_models():
    """One tiny randomly initialised model of each supported family."""
    common = {"vocab_size": 64}
    return {
        "gpt_neox": GPTNeoXForCausalLM(GPTNeoXConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                                     intermediate_size=32, **common)),
        "llama": LlamaForCausalLM(LlamaConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                              num_key_value_heads=2, intermediate_size=24, **common)),
        "gpt2": GPT2LMHeadModel(GPT2Config(n_embd=16, n_layer=2, n_head=2, n_positions=32, **common)),
    }


EXPECTED_COMPONENTS = {
    "gpt_neox": {"qkv", "attn_out", "mlp_expand", "mlp_contract"},
    "llama": {"q", "k", "v", "attn_out", "mlp_gate", "mlp_expand", "mlp_contract"},
    "gpt2": {"qkv", "attn_out", "mlp_expand", "mlp_contract"},
}


@pytest.mark.parametrize("family", ["gpt_neox", "llama", "gpt2"])
def test_parameter_roles_group_attention_and_mlp_in_every_family(family):
    model = tiny_models()[family]
    roles = {name: architecture.parameter_role(name) for name, parameter in model.named_parameters()
             if parameter.ndim == 2}
    in_layers = {name: role for name, role in roles.items() if role.layer >= 0}
    assert {role.layer for role in in_layers.values()} == {0, 1}
    assert {role.component for role in in_layers.values()} == EXPECTED_COMPONENTS[family]
    for role in in_layers.values():
        assert role.group == ("attn" if role.component in ("qkv", "q", "k", "v", "attn_out") else "mlp")
    assert {role.group for role in roles.values() if role.layer < 0} == {"embed"}


@pytest.mark.parametrize("family", ["gpt_neox", "llama", "gpt2"])
def test_module_accessors_find_layers_norm_and_mlp_input(family):
    model = tiny_models()[family]
    layers = architecture.decoder_layers(model)
    assert architecture.num_layers(model) == len(layers) == 2
    expand = architecture.mlp_expand_module(layers[0])
    seen = []
    handle = expand.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].shape))
    with torch.no_grad():
        hidden = model(torch.tensor([[1, 2, 3]]), output_hidden_states=True).hidden_states
    handle.remove()
    assert seen == [torch.Size([1, 3, 16])] and len(hidden) == 3
    assert isinstance(architecture.final_norm(model), torch.nn.Module)


def test_gpt2_conv1d_weights_are_returned_as_output_by_input():
    model = tiny_models()["gpt2"]
    name = "transformer.h.0.mlp.c_fc.weight"
    weight = dict(model.named_parameters())[name]
    assert tuple(weight.shape) == (16, 64)  # Conv1D stores (in, out)
    assert tuple(architecture.as_output_by_input(name, weight).shape) == (64, 16)
    neox_name = "gpt_neox.layers.0.mlp.dense_h_to_4h.weight"
    assert architecture.as_output_by_input(neox_name, weight) is weight


def test_unsupported_architecture_is_a_user_error():
    with pytest.raises(UserError, match="decoder layers"):
        architecture.decoder_layers(torch.nn.Linear(2, 2))
