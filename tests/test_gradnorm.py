"""GradNorm: weights that move, stay normalised, and survive a resume."""

import math
import types

import pytest
import torch

from mmlab.data.registry import get_dataset
from mmlab.methods import build_method
from mmlab.models import build_model
from mmlab.training import train

from conftest import LoggingState, straight_and_resumed, without_timing


def test_gradnorm_weights_move_and_sum_to_the_number_of_losses(tiny_config, tmp_path):
    record = train(tiny_config("gradnorm", epochs=1), checkpoint_dir=tmp_path, progress=False)
    h = record["history"][0]
    weights = [h[f"train/gradnorm_weight/{n}"] for n in ["multimodal", "unimodal/gray", "unimodal/color"]]
    assert math.isclose(sum(weights), 3.0, rel_tol=1e-4)  # epoch means of weights that always sum to 3
    assert max(abs(w - 1) for w in weights) > 1e-3  # they were learned


def test_gradnorm_resumes_to_the_same_result(tiny_config, tmp_path):
    straight, resumed = straight_and_resumed(tiny_config("gradnorm", epochs=2), tmp_path)
    assert without_timing(resumed["history"]) == without_timing(straight["history"])


def test_gradnorm_step_has_the_known_answer():
    """Losses c_i * p on one shared scalar p: gradient norms c = (1, 2, 3). First step, all training rates equal:
    target mean(G) = 2, d L_grad / d w_i = sign(G_i - 2) c_i = (-1, 0, 3); SGD (lr 0.1), then renormalise to sum 3.
    Second step, loss 0 has halved (it trains fastest): its target, and so its weight, falls."""
    import numpy as np
    import torch

    from mmlab.methods import build_method

    method = build_method("gradnorm", alpha=1.5, weight_lr=0.1)
    method.names = ["multimodal", "unimodal/gray", "unimodal/color"]
    method.weights = torch.ones(3, requires_grad=True)
    method.weight_optimizer = torch.optim.SGD([method.weights], lr=0.1)
    p = torch.nn.Parameter(torch.tensor(1.0))
    method.shared = [p]

    def step(scales):
        c = torch.tensor([1.0, 2.0, 3.0]) * torch.tensor(scales)
        before = method.weights.detach().clone()
        total = method.total_loss(dict(zip(method.names, c * p)), LoggingState())
        # the model trains on the weighted sum with the weights of this step (not the plain sum)
        assert float(total.detach()) == pytest.approx(float((before * c).sum()))
        total.backward()
        assert float(p.grad) == pytest.approx(float((before * c).sum()))
        p.grad = None
        method.on_step_end(LoggingState())
        return method.weights.detach().numpy().copy()

    first = step([1.0, 1.0, 1.0])
    expected = np.array([1.1, 1.0, 0.7]) * 3 / 2.8
    np.testing.assert_allclose(first, expected, rtol=1e-6)

    # by hand: G = w * (0.5, 2, 3); r = ratios / mean(ratios) with ratios (0.5, 1, 1); target = mean(G) * r^1.5
    norms, ratios = np.array([0.5, 2.0, 3.0]), np.array([0.5, 1.0, 1.0])
    G = first * norms
    target = G.mean() * (ratios / ratios.mean()) ** 1.5
    w = first - 0.1 * np.sign(G - target) * norms
    w = np.maximum(w, 1e-3) * 3 / np.maximum(w, 1e-3).sum()
    second = step([0.5, 1.0, 1.0])
    np.testing.assert_allclose(second, w, rtol=1e-6)
    assert second[0] / second[1] < first[0] / first[1]  # the loss that fell fastest lost weight


def test_gradnorm_balances_the_norms_on_each_encoder_s_output_layer():
    model = build_model(get_dataset("cgmnist"), ["gray", "color"], True)
    method = build_method("gradnorm")
    method.setup(types.SimpleNamespace(model=model, device=torch.device("cpu")))
    expected = [p for m in ("gray", "color") for p in model.encoders[m].output_layer.parameters()]
    assert [id(p) for p in method.shared] == [id(p) for p in expected]
    assert method.names == ["multimodal", "unimodal/gray", "unimodal/color"]


def test_on_resnet_encoders_the_shared_layer_is_the_trunk_s_last_convolution():
    # CREMA-D's encoders: the last convolution and its BatchNorm, not the whole ResNet-18 (which would cost
    # three extra backward passes through it every step)
    model = build_model(get_dataset("cremad"), ["audio", "visual"], True)
    method = build_method("gradnorm")
    method.setup(types.SimpleNamespace(model=model, device=torch.device("cpu")))
    block = model.encoders["audio"].trunk.layer4[-1]
    expected = list(block.conv2.parameters()) + list(block.bn2.parameters())
    assert [id(p) for p in method.shared[:len(expected)]] == [id(p) for p in expected]
    total = sum(p.numel() for p in model.encoders["audio"].parameters())
    assert sum(p.numel() for p in expected) < total / 4


def test_an_encoder_without_an_output_layer_is_named():
    model = build_model(get_dataset("cgmnist"), ["gray", "color"], True)
    model.encoders["color"] = torch.nn.Sequential(torch.nn.Flatten())
    with pytest.raises(TypeError, match="color encoder"):
        build_method("gradnorm").setup(types.SimpleNamespace(model=model, device=torch.device("cpu")))
