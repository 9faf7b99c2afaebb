"""Sinusoidal position encodings (Vaswani et al.; Transformer-XL's relative form)."""

import keras
import numpy as np
from keras import ops


def sinusoidal_encoding(positions, dim, dtype="float32", max_wavelength=10000.0):
    """Encodings of `positions` (a 1-D tensor of, possibly negative, floats):
    `(len(positions), dim)`, sines in even and cosines in odd channels."""
    positions = ops.cast(positions, "float32")
    half = (dim + 1) // 2
    inverse_frequencies = ops.convert_to_tensor(
        1.0 / (max_wavelength ** (np.arange(half, dtype="float32") * 2.0 / dim))
    )
    angles = ops.expand_dims(positions, 1) * ops.expand_dims(inverse_frequencies, 0)
    # Interleave sin and cos: (positions, half, 2) -> (positions, 2 * half).
    encoding = ops.stack([ops.sin(angles), ops.cos(angles)], axis=-1)
    encoding = ops.reshape(encoding, (-1, 2 * half))[:, :dim]
    return ops.cast(encoding, dtype)


@keras.saving.register_keras_serializable(package="keras_hrf")
class SinusoidalPositionalEncoding(keras.layers.Layer):
    """Adds absolute sinusoidal positions to `(batch, frames, dim)` inputs.

    Args:
        scale_inputs: Multiply the inputs by `sqrt(dim)` first (as the original
            Transformer and ConvTransformer do with their embeddings).
        max_wavelength: The longest wavelength of the sinusoids.
    """

    def __init__(self, scale_inputs=False, max_wavelength=10000.0, **kwargs):
        super().__init__(**kwargs)
        self.scale_inputs = scale_inputs
        self.max_wavelength = max_wavelength
        self.supports_masking = True
        # No weights: built from the start (as Keras' Dropout is), so a model
        # rebuilt from its config, a merged one among them, needs no eager build
        # pass on its first predict (on JAX, one compilation per op).
        self.built = True

    def call(self, inputs):
        frames, dim = ops.shape(inputs)[1], inputs.shape[-1]
        encoding = sinusoidal_encoding(
            ops.arange(frames), dim, self.compute_dtype, self.max_wavelength
        )
        if self.scale_inputs:
            inputs = inputs * ops.cast(ops.sqrt(float(dim)), inputs.dtype)
        return inputs + ops.expand_dims(encoding, 0)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "scale_inputs": self.scale_inputs,
            "max_wavelength": self.max_wavelength,
        }
