"""LeNet-5 against LeCun et al. 1998: the layer sizes and the 61,706-parameter count."""

from __future__ import annotations

import pytest
import torch

import zoo
from zoo.models.registry import count_params


def test_param_count_matches_paper_layout() -> None:
    # C1 156 + C3 2,416 + C5 48,120 + F6 10,164 + output 850
    assert count_params(zoo.create_model("lenet5")) == 61_706


def test_28px_input_is_padded_to_32() -> None:
    model = zoo.create_model("lenet5").eval()
    x28 = torch.randn(3, 1, 28, 28)
    x32 = torch.nn.functional.pad(x28, (2, 2, 2, 2))
    with torch.no_grad():
        assert torch.equal(model(x28), model(x32))
        assert model.forward_features(x28).shape == (3, 16, 5, 5)


def test_rejects_too_large_input() -> None:
    with pytest.raises(ValueError, match="32x32"):
        zoo.create_model("lenet5")(torch.randn(1, 1, 64, 64))


def test_bad_activation_rejected() -> None:
    with pytest.raises(ValueError, match="activation"):
        zoo.create_model("lenet5", activation="gelu")
