"""torch.compile: every family's small-input model compiles and matches eager mode.

Slow (Inductor compiles C++ kernels: tens of seconds per model on one core): `make test-slow`.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers.models import SMALL_MODELS, trained_like

import zoo
from zoo.models.registry import get_model_entry

pytestmark = pytest.mark.slow

TOLERANCE = 1e-5  # atol = rtol, as torch.allclose


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()  # each test compiles from scratch: no graph cached by an earlier one
    yield
    torch._dynamo.reset()


def _assert_compiles_to_eager(name: str) -> None:
    size = get_model_entry(name).cfg.input_size
    model = trained_like(zoo.create_model(name), size)
    compiled = torch.compile(model)
    x = torch.randn(2, *size)
    with torch.no_grad():
        expected = model(x)
        got = compiled(x)
    torch.testing.assert_close(got, expected, rtol=TOLERANCE, atol=TOLERANCE)


@pytest.mark.parametrize("name", SMALL_MODELS)
def test_compiled_model_matches_eager(name: str) -> None:
    _assert_compiles_to_eager(name)


def test_adaptive_ode_net_compiles_with_dynamic_output_shapes() -> None:
    """dopri5 (torchdiffeq) counts its steps with ``unique(return_counts=True)``, whose output
    shape depends on the data: Inductor lowers it only once Dynamo may capture such ops."""
    with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=True):
        _assert_compiles_to_eager("odenet_mnist")


def test_train_compile_true_trains_like_eager() -> None:
    """``train.compile=true``: the training module's compiled forward gives eager's loss and
    gradients (one training step of LeNet-5)."""
    from zoo.training import ZooClassifier

    kwargs = {"num_classes": 10, "in_chans": 1}
    eager = ZooClassifier("lenet5", kwargs)
    trained_like(eager.model, (1, 32, 32))
    compiled = ZooClassifier("lenet5", kwargs, compile=True)
    compiled.load_state_dict(eager.state_dict())
    x, y = torch.randn(16, 1, 32, 32), torch.randint(0, 10, (16,))
    losses, grads = [], []
    for module in (eager, compiled):
        module.train()
        loss = F.cross_entropy(module(x), y)
        loss.backward()
        losses.append(loss.detach())
        grads.append([p.grad for p in module.model.parameters()])
    assert compiled._forward is not compiled.model  # the compiled wrapper ran
    torch.testing.assert_close(losses[1], losses[0], rtol=TOLERANCE, atol=TOLERANCE)
    for g_eager, g_compiled in zip(*grads, strict=True):
        torch.testing.assert_close(g_compiled, g_eager, rtol=TOLERANCE, atol=TOLERANCE)
