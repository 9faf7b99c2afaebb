import os

import numpy as np
import pytest
from fixtures import write_tone

from keras_hrf.datasets import load_emodb
from keras_hrf.datasets import make_manifest
from keras_hrf.features import FeatureExtractor
from keras_hrf.features import FeatureView
from keras_hrf.features import OnDiskFeatures
from keras_hrf.features import PaddedBatches
from keras_hrf.features import fit_normalization
from keras_hrf.features import normalize
from keras_hrf.features import pad_batch

EMODB = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "shared", "data", "emodb")


@pytest.mark.skipif(not os.path.isdir(EMODB), reason="../shared/data/emodb is not beside the project")
def test_real_emodb_features_have_the_expected_shape(tmp_path):
    manifest = load_emodb(EMODB).iloc[:4]
    extractor = FeatureExtractor(cache_dir=str(tmp_path / "cache"))
    features, skipped = extractor.extract(manifest, progress=False)
    assert skipped == []
    for item in features:
        assert item.shape == (201, 80)  # 2.000 s at a 10 ms hop, centred frames
        assert item.dtype == np.float32 and np.all(np.isfinite(item))
    # Speech has more energy in some frames than in others.
    assert features[0].max(axis=1).std() > 1.0


def test_cache_is_used_and_keyed_by_settings(tmp_path):
    write_tone(str(tmp_path / "a.wav"), seconds=0.3)
    manifest = make_manifest([{"path": str(tmp_path / "a.wav"), "label": "x"}])
    cache = str(tmp_path / "cache")
    first, _ = FeatureExtractor(cache_dir=cache).extract(manifest, progress=False)
    files = [os.path.join(d, f) for d, _, fs in os.walk(cache) for f in fs]
    assert len(files) == 1 and files[0].endswith(".npy")
    # A tampered cache entry is what comes back: proof that it was read.
    np.save(files[0], first[0] + 1.0)
    again, _ = FeatureExtractor(cache_dir=cache).extract(manifest, progress=False)
    np.testing.assert_allclose(again[0], first[0] + 1.0)
    other, _ = FeatureExtractor(num_mel_bins=40, cache_dir=cache).extract(manifest, progress=False)
    assert other[0].shape[1] == 40


def test_unreadable_clips_are_reported_not_dropped(tmp_path):
    write_tone(str(tmp_path / "good.wav"), seconds=0.3)
    (tmp_path / "bad.wav").write_bytes(b"not audio at all")
    manifest = make_manifest([
        {"path": str(tmp_path / "good.wav"), "label": "x"},
        {"path": str(tmp_path / "bad.wav"), "label": "y"},
    ])
    features, skipped = FeatureExtractor().extract(manifest, progress=False)
    assert features[0] is not None and features[1] is None
    assert [(i, os.path.basename(p)) for i, p, _ in skipped] == [(1, "bad.wav")]
    assert "bad.wav" in skipped[0][2]


def test_normalization_uses_the_given_fold_and_padding_is_zero():
    rng = np.random.default_rng(0)
    train = [rng.normal(3.0, 2.0, size=(n, 4)).astype("float32") for n in (50, 70)]
    mean, std = fit_normalization(train)
    np.testing.assert_allclose(mean, np.concatenate(train).mean(0), rtol=1e-5)
    normalized = [normalize(f, mean, std) for f in train]
    assert abs(np.concatenate(normalized).mean()) < 1e-5
    batch = pad_batch(normalized)
    assert batch.shape == (2, 70, 4)
    assert np.all(batch[0, 50:] == 0.0) and np.all(batch[0, :50] == normalized[0])
    assert pad_batch(normalized, max_frames=60).shape == (2, 60, 4)


def test_padded_batches_round_lengths_up_and_keep_labels():
    items = [np.ones((n, 3), "float32") for n in (30, 130, 250, 90)]
    batches = PaddedBatches(items, labels=[0, 1, 2, 3], batch_size=2, frame_multiple=100)
    assert len(batches) == 2
    x, y = batches[0]
    assert x.shape == (2, 200, 3) and y.tolist() == [0, 1]
    assert np.all(x[0, 30:] == 0) and np.all(x[0, :30] == 1)
    x, _ = batches[1]
    assert x.shape == (2, 300, 3)
    cut = PaddedBatches(items, batch_size=4, max_frames=120, frame_multiple=None)
    (x,) = cut[0]
    assert x.shape == (4, 120, 3)
    # Cut at max_frames, then padded to the multiple: frames past the cut stay zero.
    (x,) = PaddedBatches(items, batch_size=4, max_frames=150, frame_multiple=100)[0]
    assert x.shape == (4, 200, 3)
    assert np.all(x[2, :150] == 1) and np.all(x[2, 150:] == 0)


def test_shuffled_batches_are_full_and_cover_every_utterance():
    items = [np.full((10, 2), i, "float32") for i in range(7)]
    batches = PaddedBatches(items, labels=list(range(7)), batch_size=3, shuffle=True,
                            frame_multiple=None)
    seen = []
    for index in range(len(batches)):
        x, y = batches[index]
        assert x.shape == (3, 10, 2)
        assert np.all(x[:, 0, 0] == y)  # features and labels stay paired
        seen += y.tolist()
    assert set(seen) == set(range(7)) and len(seen) == 9


def _tone_manifest(folder, seconds):
    rows = []
    for index, length in enumerate(seconds):
        path = str(folder / f"clip{index}.wav")
        write_tone(path, seconds=length, frequency=200.0 + 50 * index)
        rows.append({"path": path, "label": "x"})
    return make_manifest(rows)


def test_features_kept_on_disk_are_read_when_asked_for(tmp_path):
    manifest = _tone_manifest(tmp_path, [0.3, 0.5, 0.2])
    in_memory, _ = FeatureExtractor().extract(manifest, progress=False)
    cache = str(tmp_path / "cache")
    on_disk, skipped = FeatureExtractor(cache_dir=cache).extract(manifest, progress=False,
                                                                 in_memory=False)
    assert skipped == [] and isinstance(on_disk, OnDiskFeatures) and len(on_disk) == 3
    assert on_disk.lengths.tolist() == [len(item) for item in in_memory]
    for item, expected in zip(on_disk, in_memory):
        np.testing.assert_allclose(item, expected, atol=1e-6)
    # Nothing is held: a cache file changed after extraction is what is read.
    np.save(on_disk.paths[1], in_memory[1] + 1.0)
    np.testing.assert_allclose(on_disk[1], in_memory[1] + 1.0, atol=1e-6)
    # A second extraction finds the files and reads only their headers for the lengths.
    again, _ = FeatureExtractor(cache_dir=cache).extract(manifest, progress=False, in_memory=False)
    assert again.paths == on_disk.paths and again.lengths.tolist() == on_disk.lengths.tolist()
    with pytest.raises(ValueError, match="cache_dir"):
        FeatureExtractor().extract(manifest, progress=False, in_memory=False)


def test_unreadable_clips_on_disk_are_reported_too(tmp_path):
    write_tone(str(tmp_path / "good.wav"), seconds=0.3)
    (tmp_path / "bad.wav").write_bytes(b"not audio at all")
    manifest = make_manifest([{"path": str(tmp_path / "bad.wav"), "label": "y"},
                              {"path": str(tmp_path / "good.wav"), "label": "x"}])
    features, skipped = FeatureExtractor(cache_dir=str(tmp_path / "c")).extract(
        manifest, progress=False, in_memory=False)
    assert features[0] is None and features[1].shape[0] == features.lengths[1] > 0
    assert [i for i, _, _ in skipped] == [0]


def test_normalization_statistics_streamed_match_numpys():
    rng = np.random.default_rng(1)
    # Far from zero and of different lengths: the streamed update must not drift.
    items = [rng.normal(200.0, 0.5, size=(n, 3)).astype("float32") for n in (1, 7, 400, 33)]
    mean, std = fit_normalization(iter(items + [None]))  # one at a time, a skipped row
    frames = np.concatenate(items).astype(np.float64)
    np.testing.assert_allclose(mean, frames.mean(axis=0), rtol=1e-7)
    np.testing.assert_allclose(std, frames.std(axis=0), rtol=1e-5)
    with pytest.raises(ValueError, match="at least one frame"):
        fit_normalization([None])


def test_feature_view_cuts_and_normalizes_when_read():
    rng = np.random.default_rng(0)
    items = [rng.normal(size=(n, 2)).astype("float32") for n in (5, 12, 9)]
    mean, std = np.array([1.0, -1.0], "float32"), np.array([2.0, 4.0], "float32")
    view = FeatureView(items, [2, 0], mean, std, max_frames=8)
    assert len(view) == 2 and view.lengths.tolist() == [8, 5]
    np.testing.assert_allclose(view[0], (items[2][:8] - mean) / std)
    view.affine[1] = (np.float32(0.5), np.float32(2.0))
    np.testing.assert_allclose(view[1], ((items[0] - mean) / std - 0.5) / 2.0, rtol=1e-6)


def _lengths_items(count=64, seed=0):
    rng = np.random.default_rng(seed)
    return [np.full((n, 2), 1.0, "float32") for n in rng.integers(20, 400, size=count)]


def test_length_window_groups_similar_lengths_and_still_covers_every_utterance():
    items = _lengths_items()
    labels = np.arange(len(items))
    plain = PaddedBatches(items, labels, batch_size=8, shuffle=True, frame_multiple=1)
    grouped = PaddedBatches(items, labels, batch_size=8, shuffle=True, frame_multiple=1,
                            length_window=4)
    for _ in range(3):  # every epoch: each utterance once, batches full
        seen = np.concatenate([grouped[i][1] for i in range(len(grouped))])
        assert sorted(seen.tolist()) == labels.tolist()
        assert grouped.padding_fraction() < plain.padding_fraction() / 2
        grouped.on_epoch_end()
        plain.on_epoch_end()
    # padding_fraction counts what the batches really hold.
    padded = sum(grouped[i][0].shape[0] * grouped[i][0].shape[1] for i in range(len(grouped)))
    real = sum(len(item) for item in items)
    assert grouped.padding_fraction() == pytest.approx(1 - real / padded)
    # Not the same batches every epoch, and the same ones for the same seed.
    again = PaddedBatches(items, labels, batch_size=8, shuffle=True, frame_multiple=1,
                          length_window=4)
    assert again[0][1].tolist() != grouped[0][1].tolist()
    first = PaddedBatches(items, labels, batch_size=8, shuffle=True, length_window=4)
    assert [first[i][1].tolist() for i in range(8)] == [again[i][1].tolist() for i in range(8)]
    with pytest.raises(ValueError, match="length_window"):
        PaddedBatches(items, labels, batch_size=8, length_window=4)  # not shuffled
    with pytest.raises(ValueError, match="length_window"):
        PaddedBatches(items, labels, batch_size=8, shuffle=True, length_window=0)


def test_reading_ahead_trains_exactly_as_reading_in_turn():
    import keras

    items = _lengths_items(count=24, seed=2)
    rng = np.random.default_rng(3)
    items = [item * rng.normal(size=(1, 2)).astype("float32") for item in items]
    labels = np.arange(len(items)) % 3

    def trained_weights(read_ahead):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((None, 2)), keras.layers.GlobalAveragePooling1D(),
                                  keras.layers.Dense(3)])
        model.compile(keras.optimizers.SGD(0.1),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        batches = PaddedBatches(items, labels, batch_size=4, shuffle=True, length_window=2,
                                read_ahead=read_ahead)
        model.fit(batches.for_keras(), epochs=2, shuffle=False, verbose=0)
        return [np.asarray(w) for w in model.get_weights()]

    for one, many in zip(trained_weights(0), trained_weights(3)):
        np.testing.assert_allclose(one, many, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="read_ahead"):
        PaddedBatches(items, labels, workers=2)
    with pytest.raises(ValueError, match="read_ahead"):
        PaddedBatches(items, labels, read_ahead=-1)


def test_each_process_takes_its_share_of_every_global_batch_padded_alike():
    items = _lengths_items(count=21, seed=4)
    labels = np.arange(len(items))
    whole = PaddedBatches(items, labels, batch_size=8, batch_multiple=4)
    shares = [PaddedBatches(items, labels, batch_size=8, batch_multiple=4, process_index=i,
                            process_count=2) for i in range(2)]
    assert len(shares[0]) == len(shares[1]) == len(whole) == 3
    for index in range(len(whole)):
        x, y, w = whole[index]
        parts = [share[index] for share in shares]
        assert [p[0].shape for p in parts] == [(len(y) // 2,) + x.shape[1:]] * 2  # same length
        np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), x)
        np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), y)
        np.testing.assert_array_equal(np.concatenate([p[2] for p in parts]), w)
    # The last batch holds 5 utterances, topped up to 8: the second process's share
    # is 1 utterance and 3 weight-0 repeats.
    assert shares[1][2][2].tolist() == [1, 0, 0, 0]
    uneven = PaddedBatches(items, labels, batch_size=8, process_index=0, process_count=2)
    with pytest.raises(ValueError, match="5 rows, which do not divide over 2 processes"):
        uneven[2]
    with pytest.raises(ValueError, match="process_index=2"):
        PaddedBatches(items, labels, process_index=2, process_count=2)
