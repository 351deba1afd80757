"""MBSD (after Liu et al., WSDM 2023; chapter 6, the rule as in BalanceBenchmark): the confidence-gap weights, the
share regression, the released label term (and how it differs from a KL divergence), the loss, resume."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import straight_and_resumed, without_timing
from mmlab.data.registry import get_dataset
from mmlab.methods import TrainState, build_method
from mmlab.methods.mbsd import distillation_weights, label_kl_as_released, share_regression
from mmlab.models import build_model

SPEC = get_dataset("cgmnist")
MODALITIES = list(SPEC.modalities)


def test_the_weights_are_the_label_probability_gap_where_one_modality_is_right():
    labels = torch.tensor([0, 0, 1])
    pa = torch.tensor([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.5, 0.3, 0.2]])  # right, wrong, wrong
    pb = torch.tensor([[0.4, 0.5, 0.1], [0.3, 0.6, 0.1], [0.1, 0.8, 0.1]])  # wrong, wrong, right
    w = distillation_weights(pa, pb, labels)
    assert w.tolist() == pytest.approx([0.3, 0.0, 0.5])  # the second sample: both wrong, no distillation


def test_the_regression_is_the_mean_squared_logit_difference():
    a, b = torch.randn(5, 10), torch.randn(5, 10)
    assert torch.allclose(share_regression(a, b), ((a - b) ** 2).sum(1) / 10)


def test_the_released_label_term_is_q_log_q_minus_p_not_a_kl_divergence():
    labels = torch.tensor([0, 0])
    pa = torch.tensor([[0.9, 0.1], [0.3, 0.7]])
    pb = torch.tensor([[0.6, 0.4], [0.8, 0.2]])
    term = label_kl_as_released(pa, pb, labels)
    strong, weak = torch.tensor([0.9, 0.8]), torch.tensor([0.6, 0.3])
    assert torch.allclose(term, weak * (weak.log() - strong))
    kl = weak * (weak / strong).log()  # what KL(q || p) of the two label probabilities would be
    assert not torch.allclose(term, kl)


def test_the_loss_is_the_cross_entropies_plus_the_weighted_pair_terms():
    method = build_method("mbsd", MODALITIES)
    torch.manual_seed(0)
    model = build_model(SPEC, MODALITIES, method.needs_unimodal_heads)
    state = TrainState(model=model, groups=model.parameter_groups(),
                       optimizer=torch.optim.SGD(model.parameters(), 0.1), device=torch.device("cpu"),
                       num_epochs=1, steps_per_epoch=1)
    inputs = {"gray": torch.rand(16, 1, 28, 28), "color": torch.rand(16, 3, 28, 28)}
    labels = torch.randint(0, 10, (16,))
    output = model(inputs)
    losses = method.losses(output, labels, state)
    assert set(losses) == {"multimodal", "share/gray", "share/color", "regression", "label_kl"}
    sa, sb = output.shares["gray"], output.shares["color"]
    pa, pb = torch.softmax(sa, 1), torch.softmax(sb, 1)
    w = distillation_weights(pa, pb, labels)
    assert losses["regression"].item() == pytest.approx((w * share_regression(sa, sb)).mean().item(), rel=1e-5)
    total = method.total_loss(losses, state)
    expected = (F.cross_entropy(output.logits, labels) + F.cross_entropy(sa, labels) + F.cross_entropy(sb, labels)
                + (w * share_regression(sa, sb)).mean() + (w * label_kl_as_released(pa, pb, labels)).mean())
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)
    # detach_weights: the same value, but no gradient through the weights
    detached = build_method("mbsd", MODALITIES, detach_weights=True).losses(output, labels, state)
    assert detached["regression"].item() == pytest.approx(losses["regression"].item(), rel=1e-6)


def test_an_mbsd_run_resumes_to_the_same_record(tiny_config, tmp_path):
    config = tiny_config("mbsd", epochs=3)
    straight, resumed = straight_and_resumed(config, tmp_path)
    assert without_timing(straight["history"]) == without_timing(resumed["history"])
    assert "train/loss/regression" in straight["history"][-1]
