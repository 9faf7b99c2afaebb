"""On-device formats of the merged lite models: size, one-thread latency, accuracy.

For each lite model (Conformer, ConvTransformer, SpeechFormer): train it with
HRF (r = 4) on EmoDB (test speaker held out, the others train), merge it, then
measure each deployable form of the merged model:

    keras            the merged model, float32 (`.keras`)
    keras_int8       the merged model after Keras' `model.quantize("int8")`
    litert           LiteRT float32, converted from `model.export(format="tf_saved_model")`
    litert_int8      LiteRT with the converter's int8 weight quantization
                     (`tf.lite.Optimize.DEFAULT`, dynamic range)
    onnx             `model.export(format="onnx")`, run by onnxruntime

File size; median latency for batch 1 and 1 s / 6 s of audio on ONE CPU thread
(TensorFlow, the LiteRT interpreter and onnxruntime all limited to one thread);
UA on the held-out speaker and the change against float32 Keras, plus how many
test predictions agree with it.

    python benchmarks/ondevice.py            # 15 training epochs per model, 30 timed calls
    python benchmarks/ondevice.py --quick    # 2 epochs, 5 timed calls

TensorFlow backend only: LiteRT conversion and ONNX export go through it.
Needs `pip install -e ".[bench]"` (onnx, onnxruntime, tf2onnx).
"""

import argparse
import json
import os
import sys
import tempfile
import time

if os.environ.setdefault("KERAS_BACKEND", "tensorflow") != "tensorflow":
    sys.exit("benchmarks/ondevice.py runs on the TensorFlow backend (LiteRT and ONNX export)")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

# One thread for every runtime, before TensorFlow runs anything.
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)

import keras  # noqa: E402

import keras_hrf  # noqa: E402
from keras_hrf import datasets  # noqa: E402
from keras_hrf import training  # noqa: E402
from keras_hrf.metrics import classification_report  # noqa: E402
from report import write_report  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_EMODB = os.path.join(HERE, os.pardir, os.pardir, "shared", "data", "emodb")


class Runner:
    """One deployable form: `predict(x)` for a `(1, frames, 80)` float32 array."""

    def __init__(self, name, path, predict):
        self.name, self.path, self.predict = name, path, predict

    @property
    def size(self):
        if os.path.isdir(self.path):
            return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(self.path)
                       for f in fs)
        return os.path.getsize(self.path)


def keras_runner(name, model, folder):
    path = os.path.join(folder, f"{name}.keras")
    model.save(path)
    return Runner(name, path, lambda x: np.asarray(model.predict_on_batch(x)))


def litert_runner(name, saved_model, folder, quantize):
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    path = os.path.join(folder, f"{name}.tflite")
    with open(path, "wb") as handle:
        handle.write(converter.convert())
    interpreter = tf.lite.Interpreter(model_path=path, num_threads=1)
    entry = interpreter.get_input_details()[0]["index"]
    output = interpreter.get_output_details()[0]["index"]
    shape = [None]

    def predict(x):
        if shape[0] != x.shape:
            interpreter.resize_tensor_input(entry, x.shape)
            interpreter.allocate_tensors()
            shape[0] = x.shape
        interpreter.set_tensor(entry, x)
        interpreter.invoke()
        return interpreter.get_tensor(output)

    return Runner(name, path, predict)


def onnx_runner(name, model, folder):
    import onnxruntime

    path = os.path.join(folder, f"{name}.onnx")
    model.export(path, format="onnx", verbose=False)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    runner = Runner(name, path, lambda x: session.run(None, {input_name: x})[0])
    runner.predict(np.zeros((1, 100, 80), "float32"))  # fails here, not mid-measurement
    return runner


def median_latency_ms(runner, frames, repeats):
    x = np.random.default_rng(0).normal(size=(1, frames, 80)).astype("float32")
    for _ in range(3):
        runner.predict(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        runner.predict(x)
        times.append(time.perf_counter() - start)
    return round(1000 * float(np.median(times)), 3)


def train_merged(name, fold, epochs, folder):
    keras.utils.set_random_seed(0)
    recipe = training.Recipe(epochs=epochs)
    model = training.build_model(name, len(fold.classes), fold.input_dim, recipe,
                                 hrf_expansion=4.0)
    training.compile_for_training(model, len(fold.classes), recipe, fold.steps_per_epoch(16),
                                  model_name=name)
    checkpoint = training.BestWeightsCheckpoint(os.path.join(folder, f"{name}.weights.h5"))
    model.fit(fold.batches("train", 16, shuffle=True), validation_data=fold.batches("validation", 16),
              epochs=epochs, shuffle=False, verbose=0, callbacks=[checkpoint])
    model.load_weights(checkpoint.filepath)
    return keras_hrf.reparameterize(model)


def measure_model(name, fold, args, folder):
    merged = train_merged(name, fold, args.epochs, folder)
    runners, errors = [keras_runner("keras", merged, folder)], {}
    quantized = keras.saving.load_model(runners[0].path)
    quantized.quantize("int8")
    runners.append(keras_runner("keras_int8", quantized, folder))
    saved_model = os.path.join(folder, f"{name}_saved_model")
    merged.export(saved_model, format="tf_saved_model", verbose=False)
    for label, quantize in (("litert", False), ("litert_int8", True)):
        try:
            runners.append(litert_runner(label, saved_model, folder, quantize))
        except Exception as error:  # noqa: BLE001 - record why a format is missing
            errors[label] = str(error).strip().splitlines()[0][:300]
    try:
        runners.append(onnx_runner("onnx", merged, folder))
    except Exception as error:  # noqa: BLE001
        errors["onnx"] = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:300]}"

    test_inputs = [x[None].astype("float32") for x in fold.inputs["test"]]
    reference = None
    rows = []
    for runner in runners:
        predictions = np.array([int(np.argmax(runner.predict(x))) for x in test_inputs])
        if reference is None:
            reference = predictions
        report = classification_report(fold.labels["test"], predictions, fold.classes)
        row = {
            "model": name, "format": runner.name, "bytes": runner.size,
            "latency_ms_1s": median_latency_ms(runner, 100, args.repeats),
            "latency_ms_6s": median_latency_ms(runner, 600, args.repeats),
            "ua": report["ua"], "wa": report["wa"],
            "agreement_with_keras_float32": float(np.mean(predictions == reference)),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    for label, message in errors.items():
        row = {"model": name, "format": label, "error": message}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def table(rows):
    lines = ["| model | format | size (KB) | ms, 1 s audio | ms, 6 s audio | UA | ΔUA vs float32 "
             "| agreement |", "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    base = {r["model"]: r["ua"] for r in rows if r.get("format") == "keras"}
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['format']} | failed: {r['error'][:120]} |||||")
            continue
        lines.append(
            f"| {r['model']} | {r['format']} | {r['bytes'] / 1024:,.0f} | {r['latency_ms_1s']:.2f} | "
            f"{r['latency_ms_6s']:.2f} | {r['ua']:.4f} | {r['ua'] - base[r['model']]:+.4f} | "
            f"{r['agreement_with_keras_float32']:.3f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 epochs, 5 timed calls")
    parser.add_argument("--emodb", default=DEFAULT_EMODB)
    parser.add_argument("--models", nargs="+", default=sorted(training.MODELS),
                        choices=sorted(training.MODELS))
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--test-speaker", default="1", help="EmoDB speaker held out (name or number)")
    parser.add_argument("--output", default=os.path.join(HERE, "results", "ondevice.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.repeats = 2, 5

    manifest = datasets.load_emodb(args.emodb)
    classes = datasets.class_names(manifest)
    group = training.choose_folds(manifest, args.test_speaker, synthetic=False)[0]
    with tempfile.TemporaryDirectory() as folder:
        features, usable, _ = training.extract_features(manifest, os.path.join(folder, "cache"))
        fold = training.prepare_fold(manifest, classes, features, group, usable, 0, 4.0)
        rows = []
        for name in args.models:
            rows += measure_model(name, fold, args, folder)
    print(table(rows))
    return write_report(
        args.output, __file__, argv, machine_note="one thread per runtime",
        versions={"keras": keras.__version__, "tensorflow": tf.__version__},
        test_speaker=group, test_rows=len(fold.inputs["test"]), epochs=args.epochs, rows=rows,
    )


if __name__ == "__main__":
    main()
