"""`SpecAugment` (Park et al., 2019): frequency and time masks on features,
while training only."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_hrf")
class SpecAugment(keras.layers.Layer):
    """Zero random bands of feature bins and random spans of frames of each
    utterance while training; the identity at inference (and merged away by
    `keras_hrf.reparameterize` in the package's models).

    Place it after the padding mask is computed (the models put it right after
    their `Masking` layer): masked frames become 0, the normalized features'
    mean, and stay speech, because the mask was taken before. Time masks fall
    within each utterance's own frames (from the mask), not in its padding.

    Args:
        frequency_masks: Bands per utterance.
        max_frequency_width: A band covers 0 to this many bins (uniform).
        time_masks: Spans per utterance.
        max_time_ratio: A span covers 0 to this fraction of the utterance's
            frames (uniform).
        seed: For the random masks.
    """

    def __init__(self, frequency_masks=2, max_frequency_width=8, time_masks=2,
                 max_time_ratio=0.05, seed=None, **kwargs):
        super().__init__(**kwargs)
        for name, value in (("frequency_masks", frequency_masks),
                            ("max_frequency_width", max_frequency_width),
                            ("time_masks", time_masks)):
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"SpecAugment: `{name}` must be an integer >= 0, "
                                 f"received {name}={value!r}")
        if not 0.0 <= max_time_ratio <= 1.0:
            raise ValueError("SpecAugment: `max_time_ratio` must be in [0, 1], received "
                             f"max_time_ratio={max_time_ratio!r}")
        self.frequency_masks = frequency_masks
        self.max_frequency_width = max_frequency_width
        self.time_masks = time_masks
        self.max_time_ratio = max_time_ratio
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    def _bands(self, count, max_width, extent, positions):
        """Keep-mask `(batch, positions)`: False inside `count` random bands of
        0..max_width (per row) positions, each within the row's `extent`."""
        batch = ops.shape(extent)[0]
        keep = ops.ones((batch, ops.shape(positions)[0]), "bool")
        for _ in range(count):
            draw = keras.random.uniform((batch, 2), seed=self.seed_generator)
            width = ops.floor(draw[:, 0] * (ops.floor(max_width) + 1.0))
            width = ops.minimum(width, extent)
            start = ops.floor(draw[:, 1] * (extent - width + 1.0))
            inside = ops.logical_and(positions[None, :] >= start[:, None],
                                     positions[None, :] < (start + width)[:, None])
            keep = ops.logical_and(keep, ops.logical_not(inside))
        return keep

    def call(self, inputs, mask=None, training=None):
        if not training or (self.frequency_masks == 0 and self.time_masks == 0):
            return inputs
        shape = ops.shape(inputs)
        batch, frames, bins = shape[0], shape[1], shape[2]
        if mask is None:
            lengths = ops.ones((batch,), "float32") * ops.cast(frames, "float32")
        else:
            lengths = ops.sum(ops.cast(mask, "float32"), axis=1)
        bin_positions = ops.arange(bins, dtype="float32")
        frame_positions = ops.arange(frames, dtype="float32")
        keep_bins = self._bands(self.frequency_masks, float(self.max_frequency_width),
                                ops.ones((batch,), "float32") * ops.cast(bins, "float32"),
                                bin_positions)
        keep_frames = self._bands(self.time_masks, self.max_time_ratio * lengths, lengths,
                                  frame_positions)
        keep = ops.logical_and(keep_frames[:, :, None], keep_bins[:, None, :])
        return ops.where(keep, inputs, ops.zeros_like(inputs))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "frequency_masks": self.frequency_masks,
            "max_frequency_width": self.max_frequency_width,
            "time_masks": self.time_masks,
            "max_time_ratio": self.max_time_ratio,
            "seed": self.seed,
        }
