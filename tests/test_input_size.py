"""The smallest input each model declares: it works, one pixel less fails, and
``zoo.check_input_size`` says so in one line before any work starts."""

from __future__ import annotations

import pytest
import torch
from helpers.models import shape_device

import zoo
from zoo.models.registry import get_model_entry


def _runs(name: str, size: int) -> bool:
    """One eval forward of a ``size``×``size`` image where shapes are checked (``shape_device``)."""
    c = get_model_entry(name).cfg.input_size[0]
    with torch.device(shape_device(name)):
        model = zoo.create_model(name).eval()
        x = torch.randn(1, c, size, size)
    try:
        with torch.no_grad():
            model(x)
    except RuntimeError as err:
        if "meta" in str(err):
            raise
        return False
    return True


@pytest.mark.parametrize("name", zoo.list_models())
def test_declared_minimum_is_the_real_minimum(name: str) -> None:
    _, h, w = get_model_entry(name).cfg.min_input_size
    assert h == w
    assert _runs(name, h)
    if h > 1:
        assert not _runs(name, h - 1)


def test_check_by_name_names_the_smallest_size() -> None:
    zoo.check_input_size("densenet121", (3, 29, 29))
    zoo.check_input_size("vgg11", (1, 32, 64))  # channels are adapted by create_model
    with pytest.raises(ValueError, match=r"^densenet121 needs inputs of at least 29x29 pixels"):
        zoo.check_input_size("densenet121", (3, 28, 28))
    with pytest.raises(ValueError, match="at least 32x32 pixels, got 32x31"):
        zoo.check_input_size("vgg11", (3, 32, 31))
    zoo.check_input_size("resnet20", (3, 1, 1))


def test_check_a_model_checks_channels_too() -> None:
    model = zoo.create_model("alexnet_cifar", in_chans=1)
    zoo.check_input_size(model, (1, 28, 28))
    with pytest.raises(ValueError, match="reads 1-channel images, the input has 3 channels"):
        zoo.check_input_size(model, (3, 28, 28))
    with pytest.raises(ValueError, match="at least 8x8"):
        zoo.check_input_size(model, (1, 7, 7))


def test_check_errors_are_one_line() -> None:
    for args in [
        ("densenet121", (3, 8, 8)),
        ("lenet5", (1, 28)),
        (torch.nn.Linear(2, 2), (1, 2, 2)),
    ]:
        with pytest.raises(ValueError) as info:
            zoo.check_input_size(*args)
        assert "\n" not in str(info.value)


def test_fixed_size_model_refuses_larger_inputs() -> None:
    zoo.check_input_size("lenet5", (1, 28, 28))
    with pytest.raises(ValueError, match="lenet5 reads images up to 32x32 pixels, got 33x32"):
        zoo.check_input_size("lenet5", (1, 33, 32))
