"""Inference latency of plain, HRF (unmerged) and merged models; the merge time.

For each lite model (Conformer, ConvTransformer, SpeechFormer) and each Keras
backend: the plain model, the HRF model (r = 4, before merging) and the merged
model (`keras_hrf.reparameterize` of the HRF model), at batch 1 and 32 and for
1 s and 6 s of audio (100 and 600 frames of 80 log-Mel bins). Reported:
parameters, inference FLOPs (XLA cost analysis, from the JAX run), `.keras` file
size, the median `predict_on_batch` latency over repeated calls after warm-up,
and the ratios merged/plain (expected 1.00: the same graph) and unmerged/merged
(expected to follow the FLOP ratio). Each timing sample runs enough calls to
last at least 50 ms, and the three variants take turns sample by sample, so
that load on the machine reaches all three alike.

Also the merge itself: `keras_hrf.reparameterize` on each lite HRF model and on
a ~10 M-parameter Conformer (the large preset with 11 blocks).

    python benchmarks/latency.py             # every backend, every shape
    python benchmarks/latency.py --quick     # batch 1, 1 s and 6 s, fewer calls

Each backend runs in its own process (Keras picks its backend at import).
Models use Keras' default compile settings (`jit_compile="auto"`): XLA on
TensorFlow and JAX, eager on PyTorch.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from report import write_report
from report import xla_flops

MODELS = ("conformer", "convtransformer", "speechformer")
VARIANTS = ("plain", "hrf", "merged")


def _models(name, hrf_expansion):
    import keras

    import keras_hrf

    classes = {"conformer": keras_hrf.Conformer, "convtransformer": keras_hrf.ConvTransformer,
               "speechformer": keras_hrf.SpeechFormer}
    keras.utils.set_random_seed(0)
    plain = classes[name](4, size="lite")
    hrf = classes[name](4, size="lite", hrf_expansion=hrf_expansion)
    # Random weights: latency does not depend on their values.
    merged = keras_hrf.reparameterize(hrf)
    return {"plain": plain, "hrf": hrf, "merged": merged}


def _file_size(model):
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.keras")
        model.save(path)
        return os.path.getsize(path)


def _interleaved_latency(models, x, samples, warmup, min_sample_seconds=0.05):
    """Median seconds per `predict_on_batch` call for each model.

    Each sample times enough consecutive calls to last `min_sample_seconds`
    (a few-millisecond call alone is mostly timer and dispatch jitter), and the
    models take turns sample by sample, in a rotating order, so that load on
    the machine reaches all of them alike."""
    import numpy as np

    def call(model):
        np.asarray(model.predict_on_batch(x))  # waits for the result (JAX is asynchronous)

    single = {}
    for name, model in models.items():
        for _ in range(warmup):
            call(model)
        start = time.perf_counter()
        call(model)
        single[name] = time.perf_counter() - start
    calls = max(1, int(np.ceil(min_sample_seconds / min(single.values()))))
    times = {name: [] for name in models}
    names = list(models)
    for sample in range(samples):
        for name in names[sample % len(names):] + names[: sample % len(names)]:
            start = time.perf_counter()
            for _ in range(calls):
                call(models[name])
            times[name].append((time.perf_counter() - start) / calls)
    return {name: float(np.median(values)) for name, values in times.items()}, calls


def _merge_seconds(model, repeats):
    import numpy as np

    import keras_hrf

    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        keras_hrf.reparameterize(model)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def measure(backend, shapes, repeats, warmup, hrf_expansion, big_model):
    """Runs in a child process with KERAS_BACKEND=backend; prints JSON lines."""
    import keras
    import numpy as np

    import keras_hrf

    for name in MODELS:
        models = _models(name, hrf_expansion)
        info = {
            "kind": "model", "backend": backend, "model": name,
            "params": {v: m.count_params() for v, m in models.items()},
            "keras_bytes": {v: _file_size(m) for v, m in models.items()},
            "merge_seconds": _merge_seconds(models["hrf"], 3),
        }
        if backend == "jax":
            info["flops_per_second_of_audio"] = {v: xla_flops(m, 100) for v, m in models.items()}
        print(json.dumps(info), flush=True)
        for batch, seconds in shapes:
            x = np.random.default_rng(1).normal(size=(batch, int(seconds * 100), 80))
            latency, calls = _interleaved_latency(models, x.astype("float32"), repeats, warmup)
            print(json.dumps({
                "kind": "latency", "backend": backend, "model": name, "batch": batch,
                "seconds": seconds, "samples": repeats, "calls_per_sample": calls,
                "jit_compile": bool(models["plain"].jit_compile),
                "median_ms": {v: round(1000 * t, 3) for v, t in latency.items()},
            }), flush=True)
        keras.backend.clear_session()

    if big_model:
        keras.utils.set_random_seed(0)
        big = keras_hrf.Conformer(4, size="large", num_layers=11, hrf_expansion=hrf_expansion)
        merged = keras_hrf.reparameterize(big)
        print(json.dumps({
            "kind": "merge", "backend": backend, "model": "conformer large, 11 blocks",
            "params_hrf": big.count_params(), "params_merged": merged.count_params(),
            "merge_seconds": _merge_seconds(big, 3),
        }), flush=True)


def _ratio(a, b):
    return round(a / b, 3) if a and b else None


def summarize(rows):
    """Markdown tables from the JSON rows."""
    models = [r for r in rows if r["kind"] == "model"]
    flops = {r["model"]: r["flops_per_second_of_audio"] for r in models
             if "flops_per_second_of_audio" in r}
    lines = ["| backend | model | params plain / HRF / merged | .keras bytes plain / merged "
             "(ratio) | MFLOPs/s audio plain / HRF / merged | merge s |",
             "| --- | --- | --- | --- | --- | ---: |"]
    for r in models:
        p, k = r["params"], r["keras_bytes"]
        f = flops.get(r["model"])
        f_text = " / ".join(f"{f[v] / 1e6:.1f}" for v in VARIANTS) if f else "-"
        lines.append(
            f"| {r['backend']} | {r['model']} | {p['plain']:,} / {p['hrf']:,} / {p['merged']:,} | "
            f"{k['plain']:,} / {k['merged']:,} ({k['merged'] / k['plain']:.4f}) | {f_text} | "
            f"{r['merge_seconds']:.2f} |")
    lines += ["", "| backend | model | batch | audio s | plain ms | HRF ms | merged ms | "
              "merged / plain | HRF / merged | FLOPs HRF / merged |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in (r for r in rows if r["kind"] == "latency"):
        m = r["median_ms"]
        f = flops.get(r["model"])
        lines.append(
            f"| {r['backend']} | {r['model']} | {r['batch']} | {r['seconds']:g} | "
            f"{m['plain']:.2f} | {m['hrf']:.2f} | {m['merged']:.2f} | "
            f"{_ratio(m['merged'], m['plain']):.3f} | {_ratio(m['hrf'], m['merged']):.3f} | "
            f"{(_ratio(f['hrf'], f['merged']) if f else float('nan')):.3f} |")
    merges = [r for r in rows if r["kind"] == "merge"]
    if merges:
        lines += ["", "| backend | model | params while training | params merged | merge s |",
                  "| --- | --- | ---: | ---: | ---: |"]
        for r in merges:
            lines.append(f"| {r['backend']} | {r['model']} | {r['params_hrf']:,} | "
                         f"{r['params_merged']:,} | {r['merge_seconds']:.2f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="batch 1 only, 1 s and 6 s, 5 samples; no 10 M merge")
    parser.add_argument("--backends", nargs="+", default=["tensorflow", "jax", "torch"],
                        choices=["tensorflow", "jax", "torch"])
    parser.add_argument("--hrf-expansion", type=float, default=4.0)
    parser.add_argument("--output", default="benchmarks/results/latency.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        shapes, repeats, warmup = [(1, 1.0), (1, 6.0)], 5, 2
    else:
        shapes, repeats, warmup = [(1, 1.0), (1, 6.0), (32, 1.0), (32, 6.0)], 25, 3

    if args.child:
        measure(args.child, shapes, repeats, warmup, args.hrf_expansion, not args.quick)
        return None

    rows = []
    for backend in args.backends:
        print(f"Measuring {backend} ...", flush=True)
        command = [sys.executable, __file__, "--child", backend,
                   "--hrf-expansion", str(args.hrf_expansion)] + (["--quick"] if args.quick else [])
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode:
            raise SystemExit(f"{backend} run failed:\n{done.stderr[-3000:]}")
        rows += [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    table = summarize(rows)
    print(table)
    return write_report(args.output, __file__, argv, hrf_expansion=args.hrf_expansion,
                        rows=rows)


if __name__ == "__main__":
    main()
