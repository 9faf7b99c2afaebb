"""End to end: examples/iemocap.py on the demo corpus, then every output reloaded."""

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree

import keras
import numpy as np
import pytest
from test_examples import _load_example

import keras_hrf
from keras_hrf.datasets import DatasetError
from keras_hrf.features import FeatureExtractor
from keras_hrf.features import normalize


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    output = tmp_path_factory.mktemp("iemocap_run")
    example = _load_example("iemocap")
    report = example.main(["--epochs", "1", "--output", str(output)])
    return output, report


def _test_inputs(output, report):
    """The first fold's test utterances, normalized as the run did."""
    from keras_hrf.datasets.demo import make_demo_corpus

    manifest = make_demo_corpus(str(output / "demo_corpus"), clips_per_class=24, speakers=4)
    fold = report["folds"][0]
    rows = manifest[manifest["group"] == fold["test_group"]].iloc[:4]
    features, skipped = FeatureExtractor().extract(rows, progress=False)
    assert not skipped
    mean = np.array(fold["normalization"]["mean"], "float32")
    std = np.array(fold["normalization"]["std"], "float32")
    return np.stack([normalize(f, mean, std) for f in features])


def test_every_output_file_is_written(run):
    output, report = run
    for name in ("metrics.json", "confusion_matrix.svg", "hrf.keras", "merged.keras"):
        assert (output / name).is_file(), name
    fold_dir = output / f"fold_{report['folds'][0]['test_group']}"
    assert (fold_dir / "best.weights.h5").is_file()
    assert any("tfevents" in f for _, _, fs in os.walk(fold_dir / "logs") for f in fs)
    assert not [f for f in os.listdir(output) if f.endswith(".partial")]
    # The deployable model (waveforms in) for examples/predict.py.
    deployed = report["export"]["deploy"]["files"]
    assert deployed["keras"] == os.path.join("deploy", "model.keras")
    for relative in deployed.values():
        assert (output / relative).exists(), relative
    deploy_metadata = json.loads((output / "deploy" / "metadata.json").read_text())
    assert deploy_metadata["class_names"] == report["classes"]
    assert deploy_metadata["test_group"] == report["folds"][0]["test_group"]
    svg = ElementTree.parse(output / "confusion_matrix.svg").getroot()
    assert svg.tag.endswith("svg") and len(svg.findall("{*}rect")) == 1 + 16

    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["synthetic"] is True
    fold = metrics["folds"][0]
    for key in ("wa", "ua", "macro_f1"):
        assert fold["hrf"][key] == fold["merged"][key]
        assert 0.0 <= metrics["mean"]["merged"][key] <= 1.0
    assert fold["params_merged"] < fold["params_hrf"]
    assert fold["max_abs_logit_difference"] < 1e-4
    assert np.sum(fold["merged"]["confusion_matrix"]) == fold["test_rows"] == 24


def test_the_default_is_the_batch_norm_alone_and_the_papers_hrf_one_argument_away():
    example = _load_example("iemocap")
    default = example.parse_args([])
    assert (default.hrf_expansion, default.hrf_norm) == (0.0, "batch")
    paper = example.parse_args(["--hrf-expansion", "4"])
    assert (paper.hrf_expansion, paper.hrf_norm) == (4.0, None)
    both = example.parse_args(["--hrf-expansion", "4", "--hrf-norm", "batch"])
    assert (both.hrf_expansion, both.hrf_norm) == (4.0, "batch")
    plain = example.parse_args(["--hrf-norm", "none"])
    assert (plain.hrf_expansion, plain.hrf_norm) == (0.0, None)


def test_each_size_trains_at_its_own_default_rate():
    # The large models' rate was tuned apart from the lite ones' (RESULTS.md).
    example = _load_example("iemocap")
    assert example.parse_args([]).recipe.learning_rate == 1e-3
    assert example.parse_args(["--size", "large"]).recipe.learning_rate == 3e-4
    given = example.parse_args(["--size", "large", "--learning-rate", "1e-3"])
    assert given.recipe.learning_rate == 1e-3


def test_keras_files_reload_and_agree(run):
    output, report = run
    x = _test_inputs(output, report)
    merged = keras.saving.load_model(str(output / "merged.keras"), safe_mode=True)
    hrf = keras.saving.load_model(str(output / "hrf.keras"), safe_mode=True)
    # The default run trains the BatchNorm alone before each FFN (no expansion).
    trained = [l for l in hrf._flatten_layers() if isinstance(l, keras_hrf.HRFDense)]
    assert trained and all(l.expansion_units is None and l.expansion_norm == "batch"
                           for l in trained)
    assert not any(isinstance(l, keras_hrf.HRFDense) for l in merged._flatten_layers())
    expected = merged.predict(x, verbose=0)
    np.testing.assert_allclose(hrf.predict(x, verbose=0), expected, rtol=1e-4, atol=1e-4)


def test_saved_model_and_litert_give_the_keras_predictions(run, backend):
    output, report = run
    if backend == "torch":
        assert report["export"]["saved_model"] is None and "torch" in report["export"]["note"]
        pytest.skip("Keras exports tf_saved_model from the TensorFlow and JAX backends only")
    import tensorflow as tf

    x = _test_inputs(output, report)
    expected = keras.saving.load_model(str(output / "merged.keras")).predict(x, verbose=0)
    reloaded = tf.saved_model.load(str(output / "saved_model"))
    np.testing.assert_allclose(reloaded.serve(tf.constant(x)).numpy(), expected, rtol=1e-4, atol=1e-4)

    if backend == "jax" and report["export"]["tflite"] is None:
        # The documented limit: LiteRT cannot convert this jax2tf SavedModel.
        assert "LiteRT could not convert the jax backend" in report["export"]["note"]
        assert not (output / "model.tflite").exists()
        return
    from ai_edge_litert.interpreter import Interpreter  # tf.lite's is deprecated

    interpreter = Interpreter(model_path=str(output / "model.tflite"))
    entry = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(entry["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(entry["index"], x)
    interpreter.invoke()
    litert = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(litert, expected, rtol=1e-4, atol=1e-4)


def test_a_data_option_that_points_nowhere_is_named(tmp_path):
    example = _load_example("iemocap")
    with pytest.raises(DatasetError, match=r"Data folder not found: .*nowhere"):
        example.main(["--data-dir", str(tmp_path / "nowhere"), "--output", str(tmp_path / "o")])
    with pytest.raises(DatasetError, match=r"lacks Session1"):
        (tmp_path / "iemocap").mkdir()
        example.main(["--iemocap-root", str(tmp_path / "iemocap"), "--output", str(tmp_path / "o")])


def test_help_lists_the_options(capsys):
    example = _load_example("iemocap")
    with pytest.raises(SystemExit):
        example.main(["--help"])
    text = capsys.readouterr().out
    for option in ("--iemocap-root", "--data-dir", "--manifest", "--model", "--size",
                   "--hrf-expansion", "--epochs", "--batch-size", "--folds", "--seed", "--output"):
        assert option in text


def test_a_class_missing_from_the_training_folds_is_named(tmp_path):
    from fixtures import write_tone

    rows = ["path,label,speaker,group"]
    for speaker in ("s1", "s2", "s3"):
        for label in ("calm", "loud"):
            name = f"{speaker}_{label}.wav"
            write_tone(str(tmp_path / name), seconds=0.3)
            rows.append(f"{name},{label},{speaker},{speaker}")
    write_tone(str(tmp_path / "s2_rare.wav"), seconds=0.3)
    rows.append("s2_rare.wav,rare,s2,s2")  # "rare" exists only in group s2
    (tmp_path / "clips.csv").write_text("\n".join(rows) + "\n")
    example = _load_example("iemocap")
    with pytest.raises(DatasetError, match=r"Fold s2: the training rows hold no example of \['rare'\]"):
        example.main(["--manifest", str(tmp_path / "clips.csv"), "--folds", "s2",
                      "--output", str(tmp_path / "out")])


def _run_example(args, env_backend):
    env = dict(os.environ, KERAS_BACKEND=env_backend, TF_CPP_MIN_LOG_LEVEL="2")
    script = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "iemocap.py")
    return subprocess.Popen([sys.executable, script, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


@pytest.mark.process_mechanics
def test_a_killed_run_resumes_where_it_stopped(tmp_path, backend):
    """SIGKILL after the first epoch's backup, run the same command again: it
    goes on from epoch 2 with the best score it had; a third run reuses the
    finished fold without training."""
    output = tmp_path / "run"
    # The lite SpeechFormer, the quickest to build: the resume is not the model's business.
    args = ["--model", "speechformer", "--epochs", "3", "--hrf-expansion", "2",
            "--output", str(output),
            "--deploy-formats", "none"]  # exports are tested on the `run` fixture
    first = _run_example(args, backend)
    metadata = None
    deadline = time.time() + 400
    while time.time() < deadline and first.poll() is None:
        found = list(output.glob("fold_*/backup/training_metadata.json"))
        if found:
            metadata = found[0]
            break
        time.sleep(0.1)
    first.send_signal(signal.SIGKILL)
    log = first.communicate()[0]
    assert metadata is not None, f"no backup appeared; the first run printed:\n{log[-3000:]}"
    assert "Epoch 3/3" not in log, "the run finished before it could be killed"
    fold_dir = metadata.parent.parent
    best_before = json.loads((fold_dir / "best.weights.h5.json").read_text())
    assert not (output / "metrics.json").exists()

    second = _run_example(args, backend)
    log = second.communicate(timeout=600)[0]
    assert second.returncode == 0, log[-3000:]
    assert f"resuming from {fold_dir / 'backup'}" in log
    assert "Epoch 1/3" not in log and "Epoch 3/3" in log, log[-3000:]
    result = json.loads((fold_dir / "result.json").read_text())
    assert result["best_val_ua"] >= best_before["value"]
    assert not (fold_dir / "backup").exists()  # removed by BackupAndRestore when done
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["folds"][0]["merged"]["ua"] == result["merged"]["ua"]
    # --deploy-formats none: the .keras files only, no exports.
    assert (output / "merged.keras").is_file()
    assert not any((output / name).exists() for name in ("saved_model", "model.tflite", "deploy"))
    assert metrics["export"]["note"] == "no exports: --deploy-formats none"

    example = _load_example("iemocap")
    report = example.main(args)
    assert report["folds"][0] == result  # reused as it was, not trained again


def test_unknown_deploy_formats_are_named(capsys):
    example = _load_example("iemocap")
    with pytest.raises(SystemExit):
        example.parse_args(["--deploy-formats", "keras,onnx"])
    assert "--deploy-formats: unknown ['onnx']" in capsys.readouterr().err
    assert example.parse_args(["--deploy-formats", "none"]).deploy_formats == []


def test_other_settings_on_the_same_output_are_refused(tmp_path):
    output = tmp_path / "run"
    output.mkdir()
    (output / "run_settings.json").write_text(json.dumps({"model": "speechformer"}))
    example = _load_example("iemocap")
    with pytest.raises(SystemExit, match=r"holds a run made with other settings \(.*"
                       r"model: 'speechformer' then, 'conformer' now"):
        example.main(["--output", str(output)])


def test_a_run_of_the_old_default_resumes_with_the_papers_hrf_named(tmp_path):
    """Runs started before the default became the BatchNorm alone recorded
    hrf_expansion 4.0 and hrf_norm null: `--hrf-expansion 4` resumes them, and
    the new default is refused, naming both settings."""
    from keras_hrf import training

    example = _load_example("iemocap")
    output = tmp_path / "run"
    output.mkdir()
    old = training.run_settings(example.parse_args([]), example.RUN_SETTINGS)
    old.update(hrf_expansion=4.0, hrf_norm=None)
    (output / "run_settings.json").write_text(json.dumps(old))
    paper = example.parse_args(["--hrf-expansion", "4"])
    training.check_run_settings(str(output), training.run_settings(paper, example.RUN_SETTINGS))
    with pytest.raises(SystemExit, match=r"hrf_expansion: 4.0 then, 0.0 now; "
                                         r"hrf_norm: None then, 'batch' now"):
        example.main(["--output", str(output)])


def test_a_speaker_normalized_fold_streamed_from_disk_trains_and_says_so(tmp_path):
    from keras_hrf import training
    from keras_hrf.features import OnDiskFeatures

    example = _load_example("iemocap")
    args = example.parse_args(["--model", "speechformer", "--epochs", "1", "--hrf-expansion", "2",
                               "--normalize", "speaker", "--stream-features",
                               "--length-window", "2", "--output", str(tmp_path)])
    manifest, synthetic = training.load_data(args, training.demo_root(str(tmp_path)))
    assert synthetic and manifest["speaker"].str.len().min() > 0
    classes = keras_hrf.datasets.class_names(manifest)
    features, usable, _ = training.extract_features(manifest, str(tmp_path / "cache"),
                                                    in_memory=not args.stream_features)
    assert isinstance(features, OnDiskFeatures)
    group = manifest["group"].iat[0]
    result, _, _ = example.run_fold(args, manifest, classes, features, group, usable,
                                    str(tmp_path / "fold"))
    assert result["normalization"]["mode"] == "speaker"
    assert result["hrf"]["ua"] == result["merged"]["ua"]
    assert 0.0 <= result["train_padding_fraction"] < 1.0
    for setting in ("normalize", "length_window"):  # a resumed run must repeat them
        assert setting in example.RUN_SETTINGS
    with pytest.raises(SystemExit):
        example.parse_args(["--length-window", "0"])


def test_learning_rate_defaults_to_the_models_own():
    example = _load_example("iemocap")
    assert example.parse_args(["--model", "speechformer"]).learning_rate == 1e-3
    assert example.parse_args(["--model", "conformer"]).learning_rate == 1e-3
    chosen = example.parse_args(["--model", "speechformer", "--learning-rate", "3e-4"])
    assert chosen.learning_rate == 3e-4


def test_a_corpus_of_mixed_lengths_trains_and_predicts_over_two_folds(tmp_path, backend):
    """Clips of 1 to 8 s. In each speaker's test rows the first two batches are
    short and the third long: the order that crashed `predict` on TensorFlow
    (a fixed tf.data signature), after a whole fold of training."""
    if backend != "tensorflow":
        pytest.skip("the crash was TensorFlow's; the other backends run this path elsewhere")
    from fixtures import write_tone

    rows = []
    for speaker in ("s1", "s2", "s3"):
        seconds = [1.0 + 0.1 * i for i in range(8)] + [6.0, 7.0, 8.0, 6.5]
        for index, length in enumerate(seconds):
            label = ("ang", "neu", "sad")[index % 3]
            path = tmp_path / "clips" / f"{speaker}_{index:02d}.wav"
            write_tone(str(path), seconds=length, frequency={"ang": 300, "neu": 200,
                                                              "sad": 120}[label])
            rows.append(f"{path},{label},{speaker},{speaker}")
    (tmp_path / "clips.csv").write_text("path,label,speaker,group\n" + "\n".join(rows) + "\n")
    output = tmp_path / "run"
    report = _load_example("iemocap").main(
        ["--manifest", str(tmp_path / "clips.csv"), "--model", "speechformer",
         "--hrf-expansion", "0", "--epochs", "1",
         "--batch-size", "4", "--folds", "s1,s2", "--output", str(output),
         "--deploy-formats", "keras",
         # Streamed from disk in length-grouped batches: the path for large corpora.
         "--stream-features", "--length-window", "2"])
    assert [fold["test_group"] for fold in report["folds"]] == ["s1", "s2"]
    for fold in report["folds"]:
        assert fold["test_rows"] == 12
        assert np.sum(fold["merged"]["confusion_matrix"]) == 12
        assert 0.0 <= fold["train_padding_fraction"] < 0.5
    assert (output / "merged.keras").is_file() and (output / "metrics.json").is_file()
    assert sorted(os.listdir(output / "deploy")) == ["metadata.json", "model.keras"]
