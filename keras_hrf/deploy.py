"""The deployed model: 16 kHz waveforms in, emotion probabilities out.

`deployable_model(model, ...)` wraps a trained network (merged first) in one
Keras model built from Keras' own layers and the package's:

    waveform, num_samples -> LogMelSpectrogram -> Normalization (the training
    rows' mean and variance) or each speaker's own statistics -> zero the
    frames past each clip's end (the merged network masks them) -> the merged
    network -> Softmax

`export_deployable(model, folder, ...)` writes it as `.keras`, a SavedModel
(`serve` signature), LiteRT float32 and LiteRT int8 (the converter's
dynamic-range quantization of the network; the float32 front end
`features.tflite` feeds it), with `metadata.json` beside them: class names,
sample rate, feature settings, normalization, inputs, package version.
`examples/predict.py` runs any of them on recordings.

Inputs, in this order:
    waveform      (batch, samples) float32, 16 kHz mono (the metadata's rate),
                  shorter clips zero-padded at the end
    num_samples   (batch,) int32, each clip's length before padding
    speaker_mean, speaker_std   (batch, bins) float32, only when
                  `normalization="speaker"`: the speaker's log-Mel statistics
                  from `speaker_statistics` over some of their recordings
"""

import json
import os

import keras
import numpy as np
from keras import ops

from keras_hrf import features as feature_lib
from keras_hrf.atomic import atomic_path
from keras_hrf.layers.log_mel_spectrogram import LogMelSpectrogram
from keras_hrf.reparameterization import reparameterize
from keras_hrf.version import __version__

NORMALIZATIONS = ("train", "speaker")
METADATA_FILE = "metadata.json"
# What export_deployable writes: format -> file or folder name in the folder.
ARTIFACTS = {
    "keras": "model.keras",
    "saved_model": "saved_model",
    "litert": "model.tflite",
    "litert_int8": "model_int8.tflite",
}
FORMATS = tuple(ARTIFACTS)
# Beside a normalization="speaker" LiteRT model: the front end alone.
FEATURES_FILE = "features.tflite"


@keras.saving.register_keras_serializable(package="keras_hrf")
class SpeakerStandardization(keras.layers.Layer):
    """`(features - mean) / std` with a mean and std per batch row:
    `[(batch, frames, bins), (batch, bins), (batch, bins)]`."""

    def call(self, inputs):
        features, mean, std = inputs
        return (features - ops.expand_dims(mean, 1)) / ops.expand_dims(std, 1)

    def compute_output_shape(self, input_shapes):
        return input_shapes[0]


@keras.saving.register_keras_serializable(package="keras_hrf")
class ZeroPaddingFrames(keras.layers.Layer):
    """Zero the frames of `(batch, frames, bins)` that lie past each clip's
    end, given its length in samples, so that the network's `Masking` layer
    masks them.

    A clip of `n` samples has `1 + n // frame_step` centred frames (what
    `LogMelSpectrogram` gives it alone): frame `t` is kept when
    `t * frame_step <= n`.
    """

    def __init__(self, frame_step, **kwargs):
        super().__init__(**kwargs)
        self.frame_step = int(frame_step)

    def call(self, inputs):
        features, num_samples = inputs
        frames = ops.shape(features)[1]
        starts = ops.arange(frames, dtype="int32") * self.frame_step
        lengths = ops.reshape(ops.cast(num_samples, "int32"), (-1, 1))
        keep = ops.cast(ops.expand_dims(starts, 0) <= lengths, features.dtype)
        return features * ops.expand_dims(keep, -1)

    def compute_output_shape(self, input_shapes):
        return input_shapes[0]

    def get_config(self):
        return {**super().get_config(), "frame_step": self.frame_step}


def deployable_model(model, class_names, mean=None, std=None, normalization="train",
                     feature_settings=None, name="deployable"):
    """Waveforms in, probabilities out: the front end, the normalization and
    `model` merged (`keras_hrf.reparameterize`: no HRF layer, no SpecAugment).

    Args:
        model: A trained network that takes `(batch, frames, bins)` normalized
            log-Mel features with zero frames as padding (the package's models).
        class_names: The class of each output, in order.
        mean, std: The training rows' per-bin statistics (`FoldData.mean`,
            `FoldData.std`); needed for `normalization="train"`.
        normalization: `"train"`: the statistics are fixed inside the model (a
            `keras.layers.Normalization`). `"speaker"` (a model trained with
            each speaker's own statistics): the model takes `speaker_mean` and
            `speaker_std` inputs, from `speaker_statistics`.
        feature_settings: `FeatureExtractor(...).settings` the model was
            trained on (default: the package's 16 kHz, 80 bins, 25/10 ms).

    Returns:
        A `keras.Model` with inputs `waveform`, `num_samples` (and
        `speaker_mean`, `speaker_std`), output `probabilities`.
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization={normalization!r}; choose one of {list(NORMALIZATIONS)}")
    settings = _feature_settings(feature_settings)
    bins = settings["num_mel_bins"]
    expected = model.inputs[0].shape[-1]
    if expected != bins:
        raise ValueError(f"The model takes {expected} features per frame; feature_settings "
                         f"give num_mel_bins={bins}")
    outputs = model.outputs[0].shape[-1]
    if len(class_names) != outputs:
        raise ValueError(f"class_names has {len(class_names)} names for the model's "
                         f"{outputs} outputs: {list(class_names)}")
    if normalization == "train":
        if mean is None or std is None:
            raise ValueError("normalization='train' needs the training rows' mean and std")
        mean, std = (np.asarray(v, "float32").reshape(-1) for v in (mean, std))
        if mean.shape != (bins,) or std.shape != (bins,):
            raise ValueError(f"mean and std need {bins} values each; received "
                             f"{mean.shape} and {std.shape}")
    merged = reparameterize(model) if _needs_merge(model) else model

    waveform = keras.Input((None,), name="waveform")
    num_samples = keras.Input((), dtype="int32", name="num_samples")
    inputs = [waveform, num_samples]
    log_mel = LogMelSpectrogram(**settings, name="log_mel")(waveform)
    if normalization == "train":
        x = keras.layers.Normalization(mean=mean, variance=np.square(std),
                                       name="normalization")(log_mel)
    else:
        speaker_mean = keras.Input((bins,), name="speaker_mean")
        speaker_std = keras.Input((bins,), name="speaker_std")
        inputs += [speaker_mean, speaker_std]
        x = SpeakerStandardization(name="normalization")([log_mel, speaker_mean, speaker_std])
    x = ZeroPaddingFrames(log_mel_frame_step(settings), name="zero_padding_frames")(
        [x, num_samples])
    logits = merged(x)
    probabilities = keras.layers.Softmax(dtype="float32", name="probabilities")(logits)
    return keras.Model(inputs, probabilities, name=name)


def front_end_model(feature_settings=None, name="features"):
    """`waveform, num_samples` -> log-Mel frames `(batch, frames, bins)`, zero
    past each clip's end: the deployed model's own front end alone
    (`features.tflite`), the int8 network's input once normalized, and what an
    app computes a speaker's statistics from with no other feature code."""
    settings = _feature_settings(feature_settings)
    waveform = keras.Input((None,), name="waveform")
    num_samples = keras.Input((), dtype="int32", name="num_samples")
    log_mel = LogMelSpectrogram(**settings, name="log_mel")(waveform)
    frames = ZeroPaddingFrames(log_mel_frame_step(settings), name="zero_padding_frames")(
        [log_mel, num_samples])
    return keras.Model([waveform, num_samples], frames, name=name)


def _needs_merge(model):
    """Whether `model` still holds training-only layers (HRF expansions,
    BatchNorms to fold, SpecAugment); a merged (or int8-quantized merged)
    model is used as it is."""
    from keras_hrf.layers.hrf_dense import HRFDense
    from keras_hrf.layers.spec_augment import SpecAugment

    return any(isinstance(layer, (HRFDense, SpecAugment))
               for layer in model._flatten_layers(include_self=False, recursive=True))


def _feature_settings(overrides):
    """The package's feature settings with `overrides` (a partial
    `FeatureExtractor(...).settings`) applied."""
    return dict(feature_lib.FeatureExtractor().settings, **(overrides or {}))


def log_mel_frame_step(settings):
    return int(round(settings["sample_rate"] * settings["frame_step_ms"] / 1000.0))


def speaker_statistics(waveforms, feature_settings=None):
    """One speaker's per-bin log-Mel mean and std, over all frames of
    `waveforms` (1-D float arrays at the model's rate; unlabeled speech is
    enough): the `speaker_mean` and `speaker_std` inputs of a model deployed
    with `normalization="speaker"`. The same statistics as the training
    pipeline's speaker normalization (`training.prepare_fold`) over the same
    audio."""
    extractor = feature_lib.FeatureExtractor(**(feature_settings or {}))
    frames = [extractor.from_waveform(np.asarray(w, "float32")) for w in waveforms]
    if not frames:
        raise ValueError("speaker_statistics needs at least one recording")
    return feature_lib.fit_normalization(frames)


def pad_waveforms(waveforms):
    """A list of 1-D waveforms -> `(batch, longest)` float32 zero-padded at the
    end, and their lengths `(batch,)` int32: the first two inputs."""
    lengths = np.array([len(w) for w in waveforms], dtype="int32")
    batch = np.zeros((len(waveforms), int(lengths.max())), "float32")
    for row, waveform in enumerate(waveforms):
        batch[row, : len(waveform)] = waveform
    return batch, lengths


def model_inputs(deployable, waveforms, speaker_mean=None, speaker_std=None):
    """The input list of `deployable` for a list of waveforms (and one
    speaker's statistics, repeated for each row, where the model takes them)."""
    batch, lengths = pad_waveforms(waveforms)
    inputs = [batch, lengths]
    if "speaker_mean" in {tensor.name for tensor in deployable.inputs}:
        if speaker_mean is None or speaker_std is None:
            raise ValueError("This model was trained with each speaker's own statistics: "
                             "give speaker_mean and speaker_std (speaker_statistics)")
        inputs += [np.tile(np.asarray(v, "float32").reshape(1, -1), (len(waveforms), 1))
                   for v in (speaker_mean, speaker_std)]
    return inputs


def metadata(deployable, class_names, normalization, feature_settings=None, extra=None):
    settings = _feature_settings(feature_settings)
    return {
        "format": "keras_hrf deployable model",
        "keras_hrf_version": __version__,
        "class_names": list(class_names),
        "sample_rate": settings["sample_rate"],
        "features": {"type": "log-Mel power in dB (keras_hrf.layers.LogMelSpectrogram)",
                     **settings},
        "normalization": normalization,
        # "train": the statistics inside the model (an app that computes its own
        # features needs them); "speaker": the app supplies each speaker's.
        "normalization_statistics": _training_statistics(deployable) or None,
        "inputs": [{"name": t.name, "shape": list(t.shape), "dtype": str(t.dtype)}
                   for t in deployable.inputs],
        "output": "probabilities (batch, classes), softmax",
        **(extra or {}),
    }


def export_deployable(deployable, folder, class_names, normalization="train",
                      feature_settings=None, formats=FORMATS, extra_metadata=None):
    """Write `deployable` into `folder` in `formats` (see `ARTIFACTS`) and
    `metadata.json`; each file appears whole or not at all.

    SavedModel and LiteRT need the TensorFlow backend (jax2tf cannot trace
    the front end's reflect padding for any length); on other backends those
    formats are skipped with a reason in the metadata's `skipped`. LiteRT uses LiteRT's built-in operators only, so
    the `ai-edge-litert` interpreter runs it with no TensorFlow.

    Returns:
        The metadata written (`files`: format -> path relative to `folder`).
    """
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"Unknown export formats {unknown}; choose from {list(FORMATS)}")
    os.makedirs(folder, exist_ok=True)
    backend = keras.backend.backend()
    files, skipped = {}, {}
    if "keras" in formats:
        with atomic_path(os.path.join(folder, ARTIFACTS["keras"])) as path:
            deployable.save(path)
        files["keras"] = ARTIFACTS["keras"]
    if "saved_model" in formats:
        if backend == "tensorflow":
            with atomic_path(os.path.join(folder, ARTIFACTS["saved_model"])) as path:
                deployable.export(path, format="tf_saved_model", verbose=False)
            files["saved_model"] = ARTIFACTS["saved_model"]
        elif backend == "jax":
            # jax2tf cannot trace the STFT's reflect padding for a waveform of
            # any length (it needs the length known to exceed the padding).
            skipped["saved_model"] = ("jax2tf cannot export the waveform front end for any "
                                      "length; export on the TensorFlow backend")
        else:
            skipped["saved_model"] = f"Keras exports tf_saved_model from TensorFlow and JAX, not {backend}"
    int8 = {}
    for name in ("litert", "litert_int8"):
        if name not in formats:
            continue
        if backend != "tensorflow":
            skipped[name] = f"LiteRT export runs on the TensorFlow backend, not {backend}"
            continue
        with atomic_path(os.path.join(folder, ARTIFACTS[name])) as path:
            if name == "litert":
                _export_litert(deployable, path, quantize=False)
            else:
                # Only the network: dynamic-range quantization of the whole
                # model also quantizes the power spectrum entering the Mel
                # filterbank to 8 bits, which erases the quiet bands (top-1
                # agreement with float32 fell to 0.38 on EmoDB).
                _export_litert(_network(deployable), path, quantize=True)
                int8 = {"network": ARTIFACTS[name], "front_end": FEATURES_FILE,
                        **_training_statistics(deployable)}
        files[name] = ARTIFACTS[name]
    if {"litert", "litert_int8"} & set(files):
        # The float32 front end alone: the int8 network's input, and a
        # speaker's statistics on the device.
        with atomic_path(os.path.join(folder, FEATURES_FILE)) as path:
            _export_litert(front_end_model(feature_settings), path, quantize=False)
        files["features_litert"] = FEATURES_FILE
    if int8:
        extra_metadata = {**(extra_metadata or {}), "litert_int8": int8}
    info = metadata(deployable, class_names, normalization, feature_settings,
                    {"files": files, "skipped": skipped, **(extra_metadata or {})})
    with atomic_path(os.path.join(folder, METADATA_FILE)) as path:
        with open(path, "w") as handle:
            json.dump(info, handle, indent=2)
    return info


def _network(deployable):
    """The merged network inside a deployable model."""
    return next(layer for layer in deployable.layers if isinstance(layer, keras.Model))


def _training_statistics(deployable):
    """The fixed normalization's mean and std (empty for "speaker")."""
    layer = next((l for l in deployable.layers if l.name == "normalization"), None)
    if not isinstance(layer, keras.layers.Normalization):
        return {}
    mean = np.asarray(keras.ops.convert_to_numpy(layer.mean)).reshape(-1)
    variance = np.asarray(keras.ops.convert_to_numpy(layer.variance)).reshape(-1)
    return {"mean": mean.tolist(), "std": np.sqrt(variance).tolist()}


def _export_litert(deployable, path, quantize):
    """Keras' own LiteRT export, built-in operators only (no Flex delegate);
    int8: the converter's dynamic-range quantization of the weights."""
    import tensorflow as tf

    options = {"target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]}}
    if quantize:
        options["optimizations"] = [tf.lite.Optimize.DEFAULT]
    deployable.export(path, format="litert", verbose=False, **options)
