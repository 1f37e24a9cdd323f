"""Pretrained weights: tags, local files and URLs; the download cache; safe reading; adaptation.

``create_model(name, pretrained=...)`` calls ``load_pretrained`` with ``True`` (the model's default
tag), a tag (``"tv_in1k"``…), a local file (.pth .pt .bin .tar .safetensors .ckpt) or a URL. Files
are read with ``torch.load(weights_only=True)`` or safetensors: a checkpoint can never run code.
Anything that is not a weights file (empty, truncated, text, a foreign pickle or archive) is a
one-line ``UserError`` naming the file.

Tags come from the models' records (``ModelCfg.torchvision``/``timm``/``weights``) and from
``weights/*.json``. Checkpoints are unwrapped generically (``{"state_dict": ...}``,
``{"model": ...}``, DataParallel ``module.`` and the zoo's Lightning ``model.`` prefixes); foreign
layouts are converted by the model's own ``pretrained_filter_fn`` (in its family file).

Adaptation, driven by the record's ``first_conv`` and ``classifier``: a different ``in_chans``
adapts the first convolution (sum over RGB for one channel, repeat and rescale otherwise); a
different number of classes re-initialises the classifier (logged); ``num_classes=0`` drops it.
Anything else that does not fit is an error listing the missing, unexpected and mismatched keys.

Downloads go to ``torch.hub.get_dir()/checkpoints`` (``$TORCH_HOME``) under the URL's file name
(torchvision's names); a second URL with the same file name gets its own file there. They are
SHA-256 checked, and ``ZOO_OFFLINE=1`` forbids them: then the error names the file to place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import re
import urllib.request
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.errors import UserError
from zoo.io import atomic_write_text
from zoo.models.registry import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ModelCfg,
    PretrainedTag,
    cache_filename,
    get_model_entry,
    model_names,
    pretrained_cfg,
)
from zoo.paths import ROOT

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PretrainedTag",
    "adapt_input_conv",
    "adapt_state_dict",
    "all_tags",
    "cache_filename",
    "download",
    "get_tag",
    "list_tags",
    "load_pretrained",
    "read_state_dict",
    "unwrap_state_dict",
]

log = logging.getLogger(__name__)

WEIGHTS_DIR = ROOT / "weights"
DOWNLOAD_TIMEOUT_S = 30
_WEIGHTS_HINT = (
    "give a state dict saved with torch.save (.pth .pt .bin .ckpt) or a .safetensors file"
)

# ---- tags ---------------------------------------------------------------------------------------

# File names that carry a SHA-256 prefix by convention (torch.hub's check_hash, timm's
# clean_checkpoint.py); elsewhere a "-1234abcd.pth" suffix is not known to be a hash.
_HASHED_URL = re.compile(
    r"^https://(download\.pytorch\.org/models/|github\.com/(rwightman|huggingface)/"
    r"pytorch-image-models/releases/)"
)


def _hash_prefix(url: str) -> str | None:
    found = re.search(r"-([0-9a-f]{8,})\.pth$", url)
    return found.group(1) if found and _HASHED_URL.match(url) else None


def _cfgs() -> dict[str, ModelCfg]:
    return {name: get_model_entry(name).cfg for name in model_names()}


def _torchvision_tags() -> dict[str, dict[str, PretrainedTag]]:
    """torchvision's ImageNet weights of the models that declare a torchvision twin."""
    import torchvision

    tags: dict[str, dict[str, PretrainedTag]] = {}
    for name, cfg in _cfgs().items():
        if not cfg.torchvision:
            continue
        enum = torchvision.models.get_model_weights(cfg.torchvision)
        for member, tag in (("IMAGENET1K_V1", "tv_in1k"), ("IMAGENET1K_V2", "tv2_in1k")):
            if not hasattr(enum, member):
                continue
            w = getattr(enum, member)
            metrics = w.meta.get("_metrics", {}).get("ImageNet-1K", {})
            # torchvision's evaluation transform (ImageClassification): resize, centre crop
            preset = {"resize_size": 256, "crop_size": 224, **w.transforms.keywords}
            tags.setdefault(name, {})[tag] = PretrainedTag(
                source=w.url,
                dataset="ImageNet-1k",
                num_classes=1000,
                input_size=(3, 224, 224),
                mean=cfg.mean or IMAGENET_MEAN,
                std=cfg.std or IMAGENET_STD,
                sha256=_hash_prefix(w.url),
                metrics={
                    "top1": metrics.get("acc@1"),
                    "top5": metrics.get("acc@5"),
                    "num_params": w.meta.get("num_params"),
                },
                notes=f"torchvision {member}",
                crop_pct=preset["crop_size"] / preset["resize_size"],
                crop_mode="center",
                interpolation=getattr(preset.get("interpolation"), "value", "bilinear"),
                license="bsd-3-clause",
            )
    return tags


def _timm_tags() -> dict[str, dict[str, PretrainedTag]]:
    """timm's weights of the models that declare a timm twin, read from timm's installed configs.

    timm's ``tv_in1k``/``tv2_in1k`` tags are torchvision's files and are listed under those names.
    """
    try:
        import timm
    except ImportError:  # timm is a dependency, but a missing one only hides its tags
        return {}

    tags: dict[str, dict[str, PretrainedTag]] = {}
    for name, model_cfg in _cfgs().items():
        if not model_cfg.timm:
            continue
        for full in timm.list_pretrained(f"{model_cfg.timm}.*"):
            arch, tag = full.split(".", 1)
            cfg = timm.models.get_pretrained_cfg(full)
            if arch != model_cfg.timm or tag.startswith("tv") or not cfg.num_classes:
                continue
            url = (
                cfg.url or f"https://huggingface.co/{cfg.hf_hub_id}/resolve/main/model.safetensors"
            )
            tags.setdefault(name, {})[f"timm_{tag}"] = PretrainedTag(
                source=url,
                dataset="ImageNet-1k",
                num_classes=cfg.num_classes,
                input_size=tuple(cfg.input_size),
                mean=tuple(cfg.mean),
                std=tuple(cfg.std),
                sha256=_hash_prefix(url),
                notes=f"timm {full}; top-1 in timm's results tables",
                crop_pct=cfg.crop_pct,
                crop_mode=cfg.crop_mode,
                interpolation=cfg.interpolation,
                license=cfg.license,
                pool_size=cfg.pool_size,
            )
    return tags


def _declared_tags() -> dict[str, dict[str, PretrainedTag]]:
    """Weights a model's record points to (e.g. the CliqueNet authors' release)."""
    return {name: dict(cfg.weights) for name, cfg in _cfgs().items() if cfg.weights}


def _own_tags() -> dict[str, dict[str, PretrainedTag]]:
    """Our Fashion-MNIST weights, described by weights/<name>.json beside each file."""
    tags: dict[str, dict[str, PretrainedTag]] = {}
    for meta_path in sorted(WEIGHTS_DIR.glob("*.json")):
        try:
            meta = read_weights_description(meta_path.with_suffix(".safetensors"))
            data = meta.get("data", {})
            tag = PretrainedTag(
                source=meta_path.with_suffix(".safetensors").name,
                dataset=data.get("name", "?"),
                num_classes=meta["model_kwargs"]["num_classes"],
                input_size=(data.get("in_chans", 1), *data.get("image_size", (28, 28))),
                mean=tuple(data.get("mean", ())),
                std=tuple(data.get("std", ())),
                sha256=meta.get("sha256"),
                metrics=meta.get("metrics", {}),
                notes=meta.get("command", ""),
                license="mit",  # the project's
            )
            tags.setdefault(meta["model"], {})[meta.get("tag", "fmnist")] = tag
        except (UserError, KeyError, TypeError, AttributeError) as err:
            log.warning("skipping %s: not a readable weights description (%s)", meta_path, err)
    return tags


_TAGS: dict[str, dict[str, PretrainedTag]] | None = None


def all_tags() -> dict[str, dict[str, PretrainedTag]]:
    global _TAGS
    if _TAGS is None:
        merged: dict[str, dict[str, PretrainedTag]] = {}
        for table in (_own_tags(), _torchvision_tags(), _timm_tags(), _declared_tags()):
            for model, tags in table.items():
                merged.setdefault(model, {}).update(tags)
        _TAGS = merged
    return _TAGS


def list_tags(name: str) -> list[str]:
    """Pretrained tags of model ``name``; the first is its default (``pretrained=True``)."""
    return list(all_tags().get(name, {}))


def get_tag(name: str, tag: str) -> PretrainedTag:
    try:
        return all_tags()[name][tag]
    except KeyError:
        known = ", ".join(list_tags(name)) or "none"
        raise UserError(
            f"{name} has no pretrained tag {tag!r} (tags: {known}); or give a local file or a URL"
        ) from None


# ---- the download cache -------------------------------------------------------------------------


def cache_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _source_record(target: Path) -> Path:
    """A hidden file beside each download naming the URL it came from."""
    return target.with_name(f".{target.name}.url")


def cache_path(url: str, filename: str | None = None) -> Path:
    """Where ``url`` is cached: under its file name, unless that file holds another URL's download
    (then the name gets the URL's hash in front). A file placed by hand is taken as the URL's."""
    target = cache_dir() / (filename or cache_filename(url))
    record = _source_record(target)
    if record.is_file() and record.read_text().strip() != url:
        return target.with_name(f"{hashlib.sha256(url.encode()).hexdigest()[:8]}-{target.name}")
    return target


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(url: str, sha256: str | None = None, filename: str | None = None) -> Path:
    """Fetch ``url`` once into the hub cache, checking the SHA-256 (full hash or prefix).

    A download whose hash does not match never reaches the cache; a file already there (downloaded
    earlier or placed by hand) is checked too, and reported but not deleted if it does not match.
    """
    target = cache_path(url, filename)
    record = _source_record(target)
    if target.is_file():
        if sha256 and not _sha256(target).startswith(sha256.lower()):
            raise UserError(
                f"{target} does not match the SHA-256 {sha256}… of {url}: "
                "replace it with the right file (or delete it to download again)"
            )
        if not record.is_file():
            atomic_write_text(record, url)
        return target
    if os.environ.get("ZOO_OFFLINE", "") not in ("", "0"):
        raise UserError(
            f"offline (ZOO_OFFLINE is set): place {target.name} at {target} (from {url})"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        try:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as r, open(tmp, "wb") as f:
                while chunk := r.read(1 << 20):
                    f.write(chunk)
        except OSError as err:  # URLError, timeouts, refused connections, disk errors
            raise UserError(
                f"could not download {url} ({err}); without network, place "
                f"{target.name} at {target}"
            ) from None
        digest = _sha256(tmp)
        if sha256 and not digest.startswith(sha256.lower()):
            raise UserError(
                f"SHA-256 mismatch for {url}: expected {sha256}…, got {digest[:16]}…; "
                "nothing was saved (a changed or corrupted file)"
            )
        atomic_write_text(record, url)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


# ---- safe reading -------------------------------------------------------------------------------


def _reason(err: BaseException) -> str:
    """The first line of an error, without library advice to load unsafely."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    first = lines[0][:120] if lines else type(err).__name__
    return type(err).__name__ if "weights_only" in first else first


def read_state_dict(path: str | Path) -> dict[str, Any]:
    """Read a weights file without executing pickled code; ``UserError`` if it is not one."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror}") from None
    if size == 0:
        raise UserError(f"{path} is empty (0 bytes): {_WEIGHTS_HINT}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise UserError(
                f"{path} is not a readable .safetensors file ({_reason(err)}): it is truncated or "
                "not safetensors; download or export it again"
            ) from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if unsafe:
            raise UserError(
                f"refusing to load {path.name}: it holds pickled objects beyond tensors "
                f"({unsafe.group(1)}), which could run code; {_WEIGHTS_HINT}"
            ) from None
        raise UserError(
            f"{path} is not a PyTorch weights file (a pickle not written by torch.save); "
            f"{_WEIGHTS_HINT}"
        ) from None
    except Exception as err:  # torch.load on a foreign file fails in many ways (zip, text…)
        raise UserError(
            f"{path} is not a readable weights file ({_reason(err)}): it is truncated or not "
            f"written by torch.save; {_WEIGHTS_HINT}"
        ) from None
    if not isinstance(obj, dict):
        raise UserError(f"{path} holds a {type(obj).__name__}, not a state dict; {_WEIGHTS_HINT}")
    return obj


def unwrap_state_dict(obj: dict[str, Any], path: str | Path = "checkpoint") -> dict:
    """Find the tensors in a checkpoint: Lightning, {"state_dict"}, {"model"}, DataParallel."""
    for key in ("state_dict", "model", "model_state_dict", "module"):
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not sd:
        keys = ", ".join(map(str, list(obj)[:5])) or "nothing"
        raise UserError(f"{path} holds no tensors (keys: {keys}); {_WEIGHTS_HINT}")
    if all(k.startswith("module.") for k in sd):
        sd = {k.removeprefix("module."): v for k, v in sd.items()}
    if any(k.startswith("model.") for k in sd):  # the zoo's LightningModule (+ metric states)
        sd = {k.removeprefix("model."): v for k, v in sd.items() if k.startswith("model.")}
    return sd


# ---- adaptation ---------------------------------------------------------------------------------


def adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """timm's rule: sum over channels for 1 input channel; repeat and rescale otherwise."""
    src = weight.shape[1]
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    reps = -(-in_chans // src)
    return weight.repeat(1, reps, 1, 1)[:, :in_chans] * (src / in_chans)


def _show(keys: list[str]) -> str:
    return ", ".join(keys[:8]) + (f" (+{len(keys) - 8} more)" if len(keys) > 8 else "")


def adapt_state_dict(
    model: nn.Module, sd: dict[str, torch.Tensor], name: str, adapt: bool = True
) -> dict:
    """Fit ``sd`` to ``model`` (built as ``name``): first conv channels, classifier size; error on
    anything else. The record's ``first_conv`` and ``classifier`` say which layers may differ;
    ``adapt=False`` (a model rebuilt from its own checkpoint) allows no difference at all."""
    cfg = get_model_entry(name).cfg
    own = model.state_dict()
    sd = dict(sd)
    conv = f"{cfg.first_conv}.weight"
    if adapt and conv in sd and conv in own and sd[conv].ndim == 4:
        src, dst = sd[conv].shape, own[conv].shape
        if src[1] != dst[1] and (src[0], *src[2:]) == (dst[0], *dst[2:]):
            log.info("%s: adapting %s from %d to %d input channels", name, conv, src[1], dst[1])
            sd[conv] = adapt_input_conv(sd[conv], dst[1])
    reset, dropped, counts = [], [], None
    heads = dict.fromkeys([*cfg.classifiers, *getattr(model, "aux_classifiers", ())])
    for head in heads if adapt else ():
        weight, bias = f"{head}.weight", f"{head}.bias"
        if weight in sd and weight not in own:  # num_classes=0: the model has no classifier
            dropped += [k for k in (weight, bias) if sd.pop(k, None) is not None]
        elif weight in sd and weight in own:
            src, dst = sd[weight].shape, own[weight].shape
            if src[0] != dst[0] and src[1:] == dst[1:]:
                counts = counts or (src[0], dst[0])
                for k in (weight, bias):
                    if k in sd and k in own:
                        sd[k] = own[k]
                        reset.append(k)
    if dropped:
        log.info("%s: no classifier (num_classes=0): dropped %s", name, ", ".join(dropped))
    if reset:
        log.warning(
            "%s: checkpoint classifier has %d classes, model %d: re-initialised %s",
            name,
            *counts,
            ", ".join(sorted(reset)),
        )
    # Files saved before PyTorch 0.4.1 (torchvision's ResNet and DenseNet weights among them) have
    # no BatchNorm step counters; PyTorch's own loader fills them in, and so do we.
    for k in set(own) - set(sd):
        if k.endswith(".num_batches_tracked"):
            sd[k] = own[k]
    optional = cfg.pretrained_optional
    unexpected = sorted(k for k in set(sd) - set(own) if not k.startswith(optional))
    missing = sorted(set(own) - set(sd))
    mismatched = sorted(k for k in set(own) & set(sd) if own[k].shape != sd[k].shape)
    if missing or unexpected or mismatched:
        parts = [
            f"{len(missing)} missing [{_show(missing)}]" if missing else "",
            f"{len(unexpected)} unexpected [{_show(unexpected)}]" if unexpected else "",
            f"{len(mismatched)} mismatched [{_show(mismatched)}]" if mismatched else "",
        ]
        raise UserError(f"weights do not fit {name}: " + "; ".join(p for p in parts if p))
    return {k: v for k, v in sd.items() if k in own}


# ---- entry points -------------------------------------------------------------------------------


def resolve_source(name: str, source: bool | str) -> Path:
    """A local file for ``source``: a tag, a path or a URL (downloaded into the cache)."""
    if source is True:
        tags = list_tags(name)
        if not tags:
            raise UserError(f"{name} has no pretrained weights; give a local file or a URL")
        source = tags[0]
    source = str(source)
    if source in all_tags().get(name, {}):
        tag = get_tag(name, source)
        if "://" not in tag.source:
            return WEIGHTS_DIR / tag.source
        if "drive.google.com" in tag.source:
            target = cache_dir() / tag.filename
            if not target.is_file():
                raise UserError(
                    f"{name}.{source} is on Google Drive ({tag.source}): download it "
                    f"in a browser and place it at {target}, or pass its path"
                )
            return target
        return download(tag.source, tag.sha256)
    if re.match(r"^(https?|file)://", source):
        return download(source)
    path = Path(source).expanduser()
    if not path.is_file():
        known = ", ".join(list_tags(name)) or "none"
        raise UserError(
            f"pretrained={source!r}: no such file, and not a tag of {name} (tags: {known})"
        )
    return path


def convert_state_dict(name: str, sd: dict[str, torch.Tensor], model: nn.Module) -> dict:
    """``sd`` in ``name``'s layout: its family's ``pretrained_filter_fn``, if any."""
    filter_fn = get_model_entry(name).cfg.pretrained_filter_fn
    return filter_fn(sd, model) if filter_fn else sd


def load_pretrained(model: nn.Module, name: str, source: bool | str) -> nn.Module:
    """Load ``source`` into ``model`` (built by ``create_model``), adapting channels and classes;
    for a tag, the model's ``pretrained_cfg`` then describes those weights."""
    path = resolve_source(name, source)
    sd = convert_state_dict(name, unwrap_state_dict(read_state_dict(path), path), model)
    model.load_state_dict(adapt_state_dict(model, sd, name), strict=False)
    tags = list_tags(name)
    tag = tags[0] if source is True and tags else source
    if isinstance(tag, str) and tag in tags:
        describe_weights(model, name, tag)
    return model


def describe_weights(model: nn.Module, name: str, tag: str) -> None:
    """Set ``model.pretrained_cfg`` (and ``default_cfg``) to describe the weights ``tag``."""
    cfg = pretrained_cfg(model, get_model_entry(name).cfg, get_tag(name, tag), tag)
    if "file" in cfg:  # our own weights: a path relative to weights/
        cfg["file"] = str(WEIGHTS_DIR / cfg["file"])
    model.pretrained_cfg = model.default_cfg = cfg


def read_weights_description(path: Path) -> dict[str, Any]:
    """The ``.json`` written beside the exported weights ``path`` (``python -m zoo.tools.export``):
    model name, builder arguments, data, metrics and the command that trained them."""
    meta = path.with_suffix(".json")
    if not meta.is_file():
        raise UserError(f"{path.name} needs its model config {meta.name} beside it")
    try:
        info = json.loads(meta.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{meta} is not readable JSON ({err}); export the weights again") from None
    if (
        not isinstance(info, dict)
        or not isinstance(info.get("model"), str)
        or not isinstance(info.get("model_kwargs"), dict)
    ):
        raise UserError(
            f"{meta} lacks the model name ('model') or its builder arguments ('model_kwargs'); "
            "export the weights again with python -m zoo.tools.export"
        )
    return info
