"""The field's classic reference: eGeMAPS functionals and a linear SVM.

eGeMAPSv02 functionals (88 per utterance) from audEERING's `opensmile` package,
which ships the openSMILE binary, on the same 16 kHz mono audio the networks
hear (`keras_hrf.audio.load_audio`); then scikit-learn's `LinearSVC` with
balanced class weights. Folds, training/validation split and metrics are the
accuracy harness's (`benchmarks/accuracy.py`: EmoDB leave-one-speaker-out,
RAVDESS 4 folds of 6 actors, or `--manifest`), under both normalizations:

    train    standardize with the training rows' mean and deviation
    speaker  standardize each speaker with that speaker's own (transductive, as
             `--normalize speaker` in the harness)

The SVM's C is chosen per fold from 1e-3 .. 1 by UA on the validation rows
(10 % of the training folds, stratified, as the harness holds out for
choosing the best epoch), and the SVM is trained on the other 90 %, as the
networks are; the test fold is never looked at. Functionals are cached under --output/scratch.

    pip install -e ".[bench]"
    python benchmarks/baseline.py --corpus emodb
    python benchmarks/baseline.py --corpus ravdess
    python benchmarks/baseline.py --quick              # EmoDB, 2 folds
"""

import argparse
import os
import sys
import time

import numpy as np

if __name__ == "__main__":
    # Before TensorFlow (which keras_hrf imports): the other way round, openSMILE's
    # native library crashes the process ("malloc(): invalid size") on Linux.
    import opensmile  # noqa: F401

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from accuracy import CORPORA  # noqa: E402
from accuracy import HERE  # noqa: E402
from report import write_report  # noqa: E402

C_VALUES = (1e-3, 1e-2, 1e-1, 1.0)


def egemaps_functionals(manifest, cache_dir):
    """`(rows, 88)` eGeMAPSv02 functionals of every manifest row, cached by
    file, size, modification time and segment."""
    import hashlib
    import json

    import opensmile

    from keras_hrf.audio import load_audio

    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                            feature_level=opensmile.FeatureLevel.Functionals)
    rows = []
    for row in manifest.to_dict("records"):
        start = None if np.isnan(row["start"]) else float(row["start"])
        end = None if np.isnan(row["end"]) else float(row["end"])
        stat = os.stat(row["path"])
        key = hashlib.sha1(json.dumps([os.path.abspath(row["path"]), stat.st_size,
                                       stat.st_mtime_ns, start, end, "eGeMAPSv02"])
                           .encode()).hexdigest()
        cached = os.path.join(cache_dir, key + ".npy")
        if os.path.isfile(cached):
            rows.append(np.load(cached))
            continue
        signal = load_audio(row["path"], 16000, start=start, end=end)
        values = smile.process_signal(signal, 16000).to_numpy(np.float64)[0]
        os.makedirs(cache_dir, exist_ok=True)
        np.save(cached, values)
        rows.append(values)
    return np.stack(rows), list(smile.feature_names)


def standardize(values, rows, statistics_rows):
    mean = values[statistics_rows].mean(axis=0)
    std = np.maximum(values[statistics_rows].std(axis=0), 1e-8)
    return (values[rows] - mean) / std


def normalized(values, manifest, parts, mode):
    """Every part standardized by the training rows' statistics, or (mode
    "speaker") each speaker by that speaker's own rows."""
    out = np.empty_like(values)
    train = parts["train"]
    for rows in parts.values():
        out[rows] = standardize(values, rows, train)
    if mode == "speaker":
        used = sorted(set().union(*map(set, parts.values())))
        speakers = manifest["speaker"].to_numpy()
        for speaker in sorted(set(speakers[used])):
            rows = [r for r in used if speakers[r] == speaker]
            out[rows] = standardize(values, rows, rows)
    return out


def run_fold(values, labels, manifest, classes, group, mode, seed):
    from sklearn.svm import LinearSVC

    from keras_hrf import training
    from keras_hrf.metrics import classification_report

    usable = list(range(len(manifest)))
    train, validation, test = training.split_rows(manifest, group, usable, seed)
    parts = {"train": train, "validation": validation, "test": test}
    x = normalized(values, manifest, parts, mode)

    def fit(c, rows):
        svm = LinearSVC(C=c, class_weight="balanced", max_iter=20000, random_state=seed)
        return svm.fit(x[rows], labels[rows])

    scores = {c: classification_report(labels[validation],
                                       fit(c, train).predict(x[validation]), classes)["ua"]
              for c in C_VALUES}
    best_c = max(C_VALUES, key=lambda c: (scores[c], -c))
    # Trained on the training rows only, as the networks are (the validation
    # rows only choose, C here, the best epoch there).
    svm = fit(best_c, train)
    report = classification_report(labels[test], svm.predict(x[test]), classes)
    return {"test_group": group, "normalize": mode, "C": best_c,
            "validation_ua_by_C": {str(c): s for c, s in scores.items()},
            "test_rows": len(test), "ua": report["ua"], "wa": report["wa"],
            "macro_f1": report["macro_f1"], "confusion_matrix": report["confusion_matrix"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    data = parser.add_mutually_exclusive_group()
    data.add_argument("--corpus", choices=sorted(CORPORA), default="emodb")
    data.add_argument("--manifest", metavar="CSV", help="any corpus with a group column")
    parser.add_argument("--data-root", default=None,
                        help="the corpus folder; default: ../shared/data/<corpus>")
    parser.add_argument("--folds", nargs="+", default=["all"],
                        help='"all" or the test groups (`1 2` or `1,2`)')
    parser.add_argument("--seed", type=int, default=0,
                        help="the validation split's seed (the harness's seed 0)")
    parser.add_argument("--quick", action="store_true", help="the first 2 folds")
    parser.add_argument("--output", default=os.path.join(HERE, "results", "baseline"))
    args = parser.parse_args(argv)
    if args.quick:
        args.folds = ["1", "2"]

    from keras_hrf import datasets
    from keras_hrf import training

    if args.manifest:
        corpus = os.path.splitext(os.path.basename(args.manifest))[0]
        manifest = datasets.read_manifest(args.manifest)
    else:
        corpus = args.corpus
        root = args.data_root or CORPORA[corpus]["root"]
        manifest = (datasets.load_ravdess(root) if corpus == "ravdess"
                    else datasets.load_emodb(root))
    classes = datasets.class_names(manifest)
    labels = np.array([classes.index(label) for label in manifest["label"]])
    folds = training.choose_folds(manifest, args.folds, synthetic=False)
    print(f"{corpus}: {len(manifest)} utterances, {len(classes)} classes, folds {folds}",
          flush=True)
    started = time.time()
    values, names = egemaps_functionals(manifest, os.path.join(args.output, "scratch", corpus))
    extraction_seconds = time.time() - started
    results, summary = [], {}
    for mode in training.NORMALIZATIONS:
        for group in folds:
            results.append(run_fold(values, labels, manifest, classes, group, mode, args.seed))
        runs = [r for r in results if r["normalize"] == mode]
        summary[mode] = {
            metric: {"mean": float(np.mean([r[metric] for r in runs])),
                     "std_over_folds": float(np.std([r[metric] for r in runs]))}
            for metric in ("ua", "wa", "macro_f1")}
        print(f"{mode:>8}: " + "  ".join(
            f"{m} {v['mean']:.4f} ±{v['std_over_folds']:.3f}" for m, v in summary[mode].items()),
              flush=True)
    import opensmile
    import sklearn

    name = f"{corpus}_quick.json" if args.quick else f"{corpus}.json"
    return write_report(
        os.path.join(args.output, name), __file__, argv, corpus=corpus, folds=folds,
        classes=classes, features=f"eGeMAPSv02 functionals ({len(names)}), opensmile "
        f"{opensmile.__version__}", classifier=f"LinearSVC, class_weight balanced, C from "
        f"{list(C_VALUES)} by validation UA; scikit-learn {sklearn.__version__}",
        extraction_seconds=round(extraction_seconds, 1), summary=summary, folds_detail=results)


if __name__ == "__main__":
    main()
