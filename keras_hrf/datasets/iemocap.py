"""IEMOCAP from its release layout (`IEMOCAP_full_release/SessionN/...`)."""

import os
import re

from keras_hrf.datasets.manifest import DatasetError
from keras_hrf.datasets.manifest import check_files_exist
from keras_hrf.datasets.manifest import make_manifest

# Category code -> class. The standard 4-class protocol merges excited into
# happy: 5,531 utterances on the full release (1708 / 1636 / 1103 / 1084).
IEMOCAP_CLASS_SETS = {
    "4": {"neu": "neutral", "hap": "happy", "exc": "happy", "ang": "angry", "sad": "sad"},
    "6": {"neu": "neutral", "hap": "happy", "exc": "happy", "ang": "angry", "sad": "sad",
          "fru": "frustrated"},
}
# `[140.2250 - 145.6000]\tSes01F_impro05_F019\tang\t[1.5000, 4.0000, 4.5000]`
_UTTERANCE = re.compile(
    r"^\[(\d+(?:\.\d+)?) - (\d+(?:\.\d+)?)\]\t(Ses0[1-5][FM]_\S+_([FM])\d+)\t(\w+)\t\[[^\]]*\]\s*$"
)


def load_iemocap(root, classes="4", sessions=(1, 2, 3, 4, 5)):
    """A manifest of IEMOCAP utterances: group = "SessionN" (leave-one-session-out
    folds), speaker = e.g. "Ses01F".

    Args:
        root: `IEMOCAP_full_release` (the folder that holds `Session1` ...).
        classes: `"4"` (neutral, happy = hap + exc, angry, sad), `"6"` (adds
            frustrated), or a dict mapping category codes to class names.
        sessions: The sessions to read.

    Utterances whose category is outside `classes` (xxx, oth, ...) are left
    out and counted in `manifest.attrs["excluded"]`.
    """
    root = os.fspath(root)
    class_map = IEMOCAP_CLASS_SETS.get(classes) if isinstance(classes, str) else dict(classes)
    if not class_map:
        raise DatasetError(
            f"Unknown IEMOCAP class set classes={classes!r}: use one of "
            f"{sorted(IEMOCAP_CLASS_SETS)} or a dict of category code -> class"
        )
    if not os.path.isdir(root):
        raise DatasetError(f"IEMOCAP root not found: {root}")
    rows, excluded = [], {}
    for session in sessions:
        label_dir = os.path.join(root, f"Session{session}", "dialog", "EmoEvaluation")
        if not os.path.isdir(label_dir):
            raise DatasetError(
                f"IEMOCAP root {root} lacks Session{session}: expected the label "
                f"folder {label_dir}"
            )
        label_files = sorted(
            f for f in os.listdir(label_dir)
            if f.endswith(".txt") and os.path.isfile(os.path.join(label_dir, f))
        )
        if not label_files:
            raise DatasetError(f"No label files (*.txt) in {label_dir}")
        for name in label_files:
            for utterance, gender, code in _utterances(os.path.join(label_dir, name)):
                if code not in class_map:
                    excluded[f"label {code}"] = excluded.get(f"label {code}", 0) + 1
                    continue
                dialog = utterance.rsplit("_", 1)[0]
                rows.append({
                    "path": os.path.join(root, f"Session{session}", "sentences", "wav",
                                         dialog, utterance + ".wav"),
                    "label": class_map[code],
                    "speaker": utterance[:5] + gender,
                    "group": f"Session{session}",
                })
    check_files_exist([row["path"] for row in rows], f"the IEMOCAP labels under {root}")
    return make_manifest(rows, excluded)


def _utterances(path):
    """(utterance id, gender, category) of each utterance line of a label file.

    Only lines that start with `[` are utterances; the header and annotator
    lines (`C-E1:`, `A-E3:`) are skipped. A line that starts with `[` but does
    not parse is an error naming the file and line.
    """
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.startswith("["):
                continue
            match = _UTTERANCE.match(line.rstrip("\r\n"))
            if not match:
                raise DatasetError(
                    f"{path}:{number}: malformed utterance line {line.rstrip()!r}; "
                    "expected '[start - end]<TAB>utterance id<TAB>category<TAB>[v, a, d]'"
                )
            _, _, utterance, gender, code = match.groups()
            yield utterance, gender, code
