"""Every registered model: forward and backward at its default input size and with ``in_chans=1``,
and the shared API (forward_features, forward_head, get_classifier, reset_classifier)."""

from __future__ import annotations

import pytest
import torch
from helpers.models import HEAVY
from torch import nn

import zoo


def _small_input(name: str, in_chans: int | None = None) -> torch.Tensor:
    c, h, w = zoo.model_info(name)["input_size"]
    return torch.randn(2, in_chans or c, h, w)


@pytest.mark.parametrize("name", [n for n in zoo.list_models() if n not in HEAVY])
def test_forward_backward_and_api(name: str) -> None:
    model = zoo.create_model(name, num_classes=7)
    model.train()
    x = _small_input(name)
    out = model(x)
    logits = out[0] if isinstance(out, tuple) else out
    assert logits.shape == (2, 7)
    logits.sum().backward()
    assert any(p.grad is not None for p in model.parameters())

    model.eval()
    with torch.no_grad():
        feats = model.forward_features(x)
        pre = model.forward_head(feats, pre_logits=True)
        assert pre.ndim == 2 and pre.shape[0] == 2
        assert torch.allclose(model.forward_head(feats), model(x), atol=1e-5)
        assert isinstance(model.get_classifier(), nn.Module)
        model.reset_classifier(3)
        assert model(x).shape == (2, 3)
        model.reset_classifier(0)
        assert model(x).shape == pre.shape


@pytest.mark.parametrize("name", [n for n in zoo.list_models() if n not in HEAVY])
def test_in_chans_one(name: str) -> None:
    model = zoo.create_model(name, in_chans=1, num_classes=5).eval()
    with torch.no_grad():
        out = model(_small_input(name, in_chans=1))
    assert out.shape == (2, 5)


@pytest.mark.parametrize(
    ("name", "width"), [("resnet20", 64), ("densenet40_k12", 448), ("cliquenet_k36_t12", 784)]
)
def test_global_pool_types(name: str, width: int) -> None:
    """timm's pooling types: max differs from avg, catavgmax doubles the classifier's input."""
    x = torch.randn(2, 3, 32, 32)
    avg = zoo.create_model(name, num_classes=0).eval()
    both = zoo.create_model(name, num_classes=5, global_pool="catavgmax").eval()
    assert both.head_hidden_size == 2 * width and both.get_classifier().in_features == 2 * width
    both.load_state_dict(avg.state_dict(), strict=False)  # the same trunk
    both.reset_classifier(0)
    with torch.no_grad():
        pooled = avg(x)
        assert pooled.shape == (2, width)
        assert torch.allclose(both(x)[:, :width], pooled, atol=1e-6)  # avg first, then max
        avg.reset_classifier(0, "max")
        assert avg.head_hidden_size == width and not torch.allclose(avg(x), pooled)


def test_global_pool_mistakes_are_one_line_errors() -> None:
    model = zoo.create_model("resnet20")
    with pytest.raises(ValueError, match="global_pool must be one of") as error:
        model.reset_classifier(10, "mean")
    with pytest.raises(ValueError, match="pass num_classes=0 too") as error:
        model.reset_classifier(10, "")
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="pass num_classes=0 too"):
        zoo.create_model("resnet20", global_pool="")
    with pytest.raises(ValueError, match=r"VGG: global_pool='avg' is not possible: .* 7x7"):
        zoo.create_model("vgg11", global_pool="avg")
