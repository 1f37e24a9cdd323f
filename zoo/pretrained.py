"""Pretrained weights: tags, local files and URLs; safe loading; format detection; adaptation.

``create_model(name, pretrained=...)`` calls ``load_pretrained`` with ``True`` (the model's default
tag), a tag (``"tv_in1k"``…), a local file (.pth .pt .bin .tar .safetensors .ckpt) or a URL. Files
are read with ``torch.load(weights_only=True)`` or safetensors: a checkpoint can never run code.

Detected formats: torchvision and timm state dicts (timm's VGG head renamed to ours), DataParallel
``module.`` prefixes, ``{"state_dict": ...}``/``{"model": ...}`` wrappers, the zoo's Lightning
checkpoints (``model.`` prefix) and the CliqueNet authors' ImageNet checkpoint.

Adaptation: a different ``in_chans`` adapts the first convolution (sum over RGB for one channel,
repeat and rescale otherwise); a different ``num_classes`` re-initialises the classifier (logged).
Anything else that does not fit is an error listing the missing, unexpected and mismatched keys.

Downloads go to ``torch.hub.get_dir()/checkpoints`` (``$TORCH_HOME``), are SHA-256 checked, and
``ZOO_OFFLINE=1`` forbids them: then the error names the file to place there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import re
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.errors import UserError

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
DOWNLOAD_TIMEOUT_S = 30


@dataclass(frozen=True)
class PretrainedTag:
    """Where a set of weights comes from and what it was trained on."""

    source: str  # a URL, or a path relative to the repository's weights/ folder
    dataset: str
    num_classes: int
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    sha256: str | None = None  # full hash, or the prefix torchvision puts in its file names
    metrics: dict[str, float] = field(default_factory=dict)
    notes: str = ""
    cache_name: str | None = None  # for URLs without a usable file name (Google Drive)

    @property
    def filename(self) -> str:
        """The file's name in the hub cache (where to place it by hand)."""
        return self.cache_name or cache_filename(self.source)

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "filename": self.filename}


# Our models with torchvision's layout (state-dict parity is tested in tests/test_classic.py).
TORCHVISION_NAMES = (
    "alexnet",
    "googlenet",
    *[f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")],
    *[f"resnet{d}" for d in (18, 34, 50, 101, 152)],
    *[f"densenet{d}" for d in (121, 161, 169, 201)],
)


def _torchvision_tags() -> dict[str, dict[str, PretrainedTag]]:
    """torchvision's ImageNet weights for the shared models, read from its installed metadata."""
    import torchvision

    tags: dict[str, dict[str, PretrainedTag]] = {}
    for name in TORCHVISION_NAMES:
        enum = torchvision.models.get_model_weights(name)
        for member, tag in (("IMAGENET1K_V1", "tv_in1k"), ("IMAGENET1K_V2", "tv2_in1k")):
            if not hasattr(enum, member):
                continue
            w = getattr(enum, member)
            metrics = w.meta.get("_metrics", {}).get("ImageNet-1K", {})
            # torchvision builds GoogLeNet with transform_input=True for these weights: it turns
            # ImageNet-normalised input into (x - 0.5) / 0.5, so that is what the weights expect.
            mean, std = (
                ((0.5,) * 3, (0.5,) * 3) if name == "googlenet" else (IMAGENET_MEAN, IMAGENET_STD)
            )
            tags.setdefault(name, {})[tag] = PretrainedTag(
                source=w.url,
                dataset="ImageNet-1k",
                num_classes=1000,
                input_size=(3, 224, 224),
                mean=mean,
                std=std,
                sha256=_hash_prefix(w.url),
                metrics={
                    "top1": metrics.get("acc@1"),
                    "top5": metrics.get("acc@5"),
                    "num_params": w.meta.get("num_params"),
                },
                notes=f"torchvision {member}",
            )
    return tags


# File names that carry a SHA-256 prefix by convention (torch.hub's check_hash, timm's
# clean_checkpoint.py); elsewhere a "-1234abcd.pth" suffix is not known to be a hash.
_HASHED_URL = re.compile(
    r"^https://(download\.pytorch\.org/models/|github\.com/(rwightman|huggingface)/"
    r"pytorch-image-models/releases/)"
)


def _hash_prefix(url: str) -> str | None:
    found = re.search(r"-([0-9a-f]{8,})\.pth$", url)
    return found.group(1) if found and _HASHED_URL.match(url) else None


def _timm_tags() -> dict[str, dict[str, PretrainedTag]]:
    """timm's weights for architectures identical to ours, read from timm's installed configs.

    timm's ``resnet*``, ``densenet*`` and ``vgg*`` entry points have our (torchvision) layout; its
    ``tv_in1k``/``tv2_in1k`` tags are torchvision's files and are listed under those names only.
    """
    try:
        import timm
    except ImportError:  # timm is a dependency, but a missing one only hides its tags
        return {}

    tags: dict[str, dict[str, PretrainedTag]] = {}
    for name in TORCHVISION_NAMES:
        for full in timm.list_pretrained(f"{name}.*"):
            arch, tag = full.split(".", 1)
            cfg = timm.models.get_pretrained_cfg(full)
            if arch != name or tag.startswith("tv") or not cfg.num_classes:
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
                notes=f"timm {full} (crop_pct {cfg.crop_pct}, {cfg.interpolation}); "
                "top-1 in timm's results tables",
            )
    return tags


_CLIQUENET_TAGS = {
    "cliquenet_s3_a": {
        "official_in1k": PretrainedTag(
            source="https://drive.google.com/open?id=1IcsmIrTYmxd62Whh5nf8Z7grcCxNAfDk",
            dataset="ImageNet-1k",
            num_classes=1000,
            input_size=(3, 224, 224),
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            metrics={"top1": 75.99, "top5": 92.85},
            cache_name="cliquenet_s3_a.official_in1k.pth.tar",
            notes="the authors' release (Google Drive, no hash published; paper: 24.01% "
            "top-1 error). Google Drive needs a browser: download it by hand and pass its path.",
        )
    },
}


def _own_tags() -> dict[str, dict[str, PretrainedTag]]:
    """Our Fashion-MNIST weights, described by weights/<name>.json beside each file."""
    tags: dict[str, dict[str, PretrainedTag]] = {}
    for meta_path in sorted(WEIGHTS_DIR.glob("*.json")):
        meta = json.loads(meta_path.read_text())
        data = meta.get("data", {})
        tags.setdefault(meta["model"], {})[meta.get("tag", "fmnist")] = PretrainedTag(
            source=meta_path.with_suffix(".safetensors").name,
            dataset=data.get("name", "?"),
            num_classes=meta["model_kwargs"]["num_classes"],
            input_size=(data.get("in_chans", 1), *data.get("image_size", (28, 28))),
            mean=tuple(data.get("mean", ())),
            std=tuple(data.get("std", ())),
            sha256=meta.get("sha256"),
            metrics=meta.get("metrics", {}),
            notes=meta.get("command", ""),
        )
    return tags


_TAGS: dict[str, dict[str, PretrainedTag]] | None = None


def all_tags() -> dict[str, dict[str, PretrainedTag]]:
    global _TAGS
    if _TAGS is None:
        merged: dict[str, dict[str, PretrainedTag]] = {}
        for table in (_own_tags(), _torchvision_tags(), _timm_tags(), _CLIQUENET_TAGS):
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


# ---- files, downloads and safe reading ----------------------------------------------------------


def cache_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def cache_filename(url: str) -> str:
    """The URL's file name; Hugging Face repositories all call theirs ``model.safetensors``, so
    those get the repository in front (``timm--resnet50.a1_in1k--model.safetensors``)."""
    path = url.split("?")[0].rstrip("/")
    hf = re.match(r"^https://huggingface\.co/([^/]+)/([^/]+)/resolve/[^/]+/(.+)$", path)
    if hf:
        return "--".join(hf.groups()).replace("/", "--")
    return path.split("/")[-1]


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
    target = cache_dir() / (filename or cache_filename(url))
    if target.is_file():
        if sha256 and not _sha256(target).startswith(sha256.lower()):
            raise UserError(
                f"{target} does not match the SHA-256 {sha256}… of {url}: "
                "replace it with the right file (or delete it to download again)"
            )
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
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def read_state_dict(path: str | Path) -> dict[str, Any]:
    """Read a weights file without executing pickled code."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's own message would suggest an unsafe load
        raise UserError(
            f"refusing to load {path.name}: it holds pickled objects beyond plain "
            "tensors, which could run code; only weights files are accepted"
        ) from None
    except (RuntimeError, EOFError, OSError) as err:
        raise UserError(f"{path} is not a readable weights file ({str(err)[:160]})") from None


def unwrap_state_dict(obj: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Find the tensors in a checkpoint: Lightning, {"state_dict"}, {"model"}, DataParallel."""
    for key in ("state_dict", "model", "model_state_dict", "module"):
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k.removeprefix("module."): v for k, v in sd.items()}
    if any(k.startswith("model.") for k in sd):  # the zoo's LightningModule (+ metric states)
        sd = {k.removeprefix("model."): v for k, v in sd.items() if k.startswith("model.")}
    return sd


_LEGACY_DENSENET = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def convert_known_formats(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Other layouts onto our (torchvision) names: the CliqueNet authors' checkpoint, the legacy
    key names in torchvision's DenseNet files, and timm's VGG head (a conv MLP)."""
    from zoo.models.cliquenet import convert_official_state_dict, is_official_state_dict

    if is_official_state_dict(sd):
        return convert_official_state_dict(sd)
    # torchvision's densenet*-*.pth files predate the module renaming (denselayerN.norm.1 -> norm1);
    # torchvision's own loader renames them the same way.
    sd = {_LEGACY_DENSENET.sub(r"\1\2", k): v for k, v in sd.items()}
    if "pre_logits.fc1.weight" in sd and "head.fc.weight" in sd:  # timm VGG
        sd = dict(sd)
        fc1 = sd.pop("pre_logits.fc1.weight")
        sd["classifier.0.weight"] = fc1.reshape(fc1.shape[0], -1)
        sd["classifier.0.bias"] = sd.pop("pre_logits.fc1.bias")
        sd["classifier.3.weight"] = sd.pop("pre_logits.fc2.weight").flatten(1)
        sd["classifier.3.bias"] = sd.pop("pre_logits.fc2.bias")
        sd["classifier.6.weight"] = sd.pop("head.fc.weight")
        sd["classifier.6.bias"] = sd.pop("head.fc.bias")
    return sd


# ---- adaptation ---------------------------------------------------------------------------------


def first_conv_key(model: nn.Module) -> str | None:
    """The weight of the first convolution in module order (the one that reads the image)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return f"{name}.weight"
    for name, p in model.named_parameters():  # packed conv kernels (e.g. a CliqueNet stem-less)
        if p.ndim == 4:
            return name
    return None


def adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """timm's rule: sum over channels for 1 input channel; repeat and rescale otherwise."""
    src = weight.shape[1]
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    reps = -(-in_chans // src)
    return weight.repeat(1, reps, 1, 1)[:, :in_chans] * (src / in_chans)


def classifier_keys(model: nn.Module) -> set[str]:
    heads = [model.get_classifier()] if hasattr(model, "get_classifier") else []
    heads += [m for n, m in model.named_modules() if n in ("aux1.fc2", "aux2.fc2")]
    ids = {id(h) for h in heads}
    return {
        f"{n}.{p}"
        for n, m in model.named_modules()
        if id(m) in ids
        for p, _ in m.named_parameters(recurse=False)
    }


def adapt_state_dict(model: nn.Module, sd: dict[str, torch.Tensor], name: str) -> dict:
    """Fit ``sd`` to ``model``: first conv channels, classifier size; error on anything else."""
    own = model.state_dict()
    sd = dict(sd)
    conv = first_conv_key(model)
    if conv and conv in sd and sd[conv].ndim == 4 and sd[conv].shape[1] != own[conv].shape[1]:
        log.info(
            "%s: adapting %s from %d to %d input channels",
            name,
            conv,
            sd[conv].shape[1],
            own[conv].shape[1],
        )
        sd[conv] = adapt_input_conv(sd[conv], own[conv].shape[1])
    reset = [k for k in classifier_keys(model) if k in sd and sd[k].shape != own[k].shape]
    if reset:
        log.warning(
            "%s: checkpoint classifier has %d classes, model %d: re-initialised %s",
            name,
            sd[reset[0]].shape[0],
            own[reset[0]].shape[0],
            ", ".join(sorted(reset)),
        )
        for k in reset:
            sd[k] = own[k]
    # Files saved before PyTorch 0.4.1 (torchvision's ResNet and DenseNet weights among them) have
    # no BatchNorm step counters; PyTorch's own loader fills them in, and so do we.
    for k in set(own) - set(sd):
        if k.endswith(".num_batches_tracked"):
            sd[k] = own[k]
    optional = tuple(getattr(model, "pretrained_optional_prefixes", ()))
    unexpected = sorted(k for k in set(sd) - set(own) if not k.startswith(optional))
    missing = sorted(set(own) - set(sd))
    mismatched = sorted(k for k in set(own) & set(sd) if own[k].shape != sd[k].shape)
    if missing or unexpected or mismatched:

        def show(keys: list[str]) -> str:
            return ", ".join(keys[:8]) + (f" (+{len(keys) - 8} more)" if len(keys) > 8 else "")

        parts = [
            f"{len(missing)} missing [{show(missing)}]" if missing else "",
            f"{len(unexpected)} unexpected [{show(unexpected)}]" if unexpected else "",
            f"{len(mismatched)} mismatched [{show(mismatched)}]" if mismatched else "",
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


def load_pretrained(model: nn.Module, name: str, source: bool | str) -> nn.Module:
    """Load ``source`` into ``model`` (built by ``create_model``), adapting channels and classes."""
    path = resolve_source(name, source)
    sd = convert_known_formats(unwrap_state_dict(read_state_dict(path)))
    model.load_state_dict(adapt_state_dict(model, sd, name), strict=False)
    return model


def model_from_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from a zoo Lightning checkpoint (.ckpt) or exported .safetensors + .json."""
    from zoo.registry import create_model

    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        meta_path = path.with_suffix(".json")
        if not meta_path.is_file():
            raise UserError(f"{path.name} needs its model config {meta_path.name} beside it")
        info = json.loads(meta_path.read_text())
        sd = read_state_dict(path)
    else:
        ckpt = read_state_dict(path)
        hp = ckpt.get("hyper_parameters", {}) if isinstance(ckpt, dict) else {}
        if "model_name" not in hp:
            raise UserError(
                f"{path.name} is not a zoo training checkpoint (no model_name); "
                "use create_model(name, pretrained=path) for plain weights"
            )
        info = {
            "model": hp["model_name"],
            "model_kwargs": dict(hp["model_kwargs"]),
            "data": dict(hp.get("data") or {}),
        }
        sd = unwrap_state_dict(ckpt)
    kwargs = dict(info["model_kwargs"])
    try:
        model = create_model(info["model"], **kwargs)
    except (ValueError, TypeError) as err:
        raise UserError(f"{path.name}: {err}") from None
    model.load_state_dict(adapt_state_dict(model, sd, info["model"]), strict=True)
    return model, info
