"""mmlab.data.audio: WAV reading, resampling, tiling and the OGM-GE log-spectrogram."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.io import wavfile

from mmlab.data import DataIntegrityError, DataNotFoundError
from mmlab.data.audio import (
    HOP_LENGTH, N_FFT, SAMPLE_RATE, log_spectrogram, read_wav, resample, spectrogram_frames,
    tile_to_length, wav_log_spectrogram,
)


def _sine(freq, rate, seconds, amplitude=0.5):
    t = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_default_parameters_give_ogm_ge_shape():
    spec = log_spectrogram(_sine(440, 16_000, 1.3), 16_000)
    assert spec.shape == (N_FFT // 2 + 1, 188) == (257, spectrogram_frames(3 * SAMPLE_RATE))
    assert spec.dtype == np.float32


def test_a_sine_peaks_in_its_frequency_bin_after_resampling():
    freq = 1000.0
    spec = log_spectrogram(_sine(freq, 8_000, 0.5), 8_000)  # resampled to 22,050 Hz
    peak_bin = np.bincount(spec.argmax(axis=0)).argmax()
    assert abs(peak_bin - freq * N_FFT / SAMPLE_RATE) <= 1


def test_stft_frame_is_the_hann_windowed_dft():
    rng = np.random.default_rng(0)
    wave = rng.uniform(-0.9, 0.9, 3 * SAMPLE_RATE).astype(np.float32)
    spec = log_spectrogram(wave, SAMPLE_RATE)
    frame = 50  # centred frame t covers samples t*hop - n_fft/2 ... (no padding this far in)
    start = frame * HOP_LENGTH - N_FFT // 2
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)  # periodic Hann
    expected = np.log(np.abs(np.fft.rfft(wave[start:start + N_FFT] * window)) + 1e-7)
    np.testing.assert_allclose(spec[:, frame], expected, atol=2e-3)


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 300), length=st.integers(1, 2000))
def test_tiling_repeats_the_wave_and_has_the_exact_length(n, length):
    wave = np.arange(n, dtype=np.float32)
    out = tile_to_length(wave, length)
    assert len(out) == length
    np.testing.assert_array_equal(out, wave[np.arange(length) % n])


def test_resample_keeps_duration_and_frequency():
    wave = _sine(300, 8_000, 1.0)
    out = resample(wave, 8_000, 22_050)
    assert len(out) == 22_050
    spectrum = np.abs(np.fft.rfft(out))
    assert abs(spectrum.argmax() - 300) <= 1  # 1 Hz bins over one second
    assert resample(wave, 8_000, 8_000) is wave


def test_read_wav_scales_int16_and_averages_channels(tmp_path):
    stereo = np.stack([np.full(100, 16384, np.int16), np.full(100, -16384, np.int16)], axis=1)
    wavfile.write(tmp_path / "s.wav", 16_000, stereo)
    wave, rate = read_wav(tmp_path / "s.wav")
    assert rate == 16_000 and wave.shape == (100,)
    np.testing.assert_allclose(wave, 0.0)
    wavfile.write(tmp_path / "m.wav", 8_000, np.full(10, -32768, np.int16))
    wave, _ = read_wav(tmp_path / "m.wav")
    np.testing.assert_allclose(wave, -1.0)


def test_bad_files_get_an_error_naming_them(tmp_path):
    with pytest.raises(DataNotFoundError, match="nothere.wav"):
        read_wav(tmp_path / "nothere.wav")
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    with pytest.raises(DataIntegrityError, match="broken.wav"):
        wav_log_spectrogram(bad)
    wavfile.write(tmp_path / "empty.wav", 8_000, np.zeros(0, np.int16))
    with pytest.raises(DataIntegrityError, match="empty.wav"):
        read_wav(tmp_path / "empty.wav")


def test_real_spoken_digit_if_available():
    from data_sources import FSDD_SKIP_REASON, real_fsdd_dir

    if real_fsdd_dir() is None:
        pytest.skip(FSDD_SKIP_REASON)
    path = real_fsdd_dir() / "0_george_0.wav"
    spec = wav_log_spectrogram(path, target_rate=8_000, seconds=1.0, n_fft=256, hop_length=128)
    assert spec.shape == (129, 1 + 8_000 // 128)
    assert np.isfinite(spec).all() and spec.max() > -5
