"""Tests of mmlab.data.avdigits: MNIST images paired with FSDD spoken digits.

Errors and properties are checked on tiny FSDD folders written here; the construction itself on
the real MNIST and FSDD, found as the library finds them (tests/data_sources.py), skipped where they
are absent. Every test caches its spectrograms under a temporary ``$MMLAB_CACHE``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.io import wavfile

from mmlab.data import DataIntegrityError, DataNotFoundError
from mmlab.data import avdigits as av
from mmlab.data.audio import log_spectrogram, read_wav
from mmlab.data.avdigits import (
    AVDigitsConfig, PCAEnergyRemoval, add_pixel_noise, add_wave_noise, find_fsdd_dir,
    list_recordings, make_avdigits, spectrogram_bank,
)
from mmlab.data.mnist import MNIST, load_mnist
from mmlab.data.registry import get_dataset
from data_sources import FSDD_SKIP_REASON

RATE = 8000


@pytest.fixture(autouse=True)
def temporary_cache(tmp_path, monkeypatch):
    """No test writes to the real cache."""
    monkeypatch.setenv("MMLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def write_fsdd(folder: Path, takes=(0, 5, 10), speakers=("alice",), seconds=0.25, amplitude=0.3) -> Path:
    """A tiny FSDD: a sine of ``300 + 100 * digit`` Hz per digit, take and speaker (int16, 8 kHz)."""
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(RATE * seconds)) / RATE
    for digit in range(10):
        for speaker in speakers:
            for take in takes:
                wave = amplitude * np.sin(2 * np.pi * (300 + 100 * digit) * t + take)
                pcm = (wave * 32767).astype(np.int16)
                wavfile.write(folder / f"{digit}_{speaker}_{take}.wav", RATE, pcm)
    return folder


def fake_mnist(n_train=300, n_test=120, seed=0) -> MNIST:
    g = torch.Generator().manual_seed(seed)
    return MNIST(torch.randint(0, 256, (n_train, 28, 28), generator=g, dtype=torch.uint8),
                 torch.arange(n_train) % 10,
                 torch.randint(0, 256, (n_test, 28, 28), generator=g, dtype=torch.uint8),
                 torch.arange(n_test) % 10, source="fake")


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    """A fake FSDD (two speakers, takes in every split) with its cache folder, and a fake MNIST."""
    base = tmp_path_factory.mktemp("fake")
    folder = write_fsdd(base / "recordings", takes=(0, 3, 5, 7, 10, 20), speakers=("alice", "bob"))
    recordings = list_recordings(folder)
    spectrogram_bank(recordings, cache_dir=base / "cache", progress=False)
    return fake_mnist(), recordings, base / "cache"


# --------------------------------------------------------------------------- #
# Finding and checking the recordings
# --------------------------------------------------------------------------- #
def test_missing_data_lists_the_folders_tried_and_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("MMLAB_DATA", str(tmp_path / "data"))
    (tmp_path / "root" / "recordings").mkdir(parents=True)  # exists, but holds no .wav
    with pytest.raises(DataNotFoundError) as err:
        find_fsdd_dir(tmp_path / "root")
    message = str(err.value)
    for folder in (tmp_path / "root" / "fsdd" / "recordings", tmp_path / "data" / "fsdd" / "recordings",
                   tmp_path / "data" / "recordings", tmp_path / "cache" / "fsdd" / "recordings"):
        assert str(folder) in message
    assert f"{tmp_path / 'root' / 'recordings'} (root argument): holds no .wav files" in message
    assert "git clone" in message and "Jakobovski/free-spoken-digit-dataset" in message
    assert "v1.0.10" in message and "MMLAB_DATA" in message


def _release_archive(path: Path, recordings: Path, extra: dict[str, bytes] | None = None) -> str:
    """A .tar.gz laid out as FSDD's tagged release (recordings/ beside code and docs); its file:// URL."""
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        top = "free-spoken-digit-dataset-1.0.10"
        for wav in sorted(recordings.glob("*.wav")):
            tar.add(wav, arcname=f"{top}/recordings/{wav.name}")
        readme = recordings.parent / "README.md"
        readme.write_text("FSDD")
        tar.add(readme, arcname=f"{top}/README.md")
        for name, data in (extra or {}).items():
            item = recordings.parent / "extra.bin"
            item.write_bytes(data)
            tar.add(item, arcname=name)
    return path.as_uri()


def test_missing_recordings_are_downloaded_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("MMLAB_DATA", raising=False)
    source = write_fsdd(tmp_path / "release" / "recordings", takes=(0, 5, 10), speakers=("alice", "bob"))
    url = _release_archive(tmp_path / "release.tar.gz", source)
    monkeypatch.setattr(av, "FSDD_ARCHIVE_URL", url)
    monkeypatch.setattr(av, "FSDD_RECORDINGS", 60)
    cache = tmp_path / "cache"
    with pytest.raises(DataNotFoundError):  # not there, and not asked to download
        find_fsdd_dir(cache_dir=cache)
    folder = find_fsdd_dir(cache_dir=cache, download=True)
    assert folder == cache / "fsdd" / "recordings"
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in source.glob("*.wav"))
    assert (folder / "3_bob_5.wav").read_bytes() == (source / "3_bob_5.wav").read_bytes()
    assert [p.name for p in folder.parent.iterdir()] == ["recordings"]  # no scratch left behind
    assert find_fsdd_dir(cache_dir=cache) == folder  # found without a download the next time
    assert len(list_recordings(folder)) == 60


def test_an_archive_that_is_not_fsdds_keeps_nothing(tmp_path, monkeypatch):
    source = write_fsdd(tmp_path / "release" / "recordings", takes=(0,))
    cache = tmp_path / "cache"
    short = _release_archive(tmp_path / "short.tar.gz", source)
    with pytest.raises(DataIntegrityError, match="holds 10 recordings, FSDD v1.0.10 has 3000"):
        av.download_fsdd(cache, url=short, verbose=False)
    odd = _release_archive(tmp_path / "odd.tar.gz", source, {"x/recordings/evil.wav": b"RIFF"})
    with pytest.raises(DataIntegrityError, match="'x/recordings/evil.wav' is not an FSDD recording"):
        av.download_fsdd(cache, url=odd, expected_recordings=10, verbose=False)
    (tmp_path / "broken.tar.gz").write_bytes(b"not a tar archive")
    with pytest.raises(DataIntegrityError, match="not a readable .tar.gz"):
        av.download_fsdd(cache, url=(tmp_path / "broken.tar.gz").as_uri(), verbose=False)
    assert not (cache / "fsdd" / "recordings").exists()
    assert list((cache / "fsdd").iterdir()) == []  # every scratch folder removed
    # a member whose path climbs out of recordings/ is not a recording: never written anywhere
    climbing = _release_archive(tmp_path / "climbing.tar.gz", source, {"x/recordings/../../7_eve_1.wav": b"RIFF"})
    folder = av.download_fsdd(cache, url=climbing, expected_recordings=10, verbose=False)
    assert not list(tmp_path.rglob("7_eve_1.wav")) and len(list(folder.iterdir())) == 10


def test_a_failed_download_is_reported_with_the_folders_tried(tmp_path, monkeypatch):
    monkeypatch.delenv("MMLAB_DATA", raising=False)
    missing = (tmp_path / "nowhere.tar.gz").as_uri()
    monkeypatch.setattr(av, "FSDD_ARCHIVE_URL", missing)
    with pytest.raises(DataNotFoundError) as err:
        find_fsdd_dir(cache_dir=tmp_path / "cache", download=True)
    message = str(err.value)
    assert f"Download tried: {missing} could not be fetched" in message
    assert str(tmp_path / "cache" / "fsdd" / "recordings") in message and "git clone" in message


def test_folders_are_searched_root_then_mmlab_data_then_cache(tmp_path, monkeypatch):
    root = write_fsdd(tmp_path / "root" / "fsdd" / "recordings")
    data = write_fsdd(tmp_path / "data" / "recordings")
    cache = write_fsdd(tmp_path / "cache" / "fsdd" / "recordings")
    monkeypatch.setenv("MMLAB_DATA", str(tmp_path / "data"))
    assert find_fsdd_dir(tmp_path / "root") == root
    assert find_fsdd_dir(root) == root  # the recordings folder itself
    assert find_fsdd_dir() == data
    monkeypatch.delenv("MMLAB_DATA")
    assert find_fsdd_dir() == cache


def test_recordings_are_parsed_and_assigned_to_splits(tmp_path):
    recordings = list_recordings(write_fsdd(tmp_path / "rec", takes=(0, 4, 5, 9, 10, 49)))
    (tmp_path / "rec" / ".DS_Store").write_bytes(b"")  # hidden files are ignored
    assert len(list_recordings(tmp_path / "rec")) == len(recordings) == 60
    first = next(r for r in recordings if r.path.name == "7_alice_9.wav")
    assert (first.digit, first.speaker, first.take, first.split) == (7, "alice", 9, "val")
    assert {r.take: r.split for r in recordings} == {
        0: "test", 4: "test", 5: "val", 9: "val", 10: "train", 49: "train"}


@pytest.mark.parametrize("name, words", [
    ("notes.txt", "not named like an FSDD recording"),
    ("3_alice.wav", "not named like an FSDD recording"),
    ("3-alice-2.wav", "not named like an FSDD recording"),
    ("12_alice_3.wav", "names digit 12, but FSDD's digits are 0-9"),
])
def test_unexpected_file_names_are_refused_by_name(tmp_path, name, words):
    folder = write_fsdd(tmp_path / "rec")
    (folder / name).write_bytes(b"")
    with pytest.raises(DataIntegrityError, match=words) as err:
        list_recordings(folder)
    assert str(folder / name) in str(err.value)


@pytest.mark.parametrize("take, split", [(0, "test"), (5, "val"), (10, "train")])
def test_a_digit_without_recordings_in_a_split_is_an_error(tmp_path, take, split):
    folder = write_fsdd(tmp_path / "rec")
    (folder / f"3_alice_{take}.wav").unlink()
    words = f"no recording of digit 3 for the {split} split"
    with pytest.raises(DataIntegrityError, match=words) as err:
        list_recordings(folder)
    assert str(folder) in str(err.value)


def test_a_corrupt_wav_is_named(tmp_path):
    folder = write_fsdd(tmp_path / "rec")
    (folder / "4_alice_5.wav").write_bytes(b"RIFF, but not really")
    with pytest.raises(DataIntegrityError, match="4_alice_5.wav"):
        spectrogram_bank(list_recordings(folder), progress=False)


# --------------------------------------------------------------------------- #
# Spectrograms and their cache
# --------------------------------------------------------------------------- #
def test_bank_holds_each_recordings_log_spectrogram(tmp_path, temporary_cache):
    recordings = list_recordings(write_fsdd(tmp_path / "rec"))
    bank = spectrogram_bank(recordings, progress=False)
    assert av.SPECTROGRAM_SHAPE == (129, 63)
    assert bank.shape == (30, 129, 63) and bank.dtype == torch.float16
    for i in (0, 17):
        expected = log_spectrogram(*read_wav(recordings[i].path), target_rate=8000, seconds=1.0,
                                   n_fft=256, hop_length=128)
        np.testing.assert_allclose(bank[i].float().numpy(), expected, rtol=1e-3, atol=1e-2)
    assert len(list((temporary_cache / "avdigits").glob("*.npz"))) == 1


def test_the_cache_is_read_and_keyed_by_the_files(tmp_path, temporary_cache, monkeypatch):
    folder = write_fsdd(tmp_path / "rec")
    first = spectrogram_bank(list_recordings(folder), progress=False)
    with monkeypatch.context() as m:  # a second call must not compute anything
        m.setattr(av, "_spectrogram", lambda *a: pytest.fail("the cache was not used"))
        assert torch.equal(spectrogram_bank(list_recordings(folder), progress=False), first)
    (folder / "0_alice_0.wav").unlink()  # another file list: another cache file
    write_fsdd(folder, takes=(1,), seconds=0.3)
    spectrogram_bank(list_recordings(folder), progress=False)
    assert len(list((temporary_cache / "avdigits").glob("*.npz"))) == 2


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other_names", "wrong_shape"])
def test_a_corrupt_cache_is_rebuilt_with_a_warning(tmp_path, temporary_cache, damage):
    recordings = list_recordings(write_fsdd(tmp_path / "rec"))
    good = spectrogram_bank(recordings, progress=False)
    [path] = (temporary_cache / "avdigits").glob("*.npz")
    if damage == "garbage":
        path.write_bytes(b"not a zip file")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:5000])
    else:
        specs = good.numpy()[:, :5] if damage == "wrong_shape" else good.numpy()
        names = [r.path.name for r in recordings]
        names = names[::-1] if damage == "other_names" else names
        np.savez(path.with_suffix(""), spectrograms=specs, names=np.array(names))
    with pytest.warns(UserWarning, match=f"spectrogram cache {path} cannot be used"):
        rebuilt = spectrogram_bank(recordings, progress=False)
    assert torch.equal(rebuilt, good)
    assert torch.equal(spectrogram_bank(recordings, progress=False), good)  # and rewritten


@settings(max_examples=50, deadline=None)
@given(knob=st.floats(0.05, 3.0), amplitude=st.floats(0.01, 0.9), seed=st.integers(0, 2**32 - 1))
def test_wave_noise_std_is_the_knob_times_the_rms(knob, amplitude, seed):
    rng = np.random.default_rng(seed)
    wave = (amplitude * np.sin(np.arange(20_000) * 0.05)).astype(np.float32)
    noise = add_wave_noise(wave, knob, rng) - wave
    assert abs(noise.std() / (knob * amplitude / np.sqrt(2)) - 1) < 0.03
    assert add_wave_noise(wave, 0.0, rng) is wave


def test_audio_noise_reaches_the_spectrogram_at_the_right_level(tmp_path):
    """White noise of std s has E|X_k|^2 = s^2 sum(w^2) = s^2 * 3 n_fft / 8 in the Hann-windowed DFT."""
    recordings = list_recordings(write_fsdd(tmp_path / "rec", seconds=1.0, amplitude=0.05))
    clean = spectrogram_bank(recordings, progress=False)
    noisy = spectrogram_bank(recordings, audio_noise=0.5, seed=1, progress=False)
    assert not torch.equal(clean, noisy)
    assert not torch.equal(noisy, spectrogram_bank(recordings, audio_noise=0.5, seed=2, progress=False))
    assert torch.equal(noisy, spectrogram_bank(recordings, audio_noise=0.5, seed=1, progress=False))
    sigma = 0.5 * 0.05 / np.sqrt(2)
    for i, r in enumerate(recordings):
        tone_bin = round((300 + 100 * r.digit) * av.N_FFT / RATE)
        far = [k for k in range(1, 128) if abs(k - tone_bin) > 6]
        power = np.exp(2 * noisy[i, far].double().numpy()).mean()
        assert abs(power / (sigma**2 * 3 * av.N_FFT / 8) - 1) < 0.1, r.path.name


# --------------------------------------------------------------------------- #
# Image knobs
# --------------------------------------------------------------------------- #
def _variance(images: torch.Tensor) -> float:
    x = images.reshape(len(images), -1).double() / 255
    return ((x - x.mean(0)) ** 2).sum(1).mean().item()


@settings(max_examples=20, deadline=None)
@given(fraction=st.floats(0.05, 0.95), seed=st.integers(0, 10_000))
def test_pca_removal_removes_the_fraction_of_variance(fraction, seed):
    """On images that never leave [0, 255] the measured loss is the fitted share (>= the fraction)."""
    g = torch.Generator().manual_seed(seed)
    scales = torch.linspace(25, 2, 12)  # 12 directions of falling variance around mid-gray
    basis = torch.linalg.qr(torch.randn(100, 12, generator=g))[0]
    images = (128 + (torch.randn(400, 12, generator=g) * scales) @ basis.T).round().clamp(0, 255)
    images = images.to(torch.uint8).reshape(400, 10, 10)
    pca = PCAEnergyRemoval.fit(images, fraction)
    k = pca.components.shape[1]
    torch.testing.assert_close(pca.components.T @ pca.components, torch.eye(k, dtype=torch.float64))

    def removed_by(components):
        return 1 - _variance(PCAEnergyRemoval(pca.mean, components, 0).apply(images)) / _variance(images)

    assert pca.removed >= fraction - 1e-9
    assert abs(removed_by(pca.components) - pca.removed) < 0.01
    assert k == 1 or removed_by(pca.components[:, :-1]) < fraction + 0.01  # the fewest that reach it


def test_pca_removal_extremes():
    images = fake_mnist().train_images[:, :12, :12]
    assert torch.equal(PCAEnergyRemoval.fit(images, 0.0).apply(images), images)
    flat = PCAEnergyRemoval.fit(images, 1.0).apply(images).double()  # everything but the mean goes
    assert (flat - flat.mean(0)).abs().max() <= 1


@settings(max_examples=30, deadline=None)
@given(std=st.floats(0.01, 0.12), seed=st.integers(0, 10_000))
def test_pixel_noise_std_is_the_knob(std, seed):
    gray = torch.full((64, 28, 28), 128, dtype=torch.uint8)  # far from 0 and 255: no clipping
    noisy = add_pixel_noise(gray, std, torch.Generator().manual_seed(seed))
    assert noisy.dtype == torch.uint8
    diff = noisy.double() - 128
    measured = (diff.var().item() - 1 / 12) ** 0.5 / 255  # rounding to whole levels adds 1/12
    assert abs(measured / std - 1) < 0.015 and abs(diff.mean().item()) < 0.05 * std * 255
    assert torch.equal(add_pixel_noise(gray, 0.0, torch.Generator()), gray)
    black = torch.zeros(4, 8, 8, dtype=torch.uint8)
    clipped = add_pixel_noise(black, 1.0, torch.Generator().manual_seed(seed))
    assert clipped.min() == 0 and clipped.max() == 255


# --------------------------------------------------------------------------- #
# Pairing (fake data, every seed and size)
# --------------------------------------------------------------------------- #
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), train=st.one_of(st.none(), st.integers(0, 200)),
       val=st.integers(0, 100), test=st.one_of(st.none(), st.integers(0, 120)))
def test_pairing_matches_classes_and_respects_the_take_split(fake, seed, train, val, test):
    mnist, recordings, cache = fake
    config = AVDigitsConfig(train, val, test, seed=seed)
    splits = make_avdigits(mnist, recordings, config, cache_dir=cache, progress=False)
    assert len(splits["train"]) == (300 - val if train is None else train)
    assert len(splits["val"]) == val and len(splits["test"]) == (120 if test is None else test)
    takes = {"train": {10, 20}, "val": {5, 7}, "test": {0, 3}}
    for name, split in splits.items():
        chosen = [recordings[i] for i in split.extras["recording"].tolist()]
        assert [r.digit for r in chosen] == split.labels.tolist()
        assert {r.take for r in chosen} <= takes[name]
        assert split.labels.dtype == torch.int64
        assert split.inputs["image"].shape == (len(split), 1, 28, 28)
        assert split.inputs["image"].dtype == torch.uint8
        assert split.inputs["audio"].shape == (len(split), 1, 129, 63)
    train_images, val_images = (set(splits[s].extras["mnist_index"].tolist()) for s in ("train", "val"))
    assert not train_images & val_images


def test_too_large_sizes_and_bad_knobs_are_refused(fake):
    mnist, recordings, cache = fake
    with pytest.raises(ValueError, match="train_size"):
        make_avdigits(mnist, recordings, AVDigitsConfig(train_size=251, val_size=50), cache_dir=cache)
    with pytest.raises(ValueError, match="test_size"):
        make_avdigits(mnist, recordings, AVDigitsConfig(val_size=50, test_size=121), cache_dir=cache)
    with pytest.raises(ValueError, match="val_size"):
        make_avdigits(mnist, recordings, AVDigitsConfig(val_size=301), cache_dir=cache)
    with pytest.raises(ValueError, match="needs train_size >= 2"):
        config = AVDigitsConfig(train_size=1, val_size=50, image_pca_energy_removed=0.5)
        make_avdigits(mnist, recordings, config, cache_dir=cache)
    with pytest.raises(ValueError, match="images of digit 0 but the recordings given hold none"):
        without = [r for r in recordings if not (r.digit == 0 and r.split == "val")]
        make_avdigits(mnist, without, AVDigitsConfig(val_size=50), cache_dir=cache, progress=False)
    for bad in ({"image_noise": -0.1}, {"image_pca_energy_removed": 1.5}, {"audio_noise": float("nan")},
                {"image_noise": True}, {"train_size": -1}, {"seed": 1.5}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            AVDigitsConfig(**bad)


# --------------------------------------------------------------------------- #
# The real data
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def real(tmp_path_factory, real_data):
    if not (real_data / "fsdd").exists():
        pytest.skip(FSDD_SKIP_REASON)
    cache = tmp_path_factory.mktemp("real_cache")
    recordings = list_recordings(find_fsdd_dir(real_data))
    spectrogram_bank(recordings, cache_dir=cache, progress=False)
    return load_mnist(real_data, download=False), recordings, cache, real_data


def build(real, **config):
    mnist, recordings, cache, _ = real
    defaults = dict(train_size=1000, val_size=300, test_size=400, seed=0)
    config = AVDigitsConfig(**{**defaults, **config})
    return make_avdigits(mnist, recordings, config, cache_dir=cache, progress=False)


def test_real_fsdd_has_the_official_layout(real):
    _, recordings, _, _ = real
    assert len(recordings) == 3000
    speakers = {"george", "jackson", "lucas", "nicolas", "theo", "yweweler"}
    assert {r.speaker for r in recordings} == speakers
    counts = {s: sum(r.split == s for r in recordings) for s in ("train", "val", "test")}
    assert counts == {"train": 2400, "val": 300, "test": 300}


def test_real_splits_pair_same_class_recordings_of_their_split(real):
    mnist, recordings, cache, _ = real
    splits = build(real)
    bank = spectrogram_bank(recordings, cache_dir=cache, progress=False)
    for name, split in splits.items():
        rec = split.extras["recording"]
        chosen = [recordings[i] for i in rec.tolist()]
        assert [r.digit for r in chosen] == split.labels.tolist()
        assert {r.split for r in chosen} == {name}
        assert torch.equal(split.inputs["audio"][:, 0], bank[rec])
        assert split.inputs["audio"].dtype == torch.float16
        assert split.extras["recording_names"][rec[0]] == recordings[rec[0]].path.name
        source = mnist.test_images if name == "test" else mnist.train_images
        labels = mnist.test_labels if name == "test" else mnist.train_labels
        # knobs at 0: the images are MNIST's, unchanged
        assert torch.equal(split.inputs["image"][:, 0], source[split.extras["mnist_index"]])
        assert torch.equal(split.labels, labels[split.extras["mnist_index"]])
    # no training sample hears a recording of another split
    used = torch.bincount(splits["train"].extras["recording"], minlength=3000)
    assert used[[r.split != "train" for r in recordings]].sum() == 0


def test_seeds_fix_the_splits_and_knobs_leave_the_pairing_alone(real):
    a, b, c = build(real, seed=1), build(real, seed=1), build(real, seed=2)
    for name in ("train", "val", "test"):
        for key in ("image", "audio"):
            assert torch.equal(a[name].inputs[key], b[name].inputs[key])
        assert torch.equal(a[name].extras["recording"], b[name].extras["recording"])
        assert not torch.equal(a[name].extras["recording"], c[name].extras["recording"])
    knobs = build(real, seed=1, image_noise=0.1, image_pca_energy_removed=0.5)
    for name in ("train", "val", "test"):
        for key in ("recording", "mnist_index"):
            assert torch.equal(knobs[name].extras[key], a[name].extras[key])
        assert not torch.equal(knobs[name].inputs["image"], a[name].inputs["image"])


@pytest.mark.parametrize("fraction", [0.5, 0.75, 0.9])
def test_real_pca_removal_removes_about_the_fraction_of_training_variance(real, fraction):
    mnist = real[0]
    clean, degraded = build(real), build(real, image_pca_energy_removed=fraction)
    before, after = (_variance(s["train"].inputs["image"]) for s in (clean, degraded))
    removed = 1 - after / before
    # at least the fraction; clipping the result back to [0, 1] removes a little more
    assert fraction - 0.01 <= removed <= fraction + 0.1
    # the same transformation, fitted on the training images, is applied to the test images
    pca = PCAEnergyRemoval.fit(mnist.train_images[clean["train"].extras["mnist_index"]], fraction)
    expected = pca.apply(clean["test"].inputs["image"][:, 0])
    assert torch.equal(degraded["test"].inputs["image"][:, 0], expected)


def test_real_image_noise_has_the_knob_std(real):
    clean, noisy = build(real), build(real, image_noise=0.05)
    x, y = clean["train"].inputs["image"].double(), noisy["train"].inputs["image"].double()
    mid = (x > 80) & (x < 175)  # pixels where clipping is rare
    assert abs(((y - x)[mid] / 255).std().item() / 0.05 - 1) < 0.03


def test_registry_entry_builds_small_splits(real, monkeypatch):
    monkeypatch.setenv("MMLAB_CACHE", str(real[2]))
    spec = get_dataset("avdigits")
    assert spec.modalities == {"image": 1, "audio": 1} and spec.num_classes == 10
    assert set(spec.default_options) == {"image_noise", "image_pca_energy_removed", "audio_noise"}
    splits = spec.load_splits(train_size=64, val_size=32, test_size=48, data_seed=5,
                              options={"image_pca_energy_removed": 0.0}, root=str(real[3]))
    assert [len(splits[s]) for s in ("train", "val", "test")] == [64, 32, 48]
    with pytest.raises(ValueError, match="avdigits option"):
        spec.load_splits(train_size=8, val_size=8, test_size=8, options={"audio_snr": 3})
