"""`HRFBlock`: the base of composite blocks whose projections may be HRF."""

import keras

from keras_hrf.layers.hrf_dense import HRFDense
from keras_hrf.reparameterization import reparameterized_copy

HRF_TARGETS = ("ffn", "attention", "conv")


def validate_hrf_targets(hrf_targets):
    """A tuple of known targets. `"ffn"` is the paper's placement (before each
    FFN's first linear layer); `"attention"` adds the attention query, key,
    value and output projections; `"conv"` the convolution module's pointwise
    projections."""
    if isinstance(hrf_targets, str):
        hrf_targets = (hrf_targets,)
    hrf_targets = tuple(hrf_targets)
    unknown = [t for t in hrf_targets if t not in HRF_TARGETS]
    if unknown or not hrf_targets:
        raise ValueError(
            f"Received an invalid value for `hrf_targets`: expected a non-empty "
            f"selection of {HRF_TARGETS}. Received: hrf_targets={hrf_targets!r}"
        )
    return hrf_targets


def hrf_for(target, hrf_targets, hrf_expansion, hrf_norm):
    """A sub-block's HRF arguments: the block's own if `target` is one of
    `hrf_targets`, else none (a plain sub-block, whatever `hrf_norm` says)."""
    if target not in hrf_targets:
        return {"hrf_expansion": None, "hrf_norm": None}
    return {"hrf_expansion": hrf_expansion, "hrf_norm": hrf_norm}


def call_projection(layer, inputs, mask=None, training=None):
    """Call a `Dense` or `HRFDense`; only the latter uses the mask (for its
    optional BatchNorm statistics) and the training flag."""
    if isinstance(layer, HRFDense):
        return layer(inputs, mask=mask, training=training)
    return layer(inputs)


class HRFBlock(keras.layers.Layer):
    """A composite layer whose HRF setting is `hrf_expansion` / `hrf_norm`.

    `hrf_expansion=None` builds the plain block; a number `r` makes the
    block's HRF-capable projections `HRFDense` layers with an expansion
    `round(r * input_width)` wide, and `hrf_norm="batch"` gives those
    expansions a BatchNorm (or, with `hrf_expansion=None`, puts a foldable
    BatchNorm alone before those projections). Subclasses create the same
    sublayers in the same order whatever the setting, so `reparameterize()`
    (the package's merge protocol) is a `reparameterized_copy` with HRF
    switched off.
    """

    def __init__(self, hrf_expansion=None, hrf_norm=None, **kwargs):
        super().__init__(**kwargs)
        self.hrf_expansion = hrf_expansion
        self.hrf_norm = hrf_norm
        self.supports_masking = True

    def reparameterize(self):
        return reparameterized_copy(self, hrf_expansion=None, hrf_norm=None)

    def get_config(self):
        return {
            **super().get_config(),
            "hrf_expansion": self.hrf_expansion,
            "hrf_norm": self.hrf_norm,
        }
