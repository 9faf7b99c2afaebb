"""Small helpers shared by the tests."""

import keras
import numpy as np


def to_numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def infer(model, x):
    """Inference-mode outputs as float64 NumPy.

    On JAX a model runs through `predict` (one jit-compiled function): eager
    JAX compiles every op separately, which costs far more here."""
    if keras.backend.backend() == "jax" and isinstance(model, keras.Model):
        return model.predict(x, batch_size=len(x), verbose=0).astype(np.float64)
    return to_numpy(model(x, training=False)).astype(np.float64)


def fast_compile_options(many_steps=False):
    """The quickest way to run training steps on each backend. TensorFlow: a
    few steps run eagerly (tracing costs more), many in a traced function
    without XLA (whose compilation costs more than these tiny models gain).
    JAX: jit-compiled (eager JAX compiles every op separately). PyTorch: eager."""
    if keras.backend.backend() == "tensorflow":
        return {"jit_compile": False} if many_steps else {"run_eagerly": True}
    return {}


def relative_error(reference, other):
    """max |reference - other| / max |reference|: the merge error relative to
    the scale of the outputs (element-wise ratios explode near zero)."""
    reference = np.asarray(reference, np.float64)
    other = np.asarray(other, np.float64)
    assert reference.shape == other.shape, (reference.shape, other.shape)
    return float(np.max(np.abs(reference - other)) / np.max(np.abs(reference)))


def assert_relative_close(reference, other, tol):
    error = relative_error(reference, other)
    assert error <= tol, f"relative error {error:.3e} > {tol:.1e}"


def train_briefly(model, x, y, steps=3, learning_rate=1e-2):
    """A few optimizer steps on random data, so weights and BatchNorm moving
    statistics move away from their initial values."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate), loss="mse", **fast_compile_options()
    )
    batch_size = max(1, len(x) // steps)
    history = model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, shuffle=False)
    return history


def all_layers(model):
    return list(model._flatten_layers(include_self=False, recursive=True))
