"""Unimodal pre-training then multimodal fine-tuning (chapter 1): which loss reaches which
parameters in each stage, the stage switch, resume."""

import pytest
import torch
import torch.nn.functional as F

from conftest import straight_and_resumed, without_timing
from mmlab.data.registry import get_dataset
from mmlab.methods import TrainState, build_method
from mmlab.models import build_model


def _setup(epoch, num_epochs=4, **options):
    torch.manual_seed(0)
    model = build_model(get_dataset("cgmnist"), ["gray", "color"], unimodal_heads=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    state = TrainState(model=model, groups=model.parameter_groups(), optimizer=optimizer,
                       device=torch.device("cpu"), num_epochs=num_epochs, steps_per_epoch=1, epoch=epoch)
    method = build_method("pretrain_finetune", **options)
    method.setup(state)
    inputs = {"gray": torch.rand(8, 1, 28, 28), "color": torch.rand(8, 3, 28, 28)}
    labels = torch.arange(8) % 10
    return model, method, state, inputs, labels


def _grads(loss, params):
    return [torch.zeros_like(p) if g is None else g
            for p, g in zip(params, torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True))]


def _assert_same(a, b):
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y)


def test_pretraining_trains_each_modality_alone_and_leaves_the_fused_head():
    model, method, state, inputs, labels = _setup(epoch=1)  # of 4: epochs 0 and 1 pre-train
    groups = model.parameter_groups()
    out = model(inputs)
    total = method.total_loss(method.losses(out, labels, state), state)
    assert all(g.abs().sum() == 0 for g in _grads(total, groups.fusion))
    for m in ("gray", "color"):
        alone = F.cross_entropy(model.unimodal_heads[m](model.encoders[m](inputs[m])), labels)
        _assert_same(_grads(total, groups.encoders[m] + groups.heads[m]),
                     _grads(alone, groups.encoders[m] + groups.heads[m]))
    # the other modality's input does not change a modality's gradient
    other = dict(inputs, color=torch.rand(8, 3, 28, 28))
    total_other = method.total_loss(method.losses(model(other), labels, state), state)
    _assert_same(_grads(total, groups.encoders["gray"]), _grads(total_other, groups.encoders["gray"]))


def test_fine_tuning_trains_the_encoders_by_the_fused_loss_and_the_heads_on_detached_features():
    model, method, state, inputs, labels = _setup(epoch=2)
    groups = model.parameter_groups()
    out = model(inputs)
    losses = method.losses(out, labels, state)
    total = method.total_loss(losses, state)
    fused = F.cross_entropy(out.logits, labels)
    encoders = [p for m in ("gray", "color") for p in groups.encoders[m]]
    _assert_same(_grads(total, encoders + groups.fusion), _grads(fused, encoders + groups.fusion))
    for m in ("gray", "color"):
        probe = F.cross_entropy(model.unimodal_heads[m](out.features[m].detach()), labels)
        assert losses[f"unimodal/{m}"].item() == pytest.approx(probe.item())
        head_grads = _grads(total, groups.heads[m])
        _assert_same(head_grads, _grads(probe, groups.heads[m]))
        assert any(g.abs().sum() > 0 for g in head_grads)


def test_the_fine_tuning_starts_with_no_momentum_and_the_stages_are_logged():
    model, method, state, inputs, labels = _setup(epoch=0, pretrain_epochs=1)
    out = model(inputs)
    method.total_loss(method.losses(out, labels, state), state).backward()
    state.optimizer.step()
    assert state.optimizer.state  # momentum buffers exist
    assert method.on_epoch_end(state, None) == {"train/pretraining": 1.0}
    state.epoch = 1
    method.on_epoch_start(state)
    assert not state.optimizer.state
    assert method.on_epoch_end(state, None) == {"train/pretraining": 0.0}
    state.optimizer.step()  # no gradients were cleared: the optimiser builds new buffers
    state.epoch = 2
    method.on_epoch_start(state)
    assert state.optimizer.state  # kept after the switch


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2"])
def test_bad_stage_lengths_are_refused(bad):
    with pytest.raises(ValueError, match="pretrain_epochs"):
        build_method("pretrain_finetune", pretrain_epochs=bad)


def test_a_stage_length_that_leaves_no_fine_tuning_is_refused_with_the_run_length():
    with pytest.raises(ValueError, match="4-epoch run"):
        _setup(epoch=0, num_epochs=4, pretrain_epochs=4)
    with pytest.raises(ValueError, match="1-epoch run"):
        _setup(epoch=0, num_epochs=1)  # half of one epoch is none


def test_trains_through_the_loop_and_resumes_across_the_stage_switch(tiny_config, tmp_path):
    config = tiny_config("pretrain_finetune", epochs=3, method_options={"pretrain_epochs": 1})
    straight, resumed = straight_and_resumed(config, tmp_path)  # the crash comes after the pre-training
    history = straight["history"]
    assert [h["train/pretraining"] for h in history] == [1.0, 0.0, 0.0]
    assert without_timing(resumed["history"]) == without_timing(history)


@pytest.mark.parametrize("profile", ["smoke", "quick", "full"])
def test_every_profile_of_the_cremad_reproduction_has_room_for_both_stages(profile):
    from mmlab.reproduction import reproduction_configs

    (config,) = reproduction_configs("cremad", profile, seeds=[0], methods=["pretrain_finetune"])
    _setup(epoch=0, num_epochs=config.epochs)  # would refuse a run too short for two stages
