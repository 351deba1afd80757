"""MILES (Guerra-Manzanares & Shamout, 2025; chapter 2, the rule as the book reads it): the conditional utilisation
rates from a split's metrics, which modality the rule slows, the loop's per-modality parameter groups (and that
every other method keeps its one group), a slowed encoder that really trains slower, and resume."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import straight_and_resumed, without_timing
from mmlab.data.registry import get_dataset
from mmlab.errors import UnknownNameError
from mmlab.methods import TrainState, build_method
from mmlab.methods.miles import conditional_utilization_rates, dominant_modality
from mmlab.models import build_model
from mmlab.training import train
from mmlab.training.loop import _optimizer_groups

SPEC = get_dataset("cgmnist")
MODALITIES = list(SPEC.modalities)


def test_the_rates_are_chapter_twos_conditional_utilization_rates():
    metrics = {"val/acc": 0.8, "val/acc/gray": 0.6, "val/acc/color": 0.2}
    rates = conditional_utilization_rates(metrics, "val", ["gray", "color"])
    # gray's rate is what the fused model gains over colour alone, and the other way round
    assert rates == {"gray": pytest.approx((0.8 - 0.2) / 0.8), "color": pytest.approx((0.8 - 0.6) / 0.8)}
    assert conditional_utilization_rates({**metrics, "val/acc": 0.0}, "val", ["gray", "color"]) is None
    with pytest.raises(ValueError, match="two modalities"):
        conditional_utilization_rates(metrics, "val", ["gray"])


@pytest.mark.parametrize("rates, threshold, slowed", [
    ({"a": 0.7, "b": 0.1}, 0.2, "a"),  # a gap above the threshold: the larger rate is slowed
    ({"a": 0.1, "b": 0.7}, 0.2, "b"),
    ({"a": 0.5, "b": 0.4}, 0.2, None),  # a gap below it: nothing changes
    ({"a": 0.6, "b": -0.3}, 0.2, "a"),  # one rate negative: the fused model leans on a
    ({"a": -0.1, "b": -0.6}, 0.2, None),  # both negative: the fused head is worse than either head
    ({"a": 0.3, "b": 0.1}, 0.2, None),  # a gap exactly at the threshold does not exceed it
])
def test_the_rule_slows_the_modality_the_fused_prediction_leans_on(rates, threshold, slowed):
    assert dominant_modality(rates, threshold) == slowed


@settings(max_examples=80, deadline=None)
@given(st.floats(-1, 1), st.floats(-1, 1), st.floats(0, 1))
def test_the_rule_is_symmetric_and_never_slows_the_smaller_rate(u_a, u_b, threshold):
    slowed = dominant_modality({"a": u_a, "b": u_b}, threshold)
    assert dominant_modality({"b": u_b, "a": u_a}, threshold) == slowed  # the order of the names is irrelevant
    if slowed is not None:
        assert abs(u_a - u_b) > threshold and max(u_a, u_b) >= 0
        assert {"a": u_a, "b": u_b}[slowed] == max(u_a, u_b)


def _state(method):
    torch.manual_seed(0)
    model = build_model(SPEC, MODALITIES, method.needs_unimodal_heads)
    groups = model.parameter_groups()
    optimizer = torch.optim.SGD(_optimizer_groups(model, groups, method), lr=0.1, momentum=0.9)
    return TrainState(model=model, groups=groups, optimizer=optimizer, device=torch.device("cpu"),
                      num_epochs=3, steps_per_epoch=1)


def test_the_optimiser_has_one_group_per_encoder_and_one_for_the_rest_each_parameter_once():
    method = build_method("miles", MODALITIES)
    state = _state(method)
    names = [g["name"] for g in state.optimizer.param_groups]
    assert names == [f"encoder/{m}" for m in state.groups.encoders] + ["shared"]
    grouped = [id(p) for g in state.optimizer.param_groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in state.model.parameters())  # each parameter exactly once
    for m in MODALITIES:
        assert {id(p) for p in state.param_group(f"encoder/{m}")["params"]} == {id(p) for p in state.groups.encoders[m]}
    with pytest.raises(UnknownNameError, match="parameter group"):
        state.param_group("encoder/depth")


def test_a_method_without_the_flag_keeps_one_group_of_model_parameters():
    method = build_method("uniform", MODALITIES)
    model = build_model(SPEC, MODALITIES, True)
    optimizer = torch.optim.SGD(_optimizer_groups(model, model.parameter_groups(), method), lr=0.1)
    assert len(optimizer.param_groups) == 1 and "name" not in optimizer.param_groups[0]
    assert [id(p) for p in optimizer.param_groups[0]["params"]] == [id(p) for p in model.parameters()]


def test_each_epoch_sets_the_next_epochs_rates_from_the_measured_split():
    method = build_method("miles", MODALITIES, threshold=0.2, reduction=0.25)
    state = _state(method)
    method.setup(state)
    seen = []

    def evaluate(split):
        seen.append(split)
        return {"val/acc": 0.8, "val/acc/gray": 0.75, "val/acc/color": 0.1}  # the fused model leans on gray

    logs = method.on_epoch_end(state, evaluate)
    assert seen == ["val"]
    # gray adds (0.8 - 0.1) / 0.8 beyond colour, colour (0.8 - 0.75) / 0.8 beyond gray: gray is slowed
    assert logs["train/miles_conditional_utilization_rate/gray"] == pytest.approx(0.7 / 0.8)
    assert logs["train/miles_conditional_utilization_rate/color"] == pytest.approx(0.05 / 0.8)
    assert state.param_group("encoder/gray")["lr"] == pytest.approx(0.1 * 0.25)
    assert state.param_group("encoder/color")["lr"] == pytest.approx(0.1)
    assert logs["train/miles_learning_rate_scale/gray"] == 1.0  # the epoch just trained ran at the base rate
    assert state.param_group("shared")["lr"] == pytest.approx(0.1)
    balanced = lambda split: {"val/acc": 0.8, "val/acc/gray": 0.7, "val/acc/color": 0.7}  # noqa: E731
    logs = method.on_epoch_end(state, balanced)
    assert all(state.param_group(f"encoder/{m}")["lr"] == pytest.approx(0.1) for m in MODALITIES)
    assert logs["train/miles_learning_rate_scale/gray"] == pytest.approx(0.25)  # what the second epoch trained with


def test_a_slowed_encoder_trains_at_its_reduced_rate_in_the_next_epoch(tiny_config, tmp_path):
    # reduction 0 stops the slowed encoder entirely (SGD's step, momentum and weight decay all scale with lr):
    # in an epoch after one whose rates named a modality, exactly one encoder moves, the other one
    config = tiny_config("miles", epochs=4, lr=0.05, method_options={"threshold": 0.0, "reduction": 0.0})
    method = build_method("miles", MODALITIES, threshold=0.0, reduction=0.0)
    models, snapshots = [], []
    setup = method.setup
    method.setup = lambda state: (models.append(state.model), setup(state))[-1]

    def keep(epoch, metrics):
        snapshots.append({k: v.detach().clone() for k, v in models[0].state_dict().items()
                          if v.is_floating_point() and "running" not in k})  # BatchNorm's statistics move anyway

    history = train(config, method=method, checkpoint_dir=tmp_path, progress=False, callbacks=[keep])["history"]
    checked = 0
    for before, (epoch, after) in zip(snapshots, enumerate(snapshots[1:], start=1)):
        rates = {m: history[epoch - 1][f"train/miles_conditional_utilization_rate/{m}"] for m in MODALITIES}
        slowed = dominant_modality(rates, 0.0)
        if slowed is None:
            continue
        checked += 1
        assert history[epoch][f"train/miles_learning_rate_scale/{slowed}"] == 0.0
        for m in MODALITIES:
            moved = any(not torch.equal(before[k], after[k]) for k in before if k.startswith(f"encoders.{m}."))
            assert moved == (m != slowed), (epoch, m)
    assert checked > 0


def test_a_miles_run_resumes_to_the_same_record(tiny_config, tmp_path):
    config = tiny_config("miles", epochs=3, method_options={"threshold": 0.0})
    straight, resumed = straight_and_resumed(config, tmp_path)
    assert without_timing(straight["history"]) == without_timing(resumed["history"])
    scales = [e[f"train/miles_learning_rate_scale/{m}"] for e in straight["history"] for m in MODALITIES]
    assert 0.5 in scales  # some epoch trained one encoder slower (the resumed run restored that from the optimiser)


def test_a_miles_run_that_never_slows_an_encoder_is_the_uniform_baseline_bit_for_bit(tiny_config, tmp_path):
    # the per-encoder parameter groups, at equal rates, step every parameter exactly as the one group does
    miles = train(tiny_config("miles", method_options={"threshold": 1e9}), checkpoint_dir=tmp_path / "m",
                  progress=False)
    uniform = train(tiny_config("uniform"), checkpoint_dir=tmp_path / "u", progress=False)
    ours = [{k: v for k, v in e.items() if not k.startswith("train/miles_")} for e in without_timing(miles["history"])]
    assert ours == without_timing(uniform["history"])


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="threshold"):
        build_method("miles", MODALITIES, threshold=-0.1)
    with pytest.raises(ValueError, match="reduction"):
        build_method("miles", MODALITIES, reduction=1.5)
    with pytest.raises(ValueError, match="measured_on"):
        build_method("miles", MODALITIES, measured_on="test")
