"""mmlab.data.cremad: CREMA-D preprocessing into a memory-mapped cache, and its splits.

Everything runs on a tiny CREMA-D written by the tests in the release's layout
(tests/cremad_fixtures.py): real WAV files and real FLV1 videos decoded by FFmpeg.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cremad_fixtures import CLIPS, FPS, TEST, TRAIN, colour, make_cremad, write_split
from mmlab.data import DataIntegrityError, DataNotFoundError
from mmlab.data import cremad
from mmlab.data.audio import wav_log_spectrogram
from mmlab.data.cremad import (
    EMOTIONS, find_split_dir, load_cremad_splits, open_cremad_cache, preprocess_cremad,
    read_split_file,
)
from mmlab.data.registry import get_dataset
from mmlab.errors import UnknownNameError

SIZE = 32  # stored frame side in the tests
INDEX = cremad.INDEX_FILE
PROCESS_CLIP = cremad._process_clip  # the real one, whatever a test has patched

def _real_split_dir() -> Path | None:
    """OGM-GE's split files, where the library finds them ($MMLAB_DATA/cremad), looked for before the
    tests below hide the developer's folders."""
    try:
        return find_split_dir()
    except DataNotFoundError:
        return None


REAL_SPLITS = _real_split_dir()
LOOKED_IN = f"$MMLAB_DATA/cremad ({os.environ.get('MMLAB_DATA', 'unset')})"


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    """No test sees the developer's data or cache folders."""
    monkeypatch.setenv("MMLAB_DATA", str(tmp_path / "no-data"))
    monkeypatch.setenv("MMLAB_CACHE", str(tmp_path / "no-cache"))


@pytest.fixture(scope="session")
def pristine(tmp_path_factory) -> Path:
    """The tiny CREMA-D, written once; tests that spoil it use :func:`raw`."""
    base = tmp_path_factory.mktemp("cremad")
    make_cremad(base / "CREMA-D", split_dir=base / "splits")
    return base


@pytest.fixture
def raw(pristine, tmp_path) -> Path:
    """A copy of the tiny CREMA-D that a test may spoil (split files in ``raw.parent/splits``)."""
    shutil.copytree(pristine, tmp_path / "copy")
    return tmp_path / "copy" / "CREMA-D"


def run(raw_root: Path, cache_dir: Path, **options) -> Path:
    options = {"split_dir": raw_root.parent / "splits", "workers": 1, "frame_size": SIZE,
               "progress": False, **options}
    return preprocess_cremad(raw_root, cache_dir, **options)


@pytest.fixture(scope="session")
def reference(pristine, tmp_path_factory) -> Path:
    """An uninterrupted run, in this process."""
    return run(pristine / "CREMA-D", tmp_path_factory.mktemp("reference"))


def arrays(cache_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    return np.load(cache_dir / "frames.npy"), np.load(cache_dir / "spectrograms.npy")


def index(cache_dir: Path) -> dict:
    return json.loads((cache_dir / INDEX).read_text())


def assert_same_arrays(cache_dir: Path, reference: Path) -> None:
    frames, spectrograms = arrays(cache_dir)
    ref_frames, ref_spectrograms = arrays(reference)
    np.testing.assert_array_equal(frames, ref_frames)
    # the same computation; a worker process uses one thread, which may round an FFT differently
    np.testing.assert_allclose(spectrograms.astype(np.float32), ref_spectrograms.astype(np.float32),
                               rtol=2e-3, atol=2e-3)


# --------------------------------------------------------------------------- #
# The real path, end to end
# --------------------------------------------------------------------------- #
def test_cache_holds_every_clip_in_split_order(reference):
    idx = index(reference)
    assert idx["complete"] and all(idx["done"])
    assert idx["clips"] == list(TRAIN) + list(TEST)
    assert idx["labels"] == [EMOTIONS.index(c.split("_")[2]) for c in idx["clips"]]
    assert {s: v["count"] for s, v in idx["splits"].items()} == {"train": len(TRAIN), "test": len(TEST)}
    frames, spectrograms = arrays(reference)
    assert frames.dtype == np.uint8 and frames.shape == (len(CLIPS), 3, 3, SIZE, SIZE)
    assert spectrograms.dtype == np.float16 and spectrograms.shape == (len(CLIPS), 257, 188)


def test_labels_follow_ogm_ge():
    assert EMOTIONS == ("NEU", "HAP", "SAD", "FEA", "DIS", "ANG")


def test_stored_frames_are_the_first_frame_of_each_second_resized_whole(reference):
    frames, _ = arrays(reference)
    distinct = index(reference)["distinct_frames"]
    for row, (clip, seconds) in enumerate(CLIPS.items()):
        assert distinct[row] == min(3, -(-round(seconds * FPS) // FPS))  # seconds begun
        for k in range(3):
            frame = frames[row, k].astype(np.float64)
            # the left three quarters carry the colour, at full brightness only on the first
            # frame of a second; a short clip starts again at second 0 (as its audio is tiled)
            expected = colour(clip, k % distinct[row])
            left = frame[:, 2:-2, 2:SIZE * 3 // 4 - 2].reshape(3, -1).mean(axis=1)
            np.testing.assert_allclose(left, expected, atol=12, err_msg=f"{clip} second {k}")
            # the black right quarter is still a quarter: the frame was resized, not cropped
            right = frame[:, :, SIZE * 3 // 4 + 2:]
            assert right.max() < 12, f"{clip} second {k}"


def test_spectrograms_are_the_audio_modules_log_spectrograms(reference, pristine):
    _, spectrograms = arrays(reference)
    for row, clip in enumerate(CLIPS):
        expected = wav_log_spectrogram(pristine / "CREMA-D" / "AudioWAV" / f"{clip}.wav")
        np.testing.assert_array_equal(spectrograms[row], expected.astype(np.float16))


def test_splits_have_the_right_shapes_dtypes_and_labels(reference):
    splits = load_cremad_splits(val_size=2, root=reference)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [len(TRAIN) - 2, 2, len(TEST)]
    for split in splits.values():
        n = len(split)
        assert split.inputs["audio"].dtype == torch.float16
        assert split.inputs["audio"].shape == (n, 1, 257, 188)
        assert split.inputs["visual"].dtype == torch.uint8
        assert split.inputs["visual"].shape == (n, 1, 3, SIZE, SIZE)
        assert split.labels.dtype == torch.int64
        assert split.labels.tolist() == [EMOTIONS.index(c.split("_")[2]) for c in split.extras["clips"]]
    assert set(splits["test"].extras["clips"]) == set(TEST)
    frames, spectrograms = arrays(reference)
    row = list(CLIPS).index(splits["val"].extras["clips"][0])
    np.testing.assert_array_equal(splits["val"].inputs["visual"][0].numpy(), frames[row, :1])
    np.testing.assert_array_equal(splits["val"].inputs["audio"][0, 0].numpy(), spectrograms[row])


def test_validation_is_held_out_of_train_by_seed(reference):
    def clips(seed, **kw):
        s = load_cremad_splits(val_size=3, data_seed=seed, root=reference, **kw)
        return {k: s[k].extras["clips"] for k in s}

    a, again, other = clips(0), clips(0), clips(1)
    assert a == again
    assert not set(a["val"]) & set(a["train"]) and set(a["val"]) | set(a["train"]) == set(TRAIN)
    assert a["val"] != other["val"]
    small = clips(0, train_size=2, test_size=1)
    assert small["val"] == a["val"]  # the validation clips do not depend on train_size
    assert len(small["train"]) == 2 and set(small["train"]) <= set(a["train"])
    assert len(small["test"]) == 1 and set(small["test"]) <= set(TEST)
    with pytest.raises(ValueError, match="training split"):
        load_cremad_splits(val_size=5, train_size=3, root=reference)


def test_frames_option_hands_out_the_first_seconds(reference):
    splits = load_cremad_splits(val_size=0, root=reference, frames=2)
    frames, _ = arrays(reference)
    rows = [list(CLIPS).index(c) for c in splits["train"].extras["clips"]]
    np.testing.assert_array_equal(splits["train"].inputs["visual"].numpy(), frames[rows, :2])
    with pytest.raises(ValueError, match="between 1 and 3"):
        load_cremad_splits(val_size=0, root=reference, frames=4)


def test_registry_entry_builds_the_splits(reference):
    spec = get_dataset("cremad")
    assert spec.modalities == {"audio": 1, "visual": 3} and spec.num_classes == 6
    splits = spec.load_splits(train_size=None, val_size=1, test_size=None, root=str(reference),
                              options={"frames": 3})
    assert splits["train"].inputs["visual"].shape[1] == 3
    with pytest.raises(UnknownNameError):
        spec.load_splits(train_size=None, val_size=1, test_size=None, options={"fps": 1})


def test_the_cache_is_found_in_the_default_places(reference, tmp_path, monkeypatch):
    monkeypatch.setenv("MMLAB_CACHE", str(tmp_path / "c"))
    shutil.copytree(reference, tmp_path / "c" / "cremad")
    assert open_cremad_cache().path == tmp_path / "c" / "cremad"
    shutil.copytree(reference, tmp_path / "d" / "cremad" / "cache")
    monkeypatch.setenv("MMLAB_DATA", str(tmp_path / "d"))
    assert open_cremad_cache().path == tmp_path / "d" / "cremad" / "cache"
    assert open_cremad_cache(tmp_path / "c" / "cremad").path == tmp_path / "c" / "cremad"


def test_preprocessing_writes_to_the_default_cache(raw, tmp_path, monkeypatch):
    monkeypatch.setenv("MMLAB_CACHE", str(tmp_path / "cache"))
    folder = preprocess_cremad(raw, split_dir=raw.parent / "splits", workers=1, frame_size=8,
                               frames_per_clip=1, progress=False)
    assert folder == tmp_path / "cache" / "cremad"
    assert len(load_cremad_splits(val_size=0)["train"]) == len(TRAIN)


# --------------------------------------------------------------------------- #
# Interruption and resumption
# --------------------------------------------------------------------------- #
def recording(monkeypatch, crash_after: int | None = None) -> list[str]:
    """Record the clips :func:`cremad._process_clip` is asked to do (in this process); with
    ``crash_after=k``, raise KeyboardInterrupt when asked for a clip after the first k."""
    calls: list[str] = []

    def process(task):
        if crash_after is not None and len(calls) == crash_after:
            raise KeyboardInterrupt
        calls.append(task.clip)
        return PROCESS_CLIP(task)

    monkeypatch.setattr(cremad, "_process_clip", process)
    return calls


def test_interrupted_run_resumes_where_it_stopped(pristine, reference, tmp_path, monkeypatch):
    calls = recording(monkeypatch, crash_after=4)
    with pytest.raises(KeyboardInterrupt):
        run(pristine / "CREMA-D", tmp_path / "cache")
    idx = index(tmp_path / "cache")
    assert not idx["complete"] and [c for c, d in zip(idx["clips"], idx["done"]) if d] == calls
    with pytest.raises(DataNotFoundError, match="4 of 9 clips are done"):
        open_cremad_cache(tmp_path / "cache")

    redone = recording(monkeypatch)
    run(pristine / "CREMA-D", tmp_path / "cache")
    assert redone == [c for c in CLIPS if c not in calls]
    assert index(tmp_path / "cache")["complete"]
    assert_same_arrays(tmp_path / "cache", reference)

    redone.clear()  # a finished cache is not touched again
    run(pristine / "CREMA-D", tmp_path / "cache")
    assert redone == []


def test_a_killed_run_resumes_from_what_was_flushed(pristine, reference, tmp_path, monkeypatch):
    """No finally clause runs on kill -9: the periodic flushes alone must leave a usable cache."""
    monkeypatch.setattr(cremad, "FLUSH_SECONDS", 0.0)  # flush after every clip
    calls = []

    def killed_after_four(task):
        if len(calls) == 4:
            shutil.copytree(tmp_path / "cache", tmp_path / "killed")  # what a kill leaves on disk
            raise KeyboardInterrupt
        calls.append(task.clip)
        return PROCESS_CLIP(task)

    monkeypatch.setattr(cremad, "_process_clip", killed_after_four)
    with pytest.raises(KeyboardInterrupt):
        run(pristine / "CREMA-D", tmp_path / "cache")
    assert sum(index(tmp_path / "killed")["done"]) == 4
    redone = recording(monkeypatch)
    run(pristine / "CREMA-D", tmp_path / "killed")
    assert redone == [c for c in CLIPS if c not in calls]
    assert_same_arrays(tmp_path / "killed", reference)


def test_a_damaged_cache_is_reported_not_used(reference, pristine, tmp_path):
    shutil.copytree(reference, tmp_path / "cache")
    (tmp_path / "cache" / "frames.npy").unlink()
    with pytest.raises(DataIntegrityError, match="frames.npy"):
        run(pristine / "CREMA-D", tmp_path / "cache")
    with pytest.raises(DataIntegrityError, match="frames.npy cannot be read"):
        open_cremad_cache(tmp_path / "cache")
    (tmp_path / "cache" / INDEX).write_text('{"done": [tru')
    with pytest.raises(DataIntegrityError, match="cannot be read.*overwrite=True"):
        open_cremad_cache(tmp_path / "cache")


def test_interrupted_run_with_worker_processes(pristine, reference, tmp_path, monkeypatch):
    """workers=2: clips decoded in spawned processes, stored here; Ctrl-C after three."""
    stored = []
    original = cremad._CacheWriter.store

    def store(self, row, *rest):
        if len(stored) == 3:
            raise KeyboardInterrupt
        stored.append(self.index["clips"][row])
        original(self, row, *rest)

    monkeypatch.setattr(cremad._CacheWriter, "store", store)
    with pytest.raises(KeyboardInterrupt):
        run(pristine / "CREMA-D", tmp_path / "cache", workers=2)
    idx = index(tmp_path / "cache")
    assert sorted(c for c, d in zip(idx["clips"], idx["done"]) if d) == sorted(stored)
    monkeypatch.setattr(cremad._CacheWriter, "store", original)

    redone = recording(monkeypatch)
    run(pristine / "CREMA-D", tmp_path / "cache")
    assert sorted(redone) == sorted(set(CLIPS) - set(stored))
    assert_same_arrays(tmp_path / "cache", reference)


def test_a_cache_made_differently_is_kept_unless_overwritten(pristine, tmp_path):
    folder = run(pristine / "CREMA-D", tmp_path / "cache", frames_per_clip=1)
    before = (folder / INDEX).read_bytes()
    with pytest.raises(DataIntegrityError, match="frames_per_clip: 1 in the cache, 2 now"):
        run(pristine / "CREMA-D", folder, frames_per_clip=2)
    assert (folder / INDEX).read_bytes() == before
    run(pristine / "CREMA-D", folder, frames_per_clip=2, overwrite=True)
    assert arrays(folder)[0].shape[1] == 2


def test_a_second_run_on_the_same_cache_is_refused(pristine, tmp_path):
    import fcntl

    (tmp_path / "cache").mkdir()
    with open(tmp_path / "cache" / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(RuntimeError, match="Another process"):
            run(pristine / "CREMA-D", tmp_path / "cache")


def test_a_full_disk_is_refused_before_any_work(pristine, tmp_path, monkeypatch):
    monkeypatch.setattr(cremad.shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(1, 1, 1000))
    with pytest.raises(OSError, match="Not enough free disk space"):
        run(pristine / "CREMA-D", tmp_path / "cache")
    assert not (tmp_path / "cache" / "frames.npy").exists()


# --------------------------------------------------------------------------- #
# Bad input
# --------------------------------------------------------------------------- #
def test_missing_files_are_all_reported_before_any_work(raw, tmp_path):
    (raw / "AudioWAV" / "1002_IEO_HAP_HI.wav").unlink()
    (raw / "VideoFlash" / "1008_IWL_HAP_XX.flv").unlink()
    with pytest.raises(DataNotFoundError) as caught:
        run(raw, tmp_path / "cache")
    message = str(caught.value)
    assert "lacks 2 files" in message
    assert "AudioWAV/1002_IEO_HAP_HI.wav" in message and "VideoFlash/1008_IWL_HAP_XX.flv" in message
    assert not (tmp_path / "cache" / INDEX).exists()


def test_bad_input_keeps_what_was_done(raw, tmp_path, monkeypatch):
    calls = recording(monkeypatch, crash_after=3)
    with pytest.raises(KeyboardInterrupt):
        run(raw, tmp_path / "cache")
    monkeypatch.setattr(cremad, "_process_clip", PROCESS_CLIP)
    before = (tmp_path / "cache" / INDEX).read_bytes(), arrays(tmp_path / "cache")
    (raw / "VideoFlash" / "1009_ITH_NEU_XX.flv").unlink()
    with pytest.raises(DataNotFoundError, match="1009_ITH_NEU_XX.flv"):
        run(raw, tmp_path / "cache")
    assert (tmp_path / "cache" / INDEX).read_bytes() == before[0]
    for now, then in zip(arrays(tmp_path / "cache"), before[1]):
        np.testing.assert_array_equal(now, then)


def test_a_misnamed_file_is_pointed_out(raw, tmp_path):
    (raw / "AudioWAV" / "1002_IEO_HAP_HI.wav").rename(raw / "AudioWAV" / "1002_IEO_HAP_H.wav")
    with pytest.raises(DataNotFoundError, match=r"found 1002_IEO_HAP_H\.wav"):
        run(raw, tmp_path / "cache")


def test_a_split_naming_other_clips_says_none_is_there(raw, tmp_path):
    write_split(raw.parent / "splits" / "test.csv", ["1090_WSI_SAD_XX", "1091_TSI_FEA_LO"])
    with pytest.raises(DataNotFoundError) as caught:
        run(raw, tmp_path / "cache")
    assert "VideoFlash/1090_WSI_SAD_XX.flv" in str(caught.value)
    write_split(raw.parent / "splits" / "train.csv", ["1089_ITS_HAP_XX"])
    with pytest.raises(DataNotFoundError, match="none of the 3 clips has a .wav file"):
        run(raw, tmp_path / "cache")


def test_undecodable_files_are_named_and_the_other_clips_kept(raw, tmp_path):
    (raw / "VideoFlash" / "1003_TIE_SAD_LO.flv").write_bytes(b"FLV\x01" + bytes(range(256)) * 8)
    (raw / "AudioWAV" / "1008_IWL_HAP_XX.wav").write_bytes(b"RIFF\x00\x00")
    with pytest.raises(DataIntegrityError) as caught:
        run(raw, tmp_path / "cache")
    message = str(caught.value)
    assert "2 CREMA-D clips could not be preprocessed" in message
    assert "1003_TIE_SAD_LO.flv" in message and "1008_IWL_HAP_XX.wav" in message
    idx = index(tmp_path / "cache")
    assert sum(idx["done"]) == len(CLIPS) - 2 and set(idx["failed"]) == {"1003_TIE_SAD_LO", "1008_IWL_HAP_XX"}
    with pytest.raises(DataNotFoundError, match="2 clips failed"):
        open_cremad_cache(tmp_path / "cache")

    # left out on request: the splits load without them, with a warning
    with pytest.warns(UserWarning, match="(?s)^2 CREMA-D clips could not be decoded; left out.*1003_TIE_SAD_LO"):
        run(raw, tmp_path / "cache", skip_unreadable=True)
    with pytest.warns(UserWarning, match="^Left out when the cache was made: 2 CREMA-D clips "):
        splits = load_cremad_splits(val_size=0, root=tmp_path / "cache")
    assert "1003_TIE_SAD_LO" not in splits["train"].extras["clips"]
    assert splits["test"].extras["clips"] == ["1009_ITH_NEU_XX"]


def test_repaired_files_are_the_only_ones_redone(raw, pristine, reference, tmp_path, monkeypatch):
    bad = raw / "VideoFlash" / "1003_TIE_SAD_LO.flv"
    bad.write_bytes(b"not a video")
    with pytest.raises(DataIntegrityError, match="1003_TIE_SAD_LO.flv"):
        run(raw, tmp_path / "cache")
    shutil.copy(pristine / "CREMA-D" / "VideoFlash" / bad.name, bad)
    redone = recording(monkeypatch)
    run(raw, tmp_path / "cache")
    assert redone == ["1003_TIE_SAD_LO"]
    assert_same_arrays(tmp_path / "cache", reference)


def test_git_lfs_pointer_files_are_recognised(raw, tmp_path):
    for clip in ("1001_DFA_ANG_XX", "1004_IOM_FEA_MD"):
        (raw / "VideoFlash" / f"{clip}.flv").write_text(
            "version https://git-lfs.github.com/spec/v1\noid sha256:" + "0" * 64 + "\nsize 123456\n")
    with pytest.raises(DataNotFoundError, match="2 media files .* Git LFS pointer") as caught:
        run(raw, tmp_path / "cache")
    assert "git lfs pull" in str(caught.value) and "VideoFlash/1001_DFA_ANG_XX.flv" in str(caught.value)


def test_a_wrong_folder_says_what_was_expected_and_found(raw, tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist"):
        run(tmp_path / "nowhere", tmp_path / "cache")
    with pytest.raises(DataNotFoundError) as caught:
        run(raw / "AudioWAV", tmp_path / "cache")
    message = str(caught.value)
    assert "no AudioWAV/ and no VideoFlash/" in message and "pass its parent" in message
    with pytest.raises(DataNotFoundError, match=r"Did you mean .*CREMA-D\?"):
        run(raw.parent, tmp_path / "cache")
    shutil.rmtree(raw / "VideoFlash")
    with pytest.raises(DataNotFoundError, match="no VideoFlash/.*found: AudioWAV/"):
        run(raw, tmp_path / "cache")


def test_bad_split_rows_are_all_reported_with_line_numbers(tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes(b"1001_DFA_ANG_XX,ANG\r\n1001_DFA_XX,ANG\r\n1002_IEO_HAP_HI,SAD\r\n"
                     b"1003_TIE_SAD_LO,SAD,extra\r\n1004_IOM_FEA_MD,FEAR\r\n1001_DFA_ANG_XX,ANG\r\n")
    with pytest.raises(DataIntegrityError) as caught:
        read_split_file(path)
    message = str(caught.value)
    assert str(path) in message and "5 bad rows" in message
    for line in (2, 3, 4, 5, 6):
        assert f"line {line}:" in message
    assert "line 1:" not in message


def test_overlapping_splits_are_refused(raw, tmp_path):
    write_split(raw.parent / "splits" / "test.csv", ["1008_IWL_HAP_XX", "1001_DFA_ANG_XX"])
    with pytest.raises(DataIntegrityError, match="(?s)overlap.*1001_DFA_ANG_XX"):
        run(raw, tmp_path / "cache")


def test_split_files_are_looked_for_in_mmlab_data_then_the_raw_folder(raw, tmp_path, monkeypatch):
    with pytest.raises(DataNotFoundError) as caught:
        find_split_dir(raw_root=raw)
    assert "no-data/cremad" in str(caught.value) and "OGM-GE_CVPR2022" in str(caught.value)
    for name in ("train.csv", "test.csv"):
        shutil.copy(raw.parent / "splits" / name, raw / name)
    assert find_split_dir(raw_root=raw) == raw
    shutil.copytree(raw.parent / "splits", tmp_path / "data" / "cremad")
    monkeypatch.setenv("MMLAB_DATA", str(tmp_path / "data"))
    assert find_split_dir(raw_root=raw) == tmp_path / "data" / "cremad"
    with pytest.raises(DataNotFoundError, match="split_dir argument"):
        find_split_dir(tmp_path / "empty", raw)


def test_ogm_ge_split_files_parse():
    folder = REAL_SPLITS
    if folder is None:
        pytest.skip(f"the OGM-GE split files were not found (looked in {LOOKED_IN})")
    train, train_labels = read_split_file(folder / "train.csv")
    test, test_labels = read_split_file(folder / "test.csv")
    assert (len(train), len(test)) == (6698, 744) and not set(train) & set(test)
    counts = np.bincount(train_labels + test_labels, minlength=6)
    assert counts.tolist() == [1087] + [1271] * 5


def test_no_cache_says_how_to_get_cremad(tmp_path):
    with pytest.raises(DataNotFoundError) as caught:
        load_cremad_splits(val_size=0, root=tmp_path)
    message = str(caught.value)
    for needle in ("book/cremad.md", "python -m mmlab preprocess-cremad RAW_ROOT", "no-cache/cremad",
                   "CheyneyComputerScience/CREMA-D", str(tmp_path / "cremad" / "cache")):
        assert needle in message


def test_a_run_trains_on_the_preprocessed_cache(reference, tmp_path):
    """Raw files -> cache -> the training loop with ResNet-18 encoders and augmented frames."""
    from mmlab import RunConfig
    from mmlab.training import train

    config = RunConfig.from_profile(dataset="cremad", method="ogm_ge", profile="smoke", train_size=None, val_size=2,
                                    test_size=None, epochs=1, batch_size=4, grad_probe_every=0)
    record = train(config, checkpoint_dir=tmp_path, progress=False, data_root=str(reference))
    n_train = len(TRAIN) - 2
    assert record["dataset"]["train"]["size"] == n_train and record["dataset"]["test"]["size"] == len(TEST)
    assert record["history"][0]["step"] == n_train // 4 + (n_train % 4 >= 2)  # a last batch of one is dropped
    assert {"test/acc/audio", "test/acc/visual", "train/ogm_rho/audio"} <= set(record["history"][0])


@pytest.mark.parametrize("method, options, epochs", [
    ("udi", {"anchor_epochs": 1}, 2),
    ("mla", {}, 1),
    ("reconboost", {"stage_epochs": 1, "rectify_epochs": 1}, 3),
    ("relearning", {"relearn_every": 1}, 2),
])
def test_chapter_6_s_schedules_train_on_the_cremad_path(reference, tmp_path, method, options, epochs):
    """Chapter 6's methods end to end on the real CREMA-D path (the tiny release, preprocessed): ResNet-18
    encoders, frames augmented on the device; every stage of each schedule runs and is evaluated per modality."""
    from mmlab import RunConfig
    from mmlab.training import train

    config = RunConfig.from_profile(dataset="cremad", method=method, profile="smoke", method_options=options,
                                    dataset_options={"frames": 1}, train_size=None, val_size=2, test_size=None,
                                    epochs=epochs, batch_size=2, grad_probe_every=0)
    record = train(config, checkpoint_dir=tmp_path, data_root=str(reference), progress=False)
    assert len(record["history"]) == epochs
    assert {"test/acc", "test/acc/audio", "test/acc/visual"} <= set(record["final"])
