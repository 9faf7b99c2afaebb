"""`SpeechEmotionModel`: the base of the package's functional model classes."""

import keras

from keras_hrf.layers.hrf_block import validate_hrf_targets
from keras_hrf.layers.spec_augment import SpecAugment
from keras_hrf.reparameterization import _reparameterize_graph
from keras_hrf.validation import check_hrf_expansion


class SpeechEmotionModel(keras.Model):
    """A functional model wrapped in a class, as keras-hub backbones are.

    Subclasses define `presets` (size name -> architecture arguments), build
    their graph in `__init__` from `self.resolve_size(...)`, and call
    `super().__init__(inputs, outputs, config=..., ...)`. Saving, cloning,
    export and `keras_hrf.reparameterize` work as for any functional model;
    `reparameterize()` returns an instance of the same class built with
    `hrf_expansion=None, hrf_norm=None` and holding the merged weights.

    Input: `(batch, frames, input_dim)` features with any number of frames.
    Frames equal to `mask_value` in every feature are padding (masked); set
    `mask_value=None` to mask nothing.
    """

    presets = {}

    @classmethod
    def resolve_size(cls, size, **overrides):
        """The preset `size`'s arguments, with every non-None override applied."""
        if size not in cls.presets:
            raise ValueError(
                f"Received an invalid value for `size` of {cls.__name__}: expected "
                f"one of {sorted(cls.presets)}. Received: size={size!r}"
            )
        resolved = dict(cls.presets[size])
        resolved.update({k: v for k, v in overrides.items() if v is not None})
        return resolved

    @staticmethod
    def validate_hrf(hrf_expansion, hrf_norm, hrf_targets):
        check_hrf_expansion(hrf_expansion)
        if hrf_norm not in (None, "batch"):
            raise ValueError(
                "Received an invalid value for `hrf_norm`, expected None or "
                f"'batch'. Received: hrf_norm={hrf_norm!r}"
            )
        return validate_hrf_targets(hrf_targets)

    @staticmethod
    def features_input(input_dim, mask_value, spec_augment=None):
        """The features input, its padding mask and, when `spec_augment` is
        True or a dict of its arguments, `SpecAugment` (after the mask)."""
        inputs = keras.Input((None, input_dim), name="features")
        x = inputs
        if mask_value is not None:
            x = keras.layers.Masking(mask_value, name="padding_mask")(x)
        if spec_augment:
            options = {} if spec_augment is True else dict(spec_augment)
            x = SpecAugment(**options, name="spec_augment")(x)
        return inputs, x

    def __init__(self, inputs, outputs, config, **kwargs):
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        # The constructor arguments, exactly; get_config() returns them.
        self._constructor_config = dict(config)

    def get_config(self):
        config = {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.dtype_policies.serialize(self.dtype_policy),
        }
        config.update(self._constructor_config)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
        return cls(**config)

    def reparameterize(self):
        """This model with every HRF layer merged and its training-only
        `SpecAugment` removed: a new instance of the same class, built with
        `hrf_expansion=None, spec_augment=None`, holding the merged weights."""
        merged_graph = _reparameterize_graph(self)
        config = self.get_config()
        config.update(hrf_expansion=None, hrf_norm=None, hrf_targets=["ffn"], spec_augment=None)
        plain = type(self).from_config(config)
        plain.set_weights(merged_graph.get_weights())
        return plain
