"""The shared recipe: folds, splits, normalization, the resumable checkpoint."""

import json

import keras
import numpy as np
import pandas as pd
import pytest

from keras_hrf import training
from keras_hrf.datasets import DatasetError


def _manifest(groups=("g1", "g2", "g3"), labels=("a", "b"), per_label=10):
    rows = []
    for group in groups:
        for label in labels:
            for k in range(per_label):
                rows.append({"path": f"{group}_{label}_{k}.wav", "label": label,
                             "speaker": group, "group": group, "split": ""})
    return pd.DataFrame(rows)


def test_folds_by_name_number_or_all():
    manifest = _manifest()
    assert training.choose_folds(manifest, None, synthetic=False) == ["g1", "g2", "g3"]
    assert training.choose_folds(manifest, None, synthetic=True) == ["g1"]
    assert training.choose_folds(manifest, "g3, 1", synthetic=False) == ["g3", "g1"]
    with pytest.raises(DatasetError, match=r"unknown group 'g9'"):
        training.choose_folds(manifest, "g9", synthetic=False)
    # `--folds 3 1` (nargs="+") and `--folds 3,1` mean the same.
    assert training.choose_folds(manifest, ["3", "1"], synthetic=False) == ["g3", "g1"]
    assert training.choose_folds(manifest, ["g3,g2", "1"], synthetic=False) == ["g3", "g2", "g1"]
    assert training.choose_folds(manifest, ["all"], synthetic=False) == ["g1", "g2", "g3"]
    spaced = _manifest(groups=("speaker a", "speaker b"))  # groups named from folders
    assert training.choose_folds(spaced, ["speaker b"], synthetic=False) == ["speaker b"]
    with pytest.raises(DatasetError, match=r"unknown group 'g9'"):
        training.choose_folds(manifest, ["1", "g9"], synthetic=False)
    with pytest.raises(DatasetError, match=r"at least two groups"):
        training.choose_folds(_manifest(groups=("only",)), None, synthetic=False)


def test_split_keeps_the_test_group_out_and_validates_every_class():
    manifest = _manifest()
    usable = list(range(len(manifest)))
    train, validation, test = training.split_rows(manifest, "g2", usable, seed=0)
    assert set(manifest["group"].iloc[test]) == {"g2"} and len(test) == 20
    assert not set(train) & set(validation)
    assert set(train) | set(validation) == set(usable) - set(test)
    assert sorted(manifest["label"].iloc[validation]) == ["a", "a", "b", "b"]


def test_official_splits_give_the_folds_and_the_training_rows(tmp_path):
    """MSP-Podcast's protocol: train on Train, select on Development, test each
    test set; a group that is not an official test set keeps the group
    cross-validation."""
    from fixtures import write_msp_podcast

    from keras_hrf.datasets import load_msp_podcast

    write_msp_podcast(str(tmp_path))
    manifest = load_msp_podcast(tmp_path)
    assert training.official_test_groups(manifest) == ["Test1", "Test2"]
    assert training.choose_folds(manifest, None, synthetic=False) == ["Test1", "Test2"]
    assert training.choose_folds(manifest, "Train", synthetic=False) == ["Train"]
    usable = list(range(len(manifest)))
    group = manifest["group"]
    train, validation, test = training.split_rows(manifest, "Test1", usable, seed=0)
    assert set(group.iloc[train]) == {"Train"} and len(train) == (group == "Train").sum()
    assert set(group.iloc[validation]) == {"Development"}
    assert set(group.iloc[test]) == {"Test1"}  # Test2 unused
    unusable = [i for i in usable if group.iat[i] != "Development"]
    train, validation, _ = training.split_rows(manifest, "Test1", unusable, seed=0)
    assert set(group.iloc[train + validation]) == {"Train"} and len(validation) == 4
    train, validation, test = training.split_rows(manifest, "Train", usable, seed=0)
    assert set(group.iloc[train + validation]) == {"Development", "Test1", "Test2"}
    # DAIC-WOZ names its validation split "dev"; no split column: no protocol.
    daic = manifest.assign(split=manifest["split"].replace("val", "dev"))
    assert set(daic["group"].iloc[training.split_rows(daic, "Test2", usable, 0)[1]]) == {
        "Development"}
    assert training.official_test_groups(_manifest()) == []


def test_prepare_fold_normalizes_with_training_rows_only():
    manifest = _manifest()
    rng = np.random.default_rng(0)
    # The test group is shifted: its statistics must not leak into the normalization.
    features = [rng.normal(size=(30, 4)).astype("float32") + (50.0 if g == "g3" else 0.0)
                for g in manifest["group"]]
    fold = training.prepare_fold(manifest, ["a", "b"], features, "g3",
                                 list(range(len(manifest))), seed=0, max_seconds=0.2)
    assert np.all(np.abs(fold.mean) < 0.5)
    assert all(len(x) == 20 for x in fold.inputs["train"])  # cut to 0.2 s
    assert np.all(np.concatenate(fold.inputs["test"]).mean(axis=0) > 30)
    x, y = next(iter(fold.batches("train", 8, shuffle=True)))
    assert tuple(x.shape) == (8, 100, 4) and tuple(y.shape) == (8,)


@pytest.mark.parametrize("normalize", ["train", "speaker"])
def test_a_fold_read_from_disk_equals_the_fold_in_memory(tmp_path, normalize):
    from keras_hrf.features import OnDiskFeatures

    manifest = _manifest()
    features = _speaker_features(manifest)
    paths = []
    for index, item in enumerate(features):
        paths.append(str(tmp_path / f"{index}.npy"))
        np.save(paths[-1], item)
    on_disk = OnDiskFeatures(paths, [len(item) for item in features])
    usable = list(range(len(manifest)))
    expected = training.prepare_fold(manifest, ["a", "b"], features, "g2", usable, seed=0,
                                     max_seconds=0.3, normalize=normalize)
    fold = training.prepare_fold(manifest, ["a", "b"], on_disk, "g2", usable, seed=0,
                                 max_seconds=0.3, normalize=normalize)
    np.testing.assert_array_equal(fold.mean, expected.mean)
    for part in ("train", "validation", "test"):
        assert fold.inputs[part].lengths.tolist() == [30] * len(fold.rows[part])
        np.testing.assert_array_equal(np.concatenate(fold.inputs[part]),
                                      np.concatenate(expected.inputs[part]))
    # The fold holds file names, not features: it reads them when a batch asks.
    for path in paths:
        np.save(path, np.zeros((50, 4), "float32"))
    assert not np.array_equal(np.concatenate(fold.inputs["test"]),
                              np.concatenate(expected.inputs["test"]))


def _speaker_features(manifest, seed=0):
    """Each speaker with its own loudness and spread (speaker = group here)."""
    rng = np.random.default_rng(seed)
    voice = {"g1": (10.0, 3.0), "g2": (-4.0, 0.5), "g3": (1.0, 1.0)}
    return [rng.normal(*voice[g], size=(50, 4)).astype("float32") for g in manifest["speaker"]]


def _frames_of(fold, manifest, speaker):
    return np.concatenate([x for part, rows in fold.rows.items()
                           for x, row in zip(fold.inputs[part], rows)
                           if manifest["speaker"].iat[row] == speaker])


def test_speaker_normalization_uses_each_speakers_own_statistics():
    manifest = _manifest()
    features = _speaker_features(manifest)
    usable = list(range(len(manifest)))
    fold = training.prepare_fold(manifest, ["a", "b"], features, "g2", usable, seed=0,
                                 max_seconds=4.0, normalize="speaker")
    assert fold.normalization == "speaker"
    for speaker in ("g1", "g2", "g3"):  # training speakers and the test speaker alike
        frames = _frames_of(fold, manifest, speaker)
        np.testing.assert_allclose(frames.mean(axis=0), 0.0, atol=1e-4)
        np.testing.assert_allclose(frames.std(axis=0), 1.0, atol=1e-3)
    # The same as standardizing each speaker's raw features directly.
    raw = np.concatenate([features[row] for row in fold.rows["test"]])
    np.testing.assert_allclose(np.concatenate(fold.inputs["test"]),
                               (raw - raw.mean(axis=0)) / raw.std(axis=0), atol=1e-4)
    # The default pools the training speakers, so the quiet test speaker stays far from 0.
    pooled = training.prepare_fold(manifest, ["a", "b"], features, "g2", usable, seed=0,
                                   max_seconds=4.0)
    assert pooled.normalization == "train"
    assert abs(float(np.concatenate(pooled.inputs["test"]).mean())) > 0.5


def test_speaker_normalization_groups_by_speaker_not_by_fold_group():
    # IEMOCAP: a fold (session) holds two speakers, each standardized on its own.
    manifest = _manifest()
    manifest["group"] = ["s1" if g in ("g1", "g2") else "s2" for g in manifest["speaker"]]
    features = _speaker_features(manifest)
    fold = training.prepare_fold(manifest, ["a", "b"], features, "s1",
                                 list(range(len(manifest))), seed=0, max_seconds=4.0,
                                 normalize="speaker")
    for speaker in ("g1", "g2"):
        np.testing.assert_allclose(_frames_of(fold, manifest, speaker).mean(axis=0), 0.0,
                                   atol=1e-4)


def test_speaker_normalization_names_a_row_without_a_speaker():
    manifest = _manifest()
    manifest.loc[[3, 7], "speaker"] = ""
    features = _speaker_features(_manifest())
    usable = list(range(len(manifest)))
    with pytest.raises(DatasetError, match=r"2 have none, the first g1_a_3\.wav \(row 3\)"):
        training.prepare_fold(manifest, ["a", "b"], features, "g2", usable, seed=0,
                              max_seconds=4.0, normalize="speaker")
    with pytest.raises(ValueError, match=r"normalize='global'; choose one of \['train', 'speaker'\]"):
        training.prepare_fold(manifest, ["a", "b"], features, "g2", usable, seed=0,
                              max_seconds=4.0, normalize="global")


def test_a_run_recorded_before_normalize_existed_resumes_with_the_default(tmp_path):
    (tmp_path / "run_settings.json").write_text(json.dumps({"model": "conformer"}))
    training.check_run_settings(str(tmp_path), {"model": "conformer", "normalize": "train"})
    with pytest.raises(SystemExit, match=r"normalize: 'train' then, 'speaker' now"):
        training.check_run_settings(str(tmp_path), {"model": "conformer", "normalize": "speaker"})


def test_unknown_model_name_is_listed():
    with pytest.raises(ValueError, match=r"Unknown model 'bert'.*conformer"):
        training.model_class("bert")


def _tiny_model():
    inputs = keras.Input((3,))
    return keras.Model(inputs, keras.layers.Dense(2)(inputs))


def test_best_weights_checkpoint_keeps_the_best_and_resumes_with_it(tmp_path):
    path = tmp_path / "best.weights.h5"
    model = _tiny_model()
    checkpoint = training.BestWeightsCheckpoint(path, monitor="val_ua", mode="max")
    checkpoint.set_model(model)
    checkpoint.on_epoch_end(0, {"val_ua": 0.5})
    saved = [w.copy() for w in model.get_weights()]
    model.set_weights([w + 1.0 for w in saved])
    checkpoint.on_epoch_end(1, {"val_ua": 0.4})  # worse: the file keeps epoch 1
    assert json.loads((tmp_path / "best.weights.h5.json").read_text())["epoch"] == 1

    resumed = training.BestWeightsCheckpoint(path, monitor="val_ua", mode="max", resume=True)
    assert (resumed.best, resumed.best_epoch) == (0.5, 1)
    resumed.set_model(model)
    resumed.on_epoch_end(2, {"val_ua": 0.45})  # better than nothing, not than 0.5
    fresh = _tiny_model()
    fresh.load_weights(str(path))
    for a, b in zip(fresh.get_weights(), saved):
        np.testing.assert_array_equal(a, b)
    resumed.on_epoch_end(3, {"val_ua": 0.75})
    assert json.loads((tmp_path / "best.weights.h5.json").read_text())["value"] == 0.75
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]

    with pytest.raises(KeyError, match=r"'val_ua' is not among the logged metrics \['loss'\]"):
        resumed.on_epoch_end(4, {"loss": 1.0})


def test_epoch_log_keeps_every_epoch_across_a_resume_and_replaces_one_trained_again(tmp_path):
    path = tmp_path / "epochs.json"
    log = training.EpochLog(path)
    log.on_train_begin()
    for epoch in range(3):
        log.on_epoch_begin(epoch)
        log.on_epoch_end(epoch, {"loss": 1.0 - epoch / 10})
    # The process died after epoch 3 was logged but before it was backed up,
    # so the resumed fit trains epoch 3 again.
    resumed = training.EpochLog(path, resume=True)
    resumed.on_train_begin()
    for epoch, loss in ((2, 0.5), (3, 0.4)):
        resumed.on_epoch_begin(epoch)
        resumed.on_epoch_end(epoch, {"loss": loss})
    assert resumed.history(["loss", "val_ua"]) == {"loss": [1.0, 0.9, 0.5, 0.4]}
    assert resumed.resumed_at == [3]
    assert resumed.seconds == pytest.approx(sum(e["seconds"] for e in resumed.entries))
    stored = json.loads(path.read_text())
    assert [e["epoch"] for e in stored["epochs"]] == [1, 2, 3, 4] and stored["resumed_at"] == [3]
    assert training.EpochLog(path).entries == []  # a fresh run starts its own log


def test_default_learning_rate_per_model():
    # The lite SpeechFormer learns at 1e-3 with one layer per stage (RESULTS.md).
    assert training.default_learning_rate("speechformer") == 1e-3
    assert training.default_learning_rate("conformer") == 1e-3
    assert set(training.DEFAULT_LEARNING_RATES) == set(training.MODELS)
    # The large models' rate, tuned on RAVDESS fold 1's validation (RESULTS.md).
    assert training.default_learning_rate("speechformer", "large") == 3e-4
    assert set(training.LARGE_LEARNING_RATES) == set(training.MODELS)
    with pytest.raises(ValueError, match=r"Unknown model 'wavenet'"):
        training.default_learning_rate("wavenet")
    with pytest.raises(ValueError, match=r"Unknown size 'huge'"):
        training.default_learning_rate("conformer", "huge")
