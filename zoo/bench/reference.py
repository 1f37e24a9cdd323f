"""Zoo models side by side with torchvision's or timm's (``python evaluate.py task=benchmark``).

Each zoo model and the reference implementation of the same architecture are measured in one
process, with the same threads, batch, input size and initial weights' shapes: training-step
images/s (forward, cross-entropy, backward and an SGD-momentum step), inference images/s (fp32,
``torch.inference_mode``) and peak training memory. Timings take ``task.warmup`` steps, then the
median of ``task.repeats`` rounds in which the zoo model and the reference alternate, so drifts in
machine load hit both. Peak memory on a GPU is ``torch.cuda.max_memory_allocated`` over two
training steps; on a CPU it is the resident-set high-water mark (``VmHWM``, reset through
``/proc/self/clear_refs``) over two training steps in a fresh process, minus the resident set
before the first step: gradients, optimizer state, activations and workspace.

``task.variants`` adds rows for zoo variants against the same reference: ``fast``
(:func:`zoo.models.fast.optimize`: channels_last and exact convolution rewrites), ``channels_last``,
``memory_efficient`` (builders that accept it) and ``compile`` (``torch.compile``). Ratios are
zoo / reference (higher is better for images/s, lower for memory).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

import zoo
from zoo.bench.memory import status_mib
from zoo.bench.timing import TrainingStep, time_alternating
from zoo.errors import UserError
from zoo.evaluation.tables import format_cell
from zoo.models.fast import optimize
from zoo.models.registry import count_params, get_model_entry

VARIANTS = ("default", "fast", "channels_last", "memory_efficient", "compile")


def reference_names(against: str) -> set[str]:
    if against == "torchvision":
        return set(torchvision.models.list_models(module=torchvision.models))
    if against == "timm":
        import timm

        return set(timm.list_models())
    raise UserError(f"against={against!r}: use against=torchvision or against=timm")


def build(name: str, source: str, variant: str, num_classes: int, in_chans: int) -> nn.Module:
    """The model ``name`` from ``source`` (zoo, torchvision or timm) in ``variant``'s form."""
    torch.manual_seed(0)
    if source == "torchvision":
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    elif source == "timm":
        import timm

        model = timm.create_model(name, pretrained=False, num_classes=num_classes)
    else:
        kwargs: dict[str, Any] = {"num_classes": num_classes, "in_chans": in_chans}
        if variant == "memory_efficient":
            if "memory_efficient" not in get_model_entry(name).accepted_kwargs:
                raise UserError(f"variant memory_efficient: {name} has no memory_efficient option")
            kwargs["memory_efficient"] = True
        model = zoo.create_model(name, **kwargs)
    if variant == "fast":
        optimize(model)
    elif variant == "channels_last":
        model.to(memory_format=torch.channels_last)
    return model


def peak_memory_mib(spec: dict[str, Any]) -> float | None:
    """Peak training memory of ``spec`` (see the module docstring); None where not measurable."""
    if spec["device"] == "cuda":
        device = torch.device("cuda")
        runner = _runner_from_spec(spec, device)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        runner.train_step()
        runner.train_step()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    if not Path("/proc/self/clear_refs").exists():
        return None
    cmd = [sys.executable, "-m", "zoo.bench.reference", "--memory", json.dumps(spec)]
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"])}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory probe failed for {spec}: {done.stderr.strip()[-500:]}")
    return float(done.stdout.strip().splitlines()[-1])


def _runner_from_spec(spec: dict[str, Any], device: torch.device) -> TrainingStep:
    c, h, w = spec["input_size"]
    model = build(spec["name"], spec["source"], spec["variant"], spec["num_classes"], c).to(device)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(spec["batch"], c, h, w, generator=gen).to(device)
    y = torch.randint(0, spec["num_classes"], (spec["batch"],), generator=gen).to(device)
    variant = spec["variant"]
    return TrainingStep(
        model,
        x,
        y,
        channels_last=variant in ("fast", "channels_last"),
        compile=variant == "compile",
    )


def _memory_probe(spec: dict[str, Any]) -> None:
    """Subprocess body: print the VmHWM rise over two training steps of a fresh model."""
    torch.set_num_threads(spec["threads"])
    runner = _runner_from_spec(spec, torch.device("cpu"))
    base = status_mib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
    runner.train_step()
    runner.train_step()
    print(status_mib("VmHWM") - base)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def benchmark(
    models: list[str],
    against: str,
    variants: list[str],
    input_size: tuple[int, int, int],
    batch: int,
    num_classes: int,
    warmup: int,
    repeats: int,
    device: str = "cpu",
    memory: bool = True,
) -> list[dict[str, Any]]:
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise UserError(f"unknown task.variants {bad}; choose from {', '.join(VARIANTS)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda but no CUDA device is visible; use device=cpu")
    known = reference_names(against)
    missing = [m for m in models if not zoo.is_model(m)]
    if missing:
        raise UserError(f"unknown model(s) {missing}; see zoo.list_models()")
    no_ref = [m for m in models if m not in known]
    if no_ref:
        shared = sorted(set(zoo.list_models()) & known)
        raise UserError(
            f"{no_ref} not in {against}; models with a {against} twin: {', '.join(shared)}"
        )
    dev = torch.device(device)
    threads = torch.get_num_threads()
    rows = []
    for name in models:
        specs = [
            {"name": name, "source": against, "variant": "default"},
            *({"name": name, "source": "zoo", "variant": v} for v in ["default", *variants]),
        ]
        for spec in specs:
            spec.update(
                input_size=list(input_size),
                batch=batch,
                num_classes=num_classes,
                device=device,
                threads=threads,
            )
        runners = [_runner_from_spec(s, dev) for s in specs]
        params = [count_params(r.model) for r in runners]
        train_s = time_alternating([r.train_step for r in runners], repeats, warmup, dev)
        infer_s = time_alternating([r.infer for r in runners], repeats, warmup, dev)
        del runners
        peaks = [peak_memory_mib(s) if memory else None for s in specs]
        ref = {"train": batch / train_s[0], "infer": batch / infer_s[0], "mem": peaks[0]}
        for i, spec in enumerate(specs[1:], start=1):
            row = {
                "model": name,
                "variant": spec["variant"],
                "reference": f"{against}.{name}",
                "params": params[i],
                "ref_params": params[0],
                "train_img_s": batch / train_s[i],
                "ref_train_img_s": ref["train"],
                "train_ratio": _ratio(batch / train_s[i], ref["train"]),
                "infer_img_s": batch / infer_s[i],
                "ref_infer_img_s": ref["infer"],
                "infer_ratio": _ratio(batch / infer_s[i], ref["infer"]),
                "peak_train_mib": peaks[i],
                "ref_peak_train_mib": ref["mem"],
                "memory_ratio": _ratio(peaks[i], ref["mem"]),
            }
            rows.append(row)
            print(_line(row), flush=True)
    return rows


MD_COLUMNS = [
    ("model", "model"),
    ("variant", "variant"),
    ("train_img_s", "train img/s"),
    ("ref_train_img_s", "ref train img/s"),
    ("train_ratio", "train ×"),
    ("infer_img_s", "infer img/s"),
    ("ref_infer_img_s", "ref infer img/s"),
    ("infer_ratio", "infer ×"),
    ("peak_train_mib", "peak MiB"),
    ("ref_peak_train_mib", "ref peak MiB"),
    ("memory_ratio", "memory ×"),
]


def _line(row: dict[str, Any]) -> str:
    return "  ".join(f"{label}={format_cell(row[key], '–')}" for key, label in MD_COLUMNS)


def machine() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    cpuinfo = Path("/proc/cpuinfo")
    for line in cpuinfo.read_text().splitlines() if cpuinfo.exists() else []:
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    return f"CPU ({os.cpu_count()} cores)"


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--memory":
    _memory_probe(json.loads(sys.argv[2]))
