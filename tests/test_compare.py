"""evaluate.py task=compare on tiny models and a synthetic run: columns, units, files, plot."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest
from helpers import SYNTHETIC_TINY, compose, run_train

from zoo.bench.compare import COLUMNS, collect_runs
from zoo.errors import UserError
from zoo.tasks.compare import run


def _compose(tmp_path: Path, extra: list[str]):
    return compose(
        [
            "task=compare",
            f"output_dir={tmp_path}",
            "task.repeats=1",
            "task.batch=4",
            *extra,
        ],
        "evaluate",
    )


def test_compare_table_with_runs(tmp_path: Path) -> None:
    for seed in (0, 1):
        run_train(
            tmp_path / f"run{seed}",
            [
                "model=lenet5",
                "trainer.max_epochs=1",
                f"seed={seed}",
                *SYNTHETIC_TINY,
                "data.image_size=28",
                "data.in_chans=1",
            ],
        )
    cfg = _compose(
        tmp_path / "out",
        [
            "models=[lenet5,odenet_mnist]",
            f"runs=[{tmp_path}/run*]",
            "task.input_sizes=[[1,28,28],[3,32,32]]",
        ],
    )
    rows = run(cfg)
    assert [r["input"] for r in rows] == ["1×28×28"] * 2 + ["3×32×32"] * 2
    lenet, ode, lenet32, _ = rows
    assert lenet32["params"] == 61_706 + 2 * 150  # two more input channels in C1
    assert lenet32["MACs (M)"] > lenet["MACs (M)"]
    assert lenet["params"] == 61_706
    assert lenet["MACs (M)"] == pytest.approx(0.4165, rel=0.01)  # LeCun's net at 28 padded to 32
    assert lenet["paper FLOPs (M)"] == pytest.approx(2 * lenet["MACs (M)"])
    # speeds are measured, not compared: on a loaded CPU either can come out ahead
    assert lenet["train mem (MiB)"] > 0 and lenet["infer img/s"] > 0 and lenet["train img/s"] > 0
    assert "±" in lenet["test top-1 (%)"] and lenet["runs"].startswith("2 ")
    assert ode["nfe_forward"] >= 6 and "test top-1 (%)" not in ode
    out = tmp_path / "out"
    with open(out / "comparison.csv") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == COLUMNS and len(table) == 4
    markdown = (out / "comparison.md").read_text()
    assert "nfe_forward" in markdown
    assert "### Input 1×28×28" in markdown and "### Input 3×32×32" in markdown
    assert (out / "comparison.tex").read_text().count(r"\begin{tabular}") == 2
    assert (out / "comparison.png").stat().st_size > 1000


def test_compare_rejects_unknown_model(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unknown model"):
        run(_compose(tmp_path, ["models=[lenet6]"]))


def test_compare_rejects_bad_input_size(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="task.input_sizes"):
        run(_compose(tmp_path, ["models=[lenet5]", "task.input_sizes=[[28,28]]"]))


def test_damaged_results_json_is_skipped_with_a_warning_naming_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = {"model": "lenet5", "dataset": "mnist", "test_acc1": 0.9, "epochs": 2, "wall_time_s": 5}
    texts = {
        "good": json.dumps(good),
        "cut": json.dumps(good)[:30],  # a write cut short
        "list": "[1, 2]",
        "old": json.dumps({k: v for k, v in good.items() if k != "wall_time_s"}),
        "binary": "\udcff",
    }
    for name, text in texts.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_bytes(text.encode(errors="surrogateescape"))
    with caplog.at_level(logging.WARNING, logger="zoo.bench.compare"):
        runs = collect_runs([f"{tmp_path}/*"])
    assert runs == {("lenet5", "mnist", "2 epochs"): [good]}
    warned = "\n".join(r.getMessage() for r in caplog.records)
    for name in ("cut", "list", "old", "binary"):
        assert str(tmp_path / name / "results.json") in warned
    assert "no wall_time_s" in warned


def test_budgeted_runs_give_a_budget_column_and_accuracy_against_time(tmp_path: Path) -> None:
    for name, budget in (("lenet5", 30), ("resnet20", 30)):
        run_dir = tmp_path / name
        run_dir.mkdir()
        curve = [
            {"epoch": 1, "seconds": 10.0, "test_acc1": 0.8},
            {"epoch": 2, "seconds": 20.0, "test_acc1": 0.85},
        ]
        results = {
            "model": name,
            "dataset": "fashion_mnist",
            "test_acc1": 0.85,
            "epochs": 2,
            "wall_time_s": 30.1,
            "budget_s": budget,
            "test_curve": curve,
            "data": {"test": 10_000},
        }
        (run_dir / "results.json").write_text(json.dumps(results))
    rows = run(_compose(tmp_path / "out", ["models=[lenet5,resnet20]", f"runs=[{tmp_path}/*]"]))
    assert [r["budget (s)"] for r in rows] == ["30", "30"]
    assert "| budget (s) |" in (tmp_path / "out" / "comparison.md").read_text()
    assert (tmp_path / "out" / "comparison_curves.png").stat().st_size > 1000


def test_runs_of_different_recipes_are_not_averaged(tmp_path: Path) -> None:
    """A 900-s budget run and 30-epoch runs of one model are two rows; seeds of a recipe average."""
    base = {"model": "resnet20", "dataset": "fashion_mnist", "data": {"test": 10_000}}
    runs = {
        "budget": {**base, "test_acc1": 0.9326, "epochs": 13, "wall_time_s": 902, "budget_s": 900},
        "full0": {**base, "test_acc1": 0.9463, "epochs": 30, "wall_time_s": 2000},
        "full1": {**base, "test_acc1": 0.9443, "epochs": 30, "wall_time_s": 2100},
    }
    for name, results in runs.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(results))
    rows = run(_compose(tmp_path / "out", ["models=[resnet20]", f"runs=[{tmp_path}/*]"]))
    by_budget = {r["budget (s)"]: r for r in rows}
    assert len(rows) == 2 and set(by_budget) == {"", "900"}
    assert by_budget["900"]["test top-1 (%)"] == "93.26" and by_budget["900"]["epochs"] == "13"
    full = by_budget[""]
    assert full["test top-1 (%)"] == "94.53 ± 0.14" and full["runs"] == "2 (fashion_mnist)"
    assert full["wall (s)"] == 2050 and full["params"] == by_budget["900"]["params"]


def test_runs_of_two_experiments_at_one_budget_are_two_rows(tmp_path: Path) -> None:
    base = {"model": "resnet20", "dataset": "fashion_mnist", "epochs": 4, "budget_s": 300}
    runs = {
        "speed0": {**base, "test_acc1": 0.925, "wall_time_s": 301, "recipe": "fmnist_speedrun"},
        "speed1": {**base, "test_acc1": 0.927, "wall_time_s": 303, "recipe": "fmnist_speedrun"},
        "budget": {**base, "test_acc1": 0.915, "wall_time_s": 302, "recipe": "budget_fmnist"},
    }
    for name, results in runs.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(results))
    rows = run(_compose(tmp_path / "out", ["models=[resnet20]", f"runs=[{tmp_path}/*]"]))
    by_recipe = {r["_recipe"]: r["test top-1 (%)"] for r in rows}
    assert by_recipe == {
        "fmnist_speedrun, 300 s budget": "92.60 ± 0.14",
        "budget_fmnist, 300 s budget": "91.50",
    }
    table = (tmp_path / "out" / "comparison.md").read_text()
    assert "| 2 (fashion_mnist) | fmnist_speedrun | 4 |" in table
