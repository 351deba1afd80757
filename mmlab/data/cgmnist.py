"""Colored-and-gray MNIST (CG-MNIST): a two-modality data set with a colour shortcut.

Each sample shows the **same** MNIST digit twice, once per modality:

* ``"gray"``: the digit itself, ``uint8 [1, 28, 28]``;
* ``"color"``: the digit's ink painted in a colour, ``uint8 [3, 28, 28]``
  (pixel = colour x ink, on the same black background).

The colour is where the trap lies.  In the **training** split every class ``y``
has its own mean colour ``CLASS_COLOURS[y]``, and each sample's colour is that
mean plus Gaussian jitter (variance 0.03 per channel by default, clipped to
``[0, 1]``).  Colour alone therefore predicts the label almost perfectly, and a
network fed the colour modality learns the colour rather than the shape.  In
the **test** split the colour is drawn the same way but from the mean colour
of a class chosen at random, independently of the label, so the colour
shortcut learned in training does not transfer: a colour-reading model drops
to chance (10 %), while the gray modality is as informative as ever.  A
multimodal model trained jointly tends to lean on the easy colour modality and
under-train the gray one -- the imbalance that balanced multimodal learning
methods aim to correct.

The construction follows the coloured-MNIST protocol of Kim et al. (2019),
*Learning Not to Learn: Training Deep Neural Networks with Biased Data*
(CVPR 2019), in the two-modality form used as a benchmark by PMR (Fan et al.,
CVPR 2023) and MMPareto (Wei & Hu, *MMPareto: Boosting Multimodal Learning
with Innocent Unimodal Assistance*, ICML 2024).

**The original generator was never released**, so the ten class colours below
are this book's own choice, and numbers obtained here are comparable to each
other but not digit-for-digit to the papers.  The choice: the seven corners of
the RGB cube other than black (red, green, blue, yellow, cyan, magenta, white)
plus the three half-intensity colours teal, olive and purple.  Every pair of
colours is at least 0.71 apart in RGB space, which, with the default jitter
(standard deviation 0.17 per channel), lets about 95 % of training colours be
traced back to their class; no colour is near-black, because the background
is black and a dark digit would be hard to see.

Example::

    from mmlab.data import load_mnist, make_cgmnist, describe
    splits = make_cgmnist(load_mnist())
    describe(splits)   # train agreement ~0.95, val/test ~0.10
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from .mnist import MNIST

__all__ = [
    "CLASS_COLOURS",
    "COLOUR_NAMES",
    "CGMNISTConfig",
    "MultimodalSplit",
    "describe",
    "make_cgmnist",
    "nearest_colour_class",
    "paint",
]

#: Names of the class colours, indexed by digit.
COLOUR_NAMES: tuple[str, ...] = (
    "red",
    "green",
    "blue",
    "yellow",
    "cyan",
    "magenta",
    "white",
    "teal",
    "olive",
    "purple",
)

#: Mean RGB colour of each digit class (``float32 [10, 3]``, values in ``[0, 1]``).
CLASS_COLOURS: torch.Tensor = torch.tensor(
    [
        [1.0, 0.0, 0.0],  # 0 red
        [0.0, 1.0, 0.0],  # 1 green
        [0.0, 0.0, 1.0],  # 2 blue
        [1.0, 1.0, 0.0],  # 3 yellow
        [0.0, 1.0, 1.0],  # 4 cyan
        [1.0, 0.0, 1.0],  # 5 magenta
        [1.0, 1.0, 1.0],  # 6 white
        [0.0, 0.5, 0.5],  # 7 teal
        [0.5, 0.5, 0.0],  # 8 olive
        [0.5, 0.0, 0.5],  # 9 purple
    ],
    dtype=torch.float32,
)

NUM_CLASSES = 10
VAL_COLORINGS: tuple[str, ...] = ("test", "train")

# Number of images painted at once (float32 scratch memory of ~13 MB).
_PAINT_CHUNK = 1024


# --------------------------------------------------------------------------- #
# Configuration
# --------------------------------------------------------------------------- #
def _check_size(name: str, value: object, allow_none: bool) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        kind = "a non-negative integer or None" if allow_none else "a non-negative integer"
        raise ValueError(f"{name} must be {kind}, but it is {value!r}.")
    if value < 0:
        raise ValueError(f"{name} must not be negative, but it is {value}.")


@dataclass(frozen=True)
class CGMNISTConfig:
    """How to build CG-MNIST from MNIST.

    Attributes:
        jitter_variance: Variance of the Gaussian noise added to each colour
            channel (standard deviation ``sqrt(jitter_variance)``); 0.03 by
            default.  0 gives every class exactly one colour.
        train_size: Number of training samples; ``None`` uses all training
            images that are not held out for validation (55,000 by default).
        val_size: Number of MNIST training images held out for validation.
        test_size: Number of test samples; ``None`` uses all 10,000.
        val_coloring: ``"test"`` colours validation like the test set (colour
            not tied to the label), so validation shows the shortcut failing;
            ``"train"`` colours it like the training set.
        seed: Seed of every random choice (split, subsets, colours).
    """

    jitter_variance: float = 0.03
    train_size: int | None = None
    val_size: int = 5000
    test_size: int | None = None
    val_coloring: str = "test"
    seed: int = 0

    def __post_init__(self) -> None:
        v = self.jitter_variance
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
            raise ValueError(f"jitter_variance must be a number, but it is {v!r}.")
        if not math.isfinite(v) or v < 0:
            raise ValueError(
                f"jitter_variance must be a finite number >= 0 (it is a variance), but it is {v}."
            )
        _check_size("train_size", self.train_size, allow_none=True)
        _check_size("val_size", self.val_size, allow_none=False)
        _check_size("test_size", self.test_size, allow_none=True)
        if self.val_coloring not in VAL_COLORINGS:
            valid = ", ".join(repr(c) for c in VAL_COLORINGS)
            raise ValueError(
                f"val_coloring must be one of {valid}, but it is {self.val_coloring!r}."
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)):
            raise ValueError(f"seed must be an integer, but it is {self.seed!r}.")


# --------------------------------------------------------------------------- #
# Colour statistics
# --------------------------------------------------------------------------- #
def nearest_colour_class(colours: torch.Tensor) -> torch.Tensor:
    """For each colour ``[N, 3]``, the class whose mean colour is nearest (``int64 [N]``).

    This is what a model that reads only the colour could at best guess.
    """
    col = torch.as_tensor(colours, dtype=torch.float32).reshape(-1, 3).numpy()
    means = CLASS_COLOURS.numpy()
    # Squared distances [N, 10], in NumPy (single-threaded, cheap at this size).
    dist = ((col[:, None, :] - means[None, :, :]) ** 2).sum(axis=2)
    return torch.from_numpy(dist.argmin(axis=1).astype(np.int64))


def _cramers_v(a: torch.Tensor, b: torch.Tensor, k: int = NUM_CLASSES) -> float:
    """Cramér's V between two class vectors (0 = independent, 1 = one determines the other).

    Classes that never occur are left out of the contingency table; ``nan`` if
    fewer than two classes remain on either side (V is undefined then).
    """
    n = a.numel()
    if n == 0:
        return float("nan")
    table = torch.bincount(a * k + b, minlength=k * k).reshape(k, k).to(torch.float64)
    table = table[table.sum(1) > 0][:, table.sum(0) > 0]
    r, c = table.shape
    if min(r, c) < 2:
        return float("nan")
    expected = table.sum(1, keepdim=True) * table.sum(0, keepdim=True) / n
    chi2 = ((table - expected) ** 2 / expected).sum().item()
    return math.sqrt(chi2 / (n * (min(r, c) - 1)))


# --------------------------------------------------------------------------- #
# Splits
# --------------------------------------------------------------------------- #
@dataclass(repr=False)
class MultimodalSplit:
    """One split (train, val or test) of a two-modality data set.

    Attributes:
        name: ``"train"``, ``"val"`` or ``"test"``.
        inputs: One tensor per modality, first dimension ``N``; for CG-MNIST
            ``"gray"`` (``uint8 [N, 1, 28, 28]``) and ``"color"``
            (``uint8 [N, 3, 28, 28]``).
        labels: ``int64 [N]`` digit labels.
        colours: ``float32 [N, 3]`` the colour each ``"color"`` image was painted with.
        indices: ``int64 [N]`` position of each sample in the MNIST split it
            came from (the MNIST training set for train and val, the MNIST test
            set for test), or ``None``.
        colour_label_agreement: Fraction of samples whose colour is nearest to
            the mean colour of their own class: how often the colour shortcut
            gives the right answer (chance = 0.1).  Computed, not passed.
        cramers_v: Cramér's V between the nearest-colour class and the label
            (0 = colour says nothing about the label, 1 = it determines it).
            Computed, not passed.
    """

    name: str
    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor
    colours: torch.Tensor
    indices: torch.Tensor | None = None
    colour_label_agreement: float = field(init=False)
    cramers_v: float = field(init=False)

    def __post_init__(self) -> None:
        n = self.labels.shape[0]
        if self.labels.dim() != 1:
            shape = tuple(self.labels.shape)
            raise ValueError(f"labels must be one-dimensional, but have shape {shape}.")
        if not self.inputs:
            raise ValueError("inputs must hold at least one modality.")
        for key, tensor in self.inputs.items():
            if tensor.shape[0] != n:
                raise ValueError(
                    f"Modality {key!r} has {tensor.shape[0]} samples but there are {n} labels."
                )
        if tuple(self.colours.shape) != (n, 3):
            shape = tuple(self.colours.shape)
            raise ValueError(f"colours must have shape ({n}, 3), but have {shape}.")
        if self.indices is not None and tuple(self.indices.shape) != (n,):
            shape = tuple(self.indices.shape)
            raise ValueError(f"indices must have shape ({n},), but have {shape}.")
        nearest = nearest_colour_class(self.colours)
        self.colour_label_agreement = (
            (nearest == self.labels).double().mean().item() if n else float("nan")
        )
        self.cramers_v = _cramers_v(nearest, self.labels)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def modalities(self) -> tuple[str, ...]:
        """The modality names, e.g. ``("gray", "color")``."""
        return tuple(self.inputs)

    def subset(
        self, indices: Sequence[int] | np.ndarray | torch.Tensor, name: str | None = None
    ) -> MultimodalSplit:
        """A new split with the samples at ``indices`` (or where a boolean mask is true).

        The colour statistics are recomputed for the subset.
        """
        idx = torch.as_tensor(indices)
        if idx.dtype != torch.bool:
            idx = idx.to(torch.int64)
        return MultimodalSplit(
            name=self.name if name is None else name,
            inputs={key: tensor[idx] for key, tensor in self.inputs.items()},
            labels=self.labels[idx],
            colours=self.colours[idx],
            indices=None if self.indices is None else self.indices[idx],
        )

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}={tuple(v.shape)}" for k, v in self.inputs.items())
        return (
            f"MultimodalSplit(name={self.name!r}, size={len(self)}, {shapes}, "
            f"colour_label_agreement={self.colour_label_agreement:.3f}, "
            f"cramers_v={self.cramers_v:.3f})"
        )


# --------------------------------------------------------------------------- #
# Building CG-MNIST
# --------------------------------------------------------------------------- #
def paint(images: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    """Paint gray digits in colours: ``out[n, c] = round(colours[n, c] * images[n])``.

    (Rounded half up; no Python loop over samples.)

    With ink = ``image / 255`` this is ``255 * colour * ink``: where the
    digit's ink is full the pixel takes the full colour, where there is no ink
    (the black background) it stays 0.

    Args:
        images: ``uint8 [N, 28, 28]`` (any ``H, W``) gray images.
        colours: ``[N, 3]`` RGB colours in ``[0, 1]``, one per image (or ``[3]``
            for one colour for all).

    Returns:
        ``uint8 [N, 3, H, W]`` colour images.
    """
    if images.dim() != 3:
        raise ValueError(f"images must have shape [N, H, W], but have {tuple(images.shape)}.")
    if images.dtype != torch.uint8:
        raise ValueError(f"images must be uint8 (0..255), but are {images.dtype}.")
    n, h, w = images.shape
    colours = torch.as_tensor(colours, dtype=torch.float32)
    if colours.shape == (3,):
        colours = colours.expand(n, 3)
    if tuple(colours.shape) != (n, 3):
        raise ValueError(f"colours must have shape ({n}, 3), but have {tuple(colours.shape)}.")
    if n and not bool(((colours >= 0) & (colours <= 1)).all()):
        raise ValueError("colours must lie in [0, 1] (and not be NaN).")
    src = images.contiguous().numpy()
    col = colours.contiguous().numpy()
    out = np.empty((n, 3, h, w), dtype=np.uint8)
    # Vectorised over blocks of images.  The blocks keep the float scratch
    # buffers small enough to stay in the CPU cache and avoid allocating
    # ~0.5 GB at once.  NumPy rather than torch: its single-threaded loops stay
    # fast when other processes compete for the CPU (torch's thread pool then
    # slows down many times).
    block = max(1, min(_PAINT_CHUNK, n))
    ink_buf = np.empty((block, 1, h, w), dtype=np.float32)
    out_buf = np.empty((block, 3, h, w), dtype=np.float32)
    for start in range(0, n, block):
        stop = min(start + block, n)
        ink = ink_buf[: stop - start]
        ink[:, 0] = src[start:stop]  # 0..255 as float
        painted = out_buf[: stop - start]
        np.multiply(ink, col[start:stop, :, None, None], out=painted)  # 0..255
        # Round half up: add 0.5, then the cast to uint8 truncates (values are
        # >= 0.5 and <= 255.5, so the result lies in 0..255).
        painted += 0.5
        out[start:stop] = painted
    return torch.from_numpy(out)


def _draw_colours(
    labels: torch.Tensor, tied_to_label: bool, std: float, generator: torch.Generator
) -> torch.Tensor:
    """Colour per sample: a class mean colour plus Gaussian jitter, clipped to [0, 1].

    The class is the sample's label if ``tied_to_label``, else uniform at random.
    """
    n = labels.shape[0]
    if tied_to_label:
        classes = labels
    else:
        classes = torch.randint(0, NUM_CLASSES, (n,), generator=generator)
    jitter = torch.randn((n, 3), generator=generator) * std
    return (CLASS_COLOURS[classes] + jitter).clamp_(0.0, 1.0)


def _sorted_indices(indices: torch.Tensor, n: int) -> torch.Tensor:
    """``indices`` (distinct, in ``[0, n)``) in increasing order, without sorting."""
    mask = torch.zeros(n, dtype=torch.bool)
    mask[indices] = True
    return mask.nonzero().squeeze(1)


def _build_split(
    name: str,
    images: torch.Tensor,
    labels: torch.Tensor,
    indices: torch.Tensor,
    tied_to_label: bool,
    std: float,
    generator: torch.Generator,
) -> MultimodalSplit:
    gray = images[indices]
    y = labels[indices].to(torch.int64)
    colours = _draw_colours(y, tied_to_label, std, generator)
    return MultimodalSplit(
        name=name,
        inputs={"gray": gray.unsqueeze(1), "color": paint(gray, colours)},
        labels=y,
        colours=colours,
        indices=indices,
    )


def make_cgmnist(
    mnist: MNIST, config: CGMNISTConfig = CGMNISTConfig()
) -> dict[str, MultimodalSplit]:
    """Build the CG-MNIST train, validation and test splits from MNIST.

    * ``"val"``: ``config.val_size`` images held out at random from the 60,000
      MNIST training images; coloured like the test set (default) or like the
      training set (``val_coloring="train"``).
    * ``"train"``: the remaining training images (or a random
      ``config.train_size`` of them), colour = mean colour of the label's
      class + jitter.
    * ``"test"``: the MNIST test images (or a random ``config.test_size`` of
      them), colour = mean colour of a random class + jitter.

    Every random choice comes from one ``torch.Generator`` seeded with
    ``config.seed``: the same config gives bit-identical tensors.

    Raises:
        ValueError: If the sizes ask for more images than MNIST has.
    """
    n_pool = int(mnist.train_images.shape[0])
    n_test_pool = int(mnist.test_images.shape[0])
    if config.val_size > n_pool:
        raise ValueError(
            f"val_size={config.val_size} is larger than the MNIST training set "
            f"({n_pool} images) it is held out from."
        )
    available = n_pool - config.val_size
    if config.train_size is not None and config.train_size > available:
        raise ValueError(
            f"train_size={config.train_size} is too large: after holding out "
            f"val_size={config.val_size} of the {n_pool} MNIST training images for "
            f"validation, {available} are left. Use train_size <= {available} "
            "or a smaller val_size."
        )
    if config.test_size is not None and config.test_size > n_test_pool:
        raise ValueError(
            f"test_size={config.test_size} is larger than the MNIST test set "
            f"({n_test_pool} images). Use test_size <= {n_test_pool} or None for all."
        )

    generator = torch.Generator().manual_seed(int(config.seed))
    std = math.sqrt(config.jitter_variance)

    perm = torch.randperm(n_pool, generator=generator)
    val_idx = _sorted_indices(perm[: config.val_size], n_pool)
    rest = perm[config.val_size :]
    if config.train_size is not None:
        rest = rest[: config.train_size]
    train_idx = _sorted_indices(rest, n_pool)
    if config.test_size is None:
        test_idx = torch.arange(n_test_pool)
    else:
        chosen = torch.randperm(n_test_pool, generator=generator)[: config.test_size]
        test_idx = _sorted_indices(chosen, n_test_pool)

    train = _build_split(
        "train", mnist.train_images, mnist.train_labels, train_idx, True, std, generator
    )
    val = _build_split(
        "val",
        mnist.train_images,
        mnist.train_labels,
        val_idx,
        config.val_coloring == "train",
        std,
        generator,
    )
    test = _build_split(
        "test", mnist.test_images, mnist.test_labels, test_idx, False, std, generator
    )
    return {"train": train, "val": val, "test": test}


def describe(splits: Mapping[str, MultimodalSplit] | Iterable[MultimodalSplit]) -> pd.DataFrame:
    """One row per split: name, size, colour_label_agreement, cramers_v.

    Read it as: how far can the colour alone be trusted in each split?
    Agreement near 1 and V near 1 mean the shortcut works; agreement near 0.1
    and V near 0 mean it does not.
    """
    items = splits.values() if isinstance(splits, Mapping) else splits
    rows = [
        {
            "name": s.name,
            "size": len(s),
            "colour_label_agreement": s.colour_label_agreement,
            "cramers_v": s.cramers_v,
        }
        for s in items
    ]
    return pd.DataFrame(rows, columns=["name", "size", "colour_label_agreement", "cramers_v"])
