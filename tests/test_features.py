"""Feature extraction (timm's API): ``create_model(..., features_only=True, out_indices=...)``,
``feature_info`` and ``forward_intermediates``, for every registered model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers.models import HEAVY, shape_device

import zoo
from zoo.models.registry import get_model_entry

NAMES = zoo.list_models()


@pytest.mark.parametrize("name", NAMES)
def test_feature_maps_match_feature_info(name: str) -> None:
    cfg = get_model_entry(name).cfg
    c, h, w = cfg.input_size
    with torch.device(shape_device(name)):
        features = zoo.create_model(name, features_only=True).eval()
        maps = features(torch.randn(1, c, h, w))
    info = features.feature_info
    assert len(maps) == len(info) == len(features.model.feature_info) >= 3
    assert [m.shape[1] for m in maps] == info.channels()
    reductions = info.reduction()
    assert reductions == sorted(reductions) and reductions[-1] >= 4
    for module in info.module_name():
        features.model.get_submodule(module)
    if h == 224:  # ImageNet models: the strides timm users expect, where the model has them
        assert {4, 8, 16, 32} <= set(reductions)
    if cfg.fixed_input_size:
        return
    # ``reduction`` is the total stride: an input larger by 2R pixels (R the largest stride)
    # gives every map 2R/r more pixels
    grow = 2 * max(reductions)
    with torch.device(shape_device(name)):
        larger = features(torch.randn(1, c, h + grow, w + grow))
    for small, big, r in zip(maps, larger, reductions, strict=True):
        assert big.shape[-2] - small.shape[-2] == grow // r
        assert big.shape[-1] - small.shape[-1] == grow // r


def _hooked_activations(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The ``feature_info`` maps as the full forward computes them, read by forward hooks."""
    captured: dict[str, tuple] = {}

    def hook(module, args, out) -> None:  # returning a value would replace the output
        captured[names[module]] = (args, out)

    names = {model.get_submodule(d["module"]): d["module"] for d in model.feature_info}
    handles = [module.register_forward_hook(hook) for module in names]
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    maps = []
    for d in model.feature_info:
        args, out = captured[d["module"]]
        if d.get("output") == "block_feature":  # a CliqueNet block returns (Stage-I, Stage-II)
            maps.append(torch.cat([args[0], *out[1]], 1))
        elif d.get("output") == "transit_feature":
            maps.append(torch.cat(out[1], 1))
        else:
            maps.append(out.clone())
    return maps


def _small_size(name: str) -> int:
    cfg = get_model_entry(name).cfg
    return cfg.input_size[1] if cfg.input_size[1] <= 32 else max(64, cfg.min_input_size[1])


@pytest.mark.parametrize("name", [n for n in NAMES if n not in HEAVY])
def test_intermediates_are_the_forward_activations(name: str) -> None:
    model = zoo.create_model(name).eval()
    c = get_model_entry(name).cfg.input_size[0]
    x = torch.randn(2, c, _small_size(name), _small_size(name))
    expected = _hooked_activations(model, x)
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        assert torch.equal(final, model.forward_features(x))
        only = model.forward_intermediates(x, indices=[0, -1], intermediates_only=True)
    assert len(maps) == len(expected)
    for got, want in zip(maps, expected, strict=True):
        assert torch.allclose(got, want, atol=1e-6)
    assert torch.equal(only[0], maps[0]) and torch.equal(only[1], maps[-1])


def test_indices_follow_timm() -> None:
    model = zoo.create_model("resnet20").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        _, every = model.forward_intermediates(x)
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        negative = model.forward_intermediates(x, indices=[-1, 1], intermediates_only=True)
        stopped, early = model.forward_intermediates(x, indices=[1], stop_early=True)
    assert [t.shape[1] for t in every] == [16, 16, 32, 64]
    assert all(torch.equal(a, b) for a, b in zip(last_two, every[2:], strict=True))
    assert torch.equal(negative[0], every[1]) and torch.equal(negative[1], every[3])
    assert torch.equal(stopped, every[1]) and torch.equal(early[0], every[1])
    with pytest.raises(ValueError, match="out of range: this model has 4 features"):
        model.forward_intermediates(x, indices=[4])
    with pytest.raises(ValueError, match="ask for 1 to 4 last features"):
        model.forward_intermediates(x, indices=0)


def test_features_only_drops_the_head_and_selects_outputs() -> None:
    features = zoo.create_model("densenet40_k12", features_only=True, out_indices=(1, -1))
    assert features.feature_info.channels() == [160, 448]
    assert features.feature_info.reduction() == [1, 4]
    assert features.feature_info.module_name() == ["features.denseblock1", "features.norm5"]
    assert not any("classifier" in k for k in features.state_dict())
    maps = features(torch.randn(2, 3, 32, 32))
    assert [tuple(m.shape) for m in maps] == [(2, 160, 32, 32), (2, 448, 8, 8)]
    googlenet = zoo.create_model("googlenet", features_only=True, out_indices=2)
    assert not any(k.startswith(("model.aux", "model.fc")) for k in googlenet.state_dict())
    with pytest.raises(TypeError, match="features_only=True"):
        zoo.create_model("resnet20", out_indices=(0, 1))


def test_cliquenet_block_and_transit_features() -> None:
    features = zoo.create_model("cliquenet_k36_t12", features_only=True)
    info = features.feature_info.get_dicts()
    assert [d["output"] for d in info[:2]] == ["block_feature", "transit_feature"]
    # {X0, Stage-II}: the 64-channel stem, then 4 layers of 36; Stage-II alone: 4 x 36
    assert [d["num_chs"] for d in info] == [64 + 144, 144, 144 + 144, 144, 144 + 144, 144]
    assert [d["reduction"] for d in info] == [1, 1, 2, 2, 4, 4]


def test_features_of_pretrained_weights(tmp_path: Path) -> None:
    src = zoo.create_model("resnet20").eval()
    torch.save(src.state_dict(), tmp_path / "w.pth")
    features = zoo.create_model(
        "resnet20", pretrained=str(tmp_path / "w.pth"), features_only=True, in_chans=1
    ).eval()
    zoo.check_input_size(features, (1, 28, 28))
    with pytest.raises(ValueError, match="reads 1-channel images"):
        zoo.check_input_size(features, (3, 28, 28))
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        expected = src.forward_features(x.expand(-1, 3, -1, -1))
        assert torch.allclose(features(x)[-1], expected, atol=1e-4)
