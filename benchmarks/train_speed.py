"""Training-step time of the lite Conformer: each Keras backend against
torchaudio's Conformer of the same size in plain PyTorch.

The peer: torchaudio's `Conformer` encoder (4 blocks, width 96, 4 heads, FFN 384,
depthwise kernel 15, as the lite preset) behind the same front end (two 3x3
stride-2 Conv2d + ReLU, then a linear projection to 96) and the same head (mean
pooling, dropout, linear). Both sides: batch 8 of 3 s (300 frames x 80 log-Mel
bins), cross-entropy, Adam, the median of timed steps after warm-up steps, on
this machine's CPU with the runtimes' default thread counts. The Keras model is
timed as plain and as HRF (r = 4).

torchaudio's Conformer is pure PyTorch. The newest torchaudio on PyPI (2.11)
ships a C++ extension built for torch 2.11, while this project pins torch 2.13,
so the script loads `torchaudio/models/conformer.py` straight from the
installed package without importing torchaudio (and its extension):

    pip install --no-deps torchaudio==2.11.0      # the source of the peer
    python benchmarks/train_speed.py              # 20 timed steps after 5 warm-up
    python benchmarks/train_speed.py --quick      # 3 timed steps after 2 warm-up
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time

from report import train_step_ms
from report import write_report

BACKENDS = ("tensorflow", "jax", "torch")


def keras_steps(backend, batch, frames, steps, warmup):
    import keras
    import numpy as np

    import keras_hrf

    rows = []
    x = np.random.default_rng(0).normal(size=(batch, frames, 80)).astype("float32")
    y = np.arange(batch) % 4
    for label, expansion in (("plain", None), ("hrf", 4.0)):
        keras.utils.set_random_seed(0)
        model = keras_hrf.Conformer(4, size="lite", hrf_expansion=expansion)
        step_ms = train_step_ms(model, x, y, steps, warmup)
        rows.append({"implementation": f"keras_hrf Conformer lite ({backend})", "variant": label,
                     "backend": backend, "params": model.count_params(),
                     "jit_compile": bool(model.jit_compile),
                     "median_step_ms": step_ms})
    return rows


def load_torchaudio_conformer():
    spec = importlib.util.find_spec("torchaudio")  # locates it without importing it
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("torchaudio is not installed: pip install --no-deps torchaudio==2.11.0")
    path = os.path.join(list(spec.submodule_search_locations)[0], "models", "conformer.py")
    module_spec = importlib.util.spec_from_file_location("torchaudio_conformer", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    version = "unknown"
    try:
        from importlib.metadata import version as package_version

        version = package_version("torchaudio")
    except Exception:  # noqa: BLE001
        pass
    return module.Conformer, version


def torchaudio_steps(batch, frames, steps, warmup):
    import numpy as np
    import torch

    conformer_class, version = load_torchaudio_conformer()

    class Peer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.subsampling = torch.nn.Sequential(
                torch.nn.Conv2d(1, 32, 3, stride=2), torch.nn.ReLU(),
                torch.nn.Conv2d(32, 32, 3, stride=2), torch.nn.ReLU(),
            )
            self.projection = torch.nn.Linear(32 * 19, 96)
            self.encoder = conformer_class(input_dim=96, num_heads=4, ffn_dim=384, num_layers=4,
                                           depthwise_conv_kernel_size=15, dropout=0.1)
            self.dropout = torch.nn.Dropout(0.1)
            self.head = torch.nn.Linear(96, 4)

        def forward(self, x):
            x = self.subsampling(x[:, None])  # (batch, 32, time/4, 19)
            x = self.projection(x.permute(0, 2, 1, 3).flatten(2))
            lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.int64)
            x, _ = self.encoder(x, lengths)
            return self.head(self.dropout(x.mean(dim=1)))

    torch.manual_seed(0)
    model = Peer()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(batch, frames, 80)).astype("float32"))
    y = torch.arange(batch) % 4

    def step():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return [{"implementation": f"torchaudio {version} Conformer (PyTorch {torch.__version__}, eager)",
             "variant": "plain", "backend": "pytorch", "params": sum(p.numel() for p in model.parameters()),
             "median_step_ms": round(1000 * float(np.median(times)), 2)}]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 timed steps after 2 warm-up")
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--output", default="benchmarks/results/train_speed.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    steps, warmup = (3, 2) if args.quick else (20, 5)
    frames = int(args.seconds * 100)

    if args.child:
        rows = (torchaudio_steps(args.batch_size, frames, steps, warmup) if args.child == "peer"
                else keras_steps(args.child, args.batch_size, frames, steps, warmup))
        for row in rows:
            print(json.dumps(row), flush=True)
        return None

    rows = []
    for child in ["peer", *args.backends]:
        print(f"Measuring {child} ...", flush=True)
        command = [sys.executable, __file__, "--child", child, "--batch-size",
                   str(args.batch_size), "--seconds", str(args.seconds)] + (
                       ["--quick"] if args.quick else [])
        env = {**os.environ, "KERAS_BACKEND": "torch" if child == "peer" else child,
               "TF_CPP_MIN_LOG_LEVEL": "3"}
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode:
            raise SystemExit(f"{child} run failed:\n{done.stderr[-3000:]}")
        rows += [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    peer = rows[0]["median_step_ms"]
    print("| implementation | variant | params | median step ms | vs torchaudio |")
    print("| --- | --- | ---: | ---: | ---: |")
    for row in rows:
        row["ratio_to_torchaudio"] = round(row["median_step_ms"] / peer, 3)
        print(f"| {row['implementation']} | {row['variant']} | {row['params']:,} | "
              f"{row['median_step_ms']:.1f} | {row['ratio_to_torchaudio']:.2f} |")
    return write_report(args.output, __file__, argv, batch_size=args.batch_size,
                        seconds_per_example=args.seconds, timed_steps=steps,
                        warmup_steps=warmup, rows=rows)


if __name__ == "__main__":
    main()
