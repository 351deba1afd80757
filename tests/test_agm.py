"""AGM (chapter 3): Shapley mono-modal responses, the ratios and coefficients, the gradient scaling, resume."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from hypothesis import given, settings, strategies as st

from conftest import straight_and_resumed, without_timing
from mmlab.data.registry import get_dataset
from mmlab.methods import TrainState, build_method
from mmlab.methods.agm import (additive_coalition_outputs, agm_coefficient, coalition_outputs, competition_ratios,
                               has_additive_fusion, mono_modal_scores, shapley_outputs)
from mmlab.models import ConcatFusion, MultimodalClassifier, build_model


def _random_game(names, seed, classes=4, batch=3):
    g = torch.Generator().manual_seed(seed)
    return {frozenset(c): torch.randn(batch, classes, generator=g, dtype=torch.float64)
            for size in range(len(names) + 1) for c in itertools.combinations(names, size)}


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 4), st.integers(0, 10_000))
def test_the_responses_sum_to_the_fused_output(count, seed):
    names = [f"m{i}" for i in range(count)]
    game = _random_game(names, seed)
    responses = shapley_outputs(game, names)
    torch.testing.assert_close(sum(responses.values()), game[frozenset(names)])


def test_two_modalities_give_the_authors_formula():
    game = _random_game(["a", "v"], 3)
    f_av, f_a0, f_0v = game[frozenset("av")], game[frozenset("a")], game[frozenset("v")]
    responses = shapley_outputs(game, ["a", "v"])
    torch.testing.assert_close(responses["a"], 0.5 * (f_av - f_0v + f_a0))
    torch.testing.assert_close(responses["v"], 0.5 * (f_av - f_a0 + f_0v))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000))
def test_a_modality_that_changes_nothing_gets_only_its_share_of_the_empty_coalition(seed):
    names = ["a", "b", "c"]
    base = _random_game(["a", "b"], seed)
    game = {s: base[s - {"c"}] for s in _random_game(names, 0)}  # f does not depend on c
    responses = shapley_outputs(game, names)
    torch.testing.assert_close(responses["c"], game[frozenset()] / 3)
    # and the other two split the rest as in the game without c, with a third of f({}) each instead of a half
    two = shapley_outputs(base, ["a", "b"])
    torch.testing.assert_close(responses["a"], two["a"] - base[frozenset()] / 2 + base[frozenset()] / 3)


def _model():
    torch.manual_seed(0)
    return build_model(get_dataset("cgmnist"), ["gray", "color"], unimodal_heads=False)


def _inputs(seed=1, batch=6):
    g = torch.Generator().manual_seed(seed)
    return {"gray": torch.rand(batch, 1, 28, 28, generator=g), "color": torch.rand(batch, 3, 28, 28, generator=g)}


def test_for_late_fusion_the_response_is_the_share_minus_the_share_of_a_padded_input():
    # concatenation fusion is an additive game: m^m = s^m(x) - s^m(0) + f(0, 0) / M (chapter 3)
    model, inputs = _model(), _inputs()
    model.train()
    responses = shapley_outputs(coalition_outputs(model, inputs), model.modalities)
    assert model.training  # the mode is restored
    model.eval()
    with torch.no_grad():
        out = model(inputs)
        zero = model({m: torch.zeros_like(x) for m, x in inputs.items()})
    for m in model.modalities:
        expected = out.shares[m] - zero.shares[m] + zero.logits / 2
        torch.testing.assert_close(responses[m], expected, rtol=1e-5, atol=1e-5)


@settings(max_examples=15, deadline=None)
@given(st.integers(2, 4), st.integers(1, 7), st.integers(0, 10_000))
def test_one_evaluation_pass_gives_every_coalition_of_an_additive_model(count, batch, seed):
    # M modalities, encoders with biases and BatchNorm (running statistics moved by a training pass), so that
    # a blank input's feature is not zero and evaluation mode differs from training mode
    torch.manual_seed(seed)
    names = [f"m{i}" for i in range(count)]
    encoders = {m: nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.Tanh()) for m in names}
    for encoder in encoders.values():
        nn.init.normal_(encoder[0].bias)
    model = MultimodalClassifier(encoders, ConcatFusion({m: 8 for m in names}, 4))
    model({m: 3 * torch.randn(16, 5) + 1 for m in names})
    inputs = {m: torch.randn(batch, 5) for m in names}
    assert has_additive_fusion(model)
    fast, padded = additive_coalition_outputs(model, inputs), coalition_outputs(model, inputs)
    assert model.training and set(fast) == set(padded) and len(fast) == 2 ** count
    for coalition in padded:
        torch.testing.assert_close(fast[coalition], padded[coalition], rtol=1e-5, atol=1e-5)


def test_agm_takes_the_one_pass_only_where_the_fusion_is_additive():
    spec = get_dataset("cgmnist")
    late, mmtm = build_model(spec, ["gray", "color"], False), build_model(spec, ["gray", "color"], False, fusion="mmtm")
    assert has_additive_fusion(late) and not has_additive_fusion(mmtm)
    with pytest.raises(ValueError, match="coalition_outputs"):
        additive_coalition_outputs(mmtm, _inputs())
    for model, additive in [(late, True), (mmtm, False)]:
        method = build_method("agm")
        method.setup(_state(model, _inputs())[0])
        assert method.additive is additive


def test_scores_are_the_mean_cross_entropy_with_a_floor():
    logits = {"a": torch.tensor([[2.0, 0.0], [0.0, 1.0]]), "b": torch.tensor([[-100.0, 100.0], [0.0, 0.0]])}
    labels = torch.tensor([0, 1])
    scores = mono_modal_scores(logits, labels)
    assert float(scores["a"]) == pytest.approx(float(F.cross_entropy(logits["a"], labels)))
    assert float(scores["b"]) == pytest.approx((-math.log(1e-8) + math.log(2)) / 2)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0.0, 5.0), min_size=2, max_size=4))
def test_ratios_multiply_to_one_and_for_two_are_exp_of_the_score_difference(values):
    scores = {f"m{i}": torch.tensor(v, dtype=torch.float64) for i, v in enumerate(values)}
    ratios = competition_ratios(scores)
    assert float(sum(torch.log(r) for r in ratios.values())) == pytest.approx(0.0, abs=1e-9)
    if len(values) == 2:
        assert float(ratios["m0"]) == pytest.approx(math.exp(values[1] - values[0]))
    best = min(scores, key=lambda m: float(scores[m]))  # the lowest loss is the modality most ahead
    assert float(ratios[best]) == pytest.approx(max(float(r) for r in ratios.values()))


def test_the_coefficient_slows_a_modality_further_ahead_than_usual_and_is_clipped():
    assert float(agm_coefficient(torch.tensor(1.0), torch.tensor(2.0), alpha=0.5)) == pytest.approx(math.exp(-0.5))
    assert float(agm_coefficient(torch.tensor(2.0), torch.tensor(1.0), alpha=0.5)) == pytest.approx(math.exp(0.5))
    clipped = agm_coefficient(torch.tensor(100.0), torch.tensor(1.0), alpha=0.1, max_exponent=7.0)
    assert float(clipped) == pytest.approx(math.exp(0.7))


def _state(model, inputs, epoch=0):
    state = TrainState(model=model, groups=model.parameter_groups(), optimizer=None, device=torch.device("cpu"),
                       num_epochs=10, steps_per_epoch=1, epoch=epoch)
    state.inputs = inputs
    logs = {}
    state.logger = logs.__setitem__
    return state, logs


def _backward(model, inputs, labels):
    model.zero_grad()
    out = model(inputs)
    F.cross_entropy(out.logits, labels).backward()
    return out


def test_each_encoder_gradient_is_scaled_by_its_coefficient_and_the_running_reference_moves():
    model, inputs = _model(), _inputs()
    labels = torch.tensor([0, 1, 2, 3, 4, 5])
    method = build_method("agm", alpha=0.5)
    state, logs = _state(model, inputs)
    method.setup(state)
    method.score_sums = torch.tensor([1.5, 0.5], dtype=torch.float64)  # as if one step had been trained
    method.steps = 1
    out = _backward(model, inputs, labels)
    before = {m: [p.grad.clone() for p in ps] for m, ps in state.groups.encoders.items()}
    fusion_before = [p.grad.clone() for p in state.groups.fusion]
    # the expected coefficients, computed here from the definitions
    scores = mono_modal_scores(shapley_outputs(coalition_outputs(model, inputs), ["gray", "color"]), labels)
    eta_gray = math.exp(0.5 - 1.5)  # exp(s_color - s_gray) of the running means
    expected = {"gray": math.exp(0.5 * (eta_gray - math.exp(float(scores["color"] - scores["gray"])))),
                "color": math.exp(0.5 * (1 / eta_gray - math.exp(float(scores["gray"] - scores["color"]))))}
    method.transform_gradients(out, labels, state)
    for m, ps in state.groups.encoders.items():
        for p, g in zip(ps, before[m]):
            torch.testing.assert_close(p.grad, expected[m] * g, rtol=1e-4, atol=1e-7)
        assert logs[f"train/agm_coefficient/{m}"] == pytest.approx(expected[m], rel=1e-4)
    for p, g in zip(state.groups.fusion, fusion_before):  # the fusion head keeps its gradient
        assert torch.equal(p.grad, g)
    assert method.steps == 2
    torch.testing.assert_close(method.score_sums,
                               torch.tensor([1.5 + float(scores["gray"]), 0.5 + float(scores["color"])],
                                            dtype=torch.float64))


def test_the_method_passes_its_exponent_cap_on():
    # the same step as above, whose exponents are far from 0: the cap bounds them from above only, so the
    # modality behind its usual course gets exactly exp(0.5 * 1e-3), the one ahead its uncapped k < 1
    model, inputs = _model(), _inputs()
    labels = torch.tensor([0, 1, 2, 3, 4, 5])
    method = build_method("agm", alpha=0.5, max_exponent=1e-3)
    state, logs = _state(model, inputs)
    method.setup(state)
    method.score_sums = torch.tensor([1.5, 0.5], dtype=torch.float64)
    method.steps = 1
    out = _backward(model, inputs, labels)
    method.transform_gradients(out, labels, state)
    exponents = sorted(math.log(float(logs[f"train/agm_coefficient/{m}"])) for m in ("gray", "color"))
    assert exponents[1] == pytest.approx(0.5e-3, rel=1e-4) and exponents[0] < -0.01


def test_outside_the_window_nothing_is_scaled_but_the_scores_are_still_averaged():
    model, inputs = _model(), _inputs()
    labels = torch.arange(6)
    method = build_method("agm", window_start=2, window_end=4)
    state, logs = _state(model, inputs, epoch=5)
    method.setup(state)
    out = _backward(model, inputs, labels)
    before = [p.grad.clone() for ps in state.groups.encoders.values() for p in ps]
    method.transform_gradients(out, labels, state)
    assert all(torch.equal(p.grad, g) for p, g in zip([p for ps in state.groups.encoders.values() for p in ps], before))
    assert method.steps == 1 and "train/agm_ratio/gray" in logs and "train/agm_coefficient/gray" not in logs


def test_bad_options_and_one_modality_are_refused():
    for bad in ({"alpha": -1.0}, {"window_start": 5, "window_end": 2}, {"max_exponent": 0.0}):
        with pytest.raises(ValueError):
            build_method("agm", **bad)
    model = build_model(get_dataset("cgmnist"), ["gray"], unimodal_heads=False)
    with pytest.raises(ValueError, match="two modalities"):
        build_method("agm").setup(TrainState(model=model, groups=model.parameter_groups(), optimizer=None,
                                             device=torch.device("cpu"), num_epochs=1, steps_per_epoch=1))


def test_agm_trains_through_the_loop_and_resumes_with_its_running_scores(tiny_config, tmp_path):
    straight, resumed = straight_and_resumed(tiny_config("agm", epochs=2), tmp_path)
    h = straight["history"][-1]
    assert {"train/agm_ratio/gray", "train/agm_coefficient/color", "train/agm_score/gray"} <= set(h)
    assert without_timing(resumed["history"]) == without_timing(straight["history"])


def test_scaling_the_mono_modal_responses_gradients_is_one_common_factor_under_late_fusion():
    # chapter 3: the authors' hooks scale the gradient reaching m^a and m^v; both are the fused output plus
    # constants, so the fused output -- and every parameter behind it -- gets (k_a + k_v) / 2 of its gradient
    torch.manual_seed(0)
    fused = torch.randn(5, 4, requires_grad=True)
    pad_v, pad_a = torch.randn(5, 4), torch.randn(5, 4)  # f(a, 0) and f(0, v): no gradient
    labels = torch.tensor([0, 1, 2, 3, 0])
    k_a, k_v = 0.3, 1.7
    m_a = 0.5 * (fused - pad_a + pad_v)
    m_v = 0.5 * (fused - pad_v + pad_a)
    m_a.register_hook(lambda g: g * k_a)
    m_v.register_hook(lambda g: g * k_v)
    (modulated,) = torch.autograd.grad(F.cross_entropy(m_a + m_v, labels), fused)
    (plain,) = torch.autograd.grad(F.cross_entropy(fused, labels), fused)
    torch.testing.assert_close(modulated, (k_a + k_v) / 2 * plain)
