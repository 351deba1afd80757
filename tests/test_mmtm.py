"""MMTM cross-modal modules and the classifier that runs its encoders stage by stage."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from mmlab.data.registry import get_dataset
from mmlab.errors import UnknownNameError
from mmlab.models import MMTM, ConcatFusion, ConvEncoder, MMTMClassifier, MultimodalClassifier, build_model
from mmlab.training import per_loss_encoder_gradients
from mmlab.methods.baselines import UniformBaseline

SPEC = get_dataset("cgmnist")


def _maps(channels, n=5, size=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(n, c, size, size, generator=g) for m, c in channels.items()}


def _zero_excitation(mmtm: MMTM):
    with torch.no_grad():
        for lin in mmtm.excitation.values():
            lin.weight.zero_()
            lin.bias.zero_()


def test_gate_is_exactly_one_when_the_excitation_outputs_zero():
    mmtm = MMTM({"a": 3, "b": 5})
    _zero_excitation(mmtm)
    x = _maps({"a": 3, "b": 5})
    out = mmtm(x)
    for m in x:
        assert torch.equal(out[m], x[m])


@settings(max_examples=25, deadline=None)
@given(channels=st.lists(st.integers(1, 9), min_size=2, max_size=4), seed=st.integers(0, 1000),
       cut_bits=st.integers(0, 2**16 - 1))
def test_shapes_gate_range_and_cuts_for_any_number_of_modalities(channels, seed, cut_bits):
    names = [f"m{i}" for i in range(len(channels))]
    chans = dict(zip(names, channels))
    torch.manual_seed(seed)
    mmtm = MMTM(chans, ratio=2)
    pairs = [(j, t) for j in names for t in names if j != t]
    cuts = {p for k, p in enumerate(pairs) if cut_bits >> k & 1}
    x = _maps(chans, seed=seed)
    mmtm.train()
    mmtm(x)  # one batch to set the running averages
    gates = mmtm.gates(x, cuts)
    out = mmtm(x, cuts)
    for m in names:
        assert gates[m].shape == (5, chans[m])
        assert ((gates[m] > 0) & (gates[m] < 2)).all()
        assert out[m].shape == x[m].shape
    # a cut input does not reach the gate it is cut from: change the source, the gate stays
    mmtm.eval()
    for j, t in cuts:
        changed = dict(x, **{j: x[j] + 3.0})
        torch.testing.assert_close(mmtm.gates(changed, cuts)[t], mmtm.gates(x, cuts)[t], rtol=0, atol=0)


def test_running_average_of_the_squeeze_is_tracked_in_training_only():
    mmtm = MMTM({"a": 2, "b": 3}, momentum=0.5)
    x1, x2 = _maps({"a": 2, "b": 3}, seed=1), _maps({"a": 2, "b": 3}, seed=2)
    squeeze = lambda x: torch.cat([x["a"].mean((2, 3)), x["b"].mean((2, 3))], 1).mean(0)  # noqa: E731
    mmtm.eval()
    mmtm(x1)
    assert int(mmtm.batches_tracked) == 0 and torch.equal(mmtm.running_squeeze, torch.zeros(5))
    mmtm.train()
    mmtm(x1)
    torch.testing.assert_close(mmtm.running_squeeze, squeeze(x1))
    mmtm(x2)
    torch.testing.assert_close(mmtm.running_squeeze, 0.5 * squeeze(x1) + 0.5 * squeeze(x2))


def test_a_cut_branch_gets_no_gradient_from_the_cut_source():
    torch.manual_seed(0)  # unseeded, a draw whose bottleneck ReLUs are all off gives a zero gradient
    mmtm = MMTM({"a": 2, "b": 3})
    x = {m: v.requires_grad_() for m, v in _maps({"a": 2, "b": 3}).items()}
    mmtm.train()
    out = mmtm(x, cuts={("b", "a")})
    (gb,) = torch.autograd.grad(out["a"].sum(), [x["b"]])
    assert torch.count_nonzero(gb) == 0
    out = mmtm(x)
    (gb,) = torch.autograd.grad(out["a"].sum(), [x["b"]])
    assert torch.count_nonzero(gb) > 0


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="at least two"):
        MMTM({"a": 3})
    with pytest.raises(KeyError, match="unknown"):
        MMTM({"a": 3, "b": 3})(_maps({"a": 3, "b": 3}), cuts={("c", "a")})
    with pytest.raises(UnknownNameError, match="fusion"):
        build_model(SPEC, ["gray", "color"], False, fusion="attention")

    class Flat(nn.Module):
        def forward(self, x):
            return x.flatten(1)

    with pytest.raises(TypeError, match="'gray'.*stages"):
        MMTMClassifier({"gray": Flat(), "color": ConvEncoder(3)}, ConcatFusion({"gray": 784, "color": 512}, 10))


def test_conv_encoder_stages_compose_to_the_encoder():
    torch.manual_seed(0)
    enc = ConvEncoder(3).eval()
    x = torch.rand(4, 3, 28, 28)
    h = x
    shapes = []
    for stage in enc.stages():
        h = stage(h)
        shapes.append(h.shape[1])
    assert torch.equal(h, enc(x))
    assert tuple(shapes) == enc.stage_channels
    assert {id(p) for s in enc.stages() for p in s.parameters()} == {id(p) for p in enc.parameters()}


def test_mmtm_model_with_identity_gates_is_the_late_fusion_model():
    torch.manual_seed(0)
    mmtm_model = build_model(SPEC, ["gray", "color"], True, fusion="mmtm").eval()
    for module in mmtm_model.cross_modal:
        _zero_excitation(module)
    late = MultimodalClassifier(mmtm_model.encoders, mmtm_model.fusion, mmtm_model.unimodal_heads).eval()
    x = {"gray": torch.rand(6, 1, 28, 28), "color": torch.rand(6, 3, 28, 28)}
    a, b = mmtm_model(x), late(x)
    torch.testing.assert_close(a.logits, b.logits)
    for m in ["gray", "color"]:
        torch.testing.assert_close(a.shares[m], b.shares[m])
        torch.testing.assert_close(a.unimodal_logits[m], b.unimodal_logits[m])


def test_parameter_groups_declare_each_branch_bypass():
    model = build_model(SPEC, ["gray", "color"], False, fusion="mmtm")
    groups = model.parameter_groups()
    assert len(model.cross_modal) == 2
    for m in ["gray", "color"]:
        expected = [p for mmtm in model.cross_modal
                    for p in list(mmtm.squeeze.parameters()) + list(mmtm.excitation[m].parameters())]
        assert [id(p) for p in groups.cross_modal[m]] == [id(p) for p in expected]
        main, bypass = model.learning_speed_groups(m)
        assert len(main) == len(bypass) == 2
        assert {id(p) for ps in main for p in ps} < {id(p) for p in groups.encoders[m]}
    everything = {id(p) for p in model.parameters()}
    assert len(groups.all()) == len(everything) and {id(p) for p in groups.all()} == everything
    assert {id(p) for p in model.cross_modal.parameters()} <= {id(p) for p in groups.non_encoder()}
    assert build_model(SPEC, ["gray", "color"], False).parameter_groups().cross_modal == {}


def test_rebalancing_cut_applies_in_training_only_and_the_replacement_context_restores():
    model = build_model(SPEC, ["gray", "color"], False, fusion="mmtm")
    model.cut_cross_modal_inputs_into(["gray"])
    model.train()
    assert model.current_cuts() == {("color", "gray")}
    model.eval()
    assert model.current_cuts() == frozenset()
    with model.replacing_cross_modal_inputs(["gray"]):
        assert model.current_cuts() == {("gray", "color")}
    assert model.current_cuts() == frozenset()
    with pytest.raises(KeyError):
        model.cut_cross_modal_inputs_into(["depth"])


def test_three_modalities_run_through_mmtm():
    encoders = {m: ConvEncoder(c, 16) for m, c in {"a": 1, "b": 3, "c": 2}.items()}
    model = MMTMClassifier(encoders, ConcatFusion({m: 16 for m in encoders}, 4))
    x = {"a": torch.rand(3, 1, 28, 28), "b": torch.rand(3, 3, 28, 28), "c": torch.rand(3, 2, 28, 28)}
    model.train()
    model.cut_cross_modal_inputs_into(["b"])
    out = model(x)
    assert out.logits.shape == (3, 4)
    assert model.current_cuts() == {("a", "b"), ("c", "b")}


def test_per_loss_gradients_of_a_cross_modal_model_match_autograd():
    torch.manual_seed(0)
    model = build_model(SPEC, ["gray", "color"], unimodal_heads=True, fusion="mmtm")
    x = {"gray": torch.rand(8, 1, 28, 28), "color": torch.rand(8, 3, 28, 28)}
    y = torch.randint(0, 10, (8,))
    out = model(x)
    losses = UniformBaseline().losses(out, y, None)
    groups = model.parameter_groups()
    grads = per_loss_encoder_gradients(out, losses, groups)
    # through MMTM, the colour head's loss reaches the gray encoder too
    assert set(grads["gray"]) == {"multimodal", "unimodal/gray", "unimodal/color"}
    for m in ["gray", "color"]:
        for name, loss in losses.items():
            direct = torch.autograd.grad(loss, groups.encoders[m], retain_graph=True, allow_unused=True)
            for a, b in zip(grads[m][name], direct):
                torch.testing.assert_close(a, torch.zeros_like(a) if b is None else b)
