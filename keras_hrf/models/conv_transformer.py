"""`ConvTransformer`: a convolutional front end and Transformer encoder layers."""

import keras

from keras_hrf.layers.classification_head import ClassificationHead
from keras_hrf.layers.convolutional_subsampling import Conv2DSubsampling
from keras_hrf.layers.sinusoidal_positions import SinusoidalPositionalEncoding
from keras_hrf.layers.transformer_encoder_layer import TransformerEncoderLayer
from keras_hrf.models.speech_emotion_model import SpeechEmotionModel


@keras.saving.register_keras_serializable(package="keras_hrf")
class ConvTransformer(SpeechEmotionModel):
    """Conv2D subsampling (4x) -> scale by sqrt(d) + sinusoidal positions ->
    dropout -> post-LN Transformer encoder layers -> mean pooling -> classifier.

    Args:
        num_classes: Number of classes (the output is logits).
        input_dim: Features per frame (80 log-Mel bins by default).
        size: `"lite"` or `"large"`; see `presets`.
        hrf_expansion: None, or `r`: an `HRFDense` with an expansion
            `round(r * model_dim)` wide before every FFN's first linear layer.
        hrf_norm: None, or `"batch"`: a BatchNorm inside each expansion, or,
            with `hrf_expansion=None`, alone before each target linear layer;
            merged like HRF. The latter is the recommended configuration,
            better than plain and than HRF on real speech with the AdamW
            recipe (`benchmarks/RESULTS.md`).
        hrf_targets: `("ffn",)`, plus `"attention"`.
        model_dim, num_layers, num_heads, ffn_dim, subsampling_filters:
            Override the preset.
        dropout, attention_dropout: Dropout rates.
        mask_value: Feature value of padded frames (None: no masking).
        spec_augment: None, True or a dict of `SpecAugment` arguments:
            masks on the features while training (merged away).
        normalize_first: Pre-LN encoder layers (LayerNorm before attention
            and FFN, one more before pooling) instead of the reference's
            post-LN.
    """

    presets = {
        "lite": dict(model_dim=128, num_layers=4, num_heads=4, ffn_dim=512,
                     subsampling_filters=32),
        "large": dict(model_dim=256, num_layers=6, num_heads=8, ffn_dim=1024,
                      subsampling_filters=64),
    }

    def __init__(
        self,
        num_classes,
        input_dim=80,
        size="lite",
        hrf_expansion=None,
        hrf_norm=None,
        hrf_targets=("ffn",),
        model_dim=None,
        num_layers=None,
        num_heads=None,
        ffn_dim=None,
        subsampling_filters=None,
        dropout=0.1,
        attention_dropout=0.1,
        mask_value=0.0,
        spec_augment=None,
        normalize_first=False,
        dtype=None,
        **kwargs,
    ):
        config = dict(
            num_classes=num_classes, input_dim=input_dim, size=size,
            hrf_expansion=hrf_expansion, hrf_norm=hrf_norm, hrf_targets=list(hrf_targets),
            model_dim=model_dim, num_layers=num_layers, num_heads=num_heads,
            ffn_dim=ffn_dim, subsampling_filters=subsampling_filters, dropout=dropout,
            attention_dropout=attention_dropout, mask_value=mask_value,
            spec_augment=spec_augment, normalize_first=normalize_first,
        )
        targets = self.validate_hrf(hrf_expansion, hrf_norm, hrf_targets)
        s = self.resolve_size(
            size, model_dim=model_dim, num_layers=num_layers, num_heads=num_heads,
            ffn_dim=ffn_dim, subsampling_filters=subsampling_filters,
        )

        # === Functional Model ===
        inputs, x = self.features_input(input_dim, mask_value, spec_augment)
        x = Conv2DSubsampling(
            s["model_dim"], filters=s["subsampling_filters"], dtype=dtype, name="subsampling"
        )(x)
        x = SinusoidalPositionalEncoding(scale_inputs=True, dtype=dtype, name="positions")(x)
        x = keras.layers.Dropout(dropout, dtype=dtype, name="input_dropout")(x)
        for index in range(s["num_layers"]):
            x = TransformerEncoderLayer(
                s["num_heads"], s["ffn_dim"], dropout=dropout,
                attention_dropout=attention_dropout, activation="relu",
                hrf_expansion=hrf_expansion, hrf_norm=hrf_norm, hrf_targets=targets,
                normalize_first=normalize_first, dtype=dtype, name=f"encoder_layer_{index}",
            )(x)
        if normalize_first:
            x = keras.layers.LayerNormalization(epsilon=1e-5, dtype=dtype, name="final_norm")(x)
        x = keras.layers.GlobalAveragePooling1D(dtype=dtype, name="pool")(x)
        outputs = ClassificationHead(num_classes, dropout=dropout, dtype=dtype, name="head")(x)
        super().__init__(inputs, outputs, config=config, dtype=dtype, **kwargs)
