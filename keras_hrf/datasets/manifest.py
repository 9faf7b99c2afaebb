"""Manifests: one pandas row per utterance, the common currency of the loaders.

Columns (`MANIFEST_COLUMNS`):
    path     audio file
    start    segment start in seconds within `path`, NaN for the whole file
    end      segment end in seconds, NaN for the whole file
    label    class name
    speaker  speaker id (empty string when unknown)
    group    fold unit: session (IEMOCAP), speaker (EmoDB), ... (may be empty)
    split    "train" / "val" / "test" where the corpus defines one, else empty

and, where a corpus rates them (MSP-Podcast), the optional dimensional columns
`DIMENSION_COLUMNS`: activation, valence, dominance.

Loaders put the rows they left out on purpose (labels outside the chosen class
set) in `manifest.attrs["excluded"]`, a {reason: count} dict, so that nothing
disappears without a count.
"""

import os
import re

import pandas as pd

MANIFEST_COLUMNS = ("path", "start", "end", "label", "speaker", "group", "split")
DIMENSION_COLUMNS = ("activation", "valence", "dominance")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")


class DatasetError(ValueError):
    """A dataset that does not have the expected layout; names the file."""


def make_manifest(rows, excluded=None):
    """A manifest from a list of dicts (missing columns get their empty value;
    the dimensional columns are kept where the rows have them)."""
    rows = list(rows)
    dimensions = [c for c in DIMENSION_COLUMNS if any(c in row for row in rows)]
    frame = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS) + dimensions)
    for column in dimensions:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    for column in ("start", "end"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    for column in ("speaker", "group", "split"):
        frame[column] = frame[column].fillna("").astype(str)
    frame["label"] = frame["label"].astype(str)
    frame.attrs["excluded"] = dict(excluded or {})
    return frame


def read_manifest(csv_path):
    """Read a CSV manifest with (at least) `path` and `label` columns.

    Relative paths are taken relative to the CSV's folder. Every referenced
    file must exist; the error lists the missing ones (up to 10) and counts all.
    """
    csv_path = os.fspath(csv_path)
    if not os.path.isfile(csv_path):
        raise DatasetError(f"Manifest not found: {csv_path}")
    try:
        frame = pd.read_csv(csv_path, dtype={"speaker": str, "group": str, "split": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DatasetError(f"Cannot parse manifest {csv_path}: {error}") from error
    missing_columns = [c for c in ("path", "label") if c not in frame.columns]
    if missing_columns:
        raise DatasetError(
            f"Manifest {csv_path} lacks the column(s) {missing_columns}; "
            f"it has {list(frame.columns)}"
        )
    unknown = [c for c in frame.columns if c not in MANIFEST_COLUMNS + DIMENSION_COLUMNS]
    if unknown:
        raise DatasetError(
            f"Manifest {csv_path} has unknown column(s) {unknown}; "
            f"the columns are {list(MANIFEST_COLUMNS + DIMENSION_COLUMNS)}"
        )
    empty_labels = frame.index[frame["label"].isna()].tolist()
    if empty_labels:
        raise DatasetError(
            f"Manifest {csv_path} has rows without a label (data rows "
            f"{[i + 1 for i in empty_labels[:10]]})"
        )
    base = os.path.dirname(os.path.abspath(csv_path))
    frame["path"] = [p if os.path.isabs(p) else os.path.join(base, p) for p in frame["path"]]
    check_files_exist(frame["path"], csv_path)
    return make_manifest(frame.to_dict("records"))


def from_folder(root, speaker_pattern=None):
    """A manifest of `root/<class>/<file>` (one sub-folder per class).

    Args:
        root: The folder.
        speaker_pattern: Optional regular expression whose first group, matched
            against each file name, is the speaker (and the fold group), e.g.
            `r"^(\\d\\d)"` for EmoDB-style names. A file it does not match is an
            error, not a silent empty speaker.
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise DatasetError(f"Data folder not found: {root}")
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    if len(classes) < 2:
        raise DatasetError(
            f"Data folder {root} needs one sub-folder per class (at least two); "
            f"found {classes}"
        )
    pattern = re.compile(speaker_pattern) if speaker_pattern else None
    rows, ignored = [], 0
    for label in classes:
        folder = os.path.join(root, label)
        files = sorted(os.listdir(folder))
        audio = [f for f in files if f.lower().endswith(AUDIO_EXTENSIONS)]
        ignored += len(files) - len(audio)
        if not audio:
            raise DatasetError(f"Class folder {folder} holds no audio files")
        for name in audio:
            speaker = ""
            if pattern is not None:
                match = pattern.search(name)
                if not match:
                    raise DatasetError(
                        f"File name {os.path.join(folder, name)} does not match "
                        f"speaker_pattern={speaker_pattern!r}"
                    )
                speaker = match.group(1)
            rows.append(
                {"path": os.path.join(folder, name), "label": label,
                 "speaker": speaker, "group": speaker}
            )
    excluded = {"not an audio file": ignored} if ignored else {}
    return make_manifest(rows, excluded)


def class_names(manifest):
    """The sorted class names of a manifest."""
    return sorted(manifest["label"].unique().tolist())


def check_files_exist(paths, source):
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        shown = "\n  ".join(missing[:10])
        raise DatasetError(
            f"{len(missing)} audio file(s) referenced by {source} do not exist:\n  {shown}"
        )


