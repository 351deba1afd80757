"""UME and UMT (Du et al., ICML 2023; chapter 6): the ensemble's prediction, the teachers' stage boundary, the
distillation, and resume."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import straight_and_resumed, without_timing
from mmlab.data.registry import get_dataset
from mmlab.methods import TrainState, build_method
from mmlab.methods.unimodal_teachers import ensemble_logits, feature_distillation
from mmlab.models import build_model

SPEC = get_dataset("cgmnist")
MODALITIES = list(SPEC.modalities)


def _model_and_state(method, epochs=4):
    torch.manual_seed(0)
    model = build_model(SPEC, MODALITIES, method.needs_unimodal_heads)
    state = TrainState(model=model, groups=model.parameter_groups(),
                       optimizer=torch.optim.SGD(model.parameters(), 0.1, momentum=0.9), device=torch.device("cpu"),
                       num_epochs=epochs, steps_per_epoch=1)
    method.setup(state)
    return model, state


def _batch():
    torch.manual_seed(1)
    return {"gray": torch.rand(8, 1, 28, 28), "color": torch.rand(8, 3, 28, 28)}, torch.randint(0, 10, (8,))


def test_ume_trains_each_modality_alone_and_predicts_with_the_sum_of_their_logits():
    method = build_method("ume", MODALITIES)
    model, state = _model_and_state(method)
    inputs, labels = _batch()
    output = model(inputs)
    losses = method.losses(output, labels, state)
    assert set(losses) == {"unimodal/gray", "unimodal/color"}  # no fused loss: the fused head is not trained
    total = method.total_loss(losses, state)
    assert all(g is None for g in torch.autograd.grad(total, state.groups.fusion, retain_graph=True,
                                                      allow_unused=True))
    # the gray loss reaches only the gray encoder and head: each modality trains as if alone
    gray = torch.autograd.grad(losses["unimodal/gray"], state.groups.encoders["color"], allow_unused=True)
    assert all(g is None for g in gray)
    expected = output.unimodal_logits["gray"] + output.unimodal_logits["color"]
    assert torch.equal(method.prediction(output), expected) and torch.equal(ensemble_logits(output), expected)


def test_the_distillation_is_the_summed_feature_mse_and_never_trains_the_teacher():
    student = {m: torch.randn(5, 7, requires_grad=True) for m in ("a", "b")}
    teacher = {m: torch.randn(5, 7, requires_grad=True) for m in ("a", "b")}
    loss = feature_distillation(student, teacher)
    manual = sum(((student[m] - teacher[m]) ** 2).mean() for m in student)
    assert loss.item() == pytest.approx(manual.item(), rel=1e-6)
    grads = torch.autograd.grad(loss, list(student.values()) + list(teacher.values()), allow_unused=True)
    assert all(g is not None for g in grads[:2]) and all(g is None for g in grads[2:])


def test_at_the_stage_boundary_the_teachers_freeze_as_trained_and_the_student_starts_from_the_initial_model():
    method = build_method("umt", MODALITIES, teacher_epochs=1)
    model, state = _model_and_state(method)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():  # stand-in for the teachers' stage
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    trained = {k: v.clone() for k, v in model.encoders.state_dict().items()}
    state.optimizer.state[next(model.parameters())]["momentum_buffer"] = torch.zeros(1)
    state.epoch = 1
    method.on_epoch_start(state)
    for k, v in method.teachers.state_dict().items():
        assert torch.equal(v, trained[k]), k
    for k, v in model.state_dict().items():
        assert torch.equal(v, initial[k]), k
    assert not state.optimizer.state  # a fresh optimiser state
    assert not method.teachers.training and not any(p.requires_grad for p in method.teachers.parameters())
    # the student's loss: fused CE + alpha * distillation, the heads on detached features
    inputs, labels = _batch()
    state.inputs = inputs
    output = model(inputs)
    losses = method.losses(output, labels, state)
    assert set(losses) == {"multimodal", "distillation", "unimodal/gray", "unimodal/color"}
    teacher_z = {m: method.teachers[m](inputs[m]) for m in MODALITIES}
    assert losses["distillation"].item() == pytest.approx(feature_distillation(output.features, teacher_z).item())
    head_reach = torch.autograd.grad(losses["unimodal/gray"], state.groups.encoders["gray"], retain_graph=True,
                                     allow_unused=True)
    assert all(g is None for g in head_reach)
    assert torch.equal(method.prediction(output), output.logits)  # the student predicts with its fused head


def test_a_umt_run_resumes_in_its_second_stage_to_the_same_record(tiny_config, tmp_path):
    config = tiny_config("umt", epochs=3, method_options={"teacher_epochs": 1})
    straight, resumed = straight_and_resumed(config, tmp_path)
    assert without_timing(straight["history"]) == without_timing(resumed["history"])
    stages = [h["train/umt/teacher_stage"] for h in straight["history"]]
    assert stages == [1.0, 0.0, 0.0]
    assert "train/loss/distillation" in straight["history"][-1]


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="teacher_epochs"):
        build_method("umt", MODALITIES, teacher_epochs=0)
    with pytest.raises(ValueError, match="alpha"):
        build_method("umt", MODALITIES, alpha=-1.0)
