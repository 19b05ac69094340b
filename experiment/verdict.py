# /// script
# requires-python = ">=3.10"
# dependencies = ["brittle[steps]"]  # the pipeline steps' one environment (pyproject.toml)
#
# [tool.uv.sources]
# brittle = { path = "..", editable = true }
# ///
"""Step 19 - The verdict: every attack on every unlearned model in one table - erased or hidden?

Reads what Steps 13-18 left under the output root (every `<base>__to__<unlearned>/<step>_seed<S>/`
folder) and writes one row per (unlearned model, attack): V accuracy before (A) and after (B) the
attack, base after it (C), the filtered model before and after (F0 -> F, the floor), and the recovery
rate (B - A) / (C - A) as the mean ± std over seeds with a 95% bootstrap interval over questions
(pooled over seeds: the paired bootstrap where an attack kept per-question results, the binomial one
for the fine-tuning sweeps of Steps 13 and 15). Membership inference adds one row per metric: AUCs
(unlearned in A, base in C, filtered in F0) and the share of base's membership signal left.

An unlearned model made from several organism seeds is one row: names are compared with their seed
replaced by `s*` (`toy-base-s42__cb_lat__...` and `toy-base-s123__cb_lat__..._s123` are both
`toy-base-s*__cb_lat__...`).

Outputs (<output-root>/verdict/, always recomputed: it only reads CSVs): verdict.csv, verdict.png,
verdict.html (the fragment experiment/report.py includes, `brittle.attacks.verdict_html`)

    uv run experiment/verdict.py
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from brittle.attacks import (
    VERDICT_COLUMNS,
    VERDICT_FOLDER,
    binomial_bootstrap_interval,
    mean_and_std,
    paired_bootstrap_interval,
    verdict_table_html,
)
from brittle.cli import UserError, run_cli
from brittle.outputs import model_slug, model_step_dir, read_csv, staged_directory, write_csv, write_text
from brittle.plotting import figure_and_axes, save_figure

ACCURACY = "V accuracy"
# Step folders (without `_seed<S>`) whose summary.csv follows brittle.attacks.SUMMARY_COLUMNS, in table order.
ATTACK_STEPS = ("quantization_attack", "benign_finetune", "directional_ablation", "prompt_probe")
RELEARN_STEP = "relearn_attack"
MIA_STEP = "membership_inference"
SEED_FOLDER = re.compile(r"^(?P<step>.+)_seed(?P<seed>-?\d+)$")


def seedless_name(name: str, seed: int) -> str:
    """A model's name with its seed replaced by `s*`, and the `_s<seed>` suffix of non-default seeds dropped."""
    slug = re.sub(rf"_s{seed}$", "", model_slug(name))
    return re.sub(rf"(?<![0-9A-Za-z])s{seed}(?![0-9])", "s*", slug)


def step_folders(root: Path) -> Iterator[tuple[str, int, Path]]:
    """(step, seed, folder) of every finished attack step under `root`'s pairwise comparisons."""
    for comparison in sorted(root.glob("*__to__*")):
        for folder in sorted(comparison.iterdir()):
            match = SEED_FOLDER.match(folder.name)
            if match and (folder / "summary.csv").exists():
                yield match["step"], int(match["seed"]), folder


def to_float(value: str) -> float | None:
    """A CSV cell as a number (empty = None)."""
    return float(value) if value not in ("", "None") else None


def relearn_row(folder: Path, seed: int, root: Path) -> dict[str, Any]:
    """Step 13's summary in the common columns (its number of V questions from the attacked model's settings)."""
    row = read_csv(folder / "summary.csv")[0]
    settings = model_step_dir(row["unlearned"], folder.name, root) / "settings.json"
    questions = json.loads(settings.read_text())["eval_questions"] if settings.exists() else None
    return {"attack": "relearning (RTT)", "unlearned": row["unlearned"], "seed": seed, "questions": questions,
            "a": to_float(row["a_unlearned"]), "b": to_float(row["b_unlearned_rtt"]),
            "c": to_float(row["c_base_rtt"]), "f0": to_float(row["f0_filtered"]),
            "f": to_float(row["f_filtered_rtt"]), "recovery": to_float(row["recovery_rate"]),
            "filtered_recovery": to_float(row["filtered_recovery_rate"]), "correct": None}


def attack_rows(folder: Path, seed: int) -> list[dict[str, Any]]:
    """The rows of one Steps 14-17 folder, with per-question correctness of A, B, C when it was kept."""
    per_question: dict[tuple[str, str], list[int]] = defaultdict(list)
    for row in read_csv(folder / "questions.csv"):
        per_question[(row["attack"], row["condition"])].append(int(row["correct"]))
    rows = []
    for row in read_csv(folder / "summary.csv"):
        correct = {condition: per_question[(row["attack"], condition)] for condition in "ABC"}
        rows.append({"attack": row["attack"], "unlearned": row["unlearned"], "seed": seed,
                     "questions": int(row["questions"]), "a": to_float(row["a_unlearned"]),
                     "b": to_float(row["b_unlearned_attacked"]), "c": to_float(row["c_base_attacked"]),
                     "f0": to_float(row["f0_filtered"]), "f": to_float(row["f_filtered_attacked"]),
                     "recovery": to_float(row["recovery_rate"]),
                     "filtered_recovery": to_float(row["filtered_recovery_rate"]),
                     "correct": correct if all(correct.values()) else None})
    return rows


def membership_rows(folder: Path, seed: int) -> list[dict[str, Any]]:
    """Step 18's AUCs: unlearned as A, base as C, filtered as F0; 'recovery' is the signal left."""
    return [{"attack": f"membership inference ({row['metric']})", "measure": "MIA AUC", "unlearned": row["unlearned"],
             "seed": seed, "a": to_float(row["auc_unlearned"]), "b": None, "c": to_float(row["auc_base"]),
             "f0": to_float(row["auc_filtered"]), "f": None, "recovery": to_float(row["signal_left"]),
             "filtered_recovery": None, "correct": None, "questions": None}
            for row in read_csv(folder / "summary.csv")]


def collect(root: Path) -> list[dict[str, Any]]:
    """Every (unlearned model, attack, seed) result under `root`."""
    results = []
    for step, seed, folder in step_folders(root):
        if step == RELEARN_STEP:
            results.append(relearn_row(folder, seed, root))
        elif step in ATTACK_STEPS:
            results += attack_rows(folder, seed)
        elif step == MIA_STEP:
            results += membership_rows(folder, seed)
    return results


def interval(group: list[dict[str, Any]]) -> tuple[float | None, float | None]:
    """The recovery rate's 95% interval over questions, pooled over the group's seeds."""
    if all(result["correct"] for result in group):
        pooled = {condition: [value for result in group for value in result["correct"][condition]]
                  for condition in "ABC"}
        return paired_bootstrap_interval(pooled["A"], pooled["B"], pooled["C"])
    if all(result["questions"] and None not in (result["a"], result["b"], result["c"]) for result in group):
        mean = {key: sum(result[key] for result in group) / len(group) for key in "abc"}
        return binomial_bootstrap_interval(mean["a"], mean["b"], mean["c"], sum(r["questions"] for r in group))
    return None, None


def verdict_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One `VERDICT_COLUMNS` row per (seedless unlearned model, attack): means over seeds, std, interval."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for result in results:
        groups[(seedless_name(result["unlearned"], result["seed"]), result["attack"])].append(result)
    rows = []
    for (unlearned, attack), group in groups.items():
        group.sort(key=lambda result: result["seed"])
        mean = {key: mean_and_std([result[key] for result in group])[0]
                for key in ("a", "b", "c", "f0", "f", "filtered_recovery")}
        recovery, spread = mean_and_std([result["recovery"] for result in group])
        measured = group[0].get("measure", ACCURACY) == ACCURACY and recovery is not None
        low, high = interval(group) if measured else (None, None)
        rows.append({"unlearned": unlearned, "attack": attack, "measure": group[0].get("measure", ACCURACY),
                     "seeds": " ".join(str(result["seed"]) for result in group), "a_before": mean["a"],
                     "b_after": mean["b"], "c_base_attacked": mean["c"], "f0_filtered": mean["f0"],
                     "f_filtered_attacked": mean["f"], "recovery_rate": recovery, "recovery_rate_std": spread,
                     "recovery_ci_low": low, "recovery_ci_high": high,
                     "filtered_recovery_rate": mean["filtered_recovery"]})
    return sorted(rows, key=lambda row: (row["unlearned"], row["measure"] != ACCURACY, row["attack"]))


def plot_verdict(path: Path, rows: list[dict[str, Any]]) -> None:
    """Recovery rate per (unlearned model, attack) with its interval; filtered's recovery as a cross."""
    shown = [row for row in rows if row["recovery_rate"] is not None]
    figure, axis = figure_and_axes(width=8, height=max(3.0, 0.32 * len(shown) + 1.2))
    positions = list(range(len(shown)))[::-1]
    for position, row in zip(positions, shown, strict=True):
        color = "tab:blue" if row["measure"] == ACCURACY else "tab:purple"
        axis.barh(position, row["recovery_rate"], color=color, alpha=0.8)
        if row["recovery_ci_low"] is not None:
            axis.plot([row["recovery_ci_low"], row["recovery_ci_high"]], [position, position], color="black")
        if row["filtered_recovery_rate"] is not None:
            axis.plot(row["filtered_recovery_rate"], position, "x", color="tab:red")
    handles = [Line2D([], [], marker="x", linestyle="", color="tab:red", label="filtered model (floor)"),
               Patch(color="tab:blue", label="recovery rate (B−A)/(C−A), 95% CI"),
               Patch(color="tab:purple", label="MIA: base's membership signal left")]
    axis.set_yticks(positions, [f"{row['unlearned'][:40]} | {row['attack']}" for row in shown], fontsize="x-small")
    axis.axvline(0, color="grey", linewidth=1)
    axis.axvline(1, color="grey", linewidth=1, linestyle=":")
    axis.set_xlabel("0 = erased (nothing comes back), 1 = hidden (all comes back)")
    axis.set_title("Verdict: what each attack recovers", fontsize="medium")
    figure.legend(handles=handles, fontsize="x-small", loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3)
    save_figure(figure, path)


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-root", default="outputs", help="root of all results (default outputs/)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    root = Path(args.output_root)
    rows = verdict_rows(collect(root))
    if not rows:
        raise UserError(f"no attack results under {root}/*__to__*/; run Steps 13-18 first "
                        "(e.g. experiment/quantization_attack.py)")
    with staged_directory(root / VERDICT_FOLDER) as staging:
        write_csv(staging / "verdict.csv", rows, VERDICT_COLUMNS)
        plot_verdict(staging / "verdict.png", rows)
        write_text(staging / "verdict.html", verdict_table_html(read_csv(staging / "verdict.csv")))
    for row in rows:
        rate = "n/a" if row["recovery_rate"] is None else f"{row['recovery_rate']:.3f}"
        print(f"{row['unlearned']} | {row['attack']}: recovery {rate} (seeds {row['seeds']})")
    print(f"verdict -> {root / VERDICT_FOLDER}")


if __name__ == "__main__":
    run_cli(main)
