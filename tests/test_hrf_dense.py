import inspect

import keras
import numpy as np
import pytest
from helpers import assert_relative_close
from helpers import infer
from helpers import to_numpy

from keras_hrf import HRFDense


def _random(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


@pytest.mark.parametrize("shape", [(4, 6), (3, 5, 6), (2, 3, 4, 6)])
def test_computes_the_factored_dense(shape):
    layer = HRFDense(7, expansion_units=12, activation="relu")
    x = _random(shape)
    outputs = to_numpy(layer(x))
    w = [to_numpy(v).astype(np.float64) for v in layer.weights]
    expansion_kernel, expansion_bias, kernel, bias = w
    expected = np.maximum((x @ expansion_kernel + expansion_bias) @ kernel + bias, 0)
    assert outputs.shape == shape[:-1] + (7,)
    assert layer.compute_output_shape(shape) == shape[:-1] + (7,)
    np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-5)


def test_weight_shapes_and_names():
    layer = HRFDense(5, expansion_units=9)
    layer.build((None, 3))
    assert [tuple(v.shape) for v in layer.weights] == [(3, 9), (9,), (9, 5), (5,)]
    assert [v.name for v in layer.weights] == [
        "expansion_kernel",
        "expansion_bias",
        "kernel",
        "bias",
    ]
    assert layer.count_params() == 3 * 9 + 9 + 9 * 5 + 5


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("activation", [None, "swish"])
def test_reparameterize_returns_an_equivalent_dense(use_bias, activation):
    layer = HRFDense(
        6,
        expansion_units=16,
        activation=activation,
        use_bias=use_bias,
        bias_initializer="random_normal",
        kernel_regularizer=keras.regularizers.L2(1e-4),
        bias_regularizer=keras.regularizers.L1(1e-5),
        activity_regularizer=keras.regularizers.L2(1e-6),
        name="ffn_in",
    )
    x = _random((4, 10, 8))
    before = [to_numpy(v) for v in layer.weights]
    reference = infer(layer, x)

    dense = layer.reparameterize()

    assert type(dense) is keras.layers.Dense
    assert dense.built
    assert dense.name == "ffn_in"
    assert dense.units == 6
    assert dense.use_bias == use_bias
    assert dense.activation is layer.activation
    assert dense.dtype_policy.name == layer.dtype_policy.name
    assert isinstance(dense.kernel_regularizer, keras.regularizers.L2)
    assert isinstance(dense.activity_regularizer, keras.regularizers.L2)
    assert tuple(dense.kernel.shape) == (8, 6)
    assert dense.count_params() == 8 * 6 + (6 if use_bias else 0)
    if use_bias:
        assert isinstance(dense.bias_regularizer, keras.regularizers.L1)
    assert_relative_close(reference, infer(dense, x), 1e-5)
    # The HRF layer itself is untouched.
    for old, new in zip(before, layer.weights):
        np.testing.assert_array_equal(old, to_numpy(new))


def test_merged_weights_are_the_float64_product():
    layer = HRFDense(3, expansion_units=5)
    layer.build((None, 4))
    expansion_kernel, expansion_bias, kernel, bias = (
        to_numpy(v).astype(np.float64) for v in layer.weights
    )
    merged_kernel, merged_bias = layer.merged_weights()
    assert merged_kernel.dtype == np.float64
    np.testing.assert_allclose(merged_kernel, expansion_kernel @ kernel, rtol=1e-12)
    np.testing.assert_allclose(merged_bias, expansion_bias @ kernel + bias, rtol=1e-12, atol=1e-15)


def test_batch_norm_expansion_is_folded_with_moving_statistics():
    layer = HRFDense(6, expansion_units=12, expansion_norm="batch", norm_momentum=0.5)
    x = _random((16, 5, 4)) * 3.0 + 1.0
    for _ in range(4):  # training-mode calls move the moving statistics
        layer(x, training=True)
    norm = layer.norm
    assert not np.allclose(to_numpy(norm.moving_mean), 0.0)
    # The expansion has no bias of its own; BatchNorm's beta is its shift.
    assert sorted(v.name for v in layer.trainable_weights) == [
        "beta",
        "bias",
        "expansion_kernel",
        "gamma",
        "kernel",
    ]
    norm.gamma.assign(np.linspace(0.5, 2.0, 12).astype("float32"))
    norm.beta.assign(np.linspace(-1.0, 1.0, 12).astype("float32"))

    reference = infer(layer, x)
    merged = infer(layer.reparameterize(), x)
    assert_relative_close(reference, merged, 1e-5)
    # Training-mode output uses batch statistics and must differ: the merge is
    # an inference-time identity, not a training-time one.
    assert not np.allclose(to_numpy(layer(x, training=True)), reference, atol=1e-3)


def test_without_expansion_it_is_a_dense_after_a_batch_norm_and_merges_into_one():
    layer = HRFDense(6, expansion_units=None, expansion_norm="batch", norm_momentum=0.5)
    x = _random((16, 5, 4)) * 3.0 + 1.0
    for _ in range(4):
        layer(x, training=True)
    norm = layer.norm
    assert layer.expansion_kernel is None
    assert sorted(v.name for v in layer.trainable_weights) == ["beta", "bias", "gamma", "kernel"]
    assert tuple(layer.kernel.shape) == (4, 6)
    norm.gamma.assign(np.linspace(0.5, 2.0, 4).astype("float32"))
    norm.beta.assign(np.linspace(-1.0, 1.0, 4).astype("float32"))
    w = {v.path.split("/")[-1]: to_numpy(v).astype(np.float64) for v in layer.weights}
    normalized = (x - w["moving_mean"]) / np.sqrt(w["moving_variance"] + norm.epsilon)
    expected = (normalized * w["gamma"] + w["beta"]) @ w["kernel"] + w["bias"]

    reference = infer(layer, x)
    np.testing.assert_allclose(reference, expected, rtol=1e-5, atol=1e-5)
    dense = layer.reparameterize()
    assert type(dense) is keras.layers.Dense and tuple(dense.kernel.shape) == (4, 6)
    assert_relative_close(reference, infer(dense, x), 1e-5)
    restored = HRFDense.from_config(layer.get_config())
    assert restored.expansion_units is None and restored.expansion_norm == "batch"


def test_no_expansion_and_no_norm_is_refused_as_a_plain_dense():
    with pytest.raises(ValueError, match=r"plain `keras.layers.Dense`.*expansion_norm=None"):
        HRFDense(4, expansion_units=None)


def test_batch_norm_statistics_ignore_masked_frames():
    valid = _random((4, 6, 3))
    padded = np.concatenate([valid, np.full((4, 3, 3), 50.0, "float32")], axis=1)
    mask = np.concatenate([np.ones((4, 6), bool), np.zeros((4, 3), bool)], axis=1)

    clean = HRFDense(5, expansion_units=8, expansion_norm="batch", norm_momentum=0.0)
    masked = HRFDense(5, expansion_units=8, expansion_norm="batch", norm_momentum=0.0)
    clean.build((None, None, 3))
    masked.build((None, None, 3))
    masked.set_weights(clean.get_weights())

    clean(valid, training=True)
    masked(padded, training=True, mask=mask)
    np.testing.assert_allclose(
        to_numpy(masked.norm.moving_mean), to_numpy(clean.norm.moving_mean), rtol=1e-4, atol=1e-4
    )
    np.testing.assert_allclose(
        to_numpy(masked.norm.moving_variance),
        to_numpy(clean.norm.moving_variance),
        rtol=1e-3,
        atol=1e-4,
    )


def test_passes_the_mask_on_to_the_next_layer():
    inputs = keras.Input((None, 4))
    masked = keras.layers.Masking(0.0)(inputs)
    hidden = HRFDense(3, expansion_units=8)(masked)
    pooled = keras.layers.GlobalAveragePooling1D()(hidden)  # mask-aware
    model = keras.Model(inputs, [hidden, pooled])
    x = _random((2, 5, 4))
    x[0, 3:] = 0.0  # two padded frames in the first utterance
    frames, pooled = (to_numpy(t) for t in model(x))
    np.testing.assert_allclose(pooled[0], frames[0, :3].mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pooled[1], frames[1].mean(axis=0), rtol=1e-5, atol=1e-6)


def test_config_is_exactly_the_constructor_arguments():
    layer = HRFDense(
        4,
        expansion_units=32,
        activation="gelu",
        use_bias=True,
        expansion_norm="batch",
        kernel_initializer="he_normal",
        kernel_regularizer="l2",
        kernel_constraint="max_norm",
        norm_momentum=0.9,
        norm_epsilon=1e-5,
        name="hrf",
    )
    config = layer.get_config()
    # The base layer's keyword arguments (name, dtype, trainable, ...) plus
    # one key per constructor parameter, and nothing else.
    base_keys = set(keras.layers.Layer(name="x").get_config())
    parameters = set(inspect.signature(HRFDense.__init__).parameters) - {"self", "kwargs"}
    assert parameters <= set(config)
    assert set(config) - parameters <= base_keys
    restored = HRFDense.from_config(config)
    assert restored.get_config() == config
    assert restored.expansion_norm == "batch" and restored.units == 4


@pytest.mark.parametrize("argument", ["units", "expansion_units"])
@pytest.mark.parametrize("value", [0, -3, 2.5, "8", None, True])
def test_rejects_a_width_that_is_not_a_positive_integer(argument, value):
    kwargs = {"units": 4, "expansion_units": 8, argument: value}
    with pytest.raises(ValueError, match=rf"`{argument}`.*Received: {argument}={value!r}"):
        HRFDense(**kwargs)


def test_accepts_numpy_integers():
    assert HRFDense(np.int64(4), expansion_units=np.int32(8)).units == 4


def test_rejects_an_unknown_expansion_norm():
    with pytest.raises(ValueError, match=r"expansion_norm='layer'"):
        HRFDense(4, 8, expansion_norm="layer")


def test_batch_norm_expansion_needs_a_bias():
    with pytest.raises(ValueError, match=r"use_bias=False"):
        HRFDense(4, 8, expansion_norm="batch", use_bias=False)


def test_unbuilt_layer_cannot_be_merged():
    layer = HRFDense(4, 8, name="lonely")
    with pytest.raises(ValueError, match=r"'lonely' is not built"):
        layer.reparameterize()


def test_unknown_input_width_is_refused():
    layer = HRFDense(4, 8, name="wide")
    with pytest.raises(ValueError, match=r"'wide'.*last input dimension"):
        layer.build((None, None))


@pytest.mark.parametrize(
    "policy, tolerance",
    # Tolerances are those of the compute dtype: float16 keeps 11 significant
    # bits, bfloat16 8, and both paths round their own intermediates.
    [("mixed_float16", 5e-3), ("mixed_bfloat16", 4e-2)],
)
@pytest.mark.parametrize("expansion_norm", [None, "batch"])
def test_mixed_precision_merge(policy, tolerance, expansion_norm):
    layer = HRFDense(16, expansion_units=64, expansion_norm=expansion_norm, dtype=policy)
    x = _random((8, 12, 32))
    layer(x, training=True)
    reference_layer = HRFDense.from_config({**layer.get_config(), "dtype": "float32"})
    reference_layer.build(x.shape)
    reference_layer.set_weights(layer.get_weights())

    dense = layer.reparameterize()

    assert dense.dtype_policy.name == policy
    assert dense.kernel.dtype == "float32" and dense.bias.dtype == "float32"
    merged_outputs = dense(x, training=False)
    assert keras.backend.standardize_dtype(merged_outputs.dtype) == policy.split("_")[1]
    # Both the mixed HRF layer and its merge are close to the float32 truth ...
    truth = infer(reference_layer, x)
    assert_relative_close(truth, infer(dense, x), tolerance)
    assert_relative_close(truth, infer(layer, x), tolerance)
    # ... and the merged float32 kernel is the exact float32 merge.
    np.testing.assert_allclose(
        to_numpy(dense.kernel), reference_layer.merged_weights()[0].astype("float32"), rtol=1e-6
    )
