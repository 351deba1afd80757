"""Batched random resized crop and flip (mmlab.data.augment)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmlab.data.augment import random_resized_crop, resize


def _ramp(n=4, size=16):
    """Images whose value is the pixel's column: a crop's values tell where it was taken."""
    cols = torch.arange(size, dtype=torch.float32).expand(size, size)
    return cols.expand(n, 3, size, size).clone()


def test_the_whole_frame_unflipped_is_the_identity():
    x = torch.rand(3, 2, 3, 16, 16)
    out = random_resized_crop(x, 16, torch.Generator().manual_seed(0), scale=(1, 1), ratio=(1, 1),
                              flip_probability=0.0)
    torch.testing.assert_close(out, x)


def test_flip_probability_one_mirrors_the_frame():
    x = torch.rand(5, 3, 8, 8)
    out = random_resized_crop(x, 8, scale=(1, 1), ratio=(1, 1), flip_probability=1.0)
    torch.testing.assert_close(out, x.flip(-1))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), size=st.sampled_from([8, 12, 16]))
def test_a_crop_samples_inside_the_frame_with_the_drawn_area(seed, size):
    x = _ramp(n=64)
    out = random_resized_crop(x, size, torch.Generator().manual_seed(seed), flip_probability=0.0)
    assert out.shape == (64, 3, size, size)
    assert out.min() >= 0 and out.max() <= 15  # values interpolate the frame's: never outside it
    width = out[:, 0, 0, -1] - out[:, 0, 0, 0]  # spread of columns covered, in pixels
    assert (width <= 15 + 1e-4).all() and (width >= 0).all()  # unflipped: left to right
    assert width.std() > 0.5  # every image draws its own crop


def test_the_same_generator_state_gives_the_same_crops():
    x = torch.rand(4, 3, 3, 20, 20)
    a = random_resized_crop(x, 10, torch.Generator().manual_seed(3))
    b = random_resized_crop(x, 10, torch.Generator().manual_seed(3))
    c = random_resized_crop(x, 10, torch.Generator().manual_seed(4))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_mean_area_matches_the_scale_range():
    x = _ramp(n=4000, size=32)
    out = random_resized_crop(x, 8, torch.Generator().manual_seed(0), ratio=(1, 1), flip_probability=0.0)
    side = (out[:, 0, 0, -1] - out[:, 0, 0, 0]) / 31 * 8 / 7  # fraction of the frame's width covered
    # area ~ U(0.08, 1) and side = sqrt(area): E[side] = (1 - 0.08^1.5) / (1.5 * 0.92)
    expected = (1 - 0.08 ** 1.5) / (1.5 * 0.92)
    assert abs(side.mean().item() - expected) < 0.03


def test_uint8_is_refused_and_resize_is_the_identity_at_size():
    with pytest.raises(TypeError, match="floating-point"):
        random_resized_crop(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), 4)
    x = torch.rand(2, 3, 3, 8, 8)
    assert resize(x, 8) is x
    assert resize(x, 4).shape == (2, 3, 3, 4, 4)
