"""MMPareto, conventional Pareto (MGDA) and PCGrad on hand-made gradients with known answers,
and the properties the chapter relies on (hypothesis)."""

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mmlab.methods import build_method
from mmlab.methods.gradient_integration import min_norm_weights, mmpareto_direction, pcgrad_pair
from mmlab.training import train

from conftest import LoggingState

vectors = st.lists(st.floats(-10, 10, allow_nan=False, allow_infinity=False), min_size=2, max_size=6)


def pair(draw_a, draw_b):
    n = min(len(draw_a), len(draw_b))
    a = torch.tensor(draw_a[:n], dtype=torch.float64)
    b = torch.tensor(draw_b[:n], dtype=torch.float64)
    return [a[:1], a[1:]], [b[:1], b[1:]]  # split into two "parameter tensors"


def flat(g):
    return torch.cat([t.flatten() for t in g])


@settings(max_examples=100, deadline=None)
@given(vectors, vectors)
def test_min_norm_weights_are_in_the_simplex_and_beat_brute_force(a, b):
    g1, g2 = pair(a, b)
    w1, w2 = min_norm_weights(g1, g2)
    assert 0 <= float(w1) <= 1 and abs(float(w1 + w2) - 1) < 1e-12
    best = min(float((t * flat(g1) + (1 - t) * flat(g2)).norm()) for t in np.linspace(0, 1, 1001))
    ours = float((w1 * flat(g1) + w2 * flat(g2)).norm())
    assert ours <= best + 1e-6 * (1 + best)


@settings(max_examples=100, deadline=None)
@given(vectors, vectors)
def test_min_norm_point_does_not_conflict_with_either_gradient(a, b):
    g1, g2 = pair(a, b)
    w1, w2 = min_norm_weights(g1, g2)
    d = w1 * flat(g1) + w2 * flat(g2)
    scale = 1e-9 * (1 + flat(g1).norm() + flat(g2).norm()) ** 2
    assert float(d @ flat(g1)) >= -scale and float(d @ flat(g2)) >= -scale


def test_known_cases():
    g_m, g_u = [torch.tensor([1.0, 0.0])], [torch.tensor([-1.0, 1.0])]
    a_m, a_u = min_norm_weights(g_m, g_u)
    assert math.isclose(float(a_m), 0.6, rel_tol=1e-6)  # (2 - (-1)) / 5
    h, info = mmpareto_direction(g_m, g_u, gamma=1.5)
    expected = 1.5 * torch.tensor([0.4, 0.8]) / torch.tensor([0.4, 0.8]).norm()  # ||g_m + g_u|| = 1
    torch.testing.assert_close(h[0], expected)
    assert float(info["conflict"]) == 1.0
    torch.testing.assert_close(pcgrad_pair(g_m, g_u)[0], torch.tensor([0.5, 1.5]))
    # equal gradients: weights 1/2, no division by zero
    assert float(min_norm_weights(g_m, g_m)[0]) == 0.5


@settings(max_examples=100, deadline=None)
@given(vectors, vectors, st.floats(1.0, 3.0))
def test_mmpareto_keeps_a_common_direction_and_the_uniform_magnitude(a, b, gamma):
    g_m, g_u = pair(a, b)
    s = flat(g_m) + flat(g_u)
    assume(float(s.norm()) > 1e-3)
    h, info = mmpareto_direction(g_m, g_u, gamma)
    fh = flat(h)
    if float(flat(g_m) @ flat(g_u)) >= 0:  # no conflict: gamma times the uniform sum
        torch.testing.assert_close(fh, gamma * s)
    else:
        if float(fh.norm()) == 0:  # no step only at a Pareto-stationary point: the min-norm point is zero
            a_m = min_norm_weights(g_m, g_u)[0]
            d = float(a_m) * flat(g_m) + (1 - float(a_m)) * flat(g_u)
            assert float(d.norm()) <= 1e-5 * (float(flat(g_m).norm()) + float(flat(g_u).norm()))
            return
        assert math.isclose(float(fh.norm()), gamma * float(s.norm()), rel_tol=1e-6)
        tol = 1e-6 * float(fh.norm()) * (float(flat(g_m).norm()) + float(flat(g_u).norm()))
        assert float(fh @ flat(g_m)) >= -tol and float(fh @ flat(g_u)) >= -tol


@settings(max_examples=100, deadline=None)
@given(vectors, vectors)
def test_pcgrad_removes_the_conflict(a, b):
    g1, g2 = pair(a, b)
    out = flat(pcgrad_pair(g1, g2))
    f1, f2 = flat(g1), flat(g2)
    if float(f1 @ f2) >= 0:
        torch.testing.assert_close(out, f1 + f2)
    else:
        assume(float(f1.norm()) > 1e-3 and float(f2.norm()) > 1e-3)
        p1 = f1 - (f1 @ f2) / (f2 @ f2) * f2  # each projected onto the normal plane of the other
        p2 = f2 - (f1 @ f2) / (f1 @ f1) * f1
        torch.testing.assert_close(out, p1 + p2, rtol=1e-5, atol=1e-6 * float(f1.norm() + f2.norm()))
        # the result conflicts with neither: out . f1 = |f1|^2 (1 - cos^2) >= 0, and the same for f2
        tol = 1e-5 * float(f1.norm() + f2.norm()) ** 2
        assert float(out @ f1) >= -tol and float(out @ f2) >= -tol


def test_per_tensor_granularity_differs_from_per_encoder():
    g_m = [torch.tensor([1.0, 0.0]), torch.tensor([3.0])]
    g_u = [torch.tensor([-1.0, 1.0]), torch.tensor([1.0])]
    enc, _ = mmpareto_direction(g_m, g_u)
    per_tensor = [mmpareto_direction([a], [b])[0][0] for a, b in zip(g_m, g_u)]
    assert not torch.allclose(torch.cat(enc), torch.cat(per_tensor))


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="granularity"):
        build_method("mmpareto", granularity="layer")
    with pytest.raises(ValueError, match="gamma"):
        build_method("mmpareto", gamma=0)


@pytest.mark.parametrize("method", ["mmpareto", "mgda", "pcgrad"])
def test_methods_train_through_the_loop(method, tiny_config, tmp_path):
    record = train(tiny_config(method, epochs=1), checkpoint_dir=tmp_path, progress=False)
    h = record["history"][0]
    assert math.isfinite(h["train/loss"]) and "test/acc/gray" in h
    if method == "mmpareto":
        assert 0 <= h["train/mmpareto_conflict/gray"] <= 1


def test_opposite_gradients_give_no_step_and_no_nan():
    g_m, g_u = [torch.tensor([1.0, -2.0])], [torch.tensor([-1.0, 2.0])]
    h, info = mmpareto_direction(g_m, g_u, gamma=1.5)
    assert torch.equal(h[0], torch.zeros(2)) and float(info["conflict"]) == 1.0


def test_conventional_pareto_is_twice_the_min_norm_point_and_tensor_granularity_is_used():
    """MGDA: (alpha_m, alpha_u) = (0.6, 0.4) for g_m = (1, 0), g_u = (-1, 1) (Eq. eq-min-norm-solution: 3 / 5),
    so h = 2 (0.6 g_m + 0.4 g_u) = (0.4, 0.8), not the min-norm point (0.2, 0.4) itself."""
    state = LoggingState()
    grads = {"multimodal": [torch.tensor([1.0, 0.0])], "unimodal/gray": [torch.tensor([-1.0, 1.0])]}
    h = build_method("mgda").combine_encoder_gradients("gray", grads, state)
    assert math.isclose(state.logged["train/mgda_alpha_m/gray"], 0.6, rel_tol=1e-6)
    torch.testing.assert_close(h[0], torch.tensor([0.4, 0.8]))
    # MMPareto's per-tensor switch applies the rule to each tensor (the original code), per encoder by default
    g_m = [torch.tensor([1.0, 0.0]), torch.tensor([3.0])]
    g_u = [torch.tensor([-1.0, 1.0]), torch.tensor([1.0])]
    grads = {"multimodal": g_m, "unimodal/gray": g_u}
    per_tensor = build_method("mmpareto", granularity="tensor").combine_encoder_gradients("gray", grads, state)
    expected = [mmpareto_direction([a], [b])[0][0] for a, b in zip(g_m, g_u)]
    for got, want in zip(per_tensor, expected):
        torch.testing.assert_close(got, want)
    per_encoder = build_method("mmpareto").combine_encoder_gradients("gray", grads, state)
    assert not torch.allclose(torch.cat(per_encoder), torch.cat(per_tensor))
