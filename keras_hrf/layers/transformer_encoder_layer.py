"""`TransformerEncoderLayer`: self-attention and FFN with residuals, post-LN or
pre-LN, optionally windowed (SpeechFormer's encoder layer)."""

import keras

from keras_hrf.layers.feed_forward import FeedForward
from keras_hrf.layers.hrf_block import HRFBlock
from keras_hrf.layers.hrf_block import hrf_for
from keras_hrf.layers.hrf_block import validate_hrf_targets
from keras_hrf.layers.multi_head_self_attention import MultiHeadSelfAttention
from keras_hrf.layers.sinusoidal_positions import SinusoidalPositionalEncoding


@keras.saving.register_keras_serializable(package="keras_hrf")
class TransformerEncoderLayer(HRFBlock):
    """Post-LN (default): `x = LN(x + Dropout(MHSA(x))); x = LN(x + FFN(x))`;
    pre-LN: `x = x + Dropout(MHSA(LN(x))); x = x + FFN(LN(x))`.

    Args:
        num_heads: Attention heads.
        ffn_dim: FFN hidden width.
        dropout: Dropout after attention and inside the FFN.
        attention_dropout: Dropout on attention weights.
        activation: FFN activation.
        normalize_first: Pre-LN instead of post-LN.
        window: Local attention window in frames (Speech-MSA), or None.
        attention_positions: Add sinusoidal positions to the attention's
            input only, leaving the residual stream and the FFN free of them
            (SpeechFormer's reference adds them so in its first stage).
        layer_norm_epsilon: LayerNorm epsilon.
        hrf_expansion, hrf_norm: See `HRFBlock`.
        hrf_targets: Which projections get HRF: `("ffn",)` (the paper), plus
            `"attention"` for the attention projections.
    """

    def __init__(
        self,
        num_heads,
        ffn_dim,
        dropout=0.1,
        attention_dropout=0.1,
        activation="relu",
        normalize_first=False,
        window=None,
        attention_positions=False,
        layer_norm_epsilon=1e-5,
        hrf_expansion=None,
        hrf_norm=None,
        hrf_targets=("ffn",),
        **kwargs,
    ):
        super().__init__(hrf_expansion=hrf_expansion, hrf_norm=hrf_norm, **kwargs)
        self.num_heads = num_heads
        self.ffn_dim = ffn_dim
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.activation = activation
        self.normalize_first = normalize_first
        self.window = window
        self.attention_positions = attention_positions
        self.layer_norm_epsilon = layer_norm_epsilon
        self.hrf_targets = validate_hrf_targets(hrf_targets)

    def build(self, input_shape):
        common = {"dtype": self.dtype_policy}
        self.attention = MultiHeadSelfAttention(
            self.num_heads,
            dropout=self.attention_dropout,
            window=self.window,
            **hrf_for("attention", self.hrf_targets, self.hrf_expansion, self.hrf_norm),
            name="attention",
            **common,
        )
        self.attention.build(input_shape)
        if self.attention_positions:
            self.positions = SinusoidalPositionalEncoding(name="positions", **common)
        self.attention_output_dropout = keras.layers.Dropout(self.dropout, **common)
        self.attention_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, name="attention_norm", **common
        )
        self.attention_norm.build(input_shape)
        self.feed_forward = FeedForward(
            self.ffn_dim,
            activation=self.activation,
            dropout=self.dropout,
            **hrf_for("ffn", self.hrf_targets, self.hrf_expansion, self.hrf_norm),
            name="feed_forward",
            **common,
        )
        self.feed_forward.build(input_shape)
        self.feed_forward_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, name="feed_forward_norm", **common
        )
        self.feed_forward_norm.build(input_shape)

    def call(self, inputs, mask=None, training=None):
        def attend(x):
            if self.attention_positions:
                x = self.positions(x)
            x = self.attention(x, mask=mask, training=training)
            return self.attention_output_dropout(x, training=training)

        def feed_forward(x):
            return self.feed_forward(x, mask=mask, training=training)

        x = inputs
        if self.normalize_first:
            x = x + attend(self.attention_norm(x))
            return x + feed_forward(self.feed_forward_norm(x))
        x = self.attention_norm(x + attend(x))
        return self.feed_forward_norm(x + feed_forward(x))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "ffn_dim": self.ffn_dim,
            "dropout": self.dropout,
            "attention_dropout": self.attention_dropout,
            "activation": self.activation,
            "normalize_first": self.normalize_first,
            "window": self.window,
            "attention_positions": self.attention_positions,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "hrf_targets": list(self.hrf_targets),
        }
