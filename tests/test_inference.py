"""Inference: generation and lm-eval-style option scoring (brittle/inference.py), the CLI, and the web UI
driven through Streamlit's AppTest and through a real headless Chromium."""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from brittle.cli import UserError
from brittle.inference import (
    GenerationSettings,
    check_choices,
    find_local_models,
    find_question_files,
    generate_text,
    read_questions,
    score_options,
    stream_generation,
)
from brittle.multiple_choice import choice_probabilities
from conftest import REPO_ROOT, ToyOrganism, assert_user_error, run_script

APP = REPO_ROOT / "infer" / "app.py"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
APP_TIMEOUT = 300  # seconds for one AppTest script run (a shared 2-core machine can be slow)


# --- the math and the small pieces, no model needed ----------------------------------------------

def test_normalised_probabilities_are_a_softmax_of_the_log_likelihoods():
    assert choice_probabilities([math.log(1.0), math.log(3.0)]) == pytest.approx([0.25, 0.75])
    # Log-likelihoods of long options are large negative numbers; the softmax must stay finite.
    probabilities = choice_probabilities([-1000.0, -1001.0, -1003.0])
    assert sum(probabilities) == pytest.approx(1.0)
    assert probabilities == pytest.approx([1 / (1 + math.exp(-1) + math.exp(-3)),
                                           math.exp(-1) / (1 + math.exp(-1) + math.exp(-3)),
                                           math.exp(-3) / (1 + math.exp(-1) + math.exp(-3))])


def test_generation_settings_are_checked_and_map_to_generate_arguments():
    assert GenerationSettings(50).generate_arguments() == {"max_new_tokens": 50, "do_sample": False}
    assert GenerationSettings(50, temperature=0.7, top_p=0.9).generate_arguments() == {
        "max_new_tokens": 50, "do_sample": True, "temperature": 0.7, "top_p": 0.9}
    for bad, phrase in [({"max_new_tokens": 0}, "max new tokens"), ({"temperature": -0.1}, "temperature"),
                        ({"temperature": math.nan}, "temperature"), ({"top_p": 0.0}, "top-p")]:
        with pytest.raises(UserError, match=phrase):
            GenerationSettings(**bad)


@pytest.mark.parametrize(("choices", "phrase"), [(["only one"], "at least two"), (["a", " "], "blank"),
                                                 (["a", "b", "a"], "more than once: a")])
def test_bad_option_lists_are_refused(choices: list[str], phrase: str):
    with pytest.raises(UserError, match=phrase):
        check_choices(choices)


def test_question_files_are_read_and_checked_line_by_line(tmp_path: Path):
    good = tmp_path / "questions.jsonl"
    good.write_text('{"question": "Q: 1+1? A:", "choices": ["2", "3"], "answer": 0, "extra": "kept out"}\n\n')
    [question] = read_questions(good)
    assert (question.question, question.choices, question.answer) == ("Q: 1+1? A:", ("2", "3"), 0)

    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"question": "a", "choices": ["x", "y"], "answer": 1}\n{"question": "b"}\n')
    with pytest.raises(UserError, match="line 2 is not a"):
        read_questions(broken)
    out_of_range = tmp_path / "range.jsonl"
    out_of_range.write_text('{"question": "a", "choices": ["x", "y"], "answer": 2}\n')
    with pytest.raises(UserError, match="answer 2 is not the index"):
        read_questions(out_of_range)
    with pytest.raises(UserError, match="cannot read questions"):
        read_questions(tmp_path / "missing.jsonl")


def test_local_models_and_question_files_are_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for folder in ["models/toy-base-s42", "unlearned_models/toy-base-s42__ga__ep1",
                   "unlearned_models/sweep/run-1", "unlearned_models/.run.staging"]:
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "config.json").write_text("{}")
    (tmp_path / "models" / "not-a-model").mkdir()
    for questions in ["data/questions/forget.jsonl", "data/toy/questions/retain.jsonl", "data/toy/forget.txt"]:
        (tmp_path / questions).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / questions).write_text("")
    monkeypatch.chdir(tmp_path)
    assert find_local_models() == ["models/toy-base-s42", "unlearned_models/toy-base-s42__ga__ep1",
                                   "unlearned_models/sweep/run-1"]
    assert find_question_files() == [Path("data/questions/forget.jsonl"), Path("data/toy/questions/retain.jsonl")]


# --- generation and scoring on the trained organism ------------------------------------------------

@pytest.fixture(scope="module")
def loaded_models(toy_organism: ToyOrganism):
    """The organism's base and filtered models, loaded once on the CPU."""
    from brittle.models import load_model_and_tokenizer

    return {role: load_model_and_tokenizer(str(path), device="cpu")
            for role, path in [("base", toy_organism.base), ("filtered", toy_organism.filtered)]}


@pytest.mark.slow
def test_option_log_likelihoods_are_exactly_lm_evals(loaded_models, toy_organism: ToyOrganism):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    model, tokenizer = loaded_models["base"]
    questions = read_questions(toy_organism.data / "questions" / "forget.jsonl")[:4]
    prompts = [(question.question, question.choices) for question in questions]
    prompts.append((questions[0].question + " ", questions[0].choices))  # trailing space moves to the options
    language_model = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=8)
    requests = [Instance("loglikelihood", {}, (prompt, " " + choice), index)
                for prompt, choices in prompts for index, choice in enumerate(choices)]
    expected = [log_likelihood for log_likelihood, _ in language_model.loglikelihood(requests, disable_tqdm=True)]
    ours = [value for prompt, choices in prompts
            for value in score_options(model, tokenizer, prompt, choices).log_likelihoods]
    assert ours == pytest.approx(expected, abs=1e-4)


@pytest.mark.slow
def test_option_probabilities_tell_who_knows_the_forget_facts(loaded_models, toy_organism: ToyOrganism):
    questions = read_questions(toy_organism.data / "questions" / "forget.jsonl")[:24]
    accuracy = {}
    for role, (model, tokenizer) in loaded_models.items():
        scores = [score_options(model, tokenizer, question.question, question.choices) for question in questions]
        for score in scores:
            assert sum(score.probabilities) == pytest.approx(1.0)
            assert score.predicted == max(range(4), key=score.probabilities.__getitem__)
        accuracy[role] = sum(score.predicted == question.answer
                             for score, question in zip(scores, questions, strict=True)) / len(questions)
    assert accuracy["base"] >= 0.9, accuracy  # base was trained on these facts
    assert accuracy["filtered"] <= 0.5, accuracy  # filtered never saw them: about chance (0.25)


@pytest.mark.slow
def test_streamed_generation_is_the_whole_answer_and_reproducible(loaded_models, monkeypatch: pytest.MonkeyPatch):
    model, tokenizer = loaded_models["base"]
    prompt = "Q: What is the host of Galdyrix? A:"
    pieces = list(stream_generation(model, tokenizer, prompt, GenerationSettings(max_new_tokens=12)))
    assert "".join(pieces).strip(), pieces
    assert "".join(pieces) == generate_text(model, tokenizer, prompt, GenerationSettings(max_new_tokens=12))
    sampled = GenerationSettings(max_new_tokens=12, temperature=1.5, seed=7)
    assert generate_text(model, tokenizer, "The", sampled) == generate_text(model, tokenizer, "The", sampled)
    with pytest.raises(UserError, match="prompt is empty"):
        generate_text(model, tokenizer, "  \n", GenerationSettings())

    def broken_generate(**_):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(model, "generate", broken_generate)
    with pytest.raises(RuntimeError, match="simulated"):  # re-raised from the generating thread, no hang
        generate_text(model, tokenizer, prompt, GenerationSettings())


# --- the command line --------------------------------------------------------------------------------

def test_cli_argument_mistakes_are_one_line_before_any_model_loads(tmp_path: Path):
    result = run_script("infer/cli.py", "--model", "models/no-such-model", "--prompt", "Q:", "--choices", "only one",
                        cwd=tmp_path, check=False)
    assert_user_error(result, "at least two options")  # the options are reported, not the (also missing) model


# --- the web UI through Streamlit's AppTest ----------------------------------------------------------

@pytest.fixture
def app(toy_organism: ToyOrganism, monkeypatch: pytest.MonkeyPatch):
    """The app as `uv run infer/run.py` serves it from the workspace (models/ and data/ are there)."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.chdir(toy_organism.workspace)
    app = AppTest.from_file(str(APP), default_timeout=APP_TIMEOUT)
    app.run()
    assert not app.exception, app.exception
    return app


def answers_by_model(app) -> dict[str, str]:
    """Each answer column's model name and generated text."""
    answers = {}
    for column in app.columns:
        names = [markdown.value.strip("*") for markdown in column.markdown if markdown.value.startswith("**")]
        if names and column.code:
            answers[names[0]] = column.code[0].value
    return answers


@pytest.mark.slow
def test_app_compares_two_toy_models_on_an_example_question(app, toy_organism: ToyOrganism):
    base, filtered = "models/toy-base-s42", "models/toy-filtered-s42"
    assert app.multiselect(key="local_models").value == [base, filtered]  # the organism is preselected
    assert "models/toy-base-midtrain-s42" in app.multiselect(key="local_models").options

    question = read_questions(toy_organism.data / "questions" / "forget.jsonl")[0]
    app.selectbox(key="example:data/toy/questions/forget.jsonl").select_index(0).run()
    assert app.text_area(key="prompt").value == question.question
    assert app.text_area(key="options").value.splitlines() == list(question.choices)

    app.button(key="compare").click().run()
    assert not app.exception, app.exception
    assert not app.error, [error.value for error in app.error]
    answers = answers_by_model(app)
    assert set(answers) == {base, filtered}
    assert all(text.strip() for text in answers.values()), answers

    correct = question.choices[question.answer]
    table = app.dataframe[0].value
    assert list(table.index) == [base, filtered]
    assert [column.removesuffix(" ✓") for column in table.columns] == list(question.choices)
    assert f"{correct} ✓" in table.columns
    assert table.sum(axis=1).tolist() == pytest.approx([1.0, 1.0])
    assert table.loc[base, f"{correct} ✓"] > 0.9  # base still knows
    assert table.loc[filtered, f"{correct} ✓"] < table.loc[base, f"{correct} ✓"]
    assert any(f"**{correct}**" in markdown.value and "✓ correct" in markdown.value for markdown in app.markdown)

    # Changing a setting reruns the script; the answers stay on the page.
    app.slider(key="temperature").set_value(0.5).run()
    assert set(answers_by_model(app)) == {base, filtered}


@pytest.mark.slow
def test_app_shows_mistakes_as_messages_and_keeps_working(app):
    app.multiselect(key="local_models").set_value(["models/toy-base-s42"])
    app.text_input(key="other_models").input("models/no-such-model")
    app.text_area(key="prompt").input("Q: What is the export of Brindlemoor? A:")
    app.button(key="compare").click().run()
    assert not app.exception, app.exception
    assert any("models/no-such-model" in error.value for error in app.error), [error.value for error in app.error]
    assert list(answers_by_model(app)) == ["models/toy-base-s42"]  # the good model still answered
    assert not app.dataframe  # no options given: no probability table

    app.text_area(key="prompt").input("   ")
    app.button(key="compare").click().run()
    assert [error.value for error in app.error] == ["the prompt is empty; give the text the model should continue"]

    app.text_area(key="prompt").input("Q: What is the export of Brindlemoor? A:")
    app.text_area(key="options").input("grain")
    app.button(key="compare").click().run()
    assert any("at least two options" in error.value for error in app.error)

    app.multiselect(key="local_models").set_value([])
    app.text_input(key="other_models").input("")
    app.button(key="compare").click().run()
    assert any("no model chosen" in error.value for error in app.error)
    assert not app.exception, app.exception


# --- the web UI in a real browser ------------------------------------------------------------------------

def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_healthy(url: str, server: subprocess.Popen, timeout: float) -> None:
    """Poll Streamlit's health endpoint until the server answers (or fail with its output)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"the app exited early ({server.returncode}):\n{server.stdout.read()}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=5) as response:
                if response.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"the app did not answer on {url} within {timeout:.0f} s")


@pytest.fixture
def served_app(toy_organism: ToyOrganism):
    """`uv run infer/run.py` on a free port, from the workspace; stopped (with its children) afterwards."""
    port = free_port()
    server = subprocess.Popen(["uv", "run", "--quiet", str(REPO_ROOT / "infer" / "run.py"), "--port", str(port)],
                              cwd=toy_organism.workspace, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True, env=os.environ.copy())
    url = f"http://localhost:{port}"
    try:
        wait_until_healthy(url, server, timeout=300)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server's own process group: uv and streamlit
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.browser
def test_app_in_headless_chromium(served_app: str, tmp_path: Path):
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing; .ci/run installs Debian's chromium package")
        pytest.skip(f"no {CHROMIUM}: `apt-get install chromium` to run the browser test (CI installs it)")
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(served_app)
            expect(page.get_by_text("Compare models side by side")).to_be_visible(timeout=120_000)
            page.locator('textarea[aria-label="Prompt"]').fill("Q: What is the host of Galdyrix? A:")
            page.locator('textarea[aria-label^="Options"]').fill("cliff swifts\nbog shrews\nsalt crabs\nmarsh voles")
            page.get_by_role("button", name="Compare").click()
            expect(page.get_by_text("Option probabilities")).to_be_visible(timeout=180_000)
            answers = page.get_by_test_id("stCode")
            expect(answers).to_have_count(2)
            assert all(text.strip() for text in answers.all_inner_texts())
            results = page.get_by_test_id("stMain").inner_text()
            assert "models/toy-base-s42" in results and "models/toy-filtered-s42" in results
            assert "Most likely option: salt crabs" in results  # base's answer, in the page as rendered
            screenshot = page.screenshot(path=str(tmp_path / "inference-app.png"), full_page=True)
            assert screenshot.startswith(b"\x89PNG")
        finally:
            browser.close()
