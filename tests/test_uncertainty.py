"""Uncertainty weighting (Kendall, Gal & Cipolla 2018; chapter 4): the rule against its closed form, and the method
through the loop's hooks."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import straight_and_resumed, without_timing
from mmlab.methods import build_method
from mmlab.methods.uncertainty import optimal_log_variances, uncertainty_weighted_loss
from mmlab.training import train

positive_losses = st.lists(st.floats(0.01, 20.0), min_size=1, max_size=4)


@settings(max_examples=60, deadline=None)
@given(positive_losses, st.floats(-1.0, 1.0).filter(lambda d: abs(d) > 1e-3))
def test_the_closed_form_log_variances_minimise_the_objective(losses, shift):
    values = torch.tensor(losses, dtype=torch.float64)
    best = optimal_log_variances(values).requires_grad_()
    objective = uncertainty_weighted_loss(values, best)
    (gradient,) = torch.autograd.grad(objective, best)
    assert gradient.abs().max() < 1e-12  # stationary there
    # and a minimum: moving any log-variance away raises the objective (it is convex in each s_i)
    moved = best.detach().clone()
    moved[0] += shift
    assert uncertainty_weighted_loss(values, moved) > objective.detach()
    # at the optimum every weighted loss is 1/2: a small loss is weighted up, a large one down
    assert torch.allclose(torch.exp(-best.detach()) * values, torch.full_like(values, 0.5))


def test_the_log_variances_learn_towards_the_closed_form_for_fixed_losses():
    """The method's own optimiser (the run's lr and momentum) drives s to log(2 L) when L does not change."""
    losses = torch.tensor([2.3, 0.05, 1.0])
    s = torch.zeros(3, requires_grad=True)
    optimizer = torch.optim.SGD([s], lr=0.05, momentum=0.9)
    for _ in range(2000):
        optimizer.zero_grad()
        uncertainty_weighted_loss(losses, s).backward()
        optimizer.step()
    assert torch.allclose(s.detach(), optimal_log_variances(losses), atol=1e-3)
    assert s[1] < 0 < s[0]  # the small loss (the colour's, on CG-MNIST) weighted above 1, the large below


def test_a_run_learns_log_variances_logs_their_weights_and_leaves_the_model_loss_unchanged(tiny_config, tmp_path):
    config = tiny_config("uncertainty", epochs=1)
    record = train(config, checkpoint_dir=tmp_path, progress=False)
    last = record["history"][-1]
    names = ["multimodal", "unimodal/gray", "unimodal/color"]
    weights = {n: last[f"train/uncertainty_weight/{n}"] for n in names}
    assert all(w > 0 for w in weights.values()) and any(abs(w - 1) > 1e-4 for w in weights.values())
    # the log-variances have moved from 0 towards log(2 L): a weight below 1 where the loss stayed above 1/2
    mean_losses = {n: last[f"train/loss/{n}"] for n in names}
    for n in names:
        if mean_losses[n] > 1.0:
            assert weights[n] < 1
    method = build_method("uncertainty", ["gray", "color"])
    assert method.initial_log_variance == 0.0 and method.needs_unimodal_heads


def test_uncertainty_weighting_resumes_to_the_same_run(tiny_config, tmp_path):
    straight, resumed = straight_and_resumed(tiny_config("uncertainty", epochs=2, train_size=128), tmp_path)
    assert without_timing(resumed["history"]) == without_timing(straight["history"])


def test_a_bad_initial_log_variance_is_named():
    with pytest.raises(TypeError, match="option 'initial_log_variance' of method 'uncertainty' must be a number"):
        build_method("uncertainty", ["gray", "color"], initial_log_variance="big")
    assert math.isclose(build_method("uncertainty", initial_log_variance=-1).initial_log_variance, -1.0)
