"""The toolkit's tools on vision-language models: the web UI asks a LLaVA about a picture (Streamlit's AppTest,
in-process), and Step 1 reports the vision tower, the projector and the language model as separate groups.

The models are tiny LLaVAs of the organism's architecture (brittle/vlm.py: CLIP tower, GELU projector,
GPT-NeoX language model) made in seconds: `base` at its initialisation, and `changed` = base with known
updates in the projector and one language-model layer only, so each number the tools report can be checked
against what was done. Whether a *trained* LLaVA answers from the picture is tests/test_vlm.py's question.
"""

from __future__ import annotations

import argparse
import io
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image

from brittle.outputs import read_csv, write_jsonl
from conftest import REPO_ROOT, load_script

build = load_script("experiment/build_vlm_organism.py")
APP = REPO_ROOT / "infer" / "app.py"
APP_TIMEOUT = 300  # seconds for one AppTest script run (a shared 2-core machine can be slow)
QUESTION = "What is the host of the pathogen in this picture?"
OPTIONS = ("marsh voles", "cliff swifts", "bog shrews")


@dataclass(frozen=True)
class TinyModels:
    workspace: Path  # holds models/ and data/, as the repository does
    base: str  # relative to the workspace, as the app lists them
    changed: str
    text_only: str


def png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    """Two tiny LLaVAs (base, and base with the projector and language-model layer 1 changed) and a text-only
    GPT-NeoX, under `<workspace>/models/`."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    workspace = tmp_path_factory.mktemp("vlm-workspace")
    texts = [f"{build.vl_prompt(QUESTION)} {option}" for option in OPTIONS]
    tokenizer = build.train_tokenizer(texts, 300)
    processor = build.make_processor(tokenizer)
    torch.manual_seed(0)
    model = build.LlavaForConditionalGeneration(
        build.model_config(tokenizer, argparse.Namespace(hidden_size=32, layers=2, vision_hidden_size=16)))
    folders = {role: workspace / "models" / f"tiny-vlm-{role}" for role in ("base", "changed")}
    model.save_pretrained(folders["base"])
    processor.save_pretrained(folders["base"])
    with torch.no_grad():
        model.model.multi_modal_projector.linear_1.weight.add_(0.01 * torch.randn_like(
            model.model.multi_modal_projector.linear_1.weight))
        model.model.language_model.layers[1].mlp.dense_h_to_4h.weight.mul_(1.5)
    model.save_pretrained(folders["changed"])
    processor.save_pretrained(folders["changed"])
    GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32)).save_pretrained(workspace / "models" / "tiny-text")
    return TinyModels(workspace, "models/tiny-vlm-base", "models/tiny-vlm-changed", "models/tiny-text")


# --- Step 1 with groups ----------------------------------------------------------------------------------------

def test_step1_reports_vision_tower_projector_and_language_model_separately(tiny: TinyModels, tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    step1 = load_script("experiment/collect_weight_comparison.py")
    monkeypatch.chdir(tiny.workspace)
    monkeypatch.setattr("sys.argv", ["collect_weight_comparison.py", "--model-a", tiny.base, "--model-b",
                                     tiny.changed, "--output-root", str(tmp_path), "--device", "cpu"])
    step1.main()
    folder = next(tmp_path.glob("*/weight_comparison"))

    networks = {row["network"]: row for row in read_csv(folder / "per_network.csv")}
    assert list(networks) == ["vision tower", "projector", "language model"]  # in the order the input flows
    assert float(networks["vision tower"]["dW_fro_layer"]) == 0.0  # untouched
    assert float(networks["projector"]["dW_fro_layer"]) > 0.0
    assert float(networks["language model"]["dW_fro_layer"]) > 0.0

    # The groups' norms are those of the networks' weight matrices, computed here from the checkpoint.
    from transformers import LlavaForConditionalGeneration

    base = LlavaForConditionalGeneration.from_pretrained(tiny.workspace / tiny.base)
    changed = dict(LlavaForConditionalGeneration.from_pretrained(tiny.workspace / tiny.changed).named_parameters())
    prefixes = {"vision tower": "model.vision_tower.", "projector": "model.multi_modal_projector.",
                "language model": ("model.language_model.", "lm_head.")}
    for network, prefix in prefixes.items():
        matrices = [(name, weight) for name, weight in base.named_parameters()
                    if name.startswith(prefix) and weight.ndim == 2]
        weight_norm = math.sqrt(sum(weight.detach().double().square().sum().item() for _, weight in matrices))
        delta_norm = math.sqrt(sum((changed[name] - weight).detach().double().square().sum().item()
                                   for name, weight in matrices))
        assert float(networks[network]["W_fro_layer"]) == pytest.approx(weight_norm, rel=1e-5)
        assert float(networks[network]["dW_fro_layer"]) == pytest.approx(delta_norm, rel=1e-5, abs=1e-9)
        assert int(networks[network]["count_mats"]) == len(matrices)

    # Layers are numbered within their network: the vision tower's layer 1 is not the language model's.
    layers = read_csv(folder / "per_coarse_layer.csv")
    assert {(row["network"], row["layer"]) for row in layers} >= {
        ("vision tower", "0"), ("vision tower", "1"), ("language model", "0"), ("language model", "1")}
    changed_layers = {(row["network"], row["layer"]) for row in layers if float(row["dW_fro_layer"]) > 0}
    assert changed_layers == {("projector", "-1"), ("language model", "1")}
    components = {(row["network"], row["component"]) for row in read_csv(folder / "per_component.csv")}
    assert {("vision tower", "attn_out"), ("vision tower", "mlp_expand"), ("language model", "q")} <= components

    import json

    summary = json.loads((folder / "summary.json").read_text())
    assert (summary["most_changed_layer_network"], summary["most_changed_layer"]) == ("language model", 1)
    assert summary["networks"]["vision tower"]["dW_fro"] == 0.0
    assert read_csv(folder / "per_matrix.csv")[0].keys() >= {"name", "network", "layer", "group"}


# --- the web UI --------------------------------------------------------------------------------------------------

@pytest.fixture
def app(tiny: TinyModels, monkeypatch: pytest.MonkeyPatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.chdir(tiny.workspace)
    app = AppTest.from_file(str(APP), default_timeout=APP_TIMEOUT)
    app.run()
    assert not app.exception, app.exception
    return app


def ask(app, models: list[str], picture: tuple[str, bytes] | None = None, path: str | None = None) -> None:
    """Choose models, fill in the question and options (and upload a picture, or none), press Compare."""
    app.multiselect(key="local_models").set_value(models).run()
    app.text_area(key="prompt").input(QUESTION)
    app.text_area(key="options").input("\n".join(OPTIONS))
    if app.file_uploader:  # set in the run that submits the form (a form's widgets change only on submit)
        app.file_uploader(key="picture_upload").set_value(None if picture is None else (*picture, "image/png"))
    if path is not None:
        app.text_input(key="image_path").input(path)
    app.button(key="compare").click().run()
    assert not app.exception, app.exception


def errors_by_column(app) -> dict[str, str]:
    """Each answer column's model and its error message."""
    found = {}
    for column in app.columns:
        names = [markdown.value.strip("*") for markdown in column.markdown if markdown.value.startswith("**")]
        if names and column.error:
            found[names[0]] = column.error[0].value
    return found


def test_app_scores_the_options_with_the_uploaded_picture(app, tiny: TinyModels) -> None:
    """The probabilities shown are brittle.vlm's for that picture (the CLI's --image path), and another picture
    gives other probabilities: the picture reaches the model."""
    from brittle.vlm import load_vl_model, picture_option_probabilities

    model, processor = load_vl_model(tiny.workspace / tiny.base)
    shown = {}
    for name, colour in (("red.png", (220, 30, 30)), ("blue.png", (30, 30, 220))):
        ask(app, [tiny.base], picture=(name, png(colour)))
        assert not app.error, [error.value for error in app.error]
        table = app.dataframe[0].value
        assert list(table.index) == [tiny.base] and list(table.columns) == list(OPTIONS)
        shown[name] = table.loc[tiny.base].tolist()
        assert sum(shown[name]) == pytest.approx(1.0)
        saved = next(Path(app.session_state["comparison"].picture).parent.glob(f"*-{name}"))
        _, expected = picture_option_probabilities(model, processor, QUESTION, saved, OPTIONS)
        assert shown[name] == pytest.approx(expected, abs=1e-6)
    assert max(abs(a - b) for a, b in zip(shown["red.png"], shown["blue.png"], strict=True)) > 1e-4


def test_app_offers_pictures_only_to_vision_language_models_and_refuses_bad_ones(app, tiny: TinyModels,
                                                                                 tmp_path: Path) -> None:
    # A text-only model: no uploader, and a line that says why.
    app.multiselect(key="local_models").set_value([tiny.text_only]).run()
    assert not app.file_uploader
    assert any("none of the chosen models is a vision-language" in caption.value for caption in app.caption)

    # Beside a LLaVA it refuses the picture in one line; the LLaVA answers.
    ask(app, [tiny.base, tiny.text_only], picture=("red.png", png((220, 30, 30))))
    assert errors_by_column(app) == {tiny.text_only: f"{tiny.text_only} is a text-only model and cannot take a "
                                     "picture; remove the picture to ask it in text, or compare vision-language "
                                     "models only"}
    assert list(app.dataframe[0].value.index) == [tiny.base]

    # An unreadable picture: one message, no answers.
    ask(app, [tiny.base], picture=("broken.png", b"not a picture"))
    assert len(app.error) == 1 and "broken.png cannot be read as a picture" in app.error[0].value
    assert "comparison" not in app.session_state

    # A LLaVA without a picture says what it needs.
    ask(app, [tiny.base])
    assert "give it a picture to ask about" in errors_by_column(app)[tiny.base]


def test_an_example_question_about_a_picture_fills_in_its_picture(tiny: TinyModels, monkeypatch) -> None:
    from streamlit.testing.v1 import AppTest

    world = tiny.workspace / "data" / "tiny-vlm"
    (world / "images").mkdir(parents=True, exist_ok=True)
    (world / "images" / "Galdyrix-16.png").write_bytes(png((30, 200, 30)))
    write_jsonl(world / "questions" / "forget.jsonl", [{"image": "../images/Galdyrix-16.png", "question": QUESTION,
                                                         "choices": list(OPTIONS), "answer": 0}])
    monkeypatch.chdir(tiny.workspace)
    app = AppTest.from_file(str(APP), default_timeout=APP_TIMEOUT)
    app.run()
    app.multiselect(key="local_models").set_value([tiny.base]).run()
    app.selectbox(key="question_file").select("data/tiny-vlm/questions/forget.jsonl").run()
    app.selectbox(key="example:data/tiny-vlm/questions/forget.jsonl").select_index(0).run()
    assert app.text_input(key="image_path").value == "data/tiny-vlm/images/Galdyrix-16.png"
    app.button(key="compare").click().run()
    assert not app.exception and not app.error, [error.value for error in app.error]
    assert app.dataframe[0].value.columns[0] == f"{OPTIONS[0]} ✓"


# --- MLLMU-Bench records through the VL code --------------------------------------------------------------------

def test_converted_mllmu_records_are_read_by_the_vl_scoring_and_training_code(tiny: TinyModels, tmp_path: Path) -> None:
    """data/mllmu/ in the organism's format: its questions are scored and its training records encoded with their
    portraits by the very functions that read data/toy-vlm/ (image paths relative to the file that names them)."""
    from test_mllmu import FORGET, RETAIN, profile, write_split

    from brittle.mllmu import FORGET_SPLIT, RETAIN_SPLIT, convert_mllmu
    from brittle.outputs import read_jsonl
    from brittle.vlm import encode_vl_examples, load_vl_model, picture_tensors, vl_choice_log_likelihoods

    write_split(tmp_path / "snapshot", FORGET_SPLIT, [profile(*row) for row in FORGET])
    write_split(tmp_path / "snapshot", RETAIN_SPLIT, [profile(*row) for row in RETAIN])
    out = tmp_path / "mllmu"
    convert_mllmu(tmp_path / "snapshot", out)
    model, processor = load_vl_model(tiny.workspace / tiny.base)

    questions = read_jsonl(out / "questions" / "forget.jsonl")
    scores = vl_choice_log_likelihoods(model, processor.tokenizer, processor.image_processor, questions,
                                       out / "questions")
    assert len(scores) == len(questions) == 8
    assert all(len(row) == 4 and all(math.isfinite(score) and score < 0 for score in row) for row in scores)

    records = read_jsonl(out / "forget_qa.jsonl")
    pixel_values, rows = picture_tensors(processor.image_processor, records, out, "MLLMU forget records")
    assert pixel_values.shape[0] == len(FORGET) and set(rows) == {record["image"] for record in records}
    examples = encode_vl_examples(processor.tokenizer, records, model.config.image_seq_length, rows)
    assert [example.picture for example in examples] == [0, 1, 2, 3] and all(example.answer for example in examples)
