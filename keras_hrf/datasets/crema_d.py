"""CREMA-D (Cao et al., 2014) by the release's file names: 91 actors, 6 emotions."""

import csv
import os
import re

from keras_hrf.datasets.manifest import DatasetError
from keras_hrf.datasets.manifest import make_manifest

CREMA_D_EMOTIONS = {
    "ANG": "angry",
    "DIS": "disgust",
    "FEA": "fear",
    "HAP": "happy",
    "NEU": "neutral",
    "SAD": "sad",
}
CREMA_D_SENTENCES = ("IEO", "TIE", "IOM", "IWW", "TAI", "MTI", "IWL", "ITH", "DFA", "ITS",
                     "TSI", "WSI")
CREMA_D_LEVELS = ("LO", "MD", "HI", "XX")
# `<ActorID>_<Sentence>_<Emotion>_<Level>.wav`, actors 1001..1091.
_NAME = re.compile(r"^(10\d\d)_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})\.wav$")


def load_crema_d(root, folds=5):
    """A manifest of CREMA-D's audio: 6 emotions, speaker = the actor.

    Args:
        root: The release folder holding `AudioWAV/` (and, if present,
            `VideoDemographics.csv`), or the `AudioWAV` folder itself.
        folds: `group` is one of `folds` speaker-disjoint folds `"1"` ..
            `"N"`: the actors in id order dealt round-robin, the women and
            the men separately when `VideoDemographics.csv` gives each
            actor's sex, so every fold holds both in the corpus' proportion.
            None: the actor (leave-one-actor-out, 91 folds).

    Raises:
        DatasetError: no `AudioWAV` folder or no clip in it, a `.wav` whose
            name is not the release's (actor, sentence, emotion or level
            code), or a demographics file without `ActorID` and `Sex`.
    """
    root = os.fspath(root)
    audio = root if os.path.basename(os.path.normpath(root)) == "AudioWAV" \
        else os.path.join(root, "AudioWAV")
    if not os.path.isdir(audio):
        raise DatasetError(f"CREMA-D audio folder not found: {audio} (the release's AudioWAV/)")
    if folds is not None and (not isinstance(folds, int) or folds < 2):
        raise DatasetError(f"load_crema_d: folds must be an integer >= 2 or None, "
                           f"received folds={folds!r}")
    rows, foreign = [], []
    for name in sorted(os.listdir(audio)):
        if not name.lower().endswith(".wav"):
            continue
        match = _NAME.match(name)
        if (not match or match.group(2) not in CREMA_D_SENTENCES
                or match.group(3) not in CREMA_D_EMOTIONS or match.group(4) not in CREMA_D_LEVELS
                or not 1001 <= int(match.group(1)) <= 1091):
            foreign.append(name)
            continue
        actor, _, emotion, _ = match.groups()
        rows.append({"path": os.path.join(audio, name), "label": CREMA_D_EMOTIONS[emotion],
                     "speaker": f"actor{actor}"})
    if foreign:
        raise DatasetError(
            f"{len(foreign)} .wav file(s) in {audio} do not follow CREMA-D's "
            f"<ActorID 1001-1091>_<Sentence>_<ANG|DIS|FEA|HAP|NEU|SAD>_<LO|MD|HI|XX>.wav "
            f"naming, e.g. {foreign[:5]}")
    if not rows:
        raise DatasetError(f"No CREMA-D clips (<ActorID>_<Sentence>_<Emotion>_<Level>.wav) "
                           f"in {audio}")
    actors = sorted({row["speaker"] for row in rows})
    if folds is None:
        fold_of = {actor: actor for actor in actors}
    else:
        sexes = _sexes(os.path.dirname(os.path.normpath(audio)))
        fold_of = {}
        for sex in sorted({sexes.get(actor, "") for actor in actors}):
            same = [actor for actor in actors if sexes.get(actor, "") == sex]
            # Continue the deal where the previous sex ended, so fold sizes differ by one at most.
            offset = len(fold_of)
            fold_of.update({actor: str((offset + k) % folds + 1) for k, actor in enumerate(same)})
    for row in rows:
        row["group"] = fold_of[row["speaker"]]
    return make_manifest(rows)


def _sexes(root):
    """{"actor1001": "Male", ...} from `VideoDemographics.csv`, or {} without it."""
    path = os.path.join(root, "VideoDemographics.csv")
    if not os.path.isfile(path):
        return {}
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"ActorID", "Sex"} <= set(reader.fieldnames):
            raise DatasetError(f"{path}: needs the columns ActorID and Sex; it has "
                               f"{reader.fieldnames}")
        return {f"actor{row['ActorID'].strip()}": row["Sex"].strip() for row in reader}
