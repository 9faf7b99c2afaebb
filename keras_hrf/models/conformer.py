"""`Conformer` (Gulati et al., 2020) for utterance classification."""

import keras

from keras_hrf.layers.classification_head import ClassificationHead
from keras_hrf.layers.conformer_block import ConformerBlock
from keras_hrf.layers.convolutional_subsampling import Conv2DSubsampling
from keras_hrf.models.speech_emotion_model import SpeechEmotionModel


@keras.saving.register_keras_serializable(package="keras_hrf")
class Conformer(SpeechEmotionModel):
    """Conv2D subsampling (4x) -> Conformer blocks -> mean pooling -> classifier.

    Args:
        num_classes: Number of classes (the output is logits).
        input_dim: Features per frame (80 log-Mel bins by default).
        size: `"lite"` (the on-device model) or `"large"`; see `presets`.
        hrf_expansion: None for the plain model, or `r`: an `HRFDense` with an
            expansion `round(r * model_dim)` wide before the first linear layer
            of both macaron FFNs of every block.
        hrf_norm: None, or `"batch"` for a BatchNorm inside each expansion;
            with `hrf_expansion=None`, a BatchNorm alone before each of those
            linear layers, merged into it like HRF: the recommended
            configuration, better than plain and than HRF on real speech
            with the AdamW recipe (`benchmarks/RESULTS.md`).
        hrf_targets: `("ffn",)`, plus `"attention"` and/or `"conv"`.
        model_dim, num_layers, num_heads, ffn_dim, kernel_size,
        subsampling_filters: Override the preset.
        dropout, attention_dropout: Dropout rates.
        mask_value: Feature value of padded frames (None: no masking).
        spec_augment: None, True or a dict of `SpecAugment` arguments:
            masks on the features while training (merged away).
    """

    presets = {
        "lite": dict(model_dim=96, num_layers=4, num_heads=4, ffn_dim=384,
                     kernel_size=15, subsampling_filters=32),
        "large": dict(model_dim=192, num_layers=8, num_heads=4, ffn_dim=768,
                      kernel_size=31, subsampling_filters=96),
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
        kernel_size=None,
        subsampling_filters=None,
        dropout=0.1,
        attention_dropout=0.1,
        mask_value=0.0,
        spec_augment=None,
        dtype=None,
        **kwargs,
    ):
        config = dict(
            num_classes=num_classes, input_dim=input_dim, size=size,
            hrf_expansion=hrf_expansion, hrf_norm=hrf_norm, hrf_targets=list(hrf_targets),
            model_dim=model_dim, num_layers=num_layers, num_heads=num_heads,
            ffn_dim=ffn_dim, kernel_size=kernel_size,
            subsampling_filters=subsampling_filters, dropout=dropout,
            attention_dropout=attention_dropout, mask_value=mask_value,
            spec_augment=spec_augment,
        )
        targets = self.validate_hrf(hrf_expansion, hrf_norm, hrf_targets)
        s = self.resolve_size(
            size, model_dim=model_dim, num_layers=num_layers, num_heads=num_heads,
            ffn_dim=ffn_dim, kernel_size=kernel_size,
            subsampling_filters=subsampling_filters,
        )

        # === Functional Model ===
        inputs, x = self.features_input(input_dim, mask_value, spec_augment)
        x = Conv2DSubsampling(
            s["model_dim"], filters=s["subsampling_filters"], dtype=dtype, name="subsampling"
        )(x)
        x = keras.layers.Dropout(dropout, dtype=dtype, name="subsampling_dropout")(x)
        for index in range(s["num_layers"]):
            x = ConformerBlock(
                s["num_heads"], s["ffn_dim"], kernel_size=s["kernel_size"],
                dropout=dropout, attention_dropout=attention_dropout,
                hrf_expansion=hrf_expansion, hrf_norm=hrf_norm, hrf_targets=targets,
                dtype=dtype, name=f"conformer_block_{index}",
            )(x)
        x = keras.layers.GlobalAveragePooling1D(dtype=dtype, name="pool")(x)
        outputs = ClassificationHead(num_classes, dropout=dropout, dtype=dtype, name="head")(x)
        super().__init__(inputs, outputs, config=config, dtype=dtype, **kwargs)
