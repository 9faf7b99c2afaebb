"""Run a deployed speech-emotion model on recordings: the top emotion and the
probability of every class, per file (or per window of a long recording).

    python examples/predict.py runs/iemocap/deploy/model.tflite clip.wav more.flac
    python examples/predict.py runs/iemocap/deploy/model.keras clip.wav --json
    python examples/predict.py runs/iemocap/deploy/saved_model talk.wav --window-seconds 4

MODEL is what `keras_hrf.deploy.export_deployable` (and so `examples/iemocap.py`)
writes: `model.tflite` / `model_int8.tflite` (LiteRT), `model.keras`, or the
`saved_model/` folder, with `metadata.json` beside it. `model_int8.tflite` is the
network alone; its float32 front end `features.tflite` runs first. A `.tflite` model runs on
the `ai-edge-litert` interpreter with NumPy and soundfile only: no TensorFlow or
Keras is imported, as on a device (`pip install -e ".[litert]"`).

Audio: any format, sample rate and channel count that `keras_hrf.audio.load_audio`
reads (mixed to mono, resampled to the model's rate). A file that cannot be read
is reported and the others are still answered; the exit status is then 1.

A model trained with each speaker's own statistics (metadata `normalization`:
"speaker") needs that speaker's log-Mel mean and std: `--speaker-audio` names
some of their recordings (unlabeled); without it, all the files given are taken
as one speaker's.
"""

import argparse
import importlib.util
import json
import os
import sys

import numpy as np


def _load_audio_module():
    """keras_hrf.audio without running keras_hrf/__init__.py, which imports
    Keras: the LiteRT path must run where only NumPy, SciPy and soundfile are."""
    spec = importlib.util.find_spec("keras_hrf")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("predict.py: error: keras_hrf is not installed (pip install -e .)")
    path = os.path.join(list(spec.submodule_search_locations)[0], "audio.py")
    module_spec = importlib.util.spec_from_file_location("keras_hrf_audio", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


audio = _load_audio_module()


def find_metadata(model_path, explicit=None):
    candidates = [explicit] if explicit else [
        os.path.join(os.path.dirname(os.path.abspath(model_path.rstrip(os.sep))), "metadata.json")
    ]
    for path in candidates:
        if path and os.path.isfile(path):
            with open(path) as handle:
                return json.load(handle)
    sys.exit(f"predict.py: error: no metadata.json beside {model_path} (class names, sample "
             "rate); give --metadata")


class LiteRTRunner:
    """A `.tflite` model on the ai-edge-litert interpreter, one clip per call."""

    def __init__(self, path, threads):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            sys.exit('predict.py: error: .tflite models need ai-edge-litert: pip install -e ".[litert]"')
        self.interpreter = Interpreter(model_path=path, num_threads=threads)
        self.inputs = {}
        for detail in self.interpreter.get_input_details():
            for name in ("waveform", "num_samples", "speaker_mean", "speaker_std", "features"):
                if name in detail["name"]:
                    self.inputs[name] = detail["index"]
        self.output = self.interpreter.get_output_details()[0]["index"]
        self.shapes = None

    def __call__(self, inputs):
        shapes = {name: value.shape for name, value in inputs.items()}
        if shapes != self.shapes:
            for name, value in inputs.items():
                self.interpreter.resize_tensor_input(self.inputs[name], value.shape)
            self.interpreter.allocate_tensors()
            self.shapes = shapes
        for name, value in inputs.items():
            self.interpreter.set_tensor(self.inputs[name], value)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output)


class LiteRTInt8Runner:
    """The int8 LiteRT network behind its float32 front end (`features.tflite`):
    log-Mel frames, normalized here with the training statistics from the
    metadata (or the speaker's own), then the network and a softmax."""

    def __init__(self, path, metadata, threads):
        folder = os.path.dirname(os.path.abspath(path))
        self.front_end = LiteRTRunner(os.path.join(folder, metadata["litert_int8"]["front_end"]),
                                      threads)
        self.network = LiteRTRunner(path, threads)
        self.mean = np.asarray(metadata["litert_int8"].get("mean", []), "float32")
        self.std = np.asarray(metadata["litert_int8"].get("std", []), "float32")

    def __call__(self, inputs):
        frames = self.front_end({"waveform": inputs["waveform"],
                                 "num_samples": inputs["num_samples"]})
        mean = inputs["speaker_mean"] if "speaker_mean" in inputs else self.mean
        std = inputs["speaker_std"] if "speaker_std" in inputs else self.std
        logits = self.network({"features": ((frames - mean) / std).astype("float32")})
        shifted = np.exp(logits - logits.max(-1, keepdims=True))
        return shifted / shifted.sum(-1, keepdims=True)


class KerasRunner:
    def __init__(self, path):
        from quiet_startup import import_keras

        keras = import_keras()

        import keras_hrf  # noqa: F401 - registers the package's layers for loading

        self.model = keras.saving.load_model(path)

    def __call__(self, inputs):
        ordered = [inputs[tensor.name] for tensor in self.model.inputs]
        return np.asarray(self.model.predict_on_batch(ordered))


class SavedModelRunner:
    def __init__(self, path):
        from quiet_startup import filtered_stderr

        with filtered_stderr():
            import tensorflow as tf

            tf.config.list_physical_devices()
        self.tf = tf
        self.serve = tf.saved_model.load(path).signatures["serving_default"]

    def __call__(self, inputs):
        outputs = self.serve(**{name: self.tf.constant(value) for name, value in inputs.items()})
        return next(iter(outputs.values())).numpy()


def make_runner(path, metadata, threads):
    if os.path.isdir(path):
        return SavedModelRunner(path)
    int8 = metadata.get("litert_int8", {}).get("network")
    if int8 and os.path.basename(path) == int8:
        return LiteRTInt8Runner(path, metadata, threads)
    if path.endswith(".tflite"):
        return LiteRTRunner(path, threads)
    if path.endswith(".keras"):
        return KerasRunner(path)
    sys.exit(f"predict.py: error: {path}: expected a .tflite or .keras file or a SavedModel folder")


def windows(waveform, sample_rate, window_seconds):
    """(start_s, end_s, samples) pieces of `window_seconds`; a last piece
    shorter than a quarter window joins the one before it."""
    if not window_seconds:
        return [(0.0, len(waveform) / sample_rate, waveform)]
    size = max(1, int(round(window_seconds * sample_rate)))
    starts = list(range(0, len(waveform), size))
    if len(starts) > 1 and len(waveform) - starts[-1] < size // 4:
        starts.pop()
    bounds = starts[1:] + [len(waveform)]
    return [(a / sample_rate, b / sample_rate, waveform[a:b]) for a, b in zip(starts, bounds)]


def speaker_statistics(runner_path, waveforms, metadata):
    """The speaker's log-Mel mean and std, computed with the model's own
    front end: LiteRT's `features.tflite` beside the model, or the package."""
    features_model = os.path.join(os.path.dirname(os.path.abspath(runner_path)),
                                  metadata["files"].get("features_litert", "features.tflite"))
    if runner_path.endswith(".tflite"):
        runner = LiteRTRunner(features_model, threads=1)
        frames = [runner({"waveform": w[None], "num_samples": np.array([len(w)], "int32")})[0]
                  for w in waveforms]
        frames = np.concatenate(frames).astype(np.float64)
        return (frames.mean(0).astype("float32"),
                np.maximum(frames.std(0), 1e-5).astype("float32"))
    from keras_hrf import deploy

    settings = {k: metadata["features"][k] for k in
                ("sample_rate", "num_mel_bins", "frame_length_ms", "frame_step_ms")}
    return deploy.speaker_statistics(waveforms, settings)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="model.tflite, model_int8.tflite, model.keras or saved_model/")
    parser.add_argument("audio", nargs="+", help="recordings")
    parser.add_argument("--metadata", help="default: metadata.json beside the model")
    parser.add_argument("--window-seconds", type=float, default=None,
                        help="answer each window of this length (default: whole files)")
    parser.add_argument("--speaker-audio", nargs="+", default=None,
                        help="the speaker's recordings for a per-speaker model's statistics "
                             "(default: the files given)")
    parser.add_argument("--json", action="store_true", help="print JSON lines, one per row")
    parser.add_argument("--threads", type=int, default=1, help="LiteRT interpreter threads")
    args = parser.parse_args(argv)
    if args.window_seconds is not None and args.window_seconds <= 0:
        parser.error(f"--window-seconds must be positive; received {args.window_seconds}")
    return args


def main(argv=None):
    args = parse_args(argv)
    metadata = find_metadata(args.model, args.metadata)
    from quiet_startup import filtered_stderr  # no heavy imports: fine on a device

    with filtered_stderr():  # the interpreter's and TensorFlow's start-up notes
        runner = make_runner(args.model, metadata, args.threads)
        rows, failed = answer(args, metadata, runner)
    if args.json:
        for row in rows:
            print(json.dumps(row))
    else:
        print_table(rows, metadata["class_names"])
    return 1 if failed else 0


def answer(args, metadata, runner):
    """One row per file (or window): its probabilities, or its error."""
    classes, rate = metadata["class_names"], int(metadata["sample_rate"])

    rows, failed, clips = [], 0, {}
    for path in args.audio:
        try:
            clips[path] = audio.load_audio(path, rate)
        except audio.AudioError as error:
            failed += 1
            rows.append({"file": path, "error": str(error)})
            print(f"predict.py: {error}", file=sys.stderr)

    extra = {}
    if metadata.get("normalization") == "speaker":
        sources = args.speaker_audio or list(clips)
        try:
            waveforms = [clips[p] if p in clips else audio.load_audio(p, rate) for p in sources]
        except audio.AudioError as error:
            sys.exit(f"predict.py: error: --speaker-audio: {error}")
        if not waveforms:
            sys.exit("predict.py: error: no readable audio for the speaker's statistics")
        mean, std = speaker_statistics(args.model, waveforms, metadata)
        extra = {"speaker_mean": mean[None], "speaker_std": std[None]}

    for path, waveform in clips.items():
        for start, end, piece in windows(waveform, rate, args.window_seconds):
            inputs = {"waveform": piece[None].astype("float32"),
                      "num_samples": np.array([len(piece)], "int32"), **extra}
            probabilities = np.asarray(runner(inputs))[0]
            rows.append({"file": path, "start": round(start, 3), "end": round(end, 3),
                         "emotion": classes[int(np.argmax(probabilities))],
                         "probabilities": {c: float(p) for c, p in zip(classes, probabilities)}})
    rows.sort(key=lambda row: args.audio.index(row["file"]))
    return rows, failed


def print_table(rows, classes):
    width = max([len("file")] + [len(row["file"]) for row in rows])
    print(f"{'file':<{width}}  {'start':>7}  {'end':>7}  {'emotion':<10}  "
          + "  ".join(f"{c[:8]:>8}" for c in classes))
    for row in rows:
        if "error" in row:
            print(f"{row['file']:<{width}}  error: {row['error']}")
            continue
        print(f"{row['file']:<{width}}  {row['start']:7.2f}  {row['end']:7.2f}  "
              f"{row['emotion']:<10}  "
              + "  ".join(f"{row['probabilities'][c]:8.3f}" for c in classes))


if __name__ == "__main__":
    sys.exit(main())
