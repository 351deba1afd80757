"""Data sets of the book: loaders that find, verify and prepare them."""

from .cgmnist import (
    CLASS_COLOURS,
    COLOUR_NAMES,
    CGMNISTConfig,
    MultimodalSplit,
    describe,
    make_cgmnist,
    nearest_colour_class,
    paint,
)
from .errors import DataIntegrityError, DataNotFoundError
from .mnist import MNIST, MNIST_MIRRORS, MNIST_SHA256, find_mnist_dir, load_mnist, read_idx

__all__ = [
    "CLASS_COLOURS",
    "COLOUR_NAMES",
    "CGMNISTConfig",
    "DataIntegrityError",
    "DataNotFoundError",
    "MNIST",
    "MNIST_MIRRORS",
    "MNIST_SHA256",
    "MultimodalSplit",
    "describe",
    "find_mnist_dir",
    "load_mnist",
    "make_cgmnist",
    "nearest_colour_class",
    "paint",
    "read_idx",
]
