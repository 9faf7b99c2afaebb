"""Reading audio: soundfile to read, a mono downmix, SciPy's polyphase resampler.

`load_audio` returns float32 mono samples at the requested rate, or raises an
`AudioError` that names the file and what is wrong with it (missing, not
audio, empty, NaN or infinite samples, shorter than one analysis window).
"""

import math
import os

import numpy as np
import soundfile
from scipy import signal

# 25 ms: one analysis window of the package's log-Mel features.
MIN_DURATION_SECONDS = 0.025


class AudioError(ValueError):
    """A file that cannot give usable audio; the message names the file."""


def load_audio(path, sample_rate=16000, start=None, end=None, min_duration=MIN_DURATION_SECONDS):
    """Read `path` (any format libsndfile reads: WAV, FLAC, OGG, ...).

    Args:
        path: The audio file.
        sample_rate: Rate of the returned samples; other rates are resampled
            with `scipy.signal.resample_poly` (polyphase, anti-aliased).
        start, end: Optional slice in seconds of the file's own timeline
            (for corpora whose utterances are segments of longer recordings).
        min_duration: Clips shorter than this (seconds, after slicing) are an
            error: they hold less than one analysis window.

    Returns:
        A float32 array of shape `(samples,)`, channels averaged to mono.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise AudioError(f"Audio file not found: {path}")
    try:
        info = soundfile.info(path)
    except (RuntimeError, soundfile.LibsndfileError) as error:
        raise AudioError(f"Cannot read audio file {path}: {error}") from error
    first = 0 if start is None else int(round(start * info.samplerate))
    last = info.frames if end is None else int(round(end * info.samplerate))
    if start is not None and (start < 0 or first >= info.frames):
        raise AudioError(
            f"Segment start {start:.3f} s is outside {path} "
            f"({info.frames / info.samplerate:.3f} s long)"
        )
    if end is not None and last <= first:
        raise AudioError(f"Segment end {end:.3f} s is not after start {start} s in {path}")
    try:
        samples, rate = soundfile.read(
            path, start=first, stop=min(last, info.frames), dtype="float32", always_2d=True
        )
    except (RuntimeError, soundfile.LibsndfileError) as error:
        raise AudioError(f"Cannot read audio file {path}: {error}") from error
    if samples.size == 0:
        raise AudioError(f"Audio file {path} holds no samples")
    bad = ~np.isfinite(samples)
    if bad.any():
        raise AudioError(
            f"Audio file {path} holds {int(bad.sum())} NaN or infinite samples "
            f"(first at sample {int(np.argwhere(bad)[0][0])})"
        )
    mono = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    duration = len(mono) / rate
    if duration < min_duration:
        raise AudioError(
            f"Audio clip {path} lasts {duration * 1000:.1f} ms, shorter than one "
            f"{min_duration * 1000:.0f} ms analysis window"
        )
    return resample(mono, rate, sample_rate)


def resample(samples, original_rate, target_rate):
    """Resample with SciPy's polyphase filter (exact rational factor)."""
    original_rate, target_rate = int(original_rate), int(target_rate)
    if original_rate == target_rate:
        return np.ascontiguousarray(samples, dtype=np.float32)
    divisor = math.gcd(original_rate, target_rate)
    resampled = signal.resample_poly(samples, target_rate // divisor, original_rate // divisor)
    return resampled.astype(np.float32)
