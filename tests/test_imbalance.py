"""The greedy-learner measures on cases with known answers."""

import math

import torch
from torch import nn

from mmlab.data.registry import get_dataset
from mmlab.imbalance import (accuracy_without, branch_dominance_ratio, conditional_utilization_rate,
                             learning_speed, mean_features, speed_imbalance, utilization_imbalance,
                             utilization_rates)
from mmlab.models import ConcatFusion, MultimodalClassifier, build_model
from mmlab.training.batches import ResidentBatches


def test_formulas():
    assert math.isclose(conditional_utilization_rate(0.8, 0.6), 0.25)
    assert conditional_utilization_rate(0.8, 0.8) == 0.0
    assert math.isclose(utilization_imbalance(0.25, 0.05), 0.2)
    assert math.isclose(branch_dominance_ratio([1.0, 9.0], [0.1]), 2.0)
    assert speed_imbalance(2.0, 0.5) == 1.5


def test_learning_speed_is_gradient_over_parameter_energy():
    p = nn.Parameter(torch.tensor([3.0, 4.0]))
    p.grad = torch.tensor([0.3, 0.4])
    q = nn.Parameter(torch.tensor([0.0]))
    q.grad = torch.tensor([1.0])
    assert math.isclose(learning_speed([p, q]), (0.25 + 1.0) / 25.0)


class _Copy(nn.Module):
    """An 'encoder' that passes a vector through (so the test controls the features)."""

    def forward(self, x):
        return x


class _Split:
    def __init__(self, inputs, labels):
        self.inputs, self.labels = inputs, labels


def test_a_modality_the_fusion_ignores_has_zero_utilization():
    torch.manual_seed(0)
    n = 200
    labels = torch.randint(0, 3, (n,))
    informative = torch.nn.functional.one_hot(labels, 3).float() * 255  # batches divide by 255
    noise = torch.rand(n, 3) * 255
    model = MultimodalClassifier({"a": _Copy(), "b": _Copy()}, ConcatFusion({"a": 3, "b": 3}, 3))
    with torch.no_grad():
        model.fusion.linear.weight.zero_()
        model.fusion.linear.bias.zero_()
        model.fusion.linear.weight[:, :3] = torch.eye(3) * 10  # only "a" is read
    split = _Split({"a": informative.to(torch.uint8), "b": noise.to(torch.uint8)}, labels)
    batches = ResidentBatches(split, ["a", "b"], 50, torch.device("cpu"))
    rates = utilization_rates(model, batches, batches)
    assert rates["b"] == 0.0
    assert rates["a"] > 0.5  # without "a" the model is at chance
    means = mean_features(model, batches)
    torch.testing.assert_close(means["a"], informative.mean(0) / 255)
    assert accuracy_without(model, batches, {}) == 1.0


def test_utilization_runs_on_a_real_model():
    spec = get_dataset("cgmnist")
    model = build_model(spec, ["gray", "color"], unimodal_heads=False)
    splits = spec.load_splits(train_size=200, val_size=50, test_size=100)
    train = ResidentBatches(splits["train"], ["gray", "color"], 100, torch.device("cpu"))
    test = ResidentBatches(splits["test"], ["gray", "color"], 100, torch.device("cpu"))
    rates = utilization_rates(model, train, test)
    assert set(rates) == {"gray", "color"} and all(math.isfinite(v) for v in rates.values())


# -- additions for chapter 2: tensors, cross-modal models, what the loop records -------------------
from mmlab import RunConfig  # noqa: E402
from mmlab.imbalance import (imbalance_metrics, learning_speed_imbalance, learning_speed_tensor,  # noqa: E402
                             probe_batches)


def test_learning_speed_tensor_agrees_and_imbalance_is_a_log_ratio():
    p = nn.Parameter(torch.tensor([3.0, 4.0]))
    p.grad = torch.tensor([0.3, 0.4])
    assert math.isclose(float(learning_speed_tensor([p])), 0.01, rel_tol=1e-6)
    assert math.isclose(learning_speed([p]), float(learning_speed_tensor([p])))
    assert math.isnan(float(learning_speed_tensor([nn.Parameter(torch.zeros(2))])))
    assert math.isclose(learning_speed_imbalance(1.0, 0.01), 2.0)


def test_imbalance_metrics_on_a_model_that_ignores_one_modality():
    torch.manual_seed(0)
    n = 120
    labels = torch.randint(0, 3, (n,))
    informative = (torch.nn.functional.one_hot(labels, 3).float() * 255).to(torch.uint8)
    noise = (torch.rand(n, 3) * 255).to(torch.uint8)
    model = MultimodalClassifier({"a": _Copy(), "b": _Copy()}, ConcatFusion({"a": 3, "b": 3}, 3))
    with torch.no_grad():
        model.fusion.linear.weight.zero_()
        model.fusion.linear.bias.zero_()
        model.fusion.linear.weight[:, :3] = torch.eye(3) * 10
    split = _Split({"a": informative, "b": noise}, labels)
    probe = probe_batches(split, ["a", "b"], torch.device("cpu"), size=100, batch_size=30)
    assert probe.num_samples == 100
    out = imbalance_metrics(model, {"val": probe})
    assert out["val/utilization/b"] == 0.0 and out["val/acc_without/b"] == 1.0
    # "a" replaced by its mean (the class frequencies, scaled): every sample gets the most frequent class
    majority = float(torch.bincount(labels[:100]).max()) / 100
    assert math.isclose(out["val/acc_without/a"], majority)
    assert math.isclose(out["val/utilization/a"], 1.0 - majority)


def test_utilization_of_a_cross_modal_model_also_replaces_its_cross_modal_inputs():
    spec = get_dataset("cgmnist")
    torch.manual_seed(0)
    model = build_model(spec, ["gray", "color"], unimodal_heads=False, fusion="mmtm")
    splits = spec.load_splits(train_size=64, val_size=16, test_size=64)
    batches = ResidentBatches(splits["test"], ["gray", "color"], 32, torch.device("cpu"))
    model.train()
    for inputs, _ in batches.epoch():  # running averages for the cut inputs
        model(inputs)
    entered = []
    original = model.replacing_cross_modal_inputs

    def spy(sources):
        entered.append(set(sources))
        return original(sources)

    model.replacing_cross_modal_inputs = spy
    means = mean_features(model, batches)
    accuracy_without(model, batches, {"color": means["color"]})
    assert entered == [{"color"}]
    accuracy_without(model, batches, {})
    assert entered == [{"color"}]  # nothing replaced: the connections stay


def test_measuring_is_optional_and_leaves_other_runs_keys_alone():
    first = {"protocol": "mmlab-1"}  # the protocol chapter 1's smoke runs had when the option came
    plain = RunConfig.from_profile(method="joint", profile="smoke", dataset_options=first)
    measured = RunConfig.from_profile(method="joint", profile="smoke", measure_imbalance=True,
                                      dataset_options=first)
    assert "measure_imbalance" not in plain.to_dict()
    assert plain.key == "3b4b0cc2e5b8"  # the key chapter 1's smoke run of `joint` had before the option
    assert measured.key != plain.key
    assert RunConfig.from_dict(measured.to_dict()) == measured
    assert RunConfig.from_dict(plain.to_dict()) == plain


def test_one_pass_late_fusion_utilization_agrees_with_the_pass_per_modality():
    spec = get_dataset("cgmnist")
    torch.manual_seed(1)
    model = build_model(spec, ["gray", "color"], unimodal_heads=False)
    with torch.no_grad():  # a fusion that reads both modalities strongly enough to matter
        model.fusion.linear.weight.mul_(50)
    splits = spec.load_splits(train_size=64, val_size=16, test_size=300)
    batches = ResidentBatches(splits["test"], ["gray", "color"], 100, torch.device("cpu"))
    fast = imbalance_metrics(model, {"test": batches})
    means = mean_features(model, batches)
    for m in ["gray", "color"]:
        assert math.isclose(fast[f"test/acc_without/{m}"], accuracy_without(model, batches, {m: means[m]}),
                            abs_tol=1e-9)
    assert math.isclose(fast["test/utilization/gray"], utilization_rates(model, batches, batches)["gray"],
                        abs_tol=1e-9)


def test_utilization_is_measured_on_what_the_method_predicts_with():
    """UDI trains no fused head: its utilisation rates must come from its own prediction (the sum of its heads),
    not from the untrained fused head. Here the fused head reads only "b", the prediction only "a"."""
    from mmlab.models.classifier import MultimodalClassifier as Classifier

    torch.manual_seed(0)
    n = 120
    labels = torch.randint(0, 3, (n,))
    informative = (torch.nn.functional.one_hot(labels, 3).float() * 255).to(torch.uint8)
    noise = (torch.rand(n, 3) * 255).to(torch.uint8)
    heads = {"a": torch.nn.Linear(3, 3), "b": torch.nn.Linear(3, 3)}
    model = Classifier({"a": _Copy(), "b": _Copy()}, ConcatFusion({"a": 3, "b": 3}, 3), heads)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.fusion.linear.weight[:, 3:] = torch.eye(3) * 10  # the fused head reads "b" only
        model.unimodal_heads["a"].weight.copy_(torch.eye(3) * 10)  # the heads' sum reads "a" only
    split = _Split({"a": informative, "b": noise}, labels)
    probe = probe_batches(split, ["a", "b"], torch.device("cpu"), size=100, batch_size=30)
    fused = imbalance_metrics(model, {"val": probe})
    assert fused["val/utilization/a"] == 0.0
    own = imbalance_metrics(model, {"val": probe}, prediction=lambda out: sum(out.unimodal_logits.values()))
    assert own["val/utilization/b"] == 0.0 and own["val/acc_without/b"] == 1.0 and own["val/utilization/a"] > 0.5
