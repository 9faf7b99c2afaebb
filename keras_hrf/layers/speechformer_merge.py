"""`SpeechFormerMerge`: SpeechFormer's merge block between stages."""

import keras
from keras import ops

from keras_hrf.validation import check_positive_int



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
        self.scale = check_positive_int("scale", scale)
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

    def _window_sums(self, x):
        """Sum of each window of `scale` frames of `(batch, frames, channels)`.

        Padding by `scale - 1` zero frames (a static amount, whatever the
        length) and pooling "valid" gives ceil(frames / scale) windows, each
        starting at a multiple of `scale`, exactly as padding to a multiple.
        """
        x = ops.pad(x, [[0, 0], [0, self.scale - 1], [0, 0]])
        pooled = ops.average_pool(x, self.scale, strides=self.scale, padding="valid")
        # A Python number, not `ops.cast(self.scale, ...)`: TensorFlow captures
        # that cast as an outside tensor, which tf2onnx then leaves as an ONNX
        # graph input, so onnxruntime refused the exported SpeechFormer.
        return pooled * float(self.scale)

    def call(self, inputs, mask=None):
        if mask is None:
            mask = ops.ones(ops.shape(inputs)[:2], dtype="bool")
        valid = ops.expand_dims(ops.cast(mask, inputs.dtype), -1)
        sums = self._window_sums(inputs * valid)
        counts = self._window_sums(valid)
        means = sums / ops.maximum(counts, ops.cast(1.0, counts.dtype))
        return self.norm(self.projection(means))

    def compute_mask(self, inputs, mask=None):
        if mask is None:
            return None
        valid = ops.expand_dims(ops.cast(mask, "float32"), -1)
        return ops.squeeze(self._window_sums(valid), -1) > 0.5

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
