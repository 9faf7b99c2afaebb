"""What evaluating the learning-rate schedule once per variable costs.

Keras' TensorFlow optimizers apply AdamW's decoupled weight decay variable by
variable and ask for the current rate each time, so the recipe's warm-up +
cosine schedule is traced once per variable (173 times a step for the lite
Conformer with HRF r = 4). `keras_hrf.recipe.Recipe.make_optimizer` returns
subclasses that evaluate it once a step on TensorFlow. This script trains the
same model on the same batches with both (each in its own process, the order
alternating) and reports the first epoch (tracing included) and the median
later epoch:

    python benchmarks/optimizer_overhead.py            # 3 repeats, 5 steps an epoch
    python benchmarks/optimizer_overhead.py --quick    # 1 repeat
"""

import argparse
import json
import os
import subprocess
import sys

from report import epoch_timer
from report import write_report

OPTIMIZERS = ("keras", "recipe")


def child(optimizer_kind, batch, frames, steps, epochs):
    import keras
    import numpy as np

    import keras_hrf
    from keras_hrf import recipe as recipe_lib

    if optimizer_kind == "keras":  # Keras' own class on the same schedule, nothing else changed
        recipe_lib.AdamW = keras.optimizers.AdamW
    keras.utils.set_random_seed(0)
    recipe = recipe_lib.Recipe(epochs=epochs)
    model = keras_hrf.Conformer(4, size="lite", hrf_expansion=4.0,
                                spec_augment=recipe.spec_augment_options())
    recipe_lib.compile_for_training(model, 4, recipe, steps_per_epoch=steps, model_name="conformer")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch * steps, frames, 80)).astype("float32")
    y = np.arange(batch * steps) % 4
    timer = epoch_timer()
    times = timer.seconds

    model.fit(x, y, batch_size=batch, epochs=epochs, verbose=0, callbacks=[timer])
    return {"optimizer": optimizer_kind, "class": type(model.optimizer).__module__ + "."
            + type(model.optimizer).__name__, "first_epoch_s": round(times[0], 2),
            "median_later_epoch_s": round(float(np.median(times[1:])), 3),
            "trainable_variables": len(model.trainable_variables)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 repeat instead of 3")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--steps", type=int, default=5, help="steps an epoch")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--machine-note", help="what else ran on the machine")
    parser.add_argument("--output", default=None, help="default: benchmarks/results/"
                        "optimizer_overhead.json (--quick: optimizer_overhead_quick.json)")
    parser.add_argument("--child", choices=OPTIMIZERS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    frames = int(args.seconds * 100)
    if args.child:
        print(json.dumps(child(args.child, args.batch_size, frames, args.steps, args.epochs)))
        return None

    rows = []
    for repeat in range(1 if args.quick else 3):
        order = OPTIMIZERS if repeat % 2 == 0 else OPTIMIZERS[::-1]
        for kind in order:
            command = [sys.executable, __file__, "--child", kind, "--batch-size",
                       str(args.batch_size), "--seconds", str(args.seconds), "--steps",
                       str(args.steps), "--epochs", str(args.epochs)]
            env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
            if done.returncode:
                raise SystemExit(f"{kind} run failed:\n{done.stderr[-3000:]}")
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append({"repeat": repeat, **row})
            print(row, flush=True)
    summary = {}
    for kind in OPTIMIZERS:
        mine = [r for r in rows if r["optimizer"] == kind]
        summary[kind] = {key: round(sum(r[key] for r in mine) / len(mine), 3)
                         for key in ("first_epoch_s", "median_later_epoch_s")}
    for key in ("first_epoch_s", "median_later_epoch_s"):
        summary[f"{key}_saved_fraction"] = round(1 - summary["recipe"][key] / summary["keras"][key], 3)
    print(json.dumps(summary, indent=2))
    output = args.output or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                         "optimizer_overhead_quick.json" if args.quick
                                         else "optimizer_overhead.json")
    return write_report(output, __file__, argv, args.machine_note, backend="tensorflow",
                        batch_size=args.batch_size, seconds_per_example=args.seconds,
                        steps_per_epoch=args.steps, epochs=args.epochs, rows=rows, summary=summary)


if __name__ == "__main__":
    main()
