"""The deployable LiteRT models (waveforms in) of models the accuracy harness
trained on every EmoDB speaker: file size, one-thread latency with the front end
included, and the UA change from int8.

For each fold of a harness run (`benchmarks/accuracy.py`, which keeps each run's
best weights in `results/accuracy/scratch/<run>/best.weights.h5`): rebuild the
model, load those weights, wrap it with `keras_hrf.deploy.deployable_model` (the
fold's training statistics), export LiteRT float32 and int8
(`export_deployable`), and run both on the held-out speaker's recordings with the
runners of `examples/predict.py` (the ai-edge-litert interpreter, one thread).

    python benchmarks/deployed.py --model convtransformer --seed 0
    python benchmarks/deployed.py --model convtransformer --seed 0 --quick   # 2 speakers

TensorFlow backend (LiteRT export). Needs `pip install -e ".[litert]"`.
"""

import argparse
import json
import os
import sys
import tempfile
import time

if os.environ.setdefault("KERAS_BACKEND", "tensorflow") != "tensorflow":
    sys.exit("benchmarks/deployed.py runs on the TensorFlow backend (LiteRT export)")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, os.pardir, "examples"))


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="convtransformer",
                        choices=["conformer", "convtransformer", "speechformer"])
    parser.add_argument("--config", default="lite_plain")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="2 speakers, 5 timed calls")
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per latency")
    parser.add_argument("--machine-note", default="",
                        help="what else ran on the machine meanwhile (recorded with the latency)")
    parser.add_argument("--output", default=None,
                        help="default: results/deployed/<model>_<config>_seed<seed>.json")
    return parser.parse_args(argv)


def median_ms(run, inputs, repeats):
    for _ in range(3):
        run(inputs)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run(inputs)
        times.append(time.perf_counter() - started)
    return round(1000 * sorted(times)[len(times) // 2], 2)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    import accuracy  # the harness: its corpus, folds, recipe and run names
    from quiet_startup import import_keras

    keras = import_keras()
    import numpy as np
    import predict  # examples/predict.py: the LiteRT runners an app would use
    import tensorflow as tf


    from keras_hrf import datasets
    from keras_hrf import deploy
    from keras_hrf import training
    from keras_hrf.audio import load_audio
    from keras_hrf.metrics import classification_report
    from report import write_report

    harness = accuracy.parse_args(["--model", args.model, "--configs", args.config,
                                   "--seeds", str(args.seed)])
    tag = accuracy.recipe_tag(harness, args.config)
    manifest = accuracy.load_corpus(harness)
    classes = datasets.class_names(manifest)
    folds = training.choose_folds(manifest, "all", synthetic=False)
    if args.quick:
        folds = folds[:2]
    def run_name(group):
        return (f"{harness.prefix}{args.model}_{args.config}_e{harness.epochs}{tag}"
                f"_seed{args.seed}_fold{group}")

    missing = [g for g in folds if not os.path.isfile(
        os.path.join(harness.output, "scratch", run_name(g), "best.weights.h5"))]
    if missing:
        sys.exit(f"deployed.py: no trained weights for speakers {missing} in "
                 f"{os.path.join(harness.output, 'scratch')}: run `python benchmarks/accuracy.py "
                 f"--model {args.model} --configs {args.config} --seeds {args.seed}` first")
    # One thread for TensorFlow too (the interpreters get theirs below); set
    # before TensorFlow runs anything, as when run as a script.
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    features, usable, skipped = training.extract_features(
        manifest, os.path.join(harness.output, "scratch", "feature_cache"))
    max_samples = int(round(harness.max_seconds * 16000))
    repeats = 5 if args.quick else args.repeats

    rows, sizes, latency = [], None, None
    for group in folds:
        run = run_name(group)
        weights = os.path.join(harness.output, "scratch", run, "best.weights.h5")
        fold = training.prepare_fold(manifest, classes, features, group, usable, args.seed,
                                     harness.max_seconds, normalize=harness.normalize)
        model = training.build_model(args.model, len(classes), fold.input_dim, harness.recipe,
                                     **accuracy.model_arguments(args.config, harness))
        model.load_weights(weights)
        deployable = deploy.deployable_model(model, classes, fold.mean, fold.std)
        with tempfile.TemporaryDirectory() as folder:
            deploy.export_deployable(deployable, folder, classes,
                                     formats=("litert", "litert_int8"))
            with open(os.path.join(folder, deploy.METADATA_FILE)) as handle:
                metadata = json.load(handle)
            float32 = predict.LiteRTRunner(os.path.join(folder, "model.tflite"), threads=1)
            int8 = predict.LiteRTInt8Runner(os.path.join(folder, "model_int8.tflite"), metadata,
                                            threads=1)
            test_rows = fold.rows["test"]
            outputs = {"float32": [], "int8": []}
            for row in test_rows:
                waveform = load_audio(manifest["path"].iat[row])[:max_samples]
                inputs = {"waveform": waveform[None], "num_samples":
                          np.array([len(waveform)], "int32")}
                outputs["float32"].append(float32(inputs)[0])
                outputs["int8"].append(int8(inputs)[0])
            labels = fold.labels["test"]
            reports = {k: classification_report(labels, np.argmax(v, -1), classes)
                       for k, v in outputs.items()}
            agreement = float(np.mean(np.argmax(outputs["float32"], -1)
                                      == np.argmax(outputs["int8"], -1)))
            if sizes is None:  # the same architecture in every fold
                sizes = {name: os.path.getsize(os.path.join(folder, name)) for name in
                         ("model.tflite", "model_int8.tflite", "features.tflite")}
                rng = np.random.default_rng(0)
                latency = {}
                for seconds in (1, 6):
                    wave = (0.1 * rng.normal(size=16000 * seconds)).astype("float32")
                    inputs = {"waveform": wave[None], "num_samples": np.array([len(wave)], "int32")}
                    latency[f"{seconds}s"] = {"float32_ms": median_ms(float32, inputs, repeats),
                                              "int8_ms": median_ms(int8, inputs, repeats)}
        with open(os.path.join(harness.output, "runs", run + ".json")) as handle:
            harness_ua = json.load(handle)["ua"]
        rows.append({"test_group": group, "test_rows": len(test_rows), "harness_ua": harness_ua,
                     "float32_ua": reports["float32"]["ua"], "int8_ua": reports["int8"]["ua"],
                     "int8_minus_float32_ua": reports["int8"]["ua"] - reports["float32"]["ua"],
                     "top1_agreement": agreement})
        print(f"fold {group}: UA harness {harness_ua:.4f}, LiteRT float32 "
              f"{reports['float32']['ua']:.4f}, int8 {reports['int8']['ua']:.4f}; top-1 "
              f"agreement {agreement:.3f}", flush=True)
        keras.backend.clear_session()

    mean = {key: float(np.mean([r[key] for r in rows])) for key in
            ("harness_ua", "float32_ua", "int8_ua", "int8_minus_float32_ua", "top1_agreement")}
    print(f"mean over {len(rows)} speakers: {mean}; sizes {sizes}; latency {latency}")
    output = args.output or os.path.join(
        HERE, "results", "deployed",
        f"{args.model}_{args.config}_seed{args.seed}{'_quick' if args.quick else ''}.json")
    os.makedirs(os.path.dirname(output), exist_ok=True)
    return write_report(output, __file__, argv, machine_note="one thread (LiteRT interpreter)"
                        + (f"; {args.machine_note}" if args.machine_note else ""),
                        model=args.model, config=args.config, seed=args.seed,
                        recipe_tag=tag, folds=rows, mean=mean, bytes=sizes,
                        latency_batch1=latency)


if __name__ == "__main__":
    main()
