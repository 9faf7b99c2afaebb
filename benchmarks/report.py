"""What every benchmark script shares: the machine it ran on, its report file,
and XLA's FLOP count."""

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
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as handle:
        json.dump(report, handle, indent=2)
    print(f"Wrote {path}")
    return report


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
