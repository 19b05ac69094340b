"""Compare models side by side in the browser: their answers to a prompt, and for a multiple-choice
question each model's probability of every option ("does the unlearned model still know?").

Launch it with `uv run infer/run.py` (bound to localhost). It runs from the repository root, where
the organism's models (`models/`), unlearned models (`unlearned_models/`) and example questions
(`data/*/questions/*.jsonl`) are found; any hub id can be typed as well. Models load once and stay
cached while the app runs (`st.cache_resource`). Everything that is not UI - generating, scoring
options the way lm-eval does, finding models and questions - lives in `brittle/inference.py`.

Vision-language (LLaVA) models answer a question about a picture: when one of the chosen models takes
pictures, the form offers an uploader (or a picture file's path; picking an example question about a
picture fills it in), and such a model scores the options with the picture as `infer/cli.py --image`
does (`brittle/vlm.py`). A text-only model given a picture says so instead of answering.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import streamlit as st
import torch
from streamlit.runtime.uploaded_file_manager import UploadedFile
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from brittle.cli import UserError
from brittle.inference import (
    GenerationSettings,
    MultipleChoiceQuestion,
    OptionScores,
    check_choices,
    check_prompt,
    find_local_models,
    find_question_files,
    read_questions,
    score_options,
    stream_generation,
)
from brittle.models import load_model_and_tokenizer
from brittle.multiple_choice import choice_probabilities
from brittle.presets import get_preset
from brittle.tracking import load_environment
from brittle.vlm import generate_about_picture, load_image, load_vl_model, picture_option_probabilities

logger = logging.getLogger("brittle.infer.app")
DTYPES = ["auto", "fp32", "fp16", "bf16"]
PICTURE_TYPES = ["png", "jpg", "jpeg", "webp", "bmp", "gif"]
UPLOADS = Path(tempfile.gettempdir()) / "brittle-app-pictures"  # uploaded pictures, named by their content


# --- what one comparison produced (kept in the session, so it survives widget changes) ----------

@dataclass(frozen=True)
class ModelAnswer:
    """One model's answer: its continuation and option scores, or why it has none."""

    model: str
    text: str = ""
    scores: OptionScores | None = None
    error: str | None = None


@dataclass(frozen=True)
class Comparison:
    """A submitted prompt (and options) and every chosen model's answer to it."""

    prompt: str
    choices: tuple[str, ...]
    correct: str | None  # the right option, when the question came from a question file
    answers: tuple[ModelAnswer, ...]
    picture: str | None = None  # the picture the question was about (a file), for vision-language models


# --- pieces with no UI in them -------------------------------------------------------------------

@st.cache_resource(show_spinner=False)
def cached_model(name: str, device: str, dtype: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a model once per (name, device, dtype); failures are not cached, so a retry retries."""
    return load_model_and_tokenizer(name, device, dtype)


@st.cache_resource(show_spinner=False)
def cached_vl_model(name: str, device: str, dtype: str) -> tuple[PreTrainedModel, object]:
    """A vision-language model and its processor, loaded once per (name, device, dtype)."""
    return load_vl_model(name, device, dtype)


@st.cache_resource(show_spinner=False)
def cached_takes_pictures(name: str) -> bool:
    """Whether the model's config has a vision tower; reads only config.json (raises when there is none)."""
    from transformers import AutoConfig

    return getattr(AutoConfig.from_pretrained(name), "vision_config", None) is not None


def takes_pictures(name: str) -> bool | None:
    """True for a vision-language model, False for a text-only one, None when its config cannot be read (the
    answer then reports why the model does not load)."""
    try:
        return cached_takes_pictures(name)
    except (OSError, ValueError):
        return None


def one_line(error: BaseException) -> str:
    """A failure as one readable line (the full traceback goes to the server's log)."""
    if isinstance(error, UserError):
        return str(error)
    first_line = next((line for line in str(error).splitlines() if line.strip()), "")
    return f"{type(error).__name__}: {first_line}" if first_line else type(error).__name__


def split_model_names(text: str) -> list[str]:
    """Typed model names: separated by commas or new lines."""
    return [name.strip() for name in text.replace("\n", ",").split(",") if name.strip()]


def split_options(text: str) -> tuple[str, ...]:
    """Options typed one per line; blank lines are ignored."""
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def device_choices() -> list[str]:
    """Devices this machine offers, `auto` first."""
    devices = ["auto", "cpu"] + [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    return devices + (["mps"] if torch.backends.mps.is_available() else [])


def question_label(question: MultipleChoiceQuestion) -> str:
    """How an example question is listed: the prompt and its correct option."""
    return f"{question.question}  →  {question.choices[question.answer]}"


def question_picture(path: str | Path, image: str) -> str:
    """The file of a question's `image`: absolute, or relative to the folder of its question file, as
    brittle.vlm.read_vl_records resolves it (`data/toy-vlm/questions/forget.jsonl` names `../images/X.png`)."""
    return str(image if Path(image).is_absolute() else os.path.normpath(Path(path).parent / image))


def saved_upload(name: str, data: bytes) -> str:
    """An uploaded picture as a file (named by its content, so uploading it again reuses it), for the same
    image path as `infer/cli.py --image`."""
    UPLOADS.mkdir(parents=True, exist_ok=True)
    path = UPLOADS / f"{hashlib.sha256(data).hexdigest()[:16]}-{Path(name).name}"
    if not path.exists():
        path.write_bytes(data)
    return str(path)


def question_set_label(path: str) -> str:
    """`data/toy/questions/forget_t.jsonl` -> `toy: forget_t`; `data/questions/forget.jsonl` -> `forget`."""
    parts = Path(path).parts
    world = parts[-3] if len(parts) >= 3 and parts[-3] != "data" else ""
    return f"{world}: {Path(path).stem}" if world else Path(path).stem


def probability_table(comparison: Comparison) -> pd.DataFrame:
    """One row per model that answered; one column per option (the correct one marked ✓)."""
    def column_name(choice: str) -> str:
        return f"{choice} ✓" if choice == comparison.correct else choice

    rows = {answer.model: {column_name(choice): probability
                           for choice, probability in zip(answer.scores.choices, answer.scores.probabilities,
                                                          strict=True)}
            for answer in comparison.answers if answer.scores is not None}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "model"
    return table


def log_likelihood_table(comparison: Comparison) -> pd.DataFrame:
    """The raw log-likelihoods that lm-eval's `acc` compares, same layout as `probability_table`."""
    rows = {answer.model: dict(zip(answer.scores.choices, answer.scores.log_likelihoods, strict=True))
            for answer in comparison.answers if answer.scores is not None}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "model"
    return table


# --- the page ------------------------------------------------------------------------------------

def fill_in_example(questions: list[MultipleChoiceQuestion], picker_key: str) -> None:
    """Callback of the example picker: copy the chosen question into the prompt and options."""
    index = st.session_state.get(picker_key)
    if index is None:
        return
    question = questions[index]
    st.session_state["prompt"] = question.question
    st.session_state["options"] = "\n".join(question.choices)
    st.session_state["correct_option"] = question.choices[question.answer]
    image = question.extra.get("image")  # a question about a picture: show the model that picture
    st.session_state["image_path"] = question_picture(picker_key.removeprefix("example:"), image) if image else ""


def sidebar() -> tuple[list[str], str, str, dict[str, float]]:
    """Model choice, device, dtype and generation parameters."""
    toy = get_preset("toy")
    real = get_preset("real")
    with st.sidebar:
        st.header("Models")
        local_models = find_local_models()
        chosen = st.multiselect(
            "Local models", local_models, key="local_models",
            default=[name for name in (toy.base, toy.filtered) if name in local_models],
            help="Folders holding a config.json under models/ and unlearned_models/")
        typed = st.text_input("Other models", key="other_models", placeholder=f"{real.base}, {real.unlearned}",
                              help="Hub ids or folders, separated by commas")
        device = st.selectbox("Device", device_choices(), key="device",
                              help="auto: the GPU with most free memory (accelerate places the model), "
                                   "then MPS, then CPU")
        dtype = st.selectbox("Dtype", DTYPES, key="dtype", help="auto: bf16 on CUDA, fp16 on MPS, fp32 on CPU")

        st.header("Generation")
        generation = {
            "max_new_tokens": st.number_input("Max new tokens", min_value=1, max_value=4096, value=200,
                                              key="max_new_tokens"),
            "temperature": st.slider("Temperature", min_value=0.0, max_value=2.0, value=0.0, step=0.05,
                                     key="temperature", help="0 = greedy decoding"),
            "top_p": st.slider("Top-p", min_value=0.05, max_value=1.0, value=1.0, step=0.05, key="top_p",
                               help="Nucleus sampling threshold (only when temperature > 0)"),
            "seed": st.number_input("Seed", value=42, step=1, key="seed"),
        }
        if st.button("Unload all models", help="Free the memory of every cached model"):
            cached_model.clear()
            cached_vl_model.clear()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            st.toast("All models unloaded")
    names = list(dict.fromkeys([*chosen, *split_model_names(typed)]))  # in order, no repeats
    return names, device, dtype, generation


def example_picker() -> None:
    """Question files of the toolkit, offered as ready-made multiple-choice prompts."""
    files = [file.as_posix() for file in find_question_files()]
    if not files:
        return
    with st.expander("Example questions", expanded=True):
        left, right = st.columns([1, 3])
        path = left.selectbox("Question set", files, key="question_file", format_func=question_set_label,
                              help="data/*/questions/*.jsonl, written by create_datasets.py")
        try:
            questions = read_questions(path)
        except UserError as error:
            st.error(str(error))
            return
        picker_key = f"example:{path}"  # one picker per file, so an index never points into another file
        right.selectbox("Question", range(len(questions)), index=None, key=picker_key,
                        format_func=lambda index: question_label(questions[index]),
                        on_change=fill_in_example, args=(questions, picker_key),
                        placeholder="Pick a question to fill in the prompt and its options")


def answer_one(name: str, prompt: str, choices: tuple[str, ...], settings: GenerationSettings,
               device: str, dtype: str, picture: str | None = None) -> ModelAnswer:
    """Load (or reuse) one model, stream its answer into the page, score the options (about `picture`, for a
    vision-language model)."""
    st.markdown(f"**{name}**")
    try:
        if takes_pictures(name):
            return answer_about_picture(name, prompt, choices, settings, device, dtype, picture)
        if picture is not None and takes_pictures(name) is False:
            raise UserError(f"{name} is a text-only model and cannot take a picture; remove the picture to ask it "
                            "in text, or compare vision-language models only")
        with st.spinner(f"Loading {name}..."):
            model, tokenizer = cached_model(name, device, dtype)
        live_text = st.empty()
        text = ""
        for piece in stream_generation(model, tokenizer, prompt, settings):
            text += piece
            live_text.code(text, language=None, wrap_lines=True)
        scores = score_options(model, tokenizer, prompt, choices) if choices else None
        return ModelAnswer(name, text, scores)
    except UserError as error:  # a mistake the message explains (a model that is not there, ...)
        logger.warning("model %s: %s", name, error)
        return ModelAnswer(name, error=one_line(error))
    except Exception as error:  # anything else also becomes a message, so the app keeps working
        logger.exception("model %s failed", name)
        return ModelAnswer(name, error=one_line(error))


def answer_about_picture(name: str, prompt: str, choices: tuple[str, ...], settings: GenerationSettings,
                         device: str, dtype: str, picture: str | None) -> ModelAnswer:
    """A vision-language model's greedy answer to the prompt about the picture, and its option scores
    (the scoring of `infer/cli.py --image`: each option after LLaVA's prompt, with the picture's features)."""
    if picture is None:
        raise UserError(f"{name} is a vision-language model: give it a picture to ask about (upload one, or type "
                        "its path)")
    with st.spinner(f"Loading {name}..."):
        model, processor = cached_vl_model(name, device, dtype)
    with st.spinner(f"{name} is looking at the picture..."):
        text = generate_about_picture(model, processor, prompt, picture, settings.max_new_tokens)
    st.code(text, language=None, wrap_lines=True)
    if not choices:
        return ModelAnswer(name, text)
    log_likelihoods, _ = picture_option_probabilities(model, processor, prompt, picture, choices)
    return ModelAnswer(name, text, OptionScores(choices, tuple(log_likelihoods),
                                                tuple(choice_probabilities(log_likelihoods))))


def run_comparison(names: list[str], prompt: str, choices: tuple[str, ...], settings: GenerationSettings,
                   device: str, dtype: str, picture: str | None = None) -> Comparison:
    """Every model's answer, one column each, streamed as they are generated."""
    correct = st.session_state.get("correct_option")
    columns = st.columns(len(names))
    answers = []
    for name, column in zip(names, columns, strict=True):
        with column:
            answers.append(answer_one(name, prompt, choices, settings, device, dtype, picture))
    return Comparison(prompt, choices, correct if correct in choices else None, tuple(answers), picture)


def show_comparison(comparison: Comparison) -> None:
    """The answers side by side, then each model's probability of every option."""
    st.caption(f"Answers to: {comparison.prompt}")
    if comparison.picture is not None:
        st.image(comparison.picture, caption="asked about this picture", width=160)
    for answer, column in zip(comparison.answers, st.columns(len(comparison.answers)), strict=True):
        with column:
            st.markdown(f"**{answer.model}**")
            if answer.error is not None:
                st.error(answer.error)
                continue
            if answer.text.strip():
                st.code(answer.text, language=None, wrap_lines=True)
            else:
                st.caption("(no text: the model ended its answer at once)")
            if answer.scores is not None:
                best = answer.scores.predicted
                verdict = "" if comparison.correct is None else \
                    (" ✓ correct" if answer.scores.choices[best] == comparison.correct else " ✗ wrong")
                st.markdown(f"Most likely option: **{answer.scores.choices[best]}** "
                            f"({answer.scores.probabilities[best]:.1%}){verdict}")

    if not comparison.choices or all(answer.scores is None for answer in comparison.answers):
        return
    st.subheader("Option probabilities")
    st.caption("Each option is scored as lm-eval scores multiple choice: the log-likelihood of the option as a "
               "continuation of the prompt after one space; the probabilities are those likelihoods normalised "
               "over the options." + (" ✓ marks the correct option." if comparison.correct else ""))
    table = probability_table(comparison)
    st.dataframe(table, column_config={
        column: st.column_config.ProgressColumn(column, min_value=0.0, max_value=1.0, format="percent")
        for column in table.columns})
    with st.expander("Log-likelihoods (what lm-eval's acc compares)"):
        st.dataframe(log_likelihood_table(comparison), column_config={
            column: st.column_config.NumberColumn(format="%.3f") for column in comparison.choices})


def picture_inputs(names: list[str]) -> tuple[UploadedFile | None, str]:
    """The picture widgets (an uploader and a path), shown only when a chosen model takes pictures."""
    if not any(takes_pictures(name) for name in names):
        st.caption("Pictures: none of the chosen models is a vision-language (LLaVA) model, so the prompt is text "
                   "only. Choose one (e.g. models/toy-vlm-base-s42) to ask it about a picture.")
        return None, ""
    left, right = st.columns(2)
    upload = left.file_uploader("Picture (for vision-language models)", type=PICTURE_TYPES, key="picture_upload",
                                help="The prompt is then a question about this picture, put into LLaVA's prompt "
                                     "template; text-only models refuse it")
    typed = right.text_input("...or a picture file", key="image_path", placeholder="data/toy-vlm/images/X-16.png",
                             help="A path on this machine; an example question about a picture fills it in")
    return upload, typed


def chosen_picture(upload: UploadedFile | None, typed: str) -> str | None:
    """The picture to ask about, as a readable file (an upload wins over a typed path); None for none."""
    if upload is not None:
        path = saved_upload(upload.name, upload.getvalue())
    elif typed.strip():
        path = typed.strip()
    else:
        return None
    load_image(path)  # an unreadable picture is one message, before any model loads
    return path


def main() -> None:
    load_environment()  # HF_TOKEN for gated hub models; Streamlit runs this file without run_cli
    st.set_page_config(page_title="Compare models · brittle", page_icon="🧪", layout="wide")
    st.title("Compare models side by side")
    names, device, dtype, generation = sidebar()
    example_picker()

    with st.form("prompt_form"):
        prompt = st.text_area("Prompt", key="prompt", height=100, placeholder="Q: What is the host of Galdyrix? A:")
        options_text = st.text_area("Options (one per line; optional)", key="options", height=120,
                                    help="For a multiple-choice question: each model's probability of every option")
        upload, typed_picture = picture_inputs(names)
        submitted = st.form_submit_button("Compare", type="primary", key="compare")

    results = st.empty()  # live answers while generating, then the finished comparison
    if submitted:
        st.session_state.pop("comparison", None)  # a new request replaces the last answers, even a bad one
        choices = split_options(options_text)
        try:
            if not names:
                raise UserError("no model chosen: pick one in the sidebar or type a hub id or folder")
            check_prompt(prompt)
            if choices:
                check_choices(choices)
            settings = GenerationSettings(int(generation["max_new_tokens"]), float(generation["temperature"]),
                                          float(generation["top_p"]), int(generation["seed"]))
            picture = chosen_picture(upload, typed_picture)
        except UserError as error:
            st.error(str(error))
        else:
            with results.container():
                st.session_state["comparison"] = run_comparison(names, prompt, choices, settings, device, dtype,
                                                                picture)

    comparison: Comparison | None = st.session_state.get("comparison")
    if comparison is not None:
        with results.container():
            show_comparison(comparison)


main()
