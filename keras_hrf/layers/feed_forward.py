"""`FeedForward`: the Transformer feed-forward network, HRF in front of it."""

import keras

from keras_hrf.layers.hrf_block import HRFBlock
from keras_hrf.layers.hrf_block import call_projection
from keras_hrf.layers.hrf_dense import dense_or_hrf


@keras.saving.register_keras_serializable(package="keras_hrf")
class FeedForward(HRFBlock):
    """`[LN] -> Linear(d, hidden) -> act -> Dropout -> Linear(hidden, d) -> Dropout`.

    With `hrf_expansion=r`, the first linear layer is an `HRFDense` whose
    expansion is `round(r * d)` wide: the HRF placement of arXiv 2411.09339.
    The residual connection belongs to the encoder layer that uses the block.

    Args:
        hidden_dim: Width of the hidden layer (Conformer 4d; SpeechFormer d/2).
        activation: Hidden activation ("swish" in Conformer, "relu" elsewhere).
        dropout: Dropout after the activation and after the output layer.
        normalize_first: Apply a LayerNorm to the input first (pre-LN,
            Conformer's macaron FFN).
        layer_norm_epsilon: Epsilon of that LayerNorm.
        hrf_expansion, hrf_norm: See `HRFBlock`.
    """

    def __init__(
        self,
        hidden_dim,
        activation="relu",
        dropout=0.0,
        normalize_first=False,
        layer_norm_epsilon=1e-5,
        hrf_expansion=None,
        hrf_norm=None,
        **kwargs,
    ):
        super().__init__(hrf_expansion=hrf_expansion, hrf_norm=hrf_norm, **kwargs)
        self.hidden_dim = hidden_dim
        self.activation = activation
        self.dropout = dropout
        self.normalize_first = normalize_first
        self.layer_norm_epsilon = layer_norm_epsilon

    def build(self, input_shape):
        model_dim = input_shape[-1]
        hidden_shape = tuple(input_shape[:-1]) + (self.hidden_dim,)
        self.norm = None
        if self.normalize_first:
            self.norm = keras.layers.LayerNormalization(
                epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name="norm"
            )
            self.norm.build(input_shape)
        self.inner = dense_or_hrf(
            self.hidden_dim,
            model_dim,
            self.hrf_expansion,
            self.hrf_norm,
            activation=self.activation,
            dtype=self.dtype_policy,
            name="inner",
        )
        self.inner.build(input_shape)
        self.inner_dropout = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)
        self.outer = keras.layers.Dense(model_dim, dtype=self.dtype_policy, name="outer")
        self.outer.build(hidden_shape)
        self.output_dropout = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)

    def call(self, inputs, mask=None, training=None):
        x = inputs if self.norm is None else self.norm(inputs)
        x = call_projection(self.inner, x, mask=mask, training=training)
        x = self.inner_dropout(x, training=training)
        x = self.outer(x)
        return self.output_dropout(x, training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_dim": self.hidden_dim,
            "activation": self.activation,
            "dropout": self.dropout,
            "normalize_first": self.normalize_first,
            "layer_norm_epsilon": self.layer_norm_epsilon,
        }
