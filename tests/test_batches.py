"""Resident batches (mmlab.training.batches): float inputs, the per-epoch augmentation, and
the forward precision of a run."""

from __future__ import annotations

import pytest
import torch

from mmlab import RunConfig
from mmlab.data.split import Split
from mmlab.training.batches import ResidentBatches


def _split(n=10):
    return Split("train", {"image": torch.full((n, 1, 2, 2), 255, dtype=torch.uint8),
                           "audio": torch.full((n, 1, 3), -2.5, dtype=torch.float16)},
                 torch.arange(n) % 3)


def test_uint8_is_scaled_and_float_passes_as_float32():
    inputs, labels = next(ResidentBatches(_split(), ["image", "audio"], 4, torch.device("cpu")).epoch(0))
    assert inputs["image"].dtype == inputs["audio"].dtype == torch.float32
    assert torch.all(inputs["image"] == 1.0) and torch.all(inputs["audio"] == -2.5)


def test_the_transform_sees_every_training_batch_with_a_generator_fixed_per_epoch():
    def jitter(inputs, generator):
        noise = torch.rand(inputs["audio"].shape, generator=generator, device=inputs["audio"].device)
        return {**inputs, "audio": inputs["audio"] + noise}

    batches = ResidentBatches(_split(), ["image", "audio"], 4, torch.device("cpu"), shuffle=True, seed=1,
                              transform=jitter)
    first = [x["audio"] for x, _ in batches.epoch(0)]
    again = [x["audio"] for x, _ in batches.epoch(0)]
    other = [x["audio"] for x, _ in batches.epoch(1)]
    for a, b in zip(first, again):
        torch.testing.assert_close(a, b)  # a resumed epoch sees the same augmentation
    assert not torch.allclose(first[0], other[0])
    assert all((a > -2.5).all() and (a < -1.5).all() for a in first)


def test_precision_is_checked_and_kept_out_of_the_key_at_its_default():
    base = RunConfig.from_profile(profile="smoke")
    assert base.with_(precision="fp32").key == base.key
    assert base.with_(precision="bf16").key != base.key
    with pytest.raises(ValueError, match="precision"):
        base.with_(precision="fp8").validate()


def test_a_bf16_run_trains(tiny_config, tmp_path):
    from mmlab.training import train

    import torch

    seen = []  # the dtype of every convolution's output, through a global forward hook

    def hook(module, args, output):
        if isinstance(module, torch.nn.Conv2d):
            seen.append(output.dtype)

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        record = train(tiny_config("uniform", epochs=1, precision="bf16"), checkpoint_dir=tmp_path / "bf16",
                       progress=False)
    finally:
        handle.remove()
    assert record["config"]["precision"] == "bf16"
    assert seen and torch.bfloat16 in seen  # the convolutions did run in bfloat16
    fp32 = train(tiny_config("uniform", epochs=1), checkpoint_dir=tmp_path / "fp32", progress=False)
    loss, loss32 = record["history"][0]["train/loss"], fp32["history"][0]["train/loss"]
    assert loss != loss32 and abs(loss - loss32) < 0.05 * abs(loss32)  # another precision, the same training


@pytest.mark.parametrize("n, batch_size, kept", [(9, 4, 8), (10, 4, 10), (8, 4, 8)])
def test_a_shuffled_epoch_visits_each_sample_once_and_has_len_batches(n, batch_size, kept):
    # n = 9, batch 4: the last batch would hold one sample (BatchNorm cannot train on it) and is dropped
    split = Split("train", {"x": torch.arange(n, dtype=torch.float32)[:, None]}, torch.arange(n))
    batches = ResidentBatches(split, ["x"], batch_size, torch.device("cpu"), shuffle=True, seed=5)
    for epoch in (0, 1):
        seen = torch.cat([x["x"].flatten() for x, _ in batches.epoch(epoch)])
        assert len(seen) == kept and len(set(seen.tolist())) == kept  # no sample twice
        labels = torch.cat([y for _, y in batches.epoch(epoch)])
        assert torch.equal(seen.long(), labels)  # inputs and labels stay paired
        assert len(list(batches.epoch(epoch))) == len(batches)
    first, second = (torch.cat([x["x"].flatten() for x, _ in batches.epoch(e)]) for e in (0, 1))
    assert not torch.equal(first, second)  # each epoch its own order
    assert torch.equal(first, torch.cat([x["x"].flatten() for x, _ in batches.epoch(0)]))  # and the same again
