"""CliqueNet: the update rule against a plain edge loop, the stages' semantics, shared kernels,
options, the paper's parameter counts and MACs, and the authors' checkpoint layout."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import zoo
from zoo.bench.complexity import count_macs
from zoo.models.cliquenet import (
    CliqueBlock,
    CliqueNet,
    Transition,
    convert_official_state_dict,
)

# Our exact counts (default options, 10/1000 classes); the papers' printed counts are the models'
# records, compared in tests/test_model_data.py.
EXACT_COUNTS = {
    "cliquenet_k36_t12": 935_994,
    "cliquenet_k64_t15": 4_485_706,
    "cliquenet_k80_t15": 6_937_546,
    "cliquenet_k80_t18": 10_135_594,
    "cliquenet_k36_t12_a": 977_898,
    "cliquenet_k36_t12_c": 1_037_434,
    "cliquenet_k36_t12_ac": 1_079_338,
    "cliquenet_k80_t15_ac": 7_998_138,
    "cliquenet_k12_t36": 1_045_306,
    "cliquenet_k24_t18": 986_650,
    "cliquenet_s0": 5_703_728,
    "cliquenet_s1": 7_956_776,
    "cliquenet_s2": 10_003_756,
    "cliquenet_s2_a": 11_008_376,
    "cliquenet_s3": 13_170_904,
    "cliquenet_s3_a": 14_383_024,
}


def reference_block(block: CliqueBlock, x0: torch.Tensor):
    """The update rule as a loop over edges: sum_s W_si * relu(bn_slice_s(X_s)); BN in eval mode."""
    pad = block.kernel_size // 2

    def update(sources: list[tuple[int, torch.Tensor]], bn, target: int, bn_b, conv_b):
        total, offset = 0.0, 0
        for s, x in sources:
            c = x.shape[1]
            sl = slice(offset, offset + c)
            normed = F.batch_norm(
                x,
                bn.running_mean[sl],
                bn.running_var[sl],
                bn.weight[sl],
                bn.bias[sl],
                False,
                0.0,
                bn.eps,
            )
            total = total + F.conv2d(F.relu(normed), block.edge_weight(s, target), padding=pad)
            offset += c
        if bn_b is not None:
            total = F.conv2d(F.relu(bn_b(total)), conv_b.weight, padding=1)
        return total

    L, b = block.num_layers, block.bottleneck
    stage1: dict[int, torch.Tensor] = {}
    for i in range(1, L + 1):
        srcs = [(0, x0)] + [(l, stage1[l]) for l in range(1, i)]
        stage1[i] = update(
            srcs,
            block.bn_stage1[i - 1],
            i,
            block.bn_b_stage1[i - 1] if b else None,
            block.bottleneck_convs[i - 1] if b else None,
        )
    latest = dict(stage1)
    for i in range(1, block.feedback_layers + 1):
        srcs = [(l, latest[l]) for l in range(1, L + 1) if l != i]
        latest[i] = update(
            srcs,
            block.bn_stage2[i - 1],
            i,
            block.bn_b_stage2[i - 1] if b else None,
            block.bottleneck_convs[i - 1] if b else None,
        )
    return [stage1[i] for i in range(1, L + 1)], [latest[i] for i in range(1, L + 1)]


def _randomize_bn(module: torch.nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)


@pytest.mark.parametrize("bottleneck", [False, True])
@pytest.mark.parametrize("feedback", [None, 0, 1, 2])
def test_fast_block_matches_edge_loop(bottleneck: bool, feedback: int | None) -> None:
    torch.manual_seed(0)
    # float64, so that 1e-5 measures the algorithm rather than fp32 summation order.
    block = CliqueBlock(5, 3, 4, bottleneck=bottleneck, feedback_layers=feedback).eval()
    _randomize_bn(block)
    block = block.double()
    x0 = torch.randn(2, 5, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        fast1, fast2 = block(x0)
        ref1, ref2 = reference_block(block, x0)
    for a, b in zip(fast1 + fast2, ref1 + ref2, strict=True):
        assert (a - b).abs().max().item() < 1e-5


def test_stage2_reads_stage2_before_and_stage1_after() -> None:
    torch.manual_seed(0)
    block = CliqueBlock(4, 3, 4).eval()
    _randomize_bn(block)
    x0 = torch.randn(2, 4, 5, 5)
    with torch.no_grad():
        s1, s2 = block(x0)
        i = 2  # the third layer (0-based): Stage-II of layers 0,1 and Stage-I of layer 3
        expected = F.conv2d(
            F.relu(block.bn_stage2[i](torch.cat([s2[0], s2[1], s1[3]], 1))),
            block.pair_weights[i],
            padding=1,
        )
        jacobi = F.conv2d(
            F.relu(block.bn_stage2[i](torch.cat([s1[0], s1[1], s1[3]], 1))),
            block.pair_weights[i],
            padding=1,
        )
    assert torch.allclose(s2[i], expected, atol=1e-6)
    assert not torch.allclose(s2[i], jacobi, atol=1e-3)
    assert all(not torch.allclose(a, b) for a, b in zip(s1, s2, strict=True))


def test_kernels_are_shared_between_stages() -> None:
    block = CliqueBlock(4, 3, 4)
    k = block.growth
    # L input kernels + L(L-1) pairwise kernels, nothing per stage (Yang et al. §3.1).
    kernels = [*block.input_weights, *block.pair_weights]
    assert sum(w.numel() for w in kernels) == 4 * 3 * 4 * 9 + 4 * 3 * 3 * 3 * 9
    for target in range(1, 5):
        for source in range(1, 5):
            if source == target:
                continue
            w = block.edge_weight(source, target)
            assert w.shape == (k, k, 3, 3)
            assert (
                w.untyped_storage().data_ptr()
                == block.pair_weights[target - 1].untyped_storage().data_ptr()
            )
    # Stage-I of layer 3 uses exactly the leading W_13, W_23 of the tensor Stage-II uses.
    stage1 = block.stage1_weight(2)
    assert torch.equal(stage1[:, 4:], block.pair_weights[2][:, : 2 * k])
    # A gradient through Stage-I alone reaches W_l3 (l<3) and not W_43 (Stage-II only).
    x0 = torch.randn(1, 4, 5, 5)
    s1, _ = block(x0)
    s1[2].sum().backward()
    g = block.pair_weights[2].grad
    assert g[:, : 2 * k].abs().sum() > 0 and g[:, 2 * k :].abs().sum() == 0


def test_every_option_changes_the_output() -> None:
    x = torch.randn(2, 3, 16, 16)
    outputs = {}
    variants = {
        "base": {},
        "attention": {"attention": True},
        "bottleneck": {"bottleneck": True},
        "compression": {"compression": True},
        "I+I": {"stages": "I+I"},
        "I+II": {"stages": "I+II"},
        "feedback1": {"feedback_layers": 1},
    }
    for name, kw in variants.items():
        torch.manual_seed(0)
        model = CliqueNet((6, 6), (3, 3), num_classes=5, drop_rate=0.0, **kw).eval()
        _randomize_bn(model)
        with torch.no_grad():
            outputs[name] = model(x)
    names = list(outputs)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not torch.allclose(outputs[a], outputs[b], atol=1e-4), (a, b)


@pytest.mark.parametrize("name", sorted(EXACT_COUNTS))
def test_parameter_counts_match_the_paper(name: str) -> None:
    paper = zoo.model_info(name)["paper_numbers"]
    n = zoo.model_info(name)["num_params"]
    assert n == EXACT_COUNTS[name]
    digits = len(str(paper["params_m"]).split(".")[1])
    assert round(n / 1e6, digits) == pytest.approx(paper["params_m"])


def test_k150_t30_abc_uses_the_official_layout() -> None:
    # 5 nodes per block (T counts both convs of the bottleneck); the paper prints 10.02M.
    info = zoo.model_info("cliquenet_k150_t30_abc")
    assert info["num_params"] == 10_480_938
    assert info["paper_numbers"]["params_m"] == 10.02 and not info["paper_numbers"]["params_exact"]


def test_macs_match_the_paper_flops() -> None:
    # Paper: 0.91 GFLOPs = 2 x 0.455 GMACs for k=36, T=12 at 32x32.
    with torch.device("meta"):
        pass
    macs = count_macs(zoo.create_model("cliquenet_k36_t12"), (3, 32, 32))
    assert macs == pytest.approx(0.455e9, rel=0.01)


def test_memory_efficient_same_outputs_and_grads() -> None:
    torch.manual_seed(0)
    plain = CliqueNet((4, 4), (3, 3), num_classes=3, compression=True, attention=True)
    lean = CliqueNet(
        (4, 4), (3, 3), num_classes=3, compression=True, attention=True, memory_efficient=True
    )
    lean.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 12, 12)
    a, b = plain(x), lean(x)
    assert torch.allclose(a, b, atol=1e-6)
    a.square().sum().backward()
    b.square().sum().backward()
    for p, q in zip(plain.parameters(), lean.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-5)


# ---- the authors' ImageNet checkpoint layout (imagenet_pytorch/cliquenet.py, utils.py) ----------


def official_state_dict(layers, growth, stem=8, attention=True, scale=0.2) -> dict:
    """Random weights under the authors' key names and shapes, DataParallel prefix included."""
    g = torch.Generator().manual_seed(0)
    sd: dict[str, torch.Tensor] = {}

    def bn(prefix: str, c: int) -> None:
        sd[prefix + ".weight"] = torch.rand(c, generator=g) + 0.5
        sd[prefix + ".bias"] = torch.randn(c, generator=g) * 0.1
        sd[prefix + ".running_mean"] = torch.randn(c, generator=g) * 0.1
        sd[prefix + ".running_var"] = torch.rand(c, generator=g) + 0.5
        sd[prefix + ".num_batches_tracked"] = torch.tensor(7)

    def w(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    sd["fir_trans.weight"] = w(stem, 3, 7, 7)
    bn("fir_bn", stem)
    c0, gb = stem, []
    for b, (L, k) in enumerate(zip(layers, growth, strict=True)):
        p = f"list_block.{b}"
        for j in range(1, L + 1):
            sd[f"{p}.conv_param.{j}.weight"] = w(k, c0, 1, 1)
            for i in range(1, L + 1):
                if i != j:
                    sd[f"{p}.conv_param.{i * (L + 1) + j}.weight"] = w(k, k, 1, 1)
        for i in range(L):
            bn(f"{p}.forward_bn.{i}", c0 + i * k)
            bn(f"{p}.forward_bn_b.{i}", k)
            bn(f"{p}.loop_bn.{i}", k * (L - 1))
            bn(f"{p}.loop_bn_b.{i}", k)
            sd[f"{p}.conv_param_bottle.{i}.weight"] = w(k, k, 3, 3)
        gb.append(c0 + L * k)
        bn(f"list_compress.{b}.bn", gb[-1])
        sd[f"list_compress.{b}.conv.weight"] = w(gb[-1] // 2, gb[-1], 1, 1)
        bn(f"list_gb.{b}.bn", gb[-1] // 2)
        if b < len(layers) - 1:
            bn(f"list_trans.{b}.bn", L * k)
            sd[f"list_trans.{b}.conv.weight"] = w(L * k, L * k, 1, 1)
            if attention:
                sd[f"list_trans.{b}.attention.fc1.weight"] = w(L * k // 2, L * k)
                sd[f"list_trans.{b}.attention.fc1.bias"] = w(L * k // 2)
                sd[f"list_trans.{b}.attention.fc2.weight"] = w(L * k, L * k // 2)
                sd[f"list_trans.{b}.attention.fc2.bias"] = w(L * k)
        c0 = L * k
    sd["fc.weight"] = w(5, sum(gb) // 2)
    sd["fc.bias"] = w(5)
    return {f"module.{k}": v for k, v in sd.items()}


def official_forward(sd: dict[str, torch.Tensor], x: torch.Tensor, layers) -> torch.Tensor:
    """The authors' forward, written directly against their state dict (eval mode)."""
    sd = {k.removeprefix("module."): v for k, v in sd.items()}

    def bn(prefix: str, t: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(
            t,
            sd[prefix + ".running_mean"],
            sd[prefix + ".running_var"],
            sd[prefix + ".weight"],
            sd[prefix + ".bias"],
            False,
            0.0,
            1e-5,
        )

    out = F.conv2d(x, sd["fir_trans.weight"], stride=2, padding=3)
    out = F.max_pool2d(F.relu(bn("fir_bn", out)), 3, 2, 1)
    pooled = []
    for b, L in enumerate(layers):
        p = f"list_block.{b}"
        blobs: dict[int, torch.Tensor] = {}
        for j in range(1, L + 1):
            inp = torch.cat([out] + [blobs[i] for i in range(1, j)], 1)
            wt = torch.cat(
                [sd[f"{p}.conv_param.{j}.weight"]]
                + [sd[f"{p}.conv_param.{i * (L + 1) + j}.weight"] for i in range(1, j)],
                1,
            )
            mid = F.conv2d(F.relu(bn(f"{p}.forward_bn.{j - 1}", inp)), wt)
            blobs[j] = F.conv2d(
                F.relu(bn(f"{p}.forward_bn_b.{j - 1}", mid)),
                sd[f"{p}.conv_param_bottle.{j - 1}.weight"],
                padding=1,
            )
        for j in range(1, L + 1):
            others = [i for i in range(1, L + 1) if i != j]
            inp = torch.cat([blobs[i] for i in others], 1)
            wt = torch.cat([sd[f"{p}.conv_param.{i * (L + 1) + j}.weight"] for i in others], 1)
            mid = F.conv2d(F.relu(bn(f"{p}.loop_bn.{j - 1}", inp)), wt)
            blobs[j] = F.conv2d(
                F.relu(bn(f"{p}.loop_bn_b.{j - 1}", mid)),
                sd[f"{p}.conv_param_bottle.{j - 1}.weight"],
                padding=1,
            )
        stage2 = torch.cat([blobs[i] for i in range(1, L + 1)], 1)
        feat = torch.cat([out, stage2], 1)
        feat = F.conv2d(
            F.relu(bn(f"list_compress.{b}.bn", feat)), sd[f"list_compress.{b}.conv.weight"]
        )
        pooled.append(F.relu(bn(f"list_gb.{b}.bn", feat)).mean((2, 3)))
        if b < len(layers) - 1:
            t = F.conv2d(
                F.relu(bn(f"list_trans.{b}.bn", stage2)), sd[f"list_trans.{b}.conv.weight"]
            )
            a = F.relu(
                F.linear(
                    t.mean((2, 3)),
                    sd[f"list_trans.{b}.attention.fc1.weight"],
                    sd[f"list_trans.{b}.attention.fc1.bias"],
                )
            )
            a = torch.sigmoid(
                F.linear(
                    a,
                    sd[f"list_trans.{b}.attention.fc2.weight"],
                    sd[f"list_trans.{b}.attention.fc2.bias"],
                )
            )
            out = F.avg_pool2d(t * a[:, :, None, None], 2)
    return F.linear(torch.cat(pooled, 1), sd["fc.weight"], sd["fc.bias"])


def test_official_checkpoint_conversion(tmp_path) -> None:
    layers, growth = (3, 2), (4, 6)
    sd = official_state_dict(layers, growth)
    model = CliqueNet(
        growth,
        layers,
        num_classes=5,
        stem="imagenet",
        attention=True,
        bottleneck=True,
        compression=True,
        stem_channels=8,
    ).eval()
    model.load_state_dict(convert_official_state_dict(sd), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (model(x) - official_forward(sd, x, layers)).abs().max().item() < 1e-5


def test_official_checkpoint_through_create_model(tmp_path) -> None:
    sd = official_state_dict((6, 6, 6, 6), (40, 80, 160, 160), stem=64, scale=0.03)
    sd = {k: v for k, v in sd.items() if not k.startswith("module.fc.")}
    gb = (64 + 240) // 2 + (240 + 480) // 2 + (480 + 960) // 2 + (960 + 960) // 2
    sd["module.fc.weight"] = torch.randn(1000, gb) * 0.01
    sd["module.fc.bias"] = torch.zeros(1000)
    path = tmp_path / "s3_att_best.pth.tar"
    torch.save({"epoch": 100, "state_dict": sd}, path)
    model = zoo.create_model("cliquenet_s3_a", pretrained=str(path)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours, theirs = model(x), official_forward(sd, x, (6, 6, 6, 6))
    assert torch.isfinite(theirs).all()
    assert (ours - theirs).abs().max().item() <= 1e-4 * max(1.0, theirs.abs().max().item())


@pytest.mark.parametrize("side", [8, 7], ids=["even", "odd"])
def test_attentional_transition_is_attention_then_pool(side: int) -> None:
    # The paper's order (attention on the full map, then the 2x2 average pool), by hand.
    torch.manual_seed(0)
    trans = Transition(6, attention=True, drop_rate=0.0).train()
    x = torch.randn(4, 6, side, side, dtype=torch.float64, requires_grad=True)
    trans.double()
    t = trans.conv(F.relu(trans.bn(x)))
    w = torch.sigmoid(trans.attention.fc2(F.relu(trans.attention.fc1(t.mean((2, 3))))))
    expected = F.avg_pool2d(t * w[:, :, None, None], 2)
    grads = torch.autograd.grad(expected.square().sum(), [x, *trans.parameters()])
    out = trans(x)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    got = torch.autograd.grad(out.square().sum(), [x, *trans.parameters()])
    for g, want in zip(got, grads, strict=True):
        torch.testing.assert_close(g, want, rtol=1e-10, atol=1e-12)
