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


# --------------------------------------------------------------------------- #
# The knobs of the unknown generator, and the named protocols (chapter 1)
# --------------------------------------------------------------------------- #
#: sha256 over the tensors of two builds (the full default one, and a small one with other options), made
#: by the code before the knobs existed (commit 02f3a6e): protocol "mmlab-1" must keep them bit for bit
MMLAB_1_DIGEST = "4bae802a04646b652533f692f1e69e804ea52fc20fabda1c964ee8cc481ec160"


def _digest_of_mmlab_1_builds() -> str:
    import hashlib

    from mmlab.data.registry import get_dataset

    spec, h = get_dataset("cgmnist"), hashlib.sha256()
    builds = [dict(train_size=None, val_size=5000, test_size=None, data_seed=0),
              dict(train_size=4000, val_size=500, test_size=1000, data_seed=3,
                   options={"val_coloring": "train", "jitter_variance": 0.1})]
    for kwargs in builds:
        built = spec.load_splits(**kwargs, root=str(require_real_mnist()))
        for name in ("train", "val", "test"):
            s = built[name]
            for t in (*s.inputs.values(), s.labels, s.colours, s.indices):
                h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def test_the_first_protocol_s_data_are_bit_identical_to_those_before_the_knobs(mnist: MNIST) -> None:
    assert _digest_of_mmlab_1_builds() == MMLAB_1_DIGEST


NO_JITTER = dict(train_size=2000, val_size=2000, test_size=None, jitter_variance=0.0, seed=3)


@pytest.mark.parametrize("agreement", [0.0, 0.04, 0.1, 0.3, 0.6, 1.0])
def test_test_agreement_is_the_measured_agreement_of_the_test_like_splits(mnist: MNIST, agreement) -> None:
    """Without jitter a colour names its class exactly, so the measured agreement is the knob, up to sampling
    error (4 standard errors); the colours of the other digits are spread over the nine other classes."""
    s = make_cgmnist(mnist, CGMNISTConfig(**NO_JITTER, test_agreement=agreement))
    for name in ("val", "test"):
        n = len(s[name])
        tolerance = 4 * math.sqrt(agreement * (1 - agreement) / n) + 1e-12
        assert abs(s[name].colour_label_agreement - agreement) <= tolerance, name
    test = s["test"]
    offset = (nearest_colour_class(test.colours) - test.labels) % 10  # 0: own class, 1..9: another
    others = torch.bincount(offset[offset > 0], minlength=10)[1:].double()
    if others.sum() > 1000:
        assert (others / others.sum() - 1 / 9).abs().max() < 0.03
    assert abs(s["train"].colour_label_agreement - 1.0) < 1e-12  # training colours are the label's


def test_a_test_agreement_changes_the_test_like_colours_only(mnist: MNIST) -> None:
    base = make_cgmnist(mnist, CGMNISTConfig(**NO_JITTER))
    other = make_cgmnist(mnist, CGMNISTConfig(**NO_JITTER, test_agreement=0.5))
    for x, y in zip(split_tensors(base["train"]), split_tensors(other["train"])):
        assert torch.equal(x, y)  # so a trained model is the same whatever the test agreement
    assert torch.equal(base["test"].inputs["gray"], other["test"].inputs["gray"])
    assert not torch.equal(base["test"].colours, other["test"].colours)


def test_probe_splits_are_the_test_digits_coloured_with_each_agreement(mnist: MNIST) -> None:
    probes = (0.0, 0.3, 0.6, 1.0)
    sizes = dict(train_size=1000, val_size=500, test_size=3000, seed=2, jitter_variance=0.0)  # colour = class
    config = CGMNISTConfig(**sizes, probe_agreements=probes)
    s = make_cgmnist(mnist, config)
    assert list(s) == ["train", "val", "test", *(f"test@agreement={a:g}" for a in probes)]
    for a in probes:
        probe = s[f"test@agreement={a:g}"]
        assert torch.equal(probe.inputs["gray"], s["test"].inputs["gray"])
        alone = make_cgmnist(mnist, CGMNISTConfig(**sizes, test_agreement=a))["test"]
        assert torch.equal(probe.colours, alone.colours)  # what test_agreement=a would have made
    # the same draws: a digit that keeps its own colour at one agreement keeps it at every higher one
    own = [nearest_colour_class(s[f"test@agreement={a:g}"].colours) == s["test"].labels for a in (0.3, 0.6, 1.0)]
    assert bool((own[0] <= own[1]).all()) and bool((own[1] <= own[2]).all()) and bool(own[2].all())


@pytest.mark.parametrize("spread", [0.0, 0.25, 0.5, 1.0])
def test_palette_spread_scales_the_distances_between_class_colours(spread) -> None:
    from mmlab.data.cgmnist import spread_palette

    palette = spread_palette(spread)
    assert torch.allclose(palette.mean(0), CLASS_COLOURS.mean(0), atol=1e-6)
    assert torch.allclose(torch.cdist(palette, palette), spread * torch.cdist(CLASS_COLOURS, CLASS_COLOURS), atol=1e-5)
    assert palette.min() >= 0 and palette.max() <= 1


def test_a_closer_palette_makes_the_training_colours_name_their_class_less_often(mnist: MNIST) -> None:
    agreement = {}
    for spread in (1.0, 0.5, 0.25):
        s = make_cgmnist(mnist, CGMNISTConfig(train_size=3000, val_size=100, test_size=100, palette_spread=spread))
        assert torch.equal(s["train"].palette if s["train"].palette is not None else CLASS_COLOURS,
                           CGMNISTConfig(palette_spread=spread).palette)
        agreement[spread] = s["train"].colour_label_agreement
    assert agreement[1.0] > agreement[0.5] > agreement[0.25] > 0.1


def test_mask_painting_gives_flat_colour_where_the_ink_is_at_least_half() -> None:
    images = torch.tensor([[[0, 60, 127], [128, 200, 255]]], dtype=torch.uint8)
    colour = torch.tensor([[0.2, 0.6, 1.0]])
    ink = paint(images, colour, "ink")
    mask = paint(images, colour, "mask")
    expected = (images >= 128)[:, None] * torch.round(255 * colour)[:, :, None, None]
    assert torch.equal(mask, expected.to(torch.uint8))
    assert not torch.equal(ink, mask)
    with pytest.raises(ValueError, match="rule must be one of 'ink', 'mask'"):
        paint(images, colour, "spray")


def test_pmr_normalisation_standardises_the_batches_with_pmr_s_statistics(mnist: MNIST) -> None:
    from mmlab.data.cgmnist import PMR_NORMALIZATION
    from mmlab.training.batches import ResidentBatches

    plain = make_cgmnist(mnist, CGMNISTConfig(train_size=256, val_size=10, test_size=10))["train"]
    normed = make_cgmnist(mnist, CGMNISTConfig(train_size=256, val_size=10, test_size=10, normalization="pmr"))["train"]
    assert torch.equal(plain.inputs["color"], normed.inputs["color"])  # the stored images are the same
    (x, _), = ResidentBatches(plain, ["gray", "color"], 256, torch.device("cpu")).epoch()
    (z, _), = ResidentBatches(normed, ["gray", "color"], 256, torch.device("cpu")).epoch()
    for m, (mean, std) in PMR_NORMALIZATION.items():
        shape = (1, -1, 1, 1)
        expected = (x[m] - torch.tensor(mean).reshape(shape)) / torch.tensor(std).reshape(shape)
        assert torch.allclose(z[m], expected, atol=1e-6)
    assert abs(float(z["gray"].mean()) - float((x["gray"].mean() - 0.1307) / 0.3081)) < 1e-5


def test_train_pool_all_trains_on_every_image_and_draws_validation_from_them(mnist: MNIST) -> None:
    held = make_cgmnist(mnist, CGMNISTConfig(val_size=5000, train_pool="held_out", test_size=10))
    every = make_cgmnist(mnist, CGMNISTConfig(val_size=5000, train_pool="all", test_size=10))
    assert len(held["train"]) == 55000 and len(every["train"]) == 60000
    assert not set(held["val"].indices.tolist()) & set(held["train"].indices.tolist())
    assert set(every["val"].indices.tolist()) <= set(every["train"].indices.tolist())
    assert torch.equal(held["val"].indices, every["val"].indices)
    with pytest.raises(ValueError, match=r"train_size=60001 is too large.*<= 60000"):
        make_cgmnist(mnist, CGMNISTConfig(train_size=60001, train_pool="all"))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"test_agreement": 1.5}, r"test_agreement must lie in \[0, 1\], but it is 1.5"),
        ({"test_agreement": "high"}, r"test_agreement must be a number in \[0, 1\]"),
        ({"palette_spread": -0.1}, r"palette_spread must lie in \[0, 1\]"),
        ({"painting": "spray"}, "painting must be one of 'ink', 'mask'"),
        ({"normalization": "imagenet"}, "normalization must be one of 'unit', 'pmr'"),
        ({"train_pool": "60k"}, "train_pool must be one of 'held_out', 'all'"),
        ({"probe_agreements": [0.2, 2]}, r"each of probe_agreements must lie in \[0, 1\]"),
        ({"probe_agreements": 0.2}, "probe_agreements must be a list"),
        ({"probe_agreements": [0.2, 0.2]}, "must not repeat a value"),
    ],
)
def test_a_bad_knob_value_names_the_valid_range(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        CGMNISTConfig(**kwargs)


def test_protocols_name_their_knobs_and_a_departure_from_them() -> None:
    from mmlab.data.cgmnist import PROTOCOL_KNOBS, describe_protocol, get_protocol, protocol_settings
    from mmlab.errors import UnknownNameError

    first = get_protocol("mmlab-1").values()
    assert set(first) == set(PROTOCOL_KNOBS)
    assert first == {k: getattr(CGMNISTConfig(), k) for k in PROTOCOL_KNOBS}
    assert describe_protocol({}) == "mmlab-1" == describe_protocol({"test_agreement": 0.1})
    assert describe_protocol({"test_agreement": 0.3, "painting": None}) == "mmlab-1 with test_agreement=0.3"
    assert protocol_settings({"protocol": "mmlab-1", "palette_spread": 0.5})["palette_spread"] == 0.5
    with pytest.raises(UnknownNameError, match="Unknown CG-MNIST protocol 'mmlab-9'. Valid CG-MNIST protocols: mmlab-1"):
        get_protocol("mmlab-9")
