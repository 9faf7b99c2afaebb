"""Train a speech-emotion Transformer with HRF, merge it, check it, save it, export it.

    python examples/iemocap.py                                  # embedded demo corpus
    python examples/iemocap.py --iemocap-root IEMOCAP_full_release --epochs 60

For each test fold (leave-one-group-out: IEMOCAP sessions, speakers elsewhere) it
trains the HRF model (progress bar, TensorBoard logs, the best checkpoint by
validation UA, BackupAndRestore so that a killed run resumes), evaluates it,
merges it with `keras_hrf.reparameterize`, checks that the merged model gives
the same logits and the same metrics, and evaluates that too. Then it writes
to --output, each file atomically:

    metrics.json            WA, UA, macro-F1 per fold and mean, HRF and merged
    confusion_matrix.svg    of the merged model, summed over the folds
    hrf.keras, merged.keras the first fold's models (fold_*/ holds every fold's)
    saved_model/            the merged model, `model.export(format="tf_saved_model")`
    model.tflite            LiteRT, converted from that SavedModel

SavedModel and LiteRT need the TensorFlow or JAX backend (Keras exports
tf_saved_model from those two); on PyTorch they are skipped with a message.
"""

import argparse
import json
import os
import sys
import time

import keras
import numpy as np

import keras_hrf
from keras_hrf import datasets
from keras_hrf import features as feature_lib
from keras_hrf.atomic import atomic_path
from keras_hrf.audio import AudioError
from keras_hrf.datasets.demo import DEMO_NOTICE
from keras_hrf.datasets.demo import make_demo_corpus
from keras_hrf.metrics import UnweightedAccuracy
from keras_hrf.metrics import classification_report

MODELS = {
    "conformer": keras_hrf.Conformer,
    "convtransformer": keras_hrf.ConvTransformer,
    "speechformer": keras_hrf.SpeechFormer,
}


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Train a speech-emotion Transformer with HRF, merge it (deHRF), "
        "check the merge, and save it as .keras, SavedModel and LiteRT.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    data = parser.add_argument_group("data (none of them: the embedded synthetic demo corpus)")
    source = data.add_mutually_exclusive_group()
    source.add_argument("--iemocap-root", metavar="PATH",
                        help="IEMOCAP_full_release folder (4-class protocol, session folds)")
    source.add_argument("--data-dir", metavar="DIR",
                        help="one sub-folder of audio files per class")
    source.add_argument("--manifest", metavar="CSV",
                        help="CSV with path,label[,start,end,speaker,group,split]")
    data.add_argument("--speaker-pattern", metavar="REGEX",
                      help="with --data-dir: regex whose first group in a file name is the "
                      "speaker (the fold unit)")
    model = parser.add_argument_group("model")
    model.add_argument("--model", choices=sorted(MODELS), default="conformer")
    model.add_argument("--size", choices=["lite", "large"], default="lite")
    model.add_argument("--hrf-expansion", type=float, default=4.0,
                       help="HRF width as a multiple of the model width; 0 trains the plain model")
    model.add_argument("--hrf-norm", choices=["batch"], default=None,
                       help="BatchNorm inside each HRF expansion")
    training = parser.add_argument_group("training")
    training.add_argument("--epochs", type=int, default=15)
    training.add_argument("--batch-size", type=int, default=16)
    training.add_argument("--learning-rate", type=float, default=1e-3)
    training.add_argument("--max-seconds", type=float, default=7.5,
                          help="cut longer utterances to this length")
    training.add_argument("--folds", default=None,
                          help='"all", or a comma-separated list of test groups (names or '
                          "1-based numbers); default: all, or the first group for the demo")
    training.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=os.path.join("runs", "iemocap"), metavar="DIR")
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1 or args.max_seconds <= 0:
        parser.error("--epochs, --batch-size and --max-seconds must be positive")
    if args.hrf_expansion < 0:
        parser.error(f"--hrf-expansion must be >= 0, received {args.hrf_expansion}")
    if args.speaker_pattern and not args.data_dir:
        parser.error("--speaker-pattern goes with --data-dir")
    return args


def load_manifest(args):
    if args.iemocap_root:
        return datasets.load_iemocap(args.iemocap_root), False
    if args.data_dir:
        return datasets.from_folder(args.data_dir, speaker_pattern=args.speaker_pattern), False
    if args.manifest:
        return datasets.read_manifest(args.manifest), False
    print(DEMO_NOTICE)
    root = os.path.join(args.output, "demo_corpus")
    return make_demo_corpus(root, clips_per_class=24, speakers=4, seed=args.seed), True


def choose_folds(manifest, requested, synthetic):
    groups = sorted(g for g in manifest["group"].unique() if g)
    if len(groups) < 2:
        raise SystemExit(
            "Cross-validation needs at least two groups (sessions or speakers) in the "
            f"manifest's `group` column; found {groups}. For --data-dir, give "
            "--speaker-pattern."
        )
    if requested is None:
        requested = groups[0] if synthetic else "all"
    if requested == "all":
        return groups
    chosen = []
    for item in requested.split(","):
        item = item.strip()
        if item in groups:
            chosen.append(item)
        elif item.isdigit() and 1 <= int(item) <= len(groups):
            chosen.append(groups[int(item) - 1])
        else:
            raise SystemExit(f"--folds: unknown group {item!r}; the groups are {groups}")
    return chosen


def split_rows(manifest, test_group, usable, seed):
    """Test: the test group. Validation: 10 % of the other rows, stratified by
    class (checkpoint selection). Training: the rest."""
    rng = np.random.default_rng(seed)
    test = [i for i in usable if manifest["group"].iat[i] == test_group]
    rest = [i for i in usable if manifest["group"].iat[i] != test_group]
    validation = []
    for label in sorted(set(manifest["label"].iloc[rest])):
        rows = [i for i in rest if manifest["label"].iat[i] == label]
        rng.shuffle(rows)
        validation += rows[: max(1, len(rows) // 10)]
    train = sorted(set(rest) - set(validation))
    return train, sorted(validation), test


def predict(model, inputs, batch_size):
    return model.predict(feature_lib.PaddedBatches(inputs, batch_size=batch_size), verbose=0)


def run_fold(args, manifest, classes, features, test_group, usable, fold_dir):
    labels = np.array([classes.index(label) for label in manifest["label"]])
    train, validation, test = split_rows(manifest, test_group, usable, args.seed)
    trained_classes = {classes[i] for i in labels[train]}
    missing = [c for c in classes if c not in trained_classes]
    if missing:
        raise SystemExit(f"Fold {test_group}: the training rows hold no example of {missing}")
    absent = sorted(set(classes) - {classes[i] for i in labels[test]})
    if absent:
        print(f"Fold {test_group}: no test example of {absent}; UA and macro-F1 leave them out")
    mean, std = feature_lib.fit_normalization([features[i] for i in train])
    max_frames = int(round(args.max_seconds * 100))
    prepared = {i: feature_lib.normalize(features[i][:max_frames], mean, std) for i in usable}

    keras.utils.set_random_seed(args.seed)
    model = MODELS[args.model](
        len(classes), input_dim=features[usable[0]].shape[-1], size=args.size,
        hrf_expansion=args.hrf_expansion or None, hrf_norm=args.hrf_norm,
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(args.learning_rate, weight_decay=1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy", UnweightedAccuracy(len(classes))],
        # XLA on TensorFlow compiles each new batch shape for longer than these
        # small models train; JAX always compiles, PyTorch runs eagerly.
        jit_compile=False if keras.backend.backend() == "tensorflow" else "auto",
    )
    best = os.path.join(fold_dir, "best.weights.h5")
    started = time.time()
    model.fit(
        feature_lib.PaddedBatches([prepared[i] for i in train], labels[train],
                                  args.batch_size, shuffle=True, seed=args.seed),
        validation_data=feature_lib.PaddedBatches([prepared[i] for i in validation],
                                                  labels[validation], args.batch_size),
        epochs=args.epochs,
        verbose=1 if sys.stdout.isatty() else 2,
        callbacks=[
            keras.callbacks.ModelCheckpoint(best, monitor="val_ua", mode="max",
                                            save_best_only=True, save_weights_only=True),
            keras.callbacks.BackupAndRestore(os.path.join(fold_dir, "backup")),
            keras.callbacks.TensorBoard(os.path.join(fold_dir, "logs")),
        ],
    )
    train_seconds = time.time() - started
    model.load_weights(best)

    test_inputs = [prepared[i] for i in test]
    hrf_logits = predict(model, test_inputs, args.batch_size)
    merged = keras_hrf.reparameterize(model)
    merged_logits = predict(merged, test_inputs, args.batch_size)
    difference = float(np.max(np.abs(hrf_logits - merged_logits)))
    scale = float(np.max(np.abs(hrf_logits)))
    hrf_report = classification_report(labels[test], hrf_logits.argmax(-1), classes)
    merged_report = classification_report(labels[test], merged_logits.argmax(-1), classes)
    print(f"Fold {test_group}: max |HRF - merged| logit difference {difference:.3e} "
          f"(logits up to {scale:.2f}); parameters HRF {model.count_params():,}, "
          f"merged {merged.count_params():,}")
    if difference > 1e-4 * max(scale, 1.0) or hrf_report["ua"] != merged_report["ua"]:
        raise SystemExit(f"Fold {test_group}: the merged model does not match the HRF model")
    for name, item in (("hrf.keras", model), ("merged.keras", merged)):
        with atomic_path(os.path.join(fold_dir, name)) as path:
            item.save(path)
    return {
        "test_group": test_group,
        "train_rows": len(train), "validation_rows": len(validation), "test_rows": len(test),
        "train_seconds": round(train_seconds, 1),
        "max_abs_logit_difference": difference,
        "params_hrf": model.count_params(), "params_merged": merged.count_params(),
        "hrf": hrf_report, "merged": merged_report,
        "normalization": {"mean": mean.tolist(), "std": std.tolist()},
    }, model, merged


def export_merged(merged, output):
    """SavedModel and LiteRT of the merged model; returns notes for metrics.json."""
    backend = keras.backend.backend()
    if backend not in ("tensorflow", "jax"):
        note = (f"SavedModel and model.tflite skipped: Keras exports tf_saved_model from "
                f"the TensorFlow and JAX backends, not {backend}")
        print(note)
        return {"saved_model": None, "tflite": None, "note": note}
    import tensorflow as tf

    saved_model = os.path.join(output, "saved_model")
    # An inference artifact needs no gradients; jax2tf cannot trace some of
    # them with symbolic (any-length) shapes.
    options = {"jax2tf_kwargs": {"with_gradient": False}} if backend == "jax" else {}
    with atomic_path(saved_model) as path:
        merged.export(path, format="tf_saved_model", verbose=False, **options)
    try:
        flatbuffer, ops = _convert_to_litert(tf, saved_model)
    except Exception as error:  # noqa: BLE001 - the converter raises several types
        if backend == "tensorflow":
            raise
        # jax2tf SavedModels carry StableHLO; LiteRT cannot convert some of
        # its dynamic-shape ops (the relative attention's gather).
        first_line = str(error).strip().splitlines()[0][:300]
        note = (f"model.tflite not written: LiteRT could not convert the {backend} "
                f"backend's SavedModel ({first_line}). The TensorFlow backend makes it.")
        print(note)
        return {"saved_model": "saved_model", "tflite": None, "note": note}
    with atomic_path(os.path.join(output, "model.tflite")) as path:
        with open(path, "wb") as handle:
            handle.write(flatbuffer)
    print(f"Exported saved_model/ and model.tflite ({len(flatbuffer) / 1e6:.2f} MB, {ops})")
    return {"saved_model": "saved_model", "tflite": "model.tflite", "tflite_ops": ops}


def _convert_to_litert(tf, saved_model):
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
    try:
        return converter.convert(), "TFLITE_BUILTINS"
    except Exception:  # noqa: BLE001
        # Some TF ops have no LiteRT builtin; the Flex delegate runs them.
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS
        ]
        return converter.convert(), "TFLITE_BUILTINS + SELECT_TF_OPS (needs the Flex delegate)"


def confusion_svg(matrix, classes, title):
    """A small, dependency-free SVG picture of a confusion matrix."""
    matrix = np.asarray(matrix)
    n, cell, left, top = len(classes), 64, 110, 70
    size_x, size_y = left + n * cell + 20, top + n * cell + 60
    peak = max(int(matrix.max()), 1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{size_x}" height="{size_y}" '
        'font-family="sans-serif" font-size="13">',
        f'<rect width="{size_x}" height="{size_y}" fill="white"/>',
        f'<text x="{size_x / 2}" y="22" text-anchor="middle" font-size="15">{title}</text>',
        f'<text x="{left + n * cell / 2}" y="{size_y - 12}" text-anchor="middle">predicted</text>',
        f'<text x="18" y="{top + n * cell / 2}" transform="rotate(-90 18 {top + n * cell / 2})" '
        'text-anchor="middle">true</text>',
    ]
    for i, name in enumerate(classes):
        parts.append(f'<text x="{left - 8}" y="{top + i * cell + cell / 2 + 4}" '
                     f'text-anchor="end">{name}</text>')
        parts.append(f'<text x="{left + i * cell + cell / 2}" y="{top - 8}" '
                     f'text-anchor="middle">{name}</text>')
        for j in range(n):
            shade = int(255 - 200 * matrix[i, j] / peak)
            colour = f"rgb({shade},{shade},255)"
            parts.append(f'<rect x="{left + j * cell}" y="{top + i * cell}" width="{cell}" '
                         f'height="{cell}" fill="{colour}" stroke="#888"/>')
            ink = "white" if shade < 140 else "black"
            parts.append(f'<text x="{left + j * cell + cell / 2}" y="{top + i * cell + cell / 2 + 5}" '
                         f'text-anchor="middle" fill="{ink}">{int(matrix[i, j])}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.output, exist_ok=True)
    keras.utils.set_random_seed(args.seed)
    manifest, synthetic = load_manifest(args)
    classes = datasets.class_names(manifest)
    folds = choose_folds(manifest, args.folds, synthetic)
    print(f"{len(manifest)} utterances, classes {classes}, test folds {folds}; "
          f"backend {keras.backend.backend()}")
    if manifest.attrs.get("excluded"):
        print(f"Left out by the loader: {manifest.attrs['excluded']}")

    extractor = feature_lib.FeatureExtractor(cache_dir=os.path.join(args.output, "feature_cache"))
    features, skipped = extractor.extract(manifest)
    for index, path, message in skipped:
        print(f"Skipped {path}: {message}")
    if skipped:
        print(f"Skipped {len(skipped)} of {len(manifest)} clips (listed in metrics.json)")
    usable = [i for i, f in enumerate(features) if f is not None]

    fold_results, first = [], None
    for number, group in enumerate(folds, start=1):
        print(f"\n=== Fold {number}/{len(folds)}: test group {group}")
        fold_dir = os.path.join(args.output, f"fold_{group}")
        result, model, merged = run_fold(args, manifest, classes, features, group, usable, fold_dir)
        fold_results.append(result)
        if first is None:
            first = (model, merged)

    model, merged = first
    for name, item in (("hrf.keras", model), ("merged.keras", merged)):
        with atomic_path(os.path.join(args.output, name)) as path:
            item.save(path)
    export = export_merged(merged, args.output)

    summary = {
        kind: {m: float(np.mean([r[kind][m] for r in fold_results])) for m in ("wa", "ua", "macro_f1")}
        for kind in ("hrf", "merged")
    }
    report = {
        "data": ("demo (synthetic)" if synthetic else
                 args.iemocap_root or args.data_dir or args.manifest),
        "synthetic": synthetic,
        "backend": keras.backend.backend(),
        "args": vars(args),
        "classes": classes,
        "excluded_by_loader": manifest.attrs.get("excluded", {}),
        "skipped": [{"path": p, "error": m} for _, p, m in skipped],
        "folds": fold_results,
        "mean": summary,
        "deployed_fold": folds[0],
        "export": export,
    }
    with atomic_path(os.path.join(args.output, "metrics.json")) as path:
        with open(path, "w") as handle:
            json.dump(report, handle, indent=2)
    total = np.sum([r["merged"]["confusion_matrix"] for r in fold_results], axis=0)
    with atomic_path(os.path.join(args.output, "confusion_matrix.svg")) as path:
        with open(path, "w") as handle:
            handle.write(confusion_svg(total, classes, f"merged {args.model}-{args.size}, "
                                       f"{len(folds)} fold(s)"))
    print(f"\nMean over {len(folds)} fold(s): "
          + "; ".join(f"{k}: WA {v['wa']:.4f} UA {v['ua']:.4f} macro-F1 {v['macro_f1']:.4f}"
                      for k, v in summary.items()))
    if synthetic:
        print(DEMO_NOTICE)
    print(f"Wrote {args.output}/: metrics.json, confusion_matrix.svg, hrf.keras, merged.keras"
          + (", saved_model/, model.tflite" if export.get("tflite") else ""))
    return report


if __name__ == "__main__":
    try:
        main()
    except (datasets.DatasetError, AudioError) as error:
        sys.exit(f"iemocap.py: error: {error}")
