"""Budgeted training (Li, Yumer & Ramanan, ICLR 2020): a wall-clock budget instead of epochs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import LENET_448, SYNTHETIC_TINY, SimulatedCrash, StepRecorder, run_train

from zoo.training.schedules import cosine, linear, multistep, onecycle

BUDGET = [
    *SYNTHETIC_TINY,
    "model=lenet5",
    "data.image_size=28",
    "data.in_chans=1",
    "data.num_samples=160",  # 8 steps an epoch: the budget ends inside an epoch
    "scheduler=linear",
    "train.budget_s=1.5",
    "+callbacks.probe._target_=helpers.step_recorder",
    "+callbacks.probe.step_s=0.1",  # simulated time: 15 steps make the budget
]


def test_budget_stops_within_one_step_and_the_schedule_ends_with_it(tmp_path: Path) -> None:
    results = run_train(tmp_path, BUDGET)
    rec = StepRecorder.last
    assert len(rec.elapsed) == 15  # the step that reached the budget was the last one
    assert rec.final_progress == 1.0 and rec.final_lr == pytest.approx(0.0, abs=1e-12)
    assert results["budget_s"] == 1.5 and results["test_acc1"] is not None
    assert results["images_seen"] == 16 * len(rec.elapsed)
    assert results["wall_time_s"] == pytest.approx(1.5) and results["epochs"] == 2


def test_budget_is_total_time_across_resumed_pieces(tmp_path: Path) -> None:
    args = [*BUDGET, "train.budget_s=4"]
    crash = ["+callbacks.crash._target_=helpers.crash_at_step", "+callbacks.crash.step=9"]
    with pytest.raises(SimulatedCrash):
        run_train(tmp_path, [*args, *crash])
    first_piece = StepRecorder.last.elapsed[:]
    run_train(tmp_path, [*args, "ckpt_path=last"])
    resumed = StepRecorder.last.elapsed
    # the clock goes on from the checkpoint at the end of epoch 1 (8 steps), not from zero
    assert len(first_piece) == 9 and resumed[0] == pytest.approx(first_piece[8])
    assert len(resumed) == 40 - 8 and resumed[-1] == pytest.approx(4.0)


@pytest.mark.parametrize(
    ("schedule", "start", "end"),
    [
        (linear(), 1.0, 0.0),
        (cosine(min_lr_ratio=0.1), 1.0, 0.1),
        (multistep(milestones=[0.5, 0.75]), 1.0, 0.01),
        (onecycle(), 1 / 25, 1 / 25e4),
    ],
)
def test_schedules_run_from_start_to_end_of_progress(schedule, start: float, end: float) -> None:
    assert schedule.factor(0.0) == pytest.approx(start)
    assert schedule.factor(1.0) == pytest.approx(end)
    values = [schedule.factor(p / 100) for p in range(101)]
    if schedule is not None and start > end and start == 1.0:
        assert all(a >= b - 1e-12 for a, b in zip(values, values[1:], strict=False))


def test_warmup_is_linear_over_its_epochs() -> None:
    lam = linear(warmup_epochs=2).lr_lambda(lambda step: 0.0, steps_per_epoch=10)
    assert [lam(s) for s in (0, 9, 19, 25)] == pytest.approx([0.05, 0.5, 1.0, 1.0])


def test_multistep_milestones_in_epochs_need_max_epochs() -> None:
    assert multistep(milestones=[5], max_epochs=10).factor(0.6) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="max_epochs"):
        multistep(milestones=[5])


def test_budget_schedules_table_groups_runs_by_schedule_and_budget(tmp_path: Path) -> None:
    from zoo.io import write_marked_block
    from zoo.tools.budget_schedules import collect, markdown_table

    for schedule in ("linear", "multistep"):
        run_train(tmp_path / f"lenet5-{schedule}", [*BUDGET, f"scheduler={schedule}"])
    groups = collect(tmp_path)
    assert sorted(groups) == [("linear", 1.5), ("multistep", 1.5)]
    table = markdown_table(groups)
    assert table.count("| 1.5 s |") == 2 and "| 1 |" in table  # one seed per row
    doc = tmp_path / "doc.md"
    doc.write_text("before\n<!-- budget-schedules:begin -->\nold\n<!-- budget-schedules:end -->\n")
    write_marked_block(doc, "budget-schedules", table)
    assert "old" not in doc.read_text() and doc.read_text().startswith("before\n<!-- budget-")
    with pytest.raises(SystemExit, match="markers"):
        write_marked_block(tmp_path / "no-markers.md", "budget-schedules", table)
    with pytest.raises(SystemExit, match="no finished budgeted runs"):
        markdown_table(collect(tmp_path / "empty"))


def test_seed_table_groups_seeds_and_averages_the_times_to_accuracy(tmp_path: Path) -> None:
    from zoo.tools.seed_table import collect, markdown_table

    curves = {  # variant-seed: (test top-1 at the end, test curve as (seconds, top-1))
        "recipe-seed0": (0.941, [(100, 0.925), (200, 0.941)]),
        "recipe-seed1": (0.943, [(110, 0.931), (190, 0.943)]),
        "no_ema-seed0": (0.935, [(100, 0.920), (200, 0.935)]),
    }
    for name, (top1, curve) in curves.items():
        results = {
            "test_acc1": top1,
            "epochs": 2,
            "images_seen": 120000,
            "test_curve": [{"seconds": s, "test_acc1": a} for s, a in curve],
        }
        if name == "recipe-seed1":  # a finished run's results.json as the docs keep it
            (tmp_path / f"{name}.json").write_text(json.dumps(results))
        else:
            (tmp_path / name).mkdir()
            (tmp_path / name / "results.json").write_text(json.dumps(results))
    groups = collect(tmp_path)
    assert list(groups) == ["no_ema", "recipe"] and len(groups["recipe"]) == 2
    copy = json.loads((tmp_path / "no_ema-seed0" / "results.json").read_text())
    (tmp_path / "no_ema-seed0.json").write_text(json.dumps(copy))  # copied, folder still there
    assert collect(tmp_path) == groups
    rows = markdown_table(groups, [93, 94]).splitlines()
    assert rows[2] == "| no_ema | 1 | 93.50 ± 0.00 | 200 (1/1) | — | 2.0 | 120,000 |"
    assert rows[3] == "| recipe | 2 | 94.20 ± 0.14 | 155 (2/2) | 195 (2/2) | 2.0 | 120,000 |"


def test_curve_table_shows_a_schedule_in_progress_then_finished(tmp_path: Path) -> None:
    from zoo.tools.curve_table import main, markdown_table, read_curve

    run = [*LENET_448, "trainer.max_epochs=4", "callbacks.test_curve=true"]
    crash = ["+callbacks.crash._target_=helpers.crash_at_step", "+callbacks.crash.step=26"]
    minutely = ["callbacks.checkpoint_every_min=1e-9"]  # last.ckpt after every step
    with pytest.raises(SimulatedCrash):  # in epoch 1, after a mid-epoch last.ckpt
        run_train(tmp_path, [*run, *crash[:1], "+callbacks.crash.step=5", *minutely])
    assert markdown_table(*read_curve(tmp_path)) == "(in progress: no epoch has finished yet)"
    with pytest.raises(SimulatedCrash):  # in epoch 3: last.ckpt holds two epochs
        run_train(tmp_path, [*run, *crash, "ckpt_path=last"])
    so_far, finished = read_curve(tmp_path)
    assert not finished and [p["epoch"] for p in so_far] == [1, 2]
    assert markdown_table(so_far, finished).endswith("newest checkpoint, after epoch 2)")
    results = run_train(tmp_path, [*run, "ckpt_path=last"])
    curve, finished = read_curve(tmp_path)
    assert finished and curve == results["test_curve"] and curve[:2] == so_far
    doc = tmp_path / "doc.md"
    doc.write_text("before\n<!-- curve:begin -->\nold\n<!-- curve:end -->\nafter\n")
    main([str(tmp_path), "--write", str(doc)])
    rows = doc.read_text().splitlines()
    assert rows[0] == "before" and rows[-1] == "after" and len(rows) == 2 + 2 + 4 + 2
    top1 = 100 * curve[3]["test_acc1"]
    assert rows[-3] == f"| 4 | {curve[3]['seconds']:,.0f} | {top1:.2f} |"
    with pytest.raises(SystemExit, match="neither results.json nor"):
        read_curve(tmp_path / "checkpoints")
