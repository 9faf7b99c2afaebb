"""Reusable Keras layers of keras_hrf."""

from keras_hrf.layers.hrf_dense import HRFDense

__all__ = ["HRFDense"]
