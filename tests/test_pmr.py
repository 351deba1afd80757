"""PMR (chapter 3): prototype logits, the slow-modality switch, the prototype updates, resume."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from conftest import straight_and_resumed, without_timing
from mmlab.data.registry import get_dataset
from mmlab.methods import TrainState, build_method
from mmlab.methods.pmr import class_means, prototype_logits, prototype_scores
from mmlab.models import ModelOutput, build_model
from mmlab.training import train


def test_prototype_logits_are_minus_the_euclidean_distances():
    torch.manual_seed(0)
    z, c = torch.randn(7, 5), torch.randn(3, 5)
    loop = torch.tensor([[-math.sqrt(float(torch.dot(zi - ck, zi - ck))) for ck in c] for zi in z])
    torch.testing.assert_close(prototype_logits(z, c), loop, rtol=1e-5, atol=1e-5)


def test_prototype_logits_keep_float64_and_lift_half_precision():
    z, c = torch.randn(3, 4, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
    assert prototype_logits(z, c).dtype == torch.float64
    assert prototype_logits(z.bfloat16(), c.bfloat16()).dtype == torch.float32
    method = build_method("pmr")
    method.on_epoch_start(_state())
    method.losses(_output({"gray": z, "color": z.bfloat16()}), torch.tensor([0, 1, 2]), _state())
    method.on_epoch_end(_state(), evaluate=None)
    assert method.prototypes["gray"].dtype == torch.float64 and method.prototypes["color"].dtype == torch.float32


def test_prototype_scores_sum_the_true_class_probability():
    logits = {"a": torch.tensor([[0.0, 0.0], [10.0, -10.0]])}
    score = prototype_scores(logits, torch.tensor([1, 0]))["a"]
    assert math.isclose(float(score), 0.5 + 1 / (1 + math.exp(-20)), rel_tol=1e-6)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=1, max_size=12), st.integers(0, 10_000))
def test_class_means_are_the_means_of_each_class_and_keep_the_old_row_of_an_empty_class(labels, seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.tensor(labels)
    z = torch.randn(len(labels), 2, generator=g)
    one_hot = F.one_hot(y, 4).float()
    fallback = torch.randn(4, 2, generator=g)
    means = class_means(one_hot.T @ z, one_hot.sum(0), fallback)
    for k in range(4):
        expected = z[y == k].mean(0) if (y == k).any() else fallback[k]
        torch.testing.assert_close(means[k], expected)


def _state():
    torch.manual_seed(0)
    model = build_model(get_dataset("cgmnist"), ["gray", "color"], unimodal_heads=False)
    return TrainState(model=model, groups=model.parameter_groups(), optimizer=None, device=torch.device("cpu"),
                      num_epochs=100, steps_per_epoch=1)


def _output(features, num_classes=3):
    batch = next(iter(features.values())).shape[0]
    return ModelOutput(features=features, logits=torch.zeros(batch, num_classes), shares={})


def test_only_the_slower_modality_gets_the_prototypical_cross_entropy():
    state = _state()
    method = build_method("pmr", alpha=0.7)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    centres = torch.eye(3) * 10
    torch.manual_seed(1)
    features = {"gray": centres[y] + 0.01 * torch.randn(6, 3),  # on its class centres: fast
                "color": torch.randn(6, 3)}  # no class structure: slow
    method.prototypes = {"gray": centres, "color": torch.randn(3, 3)}
    terms = method.losses(_output(features), y, state)
    pce_color = F.cross_entropy(prototype_logits(features["color"], method.prototypes["color"]), y)
    torch.testing.assert_close(terms["prototype/color"], 0.7 * pce_color)
    assert float(terms["prototype/gray"]) == 0.0
    torch.testing.assert_close(terms["multimodal"], torch.tensor(math.log(3)))


def test_the_prototypical_term_reaches_only_the_slow_encoder_not_the_prototypes():
    state = _state()
    method = build_method("pmr")
    y = torch.tensor([0, 1, 2])
    centres = torch.eye(3) * 10
    slow = torch.randn(3, 3, requires_grad=True)
    fast = (centres[y] + 0.0).requires_grad_()
    prototypes = {"gray": centres.clone().requires_grad_(), "color": torch.randn(3, 3, requires_grad=True)}
    method.prototypes = {m: c.detach() for m, c in prototypes.items()}
    terms = method.losses(_output({"gray": fast, "color": slow}), y, state)
    g_slow, g_fast = torch.autograd.grad(terms["prototype/color"] + terms["prototype/gray"], [slow, fast])
    assert g_slow.abs().sum() > 0 and g_fast.abs().sum() == 0


def test_outside_the_window_there_is_no_prototypical_term():
    state = _state()
    state.epoch = 5
    method = build_method("pmr", window_end=5)
    y = torch.tensor([0, 1, 2])
    method.prototypes = {"gray": torch.eye(3) * 10, "color": torch.randn(3, 3)}
    terms = method.losses(_output({"gray": torch.eye(3) * 10, "color": torch.randn(3, 3)}), y, state)
    assert float(terms["prototype/color"]) == 0.0 and float(terms["prototype/gray"]) == 0.0


def test_prototypes_are_the_epoch_class_means_then_a_momentum_blend():
    state = _state()
    method = build_method("pmr", momentum=0.25)
    y = torch.tensor([0, 1, 2, 0])
    first = {"gray": torch.randn(4, 2), "color": torch.randn(4, 2)}
    method.on_epoch_start(state)
    method.losses(_output(first), y, state)
    # before any epoch has ended, the PCE uses the running class means of this epoch
    torch.testing.assert_close(method.current_prototypes()["gray"][0], first["gray"][[0, 3]].mean(0))
    method.on_epoch_end(state, evaluate=None)
    after_one = {m: c.clone() for m, c in method.prototypes.items()}
    torch.testing.assert_close(after_one["color"][1], first["color"][1])
    second = {"gray": torch.randn(4, 2), "color": torch.randn(4, 2)}
    method.on_epoch_start(state)
    method.losses(_output(second), y, state)
    method.on_epoch_end(state, evaluate=None)
    expected = 0.75 * second["gray"][[0, 3]].mean(0) + 0.25 * after_one["gray"][0]
    torch.testing.assert_close(method.prototypes["gray"][0], expected)


@pytest.mark.parametrize("bad", [dict(alpha=-1), dict(momentum=1.0), dict(window_start=3, window_end=2)])
def test_bad_options_are_refused(bad):
    with pytest.raises(ValueError):
        build_method("pmr", **bad)


def test_pmr_trains_through_the_loop_and_resumes_with_its_prototypes(tiny_config, tmp_path):
    straight, resumed = straight_and_resumed(tiny_config("pmr", epochs=2), tmp_path)
    h = straight["history"][-1]
    assert "train/pmr_rho/gray" in h and "train/loss/prototype/color" in h
    # a per-step 0/alpha switch, averaged over the epoch
    assert all(0.0 <= h[f"train/pmr_coefficient/{m}"] <= 1.0 for m in ("gray", "color"))
    assert without_timing(resumed["history"]) == without_timing(straight["history"])


def test_the_loop_switches_the_prototype_loss_on_for_the_weaker_modality_only(tiny_config, tmp_path):
    """One step per epoch, so an epoch's logged means are that step's values: alpha for the modality whose
    prototype ratio is below 1, 0 (and no prototype loss) for the other."""
    record = train(tiny_config("pmr", epochs=2, train_size=32, batch_size=32, method_options=dict(alpha=0.5)),
                   checkpoint_dir=tmp_path, progress=False)
    for h in record["history"]:
        rho = {m: h[f"train/pmr_rho/{m}"] for m in ("gray", "color")}
        assert math.isclose(rho["gray"] * rho["color"], 1.0, rel_tol=1e-5)  # two modalities: reciprocal ratios
        for m, r in rho.items():
            assert h[f"train/pmr_coefficient/{m}"] == (0.5 if r < 1 else 0.0)
            if r > 1:
                assert h[f"train/loss/prototype/{m}"] == 0.0
            else:
                assert h[f"train/loss/prototype/{m}"] > 0.0


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 6))
def test_the_pce_gradient_is_the_unit_pull_of_chapter_3s_exercise(seed, classes):
    # ex-pmr-grad: grad_z PCE = u_y - sum_k p_k u_k, u_k = (z - c_k) / ||z - c_k||
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(1, 4, generator=g, dtype=torch.float64, requires_grad=True)
    c = torch.randn(classes, 4, generator=g, dtype=torch.float64)
    y = torch.tensor([seed % classes])
    (grad,) = torch.autograd.grad(F.cross_entropy(prototype_logits(z, c), y), [z])
    u = (z.detach() - c) / (z.detach() - c).norm(dim=1, keepdim=True)
    p = F.softmax(-(z.detach() - c).norm(dim=1), dim=0)
    torch.testing.assert_close(grad[0], u[y[0]] - (p[:, None] * u).sum(0), )


def test_first_epoch_running_means_carry_no_gradient():
    """In the first epoch the prototypes are the running class means of the features seen so far, this batch's
    included; the PCE gradient must reach the features only through their own distances, as with fixed means."""
    state = _state()
    method = build_method("pmr", alpha=1.0)
    method.on_epoch_start(state)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    torch.manual_seed(2)
    fast = (torch.eye(3)[y] * 10 + 0.01 * torch.randn(6, 3)).requires_grad_()
    slow = torch.randn(6, 3, requires_grad=True)
    terms = method.losses(_output({"gray": fast, "color": slow}), y, state)
    assert method.prototypes is None and float(terms["prototype/color"].detach()) > 0  # colour is the slow one
    (got,) = torch.autograd.grad(terms["prototype/color"], [slow])
    z = slow.detach().clone().requires_grad_()
    means = torch.stack([slow.detach()[y == k].mean(0) for k in range(3)])  # this batch's class means, fixed
    (expected,) = torch.autograd.grad(F.cross_entropy(prototype_logits(z, means), y), [z])
    torch.testing.assert_close(got, expected)
