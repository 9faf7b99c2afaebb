"""MSP-Podcast (Lotfian & Busso, 2019) from its consensus labels and official splits."""

import os

import numpy as np
import pandas as pd

from keras_hrf.datasets.manifest import DatasetError
from keras_hrf.datasets.manifest import check_files_exist
from keras_hrf.datasets.manifest import make_manifest

MSP_PODCAST_EMOTIONS = {
    "A": "angry",
    "S": "sad",
    "H": "happy",
    "U": "surprise",
    "F": "fear",
    "D": "disgust",
    "C": "contempt",
    "N": "neutral",
}
# The usual categorical task; "O" (other) and "X" (no agreement) are never classes.
MSP_PODCAST_FOUR_CLASSES = ("angry", "sad", "happy", "neutral")
# Split_Set -> the manifest's split. Later releases add Test3.
MSP_PODCAST_SPLITS = {"Train": "train", "Development": "val", "Test1": "test", "Test2": "test",
                      "Test3": "test"}
_LABEL_COLUMNS = ("FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom", "SpkrID")


def load_msp_podcast(root, classes=MSP_PODCAST_FOUR_CLASSES):
    """A manifest of MSP-Podcast with its official splits as folds.

    Layout: `root/Audios/<FileName>` and `root/Labels/labels_consensus.csv`
    (`FileName, EmoClass, EmoAct, EmoVal, EmoDom, SpkrID, Gender, Split_Set`).
    Releases whose CSV has no `Split_Set` keep the split in
    `root/Partitions.txt`, one `<Split_Set>; <FileName>` per line; it is then
    read instead, and `manifest.attrs["split_source"]` says which was used.

    group = `Split_Set` (Train, Development, Test1, Test2, Test3), split =
    "train", "val" or "test": `keras_hrf.training` then trains on Train,
    selects on Development and tests each test set (`--folds Test1`).
    speaker = `SpkrID` ("" where it is "Unknown"). The dimensional consensus
    ratings (1..7) are the columns `activation`, `valence`, `dominance`.

    Args:
        root: The release folder.
        classes: Class names to keep (of `MSP_PODCAST_EMOTIONS`' values);
            default the four of the usual task; None: all eight. Rows of other
            classes, "O" (other) and "X" (no agreement) are counted in
            `attrs["excluded"]`.

    Raises:
        DatasetError: a missing labels file, column or audio file, an
            `EmoClass` or `Split_Set` the release does not define, or a file
            with no split.
    """
    root = os.fspath(root)
    if classes is not None:
        unknown = [c for c in classes if c not in MSP_PODCAST_EMOTIONS.values()]
        if unknown:
            raise DatasetError(f"load_msp_podcast: classes {unknown} are not MSP-Podcast's; "
                               f"choose from {sorted(MSP_PODCAST_EMOTIONS.values())}")
    labels_path = os.path.join(root, "Labels", "labels_consensus.csv")
    if not os.path.isfile(labels_path):
        raise DatasetError(f"MSP-Podcast labels not found: {labels_path}")
    try:
        labels = pd.read_csv(labels_path, dtype={"FileName": str, "EmoClass": str,
                                                 "SpkrID": str, "Split_Set": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DatasetError(f"Cannot parse {labels_path}: {error}") from error
    labels.columns = [c.strip() for c in labels.columns]
    missing = [c for c in _LABEL_COLUMNS if c not in labels.columns]
    if missing:
        raise DatasetError(f"{labels_path} lacks the column(s) {missing}; it has "
                           f"{list(labels.columns)}")
    if "Split_Set" in labels.columns:
        splits, source = labels["Split_Set"].fillna("").str.strip(), labels_path
    else:
        source = os.path.join(root, "Partitions.txt")
        partition = _read_partitions(source, labels_path)
        splits = labels["FileName"].map(partition).fillna("")
    without = labels["FileName"][splits == ""].tolist()
    if without:
        raise DatasetError(f"{len(without)} file(s) have no split in {source}, e.g. "
                           f"{without[:5]}")
    unknown_splits = sorted(set(splits) - set(MSP_PODCAST_SPLITS))
    if unknown_splits:
        raise DatasetError(f"{source}: unknown Split_Set value(s) {unknown_splits}; "
                           f"expected {list(MSP_PODCAST_SPLITS)}")
    codes = labels["EmoClass"].fillna("").str.strip()
    bad = sorted(set(codes) - set(MSP_PODCAST_EMOTIONS) - {"O", "X"})
    if bad:
        raise DatasetError(f"{labels_path}: unknown EmoClass value(s) {bad}; expected one of "
                           f"{list(MSP_PODCAST_EMOTIONS) + ['O', 'X']}")
    dimensions = {}
    for column, name in (("EmoAct", "activation"), ("EmoVal", "valence"),
                         ("EmoDom", "dominance")):
        values = pd.to_numeric(labels[column], errors="coerce")
        if values.isna().any():
            row = int(np.flatnonzero(values.isna().to_numpy())[0])
            raise DatasetError(f"{labels_path}: {column} of {labels['FileName'].iat[row]} is "
                               f"{labels[column].iat[row]!r}, not a number")
        dimensions[name] = values.to_numpy(dtype="float64")
    keep = set(MSP_PODCAST_EMOTIONS.values()) if classes is None else set(classes)
    rows, excluded = [], {}
    for i, (name, code, split) in enumerate(zip(labels["FileName"], codes, splits)):
        label = MSP_PODCAST_EMOTIONS.get(code)
        if label not in keep:
            reason = {"O": "EmoClass O (other)", "X": "EmoClass X (no agreement)"}.get(
                code, f"class {label} not chosen")
            excluded[reason] = excluded.get(reason, 0) + 1
            continue
        speaker = str(labels["SpkrID"].iat[i]).strip()
        rows.append({"path": os.path.join(root, "Audios", name.strip()), "label": label,
                     "speaker": "" if speaker.lower() in ("unknown", "nan", "") else speaker,
                     "group": split, "split": MSP_PODCAST_SPLITS[split],
                     **{k: v[i] for k, v in dimensions.items()}})
    if not rows:
        raise DatasetError(f"No utterance of the classes {sorted(keep)} in {labels_path}")
    check_files_exist([row["path"] for row in rows], f"the MSP-Podcast labels {labels_path}")
    manifest = make_manifest(rows, excluded)
    manifest.attrs["split_source"] = source
    return manifest


def _read_partitions(path, labels_path):
    """{FileName: Split_Set} from an older release's `Partitions.txt`."""
    if not os.path.isfile(path):
        raise DatasetError(f"{labels_path} has no Split_Set column and {path} does not exist: "
                           "no official split")
    partition = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            split, sep, name = line.partition(";")
            if not sep or not name.strip():
                raise DatasetError(f"{path}, line {number}: expected '<Split_Set>; <FileName>', "
                                   f"got {line.strip()!r}")
            partition[name.strip()] = split.strip()
    return partition
