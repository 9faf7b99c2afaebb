"""`ConformerConvolution`: the Conformer convolution module."""

import keras
from keras import ops

from keras_hrf.layers.hrf_block import HRFBlock
from keras_hrf.layers.hrf_block import call_projection
from keras_hrf.layers.hrf_dense import dense_or_hrf
from keras_hrf.layers.masking import zero_padded_frames


@keras.saving.register_keras_serializable(package="keras_hrf")
class ConformerConvolution(HRFBlock):
    """`LN -> pointwise (d -> 2d) -> GLU -> depthwise conv -> BatchNorm -> swish
    -> pointwise (d -> d) -> Dropout` (Gulati et al., 2020).

    The pointwise convolutions are linear layers over the channel axis, so with
    `hrf_expansion` (the `"conv"` HRF target) they become `HRFDense` layers.
    Padded frames are zeroed before the depthwise convolution and kept out of
    the BatchNorm statistics, so padding never leaks into valid frames.

    Args:
        kernel_size: Depthwise kernel size (31 or 32 in the paper).
        dropout: Output dropout.
        layer_norm_epsilon: Epsilon of the input LayerNorm.
        hrf_expansion, hrf_norm: See `HRFBlock`.
    """

    def __init__(
        self,
        kernel_size=31,
        dropout=0.0,
        layer_norm_epsilon=1e-5,
        hrf_expansion=None,
        hrf_norm=None,
        **kwargs,
    ):
        super().__init__(hrf_expansion=hrf_expansion, hrf_norm=hrf_norm, **kwargs)
        self.kernel_size = kernel_size
        self.dropout = dropout
        self.layer_norm_epsilon = layer_norm_epsilon

    def build(self, input_shape):
        model_dim = input_shape[-1]
        common = {"dtype": self.dtype_policy}
        self.norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, name="norm", **common
        )
        self.norm.build(input_shape)
        self.pointwise_in = dense_or_hrf(
            2 * model_dim, model_dim, self.hrf_expansion, self.hrf_norm,
            name="pointwise_in", **common,
        )
        self.pointwise_in.build(input_shape)
        # Stride 1 "same" padding pads (k - 1) // 2 frames on the left whatever
        # the length, so frame alignment does not depend on padding.
        self.depthwise = keras.layers.DepthwiseConv1D(
            self.kernel_size, padding="same", name="depthwise", **common
        )
        self.depthwise.build(input_shape)
        self.batch_norm = keras.layers.BatchNormalization(name="batch_norm", **common)
        self.batch_norm.build(input_shape)
        self.pointwise_out = dense_or_hrf(
            model_dim, model_dim, self.hrf_expansion, self.hrf_norm,
            name="pointwise_out", **common,
        )
        self.pointwise_out.build(input_shape)
        self.output_dropout = keras.layers.Dropout(self.dropout, **common)

    def call(self, inputs, mask=None, training=None):
        x = self.norm(inputs)
        x = call_projection(self.pointwise_in, x, mask, training)
        values, gates = ops.split(x, 2, axis=-1)
        x = values * ops.sigmoid(gates)  # GLU
        x = self.depthwise(zero_padded_frames(x, mask))
        x = self.batch_norm(x, training=training, mask=mask)
        x = ops.silu(x)
        x = call_projection(self.pointwise_out, x, mask, training)
        return self.output_dropout(x, training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "kernel_size": self.kernel_size,
            "dropout": self.dropout,
            "layer_norm_epsilon": self.layer_norm_epsilon,
        }
