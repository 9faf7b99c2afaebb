"""The embedded demo corpus: generated, speech-like clips (SYNTHETIC, not speech).

Each clip is a voiced source (harmonics of a moving pitch contour) shaped into
syllables and filtered by two vowel-like resonances, plus a little noise. The
class is carried by prosody only, as emotion largely is in speech:

| class   | pitch level | pitch range | energy | tempo (syllables/s) |
| ------- | ----------- | ----------- | ------ | ------------------- |
| neutral | speaker's   | small       | medium | 4                   |
| happy   | +4 semitones| wide        | high   | 5.5                 |
| angry   | +2 semitones| medium      | very high, harsher | 5       |
| sad     | -3 semitones| very small  | low    | 2.5                 |

Speakers differ in base pitch (two "female", others "male") and vowel colour,
so a model must use relative cues. Everything derives from `seed`: the same
arguments write byte-identical files.
"""

import os

import numpy as np
import soundfile
from scipy import signal

from keras_hrf.datasets.manifest import make_manifest

DEMO_CLASSES = ("angry", "happy", "neutral", "sad")
# semitones above the speaker's base, pitch range (semitones), energy, syllables/s, harshness
_PROSODY = {
    "neutral": (0.0, 1.5, 0.25, 4.0, 0.0),
    "happy": (4.0, 6.0, 0.45, 5.5, 0.1),
    "angry": (2.0, 3.0, 0.70, 5.0, 0.6),
    "sad": (-3.0, 0.7, 0.10, 2.5, 0.0),
}
DEMO_NOTICE = (
    "Data: the embedded DEMO corpus, SYNTHETIC speech-like clips whose class is "
    "carried by prosody (pitch, range, energy, tempo). It is not real speech; "
    "its numbers say nothing about emotion recognition."
)


def synthesize_clip(rng, label, base_pitch, formants, sample_rate=16000, seconds=2.0):
    """One float32 clip of class `label` for a speaker (`base_pitch` Hz and a
    pair of formant frequencies)."""
    offset, pitch_range, energy, tempo, harshness = _PROSODY[label]
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    tempo *= rng.uniform(0.9, 1.1)
    # Pitch contour: a slow intonation curve plus a step per syllable.
    syllable = np.floor(t * tempo).astype(int)
    steps = rng.normal(0.0, pitch_range / 2, size=syllable.max() + 1)
    semitones = offset + pitch_range * np.sin(2 * np.pi * 0.6 * t + rng.uniform(0, 2 * np.pi))
    f0 = base_pitch * 2.0 ** ((semitones + steps[syllable]) / 12.0)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    harmonics = np.arange(1, 25)[:, None]
    rolloff = 1.0 / harmonics ** (1.5 - harshness)
    audible = (harmonics * f0[None, :]) < sample_rate / 2
    source = np.sum(rolloff * np.sin(harmonics * phase[None, :]) * audible, axis=0)
    # Vowel colour: two resonances (formants).
    voiced = np.zeros(n)
    for frequency, bandwidth in zip(formants, (80.0, 120.0)):
        b, a = signal.iirpeak(frequency, frequency / bandwidth, fs=sample_rate)
        voiced += signal.lfilter(b, a, source)
    # Syllables: raised-cosine bumps with short pauses between them.
    position = (t * tempo) % 1.0
    envelope = np.where(position < 0.75, np.sin(np.pi * position / 0.75) ** 2, 0.0)
    voiced *= envelope
    voiced /= np.max(np.abs(voiced)) + 1e-9
    noise = rng.normal(0.0, 0.01 + 0.03 * harshness, size=n)
    clip = energy * voiced + energy * noise * envelope + rng.normal(0.0, 0.002, size=n)
    return np.clip(clip, -1.0, 1.0).astype(np.float32)


def make_demo_corpus(root, clips_per_class=12, speakers=6, sample_rate=16000,
                     seconds=2.0, seed=0):
    """Write the demo corpus to `root/<class>/spkNN_<i>.wav` (skipping files that
    exist from an earlier identical call) and return its manifest
    (speaker = group = "spkNN", for leave-speakers-out folds)."""
    rng = np.random.default_rng(seed)
    voices = [
        (rng.uniform(190, 240) if index % 3 == 0 else rng.uniform(95, 140),
         (rng.uniform(500, 800), rng.uniform(1100, 1900)))
        for index in range(speakers)
    ]
    rows = []
    for label in DEMO_CLASSES:
        folder = os.path.join(root, label)
        os.makedirs(folder, exist_ok=True)
        for speaker, (pitch, formants) in enumerate(voices):
            for index in range(clips_per_class // speakers + (speaker < clips_per_class % speakers)):
                # One generator per clip: any clip can be regenerated alone.
                clip_rng = np.random.default_rng([seed, DEMO_CLASSES.index(label), speaker, index])
                path = os.path.join(folder, f"spk{speaker:02d}_{index:03d}.wav")
                if not os.path.isfile(path):
                    clip = synthesize_clip(clip_rng, label, pitch, formants, sample_rate, seconds)
                    # Per-process name: tuning workers may write the corpus at once.
                    temporary = f"{path}.{os.getpid()}.tmp.wav"
                    soundfile.write(temporary, clip, sample_rate, subtype="PCM_16")
                    os.replace(temporary, path)
                rows.append({"path": path, "label": label, "speaker": f"spk{speaker:02d}",
                             "group": f"spk{speaker:02d}"})
    return make_manifest(rows)
