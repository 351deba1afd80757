"""MNIST: find it, download it if allowed, verify it, and read it.

MNIST (LeCun, Cortes and Burges) is distributed as four IDX files, usually
gzipped::

    train-images-idx3-ubyte   60,000 x 28 x 28 uint8 images
    train-labels-idx1-ubyte   60,000 uint8 labels 0..9
    t10k-images-idx3-ubyte    10,000 x 28 x 28 uint8 images
    t10k-labels-idx1-ubyte    10,000 uint8 labels 0..9

:func:`load_mnist` looks for them, in this order,

1. in the folder passed as ``root``,
2. in the folder named by the environment variable ``MMLAB_DATA``,
3. in the cache folder (``cache_dir``, else ``$MMLAB_CACHE``, else
   ``~/.cache/mmlab``),

accepting in each folder the files either directly or in a ``mnist/``
sub-folder, each either as ``name`` or ``name.gz``.  If none of these folders
holds all four files and ``download=True``, the files are downloaded from
public mirrors into ``<cache>/mnist/``.

Every file is checked against the SHA-256 of its *decompressed* content
(:data:`MNIST_SHA256`), so a gzipped and a raw copy, or two copies gzipped
with different settings, are accepted alike, while a truncated, corrupt or
altered file is refused with a :class:`~mmlab.data.errors.DataIntegrityError`
instead of being used or silently skipped.

Example::

    from mmlab.data import load_mnist
    mnist = load_mnist()                  # or load_mnist(root="/data")
    mnist.train_images.shape              # torch.Size([60000, 28, 28])
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import sys
import urllib.error
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..io import atomic_write_bytes
from .download import FETCH_ERRORS, fetch, fetch_failure
from .errors import DataIntegrityError, DataNotFoundError, check_named_root

__all__ = [
    "MNIST",
    "MNIST_FILES",
    "MNIST_MIRRORS",
    "MNIST_SHA256",
    "find_mnist_dir",
    "load_mnist",
    "read_idx",
]

#: The four MNIST files, by their standard names (without ``.gz``).
MNIST_FILES: tuple[str, ...] = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

#: SHA-256 of each file's decompressed content (the standard MNIST hashes).
MNIST_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

#: Public mirrors of the gzipped files; a file's URL is ``base + name + ".gz"``.
MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

#: Environment variable naming a folder that holds the data.
DATA_ENV = "MMLAB_DATA"
#: Environment variable naming the cache folder (default ``~/.cache/mmlab``).
CACHE_ENV = "MMLAB_CACHE"

# IDX type codes (third byte of the magic number) -> big-endian numpy dtype.
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
_REFETCH_ADVICE = (
    "Delete the file and fetch it again (load_mnist downloads a fresh copy "
    "when download=True), or replace it with a good copy."
)


# --------------------------------------------------------------------------- #
# Reading IDX files
# --------------------------------------------------------------------------- #
def _decompress_if_gzipped(raw: bytes, label: str) -> bytes:
    """Return ``raw`` decompressed if it is a gzip stream, else unchanged.

    Whether the data is gzipped is decided by its first two bytes, not by the
    file name, so a raw file named ``.gz`` (or the reverse) is still read.
    """
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as err:
        raise DataIntegrityError(
            f"The gzip file {label} is corrupt or truncated and cannot be "
            f"decompressed ({type(err).__name__}: {err}). {_REFETCH_ADVICE}"
        ) from err


class _IdxProblem(Exception):
    """Internal: what is wrong with some IDX bytes, as the end of a sentence."""


def _idx_layout(data: bytes) -> tuple[np.dtype, tuple[int, ...], int]:
    """Check an IDX header against the data length.

    Returns ``(dtype, shape, header_length)``; raises :class:`_IdxProblem`
    with a description such as "is truncated: ..." if the bytes are malformed.
    """
    if len(data) < 4:
        raise _IdxProblem(
            f"is too short to be an IDX file: it has {len(data)} bytes, "
            "but the header alone needs at least 4"
        )
    if data[0] != 0 or data[1] != 0:
        raise _IdxProblem(
            "does not start with an IDX magic number (its first two bytes "
            f"are 0x{data[0]:02x} 0x{data[1]:02x} instead of 0x00 0x00)"
        )
    type_code, ndim = data[2], data[3]
    if type_code not in _IDX_DTYPES:
        known = ", ".join(f"0x{c:02x}" for c in _IDX_DTYPES)
        raise _IdxProblem(
            f"has an unknown data type code 0x{type_code:02x} (known codes: {known})"
        )
    if ndim == 0:
        raise _IdxProblem("declares zero dimensions in its header")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise _IdxProblem(
            f"is truncated inside its header: {ndim} dimensions need a "
            f"{header_len}-byte header, but the file has only {len(data)} bytes"
        )
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = _IDX_DTYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = len(data) - header_len
    if actual < expected:
        raise _IdxProblem(
            f"is truncated: its header declares shape {shape} ({expected:,} bytes "
            f"of data), but only {actual:,} bytes follow the header"
        )
    if actual > expected:
        raise _IdxProblem(
            f"is longer than its header says: the header declares shape {shape} "
            f"({expected:,} bytes of data), but {actual:,} bytes follow the header"
        )
    return dtype, shape, header_len


def _check_and_parse(data: bytes, label: str, expected_sha256: str | None) -> np.ndarray:
    """Verify decompressed IDX ``data`` (layout, and SHA-256 if given) and parse it.

    Raises :class:`DataIntegrityError` naming ``label`` if anything is wrong.
    """
    try:
        dtype, shape, header_len = _idx_layout(data)
        problem = None
    except _IdxProblem as err:
        problem = str(err)
    if expected_sha256 is not None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected_sha256.lower():
            also = f" The file also {problem}." if problem else ""
            raise DataIntegrityError(
                f"The file {label} is corrupt or has been altered: the SHA-256 "
                f"of its decompressed content is {actual}, but {expected_sha256} "
                f"was expected.{also} {_REFETCH_ADVICE}"
            )
    if problem is not None:
        raise DataIntegrityError(f"The IDX file {label} {problem}. {_REFETCH_ADVICE}")
    count = int(np.prod(shape, dtype=np.int64))
    array = np.frombuffer(data, dtype=dtype, count=count, offset=header_len)
    # Copy into a native-endian, writable array that owns its memory.
    return array.astype(dtype.newbyteorder("="), copy=True).reshape(shape)


def read_idx(path: str | os.PathLike[str], expected_sha256: str | None = None) -> np.ndarray:
    """Read an IDX file (gzipped or raw) into a NumPy array.

    The IDX format is a 4-byte magic number (two zero bytes, a type code such
    as ``0x08`` for uint8, and the number of dimensions), one big-endian
    32-bit size per dimension, then the data in C order.

    Args:
        path: The file to read; ``.gz`` or raw (detected from its content).
        expected_sha256: If given, the SHA-256 (hex) that the *decompressed*
            content must have.

    Returns:
        An array with the shape and dtype declared in the header (native byte
        order, writable).

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        DataIntegrityError: If the gzip stream is corrupt or truncated, the
            header is malformed, the data is shorter or longer than the header
            declares, or the content's SHA-256 differs from ``expected_sha256``.
            The message names the file.
    """
    path = Path(path)
    raw = path.read_bytes()
    data = _decompress_if_gzipped(raw, str(path))
    return _check_and_parse(data, str(path), expected_sha256)


@functools.lru_cache(maxsize=8)
def _read_verified(path: str, mtime_ns: int, size: int, expected_sha256: str) -> np.ndarray:
    """Cached :func:`read_idx`, keyed by resolved path, mtime and size.

    ``mtime_ns`` and ``size`` are only part of the key, so that a file that was
    replaced on disk is read again.  The array is made read-only because it is
    shared between calls; callers hand out copies.
    """
    array = read_idx(path, expected_sha256)
    array.setflags(write=False)
    return array


# --------------------------------------------------------------------------- #
# The data set object
# --------------------------------------------------------------------------- #
@dataclass(frozen=True, repr=False)
class MNIST:
    """The MNIST data set as PyTorch tensors.

    Attributes:
        train_images: ``uint8`` tensor ``[60000, 28, 28]``, ink 0..255 on black.
        train_labels: ``int64`` tensor ``[60000]``, digits 0..9.
        test_images: ``uint8`` tensor ``[10000, 28, 28]``.
        test_labels: ``int64`` tensor ``[10000]``.
        source: The folder the files were read from.

    Each call of :func:`load_mnist` returns fresh tensors, so changing them in
    place does not affect later calls.
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    source: str

    def __repr__(self) -> str:
        return (
            f"MNIST(train={tuple(self.train_images.shape)}, "
            f"test={tuple(self.test_images.shape)}, source={self.source!r})"
        )


# --------------------------------------------------------------------------- #
# Finding the files
# --------------------------------------------------------------------------- #
def _default_cache_dir(cache_dir: str | os.PathLike[str] | None) -> Path:
    """``cache_dir`` if given, else ``$MMLAB_CACHE``, else ``~/.cache/mmlab``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "mmlab"


def _candidate_bases(
    root: str | os.PathLike[str] | None, cache: Path
) -> list[tuple[Path, str]]:
    """The base folders to search, in order, each with where it came from."""
    bases: list[tuple[Path, str]] = []
    if root is not None:
        bases.append((Path(root).expanduser(), "root argument"))
    env = os.environ.get(DATA_ENV, "").strip()
    if env:
        bases.append((Path(env).expanduser(), f"${DATA_ENV}"))
    bases.append((cache, "cache"))
    return bases


def _locate_in(folder: Path) -> tuple[dict[str, Path], list[str]]:
    """Find the four files in ``folder``; return (found, missing names)."""
    found: dict[str, Path] = {}
    missing: list[str] = []
    for name in MNIST_FILES:
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                found[name] = candidate
                break
        else:
            missing.append(name)
    return found, missing


def _search(
    root: str | os.PathLike[str] | None, cache: Path
) -> tuple[tuple[Path, dict[str, Path]] | None, list[str]]:
    """Search the candidate folders.

    Returns ``((folder, files), report)`` for the first folder holding all four
    files, or ``(None, report)``; ``report`` has one line per folder looked in.
    """
    check_named_root(root)  # a folder the caller named that does not exist is an error
    report: list[str] = []
    seen: set[Path] = set()
    absent: list[str] = []  # $MMLAB_DATA when it does not exist: said if a later folder is used
    for base, origin in _candidate_bases(root, cache):
        if origin != "cache" and not base.exists():
            absent.append(f"{base} ({origin})")
        for folder in (base, base / "mnist"):
            key = folder.resolve() if folder.exists() else folder.absolute()
            if key in seen:
                continue
            seen.add(key)
            if not folder.exists():
                report.append(f"{folder} ({origin}): the folder does not exist.")
                continue
            if not folder.is_dir():
                report.append(f"{folder} ({origin}): this is a file, not a folder.")
                continue
            files, missing = _locate_in(folder)
            if not missing:
                if absent:
                    warnings.warn(f"The data folder {' and '.join(absent)} does not exist; MNIST is read from "
                                  f"{folder} instead. Check the spelling of the folder.", stacklevel=4)
                return (folder, files), report
            if len(missing) == len(MNIST_FILES):
                report.append(f"{folder} ({origin}): none of the four files is there.")
            else:
                report.append(f"{folder} ({origin}): missing {', '.join(missing)}.")
    return None, report


def find_mnist_dir(
    root: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path | None:
    """Return the first folder that holds all four MNIST files, or ``None``.

    The folders are searched in the order of :func:`load_mnist` (``root``,
    ``$MMLAB_DATA``, the cache folder; each directly and in ``mnist/``).
    Nothing is downloaded and the files' content is not checked.
    """
    hit, _ = _search(root, _default_cache_dir(cache_dir))
    return None if hit is None else hit[0]


# --------------------------------------------------------------------------- #
# Downloading
# --------------------------------------------------------------------------- #
class _DownloadFailed(Exception):
    """Internal: no mirror could provide a file; ``args[0]`` lists the attempts."""


def _download_mnist(
    target: Path, mirrors: Sequence[str], timeout: float, verbose: bool
) -> list[str]:
    """Download the files missing from ``target`` (a folder) from ``mirrors``.

    For each file the mirrors are tried in turn; a download is decompressed and
    its SHA-256 checked in memory before it is written (atomically) as
    ``target/name.gz``.  A mirror that could not be reached at all is not tried
    again for the remaining files.

    Returns the list of failed attempts (``"url: error"``), which is empty if
    every mirror worked; raises :class:`_DownloadFailed` (carrying that list)
    when some file could not be obtained from any mirror.
    """
    attempts: list[str] = []
    if not mirrors:
        raise _DownloadFailed(["no download mirrors were given"])
    _, missing = _locate_in(target)
    unreachable: set[str] = set()
    for name in missing:
        for base in mirrors:
            base = base if base.endswith("/") else base + "/"
            url = f"{base}{name}.gz"
            if base in unreachable:
                continue
            if verbose:
                print(f"Downloading {url} ...", file=sys.stderr, flush=True)
            try:
                payload = fetch(url, timeout)
            except urllib.error.HTTPError as err:
                attempts.append(f"{url}: HTTP error {err.code} {err.reason}")
                continue
            except FETCH_ERRORS as err:
                attempts.append(f"{url}: could not be fetched ({fetch_failure(err)})")
                unreachable.add(base)
                continue
            try:
                data = _decompress_if_gzipped(payload, url)
                _check_and_parse(data, url, MNIST_SHA256[name])
            except DataIntegrityError as err:
                reason = str(err).replace(f" {_REFETCH_ADVICE}", "")
                attempts.append(f"{url}: refused, not the genuine file. {reason}")
                continue
            target.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(target / f"{name}.gz", payload)
            break
        else:
            raise _DownloadFailed(attempts)
    return attempts


# --------------------------------------------------------------------------- #
# Loading
# --------------------------------------------------------------------------- #
def _load_files(folder: Path, files: dict[str, Path]) -> MNIST:
    """Read (through the in-process cache) and verify the four files."""
    arrays: dict[str, np.ndarray] = {}
    for name in MNIST_FILES:
        path = files[name].resolve()
        stat = path.stat()
        arrays[name] = _read_verified(str(path), stat.st_mtime_ns, stat.st_size, MNIST_SHA256[name])
    return MNIST(
        train_images=torch.from_numpy(arrays["train-images-idx3-ubyte"].copy()),
        train_labels=torch.from_numpy(arrays["train-labels-idx1-ubyte"].astype(np.int64)),
        test_images=torch.from_numpy(arrays["t10k-images-idx3-ubyte"].copy()),
        test_labels=torch.from_numpy(arrays["t10k-labels-idx1-ubyte"].astype(np.int64)),
        source=str(folder),
    )


def _not_found_message(
    folder_report: list[str],
    download: bool,
    download_target: Path,
    attempts: list[str],
) -> str:
    lines = [
        "MNIST could not be found on this machine"
        + (" and could not be downloaded." if download else " (downloading was switched off)."),
        "",
        "Folders looked in, each for the four files "
        + ", ".join(MNIST_FILES)
        + " (with or without '.gz'):",
    ]
    lines += [f"  - {entry}" for entry in folder_report]
    if not os.environ.get(DATA_ENV, "").strip():
        lines.append(f"  (The environment variable {DATA_ENV} is not set.)")
    lines.append("")
    if download:
        lines.append(f"Download mirrors tried (files were to be saved in {download_target}):")
        lines += [f"  - {entry}" for entry in attempts] or ["  - (none)"]
    else:
        lines.append(
            "No download was attempted, because load_mnist was called with download=False."
        )
    lines += [
        "",
        "How to fix this: set the environment variable "
        f"{DATA_ENV} to a folder that holds the four MNIST IDX files (directly or "
        "in a 'mnist/' sub-folder, gzipped or not), e.g. "
        f"`export {DATA_ENV}=/path/to/data`, or name that folder with `--data FOLDER` on the "
        "command line (load_mnist(root=...) in Python); "
        + (f"or check this machine's network access: with it, the files download themselves into "
           f"{download_target}." if download else
           f"or, on a machine with internet access, call load_mnist(download=True) to download them "
           f"into {download_target}."),
    ]
    return "\n".join(lines)


def load_mnist(
    root: str | os.PathLike[str] | None = None,
    download: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    mirrors: Sequence[str] | None = None,
    timeout: float = 60.0,
    verbose: bool = True,
) -> MNIST:
    """Load MNIST as tensors, finding (or downloading) and verifying the files.

    Sources, in order: ``root``; ``$MMLAB_DATA``; the cache folder
    (``cache_dir``, else ``$MMLAB_CACHE``, else ``~/.cache/mmlab``) -- each
    directly or in a ``mnist/`` sub-folder, each file as ``name`` or
    ``name.gz``; finally, if ``download`` is true, a download from ``mirrors``
    into ``<cache>/mnist/``.  The first folder that holds all four files is
    used.  Parsed arrays are cached in this process, so repeated calls are
    fast.

    Args:
        root: A folder to look in first.
        download: Whether to download the files if no folder holds them.
        cache_dir: The cache folder (see above).
        mirrors: Base URLs to download from, tried in turn (default
            :data:`MNIST_MIRRORS`); any URL scheme that :mod:`urllib` reads
            works, including ``file://`` (used by the tests).
        timeout: Seconds to wait for a mirror before giving up on it.
        verbose: Whether to print a line to stderr for each download.

    Returns:
        An :class:`MNIST` with fresh tensors.

    Raises:
        DataIntegrityError: If a file that was found is truncated, corrupt or
            not the genuine MNIST file.  It is never skipped in favour of
            another copy: delete or replace it.
        DataNotFoundError: If no folder holds the four files and they could not
            be downloaded.  The message lists every folder looked in and every
            mirror tried, and says how to fix it.
    """
    cache = _default_cache_dir(cache_dir)
    hit, report = _search(root, cache)
    if hit is not None:
        return _load_files(*hit)

    target = cache / "mnist"
    attempts: list[str] = []
    if download:
        try:
            attempts = _download_mnist(
                target, MNIST_MIRRORS if mirrors is None else tuple(mirrors), timeout, verbose
            )
        except _DownloadFailed as failure:
            attempts = list(failure.args[0])
        except OSError as err:  # e.g. the cache folder cannot be created
            attempts = [f"the cache folder {target} could not be written ({err})"]
        else:
            files, missing = _locate_in(target)
            if not missing:
                return _load_files(target, files)
            attempts.append(f"after downloading, {target} still lacks {', '.join(missing)}")
    raise DataNotFoundError(_not_found_message(report, download, target, attempts))
