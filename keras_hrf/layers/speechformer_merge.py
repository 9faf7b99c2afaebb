"""`SpeechFormerMerge`: SpeechFormer's merge block between stages."""

import keras
from keras import ops

from keras_hrf.layers.masking import zero_padded_frames


@keras.saving.register_keras_serializable(package="keras_hrf")
class SpeechFormerMerge(keras.layers.Layer):
    """Average `scale` consecutive frames, then `Linear(d -> round(d * expand))`
    and LayerNorm (Chen et al., Interspeech 2022).

    Time is zero-padded to a multiple of `scale` first. Unlike the reference
    code, which divides every window by `scale` (so padding dilutes the last
    window and changes with the batch's length), each window is averaged over
    its valid frames only; a window is valid when it holds at least one valid
    frame. Inputs shorter than `scale` become one frame.

    Args:
        scale: Frames merged into one (5, 5, 4 in the reference).
        expand: Width multiplier of the projection (1, or 2 in SpeechFormer-B).
        layer_norm_epsilon: Epsilon of the LayerNorm.
    """

    def __init__(self, scale, expand=1, layer_norm_epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        if isinstance(scale, bool) or not isinstance(scale, int) or scale <= 0:
            raise ValueError(
                "Received an invalid value for `scale`, expected a positive "
                f"integer. Received: scale={scale!r}"
            )
        self.scale = scale
        self.expand = expand
        self.layer_norm_epsilon = layer_norm_epsilon
        self.supports_masking = True

    def build(self, input_shape):
        self.output_dim = int(round(input_shape[-1] * self.expand))
        self.projection = keras.layers.Dense(
            self.output_dim, dtype=self.dtype_policy, name="projection"
        )
        self.projection.build((None, None, input_shape[-1]))
        self.norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name="norm"
        )
        self.norm.build((None, None, self.output_dim))

    def _windows(self, x):
        # (batch, frames, ...) -> (batch, ceil(frames / scale), scale, ...)
        frames = ops.shape(x)[1]
        # Unknown while Keras infers shapes symbolically; the padding does not
        # change the (unknown) window count then.
        extra = 0 if frames is None else (self.scale - frames % self.scale) % self.scale
        x = ops.pad(x, [[0, 0], [0, extra]] + [[0, 0]] * (len(x.shape) - 2))
        return ops.reshape(x, (ops.shape(x)[0], -1, self.scale) + tuple(x.shape[2:]))

    def call(self, inputs, mask=None):
        if mask is None:
            mask = ops.ones(ops.shape(inputs)[:2], dtype="bool")
        valid = self._windows(ops.cast(mask, inputs.dtype))  # (b, w, scale)
        sums = ops.sum(self._windows(zero_padded_frames(inputs, mask)), axis=2)
        counts = ops.sum(valid, axis=2, keepdims=True)
        means = sums / ops.maximum(counts, ops.cast(1.0, counts.dtype))
        return self.norm(self.projection(means))

    def compute_mask(self, inputs, mask=None):
        if mask is None:
            return None
        return ops.any(self._windows(ops.cast(mask, "bool")), axis=2)

    def compute_output_shape(self, input_shape):
        frames = input_shape[1]
        frames = None if frames is None else -(-frames // self.scale)
        return (input_shape[0], frames, int(round(input_shape[-1] * self.expand)))

    def get_config(self):
        return {
            **super().get_config(),
            "scale": self.scale,
            "expand": self.expand,
            "layer_norm_epsilon": self.layer_norm_epsilon,
        }
