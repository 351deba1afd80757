"""The check that a small profile shows the chapters' effects on CG-MNIST (issue 34, point 4)."""

import pytest

from mmlab.reproduction import profile_effects

SHOWING = {"joint": 0.40, "uniform": 0.60, "mmpareto": 0.65, "mgda": 0.45,
           "unimodal-gray": 0.98, "unimodal-color": 0.45}


def test_runs_that_show_every_effect_pass_with_their_margins():
    table = profile_effects(SHOWING)
    assert list(table["holds"]) == ["yes"] * 4
    assert table["measured (points)"].tolist() == pytest.approx([20.0, 5.0, 53.0, 30.0])
    assert "joint" in table["compared"].iloc[-1]  # the lowest multimodal run, unimodal runs not counted


@pytest.mark.parametrize("change, failing", [
    ({"joint": 0.55}, 0),           # 5 points below uniform: not clearly below
    ({"mmpareto": 0.59}, 1),        # below uniform
    ({"unimodal-color": 0.90}, 2),  # colour alone nearly as good as gray
    ({"mgda": 0.15}, 3),            # a multimodal method near chance
])
def test_each_criterion_fails_on_its_own(change, failing):
    holds = profile_effects({**SHOWING, **change})["holds"].tolist()
    assert holds[failing] == "no" and holds.count("no") == 1


def test_a_missing_run_is_missing_not_passed():
    table = profile_effects({k: v for k, v in SHOWING.items() if k != "mmpareto"})
    assert table["holds"].iloc[1] == "missing" and table["holds"].iloc[0] == "yes"
