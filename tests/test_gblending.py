"""G-Blending (chapter 5): the blending weights, the online super-epochs, resume."""

import pytest
import torch
from hypothesis import given, settings, strategies as st

from conftest import straight_and_resumed, without_timing
from mmlab.data.registry import get_dataset
from mmlab.methods import TrainState, build_method
from mmlab.methods.gblending import blending_weights
from mmlab.models import build_model
from mmlab.training import evaluate, train
from mmlab.training.batches import ResidentBatches


def test_the_weights_are_generalisation_over_overfitting_squared():
    w = blending_weights(torch.tensor([0.2, 0.1, 0.3]), torch.tensor([0.1, 0.1, 0.3]))
    # raw G/O^2 = 20, 10, 3.33...: the same ratios, scaled to sum to the number of losses
    raw = torch.tensor([20.0, 10.0, 0.3 / 0.09])
    torch.testing.assert_close(w, 3 * raw / raw.sum())


def test_a_loss_that_did_not_generalise_gets_no_weight_and_none_leaves_the_weights():
    w = blending_weights(torch.tensor([0.5, -0.1, 0.0]), torch.tensor([0.1, 0.2, 0.3]))
    assert w[0] == pytest.approx(3.0) and w[1] == 0 and w[2] == 0
    assert blending_weights(torch.tensor([-0.5, 0.0]), torch.tensor([0.1, 0.2])) is None


# a loss change is zero or at least 1e-9 in size: the ratio of two subnormal numbers has no
# meaningful order, and the weights are compared in float64
_loss_change = st.one_of(st.just(0.0), st.floats(1e-9, 2), st.floats(-2, -1e-9))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(_loss_change, _loss_change), min_size=1, max_size=5), st.floats(0.5, 10))
def test_the_weights_are_nonnegative_sum_to_the_total_and_order_by_the_ratio(pairs, total):
    gain = torch.tensor([g for g, _ in pairs], dtype=torch.float64)
    change = torch.tensor([o for _, o in pairs], dtype=torch.float64)
    w = blending_weights(gain, change, total=total)
    if not (gain > 0).any():
        assert w is None
        return
    assert (w >= 0).all() and float(w.sum()) == pytest.approx(total)
    ratio = gain.clamp_min(0) / change.square().clamp_min(1e-12)
    for i in range(len(pairs)):
        for j in range(len(pairs)):
            if ratio[i] > ratio[j] * (1 + 1e-9):
                assert w[i] > w[j]


def test_tiny_gains_still_give_weights_that_sum_to_the_total():
    # found by hypothesis in CI: a subnormal gain once underflowed to all-zero weights
    w = blending_weights(torch.tensor([5e-324], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64), total=0.5)
    assert float(w.sum()) == pytest.approx(0.5)
    w = blending_weights(torch.tensor([0.0, 1.0, 5e-324], dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
    assert float(w.sum()) == pytest.approx(3.0) and w[1] > w[0]


def test_bad_super_epochs_are_refused():
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match="super_epoch"):
            build_method("gblending", super_epoch=bad)


def _state(evaluations):
    torch.manual_seed(0)
    model = build_model(get_dataset("cgmnist"), ["gray", "color"], unimodal_heads=True)
    state = TrainState(model=model, groups=model.parameter_groups(), optimizer=None, device=torch.device("cpu"),
                       num_epochs=10, steps_per_epoch=1)
    state.evaluate = lambda split: evaluations[split]
    return state


def _losses(split, mm, gray, color):
    return {f"{split}/loss": mm, f"{split}/loss/unimodal/gray": gray, f"{split}/loss/unimodal/color": color}


def test_weights_change_at_super_epoch_starts_from_the_window_before():
    method = build_method("gblending", super_epoch=2)
    evaluations = {"train": _losses("train", 2.0, 2.0, 2.0), "val": _losses("val", 2.0, 2.0, 2.0)}
    state = _state(evaluations)
    method.setup(state)
    method.on_epoch_start(state)  # epoch 0: the first snapshot, weights 1
    assert method.weights.tolist() == [1.0, 1.0, 1.0]
    # two epochs later: validation fell by 0.4 / 0.2 / 0.1, overfitting grew by 0.2 / 0.1 / 0.1
    evaluations["train"] = _losses("train", 1.4, 1.7, 1.8)
    evaluations["val"] = _losses("val", 1.6, 1.8, 1.9)
    state.epoch = 1
    method.on_epoch_start(state)  # not a super-epoch start: nothing changes
    assert method.weights.tolist() == [1.0, 1.0, 1.0]
    state.epoch = 2
    method.on_epoch_start(state)
    raw = torch.tensor([0.4 / 0.2 ** 2, 0.2 / 0.1 ** 2, 0.1 / 0.1 ** 2], dtype=torch.float64)
    torch.testing.assert_close(method.weights, 3 * raw / raw.sum())
    torch.testing.assert_close(method.ogr, torch.tensor([0.5, 0.5, 1.0], dtype=torch.float64))
    logs = method.on_epoch_end(state, evaluate=None)
    assert logs["train/gblending_weight/multimodal"] == pytest.approx(float(method.weights[0]))
    assert logs["train/gblending_ogr/unimodal/color"] == pytest.approx(1.0)
    # the training loss is the weighted sum of the terms
    terms = {"multimodal": torch.tensor(1.0), "unimodal/gray": torch.tensor(2.0), "unimodal/color": torch.tensor(3.0)}
    expected = float((method.weights * torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)).sum())
    assert float(method.total_loss(terms, state)) == pytest.approx(expected, rel=1e-6)


def test_evaluate_reports_each_heads_cross_entropy_and_the_train_split_is_unshuffled(tiny_config):
    spec = get_dataset("cgmnist")
    splits = spec.load_splits(train_size=96, val_size=32, test_size=32, data_seed=0)
    torch.manual_seed(0)
    model = build_model(spec, ["gray", "color"], unimodal_heads=True).eval()
    shuffled = ResidentBatches(splits["train"], ["gray", "color"], 32, torch.device("cpu"), shuffle=True, seed=3)
    plain = shuffled.for_evaluation(50)
    assert plain.inputs["gray"] is shuffled.inputs["gray"]  # no copy
    assert torch.equal(torch.cat([y for _, y in plain.epoch(7)]), splits["train"].labels)
    metrics = evaluate(model, plain, spec.num_classes, "train")
    with torch.no_grad():
        out = model({m: x.float().div(255.0) if x.dtype == torch.uint8 else x.float()
                     for m, x in splits["train"].inputs.items()})
    y = splits["train"].labels

    def acc(logits):
        return float((logits.argmax(1) == y).double().mean())

    for m in ("gray", "color"):
        expected = torch.nn.functional.cross_entropy(out.unimodal_logits[m], y)
        assert metrics[f"train/loss/unimodal/{m}"] == pytest.approx(float(expected), rel=1e-4)
        # each modality's accuracy from its own head, its share accuracy from its share of the fused logits
        assert metrics[f"train/acc/{m}"] == pytest.approx(acc(out.unimodal_logits[m]))
        assert metrics[f"train/share_acc/{m}"] == pytest.approx(acc(out.shares[m]))
    assert metrics["train/acc"] == pytest.approx(acc(out.logits))
    assert metrics["train/loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(out.logits, y)), rel=1e-4)


def test_gblending_trains_through_the_loop_and_resumes_with_its_weights(tiny_config, tmp_path):
    config = tiny_config("gblending", epochs=3, method_options={"super_epoch": 1})
    straight, resumed = straight_and_resumed(config, tmp_path)
    history = straight["history"]
    assert [history[0][f"train/gblending_weight/{n}"] for n in ("multimodal", "unimodal/gray", "unimodal/color")] \
        == [1.0, 1.0, 1.0]
    assert sum(history[-1][f"train/gblending_weight/{n}"]
               for n in ("multimodal", "unimodal/gray", "unimodal/color")) == pytest.approx(3.0)
    assert "train/gblending_ogr/multimodal" in history[1]  # a ratio was measured from the second epoch on
    assert without_timing(resumed["history"]) == without_timing(history)


def test_in_the_loop_the_weights_move_to_the_loss_that_generalises(tiny_config, tmp_path):
    # on 1,024 images the gray head's validation loss falls while the colour-led ones rise (validation colours
    # are those of the test set): the weights leave (1, 1, 1) (which also sums to 3) towards the gray head
    names = ("multimodal", "unimodal/gray", "unimodal/color")
    config = tiny_config("gblending", epochs=3, train_size=1024, val_size=256, grad_probe_every=0,
                         method_options={"super_epoch": 1})
    history = train(config, checkpoint_dir=tmp_path, progress=False)["history"]
    weights = [history[-1][f"train/gblending_weight/{n}"] for n in names]
    assert sum(weights) == pytest.approx(3.0) and weights[1] == max(weights) and weights[1] > 1.5
    assert history[-1]["val/loss/unimodal/gray"] < history[0]["val/loss/unimodal/gray"]


def test_an_unknown_split_is_named(tiny_config, tmp_path):
    from mmlab.errors import UnknownNameError

    class Asks(type(build_method("uniform"))):
        def on_epoch_end(self, state, evaluate):
            with pytest.raises(UnknownNameError, match="split"):
                evaluate("validation")
            return {}

    train(tiny_config("uniform", epochs=1), method=Asks(), checkpoint_dir=tmp_path, progress=False)


def _squared_ogr(weights, generalization, noise):
    """The blend's squared overfitting-to-generalisation ratio when the losses' noises are uncorrelated:
    sum_k w_k^2 sigma_k^2 / (sum_k w_k g_k)^2 (chapter 5's derivation of the weights)."""
    return (weights.square() * noise.square()).sum() / (weights * generalization).sum().square()


_positive = st.floats(0.05, 5.0)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(_positive, _positive), min_size=2, max_size=5),
       st.lists(st.floats(0.0, 1.0), min_size=5, max_size=5))
def test_the_weights_minimise_the_blends_ratio_over_the_simplex(pairs, other):
    # Proposition 1 of Wang et al. (2020): w_k proportional to g_k / sigma_k^2 minimises the ratio; here
    # against any other non-negative weights (the ratio does not change with the weights' scale)
    g = torch.tensor([a for a, _ in pairs], dtype=torch.float64)
    sigma = torch.tensor([b for _, b in pairs], dtype=torch.float64)
    w = blending_weights(g, sigma)
    rival = torch.tensor(other[: len(pairs)], dtype=torch.float64) + 1e-3  # a point inside the simplex
    rival = rival / rival.sum()
    assert float(_squared_ogr(w, g, sigma)) <= float(_squared_ogr(rival, g, sigma)) * (1 + 1e-9)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(_positive, _positive), min_size=2, max_size=5))
def test_the_weights_are_a_stationary_point_of_the_ratio_by_autograd(pairs):
    g = torch.tensor([a for a, _ in pairs], dtype=torch.float64)
    sigma = torch.tensor([b for _, b in pairs], dtype=torch.float64)
    w = blending_weights(g, sigma).clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(_squared_ogr(w, g, sigma), w)
    assert float(gradient.abs().max()) < 1e-9 * (1 + float(_squared_ogr(w, g, sigma).detach()))
