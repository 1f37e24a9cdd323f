"""Runs that can be trusted for hours: checkpoints, resume with history, run folders, bad values."""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import LENET_448, SYNTHETIC_TINY, SimulatedCrash, cli, one_line_error, run_train
from pytorch_lightning.callbacks import ModelCheckpoint

from zoo.errors import RunInterrupted, UserError
from zoo.training.callbacks import BestCheckpoint, TrainingClock

# 4 epochs of 12 steps: small enough for a second, long enough to interrupt inside an epoch.
RUN = [
    *LENET_448,
    "trainer.max_epochs=4",
    "trainer.log_every_n_steps=5",
    "callbacks.test_curve=true",
]
TIMING = {"seconds"}


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _crash_then_resume(out: Path, step: int, extra: list[str]) -> dict:
    crash = ["+callbacks.crash._target_=helpers.crash_at_step", f"+callbacks.crash.step={step}"]
    with pytest.raises(SimulatedCrash):
        run_train(out, [*RUN, *extra, *crash])
    assert not (out / "results.json").exists()
    return run_train(out, [*RUN, *extra, "ckpt_path=last"])


@pytest.mark.parametrize(
    ("step", "extra"),
    [
        (26, []),  # killed in epoch 2: resumes from the end of epoch 1
        (30, ["callbacks.checkpoint_every_min=1e-9"]),  # a checkpoint after every step
        (30, ["callbacks.checkpoint_every_min=1e-9", "callbacks.ema=true", "train.tta=flip_shift"]),
    ],
    ids=["epoch-end", "mid-epoch", "mid-epoch-ema-tta"],
)
def test_resume_keeps_the_whole_history(tmp_path: Path, step: int, extra: list[str]) -> None:
    full = run_train(tmp_path / "full", [*RUN, *extra])
    resumed = _crash_then_resume(tmp_path / "resumed", step, extra)
    for key in ("epochs", "global_steps", "best_val_acc1", "test_acc1", "test_loss", "images_seen"):
        assert resumed[key] == pytest.approx(full[key], abs=1e-6), key
    # metrics.csv holds every epoch from the first, as the uninterrupted run's
    a, b = _rows(tmp_path / "full" / "metrics.csv"), _rows(tmp_path / "resumed" / "metrics.csv")
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b, strict=True):
        for key in ra:
            assert float(ra[key] or 0) == pytest.approx(float(rb[key] or 0), rel=1e-5), key
    # the time-to-accuracy curve continues, and the wall time adds the pieces' times
    assert [p["epoch"] for p in resumed["test_curve"]] == [1, 2, 3, 4]
    for pa, pb in zip(full["test_curve"], resumed["test_curve"], strict=True):
        assert pa["test_acc1"] == pytest.approx(pb["test_acc1"])
    seconds = [p["seconds"] for p in resumed["test_curve"]]
    assert seconds == sorted(seconds) and resumed["wall_time_s"] >= seconds[-1]


def test_last_checkpoint_after_every_epoch_even_without_improvement(tmp_path: Path) -> None:
    # lr 0 after a first epoch: validation never improves again, last.ckpt must still move on
    run_train(tmp_path, [*RUN, "trainer.max_epochs=3", "optim.lr=1e-12", "scheduler=none"])
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True, mmap=True)
    best = torch.load(tmp_path / "checkpoints" / "best.ckpt", weights_only=True, mmap=True)
    assert last["epoch"] == 2 and best["epoch"] < last["epoch"]


def test_a_run_folder_is_never_silently_overwritten(tmp_path: Path) -> None:
    run_train(tmp_path, [*RUN, "trainer.max_epochs=1"])
    files = ["metrics.csv", "config.yaml", "results.json", "checkpoints/last.ckpt"]
    before = {f: (tmp_path / f).read_bytes() for f in files}
    with pytest.raises(UserError, match="already holds a run.*ckpt_path=last.*overwrite=true"):
        run_train(tmp_path, [*RUN, "trainer.max_epochs=1", "seed=1"])
    with pytest.raises(UserError):  # a failing run changes nothing either
        run_train(tmp_path, [*RUN, "model=resnet20", "model.shortcut=C"])
    assert {f: (tmp_path / f).read_bytes() for f in files} == before
    results = run_train(tmp_path, [*RUN, "trainer.max_epochs=1", "seed=1", "overwrite=true"])
    assert results["seed"] == 1 and len({r["epoch"] for r in _rows(tmp_path / "metrics.csv")}) == 1


def test_one_run_per_folder(tmp_path: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / ".lock").write_text(f"{sleeper.pid} {os.uname().nodename}\n")
        with pytest.raises(UserError, match=f"another run \\(PID {sleeper.pid}\\)"):
            run_train(tmp_path, [*RUN, "trainer.max_epochs=1"])
        assert not (tmp_path / "config.yaml").exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    # the lock of a process that is gone is stale: the run takes it and releases it at the end
    results = run_train(tmp_path, [*RUN, "trainer.max_epochs=1"])
    assert results["epochs"] == 1 and not (tmp_path / ".lock").exists()


def test_resume_refuses_another_model_naming_the_options(tmp_path: Path) -> None:
    base = [*SYNTHETIC_TINY, "data.image_size=16", "data.in_chans=1", "trainer.max_epochs=1"]
    run_train(tmp_path, [*base, "model=resnet20", "model.shortcut=A"])
    with pytest.raises(UserError, match=r"other model options \(shortcut: 'A' -> 'B'\)"):
        run_train(tmp_path, [*base, "model=resnet20", "ckpt_path=last", "trainer.max_epochs=2"])
    with pytest.raises(UserError, match="trained as 'resnet20', not 'lenet5'"):
        run_train(tmp_path, [*base, "model=lenet5", "ckpt_path=last", "trainer.max_epochs=2"])


def test_resume_may_switch_memory_efficient_recomputation(tmp_path: Path) -> None:
    base = [*SYNTHETIC_TINY, "data.image_size=16", "data.in_chans=1", "model=densenet16_k36"]
    run_train(tmp_path, [*base, "trainer.max_epochs=1", "model.memory_efficient=false"])
    on = [*base, "trainer.max_epochs=2", "model.memory_efficient=true", "ckpt_path=last"]
    assert run_train(tmp_path, on)["epochs"] == 2
    with pytest.raises(UserError, match=r"other model options \(drop_rate: 0.0 -> 0.2\)"):
        run_train(tmp_path, [*on, "trainer.max_epochs=3", "model.drop_rate=0.2"])


@pytest.mark.parametrize("content", [b"", b"not a checkpoint\n", b"PK\x03\x04truncated"])
def test_bad_checkpoint_files_are_one_line_errors(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(content)
    proc = cli("train.py", [*SYNTHETIC_TINY, f"ckpt_path={bad}", f"hydra.run.dir={tmp_path}/run"])
    line = one_line_error(proc)
    assert str(bad) in line and "weights_only=False" not in line


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("trainer.max_epochs=abc", "trainer.max_epochs"),
        ("data.batch_size=0", "data.batch_size"),
        ("threads=-1", "threads"),
        ("optim.lr=-0.1", "optim.lr"),
        ("trainer.precision=fp17", "trainer.precision"),
        ("train.budget_s=0", "train.budget_s"),
        ("allocator=fast", "allocator"),
        ("+trainer.max_steps=-5", "trainer.max_steps"),
        ("+trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches"),
        ("train.dropout=1.5", "train.dropout"),
        ("data.num_classes=1", "data.num_classes"),
        ("data.val_size=-3", "data.val_size"),
    ],
)
def test_bad_values_are_refused_before_any_work(tmp_path: Path, override: str, key: str) -> None:
    with pytest.raises(UserError, match=f"^{key}=.* is not valid: use "):
        run_train(tmp_path, [*SYNTHETIC_TINY, override])
    assert not (tmp_path / "config.yaml").exists()


def test_bad_value_on_the_command_line(tmp_path: Path) -> None:
    line = one_line_error(cli("train.py", ["data.batch_size=0", f"hydra.run.dir={tmp_path}"]))
    assert line.startswith("error: data.batch_size=0 is not valid")


def test_final_test_honours_limit_test_batches(tmp_path: Path, monkeypatch) -> None:
    from zoo.training.module import ZooClassifier

    calls = []
    original = ZooClassifier.test_step
    monkeypatch.setattr(
        ZooClassifier, "test_step", lambda self, *a: calls.append(1) or original(self, *a)
    )
    base = [*SYNTHETIC_TINY, "data.image_size=16", "data.in_chans=1", "trainer.max_epochs=1"]
    run_train(
        tmp_path,
        [*base, "data.num_test=64", "data.eval_batch_size=16", "trainer.limit_test_batches=1"],
    )
    assert len(calls) == 1


def test_full_disk_keeps_the_last_good_checkpoint(tmp_path: Path, monkeypatch) -> None:
    from zoo.training.fit import AtomicCheckpointIO

    saves = []
    original = AtomicCheckpointIO.save_checkpoint

    def save(self, checkpoint, path, storage_options=None):
        saves.append(path)
        if len(saves) > 2:  # best + last of epoch 1 are written, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        original(self, checkpoint, path, storage_options)

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", save)
    with pytest.raises(UserError, match="disk is full.*last good checkpoint is kept"):
        run_train(tmp_path, [*RUN, "trainer.max_epochs=3"])
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 0


def test_a_checkpoint_folder_that_refuses_writes_is_a_one_line_error(
    tmp_path: Path, monkeypatch
) -> None:
    from zoo.training.fit import AtomicCheckpointIO

    def refuse(self, checkpoint, path, storage_options=None):
        raise PermissionError(errno.EACCES, "Permission denied", f"{path}.tmp")

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", refuse)
    with pytest.raises(UserError, match=f"^cannot write into {tmp_path}/checkpoints \\(Perm"):
        run_train(tmp_path, [*RUN, "trainer.max_epochs=1"])


def test_nan_loss_says_whether_a_checkpoint_exists(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="loss became (nan|inf).*no checkpoint had been written"):
        run_train(tmp_path, [*RUN, "optim.lr=1e12"])


def test_results_json_is_valid_after_resume(tmp_path: Path) -> None:
    results = _crash_then_resume(tmp_path, 14, [])
    assert json.loads((tmp_path / "results.json").read_text()) == results


def test_an_input_too_small_for_the_model_names_the_smallest_size(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="densenet121 needs inputs of at least"):
        run_train(tmp_path, [*SYNTHETIC_TINY, "model=densenet121", "data.image_size=16"])


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def test_overwrite_replaces_the_old_run_only_once_the_new_one_has_started(tmp_path: Path) -> None:
    run_train(tmp_path, [*RUN, "trainer.max_epochs=1"])
    before = _snapshot(tmp_path)
    # refused by its data, then by a loss that diverges before the first checkpoint: nothing lost
    with pytest.raises(UserError, match="does not hold the four IDX files"):
        run_train(tmp_path, ["data=fashion_mnist", "data.root=/nonexistent", "overwrite=true"])
    assert _snapshot(tmp_path) == before
    with pytest.raises(UserError, match="no checkpoint had been written yet"):
        run_train(tmp_path, [*RUN, "optim.lr=1e12", "seed=1", "overwrite=true"])
    assert _snapshot(tmp_path) == before
    # a new run that has written last.ckpt has started: it replaces the old one, and resumes
    crash = ["+callbacks.crash._target_=helpers.crash_at_step", "+callbacks.crash.step=14"]
    with pytest.raises(SimulatedCrash):
        run_train(tmp_path, [*RUN, "seed=1", "overwrite=true", *crash])
    assert not (tmp_path / "results.json").exists() and not (tmp_path / ".overwritten").exists()
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0
    assert run_train(tmp_path, [*RUN, "seed=1", "ckpt_path=last"])["seed"] == 1


def test_a_resume_with_nothing_to_resume_starts_clean_or_refuses(tmp_path: Path) -> None:
    one_epoch = [*RUN, "trainer.max_epochs=1", "callbacks.checkpoint_every_min=null"]
    crash = ["+callbacks.crash._target_=helpers.crash_at_step", "+callbacks.crash.step=8"]
    with pytest.raises(SimulatedCrash):  # dies before its first checkpoint, after logging
        run_train(tmp_path, [*one_epoch, *crash])
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists()
    run_train(tmp_path, [*one_epoch, "ckpt_path=last"])  # starts over, without the dead rows
    steps = [r["step"] for r in _rows(tmp_path / "metrics.csv") if r.get("train/loss")]
    assert steps and len(steps) == len(set(steps))
    # a finished run whose last.ckpt is gone is not restarted over itself
    (tmp_path / "checkpoints" / "last.ckpt").unlink()
    before = _snapshot(tmp_path)
    with pytest.raises(UserError, match="finished run .* has no checkpoints/last.ckpt to resume"):
        run_train(tmp_path, [*one_epoch, "ckpt_path=last"])
    assert _snapshot(tmp_path) == before


def test_a_run_restored_from_its_last_ckpt_alone_tests_a_checkpoint_that_exists(
    tmp_path: Path,
) -> None:
    # A folder rebuilt from a copy of last.ckpt (make save-progress) has lost the best.ckpt that
    # the checkpoint's state names. With lr 1e-30 (LeNet-5 has no BatchNorm) no later epoch beats
    # the lost best, so only a best tracked again from the resumed epoch leaves one to test.
    frozen = [*RUN, "optim.lr=1e-30"]
    crash = ["+callbacks.crash._target_=helpers.crash_at_step", "+callbacks.crash.step=26"]
    with pytest.raises(SimulatedCrash):
        run_train(tmp_path, [*frozen, *crash])
    last = (tmp_path / "checkpoints" / "last.ckpt").read_bytes()
    shutil.rmtree(tmp_path)
    (tmp_path / "checkpoints").mkdir(parents=True)
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(last)
    results = run_train(tmp_path, [*frozen, "ckpt_path=last"])
    assert results["epochs"] == 4
    assert torch.load(results["best_checkpoint"], weights_only=True)["epoch"] == 2


def test_the_best_checkpoint_state_resumes_from_lightnings_own() -> None:
    ours = BestCheckpoint(monitor="val/acc1", mode="max", every_n_epochs=1)
    lightnings = ModelCheckpoint(monitor="val/acc1", mode="max", every_n_epochs=1)
    assert ours.state_key == lightnings.state_key


def test_an_overwrite_killed_before_its_first_checkpoint_gives_the_old_run_back(
    tmp_path: Path, monkeypatch
) -> None:
    from zoo.training import rundir

    run_train(tmp_path, [*RUN, "trainer.max_epochs=1"])
    before = _snapshot(tmp_path)
    with monkeypatch.context() as patch:  # the process dies before it can settle the overwrite
        patch.setattr(rundir, "settle_overwrite", lambda out: None)
        with pytest.raises(UserError, match="loss became"):
            run_train(tmp_path, [*RUN, "optim.lr=1e12", "overwrite=true"])
    assert not (tmp_path / "results.json").exists()
    with pytest.raises(UserError, match="already holds a run"):  # the next command settles it
        run_train(tmp_path, [*RUN, "seed=1"])
    assert _snapshot(tmp_path) == before


def test_non_finite_validation_stops_the_run_and_is_never_best(tmp_path: Path) -> None:
    poison = ["+callbacks.poison._target_=helpers.poison_validation", "+callbacks.poison.epoch=1"]
    with pytest.raises(
        UserError, match=r"validation became non-finite \(val/loss (nan|inf).*epoch 1"
    ):
        run_train(tmp_path, [*RUN, "trainer.max_epochs=3", *poison])
    assert not (tmp_path / "results.json").exists()
    for name in ("best.ckpt", "last.ckpt"):  # both from epoch 0, the last finite one
        checkpoint = torch.load(tmp_path / "checkpoints" / name, weights_only=True)
        assert checkpoint["epoch"] == 0, name
    assert all(
        r["val/loss"] in ("", None) or float(r["val/loss"]) < 1e30
        for r in _rows(tmp_path / "metrics.csv")
    )


@pytest.mark.parametrize(("signum", "code"), [(15, 143), (2, 130)], ids=["SIGTERM", "Ctrl-C"])
def test_a_stop_signal_mid_epoch_saves_last_ckpt_and_resumes(
    tmp_path: Path, signum: int, code: int
) -> None:
    full = run_train(tmp_path / "full", [*RUN, "callbacks.checkpoint_every_min=null"])
    out = tmp_path / "stopped"
    stop = ["+callbacks.stop._target_=helpers.signal_at_step", "+callbacks.stop.step=30"]
    stop.append(f"+callbacks.stop.signum={signum}")
    with pytest.raises(
        RunInterrupted, match=r"at epoch 2, step 31.*resume .*ckpt_path=last"
    ) as info:
        run_train(out, [*RUN, "callbacks.checkpoint_every_min=null", *stop])
    assert info.value.exit_code == code and not (out / "results.json").exists()
    last = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 31  # saved after the batch the signal arrived in
    resumed = run_train(out, [*RUN, "callbacks.checkpoint_every_min=null", "ckpt_path=last"])
    for key in ("epochs", "global_steps", "best_val_acc1", "test_acc1", "test_loss", "images_seen"):
        assert resumed[key] == pytest.approx(full[key], abs=1e-6), key
    # the two pieces split the steps and the training time
    steps = [(p["from_step"], p["to_step"]) for p in resumed["pieces"]]
    assert steps == [(0, 31), (31, full["global_steps"])]
    seconds = sum(p["training_s"] for p in resumed["pieces"])
    assert seconds == pytest.approx(resumed["wall_time_s"], abs=0.02)


def test_a_run_resumed_from_a_checkpoint_without_pieces_records_them_as_one() -> None:
    """Checkpoints written before the clock kept its pieces: all they did is one earlier piece
    with no command, which ends where the resumed piece starts."""
    clock = TrainingClock()
    clock.load_state_dict({"elapsed_s": 5.0, "images": 640, "budget_s": None})
    clock.command = "python train.py ckpt_path=last"
    clock.on_train_start(SimpleNamespace(global_step=7), None)
    earlier, now = clock.run_pieces()
    assert earlier == {"command": None, "from_step": 0, "to_step": 7, "training_s": 5.0}
    assert now["command"] == clock.command and now["from_step"] == now["to_step"] == 7


@pytest.mark.parametrize(
    "extra",
    [[], ["model=resnet20", "callbacks.recalibrate_bn=true", "callbacks.recalibrate_images=64"]],
    ids=["lenet5", "resnet20-recalibrated"],
)
def test_float64_trains_validates_and_tests(tmp_path: Path, extra: list[str]) -> None:
    """Every pass after fit (test curve, BatchNorm recalibration, test, MACs) runs in float64."""
    results = run_train(tmp_path, [*RUN, "trainer.max_epochs=1", "trainer.precision=64", *extra])
    assert results["test_acc1"] is not None and results["macs"] > 0
    assert len(results["test_curve"]) == 1
    assert ("bn_recalibration" in results) == bool(extra)
    best = torch.load(tmp_path / "checkpoints" / "best.ckpt", weights_only=True)
    weights = {k: v for k, v in best["state_dict"].items() if k.startswith("model.")}
    assert {v.dtype for v in weights.values() if v.is_floating_point()} == {torch.float64}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.num_classes=0", "model.num_classes must be an integer >= 1, got 0"),
        ("model.in_chans=0", "model.in_chans must be an integer >= 1, got 0"),
        ("model.num_classes=10.5", "model.num_classes must be an integer >= 1, got 10.5"),
        ("model.num_classes=1.5", "model.num_classes must be an integer >= 1, got 1.5"),
        ("model.num_classes=ten", "model.num_classes must be an integer >= 1, got 'ten'"),
        ("model.num_classes=5", "model.num_classes=5 but the data has 10 classes"),
        ("model.in_chans=3", "model.in_chans=3 but the data has 1 channels"),
        ("model.drop_rate=1.5", "drop_rate must be a probability in \\[0, 1\\), got 1.5"),
    ],
)
def test_model_counts_are_checked_as_create_model_checks_them(
    tmp_path: Path, override: str, message: str
) -> None:
    model = "model=cliquenet_k36_t12" if "drop_rate" in override else "model=lenet5"
    with pytest.raises(UserError, match=message):
        run_train(tmp_path, [*RUN, model, override])
    assert not (tmp_path / "config.yaml").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["+trainer.nonsense=1"], "unknown config key 'trainer.nonsense'"),
        (["+trainer.max_epoch=2"], "did you mean: trainer.max_epochs"),
        (["+train.nonsense=1"], "unknown config key 'train.nonsense'"),
        (["+data.nonsense=1"], "unknown config key 'data.nonsense'"),
        (["+optim.nonsense=1"], "unknown config key 'optim.nonsense'"),
        (["data=imagefolder"], "data.root has no value: give it on the command line"),
        (["trainer.max_epochs=-1"], "trainer.max_epochs=-1 trains forever"),
        (["train.adversarial={eps:0.03,steps:0}"], "train.adversarial.steps=0 is not valid"),
        (["train.adversarial={eps:fast}"], "train.adversarial.eps='fast' is not valid"),
        (["trainer.devices=0"], r"^trainer: `Trainer\(devices=0\)` value is not a valid input"),
    ],
)
def test_unknown_keys_and_missing_values_are_one_line_errors(
    tmp_path: Path, overrides: list[str], message: str
) -> None:
    base = [] if overrides[0].startswith("data=") else SYNTHETIC_TINY
    with pytest.raises(UserError, match=message):
        run_train(tmp_path, [*base, *overrides])
    assert not (tmp_path / "config.yaml").exists()


def test_a_misspelt_optimized_metric_is_an_error_not_nan(tmp_path: Path) -> None:
    from helpers import compose

    from zoo.tasks.train import run as train

    args = [*RUN, "trainer.max_epochs=1", "threads=1"]
    best = train(compose([f"output_dir={tmp_path / 'a'}", *args, "optimized_metric=test_acc1"]))
    assert best == json.loads((tmp_path / "a" / "results.json").read_text())["test_acc1"]
    with pytest.raises(UserError, match="optimized_metric=best_val_acc is not a result"):
        train(compose([f"output_dir={tmp_path / 'b'}", *args, "optimized_metric=best_val_acc"]))
    assert (tmp_path / "b" / "results.json").is_file()  # the run itself is kept


def test_max_epochs_minus_one_is_fine_with_a_budget() -> None:
    from helpers import compose

    from zoo.tasks.config_checks import check_train_config

    for budget in ("train.budget_s=5", "+trainer.max_steps=10"):
        check_train_config(compose(["trainer.max_epochs=-1", budget]))


def test_checkpoint_folder_and_run_folder_inside_a_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=f"ckpt_path={tmp_path} is a folder: give a checkpoint"):
        run_train(tmp_path / "run", [*SYNTHETIC_TINY, f"ckpt_path={tmp_path}"])
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="file is a file, not a folder"):
        run_train(tmp_path / "file" / "run", SYNTHETIC_TINY)
