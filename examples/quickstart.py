"""Train a small Transformer-style classifier with HRF, merge it, check, save.

Runs on generated (synthetic) sequences, so it needs no dataset:

    python examples/quickstart.py --output runs/quickstart

It prints the HRF and merged parameter counts, the largest difference between
their outputs, and writes `hrf.keras` and `merged.keras` to `--output`.
"""

import argparse
import os

from quiet_startup import import_keras

keras = import_keras()
import numpy as np  # noqa: E402

import keras_hrf  # noqa: E402


def synthetic_sequences(samples, frames, features, classes, seed):
    """Sequences whose class is the channel group with the most energy."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=samples)
    x = rng.normal(size=(samples, frames, features)).astype("float32")
    group = features // classes
    for i, label in enumerate(labels):
        x[i, :, label * group : (label + 1) * group] *= 2.5
    return x, labels


def build_model(frames, features, classes, model_dim, expansion):
    """Dense projection, one pre-LN feed-forward block (HRF in front of its
    first linear layer when `expansion` is set), mean pooling, classifier."""
    inputs = keras.Input((frames, features), name="features")
    x = keras.layers.Dense(model_dim, name="project")(inputs)
    h = keras.layers.LayerNormalization(name="ffn_norm")(x)
    if expansion:
        h = keras_hrf.HRFDense(
            4 * model_dim,
            expansion_units=round(expansion * model_dim),
            activation="swish",
            name="ffn_in",
        )(h)
    else:
        h = keras.layers.Dense(4 * model_dim, activation="swish", name="ffn_in")(h)
    h = keras.layers.Dense(model_dim, name="ffn_out")(h)
    x = keras.layers.Add(name="residual")([x, h])
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    outputs = keras.layers.Dense(classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="quickstart")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=5, help="training epochs (default 5)")
    parser.add_argument(
        "--hrf-expansion", type=float, default=4.0,
        help="HRF width as a multiple of the model width (default 4)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--output", default=os.path.join("runs", "quickstart"),
        help="directory for hrf.keras and merged.keras (default runs/quickstart)",
    )
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    frames, features, classes, model_dim = 40, 24, 4, 32
    x, y = synthetic_sequences(1024, frames, features, classes, args.seed)
    x_val, y_val = synthetic_sequences(256, frames, features, classes, args.seed + 1)
    print(f"Data: synthetic sequences ({len(x)} train, {len(x_val)} validation), not speech.")

    model = build_model(frames, features, classes, model_dim, args.hrf_expansion)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x, y, validation_data=(x_val, y_val), epochs=args.epochs, batch_size=32, verbose=2)

    merged = keras_hrf.reparameterize(model)
    hrf_logits = model.predict(x_val, verbose=0)
    merged_logits = merged.predict(x_val, verbose=0)
    difference = float(np.max(np.abs(hrf_logits - merged_logits)))
    plain = build_model(frames, features, classes, model_dim, expansion=None)
    hrf_accuracy = float(np.mean(hrf_logits.argmax(-1) == y_val))
    merged_accuracy = float(np.mean(merged_logits.argmax(-1) == y_val))

    print(f"Backend: {keras.backend.backend()}")
    print(f"Parameters: HRF {model.count_params():,}  merged {merged.count_params():,}  "
          f"plain {plain.count_params():,}")
    print(f"Validation accuracy: HRF {hrf_accuracy:.4f}  merged {merged_accuracy:.4f}")
    print(f"Max |HRF - merged| logit difference: {difference:.3e}")
    if merged.count_params() != plain.count_params() or hrf_accuracy != merged_accuracy:
        raise SystemExit("The merged model does not match the HRF model.")

    os.makedirs(args.output, exist_ok=True)
    model.save(os.path.join(args.output, "hrf.keras"))
    merged.save(os.path.join(args.output, "merged.keras"))
    print(f"Wrote {args.output}/hrf.keras and {args.output}/merged.keras")


if __name__ == "__main__":
    main()
