"""GradNorm: weights that move, stay normalised, and survive a resume."""

import math

from mmlab.training import train

from conftest import straight_and_resumed, without_timing


def test_gradnorm_weights_move_and_sum_to_the_number_of_losses(tiny_config, tmp_path):
    record = train(tiny_config("gradnorm", epochs=1), checkpoint_dir=tmp_path, progress=False)
    h = record["history"][0]
    weights = [h[f"train/gradnorm_weight/{n}"] for n in ["multimodal", "unimodal/gray", "unimodal/color"]]
    assert math.isclose(sum(weights), 3.0, rel_tol=1e-4)  # epoch means of weights that always sum to 3
    assert max(abs(w - 1) for w in weights) > 1e-3  # they were learned


def test_gradnorm_resumes_to_the_same_result(tiny_config, tmp_path):
    straight, resumed = straight_and_resumed(tiny_config("gradnorm", epochs=2), tmp_path)
    assert without_timing(resumed["history"]) == without_timing(straight["history"])
