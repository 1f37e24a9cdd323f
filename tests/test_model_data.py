"""The models' records against the models: visible builders, first conv and classifier names,
the torchvision/timm twins, and our parameter counts against the papers' printed numbers."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
import torch

import zoo
from zoo.models.registry import count_params, get_model_entry, num_params

MODELS_DIR = Path(__file__).resolve().parents[1] / "zoo" / "models"
NAMES = zoo.list_models()


def _registered_defs() -> dict[str, ast.FunctionDef]:
    """Every ``@register_model(...) def name(...)`` in the family files."""
    found = {}
    for path in MODELS_DIR.glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and any(
                isinstance(d, ast.Call) and getattr(d.func, "id", "") == "register_model"
                for d in node.decorator_list
            ):
                found[node.name] = node
    return found


DEFS = _registered_defs()


def test_every_name_is_a_visible_def() -> None:
    assert sorted(DEFS) == NAMES
    for path in MODELS_DIR.glob("*.py"):
        source = path.read_text()
        assert "globals()" not in source and "def _register" not in source, path.name
    for name in NAMES:
        builder = get_model_entry(name).builder
        assert builder.__qualname__ == name and builder.__module__.startswith("zoo.models.")


@pytest.mark.parametrize("name", NAMES)
def test_builder_body_is_one_keyword_call(name: str) -> None:
    body = DEFS[name].body
    if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring
    assert len(body) == 1 and isinstance(body[0], ast.Return), name
    call = body[0].value
    assert isinstance(call, ast.Call) and not call.args and call.keywords, name
    assert inspect.getdoc(get_model_entry(name).builder), name


@pytest.mark.parametrize("name", NAMES)
def test_record_matches_the_model(name: str) -> None:
    """timm's test_model_default_cfgs: first conv and classifier exist with the declared sizes."""
    cfg = get_model_entry(name).cfg
    c, h, w = cfg.input_size
    assert cfg.architecture == name and cfg.min_input_size is not None
    assert cfg.min_input_size[1] <= h and cfg.min_input_size[2] <= w
    with torch.device("meta"):
        model = zoo.create_model(name)
        grey = zoo.create_model(name, in_chans=1, num_classes=0)
    state, grey_state = model.state_dict(), grey.state_dict()
    assert state[f"{cfg.first_conv}.weight"].shape[1] == c
    assert grey_state[f"{cfg.first_conv}.weight"].shape[1] == 1
    main = cfg.classifiers[0]
    assert state[f"{main}.weight"].shape[0] == cfg.num_classes
    assert model.get_classifier() is model.get_submodule(main)
    assert not any(k.startswith(f"{main}.") for k in grey_state)  # num_classes=0: no classifier
    for head in cfg.classifiers:  # GoogLeNet's auxiliary heads too, when it has them
        if f"{head}.weight" in state:
            assert state[f"{head}.weight"].shape[0] == cfg.num_classes, head
    if cfg.mean is not None:
        assert len(cfg.mean) == len(cfg.std) == c
    assert model.pretrained_cfg is model.default_cfg  # timm's two names for one dict
    assert model.pretrained_cfg["architecture"] == name
    assert model.pretrained_cfg["first_conv"] == cfg.first_conv


def test_torchvision_and_timm_twins_exist_under_their_names() -> None:
    import timm
    import torchvision

    tv = [n for n in NAMES if get_model_entry(n).cfg.torchvision]
    assert len(tv) == 19 and "googlenet" in tv and "resnet20" not in tv
    assert {get_model_entry(n).cfg.torchvision for n in tv} <= set(torchvision.models.list_models())
    timm_names = {get_model_entry(n).cfg.timm for n in NAMES} - {None}
    assert timm_names and timm_names <= set(timm.list_models())


def _printed_decimals(value: float) -> int:
    text = repr(value)
    return len(text.split(".")[1]) if "." in text else 0


WITH_PAPER_PARAMS = [
    n
    for n in NAMES
    if get_model_entry(n).cfg.paper_numbers and get_model_entry(n).cfg.paper_numbers.params_m
]


@pytest.mark.parametrize("name", WITH_PAPER_PARAMS)
def test_parameter_count_matches_the_paper(name: str) -> None:
    """Our count rounds to the paper's figure as printed (0.94M, 1.7M, 138M), with the builder
    options of the paper's model; where it cannot (``params_exact=False``) the record says why."""
    paper = get_model_entry(name).cfg.paper_numbers
    ours = num_params(name, **paper.builder_kwargs) / 1e6
    rounded = round(ours, _printed_decimals(paper.params_m))
    if paper.params_exact:
        assert rounded == pytest.approx(paper.params_m), (name, ours)
    else:
        assert rounded != pytest.approx(paper.params_m) and paper.note, name
        assert ours == pytest.approx(paper.params_m, rel=0.06), (name, ours)


def test_paper_numbers_cover_the_papers_tables() -> None:
    def numbers(name: str):
        return get_model_entry(name).cfg.paper_numbers

    assert len(WITH_PAPER_PARAMS) == 36
    assert numbers("densenet16_k36").cifar10_error == 6.89
    assert numbers("resnet20").cifar10_error == 8.75
    assert numbers("resnet20").builder_kwargs == {"shortcut": "A"}
    assert numbers("cliquenet_s3_a").imagenet_top1_error == 24.01
    assert numbers("odenet_mnist").mnist_error == 0.42
    assert numbers("cliquenet_k150_t30_abc").params_exact is False


def test_comparison_reads_the_paper_errors_from_the_records() -> None:
    from zoo.bench.compare import build_table

    rows = build_table([{"model": "resnet20"}, {"model": "lenet5"}], {})
    assert rows[0]["paper C10 err (%)"] == "8.75 (He et al. 2016, Table 6)"
    assert rows[1]["paper C10 err (%)"] == ""


def test_model_info_exposes_the_record() -> None:
    info = zoo.model_info("googlenet")
    assert info["torchvision"] == "googlenet" and info["mean"] == (0.5, 0.5, 0.5)
    assert info["classifier"] == ("fc", "aux1.fc2", "aux2.fc2")
    assert info["min_input_size"] == (3, 15, 15)
    assert zoo.model_info("cliquenet_k36_t12")["paper_numbers"]["params_m"] == 0.94
    assert count_params(zoo.create_model("lenet5")) == zoo.model_info("lenet5")["num_params"]
