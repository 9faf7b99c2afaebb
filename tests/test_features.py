import os

import numpy as np
import pytest
from fixtures import write_tone

from keras_hrf.datasets import load_emodb
from keras_hrf.datasets import make_manifest
from keras_hrf.features import FeatureExtractor
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
