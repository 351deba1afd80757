"""MMCosine (Xu et al., ICASSP 2023; chapter 3): the cosine shares' bounds and invariances, their gradient, and the
method through the loop's hooks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import straight_and_resumed, without_timing
from mmlab.data.registry import get_dataset
from mmlab.methods import build_method
from mmlab.models import build_model
from mmlab.models.fusion import ConcatFusion, CosineFusion
from mmlab.training import train


def _fusion(scaling: float, seed: int = 0) -> CosineFusion:
    torch.manual_seed(seed)
    fusion = CosineFusion({"a": 6, "v": 4}, 5, scaling=scaling).double()
    torch.nn.init.normal_(fusion.linear.weight)
    return fusion


@settings(max_examples=60, deadline=None)
@given(st.floats(0.1, 50.0), st.floats(-3.0, 6.0), st.integers(0, 10_000))
def test_every_share_is_bounded_by_the_scaling_and_blind_to_the_features_length(scaling, log_length, seed):
    fusion = _fusion(scaling, seed)
    generator = torch.Generator().manual_seed(seed)
    features = {"a": torch.randn(7, 6, generator=generator, dtype=torch.float64),
                "v": torch.randn(7, 4, generator=generator, dtype=torch.float64)}
    shares = fusion.modality_shares(features)
    logits = fusion(features)
    for share in shares.values():
        assert share.abs().max() <= scaling * (1 + 1e-12)
    assert torch.allclose(sum(shares.values()), logits)  # the shares add up to the fused logits
    assert logits.abs().max() <= 2 * scaling * (1 + 1e-12)
    # a longer (or shorter) feature, per sample, changes no cosine; a plain concatenation's share scales with it
    stretch = torch.exp(torch.full((7, 1), log_length, dtype=torch.float64)) * torch.linspace(0.5, 2, 7)[:, None]
    stretched = {"a": features["a"] * stretch, "v": features["v"]}
    assert torch.allclose(fusion(stretched), logits, atol=1e-10)
    plain = ConcatFusion({"a": 6, "v": 4}, 5).double()
    plain.linear.weight.data.copy_(fusion.linear.weight)
    if abs(log_length) > 0.1:
        assert not torch.allclose(plain.modality_shares(stretched)["a"], plain.modality_shares(features)["a"])


def test_the_gradient_reaching_a_modality_s_features_is_orthogonal_to_them():
    """d cos(z, w) / dz = (w_hat - cos * z_hat) / |z|: no component along z, so the loss cannot lengthen a feature
    (autograd, float64)."""
    fusion = _fusion(10.0)
    z = {"a": torch.randn(9, 6, dtype=torch.float64, requires_grad=True),
         "v": torch.randn(9, 4, dtype=torch.float64, requires_grad=True)}
    labels = torch.randint(0, 5, (9,))
    loss = F.cross_entropy(fusion(z), labels)
    grads = torch.autograd.grad(loss, [z["a"], z["v"]])
    for g, feature in zip(grads, z.values()):
        assert g.abs().max() > 1e-6  # a real gradient ...
        assert (g * feature).sum(1).abs().max() < 1e-12  # ... with no radial component
    # and the closed form for one share's logit: s (w_hat - cos z_hat) / |z|
    w = fusion.linear.weight[2, :6]
    za = z["a"][0]
    (g_one,) = torch.autograd.grad(fusion({"a": za[None], "v": z["v"][:1]})[0, 2], za)
    cos = F.cosine_similarity(za, w, dim=0)
    closed = 10.0 * (w / w.norm() - cos * za / za.norm()) / za.norm()
    assert torch.allclose(g_one, closed.detach())


def test_the_method_builds_its_cosine_model_and_validates_the_scaling():
    method = build_method("mmcosine", ["gray", "color"], scaling=4.0)
    model = build_model(get_dataset("cgmnist"), ["gray", "color"], method.needs_unimodal_heads,
                        fusion=method.fusion, fusion_options=method.fusion_options)
    assert isinstance(model.fusion, CosineFusion) and model.fusion.scaling == 4.0
    assert model.fusion.linear.bias is None  # no bias: every logit is a sum of bounded cosines
    with pytest.raises(ValueError, match="positive"):
        build_method("mmcosine", ["gray", "color"], scaling=0.0)
    with pytest.raises(TypeError, match="a number"):
        build_method("mmcosine", ["gray", "color"], scaling="ten")


def test_a_run_trains_bounded_logits_and_resumes_to_the_same_record(tiny_config, tmp_path):
    config = tiny_config("mmcosine", method_options={"scaling": 5.0})
    straight, resumed = straight_and_resumed(config, tmp_path)
    assert without_timing(straight["history"]) == without_timing(resumed["history"])
    last = straight["history"][-1]
    assert last["test/acc"] > 0.15  # it learns (chance is 0.10) ...
    assert 0 <= last["test/acc/gray"] <= 1 and 0 <= last["test/acc/color"] <= 1  # ... and has per-modality shares
    # the fused cross-entropy cannot fall below the one of the sharpest logits two bounded shares allow
    floor = -F.log_softmax(torch.tensor([10.0] + [-10.0] * 9), 0)[0].item()
    assert last["train/loss/multimodal"] >= floor


def test_a_kept_mmcosine_model_loads_with_its_own_fusion(tiny_config, results_dir):
    """load_trained_model builds the method's fusion (it built plain concatenation before, which cannot load a
    cosine, shared-head or MMTM model's weights)."""
    from mmlab.training import load_trained_model

    config = tiny_config("mmcosine", epochs=1)
    model, record = load_trained_model(config, progress=False)
    assert isinstance(model.fusion, CosineFusion)
    assert record["final"]["test/acc"] >= 0


def test_its_captured_step_replays_to_the_eager_weights(tiny_config, tmp_path):
    from mmlab.training.checkpoint import load_checkpoint
    from mmlab.training.graph import EmulatedGraphs

    config = tiny_config("mmcosine", train_size=240, batch_size=24, grad_probe_every=0, epochs=1)
    graphs = EmulatedGraphs()
    train(config, checkpoint_dir=tmp_path / "eager", progress=False)
    train(config, checkpoint_dir=tmp_path / "graph", progress=False, cuda_graph=graphs)
    assert graphs.captures == 1 and graphs.replays > 0
    eager = load_checkpoint(tmp_path / "eager" / f"{config.key}.pt", "cpu")
    replayed = load_checkpoint(tmp_path / "graph" / f"{config.key}.pt", "cpu")
    for name, value in eager["model"].items():
        assert torch.equal(value, replayed["model"][name]), name
