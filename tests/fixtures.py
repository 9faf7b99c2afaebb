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
