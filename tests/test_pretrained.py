"""Pretrained weights: every source format, URLs with hashes, adaptation, errors and safety."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

import zoo
from zoo.errors import UserError
from zoo.tools.export import export
from zoo.weights.checkpoint import model_from_checkpoint
from zoo.weights.pretrained import (
    adapt_input_conv,
    adapt_state_dict,
    convert_state_dict,
    list_tags,
)

WEIGHTS = Path(__file__).resolve().parents[1] / "weights"


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module, size=(2, 3, 32, 32)) -> bool:
    x = torch.randn(*size)
    with torch.no_grad():
        return torch.allclose(a.eval()(x), b.eval()(x), atol=1e-5)


def test_state_dict_round_trip_pth_and_safetensors(tmp_path: Path) -> None:
    src = zoo.create_model("resnet20")
    torch.save(src.state_dict(), tmp_path / "w.pth")
    save_file(src.state_dict(), tmp_path / "w.safetensors")
    for name in ("w.pth", "w.safetensors"):
        loaded = zoo.create_model("resnet20", pretrained=str(tmp_path / name))
        assert _same_outputs(src, loaded)


def test_wrapped_and_dataparallel_checkpoints(tmp_path: Path) -> None:
    src = zoo.create_model("resnet20")
    wrapped = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}
    torch.save(wrapped, tmp_path / "dp.pth.tar")
    assert _same_outputs(src, zoo.create_model("resnet20", pretrained=str(tmp_path / "dp.pth.tar")))


def test_timm_resnet_state_dict_loads(tmp_path: Path) -> None:
    ref = timm.create_model("resnet18", pretrained=False).eval()
    torch.save(ref.state_dict(), tmp_path / "timm_r18.pth")
    ours = zoo.create_model("resnet18", pretrained=str(tmp_path / "timm_r18.pth")).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert (ours(x) - ref(x)).abs().max() < 1e-5


def test_timm_vgg_head_is_converted() -> None:
    # in memory: VGG's 120M-parameter head makes a file round trip slow (files are tested above)
    ref = timm.create_model("vgg11", pretrained=False).eval()
    ours = zoo.create_model("vgg11").eval()
    sd = convert_state_dict("vgg11", ref.state_dict(), ours)
    ours.load_state_dict(adapt_state_dict(ours, sd, "vgg11"))
    x = torch.randn(1, 3, 64, 64)  # 2x2 features: both heads adaptively pool them to 7x7 first
    with torch.no_grad():
        assert (ours(x) - ref(x)).abs().max() < 1e-4


def test_lightning_checkpoint_and_export(tmp_path: Path) -> None:
    from zoo.training import ZooClassifier

    module = ZooClassifier(
        "lenet5",
        {"num_classes": 10, "in_chans": 1},
        data={"name": "fashion_mnist", "mean": [0.28], "std": [0.35]},
    )
    ckpt = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}
    torch.save(ckpt, tmp_path / "run.ckpt")
    model, info = model_from_checkpoint(tmp_path / "run.ckpt")
    assert info["model"] == "lenet5" and info["data"]["mean"] == [0.28]
    assert _same_outputs(module.model, model, (2, 1, 28, 28))
    results = {"test_acc1": 0.9, "epochs": 3, "budget_s": 7200, "images_seen": 1000, "seed": 0}
    (tmp_path / "results.json").write_text(json.dumps(results))
    meta = export(tmp_path / "run.ckpt", tmp_path / "lenet.safetensors")
    assert meta["metrics"] == {k: v for k, v in results.items() if k != "seed"}  # a budget stays
    assert (
        meta["sha256"] == hashlib.sha256((tmp_path / "lenet.safetensors").read_bytes()).hexdigest()
    )
    reloaded, _ = model_from_checkpoint(tmp_path / "lenet.safetensors")
    assert _same_outputs(module.model, reloaded, (2, 1, 28, 28))
    direct = zoo.create_model("lenet5", pretrained=str(tmp_path / "lenet.safetensors"))
    assert _same_outputs(module.model, direct, (2, 1, 28, 28))


def test_file_url_with_good_and_bad_hash(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    src = zoo.create_model("lenet5")
    path = tmp_path / "lenet-weights.pth"
    torch.save(src.state_dict(), path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    from zoo.weights.pretrained import download

    with pytest.raises(UserError, match="SHA-256 mismatch"):
        download(path.as_uri(), sha256="0" * 64)
    cache = tmp_path / "hub" / "hub" / "checkpoints"
    assert not list(cache.iterdir())  # a download with a bad hash never reaches the cache
    cached = download(path.as_uri(), sha256=digest[:10])
    assert cached == cache / "lenet-weights.pth" and cached.is_file()
    assert _same_outputs(src, zoo.create_model("lenet5", pretrained=path.as_uri()), (1, 1, 28, 28))
    path.unlink()  # now served from the cache, which is checked again and kept on a mismatch
    assert download(path.as_uri(), sha256=digest) == cached
    with pytest.raises(UserError, match="does not match the SHA-256 0000.*replace it"):
        download(path.as_uri(), sha256="0" * 64)
    assert cached.exists()


def test_offline_switch_names_file_and_cache(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    with pytest.raises(UserError, match=r"offline.*resnet18-f37072fd\.pth.*hub/checkpoints"):
        zoo.create_model("resnet18", pretrained="tv_in1k")


def test_google_drive_tag_names_the_file_to_place(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    with pytest.raises(
        UserError,
        match=r"Google Drive.*place it at .*hub/checkpoints/cliquenet_s3_a\.official_in1k",
    ):
        zoo.create_model("cliquenet_s3_a", pretrained=True)


def test_googlenet_tag_normalisation_matches_torchvision(tmp_path: Path) -> None:
    # torchvision's GoogLeNet weights run behind transform_input=True; our model has no such
    # layer, so the tag records the normalisation those weights actually see
    import torchvision

    from zoo.weights.pretrained import IMAGENET_MEAN, IMAGENET_STD, get_tag

    ref = torchvision.models.googlenet(weights=None, aux_logits=True, transform_input=True).eval()
    torch.save(ref.state_dict(), tmp_path / "googlenet.pth")
    ours = zoo.create_model("googlenet", pretrained=str(tmp_path / "googlenet.pth")).eval()
    tag = get_tag("googlenet", "tv_in1k")
    raw = torch.rand(1, 3, 96, 96)

    def norm(x, mean, std):
        return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)

    with torch.no_grad():
        expected = ref(norm(raw, IMAGENET_MEAN, IMAGENET_STD))
        assert (ours(norm(raw, tag.mean, tag.std)) - expected).abs().max() < 1e-4


def test_in_chans_adaptation() -> None:
    w = torch.randn(8, 3, 3, 3)
    assert torch.allclose(adapt_input_conv(w, 1), w.sum(1, keepdim=True))
    five = adapt_input_conv(w, 5)
    assert five.shape == (8, 5, 3, 3)
    assert torch.allclose(five[:, :3], w * 3 / 5) and torch.allclose(five[:, 3:], w[:, :2] * 3 / 5)


def test_pretrained_rgb_model_to_grey_and_new_classes(tmp_path: Path, caplog) -> None:
    src = zoo.create_model("resnet20")
    torch.save(src.state_dict(), tmp_path / "rgb.pth")
    with caplog.at_level(logging.WARNING):
        grey = zoo.create_model(
            "resnet20", in_chans=1, num_classes=4, pretrained=str(tmp_path / "rgb.pth")
        )
    assert "re-initialised" in caplog.text
    assert torch.allclose(grey.conv1.weight, src.conv1.weight.sum(1, keepdim=True))
    assert torch.equal(grey.layer3[0].conv1.weight, src.layer3[0].conv1.weight)
    # a grey image through the adapted conv equals the RGB image with three equal channels
    x = torch.randn(2, 1, 32, 32)
    grey.eval(), src.eval()
    with torch.no_grad():
        assert torch.allclose(
            grey.forward_features(x), src.forward_features(x.expand(-1, 3, -1, -1)), atol=1e-5
        )


def test_architecture_mismatch_lists_keys(tmp_path: Path) -> None:
    torch.save(zoo.create_model("resnet20").state_dict(), tmp_path / "r20.pth")
    with pytest.raises(UserError, match=r"do not fit resnet32: \d+ missing \[layer1\.3"):
        zoo.create_model("resnet32", pretrained=str(tmp_path / "r20.pth"))


def test_unknown_tag_and_missing_file() -> None:
    with pytest.raises(UserError, match="no such file, and not a tag of resnet18.*tv_in1k"):
        zoo.create_model("resnet18", pretrained="imagenet22k")
    with pytest.raises(UserError, match="no pretrained weights"):
        zoo.create_model(
            "resnet_noshort" if zoo.is_model("resnet_noshort") else "wrn56_2", pretrained=True
        )


def test_torchvision_densenet_legacy_keys_are_renamed(tmp_path: Path) -> None:
    # torchvision's published densenet*.pth files predate BatchNorm's num_batches_tracked and use
    # "denselayerN.norm.1"-style names
    import torchvision

    ref = torchvision.models.densenet121(weights=None).state_dict()
    legacy = {
        re.sub(r"(denselayer\d+\.(norm|relu|conv))([12])\.", r"\1.\3.", k): v
        for k, v in ref.items()
        if not k.endswith("num_batches_tracked")
    }
    assert "features.denseblock1.denselayer1.norm.1.weight" in legacy
    torch.save(legacy, tmp_path / "densenet121-legacy.pth")
    ours = zoo.create_model("densenet121", pretrained=str(tmp_path / "densenet121-legacy.pth"))
    got = ours.state_dict()
    assert got.keys() == ref.keys() and all(torch.equal(got[k], ref[k]) for k in ref)


def test_timm_densenet_state_dict_loads(tmp_path: Path) -> None:
    ref = timm.create_model("densenet121", pretrained=False).state_dict()
    save_file(ref, tmp_path / "timm_d121.safetensors")
    got = zoo.create_model("densenet121", pretrained=str(tmp_path / "timm_d121.safetensors"))
    got = got.state_dict()
    assert all(torch.equal(got[k], ref[k]) for k in ref) and got.keys() == ref.keys()


def test_timm_tags_come_from_timm_configs() -> None:
    from zoo.weights.pretrained import cache_filename, get_tag

    a1 = get_tag("resnet50", "timm_a1_in1k")
    cfg = timm.models.get_pretrained_cfg("resnet50.a1_in1k")
    assert a1.source == cfg.url and cfg.url.endswith(f"-{a1.sha256}.pth")
    assert a1.input_size == cfg.input_size and a1.mean == cfg.mean
    ra = get_tag("densenet121", "timm_ra_in1k")  # only on the Hugging Face hub: no hash known
    assert ra.sha256 is None and ra.filename == "timm--densenet121.ra_in1k--model.safetensors"
    fb = get_tag("resnet50", "timm_fb_ssl_yfcc100m_ft_in1k")  # not a known hash convention
    assert fb.sha256 is None
    assert "timm_tv_in1k" not in zoo.list_models("resnet50") and "tv_in1k" in list_tags("vgg16")
    assert cache_filename("https://x.org/a/b-12345678.pth?dl=1") == "b-12345678.pth"


def test_unreachable_url_fails_fast_naming_file_and_cache(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    monkeypatch.delenv("ZOO_OFFLINE", raising=False)
    # port 9 on localhost: connection refused at once (no network needed to test "no network")
    with pytest.raises(
        UserError, match=r"could not download.*place w-0123abcd\.pth at .*hub/checkpoints"
    ):
        zoo.create_model("lenet5", pretrained="http://127.0.0.1:9/w-0123abcd.pth")
    assert not list((tmp_path / "hub").rglob("*.part"))


def _place_fake_torchvision_resnet18(tmp_path: Path, monkeypatch) -> dict:
    """A random torchvision ResNet-18 placed where tv_in1k is looked up, its hash registered."""
    import dataclasses

    import torchvision

    from zoo.weights.pretrained import all_tags, get_tag

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    tag = get_tag("resnet18", "tv_in1k")
    sd = torchvision.models.resnet18(weights=None).state_dict()
    target = tmp_path / "torch" / "hub" / "checkpoints" / tag.filename
    target.parent.mkdir(parents=True)
    torch.save(sd, target)
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    monkeypatch.setitem(
        all_tags()["resnet18"], "tv_in1k", dataclasses.replace(tag, sha256=digest[:8])
    )
    return sd


def test_placed_file_is_used_offline_and_adapted(tmp_path: Path, monkeypatch, caplog) -> None:
    sd = _place_fake_torchvision_resnet18(tmp_path, monkeypatch)
    with caplog.at_level(logging.WARNING):
        model = zoo.create_model("resnet18", pretrained=True, in_chans=1, num_classes=10)
    assert "1000 classes, model 10: re-initialised fc.bias, fc.weight" in caplog.text
    assert torch.allclose(model.conv1.weight, sd["conv1.weight"].sum(1, keepdim=True))
    assert torch.equal(model.layer4[1].conv2.weight, sd["layer4.1.conv2.weight"])


def test_train_py_fine_tunes_from_a_tag(tmp_path: Path, monkeypatch) -> None:
    # python train.py model=resnet18 model.pretrained=tv_in1k data=..., two steps on tiny 1x28x28
    # synthetic data (data=fashion_mnist would spend ~40 s evaluating ResNet-18 on its test set)
    from helpers import SYNTHETIC_TINY, compose

    from zoo.tasks.train import run as train

    sd = _place_fake_torchvision_resnet18(tmp_path, monkeypatch)
    cfg = compose(
        [
            f"output_dir={tmp_path / 'run'}",
            "model=resnet18",
            "model.pretrained=tv_in1k",
            *SYNTHETIC_TINY,
            "data.in_chans=1",
            "data.image_size=28",
            "trainer=debug",
            "trainer.limit_train_batches=2",
            "trainer.limit_val_batches=1",
            "trainer.limit_test_batches=1",
        ]
    )
    train(cfg)
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    tuned = ckpt["state_dict"]["model.layer3.0.conv1.weight"].flatten()
    start = sd["layer3.0.conv1.weight"].flatten()
    # two SGD steps move the pretrained weights a little; a fresh init would be uncorrelated
    assert torch.nn.functional.cosine_similarity(tuned, start, dim=0) > 0.95
    assert ckpt["state_dict"]["model.conv1.weight"].shape[1] == 1


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def test_malicious_pickle_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "marker.txt"
    torch.save({"state_dict": {}, "payload": _Exploit(marker)}, tmp_path / "evil.pth")
    with pytest.raises(UserError, match="refusing to load evil.pth"):
        zoo.create_model("lenet5", pretrained=str(tmp_path / "evil.pth"))
    assert not marker.exists()


def test_tags_describe_their_source() -> None:
    info = zoo.model_info("resnet50")
    assert info["pretrained"][0] == "tv_in1k"
    from zoo.weights.pretrained import get_tag

    tag = get_tag("resnet50", "tv_in1k")
    assert tag.source.startswith("https://download.pytorch.org/") and tag.sha256
    assert tag.metrics["top1"] == pytest.approx(76.13) and tag.mean == (0.485, 0.456, 0.406)
    assert "cliquenet_s3_a" in zoo.list_models(pretrained=True, include_tags=False)
    assert "cliquenet_s3_a.official_in1k" in zoo.list_models(pretrained=True)  # timm: name.tag
    assert not zoo.list_models("resnet20_noshort*", pretrained=True)


# The full 10k-image check takes 28-56 s for ResNet-20 and minutes for CliqueNet on one thread of
# this shared CPU: in the default suite they check the first 1,000 images against the recorded
# accuracy (binomial 4 sigma), and the full test set under `make test-slow`.
_FULL_CHECK_SLOW = {"resnet20_fmnist", "cliquenet_k36_t12_ac_fmnist"}
_WEIGHT_CHECKS = [
    pytest.param(p, n, id=f"{p.stem}-{n}", marks=[pytest.mark.slow] if slow else [])
    for p in sorted(WEIGHTS.glob("*.json"))
    for n, slow in (
        [(1000, False), (10_000, True)] if p.stem in _FULL_CHECK_SLOW else [(10_000, False)]
    )
]


@pytest.mark.parametrize(("meta_path", "n"), _WEIGHT_CHECKS)
def test_published_weights_reach_their_accuracy(meta_path: Path, n: int) -> None:
    from helpers import HAS_FMNIST

    if not HAS_FMNIST:
        pytest.skip("Fashion-MNIST missing")
    from zoo.data import FashionMNISTDataModule

    meta = json.loads(meta_path.read_text())
    weights = meta_path.with_suffix(".safetensors")
    assert weights.stat().st_size < 5_000_000
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == meta["sha256"]
    model, info = model_from_checkpoint(weights)
    dm = FashionMNISTDataModule(eval_batch_size=1000)
    dm.setup()
    mean, std = torch.tensor(info["data"]["mean"]), torch.tensor(info["data"]["std"])
    correct = 0
    model.eval()
    with torch.inference_mode():
        for i in range(0, n, 1000):
            x = dm.test_x[i : i + 1000].float() / 255
            x = (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
            correct += (model(x).argmax(1) == dm.test_y[i : i + 1000]).sum().item()
    expected = meta["metrics"]["test_acc1"]
    tolerance = 2e-3 if n == 10_000 else 4 * (expected * (1 - expected) / n) ** 0.5
    assert correct / n == pytest.approx(expected, abs=tolerance)


# ---- files that are not weights: one line naming the file, never advice to load unsafely ------


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    import pickle
    import zipfile

    good = tmp_path / "good.pth"
    torch.save(zoo.create_model("lenet5").state_dict(), good)
    files = {
        "empty.pth": b"",
        "text.pth": b"these are not weights\n",
        "truncated.pth": good.read_bytes()[: good.stat().st_size // 2],
        "garbage.safetensors": b"\x10\x00\x00\x00\x00\x00\x00\x00not a header",
        "empty.safetensors": b"",
        "plain_pickle.pth": pickle.dumps([1, 2, 3]),
    }
    paths = {}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        paths[name] = tmp_path / name
    with zipfile.ZipFile(tmp_path / "archive.pth", "w") as z:
        z.writestr("readme.txt", "a zip, not a checkpoint")
    torch.save([torch.zeros(3)], tmp_path / "tensor_list.pth")
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "no_tensors.pth")
    for name in ("archive.pth", "tensor_list.pth", "no_tensors.pth"):
        paths[name] = tmp_path / name
    return paths


EXPECTED = {
    "empty.pth": r"is empty \(0 bytes\)",
    "text.pth": "not a readable weights file",
    "truncated.pth": "not a readable weights file",
    "garbage.safetensors": "not a readable .safetensors file",
    "empty.safetensors": r"is empty \(0 bytes\)",
    "plain_pickle.pth": "not a PyTorch weights file",
    "archive.pth": "not a readable weights file",
    "tensor_list.pth": "holds a list, not a state dict",
    "no_tensors.pth": r"holds no tensors \(keys: epoch, lr\)",
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_not_a_weights_file_is_one_clear_line(tmp_path: Path, name: str) -> None:
    path = _bad_files(tmp_path)[name]
    with pytest.raises(UserError, match=EXPECTED[name]) as info:
        zoo.create_model("lenet5", pretrained=str(path))
    message = str(info.value)
    assert str(path) in message or path.name in message
    assert "\n" not in message and "weights_only" not in message and "()" not in message
    assert "torch.save" in message or "safetensors" in message  # says what to give instead


def test_unreadable_sidecar_json_is_named(tmp_path: Path) -> None:
    save_file(zoo.create_model("lenet5").state_dict(), tmp_path / "w.safetensors")
    (tmp_path / "w.json").write_text('{"model": "lenet5", ')
    with pytest.raises(UserError, match=r"w\.json is not readable JSON") as info:
        model_from_checkpoint(tmp_path / "w.safetensors")
    assert "\n" not in str(info.value)


def test_rebuilt_model_refuses_weights_that_do_not_match_their_description(tmp_path) -> None:
    # a sidecar claiming 7 classes for 10-class weights: evaluation must not score a random head
    save_file(zoo.create_model("lenet5").state_dict(), tmp_path / "w.safetensors")
    meta = {"model": "lenet5", "model_kwargs": {"num_classes": 7, "in_chans": 1}}
    (tmp_path / "w.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match=r"own config describes.*fc\.weight"):
        model_from_checkpoint(tmp_path / "w.safetensors")


def test_downloads_are_cached_per_url_not_per_file_name(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    monkeypatch.delenv("ZOO_OFFLINE", raising=False)
    from zoo.weights.pretrained import download

    sources = []
    for folder in ("a", "b"):
        torch.manual_seed(len(sources))
        model = zoo.create_model("lenet5")
        (tmp_path / folder).mkdir()
        torch.save(model.state_dict(), tmp_path / folder / "weights.pth")
        sources.append(((tmp_path / folder / "weights.pth").as_uri(), model))
    first, second = (download(url) for url, _ in sources)
    assert first != second and first.name == "weights.pth"
    assert download(sources[0][0]) == first and download(sources[1][0]) == second  # cached
    for url, model in sources:
        assert _same_outputs(model, zoo.create_model("lenet5", pretrained=url), (1, 1, 28, 28))


def test_classifier_of_another_width_is_an_error_not_a_reset(tmp_path: Path, caplog) -> None:
    sd = zoo.create_model("resnet20").state_dict()
    sd["fc.weight"] = torch.zeros(10, 32)  # same 10 classes, another feature width
    torch.save(sd, tmp_path / "w.pth")
    with caplog.at_level(logging.WARNING), pytest.raises(UserError, match=r"1 mismatched \[fc.w"):
        zoo.create_model("resnet20", pretrained=str(tmp_path / "w.pth"))
    assert "re-initialised" not in caplog.text


def test_features_only_head_drops_the_checkpoint_classifier(tmp_path: Path) -> None:
    src = zoo.create_model("resnet20")
    torch.save(src.state_dict(), tmp_path / "w.pth")
    trunk = zoo.create_model("resnet20", num_classes=0, pretrained=str(tmp_path / "w.pth")).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(trunk(x), src.eval().forward_head(src.forward_features(x), True))
