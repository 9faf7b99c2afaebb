"""Parameters, FLOPs per second of audio and training-step time of the models.

For each model and size: parameters of the plain model, of the HRF model (the
training-time cost) and of the merged model (must equal plain); inference
FLOPs for one second of audio (100 frames of 10 ms) counted by XLA's cost
analysis (JAX backend; other backends print "-"); the median training-step
time (forward, backward, Adam update) over repeated steps after warm-up.

    python benchmarks/architectures.py            # full: every backend
    python benchmarks/architectures.py --quick    # fewer steps, lite only

Each backend runs in its own process (Keras picks its backend at import).
Results are printed as a table and written as JSON to --output.
"""

import argparse
import json
import os
import subprocess
import sys

from report import train_step_ms
from report import write_report
from report import xla_flops

MODELS = ("conformer", "convtransformer", "speechformer")


def measure(backend, sizes, hrf_expansion, batch_size, seconds, steps, warmup):
    """Runs in a child process with KERAS_BACKEND=backend."""
    import keras
    import numpy as np

    import keras_hrf

    classes = {
        "conformer": keras_hrf.Conformer,
        "convtransformer": keras_hrf.ConvTransformer,
        "speechformer": keras_hrf.SpeechFormer,
    }
    rows = []
    for name in MODELS:
        for size in sizes:
            keras.utils.set_random_seed(0)
            plain = classes[name](4, size=size)
            hrf = classes[name](4, size=size, hrf_expansion=hrf_expansion)
            x = np.random.default_rng(0).normal(size=(batch_size, int(seconds * 100), 80))
            x = x.astype("float32")
            y = np.arange(batch_size) % 4
            hrf(x[:1])
            merged = keras_hrf.reparameterize(hrf)
            row = {
                "backend": backend,
                "model": name,
                "size": size,
                "params_plain": plain.count_params(),
                "params_hrf": hrf.count_params(),
                "params_merged": merged.count_params(),
                "flops_per_second_plain": xla_flops(plain) if backend == "jax" else None,
                "flops_per_second_hrf": xla_flops(hrf) if backend == "jax" else None,
            }
            for label, model in (("plain", plain), ("hrf", hrf)):
                row[f"train_step_ms_{label}"] = train_step_ms(model, x, y, steps, warmup)
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="lite models, 3 timed steps")
    parser.add_argument(
        "--backends", nargs="+", default=["tensorflow", "jax", "torch"],
        choices=["tensorflow", "jax", "torch"],
    )
    parser.add_argument("--hrf-expansion", type=float, default=4.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0, help="audio per example")
    parser.add_argument("--output", default="benchmarks/results/architectures.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes = ["lite"] if args.quick else ["lite", "large"]
    steps, warmup = (3, 2) if args.quick else (10, 3)

    if args.child:
        measure(args.child, sizes, args.hrf_expansion, args.batch_size, args.seconds,
                steps, warmup)
        return

    rows = []
    for backend in args.backends:
        command = [sys.executable, __file__, "--child", backend,
                   "--hrf-expansion", str(args.hrf_expansion),
                   "--batch-size", str(args.batch_size), "--seconds", str(args.seconds)]
        if args.quick:
            command.append("--quick")
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode:
            raise SystemExit(f"{backend} run failed:\n{done.stderr[-3000:]}")
        rows += [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]

    print(f"{'backend':<11}{'model':<16}{'size':<6}{'params':>10}{'HRF params':>12}"
          f"{'merged':>10}{'GFLOPs/s audio':>16}{'step ms plain':>15}{'step ms HRF':>13}")
    flops = {(r["model"], r["size"]): r["flops_per_second_plain"] for r in rows
             if r["flops_per_second_plain"]}
    for r in rows:
        f = flops.get((r["model"], r["size"]))
        print(f"{r['backend']:<11}{r['model']:<16}{r['size']:<6}{r['params_plain']:>10,}"
              f"{r['params_hrf']:>12,}{r['params_merged']:>10,}"
              f"{(f / 1e9 if f else float('nan')):>16.3f}"
              f"{r['train_step_ms_plain']:>15.1f}{r['train_step_ms_hrf']:>13.1f}")
    write_report(args.output, __file__, argv, batch_size=args.batch_size,
                 seconds_per_example=args.seconds, hrf_expansion=args.hrf_expansion, rows=rows)


if __name__ == "__main__":
    main()
