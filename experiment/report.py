# /// script
# requires-python = ">=3.10"
# dependencies = ["brittle[steps]"]  # the pipeline steps' one environment (pyproject.toml)
#
# [tool.uv.sources]
# brittle = { path = "..", editable = true }
# ///
"""The last pipeline step: one self-contained HTML page of every comparison's mechanistic signature.

It reads only what the steps wrote (CSV and JSON under the output root), never a model, and puts the
comparisons side by side, one row per question of the deep-ignorance study's "Big Picture" table plus the relearning
attack (Step 13). A number that cannot be read says so in its cell and in the "Missing" list at the
end, naming the step that writes it; the page is still written.

With several seeds (the pipeline's `SEEDS="42 123"`) every comparison label (e.g. "COMP2 Base ->
Unlearned") has one instance per seed, and each cell shows mean ± std over the seeds, with n.

    uv run experiment/report.py --preset toy \\
        --comparison "COMP1 Base -> Filtered" models/toy-base-s42 models/toy-filtered-s42 \\
        --comparison "COMP2 Base -> Unlearned" models/toy-base-s42 unlearned_models/toy-base-s42__cb_lat__...

`--manifest FILE` reads the comparisons from a file of `LABEL<TAB>MODEL_A<TAB>MODEL_B[<TAB>ATTACKED]` lines
(the pipeline writes one per seed to `outputs/.manifests/seed<S>.tsv`; ATTACKED is 0 for a comparison whose
model B the attack steps do not run on: its attack rows say n/a). Without either, it reports every
`<a>__to__<b>/` folder under the output root. Outputs:
`outputs/report.html` and `outputs/report_summary.csv` (label, level, measure, n, mean, std, values).
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from steps import step as registered_step

from brittle.attacks import verdict_html
from brittle.cli import UserError, run_cli
from brittle.outputs import DEFAULT_OUTPUT_ROOT, model_slug, read_csv, write_csv, write_text
from brittle.presets import get_preset
from brittle.tracking import log_to_wandb

COMPARISON_SEPARATOR = "__to__"


# --------------------------------------------------------------------------------------------------
# Reading the steps' files: small functions from one file to one number
# --------------------------------------------------------------------------------------------------

def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def column(rows: Sequence[dict[str, str]], name: str, **where: str) -> list[float]:
    """The float values of `name` in the rows matching every `where` condition (`split="forget"`)."""
    return [float(row[name]) for row in rows if all(row[key] == value for key, value in where.items())]


def mean(values: Sequence[float]) -> float:
    finite = [value for value in values if math.isfinite(value)]
    if not finite:
        raise ValueError("no finite values")
    return sum(finite) / len(finite)


def whole_model_relative_change(path: Path) -> float:
    """‖ΔW‖_F / ‖W‖_F over every weight matrix: the root-sum-square of the per-matrix norms."""
    rows = read_csv(path)
    return math.sqrt(sum(value**2 for value in column(rows, "dW_fro"))) / \
        math.sqrt(sum(value**2 for value in column(rows, "W_fro")))


def max_relative_spectral(path: Path) -> float:
    return max(column(read_csv(path), "dW_spectral_rel"))


def mean_stable_rank(path: Path) -> float:
    """Mean stable rank ‖ΔW‖_F² / ‖ΔW‖_2² over attention and MLP matrices (1 = a rank-one update)."""
    rows = [row for row in read_csv(path) if row["group"] in ("attn", "mlp")]
    return mean(column(rows, "dW_stable_rank"))


def mlp_share(path: Path) -> float:
    """MLP's share of the squared change ‖ΔW_mlp‖² / (‖ΔW_mlp‖² + ‖ΔW_attn‖²), from per_layer.csv."""
    rows = read_csv(path)
    mlp = sum(value**2 for value in column(rows, "dW_fro_layer", group="mlp"))
    attention = sum(value**2 for value in column(rows, "dW_fro_layer", group="attn"))
    return mlp / (mlp + attention)


def most_changed_depth(path: Path) -> float:
    """Depth (0 = first layer, 1 = last) of the layer with the largest relative change."""
    rows = [row for row in read_csv(path) if int(row["layer"]) >= 0]
    layers = sorted({int(row["layer"]) for row in rows})
    change = {layer: math.sqrt(sum(float(row["dW_fro_layer"]) ** 2 for row in rows if int(row["layer"]) == layer))
              / math.sqrt(sum(float(row["W_fro_layer"]) ** 2 for row in rows if int(row["layer"]) == layer))
              for layer in layers}
    return layers.index(max(change, key=change.get)) / max(len(layers) - 1, 1)


def activation_change(split: str) -> Callable[[Path], float]:
    """Mean over layers of E‖h_B − h_A‖₂ / E‖h_A‖₂ on one split's text."""
    def read(path: Path) -> float:
        rows = read_csv(path)
        return mean([delta / norm for delta, norm in zip(column(rows, "mean_dh_L2", split=split),
                                                         column(rows, "model_a_norm_L2", split=split), strict=True)])
    return read


def activation_selectivity(path: Path) -> float:
    """How much more forget activations change than retain ones (1 = no preference)."""
    return activation_change("forget")(path) / activation_change("retain")(path)


def json_value(*keys: str) -> Callable[[Path], float]:
    """The number at `keys` in a JSON file (a list there is averaged over its finite entries)."""
    def read(path: Path) -> float:
        value: Any = read_json(path)
        for key in keys:
            value = value[key]
        if isinstance(value, list):
            return mean([float(item) for item in value if item is not None])
        return float(value)
    return read


def csv_extreme(name: str, largest: bool = True) -> Callable[[Path], float]:
    """The largest (or smallest) value of one column."""
    def read(path: Path) -> float:
        values = column(read_csv(path), name)
        return max(values) if largest else min(values)
    return read


def csv_last(name: str) -> Callable[[Path], float]:
    """The column's value in the last row (the final layer of a per-layer table)."""
    return lambda path: column(read_csv(path), name)[-1]


def csv_mean(name: str, **where: str) -> Callable[[Path], float]:
    return lambda path: mean(column(read_csv(path), name, **where))


def lipschitz_ratio(split: str) -> Callable[[Path], float]:
    """Mean local Lipschitz estimate of B over that of A on one split (> 1: B is rougher)."""
    def read(path: Path) -> float:
        rows = read_csv(path)
        by_model = {row["model"]: float(row["lipschitz_mean"]) for row in rows if row["split"] == split}
        return by_model["model_b"] / by_model["model_a"]
    return read


def attack_before(path: Path) -> float:
    """V accuracy of the model before the attack (epoch 0 of its runs.csv)."""
    return column(read_csv(path), "v_accuracy", epoch="0")[0]


def attack_best(path: Path) -> float:
    """The best V accuracy over the attack's settings (learning rate, epoch)."""
    return max(float(row["v_accuracy"]) for row in read_csv(path) if int(row["epoch"]) > 0)


def recovery_rate(runs_b: Path, runs_a: Path) -> float:
    """(B − A) / (C − A): B = model B's best attacked V accuracy, A = its V accuracy before the attack,
    C = model A's best under the same attack (the base's, for comparisons that start at Base; for CB ->
    Unlearned, how much of CB's relearned accuracy the unlearned model reaches). For Base -> Filtered this
    is the filtered model's recovery."""
    before, after, ceiling = attack_before(runs_b), attack_best(runs_b), attack_best(runs_a)
    if ceiling - before <= 0:
        raise ValueError("undefined: model B was not below the attacked base before the attack")
    return (after - before) / (ceiling - before)


def eval_accuracy(task: str) -> Callable[[Path], float]:
    return json_value(task, "acc")


# --------------------------------------------------------------------------------------------------
# The page's rows: the Big Picture questions and what answers each
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Measure:
    """One number of the report: a file a step writes, relative to a folder, and how to read it.

    `step` is the step's name in experiment/steps.py (a misspelt one raises at import, listing the steps);
    `file` lies in the step's results folder, or in `folder`, another folder the step writes. `scope` says
    which unit folder: the comparison's (`outputs/<a>__to__<b>/`), model A's or model B's (`outputs/<model>/`).
    The folder may be a glob (e.g. one relearning folder per seed); every match is one sample. A `paired`
    measure reads B's file and the file at the same place under model A.
    """

    label: str
    step: str
    scope: str
    file: str
    read: Callable[..., float]
    digits: int = 3
    paired: bool = False
    folder: str | None = None

    def __post_init__(self) -> None:
        step_output(self.step, self.folder)

    @property
    def source(self) -> str:
        """The file's path under the unit folder (a glob when the step keeps one folder per seed)."""
        return f"{self.folder or registered_step(self.step).folder_pattern}/{self.file}"

    @property
    def step_label(self) -> str:
        """`Step 6 wmdp_logit_lens`: the step's number and the folder the number comes from."""
        return step_label(self.step, self.folder)


def step_output(name: str, folder: str | None) -> str:
    """The folder (a glob over seeds) that step `name` writes, checked against experiment/steps.py."""
    entry = registered_step(name)
    written = (*entry.outputs, *(pattern.replace("{seed}", "*") for _, pattern in entry.also_writes))
    if folder is not None and folder not in written:
        raise ValueError(f"step {name} does not write a folder {folder!r}; it writes {', '.join(written)}")
    return folder or entry.folder_pattern


def step_label(name: str, folder: str | None = None) -> str:
    """How the page names the step behind a number: `Step <number> <folder>`."""
    entry = registered_step(name)
    return f"Step {entry.number} {folder or entry.name}"


@dataclass(frozen=True)
class Row:
    level: str
    question: str
    steps: str
    prediction: str  # what the thesis expects of a brittle unlearning method (vs filtering)
    measures: list[Measure] = field(default_factory=list)


def big_picture_rows(forget_task: str, retain_task: str) -> list[Row]:
    """The deep-ignorance study's Big Picture table, level by level, plus Step 13."""
    return [
        Row("Capabilities", "Does the model still work at all?", "0",
            "forget accuracy falls, retain accuracy holds (both for filtering and unlearning)", [
                Measure(f"forget acc ({forget_task}), A", "evals", "model_a", "summary.json",
                        eval_accuracy(forget_task)),
                Measure(f"forget acc ({forget_task}), B", "evals", "model_b", "summary.json",
                        eval_accuracy(forget_task)),
                Measure(f"retain acc ({retain_task}), B", "evals", "model_b", "summary.json",
                        eval_accuracy(retain_task)),
            ]),
        Row("Magnitude", "How much changed?", "1–2", "unlearning: small; filtering: large", [
            Measure("‖ΔW‖_F / ‖W‖_F, whole model", "weight_comparison", "comparison",
                    "per_matrix.csv", whole_model_relative_change, 4),
            Measure("max σ₁(ΔW) / σ₁(W)", "weight_comparison", "comparison", "per_matrix.csv",
                    max_relative_spectral, 4),
        ]),
        Row("Location", "Where — MLP or attention? Which layers?", "4",
            "unlearning: attention-localized, few layers; filtering: everywhere", [
                Measure("MLP share of ‖ΔW‖²", "weight_comparison", "comparison",
                        "per_layer.csv", mlp_share),
                Measure("median MLP/attention ratio per layer", "mlp_attn_analysis", "comparison",
                        "summary.json", json_value("median_mlp_attn_ratio")),
                Measure("depth of the most-changed layer (0 first, 1 last)", "weight_comparison",
                        "comparison", "per_layer.csv", most_changed_depth, 2),
            ]),
        Row("Knowledge localization", "Where is forget-set knowledge encoded?", "5",
            "unlearning: forget text stays linearly separable in B", [
                Measure("best probe AUC, A", "linear_probes", "model_a", "probe_results.csv",
                        csv_extreme("auc")),
                Measure("best probe AUC, B", "linear_probes", "model_b", "probe_results.csv",
                        csv_extreme("auc")),
            ]),
        Row("Knowledge depth", "At which layer does the model know the forget answers?", "6",
            "unlearning: intermediate layers of B still answer (hidden, not erased); filtering: chance throughout", [
                Measure("logit lens, final layer, B", "wmdp_tuned_lens", "model_b",
                        "wmdp_lens_results.csv", csv_last("accuracy"), folder="wmdp_logit_lens"),
                Measure("logit lens, best layer, B", "wmdp_tuned_lens", "model_b",
                        "wmdp_lens_results.csv", csv_extreme("accuracy"), folder="wmdp_logit_lens"),
                Measure("tuned lens, best layer, B", "wmdp_tuned_lens", "model_b",
                        "wmdp_lens_results.csv", csv_extreme("accuracy")),
            ]),
        Row("Geometry", "What shape is ΔW? Low-rank? Nullspace-aligned?", "7, 10",
            "unlearning: low-rank, concentrated, in W's null space; filtering: full-rank", [
                Measure("mean stable rank of ΔW", "weight_comparison", "comparison",
                        "per_matrix.csv", mean_stable_rank, 2),
                Measure("top-10 energy of ΔW (sampled matrices)", "null_space_analysis", "comparison",
                        "null_space_results.csv", csv_mean("dW_top_k_energy_ratio")),
                Measure("MLP ΔW energy outside W's column space", "mlp_nullspace", "comparison",
                        "summary.json", json_value("null_space_fraction")),
            ]),
        Row("Function", "Do activations actually change on target text?", "3, 8–9",
            "unlearning: small change; filtering: large", [
                Measure("‖Δh‖ / ‖h_A‖ on forget text", "activation_comparison", "comparison",
                        "activation_comparison.csv", activation_change("forget")),
                Measure("‖Δh‖ / ‖h_A‖ on retain text", "activation_comparison", "comparison",
                        "activation_comparison.csv", activation_change("retain")),
                Measure("forget/retain separation AUC of B (mean over layers)", "activation_separation",
                        "comparison", "separation_results.csv", csv_mean("model_b_linear_auc")),
                Measure("covariance spectrum W₁ forget/retain (mean over layers)", "activation_covariance",
                        "comparison", "selectivity.csv", csv_mean("selectivity_ratio")),
            ]),
        Row("Precision", "Is the change targeted at forget-domain inputs?", "11",
            "unlearning: low selectivity (≈ 1)", [
                Measure("activation change forget/retain", "activation_comparison", "comparison",
                        "activation_comparison.csv", activation_selectivity),
                Measure("row-space projection forget/retain, A's inputs (mean over layers)",
                        "row_space_projection", "comparison", "projection_results.csv",
                        csv_mean("model_a_selectivity")),
            ]),
        Row("Stability", "Is the new behaviour robust or fragile?", "12",
            "unlearning: rougher (Lipschitz ratio B/A > 1) on forget text", [
                Measure("local Lipschitz B/A, forget", "lipschitzness", "comparison",
                        "lipschitz_results.csv", lipschitz_ratio("forget")),
                Measure("local Lipschitz B/A, retain", "lipschitzness", "comparison",
                        "lipschitz_results.csv", lipschitz_ratio("retain")),
            ]),
        Row("Recoverability", "Does fine-tuning on other forget facts (T) bring held-out ones (V) back?", "13",
            "unlearning: V comes back (hidden); filtering: stays near chance (erased)", [
                Measure("V accuracy of B before the attack", "relearn_attack", "model_b",
                        "runs.csv", attack_before),
                Measure("V accuracy of B after the attack (best setting)", "relearn_attack", "model_b",
                        "runs.csv", attack_best),
                Measure("C: model A after the same attack", "relearn_attack", "model_a",
                        "runs.csv", attack_best),
                Measure("recovery rate (B − A) / (C − A)", "relearn_attack", "model_b",
                        "runs.csv", recovery_rate, paired=True),
            ]),
    ]


# --------------------------------------------------------------------------------------------------
# Collecting the numbers
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Comparison:
    """One comparison instance: a label shared across seeds, and its two models. `attacked` is False when the
    pipeline's attack steps do not run on model B (the pretraining checkpoint of COMP3): their numbers do not
    apply there, rather than being missing; None when unknown (a comparison named on the command line)."""

    label: str
    model_a: str
    model_b: str
    attacked: bool | None = None

    def applies(self, step_name: str) -> bool:
        """Whether `step_name`'s outputs are expected for this comparison."""
        return self.attacked is not False or registered_step(step_name).scope != "attack"

    def scope_folder(self, scope: str, root: Path) -> Path:
        slug_a, slug_b = output_slug(self.model_a, root), output_slug(self.model_b, root)
        return root / {"comparison": f"{slug_a}{COMPARISON_SEPARATOR}{slug_b}", "model_a": slug_a,
                       "model_b": slug_b}[scope]


def output_slug(model: str, root: Path) -> str:
    """The model's folder name under the output root. A local model's slug is its folder's name, which
    `model_slug` can only tell while the folder exists from here; when the report runs elsewhere (or the
    model was deleted), a results folder named after the path's last part is the local model's."""
    slug = model_slug(model)
    if not (root / slug).is_dir() and (root / Path(model).name).is_dir():
        return Path(model).name
    return slug


@dataclass
class Cell:
    """The samples of one measure for one comparison label, and what could not be read."""

    values: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    applies: bool = True  # False: the step does not run on this comparison (not attacked)

    def text(self, digits: int) -> str:
        if not self.applies:
            return "n/a (not attacked)"
        if not self.values:
            return "missing"
        if len(self.values) == 1:
            return f"{self.values[0]:.{digits}f}"
        spread = statistics.stdev(self.values)
        return f"{statistics.fmean(self.values):.{digits}f} ± {spread:.{digits}f} (n={len(self.values)})"


def collect(rows: list[Row], comparisons: list[Comparison], root: Path) -> dict[tuple[str, str], Cell]:
    """(comparison label, measure label) → the measure's samples over that label's instances."""
    cells: dict[tuple[str, str], Cell] = {}
    for comparison in comparisons:
        folder = {scope: comparison.scope_folder(scope, root) for scope in ("comparison", "model_a", "model_b")}
        for row in rows:
            for measure in row.measures:
                cell = cells.setdefault((comparison.label, measure.label), Cell())
                if not comparison.applies(measure.step):
                    cell.applies = False
                    continue
                matches = sorted(folder[measure.scope].glob(measure.source))
                if not matches:
                    cell.problems.append(f"{measure.step_label}: {folder[measure.scope] / measure.source} is missing")
                for path in matches:
                    try:
                        relative = path.relative_to(folder[measure.scope])
                        paired = (folder["model_a"] / relative,) if measure.paired else ()
                        cell.values.append(measure.read(path, *paired))
                    except (OSError, KeyError, ValueError, IndexError, ZeroDivisionError, TypeError) as error:
                        cell.problems.append(f"{measure.step_label}: cannot read {path} ({type(error).__name__}: "
                                             f"{error})")
    return cells


def summary_rows(rows: list[Row], comparisons: list[Comparison], cells: dict[tuple[str, str], Cell]) -> list[dict]:
    """report_summary.csv: one line per (comparison label, measure) with mean, std and the samples."""
    records = []
    for label in unique(comparison.label for comparison in comparisons):
        for row in rows:
            for measure in row.measures:
                values = cells[(label, measure.label)].values
                records.append({
                    "comparison": label, "level": row.level, "measure": measure.label, "n": len(values),
                    "mean": statistics.fmean(values) if values else "",
                    "std": statistics.stdev(values) if len(values) > 1 else "",
                    "values": " ".join(f"{value:.6g}" for value in values),
                })
    return records


def unique(items) -> list:
    return list(dict.fromkeys(items))


# --------------------------------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------------------------------

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1400px;
       color: #222; padding: 0 1rem; }
h1 { margin-bottom: .2rem; } .subtitle { color: #666; margin-top: 0; }
table { border-collapse: collapse; width: 100%; margin: 1rem 0 2rem; font-size: .92rem; }
th, td { border: 1px solid #ddd; padding: .45rem .6rem; vertical-align: top; text-align: left; }
th { background: #f4f4f6; } td.level { font-weight: 600; width: 24%; }
.question { color: #555; font-size: .85rem; } .prediction { color: #7a4b00; font-size: .82rem; }
.measure { display: flex; justify-content: space-between; gap: 1rem; }
.measure .name { color: #555; } .measure .value { font-variant-numeric: tabular-nums; font-weight: 600; }
.missing { color: #b00020; font-weight: 400 !important; }
.plots { display: grid; grid-template-columns: repeat(auto-fill, minmax(420px, 1fr)); gap: 1rem; }
figure { margin: 0; border: 1px solid #eee; padding: .5rem; } figure img { width: 100%; }
figcaption { font-size: .8rem; color: #555; }
ul.problems { font-size: .85rem; color: #444; }
"""

@dataclass(frozen=True)
class KeyPlot:
    """A plot worth a look for every comparison: candidates (scope, file glob) in folders of one step, the
    first found is shown. `folder` is another folder the step writes (checked against experiment/steps.py)."""

    caption: str
    step: str
    candidates: tuple[tuple[str, str], ...]
    folder: str | None = None

    def __post_init__(self) -> None:
        step_output(self.step, self.folder)

    @property
    def title(self) -> str:
        return f"Step {registered_step(self.step).number}: {self.caption}"

    def globs(self) -> list[tuple[str, str]]:
        folder = step_output(self.step, self.folder)
        return [(scope, f"{folder}/{pattern}") for scope, pattern in self.candidates]


KEY_PLOTS = [
    KeyPlot("relative change per layer", "weight_comparison", (("comparison", "layer_locality.png"),),
            folder="param_plots"),
    KeyPlot("MLP vs attention", "mlp_attn_analysis", (("comparison", "mlp_attn_change.png"),)),
    KeyPlot("activation change per layer", "activation_comparison", (("comparison", "activation_diffs.png"),),
            folder="activation_plots"),
    KeyPlot("logit-lens accuracy per layer (model B)", "wmdp_tuned_lens", (("model_b", "*.png"),),
            folder="wmdp_logit_lens"),
    KeyPlot("relearning attack", "relearn_attack", (("comparison", "attack_curves.png"),
                                                     ("model_b", "relearning_curves.png"))),
]


def embedded_image(path: Path) -> str:
    encoded = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.name)}" src="data:image/png;base64,{encoded}">'


def signature_table(rows: list[Row], labels: list[str], cells: dict[tuple[str, str], Cell]) -> str:
    header = "".join(f"<th>{html.escape(label)}</th>" for label in labels)
    body = []
    for row in rows:
        first = (f'<td class="level">{html.escape(row.level)}<div class="question">{html.escape(row.question)}</div>'
                 f'<div class="question">Step {html.escape(row.steps)}</div>'
                 f'<div class="prediction">Thesis: {html.escape(row.prediction)}</div></td>')
        columns = []
        for label in labels:
            lines = []
            for measure in row.measures:
                cell = cells[(label, measure.label)]
                value_class = "value" if cell.values or not cell.applies else "value missing"
                lines.append(f'<div class="measure"><span class="name">{html.escape(measure.label)}</span>'
                             f'<span class="{value_class}">{html.escape(cell.text(measure.digits))}</span></div>')
            columns.append(f"<td>{''.join(lines)}</td>")
        body.append(f"<tr>{first}{''.join(columns)}</tr>")
    return f"<table><tr><th>Big Picture level</th>{header}</tr>{''.join(body)}</table>"


def plots_section(comparisons: list[Comparison], root: Path) -> tuple[str, list[str]]:
    """Key plots of each comparison (the first seed's instance of each label); and the missing ones."""
    parts, missing = [], []
    first_of_each_label = {}
    for comparison in comparisons:
        first_of_each_label.setdefault(comparison.label, comparison)
    for comparison in first_of_each_label.values():
        figures = []
        for plot in KEY_PLOTS:
            if not comparison.applies(plot.step):
                continue
            candidates = plot.globs()
            matches = next((found for scope, pattern in candidates
                            if (found := sorted(comparison.scope_folder(scope, root).glob(pattern)))), [])
            if matches:
                figures.append(f"<figure>{embedded_image(matches[0])}<figcaption>{html.escape(plot.title)} — "
                               f"{html.escape(str(matches[0].relative_to(root)))}</figcaption></figure>")
            else:
                scope, pattern = candidates[0]
                missing.append(f"{comparison.label}: plot {comparison.scope_folder(scope, root) / pattern}")
        if figures:
            parts.append(f"<h3>{html.escape(comparison.label)}</h3><div class='plots'>{''.join(figures)}</div>")
    return "".join(parts), missing


def comparison_list(comparisons: list[Comparison]) -> str:
    items = "".join(f"<li><b>{html.escape(comparison.label)}</b>: A = <code>{html.escape(comparison.model_a)}</code>,"
                    f" B = <code>{html.escape(comparison.model_b)}</code></li>" for comparison in comparisons)
    return f"<ul>{items}</ul>"


def render(rows: list[Row], comparisons: list[Comparison], cells: dict[tuple[str, str], Cell], root: Path,
           preset: str) -> tuple[str, list[str]]:
    """The whole page, and every problem it reports."""
    labels = unique(comparison.label for comparison in comparisons)
    plots, missing_plots = plots_section(comparisons, root)
    problems = unique(problem for cell in cells.values() for problem in cell.problems) + missing_plots
    problem_list = ("<p>Every step's outputs were found.</p>" if not problems else
                    "<ul class='problems'>" + "".join(f"<li>{html.escape(problem)}</li>" for problem in problems)
                    + "</ul><p>Run the pipeline again (finished steps are skipped) to fill these in.</p>")
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>What makes unlearning brittle? — report</title>
<style>{STYLE}</style></head><body>
<h1>What makes unlearning brittle?</h1>
<p class="subtitle">Mechanistic signature of each comparison (A = reference, B = modified model) ·
preset <b>{html.escape(preset)}</b> · {generated}</p>
<p>Filtering (COMP1) shows what genuine ignorance looks like; post-hoc unlearning (COMP2 and the CB chain)
what hiding looks like. Each cell is read from the steps' CSV/JSON files under <code>{html.escape(str(root))}</code>;
with several seeds it shows mean ± std over seeds.</p>
{comparison_list(comparisons)}
<h2>Signature, level by level</h2>
{signature_table(rows, labels, cells)}
{verdict_html(root)}
<h2>Key plots</h2>
{plots or "<p>No plots found.</p>"}
<h2>Missing</h2>
{problem_list}
</body></html>
"""
    return page, problems


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------

def discover_comparisons(root: Path) -> list[Comparison]:
    """Every `<a>__to__<b>/` folder under the root, labelled by its name (model names as their slugs)."""
    comparisons = []
    for folder in sorted(root.glob(f"*{COMPARISON_SEPARATOR}*")):
        if folder.is_dir() and not folder.name.startswith("."):
            model_a, model_b = folder.name.split(COMPARISON_SEPARATOR, 1)
            comparisons.append(Comparison(folder.name, model_a, model_b))
    return comparisons


def read_manifest(path: str) -> list[Comparison]:
    """The comparisons of a LABEL<TAB>MODEL_A<TAB>MODEL_B[<TAB>ATTACKED] file (ATTACKED: 1 when the attack steps
    run on model B, 0 when they do not)."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as error:
        raise UserError(f"cannot read the manifest {path}: {error.strerror}") from error
    comparisons = []
    for number, line in enumerate(lines, start=1):
        fields = line.split("\t")
        if len(fields) not in (3, 4) or fields[3:] not in ([], ["0"], ["1"]):
            raise UserError(f"{path} line {number} is not LABEL<TAB>MODEL_A<TAB>MODEL_B[<TAB>0 or 1]: {line!r}")
        comparisons.append(Comparison(*fields[:3], attacked=fields[3] == "1" if len(fields) == 4 else None))
    return comparisons


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--comparison", nargs=3, action="append", metavar=("LABEL", "MODEL_A", "MODEL_B"),
                        help="a comparison to report (repeat; the same LABEL on several seeds is averaged)")
    parser.add_argument("--manifest", action="append", default=[],
                        help="a file of LABEL<TAB>MODEL_A<TAB>MODEL_B[<TAB>ATTACKED] lines (repeat, e.g. one per "
                             "seed); ATTACKED 0: the attack steps do not run on model B (their rows say n/a)")
    parser.add_argument("--preset", choices=["real", "toy"], default="real", help="names the Step 0 tasks to show")
    parser.add_argument("--output-root", default=str(DEFAULT_OUTPUT_ROOT), help="where the steps wrote (outputs/)")
    parser.add_argument("--output", default=None, help="the HTML page (default: <output-root>/report.html)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    root = Path(args.output_root)
    if not root.is_dir():
        raise UserError(f"output root {root} does not exist; run the pipeline first (./experiment/pipeline.sh)")
    comparisons = unique([*(Comparison(*triple) for triple in args.comparison or []),
                          *(comparison for manifest in args.manifest for comparison in read_manifest(manifest))])
    comparisons = comparisons or discover_comparisons(root)
    if not comparisons:
        raise UserError(f"no comparison folders (<a>__to__<b>/) under {root}; run the pipeline first, or name them "
                        "with --comparison LABEL MODEL_A MODEL_B")
    preset = get_preset(args.preset)
    rows = big_picture_rows(preset.forget_task, preset.retain_task)
    cells = collect(rows, comparisons, root)
    page, problems = render(rows, comparisons, cells, root, args.preset)
    output = Path(args.output or root / "report.html")
    write_text(output, page)
    write_csv(output.with_name("report_summary.csv"), summary_rows(rows, comparisons, cells),
              ["comparison", "level", "measure", "n", "mean", "std", "values"])
    print(f"report: {len(unique(comparison.label for comparison in comparisons))} comparisons, "
          f"{len(problems)} missing or unreadable inputs -> {output}")
    for problem in problems:
        print(f"  missing: {problem}")
    print_headlines(rows, comparisons, cells)
    log_report_to_wandb(rows, comparisons, cells, args.preset)


def log_report_to_wandb(rows: list[Row], comparisons: list[Comparison], cells: dict[tuple[str, str], Cell],
                        preset: str) -> None:
    """Every cell's mean as one W&B run (`<comparison label>/<measure>`), when W&B is configured."""
    metrics = {f"{record['comparison']}/{record['measure']}": record["mean"]
               for record in summary_rows(rows, comparisons, cells) if record["mean"] != ""}
    log_to_wandb(None, f"report/{preset}", {"preset": preset, "comparisons": [vars(item) for item in comparisons]},
                 metrics, job_type="report")


HEADLINE_LEVELS = ("Capabilities", "Recoverability")


def print_headlines(rows: list[Row], comparisons: list[Comparison], cells: dict[tuple[str, str], Cell]) -> None:
    """The Step 0 and Step 13 numbers of every comparison (mean ± std over seeds), for the terminal."""
    for label in unique(comparison.label for comparison in comparisons):
        print(label)
        for row in rows:
            if row.level in HEADLINE_LEVELS:
                for measure in row.measures:
                    print(f"  {measure.label:<52} {cells[(label, measure.label)].text(measure.digits)}")


if __name__ == "__main__":
    run_cli(main)
