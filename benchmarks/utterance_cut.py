"""What cutting utterances at N seconds removes and saves, before any training.

For a corpus (the harness's `--corpus`), from the recordings and the training
pipeline's own log-Mel frames and batches:
- how many clips are longer than the cut, the share of all frames cut away, and
  how much of that is speech: the frames past the cut whose energy (10 ms of
  the waveform) is within 30 dB of the clip's loudest frame;
- the padded frames a training epoch computes (`PaddedBatches`, batch 16,
  shuffled, padded to a multiple of one second as training does), with and
  without the cut: what the cut saves in model work.

It says whether a cut could cost accuracy, not whether it does; the harness's
`--max-seconds` measures that.

    python benchmarks/utterance_cut.py --corpus ravdess --seconds 4
    python benchmarks/utterance_cut.py --corpus ravdess --seconds 4 --quick   # 200 clips
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from accuracy import CORPORA  # noqa: E402
from accuracy import HERE  # noqa: E402
from report import write_report  # noqa: E402


def speech_past(waveform, sample_rate, seconds, floor_db=-30.0):
    """(frames past `seconds`, of them within `floor_db` of the loudest) in 10 ms frames."""
    hop = int(0.01 * sample_rate)
    frames = len(waveform) // hop
    energy = np.square(waveform[: frames * hop].reshape(frames, hop)).mean(axis=1) + 1e-12
    level = 10 * np.log10(energy / energy.max())
    past = level[int(round(seconds * 100)):]
    return len(past), int(np.sum(past > floor_db))


def padded_frames(lengths, max_frames, batch_size, epochs, seed=0):
    """Frames per epoch that training computes: `PaddedBatches` as `fit` sees them."""
    from keras_hrf.features import PaddedBatches

    stand_ins = [np.zeros((n, 1), np.float32) for n in lengths]  # only the lengths matter
    batches = PaddedBatches(stand_ins, np.zeros(len(lengths)), batch_size=batch_size,
                            shuffle=True, max_frames=max_frames, seed=seed)
    total = 0
    for _ in range(epochs):
        total += sum(int(np.prod(batches[i][0].shape[:2])) for i in range(len(batches)))
        batches.on_epoch_end()
    return total / epochs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", choices=sorted(CORPORA), default="ravdess")
    parser.add_argument("--data-root", default=None, help="default: the corpus in ../shared/data")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="the first 200 clips")
    parser.add_argument("--output", default=None,
                        help="default: benchmarks/results/utterance_cut_<corpus>_<seconds>s.json")
    args = parser.parse_args(argv)

    from keras_hrf import datasets
    from keras_hrf import training
    from keras_hrf.audio import load_audio

    root = args.data_root or CORPORA[args.corpus]["root"]
    manifest = datasets.load_ravdess(root) if args.corpus == "ravdess" else datasets.load_emodb(root)
    if args.quick:
        manifest = manifest.iloc[:200]
    features, usable, skipped = training.extract_features(
        manifest, os.path.join(HERE, "results", "accuracy", CORPORA[args.corpus]["output"],
                               "scratch", "feature_cache"))
    # Unreadable clips are named by extract_features and left out, as training does.
    lengths = [len(features[i]) for i in usable]
    paths = [manifest["path"].iat[i] for i in usable]
    cut_frames = int(round(args.seconds * 100))
    past_total = past_speech = longer = 0
    for path, frames in zip(paths, lengths):
        if frames <= cut_frames:
            continue
        longer += 1
        waveform = load_audio(path, 16000)
        past, speech = speech_past(waveform, 16000, args.seconds)
        past_total += past
        past_speech += speech
    full = padded_frames(lengths, None, args.batch_size, epochs=5)
    cut = padded_frames(lengths, cut_frames, args.batch_size, epochs=5)
    result = {
        "clips": len(lengths), "clips_skipped": len(skipped), "clips_longer": longer,
        "seconds": {"min": min(lengths) / 100, "median": float(np.median(lengths)) / 100,
                    "max": max(lengths) / 100},
        "share_of_frames_cut": float(sum(max(n - cut_frames, 0) for n in lengths) / sum(lengths)),
        "frames_past_cut_within_30db": past_speech, "frames_past_cut": past_total,
        "padded_frames_per_epoch": {"uncut": full, "cut": cut},
        "padded_frames_saved_share": 1 - cut / full,
    }
    print(f"{args.corpus}: {len(lengths)} clips of {result['seconds']['min']:.2f} to "
          f"{result['seconds']['max']:.2f} s (median {result['seconds']['median']:.2f}); "
          f"{longer} longer than {args.seconds:g} s")
    print(f"cut away: {100 * result['share_of_frames_cut']:.1f} % of all frames; of the "
          f"{past_total} 10 ms frames past the cut, {past_speech} are within 30 dB of their "
          f"clip's loudest")
    print(f"padded frames a training epoch computes: {full:.0f} uncut, {cut:.0f} cut "
          f"({100 * result['padded_frames_saved_share']:.1f} % fewer)")
    output = args.output or os.path.join(
        HERE, "results", f"utterance_cut_{args.corpus}_{args.seconds:g}s"
                         f"{'_quick' if args.quick else ''}.json")
    return write_report(output, __file__, argv, corpus=args.corpus, cut_seconds=args.seconds,
                        batch_size=args.batch_size, **result)


if __name__ == "__main__":
    main()
