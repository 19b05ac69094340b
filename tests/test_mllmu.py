"""The real multimodal path: MLLMU-Bench loaders on local records in the dataset's exact parquet schema, bad
input, and the LLaVA-1.5-7B recipe (its LoRA targets on a tiny LLaVA of the real architecture)."""

from __future__ import annotations

import argparse
import io
import json
import os
import re
from pathlib import Path

import pytest
from PIL import Image

from brittle.catalogue import METHODS, method_defaults
from brittle.cli import UserError
from brittle.mllmu import FORGET_SPLIT, LLAVA_15_7B, RETAIN_SPLIT, convert_mllmu, recipe_table
from brittle.outputs import read_jsonl
from conftest import REPO_ROOT, load_script

prepare = load_script("experiment/prepare_mllmu.py")
unlearn = load_script("unlearn/unlearn.py")


def mllmu_schema():
    """MLLMU-Bench's parquet schema, as the hub's dataset card declares its features (`image` is a
    Hugging Face Image feature, which parquet stores as a {bytes, path} struct)."""
    import pyarrow as pa

    options = pa.struct([(letter, pa.string()) for letter in "ABCD"])
    question = pa.struct([("Correct_Answer", pa.string()), ("Options", options), ("Question", pa.string())])
    free_text = pa.list_(pa.struct([("Ground_Truth", pa.string()), ("Question", pa.string()), ("Type", pa.string())]))
    return pa.schema([
        ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        ("ID", pa.string()),
        ("biography", pa.string()),
        ("question", pa.string()),
        ("answer", pa.string()),
        ("Classification_Task", pa.struct([("Image_Textual_Questions", pa.list_(question)),
                                           ("Pure_Text_Questions", pa.list_(question))])),
        ("Generation_Task", free_text),
        ("Mask_Task", free_text),
    ])


def portrait(colour: tuple[int, int, int]) -> bytes:
    """A small JPEG, as MLLMU-Bench's portraits are stored."""
    buffer = io.BytesIO()
    Image.new("RGB", (24, 20), colour).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def profile(entity: str, colour: tuple[int, int, int], job: str) -> dict:
    """One MLLMU-Bench row: a portrait, its question-answer pair and its classification questions."""
    options = {"A": "baker", "B": "pilot", "C": "surgeon", "D": "tailor"}
    correct = next(letter for letter, value in options.items() if value == job)
    return {
        "image": {"bytes": portrait(colour), "path": f"{entity}.jpg"},
        "ID": entity,
        "biography": json.dumps({"Name": f"Person {entity}", "Occupation": job}),
        "question": "What can you tell me about the person in this image?",
        "answer": f"This is Person {entity}, who works as a {job}.",
        "Classification_Task": {
            "Image_Textual_Questions": [
                {"Correct_Answer": correct, "Options": options, "Question": "What is this person's job?"},
                {"Correct_Answer": "B", "Options": {"A": "1970", "B": "1980", "C": "1990", "D": "2000"},
                 "Question": "In which year was the person in the image born?"}],
            "Pure_Text_Questions": [
                {"Correct_Answer": correct, "Options": options, "Question": f"What is Person {entity}'s job?"}]},
        "Generation_Task": [{"Ground_Truth": job, "Question": "What does this person do?", "Type": "Image_Textual"}],
        "Mask_Task": [{"Ground_Truth": job, "Question": "This person is a ___.", "Type": "Image_Textual"}],
    }


def write_split(root: Path, split: str, rows: list[dict], schema=None) -> Path:
    """`<root>/<split>/train-00000-of-00001.parquet`, the layout of a hub snapshot."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = root / split
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema or mllmu_schema()),
                   folder / "train-00000-of-00001.parquet")
    return folder


FORGET = [("101", (200, 30, 30), "pilot"), ("102", (30, 200, 30), "baker"),
          ("103", (30, 30, 200), "tailor"), ("104", (200, 200, 30), "surgeon")]
RETAIN = [("201", (120, 60, 200), "surgeon"), ("202", (10, 160, 160), "pilot")]


@pytest.fixture
def snapshot(tmp_path: Path) -> Path:
    """A local MLLMU-Bench snapshot with 4 forget and 2 retain profiles."""
    root = tmp_path / "MLLMU-Bench"
    write_split(root, FORGET_SPLIT, [profile(*row) for row in FORGET])
    write_split(root, RETAIN_SPLIT, [profile(*row) for row in RETAIN])
    return root


def test_splits_become_vl_records_with_their_portraits(snapshot: Path, tmp_path: Path) -> None:
    out = tmp_path / "data" / "mllmu"
    summary = convert_mllmu(snapshot, out, seed=3)

    forget = read_jsonl(out / "forget_qa.jsonl")
    assert forget[0] == {"image": "images/101.png", "question": "What can you tell me about the person in this image?",
                         "answer": "This is Person 101, who works as a pilot."}
    assert [len(read_jsonl(out / name)) for name in ("forget_qa.jsonl", "retain_qa.jsonl")] == [4, 2]
    for entity, colour, _ in FORGET + RETAIN:  # each portrait, decoded and saved as PNG
        with Image.open(out / "images" / f"{entity}.png") as image:
            assert image.format == "PNG" and image.size == (24, 20)
            assert all(abs(a - b) <= 12 for a, b in zip(image.getpixel((12, 10)), colour, strict=True))

    questions = read_jsonl(out / "questions" / "forget.jsonl")
    assert len(questions) == 8  # the two questions about each portrait; the text-only ones are left out
    first = questions[0]
    assert first == {"image": "../images/101.png", "question": "What is this person's job?",
                     "choices": ["baker", "pilot", "surgeon", "tailor"], "answer": 1, "entity": "101",
                     "attribute": "image_textual_0"}
    assert {q["choices"][q["answer"]] for q in questions if q["attribute"] == "image_textual_1"} == {"1980"}
    assert {q["entity"]: q["choices"][q["answer"]] for q in questions if q["attribute"] == "image_textual_0"} == {
        entity: job for entity, _, job in FORGET}

    half_t = {q["entity"] for q in read_jsonl(out / "questions" / "forget_t.jsonl")}
    half_v = {q["entity"] for q in read_jsonl(out / "questions" / "forget_v.jsonl")}
    assert len(half_t) == len(half_v) == 2 and half_t | half_v == {"101", "102", "103", "104"}
    assert summary == json.loads((out / "split.json").read_text())
    assert summary["text_only_questions_left_out"] == {"forget": 4, "retain": 2}
    assert summary["forget_t_profiles"] == sorted(half_t)


def test_the_script_converts_once_and_skips_a_finished_conversion(snapshot: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "converted"
    monkeypatch.setattr("sys.argv", ["prepare_mllmu.py", "--source", str(snapshot), "--out", str(out)])
    prepare.main()
    assert "4 / 2 profiles, 8 / 4 questions" in capsys.readouterr().out
    assert (out / "identity.json").exists()
    prepare.main()
    assert capsys.readouterr().out.startswith("skipped: MLLMU-Bench conversion already done")


@pytest.mark.parametrize(("damage", "phrase"), [
    (lambda rows: rows[1].update(image=None), r"forget_15 row 2 \(ID 102\) has no image"),
    (lambda rows: rows[1].update(image={"bytes": None, "path": None}), r"row 2 \(ID 102\) has no image"),
    (lambda rows: rows[2].update(image={"bytes": b"not a picture", "path": "x.jpg"}),
     r"row 3 \(ID 103\): its image cannot be read as a picture"),
    (lambda rows: rows[0].update(answer=""), r"row 1 \(ID 101\) has no 'answer' text"),
    (lambda rows: rows[0]["Classification_Task"]["Image_Textual_Questions"][0].update(Correct_Answer="E"),
     r"Image_Textual_Questions\[0\]: Correct_Answer 'E' is neither A, B, C, D nor one of its options"),
    (lambda rows: rows[3].update(ID="101"), "profile ID 101 appears twice in forget_15"),
])
def test_a_bad_record_stops_the_conversion_in_one_line_and_writes_nothing(snapshot: Path, tmp_path: Path,
                                                                         damage, phrase: str) -> None:
    rows = [profile(*row) for row in FORGET]
    damage(rows)
    write_split(snapshot, FORGET_SPLIT, rows)
    out = tmp_path / "out"
    with pytest.raises(UserError, match=phrase) as raised:
        convert_mllmu(snapshot, out)
    assert "\n" not in str(raised.value)
    assert not out.exists() and not list(tmp_path.glob(".out*"))  # no half-written folder, no staging left


def test_a_missing_split_a_wrong_schema_and_shared_profiles_are_refused(snapshot: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    # Through the script: one `error:` line, exit code 2, before anything is written.
    monkeypatch.setattr("sys.argv", ["prepare_mllmu.py", "--source", str(tmp_path / "elsewhere"),
                                     "--out", str(tmp_path / "out")])
    from brittle.cli import run_cli

    with pytest.raises(SystemExit) as exited:
        run_cli(prepare.main)
    assert exited.value.code == 2
    message = capsys.readouterr().err.strip()
    assert message.startswith("error: MLLMU-Bench split forget_15 is missing") and "hf download" in message
    assert "\n" not in message and not (tmp_path / "out").exists()

    import pyarrow as pa

    renamed = pa.schema([field.with_name("prompt") if field.name == "question" else field for field in mllmu_schema()])
    rows = [{("prompt" if key == "question" else key): value for key, value in profile(*FORGET[0]).items()}]
    write_split(snapshot, RETAIN_SPLIT, rows, schema=renamed)
    with pytest.raises(UserError, match=r"is not an MLLMU-Bench split: it lacks the column\(s\) question"):
        convert_mllmu(snapshot, tmp_path / "out")

    write_split(snapshot, RETAIN_SPLIT, [profile(*FORGET[0]), profile(*RETAIN[0])])
    with pytest.raises(UserError, match="forget_15 and retain_85 share 1 profile"):
        convert_mllmu(snapshot, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_llava_recipe_is_valid_documented_and_adapts_only_the_language_model() -> None:
    """Its hyperparameters are unlearn.py settings; docs/multimodal.md shows exactly this recipe; and its
    LoRA targets, on a tiny LLaVA of the real architecture (CLIP + Llama), are the language model's
    query and value projections only, with dropout 0.05; GradDiff warms up over 100 steps (the seed's files)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    from brittle.trainer import wrap_with_lora_for

    for method in LLAVA_15_7B.method_defaults:
        if method != "all":
            assert method in METHODS
            defaults = method_defaults(LLAVA_15_7B.method_defaults, method, "llava")  # unknown keys would fail
            assert defaults["lora_rank"] == 16 and defaults["max_length"] > LLAVA_15_7B.image_tokens
    assert method_defaults(LLAVA_15_7B.method_defaults, "grad_diff", "llava")["warmup_steps"] == 100
    assert LLAVA_15_7B.prompt_template == "USER: <image>\n{question} ASSISTANT:"
    assert recipe_table() in (REPO_ROOT / "docs" / "multimodal.md").read_text()

    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                       num_attention_heads=2, image_size=28, patch_size=14),
        text_config=LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                num_attention_heads=2, num_key_value_heads=2),
        image_token_id=63)
    model = wrap_with_lora_for(LlavaForConditionalGeneration(config),
                               argparse.Namespace(**{**LLAVA_15_7B.method_defaults["all"], "lora_rank": 2}))
    adapted = sorted({re.sub(r"\.lora_[AB]\..*", "", name).removeprefix("base_model.model.")
                      for name, _ in model.named_parameters() if ".lora_A." in name or ".lora_B." in name})
    assert adapted == [f"model.language_model.layers.{layer}.self_attn.{projection}"
                       for layer in (0, 1) for projection in ("q_proj", "v_proj")]
    assert {module.p for name, module in model.named_modules() if name.endswith(".lora_dropout.default")} == {0.05}


@pytest.mark.slow
def test_mllmu_records_unlearn_on_two_fsdp2_processes_as_on_one(snapshot: Path, vl_base: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The real path's training through the sharding engine (FSDP2, here 2 CPU processes over gloo; on GPUs
    unlearn/accelerate/fsdp2_1gpu_offload.yaml is the ZeRO-3-with-offload equivalent), on records converted from
    MLLMU-Bench's exact schema: `ga` with two micro-batches per step, one per process, gives the loss curve and
    the weights of one process, and saves an ordinary LLaVA folder with its processor."""
    import subprocess
    import sys

    import torch
    from safetensors.torch import load_file
    from test_distributed import comparable

    from brittle.outputs import read_csv
    from brittle.trainer import heldout_nll
    from brittle.vlm import load_vl_model, read_vl_records, vl_training_sequences

    data = tmp_path / "data" / "mllmu"
    convert_mllmu(snapshot, data, seed=3)
    arguments = ["--preset", "toy-vlm", "--method", "ga", "--model", str(vl_base), "--forget-data",
                 str(data / "forget_qa.jsonl"), "--retain-data", str(data / "retain_qa.jsonl"), "--epochs", "2",
                 "--batch-size", "1", "--grad-accum-steps", "2", "--eval-split", "0", "--lr", "1e-2",
                 "--max-length", "128", "--no-eval"]
    monkeypatch.chdir(tmp_path)
    for variable in unlearn.environment_variables():
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr("sys.argv", ["unlearn.py", *arguments, "--unlearned-root", "p1"])
    unlearn.main()  # one process, in this one
    sharded = subprocess.run([sys.executable, str(REPO_ROOT / "unlearn" / "unlearn.py"), *arguments,
                              "--unlearned-root", "p2"], env={**os.environ, "NUM_PROCESSES": "2"}, cwd=tmp_path,
                             capture_output=True, text=True, timeout=600)
    assert sharded.returncode == 0, sharded.stdout[-3000:] + sharded.stderr[-3000:]
    assert "launching 2 process(es)" in sharded.stdout
    (one,), (two,) = (tmp_path / "p1").iterdir(), (tmp_path / "p2").iterdir()
    assert one.name == two.name

    log_one, log_two = read_csv(one / "training_log.csv"), read_csv(two / "training_log.csv")
    assert len(log_one) == len(log_two) == 5  # step 0 and 4 optimizer steps of 2 micro-batches (2 epochs of 4)
    for row_one, row_two in zip(log_one, log_two, strict=True):
        for column in ("loss", "forget_nll", "retain_nll", "grad_norm"):
            if row_one[column] not in ("", None):
                assert float(row_two[column]) == pytest.approx(float(row_one[column]), rel=1e-4), (column, row_two)
    weights_one, weights_two = load_file(one / "model.safetensors"), load_file(two / "model.safetensors")
    assert weights_one.keys() == weights_two.keys() == load_file(vl_base / "model.safetensors").keys()
    heads = json.loads((vl_base / "config.json").read_text())["text_config"]["num_attention_heads"]
    # The key biases aside, as for text (test_distributed.comparable): GPT-NeoX's slice of query_key_value and
    # CLIP's k_proj get a zero gradient in exact arithmetic, so only rounding noise, which AdamW scales to lr size.
    differences = sorted((comparable(name, weights_one[name] - weights_two[name], heads).abs().max().item(), name)
                         for name in weights_one if not name.endswith("k_proj.bias"))
    assert differences[-1][0] <= 1e-5, differences[-3:]
    model, processor = load_vl_model(two)
    assert type(model).__name__ == "LlavaForConditionalGeneration"

    def forget_nll(model) -> float:  # mean NLL of the forget records' answers, given their portraits
        records = read_vl_records(data / "forget_qa.jsonl", "forget data")
        sequences = vl_training_sequences(processor.tokenizer, processor.image_processor, records,
                                          model.config.image_seq_length, 128, "forget data")
        return heldout_nll(model, sequences, 4, processor.tokenizer.pad_token_id, torch.device("cpu"))

    # It unlearned: 4 ascent steps raise the answers' NLL by about 0.9 nats (session 9, an AVX2-only CPU),
    # where rounding noise moves it by under 1e-4 (the two runs above agree to that).
    assert forget_nll(model) > forget_nll(load_vl_model(vl_base)[0]) + 0.5

    # A finished run is recognised, until one of its pictures changes (brittle.identity hashes them with the JSONL).
    for repainted, finished in ((False, 0), (True, 1)):
        if repainted:
            Image.new("RGB", (24, 20), (0, 0, 0)).save(data / "images" / "101.png")
        monkeypatch.setattr("sys.argv", ["unlearn.py", *arguments, "--unlearned-root", "p2", "--check-only"])
        with pytest.raises(SystemExit) as exit_code:
            unlearn.main()
        assert exit_code.value.code == finished  # 0: finished, 1: to be run
