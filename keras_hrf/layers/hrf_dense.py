"""`HRFDense`: a Dense layer trained through a linear expansion and merged back."""

import keras
import numpy as np
from keras import activations
from keras import constraints
from keras import initializers
from keras import ops
from keras import regularizers

from keras_hrf.validation import check_hrf_expansion
from keras_hrf.validation import check_positive_int

_EXPANSION_NORMS = (None, "batch")


@keras.saving.register_keras_serializable(package="keras_hrf")
class HRFDense(keras.layers.Layer):
    """A `Dense` layer with a training-time linear expansion in front of it.

    Computes `activation((x @ A + a) @ B + b)`: `A` maps the input width `d`
    to `expansion_units` (`k`) and `B` maps `k` to `units`. Nothing non-linear
    stands between `A` and `B`, so after training `reparameterize()` collapses
    them into one plain `keras.layers.Dense` with kernel `A @ B` and bias
    `a @ B + b` (High-Rank Factorization and its merge, arXiv 2411.09339).
    The deployed layer has exactly the shape and cost of the `Dense` it stands
    for; the expansion only changes how training sees the weights.

    With `expansion_norm="batch"`, a `BatchNormalization` normalizes the
    expansion's output while training (the expansion then has no bias of its
    own; BatchNorm's `beta` plays that role). Its moving statistics are folded
    into the merge, which therefore matches the layer in inference mode.

    With `expansion_units=None` and `expansion_norm="batch"` there is no
    expansion: the layer is `Dense(BatchNorm(x))`, and the merge folds the
    BatchNorm into the `Dense`. This is the configuration we recommend: on
    real speech (EmoDB and RAVDESS, three architectures, AdamW) this foldable
    BatchNorm alone beat both the plain layer and the expansion
    (`benchmarks/RESULTS.md`, "The paper's table"), at the cost of a BatchNorm
    instead of a second matrix while training. In the models it is
    `hrf_norm="batch"` without `hrf_expansion`.

    Args:
        units: Positive integer, width of the output.
        expansion_units: Positive integer, width `k` of the inserted expansion.
            `k >= d` (the input width) avoids any rank cap; the paper's search
            space is `k = r * d` with `r` in {1, 2, 4, 8}. `None`: no
            expansion, only the `expansion_norm` before the `Dense`.
        activation: Activation applied to the output, as in `Dense`.
        use_bias: Whether the layer has output bias `b` (and an expansion bias
            `a`). The merged `Dense` has the same `use_bias`.
        expansion_norm: `None` or `"batch"`. `"batch"` requires
            `use_bias=True`, because the folded normalization has a shift.
        kernel_initializer, bias_initializer: Initializers of both factors'
            kernels and biases (`A`, `B`; `a`, `b`).
        kernel_regularizer, bias_regularizer: Regularizers applied to both
            factors' kernels and biases while training, and handed to the
            merged `Dense`.
        activity_regularizer: Regularizer on the layer's output.
        kernel_constraint, bias_constraint: Constraints on both factors'
            kernels and biases, handed to the merged `Dense` too.
        norm_momentum, norm_epsilon: `momentum` and `epsilon` of the
            expansion's BatchNorm (used with `expansion_norm="batch"`).
        **kwargs: Base layer arguments (`name`, `dtype`, `trainable`).

    Input shape: `(batch, ..., d)`, any rank >= 2.
    Output shape: `(batch, ..., units)`.

    Example:

    ```python
    layer = keras_hrf.HRFDense(256, expansion_units=256, activation="swish")
    y = layer(keras.random.normal((2, 50, 64)))
    dense = layer.reparameterize()      # a plain Dense(256), same outputs
    ```
    """

    def __init__(
        self,
        units,
        expansion_units,
        activation=None,
        use_bias=True,
        expansion_norm=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        norm_momentum=0.99,
        norm_epsilon=1e-3,
        **kwargs,
    ):
        units = check_positive_int("units", units)
        if expansion_units is not None:
            expansion_units = check_positive_int("expansion_units", expansion_units)
        if expansion_norm not in _EXPANSION_NORMS:
            raise ValueError(
                "Received an invalid value for `expansion_norm`, expected one "
                f"of {_EXPANSION_NORMS}. Received: expansion_norm={expansion_norm!r}"
            )
        if expansion_units is None and expansion_norm is None:
            raise ValueError(
                "`expansion_units` may be None (no expansion) only with an "
                "`expansion_norm` to merge; without one the layer would be a "
                "plain `keras.layers.Dense`: use that. Received: "
                "expansion_units=None, expansion_norm=None"
            )
        if expansion_norm is not None and not use_bias:
            raise ValueError(
                f"`expansion_norm={expansion_norm!r}` needs `use_bias=True`: the "
                "folded normalization adds a shift that only a bias can hold. "
                "Received: use_bias=False"
            )
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        self.units = units
        self.expansion_units = expansion_units
        self.activation = activations.get(activation)
        self.use_bias = use_bias
        self.expansion_norm = expansion_norm
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.kernel_constraint = constraints.get(kernel_constraint)
        self.bias_constraint = constraints.get(bias_constraint)
        self.norm_momentum = norm_momentum
        self.norm_epsilon = norm_epsilon
        self.input_spec = keras.layers.InputSpec(min_ndim=2)
        self.supports_masking = True

        self.norm = None
        if expansion_norm == "batch":
            self.norm = keras.layers.BatchNormalization(
                momentum=norm_momentum,
                epsilon=norm_epsilon,
                dtype=self.dtype_policy,
                name="expansion_norm",
            )

    def build(self, input_shape):
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError(
                f"Layer '{self.name}' needs a known last input dimension. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        self.expansion_kernel = None
        if self.expansion_units is not None:
            self.expansion_kernel = self.add_weight(
                name="expansion_kernel",
                shape=(input_dim, self.expansion_units),
                initializer=self.kernel_initializer,
                regularizer=self.kernel_regularizer,
                constraint=self.kernel_constraint,
            )
        hidden_units = self.expansion_units or input_dim
        self.expansion_bias = None
        if self.use_bias and self.norm is None:
            self.expansion_bias = self.add_weight(
                name="expansion_bias",
                shape=(hidden_units,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
        if self.norm is not None:
            self.norm.build(tuple(input_shape[:-1]) + (hidden_units,))
        self.kernel = self.add_weight(
            name="kernel",
            shape=(hidden_units, self.units),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(self.units,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: input_dim})

    def call(self, inputs, training=None, mask=None):
        hidden = inputs
        if self.expansion_kernel is not None:
            hidden = ops.matmul(inputs, self.expansion_kernel)
        if self.expansion_bias is not None:
            hidden = ops.add(hidden, self.expansion_bias)
        if self.norm is not None:
            # The mask keeps padded frames out of the batch statistics.
            hidden = self.norm(hidden, training=training, mask=mask)
        outputs = ops.matmul(hidden, self.kernel)
        if self.bias is not None:
            outputs = ops.add(outputs, self.bias)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def merged_weights(self):
        """The merged `(kernel, bias)` as float64 NumPy arrays.

        `kernel` has shape `(d, units)`; `bias` is `None` when `use_bias` is
        False. Computed in float64 from the stored variables, whatever the
        layer's compute dtype, so the merge adds no rounding of its own.
        """
        self._check_built("merged_weights")
        kernel = _to_float64(self.kernel)
        # In front of `kernel` is h = (x @ expansion_kernel) * scale + shift:
        # the expansion's bias, or its inference-mode BatchNorm folded in.
        scale = 1.0
        shift = _to_float64(self.expansion_bias) if self.expansion_bias is not None else 0.0
        if self.norm is not None:
            gamma = _to_float64(self.norm.gamma) if self.norm.scale else 1.0
            beta = _to_float64(self.norm.beta) if self.norm.center else 0.0
            mean = _to_float64(self.norm.moving_mean)
            variance = _to_float64(self.norm.moving_variance)
            scale = gamma / np.sqrt(variance + self.norm.epsilon)
            shift = (shift - mean) * scale + beta
        if self.expansion_kernel is None:  # no expansion: h = x * scale + shift
            merged_kernel = np.reshape(scale, (-1, 1)) * kernel
        else:
            merged_kernel = (_to_float64(self.expansion_kernel) * scale) @ kernel
        merged_bias = None
        if self.use_bias:
            merged_bias = shift @ kernel + _to_float64(self.bias)
        return merged_kernel, merged_bias

    def reparameterize(self):
        """Return a built `keras.layers.Dense` with the merged weights.

        The `Dense` has this layer's name, units, activation, `use_bias`, dtype
        policy, initializers, regularizers and constraints; its variables have
        this layer's variable dtype. This layer is left unchanged.
        """
        self._check_built("reparameterize")
        merged_kernel, merged_bias = self.merged_weights()
        dense = keras.layers.Dense(
            self.units,
            activation=self.activation,
            use_bias=self.use_bias,
            kernel_initializer=self.kernel_initializer,
            bias_initializer=self.bias_initializer,
            kernel_regularizer=self.kernel_regularizer,
            bias_regularizer=self.bias_regularizer,
            activity_regularizer=self.activity_regularizer,
            kernel_constraint=self.kernel_constraint,
            bias_constraint=self.bias_constraint,
            dtype=self.dtype_policy,
            trainable=self.trainable,
            name=self.name,
        )
        dense.build((None, merged_kernel.shape[0]))
        dense.kernel.assign(merged_kernel.astype(dense.kernel.dtype))
        if merged_bias is not None:
            dense.bias.assign(merged_bias.astype(dense.bias.dtype))
        return dense

    def _check_built(self, method):
        if not self.built:
            raise ValueError(
                f"HRFDense layer '{self.name}' is not built, so it has no "
                f"weights to merge; call it on an input (or `build()` it) "
                f"before `{method}()`."
            )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "expansion_units": self.expansion_units,
                "activation": activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "expansion_norm": self.expansion_norm,
                "kernel_initializer": initializers.serialize(self.kernel_initializer),
                "bias_initializer": initializers.serialize(self.bias_initializer),
                "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": regularizers.serialize(self.bias_regularizer),
                "activity_regularizer": regularizers.serialize(
                    self.activity_regularizer
                ),
                "kernel_constraint": constraints.serialize(self.kernel_constraint),
                "bias_constraint": constraints.serialize(self.bias_constraint),
                "norm_momentum": self.norm_momentum,
                "norm_epsilon": self.norm_epsilon,
            }
        )
        return config


def _to_float64(variable):
    return np.asarray(ops.convert_to_numpy(variable), dtype=np.float64)


def dense_or_hrf(units, input_dim, hrf_expansion=None, hrf_norm=None, **kwargs):
    """A plain `Dense(units)`; an `HRFDense` whose expansion is
    `round(hrf_expansion * input_dim)` wide when `hrf_expansion` is set; or,
    with only `hrf_norm`, an `HRFDense` without expansion (`Dense(norm(x))`).

    Blocks build their projections through this, so that the HRF and the
    plain variant of a block create the same sublayers in the same order
    (which is what `reparameterized_copy` relies on).
    """
    if check_hrf_expansion(hrf_expansion) is None:
        if hrf_norm is None:
            return keras.layers.Dense(units, **kwargs)
        return HRFDense(units, None, expansion_norm=hrf_norm, **kwargs)
    expansion_units = max(1, int(round(hrf_expansion * input_dim)))
    return HRFDense(units, expansion_units, expansion_norm=hrf_norm, **kwargs)
