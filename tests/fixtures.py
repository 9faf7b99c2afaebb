"""Writers of small fixtures in the exact release layouts of licensed corpora."""

import os

import numpy as np
import soundfile

IEMOCAP_HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"


def write_tone(path, seconds=0.2, rate=16000, frequency=220.0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    soundfile.write(path, 0.3 * np.sin(2 * np.pi * frequency * t), rate, subtype="PCM_16")


def write_iemocap(root, sessions=(1, 2), utterances=None):
    """`root/SessionN/dialog/EmoEvaluation/<dialog>.txt` (header, utterance
    lines, annotator lines) and `root/SessionN/sentences/wav/<dialog>/<id>.wav`.

    `utterances`: per session, a list of (dialog suffix, utterance suffix,
    category); a default mix covers every 4-class label plus excluded ones.
    Returns {category: count} of what was written.
    """
    default = [
        ("impro01", "F000", "neu"), ("impro01", "M001", "hap"), ("impro01", "F002", "exc"),
        ("impro01", "M003", "ang"), ("impro01", "F004", "sad"), ("impro01", "M005", "xxx"),
        ("script01_1", "F000", "fru"), ("script01_1", "M001", "neu"),
        ("script01_1", "F002", "sad"),
    ]
    written = {}
    for session in sessions:
        by_dialog = {}
        for dialog, turn, code in utterances or default:
            by_dialog.setdefault(dialog, []).append((turn, code))
        for dialog, turns in by_dialog.items():
            dialog_id = f"Ses0{session}F_{dialog}"
            lines = [IEMOCAP_HEADER]
            for index, (turn, code) in enumerate(turns):
                utterance = f"{dialog_id}_{turn}"
                start = 10.0 * index + 1.2345
                lines.append(
                    f"[{start:.4f} - {start + 3.5:.4f}]\t{utterance}\t{code}\t"
                    "[2.5000, 3.0000, 3.5000]\n"
                )
                lines.append("C-E1:\tAnger;\t()\n")
                lines.append("A-E3:\tval 2; act 4; dom  4;\t()\n\n")
                write_tone(os.path.join(root, f"Session{session}", "sentences", "wav",
                                        dialog_id, utterance + ".wav"))
                written[code] = written.get(code, 0) + 1
            label_dir = os.path.join(root, f"Session{session}", "dialog", "EmoEvaluation")
            os.makedirs(label_dir, exist_ok=True)
            with open(os.path.join(label_dir, dialog_id + ".txt"), "w") as handle:
                handle.writelines(lines)
    return written


def write_m3ed(root):
    """`annotation.json`, `splitInfo/movie_list_*.txt` and `audio/<Speaker>_<utt>.wav`.
    Shows: A (train), B (val), C (test), D (listed nowhere). Returns the utterance
    count per split."""
    import json

    shows = {"A": "train", "B": "val", "C": "test", "D": None}
    labels = ["Anger", "Happy", "Neutral", "Sad", "Surprise", "Fear", "Disgust"]
    annotation, counts = {}, {}
    for index, (show, split) in enumerate(shows.items()):
        dialogs = {}
        for d in range(2):
            utterances = {}
            for u in range(3):
                utt = f"{show}_{d + 1}_{u + 1}"
                speaker = "A" if u % 2 == 0 else "B"
                utterances[utt] = {
                    "StartTime": f"00:00:0{u}:000", "EndTime": f"00:00:0{u + 1}:000",
                    "Text": "你好", "Speaker": speaker,
                    "EmoAnnotation": {"EmoAnnotator1": ["Neutral"], "EmoAnnotator2": ["Neutral"],
                                      "EmoAnnotator3": ["Neutral"],
                                      "final_mul_emo": [labels[(index + u) % 7]],
                                      "final_main_emo": labels[(index + u) % 7]},
                }
                write_tone(os.path.join(root, "audio", f"{speaker}_{utt}.wav"))
            dialogs[f"{show}_{d + 1}"] = {"SpeakerInfo": {"A": {}, "B": {}}, "Dialog": utterances}
        annotation[show] = dialogs
        if split:
            counts[split] = 6
    os.makedirs(os.path.join(root, "splitInfo"), exist_ok=True)
    with open(os.path.join(root, "annotation.json"), "w", encoding="utf-8") as handle:
        json.dump(annotation, handle, ensure_ascii=False)
    for split in ("train", "val", "test"):
        with open(os.path.join(root, "splitInfo", f"movie_list_{split}.txt"), "w") as handle:
            handle.write("".join(f"{s}\n" for s, sp in shows.items() if sp == split))
    return counts


def write_daic_woz(root):
    """Split CSVs (AVEC 2017 train/dev with PHQ-8 items, one empty; full test),
    and `<id>_P/<id>_AUDIO.wav` + `<id>_TRANSCRIPT.csv` with Ellie and
    Participant turns. Participants: 300 (train, depressed), 301 (train, not),
    302 (dev, binary empty, score 12), 303 (test, not)."""
    items = ",".join(f"PHQ8_{k}" for k in ("NoInterest", "Depressed", "Sleep", "Tired",
                                          "Appetite", "Failure", "Concentrating", "Moving"))
    with open(os.path.join(root, "train_split_Depression_AVEC2017.csv"), "w") as handle:
        handle.write(f"Participant_ID,PHQ8_Binary,PHQ8_Score,Gender,{items}\n")
        handle.write("300,1,15,1,2,2,2,2,2,2,2,1\n301,0,3,0,0,1,0,1,0,,1,0\n")
    with open(os.path.join(root, "dev_split_Depression_AVEC2017.csv"), "w") as handle:
        handle.write(f"Participant_ID,PHQ8_Binary,PHQ8_Score,Gender,{items}\n")
        handle.write("302,,12,1,2,2,1,2,1,2,1,1\n")
    with open(os.path.join(root, "full_test_split.csv"), "w") as handle:
        handle.write("Participant_ID,PHQ_Binary,PHQ_Score,Gender\n303,0,4,0\n")
    for participant in (300, 301, 302, 303):
        folder = os.path.join(root, f"{participant}_P")
        write_tone(os.path.join(folder, f"{participant}_AUDIO.wav"), seconds=30.0)
        with open(os.path.join(folder, f"{participant}_TRANSCRIPT.csv"), "w") as handle:
            handle.write("start_time\tstop_time\tspeaker\tvalue\n")
            handle.write("0.5\t2.0\tEllie\thi i'm ellie\n")
            handle.write("2.5\t5.0\tParticipant\thello\n")          # 2.5 s: one segment
            handle.write("5.5\t6.0\tParticipant\tmm\n")             # 0.5 s: too short
            handle.write("6.5\t8.0\tEllie\thow are you\n")
            handle.write("8.5\t29.5\tParticipant\ta long answer\n")  # 21 s: three segments


def write_ravdess(root, actors=(1, 2, 3, 4), extension="wav"):
    """`root/Actor_NN/03-01-EE-II-SS-RR-NN.<extension>` in the speech release's
    layout: per actor, every emotion at normal intensity, statement 01,
    repetition 01, and the strong-intensity angry take (neutral has no strong
    one). Returns the paths written."""
    paths = []
    for actor in actors:
        takes = [(emotion, 1) for emotion in range(1, 9)] + [(5, 2)]
        for emotion, intensity in takes:
            name = f"03-01-{emotion:02d}-{intensity:02d}-01-01-{actor:02d}.{extension}"
            path = os.path.join(root, f"Actor_{actor:02d}", name)
            write_tone(path, seconds=0.3, frequency=100.0 + 40 * emotion)
            paths.append(path)
    return paths


def write_crema_d(root, actors=(1001, 1002, 1003, 1004), sexes=None):
    """`root/AudioWAV/<ActorID>_<Sentence>_<Emotion>_<Level>.wav` in the
    release's layout: per actor, the six emotions of sentence DFA (at level
    XX, angry also at HI) and neutral IEO at XX. With `sexes` ({actor:
    "Male"|"Female"}), also `root/VideoDemographics.csv`. Returns the paths."""
    paths = []
    for actor in actors:
        takes = [("DFA", emotion, "XX") for emotion in ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")]
        takes += [("DFA", "ANG", "HI"), ("IEO", "NEU", "XX")]
        for sentence, emotion, level in takes:
            path = os.path.join(root, "AudioWAV", f"{actor}_{sentence}_{emotion}_{level}.wav")
            write_tone(path, seconds=0.3)
            paths.append(path)
    if sexes:
        with open(os.path.join(root, "VideoDemographics.csv"), "w") as handle:
            handle.write("ActorID,Age,Sex,Race,Ethnicity\n")
            handle.writelines(f"{actor},30,{sex},Caucasian,Not Hispanic\n"
                              for actor, sex in sexes.items())
    return paths


# (FileName, EmoClass, Split_Set, SpkrID) of write_msp_podcast: every set has
# the four usual classes; O, X and a contempt row must be left out and counted.
MSP_PODCAST_ROWS = [
    (f"MSP-PODCAST_{podcast:04d}_{segment:04d}.wav", code, split, speaker)
    for podcast, split, speaker in ((1, "Train", "11"), (2, "Train", "12"),
                                    (3, "Development", "13"), (4, "Test1", "14"),
                                    (5, "Test2", "Unknown"))
    for segment, code in enumerate(("A", "S", "H", "N", "A", "N"), 1)
] + [("MSP-PODCAST_0001_0007.wav", "O", "Train", "11"),
     ("MSP-PODCAST_0001_0008.wav", "X", "Train", "11"),
     ("MSP-PODCAST_0002_0007.wav", "C", "Train", "12")]


def write_msp_podcast(root, partitions=False):
    """`root/Audios/*.wav` and `root/Labels/labels_consensus.csv` in the
    release's layout (the rows of `MSP_PODCAST_ROWS`, EmoAct = the row number
    / 10 + 1). With `partitions`, an older release: the CSV has no
    Split_Set, `root/Partitions.txt` gives it."""
    os.makedirs(os.path.join(root, "Labels"), exist_ok=True)
    lines = ["FileName,EmoClass,EmoAct,EmoVal,EmoDom,SpkrID,Gender"
             + ("" if partitions else ",Split_Set")]
    for number, (name, code, split, speaker) in enumerate(MSP_PODCAST_ROWS):
        write_tone(os.path.join(root, "Audios", name), seconds=0.3)
        lines.append(f"{name},{code},{number / 10 + 1:.1f},4.0,3.5,{speaker},Female"
                     + ("" if partitions else f",{split}"))
    with open(os.path.join(root, "Labels", "labels_consensus.csv"), "w") as handle:
        handle.write("\n".join(lines) + "\n")
    if partitions:
        with open(os.path.join(root, "Partitions.txt"), "w") as handle:
            handle.writelines(f"{split}; {name}\n" for name, _, split, _ in MSP_PODCAST_ROWS)
