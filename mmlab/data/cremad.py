"""CREMA-D: from the raw release to a memory-mapped cache, and the splits the book trains on.

CREMA-D (Cao et al., IEEE Trans. Affective Computing 2014) is the audio-visual data set of
chapter 5, *Audio-visual learning*: 7,442 clips of 91 actors saying one of 12 sentences with one
of six emotions. Its public repository (github.com/CheyneyComputerScience/CREMA-D, media in Git
LFS; book/cremad.md says how to get it) holds, among others::

    AudioWAV/<clip>.wav      16 kHz mono speech
    VideoFlash/<clip>.flv    480x360 face video (Flash video)

with clip names ``AAAA_SSS_EEE_LL`` (actor, sentence, emotion, level), e.g. ``1001_DFA_ANG_XX``.
The book uses OGM-GE's train/test split (Peng et al., CVPR 2022, repository
GeWu-Lab/OGM-GE_CVPR2022, ``data/CREMAD/train.csv`` and ``test.csv``: 6,698 and 744 rows
``clip,EMO``, no header, CRLF). Labels: NEU 0, HAP 1, SAD 2, FEA 3, DIS 4, ANG 5.

Decoding 7,442 videos every epoch would bind a GPU run to the CPU, so :func:`preprocess_cremad`
does it once and :func:`load_cremad_splits` memory-maps the result.

The protocol (OGM-GE's, ../shared/reference/METHODS.md)
--------------------------------------------------------
- **Audio**: the WAV file at 22,050 Hz, tiled to exactly 3 s, clipped to [-1, 1], STFT with
  ``n_fft`` 512 and hop 353, ``log(|S| + 1e-7)``: ``257 x 188``
  (:func:`mmlab.data.audio.wav_log_spectrogram`).
- **Frames**: one per second, the first frame of each second (OGM-GE's
  ``data/CREMAD/video_preprocessing.py``), resized to a square (its test transform is
  ``Resize((224, 224))``, the whole frame squeezed; :mod:`mmlab.data.video`).
- **Frames per clip**: OGM-GE's ``CramedDataset`` reads ``args.fps`` frames of a clip, 1 by
  default, and its ResNet-18 encodes each of the ``T`` frames and averages the features over
  ``T``. The cache keeps ``frames_per_clip`` (default 3) frames, those of seconds 0, 1, 2 (the 3 s
  of audio); :func:`load_cremad_splits` hands out the first ``frames`` of them (default 1).

Departures from OGM-GE, each on purpose
----------------------------------------
1. Frames are stored already resized to ``frame_size x frame_size`` (default 224), not as
   full-size JPEG files: the test input is exactly OGM-GE's ``Resize((224, 224))``, but a
   training ``RandomResizedCrop(224)`` now crops the 224 x 224 frame instead of the 480 x 360
   original, so a small crop is upsampled from fewer pixels (and its aspect ratios are drawn
   on the squeezed frame). No JPEG compression either.
2. With ``frames=1`` the frame is the one of second 0. OGM-GE takes the first file that
   ``os.listdir`` returns among the clip's one-per-second frames: an order the file system
   decides (it computes a random choice of frames, then does not use it).
3. A clip shorter than ``frames_per_clip`` seconds repeats its frames in turn, as its audio
   is tiled (OGM-GE has as many frames as seconds and reads only the first ``fps``).
4. A clip named in the split whose WAV or FLV file is missing is an error. OGM-GE's dataset
   silently leaves it out. A file that cannot be decoded is an error too, unless
   ``skip_unreadable=True`` leaves it out (recorded in the cache's index).
5. The validation split is held out of OGM-GE's training split (``val_size`` clips, drawn with
   ``data_seed``); OGM-GE has none and picks its best epoch on the test split.
6. The k-th frame kept is decoded frame ``round(k * fps)`` rather than ``k * int(fps)``: the
   same frame at CREMA-D's integer rate.

The cache
---------
One folder (default ``$MMLAB_CACHE/cremad``, else ``~/.cache/mmlab/cremad``) holding:

- ``frames.npy``: ``uint8 [N, T, 3, S, S]``, RGB, ``T = frames_per_clip``, ``S = frame_size``;
- ``spectrograms.npy``: ``float16 [N, 257, 188]`` (about three significant digits, enough for
  log-magnitudes between -16 and about 6);
- ``cremad_index.json``: the format and version, the parameters, the split files' SHA-256,
  the ``N`` clip names (``train.csv`` rows, then ``test.csv`` rows) with their labels, and per
  clip whether it is done, how many distinct frames it has, and which clips failed or were
  left out and why; ``complete`` once every clip is done or left out.

Both arrays are ``.npy`` files written through memory maps; a row is marked done in the index
only after the arrays were flushed to disk, and the index is replaced atomically (every
:data:`FLUSH_SECONDS` and when the run stops for any reason). An interrupted run, rerun with
the same arguments, does only the clips that are not done; Ctrl-C loses at most the clips in
flight. Rerunning a finished run returns at once.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import multiprocessing
import os
import re
import shutil
import time
import warnings
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from ..errors import plural
from ..io import atomic_write_bytes
from . import audio
from .errors import DataIntegrityError, DataNotFoundError, check_named_root
from .split import Split
from .video import one_fps_frames

__all__ = [
    "EMOTIONS",
    "CremadCache",
    "check_raw_layout",
    "default_cache_dir",
    "find_cremad_cache",
    "find_split_dir",
    "load_cremad_splits",
    "open_cremad_cache",
    "preprocess_cremad",
    "read_split_file",
]

#: Emotion codes in label order: NEU 0, HAP 1, SAD 2, FEA 3, DIS 4, ANG 5 (OGM-GE's class_dict).
EMOTIONS: tuple[str, ...] = ("NEU", "HAP", "SAD", "FEA", "DIS", "ANG")
LABELS: dict[str, int] = {code: i for i, code in enumerate(EMOTIONS)}

AUDIO_DIR, VIDEO_DIR = "AudioWAV", "VideoFlash"
SPLIT_FILES: dict[str, str] = {"train": "train.csv", "test": "test.csv"}
INDEX_FILE, FRAMES_FILE, SPECTROGRAMS_FILE = "cremad_index.json", "frames.npy", "spectrograms.npy"
CACHE_FORMAT, CACHE_VERSION = "mmlab-cremad-cache", 1

DEFAULT_FRAMES_PER_CLIP = 3
DEFAULT_FRAME_SIZE = 224
#: How often (seconds) the index is rewritten while preprocessing runs.
FLUSH_SECONDS = 2.0

DATA_ENV, CACHE_ENV = "MMLAB_DATA", "MMLAB_CACHE"
SPLIT_URL = "https://github.com/GeWu-Lab/OGM-GE_CVPR2022/tree/main/data/CREMAD"
COMMAND = "python -m mmlab preprocess-cremad RAW_ROOT"
GUIDE = "book/cremad.md, 'Getting CREMA-D'"

_CLIP_NAME = re.compile(r"^\d{4}_[A-Z]{3}_[A-Z]{3}_[A-Z]{2}$")
_LFS_POINTER = b"version https://git-lfs"
_SHOW = 5  # how many names an error message lists before "... and N more"


def _listing(items: Sequence[str], total: int | None = None) -> str:
    """The first few ``items``, one per line, then how many more there are."""
    total = len(items) if total is None else total
    lines = [f"  - {item}" for item in items[:_SHOW]]
    if total > _SHOW:
        lines.append(f"  ... and {total - _SHOW:,} more")
    return "\n".join(lines)


# --------------------------------------------------------------------------- #
# The raw release and the split files
# --------------------------------------------------------------------------- #
def read_split_file(path: str | os.PathLike) -> tuple[list[str], list[int]]:
    """``(clips, labels)`` from a split file in OGM-GE's format: rows ``clip,EMO``, no header.

    CRLF or LF line ends and a UTF-8 byte-order mark are accepted. Every row is checked: two
    fields, a clip name ``AAAA_SSS_EEE_LL``, one of the six emotion codes, the same emotion as
    the name's third part, no clip twice. All bad rows are reported in one
    :class:`DataIntegrityError` naming the file and the line numbers.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataIntegrityError(f"Split file {path} is not UTF-8 text ({exc}).") from None
    clips: list[str] = []
    labels: list[int] = []
    seen: dict[str, int] = {}
    problems: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 2:
            problems.append(f"line {number}: {line!r} has {len(fields)} fields, not 2 (clip,EMO)")
            continue
        clip, code = fields
        if not _CLIP_NAME.match(clip):
            problems.append(f"line {number}: {clip!r} is not a clip name like 1001_DFA_ANG_XX")
        elif code not in LABELS:
            problems.append(f"line {number}: {code!r} is not one of {', '.join(EMOTIONS)}")
        elif clip.split("_")[2] != code:
            problems.append(f"line {number}: clip {clip} is labelled {code}, "
                            f"but its name says {clip.split('_')[2]}")
        elif clip in seen:
            problems.append(f"line {number}: clip {clip} is also on line {seen[clip]}")
        else:
            seen[clip] = number
            clips.append(clip)
            labels.append(LABELS[code])
    if problems:
        raise DataIntegrityError(
            f"Split file {path} has {plural('bad row', len(problems))}:\n{_listing(problems)}\n"
            "Each row must be 'clip,EMO', e.g. '1001_DFA_ANG_XX,ANG', as in OGM-GE's "
            f"data/CREMAD/ files ({SPLIT_URL})."
        )
    if not clips:
        raise DataIntegrityError(f"Split file {path} names no clips.")
    return clips, labels


def find_split_dir(split_dir: str | os.PathLike | None = None,
                   raw_root: str | os.PathLike | None = None) -> Path:
    """The folder holding ``train.csv`` and ``test.csv``.

    ``split_dir`` if given (it must hold both files); otherwise the first of
    ``$MMLAB_DATA/cremad`` and ``raw_root`` that holds both. The split files are not shipped
    with mmlab: they are OGM-GE's, from :data:`SPLIT_URL`.
    """
    names = tuple(SPLIT_FILES.values())
    if split_dir is not None:
        candidates = [(Path(split_dir).expanduser(), "split_dir argument")]
    else:
        candidates = []
        env = os.environ.get(DATA_ENV, "").strip()
        if env:
            candidates.append((Path(env).expanduser() / "cremad", f"${DATA_ENV}/cremad"))
        if raw_root is not None:
            candidates.append((Path(raw_root).expanduser(), "the raw CREMA-D folder"))
    report = []
    for folder, origin in candidates:
        missing = [n for n in names if not (folder / n).is_file()]
        if not missing:
            return folder
        report.append(f"{folder} ({origin}): no {' and no '.join(missing)}")
    if split_dir is None and not os.environ.get(DATA_ENV, "").strip():
        report.append(f"(the environment variable {DATA_ENV} is not set)")
    raise DataNotFoundError(
        "The CREMA-D split files train.csv and test.csv were not found:\n"
        + "\n".join(f"  - {r}" for r in report)
        + f"\nThey are OGM-GE's split (6,698 and 744 clips), at {SPLIT_URL}. Download the two "
        f"files into ${DATA_ENV}/cremad/ or into the raw CREMA-D folder, or pass split_dir=... "
        f"(see {GUIDE})."
    )


def check_raw_layout(raw_root: str | os.PathLike) -> tuple[Path, Path]:
    """``(audio_dir, video_dir)``: ``raw_root/AudioWAV`` and ``raw_root/VideoFlash``.

    A missing folder raises :class:`DataNotFoundError` saying what was expected, what was
    found, and, where it can tell, which folder was probably meant.
    """
    root = Path(raw_root).expanduser()
    if not root.exists():
        raise DataNotFoundError(f"The CREMA-D folder {root} does not exist.")
    if not root.is_dir():
        raise DataNotFoundError(f"The CREMA-D folder {root} is a file, not a folder.")
    audio_dir, video_dir = root / AUDIO_DIR, root / VIDEO_DIR
    missing = [d.name + "/" for d in (audio_dir, video_dir) if not d.is_dir()]
    if not missing:
        return audio_dir, video_dir
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
    found = ", ".join(entries[:10]) + (f", ... ({len(entries):,} entries)" if len(entries) > 10 else "")
    hint = ""
    if root.name in (AUDIO_DIR, VIDEO_DIR):
        hint = f" This looks like the {root.name} folder itself: pass its parent, {root.parent}."
    else:
        inner = [p for p in root.iterdir() if (p / AUDIO_DIR).is_dir() and (p / VIDEO_DIR).is_dir()]
        if inner:
            hint = f" Did you mean {inner[0]}? It holds both folders."
    raise DataNotFoundError(
        f"{root} is not a CREMA-D folder: it has no {' and no '.join(missing)}. Expected the "
        f"layout of the CREMA-D repository, {AUDIO_DIR}/<clip>.wav and {VIDEO_DIR}/<clip>.flv; "
        f"found: {found or 'nothing (the folder is empty)'}.{hint} See {GUIDE}."
    )


def _check_media(clips: Sequence[str], audio_dir: Path, video_dir: Path) -> None:
    """Fail before any work if a clip's WAV or FLV file is missing or a Git LFS stub."""
    named = set(clips)
    missing: list[str] = []  # one line per missing file, or one for a whole folder
    count = 0
    stubs: list[str] = []
    for folder, suffix in ((audio_dir, ".wav"), (video_dir, ".flv")):
        sizes = {}
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.endswith(suffix) and entry.is_file():
                    sizes[entry.name[: -len(suffix)]] = entry.stat().st_size
        absent = [c for c in clips if c not in sizes]
        count += len(absent)
        if absent and len(absent) == len(clips):
            missing.append(f"{folder.name}/: none of the {len(clips):,} clips has a {suffix} file "
                           f"here ({len(sizes):,} {suffix} files in all)")
            continue
        unnamed = {}  # files the split does not name, by actor_sentence_emotion: misnamed ones
        for stem in sizes.keys() - named:
            unnamed.setdefault(stem[:12], stem)
        for clip in absent:
            similar = unnamed.get(clip[:12])
            note = f" (found {similar}{suffix}: misnamed?)" if similar else ""
            missing.append(f"{folder.name}/{clip}{suffix}{note}")
        for clip in clips:
            if sizes.get(clip, 1024) < 1024:  # a pointer file is about 130 bytes
                with open(folder / f"{clip}{suffix}", "rb") as f:
                    if f.read(len(_LFS_POINTER)) == _LFS_POINTER:
                        stubs.append(f"{folder.name}/{clip}{suffix}")
    root = audio_dir.parent
    if missing:
        raise DataNotFoundError(
            f"CREMA-D in {root} lacks {plural('file', count)} of clips named in the split files:\n"
            f"{_listing(missing)}\n"
            f"Every clip needs {AUDIO_DIR}/<clip>.wav and {VIDEO_DIR}/<clip>.flv. Download the "
            f"missing files (see {GUIDE}) and run again; nothing was preprocessed yet."
        )
    if stubs:
        raise DataNotFoundError(
            f"{len(stubs):,} media files in {root} are Git LFS pointer files (small text stubs), "
            f"not audio or video:\n{_listing(stubs)}\nThe repository was cloned or downloaded "
            "without its Git LFS content. In the clone, run\n"
            f'    git lfs install && git lfs pull --include "{AUDIO_DIR}/*,{VIDEO_DIR}/*"\n'
            f"(see {GUIDE}); nothing was preprocessed yet."
        )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- #
# One clip (runs in a worker process)
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class _Task:
    row: int
    clip: str
    wav: str
    flv: str
    frames_per_clip: int
    frame_size: int


def _init_worker() -> None:
    """Worker set-up: Ctrl-C is the main process's business; one thread per process."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)


def _process_clip(task: _Task) -> tuple[int, np.ndarray, np.ndarray, int]:
    """``(row, frames uint8 [T, 3, S, S], spectrogram float16 [257, 188], distinct frames)``.

    Errors name the file (:class:`DataIntegrityError` for a file that cannot be decoded).
    """
    spectrogram = audio.wav_log_spectrogram(task.wav).astype(np.float16)
    frames, distinct = one_fps_frames(task.flv, task.frames_per_clip, task.frame_size)
    return task.row, frames, spectrogram, distinct


# --------------------------------------------------------------------------- #
# The cache, while it is written
# --------------------------------------------------------------------------- #
def default_cache_dir() -> Path:
    """``$MMLAB_CACHE/cremad``, else ``~/.cache/mmlab/cremad``: where the cache goes by default."""
    env = os.environ.get(CACHE_ENV, "").strip()
    return (Path(env).expanduser() if env else Path.home() / ".cache" / "mmlab") / "cremad"


@contextmanager
def _exclusive(folder: Path) -> Iterator[None]:
    """Hold a lock on ``folder`` so that two runs never write one cache (where fcntl exists).

    The lock dies with its process, so an interrupted run never leaves a stale one.
    """
    try:
        import fcntl
    except ImportError:  # Windows: no lock
        yield
        return
    with open(folder / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise RuntimeError(
                f"Another process is preprocessing CREMA-D into {folder}; wait for it to finish "
                "or stop it (what it has done is kept), then run again."
            ) from None
        yield


class _CacheWriter:
    """The cache folder opened for writing: the two memory maps and the index."""

    def __init__(self, folder: Path, index: dict, create: bool):
        self.folder, self.index = folder, index
        n = len(index["clips"])
        p = index["params"]
        shapes = {
            FRAMES_FILE: ((n, p["frames_per_clip"], 3, p["frame_size"], p["frame_size"]), np.uint8),
            SPECTROGRAMS_FILE: ((n, *p["spectrogram_shape"]), np.float16),
        }
        self.arrays = {}
        for name, (shape, dtype) in shapes.items():
            path = folder / name
            if create:
                self.arrays[name] = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
                continue
            try:
                array = np.lib.format.open_memmap(path, mode="r+")
            except (OSError, ValueError) as exc:
                raise DataIntegrityError(
                    f"The CREMA-D cache file {path} is missing or unreadable ({exc}), although "
                    f"{folder / INDEX_FILE} lists clips as done. Rebuild the cache with "
                    "overwrite=True (--overwrite)."
                ) from None
            if array.shape != shape or array.dtype != dtype:
                raise DataIntegrityError(
                    f"The CREMA-D cache file {path} holds {array.dtype} {array.shape}, but its "
                    f"index expects {np.dtype(dtype)} {shape}. Rebuild it with overwrite=True."
                )
            self.arrays[name] = array
        self.last_flush = time.monotonic()

    @property
    def frames(self) -> np.ndarray:
        return self.arrays[FRAMES_FILE]

    @property
    def spectrograms(self) -> np.ndarray:
        return self.arrays[SPECTROGRAMS_FILE]

    def store(self, row: int, frames: np.ndarray, spectrogram: np.ndarray, distinct: int) -> None:
        """Write one clip's arrays; it counts as done once :meth:`flush` has run."""
        self.frames[row] = frames
        self.spectrograms[row] = spectrogram
        self.index["done"][row] = True
        self.index["distinct_frames"][row] = int(distinct)
        self.index["failed"].pop(self.index["clips"][row], None)
        if time.monotonic() - self.last_flush >= FLUSH_SECONDS:
            self.flush()

    def fail(self, row: int, reason: str) -> None:
        self.index["failed"][self.index["clips"][row]] = reason

    def flush(self) -> None:
        """Arrays to disk first, then the index that says which rows are done."""
        for array in self.arrays.values():
            array.flush()
        _write_index(self.folder, self.index)
        self.last_flush = time.monotonic()


def _write_index(folder: Path, index: dict) -> None:
    atomic_write_bytes(folder / INDEX_FILE, (json.dumps(index, indent=1) + "\n").encode())


def _read_index(path: Path) -> dict:
    try:
        index = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataIntegrityError(
            f"The CREMA-D cache index {path} cannot be read ({exc}). Rebuild the cache with "
            "overwrite=True."
        ) from None
    if not isinstance(index, dict) or index.get("format") != CACHE_FORMAT:
        raise DataIntegrityError(f"{path} is not a CREMA-D cache index made by mmlab.")
    if index.get("version") != CACHE_VERSION:
        raise DataIntegrityError(
            f"The CREMA-D cache {path.parent} has format version {index.get('version')}; this "
            f"mmlab reads version {CACHE_VERSION}. Rebuild it with overwrite=True."
        )
    return index


def _check_free_space(folder: Path, p: dict, n: int) -> None:
    """Refuse to start when the disk cannot hold the arrays (writing a memory map to a full
    disk kills the process instead of raising an error)."""
    needed = n * (p["frames_per_clip"] * 3 * p["frame_size"] ** 2
                  + 2 * math.prod(p["spectrogram_shape"]))
    allocated = sum(getattr((folder / name).stat(), "st_blocks", 0) * 512
                    for name in (FRAMES_FILE, SPECTROGRAMS_FILE) if (folder / name).exists())
    free = shutil.disk_usage(folder).free
    if needed - allocated > free:
        raise OSError(
            errno.ENOSPC,
            f"Not enough free disk space for the CREMA-D cache: it needs {needed / 1e9:.1f} GB "
            f"({(needed - allocated) / 1e9:.1f} GB more), {free / 1e9:.1f} GB are free. Free some "
            "space, or pass cache_dir=... on a larger disk, or a smaller frames_per_clip",
            str(folder),
        )


# --------------------------------------------------------------------------- #
# Preprocessing
# --------------------------------------------------------------------------- #
def preprocess_cremad(
    raw_root: str | os.PathLike,
    cache_dir: str | os.PathLike | None = None,
    *,
    split_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    frames_per_clip: int = DEFAULT_FRAMES_PER_CLIP,
    frame_size: int = DEFAULT_FRAME_SIZE,
    overwrite: bool = False,
    skip_unreadable: bool = False,
    progress: bool = True,
) -> Path:
    """Decode the CREMA-D clips of OGM-GE's split into the cache; return the cache folder.

    Args:
        raw_root: the CREMA-D folder, holding ``AudioWAV/`` and ``VideoFlash/``.
        cache_dir: where the cache goes (default :func:`default_cache_dir`, where
            :func:`load_cremad_splits` looks).
        split_dir: the folder of ``train.csv`` and ``test.csv`` (default: ``$MMLAB_DATA/cremad``,
            then ``raw_root``; see :func:`find_split_dir`).
        workers: processes decoding clips (default: the CPUs this process may use); ``1``
            decodes in this process.
        frames_per_clip: one-per-second frames kept per clip (seconds 0, 1, ...).
        frame_size: side of the stored square frames.
        overwrite: discard an existing cache in ``cache_dir`` (otherwise it is continued, and
            must have been made from the same split files with the same parameters).
        skip_unreadable: leave out clips whose files cannot be decoded (with a warning; they
            are listed in the index, and stay left out in later runs unless ``overwrite``)
            instead of failing at the end.
        progress: show a progress bar.

    Before any work, the folders and split files are checked and every clip's two files looked
    up, and all problems are reported in one error. A file that cannot be decoded does not stop
    the run: the other clips are done, then one :class:`DataIntegrityError` names every such
    file (rerunning retries only those). What is done is never discarded, except by
    ``overwrite=True``.
    """
    if frames_per_clip < 1 or frame_size < 1:
        raise ValueError(f"frames_per_clip and frame_size must be positive, "
                         f"not {frames_per_clip} and {frame_size}")
    audio_dir, video_dir = check_raw_layout(raw_root)
    splits_at = find_split_dir(split_dir, raw_root)
    clips: list[str] = []
    labels: list[int] = []
    split_info = {}
    for split, name in SPLIT_FILES.items():
        split_clips, split_labels = read_split_file(splits_at / name)
        clips += split_clips
        labels += split_labels
        split_info[split] = {"file": name, "sha256": _sha256(splits_at / name),
                             "count": len(split_clips)}
    train_clips = set(clips[: split_info["train"]["count"]])
    both = [c for c in clips[split_info["train"]["count"]:] if c in train_clips]
    if both:
        raise DataIntegrityError(
            f"The split files in {splits_at} overlap: {len(both):,} {'clip is' if len(both) == 1 else 'clips are'} in both "
            f"train.csv and test.csv:\n{_listing(both)}"
        )
    _check_media(clips, audio_dir, video_dir)

    params = {
        "frames_per_clip": int(frames_per_clip), "frame_size": int(frame_size),
        "frame_sampling": "the first frame of each second",
        "sample_rate": audio.SAMPLE_RATE, "seconds": audio.SECONDS, "n_fft": audio.N_FFT,
        "hop_length": audio.HOP_LENGTH,
        "spectrogram_shape": [audio.N_FFT // 2 + 1,
                              audio.spectrogram_frames(int(round(audio.SECONDS * audio.SAMPLE_RATE)))],
    }
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with _exclusive(folder):
        _check_free_space(folder, params, len(clips))
        writer = _open_for_writing(folder, params, split_info, clips, labels, overwrite)
        index = writer.index
        pending = [_Task(row, clip, str(audio_dir / f"{clip}.wav"), str(video_dir / f"{clip}.flv"),
                         frames_per_clip, frame_size)
                   for row, clip in enumerate(clips)
                   if not index["done"][row] and clip not in index["excluded"]]
        try:
            if pending:
                _run(pending, writer, workers, progress)
            left_out = dict(index["failed"]) if skip_unreadable else {}
            if left_out:
                index["excluded"].update(left_out)
                index["failed"].clear()
                warnings.warn(
                    f"{plural('CREMA-D clip', len(left_out))} could not be decoded; left out "
                    f"(skip_unreadable=True):\n{_listing([f'{c}: {r}' for c, r in left_out.items()])}",
                    stacklevel=2)
            index["complete"] = not index["failed"] and all(
                d or c in index["excluded"] for d, c in zip(index["done"], clips))
        finally:
            # also on Ctrl-C or an error: what was done is saved (arrays first, then the index)
            writer.flush()
    if index["failed"]:
        reasons = [f"{clip}: {reason}" for clip, reason in index["failed"].items()]
        raise DataIntegrityError(
            f"{plural('CREMA-D clip', len(reasons))} could not be preprocessed:\n{_listing(reasons)}\n"
            f"The other clips are done and saved in {folder}. Replace the files named above "
            "and run again (only those clips are redone), or run again with "
            "skip_unreadable=True (--skip-unreadable) to leave them out."
        )
    return folder


def _open_for_writing(folder: Path, params: dict, split_info: dict, clips: list[str],
                      labels: list[int], overwrite: bool) -> _CacheWriter:
    """Continue the cache in ``folder`` if it matches this run, or start one."""
    index_path = folder / INDEX_FILE
    if index_path.exists() and not overwrite:
        index = _read_index(index_path)
        differences = [f"{key}: {index['params'].get(key)!r} in the cache, {value!r} now"
                       for key, value in params.items() if index["params"].get(key) != value]
        if index["clips"] != clips or index["labels"] != labels:
            differences.append(f"the split files: {len(index['clips']):,} clips in the cache, "
                               f"{len(clips):,} now, not the same clips or labels")
        if differences:
            done = sum(index["done"])
            raise DataIntegrityError(
                f"The CREMA-D cache in {folder} was made differently:\n{_listing(differences)}\n"
                f"Pass overwrite=True (--overwrite) to rebuild it (its {done:,} done clips are "
                "discarded), or another cache_dir."
            )
        return _CacheWriter(folder, index, create=False)
    index_path.unlink(missing_ok=True)  # an index never describes arrays it did not see made
    index = {
        "format": CACHE_FORMAT, "version": CACHE_VERSION, "params": params,
        "splits": split_info, "clips": clips, "labels": labels,
        "done": [False] * len(clips), "distinct_frames": [0] * len(clips),
        "failed": {}, "excluded": {}, "complete": False,
    }
    writer = _CacheWriter(folder, index, create=True)
    writer.flush()
    return writer


def _run(tasks: list[_Task], writer: _CacheWriter, workers: int | None, progress: bool) -> None:
    """Process ``tasks``, in this process or in a pool, storing each result as it comes."""
    from ..progress import progress_bar

    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = min(workers, len(tasks))
    total = len(writer.index["clips"])
    bar = progress_bar(total=total, initial=total - len(tasks), desc="CREMA-D", unit="clip", progress=progress)

    def finish(task: _Task, outcome) -> None:
        if isinstance(outcome, BaseException):
            writer.fail(task.row, f"{type(outcome).__name__}: {outcome}")
        else:
            writer.store(*outcome)
        bar.update()

    try:
        if workers <= 1:
            for task in tasks:
                try:
                    outcome = _process_clip(task)
                except Exception as exc:  # a bad file: recorded, reported at the end
                    outcome = exc
                finish(task, outcome)
            return
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_worker)
        try:
            queue = iter(tasks)
            in_flight = {}
            for task in queue:
                in_flight[pool.submit(_process_clip, task)] = task
                if len(in_flight) >= 2 * workers:
                    break
            while in_flight:
                completed, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in completed:
                    task = in_flight.pop(future)
                    try:
                        outcome = future.result()
                    except BrokenProcessPool:
                        lost = [task.clip] + [t.clip for t in in_flight.values()]
                        raise RuntimeError(
                            "A worker process stopped abruptly (killed by the system, for "
                            "example for lack of memory, or crashed in the video decoder) while "
                            f"preprocessing one of:\n{_listing(lost)}\nThe clips done so far are "
                            f"saved in {writer.folder}; run again to continue. With workers=1 a "
                            "crash shows which file caused it."
                        ) from None
                    except Exception as exc:
                        outcome = exc
                    finish(task, outcome)
                    next_task = next(queue, None)
                    if next_task is not None:
                        in_flight[pool.submit(_process_clip, next_task)] = next_task
        finally:
            # On Ctrl-C the clips in flight are abandoned; the caller saves what is done.
            pool.shutdown(wait=False, cancel_futures=True)
    finally:
        bar.close()


# --------------------------------------------------------------------------- #
# Reading the cache
# --------------------------------------------------------------------------- #
@dataclass(frozen=True, repr=False)
class CremadCache:
    """A finished cache, memory-mapped read-only (see the module docstring for the format)."""

    path: Path
    index: dict
    frames: np.ndarray  # uint8 [N, T, 3, S, S]
    spectrograms: np.ndarray  # float16 [N, 257, 188]

    @property
    def clips(self) -> list[str]:
        return self.index["clips"]

    @property
    def labels(self) -> np.ndarray:
        return np.asarray(self.index["labels"], dtype=np.int64)

    @property
    def num_train(self) -> int:
        return self.index["splits"]["train"]["count"]

    def rows(self, split: str) -> np.ndarray:
        """The rows of ``split`` (``"train"`` or ``"test"``, OGM-GE's), without left-out clips."""
        start, stop = (0, self.num_train) if split == "train" else (self.num_train, len(self.clips))
        excluded = self.index["excluded"]
        return np.array([r for r in range(start, stop) if self.clips[r] not in excluded], dtype=np.int64)

    def __repr__(self) -> str:
        return (f"CremadCache({len(self.clips)} clips, frames {self.frames.dtype} "
                f"{tuple(self.frames.shape)}, path={str(self.path)!r})")


def _cache_candidates(root: str | os.PathLike | None) -> list[tuple[Path, str]]:
    candidates = []
    if root is not None:
        base = Path(root).expanduser()
        if (base / INDEX_FILE).exists():
            candidates.append((base, "root argument"))
        else:
            candidates.append((base / "cremad" / "cache", "root argument, cremad/cache"))
    env = os.environ.get(DATA_ENV, "").strip()
    if env:
        candidates.append((Path(env).expanduser() / "cremad" / "cache", f"${DATA_ENV}/cremad/cache"))
    candidates.append((default_cache_dir(), "default cache folder"))
    return candidates


def find_cremad_cache(root: str | os.PathLike | None = None) -> Path | None:
    """The first folder with a CREMA-D cache index, finished or not, or ``None``.

    Looked in, in order: ``root`` (the cache folder itself, or ``root/cremad/cache``),
    ``$MMLAB_DATA/cremad/cache``, and :func:`default_cache_dir`. A ``root`` that does not exist
    raises :class:`DataNotFoundError`.
    """
    check_named_root(root)
    for folder, _ in _cache_candidates(root):
        if (folder / INDEX_FILE).is_file():
            return folder
    return None


def _not_found(root) -> DataNotFoundError:
    looked = "\n".join(f"  - {folder} ({origin})" for folder, origin in _cache_candidates(root))
    return DataNotFoundError(
        "No preprocessed CREMA-D was found. Looked for "
        f"{INDEX_FILE} in:\n{looked}\n"
        "CREMA-D is not downloaded automatically: its media are in Git LFS at "
        "github.com/CheyneyComputerScience/CREMA-D (AudioWAV about 0.6 GB, VideoFlash about "
        f"2.4 GB). Download them and preprocess them once, as {GUIDE} explains:\n"
        f"    {COMMAND}\n"
        "or, in Python, mmlab.data.cremad.preprocess_cremad(RAW_ROOT). The cache is written to "
        f"{default_cache_dir()} (${CACHE_ENV}/cremad when {CACHE_ENV} is set), where it is found."
    )


def open_cremad_cache(root: str | os.PathLike | None = None) -> CremadCache:
    """The finished cache found by :func:`find_cremad_cache`, memory-mapped read-only.

    No cache: :class:`DataNotFoundError` saying how to get CREMA-D and preprocess it. An
    unfinished one (interrupted, or with clips that failed): :class:`DataNotFoundError` saying
    how far it got and to run the preprocessing again. Arrays that do not match the index:
    :class:`DataIntegrityError`.
    """
    folder = find_cremad_cache(root)
    if folder is None:
        raise _not_found(root)
    index = _read_index(folder / INDEX_FILE)
    if not index.get("complete"):
        done, total = sum(index["done"]), len(index["clips"])
        failed = [f"{clip}: {why}" for clip, why in index["failed"].items()]
        detail = f"; {plural('clip', len(failed))} failed:\n{_listing(failed)}\n" if failed else ". "
        raise DataNotFoundError(
            f"The CREMA-D cache in {folder} is unfinished: {done:,} of {total:,} clips are "
            f"done{detail}Run the preprocessing again with the same arguments ({COMMAND}, "
            "--skip-unreadable to leave out clips that cannot be decoded); it continues where "
            "it stopped."
        )
    n, p = len(index["clips"]), index["params"]
    expected = {
        FRAMES_FILE: ((n, p["frames_per_clip"], 3, p["frame_size"], p["frame_size"]), np.uint8),
        SPECTROGRAMS_FILE: ((n, *p["spectrogram_shape"]), np.float16),
    }
    arrays = {}
    for name, (shape, dtype) in expected.items():
        try:
            array = np.load(folder / name, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise DataIntegrityError(f"The CREMA-D cache file {folder / name} cannot be read "
                                     f"({exc}). Rebuild the cache with overwrite=True.") from None
        if array.shape != shape or array.dtype != dtype:
            raise DataIntegrityError(
                f"The CREMA-D cache file {folder / name} holds {array.dtype} {array.shape}, but "
                f"its index expects {np.dtype(dtype)} {shape}. Rebuild it with overwrite=True.")
        arrays[name] = array
    return CremadCache(folder, index, arrays[FRAMES_FILE], arrays[SPECTROGRAMS_FILE])


def load_cremad_splits(
    *,
    val_size: int,
    train_size: int | None = None,
    test_size: int | None = None,
    data_seed: int = 0,
    root: str | os.PathLike | None = None,
    frames: int = 1,
) -> dict[str, Split]:
    """The ``train``, ``val`` and ``test`` :class:`~mmlab.data.split.Split` of CREMA-D.

    ``val`` is ``val_size`` clips held out of OGM-GE's training split, drawn with ``data_seed``;
    ``train`` is the rest of it, or ``train_size`` clips of the rest; ``test`` is OGM-GE's test
    split, or ``test_size`` clips of it. The validation clips depend only on ``data_seed`` and
    ``val_size``, not on ``train_size``. Inputs: ``"audio"`` ``float16 [N, 1, 257, 188]``
    log-spectrograms, ``"visual"`` ``uint8 [N, frames, 3, S, S]`` RGB frames of seconds
    ``0 .. frames-1``; ``extras["clips"]`` names each sample's clip.
    """
    cache = open_cremad_cache(root)
    stored = cache.index["params"]["frames_per_clip"]
    if not 1 <= frames <= stored:
        raise ValueError(f"frames must be between 1 and {stored} (the frames per clip stored in "
                         f"{cache.path}), not {frames}; preprocess with frames_per_clip={frames} "
                         "into another cache_dir to have more.")
    if cache.index["excluded"]:
        excluded = len(cache.index["excluded"])
        warnings.warn(f"Left out when the cache was made: {plural('CREMA-D clip', excluded)} "
                      f"(listed in {cache.path / INDEX_FILE}).", stacklevel=2)
    train_rows, test_rows = cache.rows("train"), cache.rows("test")
    if val_size < 0 or val_size + (train_size or 0) > len(train_rows):
        raise ValueError(f"val_size {val_size} plus train_size {train_size} is more than the "
                         f"{len(train_rows):,} clips of the training split.")
    if test_size is not None and not 0 <= test_size <= len(test_rows):
        raise ValueError(f"test_size {test_size} is more than the {len(test_rows):,} test clips.")
    order = np.random.default_rng([data_seed, 0]).permutation(len(train_rows))
    val_rows = train_rows[order[:val_size]]
    train_rows = train_rows[order[val_size:]]
    if train_size is not None:
        train_rows = train_rows[:train_size]
    if test_size is not None:
        test_rows = test_rows[np.random.default_rng([data_seed, 1]).permutation(len(test_rows))[:test_size]]
    labels = cache.labels
    distinct = np.asarray(cache.index["distinct_frames"], dtype=np.int64)
    splits = {}
    for name, rows in (("train", train_rows), ("val", val_rows), ("test", test_rows)):
        rows = np.sort(rows)  # sorted rows read the memory maps front to back
        splits[name] = Split(
            name=name,
            inputs={
                "audio": torch.from_numpy(np.asarray(cache.spectrograms[rows])).unsqueeze(1),
                "visual": torch.from_numpy(np.ascontiguousarray(cache.frames[rows, :frames])),
            },
            labels=torch.from_numpy(labels[rows]),
            extras={"clips": [cache.clips[r] for r in rows],
                    "distinct_frames": torch.from_numpy(np.minimum(distinct[rows], frames)),
                    "cache": str(cache.path)},
        )
    return splits
