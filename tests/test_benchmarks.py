"""The benchmark scripts' own logic: the paired comparisons, the summary of
runs on disk, SpecAugment, the BatchNorm control and the run claims that let
several processes share one accuracy plan."""

import importlib.util
import os

import numpy as np
import pytest

BENCHMARKS = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks")


def _load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", os.path.join(BENCHMARKS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(config, seed, group, ua):
    return {"config": config, "seed": seed, "test_group": group, "ua": ua, "wa": ua,
            "macro_f1": ua, "train_seconds": 10.0, "params_training": 1, "params_deployed": 1}


def test_paired_comparison_matches_runs_by_seed_and_fold():
    accuracy = _load("accuracy")
    runs = []
    for seed in (0, 1):
        for group, base in (("03", 0.5), ("08", 0.6), ("09", 0.7)):
            runs.append(_run("lite_plain", seed, group, base))
            # HRF better by 0.1 on every pair but one, where it loses 0.05.
            delta = -0.05 if (seed, group) == (1, "09") else 0.1
            runs.append(_run("lite_hrf4", seed, group, base + delta))
    runs.append(_run("lite_hrf4", 2, "03", 0.9))  # no baseline partner: not paired
    summary = accuracy.summarize(runs)
    paired = summary["lite_hrf4"]["paired_ua_vs_baseline"]
    assert paired["pairs"] == 6
    assert (paired["wins"], paired["ties"], paired["losses"]) == (5, 0, 1)
    assert paired["mean_difference"] == pytest.approx((5 * 0.1 - 0.05) / 6)
    assert 0 < paired["wilcoxon_p"] < 1
    assert summary["lite_plain"]["ua"]["mean"] == pytest.approx(0.6)
    assert summary["lite_plain"]["ua"]["per_seed_mean"] == pytest.approx([0.6, 0.6])
    assert "paired_ua_vs_baseline" not in summary["lite_plain"]


def test_hrf_with_batchnorm_is_also_paired_against_its_batchnorm_only_control():
    accuracy = _load("accuracy")
    runs = []
    for group, base in (("03", 0.5), ("08", 0.6), ("09", 0.7)):
        runs.append(_run("lite_plain", 0, group, base))
        runs.append(_run("lite_bn", 0, group, base + 0.1))
        runs.append(_run("lite_hrf4_bn", 0, group, base + 0.12))
    summary = accuracy.summarize(runs)
    against_control = summary["lite_hrf4_bn"]["paired_ua_vs_control"]
    assert against_control["control"] == "lite_bn"
    assert against_control["mean_difference"] == pytest.approx(0.02)
    assert summary["lite_hrf4_bn"]["paired_ua_vs_baseline"]["mean_difference"] == pytest.approx(0.12)
    assert "paired_ua_vs_control" not in summary["lite_bn"]


EMODB = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "shared", "data", "emodb")


@pytest.mark.skipif(not os.path.isdir(EMODB), reason="../shared/data/emodb is not beside the project")
def test_summarize_only_trains_nothing_and_lists_the_missing_runs(tmp_path):
    import json

    accuracy = _load("accuracy")
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    for config, ua in (("lite_plain", 0.5), ("lite_hrf4", 0.6)):
        (runs_dir / f"conformer_{config}_e40_seed0_fold03.json").write_text(
            json.dumps(_run(config, 0, "03", ua)))
    [report] = accuracy.main(["--summarize-only", "--emodb", EMODB, "--output", str(tmp_path),
                            "--configs", "lite_plain", "lite_hrf4", "--seeds", "0",
                            "--folds", "03,08"])
    assert sorted(os.listdir(runs_dir)) == ["conformer_lite_hrf4_e40_seed0_fold03.json",
                                           "conformer_lite_plain_e40_seed0_fold03.json"]
    assert report["planned_runs"] == 4
    assert sorted(report["missing_runs"]) == ["conformer_lite_hrf4_e40_seed0_fold08.json",
                                              "conformer_lite_plain_e40_seed0_fold08.json"]
    paired = report["summary"]["lite_hrf4"]["paired_ua_vs_baseline"]
    assert paired["pairs"] == 1 and paired["mean_difference"] == pytest.approx(0.1)
    assert json.loads((tmp_path / "summary_e40.json").read_text())["missing_runs"] == report["missing_runs"]


@pytest.mark.skipif(not os.path.isdir(EMODB), reason="../shared/data/emodb is not beside the project")
def test_a_changed_recipe_names_its_own_runs_and_summary(tmp_path):
    import json

    accuracy = _load("accuracy")
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    # A default-recipe run on disk must not be read as the tuned recipe's.
    (runs_dir / "conformer_lite_plain_e40_seed0_fold03.json").write_text(
        json.dumps(_run("lite_plain", 0, "03", 0.5)))
    tuned = "conformer_lite_plain_e40_lr0.0003_dropout0.3_speakernorm_seed0_fold03.json"
    (runs_dir / tuned).write_text(json.dumps(_run("lite_plain", 0, "03", 0.7)))
    [report] = accuracy.main(["--summarize-only", "--emodb", EMODB, "--output", str(tmp_path),
                            "--configs", "lite_plain", "--seeds", "0", "--folds", "03",
                            "--learning-rate", "3e-4", "--dropout", "0.3",
                            "--normalize", "speaker"])
    assert report["missing_runs"] == []
    assert report["summary"]["lite_plain"]["ua"]["mean"] == pytest.approx(0.7)
    assert (report["learning_rate"], report["dropout"], report["normalize"]) == (3e-4, 0.3, "speaker")
    assert (tmp_path / "summary_e40_lr0.0003_dropout0.3_speakernorm.json").is_file()
    assert not (tmp_path / "summary_e40.json").exists()
    # Another number of epochs does not overwrite the default recipe's summary
    # either; 20 epochs, the first tables' length, keeps its unsuffixed name.
    [short] = accuracy.main(["--summarize-only", "--emodb", EMODB, "--output", str(tmp_path),
                           "--configs", "lite_plain", "--seeds", "0", "--folds", "03",
                           "--epochs", "20"])
    assert short["missing_runs"] == ["conformer_lite_plain_e20_seed0_fold03.json"]
    assert (tmp_path / "summary.json").is_file()
    assert not (tmp_path / "summary_e40.json").exists()


def test_normalize_speaker_reaches_the_fold():
    """--normalize goes to training.prepare_fold (tests/test_training.py tests
    what it does there)."""
    import argparse

    import pandas as pd

    accuracy = _load("accuracy")
    speakers = [s for s in ("a", "b", "c") for _ in range(10)]
    manifest = pd.DataFrame({"path": [f"{i}.wav" for i in range(30)], "label": ["x", "y"] * 15,
                             "speaker": speakers, "group": speakers})
    rng = np.random.default_rng(0)
    features = [rng.normal(5.0 * "abc".index(s), 1.0, size=(50, 4)).astype("float32")
                for s in speakers]
    for normalize in ("train", "speaker"):
        args = argparse.Namespace(max_seconds=4.0, normalize=normalize)
        fold = accuracy.prepare_fold(manifest, ["x", "y"], features, list(range(30)), 0, "b", args)
        assert fold.normalization == normalize
    test_mean = float(np.concatenate(fold.inputs["test"]).mean())
    assert abs(test_mean) < 1e-4  # the last fold: standardized per speaker


def test_the_recipes_dropout_reaches_the_model_arguments():
    import argparse

    accuracy = _load("accuracy")
    tuned = accuracy.model_arguments("lite_bn", argparse.Namespace(dropout=0.3, model_options={}))
    assert tuned["dropout"] == 0.3 and tuned["hrf_norm"] == "batch"
    assert "identity_expansion" not in tuned  # the script's own flag, not the model's
    assert "dropout" not in accuracy.model_arguments("lite_plain", argparse.Namespace(dropout=None))
    shaped = accuracy.model_arguments("lite_plain", argparse.Namespace(
        dropout=None, model_options={"normalize_first": True}))
    assert shaped["normalize_first"] is True


def test_other_corpora_keep_their_runs_apart_and_name_every_recipe_change(tmp_path):
    """--corpus ravdess reads the release layout into 4 actor folds and keeps
    its runs in their own folder; every recipe flag that changes training
    is in the run's name."""
    import json

    from fixtures import write_ravdess

    accuracy = _load("accuracy")
    write_ravdess(str(tmp_path / "ravdess"), actors=(1, 2, 3, 4))
    output = tmp_path / "out"
    (output / "runs").mkdir(parents=True)
    name = "ravdess_speechformer_lite_plain_e40_sgd_wd0.0005_clip1_nospecaug_max4s" \
           "_layersperstage1-1-1-1_normalizefirstTrue_seed0_fold1.json"
    (output / "runs" / name).write_text(json.dumps(_run("lite_plain", 0, "1", 0.4)))
    [report] = accuracy.main(
        ["--summarize-only", "--corpus", "ravdess", "--data-root", str(tmp_path / "ravdess"),
         "--output", str(output), "--model", "speechformer", "--configs", "lite_plain",
         "--seeds", "0", "--optimizer", "sgd", "--weight-decay", "5e-4", "--clipnorm", "1",
         "--no-spec-augment", "--max-seconds", "4", "--model-option", "normalize_first=True",
         "--model-option", "layers_per_stage=[1, 1, 1, 1]"])
    assert report["corpus"] == "ravdess" and report["folds"] == ["1", "2"]
    assert report["summarized_runs"] == 1
    assert report["missing_runs"] == [name.replace("fold1", "fold2")]
    assert report["recipe"]["optimizer"] == "sgd" and report["recipe"]["spec_augment"] is False
    assert report["model_options"] == {"normalize_first": True, "layers_per_stage": [1, 1, 1, 1]}
    assert (output / "summary_speechformer_e40_sgd_wd0.0005_clip1_nospecaug_max4s"
                      "_layersperstage1-1-1-1_normalizefirstTrue.json").is_file()


def test_a_manifest_gives_any_corpus_its_folds(tmp_path):
    from fixtures import write_tone

    accuracy = _load("accuracy")
    rows = []
    for group in ("north", "south", "west"):
        for label in ("calm", "loud"):
            path = tmp_path / f"{group}_{label}.wav"
            write_tone(str(path))
            rows.append(f"{path},{label},{group},{group}")
    (tmp_path / "mine.csv").write_text("path,label,speaker,group\n" + "\n".join(rows) + "\n")
    [report] = accuracy.main(["--summarize-only", "--manifest", str(tmp_path / "mine.csv"),
                            "--output", str(tmp_path / "out"), "--configs", "lite_plain",
                            "--seeds", "0"])
    assert report["corpus"] == "mine" and report["folds"] == ["north", "south", "west"]
    assert report["missing_runs"][0] == "mine_conformer_lite_plain_e40_seed0_foldnorth.json"


def test_the_large_model_trains_at_its_own_rate_and_is_summarized_apart(tmp_path):
    from fixtures import write_tone

    accuracy = _load("accuracy")
    rows = []
    for group in ("north", "south"):
        for label in ("calm", "loud"):
            path = tmp_path / f"{group}_{label}.wav"
            write_tone(str(path))
            rows.append(f"{path},{label},{group},{group}")
    (tmp_path / "mine.csv").write_text("path,label,speaker,group\n" + "\n".join(rows) + "\n")
    command = ["--summarize-only", "--manifest", str(tmp_path / "mine.csv"), "--output",
               str(tmp_path / "out"), "--configs", "lite_plain", "large_plain", "--seeds", "0",
               "--folds", "north"]
    lite, large = accuracy.main(command)
    assert (lite["configs"], lite["learning_rate"]) == (["lite_plain"], 1e-3)
    assert (large["configs"], large["learning_rate"]) == (["large_plain"], 3e-4)
    assert large["recipe"]["learning_rate"] == 3e-4
    assert large["missing_runs"] == ["mine_conformer_large_plain_e40_lr0.0003_seed0_foldnorth.json"]
    assert (tmp_path / "out" / "summary_e40.json").is_file()
    assert (tmp_path / "out" / "summary_e40_lr0.0003.json").is_file()
    # One rate given: one recipe, named as before the sizes had their own rates.
    [both] = accuracy.main(command + ["--learning-rate", "1e-3"])
    assert both["configs"] == ["lite_plain", "large_plain"]
    assert "mine_conformer_large_plain_e40_seed0_foldnorth.json" in both["missing_runs"]


def test_a_run_stopped_after_an_epoch_resumes_there_with_its_whole_history(tmp_path, monkeypatch):
    import functools
    import json

    import keras

    from fixtures import write_tone

    accuracy = _load("accuracy")
    rows = []
    for group in ("north", "south", "west"):
        for label, frequency in (("calm", 220.0), ("loud", 880.0)):
            for take in range(4):
                path = tmp_path / f"{group}_{label}_{take}.wav"
                write_tone(str(path), seconds=0.3, frequency=frequency + 10 * take)
                rows.append(f"{path},{label},{group},{group}")
    (tmp_path / "mine.csv").write_text("path,label,speaker,group\n" + "\n".join(rows) + "\n")
    # One Conformer block: the resume is not the model's business, and tracing
    # the lite model's four blocks took most of this test's time.
    command = ["--manifest", str(tmp_path / "mine.csv"), "--output", str(tmp_path / "out"),
               "--configs", "lite_plain", "--seeds", "0", "--folds", "north", "--epochs", "4",
               "--model-option", "num_layers=1"]
    name = "mine_conformer_lite_plain_e4_numlayers1_seed0_foldnorth"

    class StopAfterSecondEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt("stopped after epoch 2")

    train_then_stop = functools.partial(accuracy.run_one, extra_callbacks=[StopAfterSecondEpoch()])
    with monkeypatch.context() as patched:
        patched.setattr(accuracy, "run_one", train_then_stop)
        with pytest.raises(KeyboardInterrupt):
            accuracy.main(command)
    scratch = tmp_path / "out" / "scratch" / name
    assert (scratch / "backup").is_dir()
    assert not (tmp_path / "out" / "runs" / f"{name}.json.claim").exists()
    logged = json.loads((scratch / "epochs.json").read_text())["epochs"]
    assert [entry["epoch"] for entry in logged] == [1, 2]

    accuracy.main(command)
    run = json.loads((tmp_path / "out" / "runs" / f"{name}.json").read_text())
    assert run["resumed_at"] == [3]
    assert len(run["history"]["loss"]) == len(run["history"]["val_ua"]) == 4
    assert run["history"]["loss"][:2] == [round(entry["loss"], 4) for entry in logged]
    assert run["train_seconds"] >= sum(entry["seconds"] for entry in logged)
    assert not (scratch / "backup").exists()  # Keras removes it when fit finishes


def test_a_run_is_claimed_by_one_live_process_and_a_dead_ones_claim_is_taken_over(tmp_path):
    import socket
    import subprocess
    import sys

    accuracy = _load("accuracy")
    path = str(tmp_path / "run.json")
    assert accuracy.claim(path)
    with open(path + ".claim") as handle:
        assert handle.read() == f"{socket.gethostname()} {os.getpid()} {accuracy._boot_id()}"
    assert not accuracy.claim(path)  # held by a live process (this one)

    # A process that has exited leaves its claim behind: it is taken over.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with open(path + ".claim", "w") as handle:
        handle.write(f"{socket.gethostname()} {dead.pid}")
    assert accuracy.claim(path)
    with open(path + ".claim") as handle:
        assert handle.read().split()[1] == str(os.getpid())

    # Another host's claim cannot be checked from here, so it is respected.
    with open(path + ".claim", "w") as handle:
        handle.write(f"not-{socket.gethostname()} {dead.pid}")
    assert not accuracy.claim(path)

    # After a restart a process id can name an unrelated live process (this
    # one here): the claim of an earlier boot is taken over all the same, and
    # one of this boot, or without a boot id (as older claims are), is not.
    for boot, taken_over in (("an-earlier-boot", True), (accuracy._boot_id(), False), ("", False)):
        with open(path + ".claim", "w") as handle:
            handle.write(f"{socket.gethostname()} {os.getpid()} {boot}".strip())
        assert accuracy.claim(path) is taken_over, boot


def test_batchnorm_control_keeps_its_expansion_at_the_identity_through_training():
    import keras

    import keras_hrf

    accuracy = _load("accuracy")
    config = dict(accuracy.CONFIGS["lite_bn"])
    assert config.pop("identity_expansion") is True
    # Two blocks of the lite model: every HRF layer, at half the tracing time.
    model = keras_hrf.ConvTransformer(3, input_dim=8, num_layers=2, **config)
    plain = keras_hrf.ConvTransformer(3, input_dim=8, size="lite", num_layers=2)
    accuracy.freeze_expansions_at_identity(model)
    layers = [layer for layer in model._flatten_layers() if isinstance(layer, keras_hrf.HRFDense)]
    assert layers
    model.compile(optimizer=keras.optimizers.AdamW(1e-2, weight_decay=0.05),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    norm_before = [keras.ops.convert_to_numpy(layer.norm.gamma).copy() for layer in layers]
    x = np.random.default_rng(0).normal(size=(8, 30, 8)).astype("float32")
    model.fit(x, np.arange(8) % 3, epochs=2, verbose=0)
    for layer, gamma in zip(layers, norm_before):
        kernel = keras.ops.convert_to_numpy(layer.expansion_kernel)
        np.testing.assert_array_equal(kernel, np.eye(kernel.shape[0]))
        assert not np.array_equal(keras.ops.convert_to_numpy(layer.norm.gamma), gamma)
    # Beside the plain model it trains only each BatchNorm's gamma and beta.
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    assert trainable == plain.count_params() + sum(2 * layer.expansion_units for layer in layers)
    merged = keras_hrf.reparameterize(model)
    assert merged.count_params() == plain.count_params()
    np.testing.assert_allclose(merged.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-4)


def test_batchnorm_control_computes_what_hrf_norm_alone_builds():
    """The benchmark's control (an r = 1 expansion frozen at the identity) is
    the function users get from `hrf_norm="batch"` without `hrf_expansion`,
    in training mode (batch statistics) and in inference mode."""
    import keras

    import keras_hrf

    accuracy = _load("accuracy")
    config = dict(accuracy.CONFIGS["lite_bn"], dropout=0.0, attention_dropout=0.0)
    config.pop("identity_expansion")
    control = keras_hrf.ConvTransformer(3, input_dim=8, **config)
    accuracy.freeze_expansions_at_identity(control)
    users = keras_hrf.ConvTransformer(3, input_dim=8, size="lite", hrf_norm="batch",
                                      dropout=0.0, attention_dropout=0.0)
    shared = [v for v in control.weights if v.path.split("/")[-1] != "expansion_kernel"]
    assert len(shared) == len(users.weights) < len(control.weights)
    for variable, source in zip(users.weights, shared):
        variable.assign(source)
    x = np.random.default_rng(1).normal(size=(4, 30, 8)).astype("float32") * 2.0 + 0.5
    for training in (True, False):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(users(x, training=training)),
            keras.ops.convert_to_numpy(control(x, training=training)), rtol=1e-5, atol=1e-5)


def test_batchnorm_control_refuses_a_model_it_cannot_freeze():
    import keras_hrf

    accuracy = _load("accuracy")
    with pytest.raises(ValueError, match="HRFDense"):
        accuracy.freeze_expansions_at_identity(keras_hrf.ConvTransformer(3, input_dim=8, size="lite"))
    with pytest.raises(ValueError, match="square"):
        accuracy.freeze_expansions_at_identity(
            keras_hrf.ConvTransformer(3, input_dim=8, size="lite", hrf_expansion=2.0))


@pytest.mark.skipif(not os.path.isdir(EMODB), reason="../shared/data/emodb is not beside the project")
def test_the_summary_covers_every_run_of_the_recipe_not_only_the_plan(tmp_path):
    """A narrower command (one config, one seed) must not shrink the recipe's
    summary to its own plan; runs of other recipes and unchosen folds stay out."""
    import json

    accuracy = _load("accuracy")
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    for config, seed, fold, ua in (("lite_plain", 0, "03", 0.5), ("lite_plain", 1, "03", 0.4),
                                   ("lite_hrf4", 1, "03", 0.6), ("lite_hrf4_bn", 0, "03", 0.7),
                                   ("lite_hrf4", 1, "08", 0.9)):
        (runs_dir / f"conformer_{config}_e40_speakernorm_seed{seed}_fold{fold}.json").write_text(
            json.dumps(_run(config, seed, fold, ua)))
    (runs_dir / "conformer_lite_hrf4_e40_seed1_fold03.json").write_text(  # another recipe
        json.dumps(_run("lite_hrf4", 1, "03", 0.1)))
    [report] = accuracy.main(["--summarize-only", "--emodb", EMODB, "--output", str(tmp_path),
                            "--configs", "lite_plain", "--seeds", "0", "--folds", "03",
                            "--normalize", "speaker"])
    summary = report["summary"]
    assert list(summary) == ["lite_plain", "lite_hrf4", "lite_hrf4_bn"]
    assert summary["lite_plain"]["seeds"] == [0, 1] and summary["lite_plain"]["runs"] == 2
    assert summary["lite_hrf4"]["ua"]["mean"] == pytest.approx(0.6)  # fold 08 not chosen
    assert summary["lite_hrf4"]["paired_ua_vs_baseline"]["mean_difference"] == pytest.approx(0.2)
    assert report["summarized_runs"] == 4
    assert report["planned_runs"] == 1 and report["missing_runs"] == []


def test_the_classic_baseline_standardizes_per_speaker_with_each_speakers_own_rows():
    import pandas as pd

    baseline = _load("baseline")
    speakers = ["a"] * 4 + ["b"] * 4
    manifest = pd.DataFrame({"speaker": speakers})
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(10, 2, (4, 3)), rng.normal(-5, 0.1, (4, 3))])
    parts = {"train": [0, 1, 2], "validation": [3], "test": [4, 5, 6, 7]}
    by_train = baseline.normalized(values, manifest, parts, "train")
    np.testing.assert_allclose(by_train[:3].mean(axis=0), 0, atol=1e-9)
    assert np.all(by_train[4:] < -3)  # far from the training rows' statistics
    by_speaker = baseline.normalized(values, manifest, parts, "speaker")
    for rows in ([0, 1, 2, 3], [4, 5, 6, 7]):
        np.testing.assert_allclose(by_speaker[rows].mean(axis=0), 0, atol=1e-9)
        np.testing.assert_allclose(by_speaker[rows].std(axis=0), 1, atol=1e-6)


def test_the_classic_baseline_runs_on_a_corpus_in_the_release_layout(tmp_path):
    """eGeMAPS + linear SVM end to end, in its own process (openSMILE must be
    loaded before TensorFlow). Each emotion is a tone of its own pitch, which
    eGeMAPS' F0 functionals separate: a working pipeline scores far above chance."""
    import json
    import subprocess
    import sys

    from fixtures import write_ravdess

    pytest.importorskip("opensmile")
    write_ravdess(str(tmp_path / "ravdess"), actors=range(1, 9))
    result = subprocess.run(
        [sys.executable, os.path.join(BENCHMARKS, "baseline.py"), "--corpus", "ravdess",
         "--data-root", str(tmp_path / "ravdess"), "--output", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "out" / "ravdess.json").read_text())
    assert report["folds"] == ["1", "2", "3", "4"]
    assert report["features"].startswith("eGeMAPSv02 functionals (88)")
    assert len(report["folds_detail"]) == 8  # 4 folds x 2 normalizations
    for mode in ("train", "speaker"):
        assert report["summary"][mode]["ua"]["mean"] > 0.6  # chance: 1/8


def test_the_collapse_measure_is_zero_only_when_every_utterance_looks_alike():
    collapse = _load("collapse")
    rng = np.random.default_rng(0)
    alike = np.tile(rng.normal(size=(1, 7, 16)), (5, 1, 1))  # 5 utterances, 7 frames
    assert collapse.spread(alike) == pytest.approx(0.0, abs=1e-9)
    different = rng.normal(size=(5, 7, 16))
    assert collapse.spread(different) > 0.3
    # Pooled vectors (2-D) are compared as they are; the scale does not matter.
    pooled = rng.normal(size=(5, 16))
    assert collapse.spread(pooled) == pytest.approx(collapse.spread(100 * pooled))


@pytest.mark.skipif(not os.path.isdir(EMODB), reason="../shared/data/emodb is not beside the project")
def test_the_deployed_benchmark_names_the_harness_command_when_weights_are_missing(backend):
    if backend != "tensorflow":
        pytest.skip("benchmarks/deployed.py runs on the TensorFlow backend (LiteRT export)")
    import sys

    if BENCHMARKS not in sys.path:  # as when run as a script: it imports accuracy.py
        sys.path.insert(0, BENCHMARKS)
    deployed = _load("deployed")
    with pytest.raises(SystemExit, match=r"no trained weights for speakers \['03', .*'16'\].*"
                       r"accuracy\.py --model convtransformer --configs lite_plain --seeds 987"):
        deployed.main(["--model", "convtransformer", "--seed", "987"])


def test_compare_pairs_each_architecture_with_the_baseline_and_the_reference(tmp_path, capsys):
    """Each fold's value is the mean over its seeds; a missing seed is named;
    runs of another recipe or configuration are not counted."""
    import json

    compare = _load("compare")
    folds = ["1", "2", "3", "4"]
    baseline = {"folds": folds, "folds_detail": [
        {"test_group": g, "normalize": norm, "ua": ua, "wa": ua, "macro_f1": ua}
        for norm, ua in (("train", 0.5), ("speaker", 0.9)) for g in folds]}
    (tmp_path / "baseline").mkdir()
    (tmp_path / "baseline" / "ravdess.json").write_text(json.dumps(baseline))
    runs = tmp_path / "accuracy" / "ravdess" / "runs"
    runs.mkdir(parents=True)

    def write(name, ua):
        (runs / name).write_text(json.dumps({"ua": ua, "wa": ua, "macro_f1": ua,
                                             "train_seconds": 10.0, "params_deployed": 7}))

    for g in folds:
        write(f"ravdess_conformer_lite_plain_e40_seed0_fold{g}.json", 0.6)
        write(f"ravdess_conformer_lite_plain_e40_seed1_fold{g}.json", 0.4 if g == "1" else 0.6)
        write(f"ravdess_conformer_lite_hrf4_e40_seed0_fold{g}.json", 0.99)  # another config
        write(f"ravdess_conformer_lite_plain_e40_speakernorm_seed0_fold{g}.json", 0.99)
    for g in folds[:2]:
        write(f"ravdess_speechformer_lite_plain_e40_seed0_fold{g}.json", 0.45)
    report = compare.main(["--corpus", "ravdess", "--results", str(tmp_path),
                           "--output", str(tmp_path / "out.json")])

    conformer = report["architectures"]["conformer"]
    assert conformer["runs"] == 8
    assert conformer["ua"]["per_fold"] == pytest.approx({"1": 0.5, "2": 0.6, "3": 0.6, "4": 0.6})
    assert conformer["ua"]["mean"] == pytest.approx(0.575)
    assert conformer["per_seed_ua"]["1"] == {"mean": pytest.approx(0.55), "folds": 4}
    against_baseline = report["paired"]["conformer"]["the classic baseline"]
    assert against_baseline["wins"] == 3 and against_baseline["losses"] == 0
    assert against_baseline["mean_difference"] == pytest.approx(0.075)
    speechformer = report["paired"]["speechformer"]["the Conformer"]
    assert speechformer["pairs"] == 2 and speechformer["mean_difference"] == pytest.approx(-0.1)
    assert report["architectures"]["convtransformer"]["runs"] == 0
    printed = capsys.readouterr().out
    assert "| ConvTransformer | | 0 | not measured" in printed
    assert "seed 0: 0.4500 (2 of 4 folds)" in printed
    assert json.loads((tmp_path / "out.json").read_text())["corpus"] == "ravdess"

    speaker = compare.main(["--corpus", "ravdess", "--normalize", "speaker", "--results",
                            str(tmp_path), "--output", str(tmp_path / "speaker.json")])
    assert speaker["architectures"]["conformer"]["ua"]["mean"] == pytest.approx(0.99)
    assert speaker["baseline"]["ua"]["mean"] == pytest.approx(0.9)

    # Another number of epochs is its own table and file: 20, the first
    # tables' length, keeps the unsuffixed name; the default's is _e40.
    write("ravdess_conformer_lite_plain_e20_seed0_fold1.json", 0.7)
    shorter = compare.main(["--corpus", "ravdess", "--epochs", "20", "--results", str(tmp_path)])
    assert shorter["architectures"]["conformer"]["ua"]["per_fold"] == {"1": pytest.approx(0.7)}
    written = json.loads((tmp_path / "accuracy" / "comparison_ravdess_train.json").read_text())
    assert written["architectures"]["conformer"]["runs"] == 1 and written["epochs"] == 20
    assert not (tmp_path / "accuracy" / "comparison_ravdess_train_e40.json").exists()
    compare.main(["--corpus", "ravdess", "--results", str(tmp_path)])
    assert (tmp_path / "accuracy" / "comparison_ravdess_train_e40.json").is_file()
    # Paired with its own 20-epoch runs on the seeds both have: fold 1, seed 0 only
    # (0.6 at 40 against 0.7 at 20), not the 40-epoch seed 1 of fold 1.
    against = compare.main(["--corpus", "ravdess", "--against-epochs", "20", "--results",
                            str(tmp_path), "--output", str(tmp_path / "against.json")])
    itself = against["paired"]["conformer"]["itself at 20 epochs (same seeds)"]
    assert itself["pairs"] == 1 and itself["mean_difference"] == pytest.approx(-0.1)
    assert "speechformer" in against["paired"]
    assert against["paired"]["speechformer"]["itself at 20 epochs (same seeds)"] is None
    assert "Conformer against itself at 20 epochs (same seeds), fold by fold: -10.0 points, " \
           "0/1 of 1 folds" in capsys.readouterr().out


def test_paper_table_pairs_each_configuration_with_lite_plain_over_runs_and_groups(
        tmp_path, capsys):
    """Cells from each configuration's own recipe, partial where a planned seed
    is missing, paired with lite_plain over (fold, seed) runs and over folds."""
    import json

    table = _load("paper_table")
    folds = [str(g) for g in range(1, 7)]
    (tmp_path / "baseline").mkdir()
    (tmp_path / "baseline" / "ravdess.json").write_text(json.dumps({
        "folds": folds, "folds_detail": [
            {"test_group": g, "normalize": "train", "ua": 0.5, "wa": 0.5, "macro_f1": 0.5}
            for g in folds]}))
    runs = tmp_path / "accuracy" / "ravdess" / "runs"
    runs.mkdir(parents=True)

    def write(config, suffix, seed, group, ua, seconds=10.0, model="conformer"):
        (runs / f"ravdess_{model}_{config}{suffix}_seed{seed}_fold{group}.json").write_text(
            json.dumps({"ua": ua, "wa": ua, "macro_f1": ua, "train_seconds": seconds,
                        "params_deployed": 7}))

    for g in folds:
        for seed in (0, 1):
            write("lite_plain", "_e40", seed, g, 0.5)
            # HRF: +0.1 on seed 0 everywhere, -0.04 on seed 1: 6 wins and 6 losses
            # over runs, but a gain of +0.03 on every fold's mean over the seeds.
            write("lite_hrf4", "_e40", seed, g, 0.6 if seed == 0 else 0.46)
        write("lite_bn", "_e40", 0, g, 0.4)  # seed 0 only: partial with seeds 0 1
        write("large_plain", "_e40", 0, g, 0.1)  # the lite recipe: not the large's own
        write("large_plain", "_e60_lr0.0003", 0, g, 0.55)
        write("large_plain", "_e60_lr0.0003", 1, g, 0.55)
    report = table.main(["--corpora", "ravdess", "--models", "conformer", "--seeds", "0", "1",
                         "--suffix", "large_plain=_e60_lr0.0003", "--results", str(tmp_path),
                         "--output", str(tmp_path / "table.json")])

    cells = report["table"]["ravdess"]["conformer"]
    hrf = cells["lite_hrf4"]
    assert hrf["ua"]["mean"] == pytest.approx(0.53) and not hrf["partial"]
    over_runs, over_groups = (hrf["paired_vs_lite_plain"][k] for k in ("runs", "groups"))
    assert (over_runs["pairs"], over_runs["wins"], over_runs["losses"]) == (12, 6, 6)
    assert (over_groups["pairs"], over_groups["wins"], over_groups["losses"]) == (6, 6, 0)
    assert over_groups["mean_difference"] == pytest.approx(0.03)
    assert over_groups["wilcoxon_p"] < 0.05 and over_runs["wilcoxon_p"] > 0.05
    assert cells["lite_bn"]["partial"] and cells["lite_bn"]["missing_planned_runs"] == 6
    assert cells["lite_bn"]["paired_vs_lite_plain"]["runs"]["pairs"] == 6
    assert cells["large_plain"]["ua"]["mean"] == pytest.approx(0.55)
    assert cells["large_plain"]["suffix"] == "_e60_lr0.0003"
    assert "paired_vs_lite_plain" not in cells["lite_plain"]
    printed = capsys.readouterr().out
    assert "| Conformer, lite + BN | 7 | 0.4000 ± 0.000 |" in printed
    assert "6 (partial: 6 of 12 planned)" in printed
    assert "+3.0 (6/6 runs, p " in printed and "6/0 groups, p 0.03)" in printed
    assert json.loads((tmp_path / "table.json").read_text())["partial"] is True
    # Against the large model on the same runs (0.55): lite + HRF is 12 pairs
    # of +0.05 and -0.09 (-2.0 points), not within a point; a lite model at 0.545
    # would be.
    against_large = hrf["paired_vs_large_plain"]["runs"]
    assert against_large["pairs"] == 12
    assert against_large["mean_difference"] == pytest.approx(-0.02)
    assert "| Conformer, lite + HRF r=4 | -2.0 (6/6 runs): not comparable |" in printed
    assert "| Conformer, lite | -5.0 (0/12 runs): not comparable |" in printed
    assert "paired_vs_large_plain" not in cells["large_plain"]
    # Pooled over architectures: a second architecture's pairs join the Conformer's.
    for g in folds:
        write("lite_plain", "_e40", 0, g, 0.5, model="speechformer")
        write("lite_hrf4", "_e40", 0, g, 0.49, model="speechformer")
    both = table.main(["--corpora", "ravdess", "--models", "conformer", "speechformer",
                       "--configs", "lite_plain", "lite_hrf4", "--results", str(tmp_path),
                       "--output", str(tmp_path / "both.json")])
    hrf_pooled = both["pooled"]["lite_plain"]["lite_hrf4"]
    assert list(hrf_pooled) == ["ravdess"]  # one corpus: no separate "all" row
    assert hrf_pooled["ravdess"]["pairs"] == 18
    assert (hrf_pooled["ravdess"]["wins"], hrf_pooled["ravdess"]["losses"]) == (6, 12)
    assert hrf_pooled["ravdess"]["mean_difference"] == pytest.approx((0.6 - 0.04 * 6 - 0.06) / 18)
    assert "| lite + HRF r=4 | RAVDESS | 18 |" in capsys.readouterr().out
    # Against large (here the lite recipe's large runs, seed 0, 0.1): only the
    # Conformer has them.
    assert both["pooled"]["large_plain"]["lite_hrf4"]["ravdess"]["pairs"] == 6
    # A row measured on RAVDESS only: its parameter count says whose it is (the
    # classifier follows the corpus's classes).
    report["corpora"] = ["emodb", "ravdess"]
    report["table"]["emodb"] = {"conformer": {c: {"runs": 0} for c in report["configs"]}}
    report["baselines"]["emodb"] = report["baselines"]["ravdess"]
    report["folds"]["emodb"] = report["folds"]["ravdess"]
    assert "| Conformer, lite + BN | 7 (RAVDESS) | not measured |" in table.markdown(report)
    with pytest.raises(SystemExit):  # a suffix without its epochs would match nothing
        table.parse_args(["--suffix", "large_plain=_lr0.0003"])
    # One architecture's large model on a recipe of its own (model options in its
    # name); the other keeps the configuration's suffix.
    for g in folds:
        write("large_plain", "_e60_lr0.0003", 0, g, 0.05, model="speechformer")
        write("large_plain", "_e40_lr0.0003_headdropout0", 0, g, 0.45, model="speechformer")
    own = table.main(["--corpora", "ravdess", "--models", "conformer", "speechformer",
                      "--configs", "lite_plain", "large_plain",
                      "--suffix", "large_plain=_e60_lr0.0003",
                      "--suffix", "speechformer:large_plain=_e40_lr0.0003_headdropout0",
                      "--results", str(tmp_path), "--output", str(tmp_path / "own.json")])
    speechformer_large = own["table"]["ravdess"]["speechformer"]["large_plain"]
    assert speechformer_large["suffix"] == "_e40_lr0.0003_headdropout0"
    assert speechformer_large["ua"]["mean"] == pytest.approx(0.45)
    assert own["table"]["ravdess"]["conformer"]["large_plain"]["suffix"] == "_e60_lr0.0003"
    # The speechformer lite (0.5) paired with its own large runs: +5.0, not +45.
    lite_against_large = own["table"]["ravdess"]["speechformer"]["lite_plain"]
    assert lite_against_large["paired_vs_large_plain"]["runs"]["mean_difference"] == \
        pytest.approx(0.05)
    with pytest.raises(SystemExit):  # not an architecture
        table.parse_args(["--suffix", "wav2vec:large_plain=_e40"])


def test_select_recipe_ranks_candidates_by_validation_and_never_reads_test_scores(
        tmp_path, capsys):
    import json

    select = _load("select_recipe")
    runs = tmp_path / "accuracy" / "ravdess" / "runs"
    runs.mkdir(parents=True)

    def write(suffix, seed, group, best, last, test_ua):
        (runs / f"ravdess_conformer_large_plain{suffix}_seed{seed}_fold{group}.json").write_text(
            json.dumps({"best_val_ua": best, "ua": test_ua,
                        "history": {"val_ua": [0.1] * 10 + [last] * 5}}))

    # The short recipe peaks highest once; the long one holds up at the end.
    write("_e40", 0, "1", best=0.80, last=0.50, test_ua=0.123456)
    write("_e60_lr0.0003", 0, "1", best=0.75, last=0.70, test_ua=0.654321)
    write("_e60_lr0.0003", 1, "1", best=0.99, last=0.99, test_ua=0.01)  # seed 1: not compared
    write("_e40", 0, "2", best=0.99, last=0.99, test_ua=0.99)  # not a tuning fold
    common = ["--corpus", "ravdess", "--config", "large_plain", "--results", str(tmp_path),
              "--candidates", "_e40", "_e60_lr0.0003", "_e80"]
    report = select.main(common)
    assert report["chosen"] == "_e40"
    assert report["candidates"]["_e60_lr0.0003"]["runs"] == 1
    assert report["candidates"]["_e60_lr0.0003"]["best"] == pytest.approx(0.75)
    assert report["missing"] == ["_e80"]
    assert select.main(common + ["--by", "last5"])["chosen"] == "_e60_lr0.0003"
    # `--folds 1 2` as --seeds and --configs are written: fold 2's run counts too.
    assert select.main(common + ["--folds", "1", "2"])["candidates"]["_e40"]["runs"] == 2
    assert _load("accuracy").parse_args(["--folds", "1", "2"]).folds == ["1", "2"]
    written = (tmp_path / "accuracy" / "ravdess" / "selection_conformer_large_plain.json")
    assert "0.123456" not in written.read_text() and "0.654321" not in written.read_text()
    assert "_e80                           no runs yet" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no runs of conformer large_plain"):
        select.main(common[:-3] + ["_e99"])


def test_compare_names_a_missing_baseline(tmp_path):
    compare = _load("compare")
    with pytest.raises(SystemExit, match=r"no classic baseline at .*emodb\.json.*baseline\.py"):
        compare.main(["--results", str(tmp_path)])


def test_utterance_cut_counts_speech_past_the_cut_and_the_padded_frames_it_saves():
    cut = _load("utterance_cut")
    rate = 16000
    time = np.arange(5 * rate) / rate
    tone = np.sin(2 * np.pi * 200 * time).astype("float32")
    speech_then_silence = np.where(time < 2.0, tone, 0.0).astype("float32")
    assert cut.speech_past(speech_then_silence, rate, 4.0) == (100, 0)
    speech_at_the_end = np.where(time >= 4.5, tone, 1e-4 * tone).astype("float32")
    past, speech = cut.speech_past(speech_at_the_end, rate, 4.0)
    assert past == 100 and speech == 50

    # Two 1.5 s clips and one 4.5 s clip in batches of 3: 3 x 500 frames uncut,
    # 3 x 400 cut at 4 s (training pads to whole seconds).
    lengths = [150, 150, 450]
    assert cut.padded_frames(lengths, None, batch_size=3, epochs=2) == 1500
    assert cut.padded_frames(lengths, 400, batch_size=3, epochs=2) == 1200


def test_scale_memory_limit_stops_a_run_that_outgrows_it(tmp_path, monkeypatch):
    import sys

    monkeypatch.syspath_prepend(BENCHMARKS)  # as when run as a script: it imports report.py
    scale = _load("scale")
    paths, lengths = scale.write_store(str(tmp_path / "store"), gib=0.002)
    assert len(paths) == len(lengths) > 0
    assert all(np.load(p).shape == (n, 80) for p, n in zip(paths, lengths))
    grow = ("import json, numpy; x = numpy.ones(2**28 // 8); "  # 256 MiB, touched
            "print(json.dumps({'held_gib': x.nbytes / 2**30}))")
    row, peak, stopped, _ = scale.run_under_limit([sys.executable, "-c", grow], dict(os.environ),
                                                  limit_gib=0.1)
    assert stopped and row is None and peak > 0.1
    row, peak, stopped, _ = scale.run_under_limit([sys.executable, "-c", grow], dict(os.environ),
                                                  limit_gib=4.0)
    assert not stopped and row == {"held_gib": 0.25} and peak < 4.0
