"""Helpers for padded batches: frames beyond an utterance's length are masked."""

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


def frames_after_stride(mask, stride):
    """Mask of the frames that remain after a stride-`stride` reduction in time
    where output frame i starts at input frame `stride * i`: the output frame
    is valid when it starts inside the utterance."""
    if mask is None:
        return None
    return mask[:, ::stride]
