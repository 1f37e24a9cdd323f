"""Registry behaviour: listing, building, errors and model_info."""

from __future__ import annotations

import pytest
import torch

import zoo
from zoo.errors import UserError
from zoo.models.registry import count_params
from zoo.paths import ROOT
from zoo.tools.model_table import markdown_table


def test_list_models_sorted_and_filtered() -> None:
    names = zoo.list_models()
    assert names == sorted(names)
    assert "lenet5" in names
    assert zoo.list_models("lenet*") == ["lenet5"]
    assert zoo.list_models("no_such_*") == []


def test_list_models_takes_timms_arguments() -> None:
    resnets = zoo.list_models(["resnet*", "wrn*"], exclude_filters="*noshort", module="resnet")
    assert "resnet20" in resnets and "wrn56_2" in resnets and "resnet18" in resnets
    assert not any(n.endswith("noshort") for n in resnets) and "resnet_mnist" not in resnets
    assert zoo.list_models(module="odenet") == ["odenet_mnist", "resnet_mnist", "rknet_mnist"]
    with_weights = zoo.list_models(pretrained=True, include_tags=False)
    assert "lenet5" in with_weights and "resnet20_noshort" not in with_weights
    assert zoo.list_pretrained("*fmnist") == [
        "cliquenet_k36_t12_ac.fmnist",
        "lenet5.fmnist",
        "resnet20.fmnist",
    ]
    assert zoo.list_pretrained("resnet50*", exclude_filters="*timm*") == [
        "resnet50.tv2_in1k",
        "resnet50.tv_in1k",
    ]


def test_a_name_with_a_tag_describes_those_weights() -> None:
    model = zoo.create_model("resnet18.tv_in1k")  # the config only: nothing is downloaded
    assert model.pretrained_cfg["tag"] == "tv_in1k" and model.pretrained_cfg["crop_pct"] == 0.875
    assert "tag" not in zoo.create_model("resnet18").pretrained_cfg
    with pytest.raises(UserError, match="resnet18 has no pretrained tag 'in22k'"):
        zoo.create_model("resnet18.in22k")


def test_unknown_name_suggests_closest() -> None:
    with pytest.raises(ValueError, match="lenet5"):
        zoo.create_model("lenet")


def test_unknown_kwarg_names_builder_and_accepted() -> None:
    with pytest.raises(TypeError, match=r"lenet5\(\).*'colour'.*accepted: .*num_classes"):
        zoo.create_model("lenet5", colour="red")


def test_duplicate_registration_rejected() -> None:
    from zoo.models.lenet import lenet5

    with pytest.raises(ValueError, match="already registered"):
        zoo.register_model(family="x", paper="x", input_size=(1, 2, 2), num_classes=1)(lenet5)


def test_builder_without_num_classes_rejected() -> None:
    def bad_builder(*, in_chans: int = 3) -> torch.nn.Module:
        return torch.nn.Identity()

    with pytest.raises(TypeError, match="num_classes"):
        zoo.register_model(family="x", paper="x", input_size=(1, 2, 2), num_classes=1)(bad_builder)


def test_model_info_fields() -> None:
    info = zoo.model_info("lenet5")
    assert info["family"] == "lenet"
    assert "LeCun" in info["paper"]
    assert info["input_size"] == (1, 32, 32)
    assert info["num_classes"] == 10
    assert info["num_params"] == 61_706
    assert isinstance(info["pretrained"], list)


@pytest.mark.parametrize("name", zoo.list_models())
def test_model_info_param_count_matches_real_build(name: str) -> None:
    """model_info counts on the meta device; a real CPU build must agree."""
    expected = zoo.model_info(name)["num_params"]
    if expected > 30_000_000:
        pytest.skip("very large model: its count is checked in the family tests")
    assert expected == count_params(zoo.create_model(name))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_classes": -1}, r"num_classes must be an integer >= 0, got -1"),
        ({"in_chans": 0}, r"in_chans must be an integer >= 1, got 0"),
        ({"in_chans": 2.5}, r"in_chans must be an integer >= 1, got 2.5"),
        ({"num_classes": "10"}, r"num_classes must be an integer >= 0, got '10'"),
        ({"num_classes": True}, r"num_classes must be an integer >= 0, got True"),
    ],
)
def test_bad_class_or_channel_counts_are_one_line_value_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=r"^resnet20\(\): " + match) as info:
        zoo.create_model("resnet20", **kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("cliquenet_k36_t12", {"drop_rate": 1.5}),
        ("densenet40_k12", {"drop_rate": -0.1}),
        ("alexnet_cifar", {"dropout": "0.5"}),
        ("googlenet_cifar", {"dropout_aux": 1.0}),
    ],
)
def test_dropout_probabilities_are_checked_when_the_model_is_built(name: str, kwargs: dict) -> None:
    """Not at the first training forward, where F.dropout would refuse them."""
    ((key, value),) = kwargs.items()
    match = rf"^{name}\(\): {key} must be a probability in \[0, 1\), got {value!r}$"
    with pytest.raises(ValueError, match=match):
        zoo.create_model(name, **kwargs)


def test_zero_classes_and_numpy_ints_are_accepted() -> None:
    import numpy as np

    model = zoo.create_model("lenet5", num_classes=0, in_chans=np.int64(3))
    assert model(torch.randn(2, 3, 28, 28)).shape == (2, 84)


def test_readme_model_table_is_the_generated_one() -> None:
    """The README's table lists every registered model with its pretrained tags as they are now."""
    readme = (ROOT / "README.md").read_text()
    table = readme.split("<!-- models:begin -->\n", 1)[1].split("\n<!-- models:end -->", 1)[0]
    assert table == markdown_table(), "stale: run python -m zoo.tools.model_table --write README.md"
