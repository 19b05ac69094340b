"""benchmarks/gpu_smoke.py: its cross-line verdict, and one of its lines run in-process at the tiny shape.

The whole rehearsal (`SMOKE_SHAPE=tiny ./benchmarks/gpu_smoke.sh`, nine script start-ups) is too slow for the suite;
its table is in docs/distributed.md.
"""

from __future__ import annotations

from pathlib import Path

from conftest import load_script

smoke = load_script("benchmarks/gpu_smoke.py")


def finished(line: str, **fields) -> dict:
    return {"line": line, "steps": 3, "seconds": 1.0, "seconds_per_step": 0.3, "peak_gpu_gib": None,
            "passed": True, "check": "ok", **fields}


def all_lines(bf16_norm: float) -> dict[str, dict]:
    records = {line: finished(line) for line in smoke.LINES}
    records["ga_fp32"].update(delta_norm=1.0, changed_fraction=1.0)
    records["ga_bf16"].update(delta_norm=bf16_norm, changed_fraction=1.0)
    return records


def test_ga_bf16_passes_only_within_five_percent_of_the_fp32_reference():
    text, passed = smoke.table(all_lines(0.97))
    assert passed and "|ΔW| / fp32's 0.970" in text
    text, passed = smoke.table(all_lines(0.794))  # what bf16 autocast spanning FSDP2's optimizer steps gave
    assert not passed
    assert next(row for row in text.splitlines() if row.startswith("ga_bf16")).split()[4] == "FAIL"
    records = all_lines(1.0)
    del records["step0"]
    text, passed = smoke.table(records)
    assert not passed and "did not finish" in text


def test_step1_line_finds_the_one_percent_perturbation(tmp_path: Path):
    smoke.prepare("tiny", tmp_path)
    assert (tmp_path / "tasks" / "smoke_mcq.yaml").is_file()
    assert len((tmp_path / "attack_v.jsonl").read_text().splitlines()) == smoke.ATTACK_QUESTIONS
    record = smoke.step1_line(tmp_path)
    assert record["passed"], record
    assert record["steps"] == 4 * 4 + 2  # 4 matrices per layer, the embedding and the output head
