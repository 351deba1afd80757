"""GradNorm: weights that move, stay normalised, and survive a resume."""

import math

import pytest

from mmlab.training import train


def test_gradnorm_weights_move_and_sum_to_the_number_of_losses(tiny_config, tmp_path):
    record = train(tiny_config("gradnorm", epochs=1), checkpoint_dir=tmp_path, progress=False)
    h = record["history"][0]
    weights = [h[f"train/gradnorm_weight/{n}"] for n in ["multimodal", "unimodal/gray", "unimodal/color"]]
    assert math.isclose(sum(weights), 3.0, rel_tol=1e-4)  # epoch means of weights that always sum to 3
    assert max(abs(w - 1) for w in weights) > 1e-3  # they were learned


def test_gradnorm_resumes_to_the_same_result(tiny_config, tmp_path):
    config = tiny_config("gradnorm", epochs=2)
    straight = train(config, checkpoint_dir=tmp_path / "a", progress=False)

    def crash(epoch, metrics):
        if epoch == 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config, checkpoint_dir=tmp_path / "b", progress=False, callbacks=[crash])
    resumed = train(config, checkpoint_dir=tmp_path / "b", progress=False)
    strip = lambda hs: [{k: v for k, v in h.items() if not k.startswith("time/")} for h in hs]  # noqa: E731
    assert strip(resumed["history"]) == strip(straight["history"])
