"""AMCo (Zhou et al., ICASSP 2023; chapter 3): the dependence measure, the mask ratio's schedule (and the step at
which BalanceBenchmark's schedule saturates), the mask, which modality is masked and when, and resume."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import straight_and_resumed, without_timing
from mmlab.data.registry import get_dataset
from mmlab.methods import TrainState, build_method
from mmlab.methods.amco import dependence, feature_mask, mask_ratio
from mmlab.models import build_model

SPEC = get_dataset("cgmnist")
MODALITIES = list(SPEC.modalities)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 16), st.integers(2, 10), st.integers(0, 10_000))
def test_the_dependences_are_the_blocks_of_one_softmax_and_sum_to_one(batch, classes, seed):
    gen = torch.Generator().manual_seed(seed)
    # every entry of b's block above every entry of a's: b holds most of the mass on every sample, whatever the draw
    shares = {"a": torch.rand(batch, classes, generator=gen), "b": 3 + torch.rand(batch, classes, generator=gen)}
    d = dependence(shares)
    assert float(d["a"] + d["b"]) == pytest.approx(1.0, abs=1e-6)
    joint = torch.softmax(torch.cat([shares["a"], shares["b"]], 1), 1)
    assert float(d["b"]) == pytest.approx(float(joint[:, classes:].sum(1).mean()), abs=1e-6)
    assert float(d["b"]) > 0.5  # the block with the larger logits holds most of the mass


def test_the_ratio_follows_the_sine_schedule_and_saturates_where_the_docstring_says():
    assert mask_ratio(100, epoch=0) == 0.0  # the first epoch never masks: l_t stays 0
    assert mask_ratio(1, epoch=1) == pytest.approx(math.sin(math.pi / 2 * 0.1 / 0.3))
    for epoch in (1, 2, 3, 7):
        saturated = math.ceil(round(0.3 / (0.1 * epoch), 9))  # ceil(eps / (ramp * epoch)) steps
        assert mask_ratio(saturated, epoch) == pytest.approx(1.0)
        assert saturated == 0 or mask_ratio(saturated - 1, epoch) < 1.0
    ratios = [mask_ratio(k, epoch=1, ramp=0.001) for k in range(400)]
    assert all(b >= a for a, b in zip(ratios, ratios[1:]))  # a slower ramp rises monotonically


def test_the_mask_zeroes_its_share_of_units_and_rescales_the_rest():
    gen = torch.Generator().manual_seed(0)
    mask = feature_mask(512, 0.25, gen)
    assert int((mask == 0).sum()) == 128 and torch.allclose(mask[mask > 0], torch.tensor(1 / 0.75))
    full = feature_mask(512, 1.0, gen)
    assert torch.all(full == 0)  # at the saturated ratio every unit is masked (and "times 10" leaves zeros)
    assert torch.all(feature_mask(512, 0.0, gen) == 1)


def _setup():
    torch.manual_seed(0)
    model = build_model(SPEC, MODALITIES, False)
    state = TrainState(model=model, groups=model.parameter_groups(),
                       optimizer=torch.optim.SGD(model.parameters(), 0.1), device=torch.device("cpu"),
                       num_epochs=3, steps_per_epoch=1, generator=torch.Generator().manual_seed(1))
    return model, state


def test_the_dependent_modality_is_found_after_a_step_and_masked_from_the_next():
    method = build_method("amco", MODALITIES, sigma=0.5)
    model, state = _setup()
    state.epoch = 1
    method.on_epoch_start(state)
    features = {"gray": torch.ones(4, 512), "color": torch.ones(4, 512)}
    assert method.intervene(features, state) is features  # nothing is dependent yet
    shares = {"gray": torch.zeros(4, 10), "color": torch.full((4, 10), 5.0)}  # the colour holds the mass
    method.last_dependence = dependence(shares)
    method.on_step_end(state)
    assert method.dependent == "color"
    for _ in range(5):  # p_t reaches 1 after three steps of epoch 1
        method.on_step_end(state)
    masked = method.intervene(features, state)
    assert torch.all(masked["color"] == 0) and torch.equal(masked["gray"], features["gray"])
    method.on_epoch_start(state)
    assert method.dependent is None  # a new epoch starts without a dependent modality


def test_the_losses_are_the_fused_and_each_shares_cross_entropy():
    method = build_method("amco", MODALITIES)
    model, state = _setup()
    torch.manual_seed(2)
    inputs = {"gray": torch.rand(8, 1, 28, 28), "color": torch.rand(8, 3, 28, 28)}
    labels = torch.randint(0, 10, (8,))
    output = model(inputs)
    losses = method.losses(output, labels, state)
    assert set(losses) == {"multimodal", "share/gray", "share/color"}
    assert losses["share/gray"].item() == pytest.approx(
        torch.nn.functional.cross_entropy(output.shares["gray"], labels).item(), rel=1e-6)


def test_an_amco_run_resumes_to_the_same_record(tiny_config, tmp_path):
    config = tiny_config("amco", epochs=3)
    straight, resumed = straight_and_resumed(config, tmp_path)
    assert without_timing(straight["history"]) == without_timing(resumed["history"])
    assert straight["history"][0]["train/amco/mask_ratio"] == 0.0  # epoch 1 never masks


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="sigma"):
        build_method("amco", MODALITIES, sigma=0.0)
    with pytest.raises(ValueError, match="eps"):
        build_method("amco", MODALITIES, eps=0.0)
    with pytest.raises(ValueError, match="ramp"):
        build_method("amco", MODALITIES, ramp=-1.0)
