"""InfoReg (Huang et al., CVPR 2025; chapter 6): the window's growth measure, the proximal pull (the gradient of
its penalty), which modality it regulates and when, the Fisher trace it accumulates, and resume."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import straight_and_resumed, without_timing
from mmlab.data.registry import get_dataset
from mmlab.methods import TrainState, build_method
from mmlab.methods.inforeg import fisher_trace, proximal_gradient, regulation_strength, trace_growth
from mmlab.models import build_model

SPEC = get_dataset("cgmnist")
MODALITIES = list(SPEC.modalities)


def test_the_growth_is_the_authors_window_formula_and_one_before_any_epoch():
    assert trace_growth([]) == 1.0
    assert trace_growth([2.0]) == 1.0  # the earlier window is empty: everything is growth
    assert trace_growth([2.0, 3.0], window=10) == pytest.approx((0.5 - 0.2) / 0.5)
    traces = [float(t) for t in range(1, 30)]
    latest, earlier = sum(traces[-10:]) / 10, sum(traces[-11:-1]) / 10
    assert trace_growth(traces) == pytest.approx((latest - earlier) / latest)
    assert trace_growth([5.0] * 20) == 0.0  # a flat trace: the window has closed
    assert trace_growth([0.0, 0.0]) == 0.0


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0.01, 100.0), min_size=12, max_size=40), st.integers(1, 10))
def test_the_growth_is_the_last_change_over_the_windows_sum(traces, window):
    # (T_1 - T_0) / T_1 with both windows divided by w telescopes to (x_last - x_{last-w}) / sum(last w)
    expected = (traces[-1] - traces[-1 - window]) / sum(traces[-window:])
    assert trace_growth(traces, window) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_the_pull_is_the_gradient_of_the_proximal_penalty():
    torch.manual_seed(0)
    theta = [torch.randn(4, 3, requires_grad=True), torch.randn(5, requires_grad=True)]
    anchors = [t.detach() + 0.1 * torch.randn_like(t) for t in theta]
    strength = torch.tensor(1.7)
    penalty = strength / 2 * sum(((t - a) ** 2).sum() for t, a in zip(theta, anchors))
    expected = torch.autograd.grad(penalty, theta)
    for got, want in zip(proximal_gradient(theta, anchors, strength), expected):
        assert torch.allclose(got, want)


def test_only_the_leading_modality_is_regulated_and_harder_the_further_it_leads():
    scores = {"a": torch.tensor(40.0), "b": torch.tensor(20.0)}
    assert float(regulation_strength(scores, "b", 0.95)) == 0.0
    assert float(regulation_strength(scores, "a", 0.95)) == pytest.approx(0.95 * torch.e ** torch.tanh(
        torch.tensor(20.0)).item())
    close = {"a": torch.tensor(20.5), "b": torch.tensor(20.0)}
    assert 0.95 < float(regulation_strength(close, "a", 0.95)) < float(regulation_strength(scores, "a", 0.95))
    three = {"a": torch.tensor(10.0), "b": torch.tensor(12.0), "c": torch.tensor(11.0)}
    assert float(regulation_strength(three, "b", 1.0)) == pytest.approx(torch.e ** torch.tanh(torch.tensor(1.0)).item())


def _setup(method):
    torch.manual_seed(0)
    model = build_model(SPEC, MODALITIES, method.needs_unimodal_heads)
    state = TrainState(model=model, groups=model.parameter_groups(),
                       optimizer=torch.optim.SGD(model.parameters(), 0.1), device=torch.device("cpu"),
                       num_epochs=3, steps_per_epoch=1)
    method.setup(state)
    return model, state


def _step(method, model, state, labels):
    torch.manual_seed(1)
    inputs = {"gray": torch.rand(8, 1, 28, 28), "color": torch.rand(8, 3, 28, 28)}
    output = model(inputs)
    state.optimizer.zero_grad()
    method.total_loss(method.losses(output, labels, state), state).backward()
    plain = {m: [p.grad.clone() for p in params] for m, params in state.groups.encoders.items()}
    method.transform_gradients(output, labels, state)
    return output, plain


def test_a_step_pulls_the_leader_back_to_its_epoch_start_and_leaves_the_other_alone():
    method = build_method("inforeg", MODALITIES)
    model, state = _setup(method)
    method.on_epoch_start(state)
    with torch.no_grad():  # move every encoder away from its epoch start, as training would
        for params in state.groups.encoders.values():
            for p in params:
                p.add_(0.01 * torch.randn_like(p))
    labels = torch.randint(0, 10, (8,))
    output, plain = _step(method, model, state, labels)
    scores = {m: torch.softmax(h.detach(), 1).gather(1, labels[:, None]).sum() for m, h in output.unimodal_logits.items()}
    leader = max(scores, key=lambda m: float(scores[m]))
    other = next(m for m in MODALITIES if m != leader)
    strength = regulation_strength(scores, leader, 0.95)
    assert float(strength) > 0.95
    for p, g, a in zip(state.groups.encoders[leader], plain[leader], method.anchors[leader]):
        assert torch.allclose(p.grad, g + strength * (p.detach() - a), atol=1e-6)
    for p, g in zip(state.groups.encoders[other], plain[other]):
        assert torch.equal(p.grad, g)
    # the epoch's Fisher trace sums the squared final gradients of the weights with two or more dimensions
    layers = [p for p in state.groups.encoders[leader] if p.dim() >= 2]
    assert fisher_trace(method.squared[leader]) == pytest.approx(
        sum(float(p.grad.double().square().mean()) for p in layers), rel=1e-6)


def test_no_pull_once_the_window_has_closed():
    method = build_method("inforeg", MODALITIES)
    model, state = _setup(method)
    method.traces = {m: [1.0] * 12 for m in MODALITIES}  # flat traces: growth 0 <= threshold
    method.on_epoch_start(state)
    with torch.no_grad():
        for params in state.groups.encoders.values():
            for p in params:
                p.add_(0.01 * torch.randn_like(p))
    _, plain = _step(method, model, state, torch.randint(0, 10, (8,)))
    for m, params in state.groups.encoders.items():
        assert all(torch.equal(p.grad, g) for p, g in zip(params, plain[m]))


def test_an_inforeg_run_logs_its_window_and_resumes_to_the_same_record(tiny_config, tmp_path):
    config = tiny_config("inforeg", epochs=3)
    straight, resumed = straight_and_resumed(config, tmp_path)
    assert without_timing(straight["history"]) == without_timing(resumed["history"])
    first, last = straight["history"][0], straight["history"][-1]
    assert first["train/inforeg/growth/gray"] == 1.0 and first["train/inforeg/window_open/gray"] == 1.0
    assert last["train/inforeg/fisher_trace/color"] > 0


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="beta"):
        build_method("inforeg", MODALITIES, beta=-1.0)
    with pytest.raises(ValueError, match="window"):
        build_method("inforeg", MODALITIES, window=0)
