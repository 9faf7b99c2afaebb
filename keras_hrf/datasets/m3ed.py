"""M3ED (Chinese TV dialogue, 7 classes) from its annotation JSON and split lists."""

import json
import os

from keras_hrf.datasets.manifest import DatasetError
from keras_hrf.datasets.manifest import check_files_exist
from keras_hrf.datasets.manifest import make_manifest

M3ED_CLASSES = ("Anger", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise")
M3ED_SPLITS = {"train": "movie_list_train.txt", "val": "movie_list_val.txt",
               "test": "movie_list_test.txt"}


def load_m3ed(root, audio_dir=None):
    """A manifest of M3ED utterances labelled with `final_main_emo`.

    Layout: `root/annotation.json` (show -> dialog -> {"Dialog": utt_id ->
    {"StartTime", "EndTime", "Speaker", "EmoAnnotation": {"final_main_emo"}}}),
    `root/splitInfo/movie_list_{train,val,test}.txt` (one show per line), and
    one wav per utterance, `<audio_dir>/<Speaker>_<utt_id>.wav` (`audio_dir`
    defaults to `root/audio`).

    split = the official split of the show; group = the show; speaker =
    "<show>/<Speaker>". Utterances of shows in no split list are counted in
    `attrs["excluded"]`.
    """
    root = os.fspath(root)
    audio_dir = os.fspath(audio_dir) if audio_dir else os.path.join(root, "audio")
    annotation_path = os.path.join(root, "annotation.json")
    if not os.path.isfile(annotation_path):
        raise DatasetError(f"M3ED annotation not found: {annotation_path}")
    try:
        with open(annotation_path, encoding="utf-8") as handle:
            annotation = json.load(handle)
    except json.JSONDecodeError as error:
        raise DatasetError(f"Cannot parse {annotation_path}: {error}") from error
    split_of = {}
    for split, name in M3ED_SPLITS.items():
        path = os.path.join(root, "splitInfo", name)
        if not os.path.isfile(path):
            raise DatasetError(f"M3ED split list not found: {path}")
        with open(path, encoding="utf-8") as handle:
            for show in (line.strip() for line in handle):
                if show:
                    split_of[show] = split
    rows, excluded = [], {}
    for show, dialogs in annotation.items():
        if show not in split_of:
            count = sum(len(d.get("Dialog", {})) for d in dialogs.values())
            excluded["show in no split list"] = excluded.get("show in no split list", 0) + count
            continue
        for dialog_id, dialog in dialogs.items():
            if "Dialog" not in dialog:
                raise DatasetError(f"{annotation_path}: dialog {show}/{dialog_id} has no 'Dialog'")
            for utterance, info in dialog["Dialog"].items():
                try:
                    label = info["EmoAnnotation"]["final_main_emo"]
                    speaker = info["Speaker"]
                except (KeyError, TypeError) as error:
                    raise DatasetError(
                        f"{annotation_path}: utterance {utterance} lacks {error}"
                    ) from None
                if label not in M3ED_CLASSES:
                    raise DatasetError(
                        f"{annotation_path}: utterance {utterance} has final_main_emo="
                        f"{label!r}, not one of {M3ED_CLASSES}"
                    )
                rows.append({
                    "path": os.path.join(audio_dir, f"{speaker}_{utterance}.wav"),
                    "label": label, "speaker": f"{show}/{speaker}", "group": show,
                    "split": split_of[show],
                })
    if not rows:
        raise DatasetError(f"No utterances of listed shows in {annotation_path}")
    check_files_exist([row["path"] for row in rows], f"the M3ED annotation {annotation_path}")
    return make_manifest(rows, excluded)
