import os

import numpy as np
import pytest
import soundfile

from keras_hrf.audio import AudioError
from keras_hrf.audio import load_audio

EMODB = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "shared", "data", "emodb", "wav")


def _write(path, samples, rate, subtype="PCM_16"):
    soundfile.write(str(path), samples, rate, subtype=subtype)
    return str(path)


def _tone(seconds, rate, frequency=440.0, channels=1):
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.5 * np.sin(2 * np.pi * frequency * t)
    return np.stack([tone] * channels, axis=1) if channels > 1 else tone


@pytest.mark.skipif(not os.path.isdir(EMODB), reason="../shared/data/emodb is not beside the project")
def test_reads_real_emodb_speech_and_resamples_to_16k():
    path = os.path.join(EMODB, sorted(os.listdir(EMODB))[0])
    assert soundfile.info(path).samplerate == 22050
    audio = load_audio(path, sample_rate=16000)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert len(audio) == 32000  # every clip of this copy lasts exactly 2.000 s
    assert 0.001 < np.sqrt(np.mean(audio**2)) < 1.0


@pytest.mark.parametrize("rate", [8000, 16000, 44100, 48000])
def test_any_rate_becomes_16k_and_keeps_the_pitch(tmp_path, rate):
    audio = load_audio(_write(tmp_path / "tone.wav", _tone(0.5, rate), rate), sample_rate=16000)
    assert len(audio) == 8000
    spectrum = np.abs(np.fft.rfft(audio))
    assert np.argmax(spectrum) * 16000 / len(audio) == pytest.approx(440.0, abs=4.0)


def test_stereo_is_averaged_to_mono(tmp_path):
    left_right = np.stack([np.full(1600, 0.5), np.full(1600, -0.25)], axis=1)
    audio = load_audio(_write(tmp_path / "stereo.wav", left_right, 16000, "FLOAT"))
    np.testing.assert_allclose(audio, 0.125, atol=1e-6)


def test_segment_of_a_longer_file(tmp_path):
    ramp = np.linspace(-0.5, 0.5, 16000)
    audio = load_audio(_write(tmp_path / "ramp.wav", ramp, 16000, "FLOAT"), start=0.25, end=0.5)
    assert len(audio) == 4000
    assert audio[0] == pytest.approx(ramp[4000], abs=1e-6)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(AudioError, match=r"not found: .*nowhere\.wav"):
        load_audio(tmp_path / "nowhere.wav")


def test_corrupt_file_is_named(tmp_path):
    path = tmp_path / "corrupt.wav"
    path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    with pytest.raises(AudioError, match=r"Cannot read audio file .*corrupt\.wav"):
        load_audio(path)


def test_empty_file_is_named(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(AudioError, match=r"empty\.wav"):
        load_audio(path)


def test_wav_with_no_samples_is_named(tmp_path):
    path = _write(tmp_path / "silent.wav", np.zeros(0), 16000)
    with pytest.raises(AudioError, match=r"silent\.wav holds no samples"):
        load_audio(path)


def test_nan_samples_are_named(tmp_path):
    samples = np.zeros(1600, "float32")
    samples[100:103] = np.nan
    path = _write(tmp_path / "nan.wav", samples, 16000, "FLOAT")
    with pytest.raises(AudioError, match=r"nan\.wav holds 3 NaN or infinite samples \(first at sample 100\)"):
        load_audio(path)


def test_clip_shorter_than_one_window_is_named(tmp_path):
    path = _write(tmp_path / "click.wav", _tone(0.01, 16000), 16000)
    with pytest.raises(AudioError, match=r"click\.wav lasts 10\.0 ms, shorter than one 25 ms"):
        load_audio(path)
