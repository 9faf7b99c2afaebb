"""EmoDB (Berlin Database of Emotional Speech) by its file-name scheme."""

import os
import re

from keras_hrf.datasets.manifest import DatasetError
from keras_hrf.datasets.manifest import make_manifest

# The 6th character of `SSTTTEV.wav` is the emotion (German initial).
EMODB_EMOTIONS = {
    "W": "anger",
    "L": "boredom",
    "E": "disgust",
    "A": "fear",
    "F": "happiness",
    "T": "sadness",
    "N": "neutral",
}
_NAME = re.compile(r"^(\d\d)([ab]\d\d)([WLEAFTN])([a-z])\.wav$")


def load_emodb(root):
    """A manifest of EmoDB: speaker = group = the two-digit speaker id, so that
    grouping by `group` gives the 10 leave-one-speaker-out folds.

    Args:
        root: The folder of `SSTTTEV.wav` files (e.g. `../shared/data/emodb/wav`),
            or its parent that holds `wav/`.
    """
    root = os.fspath(root)
    if os.path.isdir(os.path.join(root, "wav")):
        root = os.path.join(root, "wav")
    if not os.path.isdir(root):
        raise DatasetError(f"EmoDB folder not found: {root}")
    rows, other = [], []
    for name in sorted(os.listdir(root)):
        if not name.lower().endswith(".wav"):
            continue
        match = _NAME.match(name)
        if not match:
            other.append(name)
            continue
        speaker, _, emotion, _ = match.groups()
        rows.append(
            {"path": os.path.join(root, name), "label": EMODB_EMOTIONS[emotion],
             "speaker": speaker, "group": speaker}
        )
    if other:
        raise DatasetError(
            f"{len(other)} .wav file(s) in {root} do not follow EmoDB's SSTTTEV.wav "
            f"naming, e.g. {other[:5]}"
        )
    if not rows:
        raise DatasetError(f"No EmoDB .wav files in {root}")
    return make_manifest(rows)
