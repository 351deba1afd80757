"""MSLR (Yao & Mihalcea, Findings of ACL 2022; chapter 2, the strategies as the book reads them): keep's scales from
unimodal runs, dynamic's factor, the rates each encoder trains with, that they really set how far an encoder moves,
resume, the joint loss bit for bit at scales 1, and bad options."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import straight_and_resumed, without_timing
from mmlab.config import method_label
from mmlab.data.registry import get_dataset
from mmlab.errors import UnknownNameError
from mmlab.methods import TrainState, build_method
from mmlab.methods.mslr import dynamic_rate_ratio, unimodal_learning_rate_scales
from mmlab.models import build_model
from mmlab.training import train
from mmlab.training.loop import _optimizer_groups

SPEC = get_dataset("cgmnist")
MODALITIES = list(SPEC.modalities)


def test_keep_takes_each_modalitys_best_unimodal_rate():
    accuracy = {"gray": {0.1: 0.50, 1.0: 0.81, 10.0: 0.90}, "color": {0.1: 0.40, 1.0: 0.40, 10.0: 0.12}}
    # gray is best at the largest rate; colour's two best tie, and the smaller rate is taken
    assert unimodal_learning_rate_scales(accuracy) == {"gray": 10.0, "color": 0.1}
    with pytest.raises(ValueError, match="no unimodal run of 'gray'"):
        unimodal_learning_rate_scales({"gray": {}})


def test_the_dynamic_factor_is_the_last_accuracy_over_the_windows_mean():
    assert dynamic_rate_ratio([0.2, 0.4, 0.6]) == pytest.approx(0.6 / 0.4)
    assert dynamic_rate_ratio([0.6, 0.4, 0.2]) == pytest.approx(0.2 / 0.4)
    assert dynamic_rate_ratio([0.0, 0.0]) == 1.0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=2, max_size=8))
def test_the_dynamic_factor_speeds_up_an_improving_modality_and_slows_a_declining_one(accuracies):
    ratio = dynamic_rate_ratio(accuracies)
    mean = sum(accuracies) / len(accuracies)
    if mean > 0:
        assert ratio * mean == pytest.approx(accuracies[-1], abs=1e-12)
        if accuracies[-1] > mean + 1e-9:  # the last epoch above the window's mean: the rate grows
            assert ratio > 1
        if accuracies[-1] < mean - 1e-9:  # below it: the rate shrinks
            assert ratio < 1
    assert dynamic_rate_ratio([accuracies[0]] * len(accuracies)) == pytest.approx(1.0)


def _state(method, lr=0.1):
    torch.manual_seed(0)
    model = build_model(SPEC, MODALITIES, method.needs_unimodal_heads)
    groups = model.parameter_groups()
    optimizer = torch.optim.SGD(_optimizer_groups(model, groups, method), lr=lr, momentum=0.9)
    state = TrainState(model=model, groups=groups, optimizer=optimizer, device=torch.device("cpu"),
                       num_epochs=6, steps_per_epoch=1)
    method.setup(state)
    return state


def test_keep_sets_each_encoders_rate_once_and_never_measures():
    method = build_method("mslr", MODALITIES, strategy="keep", learning_rate_scales={"gray": 10.0, "color": 0.5})
    state = _state(method)
    assert state.param_group("encoder/gray")["lr"] == pytest.approx(1.0)
    assert state.param_group("encoder/color")["lr"] == pytest.approx(0.05)
    assert state.param_group("shared")["lr"] == pytest.approx(0.1)  # fusion keeps the base rate

    def evaluate(split):
        raise AssertionError("keep evaluates nothing")

    for state.epoch in range(4):
        logs = method.on_epoch_end(state, evaluate)
        assert logs == {"train/mslr_learning_rate_scale/gray": pytest.approx(10.0),
                        "train/mslr_learning_rate_scale/color": pytest.approx(0.5)}


def test_dynamic_scales_each_rate_every_n_epochs_by_its_modalitys_progress():
    method = build_method("mslr", MODALITIES, strategy="dynamic", history_length=2)
    state = _state(method)
    accuracies = {"gray": [0.2, 0.6, 0.6, 0.9], "color": [0.5, 0.3, 0.3, 0.3]}  # share accuracies per epoch
    seen = []

    def evaluate(split):
        seen.append(split)
        return {f"val/share_acc/{m}": a[state.epoch] for m, a in accuracies.items()}

    rates = []
    for state.epoch in range(4):
        method.on_epoch_end(state, evaluate)
        rates.append({m: state.param_group(f"encoder/{m}")["lr"] for m in MODALITIES})
    assert seen == ["val"] * 4
    # after epoch 1 (nothing yet), epoch 2 (over the window [0.2, 0.6] and [0.5, 0.3]), 3, 4 ([0.6, 0.9], [0.3, 0.3])
    assert rates[0] == {"gray": pytest.approx(0.1), "color": pytest.approx(0.1)}
    assert rates[1] == {"gray": pytest.approx(0.1 * 0.6 / 0.4), "color": pytest.approx(0.1 * 0.3 / 0.4)}
    assert rates[2] == rates[1]
    assert rates[3] == {"gray": pytest.approx(0.15 * 0.9 / 0.75), "color": pytest.approx(0.075)}
    assert state.param_group("shared")["lr"] == pytest.approx(0.1)


def test_an_encoder_at_scale_zero_never_moves_the_other_does(tiny_config, tmp_path):
    # SGD's step, momentum and weight decay all scale with lr: at scale 0 the colour encoder stays where it started
    config = tiny_config("mslr", method_options={"strategy": "keep", "learning_rate_scales": {"color": 0.0}})
    method = build_method("mslr", MODALITIES, **config.method_options)
    models, initial = [], []
    setup = method.setup

    def setup_and_snapshot(state):
        setup(state)
        models.append(state.model)
        initial.append({k: v.detach().clone() for k, v in state.model.state_dict().items()
                        if v.is_floating_point() and "running" not in k})  # BatchNorm's statistics move anyway

    method.setup = setup_and_snapshot
    record = train(config, method=method, checkpoint_dir=tmp_path, progress=False)
    before, after = initial[0], models[0].state_dict()
    for m in MODALITIES:
        moved = any(not torch.equal(before[k], after[k]) for k in before if k.startswith(f"encoders.{m}."))
        assert moved == (m != "color"), m
    assert all(e["train/mslr_learning_rate_scale/color"] == 0.0 for e in record["history"])


def test_a_dynamic_run_resumes_to_the_same_record(tiny_config, tmp_path):
    config = tiny_config("mslr", epochs=4, lr=0.05, method_options={"history_length": 2})
    straight, resumed = straight_and_resumed(config, tmp_path)
    assert without_timing(straight["history"]) == without_timing(resumed["history"])
    scales = [e[f"train/mslr_learning_rate_scale/{m}"] for e in straight["history"] for m in MODALITIES]
    assert any(s != 1.0 for s in scales)  # the last epochs trained at adapted rates (restored on resume)


def test_keep_at_scales_one_is_the_joint_loss_bit_for_bit(tiny_config, tmp_path):
    # the per-encoder parameter groups, at equal rates, step every parameter exactly as the one group does
    mslr = train(tiny_config("mslr", method_options={"strategy": "keep"}), checkpoint_dir=tmp_path / "m",
                 progress=False)
    joint = train(tiny_config("joint"), checkpoint_dir=tmp_path / "j", progress=False)
    ours = [{k: v for k, v in e.items() if not k.startswith("train/mslr_")} for e in without_timing(mslr["history"])]
    assert ours == without_timing(joint["history"])


def test_a_mapping_option_reads_as_a_folder_name():
    assert method_label("mslr", {"strategy": "keep", "learning_rate_scales": {"gray": 10.0, "color": 0.1}}) == \
        "mslr-color0.1_gray10.0-keep"


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="smooth.*none of the book's sources"):
        build_method("mslr", MODALITIES, strategy="smooth")
    with pytest.raises(UnknownNameError, match="MSLR strategy"):
        build_method("mslr", MODALITIES, strategy="fast")
    with pytest.raises(ValueError, match="learning_rate_scales"):
        build_method("mslr", MODALITIES, learning_rate_scales={"gray": -1.0})
    with pytest.raises(ValueError, match="learning_rate_scales"):
        build_method("mslr", MODALITIES, learning_rate_scales={"gray": "fast"})
    with pytest.raises(ValueError, match="history_length"):
        build_method("mslr", MODALITIES, history_length=1)
    with pytest.raises(ValueError, match="measured_on"):
        build_method("mslr", MODALITIES, measured_on="test")
    with pytest.raises(UnknownNameError, match="learning_rate_scales"):
        build_method("mslr", MODALITIES, learning_rate_scales={"depth": 2.0})  # before any data loads
