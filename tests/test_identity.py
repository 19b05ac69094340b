"""Results that cannot be mistaken: identity-checked skips, one-line errors, `.env`, the data protocol.

Every test here reproduces one way a user got a silently wrong result or a traceback (issue 14) and
checks that it now gives the right result or one `error:` line. Models are the session's organism;
"another model with the same folder name" is the filtered model copied to `<elsewhere>/toy-base-s42`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from brittle import outputs
from brittle.cli import UserError, run_cli
from brittle.identity import IDENTITY_FILE, Identity, read_identity
from brittle.outputs import read_jsonl, write_json, write_jsonl
from conftest import ToyOrganism, load_script

# ---- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def impostor(toy_organism: ToyOrganism, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A different model (the filtered one) in a folder with base's name: `<elsewhere>/toy-base-s42`."""
    folder = tmp_path_factory.mktemp("elsewhere") / toy_organism.base.name
    shutil.copytree(toy_organism.filtered, folder)
    return folder


def step_identity(model: Path | str, **settings) -> Identity:
    return Identity.of(models={"model": model}, settings={"tasks": ["toy_forget_mcq"], **settings})


# ---- identity-checked skips ------------------------------------------------------------------------

def test_a_step_folder_of_another_model_with_the_same_name_is_not_reused(toy_organism: ToyOrganism, impostor: Path,
                                                                        tmp_path: Path, capsys):
    folder = outputs.model_step_dir(str(toy_organism.base), "evals", tmp_path)
    assert folder == outputs.model_step_dir(str(impostor), "evals", tmp_path)  # same folder name...
    with outputs.staged_directory(folder, identity=step_identity(toy_organism.base)) as staging:
        write_json(staging / "summary.json", {"toy_forget_mcq": {"acc": 0.9}})
    recorded = read_identity(folder)
    assert recorded["models"]["model"]["source"] == str(toy_organism.base.resolve())
    assert recorded["environment"]["python"] and "torch" in recorded["environment"]["packages"]

    # ...but another model: recomputed, with one note naming what differs.
    assert not outputs.skip_if_complete(folder, what="Step 0", identity=step_identity(impostor))
    captured = capsys.readouterr()
    assert "skipped" not in captured.out
    assert captured.err.count("\n") == 1 and captured.err.startswith("note: not reusing")
    assert "model model differs" in captured.err
    # Other settings: recomputed too; the same model (even copied elsewhere) and settings: skipped.
    assert not outputs.skip_if_complete(folder, identity=step_identity(toy_organism.base, limit=5))
    assert "settings differ: limit None -> 5" in capsys.readouterr().err
    copy = tmp_path / "copied" / toy_organism.base.name
    shutil.copytree(toy_organism.base, copy)
    assert outputs.skip_if_complete(folder, what="Step 0", identity=step_identity(copy))
    assert capsys.readouterr().out.startswith("skipped: Step 0 already done")


def test_a_folder_without_a_recorded_identity_is_recomputed(toy_organism: ToyOrganism, tmp_path: Path, capsys):
    (tmp_path / "evals").mkdir()
    assert not outputs.skip_if_complete(tmp_path / "evals", identity=step_identity(toy_organism.base))
    assert f"records no {IDENTITY_FILE}" in capsys.readouterr().err


def test_a_retrained_model_in_the_same_folder_changes_its_fingerprint(toy_organism: ToyOrganism, tmp_path: Path):
    model = tmp_path / "model"
    shutil.copytree(toy_organism.base, model)
    before = Identity.of(models={"model": model}).inputs()
    shutil.copy(toy_organism.filtered / "model.safetensors", model / "model.safetensors")  # same size and shapes
    assert Identity.of(models={"model": model}).inputs() != before


def test_staging_folders_of_killed_runs_are_removed(tmp_path: Path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = outputs._host()
    stale = tmp_path / f".step.partial-{dead.pid}@{host}-abcd1234"
    stale.mkdir()
    (stale / "half.csv").write_text("a\n")
    alive = tmp_path / f".step.partial-{os.getpid()}@{host}-efgh5678"  # a run still writing: left alone
    alive.mkdir()
    with outputs.staged_directory(tmp_path / "step") as staging:
        (staging / "done.txt").write_text("ok")
    assert not stale.exists() and alive.exists()
    assert f"process {dead.pid} is gone" in capsys.readouterr().err
    shutil.rmtree(alive)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["step"]


@pytest.mark.parametrize("blocker", ["file", "parent-file", "read-only"])
def test_an_output_folder_that_cannot_be_written_is_refused_before_any_model_loads(tmp_path: Path, blocker: str):
    eval_script = load_script("experiment/eval.py")
    target = tmp_path / "out"
    if blocker == "file":
        target.write_text("not a folder")
    elif blocker == "parent-file":
        (tmp_path / "file").write_text("x")
        target = tmp_path / "file" / "out"
    else:
        if os.geteuid() == 0:
            pytest.skip("root can write anywhere")
        (tmp_path / "locked").mkdir(mode=0o500)
        target = tmp_path / "locked" / "out"
    # A model that does not exist: the check must come first, or this would be the error.
    arguments = ["eval.py", "--model", "nowhere/no-model", "--preset", "toy", "--outdir", str(target)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", arguments)
        with pytest.raises(UserError, match="output folder"):
            eval_script.main()


def test_an_unlearning_run_is_recognised_by_its_data_not_only_its_hyperparameters(toy_organism: ToyOrganism,
                                                                                   tmp_path: Path, monkeypatch):
    unlearn = load_script("unlearn/unlearn.py")
    monkeypatch.chdir(toy_organism.workspace)
    two_lines = tmp_path / "forget.txt"
    lines = (toy_organism.data / "forget.txt").read_text().splitlines()
    two_lines.write_text(f"{lines[0]}\n{lines[1]}\n")

    def named(*extra: str) -> str:
        args, defaults = unlearn.resolve_settings(unlearn.parse_arguments(["--method", "ga", "--preset", "toy",
                                                                           *extra]), unlearn.get_preset("toy", 42))
        return unlearn.run_name(args.model, args.method, args, defaults)

    default = named()
    assert named("--forget-data", str(toy_organism.data / "forget.txt")) == default  # the default, named explicitly
    other = named("--forget-data", str(two_lines))
    assert other != default and other.startswith(default + "_d")


@pytest.mark.slow
def test_a_finished_run_is_retrained_when_its_data_changed_in_place(toy_organism: ToyOrganism, tmp_path: Path,
                                                                    monkeypatch, capsys):
    unlearn = load_script("unlearn/unlearn.py")
    monkeypatch.chdir(toy_organism.workspace)
    forget = tmp_path / "forget.txt"
    lines = (toy_organism.data / "forget.txt").read_text().splitlines()
    forget.write_text("\n".join(lines[:8]) + "\n")
    outdir = tmp_path / "run"
    arguments = ["unlearn.py", "--method", "ga", "--preset", "toy", "--forget-data", str(forget), "--max-steps", "1",
                 "--no-eval", "--device", "cpu", "--outdir", str(outdir)]
    monkeypatch.setattr(sys, "argv", arguments)
    unlearn.main()
    assert json.loads((outdir / IDENTITY_FILE).read_text())["data"]["forget"]["path"] == str(forget.resolve())
    capsys.readouterr()
    unlearn.main()
    assert capsys.readouterr().out.startswith("skipped: ga run")

    forget.write_text("\n".join(lines[8:16]) + "\n")  # same file, other texts
    unlearn.main()
    captured = capsys.readouterr()
    assert "skipped" not in captured.out
    assert "forget data differs" in captured.err


def test_pre_flight_ignores_the_step_0_of_another_model_with_the_same_name(toy_organism: ToyOrganism,
                                                                           impostor: Path, tmp_path: Path):
    from brittle.evaluation import step0_accuracy as step0_forget_accuracy

    folder = outputs.model_step_dir(str(impostor), "evals", tmp_path)
    with outputs.staged_directory(folder, identity=Identity.of(models={"model": impostor})) as staging:
        write_json(staging / "summary.json", {"toy_forget_mcq": {"acc": 0.26}})
    assert step0_forget_accuracy(str(toy_organism.base), "toy_forget_mcq", tmp_path) is None
    assert step0_forget_accuracy(str(impostor), "toy_forget_mcq", tmp_path) == 0.26


@pytest.mark.slow
def test_the_attack_on_another_model_with_the_same_name_is_not_reused(toy_organism: ToyOrganism, impostor: Path,
                                                                      tmp_path: Path, capsys):
    relearn = load_script("experiment/relearn_attack.py")
    questions = read_jsonl(toy_organism.data / "questions" / "forget_t.jsonl")[:8]
    args = SimpleNamespace(seed=42, output_root=tmp_path, force=False, epochs=1, batch_size=4, max_length=64,
                           eval_batch_size=16, device="cpu", dtype="fp32", train_questions=None, eval_questions=None,
                           attn_implementation="auto", gradient_checkpointing="auto")
    base_rows = relearn.attacked_runs(str(toy_organism.base), questions[:4], questions[4:], [1e-3], args)
    capsys.readouterr()
    other_rows = relearn.attacked_runs(str(impostor), questions[:4], questions[4:], [1e-3], args)
    assert "reusing" not in capsys.readouterr().out
    assert [row["model"] for row in other_rows] == [str(impostor)] * len(other_rows)
    assert relearn.attacked_runs(str(impostor), questions[:4], questions[4:], [1e-3], args) == other_rows
    assert "reusing" in capsys.readouterr().out
    assert base_rows != other_rows


# ---- silent data bugs --------------------------------------------------------------------------------

def test_sample_weights_must_be_numbers_not_booleans(tmp_path: Path):
    from brittle.sample_weights import read_sample_weights

    data = tmp_path / "forget.txt"
    data.write_text("one\ntwo\n")
    weights = tmp_path / "weights.jsonl"
    for bad in ('{"weight": true}', "true", '{"weight": "1.5"}'):
        weights.write_text(f'{{"weight": 1.0}}\n{bad}\n')
        with pytest.raises(UserError, match="line 2 is not a weight"):
            read_sample_weights(weights, data, "forget")
    weights.write_text('{"weight": 1}\n0.5\n')
    assert read_sample_weights(weights, data, "forget") == [1.0, 0.5]


def test_one_entity_per_domain_is_refused_rather_than_an_empty_half(tmp_path: Path, monkeypatch):
    create = load_script("create_datasets.py")
    monkeypatch.setattr(sys, "argv", ["create_datasets.py", "--preset", "toy", "--entities", "1",
                                      "--data-dir", str(tmp_path / "toy")])
    with pytest.raises(UserError, match="--entities must be at least 2"):
        create.main()
    assert list(tmp_path.iterdir()) == []


def test_copied_data_keeps_working_task_files(toy_organism: ToyOrganism, tmp_path: Path):
    from brittle.evaluation import task_manager

    copy = tmp_path / "copy"
    shutil.copytree(toy_organism.data, copy)
    yaml_text = (copy / "tasks" / "toy_forget_mcq_t.yaml").read_text()
    assert str(toy_organism.workspace) not in yaml_text  # no absolute path into the original workspace
    moved = tmp_path / "moved"
    copy.rename(moved)
    manager = task_manager([moved / "tasks"], ["toy_forget_mcq_t"])
    from lm_eval.tasks import get_task_dict

    task = get_task_dict(["toy_forget_mcq_t"], manager)["toy_forget_mcq_t"]
    assert len(task.eval_docs) == len(read_jsonl(moved / "questions" / "forget_t.jsonl"))


# ---- one line, not a traceback -------------------------------------------------------------------------

def test_a_truncated_weight_file_is_one_line_from_every_loader(toy_organism: ToyOrganism, tmp_path: Path):
    from brittle.models import check_model_reference, load_model

    broken = tmp_path / "broken"
    shutil.copytree(toy_organism.base, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    for loader in (check_model_reference, load_model):
        with pytest.raises(UserError, match=r"model\.safetensors is truncated or corrupt"):
            loader(str(broken))


def test_argparse_type_errors_are_one_line(capsys):
    def main() -> None:
        parser = argparse.ArgumentParser(prog="step.py")
        parser.add_argument("--seed", type=int, default=42)
        parser.add_argument("--other", default=None, help="x" * 300)
        parser.parse_args(["--seed", "abc"])

    with pytest.raises(SystemExit) as exit_info:
        run_cli(main)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("error: step.py: argument --seed: invalid int value: 'abc'")


def test_a_wandb_key_that_cannot_log_is_a_note_and_the_run_goes_on(monkeypatch, capsys):
    pytest.importorskip("wandb")
    from brittle.tracking import finished_wandb_run_exists, log_to_wandb

    secret = "0123456789abcdef0123456789abcdef01234567"
    monkeypatch.setenv("WANDB_API_KEY", secret)
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "5")
    log_to_wandb("brittle-test", "run", {"a": 1}, {"acc": 0.5})
    assert not finished_wandb_run_exists("brittle-test", "run")
    captured = capsys.readouterr()
    assert "note: could not log to W&B" in captured.out
    assert secret not in captured.out + captured.err


def test_every_entry_point_loads_dotenv_and_never_prints_secrets(tmp_path: Path, monkeypatch, capsys):
    secret = "hf_never_print_me_0123456789"
    (tmp_path / ".env").write_text(f"HF_TOKEN={secret}\nBRITTLE_DOTENV_PROBE=loaded\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("BRITTLE_DOTENV_PROBE", raising=False)
    seen = {}
    run_cli(lambda: seen.update(probe=os.environ.get("BRITTLE_DOTENV_PROBE")))
    assert seen == {"probe": "loaded"}
    captured = capsys.readouterr()
    assert secret not in captured.out + captured.err
    # Every script's entry point goes through run_cli (the Streamlit app loads .env itself).
    repository = Path(__file__).resolve().parents[1]
    scripts = [path for folder in ("", "experiment", "unlearn", "unlearn/analysis", "infer")
               for path in (repository / folder).glob("*.py") if '__name__ == "__main__"' in path.read_text()]
    assert scripts and [path.name for path in scripts if "run_cli(" not in path.read_text()] == []
    assert "load_environment()" in (repository / "infer" / "app.py").read_text()


# ---- the real data protocol (offline, on local files in the hub datasets' schemas) -----------------

def test_mmlu_is_a_seeded_uniform_sample_over_its_subjects():
    from brittle.evaluation import sample_questions

    sizes = {f"mmlu_subject_{index}": 100 + 10 * index for index in range(57)}
    first = sample_questions(sizes, 1000, seed=42)
    assert sum(map(len, first.values())) == 1000
    assert first == sample_questions(sizes, 1000, seed=42) and first != sample_questions(sizes, 1000, seed=43)
    assert all(0 <= index < sizes[subject] for subject, indices in first.items() for index in indices)
    # Uniform over questions: big subjects get proportionally more (not the first 18 of each).
    assert len(first["mmlu_subject_56"]) > 2 * len(first["mmlu_subject_0"])


def test_a_group_task_is_scored_on_a_seeded_sample_of_its_questions(toy_organism: ToyOrganism, tmp_path: Path):
    from brittle.evaluation import evaluate_model
    from brittle.models import load_model_and_tokenizer

    group = tmp_path / "group"
    group.mkdir()
    (group / "toy_group.yaml").write_text("group: toy_group\ntask:\n  - toy_forget_mcq_t\n  - toy_forget_mcq_v\n"
                                          "aggregate_metric_list:\n  - metric: acc\n    weight_by_size: true\n")
    model, tokenizer = load_model_and_tokenizer(str(toy_organism.base), device="cpu")
    summary = evaluate_model(model, tokenizer, ["toy_group"], [toy_organism.data / "tasks", group], mmlu_limit=12,
                             seed=1, sampled_groups=("toy_group",))
    assert summary["toy_group"]["samples"] == 12
    assert sum(summary[name]["samples"] for name in ("toy_forget_mcq_t", "toy_forget_mcq_v") if name in summary) == 12
    assert 0 <= summary["toy_group"]["acc"] <= 1


def wmdp_rows(count: int) -> list[dict]:
    """Rows in cais/wmdp's schema (question, choices, answer), with near-duplicate pairs."""
    rows = []
    for index in range(count):
        rows.append({"question": f"Which agent number {index} is described in protocol {index * 7}?",
                     "choices": [f"a{index}", f"b{index}", f"c{index}", f"d{index}"], "answer": index % 4})
    rows.append({**rows[3], "question": rows[3]["question"].upper() + "  "})  # a near duplicate of row 3
    rows.append({**rows[5], "question": rows[5]["question"].replace("?", " ?")})
    return rows


def test_real_t_and_v_halves_share_no_question_and_the_split_is_written_down(tmp_path: Path):
    create = load_script("create_datasets.py")
    rows = wmdp_rows(40)
    half_t, half_v = create.split_questions_without_duplicates(rows, seed=42)
    keys = [{create.question_key(row) for row in half} for half in (half_t, half_v)]
    assert not keys[0] & keys[1] and len(half_t) + len(half_v) == len(rows)
    assert abs(len(half_t) - len(half_v)) <= 2


def test_a_forget_corpus_must_not_contain_the_evaluation_questions(tmp_path: Path):
    create = load_script("create_datasets.py")
    rows = wmdp_rows(6)
    corpus = [{"title": "t", "abstract": "a", "text": "Background text. " + rows[2]["question"] + " More."},
              {"title": "u", "abstract": "b", "text": "Unrelated biology text about cells."}]
    with pytest.raises(UserError, match=r"1 forget text.*contain.*evaluation question.*--allow-eval-in-forget"):
        create.check_no_evaluation_questions([row["text"] for row in corpus], rows, allow=False)
    create.check_no_evaluation_questions([row["text"] for row in corpus[1:]], rows, allow=False)
    create.check_no_evaluation_questions([row["text"] for row in corpus], rows, allow=True)  # warned, allowed


def test_real_data_from_local_files_in_the_hub_schemas(tmp_path: Path):
    create = load_script("create_datasets.py")
    questions = tmp_path / "wmdp_bio.jsonl"
    write_jsonl(questions, wmdp_rows(30))
    corpus = tmp_path / "bio_forget.jsonl"
    write_jsonl(corpus, [{"title": f"paper {i}", "abstract": "...", "text": f"Virology paper number {i} body.",
                          "doi": f"10/{i}"} for i in range(12)])
    wikitext = tmp_path / "wikitext.jsonl"
    write_jsonl(wikitext, [{"text": f" Paragraph {i} about a river and a city, long enough to count. " * 5}
                           for i in range(12)] + [{"text": " = Heading = "}])
    bio_retain = tmp_path / "bio_retain.jsonl"
    write_jsonl(bio_retain, [{"text": f"Safe biology text {i}: photosynthesis in plant leaf number {i}."}
                             for i in range(6)])
    data = tmp_path / "data"
    create.create_real_datasets(data, num_samples=10, seed=42, sources=create.RealSources(
        questions=str(questions), forget_corpus=str(corpus), wikitext=str(wikitext), bio_retain=str(bio_retain)))
    forget = (data / "forget.txt").read_text().splitlines()
    retain = (data / "retain.txt").read_text().splitlines()
    assert len(forget) == 10 and all(line.startswith("Virology paper") for line in forget)
    assert any(line.startswith("Safe biology") for line in retain) and any("river" in line for line in retain)
    split = json.loads((data / "questions" / "split.json").read_text())
    assert split["t_questions"] + split["v_questions"] == 32 and split["shared_between_halves"] == 0


def test_the_identity_of_vision_language_records_hashes_their_pictures(tmp_path: Path) -> None:
    """A JSONL of {image, question, answer} records is identified by the pictures it names too: repainting one
    (same file name, same JSONL) is other data, so a finished run on the old pictures is not reused."""
    from PIL import Image

    (tmp_path / "images").mkdir()
    for name, colour in (("a", (200, 0, 0)), ("b", (0, 200, 0))):
        Image.new("RGB", (8, 8), colour).save(tmp_path / "images" / f"{name}.png")
    records = tmp_path / "forget_qa.jsonl"
    write_jsonl(records, [{"image": f"images/{name}.png", "question": "Who?", "answer": name} for name in "ab"])
    before = Identity.of(data={"forget": records})
    assert Identity.of(data={"forget": records}).differences(before.record()) == []  # stable
    Image.new("RGB", (8, 8), (0, 0, 200)).save(tmp_path / "images" / "b.png")
    assert Identity.of(data={"forget": records}).differences(before.record()) == [
        f"forget data differs (recorded {records}, now {records})"]
