"""What every benchmark script shares: the machine it ran on, its report file,
XLA's FLOP count and the training-step timer."""

import json
import os
import platform
import sys
import time


def machine(note=None):
    text = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"{platform.system()} {platform.release()}, Python {platform.python_version()}")
    return f"{text}, {note}" if note else text


def write_report(path, script, argv, machine_note=None, **fields):
    """Write `{command, machine, date, **fields}` as JSON to `path`; return it."""
    report = {
        "command": "python " + " ".join([os.path.relpath(script)] + list(argv or sys.argv[1:])),
        "machine": machine(machine_note),
        "date": time.strftime("%Y-%m-%d"),
        **fields,
    }
    # Imported here: keras_hrf imports keras, which the scripts configure first.
    from keras_hrf.atomic import atomic_path

    with atomic_path(path) as temporary:  # a stopped run leaves the old report whole
        with open(temporary, "w") as handle:
            json.dump(report, handle, indent=2)
    print(f"Wrote {path}")
    return report


def epoch_timer():
    """A Keras callback whose `seconds` list gets each epoch's wall time."""
    import keras  # here: the scripts configure the backend before importing Keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self.start)

    return EpochTimer()


def paired_differences(differences, min_pairs_for_test=2):
    """Mean, spread, wins/ties/losses and the Wilcoxon signed-rank p of paired
    differences (`None` below `min_pairs_for_test` pairs or when all are zero)."""
    import numpy as np
    from scipy import stats

    differences = np.asarray(differences, dtype=float)
    test = (len(differences) >= min_pairs_for_test and np.any(differences != 0))
    return {
        "pairs": len(differences), "mean_difference": float(differences.mean()),
        "std_difference": float(differences.std()),
        "wins": int(np.sum(differences > 0)), "ties": int(np.sum(differences == 0)),
        "losses": int(np.sum(differences < 0)),
        "wilcoxon_p": float(stats.wilcoxon(differences).pvalue) if test else None,
    }


def xla_flops(model, frames=100):
    """Inference FLOPs of `frames` frames (100 = one second of audio) at batch 1,
    by XLA's cost analysis of the jit-compiled function (JAX backend only)."""
    import jax
    import numpy as np

    x = np.zeros((1, frames, 80), "float32")
    state = ([v.value for v in model.trainable_variables],
             [v.value for v in model.non_trainable_variables])

    def forward(trainable, non_trainable, inputs):
        return model.stateless_call(trainable, non_trainable, inputs, training=False)[0]

    cost = jax.jit(forward).lower(*state, x).compile().cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0]
    return float(cost["flops"])


def train_step_ms(model, x, y, steps, warmup):
    """Median milliseconds of `model.train_on_batch(x, y)` (forward, backward,
    Adam update) over `steps` timed steps after `warmup` untimed ones, in which
    tracing and compilation happen. Compiles `model` with Adam and sparse
    cross-entropy on logits."""
    import keras
    import numpy as np

    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    for _ in range(warmup):
        model.train_on_batch(x, y)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    return round(1000.0 * float(np.median(times)), 2)
