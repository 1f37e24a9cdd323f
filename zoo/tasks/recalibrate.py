"""``python evaluate.py task=recalibrate ckpt_path=PATH [task.num_images=N] [task.out=FILE]``.

Re-estimates every BatchNorm's running statistics of a checkpoint on ``N`` training images with
dropout off (:func:`zoo.training.recalibrate.recalibrate_bn`), prints test top-1 before and after,
and writes the recalibrated weights as ``.safetensors`` + ``.json`` (the published weights'
format; the JSON keeps the source's record and adds ``bn_recalibration``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from zoo.errors import UserError
from zoo.evaluation.metrics import evaluate_model
from zoo.io import check_output_file
from zoo.tasks.common import command_line, load_checkpoint_and_data
from zoo.training.recalibrate import recalibrate_bn
from zoo.weights.checkpoint import save_weights

TEST_METRICS = {"acc1": "test_acc1", "acc5": "test_acc5", "loss": "test_loss"}


def run(cfg: DictConfig) -> dict[str, Any]:
    num_images = cfg.task.num_images
    if num_images is not None and (not isinstance(num_images, int) or num_images < 1):
        raise UserError(f"task.num_images={num_images!r}: give a whole number >= 1, or null (all)")
    source = Path(cfg.ckpt_path or "")
    out = (
        Path(cfg.task.out)
        if cfg.task.out
        else Path(cfg.output_dir) / f"{source.stem}_bn.safetensors"
    )
    if out.suffix != ".safetensors":
        raise UserError(f"task.out={out} must end in .safetensors")
    if cfg.task.out:  # before the work: its folder exists, and it is not the source itself
        check_output_file(out, source)
    model, info, dm = load_checkpoint_and_data(cfg, "recalibrate", stage="fit")
    loader = dm.calibration_dataloader()
    num_batches = len(loader) if num_images is None else -(-num_images // loader.batch_size)
    used = min(len(loader.labels), min(num_batches, len(loader)) * loader.batch_size)
    before = evaluate_model(model, dm.test_dataloader(), model.num_classes)
    recalibrate_bn(model, loader, num_batches)
    after = evaluate_model(model, dm.test_dataloader(), model.num_classes)

    recalibration = {
        "num_images": used,
        "augmentation": "none",
        "dropout": "off",
        **{f"{name}_before": before[key] for key, name in TEST_METRICS.items()},
        **{f"{name}_after": after[key] for key, name in TEST_METRICS.items()},
        "test_images": after["num_images"],
    }
    metrics = {**info.get("metrics", {}), **{v: after[k] for k, v in TEST_METRICS.items()}}
    earlier = info.get("command", "")
    command = command_line("evaluate.py")
    command = f"{earlier}; then {command}" if earlier else command
    meta = save_weights(
        model,
        info,
        out,
        tag=info.get("tag", "fmnist"),
        metrics=metrics,
        command=command,
        source_checkpoint=info.get("source_checkpoint", source.name),
        bn_recalibration=recalibration,
    )
    rows = [
        ("model", info["model"]),
        ("recalibrated on", f"{used:,} training images (no augmentation, dropout off)"),
        ("test top-1", f"{100 * before['acc1']:.2f}% -> {100 * after['acc1']:.2f}%"),
        ("test loss", f"{before['loss']:.4f} -> {after['loss']:.4f}"),
        ("written", f"{out} (+ .json)"),
    ]
    print("\n".join(f"  {k:<15} {v}" for k, v in rows))
    return meta
