"""Export a model: its weights to safetensors, or the whole network to ONNX or TorchScript.

``python -m zoo.tools.export CKPT OUT.safetensors`` writes ``OUT.safetensors`` (tensors only,
loadable without pickle) and ``OUT.json`` beside it: model name, builder arguments, data statistics
and, when the run's ``results.json`` is found, its metrics. ``create_model(name,
pretrained=OUT.safetensors)`` and ``evaluate.py ckpt_path=...`` read it.

``python -m zoo.tools.export SOURCE OUT.onnx --onnx`` and ``... SOURCE OUT.pt --torchscript`` write
the network in eval mode with a dynamic batch axis. SOURCE is a training checkpoint (``.ckpt``),
exported weights (``.safetensors`` + ``.json``) or a registered model name (``--pretrained`` for
its weights, ``--set key=value`` for builder arguments). The file is checked before it is written:
ONNX Runtime (or the reloaded TorchScript module) must match PyTorch to 1e-4 on a batch of another
size than the one exported with. Model name, builder arguments, input size and the data's mean/std
travel inside the file (ONNX metadata; TorchScript extra file ``zoo.json``). See docs/export.md.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import re
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.errors import UserError
from zoo.io import atomic_write_bytes, check_output_file
from zoo.models.registry import get_model_entry, is_model
from zoo.weights.checkpoint import load_strict, model_from_checkpoint, read_checkpoint, save_weights
from zoo.weights.factory import create_model

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
FORMAT_NAMES = {"onnx": "ONNX", "torchscript": "TorchScript"}
INPUT_NAME, OUTPUT_NAME = "input", "logits"
EXPORT_BATCH, CHECK_BATCH = 2, 3  # checked on another batch size than traced: the axis is dynamic
TOLERANCE = 1e-4  # atol = rtol, as torch.allclose
METADATA_FILE = "zoo.json"  # the TorchScript extra file holding the metadata
# What a weights file's JSON records of its training run (results.json).
RESULT_METRICS = (
    "test_acc1",
    "test_acc5",
    "test_loss",
    "best_val_acc1",
    "epochs",
    "wall_time_s",
    "budget_s",
    "images_seen",
)


# ---- weights (safetensors + json) ---------------------------------------------------------------


def export(ckpt: Path, out: Path, tag: str = "fmnist", command: str = "") -> dict:
    """Write the weights of training checkpoint ``ckpt`` to ``out`` (.safetensors) + ``.json``."""
    model, info = model_from_checkpoint(ckpt)
    results = next(
        (p / "results.json" for p in ckpt.resolve().parents if (p / "results.json").is_file()), None
    )
    metrics, extra = {}, {}
    if results is not None:
        r = json.loads(results.read_text())
        metrics = {k: r[k] for k in RESULT_METRICS if r.get(k) is not None}
        for key in ("pieces", "bn_recalibration"):  # the run's pieces; what BN statistics came from
            if r.get(key):
                extra[key] = r[key]
    return save_weights(
        model,
        info,
        out,
        tag=tag,
        metrics=metrics,
        command=command,
        source_checkpoint=ckpt.name,
        **extra,
    )


# ---- the network (ONNX, TorchScript) ------------------------------------------------------------


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["solver=rk4", "step_size=0.25"]`` -> ``{"solver": "rk4", "step_size": 0.25}``, values
    typed as in ``train.py model.KEY=VALUE`` overrides (Hydra's grammar)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    overrides = {}
    for item in items:
        key = item.partition("=")[0]
        try:
            (parsed,) = parser.parse_overrides([item])
        except OverrideParseException:
            parsed = None
        if parsed is None or not key.isidentifier() or parsed.is_delete() or parsed.is_add():
            raise UserError(f"--set takes KEY=VALUE pairs (e.g. solver=rk4), got {item!r}")
        overrides[key] = parsed.value()
    return overrides


def _build(name: str, kwargs: dict[str, Any], source: str) -> nn.Module:
    try:
        return create_model(name, **kwargs)
    except (TypeError, ValueError) as err:  # unknown argument, or a value the builder refuses
        raise UserError(f"{source}: {err}") from None


def load_model(
    source: str, pretrained: str | None = None, overrides: dict[str, Any] | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """The eval-mode model of ``source`` (a checkpoint file or a registered name) and its info:
    ``model``, ``model_kwargs``, ``data`` (name, mean, std, in_chans, image_size when known)."""
    overrides = dict(overrides or {})
    path = Path(source).expanduser()
    if path.is_file() or path.suffix in (".ckpt", ".safetensors", ".pth", ".pt"):
        if pretrained:
            raise UserError(
                f"--pretrained is for a model name; {path.name} is a checkpoint with its weights"
            )
        sd, info = read_checkpoint(path)
        info["model_kwargs"] = {**info["model_kwargs"], **overrides}
        model = _build(info["model"], info["model_kwargs"], path.name)
        load_strict(model, sd, f"{path.name} ({info['model']})")
        return model.eval(), {**info, "source": path.name}
    try:
        get_model_entry(source)
    except ValueError as err:
        raise UserError(f"{source} is neither a file nor a registered model: {err}") from None
    data: dict[str, Any] = {}
    if pretrained:
        from zoo.weights.pretrained import get_tag, list_tags

        if pretrained in list_tags(source):
            tag = get_tag(source, pretrained)
            data = {
                "name": tag.dataset,
                "mean": list(tag.mean),
                "std": list(tag.std),
                "in_chans": tag.input_size[0],
                "image_size": list(tag.input_size[1:]),
            }
    model = _build(source, {**overrides, "pretrained": pretrained or False}, source)
    info = {"model": source, "model_kwargs": overrides, "data": data}
    return model.eval(), {**info, "source": f"{source} (pretrained={pretrained or False})"}


def input_size_of(info: dict[str, Any]) -> tuple[int, int, int]:
    """(C, H, W) the model is exported for: the training data's, else the registry default with
    the model's own ``in_chans``."""
    data = info.get("data") or {}
    default = get_model_entry(info["model"]).cfg.input_size
    in_chans = info["model_kwargs"].get("in_chans", data.get("in_chans", default[0]))
    height, width = data.get("image_size") or default[1:]
    return int(in_chans), int(height), int(width)


def _ode_blocks(model: nn.Module) -> list[nn.Module]:
    from zoo.models.odenet import ODEBlock

    return [m for m in model.modules() if isinstance(m, ODEBlock)]


def check_exportable(model: nn.Module, name: str) -> None:
    """Refuse what neither file format holds: an ODE block with an adaptive solver (its number of
    steps depends on the input, Chen et al. 2018 §3: a trace records one input's steps, and
    torch's ONNX exporter cannot convert the loop ``torch.export`` captures, docs/export.md)."""
    from zoo.models.odenet import ADAPTIVE_SOLVERS

    for block in _ode_blocks(model):
        if block.solver in ADAPTIVE_SOLVERS:
            raise UserError(
                f"{name} integrates with the adaptive solver {block.solver}, whose number of "
                "steps depends on the input: an ONNX or TorchScript file cannot hold it (in "
                "Python, torch.export.export captures it as a loop); export it with a "
                "fixed-step solver (--set solver=rk4 step_size=0.25, the same weights) "
                "or export rknet_mnist"
            )


@contextlib.contextmanager
def _quiet_tracing() -> Iterator[None]:
    """Tracing warns about every Python bool/len taken on a tensor (shape checks in our models,
    torchdiffeq's time-grid checks) and that torch.jit is deprecated; the export is checked
    numerically on another batch size instead. Other warnings pass."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated")
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based ONNX")
        warnings.filterwarnings("ignore", message="The feature will be removed")
        yield


def _export_error(name: str, fmt: str, err: Exception) -> UserError:
    cause = err.__cause__ or err
    first = re.sub(r"\x1b\[[0-9;]*m", "", str(cause)).strip().splitlines() or [""]
    return UserError(
        f"{name} cannot be exported to {FORMAT_NAMES[fmt]}: "
        f"{type(cause).__name__}: {first[0][:200]}"
    )


def onnx_bytes(model: nn.Module, example: torch.Tensor, metadata: dict[str, str]) -> bytes:
    """The ONNX model of ``model`` with a dynamic batch axis and ``metadata`` in its properties.

    torch's own exporter (``torch.onnx.export(dynamo=True)``, the default and recommended one
    since PyTorch 2.9; it needs onnxscript). An ODE block with a fixed-step solver is traced by
    the TorchScript-based exporter instead: the trace unrolls torchdiffeq's steps, the same for
    every input, much faster than the dynamo exporter converts the block's graph form
    (docs/export.md).
    """
    missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(
            f"ONNX export needs {' and '.join(missing)}: pip install onnx onnxscript onnxruntime "
            "(or the project's export extra: pip install -e '.[export]')"
        )
    import onnx

    if _ode_blocks(model):
        buffer = io.BytesIO()
        with _quiet_tracing():
            torch.onnx.export(
                model,
                (example,),
                buffer,
                dynamo=False,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            )
        proto = onnx.load_from_string(buffer.getvalue())
    else:
        # torch.export prints the partial graph of a failed capture to stderr: kept out of the
        # one-line error, passed on when the export succeeds.
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                verbose=False,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: torch.export.Dim("batch")},),
            )
        sys.stderr.write(stderr.getvalue())
        proto = program.model_proto
    onnx.helper.set_model_props(proto, metadata)
    return proto.SerializeToString()


def torchscript_bytes(model: nn.Module, example: torch.Tensor, metadata: dict[str, str]) -> bytes:
    """The traced TorchScript module (``torch.jit.trace``, which takes every exportable model;
    ``torch.jit.script`` does not compile CliqueNet or the ODE blocks, docs/export.md), with
    ``metadata`` as the extra file zoo.json."""
    with _quiet_tracing():
        traced = torch.jit.trace(model, example, check_trace=False)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer, _extra_files={METADATA_FILE: json.dumps(metadata)})
    return buffer.getvalue()


def run_exported(blob: bytes, fmt: str, x: torch.Tensor) -> torch.Tensor | None:
    """Run an exported file's bytes on ``x``; ``None`` for ONNX when onnxruntime is missing."""
    if fmt == "torchscript":
        with _quiet_tracing(), torch.no_grad():
            return torch.jit.load(io.BytesIO(blob), map_location="cpu")(x)
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    import onnxruntime

    session = onnxruntime.InferenceSession(blob, providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {INPUT_NAME: x.numpy()})[0])


def export_network(
    model: nn.Module,
    info: dict[str, Any],
    out: Path,
    fmt: str,
    input_size: tuple[int, int, int] | None = None,
) -> dict[str, Any]:
    """Write ``model`` (eval mode) to ``out`` as ``fmt`` ("onnx" or "torchscript") after checking
    the file against PyTorch. Returns what was written: format, input size, max abs difference."""
    name = info["model"]
    model = model.eval()
    check_exportable(model, name)
    size = tuple(input_size or input_size_of(info))
    data = info.get("data") or {}
    metadata = {
        "model": name,
        "model_kwargs": json.dumps(info["model_kwargs"], default=str),
        "input_size": json.dumps(size),
        "mean": json.dumps(data.get("mean")),
        "std": json.dumps(data.get("std")),
        "source": str(info.get("source", name)),
        "input": INPUT_NAME,
        "output": OUTPUT_NAME,
    }
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(EXPORT_BATCH, *size, generator=generator)
    check = torch.randn(CHECK_BATCH, *size, generator=generator)
    write = onnx_bytes if fmt == "onnx" else torchscript_bytes
    try:
        blob = write(model, example, metadata)
    except UserError:
        raise
    except Exception as err:  # the exporter's own failure, reported in one line
        raise _export_error(name, fmt, err) from None
    with torch.no_grad():
        expected = model(check)
    got = run_exported(blob, fmt, check)
    max_diff = None if got is None else (got - expected).abs().max().item()
    if got is not None and not torch.allclose(got, expected, rtol=TOLERANCE, atol=TOLERANCE):
        raise UserError(
            f"the {FORMAT_NAMES[fmt]} export of {name} differs from PyTorch by up to "
            f"{max_diff:.2g} (tolerance {TOLERANCE}); {out} was not written"
        )
    atomic_write_bytes(out, blob)
    return {"format": fmt, "model": name, "input_size": size, "max_abs_diff": max_diff}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Without --onnx/--torchscript: a checkpoint's weights to OUT.safetensors + .json.",
    )
    parser.add_argument("source", help="a .ckpt, an exported .safetensors, or a model name")
    parser.add_argument("output", type=Path, help="the .safetensors, .onnx or .pt file to write")
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--onnx", action="store_true", help="export the network to ONNX")
    kind.add_argument("--torchscript", action="store_true", help="export a TorchScript module")
    parser.add_argument("--pretrained", help="with a model name: a weights tag, file or URL")
    parser.add_argument(
        "--set", nargs="+", default=[], metavar="KEY=VALUE", help="builder arguments to override"
    )
    parser.add_argument(
        "--input-size", nargs=3, type=int, metavar=("C", "H", "W"), help="default: the data's"
    )
    parser.add_argument("--tag", default="fmnist", help="pretrained tag name recorded in the json")
    parser.add_argument("--command", default="", help="the training command, for the record")
    args = parser.parse_args(argv)
    fmt = "onnx" if args.onnx else "torchscript" if args.torchscript else None
    try:
        check_output_file(args.output, Path(args.source))
        if fmt is None:
            if args.output.suffix != ".safetensors":
                raise UserError(
                    f"the output file must end in .safetensors, not {args.output.name} "
                    "(or pass --onnx / --torchscript)"
                )
            if is_model(args.source) and not Path(args.source).is_file():
                raise UserError(
                    f"{args.source} is a model name: a model exports with --onnx or "
                    "--torchscript; weights to .safetensors come from a training checkpoint"
                )
            if args.pretrained or args.set or args.input_size:
                raise UserError("--pretrained, --set and --input-size need --onnx or --torchscript")
            meta = export(Path(args.source), args.output, args.tag, args.command)
            print(f"wrote {args.output} and {args.output.with_suffix('.json')} ({meta['model']})")
            return
        if args.output.suffix != FORMATS[fmt]:
            raise UserError(f"--{fmt} writes a {FORMATS[fmt]} file, not {args.output.name}")
        model, info = load_model(args.source, args.pretrained, parse_overrides(args.set))
        done = export_network(model, info, args.output, fmt, args.input_size)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    shape = "x".join(map(str, done["input_size"]))
    if done["max_abs_diff"] is None:
        checked = "not checked: onnxruntime is not installed"
    else:
        runtime = "ONNX Runtime" if fmt == "onnx" else "the reloaded module"
        checked = (
            f"{runtime} matches PyTorch to {done['max_abs_diff']:.1e} on a batch of {CHECK_BATCH}"
        )
    print(f"wrote {args.output} ({done['model']}, input Nx{shape}, dynamic batch N; {checked})")


if __name__ == "__main__":
    main()
