"""Where the tests find the real data: the way the library does, and nowhere else.

MNIST: ``$MMLAB_TEST_MNIST_DIR`` (a folder of the four IDX files, for the tests alone), then the
library's own search (:func:`mmlab.data.mnist.find_mnist_dir`: ``$MMLAB_DATA``, directly or in
``mnist/``, then the cache ``$MMLAB_CACHE`` or ``~/.cache/mmlab``). ``conftest.py`` points
``$MMLAB_DATA`` at ``../shared/data`` when it is unset and that folder exists, so a clone beside the
development data finds it there. FSDD: :func:`mmlab.data.avdigits.find_fsdd_dir` in the same
folders. A test that needs a data set it cannot find is skipped, and the reason names every place
looked in; no test builds a fixture from a path it has not checked.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
import warnings
from functools import lru_cache
from pathlib import Path

import pytest

from mmlab.data.mnist import MNIST_FILES, _locate_in, find_mnist_dir

TEST_MNIST_ENV = "MMLAB_TEST_MNIST_DIR"


def _places() -> str:
    env = os.environ.get("MMLAB_DATA", "").strip()
    cache = os.environ.get("MMLAB_CACHE", "").strip() or str(Path.home() / ".cache" / "mmlab")
    test_dir = os.environ.get(TEST_MNIST_ENV, "").strip()
    return (f"${TEST_MNIST_ENV} ({test_dir or 'unset'}), $MMLAB_DATA ({env or 'unset'}; the tests set it to "
            f"../shared/data where that exists), the cache ({cache})")


@lru_cache(maxsize=None)
def real_mnist_dir() -> Path | None:
    """The folder of the real MNIST files, found as the library finds them, or ``None``."""
    explicit = os.environ.get(TEST_MNIST_ENV, "").strip()
    if explicit:
        folder = Path(explicit).expanduser()
        return folder if folder.is_dir() and not _locate_in(folder)[1] else None
    with warnings.catch_warnings():  # a mistyped $MMLAB_DATA is the library's to warn about, not ours
        warnings.simplefilter("ignore")
        return find_mnist_dir()


@lru_cache(maxsize=None)
def real_mnist_gz_dir() -> Path | None:
    """A folder with the real MNIST as the four ``name.gz`` files (what a download mirror serves):
    the found folder where it holds them gzipped, else a gzipped copy in a temporary folder."""
    folder = real_mnist_dir()
    if folder is None:
        return None
    found, _ = _locate_in(folder)
    if all(path.name.endswith(".gz") for path in found.values()):
        return folder
    copy = Path(tempfile.mkdtemp(prefix="mmlab-test-mnist-"))
    for name, path in found.items():
        if path.name.endswith(".gz"):
            shutil.copyfile(path, copy / path.name)
        else:
            (copy / f"{name}.gz").write_bytes(gzip.compress(path.read_bytes(), compresslevel=1))
    return copy


MNIST_SKIP_REASON = "the real MNIST files were not found; looked in " + _places()

#: skips a test where the real MNIST is not at hand, saying where it was looked for
needs_real_mnist = pytest.mark.skipif(real_mnist_dir() is None, reason=MNIST_SKIP_REASON)


def require_real_mnist() -> Path:
    """The real MNIST's folder, or skip the calling test (saying where it was looked for)."""
    folder = real_mnist_dir()
    if folder is None:
        pytest.skip(MNIST_SKIP_REASON)
    return folder


@lru_cache(maxsize=None)
def real_fsdd_dir() -> Path | None:
    """The folder of FSDD's recordings, found as the library finds them, or ``None``."""
    from mmlab.data.avdigits import find_fsdd_dir
    from mmlab.data.errors import DataNotFoundError

    try:
        return find_fsdd_dir(download=False)
    except DataNotFoundError:
        return None


FSDD_SKIP_REASON = ("the Free Spoken Digit Dataset's recordings were not found; looked in $MMLAB_DATA "
                    f"({os.environ.get('MMLAB_DATA', 'unset')}, fsdd/recordings/ or recordings/) and the cache")

