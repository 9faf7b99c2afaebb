"""`MultiHeadSelfAttention`: masked self-attention with HRF-capable projections,
optional relative sinusoidal positions (Conformer) and an optional local
window (SpeechFormer's Speech-MSA)."""

import math

import keras
from keras import ops

from keras_hrf.layers.hrf_block import HRFBlock
from keras_hrf.layers.hrf_block import call_projection
from keras_hrf.layers.hrf_dense import dense_or_hrf
from keras_hrf.layers.sinusoidal_positions import sinusoidal_encoding
from keras_hrf.validation import check_positive_int

# Scores are masked in float32 whatever the compute dtype; a finite value keeps
# fully masked rows (padded queries) finite instead of NaN.
_MASKED_SCORE = -1e9


@keras.saving.register_keras_serializable(package="keras_hrf")
class MultiHeadSelfAttention(HRFBlock):
    """Multi-head self-attention over `(batch, frames, d)`.

    Query, key, value and output projections are `Dense` layers, or `HRFDense`
    with `hrf_expansion` set (the `"attention"` HRF target), so they merge
    exactly like the FFN's. Keras' `MultiHeadAttention` is not used because
    its fused `EinsumDense` projections cannot take an expansion.

    Padded key frames (the Keras mask) receive no attention.

    Args:
        num_heads: Number of heads; must divide `d`.
        dropout: Dropout on the attention weights.
        window: `None` for global attention, or an odd number of frames: each
            query attends to the centred window of keys (Speech-MSA). Even
            numbers are rounded up to the next odd one, as the reference does.
        relative_positions: Transformer-XL relative sinusoidal positions with
            learned content and position biases (Conformer's MHSA).
        hrf_expansion, hrf_norm: See `HRFBlock`.
    """

    def __init__(
        self,
        num_heads,
        dropout=0.0,
        window=None,
        relative_positions=False,
        hrf_expansion=None,
        hrf_norm=None,
        **kwargs,
    ):
        super().__init__(hrf_expansion=hrf_expansion, hrf_norm=hrf_norm, **kwargs)
        num_heads = check_positive_int("num_heads", num_heads)
        if window is not None and (not isinstance(window, int) or window <= 0):
            raise ValueError(
                "Received an invalid value for `window`, expected None or a "
                f"positive number of frames. Received: window={window!r}"
            )
        self.num_heads = num_heads
        self.dropout = dropout
        self.window = window
        self.relative_positions = relative_positions

    def build(self, input_shape):
        model_dim = input_shape[-1]
        if model_dim % self.num_heads:
            raise ValueError(
                f"Layer '{self.name}': the model width {model_dim} is not divisible "
                f"by num_heads={self.num_heads}."
            )
        self.head_dim = model_dim // self.num_heads

        def projection(name):
            layer = dense_or_hrf(
                model_dim,
                model_dim,
                self.hrf_expansion,
                self.hrf_norm,
                dtype=self.dtype_policy,
                name=name,
            )
            layer.build(input_shape)
            return layer

        self.query = projection("query")
        self.key = projection("key")
        self.value = projection("value")
        self.attention_dropout = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)
        self.output_projection = projection("output")
        if self.relative_positions:
            self.position = keras.layers.Dense(
                model_dim, use_bias=False, dtype=self.dtype_policy, name="position"
            )
            self.position.build((None, model_dim))
            self.content_bias = self.add_weight(
                name="content_bias", shape=(self.num_heads, self.head_dim), initializer="zeros"
            )
            self.position_bias = self.add_weight(
                name="position_bias", shape=(self.num_heads, self.head_dim), initializer="zeros"
            )

    def _heads(self, x):
        # (batch, frames, d) -> (batch, heads, frames, head_dim)
        x = ops.reshape(x, (ops.shape(x)[0], -1, self.num_heads, self.head_dim))
        return ops.transpose(x, (0, 2, 1, 3))

    def call(self, inputs, mask=None, training=None):
        frames = ops.shape(inputs)[1]
        query = self._heads(call_projection(self.query, inputs, mask, training))
        key = self._heads(call_projection(self.key, inputs, mask, training))
        value = self._heads(call_projection(self.value, inputs, mask, training))

        if self.relative_positions:
            content_bias = ops.expand_dims(ops.cast(self.content_bias, query.dtype), 1)
            position_bias = ops.expand_dims(ops.cast(self.position_bias, query.dtype), 1)
            scores = ops.einsum("bhqd,bhkd->bhqk", query + content_bias, key)
            scores = scores + self._relative_scores(query + position_bias, frames)
        else:
            scores = ops.einsum("bhqd,bhkd->bhqk", query, key)
        scores = ops.cast(scores, "float32") / math.sqrt(self.head_dim)

        allowed = self._allowed(mask, frames)
        if allowed is not None:
            scores = ops.where(allowed, scores, _MASKED_SCORE)
        weights = ops.cast(ops.softmax(scores, axis=-1), value.dtype)
        weights = self.attention_dropout(weights, training=training)

        context = ops.einsum("bhqk,bhkd->bhqd", weights, value)
        context = ops.reshape(
            ops.transpose(context, (0, 2, 1, 3)),
            (ops.shape(inputs)[0], -1, self.num_heads * self.head_dim),
        )
        return call_projection(self.output_projection, context, mask, training)

    def _relative_scores(self, query, frames):
        """Transformer-XL's position term: score[q, k] = query_q . W p(q - k)."""
        # Encodings of every distance q - k, from -(frames - 1) to frames - 1.
        distances = ops.arange(-(frames - 1), frames)
        encoding = sinusoidal_encoding(distances, self.num_heads * self.head_dim, query.dtype)
        positions = ops.reshape(self.position(encoding), (-1, self.num_heads, self.head_dim))
        by_distance = ops.einsum("bhqd,phd->bhqp", query, positions)
        # Pick distance q - k for each (q, k): index (q - k) + frames - 1.
        index = ops.expand_dims(ops.arange(frames), 1) - ops.expand_dims(ops.arange(frames), 0)
        index = ops.broadcast_to(index + frames - 1, ops.shape(by_distance)[:-1] + (frames,))
        return ops.take_along_axis(by_distance, index, axis=-1)

    def _allowed(self, mask, frames):
        """Boolean (batch or 1, 1, queries, keys) of the pairs that may attend."""
        allowed = None
        if self.window is not None:
            half = self.window // 2  # an even window is widened to window + 1
            position = ops.arange(frames)
            distance = ops.abs(ops.expand_dims(position, 1) - ops.expand_dims(position, 0))
            allowed = ops.expand_dims(ops.expand_dims(distance <= half, 0), 0)
        if mask is not None:
            keys = ops.expand_dims(ops.expand_dims(ops.cast(mask, "bool"), 1), 1)
            allowed = keys if allowed is None else ops.logical_and(allowed, keys)
        return allowed

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "dropout": self.dropout,
            "window": self.window,
            "relative_positions": self.relative_positions,
        }
