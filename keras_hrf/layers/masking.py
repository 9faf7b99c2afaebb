"""Helpers for padded batches: frames beyond an utterance's length are masked."""

import numpy as np
from keras import ops


def zero_padded_frames(inputs, mask):
    """Set masked frames of `(batch, frames, ...)` to zero (no-op without a mask).

    Convolutions and poolings look at neighbouring frames; zeroing padding
    makes a padded utterance look exactly like the unpadded one, whose
    neighbours beyond its end are the convolution's own zero padding.
    """
    if mask is None:
        return inputs
    mask = ops.cast(mask, inputs.dtype)
    while len(mask.shape) < len(inputs.shape):
        mask = ops.expand_dims(mask, -1)
    return inputs * mask


def frames_after_convolution(mask, kernel_size=3, stride=2, padding=(1, 1)):
    """Mask after a "valid" convolution over time that follows `padding`: output
    frame i is valid when its centre input frame is.

    The mask goes through a convolution of the same size, stride and padding
    (with a kernel that picks the centre frame), so its length is computed by
    the very shape rule of the feature path; backends that track symbolic
    lengths (JAX export) then see equal lengths, which a strided slice of the
    mask would not give them.
    """
    if mask is None:
        return None
    centre = np.zeros((kernel_size, 1, 1), "float32")
    centre[padding[0]] = 1.0
    frames = ops.pad(ops.cast(mask, "float32"), [[0, 0], list(padding)])
    picked = ops.conv(ops.expand_dims(frames, -1), centre, strides=stride, padding="valid")
    return ops.squeeze(picked, -1) > 0.5
