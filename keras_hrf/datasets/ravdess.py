"""RAVDESS speech (Livingstone & Russo, 2018) by the release's file names."""

import os
import re

from keras_hrf.datasets.manifest import DatasetError
from keras_hrf.datasets.manifest import make_manifest

# `MM-VV-EE-II-SS-RR-AA`: the third field is the emotion.
RAVDESS_EMOTIONS = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fearful",
    "07": "disgust",
    "08": "surprised",
}
# Modality 03 (audio only) and vocal channel 01 (speech); song is channel 02.
_NAME = re.compile(r"^03-01-(0[1-8])-(0[12])-(0[12])-(0[12])-(\d\d)\.(wav|flac)$", re.IGNORECASE)
_SONG = re.compile(r"^03-02-\d\d-\d\d-\d\d-\d\d-\d\d\.(wav|flac)$", re.IGNORECASE)


def ravdess_fold(actor, folds=4):
    """The speaker-disjoint fold of an actor (1-based): `((actor - 1) // 2) mod
    folds + 1`. Actors come in pairs, odd male and even female, so with 4
    folds each holds 6 actors, 3 men and 3 women."""
    return (actor - 1) // 2 % folds + 1


def load_ravdess(root, folds=4):
    """A manifest of RAVDESS speech: 8 emotions, speaker = the actor.

    Args:
        root: A folder holding the `Actor_NN/` folders (the release's
            `Audio_Speech_Actors_01-24/`, or `../shared/data/ravdess/flac`), or
            a parent of one named `flac` or `wav`. Files are `.wav` or `.flac`
            with the release's names, `03-01-EE-II-SS-RR-AA`.
        folds: `group` is the fold `"1"` .. `"N"` of `ravdess_fold`
            (4: the 4 speaker-disjoint folds of 6 actors); None: the actor
            (leave-one-actor-out, 24 folds).

    Song files (`03-02-...`, the song release unpacked into the same folders)
    are left out and counted in `attrs["excluded"]`.

    Raises:
        DatasetError: no such folder, no clip, a file whose name is not the
            release's, or one filed under another actor's folder.
    """
    root = os.fspath(root)
    for child in ("flac", "wav"):
        if not _actor_folders(root) and os.path.isdir(os.path.join(root, child)):
            root = os.path.join(root, child)
    if not os.path.isdir(root):
        raise DatasetError(f"RAVDESS folder not found: {root}")
    if folds is not None and (not isinstance(folds, int) or folds < 2):
        raise DatasetError(f"load_ravdess: folds must be an integer >= 2 or None, "
                           f"received folds={folds!r}")
    rows, foreign, songs = [], [], 0
    for folder in _actor_folders(root):
        for name in sorted(os.listdir(os.path.join(root, folder))):
            path = os.path.join(root, folder, name)
            if not name.lower().endswith((".wav", ".flac")):
                continue
            match = _NAME.match(name)
            if not match and _SONG.match(name):
                songs += 1  # the song release in the same folders: not speech
                continue
            if not match:
                foreign.append(os.path.join(folder, name))
                continue
            emotion, _, _, _, actor = match.groups()[:5]
            if folder != f"Actor_{actor}":
                raise DatasetError(f"{path}: the name says actor {actor}, the folder {folder}")
            speaker = f"actor{actor}"
            group = speaker if folds is None else str(ravdess_fold(int(actor), folds))
            rows.append({"path": path, "label": RAVDESS_EMOTIONS[emotion],
                         "speaker": speaker, "group": group})
    if foreign:
        raise DatasetError(
            f"{len(foreign)} audio file(s) under {root} do not follow RAVDESS speech's "
            f"03-01-EE-II-SS-RR-AA naming, e.g. {foreign[:5]}")
    if not rows:
        raise DatasetError(f"No RAVDESS speech clips (Actor_NN/03-01-*.wav or .flac) in {root}")
    return make_manifest(rows, {"song (vocal channel 02), not speech": songs} if songs else {})


def _actor_folders(root):
    if not os.path.isdir(root):
        return []
    return sorted(name for name in os.listdir(root)
                  if re.fullmatch(r"Actor_\d\d", name) and os.path.isdir(os.path.join(root, name)))
