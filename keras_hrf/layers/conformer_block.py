"""`ConformerBlock`: macaron FFN, relative-position MHSA, convolution module."""

import keras

from keras_hrf.layers.conformer_convolution import ConformerConvolution
from keras_hrf.layers.feed_forward import FeedForward
from keras_hrf.layers.hrf_block import HRFBlock
from keras_hrf.layers.hrf_block import hrf_for
from keras_hrf.layers.hrf_block import validate_hrf_targets
from keras_hrf.layers.multi_head_self_attention import MultiHeadSelfAttention


@keras.saving.register_keras_serializable(package="keras_hrf")
class ConformerBlock(HRFBlock):
    """`x += FFN(x) / 2; x += MHSA(LN(x)); x += Conv(x); y = LN(x + FFN(x) / 2)`
    (Gulati et al., 2020). With HRF, both macaron FFNs get an expansion.

    Args:
        num_heads: Attention heads.
        ffn_dim: FFN hidden width (4d in the paper).
        kernel_size: Depthwise convolution kernel.
        dropout: Dropout of the FFNs, attention output and conv module.
        attention_dropout: Dropout on attention weights.
        layer_norm_epsilon: LayerNorm epsilon.
        hrf_expansion, hrf_norm: See `HRFBlock`.
        hrf_targets: `("ffn",)` (the paper), plus `"attention"` and/or `"conv"`.
    """

    def __init__(
        self,
        num_heads,
        ffn_dim,
        kernel_size=31,
        dropout=0.1,
        attention_dropout=0.1,
        layer_norm_epsilon=1e-5,
        hrf_expansion=None,
        hrf_norm=None,
        hrf_targets=("ffn",),
        **kwargs,
    ):
        super().__init__(hrf_expansion=hrf_expansion, hrf_norm=hrf_norm, **kwargs)
        self.num_heads = num_heads
        self.ffn_dim = ffn_dim
        self.kernel_size = kernel_size
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.hrf_targets = validate_hrf_targets(hrf_targets)

    def build(self, input_shape):
        common = {"dtype": self.dtype_policy}
        ffn_hrf = hrf_for("ffn", self.hrf_targets, self.hrf_expansion, self.hrf_norm)

        def feed_forward(name):
            layer = FeedForward(
                self.ffn_dim, activation="swish", dropout=self.dropout,
                normalize_first=True, layer_norm_epsilon=self.layer_norm_epsilon,
                name=name, **ffn_hrf, **common,
            )
            layer.build(input_shape)
            return layer

        self.feed_forward_start = feed_forward("feed_forward_start")
        self.attention_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, name="attention_norm", **common
        )
        self.attention_norm.build(input_shape)
        self.attention = MultiHeadSelfAttention(
            self.num_heads, dropout=self.attention_dropout, relative_positions=True,
            **hrf_for("attention", self.hrf_targets, self.hrf_expansion, self.hrf_norm),
            name="attention", **common,
        )
        self.attention.build(input_shape)
        self.attention_output_dropout = keras.layers.Dropout(self.dropout, **common)
        self.convolution = ConformerConvolution(
            self.kernel_size, dropout=self.dropout,
            layer_norm_epsilon=self.layer_norm_epsilon,
            **hrf_for("conv", self.hrf_targets, self.hrf_expansion, self.hrf_norm),
            name="convolution", **common,
        )
        self.convolution.build(input_shape)
        self.feed_forward_end = feed_forward("feed_forward_end")
        self.output_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, name="output_norm", **common
        )
        self.output_norm.build(input_shape)

    def call(self, inputs, mask=None, training=None):
        x = inputs + 0.5 * self.feed_forward_start(inputs, mask=mask, training=training)
        attended = self.attention(self.attention_norm(x), mask=mask, training=training)
        x = x + self.attention_output_dropout(attended, training=training)
        x = x + self.convolution(x, mask=mask, training=training)
        x = x + 0.5 * self.feed_forward_end(x, mask=mask, training=training)
        return self.output_norm(x)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "ffn_dim": self.ffn_dim,
            "kernel_size": self.kernel_size,
            "dropout": self.dropout,
            "attention_dropout": self.attention_dropout,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "hrf_targets": list(self.hrf_targets),
        }
