"""CGGM (Guo et al., NeurIPS 2024; chapter 3): the improvement coefficients, the direction loss, and the method's
hooks (what reaches the encoders, how their gradients are scaled and clipped, resume)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from conftest import straight_and_resumed, without_timing
from mmlab.data.registry import get_dataset
from mmlab.methods import TrainState, build_method
from mmlab.methods.cggm import IMPROVEMENT_EPS, direction_loss, improvement_coefficients
from mmlab.models import build_model

improvements = st.lists(st.floats(-1.0, 1.0), min_size=2, max_size=4)


@settings(max_examples=80, deadline=None)
@given(improvements)
def test_the_coefficients_sum_to_m_minus_one_and_the_fastest_modality_gets_the_least(d):
    values = torch.tensor(d, dtype=torch.float64)
    assume(values.sum() > 1e-3)  # a positive total: the modalities improved on the whole
    b = improvement_coefficients(values)
    total = values.sum().item()
    assert b.sum().item() == pytest.approx(len(d) - total / (total + IMPROVEMENT_EPS), abs=1e-9)  # M - 1, up to the guard
    for i in range(len(d)):  # a larger improvement, a smaller coefficient
        for j in range(len(d)):
            if d[i] > d[j] + 1e-9:
                assert b[i] < b[j]
    if len(d) == 2:  # B_a = d_v / (d_a + d_v)
        assert b[0].item() == pytest.approx(d[1] / (d[0] + d[1]), rel=1e-6, abs=1e-6)


def test_the_coefficients_explode_where_the_improvements_cancel():
    """The rule as released divides by the sum of the batch-accuracy changes: when they cancel (one modality up by
    1/32, the other down by as much) the coefficients are of order 1/eps; the clipping bounds the step."""
    b = improvement_coefficients(torch.tensor([1 / 32, -1 / 32], dtype=torch.float64))
    assert b.abs().min() > 1e5 and b.sum().item() == pytest.approx(2.0, abs=1e-6)  # M - S/(S + eps), S = 0


def test_the_direction_loss_vanishes_when_aligned_and_pulls_only_the_fused_head():
    torch.manual_seed(0)
    classifier = [torch.randn(10, 8, requires_grad=True) for _ in range(2)]
    coefficients = torch.tensor([0.3, 0.7])
    aligned = [2.5 * c.detach() for c in classifier]
    assert direction_loss(coefficients, aligned, classifier).item() == pytest.approx(0.0, abs=1e-6)
    blocks = [torch.randn(10, 8, requires_grad=True) for _ in range(2)]
    loss = direction_loss(coefficients, blocks, classifier)
    assert loss > 0
    grads = torch.autograd.grad(loss, blocks + classifier, allow_unused=True)
    assert grads[2] is None and grads[3] is None  # the classifiers are read, not trained, by it
    # a small step against the gradient turns each block towards its classifier
    for block, grad, target in zip(blocks, grads[:2], classifier):
        before = F.cosine_similarity(block.flatten(), target.flatten(), dim=0)
        after = F.cosine_similarity((block - 0.01 * grad).flatten(), target.flatten(), dim=0)
        assert after > before


def _state(model, method):
    state = TrainState(model=model, groups=model.parameter_groups(), optimizer=torch.optim.SGD(model.parameters(), 0.1),
                       device=torch.device("cpu"), num_epochs=1, steps_per_epoch=1)
    method.setup(state)
    return state


def test_classifiers_train_on_detached_features_and_the_encoders_are_scaled_by_rho_times_b():
    spec = get_dataset("cgmnist")
    method = build_method("cggm", list(spec.modalities), rho=1.3, max_grad_norm=1e12)
    torch.manual_seed(0)
    model = build_model(spec, list(spec.modalities), method.needs_unimodal_heads)
    state = _state(model, method)
    inputs = {"gray": torch.rand(16, 1, 28, 28), "color": torch.rand(16, 3, 28, 28)}
    labels = torch.randint(0, 10, (16,))
    output = model(inputs)
    losses = method.losses(output, labels, state)
    encoder = state.groups.encoders["gray"]
    assert all(g is None for g in torch.autograd.grad(losses["unimodal/gray"], encoder, retain_graph=True,
                                                      allow_unused=True))
    assert "direction" not in losses  # no coefficients yet: the first step has no direction term
    method.total_loss(losses, state).backward()
    plain = {m: [p.grad.clone() for p in ps] for m, ps in state.groups.encoders.items()}
    method.previous_accuracy = torch.tensor([0.05, 0.20])  # gray was at 5 %, colour at 20 % on the last batch
    method.transform_gradients(output, labels, state)
    with torch.no_grad():  # each classifier's accuracy on this batch, from its own weights and the features
        accuracy = torch.stack([(model.unimodal_heads[m](output.features[m]).argmax(1) == labels).float().mean()
                                for m in ("gray", "color")])
    expected = improvement_coefficients(accuracy - torch.tensor([0.05, 0.20]))
    assert torch.allclose(method.coefficients, expected)
    for k, m in enumerate(("gray", "color")):
        for scaled, original in zip(state.groups.encoders[m], plain[m]):
            torch.testing.assert_close(scaled.grad, original * 1.3 * expected[k])


def test_the_whole_model_gradient_is_clipped_but_not_the_classifiers():
    spec = get_dataset("cgmnist")
    method = build_method("cggm", list(spec.modalities), max_grad_norm=0.01)
    torch.manual_seed(1)
    model = build_model(spec, list(spec.modalities), True)
    state = _state(model, method)
    inputs = {"gray": torch.rand(16, 1, 28, 28), "color": torch.rand(16, 3, 28, 28)}
    labels = torch.randint(0, 10, (16,))
    output = model(inputs)
    method.total_loss(method.losses(output, labels, state), state).backward()
    heads = [p.grad.clone() for ps in state.groups.heads.values() for p in ps]
    method.transform_gradients(output, labels, state)
    clipped = [p.grad for ps in state.groups.encoders.values() for p in ps] + [p.grad for p in state.groups.fusion]
    assert torch.linalg.vector_norm(torch.stack([g.norm() for g in clipped])).item() <= 0.01 * (1 + 1e-5)
    for before, p in zip(heads, [p for ps in state.groups.heads.values() for p in ps]):
        assert torch.equal(before, p.grad)


def test_a_run_logs_its_coefficients_and_resumes_to_the_same_record(tiny_config, tmp_path):
    config = tiny_config("cggm")
    straight, resumed = straight_and_resumed(config, tmp_path)
    assert without_timing(straight["history"]) == without_timing(resumed["history"])
    last = straight["history"][-1]
    assert {"train/cggm_coefficient/gray", "train/cggm_coefficient/color", "train/loss/direction"} <= set(last)
    assert 0 <= last["train/cggm_large_coefficient"] <= 1
    assert 0 <= last["test/acc/gray"] <= 1  # the classifiers' accuracy is the per-modality accuracy


def test_bad_options_are_named():
    for option, value in (("rho", 0.0), ("direction_weight", -1.0), ("max_grad_norm", 0.0)):
        with pytest.raises(ValueError, match=option):
            build_method("cggm", ["gray", "color"], **{option: value})
