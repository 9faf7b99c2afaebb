"""Log-Mel features of a manifest: extraction with a cache, normalization.

Features are computed by the package's `LogMelSpectrogram` layer (Keras'
`MelSpectrogram`: 25 ms Hann window, 10 ms hop, 80 bins by default), on the
current Keras backend. A cache keyed by the file, its size and modification
time, the segment and the feature settings lets repeated runs skip the work.
Normalization statistics (per Mel bin) come from training folds only.
"""

import hashlib
import json
import os
import sys
import tempfile

import keras
import numpy as np

from keras_hrf.audio import AudioError
from keras_hrf.audio import load_audio
from keras_hrf.layers.log_mel_spectrogram import LogMelSpectrogram


class FeatureExtractor:
    """Waveforms or manifest rows -> `(frames, num_mel_bins)` float32 log-Mel.

    Args:
        sample_rate: Audio is resampled to this rate first.
        num_mel_bins, frame_length_ms, frame_step_ms: Feature settings.
        cache_dir: Folder for cached features (`.npy`), or None for no cache.
    """

    def __init__(self, sample_rate=16000, num_mel_bins=80, frame_length_ms=25.0,
                 frame_step_ms=10.0, cache_dir=None):
        self.settings = {
            "sample_rate": sample_rate,
            "num_mel_bins": num_mel_bins,
            "frame_length_ms": frame_length_ms,
            "frame_step_ms": frame_step_ms,
        }
        self.cache_dir = cache_dir
        self.layer = LogMelSpectrogram(**self.settings)

    def from_waveform(self, waveform):
        batch = np.asarray(waveform, dtype=np.float32)[None]
        return np.asarray(keras.ops.convert_to_numpy(self.layer(batch))[0], dtype=np.float32)

    def from_row(self, row):
        """Features of one manifest row (a mapping with path, start, end)."""
        start, end = _seconds(row.get("start")), _seconds(row.get("end"))
        key = self._cache_key(row["path"], start, end)
        cached = self._cache_path(key)
        if cached and os.path.isfile(cached):
            return np.load(cached)
        waveform = load_audio(row["path"], self.settings["sample_rate"], start=start, end=end)
        features = self.from_waveform(waveform)
        if cached:
            _save_atomically(cached, features)
        return features

    def extract(self, manifest, progress=True):
        """Features of every row, in order, and the rows that failed.

        Returns:
            `(features, skipped)`: a list with an array, or None for a row that
            could not be read, and a list of `(row index, path, message)`. The
            caller decides whether to go on without them; they are never
            dropped silently.
        """
        rows = manifest.to_dict("records")
        # A live bar on a terminal; one closing line in a log file.
        verbose = 1 if sys.stdout.isatty() else 2
        bar = keras.utils.Progbar(len(rows), unit_name="clip", verbose=verbose) if progress else None
        features, skipped = [], []
        for index, row in enumerate(rows):
            try:
                features.append(self.from_row(row))
            except AudioError as error:
                features.append(None)
                skipped.append((index, row["path"], str(error)))
            if bar is not None:
                bar.update(index + 1, values=[("skipped", len(skipped))] if skipped else None)
        return features, skipped

    def _cache_key(self, path, start, end):
        stat = os.stat(path) if os.path.exists(path) else None
        identity = {
            "path": os.path.abspath(path),
            "size": stat.st_size if stat else None,
            "mtime": stat.st_mtime_ns if stat else None,
            "start": start,
            "end": end,
            **self.settings,
        }
        return hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()

    def _cache_path(self, key):
        if not self.cache_dir:
            return None
        return os.path.join(self.cache_dir, key[:2], key + ".npy")


def fit_normalization(features):
    """Per-bin mean and standard deviation over all frames of `features`
    (a list of `(frames, bins)` arrays: the training fold only)."""
    frames = np.concatenate([f for f in features if f is not None], axis=0).astype(np.float64)
    if frames.size == 0:
        raise ValueError("fit_normalization needs at least one frame")
    mean = frames.mean(axis=0)
    std = np.maximum(frames.std(axis=0), 1e-5)
    return mean.astype(np.float32), std.astype(np.float32)


def normalize(features, mean, std):
    return ((features - mean) / std).astype(np.float32)


def pad_batch(features, max_frames=None):
    """Stack `(frames, bins)` arrays into `(batch, max_frames, bins)` with
    zero frames after each utterance (the models' default `mask_value`).
    Utterances longer than `max_frames` are cut."""
    longest = max(len(f) for f in features)
    frames = longest if max_frames is None else max_frames
    batch = np.zeros((len(features), frames, features[0].shape[-1]), np.float32)
    for row, item in enumerate(features):
        batch[row, : min(len(item), frames)] = item[:frames]
    return batch


def _seconds(value):
    if value is None:
        return None
    value = float(value)
    return None if np.isnan(value) else value


def _save_atomically(path, array):
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, suffix=".npy.tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            np.save(stream, array)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


class PaddedBatches(keras.utils.PyDataset):
    """Batches of `(features, labels)` padded with zero frames to the longest
    utterance of each batch (not of the whole set), for `fit` / `predict`.

    Pass `batches.for_keras()` to `fit`, `evaluate` and `predict`, not the
    object itself: on TensorFlow, Keras fixes a `PyDataset`'s `tf.data`
    signature from its first two batches, so when those two happen to be padded
    to the same length, every longer batch later is refused (a `TypeError`
    after a whole epoch of work). `for_keras` declares the time axis variable.

    Args:
        features: A list of `(frames, bins)` arrays.
        labels: Integer labels, or None for prediction.
        batch_size: Utterances per batch.
        shuffle: Reshuffle the order every epoch (seeded); for training. The
            last batch is then filled up with utterances from the start of
            the order, so every batch has `batch_size` rows (one shape fewer
            to compile) and every utterance is still seen each epoch.
        max_frames: Cut longer utterances to this many frames.
        frame_multiple: Pad each batch's length up to a multiple of this many
            frames (100: one second), so that compiled backends see a few
            shapes instead of one per utterance length.
        batch_multiple: Fill a batch up to a multiple of this many rows (the
            data-parallel replicas, which each take an equal share) by
            repeating its first rows. With labels, every batch then carries
            sample weights, 0 for the repeats, so metrics count each
            utterance once; predictions of the repeats come last: keep the
            first `len(features)`.
    """

    def __init__(self, features, labels=None, batch_size=16, shuffle=False,
                 max_frames=None, frame_multiple=100, seed=0, batch_multiple=1, **kwargs):
        super().__init__(**kwargs)
        self.features = features
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int32)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.max_frames = max_frames
        self.frame_multiple = frame_multiple
        if not isinstance(batch_multiple, int) or batch_multiple < 1:
            raise ValueError(f"PaddedBatches: batch_multiple must be a positive integer, "
                             f"received batch_multiple={batch_multiple!r}")
        self.batch_multiple = batch_multiple
        self.rng = np.random.default_rng(seed)
        self.order = np.arange(len(features))
        if shuffle:
            self.rng.shuffle(self.order)

    def __len__(self):
        return -(-len(self.features) // self.batch_size)

    def __getitem__(self, index):
        rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        if self.shuffle and len(rows) < self.batch_size:
            rows = np.concatenate([rows, self.order[: self.batch_size - len(rows)]])
        real = len(rows)
        if self.batch_multiple > 1:
            rows = np.resize(rows, -(-real // self.batch_multiple) * self.batch_multiple)
        items = [self.features[i] for i in rows]
        if self.max_frames is not None:  # cut first: the rounding below only pads
            items = [item[: self.max_frames] for item in items]
        frames = max(len(item) for item in items)
        if self.frame_multiple:
            frames = -(-frames // self.frame_multiple) * self.frame_multiple
        batch = pad_batch(items, max_frames=frames)
        if self.labels is None:
            return (batch,)
        if self.batch_multiple > 1:
            weights = (np.arange(len(rows)) < real).astype(np.float32)
            return batch, self.labels[rows], weights
        return batch, self.labels[rows]

    def on_epoch_end(self):
        if self.shuffle:
            self.rng.shuffle(self.order)

    def for_keras(self):
        """What to give `fit`, `evaluate` or `predict` on the current backend.

        JAX and PyTorch: these batches themselves (JAX compiles one function
        per padded length, a few thanks to `frame_multiple`). TensorFlow: a
        `tf.data.Dataset` of the same batches in the same order, whose batch
        and time axes are declared variable (`(None, None, bins)`), so that
        any utterance length is accepted and one traced function serves them
        all. It reshuffles (`on_epoch_end`) before every pass but the first,
        as Keras does for a `PyDataset`.
        """
        if keras.backend.backend() != "tensorflow":
            return self
        import tensorflow as tf

        first = self[0]
        signature = (tf.TensorSpec((None, None, first[0].shape[-1]), tf.float32),)
        if self.labels is not None:
            signature += (tf.TensorSpec((None,) + first[1].shape[1:], tf.int32),)
        if len(first) == 3:
            signature += (tf.TensorSpec((None,), tf.float32),)
        passes = [0]

        def generate():
            # The body runs when the first batch is asked for, once per pass
            # that Keras reads (no prefetch: an iterator Keras opens and never
            # reads must not reshuffle).
            if passes[0]:
                self.on_epoch_end()
            passes[0] += 1
            for index in range(len(self)):
                yield self[index]

        dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
        return dataset.apply(tf.data.experimental.assert_cardinality(len(self)))
