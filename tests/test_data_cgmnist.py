"""Tests of mmlab.data.cgmnist: the Colored-and-gray MNIST construction.

Built from the real MNIST, found as the library finds it (``tests/data_sources.py``); the tests
that need it are skipped, saying where it was looked for, where it is absent.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mmlab.data import (
    CLASS_COLOURS,
    MNIST,
    CGMNISTConfig,
    MultimodalSplit,
    describe,
    load_mnist,
    make_cgmnist,
    nearest_colour_class,
    paint,
)
from data_sources import require_real_mnist

SMALL = CGMNISTConfig(train_size=3000, val_size=1000, test_size=2000, seed=7)


@pytest.fixture(scope="module")
def mnist() -> MNIST:
    return load_mnist(root=require_real_mnist(), download=False)


@pytest.fixture(scope="module")
def splits(mnist: MNIST) -> dict[str, MultimodalSplit]:
    return make_cgmnist(mnist)  # the default configuration, full size


def split_tensors(split: MultimodalSplit) -> list[torch.Tensor]:
    assert split.indices is not None
    return [split.inputs["gray"], split.inputs["color"], split.labels, split.colours, split.indices]


# --------------------------------------------------------------------------- #
# Colours
# --------------------------------------------------------------------------- #
def test_class_colours_are_distinct_and_not_near_black() -> None:
    assert CLASS_COLOURS.shape == (10, 3) and CLASS_COLOURS.dtype == torch.float32
    assert CLASS_COLOURS.min() >= 0 and CLASS_COLOURS.max() <= 1
    dist = torch.cdist(CLASS_COLOURS, CLASS_COLOURS) + 10 * torch.eye(10)
    assert dist.min() > 0.7  # well apart compared with the jitter std 0.17
    assert CLASS_COLOURS.max(dim=1).values.min() >= 0.5  # visible on black
    assert nearest_colour_class(CLASS_COLOURS).tolist() == list(range(10))


# --------------------------------------------------------------------------- #
# paint
# --------------------------------------------------------------------------- #
images_strategy = st.integers(1, 4).flatmap(
    lambda n: st.tuples(
        hnp.arrays(np.uint8, (n, 5, 6)),
        hnp.arrays(np.float32, (n, 3), elements=st.floats(0, 1, width=32)),
    )
)


@settings(max_examples=100, deadline=None)
@given(data=images_strategy)
def test_paint_is_colour_times_ink(data: tuple[np.ndarray, np.ndarray]) -> None:
    images, colours = (torch.from_numpy(a) for a in data)
    out = paint(images, colours)
    assert out.shape == (images.shape[0], 3, 5, 6) and out.dtype == torch.uint8
    exact = colours[:, :, None, None].double() * images[:, None].double()
    assert (out.double() - exact).abs().max() <= 0.5 + 1e-3  # rounded colour * ink
    background = (images == 0)[:, None].expand_as(out)
    assert (out[background] == 0).all()  # black stays black
    assert int(out.max()) <= int(images.max())  # never brighter than the ink (<= 255)


@settings(max_examples=100, deadline=None)
@given(data=images_strategy, scale=st.floats(0, 1), split=st.floats(0, 1))
def test_paint_is_linear_in_the_colour(
    data: tuple[np.ndarray, np.ndarray], scale: float, split: float
) -> None:
    images, colours = (torch.from_numpy(a) for a in data)
    base = paint(images, colours).double()
    # Homogeneous: paint(a * c) = a * paint(c), up to rounding.
    scaled = paint(images, colours * scale).double()
    assert (scaled - scale * base).abs().max() <= 1.0 + 1e-6
    # Additive: paint(c1 + c2) = paint(c1) + paint(c2), up to rounding.
    c1 = colours * split
    c2 = (colours - c1).clamp(min=0)
    total = paint(images, c1).double() + paint(images, c2).double()
    assert (paint(images, c1 + c2).double() - total).abs().max() <= 1.5 + 1e-6


def test_paint_primary_colours_copy_the_gray_image() -> None:
    images = torch.arange(256, dtype=torch.uint8).reshape(1, 16, 16).repeat(3, 1, 1)
    colours = torch.eye(3)
    out = paint(images, colours)
    for i in range(3):
        assert torch.equal(out[i, i], images[i])
        assert out[i].sum() == images[i].sum(dtype=torch.int64)
    assert torch.equal(paint(images, torch.ones(3)), images[:, None].expand(3, 3, 16, 16))


@pytest.mark.parametrize(
    "images, colours, match",
    [
        (torch.zeros(2, 4, 4, dtype=torch.uint8), torch.full((2, 3), 1.5), r"\[0, 1\]"),
        (torch.zeros(2, 4, 4, dtype=torch.uint8), torch.full((2, 3), float("nan")), "NaN"),
        (torch.zeros(2, 4, 4, dtype=torch.uint8), torch.zeros(3, 3), "shape"),
        (torch.zeros(2, 4, 4, dtype=torch.float32), torch.zeros(2, 3), "uint8"),
        (torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(2, 3), r"\[N, H, W\]"),
    ],
)
def test_paint_rejects_bad_input(images: torch.Tensor, colours: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        paint(images, colours)


# --------------------------------------------------------------------------- #
# Configuration
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"train_size": -1}, "train_size must not be negative"),
        ({"val_size": -5}, "val_size must not be negative"),
        ({"test_size": -1}, "test_size must not be negative"),
        ({"val_size": None}, "val_size must be a non-negative integer"),
        ({"train_size": 2.5}, "train_size must be"),
        ({"jitter_variance": -0.01}, "jitter_variance"),
        ({"jitter_variance": float("nan")}, "jitter_variance"),
        ({"val_coloring": "gray"}, "'test', 'train'"),
        ({"seed": "zero"}, "seed"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CGMNISTConfig(**kwargs)


@given(
    train=st.none() | st.integers(0, 10**6),
    val=st.integers(0, 10**6),
    test=st.none() | st.integers(0, 10**6),
    var=st.floats(0, 10),
    coloring=st.sampled_from(["test", "train"]),
)
def test_config_accepts_every_valid_value(train, val, test, var, coloring) -> None:
    config = CGMNISTConfig(var, train, val, test, coloring)
    assert config.val_size == val and config.val_coloring == coloring


def test_sizes_larger_than_mnist_are_refused(mnist: MNIST) -> None:
    with pytest.raises(ValueError, match=r"train_size=55001 is too large.*<= 55000"):
        make_cgmnist(mnist, CGMNISTConfig(train_size=55001))
    with pytest.raises(ValueError, match="test_size=10001"):
        make_cgmnist(mnist, CGMNISTConfig(test_size=10001))
    with pytest.raises(ValueError, match="val_size=60001"):
        make_cgmnist(mnist, CGMNISTConfig(val_size=60001))


# --------------------------------------------------------------------------- #
# make_cgmnist
# --------------------------------------------------------------------------- #
def test_same_seed_is_bit_identical_and_other_seed_differs(mnist: MNIST) -> None:
    a, b = make_cgmnist(mnist, SMALL), make_cgmnist(mnist, SMALL)
    other = make_cgmnist(mnist, CGMNISTConfig(**{**SMALL.__dict__, "seed": 8}))
    for name in ("train", "val", "test"):
        for x, y in zip(split_tensors(a[name]), split_tensors(b[name])):
            assert torch.equal(x, y)
        assert not torch.equal(a[name].colours, other[name].colours)
        assert not torch.equal(a[name].indices, other[name].indices)


def test_default_sizes_and_types(splits: dict[str, MultimodalSplit]) -> None:
    assert list(splits) == ["train", "val", "test"]
    assert {k: len(s) for k, s in splits.items()} == {"train": 55000, "val": 5000, "test": 10000}
    for name, s in splits.items():
        n = len(s)
        assert s.name == name
        assert s.inputs["gray"].shape == (n, 1, 28, 28) and s.inputs["gray"].dtype == torch.uint8
        assert s.inputs["color"].shape == (n, 3, 28, 28) and s.inputs["color"].dtype == torch.uint8
        assert s.labels.shape == (n,) and s.labels.dtype == torch.int64
        assert s.colours.shape == (n, 3) and s.colours.min() >= 0 and s.colours.max() <= 1


def test_train_and_val_are_disjoint_parts_of_the_mnist_training_set(
    mnist: MNIST, splits: dict[str, MultimodalSplit]
) -> None:
    train, val, test = splits["train"], splits["val"], splits["test"]
    tr, va = set(train.indices.tolist()), set(val.indices.tolist())
    assert len(tr) == len(train) and len(va) == len(val)  # no repeats
    assert not tr & va
    assert tr | va == set(range(60000))
    assert torch.equal(test.indices, torch.arange(10000))
    # The samples really are those MNIST images and labels.
    for split, images, labels in (
        (train, mnist.train_images, mnist.train_labels),
        (val, mnist.train_images, mnist.train_labels),
        (test, mnist.test_images, mnist.test_labels),
    ):
        assert torch.equal(split.inputs["gray"][:, 0], images[split.indices])
        assert torch.equal(split.labels, labels[split.indices])
    # The validation part is random, not a block at the start or end.
    assert 0.3 < val.indices.double().mean().item() / 60000 < 0.7


def test_subset_sizes_are_seeded_random_subsets(mnist: MNIST) -> None:
    s = make_cgmnist(mnist, SMALL)
    assert (len(s["train"]), len(s["val"]), len(s["test"])) == (3000, 1000, 2000)
    assert not set(s["train"].indices.tolist()) & set(s["val"].indices.tolist())
    assert len(set(s["test"].indices.tolist())) == 2000
    assert s["test"].indices.max() > 5000  # spread over the test set, not its start
    # A bigger train_size with the same seed extends the smaller one.
    bigger = make_cgmnist(mnist, CGMNISTConfig(**{**SMALL.__dict__, "train_size": 6000}))
    assert set(s["train"].indices.tolist()) <= set(bigger["train"].indices.tolist())
    assert torch.equal(s["val"].indices, bigger["val"].indices)


def test_colour_predicts_the_label_in_training_but_not_in_test(
    splits: dict[str, MultimodalSplit],
) -> None:
    train, val, test = splits["train"], splits["val"], splits["test"]
    assert train.colour_label_agreement > 0.9 and train.cramers_v > 0.85
    assert test.colour_label_agreement < 0.2 and test.cramers_v < 0.1
    assert val.colour_label_agreement < 0.2 and val.cramers_v < 0.1
    # Test colours are drawn from all ten class colours, evenly.
    counts = torch.bincount(nearest_colour_class(test.colours), minlength=10)
    assert counts.min() > 700
    # Agreement is what it says: the nearest class mean colour equals the label.
    agree = (nearest_colour_class(train.colours) == train.labels).double().mean().item()
    assert agree == pytest.approx(train.colour_label_agreement)


def test_val_coloring_train_makes_validation_look_like_training(mnist: MNIST) -> None:
    s = make_cgmnist(mnist, CGMNISTConfig(**{**SMALL.__dict__, "val_coloring": "train"}))
    assert s["val"].colour_label_agreement > 0.9
    assert s["test"].colour_label_agreement < 0.2


def test_jitter_has_the_configured_variance(splits: dict[str, MultimodalSplit]) -> None:
    train = splits["train"]
    means = CLASS_COLOURS[train.labels]
    residual = train.colours - means
    # Clipping to [0, 1] only cuts off the half of the noise that points out of
    # the cube.  For a channel whose mean is 0 use the positive residuals, for
    # mean 1 the negative ones, for 0.5 all of them (clipped there < 0.5 %):
    # in each case E[r^2] = variance of the un-clipped jitter.
    inward = torch.where(means == 0, residual > 0, torch.where(means == 1, residual < 0, True))
    rms = residual[inward].pow(2).mean().sqrt().item()
    assert rms == pytest.approx(math.sqrt(0.03), rel=0.03)
    assert residual[means == 0.5].mean().abs() < 0.005  # centred on the class colour


@pytest.mark.parametrize("variance", [0.0, 0.005])
def test_jitter_scales_with_the_variance(mnist: MNIST, variance: float) -> None:
    config = CGMNISTConfig(**{**SMALL.__dict__, "jitter_variance": variance})
    train = make_cgmnist(mnist, config)["train"]
    residual = train.colours - CLASS_COLOURS[train.labels]
    mid = CLASS_COLOURS[train.labels] == 0.5
    assert residual[mid].std().item() == pytest.approx(math.sqrt(variance), abs=0.004)
    if variance == 0:
        assert train.colour_label_agreement == 1.0


def test_gray_and_color_show_the_same_digit(splits: dict[str, MultimodalSplit]) -> None:
    for split in splits.values():
        gray = split.inputs["gray"][:3000].double()  # [n, 1, 28, 28]
        color = split.inputs["color"][:3000].double()  # [n, 3, 28, 28]
        expected = split.colours[:3000, :, None, None].double() * gray
        assert (color - expected).abs().max() <= 0.5 + 1e-3
        # Summed over channels and normalised, the colour image is the gray ink.
        summed = color.sum(1, keepdim=True)
        ink = gray / 255
        peak = summed.amax(dim=(2, 3), keepdim=True)
        ok = peak[:, 0, 0, 0] > 100  # skip near-black colours, where rounding dominates
        ratio = summed / peak.clamp(min=1)
        assert (ratio[ok] - ink[ok]).abs().max() < 0.05
        assert ((summed == 0) | (gray > 0)).all()  # no colour where there is no ink


# --------------------------------------------------------------------------- #
# MultimodalSplit and describe
# --------------------------------------------------------------------------- #
def fake_split(labels: list[int], colour_classes: list[int]) -> MultimodalSplit:
    n = len(labels)
    return MultimodalSplit(
        name="fake",
        inputs={
            "gray": torch.zeros(n, 1, 2, 2, dtype=torch.uint8),
            "color": torch.zeros(n, 3, 2, 2, dtype=torch.uint8),
        },
        labels=torch.tensor(labels),
        colours=CLASS_COLOURS[torch.tensor(colour_classes)],
    )


def test_agreement_and_cramers_v_on_known_tables() -> None:
    labels = list(range(10)) * 20
    same = fake_split(labels, labels)
    assert same.colour_label_agreement == 1.0 and same.cramers_v == pytest.approx(1.0)
    shifted = fake_split(labels, [(y + 1) % 10 for y in labels])
    # The colour still determines the label (V = 1), but is never "its" colour.
    assert shifted.colour_label_agreement == 0.0 and shifted.cramers_v == pytest.approx(1.0)
    # Every colour with every label equally often: independent.
    crossed = fake_split([y for y in range(10) for _ in range(10)], list(range(10)) * 10)
    assert crossed.colour_label_agreement == pytest.approx(0.1)
    assert crossed.cramers_v == pytest.approx(0.0)


def test_split_checks_its_lengths() -> None:
    with pytest.raises(ValueError, match="samples but there are"):
        MultimodalSplit(
            name="bad",
            inputs={"gray": torch.zeros(3, 1, 2, 2, dtype=torch.uint8)},
            labels=torch.zeros(4, dtype=torch.int64),
            colours=torch.zeros(4, 3),
        )


def test_subset_recomputes_the_statistics(splits: dict[str, MultimodalSplit]) -> None:
    train = splits["train"]
    wrong = nearest_colour_class(train.colours) != train.labels
    fooled = train.subset(wrong)
    assert len(fooled) == int(wrong.sum()) > 0
    assert fooled.colour_label_agreement == 0.0
    picked = train.subset([5, 0, 7], name="three")
    assert picked.name == "three" and len(picked) == 3
    assert torch.equal(picked.labels, train.labels[[5, 0, 7]])
    assert torch.equal(picked.inputs["color"], train.inputs["color"][[5, 0, 7]])
    assert torch.equal(picked.indices, train.indices[[5, 0, 7]])


def test_describe_has_one_row_per_split(splits: dict[str, MultimodalSplit]) -> None:
    table = describe(splits)
    assert isinstance(table, pd.DataFrame)
    assert list(table.columns) == ["name", "size", "colour_label_agreement", "cramers_v"]
    assert table["name"].tolist() == ["train", "val", "test"]
    assert table["size"].tolist() == [55000, 5000, 10000]
    assert table["colour_label_agreement"].tolist() == [
        s.colour_label_agreement for s in splits.values()
    ]
    assert describe(list(splits.values())).equals(table)
