import os

import numpy as np
import pandas as pd
import pytest
from fixtures import MSP_PODCAST_ROWS
from fixtures import write_crema_d
from fixtures import write_daic_woz
from fixtures import write_iemocap
from fixtures import write_m3ed
from fixtures import write_msp_podcast
from fixtures import write_ravdess
from fixtures import write_tone

from keras_hrf.datasets import M3ED_CLASSES
from keras_hrf.datasets import MANIFEST_COLUMNS
from keras_hrf.datasets import DatasetError
from keras_hrf.datasets import class_names
from keras_hrf.datasets import from_folder
from keras_hrf.datasets import load_crema_d
from keras_hrf.datasets import load_daic_woz
from keras_hrf.datasets import load_emodb
from keras_hrf.datasets import load_iemocap
from keras_hrf.datasets import load_m3ed
from keras_hrf.datasets import load_msp_podcast
from keras_hrf.datasets import load_ravdess
from keras_hrf.datasets import ravdess_fold
from keras_hrf.datasets import participant_votes
from keras_hrf.datasets import read_manifest

EMODB = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "shared", "data", "emodb")


@pytest.mark.skipif(not os.path.isdir(EMODB), reason="../shared/data/emodb is not beside the project")
def test_emodb_manifest_of_the_real_corpus():
    manifest = load_emodb(EMODB)
    assert list(manifest.columns) == list(MANIFEST_COLUMNS)
    assert len(manifest) == 535
    assert manifest["speaker"].nunique() == 10 and manifest["group"].nunique() == 10
    counts = manifest["label"].value_counts().to_dict()
    assert counts == {"anger": 127, "boredom": 81, "neutral": 79, "happiness": 71,
                      "fear": 69, "sadness": 62, "disgust": 46}
    assert all(os.path.isfile(p) for p in manifest["path"])


def test_emodb_refuses_foreign_names(tmp_path):
    write_tone(str(tmp_path / "03a01Fa.wav"))
    write_tone(str(tmp_path / "recording.wav"))
    with pytest.raises(DatasetError, match=r"1 \.wav file\(s\) .*recording\.wav"):
        load_emodb(tmp_path)


RAVDESS = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "shared", "data",
                       "ravdess")


@pytest.mark.skipif(not os.path.isdir(RAVDESS), reason="../shared/data/ravdess is not beside the project")
def test_ravdess_manifest_of_the_real_corpus():
    manifest = load_ravdess(RAVDESS)
    assert list(manifest.columns) == list(MANIFEST_COLUMNS)
    assert len(manifest) == 1440 and manifest["speaker"].nunique() == 24
    counts = manifest["label"].value_counts().to_dict()
    assert counts.pop("neutral") == 96 and set(counts.values()) == {192}
    assert sorted(manifest["group"].unique()) == ["1", "2", "3", "4"]
    for _, speakers in manifest.groupby("group")["speaker"]:
        actors = sorted({int(s[-2:]) for s in speakers})
        assert len(actors) == 6 and sum(a % 2 for a in actors) == 3  # 3 men, 3 women


@pytest.mark.parametrize("extension", ["wav", "flac"])
def test_ravdess_from_the_release_layout(tmp_path, extension):
    write_ravdess(str(tmp_path), actors=(1, 2, 3, 10), extension=extension)
    manifest = load_ravdess(tmp_path)
    assert len(manifest) == 4 * 9
    assert sorted(manifest["speaker"].unique()) == ["actor01", "actor02", "actor03", "actor10"]
    by_speaker = manifest.groupby("speaker")["group"].first().to_dict()
    assert by_speaker == {"actor01": "1", "actor02": "1", "actor03": "2", "actor10": "1"}
    assert class_names(manifest) == ["angry", "calm", "disgust", "fearful", "happy", "neutral",
                                     "sad", "surprised"]
    assert (manifest["label"] == "angry").sum() == 8  # normal and strong takes
    assert all(p.endswith("." + extension) for p in manifest["path"])
    one_out = load_ravdess(tmp_path, folds=None)
    assert sorted(one_out["group"].unique()) == ["actor01", "actor02", "actor03", "actor10"]


def test_ravdess_folds_hold_three_men_and_three_women():
    folds = {}
    for actor in range(1, 25):
        folds.setdefault(ravdess_fold(actor), []).append(actor)
    assert sorted(folds) == [1, 2, 3, 4]
    assert all(len(a) == 6 and sum(x % 2 for x in a) == 3 for a in folds.values())
    assert folds[1] == [1, 2, 9, 10, 17, 18]


def test_ravdess_names_what_is_wrong(tmp_path):
    with pytest.raises(DatasetError, match="RAVDESS folder not found"):
        load_ravdess(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="No RAVDESS speech clips"):
        load_ravdess(tmp_path)
    write_ravdess(str(tmp_path), actors=(1,))
    write_tone(str(tmp_path / "Actor_01" / "03-02-01-01-01-01-01.wav"))  # song: left out, counted
    assert load_ravdess(tmp_path).attrs["excluded"] == {"song (vocal channel 02), not speech": 1}
    write_tone(str(tmp_path / "Actor_01" / "03-01-01-01-01-01-1.wav"))  # not the release's name
    with pytest.raises(DatasetError, match=r"1 audio file\(s\).*03-01-01-01-01-01-1\.wav"):
        load_ravdess(tmp_path)
    os.remove(tmp_path / "Actor_01" / "03-01-01-01-01-01-1.wav")
    write_tone(str(tmp_path / "Actor_01" / "03-01-01-01-01-02-07.wav"))  # actor 7's take
    with pytest.raises(DatasetError, match="the name says actor 07, the folder Actor_01"):
        load_ravdess(tmp_path)


def test_iemocap_four_class_protocol_from_the_release_layout(tmp_path):
    written = write_iemocap(str(tmp_path), sessions=(1, 2, 3, 4, 5))
    manifest = load_iemocap(str(tmp_path))
    assert list(manifest.columns) == list(MANIFEST_COLUMNS)
    counts = manifest["label"].value_counts().to_dict()
    assert counts == {
        "neutral": written["neu"], "happy": written["hap"] + written["exc"],
        "angry": written["ang"], "sad": written["sad"],
    }
    assert manifest.attrs["excluded"] == {"label xxx": 5, "label fru": 5}
    assert sorted(manifest["group"].unique()) == [f"Session{i}" for i in range(1, 6)]
    assert set(manifest["speaker"]) == {f"Ses0{i}{g}" for i in range(1, 6) for g in "FM"}
    assert all(os.path.isfile(p) for p in manifest["path"])
    assert manifest["start"].isna().all()  # sentence wavs are whole utterances
    assert class_names(manifest) == ["angry", "happy", "neutral", "sad"]


def test_iemocap_other_class_sets(tmp_path):
    write_iemocap(str(tmp_path), sessions=(1,))
    six = load_iemocap(str(tmp_path), classes="6", sessions=(1,))
    assert "frustrated" in set(six["label"])
    custom = load_iemocap(str(tmp_path), classes={"ang": "anger", "sad": "sadness"}, sessions=(1,))
    assert set(custom["label"]) == {"anger", "sadness"}
    with pytest.raises(DatasetError, match=r"classes='9'"):
        load_iemocap(str(tmp_path), classes="9")


def test_iemocap_missing_session_is_named(tmp_path):
    write_iemocap(str(tmp_path), sessions=(1, 2))
    with pytest.raises(DatasetError, match=r"lacks Session3"):
        load_iemocap(str(tmp_path))


def test_iemocap_malformed_label_line_is_named(tmp_path):
    write_iemocap(str(tmp_path), sessions=(1,))
    label_dir = tmp_path / "Session1" / "dialog" / "EmoEvaluation"
    path = label_dir / sorted(os.listdir(label_dir))[0]
    lines = path.read_text().splitlines(keepends=True)
    lines[2] = "[12.0 - oops]\tSes01F_impro01_F000\tneu\t[1, 2, 3]\n"
    path.write_text("".join(lines))
    with pytest.raises(DatasetError, match=rf"{path.name}:3: malformed utterance line"):
        load_iemocap(str(tmp_path), sessions=(1,))


def test_iemocap_missing_audio_is_counted_and_named(tmp_path):
    write_iemocap(str(tmp_path), sessions=(1,))
    wav = tmp_path / "Session1" / "sentences" / "wav" / "Ses01F_impro01" / "Ses01F_impro01_F000.wav"
    os.remove(wav)
    with pytest.raises(DatasetError, match=r"(?s)1 audio file\(s\) .*Ses01F_impro01_F000\.wav"):
        load_iemocap(str(tmp_path), sessions=(1,))


def test_folder_of_class_folders_with_speakers(tmp_path):
    for label in ("calm", "angry"):
        for speaker in ("s01", "s02"):
            write_tone(str(tmp_path / label / f"{speaker}_take1.wav"))
    (tmp_path / "calm" / "notes.txt").write_text("not audio")
    manifest = from_folder(str(tmp_path), speaker_pattern=r"^(s\d\d)_")
    assert len(manifest) == 4
    assert sorted(manifest["speaker"].unique()) == ["s01", "s02"]
    assert manifest.attrs["excluded"] == {"not an audio file": 1}
    with pytest.raises(DatasetError, match=r"does not match speaker_pattern"):
        from_folder(str(tmp_path), speaker_pattern=r"^(x\d)")


def test_folder_needs_classes_with_audio(tmp_path):
    (tmp_path / "only").mkdir()
    with pytest.raises(DatasetError, match=r"one sub-folder per class"):
        from_folder(str(tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"empty holds no audio files"):
        from_folder(str(tmp_path))


def test_csv_manifest_round_trip_and_errors(tmp_path):
    write_tone(str(tmp_path / "audio" / "a.wav"))
    write_tone(str(tmp_path / "audio" / "b.wav"))
    csv = tmp_path / "manifest.csv"
    pd.DataFrame({"path": ["audio/a.wav", "audio/b.wav"], "label": ["x", "y"],
                  "start": [0.0, None], "end": [0.1, None], "speaker": ["01", "02"]}).to_csv(csv, index=False)
    manifest = read_manifest(str(csv))
    assert list(manifest.columns) == list(MANIFEST_COLUMNS)
    assert manifest["speaker"].tolist() == ["01", "02"]  # kept as text, not numbers
    assert os.path.isabs(manifest["path"][0])

    pd.DataFrame({"path": ["audio/a.wav", "audio/gone.wav"], "label": ["x", "y"]}).to_csv(csv, index=False)
    with pytest.raises(DatasetError, match=r"(?s)1 audio file\(s\) .*gone\.wav"):
        read_manifest(str(csv))
    pd.DataFrame({"file": ["audio/a.wav"], "label": ["x"]}).to_csv(csv, index=False)
    with pytest.raises(DatasetError, match=r"lacks the column\(s\) \['path'\]"):
        read_manifest(str(csv))
    pd.DataFrame({"path": ["audio/a.wav"], "label": [None]}).to_csv(csv, index=False)
    with pytest.raises(DatasetError, match=r"rows without a label \(data rows \[1\]\)"):
        read_manifest(str(csv))
    with pytest.raises(DatasetError, match=r"Manifest not found"):
        read_manifest(str(tmp_path / "nope.csv"))


def test_m3ed_from_its_annotation_and_split_lists(tmp_path):
    counts = write_m3ed(str(tmp_path))
    manifest = load_m3ed(str(tmp_path))
    assert manifest["split"].value_counts().to_dict() == counts
    assert manifest.attrs["excluded"] == {"show in no split list": 6}
    assert set(manifest["label"]) <= set(M3ED_CLASSES)
    assert set(manifest["group"]) == {"A", "B", "C"}
    assert set(manifest["speaker"]) == {f"{s}/{p}" for s in "ABC" for p in "AB"}
    assert all(os.path.isfile(p) for p in manifest["path"])


def test_m3ed_errors_name_the_problem(tmp_path):
    write_m3ed(str(tmp_path))
    os.remove(tmp_path / "audio" / "A_A_1_1.wav")
    with pytest.raises(DatasetError, match=r"(?s)1 audio file\(s\) .*A_A_1_1\.wav"):
        load_m3ed(str(tmp_path))
    os.remove(tmp_path / "splitInfo" / "movie_list_val.txt")
    with pytest.raises(DatasetError, match=r"split list not found: .*movie_list_val\.txt"):
        load_m3ed(str(tmp_path))
    with pytest.raises(DatasetError, match=r"annotation not found"):
        load_m3ed(str(tmp_path / "elsewhere"))


def test_daic_woz_participant_segments_and_labels(tmp_path):
    write_daic_woz(str(tmp_path))
    manifest = load_daic_woz(str(tmp_path))
    # Per participant: one 2.5 s turn, one 21 s turn in three 7 s parts; 0.5 s left out.
    assert manifest.groupby("speaker").size().to_dict() == {"300": 4, "301": 4, "302": 4, "303": 4}
    assert manifest.attrs["excluded"] == {"turn shorter than min_seconds": 4}
    assert (manifest["end"] - manifest["start"]).max() <= 10.0
    assert manifest["start"].min() >= 2.5  # Ellie's turns never appear
    labels = manifest.groupby("speaker")["label"].first().to_dict()
    assert labels == {"300": "depressed", "301": "not_depressed",
                      "302": "depressed",  # empty binary cell, PHQ-8 score 12 >= 10
                      "303": "not_depressed"}
    assert manifest.groupby("speaker")["split"].first().to_dict() == {
        "300": "train", "301": "train", "302": "dev", "303": "test"}


def test_daic_woz_participant_voting(tmp_path):
    write_daic_woz(str(tmp_path))
    manifest = load_daic_woz(str(tmp_path), splits=("train",))
    probabilities = np.tile([[0.2, 0.8]], (len(manifest), 1))
    probabilities[:3] = [0.9, 0.1]  # 3 of participant 300's 4 segments say depressed
    votes = participant_votes(manifest, probabilities)
    assert votes.set_index("participant")["predicted"].to_dict() == {
        "300": "depressed", "301": "not_depressed"}
    assert votes["segments"].tolist() == [4, 4]


def test_daic_woz_errors_name_the_problem(tmp_path):
    write_daic_woz(str(tmp_path))
    transcript = tmp_path / "301_P" / "301_TRANSCRIPT.csv"
    transcript.write_text(transcript.read_text().replace("8.5\t29.5", "29.5\t8.5"))
    with pytest.raises(DatasetError, match=r"301_TRANSCRIPT\.csv:6: stop_time is not after"):
        load_daic_woz(str(tmp_path), splits=("train",))
    with pytest.raises(DatasetError, match=r"Unknown DAIC-WOZ split 'valid'"):
        load_daic_woz(str(tmp_path), splits=("valid",))
    os.remove(tmp_path / "full_test_split.csv")
    with pytest.raises(DatasetError, match=r"split file not found: .*full_test_split\.csv"):
        load_daic_woz(str(tmp_path))


def test_daic_woz_segments_become_features_of_their_length(tmp_path):
    from keras_hrf.features import FeatureExtractor

    write_daic_woz(str(tmp_path))
    manifest = load_daic_woz(str(tmp_path), splits=("test",))
    features, skipped = FeatureExtractor().extract(manifest.iloc[:2], progress=False)
    assert not skipped
    assert features[0].shape == (1 + int(2.5 * 16000) // 160, 80)  # 2.5 s turn
    assert features[1].shape[0] == 1 + int(7.0 * 16000) // 160      # a third of 21 s


def test_crema_d_from_the_release_layout(tmp_path):
    actors = list(range(1001, 1011))
    sexes = {a: "Female" if a in (1002, 1003, 1005, 1008) else "Male" for a in actors}
    written = write_crema_d(str(tmp_path), actors=actors, sexes=sexes)
    manifest = load_crema_d(tmp_path)
    assert len(manifest) == len(written) == 10 * 8
    assert class_names(manifest) == ["angry", "disgust", "fear", "happy", "neutral", "sad"]
    assert (manifest["label"] == "angry").sum() == 20 and (manifest["label"] == "neutral").sum() == 20
    fold_of = manifest.groupby("speaker")["group"].first()
    assert sorted(fold_of.unique()) == ["1", "2", "3", "4", "5"]
    assert fold_of.value_counts().tolist() == [2] * 5  # 10 actors, 5 folds
    women = fold_of[[f"actor{a}" for a in actors if sexes[a] == "Female"]]
    assert women.nunique() == 4  # 4 women in 4 different folds, not piled up
    # The AudioWAV folder itself, no demographics, leave-one-actor-out.
    one_out = load_crema_d(tmp_path / "AudioWAV", folds=None)
    assert sorted(one_out["group"].unique()) == [f"actor{a}" for a in actors]
    plain = load_crema_d(tmp_path / "AudioWAV", folds=2)
    assert plain.groupby("speaker")["group"].first()["actor1001"] == "1"


def test_crema_d_names_what_is_wrong(tmp_path):
    with pytest.raises(DatasetError, match="CREMA-D audio folder not found"):
        load_crema_d(tmp_path)
    (tmp_path / "AudioWAV").mkdir()
    with pytest.raises(DatasetError, match="No CREMA-D clips"):
        load_crema_d(tmp_path)
    write_crema_d(str(tmp_path), actors=(1001,))
    for bad in ("1001_DFA_BOR_XX.wav", "1001_XYZ_ANG_XX.wav", "0999_DFA_ANG_XX.wav"):
        write_tone(str(tmp_path / "AudioWAV" / bad))
        with pytest.raises(DatasetError, match=rf"1 \.wav file\(s\).*{bad}"):
            load_crema_d(tmp_path)
        os.remove(tmp_path / "AudioWAV" / bad)
    with pytest.raises(DatasetError, match="folds must be an integer >= 2"):
        load_crema_d(tmp_path, folds=1)
    (tmp_path / "VideoDemographics.csv").write_text("Actor,Gender\n1001,Male\n")
    with pytest.raises(DatasetError, match="VideoDemographics.csv: needs the columns ActorID and Sex"):
        load_crema_d(tmp_path)


@pytest.mark.parametrize("partitions", [False, True])
def test_msp_podcast_with_its_official_splits(tmp_path, partitions):
    write_msp_podcast(str(tmp_path), partitions=partitions)
    manifest = load_msp_podcast(tmp_path)
    assert len(manifest) == 5 * 6
    assert manifest.attrs["excluded"] == {"EmoClass O (other)": 1, "EmoClass X (no agreement)": 1,
                                          "class contempt not chosen": 1}
    assert manifest.attrs["split_source"].endswith(
        "Partitions.txt" if partitions else "labels_consensus.csv")
    assert class_names(manifest) == ["angry", "happy", "neutral", "sad"]
    by_group = manifest.groupby("group")["split"].agg(set).to_dict()
    assert by_group == {"Train": {"train"}, "Development": {"val"}, "Test1": {"test"},
                        "Test2": {"test"}}
    first = manifest.iloc[0]
    assert (first["activation"], first["valence"], first["dominance"]) == (1.0, 4.0, 3.5)
    assert manifest["activation"].iloc[7] == pytest.approx(1.7)
    assert set(manifest["speaker"][manifest["group"] == "Test2"]) == {""}  # "Unknown"
    assert set(manifest["speaker"][manifest["group"] == "Train"]) == {"11", "12"}
    every = load_msp_podcast(tmp_path, classes=None)
    assert len(every) == 31 and "contempt" in set(every["label"])
    # A manifest CSV keeps the dimensional columns.
    manifest.to_csv(tmp_path / "msp.csv", index=False)
    again = read_manifest(tmp_path / "msp.csv")
    assert again["valence"].tolist() == manifest["valence"].tolist()


def test_msp_podcast_names_what_is_wrong(tmp_path):
    with pytest.raises(DatasetError, match="MSP-Podcast labels not found"):
        load_msp_podcast(tmp_path)
    write_msp_podcast(str(tmp_path))
    with pytest.raises(DatasetError, match=r"classes \['joy'\] are not MSP-Podcast's"):
        load_msp_podcast(tmp_path, classes=("joy",))
    labels = tmp_path / "Labels" / "labels_consensus.csv"
    original = labels.read_text()
    for old, new, message in (
            (",Test2", ",Test9", r"unknown Split_Set value\(s\) \['Test9'\]"),
            (",A,", ",Q,", r"unknown EmoClass value\(s\) \['Q'\]"),
            (",A,1.0,", ",A,high,", r"EmoAct of MSP-PODCAST_0001_0001.wav is 'high'"),
            ("SpkrID", "Speaker", r"lacks the column\(s\) \['SpkrID'\]")):
        labels.write_text(original.replace(old, new, 1))
        with pytest.raises(DatasetError, match=message):
            load_msp_podcast(tmp_path)
    labels.write_text(original)
    os.remove(tmp_path / "Audios" / MSP_PODCAST_ROWS[3][0])
    with pytest.raises(DatasetError, match=r"(?s)1 audio file\(s\).*MSP-PODCAST_0001_0004.wav"):
        load_msp_podcast(tmp_path)
    older = tmp_path / "older"
    write_msp_podcast(str(older), partitions=True)
    (older / "Partitions.txt").write_text("Train MSP-PODCAST_0001_0001.wav\n")
    with pytest.raises(DatasetError, match=r"Partitions.txt, line 1: expected '<Split_Set>; <FileName>'"):
        load_msp_podcast(older)
    (older / "Partitions.txt").write_text("Train; MSP-PODCAST_0001_0001.wav\n")
    with pytest.raises(DatasetError, match=r"file\(s\) have no split in .*Partitions.txt"):
        load_msp_podcast(older)
    os.remove(older / "Partitions.txt")
    with pytest.raises(DatasetError, match="no Split_Set column and .*Partitions.txt does not exist"):
        load_msp_podcast(older)
