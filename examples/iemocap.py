"""Train a speech-emotion Transformer re-parameterized for training, merge it,
check it, save it, export it.

    python examples/iemocap.py                                  # embedded demo corpus
    python examples/iemocap.py --iemocap-root IEMOCAP_full_release --epochs 60
    python examples/iemocap.py --hrf-expansion 4                # the paper's HRF

The training-time model has, by default, a foldable BatchNorm before each FFN's
first linear layer: on real speech, with this recipe (AdamW), it beat both the
plain model and the paper's HRF expansion (benchmarks/RESULTS.md).
`--hrf-expansion 4` trains the paper's HRF instead, `--hrf-norm none` the plain
model. Either way the merge leaves
exactly the plain model's shape and cost; below, "HRF model" is the
training-time model, whichever it is.

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
    deploy/                 the first fold's model for devices: 16 kHz waveforms in,
                            probabilities out (front end, normalization, merged
                            network, softmax; `keras_hrf.deploy`) as model.keras,
                            saved_model/, model.tflite, model_int8.tflite and
                            metadata.json; run it with examples/predict.py

SavedModel and LiteRT need the TensorFlow or JAX backend (Keras exports
tf_saved_model from those two; LiteRT of the deployable model, TensorFlow);
on other backends they are skipped with a message. `--deploy-formats none`
exports nothing: the run writes the .keras files and metrics only.

Stopped runs resume: run the same command again. A fold that finished is
reused from fold_*/ (its result.json is written last); a fold stopped in the
middle continues from its last finished epoch (BackupAndRestore), keeping the
best weights and score it had reached. Other settings on the same --output
are refused rather than mixed.
"""

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import time

import numpy as np
from quiet_startup import filtered_stderr
from quiet_startup import import_keras

keras = import_keras()

import keras_hrf  # noqa: E402
from keras_hrf import datasets  # noqa: E402
from keras_hrf import distribute  # noqa: E402
from keras_hrf import deploy  # noqa: E402
from keras_hrf import training  # noqa: E402
from keras_hrf.atomic import atomic_path  # noqa: E402
from keras_hrf.audio import AudioError  # noqa: E402
from keras_hrf.datasets.demo import DEMO_NOTICE  # noqa: E402
from keras_hrf.features import PaddedBatches  # noqa: E402
from keras_hrf.metrics import classification_report  # noqa: E402

# The arguments a run is resumed with must equal those it started with.
RUN_SETTINGS = ("iemocap_root", "data_dir", "manifest", "speaker_pattern", "model", "size",
                "hrf_expansion", "hrf_norm", "epochs", "batch_size", "learning_rate",
                "max_seconds", "seed", "normalize", "optimizer", "weight_decay", "momentum",
                "clipnorm", "spec_augment", "length_window")


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Train a speech-emotion Transformer re-parameterized for training (a "
        "foldable BatchNorm before each FFN, or with --hrf-expansion the paper's HRF), merge it, "
        "check the merge, and save it as .keras, SavedModel and LiteRT. Run the same "
        "command again on the same --output to resume a run that was stopped.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    training.add_data_arguments(parser)
    model = parser.add_argument_group("model")
    model.add_argument("--model", choices=sorted(training.MODELS), default="conformer")
    model.add_argument("--size", choices=["lite", "large"], default="lite")
    model.add_argument("--hrf-expansion", type=float, default=0.0,
                       help="HRF width as a multiple of the model width (the paper's method: "
                            "4); 0: no expansion")
    model.add_argument("--hrf-norm", choices=["none", "batch"], default=None,
                       help="a BatchNorm before each FFN's first linear layer, folded into it "
                            "by the merge: alone without an expansion, inside it with one. "
                            "Default: 'batch' without an expansion (it scored best, "
                            "benchmarks/RESULTS.md), 'none' with one (the paper's HRF); "
                            "--hrf-norm none without an expansion trains the plain model")
    training.add_recipe_arguments(parser)
    train = parser.add_argument_group("cross-validation")
    train.add_argument("--folds", nargs="+", default=None,
                       help='"all", or the test groups, names or 1-based numbers (`1 2` or '
                       "`1,2`); default: all, or the first group for the demo")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--distribute", action="store_true",
                       help="data-parallel training over every device of this host (JAX: "
                       "keras.distribution.DataParallel; TensorFlow: MirroredStrategy); "
                       "--batch-size stays the global batch")
    parser.add_argument("--output", default=os.path.join("runs", "iemocap"), metavar="DIR")
    parser.add_argument("--deploy-formats", default=",".join(deploy.FORMATS), metavar="LIST",
                        help="formats of the deployable model in deploy/ (comma-separated: "
                        f"{', '.join(deploy.FORMATS)}), or 'none': no exports at all (neither "
                        "deploy/ nor saved_model/ and model.tflite), only the .keras files")
    args = parser.parse_args(argv)
    formats = [] if args.deploy_formats == "none" else args.deploy_formats.split(",")
    unknown = sorted(set(formats) - set(deploy.FORMATS))
    if unknown:
        parser.error(f"--deploy-formats: unknown {unknown}; choose from {list(deploy.FORMATS)} "
                     "or 'none'")
    args.deploy_formats = formats
    args.data_parallel = None  # main() sets it up for --distribute
    if args.hrf_expansion < 0:
        parser.error(f"--hrf-expansion must be >= 0, received {args.hrf_expansion}")
    if args.hrf_norm is None:
        args.hrf_norm = "none" if args.hrf_expansion else "batch"
    # None, as the models take it (and as runs recorded it before "none" existed).
    args.hrf_norm = None if args.hrf_norm == "none" else args.hrf_norm
    if args.learning_rate is None:
        args.learning_rate = training.default_learning_rate(args.model, args.size)
    args.recipe = training.recipe_from_args(parser, args)
    training.check_data_arguments(parser, args)
    return args


def predict(model, inputs, batch_size, batch_multiple=1):
    # Data-parallel batches repeat rows to fill every replica: keep the real ones.
    batches = PaddedBatches(inputs, batch_size=batch_size, batch_multiple=batch_multiple)
    return model.predict(batches.for_keras(), verbose=0)[: len(inputs)]


def load_finished_fold(fold_dir):
    """A fold finished by an earlier run of the same settings, or None."""
    paths = [os.path.join(fold_dir, name) for name in ("result.json", "hrf.keras", "merged.keras")]
    if not all(os.path.isfile(path) for path in paths):
        return None
    with open(paths[0]) as handle:
        result = json.load(handle)
    model = keras.saving.load_model(paths[1])
    merged = keras.saving.load_model(paths[2])
    print(f"Fold {result['test_group']}: finished by an earlier run; reusing {fold_dir}")
    return result, model, merged


def run_fold(args, manifest, classes, features, test_group, usable, fold_dir):
    with args.data_parallel.locally() if args.data_parallel else contextlib.nullcontext():
        finished = load_finished_fold(fold_dir)
    if finished is not None:
        return finished
    fold = training.prepare_fold(manifest, classes, features, test_group, usable,
                                 args.seed, args.max_seconds, normalize=args.normalize)
    keras.utils.set_random_seed(args.seed)
    data_parallel = args.data_parallel
    replicas = data_parallel.num_replicas if data_parallel else 1
    with data_parallel.scope() if data_parallel else contextlib.nullcontext():
        model = training.build_model(args.model, len(classes), fold.input_dim, args.recipe,
                                     size=args.size, hrf_expansion=args.hrf_expansion or None,
                                     hrf_norm=args.hrf_norm)
        training.compile_for_training(model, len(classes), args.recipe,
                                      fold.steps_per_epoch(args.batch_size), model_name=args.model)
    backup = os.path.join(fold_dir, "backup")
    resuming = os.path.isdir(backup)
    checkpoint = training.BestWeightsCheckpoint(
        os.path.join(fold_dir, "best.weights.h5"), monitor="val_ua", mode="max", resume=resuming
    )
    if resuming:
        print(f"Fold {test_group}: resuming from {backup} (best val_ua so far: {checkpoint.best})")
    train_options = training.batch_options(args, "train")
    padding = fold.padded_batches("train", args.batch_size, shuffle=True, seed=args.seed,
                                  **train_options).padding_fraction()
    print(f"Fold {test_group}: {padding:.0%} of the training batches' frames are padding"
          + (f" (--length-window {args.length_window})" if args.length_window else ""))
    started = time.time()
    with (data_parallel.synchronized_batch_norm(model) if data_parallel
          else contextlib.nullcontext()):
        model.fit(
            fold.batches("train", args.batch_size, shuffle=True, seed=args.seed, **train_options),
            validation_data=fold.batches("validation", args.batch_size,
                                         **training.batch_options(args, "validation")),
            epochs=args.epochs,
            shuffle=False,  # the batches reshuffle themselves each epoch
            verbose=training.fit_verbosity(),
            callbacks=[
                checkpoint,  # before the backup: a resumed run knows the best score
                keras.callbacks.BackupAndRestore(backup, double_checkpoint=True),
                keras.callbacks.TensorBoard(os.path.join(fold_dir, "logs")),
            ],
        )
    train_seconds = time.time() - started
    model.load_weights(checkpoint.filepath)

    # Several processes: each predicts, merges and saves with a copy on its own devices.
    with (data_parallel.for_prediction(model) if data_parallel
          else contextlib.nullcontext((model, 1))) as (model, prediction_multiple):
        test_inputs, test_labels = fold.inputs["test"], fold.labels["test"]
        hrf_logits = predict(model, test_inputs, args.batch_size, prediction_multiple)
        merged = keras_hrf.reparameterize(model)
        merged_logits = predict(merged, test_inputs, args.batch_size, prediction_multiple)
        difference = float(np.max(np.abs(hrf_logits - merged_logits)))
        scale = float(np.max(np.abs(hrf_logits)))
        hrf_report = classification_report(test_labels, hrf_logits.argmax(-1), classes)
        merged_report = classification_report(test_labels, merged_logits.argmax(-1), classes)
        print(f"Fold {test_group}: max |HRF - merged| logit difference {difference:.3e} "
              f"(logits up to {scale:.2f}); parameters HRF {model.count_params():,}, "
              f"merged {merged.count_params():,}")
        if difference > 1e-4 * max(scale, 1.0) or hrf_report["ua"] != merged_report["ua"]:
            raise SystemExit(f"Fold {test_group}: the merged model does not match the HRF model")
        result = {
            "test_group": test_group,
            "train_rows": len(fold.rows["train"]), "validation_rows": len(fold.rows["validation"]),
            "test_rows": len(fold.rows["test"]),
            "train_seconds": round(train_seconds, 1), "replicas": replicas,
            "train_padding_fraction": round(padding, 4),
            "best_epoch": checkpoint.best_epoch, "best_val_ua": checkpoint.best,
            "max_abs_logit_difference": difference,
            "params_hrf": model.count_params(), "params_merged": merged.count_params(),
            "hrf": hrf_report, "merged": merged_report,
            # "speaker": inputs were then standardized per speaker, with each speaker's own statistics.
            "normalization": {"mode": fold.normalization,
                              "mean": fold.mean.tolist(), "std": fold.std.tolist()},
        }
        for name, item in (("hrf.keras", model), ("merged.keras", merged)):
            with atomic_path(os.path.join(fold_dir, name)) as path:
                item.save(path)
        # Written last: its presence marks the fold as finished.
        with atomic_path(os.path.join(fold_dir, "result.json")) as path:
            with open(path, "w") as handle:
                json.dump(result, handle, indent=2)
        return result, model, merged


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


def export_deployable(merged, classes, first_result, args):
    """The first fold's merged model with its front end and normalization,
    waveforms in, probabilities out, in deploy/ (`keras_hrf.deploy`)."""
    normalization = first_result["normalization"]
    deployable = deploy.deployable_model(
        merged, classes, mean=normalization["mean"], std=normalization["std"],
        normalization=normalization["mode"],
    )
    info = deploy.export_deployable(
        deployable, os.path.join(args.output, "deploy"), classes, normalization["mode"],
        formats=args.deploy_formats,
        extra_metadata={"architecture": f"{args.model}-{args.size}",
                        "trained_on": training.data_description(args),
                        "test_group": first_result["test_group"],
                        "test_ua": first_result["merged"]["ua"]},
    )
    for name, reason in info["skipped"].items():
        print(f"deploy/: {name} skipped: {reason}")
    return {"files": {k: os.path.join("deploy", v) for k, v in info["files"].items()},
            "skipped": info["skipped"]}


def predict_command(output, export):
    files = export["deploy"]["files"]
    model = files.get("litert") or files.get("keras") or next(iter(files.values()))
    return f"python examples/predict.py {os.path.join(output, model)} your_recording.wav"


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
    with distribute.for_flag(args.distribute, args.batch_size) as args.data_parallel:
        return _main(args)


def _main(args):
    settings = training.run_settings(args, RUN_SETTINGS)
    training.check_run_settings(args.output, settings)
    os.makedirs(args.output, exist_ok=True)
    keras.utils.set_random_seed(args.seed)
    manifest, synthetic = training.load_data(args, training.demo_root(args.output), args.seed)
    classes = datasets.class_names(manifest)
    folds = training.choose_folds(manifest, args.folds, synthetic)
    print(f"{len(manifest)} utterances, classes {classes}, test folds {folds}; "
          f"backend {keras.backend.backend()}")
    if manifest.attrs.get("excluded"):
        print(f"Left out by the loader: {manifest.attrs['excluded']}")
    training.write_run_settings(args.output, settings)

    features, usable, skipped = training.extract_features(
        manifest, os.path.join(args.output, "feature_cache"), in_memory=not args.stream_features
    )

    fold_results, first = [], None
    for number, group in enumerate(folds, start=1):
        print(f"\n=== Fold {number}/{len(folds)}: test group {group}")
        fold_dir = os.path.join(args.output, f"fold_{group}")
        result, model, merged = run_fold(args, manifest, classes, features, group, usable, fold_dir)
        fold_results.append(result)
        if first is None:
            first = (model, merged)

    model, merged = first
    with args.data_parallel.locally() if args.data_parallel else contextlib.nullcontext():
        for name, item in (("hrf.keras", model), ("merged.keras", merged)):
            with atomic_path(os.path.join(args.output, name)) as path:
                item.save(path)
        if args.deploy_formats:
            with filtered_stderr():  # the LiteRT converter's progress notes
                export = export_merged(merged, args.output)
                export["deploy"] = export_deployable(merged, classes, fold_results[0], args)
        else:
            export = {"saved_model": None, "tflite": None,
                      "note": "no exports: --deploy-formats none"}

    summary = {
        kind: {m: float(np.mean([r[kind][m] for r in fold_results])) for m in ("wa", "ua", "macro_f1")}
        for kind in ("hrf", "merged")
    }
    report = {
        "data": training.data_description(args),
        "synthetic": synthetic,
        "backend": keras.backend.backend(),
        "args": {k: v for k, v in vars(args).items() if k not in ("recipe", "data_parallel")},
        "recipe": dataclasses.asdict(args.recipe),
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
          + (", saved_model/" if export.get("saved_model") else "")
          + (", model.tflite" if export.get("tflite") else "")
          + (", deploy/ (" + ", ".join(export["deploy"]["files"].values()) + ")"
             if "deploy" in export else ""))
    if "deploy" in export:
        print("Try the deployed model on a recording:\n  " + predict_command(args.output, export))
    return report


if __name__ == "__main__":
    try:
        main()
    except (datasets.DatasetError, AudioError) as error:
        sys.exit(f"iemocap.py: error: {error}")
