"""Every registered model with ``in_chans=1`` at its default input size, and timm's pooling types.
The rest of the shared API (forward, backward, heads, features, graphs) on every model is
tests/test_timm_contract.py."""

from __future__ import annotations

import pytest
import torch
from helpers.models import HEAVY

import zoo


def _small_input(name: str, in_chans: int | None = None) -> torch.Tensor:
    c, h, w = zoo.model_info(name)["input_size"]
    return torch.randn(2, in_chans or c, h, w)


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
    """timm's pooling types: max differs from avg, catavgmax gives both (CliqueNet: block by
    block) and doubles the classifier's input."""
    x = torch.randn(2, 3, 32, 32)
    avg = zoo.create_model(name, num_classes=0).eval()
    both = zoo.create_model(name, num_classes=5, global_pool="catavgmax").eval()
    assert both.head_hidden_size == 2 * width and both.get_classifier().in_features == 2 * width
    both.load_state_dict(avg.state_dict(), strict=False)  # the same trunk
    both.reset_classifier(0)
    with torch.no_grad():
        pooled = avg(x)
        assert pooled.shape == (2, width)
        avg.reset_classifier(0, "max")
        assert avg.head_hidden_size == width
        maxed = avg(x)
        assert not torch.allclose(maxed, pooled)
        expected = torch.cat([pooled, maxed], 1).sort(1).values
        assert torch.allclose(both(x).sort(1).values, expected, atol=1e-6)


def test_global_pool_mistakes_are_one_line_errors() -> None:
    model = zoo.create_model("resnet20")
    with pytest.raises(ValueError, match="global_pool must be one of") as error:
        model.reset_classifier(10, "mean")
    with pytest.raises(ValueError, match="pass num_classes=0 too") as error:
        model.reset_classifier(10, "")
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="pass num_classes=0 too"):
        zoo.create_model("resnet20", global_pool="")
    with pytest.raises(ValueError, match=r"AlexNet: global_pool='avg' is not possible: .* 2x2"):
        zoo.create_model("alexnet_cifar", global_pool="avg")
