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

    python benchmarks/scale.py --backend jax          # 1 and 2 devices
    python benchmarks/scale.py --quick                # fewer steps, JAX
"""

import argparse
import contextlib
import json
import os
import subprocess
import sys
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
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.epochs = 4, 3
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
