"""LFM (after Yang et al., NeurIPS 2024; chapter 4, the rule as in BalanceBenchmark): the released alignment (and how it
differs from the Jensen-Shannon divergence), the Hessian-vector meta-gradient against a finite difference, the
trade-off's update, its bounds and its learning-rate halving, the loss, resume."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import straight_and_resumed, without_timing
from mmlab.data.registry import get_dataset
from mmlab.methods import TrainState, build_method
from mmlab.methods.lfm import alignment_as_released, alpha_meta_gradient, prediction_alignment
from mmlab.models import build_model

SPEC = get_dataset("cgmnist")
MODALITIES = list(SPEC.modalities)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 8), st.integers(2, 10), st.integers(0, 10_000))
def test_the_released_alignment_is_kl_from_the_mixture_symmetric_and_zero_only_for_equal(batch, classes, seed):
    gen = torch.Generator().manual_seed(seed)
    a, b = 2 * torch.randn(batch, classes, generator=gen), 2 * torch.randn(batch, classes, generator=gen)
    p, q = torch.softmax(a, 1), torch.softmax(b, 1)
    m = (p + q) / 2
    expected = 0.5 * ((m * (m / p).log()).sum(1) + (m * (m / q).log()).sum(1)).mean()
    assert alignment_as_released(a, b).item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-6)
    assert alignment_as_released(a, b).item() == pytest.approx(alignment_as_released(b, a).item(), rel=1e-5, abs=1e-7)
    assert alignment_as_released(a, a).item() == pytest.approx(0.0, abs=1e-6)


def test_the_released_alignment_is_not_the_js_divergence_and_exceeds_its_bound():
    a = torch.tensor([[30.0, 0.0]])  # p is almost one-hot
    b = torch.tensor([[0.0, 30.0]])  # q is the other one-hot
    p, q = torch.softmax(a, 1), torch.softmax(b, 1)
    m = (p + q) / 2
    js = 0.5 * ((p * (p / m).log()).sum() + (q * (q / m).log()).sum())
    assert js.item() == pytest.approx(math.log(2), rel=1e-4)  # the JS divergence is at most log 2
    assert alignment_as_released(a, b).item() > 5 * math.log(2)  # the released score is not bounded by it


def test_the_meta_gradient_is_the_hessian_vector_product_against_a_finite_difference():
    torch.manual_seed(0)
    w = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    x = torch.randn(8, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (8,))
    cls = lambda w: F.cross_entropy(x @ w.T, y)  # noqa: E731
    total = lambda w: 0.7 * cls(w) + 0.3 * (x @ w.T).square().mean()  # noqa: E731
    got = alpha_meta_gradient(cls(w), total(w), w)
    (g_cls,) = torch.autograd.grad(cls(w), w)
    h = 1e-5
    grad_at = lambda w0: torch.autograd.grad(total(w0), w0)[0]  # noqa: E731
    plus = grad_at((w.detach() + h * g_cls).requires_grad_())
    minus = grad_at((w.detach() - h * g_cls).requires_grad_())
    assert got == pytest.approx(((plus - minus) / (2 * h)).mean().item(), rel=1e-5)


def _state(method, epochs=3):
    torch.manual_seed(0)
    model = build_model(SPEC, MODALITIES, method.needs_unimodal_heads)
    state = TrainState(model=model, groups=model.parameter_groups(),
                       optimizer=torch.optim.SGD(model.parameters(), 0.1), device=torch.device("cpu"),
                       num_epochs=epochs, steps_per_epoch=1)
    features = {m: torch.rand(40, 512) for m in MODALITIES}
    labels = torch.randint(0, 10, (40,))
    state.features = lambda split: (features, labels)
    return model, state


def test_the_trade_off_takes_one_clipped_step_per_epoch_and_its_rate_halves_every_20_epochs():
    method = build_method("lfm", MODALITIES, alpha_lr=1e3)  # a large rate: the clip must hold
    model, state = _state(method)
    for epoch in range(3):
        state.epoch = epoch
        method.on_epoch_start(state)
        assert 0.05 <= method.alignment_weight <= 0.95
    slow = build_method("lfm", MODALITIES, alpha_lr=1e-4)
    _, state = _state(slow)
    for epoch in (0, 19, 20, 21, 40):
        state.epoch = epoch
        slow.on_epoch_start(state)
    assert slow.alpha_lr == pytest.approx(1e-4 / 4)  # halved at 20 and at 40


def test_the_loss_is_twice_the_weighted_sum_of_the_fused_loss_and_the_alignment():
    method = build_method("lfm", MODALITIES)
    model, state = _state(method)
    inputs = {"gray": torch.rand(8, 1, 28, 28), "color": torch.rand(8, 3, 28, 28)}
    labels = torch.randint(0, 10, (8,))
    output = model(inputs)
    losses = method.losses(output, labels, state)
    expected = 2 * (0.95 * F.cross_entropy(output.logits, labels) + 0.05 * prediction_alignment(output.shares))
    assert method.total_loss(losses, state).item() == pytest.approx(expected.item(), rel=1e-5)


def test_an_lfm_run_resumes_to_the_same_record(tiny_config, tmp_path):
    config = tiny_config("lfm", epochs=3)
    straight, resumed = straight_and_resumed(config, tmp_path)
    assert without_timing(straight["history"]) == without_timing(resumed["history"])
    assert "train/lfm/alignment_weight" in straight["history"][-1]


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="alpha_lr"):
        build_method("lfm", MODALITIES, alpha_lr=-1.0)
    with pytest.raises(ValueError, match="alpha_samples"):
        build_method("lfm", MODALITIES, alpha_samples=1)
    with pytest.raises(ValueError, match="initial_alignment_weight"):
        build_method("lfm", MODALITIES, initial_alignment_weight=0.99)
