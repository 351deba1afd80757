"""Gradient statistics at fixed parameters: known covariances, and no side effects on the model."""

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmlab.data.registry import get_dataset
from mmlab.gradients import combined, covariance_summary, sample_encoder_gradients
from mmlab.methods import build_method
from mmlab.models import build_model
from mmlab.training.batches import ResidentBatches


def test_covariance_summary_recovers_a_known_covariance():
    torch.manual_seed(0)
    n, p = 4000, 6
    scales = torch.tensor([3.0, 2.0, 1.0, 0.5, 0.5, 0.5])
    mean = torch.full((p,), 2.0)
    draws = mean + torch.randn(n, p) * scales
    summary = covariance_summary(draws, top=2)
    assert math.isclose(summary["total_variance"], float((scales**2).sum()), rel_tol=0.05)
    assert math.isclose(summary["top_eigenvalues"][0], 9.0, rel_tol=0.08)
    assert math.isclose(summary["norm_of_mean"], float(mean.norm()), rel_tol=0.02)


def test_fixed_weights_scale_the_covariance_quadratically():
    torch.manual_seed(1)
    a, b = torch.randn(500, 4), torch.randn(500, 4) * 2
    tr = lambda x: covariance_summary(x)["total_variance"]  # noqa: E731
    mixed = combined([a, b], [0.3, 1.7])
    expected = 0.3**2 * tr(a) + 1.7**2 * tr(b) + 2 * 0.3 * 1.7 * float(((a - a.mean(0)) * (b - b.mean(0))).sum() / 499)
    assert math.isclose(tr(mixed), expected, rel_tol=1e-6)


def test_sampling_leaves_the_model_unchanged_and_matches_autograd():
    spec = get_dataset("cgmnist")
    torch.manual_seed(0)
    model = build_model(spec, ["gray", "color"], unimodal_heads=True)
    splits = spec.load_splits(train_size=256, val_size=64, test_size=64)
    batches = ResidentBatches(splits["train"], ["gray", "color"], 64, torch.device("cpu"), shuffle=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    draws = sample_encoder_gradients(model, build_method("uniform"), batches, "gray", num_batches=3)
    assert set(draws) == {"multimodal", "unimodal/gray"} and draws["multimodal"].shape[0] == 3
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm running stats included
    inputs, labels = next(batches.epoch(0))
    out = model(inputs)
    loss = torch.nn.functional.cross_entropy(out.unimodal_logits["gray"], labels)
    g = torch.cat([t.flatten() for t in torch.autograd.grad(loss, list(model.encoders["gray"].parameters()))])
    torch.testing.assert_close(draws["unimodal/gray"][0], g)


def test_uniform_rule_noise_is_exactly_the_prediction_with_cross_covariance():
    from mmlab.gradients import noise_strengths

    torch.manual_seed(2)
    shared = torch.randn(300, 5)
    g_m = 0.5 * shared + 0.2 * torch.randn(300, 5)
    g_u = shared + torch.randn(300, 5)  # correlated with g_m through `shared`
    table = noise_strengths(g_m, g_u)
    row = table.loc["uniform"]
    assert math.isclose(row["measured"], row["predicted (with cross-covariance)"], rel_tol=1e-5)
    assert table.attrs["tr_C_mu"] > 0.5  # the draws are correlated: the paper's independence fails here
    assert row["predicted (independent)"] < row["measured"]


def test_independent_draws_match_the_papers_prediction():
    from mmlab.gradients import noise_strengths

    torch.manual_seed(3)
    g_m = torch.randn(4000, 4) * 0.3 + torch.tensor([1.0, 0, 0, 0])
    g_u = torch.randn(4000, 4) + torch.tensor([0.5, 1.0, 0, 0])
    row = noise_strengths(g_m, g_u).loc["uniform"]
    assert math.isclose(row["measured"], row["predicted (independent)"], rel_tol=0.05)


def test_rule_weights_follow_the_library_methods():
    from mmlab.gradients import integration_weights
    from mmlab.methods.gradient_integration import mmpareto_direction

    g_m = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    g_u = torch.tensor([[-1.0, 1.0], [1.0, 1.0]])  # first draw conflicts, second does not
    pareto = integration_weights(g_m, g_u, "pareto")
    torch.testing.assert_close(pareto.sum(1), torch.full((2,), 2.0))
    torch.testing.assert_close(pareto[0], torch.tensor([1.2, 0.8]))  # 2 * (0.6, 0.4)
    mmp = integration_weights(g_m, g_u, "mmpareto", gamma=1.5)
    for i in range(2):
        h = mmpareto_direction([g_m[i]], [g_u[i]], 1.5)[0][0]
        torch.testing.assert_close(mmp[i, 0] * g_m[i] + mmp[i, 1] * g_u[i], h)
    torch.testing.assert_close(mmp[1], torch.tensor([1.5, 1.5]))  # no conflict: gamma times the sum


@settings(max_examples=200, deadline=None)
@given(st.floats(1.01, 10.0), st.floats(0.0, 1.0))
def test_pareto_noise_threshold_is_the_boundary_of_weaker_noise(k, alpha_m):
    """MMPareto Eqs. 12-15 with C_u = k C_m: Pareto's noise (2a)^2 + (2 - 2a)^2 k is below the uniform sum's
    1 + k exactly for a in (1/2, (3k - 1) / (2k + 2))."""
    from mmlab.gradients import pareto_noise_threshold

    threshold = pareto_noise_threshold(k)
    pareto, uniform = (2 * alpha_m) ** 2 + (2 - 2 * alpha_m) ** 2 * k, 1 + k
    margin = 1e-9 * uniform
    if 0.5 + 1e-6 < alpha_m < threshold - 1e-6:
        assert pareto < uniform - margin
    elif alpha_m < 0.5 - 1e-6 or alpha_m > threshold + 1e-6:
        assert pareto > uniform + margin
    assert (threshold > 1) == (k > 3)  # the paper's case split: every Pareto weight in (1/2, 1] for k > 3
