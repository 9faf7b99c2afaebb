"""Convolutional subsampling front ends: two stride-2 convolutions (4x fewer
frames), then a linear projection to the model width."""

import keras
from keras import ops

from keras_hrf.layers.masking import frames_after_convolution
from keras_hrf.layers.masking import zero_padded_frames


class _ConvolutionalSubsampling(keras.layers.Layer):
    """Shared logic: each stage zeroes padded frames, pads one frame on each
    side of time, and applies a size-3, stride-2 "valid" convolution. Output
    frame i is centred on input frame 2i whatever the padding, so a padded
    utterance gives exactly the unpadded one's frames, then padding; any
    length >= 1 works (`ceil(frames / 2)` frames out per stage)."""

    # Subclasses set `rank` and `conv_class` and define how features enter and
    # leave the convolutions: `_conv_input_shape`, `_to_conv_input`,
    # `_flat_width`, `_from_conv_output`.
    rank = None
    conv_class = None

    def __init__(self, units, filters=None, num_layers=2, activation="relu", **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.filters = filters
        self.num_layers = num_layers
        self.activation = activation
        self.supports_masking = True

    def _conv(self, index, filters):
        return self.conv_class(
            filters, 3, strides=2, padding="valid", activation=self.activation,
            dtype=self.dtype_policy, name=f"conv_{index}",
        )

    def build(self, input_shape):
        filters = self.filters or self.units
        self.convolutions = []
        shape = self._conv_input_shape(input_shape)
        for index in range(self.num_layers):
            conv = self._conv(index, filters)
            padded = list(shape)
            padded[1] = None if shape[1] is None else shape[1] + 2
            if self.rank == 2:
                padded[2] = shape[2] + 2
            conv.build(tuple(padded))
            shape = conv.compute_output_shape(tuple(padded))
            self.convolutions.append(conv)
        self.projection = keras.layers.Dense(
            self.units, dtype=self.dtype_policy, name="projection"
        )
        self.projection.build((None, None, self._flat_width(shape)))

    def call(self, inputs, mask=None):
        x = self._to_conv_input(inputs)
        pad = [[0, 0], [1, 1]] + ([[1, 1]] if self.rank == 2 else []) + [[0, 0]]
        for conv in self.convolutions:
            x = conv(ops.pad(zero_padded_frames(x, mask), pad))
            mask = frames_after_convolution(mask)
        return self.projection(self._from_conv_output(x))

    def compute_mask(self, inputs, mask=None):
        for _ in range(self.num_layers):
            mask = frames_after_convolution(mask)
        return mask

    def compute_output_shape(self, input_shape):
        frames = input_shape[1]
        for _ in range(self.num_layers):
            frames = None if frames is None else (frames + 1) // 2
        return (input_shape[0], frames, self.units)

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "filters": self.filters,
            "num_layers": self.num_layers,
            "activation": self.activation,
        }


@keras.saving.register_keras_serializable(package="keras_hrf")
class Conv2DSubsampling(_ConvolutionalSubsampling):
    """Conv2D 3x3 stride 2 (+ activation), `num_layers` times, over the
    `(frames, features)` plane; flatten features x channels; Linear to `units`.
    The front end of Conformer and ConvTransformer.

    Input `(batch, frames, features)`; output `(batch, ceil(frames / 4), units)`
    for two layers, with the mask reduced to match.
    """

    rank = 2
    conv_class = keras.layers.Conv2D

    def _conv_input_shape(self, input_shape):
        return tuple(input_shape) + (1,)

    def _to_conv_input(self, inputs):
        return ops.expand_dims(inputs, -1)

    def _flat_width(self, conv_output_shape):
        return conv_output_shape[2] * conv_output_shape[3]

    def _from_conv_output(self, x):
        return ops.reshape(x, (ops.shape(x)[0], -1, x.shape[2] * x.shape[3]))


@keras.saving.register_keras_serializable(package="keras_hrf")
class Conv1DSubsampling(_ConvolutionalSubsampling):
    """Conv1D size 3 stride 2 (+ activation), `num_layers` times, over time with
    features as channels; Linear to `units`. A lighter front end than
    `Conv2DSubsampling` (no feature-axis convolution).
    """

    rank = 1
    conv_class = keras.layers.Conv1D

    def _conv_input_shape(self, input_shape):
        return tuple(input_shape)

    def _to_conv_input(self, inputs):
        return inputs

    def _flat_width(self, conv_output_shape):
        return conv_output_shape[-1]

    def _from_conv_output(self, x):
        return x
