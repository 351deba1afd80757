"""UDI's building blocks (mmlab.methods.udi) against closed forms, simulation and autograd: the Jensen-Shannon
consistency loss, the CLUB mutual-information bound, the gradient-aligned dynamic controller."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmlab.errors import UnknownNameError
from mmlab.methods.udi import CLUBEstimator, dynamic_loss_weights, js_divergence

logits = st.lists(st.floats(-20, 20), min_size=2, max_size=6)


# -- Jensen-Shannon ------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_js_is_symmetric_non_negative_at_most_log2_and_zero_for_equal_distributions(data):
    k = data.draw(st.integers(2, 6))
    a = torch.tensor(data.draw(st.lists(st.floats(-20, 20), min_size=k, max_size=k)), dtype=torch.float64)[None]
    b = torch.tensor(data.draw(st.lists(st.floats(-20, 20), min_size=k, max_size=k)), dtype=torch.float64)[None]
    js = js_divergence(a, b)
    assert torch.isfinite(js)
    assert math.isclose(js.item(), js_divergence(b, a).item(), abs_tol=1e-12)
    assert -1e-12 <= js.item() <= math.log(2) + 1e-12
    assert abs(js_divergence(a, a).item()) < 1e-12
    assert abs(js_divergence(a, a + 3.0).item()) < 1e-12  # softmax is shift-invariant: the same distributions


def test_js_reaches_log2_for_disjoint_distributions_and_matches_its_definition():
    far = torch.tensor([[60.0, 0.0, 0.0]]), torch.tensor([[0.0, 60.0, 0.0]])
    assert math.isclose(js_divergence(*far).item(), math.log(2), rel_tol=1e-6)
    p, q = torch.tensor([[0.7, 0.2, 0.1]]), torch.tensor([[0.1, 0.3, 0.6]])
    m = (p + q) / 2
    expected = 0.5 * (p * (p / m).log()).sum() + 0.5 * (q * (q / m).log()).sum()
    assert math.isclose(js_divergence(p.log(), q.log()).item(), expected.item(), rel_tol=1e-6)


def test_js_gradient_equals_the_closed_form():
    """dJS/dq_i = log(q_i / m_i) / 2, carried through the softmax: dJS/dz_j = q_j (g_j - sum_i q_i g_i)."""
    torch.manual_seed(0)
    anchor = torch.randn(5, 4, dtype=torch.float64)
    follower = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    js_divergence(anchor, follower).backward()
    p, q = anchor.softmax(-1), follower.detach().softmax(-1)
    g = 0.5 * (q / ((p + q) / 2)).log()
    closed = q * (g - (q * g).sum(-1, keepdim=True)) / len(anchor)  # the mean over the batch
    assert torch.allclose(follower.grad, closed, atol=1e-12)


# -- CLUB -----------------------------------------------------------------------------------------
def gaussian_pairs(rho: float, n: int, d: int, seed: int = 0):
    """x ~ N(0, I_d), y = rho x + sqrt(1 - rho^2) e: mutual information -(d/2) log(1 - rho^2)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = rho * x + math.sqrt(1 - rho ** 2) * torch.randn(n, d, generator=g)
    return x, y


def true_mi(rho: float, d: int) -> float:
    return -0.5 * d * math.log(1 - rho ** 2)


@pytest.mark.parametrize("rho", [0.0, 0.3, 0.6, 0.9])
def test_with_the_true_conditional_club_is_an_upper_bound_of_the_mutual_information(rho):
    """With q = p(y|x) = N(rho x, 1 - rho^2), CLUB's expectation is d rho^2 / (1 - rho^2) >= -(d/2) log(1 - rho^2)."""
    d, n = 4, 200_000
    x, y = gaussian_pairs(rho, n, d)
    variance = 1 - rho ** 2
    positive = -((y - rho * x) ** 2).sum(-1) / (2 * variance)
    # all pairs: E_j (y_j - rho x_i)^2 per dimension, in closed form over the batch's y (as CLUBEstimator does)
    negative = -((y ** 2).mean(0) - 2 * rho * x * y.mean(0) + (rho * x) ** 2).sum(-1) / (2 * variance)
    club = (positive - negative).mean().item()
    closed = d * rho ** 2 / variance
    assert abs(club - closed) < 0.02 * max(closed, 1.0)  # the estimate is its expectation, up to sampling
    assert club >= true_mi(rho, d) - 0.01


def trained_club(rho: float, d: int = 2, steps: int = 300, seed: int = 0) -> float:
    torch.manual_seed(seed)
    club = CLUBEstimator(d, d, hidden=32)
    optimiser = torch.optim.Adam(club.parameters(), lr=1e-2)
    for step in range(steps):
        x, y = gaussian_pairs(rho, 128, d, seed=seed * 10_000 + step)
        optimiser.zero_grad()
        club.learning_loss(x, y).backward()
        optimiser.step()
    x, y = gaussian_pairs(rho, 5_000, d, seed=seed + 99)
    with torch.no_grad():
        return club.mutual_information(x, y).item()


def test_a_trained_estimator_tracks_the_mutual_information_and_vanishes_for_independent_pairs():
    torch.set_num_threads(1)
    rhos = [0.0, 0.3, 0.5, 0.7]
    estimates = [trained_club(r) for r in rhos]
    assert abs(estimates[0]) < 0.05  # independent pairs: about 0
    assert all(a < b for a, b in zip(estimates, estimates[1:]))  # grows with the dependence
    for rho, estimate in zip(rhos[1:], estimates[1:]):
        # near the true value, and no higher than the bound of the true conditional (d rho^2 / (1 - rho^2))
        assert 0.5 * true_mi(rho, 2) < estimate < 1.2 * 2 * rho ** 2 / (1 - rho ** 2), (rho, estimate)


def test_the_follower_lowers_the_bound_by_moving_its_features_and_the_estimator_never_touches_them():
    torch.manual_seed(1)
    club = CLUBEstimator(3, 3, hidden=16)
    x, _ = gaussian_pairs(0.0, 64, 3)
    y = (0.8 * x + 0.1 * torch.randn(64, 3)).requires_grad_(True)
    club.learning_loss(x, y.detach()).backward()  # the estimator's own step reads detached features
    assert y.grad is None
    assert all(p.grad is not None for p in club.parameters())


# -- the dynamic controller -----------------------------------------------------------------------
vectors = st.lists(st.floats(-5, 5), min_size=3, max_size=3)


@settings(max_examples=100, deadline=None)
@given(g=vectors, a=vectors, b=vectors)
def test_controller_weights_are_non_negative_and_sum_to_one_or_are_all_zero(g, a, b):
    f64 = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731 -- the same numbers as the reference below
    weights = dynamic_loss_weights([f64(g)], [[f64(a)], [f64(b)]])
    dots = [sum(x * y for x, y in zip(g, v)) for v in (a, b)]
    assert (weights >= 0).all()
    if max(dots) > 1e-9:
        assert math.isclose(weights.sum().item(), 1.0, rel_tol=1e-9)
        for w, dot in zip(weights.tolist(), dots):
            assert math.isclose(w, max(dot, 0) / sum(max(x, 0) for x in dots), rel_tol=1e-6, abs_tol=1e-12)
    elif max(dots) <= 0:
        assert weights.tolist() == [0.0, 0.0]


def test_an_anti_aligned_loss_gets_no_weight_across_several_parameter_tensors():
    cls = [torch.tensor([1.0, 0.0]), torch.tensor([[2.0]])]
    aligned = [torch.tensor([0.5, 3.0]), torch.tensor([[1.0]])]  # <g_cls, .> = 0.5 + 2 = 2.5
    opposed = [torch.tensor([-1.0, 0.0]), torch.tensor([[-1.0]])]  # -1 - 2 = -3
    assert dynamic_loss_weights(cls, [aligned, opposed]).tolist() == [1.0, 0.0]
    assert dynamic_loss_weights(cls, [opposed, opposed]).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="an auxiliary gradient has 1 tensors"):
        dynamic_loss_weights(cls, [[torch.tensor([1.0, 0.0])]])


# -- the method, through the loop's hooks -----------------------------------------------------------
import copy
import json
import shutil
from pathlib import Path

from conftest import straight_and_resumed, without_timing
from mmlab.methods import build_method
from mmlab.training import train


def udi_config(tiny_config, **options):
    return tiny_config("udi", epochs=3, train_size=512, method_options={"anchor_epochs": 1, **options})


def test_udi_refuses_bad_options_and_a_modality_that_is_not_there():
    with pytest.raises(UnknownNameError, match="Unknown udi controller 'always'. Valid udi controllers: epoch, static, step"):
        build_method("udi", ["gray", "color"], controller="always")
    with pytest.raises(UnknownNameError, match="Unknown anchor modality 'audio'"):
        build_method("udi", ["gray", "color"], anchor="audio")
    with pytest.raises(ValueError, match="anchor_epochs must be a whole number"):
        build_method("udi", ["gray", "color"], anchor_epochs=0)


def test_the_anchor_is_frozen_in_stage_two_and_the_estimator_s_optimiser_never_holds_a_model_parameter(
        tiny_config, tmp_path):
    """Stage 1 is epoch 1; the anchor (gray, named) must then keep its parameters and BatchNorm statistics to the
    last bit, while the follower moves; CLUB's optimiser holds CLUB's parameters only."""
    config = udi_config(tiny_config, anchor="gray")
    snapshots = {}

    def keep(epoch, metrics):
        ckpt = torch.load(tmp_path / "ckpt" / f"{config.key}.pt", weights_only=False)
        snapshots[epoch] = copy.deepcopy(ckpt["model"])

    method = build_method("udi", ["gray", "color"], **config.method_options)
    record = train(config, method=method, checkpoint_dir=tmp_path / "ckpt", progress=False, callbacks=[keep])
    after_anchor, last = snapshots[0], snapshots[2]
    anchor_keys = [k for k in last if k.startswith(("encoders.gray.", "unimodal_heads.gray."))]
    follower_keys = [k for k in last if k.startswith("encoders.color.") and last[k].is_floating_point()]
    assert anchor_keys and all(torch.equal(after_anchor[k], last[k]) for k in anchor_keys)
    assert any(not torch.equal(after_anchor[k], last[k]) for k in follower_keys)
    model_ids = set()  # the estimator is no part of the model, and its optimiser steps only its own parameters
    estimator_ids = {id(p) for p in method.estimator.parameters()}
    held = {id(p) for group in method.estimator_optimizer.param_groups for p in group["params"]}
    assert held == estimator_ids and not held & model_ids
    history = record["history"]
    assert [h["train/udi/anchor_stage"] for h in history] == [1.0, 0.0, 0.0]
    assert [h["train/udi/anchor/gray"] for h in history] == [1.0, 1.0, 1.0]
    assert history[1]["val/acc/gray"] == history[2]["val/acc/gray"]  # a frozen anchor's head scores the same


def test_the_anchor_is_the_modality_best_on_validation_and_a_training_like_validation_picks_the_shortcut(tiny_config,
                                                                                                        tmp_path):
    # the first protocol's validation split, coloured like its test set (colour independent of the digit): the
    # colour encoder scores at chance there, so gray is picked even after one epoch on 512 images
    first_protocol = udi_config(tiny_config).with_(dataset_options={"protocol": "mmlab-1"})
    test_like = train(first_protocol, checkpoint_dir=tmp_path / "test-like", progress=False)
    assert test_like["history"][0]["val/acc/gray"] > test_like["history"][0]["val/acc/color"]
    assert test_like["history"][-1]["train/udi/anchor/gray"] == 1.0
    train_like = train(udi_config(tiny_config, anchor="auto").with_(dataset_options={"val_coloring": "train"}),
                       checkpoint_dir=tmp_path / "train-like", progress=False)
    first = train_like["history"][0]
    chosen = max(("gray", "color"), key=lambda m: first[f"val/acc/{m}"])
    assert train_like["history"][-1][f"train/udi/anchor/{chosen}"] == 1.0


def test_resuming_in_the_middle_of_stage_two_gives_the_same_run(tiny_config, tmp_path):
    config = udi_config(tiny_config)
    straight = train(config, checkpoint_dir=tmp_path / "straight", progress=False)

    def crash(epoch, metrics):
        if epoch == 1:  # the first follower epoch is done, the second not begun
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config, checkpoint_dir=tmp_path / "resumed", progress=False, callbacks=[crash])
    resumed = train(config, checkpoint_dir=tmp_path / "resumed", progress=False)
    assert without_timing(resumed["history"]) == without_timing(straight["history"])


@pytest.mark.parametrize("options, logged", [
    ({"controller": "static"}, {"consistency": 0.5, "complementarity": 0.5}),
    ({"controller": "static", "consistency": False}, {"complementarity": 0.5}),
    ({"controller": "static", "complementarity": False}, {"consistency": 0.5}),
])
def test_static_weights_and_the_ablations_train_the_losses_they_say(tiny_config, tmp_path, options, logged):
    record = train(udi_config(tiny_config, anchor="gray", **options), checkpoint_dir=tmp_path,
                   progress=False)  # colour follows
    last = record["history"][-1]
    weights = {k.rsplit("/", 1)[1]: v for k, v in last.items() if k.startswith("train/udi/alpha/")}
    assert weights == logged
    losses = {k.rsplit("/", 1)[1] for k in last if k.startswith("train/loss/")}
    assert losses == {"color", *logged}  # the follower's own cross-entropy and the terms kept


def test_the_dynamic_weights_are_logged_within_their_range(tiny_config, tmp_path):
    record = train(udi_config(tiny_config, controller="step"), checkpoint_dir=tmp_path, progress=False)
    for h in record["history"][1:]:
        con, com = h["train/udi/alpha/consistency"], h["train/udi/alpha/complementarity"]
        assert 0 <= con <= 1 and 0 <= com <= 1 and (con + com < 1e-9 or abs(con + com - 1) < 1e-9 or con + com < 1)


def test_udi_predicts_with_the_sum_of_the_two_heads():
    from mmlab.models import ModelOutput

    heads = {"gray": torch.tensor([[2.0, 0.0, 1.0]]), "color": torch.tensor([[-3.0, 1.0, 0.5]])}
    output = ModelOutput(features={}, logits=torch.zeros(1, 3), shares={}, unimodal_logits=heads)
    method = build_method("udi", ["gray", "color"])
    assert torch.equal(method.prediction(output), heads["gray"] + heads["color"])
    assert torch.equal(build_method("uniform").prediction(output), output.logits)  # every other method: the fused head
