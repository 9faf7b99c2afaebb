"""The deployable model: real EmoDB waveforms in, the feature pipeline's
probabilities out, in every exported format; examples/predict.py runs them."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from helpers import fast_compile_options

import keras_hrf
from keras_hrf import deploy
from keras_hrf import training
from keras_hrf.audio import load_audio
from keras_hrf.features import FeatureExtractor
from keras_hrf.features import fit_normalization
from keras_hrf.features import normalize
from keras_hrf.features import pad_batch

HERE = os.path.dirname(__file__)
EMODB = os.path.join(HERE, os.pardir, os.pardir, "shared", "data", "emodb", "wav")
PREDICT = os.path.join(HERE, os.pardir, "examples", "predict.py")
EMOTIONS = {"W": "anger", "L": "boredom", "E": "disgust", "A": "fear", "F": "happiness",
            "T": "sadness", "N": "neutral"}
CLASSES = sorted(EMOTIONS.values())
pytestmark = pytest.mark.skipif(not os.path.isdir(EMODB),
                                reason="../shared/data/emodb is not beside the project")


def _clips(speaker, count):
    names = sorted(n for n in os.listdir(EMODB) if n.startswith(speaker))[:count]
    paths = [os.path.join(EMODB, n) for n in names]
    labels = np.array([CLASSES.index(EMOTIONS[n[5]]) for n in names], "int32")
    return paths, [load_audio(p) for p in paths], labels


@pytest.fixture(scope="module")
def trained():
    """A small Conformer with HRF trained on two EmoDB speakers: its test
    speaker's clips, the training statistics and the features pipeline."""
    keras.utils.set_random_seed(0)
    extractor = FeatureExtractor()
    train_paths, train_waves, train_labels = [], [], []
    for speaker in ("03", "08"):
        paths, waves, labels = _clips(speaker, 30)
        train_paths += paths
        train_waves += waves
        train_labels.append(labels)
    train_labels = np.concatenate(train_labels)
    train_features = [extractor.from_waveform(w) for w in train_waves]
    mean, std = fit_normalization(train_features)
    model = keras_hrf.Conformer(len(CLASSES), input_dim=80, model_dim=32, num_layers=1,
                                num_heads=2, ffn_dim=64, kernel_size=7,
                                subsampling_filters=8, hrf_expansion=2)
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  **fast_compile_options(many_steps=True))
    x = pad_batch([normalize(f, mean, std) for f in train_features])
    model.fit(x, train_labels, batch_size=20, epochs=25, verbose=0)
    test_paths, test_waves, test_labels = _clips("09", 24)
    return dict(model=model, mean=mean, std=std, paths=test_paths, waves=test_waves,
                labels=test_labels, extractor=extractor)


def _pipeline_probabilities(trained, waves, mean=None, std=None):
    """What training and evaluation compute: features, normalization,
    padding, the merged model, softmax; one clip at a time."""
    merged = keras_hrf.reparameterize(trained["model"])
    mean = trained["mean"] if mean is None else mean
    std = trained["std"] if std is None else std
    rows = []
    for wave in waves:
        features = normalize(trained["extractor"].from_waveform(wave), mean, std)
        logits = keras.ops.convert_to_numpy(merged(pad_batch([features]), training=False))
        rows.append(keras.ops.convert_to_numpy(keras.ops.softmax(logits))[0])
    return np.stack(rows)


def _deployable_probabilities(model, waves, **speaker):
    return np.concatenate([model.predict(deploy.model_inputs(model, [w], **speaker), verbose=0)
                           for w in waves])


@pytest.fixture(scope="module")
def deployable(trained):
    return deploy.deployable_model(trained["model"], CLASSES, trained["mean"], trained["std"])


def test_waveforms_in_gives_the_pipelines_probabilities(trained, deployable):
    layers = {type(layer).__name__ for layer in deployable._flatten_layers()}
    assert {"LogMelSpectrogram", "Normalization", "Softmax"} <= layers
    assert "HRFDense" not in layers and "SpecAugment" not in layers
    waves = trained["waves"][:8]
    expected = _pipeline_probabilities(trained, waves)
    np.testing.assert_allclose(_deployable_probabilities(deployable, waves), expected,
                               atol=1e-5)


def test_a_padded_batch_masks_each_clips_padding(trained, deployable):
    """Different lengths in one batch: the frames past each clip's end are
    masked. Only each clip's last two analysis windows differ from the clip
    alone (they see the padding where a lone clip sees its reflected edge)."""
    waves = trained["waves"][:4]
    alone = _deployable_probabilities(deployable, waves)
    batch = deployable.predict(deploy.model_inputs(deployable, waves), verbose=0)
    np.testing.assert_array_equal(batch.argmax(-1), alone.argmax(-1))
    np.testing.assert_allclose(batch, alone, atol=2e-2)
    # Without the mask the padding would count: a clip padded with 3 s of zeros.
    padded = np.concatenate([waves[0], np.zeros(48000, "float32")])[None]
    unmasked = deployable.predict([padded, np.array([padded.shape[1]], "int32")], verbose=0)
    masked = deployable.predict([padded, np.array([len(waves[0])], "int32")], verbose=0)
    assert np.abs(unmasked - alone[:1]).max() > 10 * np.abs(masked - alone[:1]).max()


def test_speaker_statistics_give_the_training_pipelines_speaker_normalization(trained):
    """normalization="speaker": the deployable model with `speaker_statistics`
    over a speaker's clips gives the probabilities of the training pipeline's
    per-speaker standardization (training.prepare_fold) of the same clips."""
    import pandas as pd

    paths = trained["paths"][:6]
    noise_labels = CLASSES * 2  # the training speaker: every class twice (one validates)
    manifest = pd.DataFrame({
        "path": [f"noise{i}.wav" for i in range(len(noise_labels))] + paths,
        "label": noise_labels + [CLASSES[int(k)] for k in trained["labels"][:6]],
        "speaker": ["a"] * len(noise_labels) + ["09"] * 6,
        "group": ["a"] * len(noise_labels) + ["09"] * 6,
    })
    waves = trained["waves"][:6]
    rng = np.random.default_rng(0)
    features = [trained["extractor"].from_waveform(rng.normal(size=8000).astype("float32"))
                for _ in noise_labels] + [trained["extractor"].from_waveform(w) for w in waves]
    usable = list(range(len(manifest)))
    fold = training.prepare_fold(manifest, CLASSES, features, "09", usable, seed=0,
                                 max_seconds=30.0, normalize="speaker")
    merged = keras_hrf.reparameterize(trained["model"])
    order = np.argsort(fold.rows["test"])
    expected = np.stack([
        keras.ops.convert_to_numpy(keras.ops.softmax(merged(pad_batch([fold.inputs["test"][i]]),
                                                            training=False)))[0]
        for i in order])

    model = deploy.deployable_model(trained["model"], CLASSES, normalization="speaker")
    assert [t.name for t in model.inputs] == ["waveform", "num_samples", "speaker_mean",
                                              "speaker_std"]
    mean, std = deploy.speaker_statistics(waves)
    got = _deployable_probabilities(model, waves, speaker_mean=mean, speaker_std=std)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    with pytest.raises(ValueError, match="speaker_mean and speaker_std"):
        deploy.model_inputs(model, waves)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(class_names=["a", "b"]), r"class_names has 2 names for the model's 7 outputs"),
        (dict(mean=None), r"needs the training rows' mean and std"),
        (dict(std=np.ones(40)), r"mean and std need 80 values each"),
        (dict(normalization="utterance"), r"normalization='utterance'"),
        (dict(feature_settings={"num_mel_bins": 64}), r"num_mel_bins=64"),
    ],
)
def test_bad_deploy_arguments_are_named(trained, kwargs, message):
    arguments = {"class_names": CLASSES, "mean": trained["mean"], "std": trained["std"], **kwargs}
    with pytest.raises(ValueError, match=message):
        deploy.deployable_model(trained["model"], **arguments)


@pytest.fixture(scope="module")
def exported(trained, deployable, tmp_path_factory):
    folder = tmp_path_factory.mktemp("deploy")
    info = deploy.export_deployable(deployable, str(folder), CLASSES,
                                    extra_metadata={"architecture": "conformer-tiny"})
    return folder, info


def test_export_writes_every_format_the_backend_can(trained, exported, backend):
    folder, info = exported
    expected = {"keras"} | ({"saved_model", "litert", "litert_int8"}
                            if backend == "tensorflow" else set())
    assert set(info["skipped"]) == set(deploy.FORMATS) - expected
    if backend == "tensorflow":
        expected.add("features_litert")  # the float32 front end
    assert set(info["files"]) == expected
    metadata = json.loads((folder / "metadata.json").read_text())
    assert metadata["class_names"] == CLASSES and metadata["sample_rate"] == 16000
    assert metadata["features"]["num_mel_bins"] == 80 and metadata["normalization"] == "train"
    assert metadata["keras_hrf_version"] == keras_hrf.__version__
    np.testing.assert_allclose(metadata["normalization_statistics"]["std"], trained["std"],
                               rtol=1e-5)
    assert [i["name"] for i in metadata["inputs"]] == ["waveform", "num_samples"]
    assert not [f for f in os.listdir(folder) if f.endswith(".partial")]


def test_every_exported_format_gives_the_keras_probabilities(trained, deployable, exported,
                                                             backend):
    folder, info = exported
    waves = trained["waves"][:6]
    expected = _deployable_probabilities(deployable, waves)
    reloaded = keras.saving.load_model(str(folder / "model.keras"))
    np.testing.assert_allclose(_deployable_probabilities(reloaded, waves), expected, atol=1e-5)
    if "saved_model" in info["files"]:
        import tensorflow as tf

        loaded = tf.saved_model.load(str(folder / "saved_model"))  # keeps its variables alive
        got = np.concatenate([loaded.serve([w[None], np.array([len(w)], "int32")]).numpy()
                              for w in waves])
        np.testing.assert_allclose(got, expected, atol=1e-5)
    if "litert" in info["files"]:
        got = _litert_probabilities(folder / "model.tflite", waves)
        np.testing.assert_allclose(got, expected, atol=1e-5)  # measured: 2e-7


def _litert_probabilities(path, waves):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=1)
    details = {("waveform" if "waveform" in d["name"] else "num_samples"): d["index"]
               for d in interpreter.get_input_details()}
    rows = []
    for wave in waves:
        interpreter.resize_tensor_input(details["waveform"], [1, len(wave)])
        interpreter.resize_tensor_input(details["num_samples"], [1])
        interpreter.allocate_tensors()
        interpreter.set_tensor(details["waveform"], wave[None])
        interpreter.set_tensor(details["num_samples"], np.array([len(wave)], "int32"))
        interpreter.invoke()
        rows.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0])
    return np.stack(rows)


def test_litert_int8_agrees_with_float32_on_a_trained_model(trained, exported, backend):
    """model_int8.tflite (the network, dynamic-range int8, behind the float32
    features.tflite), run by examples/predict.py, against model.tflite."""
    folder, info = exported
    if "litert_int8" not in info["files"]:
        pytest.skip(f"LiteRT export runs on the TensorFlow backend, not {backend}")
    assert info["litert_int8"]["front_end"] == "features.tflite"
    float32 = _litert_probabilities(folder / "model.tflite", trained["waves"])
    done = _predict(folder / "model_int8.tflite", *trained["paths"], "--json")
    assert done.returncode == 0, done.stderr
    int8 = np.array([[json.loads(line)["probabilities"][c] for c in CLASSES]
                     for line in done.stdout.strip().splitlines()])
    assert float32.max(-1).mean() > 0.3  # trained: not a uniform guess over 7 classes
    agreement = np.mean(float32.argmax(-1) == int8.argmax(-1))
    assert agreement >= 0.95, agreement
    assert os.path.getsize(folder / "model_int8.tflite") < 0.6 * os.path.getsize(
        folder / "model.tflite")


def _predict(*args):
    return subprocess.run([sys.executable, PREDICT, *map(str, args)], capture_output=True,
                          text=True, timeout=600)


def test_predict_runs_litert_without_tensorflow_or_keras(trained, exported, tmp_path):
    folder, info = exported
    if "litert" not in info["files"]:
        pytest.skip("LiteRT export runs on the TensorFlow backend")
    bad = tmp_path / "not_audio.wav"
    bad.write_text("not audio")
    # Run predict.py as `python examples/predict.py` would (its folder first on
    # sys.path), then list the heavy modules it imported.
    probe = ("import os, runpy, sys; sys.argv = sys.argv[1:]\n"
             "sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[0])))\n"
             "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
             "except SystemExit as exit:\n    code = exit.code\n"
             "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
             "('tensorflow', 'keras', 'jax', 'torch'))\n"
             "print('HEAVY', heavy, 'EXIT', code)\n")
    paths = trained["paths"][:3]
    done = subprocess.run([sys.executable, "-c", probe, PREDICT, folder / "model.tflite",
                           paths[0], bad, *paths[1:], "--json"],
                          capture_output=True, text=True, timeout=600)
    lines = done.stdout.strip().splitlines()
    assert lines[-1] == "HEAVY [] EXIT 1", done.stdout + done.stderr
    rows = [json.loads(line) for line in lines[:-1]]
    assert [row["file"] for row in rows] == [paths[0], str(bad), *paths[1:]]
    assert "not_audio.wav" in rows[1]["error"] and "not_audio.wav" in done.stderr
    expected = _litert_probabilities(folder / "model.tflite", trained["waves"][:3])
    good = [row for row in rows if "error" not in row]
    for row, probabilities in zip(good, expected):
        assert row["emotion"] == CLASSES[int(probabilities.argmax())]
        np.testing.assert_allclose([row["probabilities"][c] for c in CLASSES], probabilities,
                                   atol=1e-6)


def test_predict_answers_each_window_of_a_long_recording(trained, exported, tmp_path):
    import soundfile

    folder, info = exported
    model = folder / ("model.tflite" if "litert" in info["files"] else "model.keras")
    # 3 clips end to end at 44.1 kHz stereo: resampled and mixed down by load_audio.
    from keras_hrf.audio import resample

    joined = np.concatenate(trained["waves"][:3])
    stereo = np.stack([resample(joined, 16000, 44100)] * 2, axis=-1)
    long_path = tmp_path / "long.flac"
    soundfile.write(long_path, stereo, 44100)
    done = _predict(model, long_path, "--window-seconds", 1.0)
    assert done.returncode == 0, done.stderr
    table = done.stdout.strip().splitlines()
    assert table[0].split()[:4] == ["file", "start", "end", "emotion"]
    seconds = len(joined) / 16000
    expected_rows = int(seconds) + (1 if seconds - int(seconds) >= 0.25 else 0)
    assert len(table) - 1 == expected_rows
    ends = [float(line.split()[2]) for line in table[1:]]
    assert ends[-1] == pytest.approx(seconds, abs=1e-3)


def test_predict_runs_the_keras_and_saved_model_files(trained, exported):
    folder, info = exported
    path = trained["paths"][0]
    expected = None
    for name in ("keras", "saved_model"):
        if name not in info["files"]:
            continue
        done = _predict(folder / info["files"][name], path, "--json")
        assert done.returncode == 0, done.stderr
        assert "cuInit" not in done.stderr and "oneDNN" not in done.stderr
        row = json.loads(done.stdout.strip().splitlines()[-1])
        got = [row["probabilities"][c] for c in CLASSES]
        expected = got if expected is None else expected
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_predict_gives_a_speaker_normalized_model_the_speakers_statistics(trained, tmp_path,
                                                                         backend):
    """normalization="speaker" through examples/predict.py: on LiteRT the
    statistics come from features.tflite, elsewhere from the package; both
    equal the Keras model given `speaker_statistics` of the same recordings."""
    model = deploy.deployable_model(trained["model"], CLASSES, normalization="speaker")
    info = deploy.export_deployable(model, str(tmp_path), CLASSES, normalization="speaker",
                                    formats=("keras", "litert"))
    speaker_paths, clip = trained["paths"][2:6], trained["paths"][0]
    mean, std = deploy.speaker_statistics(trained["waves"][2:6])
    expected = _deployable_probabilities(model, trained["waves"][:1], speaker_mean=mean,
                                         speaker_std=std)[0]
    for name in ("keras", "litert"):
        if name not in info["files"]:
            continue
        done = _predict(tmp_path / info["files"][name], clip, "--speaker-audio", *speaker_paths,
                        "--json")
        assert done.returncode == 0, done.stderr
        row = json.loads(done.stdout.strip().splitlines()[-1])
        np.testing.assert_allclose([row["probabilities"][c] for c in CLASSES], expected,
                                   atol=1e-4)
