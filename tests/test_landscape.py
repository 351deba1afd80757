"""Filter-normalised directions and the loss along them (chapter 4)."""

import torch

from mmlab.data.registry import get_dataset
from mmlab.landscape import filter_normalized_direction, loss_along_direction, sharpness
from mmlab.models import build_model
from mmlab.training import evaluate
from mmlab.training.batches import ResidentBatches


def _model_and_batches():
    spec = get_dataset("cgmnist")
    torch.manual_seed(0)
    model = build_model(spec, ["gray", "color"], unimodal_heads=True)
    splits = spec.load_splits(train_size=128, val_size=32, test_size=256)
    return model, ResidentBatches(splits["test"], ["gray", "color"], 128, torch.device("cpu")), spec


def test_direction_filters_have_the_models_filter_norms_and_vectors_stay_put():
    model, _, _ = _model_and_batches()
    direction = filter_normalized_direction(model, seed=1)
    for p, d in zip(model.parameters(), direction):
        assert d.shape == p.shape
        if p.dim() <= 1:
            assert torch.count_nonzero(d) == 0
        else:
            torch.testing.assert_close(d.flatten(1).norm(dim=1), p.detach().flatten(1).norm(dim=1))
    again = filter_normalized_direction(model, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(direction, again))


def test_curve_at_zero_is_the_models_own_loss_and_the_model_is_restored():
    model, batches, spec = _model_and_batches()
    before = [p.detach().clone() for p in model.parameters()]
    curve = loss_along_direction(model, filter_normalized_direction(model), batches, [-0.5, 0.0, 0.5])
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    metrics = evaluate(model, batches, spec.num_classes, "test")
    at_zero = curve.set_index("t").loc[0.0]
    assert abs(at_zero["loss"] - metrics["test/loss"]) < 1e-5
    assert abs(at_zero["acc"] - metrics["test/acc"]) < 1e-9
    assert curve["loss"].iloc[0] != at_zero["loss"]  # the direction does move the loss


def test_sharpness_of_a_known_curve():
    import pandas as pd

    curve = pd.DataFrame({"t": [-1.0, -0.5, 0.0, 0.5, 1.0], "loss": [5.0, 2.0, 1.0, 3.0, 9.0]})
    assert sharpness(curve, 0.5) == (1.0 + 0.0 + 2.0) / 3


def test_curve_at_t_is_the_loss_of_the_model_moved_by_t_times_the_direction():
    import copy

    model, batches, spec = _model_and_batches()
    direction = filter_normalized_direction(model, seed=2)
    curve = loss_along_direction(model, direction, batches, [-0.5, 0.5]).set_index("t")
    for t in (-0.5, 0.5):
        moved = copy.deepcopy(model)
        with torch.no_grad():
            for p, d in zip(moved.parameters(), direction):
                p.add_(t * d)  # every tensor, by t times its direction
        metrics = evaluate(moved, batches, spec.num_classes, "test")
        assert abs(curve.loc[t, "loss"] - metrics["test/loss"]) < 1e-5
    assert abs(curve.loc[-0.5, "loss"] - curve.loc[0.5, "loss"]) > 1e-4  # the sign of t matters
