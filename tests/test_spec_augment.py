"""SpecAugment: masks while training only, within each utterance, merged away."""

import keras
import numpy as np
import pytest
from helpers import to_numpy

import keras_hrf
from keras_hrf.layers import SpecAugment


def _padded_batch():
    """Three utterances of 40, 100 and 160 frames (values 3 +- 1, never 0),
    zero-padded to 200 frames, and their lengths."""
    rng = np.random.default_rng(0)
    lengths = [40, 100, 160]
    x = np.zeros((3, 200, 80), "float32")
    for row, length in enumerate(lengths):
        x[row, :length] = rng.uniform(2.0, 4.0, size=(length, 80))
    return x, lengths


def test_identity_at_inference():
    x, _ = _padded_batch()
    layer = SpecAugment(seed=1)
    np.testing.assert_array_equal(to_numpy(layer(x, training=False)), x)
    np.testing.assert_array_equal(to_numpy(layer(x)), x)


def test_masks_bands_and_spans_within_each_utterance_only():
    x, lengths = _padded_batch()
    mask = np.arange(200)[None, :] < np.array(lengths)[:, None]
    layer = SpecAugment(frequency_masks=2, max_frequency_width=8, time_masks=2,
                        max_time_ratio=0.05, seed=3)
    masked_any = False
    for _ in range(5):  # fresh masks on every call
        y = to_numpy(layer(x, mask=mask, training=True))
        assert y.shape == x.shape
        for row, length in enumerate(lengths):
            assert np.all(y[row, length:] == 0)  # padding is still padding
            zeroed = y[row, :length] == 0
            bins = np.all(zeroed, axis=0)         # bands: whole bins zeroed
            frames = np.all(zeroed, axis=1)       # spans: whole frames zeroed
            # Every zero lies in a masked bin or a masked frame, nowhere else.
            assert np.all(zeroed == (bins[None, :] | frames[:, None]))
            assert bins.sum() <= 2 * 8
            assert frames.sum() <= 2 * int(0.05 * length)
            kept = ~zeroed
            np.testing.assert_array_equal(y[row, :length][kept], x[row, :length][kept])
            masked_any |= bool(zeroed.any())
    assert masked_any


def test_a_span_never_exceeds_its_share_of_a_short_utterance():
    """5 % of 40 frames is 2: a span of a short utterance is at most 2 frames,
    however long the padded batch."""
    x, lengths = _padded_batch()
    mask = np.arange(200)[None, :] < np.array(lengths)[:, None]
    layer = SpecAugment(frequency_masks=0, time_masks=1, max_time_ratio=0.05, seed=0)
    widths = set()
    for _ in range(30):
        y = to_numpy(layer(x, mask=mask, training=True))
        widths.add(int(np.all(y[0, :40] == 0, axis=1).sum()))
    assert widths <= {0, 1, 2} and len(widths) > 1


@pytest.mark.parametrize("kwargs, message", [
    ({"frequency_masks": -1}, "frequency_masks"),
    ({"max_frequency_width": 2.5}, "max_frequency_width"),
    ({"max_time_ratio": 1.5}, "max_time_ratio"),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SpecAugment(**kwargs)


@pytest.mark.parametrize("model_class", [keras_hrf.Conformer, keras_hrf.ConvTransformer,
                                         keras_hrf.SpeechFormer])
def test_models_train_with_it_and_deploy_without_it(model_class, tmp_path):
    model = model_class(4, input_dim=16, hrf_expansion=2.0, spec_augment=True,
                        **_small(model_class))
    names = [layer.name for layer in model.layers]
    assert names.index("spec_augment") == names.index("padding_mask") + 1
    merged = keras_hrf.reparameterize(model)
    assert not any(isinstance(layer, SpecAugment) for layer in merged._flatten_layers())
    assert merged.get_config()["spec_augment"] is None
    x = np.random.default_rng(0).normal(size=(2, 120, 16)).astype("float32")
    x[1, 80:] = 0.0
    np.testing.assert_allclose(to_numpy(merged(x)), to_numpy(model(x, training=False)),
                               rtol=1e-4, atol=1e-4)
    # The training model saves and reloads with its SpecAugment.
    path = str(tmp_path / "training.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded.get_layer("spec_augment"), SpecAugment)
    if keras.backend.backend() != "jax":  # eager JAX compiles op by op; slow here
        # Training mode with the same weights, without dropout: only SpecAugment differs.
        plain = model_class.from_config({**model.get_config(), "spec_augment": None})
        plain.set_weights(model.get_weights())
        np.testing.assert_allclose(to_numpy(plain(x, training=True)),
                                   to_numpy(plain(x, training=True)), rtol=1e-5, atol=1e-5)
        assert not np.allclose(to_numpy(model(x, training=True)),
                               to_numpy(plain(x, training=True)), rtol=1e-3, atol=1e-3)


def _small(model_class):
    """Small, and without dropout: training mode differs only by SpecAugment."""
    if model_class is keras_hrf.SpeechFormer:
        return dict(model_dim=16, layers_per_stage=[1, 1, 1, 1], num_heads=2, dropout=0.0,
                    attention_dropout=0.0, head_dropout=0.0)
    return dict(model_dim=16, num_layers=1, num_heads=2, ffn_dim=32, dropout=0.0,
                attention_dropout=0.0)
