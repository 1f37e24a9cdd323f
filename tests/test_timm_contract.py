"""timm's model tests (huggingface/pytorch-image-models, tests/test_models.py), ported to the zoo:
the same assertions through ``zoo.create_model`` and ``zoo.list_models``, over every registered
model, on small inputs and one thread.

``make test`` leaves out the very large ImageNet models (``SLOW_MODELS``: ``HEAVY`` and the two
VGG-11s, 133M parameters each; AlexNet runs the same torchvision head) and runs the graph tests
(``torch.fx``, TorchScript, ``torch.export``, whose cost grows with depth) on one model per code
path (``GRAPH_PATHS``); ``make test-slow`` runs the rest.

Where a model cannot do what a test asks, the test asserts the documented behaviour instead, as
timm's own lists exempt models (``EARLY_POOL_MODELS``, ``EXCLUDE_JIT_FILTERS``):

- heads that read a flattened map (LeNet-5's C5/F6, torchvision's AlexNet and ImageNet-VGG heads;
  timm exempts its VGG the same way) have no global pooling: ``global_pool`` is refused in one
  line naming ``forward_features``;
- CliqueNet's classifier reads every block's pooled features (Yang et al. 2018, §3.2), so its
  ``forward_features`` is pooled and ``global_pool=''`` is refused in one line naming
  ``forward_intermediates``;
- TorchScript: CliqueNet and the ODE blocks (torchdiffeq) do not script, for the reasons
  docs/export.md gives; the tests check that they still fail that way.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from helpers import needs_fmnist
from helpers.models import HEAVY, shape_device
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

import zoo
from zoo.data import FashionMNISTDataModule, ImageFolderDataModule
from zoo.models.base import ConvStackModel, FeatureInfo, FeatureNet
from zoo.models.cliquenet import CliqueNet
from zoo.models.lenet import LeNet5
from zoo.models.odenet import ODEBlock
from zoo.models.registry import get_model_entry
from zoo.weights.pretrained import WEIGHTS_DIR, all_tags

pytestmark = pytest.mark.usefixtures("one_thread")

SLOW_MODELS = HEAVY | {"vgg11", "vgg11_bn"}
NAMES = [
    name if name not in SLOW_MODELS else pytest.param(name, marks=pytest.mark.slow)
    for name in zoo.list_models()
]
# The other models differ from these in depth or width only (more of the same blocks).
GRAPH_PATHS = {
    "lenet5": "padding helper, flattened head",
    "alexnet_cifar": "conv stack, torchvision's flattened head (AlexNet, ImageNet VGG)",
    "vgg11_bn_cifar": "conv stack with BatchNorm, global pooling head",
    "googlenet": "Inception modules, auxiliary heads in training",
    "resnet20": "basic blocks, projection shortcuts, three stages",
    "resnet50": "bottleneck blocks, ImageNet stem, four stages",
    "densenet_bc100_k12": "bottleneck dense layers, transitions",
    "cliquenet_k36_t12_ac": "clique blocks, attention, compression",
    "odenet_mnist": "adaptive ODE solver (a data-dependent loop)",
    "rknet_mnist": "fixed-step ODE solver",
    "resnet_mnist": "GroupNorm residual blocks",
}
GRAPH_NAMES = [
    name if name in GRAPH_PATHS else pytest.param(name, marks=pytest.mark.slow)
    for name in zoo.list_models()
]
TARGET_SIZE = 16  # timm's tests shrink inputs to a target size (128-384 px there)
TIMM_CFG_KEYS = {
    "input_size",
    "fixed_input_size",
    "mean",
    "std",
    "interpolation",
    "crop_pct",
    "crop_mode",
    "num_classes",
    "pool_size",
    "first_conv",
    "classifier",
}
LOCAL_WEIGHTS = sorted(
    f"{name}.{tag}"
    for name, tags in all_tags().items()
    for tag, record in tags.items()
    if (WEIGHTS_DIR / record.source).is_file()
)


@pytest.fixture(scope="module", params=NAMES)
def built(request: pytest.FixtureRequest, one_thread: None) -> tuple[str, torch.nn.Module]:
    """(name, model in eval mode), built once for all the tests of a name (module scope groups
    them); tests that change the model take a copy."""
    return request.param, zoo.create_model(request.param).eval()


def _copy(built: tuple[str, torch.nn.Module]) -> torch.nn.Module:
    return copy.deepcopy(built[1])


def _input_size(model: torch.nn.Module) -> tuple[int, int, int]:
    """timm's ``_get_input_size``: the configured size if fixed, else each side cut to the target
    but not below the smallest size the model accepts."""
    cfg = model.pretrained_cfg
    c, h, w = cfg["input_size"]
    if cfg["fixed_input_size"]:
        return c, h, w
    _, min_h, min_w = cfg.get("min_input_size", (c, 1, 1))
    return c, max(min_h, min(h, TARGET_SIZE)), max(min_w, min(w, TARGET_SIZE))


def _no_unpooled_output(model: torch.nn.Module) -> str | None:
    """What the one-line refusal of ``global_pool=''`` names, or None where it works: a head
    reading the flattened map (timm's ``EARLY_POOL_MODELS``) or CliqueNet's pooled features."""
    if isinstance(model, CliqueNet):
        return "forward_intermediates"
    flattened = isinstance(model, LeNet5) or (
        isinstance(model, ConvStackModel) and getattr(model, "global_pool", None) is None
    )
    return "forward_features" if flattened else None


def _not_scriptable(model: torch.nn.Module, traced: bool) -> str | None:
    """The documented TorchScript failure (docs/export.md), or None where scripting works: the
    ODE block (torchdiffeq), and CliqueNet's clique blocks (their FX graph scripts: tracing
    turns the blocks into plain operations)."""
    if any(isinstance(m, ODEBlock) for m in model.modules()):
        return "keyword-only arguments"
    if isinstance(model, CliqueNet) and not traced:  # no bottleneck layers / a ModuleList index
        return "has no attribute 'bn_b_stage1'|Expected integer literal for index"
    return None


def _cat(outputs: torch.Tensor | tuple) -> torch.Tensor:
    """GoogLeNet in training returns (logits, aux2, aux1); timm's tests concatenate them."""
    return torch.cat(outputs) if isinstance(outputs, tuple) else outputs


def _fx_model(model: torch.nn.Module) -> torch.nn.Module:
    """timm's ``_create_fx_model``: torchvision's feature extractor returning the model's output
    node in eval mode and, in training, every node the output reads (GoogLeNet's auxiliary
    logits)."""
    train_nodes, eval_nodes = get_graph_node_names(model)
    train_return = [train_nodes[-1]]
    if getattr(model, "aux_classifiers", ()):
        graph = torch.fx.symbolic_trace(copy.deepcopy(model).train()).graph
        names = [n.name for n in reversed(graph.nodes)]
        output = next(n for n in graph.nodes if n.op == "output")
        train_return = [train_nodes[-names.index(n.name)] for n in output.all_input_nodes]
    return create_feature_extractor(
        model, train_return_nodes=train_return, eval_return_nodes=[eval_nodes[-1]]
    )


def _script(model: torch.nn.Module, traced: bool = False) -> torch.nn.Module | None:
    """``torch.jit.script(model)``; None where scripting is documented to fail, after checking
    that it still fails that way (or, for a class that failed before in this process,
    TorchScript's refusal to compile it again)."""
    reason = _not_scriptable(model, traced)
    if reason is None:
        return torch.jit.script(model)
    with pytest.raises(Exception, match=f"{reason}|Can't redefine method: forward"):
        torch.jit.script(model)
    return None


# ---- forward, backward, configs (timm: test_model_forward, _backward, _default_cfgs) ------------


def test_model_forward(built: tuple[str, torch.nn.Module]) -> None:
    """timm's test, and the same outputs with gradient checkpointing switched on."""
    model = built[1]
    x = torch.randn(1, *_input_size(model))
    outputs = model(x)
    assert outputs.shape == (1, model.num_classes)
    assert not torch.isnan(outputs).any()
    model.set_grad_checkpointing()
    try:
        assert torch.allclose(model(x), outputs, rtol=1e-4, atol=1e-5)
    finally:
        model.set_grad_checkpointing(False)


def test_model_backward(built: tuple[str, torch.nn.Module]) -> None:
    model = _copy(built).train()
    model.reset_classifier(42)
    outputs = _cat(model(torch.randn(2, *_input_size(model))))
    outputs.mean().backward()
    for param_name, param in model.named_parameters():
        assert param.grad is not None, f"no gradient for {param_name}"
    assert outputs.shape[-1] == 42
    assert not torch.isnan(outputs).any()


def test_model_default_cfgs(built: tuple[str, torch.nn.Module]) -> None:
    """timm's test: the config's keys and layer names, the head's widths (``num_features``,
    ``head_hidden_size``), the head without classifier and without pooling, on a small input;
    ``pool_size`` at the configured input size (shapes only)."""
    name, model = built[0], _copy(built)
    cfg = model.pretrained_cfg
    assert isinstance(cfg, dict) and model.default_cfg is cfg and TIMM_CFG_KEYS <= cfg.keys()
    assert cfg["architecture"] == name and cfg["num_classes"] == model.num_classes
    state_dict = built[1].state_dict()
    classifiers = cfg["classifier"]
    for classifier in (classifiers,) if isinstance(classifiers, str) else classifiers:
        assert f"{classifier}.weight" in state_dict, classifier
    assert f"{cfg['first_conv']}.weight" in state_dict
    assert model.get_classifier().out_features == model.num_classes

    x = torch.randn(1, *_input_size(model))
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape[1] == model.num_features
        pre_logits = model.forward_head(features, pre_logits=True)
        assert pre_logits.shape == (1, model.head_hidden_size)
        assert torch.allclose(model.forward_head(features), model(x))
        model.reset_classifier(0)
        assert model.num_classes == 0
        assert torch.allclose(model(x), pre_logits)
        refused = _no_unpooled_output(model)
        if refused:
            with pytest.raises(ValueError, match=refused) as error:
                model.reset_classifier(0, "")
            assert "\n" not in str(error.value)
        else:
            model.reset_classifier(0, "")
            assert model(x).shape == features.shape  # the unpooled map (after the head's norm)

        device = shape_device(name)
        features = model.to(device).forward_features(torch.randn(1, *cfg["input_size"]).to(device))
    if isinstance(model, CliqueNet):  # the multi-scale representation: pooled already
        assert cfg["pool_size"] is None and features.shape == (1, model.num_features)
    else:
        assert tuple(features.shape[1:]) == (model.num_features, *cfg["pool_size"])


# One model per way of pooling before the head, and the two ways of refusing to.
CREATE_WITHOUT_POOLING = [
    ("lenet5", "forward_features"),
    ("alexnet_cifar", "forward_features"),
    ("vgg11_bn_cifar", None),
    ("googlenet_cifar", None),
    ("resnet20", None),
    ("densenet40_k12", None),
    ("cliquenet_k36_t12", "forward_intermediates"),
    ("resnet_mnist", None),
]


@pytest.mark.parametrize(("name", "refused"), CREATE_WITHOUT_POOLING)
def test_create_model_without_classifier_and_pooling(name: str, refused: str | None) -> None:
    """timm's ``create_model(name, num_classes=0, global_pool='')``: ``forward`` gives the
    unpooled map (the factory calls ``reset_classifier``, tested on every model above), or a
    one-line error naming what gives the unpooled maps."""
    if refused:
        with pytest.raises(ValueError, match=refused) as error:
            zoo.create_model(name, num_classes=0, global_pool="")
        assert "\n" not in str(error.value)
        return
    model = zoo.create_model(name, num_classes=0, global_pool="").eval()
    x = torch.randn(1, *_input_size(model))
    with torch.no_grad():
        assert model(x).shape == model.forward_features(x).shape


def _tags_of_other_sizes() -> list[str]:
    """Weights that declare their map size (timm's) at an input size other than the record's."""
    names = []
    for name, tags in all_tags().items():
        record = get_model_entry(name).cfg
        for tag, weights in tags.items():
            if weights.pool_size is not None and weights.input_size != record.input_size:
                names.append(f"{name}.{tag}")
    return sorted(names)


@pytest.mark.parametrize("name", _tags_of_other_sizes())
def test_pretrained_cfg_of_tags_states_their_map_size(name: str) -> None:
    with torch.device(shape_device(name.split(".")[0])):
        model = zoo.create_model(name).eval()  # the tag's config, without its weights
        cfg = model.pretrained_cfg
        assert cfg["tag"] == name.split(".")[1]
        features = model.forward_features(torch.randn(1, *cfg["input_size"]))
    assert tuple(features.shape[2:]) == tuple(cfg["pool_size"])


# ---- weights (timm: test_model_load_pretrained, test_model_features_pretrained) -----------------


@pytest.mark.parametrize("name", LOCAL_WEIGHTS)
def test_model_load_pretrained(name: str) -> None:
    """The weights adapted to one channel and five classes, and without classifier."""
    grey = zoo.create_model(name, pretrained=True, in_chans=1, num_classes=5)
    assert grey.pretrained_cfg["input_size"][0] == 1 and grey.pretrained_cfg["num_classes"] == 5
    headless = zoo.create_model(name, pretrained=True, in_chans=1, num_classes=0).eval()
    x = torch.randn(2, *headless.pretrained_cfg["input_size"])
    with torch.no_grad():
        assert headless(x).shape == (2, headless.head_hidden_size)


@pytest.mark.parametrize("name", LOCAL_WEIGHTS)
def test_model_features_pretrained(name: str) -> None:
    """The feature maps of the weights: those of the full model with the same weights."""
    model = zoo.create_model(name, pretrained=True).eval()
    features = zoo.create_model(name, pretrained=True, features_only=True).eval()
    assert features.pretrained_cfg["first_conv"] == f"model.{model.pretrained_cfg['first_conv']}"
    x = torch.randn(2, *features.pretrained_cfg["input_size"])
    with torch.no_grad():
        expected = model.forward_intermediates(x, intermediates_only=True)
        for got, want in zip(features(x), expected, strict=True):
            assert torch.equal(got, want)


# ---- feature extraction (timm: test_model_forward_features, _forward_intermediates) -------------


def _check_feature_maps(maps: list[torch.Tensor], info: FeatureInfo, input_size: tuple) -> None:
    """timm's checks: channels as declared, sizes within one pixel of input size / reduction."""
    channels, reductions = info.channels(), info.reduction()
    assert len(channels) >= 3 and len(maps) == len(channels)
    for c, r, o in zip(channels, reductions, maps, strict=True):
        assert o.shape[:2] == (1, c)
        assert o.shape[2] <= math.ceil(input_size[1] / r) + 1
        assert o.shape[3] <= math.ceil(input_size[2] / r) + 1
        assert not torch.isnan(o).any()


def test_model_forward_features(built: tuple[str, torch.nn.Module]) -> None:
    model = FeatureNet(_copy(built)).eval()  # what create_model(features_only=True) returns
    input_size = _input_size(model.model)
    with torch.no_grad():
        maps = model(torch.randn(1, *input_size))
    _check_feature_maps(maps, model.feature_info, input_size)


def test_model_forward_intermediates(built: tuple[str, torch.nn.Module]) -> None:
    model = built[1]
    input_size = _input_size(model)
    x = torch.randn(1, *input_size)
    with torch.no_grad():
        output, maps = model.forward_intermediates(x, output_fmt="NCHW")
        _check_feature_maps(maps, FeatureInfo(model.feature_info, range(len(maps))), input_size)
        assert torch.allclose(output, model.forward_features(x))
    model.set_grad_checkpointing()
    try:
        checkpointed, _ = model.forward_intermediates(x, output_fmt="NCHW")
        assert torch.allclose(output, checkpointed, rtol=1e-4, atol=1e-5)
    finally:
        model.set_grad_checkpointing(False)
    with pytest.raises(ValueError, match="NCHW"):
        model.forward_intermediates(x, output_fmt="NHWC")


# ---- graphs (timm: test_model_forward_fx, _backward_fx, _fx_torchscript, _forward_torchscript) --


@pytest.mark.parametrize("name", GRAPH_NAMES)
def test_model_fx(name: str) -> None:
    """timm's three FX tests on one feature extractor: eval outputs equal to the model's, its
    TorchScript, and in training a gradient for every parameter."""
    model = zoo.create_model(name, num_classes=42)
    x = torch.randn(2, *_input_size(model))
    fx_model = _fx_model(model).eval()
    with torch.inference_mode():
        outputs = model.eval()(x)
        fx_outputs = torch.cat(tuple(fx_model(x).values()))
    assert torch.equal(fx_outputs, outputs)
    scripted = _script(fx_model, traced=True)
    if scripted is not None:
        with torch.inference_mode():
            assert torch.allclose(torch.cat(tuple(scripted(x).values())), outputs, atol=1e-5)

    outputs = torch.cat(tuple(fx_model.train()(x).values()))
    outputs.mean().backward()
    for param_name, param in fx_model.named_parameters():
        assert param.grad is not None, f"no gradient for {param_name}"
    assert outputs.shape[-1] == 42 and not torch.isnan(outputs).any()


@pytest.mark.parametrize("name", GRAPH_NAMES)
def test_model_forward_torchscript(name: str) -> None:
    model = zoo.create_model(name).eval()
    scripted = _script(model)
    if scripted is not None:
        x = torch.randn(1, *_input_size(model))
        with torch.inference_mode():
            assert torch.allclose(scripted(x), model(x), atol=1e-5)


@pytest.mark.parametrize("name", GRAPH_NAMES)
def test_model_export(name: str) -> None:
    """``torch.export.export``, PyTorch's recommended graph capture: the graph computes what the
    model computes (ODE-Net's adaptive solver as a data-dependent loop)."""
    model = zoo.create_model(name).eval()
    x = torch.randn(2, *_input_size(model))
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        assert torch.allclose(exported.module()(x), model(x), rtol=1e-4, atol=1e-5)


# ---- beyond timm's file: exact gradients with checkpointing, preprocessing ----------------------

# One model per code path: plain stacks, GoogLeNet with its auxiliary heads, residual blocks with
# and without shortcuts, plain and bottleneck dense layers (dropout on), clique blocks with
# attention and compression (dropout on) and with the bottleneck, and the three ODE-family models.
CHECKPOINTED = [
    ("lenet5", {}),
    ("alexnet_cifar", {}),
    ("vgg11_bn_cifar", {}),
    ("googlenet_cifar", {"aux_logits": True}),
    ("resnet20", {}),
    ("resnet20_noshort", {}),
    ("densenet40_k12", {"drop_rate": 0.2}),
    ("densenet_bc100_k12", {}),
    ("cliquenet_k36_t12_ac", {"drop_rate": 0.2}),
    ("cliquenet_s0", {}),
    ("rknet_mnist", {}),
    ("odenet_mnist", {}),
    ("resnet_mnist", {}),
]


@pytest.mark.parametrize(("name", "kwargs"), CHECKPOINTED)
def test_grad_checkpointing_gives_the_same_step(name: str, kwargs: dict) -> None:
    """A training step with ``set_grad_checkpointing()`` (dropout on, BatchNorm in training mode)
    gives the plain step's outputs and gradients, and updates the running statistics once."""
    plain = zoo.create_model(name, num_classes=5, **kwargs).train()
    lean = zoo.create_model(name, num_classes=5, **kwargs).train()
    lean.load_state_dict(plain.state_dict())
    lean.set_grad_checkpointing()
    x = torch.randn(2, *_input_size(plain))
    outputs = []
    for model in (plain, lean):
        torch.manual_seed(1)  # the same dropout masks; recomputation restores the RNG state
        out = _cat(model(x))
        out.square().mean().backward()
        outputs.append(out)
    assert torch.allclose(outputs[0], outputs[1], rtol=1e-5, atol=1e-6)
    for (param_name, a), b in zip(plain.named_parameters(), lean.parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, rtol=1e-5, atol=1e-7), param_name
    for (key, a), b in zip(plain.state_dict().items(), lean.state_dict().values(), strict=True):
        assert torch.equal(a, b), key  # running statistics and batch counters: one update


def _timm_transform(model: torch.nn.Module):
    from timm.data import create_transform, resolve_data_config

    return create_transform(**resolve_data_config(model=model))


@needs_fmnist
@pytest.mark.parametrize(
    "name", ["lenet5.fmnist", "resnet20.fmnist", "cliquenet_k36_t12_ac.fmnist"]
)
def test_timm_preprocessing_is_the_zoo_pipeline_of_the_weights(name: str) -> None:
    """Our Fashion-MNIST weights: timm's transform of a test image is what the zoo's data module
    fed the model (its pixels scaled, normalised by the training split's statistics)."""
    from PIL import Image

    model = zoo.create_model(name, pretrained=True, in_chans=1)
    data = FashionMNISTDataModule(eval_batch_size=8)
    data.setup()
    zoo_batch, _ = next(iter(data.test_dataloader()))
    transform = _timm_transform(model)
    timm_batch = torch.stack([transform(Image.fromarray(x[0].numpy())) for x in data.test_x[:8]])
    assert timm_batch.shape == zoo_batch.shape == (8, 1, 28, 28)
    assert torch.allclose(timm_batch, zoo_batch, atol=1e-4)  # statistics stored to 6 digits


@pytest.mark.parametrize("name", ["resnet20_noshort", "odenet_mnist", "vgg11_bn_cifar"])
def test_timm_preprocessing_is_the_zoo_image_folder_pipeline(name: str, tmp_path: Path) -> None:
    """A model without weights: timm's transform of an image file resizes it as the zoo's image
    folders do (the whole image, bilinear, to the model's size) and normalises it with the
    record's statistics."""
    from PIL import Image

    model = zoo.create_model(name)
    c, h, _ = model.pretrained_cfg["input_size"]
    image = Image.fromarray(torch.randint(0, 256, (45, 61, 3), dtype=torch.uint8).numpy())
    image = image.convert("L" if c == 1 else "RGB")
    for split in ("train", "test"):
        for label in ("a", "b"):  # two classes, one image
            (tmp_path / split / label).mkdir(parents=True)
            image.save(tmp_path / split / label / "0.png")
    data = ImageFolderDataModule(root=str(tmp_path), image_size=h, grayscale=c == 1, val_size=0)
    data.setup()
    mean = torch.tensor(model.pretrained_cfg["mean"]).view(-1, 1, 1)
    std = torch.tensor(model.pretrained_cfg["std"]).view(-1, 1, 1)
    zoo_image = (data.test_x[0].float() / 255 - mean) / std
    assert torch.allclose(_timm_transform(model)(image), zoo_image, atol=1e-5)


@pytest.mark.parametrize("name", ["alexnet", "vgg11", "googlenet", "resnet18", "densenet121"])
def test_timm_preprocessing_of_torchvision_weights_is_torchvisions(name: str) -> None:
    """ImageNet weights: timm's transform from the model's config is torchvision's evaluation
    transform of those weights (resize, centre crop, normalisation); GoogLeNet's weights see it
    through torchvision's ``transform_input``, which our layout expects done as (x - 0.5) / 0.5."""
    import torchvision
    from PIL import Image

    with torch.device("meta"):  # the weights' config only: nothing is built or downloaded
        model = zoo.create_model(f"{name}.tv_in1k")
    image = Image.fromarray(torch.randint(0, 256, (300, 341, 3), dtype=torch.uint8).numpy())
    weights = torchvision.models.get_model_weights(name).IMAGENET1K_V1
    expected = weights.transforms()(image)
    if name == "googlenet":  # torchvision's transform_input, applied by its model
        imagenet_mean = torch.tensor([0.485, 0.456, 0.406]).view(-1, 1, 1)
        imagenet_std = torch.tensor([0.229, 0.224, 0.225]).view(-1, 1, 1)
        expected = (expected * imagenet_std + imagenet_mean - 0.5) / 0.5
    got = _timm_transform(model)(image)
    assert got.shape == expected.shape == (3, 224, 224)
    assert torch.allclose(got, expected, atol=1e-5)
