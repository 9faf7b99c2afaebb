"""`ClassificationHead`: an MLP from a pooled vector to class logits."""

import keras

from keras_hrf.validation import check_positive_int


@keras.saving.register_keras_serializable(package="keras_hrf")
class ClassificationHead(keras.layers.Layer):
    """`Dense(h1, act) -> [Dropout -> Dense(h, act)] * ... -> Dropout -> Dense(classes)`.

    With `hidden_dims=()` it is one linear classifier; SpeechFormer's head is
    `hidden_dims=(d // 2, d // 4)` with ReLU and dropout 0.5. Outputs logits.
    """

    def __init__(self, num_classes, hidden_dims=(), activation="relu", dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = check_positive_int("num_classes", num_classes, minimum=2)
        self.hidden_dims = tuple(hidden_dims)
        self.activation = activation
        self.dropout = dropout

    def build(self, input_shape):
        self.hidden_layers = []
        width = input_shape[-1]
        for index, units in enumerate(self.hidden_dims):
            layer = keras.layers.Dense(
                units, activation=self.activation, dtype=self.dtype_policy,
                name=f"hidden_{index}",
            )
            layer.build((None, width))
            self.hidden_layers.append(layer)
            width = units
        self.dropout_layer = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)
        # Logits in float32 under mixed precision, for a stable softmax/loss.
        self.logits = keras.layers.Dense(self.num_classes, dtype="float32", name="logits")
        self.logits.build((None, width))

    def call(self, inputs, training=None):
        # Dropout before every Dense but the first hidden one, as in the
        # SpeechFormer reference (Linear, ReLU, Dropout, Linear, ReLU, Dropout,
        # Linear): the pooled vector itself is not dropped. With no hidden
        # layers this is Dropout -> Dense(classes).
        x = inputs
        for index, layer in enumerate(self.hidden_layers):
            x = layer(x if index == 0 else self.dropout_layer(x, training=training))
        return self.logits(self.dropout_layer(x, training=training))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.num_classes,)

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "hidden_dims": list(self.hidden_dims),
            "activation": self.activation,
            "dropout": self.dropout,
        }
