"""OGM-GE: scores, ratios, the coefficient and its window, GE noise, which parameters it touches."""

import math

import pytest
import torch

from mmlab.data.registry import get_dataset
from mmlab.methods import TrainState, build_method
from mmlab.methods.ogm import discrepancy_ratios, modality_scores, modulation_coefficient
from mmlab.models import ModelOutput, build_model
from mmlab.training import train


def test_scores_match_the_per_sample_loop():
    torch.manual_seed(0)
    shares = {"a": torch.randn(32, 10), "v": torch.randn(32, 10)}
    y = torch.randint(0, 10, (32,))
    scores = modality_scores(shares, y)
    for m, s in shares.items():
        loop = sum(torch.softmax(s[i], 0)[y[i]].item() for i in range(32))  # the original code's loop
        assert math.isclose(float(scores[m]), loop, rel_tol=1e-5)
    rho = discrepancy_ratios(scores)
    assert math.isclose(float(rho["a"]), float(scores["a"] / scores["v"]), rel_tol=1e-6)
    assert math.isclose(float(rho["a"] * rho["v"]), 1.0, rel_tol=1e-6)


def test_three_modalities_use_the_mean_of_the_others():
    rho = discrepancy_ratios({"a": torch.tensor(6.0), "b": torch.tensor(2.0), "c": torch.tensor(4.0)})
    assert math.isclose(float(rho["a"]), 6 / 3, rel_tol=1e-6)
    assert math.isclose(float(rho["b"]), 2 / 5, rel_tol=1e-6)


@pytest.mark.parametrize("rho, alpha, continuous, expected", [
    (0.5, 0.8, False, 1.0), (1.0, 0.8, False, 1.0), (2.0, 0.8, False, 1 - math.tanh(1.6)),
    (1.0001, 0.8, False, 1 - math.tanh(0.8 * 1.0001)), (2.0, 0.8, True, 1 - math.tanh(0.8)),
    (3.0, 0.0, False, 1.0),
])
def test_modulation_coefficient(rho, alpha, continuous, expected):
    assert math.isclose(float(modulation_coefficient(torch.tensor(rho), alpha, continuous)), expected, rel_tol=1e-6)


def _state_and_output(dominant="color", confidence=20.0):
    """Shares: the dominant one ``eye * confidence`` (20: certain of the true class, rho = 10; 0.4626: rho = 1.5,
    where k = 1 - tanh(1.2) = 0.17 is far from 0), the other all zeros (probability 0.1 per class)."""
    torch.manual_seed(0)
    model = build_model(get_dataset("cgmnist"), ["gray", "color"], unimodal_heads=False)
    groups = model.parameter_groups()
    for p in groups.all():
        p.grad = torch.randn_like(p)
    y = torch.arange(10)
    confident = torch.eye(10) * confidence
    unsure = torch.zeros(10, 10)
    shares = {m: confident if m == dominant else unsure for m in ["gray", "color"]}
    out = ModelOutput(features={}, logits=sum(shares.values()), shares=shares)
    gen = torch.Generator().manual_seed(1)
    state = TrainState(model=model, groups=groups, optimizer=None, device=torch.device("cpu"),
                       num_epochs=100, steps_per_epoch=1, generator=gen)
    return state, out, y


def test_only_the_dominant_encoder_is_scaled_and_nothing_else_changes():
    state, out, y = _state_and_output("color", confidence=0.4626)
    before = {id(p): p.grad.clone() for p in state.groups.all()}
    build_method("ogm_ge", noise=False).transform_gradients(out, y, state)
    rho = discrepancy_ratios(modality_scores(out.shares, y))["color"]
    assert 1.45 < float(rho) < 1.55  # a moderate lead: k is far from both 0 and 1
    k = float(modulation_coefficient(rho, 0.8))
    assert math.isclose(k, 1 - math.tanh(0.8 * float(rho)), rel_tol=1e-6) and 0.1 < k < 0.3
    for p in state.groups.encoders["color"]:
        torch.testing.assert_close(p.grad, before[id(p)] * k, rtol=1e-5, atol=0)
    for p in state.groups.encoders["gray"] + state.groups.non_encoder():
        assert torch.equal(p.grad, before[id(p)])


def test_the_continuous_option_reaches_the_coefficient_the_method_applies():
    # rho = 1.5: the paper's coefficient 1 - tanh(0.8 * 1.5) = 0.17; continuous, 1 - tanh(0.8 * 0.5) = 0.62
    state, out, y = _state_and_output("color", confidence=0.4626)
    before = {id(p): p.grad.clone() for p in state.groups.all()}
    build_method("ogm_ge", noise=False, continuous=True).transform_gradients(out, y, state)
    rho = float(discrepancy_ratios(modality_scores(out.shares, y))["color"])
    k = 1 - math.tanh(0.8 * (rho - 1))
    assert 0.55 < k < 0.7
    for p in state.groups.encoders["color"]:
        torch.testing.assert_close(p.grad, before[id(p)] * k, rtol=1e-5, atol=0)


def test_conv_only_switch_scales_only_convolution_weights():
    state, out, y = _state_and_output("color")
    before = {id(p): p.grad.clone() for p in state.groups.all()}
    build_method("ogm_ge", noise=False, conv_only=True).transform_gradients(out, y, state)
    changed = [p.dim() for p in state.groups.encoders["color"] if not torch.equal(p.grad, before[id(p)])]
    assert changed and all(d == 4 for d in changed)
    assert len(changed) == sum(p.dim() == 4 for p in state.groups.encoders["color"])


def test_outside_the_window_gradients_are_untouched():
    state, out, y = _state_and_output("color")
    state.epoch = 50
    before = [p.grad.clone() for p in state.groups.all()]
    build_method("ogm_ge", window_end=50).transform_gradients(out, y, state)
    assert all(torch.equal(a, p.grad) for a, p in zip(before, state.groups.all()))


def test_ge_noise_has_mean_zero_and_the_std_of_the_unscaled_gradient():
    state, out, y = _state_and_output("color")
    big = max(state.groups.encoders["gray"], key=lambda p: p.numel())  # of the non-dominant encoder (k = 1)
    big.grad = torch.randn_like(big) * 3.0
    g = big.grad.clone()
    build_method("ogm_ge").transform_gradients(out, y, state)
    noise = big.grad - g
    n = noise.numel()
    assert abs(float(noise.mean())) < 5 * float(g.std()) / math.sqrt(n)
    assert math.isclose(float(noise.std()), float(g.std()), rel_tol=0.05)


def test_ge_noise_on_the_dominant_encoder_has_the_std_of_the_gradient_before_scaling():
    state, out, y = _state_and_output("color", confidence=0.4626)
    big = max(state.groups.encoders["color"], key=lambda p: p.numel())
    big.grad = torch.randn_like(big) * 3.0
    g = big.grad.clone()
    k = float(modulation_coefficient(discrepancy_ratios(modality_scores(out.shares, y))["color"], 0.8))
    build_method("ogm_ge").transform_gradients(out, y, state)
    noise = big.grad - k * g  # the scaled gradient plus noise of the *unscaled* gradient's std
    assert math.isclose(float(noise.std()), float(g.std()), rel_tol=0.05)
    assert float(noise.std()) > 3 * k * float(g.std())  # not the std after scaling


def test_ogm_ge_trains_through_the_loop(tiny_config, tmp_path):
    record = train(tiny_config("ogm_ge", epochs=1), checkpoint_dir=tmp_path, progress=False)
    h = record["history"][0]
    assert "train/ogm_rho/gray" in h and 0 < h["train/ogm_coefficient/color"] <= 1


def test_the_loop_scales_by_the_coefficient_of_each_step_s_own_ratio(tiny_config, tmp_path):
    """One step per epoch, so an epoch's logged means are that step's values: the coefficient logged is
    the modulation coefficient of the ratio logged beside it, below 1 for the dominant modality only."""
    record = train(tiny_config("ogm_ge", epochs=2, train_size=32, batch_size=32), checkpoint_dir=tmp_path,
                   progress=False)
    for h in record["history"]:
        rho = {m: h[f"train/ogm_rho/{m}"] for m in ("gray", "color")}
        assert math.isclose(rho["gray"] * rho["color"], 1.0, rel_tol=1e-5)  # two modalities: reciprocal ratios
        dominant = max(rho, key=rho.get)
        for m, r in rho.items():
            expected = float(modulation_coefficient(torch.tensor(r, dtype=torch.float64), 0.8))
            assert math.isclose(h[f"train/ogm_coefficient/{m}"], expected, rel_tol=1e-5)
            assert (h[f"train/ogm_coefficient/{m}"] < 1) == (m == dominant)


def test_opm_drop_probabilities():
    from mmlab.methods.ogm import drop_probabilities

    q = drop_probabilities({"a": torch.tensor(3.0), "v": torch.tensor(1 / 3)}, base=0.4, strength=0.5)
    assert math.isclose(float(q["a"]), 0.4 * (1 + 0.5 * math.tanh(2.0)), rel_tol=1e-6)
    assert float(q["v"]) == 0.0
    assert float(drop_probabilities({"a": torch.tensor(100.0)}, base=0.9, strength=1.0)["a"]) == 1.0


def test_opm_drops_only_the_dominant_modality_at_the_intended_rate():
    from mmlab.methods.ogm import drop_probabilities

    state, _, _ = _state_and_output("color")
    n = 4000
    labels = torch.arange(10).repeat(n // 10)
    features = {"gray": torch.ones(n, 512), "color": torch.ones(n, 512)}
    # make the colour share certain of the true class and the gray share unsure
    with torch.no_grad():
        fusion = state.model.fusion.linear
        fusion.weight.zero_()
        fusion.bias.zero_()
        fusion.weight[:, 512:] = 0.0
    features["color"] = torch.nn.functional.one_hot(labels, 512).float() * 30
    fusion.weight.data[:, 512:522] = torch.eye(10)
    state.labels = labels
    method = build_method("opm", p_exe=1.0, q_base=0.4, strength=0.5)
    out = method.intervene(features, state)
    assert torch.equal(out["gray"], features["gray"])
    dropped = (out["color"].abs().sum(1) == 0).float().mean().item()
    shares = state.model.fusion.modality_shares(features)
    from mmlab.methods.ogm import discrepancy_ratios, modality_scores

    q = drop_probabilities(discrepancy_ratios(modality_scores(shares, labels)), 0.4, 0.5)["color"]
    assert abs(dropped - float(q)) < 4 * math.sqrt(float(q) * (1 - float(q)) / n)
    kept = out["color"].abs().sum(1) > 0  # the kept samples pass unchanged: no dropout-style 1/(1-q) rescaling
    assert kept.any() and torch.equal(out["color"][kept], features["color"][kept])
    state.epoch = 60  # outside the window: nothing dropped
    assert all(torch.equal(method.intervene(features, state)[m], features[m]) for m in features)


def test_opm_executes_per_batch_with_probability_p_exe():
    """p_exe decides per *batch* whether OPM acts at all; within an executed batch each sample is dropped with q."""
    state, _, _ = _state_and_output("color")
    n, calls = 100, 600
    labels = torch.arange(10).repeat(n // 10)
    with torch.no_grad():
        fusion = state.model.fusion.linear
        fusion.weight.zero_()
        fusion.bias.zero_()
        fusion.weight[:, 512:522] = torch.eye(10)
    features = {"gray": torch.ones(n, 512), "color": torch.nn.functional.one_hot(labels, 512).float() * 30}
    state.labels = labels
    method = build_method("opm", p_exe=0.3, q_base=0.4, strength=0.5)  # q = 0.4 (1 + 0.5 tanh(rho - 1)) > 0.4
    drops = torch.tensor([float((method.intervene(features, state)["color"].abs().sum(1) == 0).sum())
                          for _ in range(calls)])
    executed = (drops > 0).float().mean().item()  # P(no drop at all | executed) < 0.6 ** 100: negligible
    assert abs(executed - 0.3) < 4 * math.sqrt(0.3 * 0.7 / calls)
    assert drops[drops > 0].mean() > 0.4 * n - 4 * math.sqrt(0.24 * n)  # executed batches drop q of their samples


def test_opm_trains_through_the_loop(tiny_config, tmp_path):
    record = train(tiny_config("opm", epochs=1), checkpoint_dir=tmp_path, progress=False)
    assert "train/opm_drop_probability/color" in record["history"][0]


@pytest.mark.parametrize("method", ["ogm_ge", "opm"])
def test_random_methods_resume_exactly(method, tiny_config, tmp_path):
    """OGM-GE's noise and OPM's drops come from the method generator: an interrupted run resumes to the same
    history only if that generator is restored from the checkpoint (both epochs inside the modulation window)."""
    from conftest import straight_and_resumed, without_timing

    straight, resumed = straight_and_resumed(tiny_config(method), tmp_path)
    assert resumed["provenance"]["resumed"] and not straight["provenance"]["resumed"]
    assert without_timing(resumed["history"]) == without_timing(straight["history"])
