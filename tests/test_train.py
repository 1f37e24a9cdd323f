"""The trainer through real config composition: family shortcuts, learning, resume, DDP, errors."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import (
    LENET_448,
    SYNTHETIC_TINY,
    cli,
    compose,
    needs_fmnist,
    one_line_error,
    run_train,
)

import zoo
from zoo.errors import UserError
from zoo.paths import CONF_DIR
from zoo.tasks.train import run as train
from zoo.tools.gen_model_configs import FAMILY_SHORTCUTS, expected_configs


def test_every_registered_model_has_a_config() -> None:
    expected = expected_configs()
    stale = [
        n
        for n, text in expected.items()
        if not (CONF_DIR / "model" / f"{n}.yaml").is_file()
        or (CONF_DIR / "model" / f"{n}.yaml").read_text() != text
    ]
    assert not stale, f"run `python -m zoo.tools.gen_model_configs`: stale {stale}"


@pytest.mark.parametrize("shortcut", sorted(FAMILY_SHORTCUTS))
def test_family_shortcut_trains_a_few_steps(shortcut: str, tmp_path: Path) -> None:
    if not zoo.is_model(FAMILY_SHORTCUTS[shortcut]):
        pytest.skip(f"{FAMILY_SHORTCUTS[shortcut]} is not registered")
    results = run_train(
        tmp_path,
        [
            f"model={shortcut}",
            "trainer=debug",
            "trainer.limit_train_batches=2",
            "trainer.limit_val_batches=1",
            "trainer.limit_test_batches=1",
            *SYNTHETIC_TINY,
            "data.num_test=16",
            "data.val_size=16",
            "data.image_size=16",  # every shortcut runs at 16 px, 3x cheaper than 28 px
            "data.in_chans=1",
        ],
    )
    assert results["model"] == FAMILY_SHORTCUTS[shortcut]
    assert results["epochs"] == 1 and results["global_steps"] == 2
    for key in ("num_params", "macs", "wall_time_s", "best_val_acc1", "test_acc1", "test_loss"):
        assert results[key] is not None, key
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / "metrics.csv").is_file()


@needs_fmnist
def test_lenet5_learns_fashion_mnist_subset(tmp_path: Path) -> None:
    results = run_train(
        tmp_path,
        [
            "model=lenet5",
            "trainer.max_epochs=1",
            "data.train_subset=8000",
            "data.val_size=1000",
            "data.batch_size=64",
            "optim.lr=0.05",
        ],
    )
    assert results["test_acc1"] > 0.70
    assert results["dataset"] == "fashion_mnist" and results["data"]["test"] == 10_000


def test_same_seed_same_metrics(tmp_path: Path) -> None:
    args = ["model=lenet5", "trainer.max_epochs=1", *SYNTHETIC_TINY, "data.image_size=28"]
    a = run_train(tmp_path / "a", args)
    b = run_train(tmp_path / "b", args)
    assert a["test_loss"] == b["test_loss"] and a["best_val_acc1"] == b["best_val_acc1"]


def _cli(args: list[str]) -> subprocess.Popen:
    return cli("train.py", args)


def test_results_name_the_experiment_a_run_followed(tmp_path: Path) -> None:
    """compare keeps runs of two recipes apart by this name (a speedrun and a budget run of one
    model at one budget); a run composed without experiment=... records none."""
    tiny = ["model=lenet5", "train.budget_s=3", *SYNTHETIC_TINY, "data.image_size=28", "threads=1"]
    for name, args in (("speedrun", ["experiment=fmnist_speedrun"]), ("plain", [])):
        proc = _cli([*args, *tiny, f"hydra.run.dir={tmp_path / name}"])
        _, err = proc.communicate(timeout=300)  # reads the pipes: a full one would block the run
        assert proc.returncode == 0, err[-2000:]
    speedrun = json.loads((tmp_path / "speedrun" / "results.json").read_text())
    assert speedrun["recipe"] == "fmnist_speedrun" and speedrun["budget_s"] == 3
    assert json.loads((tmp_path / "plain" / "results.json").read_text())["recipe"] is None


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    args = [
        "model=lenet5",
        "trainer.max_epochs=4",
        "data=synthetic",
        "data.num_samples=1200",
        "data.image_size=28",
        "data.in_chans=1",
        "data.batch_size=32",
        "threads=1",
    ]
    full = _cli([*args, f"hydra.run.dir={tmp_path / 'full'}"])
    killed_dir = tmp_path / "killed"
    victim = _cli([*args, f"hydra.run.dir={killed_dir}"])
    last = killed_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    while not last.is_file() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert victim.poll() is None, "the run ended before it could be killed"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (killed_dir / "results.json").exists()
    resumed = _cli([*args, f"hydra.run.dir={killed_dir}", "ckpt_path=last"])
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()[-2000:]
    assert full.wait(timeout=300) == 0, full.stderr.read()[-2000:]
    a = json.loads((tmp_path / "full" / "results.json").read_text())
    b = json.loads((killed_dir / "results.json").read_text())
    for key in ("epochs", "global_steps", "best_val_acc1", "test_acc1", "test_loss"):
        assert a[key] == pytest.approx(b[key], abs=1e-6), key
    # results.json records each piece's command line and steps; the killed piece ends at the
    # step of the checkpoint the second one resumed from
    command = " ".join(["python", "train.py", f"hydra.run.dir={killed_dir}", *args])
    assert [p["command"] for p in b["pieces"]] == [command, f"{command} ckpt_path=last"]
    assert b["pieces"][0]["to_step"] == b["pieces"][1]["from_step"] > 0
    assert b["pieces"][1]["to_step"] == b["global_steps"]
    assert [(p["from_step"], p["to_step"]) for p in a["pieces"]] == [(0, a["global_steps"])]


def test_ddp_two_cpu_processes(tmp_path: Path) -> None:
    proc = _cli(
        [
            "model=lenet5",
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "trainer.precision=32",
            "trainer.max_epochs=1",
            "data=synthetic",
            "data.num_samples=256",
            "data.image_size=28",
            "data.in_chans=1",
            "data.batch_size=32",
            f"hydra.run.dir={tmp_path}",
        ]
    )
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    # 224 training images, 2 processes, batch 32: 3 steps each (drop_last) instead of 7.
    assert results["global_steps"] == 3


# The cnf_* experiments train zoo.flows' density module, not a classifier (tests/test_flows.py).
CLASSIFIER_EXPERIMENTS = sorted(
    p.stem for p in (CONF_DIR / "experiment").glob("*.yaml") if not p.stem.startswith("cnf_")
)


@pytest.mark.parametrize("name", CLASSIFIER_EXPERIMENTS)
def test_experiment_configs_compose(name: str) -> None:
    cfg = compose([f"experiment={name}"])
    assert zoo.is_model(cfg.model.name) or pytest.skip(f"{cfg.model.name} not registered yet")
    assert cfg.trainer.max_epochs > 0


# Every experiment reproduces a paper's recipe except our own Fashion-MNIST CPU recipes.
OWN_RECIPES = {"resnet20_fmnist", "cliquenet_fmnist_weights", "budget_fmnist", "fmnist_speedrun"}
PAPER_EXPERIMENTS = [name for name in CLASSIFIER_EXPERIMENTS if name not in OWN_RECIPES]


@pytest.mark.parametrize("name", PAPER_EXPERIMENTS)
def test_paper_recipes_train_with_plain_cross_entropy(name: str) -> None:
    # The library default smooths labels (0.1); the papers' recipes did not.
    assert compose([]).train.label_smoothing > 0
    assert compose([f"experiment={name}"]).train.label_smoothing == 0.0


@pytest.mark.parametrize(
    "name", sorted(p.stem for p in (CONF_DIR / "hparams_search").glob("*.yaml"))
)
def test_sweep_configs_compose(name: str) -> None:
    cfg = compose([f"hparams_search={name}"], return_hydra_config=True)
    assert cfg.hydra.mode.name == "MULTIRUN"
    assert cfg.hydra.sweeper.params


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["model=resnett"], "unknown model 'resnett'; did you mean: resnet"),
        (["data=fmnist"], "unknown data 'fmnist'; did you mean: mnist, fashion_mnist"),
        (["optim.lrr=0.1"], "unknown config key 'optim.lrr'; did you mean: optim.lr?"),
        (["model=resnet", "model.shortcutt=A"], "did you mean: model.shortcut?"),
    ],
)
def test_bad_overrides_one_line_exit_2(args: list[str], expected: str) -> None:
    proc = _cli(args)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert expected in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_missing_data_names_where_it_looked(tmp_path: Path) -> None:
    cfg = compose([f"output_dir={tmp_path}", "data=cifar10", f"data.root={tmp_path}"])
    with pytest.raises(UserError, match=r"data_batch_1.*not found in .*data.root"):
        train(cfg)


def test_bad_builder_argument_is_a_user_error(tmp_path: Path) -> None:
    cfg = compose([f"output_dir={tmp_path}", *SYNTHETIC_TINY, "model=resnet", "model.shortcut=C"])
    with pytest.raises(UserError, match="shortcut"):
        train(cfg)


def test_resume_refuses_a_pickle_that_runs_code(tmp_path: Path) -> None:
    marker, bad = tmp_path / "pwned", tmp_path / "bad.ckpt"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    bad.write_bytes(pickle.dumps({"state_dict": Evil()}))
    cfg = compose([f"output_dir={tmp_path}", *SYNTHETIC_TINY, "model=lenet5", f"ckpt_path={bad}"])
    with pytest.raises(UserError, match="not a zoo training checkpoint"):
        train(cfg)
    assert not marker.exists()


def test_nan_loss_stops_with_clear_message(tmp_path: Path) -> None:
    cfg = compose(
        [
            f"output_dir={tmp_path}",
            *SYNTHETIC_TINY,
            "data.image_size=28",
            "model=lenet5",
            "optim.lr=1e12",
            "trainer.max_epochs=3",
        ]
    )
    with pytest.raises(UserError, match="loss became (nan|inf).*lower the learning rate"):
        train(cfg)


@pytest.mark.slow
@needs_fmnist
def test_main_job_recipe_reaches_89_percent(tmp_path: Path) -> None:
    """The README's main job (make train): LeNet-5, 10 epochs, Fashion-MNIST, >= 89% test top-1."""
    results = run_train(tmp_path, ["model=lenet5", "data=fashion_mnist", "trainer=cpu"])
    assert results["epochs"] == 10 and results["test_acc1"] >= 0.89


TESTS_ON_PATH = {"PYTHONPATH": str(Path(__file__).parent)}  # callbacks from tests/helpers


def test_sigterm_saves_says_how_to_resume_and_exits_143(tmp_path: Path) -> None:
    stop = ["+callbacks.stop._target_=helpers.signal_at_step", "+callbacks.stop.step=5"]
    args = [*LENET_448, "trainer.max_epochs=2", *stop, f"hydra.run.dir={tmp_path}"]
    proc = cli("train.py", args, env_extra=TESTS_ON_PATH)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err[-2000:]
    assert "Traceback" not in err and not (tmp_path / "results.json").exists()
    assert err.strip().splitlines()[-1] == (
        f"stopped by SIGTERM at epoch 0, step 6; {tmp_path}/checkpoints/last.ckpt holds epoch 0, "
        "step 6: resume with the same command and ckpt_path=last"
    )
    # the run started, so the zoo wrote Hydra's record of its command
    assert "+callbacks.stop.step=5" in (tmp_path / ".hydra" / "overrides.yaml").read_text()


def test_refused_commands_and_evaluations_leave_a_run_folder_as_it_was(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run_train(run, [*LENET_448, "trainer.max_epochs=1"])
    (run / ".hydra").mkdir()
    (run / ".hydra" / "overrides.yaml").write_text("- model=lenet5\n- data=synthetic\n")
    (run / ".hydra" / "config.yaml").write_text("model:\n  name: lenet5\n")
    before = {
        str(p.relative_to(run)): p.read_bytes()
        for p in run.rglob("*")
        if p.is_file() and p.name != ".lock"
    }
    here = f"hydra.run.dir={run}"
    # overwrite=true with data that cannot be read: refused before the old run is touched
    bad_data = ["data=fashion_mnist", "data.root=/nonexistent", "overwrite=true", here]
    assert "does not hold the four IDX files" in one_line_error(cli("train.py", bad_data))
    evaluation = cli(
        "evaluate.py",
        [
            "task=eval",
            f"ckpt_path={run}/checkpoints/best.ckpt",
            *[a for a in LENET_448 if a.startswith("data")],
            here,
        ],
    )
    _, err = evaluation.communicate(timeout=300)
    assert evaluation.returncode == 0, err[-2000:]
    assert (run / "eval.json").is_file()
    assert {name: (run / name).read_bytes() for name in before} == before


def test_hydra_full_error_0_means_off(tmp_path: Path) -> None:
    env = {"HYDRA_FULL_ERROR": "0"}  # Hydra's switch, off: one line, as without it
    line = one_line_error(cli("train.py", ["data.batch_size=0", f"hydra.run.dir={tmp_path}"], env))
    assert line.startswith("error: data.batch_size=0 is not valid")


def test_a_run_folder_inside_a_file_is_one_line(tmp_path: Path, capsys) -> None:
    from zoo.tasks.cli import validate_overrides

    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit) as exit_info:
        validate_overrides("train", [f"hydra.run.dir={tmp_path}/file/run"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        f"error: hydra.run.dir={tmp_path}/file/run: {tmp_path}/file is a file, not a folder; "
        "choose another DIR\n"
    )


def _without_root_override() -> list[str] | None:
    """A command prefix under which this process's user cannot write a read-only folder: none
    for an ordinary user, ``setpriv`` dropping root's override of file permissions for root."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: a read-only folder cannot be made")
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]


def test_read_only_run_folders_are_one_line_errors(tmp_path: Path) -> None:
    prefix = _without_root_override()
    empty, finished = tmp_path / "empty", tmp_path / "finished"
    empty.mkdir()
    run_train(finished, [*LENET_448, "trainer.max_epochs=1"])
    try:
        for folder, extra in ((empty, []), (finished, ["ckpt_path=last"])):  # new run, resume
            folder.chmod(0o555)
            args = [*LENET_448, "trainer.max_epochs=2", *extra, f"hydra.run.dir={folder}"]
            line = one_line_error(cli("train.py", args, prefix=prefix))
            assert f"{folder} is not writable" in line, line
    finally:
        for folder in (empty, finished):
            folder.chmod(0o755)
