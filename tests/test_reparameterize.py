import os

import keras
import numpy as np
import pytest
from helpers import all_layers
from helpers import assert_relative_close
from helpers import infer
from helpers import train_briefly

import keras_hrf
from keras_hrf import HRFDense
from keras_hrf import reparameterize
from keras_hrf import reparameterized_copy

FRAMES, FEATURES, OUTPUTS = 9, 12, 5


def hrf_or_dense(units, expansion_units, expansion_norm=None, **kwargs):
    """`HRFDense` when an expansion is given, otherwise the plain `Dense`."""
    if expansion_units is None:
        return keras.layers.Dense(units, **kwargs)
    return HRFDense(units, expansion_units, expansion_norm=expansion_norm, **kwargs)


@keras.saving.register_keras_serializable(package="keras_hrf_tests")
class ResidualFeedForward(keras.layers.Layer):
    """A composite block that follows the protocol: LN -> (HRF)Dense -> Dense,
    scaled residual. It has a variable of its own besides its sublayers'."""

    def __init__(self, model_dim, hidden_units, expansion_units=None, expansion_norm=None, **kwargs):
        super().__init__(**kwargs)
        self.model_dim = model_dim
        self.hidden_units = hidden_units
        self.expansion_units = expansion_units
        self.expansion_norm = expansion_norm
        self.norm = keras.layers.LayerNormalization(name="norm")
        self.inner = hrf_or_dense(
            hidden_units, expansion_units, expansion_norm, activation="swish", name="inner"
        )
        self.outer = keras.layers.Dense(model_dim, name="outer")
        self.supports_masking = True

    def build(self, input_shape):
        self.norm.build(input_shape)
        self.inner.build(input_shape)
        self.outer.build(tuple(input_shape[:-1]) + (self.hidden_units,))
        self.residual_scale = self.add_weight(name="residual_scale", shape=(), initializer="ones")

    def call(self, inputs, training=None):
        hidden = self.inner(self.norm(inputs), training=training)
        return inputs + self.residual_scale * self.outer(hidden)

    def reparameterize(self):
        return reparameterized_copy(self, expansion_units=None, expansion_norm=None)

    def get_config(self):
        return {
            **super().get_config(),
            "model_dim": self.model_dim,
            "hidden_units": self.hidden_units,
            "expansion_units": self.expansion_units,
            "expansion_norm": self.expansion_norm,
        }


@keras.saving.register_keras_serializable(package="keras_hrf_tests")
class TinyClassifier(keras.Model):
    """A subclassed model that follows the protocol."""

    def __init__(self, expansion_units=None, expansion_norm=None, **kwargs):
        super().__init__(**kwargs)
        self.expansion_units = expansion_units
        self.expansion_norm = expansion_norm
        self.block = ResidualFeedForward(FEATURES, 24, expansion_units, expansion_norm)
        self.pool = keras.layers.GlobalAveragePooling1D()
        self.head = hrf_or_dense(OUTPUTS, expansion_units, expansion_norm)

    def call(self, inputs, training=None):
        return self.head(self.pool(self.block(inputs, training=training)), training=training)

    def reparameterize(self):
        return reparameterized_copy(self, expansion_units=None, expansion_norm=None)

    def get_config(self):
        return {
            **super().get_config(),
            "expansion_units": self.expansion_units,
            "expansion_norm": self.expansion_norm,
        }


def functional_model(expansion_units, expansion_norm=None):
    inputs = keras.Input((FRAMES, FEATURES))
    x = keras.layers.Masking(0.0)(inputs)
    x = hrf_or_dense(32, expansion_units, expansion_norm, activation="relu", name="ffn_in")(x)
    x = keras.layers.Dropout(0.1)(x)
    x = keras.layers.Dense(16, name="ffn_out")(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    outputs = hrf_or_dense(OUTPUTS, expansion_units, expansion_norm, name="head")(x)
    return keras.Model(inputs, outputs, name="functional")


def sequential_model(expansion_units, expansion_norm=None, name="sequential"):
    return keras.Sequential(
        [
            keras.Input((FRAMES, FEATURES)),
            hrf_or_dense(32, expansion_units, expansion_norm, activation="gelu"),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(FEATURES),
            hrf_or_dense(FEATURES, expansion_units, expansion_norm),
        ],
        name=name,
    )


def nested_model(expansion_units, expansion_norm=None):
    # A Sequential inside a Functional inside a Functional.
    inner_inputs = keras.Input((FRAMES, FEATURES))
    inner = sequential_model(expansion_units, expansion_norm, name="innermost")(inner_inputs)
    inner = hrf_or_dense(FEATURES, expansion_units, expansion_norm)(inner)
    middle = keras.Model(inner_inputs, inner, name="middle")

    inputs = keras.Input((FRAMES, FEATURES))
    x = keras.layers.Dense(FEATURES)(inputs)
    x = middle(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    outputs = hrf_or_dense(OUTPUTS, expansion_units, expansion_norm)(x)
    return keras.Model(inputs, outputs, name="outer")


def composite_model(expansion_units, expansion_norm=None):
    inputs = keras.Input((FRAMES, FEATURES))
    x = ResidualFeedForward(FEATURES, 48, expansion_units, expansion_norm, name="block1")(inputs)
    x = ResidualFeedForward(FEATURES, 48, expansion_units, expansion_norm, name="block2")(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    outputs = keras.layers.Dense(OUTPUTS)(x)
    return keras.Model(inputs, outputs, name="composite")


def subclassed_model(expansion_units, expansion_norm=None):
    model = TinyClassifier(expansion_units, expansion_norm)
    model(np.zeros((1, FRAMES, FEATURES), "float32"))
    return model


MODELS = {
    "functional": functional_model,
    "sequential": sequential_model,
    "nested": nested_model,
    "composite": composite_model,
    "subclassed": subclassed_model,
}


def _data(seed=0, samples=24):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(samples, FRAMES, FEATURES)).astype("float32")
    return x


def _trained(kind, expansion_units=48, expansion_norm=None):
    model = MODELS[kind](expansion_units, expansion_norm)
    x = _data()
    y = np.asarray(infer(model, x) * 0.0 + 1.0, "float32")  # any target shape-match
    train_briefly(model, x, y)
    return model, x


def _class_names(model):
    return [type(layer).__name__ for layer in all_layers(model)]


@pytest.mark.parametrize("expansion_norm", [None, "batch"])
@pytest.mark.parametrize("kind", sorted(MODELS))
def test_merged_model_matches_and_is_the_plain_model(kind, expansion_norm):
    model, x = _trained(kind, expansion_norm=expansion_norm)
    reference = infer(model, x)

    merged = reparameterize(model)

    assert_relative_close(reference, infer(merged, x), 1e-5)
    assert not any(isinstance(layer, HRFDense) for layer in all_layers(merged))
    plain = MODELS[kind](None)
    assert merged.count_params() == plain.count_params()
    assert _class_names(merged) == _class_names(plain)
    plain.set_weights(merged.get_weights())
    np.testing.assert_allclose(infer(plain, x), infer(merged, x), rtol=1e-6, atol=1e-7)


def test_merged_functional_model_keeps_names_and_masking():
    model, x = _trained("functional")
    merged = reparameterize(model)
    def names(m):
        return [layer.name for layer in m.layers if not isinstance(layer, keras.layers.InputLayer)]

    assert names(merged) == names(model)
    assert merged.name == model.name
    # Padded frames are masked in both, so the pooled output ignores them:
    # equal to the unpadded utterances' outputs.
    valid = x[:4, :6]
    padded = np.concatenate([valid, np.zeros((4, 3, FEATURES), "float32")], axis=1)
    assert_relative_close(infer(model, padded), infer(merged, padded), 1e-5)
    assert_relative_close(infer(merged, padded), infer(_any_length(merged), valid), 1e-5)


def _any_length(model):
    """The same layers on an input with any number of frames."""
    inputs = keras.Input((None, FEATURES))
    x = inputs
    for layer in model.layers[1:]:
        x = layer(x)
    return keras.Model(inputs, x)


def test_original_is_untouched_and_still_trains():
    model, x = _trained("composite", expansion_norm="batch")
    before = [w.copy() for w in model.get_weights()]
    merged = reparameterize(model)
    merged_outputs = infer(merged, x)
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)
    assert any(isinstance(layer, HRFDense) for layer in all_layers(model))

    train_briefly(model, x, np.ones((len(x), OUTPUTS), "float32"), learning_rate=0.1)
    assert any(not np.array_equal(old, new) for old, new in zip(before, model.get_weights()))
    np.testing.assert_array_equal(infer(merged, x), merged_outputs)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_model_without_hrf_comes_back_as_an_equivalent_copy(kind):
    model = MODELS[kind](None)
    x = _data()
    copy = reparameterize(model)
    assert copy is not model
    own_ids = {id(v) for v in model.weights}
    assert not any(id(v) in own_ids for v in copy.weights)
    np.testing.assert_allclose(infer(copy, x), infer(model, x), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("kind", ["nested", "composite"])
def test_reparameterizing_twice_is_harmless(kind):
    model, x = _trained(kind, expansion_norm="batch")
    once = reparameterize(model)
    twice = reparameterize(once)
    assert twice.count_params() == once.count_params()
    np.testing.assert_allclose(infer(twice, x), infer(once, x), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_keras_file_round_trip_of_hrf_and_merged_models(kind, tmp_path):
    model, x = _trained(kind, expansion_norm="batch")
    merged = reparameterize(model)
    for name, original in [("hrf", model), ("merged", merged)]:
        path = str(tmp_path / f"{name}.keras")
        original.save(path)
        loaded = keras.saving.load_model(path, safe_mode=True)
        assert type(loaded) is type(original)
        assert _class_names(loaded) == _class_names(original)
        np.testing.assert_array_equal(infer(loaded, x), infer(original, x))


def test_merged_model_exports_as_a_tf_saved_model(tmp_path, backend):
    if backend == "torch":
        pytest.skip("Keras exports tf_saved_model from the TensorFlow and JAX backends")
    import tensorflow as tf

    model, x = _trained("composite", expansion_norm="batch")
    merged = reparameterize(model)
    path = str(tmp_path / "saved_model")
    merged.export(path, format="tf_saved_model", verbose=False)
    assert os.path.exists(os.path.join(path, "saved_model.pb"))
    reloaded = tf.saved_model.load(path)  # keep a reference: it owns the variables
    served = reloaded.serve(tf.constant(x))
    assert_relative_close(infer(merged, x), served.numpy(), 1e-5)


@pytest.mark.parametrize("value", [42, "model.keras", None, np.zeros(3)])
def test_rejects_what_is_not_a_model(value):
    with pytest.raises(TypeError, match=r"expects a `keras.Model`\. Received: model="):
        reparameterize(value)


def test_points_a_single_layer_to_its_own_method():
    layer = HRFDense(4, 8)
    layer.build((None, 3))
    with pytest.raises(TypeError, match=r"HRFDense.*its own `reparameterize\(\)`"):
        reparameterize(layer)


def test_rejects_an_unbuilt_model():
    model = keras.Sequential([HRFDense(4, 8)], name="unbuilt_seq")
    with pytest.raises(ValueError, match=r"'unbuilt_seq' is not built"):
        reparameterize(model)


def test_refuses_a_composite_layer_without_the_protocol():
    class Opaque(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.hidden = HRFDense(6, 12, name="hidden_hrf")

        def call(self, inputs):
            return self.hidden(inputs)

    inputs = keras.Input((FEATURES,))
    model = keras.Model(inputs, Opaque(name="opaque")(inputs))
    with pytest.raises(TypeError, match=r"'opaque'.*'hidden_hrf'.*no `reparameterize\(\)`"):
        reparameterize(model)


def test_reparameterized_copy_rejects_an_unknown_override():
    block = ResidualFeedForward(FEATURES, 8, 16, name="blk")
    block.build((None, FEATURES))
    with pytest.raises(ValueError, match=r"\['hrf'\].*'blk'"):
        reparameterized_copy(block, hrf=None)


def test_public_api():
    assert keras_hrf.__version__
    assert keras_hrf.is_reparameterizable(HRFDense(2, 2))
    assert not keras_hrf.is_reparameterizable(keras.layers.Dense(2))
