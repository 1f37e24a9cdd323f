"""``python evaluate.py task=gradcheck model=NAME [task.image_size=16] [task.samples=4]``: autograd
against centred finite differences in float64 (:mod:`zoo.evaluation.gradcheck`) for the model of
``model=NAME`` on a random input, module by module, in ``gradcheck.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from zoo.errors import UserError
from zoo.evaluation.gradcheck import build_float64_model, check_gradients, format_report
from zoo.io import atomic_write_json
from zoo.models.registry import get_model_entry
from zoo.training.module import builder_kwargs


def run(cfg: DictConfig) -> dict[str, Any]:
    task = cfg.task
    if int(task.samples) < 1 or int(task.batch_size) < 1 or not 0 < float(task.eps) < 1e-2:
        raise UserError(
            f"task.samples={task.samples} and task.batch_size={task.batch_size} must be >= 1 "
            f"and task.eps={task.eps} in (0, 0.01)"
        )
    torch.manual_seed(int(cfg.seed))
    name, kwargs = model_from_config(cfg.model)
    model = build_float64_model(name, kwargs, str(task.ode_solver), float(task.ode_step))
    input_size = get_model_entry(name).cfg.input_size
    in_chans = kwargs.get("in_chans", input_size[0])
    size = task.image_size or input_size[1]
    shape = (int(task.batch_size), in_chans, int(size), int(size))
    x = torch.randn(shape, generator=torch.Generator().manual_seed(int(cfg.seed)))
    try:
        report = check_gradients(
            model,
            x.double(),
            samples=int(task.samples),
            eps=float(task.eps),
            atol=float(task.atol),
            rtol=float(task.rtol),
            seed=int(cfg.seed),
        )
    except (RuntimeError, ValueError) as err:  # an input too small for the model's downsampling
        raise UserError(
            f"{name} cannot run on a {list(shape)} input ({str(err).splitlines()[0]}); "
            "use a larger task.image_size or task.batch_size"
        ) from None
    report = {
        "model": name,
        "input_shape": list(shape),
        "dtype": "float64",
        **{k: float(task[k]) for k in ("eps", "atol", "rtol")},
        "samples": int(task.samples),
        **report,
    }
    out = Path(cfg.output_dir)
    atomic_write_json(out / "gradcheck.json", report)
    print(format_report(report))
    print(f"wrote {out / 'gradcheck.json'}")
    return report


def model_from_config(model_cfg: DictConfig) -> tuple[str, dict[str, Any]]:
    """The name and builder arguments of ``model=NAME``: ``in_chans`` and ``num_classes`` when the
    config gives them (else the builder's defaults)."""
    spec = OmegaConf.to_container(model_cfg, resolve=True)
    kwargs = builder_kwargs(spec)
    for key in ("in_chans", "num_classes"):
        if spec.get(key):
            kwargs[key] = int(spec[key])
    return spec["name"], kwargs
