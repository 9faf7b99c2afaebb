"""Data-parallel throughput on 1 and 2 devices, and the data pipeline against the step.

Each device count runs in its own process (the devices must exist before the
backend starts): JAX with `XLA_FLAGS=--xla_force_host_platform_device_count=N`,
TensorFlow with N logical CPU devices, or the machine's GPUs where it has them.
The lite Conformer with HRF r = 4 trains `keras_hrf.distribute.DataParallel`
steps at the same global batch on generated utterances of mixed lengths (cut at
4 s, as the recipe batches them), and the script reports steps per second after
the first (compiling) epoch, the scaling efficiency (steps/s on N devices over
N x steps/s on 1), and how many batches per second `PaddedBatches` assembles
from features in memory against how many the training step consumes.

Virtual CPU devices share the same cores: their efficiency says whether the
data-parallel path adds overhead, not what N real accelerators would gain.

`--memory` measures features larger than memory instead: it writes a corpus of
generated log-Mel features (`--corpus-gib`, 4x `--limit-gib` by default) into
an on-disk store, one `.npy` file per utterance, and trains the lite Conformer
from it as `--stream-features` does (`OnDiskFeatures`, streamed normalization
statistics, `FeatureView`, `PaddedBatches` reading ahead), while this process
watches the run's resident memory and stops it above `--limit-gib`. The same
corpus loaded into memory, as the default path does, is run under the same
limit. It also reports the padding with and without `length_window`.

    python benchmarks/scale.py --backend jax          # 1 and 2 devices
    python benchmarks/scale.py --quick                # fewer steps, JAX
    python benchmarks/scale.py --memory               # 2 GiB limit, 8 GiB of features
    python benchmarks/scale.py --padding emodb ravdess  # batches' padding, real corpora
"""

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from report import epoch_timer
from report import write_report


def child(devices, batch_size, steps, epochs, seconds):
    import keras
    import numpy as np

    if keras.backend.backend() == "tensorflow" and devices > 1:
        import tensorflow as tf

        if not tf.config.list_physical_devices("GPU"):
            cpu = tf.config.list_physical_devices("CPU")[0]
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * devices)
    import keras_hrf
    from keras_hrf import distribute
    from keras_hrf.features import PaddedBatches
    from keras_hrf.recipe import Recipe
    from keras_hrf.recipe import compile_for_training

    data_parallel = distribute.DataParallel() if devices > 1 else None
    rng = np.random.default_rng(0)
    rows = batch_size * steps
    lengths = rng.integers(150, int(seconds * 100) + 1, size=rows)
    features = [rng.normal(size=(n, 80)).astype("float32") for n in lengths]
    labels = np.arange(rows) % 4
    recipe = Recipe(epochs=epochs)
    with data_parallel.scope() if data_parallel else contextlib.nullcontext():
        keras.utils.set_random_seed(0)
        model = keras_hrf.Conformer(4, size="lite", hrf_expansion=4.0,
                                    spec_augment=recipe.spec_augment_options())
        compile_for_training(model, 4, recipe, steps_per_epoch=steps, model_name="conformer")
    timer = epoch_timer()
    times = timer.seconds

    batches = PaddedBatches(features, labels, batch_size, shuffle=True, max_frames=400)
    with data_parallel.synchronized_batch_norm(model) if data_parallel else contextlib.nullcontext():
        model.fit(batches.for_keras(), epochs=epochs, verbose=0, shuffle=False,
                  callbacks=[timer])
    later = float(np.median(times[1:]))
    started = time.perf_counter()
    for _ in range(3):
        for index in range(len(batches)):
            batches[index]
    pipeline = 3 * len(batches) / (time.perf_counter() - started)
    return {"devices": data_parallel.num_replicas if data_parallel else 1,
            "first_epoch_s": round(times[0], 2), "median_later_epoch_s": round(later, 3),
            "train_steps_per_s": round(steps / later, 3),
            "pipeline_batches_per_s": round(pipeline, 1)}


def write_store(folder, gib, seed=0):
    """Generated log-Mel-like features, 1.5 to 8 s an utterance, one `.npy`
    file each, until they hold `gib` GiB; returns (paths, lengths)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    paths, lengths, written = [], [], 0
    os.makedirs(folder, exist_ok=True)
    while written < gib * 2**30:
        frames = int(rng.integers(150, 801))
        features = rng.standard_normal((frames, 80), dtype=np.float32) * 4.0 - 30.0
        paths.append(os.path.join(folder, f"{len(paths):07d}.npy"))
        np.save(paths[-1], features)
        lengths.append(frames)
        written += features.nbytes
    return paths, lengths


def memory_child(mode, store, batch_size, steps, epochs, seconds):
    """Train from the store on disk ("disk"), or load it first ("memory")."""
    import json as json_lib
    import resource

    import keras
    import numpy as np

    import keras_hrf
    from keras_hrf.features import FeatureView
    from keras_hrf.features import OnDiskFeatures
    from keras_hrf.features import PaddedBatches
    from keras_hrf.features import fit_normalization
    from keras_hrf.recipe import Recipe
    from keras_hrf.recipe import compile_for_training

    with open(os.path.join(store, "index.json")) as handle:
        index = json_lib.load(handle)
    features = OnDiskFeatures(index["paths"], index["lengths"])
    if mode == "memory":  # what extract() returns by default: every utterance in memory
        features = [features[i] for i in range(len(features))]
    rows = list(range(len(features)))
    labels = np.arange(len(rows)) % 4
    started = time.perf_counter()
    mean, std = fit_normalization(features[i] for i in rows)
    statistics_s = time.perf_counter() - started
    max_frames = int(seconds * 100)
    view = FeatureView(features, rows, mean, std, max_frames)
    padding = {}
    for window in (None, 32):
        batches = PaddedBatches(view, labels, batch_size, shuffle=True, length_window=window)
        padding["none" if window is None else f"length_window_{window}"] = round(
            batches.padding_fraction(), 4)
    batches = PaddedBatches(view, labels, batch_size, shuffle=True, length_window=32,
                            read_ahead=4)
    recipe = Recipe(epochs=epochs)
    keras.utils.set_random_seed(0)
    model = keras_hrf.Conformer(4, size="lite", hrf_expansion=4.0,
                                spec_augment=recipe.spec_augment_options())
    compile_for_training(model, 4, recipe, steps_per_epoch=steps, model_name="conformer")
    timer = epoch_timer()
    model.fit(batches.for_keras(), epochs=epochs, steps_per_epoch=steps, verbose=0,
              shuffle=False, callbacks=[timer])
    later = float(np.median(timer.seconds[1:]))
    reader = PaddedBatches(view, labels, batch_size, shuffle=True, length_window=32)
    started = time.perf_counter()
    for number in range(3 * steps):
        reader[number % len(reader)]
    pipeline = 3 * steps / (time.perf_counter() - started)
    return {"mode": mode, "utterances": len(rows),
            "normalization_statistics_s": round(statistics_s, 1),
            "padding_fraction": padding,
            "first_epoch_s": round(timer.seconds[0], 2), "median_later_epoch_s": round(later, 3),
            "train_steps_per_s": round(steps / later, 3),
            "pipeline_batches_per_s": round(pipeline, 1),
            "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)}


def _resident_gib(pid):
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        return 0.0
    return 0.0


def run_under_limit(command, env, limit_gib):
    """Run `command`, stopping it when its resident memory passes `limit_gib`;
    returns (its last JSON line or None, peak GiB seen, stopped?, seconds)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    peak, stopped = 0.0, False
    while process.poll() is None:
        peak = max(peak, _resident_gib(process.pid))
        if peak > limit_gib:
            process.kill()
            stopped = True
            break
        time.sleep(0.1)
    out, err = process.communicate()
    seconds = time.perf_counter() - started
    if stopped:
        return None, peak, True, seconds
    if process.returncode:
        raise SystemExit(f"{command[-1]} failed:\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1]), peak, False, seconds


def memory_main(args, argv):
    store = args.store or tempfile.mkdtemp(prefix="scale_store_")
    corpus_gib = args.corpus_gib or 4 * args.limit_gib
    started = time.perf_counter()
    paths, lengths = write_store(store, corpus_gib)
    with open(os.path.join(store, "index.json"), "w") as handle:
        json.dump({"paths": paths, "lengths": lengths}, handle)
    write_s = time.perf_counter() - started
    print(f"{len(paths)} utterances, {corpus_gib:g} GiB of features written to {store} "
          f"in {write_s:.0f} s", flush=True)
    env = {**os.environ, "KERAS_BACKEND": args.backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    runs = []
    try:
        for mode in ("disk", "memory"):
            command = [sys.executable, os.path.abspath(__file__), "--memory-child", mode,
                       "--store", store, "--batch-size", str(args.batch_size),
                       "--seconds", str(args.seconds), "--steps", str(args.steps),
                       "--epochs", str(args.epochs)]
            row, peak, stopped, seconds = run_under_limit(command, env, args.limit_gib)
            row = {"mode": mode, **(row or {}), "peak_rss_seen_gib": round(peak, 3),
                   "stopped_at_limit": stopped, "wall_s": round(seconds, 1)}
            runs.append(row)
            print(row, flush=True)
    finally:
        if not args.store:
            shutil.rmtree(store, ignore_errors=True)
    name = f"scale_memory_{args.backend}" + ("_quick" if args.quick else "") + ".json"
    output = args.output or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                         name)
    return write_report(output, __file__, argv, args.machine_note, backend=args.backend,
                        limit_gib=args.limit_gib, corpus_features_gib=corpus_gib,
                        utterances=len(paths), store_write_s=round(write_s, 1),
                        global_batch=args.batch_size, longest_seconds=args.seconds,
                        steps_per_epoch=args.steps, epochs=args.epochs, runs=runs,
                        note="resident memory polled every 0.1 s by the parent, which stops "
                             "a run above the limit; the store was just written, so reads "
                             "come from the page cache (not counted as resident), not a "
                             "cold disk")


SHARED_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir,
                           "shared", "data")


def padding_main(args, argv):
    """The padding share of the recipe's training batches on real corpora, with
    and without `length_window`: lengths from the extracted features, mean
    over 5 epochs' shuffles."""
    from keras_hrf import datasets
    from keras_hrf.features import FeatureExtractor
    from keras_hrf.features import OnDiskFeatures
    from keras_hrf.features import PaddedBatches

    loaders = {"emodb": datasets.load_emodb, "ravdess": datasets.load_ravdess}
    rows = []
    for corpus in args.padding:
        manifest = loaders[corpus](os.path.join(SHARED_DATA, corpus))
        with tempfile.TemporaryDirectory() as cache:
            features, skipped = FeatureExtractor(cache_dir=cache).extract(
                manifest, progress=False, in_memory=False)
        usable = [i for i in range(len(features)) if features.paths[i] is not None]
        lengths = OnDiskFeatures([features.paths[i] for i in usable],
                                 features.lengths[usable])  # lengths only: nothing is read
        labels = [0] * len(usable)
        for seconds in (args.seconds, None):
            for window in (None, 32):
                batches = PaddedBatches(lengths, labels, args.batch_size, shuffle=True,
                                        max_frames=None if seconds is None else int(seconds * 100),
                                        length_window=window)
                shares = []
                for _ in range(5):
                    shares.append(batches.padding_fraction())
                    batches.on_epoch_end()
                row = {"corpus": corpus, "utterances": len(usable), "skipped": len(skipped),
                       "cut_seconds": seconds, "length_window": window,
                       "padding_fraction": round(sum(shares) / len(shares), 4)}
                rows.append(row)
                print(row, flush=True)
    output = args.output or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                         "padding.json")
    return write_report(output, __file__, argv, args.machine_note, batch_size=args.batch_size,
                        frame_multiple=100, rows=rows,
                        note="share of the training batches' frames that are padding (each "
                             "batch padded to its longest utterance, rounded up to 1 s), "
                             "mean over 5 shuffled epochs")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 steps an epoch, 3 epochs")
    parser.add_argument("--backend", choices=["jax", "tensorflow"], default="jax")
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-size", type=int, default=16, help="the global batch")
    parser.add_argument("--seconds", type=float, default=4.0, help="longest utterance")
    parser.add_argument("--steps", type=int, default=10, help="steps an epoch")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--machine-note", help="what else ran on the machine")
    parser.add_argument("--output", default=None, help="default: benchmarks/results/"
                        "scale_<backend>.json (--quick: scale_<backend>_quick.json)")
    memory = parser.add_argument_group("features larger than memory (--memory)")
    memory.add_argument("--memory", action="store_true",
                        help="measure training from the on-disk store against a memory limit")
    memory.add_argument("--limit-gib", type=float, default=2.0,
                        help="resident memory a run may use")
    memory.add_argument("--corpus-gib", type=float, default=None,
                        help="features to generate (default: 4x --limit-gib)")
    memory.add_argument("--store", default=None,
                        help="folder for the generated store (default: a temporary one, "
                        "removed afterwards)")
    parser.add_argument("--padding", nargs="+", choices=["emodb", "ravdess"],
                        help="instead: the training batches' padding on these corpora "
                        "(../shared/data), cut at --seconds and uncut, with and without "
                        "length_window")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--memory-child", choices=["disk", "memory"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.epochs = 4, 3
        if args.memory and args.corpus_gib is None:
            args.limit_gib, args.corpus_gib = 1.5, 0.5
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child, args.store, args.batch_size,
                                      args.steps, args.epochs, args.seconds)))
        return None
    if args.memory:
        return memory_main(args, argv)
    if args.padding:
        return padding_main(args, argv)
    if args.child:
        print(json.dumps(child(args.child, args.batch_size, args.steps, args.epochs,
                               args.seconds)))
        return None

    rows = []
    for devices in args.devices:
        command = [sys.executable, os.path.abspath(__file__), "--child", str(devices),
                   "--batch-size", str(args.batch_size), "--seconds", str(args.seconds),
                   "--steps", str(args.steps), "--epochs", str(args.epochs)]
        env = {**os.environ, "KERAS_BACKEND": args.backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
        if args.backend == "jax":
            env["XLA_FLAGS"] = " ".join(filter(None, [
                env.get("XLA_FLAGS"), f"--xla_force_host_platform_device_count={devices}"]))
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode:
            raise SystemExit(f"{devices} device(s) failed:\n{done.stderr[-3000:]}")
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(row, flush=True)
    single = next((r for r in rows if r["devices"] == 1), None)
    for row in rows:
        if single:
            row["scaling_efficiency"] = round(
                row["train_steps_per_s"] / (row["devices"] * single["train_steps_per_s"]), 3)
        row["pipeline_over_step"] = round(row["pipeline_batches_per_s"]
                                          / row["train_steps_per_s"], 1)
    print(json.dumps(rows, indent=2))
    name = f"scale_{args.backend}" + ("_quick" if args.quick else "") + ".json"
    output = args.output or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                         name)
    return write_report(output, __file__, argv, args.machine_note, backend=args.backend,
                        global_batch=args.batch_size, longest_seconds=args.seconds,
                        steps_per_epoch=args.steps, epochs=args.epochs, rows=rows,
                        note="virtual CPU devices share the same cores: the efficiency shows "
                             "the data-parallel path's overhead, not an accelerator's gain")


if __name__ == "__main__":
    main()
