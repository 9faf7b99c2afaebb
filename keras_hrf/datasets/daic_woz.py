"""DAIC-WOZ (depression from clinical interviews): participant speech segments,
PHQ-8 binary labels, participant-level voting."""

import math
import os

import numpy as np
import pandas as pd

from keras_hrf.datasets.manifest import DatasetError
from keras_hrf.datasets.manifest import check_files_exist
from keras_hrf.datasets.manifest import make_manifest

DAIC_SPLIT_FILES = {
    "train": "train_split_Depression_AVEC2017.csv",
    "dev": "dev_split_Depression_AVEC2017.csv",
    "test": "full_test_split.csv",
}
DAIC_CLASSES = ("depressed", "not_depressed")


def load_daic_woz(root, splits=("train", "dev", "test"), min_seconds=1.0, max_seconds=10.0):
    """A manifest of participant speech segments.

    Each Participant row of `<id>_P/<id>_TRANSCRIPT.csv` (tab separated:
    start_time, stop_time, speaker, value) is a segment of `<id>_AUDIO.wav`;
    turns longer than `max_seconds` are cut into equal parts no longer than
    that, turns shorter than `min_seconds` are left out and counted in
    `attrs["excluded"]`. Labels come from the split files: PHQ8_Binary
    (PHQ_Binary in the test file), or PHQ-8 score >= 10 where the binary cell
    is empty. speaker = group = the participant id; split = train/dev/test.
    """
    root = os.fspath(root)
    labels = {}
    for split in splits:
        if split not in DAIC_SPLIT_FILES:
            raise DatasetError(f"Unknown DAIC-WOZ split {split!r}; use {sorted(DAIC_SPLIT_FILES)}")
        labels.update(_split_labels(os.path.join(root, DAIC_SPLIT_FILES[split]), split))
    rows, excluded, audio = [], {}, []
    for participant, (label, split) in sorted(labels.items()):
        folder = os.path.join(root, f"{participant}_P")
        transcript = os.path.join(folder, f"{participant}_TRANSCRIPT.csv")
        if not os.path.isfile(transcript):
            raise DatasetError(f"DAIC-WOZ transcript not found: {transcript}")
        wav = os.path.join(folder, f"{participant}_AUDIO.wav")
        audio.append(wav)
        turns = _participant_turns(transcript)
        for start, stop in turns:
            duration = stop - start
            if duration < min_seconds:
                excluded["turn shorter than min_seconds"] = (
                    excluded.get("turn shorter than min_seconds", 0) + 1)
                continue
            pieces = max(1, math.ceil(duration / max_seconds))
            for k in range(pieces):
                rows.append({
                    "path": wav, "start": start + k * duration / pieces,
                    "end": start + (k + 1) * duration / pieces, "label": label,
                    "speaker": str(participant), "group": str(participant), "split": split,
                })
    check_files_exist(audio, f"the DAIC-WOZ split files under {root}")
    return make_manifest(rows, excluded)


def _split_labels(path, split):
    if not os.path.isfile(path):
        raise DatasetError(f"DAIC-WOZ split file not found: {path}")
    frame = pd.read_csv(path)
    frame.columns = [c.strip() for c in frame.columns]
    binary = next((c for c in ("PHQ8_Binary", "PHQ_Binary") if c in frame.columns), None)
    score = next((c for c in ("PHQ8_Score", "PHQ_Score") if c in frame.columns), None)
    if "Participant_ID" not in frame.columns or binary is None:
        raise DatasetError(
            f"{path} needs Participant_ID and PHQ8_Binary (or PHQ_Binary) columns; "
            f"it has {list(frame.columns)}"
        )
    labels = {}
    for _, row in frame.iterrows():
        value = row[binary]
        if pd.isna(value) and score is not None and not pd.isna(row[score]):
            value = float(row[score]) >= 10
        if pd.isna(value):
            raise DatasetError(
                f"{path}: participant {row['Participant_ID']} has neither {binary} nor a score"
            )
        labels[int(row["Participant_ID"])] = (
            DAIC_CLASSES[0] if int(value) == 1 else DAIC_CLASSES[1], split)
    return labels


def _participant_turns(path):
    try:
        frame = pd.read_csv(path, sep="\t")
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise DatasetError(f"Cannot parse transcript {path}: {error}") from error
    needed = {"start_time", "stop_time", "speaker"}
    if not needed <= set(frame.columns):
        raise DatasetError(f"Transcript {path} needs columns {sorted(needed)}; "
                           f"it has {list(frame.columns)}")
    participant = frame[frame["speaker"].astype(str).str.strip() == "Participant"]
    times = participant[["start_time", "stop_time"]].astype(float).to_numpy()
    bad = np.flatnonzero(times[:, 1] <= times[:, 0])
    if bad.size:
        line = int(participant.index[bad[0]]) + 2  # + header, 1-based
        raise DatasetError(f"{path}:{line}: stop_time is not after start_time")
    return [tuple(t) for t in times]


def participant_votes(manifest, probabilities, classes=DAIC_CLASSES):
    """Participant-level decisions: the class with the highest mean segment
    probability. Returns a DataFrame (participant, label, predicted, segments)."""
    probabilities = np.asarray(probabilities)
    if len(probabilities) != len(manifest):
        raise ValueError(f"{len(probabilities)} predictions for {len(manifest)} segments")
    frame = pd.DataFrame(probabilities, columns=list(classes))
    frame["participant"] = manifest["speaker"].to_numpy()
    frame["label"] = manifest["label"].to_numpy()
    grouped = frame.groupby("participant")
    votes = grouped[list(classes)].mean()
    return pd.DataFrame({
        "participant": votes.index,
        "label": grouped["label"].first().to_numpy(),
        "predicted": [classes[i] for i in votes.to_numpy().argmax(axis=1)],
        "segments": grouped.size().to_numpy(),
    }).reset_index(drop=True)
