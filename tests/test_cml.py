"""CML (Ma et al., ICML 2023; chapter 4): the confidence penalty, the removed prediction, the loss it trains, the
removal order (random per epoch, from the run's generator) and resume."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import straight_and_resumed, without_timing
from mmlab.data.registry import get_dataset
from mmlab.methods import TrainState, build_method
from mmlab.methods.cml import confidence, confidence_penalty
from mmlab.models import build_model

SPEC = get_dataset("cgmnist")
MODALITIES = list(SPEC.modalities)


@settings(max_examples=50, deadline=None)
@given(st.integers(2, 20), st.integers(2, 12), st.integers(0, 10_000))
def test_the_penalty_is_the_clipped_batch_sum_of_the_excess_confidence(batch, classes, seed):
    gen = torch.Generator().manual_seed(seed)
    full, reduced = torch.randn(batch, classes, generator=gen) * 3, torch.randn(batch, classes, generator=gen) * 3
    excess = (torch.softmax(reduced, 1).max(1).values - torch.softmax(full, 1).max(1).values).sum()
    assert float(confidence_penalty(full, reduced)) == pytest.approx(max(0.0, float(excess)), abs=1e-6)
    assert float(confidence_penalty(full, full)) == 0.0
    c = confidence(full)
    assert torch.all(c >= 1.0 / classes - 1e-6) and torch.all(c <= 1.0)


def test_a_more_confident_removed_prediction_is_pushed_down_and_the_full_one_up():
    full = torch.tensor([[1.0, 0.0, 0.0]], requires_grad=True)
    reduced = torch.tensor([[4.0, 0.0, 0.0]], requires_grad=True)  # more confident without a modality
    confidence_penalty(full, reduced).backward()
    assert reduced.grad[0, 0] > 0 and full.grad[0, 0] < 0  # descent lowers the reduced peak, raises the full one


def _setup(method):
    torch.manual_seed(0)
    model = build_model(SPEC, MODALITIES, method.needs_unimodal_heads)
    generator = torch.Generator().manual_seed(3)
    state = TrainState(model=model, groups=model.parameter_groups(),
                       optimizer=torch.optim.SGD(model.parameters(), 0.1), device=torch.device("cpu"),
                       num_epochs=3, steps_per_epoch=1, generator=generator)
    return model, state


def test_the_losses_are_the_fused_and_the_removed_prediction_and_the_penalty():
    method = build_method("cml", MODALITIES, lam=0.5)
    model, state = _setup(method)
    method.on_epoch_start(state)
    (removed,) = method.removal_order  # two modalities: one is removed, the other kept
    torch.manual_seed(1)
    inputs = {"gray": torch.rand(8, 1, 28, 28), "color": torch.rand(8, 3, 28, 28)}
    labels = torch.randint(0, 10, (8,))
    output = model(inputs)
    losses = method.losses(output, labels, state)
    assert set(losses) == {"multimodal", f"without/{removed}", "confidence"}
    kept = {m: z if m != removed else torch.zeros_like(z) for m, z in output.features.items()}
    reduced = model.fusion(kept)
    # under late fusion, zeroing a modality's features removes exactly its share (the bias stays)
    bias = model.fusion.linear.bias
    assert torch.allclose(reduced, output.logits - output.shares[removed] + bias / len(MODALITIES), atol=1e-5)
    assert losses[f"without/{removed}"].item() == pytest.approx(F.cross_entropy(reduced, labels).item(), rel=1e-5)
    total = method.total_loss(losses, state)
    expected = (losses["multimodal"] + losses[f"without/{removed}"]) / 2 + 0.5 * confidence_penalty(output.logits,
                                                                                                      reduced)
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)


def _removed_over_epochs(epochs=40):
    method = build_method("cml", MODALITIES)
    _, state = _setup(method)
    removed = []
    for _ in range(epochs):
        method.on_epoch_start(state)
        removed.append(method.removal_order[0])
    return removed


def test_the_removal_order_is_drawn_from_the_runs_generator_each_epoch():
    drawn = _removed_over_epochs()
    assert set(drawn) == set(MODALITIES)  # both are removed in some epochs
    assert _removed_over_epochs() == drawn  # the same generator state, the same orders


def test_a_cml_run_resumes_to_the_same_record(tiny_config, tmp_path):
    config = tiny_config("cml", epochs=3)
    straight, resumed = straight_and_resumed(config, tmp_path)
    assert without_timing(straight["history"]) == without_timing(resumed["history"])
    assert "train/loss/confidence" in straight["history"][-1]


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="lam"):
        build_method("cml", MODALITIES, lam=-0.1)
