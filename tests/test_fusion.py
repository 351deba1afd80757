"""Concatenation fusion: the shares W^m z^m + b/M add up to the fused logits."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmlab.models import ConcatFusion, MultimodalClassifier, build_model
from mmlab.data.registry import get_dataset


@settings(max_examples=25, deadline=None)
@given(dims=st.lists(st.integers(1, 9), min_size=1, max_size=4), classes=st.integers(2, 7),
       batch=st.integers(1, 5), seed=st.integers(0, 10_000))
def test_shares_add_up_to_fused_logits(dims, classes, batch, seed):
    torch.manual_seed(seed)
    names = [f"m{i}" for i in range(len(dims))]
    fusion = ConcatFusion(dict(zip(names, dims)), classes)
    torch.nn.init.normal_(fusion.linear.bias)  # a zero bias would hide a wrong bias split
    feats = {n: torch.randn(batch, d) for n, d in zip(names, dims)}
    shares = fusion.modality_shares(feats)
    assert set(shares) == set(names)
    torch.testing.assert_close(sum(shares.values()), fusion(feats), rtol=1e-5, atol=1e-5)


def test_each_share_uses_only_its_own_features_and_half_the_bias():
    fusion = ConcatFusion({"a": 3, "b": 2}, 4)
    torch.nn.init.normal_(fusion.linear.bias)
    zero = {"a": torch.zeros(1, 3), "b": torch.zeros(1, 2)}
    shares = fusion.modality_shares(zero)
    torch.testing.assert_close(shares["a"][0], fusion.linear.bias / 2)
    feats = {"a": torch.randn(1, 3), "b": torch.zeros(1, 2)}
    torch.testing.assert_close(fusion.modality_shares(feats)["b"][0], fusion.linear.bias / 2)
    torch.testing.assert_close(fusion.modality_shares(feats)["a"], feats["a"] @ fusion.linear.weight[:, :3].T
                               + fusion.linear.bias / 2)


def test_model_output_and_parameter_groups_are_declared_by_structure():
    spec = get_dataset("cgmnist")
    model = build_model(spec, ["gray", "color"], unimodal_heads=True)
    x = {"gray": torch.rand(4, 1, 28, 28), "color": torch.rand(4, 3, 28, 28)}
    out = model(x)
    assert out.logits.shape == (4, 10)
    assert set(out.unimodal_logits) == {"gray", "color"}
    torch.testing.assert_close(sum(out.shares.values()), out.logits, rtol=1e-5, atol=1e-5)
    groups = model.parameter_groups()
    enc_ids = {m: {id(p) for p in ps} for m, ps in groups.encoders.items()}
    assert enc_ids["gray"] == {id(p) for p in model.encoders["gray"].parameters()}
    assert not enc_ids["gray"] & enc_ids["color"]
    everything = {id(p) for p in model.parameters()}
    assert everything == {id(p) for p in groups.all()}
    assert len(everything) == len(groups.all())


def test_single_modality_model_and_missing_input_error():
    spec = get_dataset("cgmnist")
    model = build_model(spec, ["gray"], unimodal_heads=False)
    assert isinstance(model, MultimodalClassifier) and model.modalities == ("gray",)
    try:
        build_model(spec, ["gray", "color"], False)({"gray": torch.rand(2, 1, 28, 28)})
    except KeyError as exc:
        assert "color" in str(exc)
    else:
        raise AssertionError("missing modality accepted")
