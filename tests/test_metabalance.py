"""MetaBalance on hand-made gradients with known answers, its strategies, and resume."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import LoggingState, straight_and_resumed, without_timing
from mmlab.methods import build_method
from mmlab.methods.base import TrainState
from mmlab.methods.metabalance import metabalance_scales


def combine(method, g_m, g_u, modality="gray"):
    return method.combine_encoder_gradients(modality, {"multimodal": g_m, f"unimodal/{modality}": g_u}, LoggingState())


def test_first_step_moves_the_auxiliary_norm_towards_the_target_norm():
    method = build_method("metabalance", relax_factor=0.7, beta=0.9)
    g_m = [torch.tensor([3.0, 4.0]), torch.tensor([1.0])]  # norms 5 and 1
    g_u = [torch.tensor([0.0, 10.0]), torch.tensor([-4.0])]  # norms 10 and 4
    h = combine(method, g_m, g_u)
    # the averages start at zero, so after one step their ratio is the ratio of the norms
    scale0, scale1 = 0.7 * 5 / 10 + 0.3, 0.7 * 1 / 4 + 0.3
    torch.testing.assert_close(h[0], g_m[0] + scale0 * g_u[0])
    torch.testing.assert_close(h[1], g_m[1] + scale1 * g_u[1])


@settings(max_examples=60, deadline=None)
@given(st.floats(0.01, 100), st.floats(0.01, 100), st.floats(0, 1))
def test_scaled_norm_interpolates_between_the_two_norms(target, auxiliary, relax):
    scale = float(metabalance_scales(torch.tensor(target), torch.tensor(auxiliary), relax))
    new_norm = scale * auxiliary
    assert math.isclose(new_norm, relax * target + (1 - relax) * auxiliary, rel_tol=1e-5)
    lo, hi = sorted((target, auxiliary))
    assert lo * (1 - 1e-5) <= new_norm <= hi * (1 + 1e-5)


def test_reduce_and_enlarge_only_act_on_their_side():
    target = torch.tensor([1.0, 4.0])
    auxiliary = torch.tensor([2.0, 2.0])  # larger than the target in tensor 0, smaller in tensor 1
    reduce = metabalance_scales(target, auxiliary, 0.5, "reduce")
    enlarge = metabalance_scales(target, auxiliary, 0.5, "enlarge")
    assert float(reduce[0]) < 1 and float(reduce[1]) == 1
    assert float(enlarge[0]) == 1 and float(enlarge[1]) > 1


def test_moving_average_remembers_earlier_steps():
    method = build_method("metabalance", relax_factor=1.0, beta=0.5)
    combine(method, [torch.tensor([1.0])], [torch.tensor([1.0])])
    h = combine(method, [torch.tensor([1.0])], [torch.tensor([3.0])])
    # averages: target 0.5*0.5 + 0.5*1 = 0.75; auxiliary 0.5*0.5 + 0.5*3 = 1.75
    torch.testing.assert_close(h[0], torch.tensor([1.0 + 3.0 * 0.75 / 1.75]))


def test_the_method_passes_its_strategy_on():
    # target norm 1, auxiliary 2 (first step: the averages' ratio is the norms' ratio): "adapt" and "reduce"
    # shrink the auxiliary gradient to 0.5 * 1/2 + 0.5 = 0.75 of itself; "enlarge" leaves it (it is not smaller)
    g_m, g_u = [torch.tensor([1.0, 0.0])], [torch.tensor([0.0, 2.0])]
    for strategy, scale in [("adapt", 0.75), ("reduce", 0.75), ("enlarge", 1.0)]:
        h = combine(build_method("metabalance", relax_factor=0.5, strategy=strategy), g_m, g_u)
        torch.testing.assert_close(h[0], torch.tensor([1.0, 2.0 * scale]), msg=strategy)
    h = combine(build_method("metabalance", relax_factor=0.5, strategy="enlarge"), [torch.tensor([4.0])],
                [torch.tensor([2.0])])
    torch.testing.assert_close(h[0], torch.tensor([4.0 + 2.0 * (0.5 * 4 / 2 + 0.5)]))


def test_each_encoder_keeps_its_own_moving_averages():
    method = build_method("metabalance", relax_factor=1.0, beta=0.5)
    combine(method, [torch.tensor([1.0])], [torch.tensor([1.0])], "gray")
    combine(method, [torch.tensor([5.0])], [torch.tensor([1.0])], "color")  # must not touch gray's averages
    h = combine(method, [torch.tensor([1.0])], [torch.tensor([3.0])], "gray")
    torch.testing.assert_close(h[0], torch.tensor([1.0 + 3.0 * 0.75 / 1.75]))  # as with gray alone


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="strategy"):
        build_method("metabalance", strategy="sometimes")
    with pytest.raises(ValueError, match="relax_factor"):
        build_method("metabalance", relax_factor=1.5)
    with pytest.raises(ValueError, match="beta"):
        build_method("metabalance", beta=1.0)


def test_resumed_run_matches_an_uninterrupted_one(tiny_config, tmp_path):
    config = tiny_config("metabalance", epochs=2)
    straight, resumed = straight_and_resumed(config, tmp_path)
    assert without_timing(straight["history"]) == without_timing(resumed["history"])
    assert 0 < straight["history"][-1]["train/metabalance_scale/gray"]
