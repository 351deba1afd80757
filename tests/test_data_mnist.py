"""Tests of mmlab.data.mnist: finding, downloading, verifying and reading MNIST.

The real MNIST files are found as the library finds them (``tests/data_sources.py``:
``$MMLAB_TEST_MNIST_DIR``, ``$MMLAB_DATA``, ``../shared/data``, the cache).  Tests that need them
are skipped, saying where they were looked for, where they are absent; everything else uses tiny
IDX files made on the fly.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mmlab.data import (
    MNIST,
    MNIST_MIRRORS,
    MNIST_SHA256,
    DataIntegrityError,
    DataNotFoundError,
    load_mnist,
    read_idx,
)
from mmlab.data.mnist import MNIST_FILES, find_mnist_dir
from data_sources import needs_real_mnist, real_mnist_dir, real_mnist_gz_dir

# the four files as name.gz (what a mirror serves), linked to wherever the real ones were found
REAL_MNIST = real_mnist_gz_dir() or Path("/the-real-MNIST-was-not-found")
needs_real = needs_real_mnist
LABELS = "train-labels-idx1-ubyte"  # the smallest training file, handy to tamper with


# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #
def idx_bytes(
    array: np.ndarray, shape: tuple[int, ...] | None = None, type_code: int = 0x08
) -> bytes:
    """IDX encoding of ``array``; ``shape`` overrides the dims written in the header."""
    shape = array.shape if shape is None else shape
    header = bytes([0, 0, type_code, len(shape)]) + b"".join(struct.pack(">I", d) for d in shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write(path: Path, payload: bytes, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def link_real(folder: Path, names: tuple[str, ...] = MNIST_FILES) -> Path:
    """Make ``folder`` hold the real ``names`` (as .gz) through symbolic links."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / f"{name}.gz").symlink_to(REAL_MNIST / f"{name}.gz")
    return folder


def tampered_labels_gz() -> bytes:
    """The real training labels with one label byte changed, gzipped again."""
    data = bytearray(gzip.decompress((REAL_MNIST / f"{LABELS}.gz").read_bytes()))
    data[100] = (data[100] + 1) % 10
    return gzip.compress(bytes(data))


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the caller's MMLAB_DATA or writes to the real cache."""
    monkeypatch.delenv("MMLAB_DATA", raising=False)
    monkeypatch.setenv("MMLAB_CACHE", str(tmp_path / "default-cache"))


def check_real_mnist(m: MNIST) -> None:
    assert m.train_images.shape == (60000, 28, 28) and m.train_images.dtype == torch.uint8
    assert m.test_images.shape == (10000, 28, 28) and m.test_images.dtype == torch.uint8
    assert m.train_labels.shape == (60000,) and m.train_labels.dtype == torch.int64
    assert m.test_labels.shape == (10000,) and m.test_labels.dtype == torch.int64
    for labels in (m.train_labels, m.test_labels):
        assert labels.min() == 0 and labels.max() == 9
        assert torch.bincount(labels).min() > 800  # every digit is well represented
    assert m.train_images.max() == 255 and m.train_images.min() == 0
    # The well-known first training labels of MNIST.
    assert m.train_labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert m.test_labels[:5].tolist() == [7, 2, 1, 0, 4]


# --------------------------------------------------------------------------- #
# The hash table and the real data
# --------------------------------------------------------------------------- #
@needs_real
def test_sha256_table_equals_the_published_sums() -> None:
    listing = real_mnist_dir() / "SHA256SUMS.raw"  # the development data's own list of sums
    if not listing.is_file():
        pytest.skip(f"{listing} is not there (only the development data folder has it)")
    sums = {}
    for line in listing.read_text().splitlines():
        digest, name = line.split()
        sums[name] = digest
    assert MNIST_SHA256 == sums
    assert set(MNIST_SHA256) == set(MNIST_FILES)


def test_mirrors_are_https_base_urls() -> None:
    assert len(MNIST_MIRRORS) >= 2
    assert all(m.startswith("https://") and m.endswith("/") for m in MNIST_MIRRORS)


@needs_real
def test_load_real_mnist_from_root_argument() -> None:
    m = load_mnist(root=REAL_MNIST, download=False)
    check_real_mnist(m)
    assert m.source == str(REAL_MNIST)


@needs_real
def test_load_real_mnist_from_env_var_directly_and_in_mnist_subfolder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MMLAB_DATA", str(REAL_MNIST))
    check_real_mnist(load_mnist(download=False))
    data = tmp_path / "data"
    link_real(data / "mnist")
    monkeypatch.setenv("MMLAB_DATA", str(data))  # holds mnist/
    m = load_mnist(download=False)
    check_real_mnist(m)
    assert Path(m.source) == data / "mnist"


@needs_real
def test_root_comes_before_env_and_raw_files_are_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = link_real(tmp_path / "root", MNIST_FILES[:3])
    raw = gzip.decompress((REAL_MNIST / f"{MNIST_FILES[3]}.gz").read_bytes())
    write(root / MNIST_FILES[3], raw)  # not gzipped
    monkeypatch.setenv("MMLAB_DATA", str(REAL_MNIST))
    m = load_mnist(root=root, download=False)
    assert m.source == str(root)
    check_real_mnist(m)
    assert find_mnist_dir(root) == root


@pytest.mark.parametrize("call", [load_mnist, find_mnist_dir])
def test_a_named_root_that_does_not_exist_is_an_error_not_a_fallback(call, tmp_path, monkeypatch) -> None:
    """A folder the caller typed (``root=``, ``--data``) that is not there: said, with how data is found,
    even where a later source holds the data (no test data needed: a later source is never looked at)."""
    elsewhere = tmp_path / "env"
    elsewhere.mkdir()
    monkeypatch.setenv("MMLAB_DATA", str(elsewhere))
    with pytest.raises(DataNotFoundError) as info:
        call(tmp_path / "nowhere")
    message = str(info.value)
    assert f"{tmp_path / 'nowhere'} (given as --data, or root= in Python) does not exist" in message
    assert "MMLAB_DATA" in message and "How to fix this" in message
    (tmp_path / "a-file").write_text("")
    with pytest.raises(DataNotFoundError, match="a-file .given as --data, or root= in Python. is a file"):
        call(tmp_path / "a-file")


@needs_real
def test_explicit_root_without_files_falls_back_to_later_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MMLAB_DATA", str(REAL_MNIST))
    (tmp_path / "empty").mkdir()
    m = load_mnist(root=tmp_path / "empty", download=False)
    assert m.source == str(REAL_MNIST)


@needs_real
def test_each_call_returns_fresh_tensors() -> None:
    first = load_mnist(root=REAL_MNIST, download=False)
    first.train_images.zero_()
    first.train_labels.fill_(3)
    second = load_mnist(root=REAL_MNIST, download=False)
    assert second.train_images.max() == 255
    assert second.train_labels[:3].tolist() == [5, 0, 4]


# --------------------------------------------------------------------------- #
# read_idx on small files
# --------------------------------------------------------------------------- #
@settings(max_examples=40, deadline=None)
@given(
    array=hnp.arrays(
        dtype=st.sampled_from([np.uint8, np.int32, np.float32]),
        shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=5),
    ),
    gz=st.booleans(),
)
def test_read_idx_round_trips(
    tmp_path_factory: pytest.TempPathFactory, array: np.ndarray, gz: bool
) -> None:
    code = {"uint8": 0x08, "int32": 0x0C, "float32": 0x0D}[array.dtype.name]
    payload = idx_bytes(array, type_code=code)
    path = write(tmp_path_factory.mktemp("idx") / ("f.gz" if gz else "f"), payload, gz=gz)
    out = read_idx(path, expected_sha256=sha256(payload))
    assert out.shape == array.shape and out.dtype == array.dtype
    np.testing.assert_array_equal(out, array)


@pytest.mark.parametrize("delta", [-1, +1, -50, +7])
def test_header_dims_that_disagree_with_the_length_are_refused(tmp_path: Path, delta: int) -> None:
    array = np.arange(6 * 4 * 4, dtype=np.uint8).reshape(6, 4, 4)
    payload = idx_bytes(array)
    payload = payload[:delta] if delta < 0 else payload + bytes(delta)
    path = write(tmp_path / "images-idx3-ubyte", payload)
    with pytest.raises(DataIntegrityError) as info:
        read_idx(path)
    message = str(info.value)
    assert str(path) in message
    assert "(6, 4, 4)" in message
    assert ("truncated" if delta < 0 else "longer than its header") in message


def test_header_claiming_more_items_is_refused(tmp_path: Path) -> None:
    array = np.zeros((5, 2), dtype=np.uint8)
    path = write(tmp_path / "x.gz", idx_bytes(array, shape=(6, 2)), gz=True)
    with pytest.raises(DataIntegrityError, match="truncated"):
        read_idx(path)


@pytest.mark.parametrize(
    "payload, problem",
    [
        (b"\x00\x00", "too short"),
        (b"\x12\x34\x08\x01\x00\x00\x00\x00", "magic number"),
        (b"\x00\x00\x42\x01\x00\x00\x00\x00", "unknown data type"),
        (b"\x00\x00\x08\x03\x00\x00\x00\x01", "truncated inside its header"),
    ],
)
def test_malformed_headers_are_refused(tmp_path: Path, payload: bytes, problem: str) -> None:
    path = write(tmp_path / "bad", payload)
    with pytest.raises(DataIntegrityError, match=problem):
        read_idx(path)


def test_corrupt_gzip_stream_is_refused(tmp_path: Path) -> None:
    good = gzip.compress(idx_bytes(np.arange(1000, dtype=np.int32) % 256))
    for name, payload in {
        "truncated.gz": good[: len(good) // 2],
        "garbled.gz": good[:12] + bytes(b ^ 0xFF for b in good[12:40]) + good[40:],
        "crc.gz": good[:-8] + bytes(4) + good[-4:],
    }.items():
        path = write(tmp_path / name, payload)
        with pytest.raises(DataIntegrityError) as info:
            read_idx(path)
        assert str(path) in str(info.value)
        assert "Delete the file" in str(info.value)


def test_hash_mismatch_names_file_and_both_hashes(tmp_path: Path) -> None:
    payload = idx_bytes(np.arange(10, dtype=np.uint8))
    path = write(tmp_path / "labels.gz", payload, gz=True)
    wrong = "0" * 64
    with pytest.raises(DataIntegrityError) as info:
        read_idx(path, expected_sha256=wrong)
    message = str(info.value)
    assert str(path) in message and wrong in message and sha256(payload) in message
    assert "fetch it again" in message


@needs_real
def test_truncated_real_gz_is_refused(tmp_path: Path) -> None:
    good = (REAL_MNIST / f"{LABELS}.gz").read_bytes()
    path = write(tmp_path / f"{LABELS}.gz", good[: len(good) // 2])
    with pytest.raises(DataIntegrityError) as info:
        read_idx(path, MNIST_SHA256[LABELS])
    assert str(path) in str(info.value)


@needs_real
def test_tampered_real_file_is_refused_by_its_hash(tmp_path: Path) -> None:
    path = write(tmp_path / f"{LABELS}.gz", tampered_labels_gz())
    read_idx(path)  # well formed: only the hash can tell
    with pytest.raises(DataIntegrityError) as info:
        read_idx(path, MNIST_SHA256[LABELS])
    message = str(info.value)
    assert str(path) in message and MNIST_SHA256[LABELS] in message
    assert sha256(gzip.decompress(path.read_bytes())) in message


@needs_real
def test_corrupt_file_in_root_is_an_error_not_a_fallthrough(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = link_real(tmp_path / "root", tuple(n for n in MNIST_FILES if n != LABELS))
    write(root / f"{LABELS}.gz", tampered_labels_gz())
    monkeypatch.setenv("MMLAB_DATA", str(REAL_MNIST))  # a good copy exists later ...
    with pytest.raises(DataIntegrityError, match=LABELS):  # ... but is not silently used
        load_mnist(root=root, download=False)


@needs_real
def test_file_replaced_after_loading_is_checked_again(tmp_path: Path) -> None:
    root = link_real(tmp_path / "root", tuple(n for n in MNIST_FILES if n != LABELS))
    target = root / f"{LABELS}.gz"
    shutil.copyfile(REAL_MNIST / f"{LABELS}.gz", target)
    load_mnist(root=root, download=False)  # good, and now cached
    target.write_bytes(tampered_labels_gz())
    stat = target.stat()
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.raises(DataIntegrityError):
        load_mnist(root=root, download=False)


# --------------------------------------------------------------------------- #
# Nothing found, and downloads
# --------------------------------------------------------------------------- #
def test_nothing_anywhere_without_download_lists_all_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, env, cache = tmp_path / "root", tmp_path / "env", tmp_path / "cache"
    root.mkdir()  # there, but empty (a root that does not exist is an error of its own)
    env.mkdir()
    write(env / "mnist" / f"{LABELS}.gz", b"partial folder", gz=False)
    monkeypatch.setenv("MMLAB_DATA", str(env))
    with pytest.raises(DataNotFoundError) as info:
        load_mnist(root=root, download=False, cache_dir=cache)
    assert isinstance(info.value, FileNotFoundError)
    message = str(info.value)
    for folder in (root, root / "mnist", env, env / "mnist", cache, cache / "mnist"):
        assert f"{folder} (" in message, folder
    assert "missing train-images-idx3-ubyte" in message  # the partial folder
    assert "download=False" in message
    assert "MMLAB_DATA" in message and "How to fix this" in message
    assert find_mnist_dir(root, cache_dir=cache) is None


def test_failed_download_lists_every_mirror_and_its_error(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    mirrors = [(tmp_path / "m1").as_uri() + "/", (tmp_path / "m2").as_uri() + "/"]
    with pytest.raises(DataNotFoundError) as info:
        load_mnist(download=True, cache_dir=cache, mirrors=mirrors, verbose=False)
    message = str(info.value)
    for mirror in mirrors:
        assert f"{mirror}train-images-idx3-ubyte.gz: could not be fetched" in message
    assert "No such file" in message
    assert not list(cache.glob("**/*.gz"))


@needs_real
def test_download_falls_through_to_a_good_mirror_and_fills_the_cache(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    bad = (tmp_path / "missing-mirror").as_uri() + "/"
    good = REAL_MNIST.as_uri()  # no trailing slash: must be added
    m = load_mnist(download=True, cache_dir=cache, mirrors=[bad, good], verbose=False)
    check_real_mnist(m)
    assert m.source == str(cache / "mnist")
    for name in MNIST_FILES:
        stored = cache / "mnist" / f"{name}.gz"
        assert stored.is_file()
        assert sha256(gzip.decompress(stored.read_bytes())) == MNIST_SHA256[name]
    stored_names = sorted(p.name for p in (cache / "mnist").iterdir())
    assert stored_names == sorted(f"{n}.gz" for n in MNIST_FILES)  # no temporary files left
    # Now found in the cache, without a download.
    assert load_mnist(download=False, cache_dir=cache).source == str(cache / "mnist")


@needs_real
def test_mirror_serving_a_tampered_file_is_refused(tmp_path: Path) -> None:
    evil = link_real(tmp_path / "evil", tuple(n for n in MNIST_FILES if n != LABELS))
    write(evil / f"{LABELS}.gz", tampered_labels_gz())
    cache = tmp_path / "cache"

    with pytest.raises(DataNotFoundError) as info:
        load_mnist(download=True, cache_dir=cache, mirrors=[evil.as_uri()], verbose=False)
    message = str(info.value)
    assert f"{LABELS}.gz: refused" in message and "SHA-256" in message
    assert not (cache / "mnist" / f"{LABELS}.gz").exists()
    assert not [p for p in (cache / "mnist").iterdir() if p.name.endswith((".part", ".tmp"))]

    # With a good mirror after it, the download completes with the genuine file.
    m = load_mnist(
        download=True, cache_dir=cache, mirrors=[evil.as_uri(), REAL_MNIST.as_uri()], verbose=False
    )
    check_real_mnist(m)
    stored = gzip.decompress((cache / "mnist" / f"{LABELS}.gz").read_bytes())
    assert sha256(stored) == MNIST_SHA256[LABELS]


@needs_real
def test_corrupt_file_in_cache_is_not_replaced_silently(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    link_real(cache / "mnist", tuple(n for n in MNIST_FILES if n != LABELS))
    write(cache / "mnist" / f"{LABELS}.gz", tampered_labels_gz())
    with pytest.raises(DataIntegrityError, match="Delete the file"):
        load_mnist(download=True, cache_dir=cache, mirrors=[REAL_MNIST.as_uri()], verbose=False)


@needs_real
def test_a_mistyped_mmlab_data_is_said_when_another_folder_is_used(tmp_path, monkeypatch):
    from mmlab.data.mnist import _search

    cache = tmp_path / "cache"
    link_real(cache / "mnist")
    monkeypatch.setenv("MMLAB_DATA", str(tmp_path / "typo"))
    with pytest.warns(UserWarning, match=r"typo \(\$MMLAB_DATA\) does not exist; MNIST is read from .*cache"):
        hit, _ = _search(None, cache)
    assert hit is not None and hit[0] == cache / "mnist"
