import hashlib
import os

import numpy as np
import soundfile

from keras_hrf.datasets import MANIFEST_COLUMNS
from keras_hrf.datasets.demo import DEMO_CLASSES
from keras_hrf.datasets.demo import DEMO_NOTICE
from keras_hrf.datasets.demo import make_demo_corpus


def _digest(paths):
    return [hashlib.sha1(open(p, "rb").read()).hexdigest() for p in paths]


def test_demo_corpus_is_deterministic_and_balanced(tmp_path):
    first = make_demo_corpus(str(tmp_path / "a"), clips_per_class=6, speakers=3)
    second = make_demo_corpus(str(tmp_path / "b"), clips_per_class=6, speakers=3)
    assert list(first.columns) == list(MANIFEST_COLUMNS)
    assert first["label"].value_counts().to_dict() == {c: 6 for c in DEMO_CLASSES}
    assert sorted(first["group"].unique()) == ["spk00", "spk01", "spk02"]
    assert _digest(first["path"]) == _digest(second["path"])
    other_seed = make_demo_corpus(str(tmp_path / "c"), clips_per_class=6, speakers=3, seed=1)
    assert _digest(first["path"]) != _digest(other_seed["path"])
    assert "SYNTHETIC" in DEMO_NOTICE


def test_demo_classes_differ_in_prosody(tmp_path):
    manifest = make_demo_corpus(str(tmp_path), clips_per_class=6, speakers=3)
    energy = {}
    for label in DEMO_CLASSES:
        clips = [soundfile.read(p)[0] for p in manifest[manifest["label"] == label]["path"]]
        assert all(len(c) == 32000 and np.all(np.isfinite(c)) for c in clips)
        energy[label] = np.mean([np.sqrt(np.mean(c**2)) for c in clips])
    assert energy["sad"] < energy["neutral"] < energy["happy"] < energy["angry"]


def test_existing_files_are_kept(tmp_path):
    manifest = make_demo_corpus(str(tmp_path), clips_per_class=4, speakers=2)
    path = manifest["path"][0]
    before = os.path.getmtime(path)
    make_demo_corpus(str(tmp_path), clips_per_class=4, speakers=2)
    assert os.path.getmtime(path) == before
