"""The three architectures: merge, saving, padding, shapes, learning."""

import keras
import numpy as np
import pytest
from helpers import all_layers
from helpers import assert_relative_close
from helpers import fast_compile_options
from helpers import infer

import keras_hrf
from keras_hrf import HRFDense
from keras_hrf import reparameterize

FEATURES, CLASSES = 20, 3

# Tiny explicit sizes (overriding the presets) keep the tests fast.
TINY = {
    "conformer": (
        keras_hrf.Conformer,
        dict(model_dim=16, num_layers=2, num_heads=2, ffn_dim=32, kernel_size=5,
             subsampling_filters=4),
    ),
    "convtransformer": (
        keras_hrf.ConvTransformer,
        dict(model_dim=16, num_layers=2, num_heads=2, ffn_dim=32, subsampling_filters=4),
    ),
    "speechformer": (
        keras_hrf.SpeechFormer,
        dict(model_dim=32, layers_per_stage=[1, 1, 1, 1], num_heads=4),  # head: 16, 8
    ),
}


def _build(name, **overrides):
    cls, sizes = TINY[name]
    return cls(CLASSES, input_dim=FEATURES, **{**sizes, **overrides})


def _features(batch=6, frames=60, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, frames, FEATURES)).astype("float32")


def _train_a_few_steps(model, x):
    labels = np.arange(len(x)) % CLASSES
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        **fast_compile_options(),
    )
    model.fit(x, labels, batch_size=3, epochs=1, verbose=0)


def _class_sequence(model):
    return [type(layer).__name__ for layer in all_layers(model)]


@pytest.mark.parametrize(
    "hrf",
    [
        dict(hrf_expansion=4),
        dict(hrf_expansion=2, hrf_norm="batch", hrf_targets=("ffn", "attention", "conv")),
        dict(hrf_norm="batch"),
    ],
    ids=["paper", "all_targets_batch_norm", "batch_norm_only"],
)
@pytest.mark.parametrize("name", sorted(TINY))
def test_merged_model_is_the_plain_model(name, hrf):
    targets = hrf.get("hrf_targets", ("ffn",))
    if name != "conformer" and "conv" in targets:
        hrf = {**hrf, "hrf_targets": ("ffn", "attention")}
    model = _build(name, **hrf)
    x = _features()
    _train_a_few_steps(model, x)
    reference = infer(model, x)

    merged = reparameterize(model)

    assert type(merged) is type(model)
    assert merged.get_config()["hrf_expansion"] is None
    assert merged.get_config()["hrf_norm"] is None
    assert not any(isinstance(layer, HRFDense) for layer in all_layers(merged))
    plain = _build(name)
    assert merged.count_params() == plain.count_params()
    assert model.count_params() > plain.count_params()
    assert _class_sequence(merged) == _class_sequence(plain)
    assert_relative_close(reference, infer(merged, x), 1e-5)
    plain.set_weights(merged.get_weights())
    np.testing.assert_allclose(infer(plain, x), infer(merged, x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", sorted(TINY))
def test_config_round_trip(name):
    model = _build(name, hrf_expansion=2, hrf_targets=("ffn", "attention"))
    config = model.get_config()
    restored = type(model).from_config(config)
    assert restored.get_config() == config
    assert restored.count_params() == model.count_params()


@pytest.mark.parametrize("expansion", [2, None], ids=["expansion", "batch_norm_only"])
@pytest.mark.parametrize("name", sorted(TINY))
def test_keras_file_round_trip_of_hrf_and_merged(name, expansion, tmp_path):
    model = _build(name, hrf_expansion=expansion, hrf_norm="batch")
    x = _features()
    _train_a_few_steps(model, x)
    merged = reparameterize(model)
    for label, original in [("hrf", model), ("merged", merged)]:
        path = str(tmp_path / f"{label}.keras")
        original.save(path)
        loaded = keras.saving.load_model(path, safe_mode=True)
        assert type(loaded) is type(original)
        np.testing.assert_array_equal(infer(loaded, x), infer(original, x))


@pytest.mark.parametrize("name", sorted(TINY))
def test_padding_does_not_change_the_logits(name):
    model = _build(name, hrf_expansion=2, hrf_norm="batch")
    x = _features(batch=3, frames=57)
    _train_a_few_steps(model, _features())
    lengths = [57, 23, 9]
    padded = x.copy()
    for row, length in enumerate(lengths):
        padded[row, length:] = 0.0
    padded = np.concatenate([padded, np.zeros((3, 50, FEATURES), "float32")], axis=1)
    batch_logits = infer(model, padded)
    for row, length in enumerate(lengths):
        alone = infer(model, x[row : row + 1, :length])
        assert_relative_close(alone, batch_logits[row : row + 1], 1e-5)


@pytest.mark.parametrize("name", sorted(TINY))
def test_traced_graph_holds_nothing_but_its_variables(name, backend):
    # A graph that captures an outside tensor (say a constant made eagerly)
    # exports with it as an extra input: onnxruntime then refuses the ONNX file.
    if backend != "tensorflow":
        pytest.skip("graph captures are a TensorFlow tracing matter")
    import tensorflow as tf

    model = reparameterize(_build(name, hrf_expansion=2))
    model(_features(batch=1, frames=30))
    spec = tf.TensorSpec((None, None, FEATURES), tf.float32)
    function = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    captured = [t for t in function.captured_inputs if t.dtype != tf.resource]
    assert not captured, f"{name} captures non-variable tensors: {captured}"


@pytest.mark.parametrize("frames", [1, 3, 4, 7, 25, 101])
@pytest.mark.parametrize("name", sorted(TINY))
def test_any_number_of_frames(name, frames):
    model = _build(name)
    logits = infer(model, _features(batch=2, frames=frames))
    assert logits.shape == (2, CLASSES)
    assert np.all(np.isfinite(logits))


def _learnable_problem(samples=96, frames=40, seed=0):
    """The class is which third of the feature channels is raised."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, size=samples)
    x = rng.normal(size=(samples, frames, FEATURES)).astype("float32")
    band = FEATURES // CLASSES
    for row, label in enumerate(labels):
        x[row, :, label * band : (label + 1) * band] += 1.5
    return x, labels


@pytest.mark.parametrize("name", sorted(TINY))
def test_loss_goes_down_on_a_learnable_problem(name):
    no_dropout = dict(dropout=0.0, attention_dropout=0.0)
    if name == "speechformer":
        no_dropout["head_dropout"] = 0.0  # 0.5 on a 4-unit hidden layer is noise
    model = _build(name, hrf_expansion=2, **no_dropout)
    x, y = _learnable_problem()
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        **fast_compile_options(many_steps=True),
    )
    initial = model.evaluate(x, y, verbose=0, return_dict=True)
    model.fit(x, y, batch_size=16, epochs=8, verbose=0)
    final = model.evaluate(x, y, verbose=0, return_dict=True)
    assert final["loss"] < 0.6 * initial["loss"], (initial, final)
    assert final["accuracy"] > 0.6, final  # chance is 1/3


@pytest.mark.parametrize("name", sorted(TINY))
def test_presets_are_in_the_documented_range(name):
    cls, _ = TINY[name]
    lite = cls(4).count_params()
    large = cls(4, size="large").count_params()
    assert 200_000 <= lite <= 2_000_000
    assert large >= 4 * lite


def test_the_large_speechformer_is_pre_ln_without_head_dropout_and_the_reference_is_an_argument_away():
    # The preset trains on the package's recipe; the reference's post-LN stack
    # with its 0.5 head dropout under-fitted it (RESULTS.md).
    small = dict(model_dim=16, num_heads=2)

    def shape(model):
        norms = {layer.normalize_first for layer in model.layers
                 if isinstance(layer, keras_hrf.layers.TransformerEncoderLayer)}
        names = [layer.name for layer in model.layers]
        return norms, "final_norm" in names, model.get_layer("head").dropout

    large = keras_hrf.SpeechFormer(4, size="large", **small)
    assert shape(large) == ({True}, True, 0.0)
    assert shape(keras_hrf.SpeechFormer.from_config(large.get_config())) == ({True}, True, 0.0)
    reference = keras_hrf.SpeechFormer(4, size="large", normalize_first=False, head_dropout=0.5,
                                       **small)
    assert shape(reference) == ({False}, False, 0.5)
    assert shape(keras_hrf.SpeechFormer(4, **small)) == ({False}, False, 0.0)  # lite


@pytest.mark.parametrize("name", sorted(TINY))
def test_hrf_adds_the_expected_training_parameters(name):
    """Per HRF'd FFN: d*k + k extra (expansion) plus (k - d)*f (wider fc1)."""
    plain = _build(name)
    hrf = _build(name, hrf_expansion=2)
    extra = 0
    for layer in all_layers(hrf):
        if isinstance(layer, HRFDense):
            d = layer.expansion_kernel.shape[0]
            k, f = layer.expansion_units, layer.units
            assert k == 2 * d
            extra += d * k + k + (k - d) * f
    assert extra > 0
    assert hrf.count_params() - plain.count_params() == extra


@pytest.mark.parametrize("name", sorted(TINY))
def test_batch_norm_only_sits_before_exactly_the_targeted_projections(name):
    """hrf_norm without hrf_expansion: a folded BatchNorm, no expansion, on the
    FFNs' first Dense only (the attention stays plain unless targeted)."""
    plain = _build(name)
    ffn_only = _build(name, hrf_norm="batch")
    with_attention = _build(name, hrf_norm="batch", hrf_targets=("ffn", "attention"))
    for model, names in [(ffn_only, {"inner"}),
                         (with_attention, {"inner", "query", "key", "value", "output"})]:
        layers = [layer for layer in all_layers(model) if isinstance(layer, HRFDense)]
        assert {layer.name for layer in layers} == names
        assert all(layer.expansion_kernel is None for layer in layers)
        # Only the BatchNorms are added: gamma, beta, moving mean and variance.
        extra = sum(4 * layer.kernel.shape[0] for layer in layers)
        assert model.count_params() - plain.count_params() == extra
        assert keras_hrf.tuning.deployed_parameter_count(model) == plain.count_params()


def test_hrf_targets_reach_every_projection_of_a_conformer():
    model = _build("conformer", hrf_expansion=1, hrf_targets=("ffn", "attention", "conv"))
    hrf_names = {layer.name for layer in all_layers(model) if isinstance(layer, HRFDense)}
    assert {"inner", "query", "key", "value", "output", "pointwise_in", "pointwise_out"} <= hrf_names
    per_block = 2 + 4 + 2  # two macaron FFNs, four attention, two pointwise
    count = sum(isinstance(layer, HRFDense) for layer in all_layers(model))
    assert count == per_block * TINY["conformer"][1]["num_layers"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(size="medium"), r"size='medium'"),
        (dict(hrf_expansion=0), r"hrf_expansion=0"),
        (dict(hrf_norm="layer"), r"hrf_norm='layer'"),
        (dict(hrf_targets=("ffn", "gate")), r"hrf_targets"),
    ],
)
def test_bad_model_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        keras_hrf.Conformer(4, **kwargs)


def test_speechformer_stage_arguments_must_agree():
    with pytest.raises(ValueError, match=r"window_ms=\[50, None\]"):
        keras_hrf.SpeechFormer(4, window_ms=(50, None))


def test_speechformer_windows_follow_the_stage_durations():
    from keras_hrf.models.speechformer import stage_windows

    assert stage_windows([50, 400, 2000, None], [5, 5, 4], 10) == [5, 9, 9, None]


def test_speechformer_reference_layout_tokens_positions_and_stage_norms():
    """input_projection=False, positions="attention", stage_norm=True: the
    bins are the tokens, positions enter the first stage's attention only, and
    every stage starts with a LayerNorm; it merges and reloads exactly."""
    model = _build(
        "speechformer", model_dim=None, input_projection=False, positions="attention",
        stage_norm=True, hrf_expansion=2,
    )
    names = {layer.name for layer in model.layers}
    assert "input_projection" not in names and "positions" not in names
    assert {f"stage_{stage}_norm" for stage in range(4)} <= names
    encoders = [layer for layer in model.layers if layer.name.startswith("stage_") and
                "layer" in layer.name]
    assert [layer.attention_positions for layer in encoders] == [True, False, False, False]
    assert model.get_layer("merge_0").output.shape[-1] == FEATURES
    x = _features()
    _train_a_few_steps(model, x)
    merged = reparameterize(model)
    # Every layer built: Keras' predict would otherwise call the model eagerly first.
    assert [layer.name for layer in all_layers(merged) if not layer.built] == []
    assert_relative_close(infer(model, x), infer(merged, x), 1e-4)
    reloaded = keras.models.model_from_json(merged.to_json())
    assert reloaded.get_config()["positions"] == "attention"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(input_projection=False, model_dim=32), r"model_dim=32 and input_dim=20"),
        (dict(input_projection=False, num_heads=3, model_dim=None), r"input_dim=20 .*num_heads=3"),
        (dict(positions="stage"), r"positions='stage'"),
    ],
)
def test_speechformer_reference_layout_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _build("speechformer", **kwargs)
