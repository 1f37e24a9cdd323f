"""The comparison table of zoo models (``python evaluate.py task=compare``).

One table per input size (all measured in one call): family, parameters,
MACs and the papers' FLOPs (2 × MACs), training memory at a stated batch (bytes autograd saves for
backward), inference and training throughput (images/s, warm-up then the median of repeats, the
same threads for every model, all in one run) and, from training runs (``results.json``), test
top-1 as mean ± std over the seeds of one recipe (and its 95 % Wilson interval, the test set being
a sample) with epochs, wall time and budget — one row per recipe (experiment config with its budget
or epochs), never averaged across recipes — beside the papers' CIFAR-10 errors where they exist.
Writes ``comparison.md`` (the tables between ``<!-- comparison:begin -->`` and
``<!-- comparison:end -->``, so the prose of an existing doc around them stays), ``comparison.csv``,
``comparison.tex`` and ``comparison.png`` (accuracy against MACs and params, one marker per family).
"""

from __future__ import annotations

import collections
import csv
import glob
import io
import json
import logging
import statistics
import time
from pathlib import Path

import torch

import zoo
from zoo.bench.complexity import count_macs
from zoo.bench.memory import saved_tensor_bytes
from zoo.bench.timing import median_seconds
from zoo.errors import UserError
from zoo.evaluation.tables import format_cell, markdown_table
from zoo.evaluation.uncertainty import wilson_interval
from zoo.io import atomic_write_figure, atomic_write_text, pyplot, write_marked_block
from zoo.models.base import main_output
from zoo.models.registry import count_params

log = logging.getLogger(__name__)

COLUMNS = [
    "model",
    "family",
    "input",
    "params",
    "MACs (M)",
    "paper FLOPs (M)",
    "train mem (MiB)",
    "infer img/s",
    "train img/s",
    "test top-1 (%)",
    "top-1 95% CI (%)",
    "runs",
    "recipe",
    "epochs",
    "wall (s)",
    "budget (s)",
    "paper C10 err (%)",
]


def _throughput(model: torch.nn.Module, x: torch.Tensor, train: bool, repeats: int) -> float:
    def step() -> None:
        if train:
            out = model(x)
            main_output(out).sum().backward()
        else:
            with torch.no_grad():
                model(x)

    model.train(train)
    return len(x) / median_seconds(step, repeats)


def measure(name: str, input_size: tuple[int, int, int], batch: int, repeats: int) -> dict:
    """Complexity and speed of one model at ``input_size``, adapted to its channels."""
    info = zoo.model_info(name)
    model = zoo.create_model(name, in_chans=input_size[0])
    x = torch.randn(batch, *input_size)
    model.train()
    memory = saved_tensor_bytes(model, x) / 2**20
    macs = count_macs(model, input_size)
    row = {
        "model": name,
        "family": info["family"],
        "input": "×".join(map(str, input_size)),
        "params": count_params(model),
        "MACs (M)": macs / 1e6,
        "paper FLOPs (M)": 2 * macs / 1e6,
        "train mem (MiB)": memory,
        "infer img/s": _throughput(model, x, False, repeats),
        "train img/s": _throughput(model, x, True, repeats),
    }
    if hasattr(model, "step_stats"):
        model.train()
        model.reset_step_stats()
        model(x).sum().backward()
        row.update({f"{k}": v for k, v in model.step_stats().items()})
    return row


RUN_KEYS = ("model", "dataset", "test_acc1", "epochs", "wall_time_s")


def read_run(file: Path) -> dict | None:
    """One run's ``results.json``; None, with a warning naming the file, if it is unreadable or
    lacks a key the table needs (a damaged file must not stop the comparison of the others)."""
    try:
        run = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        log.warning("skipping %s: not readable JSON (%s)", file, err)
        return None
    if not isinstance(run, dict):
        log.warning("skipping %s: not a JSON object", file)
        return None
    missing = [k for k in RUN_KEYS if k not in run]
    if missing:
        log.warning("skipping %s: no %s in it", file, ", ".join(missing))
        return None
    return run


RunGroup = tuple[str, str, str]  # (model, dataset, recipe): runs averaged into one row


def recipe_of(run: dict) -> str:
    """What makes runs of one model comparable: the same experiment config (when the run recorded
    it) and the same wall-clock budget, or (without one) the same number of epochs. Seeds of a
    recipe are averaged; each recipe gets its own row."""
    length = f"{run['budget_s']:g} s budget" if run.get("budget_s") else f"{run['epochs']} epochs"
    return f"{run['recipe']}, {length}" if run.get("recipe") else length


def collect_runs(patterns: list[str]) -> dict[RunGroup, list[dict]]:
    """results.json of training runs, grouped by (model, dataset, recipe)."""
    found: dict[RunGroup, list[dict]] = {}
    for pattern in patterns:
        paths = [Path(p) for p in glob.glob(str(pattern), recursive=True)]
        if not paths:
            raise UserError(f"runs={pattern}: nothing matches")
        for path in paths:
            file = path / "results.json" if path.is_dir() else path
            if file.name != "results.json" or not file.is_file():
                continue
            r = read_run(file)
            if r is not None and r["test_acc1"] is not None:
                found.setdefault((r["model"], r["dataset"], recipe_of(r)), []).append(r)
    return found


def _with_runs(row: dict, matching: list[dict]) -> dict:
    """A measured row with the accuracy of one group of runs (same model, dataset and recipe)."""
    row = dict(row)
    accs = [100 * r["test_acc1"] for r in matching]
    row["test top-1 (%)"] = (
        f"{statistics.mean(accs):.2f} ± {statistics.stdev(accs):.2f}"
        if len(accs) > 1
        else f"{accs[0]:.2f}"
    )
    row["runs"] = f"{len(accs)} ({matching[0]['dataset']})"
    row["recipe"] = matching[0].get("recipe") or ""
    row["epochs"] = "/".join(sorted({str(r["epochs"]) for r in matching}))
    row["wall (s)"] = statistics.mean(r["wall_time_s"] for r in matching)
    row["budget (s)"] = f"{matching[0]['budget_s']:g}" if matching[0].get("budget_s") else ""
    row["_curves"] = [r["test_curve"] for r in matching if r.get("test_curve")]
    row["_acc"] = statistics.mean(accs)
    row["_recipe"] = recipe_of(matching[0])
    n = matching[0].get("data", {}).get("test")
    if n:  # the test set is a sample: Wilson interval of the mean accuracy on n images
        lo, hi = wilson_interval(round(row["_acc"] * n / 100), n)
        row["top-1 95% CI (%)"] = f"{100 * lo:.2f}-{100 * hi:.2f}"
    return row


def build_table(rows: list[dict], runs: dict[RunGroup, list[dict]]) -> list[dict]:
    """One row per measured model and group of its runs (a model without runs keeps one row)."""
    table = []
    for row in rows:
        paper = zoo.model_info(row["model"])["paper_numbers"]
        error = paper.get("cifar10_error")
        row["paper C10 err (%)"] = f"{error:.2f} ({paper['source']})" if error else ""
        groups = [rs for (model, *_), rs in sorted(runs.items()) if model == row["model"]]
        table += [_with_runs(row, rs) for rs in groups] or [row]
    return table


def to_markdown(rows: list[dict], header: str) -> str:
    cols = COLUMNS + sorted({k for r in rows for k in r if k.startswith("nfe_")})
    return markdown_table(rows, [(c, c) for c in cols], header)


def to_latex(rows: list[dict]) -> str:
    def esc(s: str) -> str:
        return s.replace("_", r"\_").replace("%", r"\%").replace("±", r"$\pm$").replace("×", "x")

    lines = [
        r"\begin{tabular}{" + "l" * 3 + "r" * (len(COLUMNS) - 3) + "}",
        r"\toprule",
        " & ".join(esc(c) for c in COLUMNS) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(esc(format_cell(r.get(c))) for c in COLUMNS) + r" \\" for r in rows]
    return "\n".join(lines + [r"\bottomrule", r"\end{tabular}"]) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    plt = pyplot()
    markers = dict(zip(sorted({r["family"] for r in rows}), "osD^vP*Xh<>", strict=False))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    with_acc = [r for r in rows if "_acc" in r]
    for ax, key, label in (
        (axes[0], "MACs (M)", "MACs (M, log)"),
        (axes[1], "params", "parameters (log)"),
    ):
        for r in with_acc or rows:
            y = r.get("_acc", r["train img/s"])
            ax.scatter(r[key], y, marker=markers[r["family"]], label=r["family"])
            ax.annotate(r["model"], (r[key], y), fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("test top-1 (%)" if with_acc else "train img/s")
    handles, labels = axes[0].get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    fig.legend(unique.values(), unique.keys(), loc="lower center", ncol=len(unique), fontsize=8)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    atomic_write_figure(path, fig, tight=False)


def plot_curves(rows: list[dict], path: Path) -> bool:
    """Test top-1 against training time, one line per model (runs with ``callbacks.test_curve``);
    False when no run has a curve."""
    rows_of = collections.Counter(r["model"] for r in rows)

    def label(r: dict) -> str:  # a model trained with two recipes has two lines
        return f"{r['model']} ({r['_recipe']})" if rows_of[r["model"]] > 1 else r["model"]

    curves = [(label(r), c) for r in rows for c in r.get("_curves", [])]
    if not curves:
        return False
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = {m: f"C{i % 10}" for i, m in enumerate(dict.fromkeys(m for m, _ in curves))}
    for model, curve in curves:
        seconds = [p["seconds"] for p in curve]
        accs = [100 * p["test_acc1"] for p in curve]
        label = model if model not in ax.get_legend_handles_labels()[1] else None
        ax.plot(seconds, accs, "-o", ms=3, color=colors[model], label=label)
    ax.set_xscale("log")
    ax.set(xlabel="training time (s, log)", ylabel="test top-1 (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    atomic_write_figure(path, fig)
    return True


def write_comparison(tables: list[list[dict]], batch: int, out: Path) -> str:
    """One table per input size (sections of the same files) into ``out``: ``comparison.md``
    (between its markers), ``.csv``, ``.tex``, ``.png`` and ``comparison_curves.png``. Returns
    the Markdown."""
    sections, latex = [], []
    for rows in tables:
        header = (
            f"### Input {rows[0]['input']} — batch {batch}, {torch.get_num_threads()} "
            f"threads, fp32, {time.strftime('%Y-%m-%d')}"
        )
        sections.append(to_markdown(rows, header))
        latex.append(f"% input {rows[0]['input']}\n" + to_latex(rows))
    markdown = "\n".join(sections)
    write_marked_block(out / "comparison.md", "comparison", markdown, append=True)
    all_rows = [r for rows in tables for r in rows]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(all_rows)
    atomic_write_text(out / "comparison.csv", buffer.getvalue())
    plot_curves(tables[0], out / "comparison_curves.png")
    atomic_write_text(out / "comparison.tex", "\n".join(latex))
    plot(tables[0], out / "comparison.png")
    return markdown
