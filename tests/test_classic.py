"""The classic families against their papers' counts and torchvision's models of the same name."""

from __future__ import annotations

import pytest
import torch
import torchvision

import zoo
from zoo.models.registry import count_params

# torchvision / paper parameter counts at default classes (He et al., Huang et al. Table 2,
# Li et al.'s loss-landscape code).
EXACT_COUNTS = {
    "lenet5": 61_706,
    "alexnet": 61_100_840,
    "vgg16": 138_357_544,
    "vgg16_bn": 138_365_992,
    "googlenet": 13_004_888,
    "resnet18": 11_689_512,
    "resnet50": 25_557_032,
    "densenet121": 7_978_856,
    "densenet201": 20_013_928,
    "resnet20": 272_474,
    "resnet56": 855_770,
    "resnet110": 1_730_714,
    "resnet20_noshort": 269_722,
    "resnet56_noshort": 853_018,
    "resnet110_noshort": 1_727_962,
    "wrn56_2": 3_412_394,
}
# Huang et al. Table 2 reports millions with one decimal.
DENSENET_CIFAR_PAPER_M = {
    "densenet40_k12": 1.0,
    "densenet100_k12": 7.0,
    "densenet_bc100_k12": 0.8,
    "densenet_bc250_k24": 15.3,
    "densenet_bc190_k40": 25.6,
}
# CliqueNet's README Tab. 4: DenseNets of CliqueNet's k and T, millions with two decimals.
CLIQUENET_TABLE4_DENSENET_M = {"densenet16_k36": 0.96, "densenet22_k24": 0.99}
# The models whose record names a torchvision twin.
TORCHVISION_SHARED = [n for n in zoo.list_models() if zoo.model_info(n)["torchvision"]]
# These go through a real file and create_model(pretrained=path); the rest load in memory.
FILE_ROUND_TRIP = {"alexnet", "vgg11_bn", "googlenet", "resnet18", "densenet121"}


@pytest.mark.parametrize("name", sorted(EXACT_COUNTS))
def test_exact_param_counts(name: str) -> None:
    assert zoo.model_info(name)["num_params"] == EXACT_COUNTS[name]


def test_googlenet_without_aux_heads() -> None:
    with torch.device("meta"):
        model = zoo.create_model("googlenet", aux_logits=False)
    assert count_params(model) == 6_624_904


@pytest.mark.parametrize("name", sorted(DENSENET_CIFAR_PAPER_M))
def test_cifar_densenet_counts_match_table2(name: str) -> None:
    millions = zoo.model_info(name)["num_params"] / 1e6
    assert round(millions, 1) == DENSENET_CIFAR_PAPER_M[name]


@pytest.mark.parametrize("name", sorted(CLIQUENET_TABLE4_DENSENET_M))
def test_cliquenet_table4_densenet_counts(name: str) -> None:
    millions = zoo.model_info(name)["num_params"] / 1e6
    assert round(millions, 2) == CLIQUENET_TABLE4_DENSENET_M[name]


def test_noshort_twin_differs_only_by_projection_shortcuts() -> None:
    with_short = zoo.create_model("resnet20")
    twin = zoo.create_model("resnet20_noshort")
    extra = {k for k in with_short.state_dict()} - {k for k in twin.state_dict()}
    assert extra and all(".downsample." in k for k in extra)


def test_shortcut_options() -> None:
    a = zoo.create_model("resnet20", shortcut="A")
    assert count_params(a) == EXACT_COUNTS["resnet20_noshort"]  # option A adds no parameters
    x = torch.randn(2, 3, 32, 32)
    a.eval()
    outputs = {}
    for kind in ("A", "B", "none"):
        torch.manual_seed(0)
        outputs[kind] = zoo.create_model("resnet20", shortcut=kind).eval()(x)
    assert not torch.allclose(outputs["A"], outputs["none"])
    with pytest.raises(ValueError, match="shortcut"):
        zoo.create_model("resnet20", shortcut="C")


def test_option_a_pads_identity_with_zeros() -> None:
    from zoo.models.resnet import PadShortcut

    x = torch.randn(1, 16, 8, 8)
    y = PadShortcut(16, 32, 2)(x)
    assert y.shape == (1, 32, 4, 4)
    assert torch.equal(y[:, 8:24], x[:, :, ::2, ::2])
    assert y[:, :8].abs().sum() == 0 and y[:, 24:].abs().sum() == 0


@pytest.mark.parametrize("name", TORCHVISION_SHARED)
def test_torchvision_parity(name: str, tmp_path) -> None:
    """Same keys, shapes and eval logits as torchvision's model with random weights."""
    torch.manual_seed(0)
    kwargs = {"init_weights": True} if name == "googlenet" else {}
    twin = zoo.model_info(name)["torchvision"]
    reference = getattr(torchvision.models, twin)(weights=None, **kwargs).eval()
    state = reference.state_dict()
    if name in FILE_ROUND_TRIP:
        path = tmp_path / f"{name}.pth"
        torch.save(state, path)
        model = zoo.create_model(name, pretrained=str(path)).eval()
    else:
        with torch.device("meta"):
            model = zoo.create_model(name)
        model.load_state_dict(state, strict=True, assign=True)
        model.eval()
    assert {k: v.shape for k, v in model.state_dict().items()} == {
        k: v.shape for k, v in state.items()
    }
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert (model(x) - reference(x)).abs().max().item() <= 1e-5


def test_googlenet_training_returns_aux_in_torchvision_order() -> None:
    model = zoo.create_model("googlenet_cifar", aux_logits=True, num_classes=4).train()
    logits, aux2, aux1 = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == aux1.shape == aux2.shape == (2, 4)
    assert model.aux_loss_weight == 0.3
    assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 4)


@pytest.mark.parametrize("name", ["densenet40_k12", "densenet_bc100_k12"])
def test_densenet_memory_efficient_same_outputs_grads_and_running_stats(name: str) -> None:
    torch.manual_seed(0)
    plain = zoo.create_model(name, num_classes=3)
    lean = zoo.create_model(name, num_classes=3, memory_efficient=True)
    lean.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 16, 16)
    out_plain, out_lean = plain(x), lean(x)
    assert torch.allclose(out_plain, out_lean, atol=1e-6)
    out_plain.square().sum().backward()
    out_lean.square().sum().backward()  # recomputes BN layers: running stats must not move twice
    for p, q in zip(plain.parameters(), lean.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-5)
    for (k, a), b in zip(plain.state_dict().items(), lean.state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), k


@pytest.mark.parametrize(
    "name", ["alexnet_cifar", "vgg11_bn_cifar", "googlenet_cifar", "resnet20", "densenet40_k12"]
)
def test_small_models_take_fashion_mnist_size(name: str) -> None:
    model = zoo.create_model(name, in_chans=1).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
