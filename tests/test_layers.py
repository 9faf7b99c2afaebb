"""Each reusable block on its own: merge, config, saving, padding, shapes."""

import keras
import numpy as np
import pytest
from helpers import all_layers
from helpers import assert_relative_close
from helpers import infer
from helpers import to_numpy

from keras_hrf import HRFDense
from keras_hrf.layers import ClassificationHead
from keras_hrf.layers import ConformerBlock
from keras_hrf.layers import ConformerConvolution
from keras_hrf.layers import Conv1DSubsampling
from keras_hrf.layers import Conv2DSubsampling
from keras_hrf.layers import FeedForward
from keras_hrf.layers import LogMelSpectrogram
from keras_hrf.layers import MultiHeadSelfAttention
from keras_hrf.layers import SinusoidalPositionalEncoding
from keras_hrf.layers import SpeechFormerMerge
from keras_hrf.layers import TransformerEncoderLayer
from keras_hrf.layers import dense_or_hrf

DIM = 16
ALL_TARGETS = ("ffn", "attention", "conv")

# Blocks with HRF-capable projections: factory(hrf_expansion, hrf_norm).
HRF_BLOCKS = {
    "feed_forward": lambda r, n: FeedForward(
        24, activation="swish", normalize_first=True, hrf_expansion=r, hrf_norm=n
    ),
    "attention": lambda r, n: MultiHeadSelfAttention(2, hrf_expansion=r, hrf_norm=n),
    "relative_attention": lambda r, n: MultiHeadSelfAttention(
        2, relative_positions=True, hrf_expansion=r, hrf_norm=n
    ),
    "windowed_attention": lambda r, n: MultiHeadSelfAttention(
        4, window=3, hrf_expansion=r, hrf_norm=n
    ),
    "conformer_convolution": lambda r, n: ConformerConvolution(5, hrf_expansion=r, hrf_norm=n),
    "transformer_encoder_layer": lambda r, n: TransformerEncoderLayer(
        2, 24, window=5, hrf_expansion=r, hrf_norm=n, hrf_targets=("ffn", "attention")
    ),
    "attention_positions_encoder_layer": lambda r, n: TransformerEncoderLayer(
        2, 24, window=5, attention_positions=True, hrf_expansion=r, hrf_norm=n
    ),
    "pre_ln_encoder_layer": lambda r, n: TransformerEncoderLayer(
        2, 24, normalize_first=True, hrf_expansion=r, hrf_norm=n
    ),
    "conformer_block": lambda r, n: ConformerBlock(
        2, 24, kernel_size=5, hrf_expansion=r, hrf_norm=n, hrf_targets=ALL_TARGETS
    ),
}
# Blocks that keep the frame count, without HRF: factory().
PLAIN_BLOCKS = {
    "positions": lambda: SinusoidalPositionalEncoding(scale_inputs=True),
}
# Blocks that reduce the frame count: factory().
REDUCING_BLOCKS = {
    "conv2d_subsampling": lambda: Conv2DSubsampling(12, filters=3),
    "conv1d_subsampling": lambda: Conv1DSubsampling(12, filters=8),
    "speechformer_merge": lambda: SpeechFormerMerge(3, expand=2),
}
SEQUENCE_BLOCKS = {
    **{k: (lambda f=f: f(2, None)) for k, f in HRF_BLOCKS.items()},
    **PLAIN_BLOCKS,
    **REDUCING_BLOCKS,
}


def _sequences(batch=3, frames=11, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, frames, DIM)).astype("float32")


def _randomize(layer, seed=0):
    """Move every weight off its initial value (BatchNorm statistics too), as
    training would, so that a merge that ignored a weight would show."""
    rng = np.random.default_rng(seed)
    for variable in layer.weights:
        shape = tuple(variable.shape)
        if "moving_variance" in variable.path:
            value = rng.uniform(0.5, 2.0, shape)
        elif "gamma" in variable.path:
            value = rng.uniform(0.5, 1.5, shape)
        else:
            value = rng.normal(0.0, 0.3, shape)
        variable.assign(value.astype(variable.dtype))


def _masked_model(block, features=DIM):
    """Masking (frames of zeros are padding) -> block, any number of frames."""
    inputs = keras.Input((None, features))
    outputs = block(keras.layers.Masking(0.0)(inputs))
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("hrf_norm", [None, "batch"])
@pytest.mark.parametrize("name", sorted(HRF_BLOCKS))
def test_hrf_block_merges_exactly_into_the_plain_block(name, hrf_norm):
    block = HRF_BLOCKS[name](2, hrf_norm)
    x = _sequences()
    block(x)
    _randomize(block)
    assert any(isinstance(layer, HRFDense) for layer in all_layers(block))

    merged = block.reparameterize()

    assert type(merged) is type(block)
    assert merged.hrf_expansion is None
    assert not any(isinstance(layer, HRFDense) for layer in all_layers(merged))
    plain = HRF_BLOCKS[name](None, None)
    plain(x)
    assert merged.count_params() == plain.count_params()
    assert_relative_close(infer(block, x), infer(merged, x), 1e-5)
    plain.set_weights(merged.get_weights())
    np.testing.assert_allclose(infer(plain, x), infer(merged, x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", sorted(SEQUENCE_BLOCKS))
def test_config_round_trip(name):
    block = SEQUENCE_BLOCKS[name]()
    config = block.get_config()
    restored = type(block).from_config(config)
    assert restored.get_config() == config


def test_head_config_round_trip():
    head = ClassificationHead(3, hidden_dims=(8, 4), dropout=0.5)
    assert ClassificationHead.from_config(head.get_config()).get_config() == head.get_config()


@pytest.mark.parametrize("name", sorted(SEQUENCE_BLOCKS))
def test_keras_file_round_trip(name, tmp_path):
    block = SEQUENCE_BLOCKS[name]()
    model = _masked_model(block)
    x = _sequences()
    model(x)
    _randomize(block)
    path = str(tmp_path / f"{name}.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(infer(loaded, x), infer(model, x))


@pytest.mark.parametrize("name", sorted(SEQUENCE_BLOCKS))
def test_padding_changes_no_valid_frame(name):
    """A padded, masked utterance gives the unpadded one's frames exactly."""
    block = SEQUENCE_BLOCKS[name]()
    model = _masked_model(block)
    x = _sequences(batch=1, frames=13)
    model(x)
    _randomize(block)
    padded = np.concatenate([x, np.zeros((1, 9, DIM), "float32")], axis=1)
    unpadded_out = infer(model, x)
    padded_out = infer(model, padded)
    valid = unpadded_out.shape[1]
    assert padded_out.shape[1] >= valid
    assert_relative_close(unpadded_out, padded_out[:, :valid], 1e-5)


@pytest.mark.parametrize("frames", [1, 2, 3, 4, 7, 8, 9, 30])
def test_subsampling_lengths_and_masks(frames):
    for block in (Conv2DSubsampling(8, filters=2), Conv1DSubsampling(8)):
        x = _sequences(batch=2, frames=frames)
        y = block(x)
        expected = -(-(-(-frames // 2)) // 2)  # ceil(ceil(frames / 2) / 2)
        assert tuple(y.shape) == (2, expected, 8)
        assert block.compute_output_shape((2, frames, DIM)) == (2, expected, 8)
        mask = np.arange(frames)[None, :] < np.array([[frames], [max(1, frames // 3)]])
        out_mask = to_numpy(block.compute_mask(x, keras.ops.convert_to_tensor(mask)))
        lengths = mask.sum(axis=1)
        np.testing.assert_array_equal(out_mask.sum(axis=1), -(-(-(-lengths // 2)) // 2))


@pytest.mark.parametrize("frames", [1, 2, 3, 5, 6, 7])
def test_merge_averages_valid_frames_of_each_window(frames):
    merge = SpeechFormerMerge(3)
    x = _sequences(batch=1, frames=frames)
    merge(x)
    # Identity projection and a LayerNorm-free check: compare before the norm.
    means = []
    for start in range(0, frames, 3):
        means.append(x[0, start : start + 3].mean(axis=0))
    expected = merge.norm(merge.projection(np.stack(means)[None]))
    np.testing.assert_allclose(infer(merge, x), to_numpy(expected), rtol=1e-5, atol=1e-5)
    assert merge.compute_output_shape((1, frames, DIM)) == (1, -(-frames // 3), DIM)


def test_relative_attention_matches_a_direct_computation():
    """Transformer-XL scores, written out with loops over (query, key)."""
    layer = MultiHeadSelfAttention(2, relative_positions=True)
    x = _sequences(batch=1, frames=5)
    layer(x)
    _randomize(layer, seed=3)
    from keras_hrf.layers.sinusoidal_positions import sinusoidal_encoding

    def project(dense, values):
        return to_numpy(dense(values)).astype(np.float64)

    heads, head_dim, frames = 2, DIM // 2, 5
    q = project(layer.query, x)[0].reshape(frames, heads, head_dim)
    k = project(layer.key, x)[0].reshape(frames, heads, head_dim)
    v = project(layer.value, x)[0].reshape(frames, heads, head_dim)
    u = to_numpy(layer.content_bias).astype(np.float64)
    w = to_numpy(layer.position_bias).astype(np.float64)
    context = np.zeros((frames, heads, head_dim))
    for h in range(heads):
        scores = np.zeros((frames, frames))
        for i in range(frames):
            for j in range(frames):
                p = to_numpy(sinusoidal_encoding(keras.ops.convert_to_tensor([float(i - j)]), DIM))
                p = project(layer.position, p)[0].reshape(heads, head_dim)[h]
                scores[i, j] = (q[i, h] + u[h]) @ k[j, h] + (q[i, h] + w[h]) @ p
        scores /= np.sqrt(head_dim)
        weights = np.exp(scores - scores.max(axis=1, keepdims=True))
        weights /= weights.sum(axis=1, keepdims=True)
        context[:, h] = weights @ v[:, h]
    expected = project(layer.output_projection, context.reshape(1, frames, DIM).astype("float32"))
    assert_relative_close(expected, infer(layer, x), 1e-5)


def test_windowed_attention_sees_only_its_window():
    layer = MultiHeadSelfAttention(2, window=4)  # widened to 5: two frames each side
    x = _sequences(batch=1, frames=12)
    reference = infer(layer, x)
    changed = x.copy()
    changed[0, 9:] += 5.0  # frames 9..11 lie outside frame 6's window
    out = infer(layer, changed)
    np.testing.assert_allclose(out[0, :7], reference[0, :7], rtol=1e-5, atol=1e-6)
    assert not np.allclose(out[0, 7], reference[0, 7], atol=1e-3)


def test_attention_positions_reach_the_attention_but_not_the_residual():
    x = _sequences(batch=2, frames=9)
    with_positions = TransformerEncoderLayer(2, 24, dropout=0.0, attention_positions=True)
    without = TransformerEncoderLayer(2, 24, dropout=0.0)
    with_positions.build(x.shape)
    without.build(x.shape)
    _randomize(with_positions)
    without.set_weights(with_positions.get_weights())
    # The attention sees the positions: the outputs differ.
    assert not np.allclose(infer(with_positions, x), infer(without, x), atol=1e-3)
    # With the attention's output zeroed, only the residual path is left, and
    # it carries no positions: the outputs agree.
    for layer in (with_positions, without):
        out = layer.attention.output_projection
        out.kernel.assign(np.zeros(out.kernel.shape, "float32"))
        out.bias.assign(np.zeros(out.bias.shape, "float32"))
    np.testing.assert_allclose(infer(with_positions, x), infer(without, x), rtol=1e-5, atol=1e-6)


def test_head_shapes_and_float32_logits():
    head = ClassificationHead(5, hidden_dims=(8, 4), dtype="mixed_float16")
    logits = head(np.ones((3, DIM), "float32"))
    assert tuple(logits.shape) == (3, 5)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    assert len(head.hidden_layers) == 2


@pytest.mark.parametrize(
    "factory, message",
    [
        (lambda: MultiHeadSelfAttention(0), r"num_heads=0"),
        (lambda: MultiHeadSelfAttention(2, window=0), r"window=0"),
        (lambda: TransformerEncoderLayer(2, 8, hrf_targets=("ffn", "mlp")), r"hrf_targets"),
        (lambda: ConformerBlock(2, 8, hrf_targets=()), r"hrf_targets=\(\)"),
        (lambda: SpeechFormerMerge(0), r"scale=0"),
        (lambda: ClassificationHead(1), r"num_classes=1"),
        (lambda: dense_or_hrf(4, 8, hrf_expansion=-1), r"hrf_expansion=-1"),
    ],
)
def test_bad_arguments_are_named(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()


def test_heads_must_divide_the_width():
    with pytest.raises(ValueError, match=r"width 16 is not divisible by num_heads=3"):
        MultiHeadSelfAttention(3)(_sequences())


def _tone(seconds=0.5, sample_rate=16000, frequency=440.0):
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (0.5 * np.sin(2 * np.pi * frequency * t)).astype("float32")


def test_log_mel_frames_and_the_tone_band():
    layer = LogMelSpectrogram(sample_rate=16000, num_mel_bins=40)
    waveform = _tone()[None]
    features = to_numpy(layer(waveform))
    frames = 1 + waveform.shape[1] // 160  # 10 ms hop, centred frames
    assert features.shape == (1, frames, 40)
    assert layer.compute_output_shape((1, waveform.shape[1])) == (1, frames, 40)
    assert layer.frame_length == 400 and layer.frame_step == 160
    # A 440 Hz tone puts its energy in one low band, the same in every frame.
    loudest = features[0, 5:-5].argmax(axis=-1)
    assert len(set(loudest.tolist())) == 1
    assert loudest[0] < 12
    assert features[0, 5:-5].max() - np.median(features[0, 5:-5]) > 30.0  # dB


def test_log_mel_in_front_of_a_model_saves_as_one_artifact(tmp_path):
    inputs = keras.Input((None,), name="waveform")
    features = LogMelSpectrogram(sample_rate=8000, num_mel_bins=DIM)(inputs)
    pooled = keras.layers.GlobalAveragePooling1D()(
        TransformerEncoderLayer(2, 8, hrf_expansion=1)(features)
    )
    model = keras.Model(inputs, keras.layers.Dense(3)(pooled))
    waveform = _tone(0.3, 8000)[None]
    path = str(tmp_path / "audio_model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(infer(loaded, waveform), infer(model, waveform), rtol=1e-5, atol=1e-5)
    config = LogMelSpectrogram(sample_rate=8000).get_config()
    assert LogMelSpectrogram.from_config(config).get_config() == config


def test_log_mel_frame_mask_follows_the_samples():
    layer = LogMelSpectrogram(sample_rate=16000)
    mask = np.arange(1600)[None, :] < 800
    frame_mask = to_numpy(layer.compute_mask(np.zeros((1, 1600), "float32"), mask))
    assert frame_mask.shape == (1, 10) and frame_mask.sum() == 5


def test_head_drops_its_hidden_activations_but_not_the_pooled_input(monkeypatch):
    # The SpeechFormer reference: Linear, ReLU, Dropout, Linear, ReLU, Dropout, Linear.
    head = ClassificationHead(3, hidden_dims=(8, 4), dropout=0.5)
    head.build((None, 10))
    dropped_widths = []
    original_call = head.dropout_layer.call

    def recording_call(inputs, training=False):
        dropped_widths.append(inputs.shape[-1])
        return original_call(inputs, training=training)

    monkeypatch.setattr(head.dropout_layer, "call", recording_call)
    head(np.ones((2, 10), "float32"), training=True)
    assert dropped_widths == [8, 4]
