"""Reusable Keras layers of keras_hrf, one idea per file."""

from keras_hrf.layers.classification_head import ClassificationHead
from keras_hrf.layers.conformer_block import ConformerBlock
from keras_hrf.layers.conformer_convolution import ConformerConvolution
from keras_hrf.layers.convolutional_subsampling import Conv1DSubsampling
from keras_hrf.layers.convolutional_subsampling import Conv2DSubsampling
from keras_hrf.layers.feed_forward import FeedForward
from keras_hrf.layers.hrf_block import HRF_TARGETS
from keras_hrf.layers.hrf_block import HRFBlock
from keras_hrf.layers.hrf_dense import HRFDense
from keras_hrf.layers.hrf_dense import dense_or_hrf
from keras_hrf.layers.log_mel_spectrogram import LogMelSpectrogram
from keras_hrf.layers.multi_head_self_attention import MultiHeadSelfAttention
from keras_hrf.layers.sinusoidal_positions import SinusoidalPositionalEncoding
from keras_hrf.layers.spec_augment import SpecAugment
from keras_hrf.layers.speechformer_merge import SpeechFormerMerge
from keras_hrf.layers.transformer_encoder_layer import TransformerEncoderLayer

__all__ = [
    "ClassificationHead",
    "ConformerBlock",
    "ConformerConvolution",
    "Conv1DSubsampling",
    "Conv2DSubsampling",
    "FeedForward",
    "HRFBlock",
    "HRFDense",
    "HRF_TARGETS",
    "LogMelSpectrogram",
    "MultiHeadSelfAttention",
    "SinusoidalPositionalEncoding",
    "SpecAugment",
    "SpeechFormerMerge",
    "TransformerEncoderLayer",
    "dense_or_hrf",
]
